//! ARCHITECTURE.md must describe the workspace that exists: every member appears in its crate
//! table, and every crate it lists is a member.

use std::collections::BTreeSet;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Members listed in the workspace Cargo.toml.
fn workspace_members() -> anyhow::Result<BTreeSet<String>> {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))?.parse()?;
    let members = manifest["workspace"]["members"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("workspace.members is not an array"))?;
    Ok(members
        .iter()
        .filter_map(|m| m.as_str())
        .map(str::to_owned)
        .collect())
}

/// Directories named in the first column of the table under "## Crates", e.g. "| `broker/` |".
fn documented_crates(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .skip_while(|line| line.trim() != "## Crates")
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once("/`"))
        .map(|(dir, _)| dir.to_owned())
        .collect()
}

#[test]
fn architecture_lists_exactly_the_workspace_members() -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md"))?;
    let documented = documented_crates(&doc);
    let members = workspace_members()?;
    let undocumented: Vec<_> = members.difference(&documented).collect();
    let phantom: Vec<_> = documented.difference(&members).collect();
    assert!(
        undocumented.is_empty(),
        "workspace members missing from ARCHITECTURE.md: {undocumented:?}"
    );
    assert!(
        phantom.is_empty(),
        "ARCHITECTURE.md names crates that are not members: {phantom:?}"
    );
    for member in &members {
        assert!(
            root().join(member).join("Cargo.toml").is_file(),
            "{member}/Cargo.toml is missing"
        );
    }
    Ok(())
}

#[test]
fn the_parser_reads_the_crate_table() {
    let doc = "intro `ghost/`\n## Crates\n| crate | role |\n|---|---|\n| `a/` | x |\n| `b/` (lib `b`) | y |\n## Next\n| `c/` | z |\n";
    let found: Vec<_> = documented_crates(doc).into_iter().collect();
    assert_eq!(found, ["a", "b"]);
}

/// The dependency invariants ARCHITECTURE.md states, checked against each crate's manifest.
#[test]
fn each_external_dependency_has_its_one_owner() -> anyhow::Result<()> {
    let owners: &[(&str, &[&str])] = &[
        ("rumqttd", &["broker"]),
        ("jsonwebtoken", &["broker"]),
        ("axum", &["admin-api"]),
        ("config", &["courtchat"]),
        ("clap", &["courtchat"]),
        ("sea-orm-migration", &["schemas", "store"]),
    ];
    for member in workspace_members()? {
        let manifest: toml::Table =
            std::fs::read_to_string(root().join(&member).join("Cargo.toml"))?.parse()?;
        let deps = manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .cloned()
            .unwrap_or_default();
        for (dependency, allowed) in owners {
            if deps.contains_key(*dependency) {
                assert!(
                    allowed.contains(&member.as_str()),
                    "{member} depends on {dependency}; only {allowed:?} may"
                );
            }
        }
    }
    // `schemas` does no I/O: it has no runtime, database driver or network dependency.
    let schemas: toml::Table =
        std::fs::read_to_string(root().join("schemas/Cargo.toml"))?.parse()?;
    let deps = schemas["dependencies"]
        .as_table()
        .cloned()
        .unwrap_or_default();
    for forbidden in ["tokio", "store", "rumqttd", "rumqttc", "axum", "reqwest"] {
        assert!(
            !deps.contains_key(forbidden),
            "schemas must not depend on {forbidden}"
        );
    }
    let sea_orm_features = format!("{:?}", deps["sea-orm"]);
    assert!(
        !sea_orm_features.contains("sqlx"),
        "schemas must not enable a database driver: {sea_orm_features}"
    );
    Ok(())
}

/// The layering ARCHITECTURE.md states: each crate's `[dependencies]` name only workspace crates
/// below it (so, for one, the pipeline in `bridge` never links the gateway in `broker`).
#[test]
fn crates_depend_only_on_the_layers_below() -> anyhow::Result<()> {
    let members = workspace_members()?;
    let below: &[(&str, &[&str])] = &[
        ("schemas", &[]),
        ("store", &["schemas"]),
        ("broker", &["schemas"]),
        ("bridge", &["schemas", "store"]),
        ("admin-api", &["schemas", "store"]),
        ("bench", &["schemas", "store"]),
        (
            "courtchat",
            &["schemas", "store", "broker", "bridge", "admin-api", "bench"],
        ),
    ];
    for member in &members {
        let Some((_, allowed)) = below.iter().find(|(crate_, _)| crate_ == member) else {
            // `tests` may use anything; a new member must be placed in this table.
            assert_eq!(member, "tests", "{member} has no place in the layering");
            continue;
        };
        let manifest: toml::Table =
            std::fs::read_to_string(root().join(member).join("Cargo.toml"))?.parse()?;
        let deps = manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .cloned()
            .unwrap_or_default();
        for dependency in deps.keys().filter(|d| members.contains(*d)) {
            assert!(
                allowed.contains(&dependency.as_str()),
                "{member} depends on {dependency}; ARCHITECTURE.md allows it only {allowed:?}"
            );
        }
    }
    Ok(())
}
