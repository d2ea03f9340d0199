//! The admin API fuzzed from its own OpenAPI document by schemathesis (PyPI): every generated
//! request, valid or not, must get no 5xx and a response that matches the document (status,
//! content type, headers, body schema). Bounded in examples, so CI time stays fixed.
//!
//! Runs where schemathesis is installed for `python3` (run as `python3 -m schemathesis.cli`,
//! which needs no shim on PATH); skipped with a notice otherwise, unless
//! `COURTCHAT_TEST_REQUIRE_SCHEMATHESIS` is set (CI sets it, and installs it).

use std::num::NonZeroU32;
use std::process::Command;

use testkit::{TestDatabase, TestStack};

use super::staff;

const REQUIRE_ENV: &str = "COURTCHAT_TEST_REQUIRE_SCHEMATHESIS";

/// Examples per operation and phase.
const MAX_EXAMPLES: &str = "100";

fn schemathesis() -> Command {
    let mut command = Command::new("python3");
    command.args(["-m", "schemathesis.cli"]);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_survives_its_own_openapi_document() -> anyhow::Result<()> {
    let available = schemathesis()
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        anyhow::ensure!(
            std::env::var_os(REQUIRE_ENV).is_none(),
            "{REQUIRE_ENV} is set but schemathesis is not installed: pip install schemathesis"
        );
        eprintln!("notice: skipping the API fuzz run: schemathesis is not installed");
        return Ok(());
    }
    // Thousands of requests from one caller within a minute: the per-sender limits are raised,
    // or most of the fuzzing would only see 429.
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.admin.requests_per_subject = NonZeroU32::MAX;
        config.admin.requests_per_address = NonZeroU32::MAX;
    })
    .await?;
    // A real admin's token, so that the protected routes are fuzzed past sign-in.
    let token = staff::add_signed_in(&stack, "fuzz-admin", courtchat::StaffRole::Admin).await?;
    let schema = stack.http_url("/v1/openapi.json");
    let output = tokio::task::spawn_blocking(move || {
        schemathesis()
            .args([
                "run",
                &schema,
                "--checks",
                "all",
                "--max-examples",
                MAX_EXAMPLES,
            ])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            // No colours or progress bars in the test's output.
            .env("NO_COLOR", "1")
            .output()
    })
    .await??;
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = report
        .lines()
        .find(|line| line.contains("generated"))
        .unwrap_or_default();
    eprintln!("schemathesis: {}", summary.trim());
    stack.shutdown().await;
    Ok(())
}
