//! Runs a script of tests/js in Node: its configuration as JSON in argv[2], its result as the
//! last line of its standard output (JSON). The MQTT.js and browser-page tests use it.

use serde_json::Value;

pub async fn run(js: &testkit::JsClients, script: &str, config: Value) -> anyhow::Result<Value> {
    let dir = js.dir.clone();
    let script_name = script.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script_name)
            .arg(config.to_string())
            .current_dir(dir)
            .output()
    })
    .await??;
    anyhow::ensure!(
        output.status.success(),
        "{script} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    let stdout = String::from_utf8(output.stdout)?;
    let last = stdout.lines().last().unwrap_or_default();
    Ok(serde_json::from_str(last)?)
}

/// Where the browser tests save screenshots: `COURTCHAT_TEST_ARTIFACTS`, or
/// `tests/artifacts/` (not committed).
pub fn artifacts_dir() -> std::path::PathBuf {
    std::env::var_os("COURTCHAT_TEST_ARTIFACTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts"))
}
