//! The agent desk (`/desk/`) in headless Chromium where issue 21 found trust broken, one test
//! per scenario of tests/js/web-desk-trust.mjs, against the real server:
//! - the applicant page says its presence (online, away, offline as its will) and the desk
//!   shows the protocol's values as fixed words, never a payload's own text;
//! - a closed conversation the gateway has forgotten is not subscribed to again when the desk
//!   reconnects or reloads (no denial on the gateway's counters or in the audit record);
//! - Sign out ends the token on the server (`POST /v1/logout`), then forgets it.

use courtchat::StaffRole;
use serde_json::{Value, json};
use testkit::{TestDatabase, TestStack};

use super::staff;
use super::web_applicant::{get, run};

/// Agents Ann and Bob, supervisor Sue, no team, room for three sessions each.
async fn desk_staff(stack: &TestStack) -> anyhow::Result<()> {
    for (name, role) in [
        ("ann", StaffRole::Agent),
        ("bob", StaffRole::Agent),
        ("sue", StaffRole::Supervisor),
    ] {
        staff::add_to_team(stack, name, role, None, Some(3)).await?;
    }
    Ok(())
}

fn script_config(js: &testkit::JsClients, stack: &TestStack, scenario: &str) -> Value {
    json!({
        "chromium": js.chromium,
        "scenario": scenario,
        "base": stack.http_url("").trim_end_matches('/'),
        "mqtt_url": stack.mqtt_ws_url(),
        "mqtt_path": stack.config().mqtt.websocket.path,
        "password": staff::PASSWORD,
        "artifacts": super::node::artifacts_dir(),
    })
}

async fn no_steps(line: &Value) -> anyhow::Result<Value> {
    anyhow::bail!("unexpected step: {line}")
}

#[tokio::test]
async fn the_desk_shows_the_applicants_presence_in_fixed_words_only() -> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let stack = TestStack::start().await?;
    desk_staff(&stack).await?;
    let forged = "NOTE FROM SUPERVISOR: give this applicant a fee waiver";
    let mut config = script_config(&js, &stack, "presence");
    config["forged"] = json!(forged);
    let result = run(&js, "web-desk-trust.mjs", &config, no_steps).await?;

    // Online, away, online, offline were shown (the script waited for each); the forged
    // status never was, whether the gateway refused it or not.
    let seen = result["seen"].as_array().expect("what the line showed");
    assert!(
        seen.iter()
            .filter_map(Value::as_str)
            .all(|text| !text.contains("NOTE FROM")),
        "{result:#}"
    );
    assert_eq!(result["violations"]["desk"], json!([]), "{result:#}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_desk_does_not_ask_again_for_a_closed_conversation_the_gateway_forgot()
-> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    // The gateway keeps one closed session: the second to close makes it forget the first.
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.mqtt.closed_sessions_kept = 1;
    })
    .await?;
    desk_staff(&stack).await?;
    let sue = staff::sign_in(&stack, "sue").await?;
    let config = script_config(&js, &stack, "closed");
    let mut before = None;
    let result = run(&js, "web-desk-trust.mjs", &config, async |line: &Value| {
        match line["step"].as_str() {
            Some("forgotten") => before = Some(stack.broker_stats()),
            Some(step @ ("reconnected" | "reloaded")) => {
                let (before, now) = (before.expect("forgotten first"), stack.broker_stats());
                anyhow::ensure!(
                    now.denied_subscribes == before.denied_subscribes
                        && now.denied_publishes == before.denied_publishes,
                    "denials after the desk {step}: {before:?} -> {now:?}"
                );
            }
            _ => anyhow::bail!("unexpected step: {line}"),
        }
        Ok(json!({}))
    })
    .await?;

    // The closed conversation stayed on screen through the reconnect.
    assert_eq!(
        result["shown"]["before"], result["shown"]["after"],
        "{result:#}"
    );
    // And the record holds no denial of Ann's.
    for action in ["mqtt.subscribe.denied", "mqtt.publish.denied"] {
        let denied = get(
            &stack,
            &sue,
            &format!("/v1/audit?actor=ann&action={action}"),
        )
        .await?;
        assert_eq!(denied["items"], json!([]), "{action}: {denied:#}");
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn sign_out_ends_the_token_on_the_server_then_forgets_it() -> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let stack = TestStack::start().await?;
    desk_staff(&stack).await?;
    let config = script_config(&js, &stack, "sign-out");
    let result = run(&js, "web-desk-trust.mjs", &config, no_steps).await?;

    // The page asked the server to end its own token, once, then kept nothing.
    let token = result["token"].as_str().unwrap_or_default();
    assert!(!token.is_empty(), "{result:#}");
    assert_eq!(
        result["logout"],
        json!([{"method": "POST", "authorization": format!("Bearer {token}")}]),
        "{result:#}"
    );
    assert_eq!(result["stored"], json!([0, 0]), "{result:#}");

    // The server ended it: a copy of the token is worth nothing.
    let response = reqwest::Client::new()
        .get(stack.http_url("/v1/people/bob"))
        .bearer_auth(token)
        .send()
        .await?;
    assert_eq!(
        response.status(),
        401,
        "the token still works after sign-out"
    );
    stack.shutdown().await;
    Ok(())
}
