//! Every kind of submission is limited per sender (actions, receipts, resyncs, each with an
//! allowance of its own), resyncs also by the bytes they send back, and applicants by how many
//! sessions they have open: past a limit the sender is refused with the time to wait (or, for
//! sessions, why), nothing is stored or audited, and nobody else is slowed down.

use std::time::Duration;

use courtchat::{Role, StaffRole};
use schemas::db::entities::audit_event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use testkit::{TestDatabase, TestStack};

use super::participants::Participant;
use super::staff;

fn rejected_as(ack: &Value, reason: &str) -> bool {
    ack["status"] == "rejected" && ack["reason"] == reason
}

/// The milliseconds a refusal says to wait.
fn retry_ms(ack: &Value) -> Option<u64> {
    let message = ack["message"].as_str()?;
    let tail = message.split("retry in ").nth(1)?;
    tail.split(' ').next()?.parse().ok()
}

/// Fires `actions` at `session` as `who` without waiting, then collects their answers in order.
async fn fire(
    who: &mut Participant,
    session: &str,
    actions: Vec<Value>,
) -> anyhow::Result<Vec<Value>> {
    let topic = format!("cc/v1/sessions/{session}/submit/{}", who.subject);
    for action in &actions {
        who.publish(topic.clone(), action).await?;
    }
    let mut answers = Vec::new();
    for action in &actions {
        answers.push(
            who.answer(action["client_msg_id"].as_str().unwrap_or_default())
                .await?,
        );
    }
    Ok(answers)
}

