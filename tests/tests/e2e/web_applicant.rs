//! The applicant page (`/kiosk/`) in headless Chromium where issue 21 found trust broken, one
//! test per scenario of tests/js/web-applicant.mjs, each against the real server:
//! - what staff write for staff (escalation and closing reasons) is never on the applicant's
//!   page, even when an event still carries it: neutral sentences instead;
//! - a kiosk left alone asks "Are you still there?", and without an answer forgets the
//!   conversation (screen, storage, connection) and serves the next person as a new subject;
//! - a conversation the gateway has forgotten is not subscribed again after a reconnect, and a
//!   survey the gateway refuses is told to the applicant instead of hanging.

use courtchat::StaffRole;
use serde_json::{Value, json};
use testkit::{TestDatabase, TestStack};

use super::staff;
use super::web_desk::Script;

/// What web-applicant.mjs needs for `scenario` against `stack`, with an agent "bob".
async fn script_config(
    js: &testkit::JsClients,
    stack: &TestStack,
    scenario: &str,
) -> anyhow::Result<Value> {
    let bob = staff::sign_in(stack, "bob").await?;
    Ok(json!({
        "chromium": js.chromium,
        "scenario": scenario,
        "base": stack.http_url("").trim_end_matches('/'),
        "mqtt_url": stack.mqtt_ws_url(),
        "mqtt_path": stack.config().mqtt.websocket.path,
        "agent": {"name": "bob", "token": bob},
        "artifacts": super::node::artifacts_dir(),
    }))
}

/// Runs the script to its end, answering each step with `answer`; returns its result, which
/// must say it finished without an unexpected error on the page.
pub(super) async fn run(
    js: &testkit::JsClients,
    script: &str,
    config: &Value,
    mut answer: impl AsyncFnMut(&Value) -> anyhow::Result<Value>,
) -> anyhow::Result<Value> {
    let mut running = Script::start(js, script, config)?;
    let outcome = async {
        loop {
            let line = running.next().await?;
            if line["step"].is_string() {
                let reply = answer(&line).await?;
                running.answer(reply)?;
            } else {
                return anyhow::Ok(line);
            }
        }
    }
    .await;
    let stderr = running.finish();
    let result =
        outcome.map_err(|error| anyhow::anyhow!("{error:#}\n{script} stderr:\n{stderr}"))?;
    anyhow::ensure!(result["ok"] == true, "{result:#}\n{stderr}");
    anyhow::ensure!(
        result["unexpectedErrors"] == json!([]),
        "page or console errors: {result:#}"
    );
    Ok(result)
}

/// Bob, an agent of "licensing" (the kiosks' team: an agent joins only sessions of their team
/// or of none).
async fn agent_bob(stack: &TestStack) -> anyhow::Result<()> {
    staff::add_to_team(stack, "bob", StaffRole::Agent, Some("licensing"), None).await
}

async fn no_steps(line: &Value) -> anyhow::Result<Value> {
    anyhow::bail!("unexpected step: {line}")
}

pub(super) async fn get(stack: &TestStack, token: &str, path: &str) -> anyhow::Result<Value> {
    let response = reqwest::Client::new()
        .get(stack.http_url(path))
        .bearer_auth(token)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "{path}: {}", response.status());
    Ok(response.json().await?)
}

fn no_violations(result: &Value) {
    for (screen, found) in result["violations"].as_object().expect("violations") {
        assert_eq!(found, &json!([]), "axe-core on {screen}: {result:#}");
    }
}

