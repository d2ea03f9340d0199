//! Abandoned sessions: the server closes an open session whose applicant has gone (presence
//! `offline`, or not heard of since the pipeline started) for `bridge.abandon_after_secs`, with
//! reason `abandoned`, audited; the lock is released and the agent's capacity goes to the next
//! waiting session.

use std::time::Duration;

use courtchat::{Role, StaffRole};
use schemas::db::entities::{audit_event, session};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use testkit::{TestDatabase, TestStack};

use super::participants::{Participant, assigned, eventually};
use super::staff;

/// Gone applicants are closed after this long in these tests.
const AFTER_SECS: u64 = 2;

async fn stack() -> anyhow::Result<TestStack> {
    TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.bridge.abandon_after_secs = AFTER_SECS;
    })
    .await
}

/// An agent's desk: connected, following its assignments, available.
async fn desk(stack: &TestStack, name: &str) -> anyhow::Result<Participant> {
    Participant::available_desk(stack, name, stack.token(name, Role::Agent)).await
}

async fn status(stack: &TestStack, id: &str) -> anyhow::Result<session::SessionStatus> {
    let row = session::Entity::find_by_id(id)
        .one(stack.store().connection())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no session {id}"))?;
    Ok(row.status)
}

async fn audited(stack: &TestStack, id: &str, action: &str) -> anyhow::Result<Vec<Value>> {
    let rows = audit_event::Entity::find()
        .filter(audit_event::Column::SessionId.eq(id))
        .filter(audit_event::Column::Action.eq(action))
        .all(stack.store().connection())
        .await?;
    Ok(rows
        .iter()
        .map(|row| serde_json::from_str(&row.detail).unwrap_or_default())
        .collect())
}

#[tokio::test]
async fn a_session_whose_applicant_went_offline_is_closed_and_the_agent_gets_the_next()
-> anyhow::Result<()> {
    let stack = stack().await?;
    staff::add_to_team(&stack, "ann", StaffRole::Agent, None, Some(1)).await?;
    let mut ann = desk(&stack, "ann").await?;

    // The first applicant's session goes to Ann, who takes the lock; the second waits.
    let mut first = Participant::applicant(&stack, "kiosk-1").await?;
    let s1 = first.open(None).await?;
    first.presence(&s1, "online").await?;
    ann.until("the first session", |seen| assigned(seen, &s1))
        .await?;
    ann.follow(&s1, &["messages", "notes", "lock"]).await?;
    ann.accepted(
        &s1,
        json!({"client_msg_id": "l", "type": "lock", "op": "acquire"}),
    )
    .await?;
    let mut second = Participant::applicant(&stack, "kiosk-2").await?;
    let s2 = second.open(None).await?;
    second.presence(&s2, "online").await?;

    // The first applicant goes offline (its will, or the gateway, would say so).
    first.presence(&s1, "offline").await?;
    first.client.disconnect().await?;

    // The server closes the first session: the lock is free, the close is on the stream with
    // its reason as a note for staff, and audited; Ann gets the waiting session.
    ann.until("the abandoned session's close", |seen| {
        seen.iter()
            .any(|(t, p)| t.ends_with("/messages") && p["event"]["type"] == "closed")
    })
    .await?;
    ann.until("the second session", |seen| assigned(seen, &s2))
        .await?;
    let notes: Vec<&Value> = ann.entries("notes");
    assert!(
        notes
            .iter()
            .any(|n| n["body"] == "abandoned" && n["sender"] == "system"),
        "{notes:?}"
    );
    let locks: Vec<&Value> = ann.entries("lock");
    assert_eq!(
        locks.last().map(|l| l["holder"].clone()),
        Some(Value::Null),
        "{locks:?}"
    );
    assert_eq!(status(&stack, &s1).await?, session::SessionStatus::Closed);
    let abandoned = audited(&stack, &s1, "session.abandoned").await?;
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert_eq!(abandoned[0]["applicant"], "kiosk-1");
    assert_eq!(abandoned[0]["after_secs"], AFTER_SECS);
    assert_eq!(audited(&stack, &s1, "session.closed").await?.len(), 1);
    // The second applicant is there: their session stays open.
    assert_eq!(status(&stack, &s2).await?, session::SessionStatus::Active);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn after_a_restart_an_applicant_not_heard_of_is_gone_and_one_who_speaks_is_not()
-> anyhow::Result<()> {
    let stack = stack().await?;
    let mut quiet = Participant::applicant(&stack, "kiosk-quiet").await?;
    let gone = quiet.open(None).await?;
    let mut talker = Participant::applicant(&stack, "kiosk-talker").await?;
    let there = talker.open(None).await?;
    drop(quiet);
    drop(talker);
    let stack = stack.restart().await?;

    // After the restart one applicant says it is there; nothing is heard of the other.
    let mut talker = Participant::applicant(&stack, "kiosk-talker").await?;
    talker.presence(&there, "online").await?;
    eventually(
        Duration::from_secs(15),
        "the silent applicant's session closes",
        || async { Ok(status(&stack, &gone).await? == session::SessionStatus::Closed) },
    )
    .await?;
    let abandoned = audited(&stack, &gone, "session.abandoned").await?;
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    // The present one is open, well past the time.
    talker
        .accepted(
            &there,
            json!({"client_msg_id": "m", "type": "message", "body": "Still here"}),
        )
        .await?;
    assert_eq!(
        status(&stack, &there).await?,
        session::SessionStatus::Queued
    );
    assert!(
        audited(&stack, &there, "session.abandoned")
            .await?
            .is_empty()
    );
    stack.shutdown().await;
    Ok(())
}
