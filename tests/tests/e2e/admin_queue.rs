//! The queue and assignment, over real HTTP and MQTT: waiting sessions are offered to the least
//! loaded available agent of their team with room, and the offer reaches the agent's
//! assignments topic; assign, transfer and close over HTTP leave the same record as the same
//! actions over MQTT.

use std::time::Duration;

use courtchat::StaffRole;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;
use serde_json::{Value, json};
use testkit::TestStack;
use testkit::mqtt::{PATIENCE, TestClientV5, filter};

use super::api::call;
use super::chat::{connected, submit};
use super::staff;

async fn set_availability(stack: &TestStack, token: &str, status: &str) -> anyhow::Result<()> {
    let body = json!({"status": status});
    let (code, answer) = call(
        stack,
        reqwest::Method::PUT,
        "/v1/me/availability",
        token,
        Some(body),
    )
    .await?;
    anyhow::ensure!(code == 200, "availability {status}: {code} {answer}");
    Ok(())
}

/// A kiosk that opens a session for `team`; returns the session id (the kiosk stays connected
/// so that nothing about the session changes when it goes).
async fn open_for(
    stack: &TestStack,
    kiosk: &str,
    team: &str,
) -> anyhow::Result<(TestClientV5, String)> {
    let token = stack.token(kiosk, courtchat::Role::Applicant);
    let mut client = connected(stack, kiosk, token).await?;
    let opened = submit(
        &mut client,
        format!("cc/v1/open/{kiosk}"),
        json!({"client_msg_id": "o", "channel": "kiosk", "topic": team}),
    )
    .await?;
    let session = opened["session_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no session: {opened}"))?;
    Ok((client, session.to_owned()))
}

/// An agent's dashboard: connected over MQTT with their sign-in token, watching their
/// assignments.
async fn dashboard(stack: &TestStack, name: &str, token: &str) -> anyhow::Result<TestClientV5> {
    let mut client = connected(stack, name, token.to_owned()).await?;
    let codes = client
        .subscribe(vec![filter(
            &format!("cc/v1/staff/{name}/assignments"),
            QoS::AtLeastOnce,
        )])
        .await?;
    anyhow::ensure!(
        codes == [SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        "{codes:?}"
    );
    Ok(client)
}

/// The next assignment the dashboard receives.
async fn next_assignment(client: &mut TestClientV5) -> anyhow::Result<Value> {
    loop {
        let publish = tokio::time::timeout(PATIENCE, client.next_publish()).await??;
        if String::from_utf8_lossy(&publish.topic).ends_with("/assignments") {
            return Ok(serde_json::from_slice(&publish.payload)?);
        }
    }
}

/// The ids of the sessions waiting, as an agent sees them.
async fn waiting(stack: &TestStack, token: &str) -> anyhow::Result<Vec<String>> {
    let (code, page) = call(stack, reqwest::Method::GET, "/v1/queue", token, None).await?;
    anyhow::ensure!(code == 200, "{code} {page}");
    Ok(page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["id"].as_str().unwrap_or_default().to_owned())
        .collect())
}

async fn transcript(stack: &TestStack, token: &str, session: &str) -> anyhow::Result<Value> {
    let path = format!("/v1/sessions/{session}/transcript");
    let (code, body) = call(stack, reqwest::Method::GET, &path, token, None).await?;
    anyhow::ensure!(code == 200, "{code} {body}");
    Ok(body)
}

/// The audit actions recorded for a session, in order.
async fn audit_actions(
    stack: &TestStack,
    token: &str,
    session: &str,
) -> anyhow::Result<Vec<String>> {
    let path = format!("/v1/audit?session={session}&limit=200");
    let (code, page) = call(stack, reqwest::Method::GET, &path, token, None).await?;
    anyhow::ensure!(code == 200, "{code} {page}");
    Ok(page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect())
}