#[tokio::test]
async fn the_applicant_page_never_shows_what_staff_wrote_for_staff() -> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let stack = TestStack::start().await?;
    agent_bob(&stack).await?;
    let mut config = script_config(&js, &stack, "staff-text").await?;
    config["service"] = json!({
        "name": "svc-web-test",
        "token": stack.token("svc-web-test", courtchat::Role::Service),
    });
    config["reasons"] = json!({
        "escalate": "fraud suspected: check the ID twice",
        "close": "staff only: rude on the phone",
        "hostile": "NOTE FROM SUPERVISOR: give this applicant a fee waiver",
    });
    let result = run(&js, "web-applicant.mjs", &config, no_steps).await?;

    assert_eq!(result["reasonsShown"], json!([]), "{result:#}");
    let events: Vec<&str> = result["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for sentence in [
        "Your conversation was passed to a supervisor",
        "An agent closed the conversation",
        "The conversation was closed",
    ] {
        assert!(events.contains(&sentence), "{sentence:?} in {events:?}");
    }
    // Escalated twice (the agent's, then the one that carried a reason), closed twice.
    let escalations = events
        .iter()
        .filter(|e| **e == "Your conversation was passed to a supervisor")
        .count();
    assert_eq!(escalations, 2, "{events:?}");
    no_violations(&result);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_idle_kiosk_asks_then_forgets_everything_for_the_next_person() -> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.admin.kiosk_idle_secs = 6;
        config.admin.kiosk_idle_warning_secs = 3;
    })
    .await?;
    let admin = staff::add_signed_in(&stack, "root", StaffRole::Admin).await?;
    agent_bob(&stack).await?;
    let mut config = script_config(&js, &stack, "idle-kiosk").await?;
    config["kiosk_credential"] = json!(super::web_enrolment::enrol(&stack, &admin).await?);
    let result = run(&js, "web-applicant.mjs", &config, no_steps).await?;

    assert_eq!(result["question"], "Are you still there?", "{result:#}");
    let countdown = result["countdown"].as_u64().unwrap_or_default();
    assert!((1..=3).contains(&countdown), "{result:#}");
    // Nothing of the first person's is left: not on screen, not in storage, not in a database.
    for after in ["afterReset", "afterDraft"] {
        assert_eq!(
            result[after],
            json!({
                "inDom": [],
                "storage": {"session": [], "local": ["courtchat.kiosk"], "databases": []},
            }),
            "{after}: {result:#}"
        );
    }
    // Its connection ended saying so, and the next person is someone else to the server.
    assert_eq!(result["offlineSeen"], true, "{result:#}");
    let sessions: Vec<&str> = result["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let [first, next] = sessions[..] else {
        panic!("two sessions: {result:#}");
    };
    assert_ne!(first, next);
    let applicant = async |session: &str| -> anyhow::Result<Value> {
        let transcript = get(
            &stack,
            &admin,
            &format!("/v1/sessions/{session}/transcript"),
        )
        .await?;
        Ok(transcript["session"]["applicant"].clone())
    };
    let (first_subject, next_subject) = (applicant(first).await?, applicant(next).await?);
    assert_eq!(first_subject, result["firstSubject"], "{result:#}");
    assert_ne!(first_subject, next_subject);
    no_violations(&result);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_forgotten_conversation_is_not_followed_again_and_a_refused_survey_is_told()
-> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    // The gateway keeps one closed session: the second to close makes it forget the first.
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.mqtt.closed_sessions_kept = 1;
    })
    .await?;
    let admin = staff::add_signed_in(&stack, "root", StaffRole::Admin).await?;
    agent_bob(&stack).await?;
    let config = script_config(&js, &stack, "survey-refused").await?;
    let mut before = None;
    let mut subject = String::new();
    let result = run(&js, "web-applicant.mjs", &config, async |line: &Value| {
        match line["step"].as_str() {
            Some("forgotten") => {
                let session = line["session"].as_str().unwrap_or_default();
                let transcript = get(
                    &stack,
                    &admin,
                    &format!("/v1/sessions/{session}/transcript"),
                )
                .await?;
                subject = transcript["session"]["applicant"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                before = Some(stack.broker_stats());
            }
            Some("answered") => {
                // After the reconnect, the page asked for nothing of the forgotten session;
                // its survey was the one refusal.
                let (before, now) = (before.expect("forgotten first"), stack.broker_stats());
                anyhow::ensure!(
                    now.denied_subscribes == before.denied_subscribes,
                    "subscriptions refused after the reconnect: {before:?} -> {now:?}"
                );
                anyhow::ensure!(
                    now.denied_publishes == before.denied_publishes + 1,
                    "the survey alone is refused: {before:?} -> {now:?}"
                );
            }
            _ => anyhow::bail!("unexpected step: {line}"),
        }
        Ok(json!({}))
    })
    .await?;

    assert!(
        result["told"]
            .as_str()
            .is_some_and(|told| told.contains("could not be recorded")),
        "{result:#}"
    );
    assert_eq!(result["surveyHidden"], true, "{result:#}");
    no_violations(&result);
    // The record agrees: no subscription of this applicant was refused.
    let denied = get(
        &stack,
        &admin,
        &format!("/v1/audit?actor={subject}&action=mqtt.subscribe.denied"),
    )
    .await?;
    assert_eq!(denied["items"], json!([]), "{denied:#}");
    stack.shutdown().await;
    Ok(())
}
