//! The OpenAPI document the server serves (`/v1/openapi.json`) is a valid OpenAPI 3.1 document,
//! as an independent validator judges it (PyPI `openapi-spec-validator`, run as
//! `python3 -m openapi_spec_validator`): repeated operationIds, for one, make it invalid, and
//! clients generated from it then fail. Runs where the validator is installed; skipped with a
//! notice otherwise, unless `COURTCHAT_TEST_REQUIRE_OPENAPI_VALIDATOR` is set (CI sets it, and
//! installs it).

use std::process::Command;

use testkit::TestStack;

const REQUIRE_ENV: &str = "COURTCHAT_TEST_REQUIRE_OPENAPI_VALIDATOR";

fn validator() -> Command {
    let mut command = Command::new("python3");
    command.args(["-m", "openapi_spec_validator"]);
    command
}

#[tokio::test]
async fn the_openapi_document_is_valid_openapi_3_1() -> anyhow::Result<()> {
    let available = validator()
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        anyhow::ensure!(
            std::env::var_os(REQUIRE_ENV).is_none(),
            "{REQUIRE_ENV} is set but the validator is not installed: \
             pip install openapi-spec-validator"
        );
        eprintln!(
            "notice: skipping the OpenAPI validation: openapi-spec-validator is not installed"
        );
        return Ok(());
    }
    let stack = TestStack::start().await?;
    let document: serde_json::Value = reqwest::get(stack.http_url("/v1/openapi.json"))
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "the document says it is OpenAPI {}",
        document["openapi"]
    );
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&document)?)?;
    let output = validator()
        .args(["--schema", "3.1", "--validation-errors", "all"])
        .arg(&file)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "openapi-spec-validator refused the document:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    stack.shutdown().await;
    Ok(())
}