#[tokio::test]
async fn waiting_sessions_go_to_the_least_loaded_available_agent_of_their_team()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let root = staff::add_signed_in(&stack, "root", StaffRole::Admin).await?;
    for (name, team, capacity) in [
        ("ann", "renewals", 2),
        ("bob", "renewals", 2),
        ("cat", "fines", 1),
    ] {
        staff::add_to_team(&stack, name, StaffRole::Agent, Some(team), Some(capacity)).await?;
    }
    let ann = staff::sign_in(&stack, "ann").await?;
    let bob = staff::sign_in(&stack, "bob").await?;
    let mut ann_desk = dashboard(&stack, "ann", &ann).await?;
    let mut bob_desk = dashboard(&stack, "bob", &bob).await?;

    // Nobody is available: the session waits, and every agent sees it waiting.
    let (_k1, s1) = open_for(&stack, "kiosk-1", "renewals").await?;
    assert_eq!(waiting(&stack, &bob).await?, [s1.as_str()]);

    // Ann says she is available: the waiting session is hers at once, on her dashboard, and
    // she may read it (her membership is in place before the notice).
    set_availability(&stack, &ann, "available").await?;
    let notice = next_assignment(&mut ann_desk).await?;
    assert_eq!(notice["session_id"], s1.as_str(), "{notice}");
    assert_eq!(notice["by"], "router");
    assert_eq!(notice["team"], "renewals");
    let codes = ann_desk
        .subscribe(vec![filter(
            &format!("cc/v1/sessions/{s1}/messages"),
            QoS::AtLeastOnce,
        )])
        .await?;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    assert!(waiting(&stack, &ann).await?.is_empty());
    let (_, person) = call(&stack, reqwest::Method::GET, "/v1/people/ann", &ann, None).await?;
    assert_eq!(person["available"], true, "{person}");

    // Bob too. The next session goes to Bob (none against Ann's one); the one after to Ann
    // (one each, and Ann's offer is the older); then Ann is full and Bob takes the fourth.
    set_availability(&stack, &bob, "available").await?;
    let (_k2, s2) = open_for(&stack, "kiosk-2", "renewals").await?;
    assert_eq!(
        next_assignment(&mut bob_desk).await?["session_id"],
        s2.as_str()
    );
    // A session for another team waits for that team, though Bob has room.
    let (_kf, fines) = open_for(&stack, "kiosk-f", "fines").await?;
    let (_k3, s3) = open_for(&stack, "kiosk-3", "renewals").await?;
    assert_eq!(
        next_assignment(&mut ann_desk).await?["session_id"],
        s3.as_str()
    );
    let (_k4, s4) = open_for(&stack, "kiosk-4", "renewals").await?;
    assert_eq!(
        next_assignment(&mut bob_desk).await?["session_id"],
        s4.as_str()
    );
    // Both are full now: the fifth waits, after the fines session.
    let (_k5, s5) = open_for(&stack, "kiosk-5", "renewals").await?;
    assert_eq!(waiting(&stack, &ann).await?, [fines.clone(), s5.clone()]);

    // Ann closes one of hers over HTTP: she has room again, and the fifth is hers.
    let path = format!("/v1/sessions/{s1}/close");
    let (code, closed) = call(&stack, reqwest::Method::POST, &path, &ann, Some(json!({}))).await?;
    assert_eq!(code, 200, "{closed}");
    assert_eq!(
        next_assignment(&mut ann_desk).await?["session_id"],
        s5.as_str()
    );
    assert_eq!(waiting(&stack, &ann).await?, [fines.as_str()]);

    // An agent who goes away is offered nothing more; the fines session waits for Cat.
    set_availability(&stack, &bob, "away").await?;
    let cat = staff::sign_in(&stack, "cat").await?;
    let mut cat_desk = dashboard(&stack, "cat", &cat).await?;
    set_availability(&stack, &cat, "available").await?;
    assert_eq!(
        next_assignment(&mut cat_desk).await?["session_id"],
        fines.as_str()
    );
    assert!(waiting(&stack, &cat).await?.is_empty());
    assert!(
        bob_desk
            .publishes_within(Duration::from_millis(300))
            .await
            .iter()
            .all(|p| !String::from_utf8_lossy(&p.topic).ends_with("/assignments")),
        "Bob, away and full, was offered something"
    );

    // The record: the routed agent's join, the session turning active, and why this agent.
    let record = transcript(&stack, &root, &s3).await?;
    let joined = &record["entries"][1];
    assert_eq!(joined["sender"], "ann", "{record}");
    assert!(
        joined["body"]
            .as_str()
            .unwrap_or_default()
            .contains("joined")
    );
    assert_eq!(record["session"]["assigned_agent"], "ann");
    let actions = audit_actions(&stack, &root, &s3).await?;
    assert_eq!(
        actions,
        [
            "session.opened",
            "session.opened",
            "session.joined",
            "session.status_changed",
            "session.routed",
            // The transcript read just above is on the record too.
            "session.transcript.read"
        ]
    );
    let (_, availability) = call(
        &stack,
        reqwest::Method::GET,
        "/v1/audit?action=staff.availability&actor=bob",
        &root,
        None,
    )
    .await?;
    assert_eq!(
        availability["items"].as_array().map(Vec::len),
        Some(2),
        "{availability}"
    );

    // Admins take no sessions; a malformed status is a 400 problem.
    let (code, problem) = call(
        &stack,
        reqwest::Method::PUT,
        "/v1/me/availability",
        &root,
        Some(json!({"status": "available"})),
    )
    .await?;
    assert_eq!(code, 403, "{problem}");
    let (code, problem) = call(
        &stack,
        reqwest::Method::PUT,
        "/v1/me/availability",
        &ann,
        Some(json!({"status": "sleeping"})),
    )
    .await?;
    assert_eq!(code, 400, "{problem}");
    stack.shutdown().await;
    Ok(())
}