#[tokio::test]
async fn each_kind_of_submission_has_its_own_allowance_per_sender() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.bridge.rate_per_second = 0.1;
        config.bridge.rate_burst = 4.0;
        config.bridge.receipt_rate_per_second = 0.1;
        config.bridge.receipt_rate_burst = 2.0;
        config.bridge.resync_rate_per_second = 0.1;
        config.bridge.resync_rate_burst = 2.0;
    })
    .await?;
    staff::add(&stack, "ann", StaffRole::Agent).await?;
    let mut kiosk = Participant::applicant(&stack, "kiosk-1").await?;
    // The open is the applicant's first action.
    let session = kiosk.open(None).await?;

    let burst = |kind: &str, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| match kind {
                "receipt" => json!({"client_msg_id": format!("r{i}"), "type": "receipt", "read_seq": 1}),
                "resync" => json!({"client_msg_id": format!("s{i}"), "type": "resync", "from_seq": 1}),
                _ => json!({"client_msg_id": format!("m{i}"), "type": "message", "body": format!("line {i}")}),
            })
            .collect()
    };
    // (kind, how many at once, how many taken): receipts and resyncs are not charged to the
    // actions, nor actions to them.
    for (kind, fired, taken) in [("receipt", 4, 2), ("resync", 4, 2), ("message", 5, 3)] {
        let answers = fire(&mut kiosk, &session, burst(kind, fired)).await?;
        let refused: Vec<&Value> = answers
            .iter()
            .filter(|a| rejected_as(a, "rate_limited"))
            .collect();
        assert_eq!(fired - refused.len(), taken, "{kind}: {answers:?}");
        assert!(
            refused.iter().all(|a| retry_ms(a).is_some_and(|ms| ms > 0)),
            "{kind}: {refused:?}"
        );
    }
    // Staff actions that leave no entry are actions too: the lock, here.
    let mut ann = Participant::connect(&stack, "ann", stack.token("ann", Role::Agent)).await?;
    let mut actions = vec![json!({"client_msg_id": "j", "type": "join"})];
    for i in 0..5 {
        let op = if i % 2 == 0 { "acquire" } else { "release" };
        actions.push(json!({"client_msg_id": format!("l{i}"), "type": "lock", "op": op}));
    }
    let answers = fire(&mut ann, &session, actions).await?;
    let limited = answers
        .iter()
        .filter(|a| rejected_as(a, "rate_limited"))
        .count();
    assert_eq!(limited, 2, "{answers:?}");
    // Another applicant is not held back by the first one's limits.
    let mut other = Participant::applicant(&stack, "kiosk-2").await?;
    let theirs = other.open(None).await?;
    other
        .accepted(
            &theirs,
            json!({"client_msg_id": "m", "type": "message", "body": "Hello"}),
        )
        .await?;
    // Refusals past a limit cost the record nothing.
    let audited = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("submission.rejected"))
        .filter(audit_event::Column::Detail.contains("rate_limited"))
        .all(stack.store().connection())
        .await?;
    assert!(audited.is_empty(), "{audited:?}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn resyncs_are_limited_by_the_bytes_they_send_back() -> anyhow::Result<()> {
    const PAGE: usize = 16 * 1024;
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.bridge.rate_burst = 1000.0;
        config.bridge.resync_page_bytes = PAGE;
        config.bridge.resync_bytes_per_second = 4 * 1024;
        config.bridge.resync_bytes_burst = PAGE as u64;
    })
    .await?;
    let mut kiosk = Participant::applicant(&stack, "kiosk-1").await?;
    let session = kiosk.open(None).await?;
    let messages: Vec<Value> = (0..20)
        .map(|i| json!({"client_msg_id": format!("m{i}"), "type": "message", "body": "x".repeat(2000)}))
        .collect();
    fire(&mut kiosk, &session, messages).await?;

    // A full page spends the budget; the next is refused, saying when to retry.
    let first = kiosk
        .act(
            &session,
            json!({"client_msg_id": "r1", "type": "resync", "from_seq": 1}),
        )
        .await?;
    let sent = serde_json::to_vec(&first["entries"])?.len();
    assert!(first["next_from_seq"].is_u64(), "a full page: {first}");
    assert!(sent <= PAGE, "{sent} bytes");
    let second = kiosk
        .act(
            &session,
            json!({"client_msg_id": "r2", "type": "resync", "from_seq": 1}),
        )
        .await?;
    assert!(rejected_as(&second, "rate_limited"), "{second}");
    let wait = retry_ms(&second).ok_or_else(|| anyhow::anyhow!("no retry time: {second}"))?;
    assert!((1..=4_000).contains(&wait), "{second}");
    // Once that time has passed, as the refusal said, a page is sent again.
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let third = kiosk
        .act(
            &session,
            json!({"client_msg_id": "r3", "type": "resync", "from_seq": 1}),
        )
        .await?;
    assert!(
        third["entries"].as_array().is_some_and(|e| !e.is_empty()),
        "{third}"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_applicant_has_at_most_the_configured_sessions_open() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut kiosk = Participant::applicant(&stack, "kiosk-1").await?;
    let first = kiosk.open(None).await?;
    let open = |cmid: &str| json!({"v": 1, "client_msg_id": cmid, "channel": "kiosk"});
    let topic = "cc/v1/open/kiosk-1".to_owned();
    let second = kiosk.submit(topic.clone(), open("open-2")).await?;
    assert!(rejected_as(&second, "not_allowed"), "{second}");
    assert!(
        second["message"]
            .as_str()
            .is_some_and(|m| m.contains("most allowed")),
        "{second}"
    );
    // Asking again for the session it has is no new session: the same answer.
    let again = kiosk.submit(topic.clone(), open("open-1")).await?;
    assert_eq!(
        again["session_id"].as_str(),
        Some(first.as_str()),
        "{again}"
    );
    // Once it is closed, another may open; and the count is rebuilt from the record.
    kiosk
        .accepted(&first, json!({"client_msg_id": "c", "type": "close"}))
        .await?;
    let third = kiosk.submit(topic.clone(), open("open-3")).await?;
    assert_eq!(third["status"], "accepted", "{third}");
    drop(kiosk);
    let stack = stack.restart().await?;
    let mut kiosk = Participant::applicant(&stack, "kiosk-1").await?;
    let fourth = kiosk.submit(topic, open("open-4")).await?;
    assert!(
        rejected_as(&fourth, "not_allowed"),
        "after a restart: {fourth}"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn one_applicants_resync_flood_does_not_make_anothers_messages_busy() -> anyhow::Result<()> {
    const FLOOD: usize = 3000;
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        // Busy after 2 s: the production default (250 ms) scaled for an unoptimized build on
        // a shared machine (the test stack's own default, 10 s, would hide the flood).
        config.bridge.max_queue_delay_ms = 5000;
        config.bridge.rate_burst = 1000.0;
        config.bridge.rate_per_second = 1000.0;
    })
    .await?;
    let mut flooder = Participant::applicant(&stack, "kiosk-flood").await?;
    let theirs = flooder.open(None).await?;
    // A long conversation: every resync of it fills a page.
    let messages: Vec<Value> = (0..150)
        .map(|i| json!({"client_msg_id": format!("m{i}"), "type": "message", "body": format!("{i} {}", "x".repeat(3000))}))
        .collect();
    fire(&mut flooder, &theirs, messages).await?;
    let mut writer = Participant::applicant(&stack, "kiosk-writer").await?;
    let mine = writer.open(None).await?;

    // The flood, all at once; the other applicant writes meanwhile.
    let topic = format!("cc/v1/sessions/{theirs}/submit/kiosk-flood");
    for i in 0..FLOOD {
        let resync = json!({"client_msg_id": format!("f{i}"), "type": "resync", "from_seq": 1});
        flooder.publish(topic.clone(), &resync).await?;
    }
    let mut answers = Vec::new();
    for i in 0..20 {
        let message = json!({"client_msg_id": format!("w{i}"), "type": "message", "body": format!("line {i}")});
        answers.push(writer.act(&mine, message).await?);
    }
    let busy: Vec<&Value> = answers
        .iter()
        .filter(|a| a["status"] != "accepted")
        .collect();
    assert!(busy.is_empty(), "the writer was refused: {busy:?}");
    // The flood itself was mostly refused, cheaply.
    flooder
        .until("every answer to the flood", |seen| {
            seen.iter()
                .filter(|(t, p)| {
                    t.ends_with("/ack")
                        && p["client_msg_id"]
                            .as_str()
                            .is_some_and(|c| c.starts_with('f'))
                })
                .count()
                >= FLOOD
        })
        .await?;
    let limited = flooder
        .seen
        .iter()
        .filter(|(_, p)| rejected_as(p, "rate_limited"))
        .count();
    assert!(limited >= FLOOD - 100, "{limited} of {FLOOD} refused");
    stack.shutdown().await;
    Ok(())
}
