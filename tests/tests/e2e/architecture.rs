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
        ("jsonwebtoken", &["broker", "oidc"]),
        ("reqwest", &["oidc"]),
        ("axum", &["admin-api"]),
        ("config", &["courtchat"]),
        ("clap", &["courtchat"]),
        ("sea-orm-migration", &["schemas", "store"]),
        ("prometheus", &["telemetry"]),
        ("governor", &["limits"]),
        ("rusqlite", &["store"]),
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
        ("telemetry", &[]),
        ("limits", &[]),
        ("oidc", &[]),
        ("store", &["schemas"]),
        ("broker", &["schemas", "limits"]),
        ("bridge", &["schemas", "store", "telemetry", "limits"]),
        (
            "admin-api",
            &["schemas", "store", "bridge", "telemetry", "limits", "oidc"],
        ),
        ("bench", &["schemas", "store"]),
        (
            "courtchat",
            &[
                "schemas",
                "telemetry",
                "limits",
                "oidc",
                "store",
                "broker",
                "bridge",
                "admin-api",
                "bench",
            ],
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

/// The public surface ARCHITECTURE.md lists for each crate (its table's third column) is what
/// the crate exports, both ways: every name its `lib.rs` exports at the top level is listed, and
/// every listed name exists. A listed path (`schemas::db::{entities, Migrator}`,
/// `mqtt::TestClient`) must resolve through the crate's public modules.
#[test]
fn the_public_surface_table_matches_each_crates_exports() -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md"))?;
    let surfaces = documented_surfaces(&doc);
    let mut problems = Vec::new();
    for member in workspace_members()? {
        let src = root().join(&member).join("src");
        let exported = exports(&std::fs::read_to_string(src.join("lib.rs"))?)?;
        let Some(listed) = surfaces.get(&member) else {
            problems.push(format!("{member}: no public surface in the crate table"));
            continue;
        };
        let lib = lib_name(&member)?;
        let mut listed_top = BTreeSet::new();
        for path in listed {
            let mut segments: Vec<&str> = path.split("::").collect();
            if segments.len() > 1 && segments[0] == lib {
                segments.remove(0);
            }
            listed_top.insert(segments[0].to_owned());
            if let Err(problem) = resolve(&src, &exported, &segments) {
                problems.push(format!("{member}: `{path}` {problem}"));
            }
        }
        for name in exported.difference(&listed_top) {
            problems.push(format!(
                "{member}: exports `{name}`, which its public surface in ARCHITECTURE.md omits"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The crate's library name, as its paths start (`tests` is `testkit`).
fn lib_name(member: &str) -> anyhow::Result<String> {
    let manifest: toml::Table =
        std::fs::read_to_string(root().join(member).join("Cargo.toml"))?.parse()?;
    let named = manifest
        .get("lib")
        .and_then(|lib| lib.get("name"))
        .or_else(|| manifest.get("package").and_then(|p| p.get("name")))
        .and_then(|name| name.as_str())
        .ok_or_else(|| anyhow::anyhow!("{member}/Cargo.toml names no package"))?;
    Ok(named.replace('-', "_"))
}

/// Whether `segments` names something the module whose exports are `exported` (in the directory
/// `dir`) offers: its first segment directly, the rest through the public module it names.
fn resolve(
    dir: &std::path::Path,
    exported: &BTreeSet<String>,
    segments: &[&str],
) -> Result<(), String> {
    let Some((first, rest)) = segments.split_first() else {
        return Err("is empty".to_owned());
    };
    if !exported.contains(*first) {
        return Err(format!("names `{first}`, which is not exported"));
    }
    if rest.is_empty() {
        return Ok(());
    }
    let file = [
        dir.join(format!("{first}.rs")),
        dir.join(first).join("mod.rs"),
    ]
    .into_iter()
    .find(|file| file.is_file())
    .ok_or_else(|| format!("goes through `{first}`, which is not a module of the crate"))?;
    let source = std::fs::read_to_string(&file).map_err(|err| err.to_string())?;
    let inner = exports(&source).map_err(|err| err.to_string())?;
    resolve(&dir.join(first), &inner, rest)
}

/// The paths in the third column of the crate table, by crate directory; a `{a, b}` group
/// stands for each of its names.
fn documented_surfaces(doc: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut surfaces = std::collections::BTreeMap::new();
    let rows = doc
        .lines()
        .skip_while(|line| line.trim() != "## Crates")
        .skip(1)
        .take_while(|line| !line.starts_with("## "));
    for row in rows {
        let Some(dir) = row
            .strip_prefix("| `")
            .and_then(|rest| rest.split_once("/`"))
            .map(|(dir, _)| dir.to_owned())
        else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').collect();
        let surface = cells.get(3).copied().unwrap_or_default();
        let mut paths = Vec::new();
        for span in surface.split('`').skip(1).step_by(2) {
            let tokens = tokenize(span);
            let mut at = 0;
            paths.extend(use_tree(&tokens, &mut at, "", ""));
        }
        surfaces.insert(dir, paths);
    }
    surfaces
}

/// What a module's source exports at its top level: the names its `pub use` items bring in
/// (or their `as` aliases) and the names of its `pub` items (modules, types, traits, functions,
/// constants, statics), except those marked `#[doc(hidden)]`. Glob re-exports cannot be checked
/// and are refused.
fn exports(source: &str) -> anyhow::Result<BTreeSet<String>> {
    const KINDS: [&str; 9] = [
        "mod", "struct", "enum", "trait", "type", "fn", "const", "static", "union",
    ];
    let mut names = BTreeSet::new();
    let mut hidden = false;
    let mut lines = source.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("#[doc(hidden)]") {
            hidden = true;
            continue;
        }
        // Attributes and comments between `#[doc(hidden)]` and its item keep it hidden.
        if line.starts_with("#[") || line.trim_start().starts_with("//") || line.trim().is_empty() {
            continue;
        }
        let is_hidden = std::mem::take(&mut hidden);
        let Some(item) = line.strip_prefix("pub ") else {
            continue;
        };
        if let Some(tree) = item.strip_prefix("use ") {
            let mut statement = tree.to_owned();
            while !statement.contains(';') {
                let next = lines
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("unterminated `pub use {tree}`"))?;
                statement.push(' ');
                statement.push_str(next);
            }
            let statement = statement.split(';').next().unwrap_or_default();
            let mut at = 0;
            for path in use_tree(&tokenize(statement), &mut at, "", "") {
                let name = path.rsplit("::").next().unwrap_or_default().to_owned();
                anyhow::ensure!(name != "*", "glob re-export `pub use {statement}`");
                if !is_hidden {
                    names.insert(name);
                }
            }
            continue;
        }
        let words: Vec<&str> = item
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|word| !word.is_empty())
            .collect();
        // `pub const fn f` is a function; `pub const N` a constant.
        let name = words
            .windows(2)
            .find(|pair| KINDS.contains(&pair[0]) && !KINDS.contains(&pair[1]))
            .map(|pair| pair[1].to_owned());
        if let (Some(name), false) = (name, is_hidden) {
            names.insert(name);
        }
    }
    Ok(names)
}

/// Splits a use tree into identifiers and `::`, `{`, `}`, `,`, `*`.
fn tokenize(tree: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut chars = tree.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        match c {
            ':' if chars.peek() == Some(&':') => {
                chars.next();
                tokens.push("::".to_owned());
            }
            '{' | '}' | ',' | '*' => tokens.push(c.to_string()),
            _ => {}
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

/// The full paths (or, for `as`, the alias in the place of the last segment) that a use tree
/// names, read from `tokens` at `at`; `prefix` is the path above it, `parent` its last segment
/// (what `self` stands for).
fn use_tree(tokens: &[String], at: &mut usize, prefix: &str, parent: &str) -> Vec<String> {
    let join = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}::{name}")
        }
    };
    match tokens.get(*at).map(String::as_str) {
        Some("{") => {
            *at += 1;
            let mut paths = Vec::new();
            while let Some(token) = tokens.get(*at) {
                match token.as_str() {
                    "}" => {
                        *at += 1;
                        break;
                    }
                    "," => *at += 1,
                    _ => paths.extend(use_tree(tokens, at, prefix, parent)),
                }
            }
            paths
        }
        Some("*") => {
            *at += 1;
            vec![join("*")]
        }
        Some(segment) => {
            *at += 1;
            let segment = if segment == "self" { parent } else { segment };
            match tokens.get(*at).map(String::as_str) {
                Some("::") => {
                    *at += 1;
                    use_tree(tokens, at, &join(segment), segment)
                }
                Some("as") => {
                    *at += 2;
                    vec![join(tokens.get(*at - 1).map_or("", String::as_str))]
                }
                _ => vec![join(segment)],
            }
        }
        None => Vec::new(),
    }
}

#[test]
fn the_export_parser_reads_use_trees_and_items() -> anyhow::Result<()> {
    let source = "\
//! A module.
mod private;
pub mod open;
pub use a::{B, c::{D, E as F}, self};
pub use g::H;
pub use i::{
    J,
    K,
};
#[doc(hidden)]
pub mod hidden;
pub(crate) fn internal() {}
pub struct L;
pub async fn m() {}
pub const fn n() {}
pub const O: u8 = 1;
impl L {
    pub fn not_top_level() {}
}
";
    let found: Vec<String> = exports(source)?.into_iter().collect();
    assert_eq!(
        found,
        [
            "B", "D", "F", "H", "J", "K", "L", "O", "a", "m", "n", "open"
        ]
    );
    assert!(exports("pub use a::*;").is_err(), "globs are refused");
    let doc = "## Crates\n| crate | owns | surface |\n|---|---|---|\n| `x/` | y | `x::{a, b::C}`, `D` |\n## Next\n";
    let surfaces = documented_surfaces(doc);
    assert_eq!(surfaces["x"], ["x::a", "x::b::C", "D"]);
    Ok(())
}
