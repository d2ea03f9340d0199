//! The applicant page (`/kiosk/`) in headless Chromium against the real server, with a real
//! agent (MQTT.js, signed in as registered staff) answering: the phone path from a first
//! message to the stored survey, and an enrolled kiosk driven by keyboard alone that resets
//! itself after the conversation; axe-core on every screen at phone and desktop sizes. The
//! browser side is tests/js/web-kiosk.mjs; this side sets the stage and checks the record.

use courtchat::StaffRole;
use serde_json::{Value, json};
use testkit::TestStack;

use super::staff;

async fn get(stack: &TestStack, token: &str, path: &str) -> anyhow::Result<Value> {
    let response = reqwest::Client::new()
        .get(stack.http_url(path))
        .bearer_auth(token)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "{path}: {}", response.status());
    Ok(response.json().await?)
}

/// Enrols a kiosk for `team` as `admin`; returns its credential.
async fn enrol(stack: &TestStack, admin: &str, team: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .post(stack.http_url("/v1/kiosks"))
        .bearer_auth(admin)
        .json(&json!({"name": "Hall B, by the door", "team": team}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 201, "enrol: {}", response.status());
    let enrolled: Value = response.json().await?;
    enrolled["credential"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no credential: {enrolled}"))
}

#[tokio::test]
async fn an_applicant_chats_answers_the_survey_and_a_kiosk_resets_itself() -> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let stack = TestStack::start().await?;
    let admin = staff::add_signed_in(&stack, "root", StaffRole::Admin).await?;
    // In the kiosk's team: an agent joins only sessions of their team or of none.
    staff::add_to_team(&stack, "bob", StaffRole::Agent, Some("licensing"), None).await?;
    let agent = staff::sign_in(&stack, "bob").await?;
    let credential = enrol(&stack, &admin, "licensing").await?;

    let config = json!({
        "chromium": js.chromium,
        "base": stack.http_url("").trim_end_matches('/'),
        "mqtt_url": stack.mqtt_ws_url(),
        "agent": {"name": "bob", "token": agent},
        "kiosk_credential": credential,
        "artifacts": super::node::artifacts_dir(),
    });
    let result = super::node::run(&js, "web-kiosk.mjs", config).await?;

    // Every screen passes axe-core without a serious or critical finding, and no page
    // reported an error (a Content-Security-Policy refusal would be one).
    let screens = result["violations"]
        .as_object()
        .expect("violations by screen");
    assert!(screens.len() >= 7, "{result}");
    for (screen, found) in screens {
        assert_eq!(found, &json!([]), "axe-core on {screen}");
    }
    for (page, found) in result["errors"].as_object().expect("errors by page") {
        assert_eq!(found, &json!([]), "errors on the {page} page");
    }

    // The phone's session: its survey answer is on record.
    let phone = result["phone"].as_str().expect("the phone's session");
    let transcript = get(&stack, &admin, &format!("/v1/sessions/{phone}/transcript")).await?;
    assert_eq!(transcript["session"]["channel"], "phone", "{transcript}");
    assert_eq!(transcript["survey"]["rating"], 4, "{transcript}");
    assert_eq!(transcript["survey"]["comment"], "Quick and clear.");

    // The kiosk's session came through its credential: the kiosk channel and team.
    let kiosk = result["kiosk"].as_str().expect("the kiosk's session");
    let transcript = get(&stack, &admin, &format!("/v1/sessions/{kiosk}/transcript")).await?;
    assert_eq!(transcript["session"]["channel"], "kiosk", "{transcript}");
    assert_eq!(transcript["session"]["team"], "licensing", "{transcript}");
    let bodies: Vec<&str> = transcript["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["sender"] != "system" && entry["kind"] != "event")
        .filter_map(|entry| entry["body"].as_str())
        .collect();
    assert_eq!(
        bodies,
        ["Where do I renew?", "Typed with keys alone."],
        "{transcript}"
    );

    stack.shutdown().await;
    Ok(())
}
