//! `/v1/audit` over real HTTP, on a record made through MQTT: query with filters and pages,
//! export as JSON Lines, verify (and find a tampered entry); agents read only the audit of
//! their own sessions.

use courtchat::StaffRole;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use testkit::TestStack;

use super::chat::{self, connected, submit};
use super::staff;

async fn get(
    stack: &TestStack,
    path: &str,
    token: &str,
) -> anyhow::Result<(u16, reqwest::Response)> {
    let response = reqwest::Client::new()
        .get(stack.http_url(path))
        .bearer_auth(token)
        .send()
        .await?;
    Ok((response.status().as_u16(), response))
}

#[tokio::test]
async fn the_record_is_queried_exported_and_verified_by_those_allowed() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let ann = staff::add_signed_in(&stack, "ann", StaffRole::Admin).await?;
    let bob = staff::add_signed_in(&stack, "bob", StaffRole::Agent).await?;
    let cal = staff::add_signed_in(&stack, "cal", StaffRole::Agent).await?;

    // A conversation on the record: a kiosk opens a session and writes; Bob joins.
    let (mut kiosk, session) = chat::kiosk_with_session(&stack, "kiosk-a", "kiosk").await?;
    for n in 0..3 {
        let ack = submit(
            &mut kiosk,
            format!("cc/v1/sessions/{session}/submit/kiosk-a"),
            json!({"client_msg_id": format!("m{n}"), "type": "message", "body": "hello"}),
        )
        .await?;
        assert_eq!(ack["status"], "accepted", "{ack}");
    }
    let mut bob_mqtt = connected(&stack, "bob", bob.clone()).await?;
    let joined = submit(
        &mut bob_mqtt,
        format!("cc/v1/sessions/{session}/submit/bob"),
        json!({"client_msg_id": "j", "type": "join"}),
    )
    .await?;
    assert_eq!(joined["status"], "accepted", "{joined}");

    // Filters and pages.
    let (status, response) = get(
        &stack,
        &format!("/v1/audit?session={session}&action=message.accepted&limit=2"),
        &ann,
    )
    .await?;
    assert_eq!(status, 200);
    let first: Value = response.json().await?;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2));
    assert!(
        first["items"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| e["action"] == "message.accepted" && e["session_id"] == session.as_str())
    );
    let cursor = first["next_cursor"]
        .as_str()
        .expect("another page")
        .to_owned();
    let (_, response) = get(
        &stack,
        &format!("/v1/audit?session={session}&action=message.accepted&limit=2&cursor={cursor}"),
        &ann,
    )
    .await?;
    let second: Value = response.json().await?;
    assert_eq!(second["items"].as_array().map(Vec::len), Some(1));
    assert!(second["items"][0]["id"].as_i64() > first["items"][1]["id"].as_i64());
    let (_, response) = get(&stack, "/v1/audit?actor=ann&action=admin.login", &ann).await?;
    let logins: Value = response.json().await?;
    assert_eq!(logins["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        logins["items"][0]["detail"]["address"], "127.0.0.1",
        "detail is JSON"
    );
    let (_, response) = get(&stack, "/v1/audit?until=2000-01-01T00:00:00Z", &ann).await?;
    assert_eq!(response.json::<Value>().await?["items"], json!([]));
    assert_eq!(get(&stack, "/v1/audit?since=yesterday", &ann).await?.0, 400);

    // Agents: only a session they took part in, and it must be named.
    assert_eq!(get(&stack, "/v1/audit", &bob).await?.0, 403);
    assert_eq!(
        get(&stack, &format!("/v1/audit?session={session}"), &bob)
            .await?
            .0,
        200
    );
    assert_eq!(
        get(&stack, &format!("/v1/audit?session={session}"), &cal)
            .await?
            .0,
        403
    );
    assert_eq!(get(&stack, "/v1/audit/export", &bob).await?.0, 403);
    assert_eq!(get(&stack, "/v1/audit/verify", &bob).await?.0, 403);

    // The export holds every entry once, in chain order, one JSON object a line.
    let (status, response) = get(&stack, "/v1/audit/export", &ann).await?;
    assert_eq!(status, 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await?;
    let ids: Vec<i64> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).map(|v| v["id"].as_i64().unwrap_or(-1)))
        .collect::<Result<_, _>>()?;
    let db = stack.store().connection();
    let count = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM audit_events",
        ))
        .await?
        .expect("a count")
        .try_get::<i64>("", "n")?;
    assert_eq!(ids.len() as i64, count);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "chain order");

    // Verification: intact, until an entry is changed behind the server's back.
    let (_, response) = get(&stack, "/v1/audit/verify", &ann).await?;
    let verdict: Value = response.json().await?;
    assert_eq!(verdict["intact"], true, "{verdict}");
    assert_eq!(verdict["entries"].as_i64(), Some(count));
    let tampered = ids[ids.len() / 2];
    let sql = format!("UPDATE audit_events SET actor = 'mallory' WHERE id = {tampered}");
    db.execute_unprepared(&sql).await?;
    let (_, response) = get(&stack, "/v1/audit/verify", &ann).await?;
    let verdict: Value = response.json().await?;
    assert_eq!(verdict["intact"], false);
    assert_eq!(
        verdict["first_broken"]["id"].as_i64(),
        Some(tampered),
        "{verdict}"
    );
    stack.shutdown().await;
    Ok(())
}
