//! Enrolment links (`/kiosk/#enrol=<credential>`) are checked and confirmed before a device
//! becomes a kiosk: `GET /v1/kiosk-credential` answers which kiosk a valid credential names
//! (401 otherwise, limited per address, in the OpenAPI document), and the applicant page, in
//! headless Chromium, survives a broken link, refuses an unknown one, asks "Make this device the
//! kiosk <name> (<team>)?" and enrols only on "yes" (scenario `enrolment` of
//! tests/js/web-applicant.mjs).

use std::num::NonZeroU32;

use courtchat::StaffRole;
use serde_json::{Value, json};
use testkit::{TestDatabase, TestStack};

use super::staff;
use super::web_applicant::{get, run};

const KIOSK_NAME: &str = "Hall B, by the door";

/// Enrols the kiosk "Hall B, by the door" of team "licensing" as `admin`; its credential.
pub(super) async fn enrol(stack: &TestStack, admin: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .post(stack.http_url("/v1/kiosks"))
        .bearer_auth(admin)
        .json(&json!({"name": KIOSK_NAME, "team": "licensing"}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 201, "enrol: {}", response.status());
    let enrolled: Value = response.json().await?;
    enrolled["credential"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no credential: {enrolled}"))
}

/// `GET /v1/kiosk-credential` with `credential` as the bearer (none: no Authorization): the
/// status, `Retry-After` and the body.
async fn check(
    stack: &TestStack,
    credential: Option<&str>,
) -> anyhow::Result<(u16, Option<String>, Value)> {
    let mut request = reqwest::Client::new().get(stack.http_url("/v1/kiosk-credential"));
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Ok((
        status,
        retry_after,
        response.json().await.unwrap_or_default(),
    ))
}

/// A credential of the right shape that names no kiosk.
fn unknown_credential() -> String {
    format!("cck_k-{}_{}", "0".repeat(16), "a".repeat(64))
}

#[tokio::test]
async fn the_kiosk_credential_check_names_valid_kiosks_only() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.admin.applicant_tokens_per_address = NonZeroU32::new(7).expect("nonzero");
    })
    .await?;
    let admin = staff::add_signed_in(&stack, "root", StaffRole::Admin).await?;
    let credential = enrol(&stack, &admin).await?;

    // A valid credential: the kiosk it names, and nothing secret.
    let (status, _, kiosk) = check(&stack, Some(&credential)).await?;
    assert_eq!(status, 200, "{kiosk}");
    let id = kiosk["id"].as_str().unwrap_or_default().to_owned();
    assert!(credential.starts_with(&format!("cck_{id}_")), "{kiosk}");
    assert_eq!(
        kiosk,
        json!({"id": id, "name": KIOSK_NAME, "team": "licensing"})
    );

    // Everything else is 401 with a problem: nothing, a staff token, a malformed credential,
    // an unknown one, and a revoked kiosk's.
    let revoked = reqwest::Client::new()
        .post(stack.http_url(&format!("/v1/kiosks/{id}/revoke")))
        .bearer_auth(&admin)
        .send()
        .await?;
    assert!(revoked.status().is_success(), "{}", revoked.status());
    for presented in [
        None,
        Some(admin.as_str()),
        Some("cck_%"),
        Some(unknown_credential().as_str()),
        Some(credential.as_str()),
    ] {
        let (status, _, problem) = check(&stack, presented).await?;
        assert_eq!(status, 401, "{presented:?}: {problem}");
        assert_eq!(
            problem["type"], "urn:courtchat:problem:invalid-credentials",
            "{problem}"
        );
    }

    // Six checks so far; the address's seventh passes, the eighth waits.
    assert_eq!(check(&stack, None).await?.0, 401);
    let (status, retry_after, problem) = check(&stack, Some(&credential)).await?;
    assert_eq!(status, 429, "{problem}");
    assert!(retry_after.is_some(), "{problem}");

    // The route is documented, under its own operation id.
    let document = reqwest::get(stack.http_url("/v1/openapi.json"))
        .await?
        .json::<Value>()
        .await?;
    let operation = &document["paths"]["/v1/kiosk-credential"]["get"];
    assert_eq!(operation["operationId"], "check_kiosk_credential");
    for code in ["200", "401", "429"] {
        assert!(operation["responses"][code].is_object(), "{operation:#}");
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn enrolment_links_are_checked_and_confirmed_before_a_device_becomes_a_kiosk()
-> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let stack = TestStack::start().await?;
    let admin = staff::add_signed_in(&stack, "root", StaffRole::Admin).await?;
    let credential = enrol(&stack, &admin).await?;
    let config = json!({
        "chromium": js.chromium,
        "scenario": "enrolment",
        "base": stack.http_url("").trim_end_matches('/'),
        "kiosk_credential": credential,
        "unknown_credential": unknown_credential(),
        "artifacts": super::node::artifacts_dir(),
    });
    let result = run(&js, "web-applicant.mjs", &config, async |line: &Value| {
        anyhow::bail!("unexpected step: {line}")
    })
    .await?;

    // The address never keeps a credential; only a confirmed link stores one.
    for outcome in ["broken", "unknown", "asking", "cancelled", "confirmed"] {
        assert_eq!(result[outcome]["hash"], "", "{outcome}: {result:#}");
        assert!(
            !result[outcome]["href"]
                .as_str()
                .unwrap_or_default()
                .contains("cck_"),
            "{outcome}: {result:#}"
        );
    }
    for outcome in ["broken", "unknown", "cancelled"] {
        let state = &result[outcome];
        assert_eq!(state["mode"], "phone", "{outcome}: {result:#}");
        assert_eq!(state["stored"], json!([]), "{outcome}: {result:#}");
        assert_eq!(state["startShown"], true, "{outcome}: {result:#}");
    }
    let notice = |outcome: &str| result[outcome]["notice"].as_str().unwrap_or_default();
    assert!(notice("broken").contains("not valid"), "{result:#}");
    assert!(
        notice("unknown").contains("unknown or was revoked"),
        "{result:#}"
    );
    assert!(notice("cancelled").contains("Not enrolled"), "{result:#}");
    assert_eq!(
        result["question"],
        format!("Make this device the kiosk {KIOSK_NAME} (licensing)?")
    );
    assert_eq!(result["asking"]["mode"], "phone", "{result:#}");
    assert_eq!(result["asking"]["stored"], json!([]), "{result:#}");
    assert_eq!(result["confirmed"]["mode"], "kiosk", "{result:#}");
    assert_eq!(result["storedCredential"], json!(credential));
    for (screen, found) in result["violations"].as_object().expect("violations") {
        assert_eq!(found, &json!([]), "axe-core on {screen}");
    }

    // Its first conversation came through the kiosk's credential.
    let session = result["session"].as_str().unwrap_or_default();
    let transcript = get(
        &stack,
        &admin,
        &format!("/v1/sessions/{session}/transcript"),
    )
    .await?;
    assert_eq!(transcript["session"]["channel"], "kiosk", "{transcript}");
    assert_eq!(transcript["session"]["team"], "licensing", "{transcript}");
    stack.shutdown().await;
    Ok(())
}
