//! The deployment files in deploy/ say what the binary does: the systemd unit passes
//! `systemd-analyze verify` against this build and keeps its hardening, the container runs as a
//! user without privileges with a health check the binary answers, and every file the compose
//! file mounts exists.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = read(&deploy().join("courtchat.service"));
    for directive in [
        "User=courtchat",
        "ProtectSystem=strict",
        "StateDirectory=courtchat",
        "WorkingDirectory=/var/lib/courtchat",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "KillSignal=SIGTERM",
    ] {
        assert!(
            unit.lines().any(|line| line == directive),
            "missing {directive}"
        );
    }
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
    else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    // The unit as installed, pointing at this build's binary.
    let dir = tempfile::tempdir().unwrap();
    let installed = dir.path().join("courtchat.service");
    let binary = env!("CARGO_BIN_EXE_courtchat");
    std::fs::write(&installed, unit.replace("/usr/local/bin/courtchat", binary)).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&installed)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    // Only what concerns this unit: the host's own units may have complaints of their own.
    let ours: Vec<&str> = said
        .lines()
        .filter(|line| line.contains("courtchat.service"))
        .collect();
    assert!(ours.is_empty(), "{said}");
}

#[test]
fn the_container_runs_unprivileged_and_checks_its_health() {
    let dockerfile = read(&deploy().join("Dockerfile"));
    assert!(dockerfile.lines().any(|line| line == "USER courtchat"));
    assert!(
        dockerfile.contains(r#"CMD ["/usr/local/bin/courtchat", "health"]"#),
        "the health check is the binary's own"
    );
    assert!(dockerfile.contains("FROM debian:bookworm-slim"));
    assert_eq!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")),
        2,
        "two stages: build and run"
    );
    // The subcommands the files call exist.
    let help = Command::new(env!("CARGO_BIN_EXE_courtchat"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for subcommand in ["serve", "health", "backup", "user"] {
        assert!(help.contains(subcommand), "{subcommand}: {help}");
    }
}

#[test]
fn every_file_the_compose_file_mounts_exists() {
    let compose = read(&deploy().join("compose.yaml"));
    let mut mounted = 0;
    for line in compose.lines().map(str::trim) {
        let Some(volume) = line.strip_prefix("- ./") else {
            continue;
        };
        let source = volume.split(':').next().unwrap_or_default();
        assert!(
            deploy().join(source).exists(),
            "{source} is mounted but missing"
        );
        mounted += 1;
    }
    assert_eq!(
        mounted, 5,
        "prometheus config and rules, grafana provisioning and dashboards"
    );
    assert!(compose.contains("dockerfile: deploy/Dockerfile"));
    assert!(compose.contains("COURTCHAT_DATABASE__URL: postgres://"));
}