/// The kinds of a transcript's entries, with events by type: what a transfer leaves.
fn shape(record: &Value) -> Vec<String> {
    record["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let body: Value =
                serde_json::from_str(e["body"].as_str().unwrap_or_default()).unwrap_or(Value::Null);
            match body["type"].as_str() {
                Some(event) => event.to_owned(),
                None => e["kind"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

#[tokio::test]
async fn assign_transfer_and_close_over_http_leave_the_record_of_the_mqtt_actions()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let root = staff::add_signed_in(&stack, "root", StaffRole::Admin).await?;
    let sue = staff::add_signed_in(&stack, "sue", StaffRole::Supervisor).await?;
    // Agents join sessions of their own team only.
    for name in ["ann", "bob"] {
        staff::add_to_team(&stack, name, StaffRole::Agent, Some("renewals"), None).await?;
    }
    let ann = staff::sign_in(&stack, "ann").await?;
    let bob = staff::sign_in(&stack, "bob").await?;
    let mut ann_mqtt = connected(&stack, "ann", ann.clone()).await?;
    let mut bob_desk = dashboard(&stack, "bob", &bob).await?;

    // Over MQTT: Ann joins session A, takes the lock, and transfers it to Bob.
    let (_ka, a) = open_for(&stack, "kiosk-a", "renewals").await?;
    let ann_a = format!("cc/v1/sessions/{a}/submit/ann");
    for action in [
        json!({"client_msg_id": "j", "type": "join"}),
        json!({"client_msg_id": "l", "type": "lock", "op": "acquire"}),
        json!({"client_msg_id": "t", "type": "transfer", "to_agent": "bob"}),
    ] {
        let ack = submit(&mut ann_mqtt, ann_a.clone(), action.clone()).await?;
        assert_eq!(ack["status"], "accepted", "{action}: {ack}");
    }
    let notice = next_assignment(&mut bob_desk).await?;
    assert_eq!(
        (notice["session_id"].as_str(), notice["by"].as_str()),
        (Some(a.as_str()), Some("ann"))
    );

    // Over HTTP: Ann joins session B and takes the lock; Sue, from outside, assigns it to Bob.
    let (_kb, b) = open_for(&stack, "kiosk-b", "renewals").await?;
    let ann_b = format!("cc/v1/sessions/{b}/submit/ann");
    for action in [
        json!({"client_msg_id": "j", "type": "join"}),
        json!({"client_msg_id": "l", "type": "lock", "op": "acquire"}),
    ] {
        let ack = submit(&mut ann_mqtt, ann_b.clone(), action.clone()).await?;
        assert_eq!(ack["status"], "accepted", "{action}: {ack}");
    }
    let assign = format!("/v1/sessions/{b}/assign");
    let response = reqwest::Client::new()
        .post(stack.http_url(&assign))
        .bearer_auth(&sue)
        .header("Idempotency-Key", "assign-b-1")
        .json(&json!({"agent": "bob"}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let assigned: Value = response.json().await?;
    let notice = next_assignment(&mut bob_desk).await?;
    assert_eq!(
        (notice["session_id"].as_str(), notice["by"].as_str()),
        (Some(b.as_str()), Some("sue"))
    );
    assert_eq!(notice["seq"], assigned["seq"], "{assigned}");

    // The same entries and the same audit trail, but for who transferred.
    let (record_a, record_b) = (
        transcript(&stack, &root, &a).await?,
        transcript(&stack, &root, &b).await?,
    );
    assert_eq!(shape(&record_a), shape(&record_b));
    assert_eq!(
        shape(&record_b),
        [
            "opened",
            "joined",
            "status_changed",
            "joined",
            "transferred",
            "left"
        ]
    );
    assert_eq!(
        audit_actions(&stack, &root, &a).await?,
        audit_actions(&stack, &root, &b).await?
    );
    assert_eq!(record_b["session"]["assigned_agent"], "bob");
    let holder = record_b["lock_history"]
        .as_array()
        .and_then(|h| h.last())
        .cloned();
    assert_eq!(
        holder.map(|h| h["action"].clone()),
        Some(json!("lock.taken_over"))
    );

    // The same request again (same Idempotency-Key) is the same submission: the original
    // answer, nothing new stored.
    let response = reqwest::Client::new()
        .post(stack.http_url(&assign))
        .bearer_auth(&sue)
        .header("Idempotency-Key", "assign-b-1")
        .json(&json!({"agent": "bob"}))
        .send()
        .await?;
    let again: Value = response.json().await?;
    assert_eq!(again["seq"], assigned["seq"], "{again}");
    assert_eq!(shape(&transcript(&stack, &root, &b).await?).len(), 6);

    // Refusals, as problems named like the MQTT reasons.
    let post = |path: String, token: String, body: Value| {
        let stack = &stack;
        async move { call(stack, reqwest::Method::POST, &path, &token, Some(body)).await }
    };
    let (code, problem) = post(
        format!("/v1/sessions/{b}/assign"),
        bob.clone(),
        json!({"agent": "ann"}),
    )
    .await?;
    assert_eq!(code, 403, "an agent does not assign: {problem}");
    let (code, problem) = post(format!("/v1/sessions/{a}/close"), ann.clone(), json!({})).await?;
    assert_eq!(
        (code, problem["type"].as_str()),
        (403, Some("urn:courtchat:problem:not-allowed")),
        "{problem}"
    );
    let (code, problem) = post(
        "/v1/sessions/s-nope/close".to_owned(),
        sue.clone(),
        json!({}),
    )
    .await?;
    assert_eq!(
        (code, problem["type"].as_str()),
        (404, Some("urn:courtchat:problem:unknown-session")),
        "{problem}"
    );
    let (code, problem) = post(
        format!("/v1/sessions/{b}/transfer"),
        sue.clone(),
        json!({"to_agent": "ann", "to_team": "x"}),
    )
    .await?;
    assert_eq!(code, 400, "{problem}");
    let (code, problem) = post(
        format!("/v1/sessions/{b}/assign"),
        sue.clone(),
        json!({"agent": "nobody"}),
    )
    .await?;
    assert_eq!(code, 403, "not staff: {problem}");

    // Back to a team's queue over HTTP: Bob leaves, the session waits; then an admin closes it
    // and the applicant sees the close on the stream.
    let (code, moved) = post(
        format!("/v1/sessions/{b}/transfer"),
        sue.clone(),
        json!({"to_team": "fines"}),
    )
    .await?;
    assert_eq!(code, 200, "{moved}");
    assert_eq!(waiting(&stack, &ann).await?, [b.as_str()]);
    let (code, closed) = post(
        format!("/v1/sessions/{b}/close"),
        root.clone(),
        json!({"reason": "duplicate"}),
    )
    .await?;
    assert_eq!(code, 200, "{closed}");
    let (code, problem) = post(format!("/v1/sessions/{b}/close"), root.clone(), json!({})).await?;
    assert_eq!(
        (code, problem["type"].as_str()),
        (409, Some("urn:courtchat:problem:session-closed")),
        "{problem}"
    );
    let record = transcript(&stack, &root, &b).await?;
    assert_eq!(record["session"]["state"], "closed");
    // The closing reason is a staff-only note just before the close.
    assert_eq!(
        shape(&record)[6..],
        [
            "transferred",
            "left",
            "status_changed",
            "note",
            "status_changed",
            "closed"
        ]
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_dashboard_that_drops_goes_away_through_its_will() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let dan = staff::add_signed_in(&stack, "dan", StaffRole::Agent).await?;
    // The desk's will says "away": if its connection drops, the queue stops offering to it.
    let addr = stack.mqtt_tcp_addr();
    let mut options = rumqttc::v5::MqttOptions::new("dan", addr.ip().to_string(), addr.port());
    options.set_credentials("dan", dan.clone());
    let away = json!({"client_msg_id": "will-1", "type": "availability", "status": "away"});
    options.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        "cc/v1/staff/dan/submit",
        away.to_string(),
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let desk = TestClientV5::connect(options).await?;
    set_availability(&stack, &dan, "available").await?;
    desk.kill();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, person) = call(&stack, reqwest::Method::GET, "/v1/people/dan", &dan, None).await?;
        if person["available"] == false {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "still available after the desk dropped: {person}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_kiosk, session) = open_for(&stack, "kiosk-w", "renewals").await?;
    assert_eq!(waiting(&stack, &dan).await?, [session.as_str()]);
    stack.shutdown().await;
    Ok(())
}
