//! What the record holds is rebuilt from it when the server starts again: every open session's
//! lock state (retained on the lock topic), the queue and the roster (who is waiting, who is
//! full), and what a session closed before the restart still takes (the survey, a resync).

use courtchat::{Reply, Role, StaffRole};
use schemas::wire::{Action, Outcome, Submission};
use serde_json::json;
use testkit::TestStack;

use super::participants::{Participant, assigned};
use super::staff;

/// A member of staff's desk: connected, following its assignments, available.
async fn available(stack: &TestStack, name: &str, role: Role) -> anyhow::Result<Participant> {
    Participant::available_desk(stack, name, stack.token(name, role)).await
}

#[tokio::test]
async fn a_desk_loaded_after_a_restart_sees_who_holds_the_lock() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    staff::add(&stack, "ann", StaffRole::Agent).await?;
    staff::add(&stack, "sue", StaffRole::Supervisor).await?;
    let mut kiosk = Participant::applicant(&stack, "kiosk-1").await?;
    let session = kiosk.open(None).await?;
    let mut ann = Participant::connect(&stack, "ann", stack.token("ann", Role::Agent)).await?;
    ann.accepted(&session, json!({"client_msg_id": "j", "type": "join"}))
        .await?;
    ann.accepted(
        &session,
        json!({"client_msg_id": "l", "type": "lock", "op": "acquire"}),
    )
    .await?;
    drop((kiosk, ann));

    let stack = stack.restart().await?;
    // A supervisor's desk loads: the retained lock state says Ann holds the lock.
    let mut sue = Participant::connect(&stack, "sue", stack.token("sue", Role::Supervisor)).await?;
    sue.follow(&session, &["lock"]).await?;
    sue.until("the lock state", |seen| {
        seen.iter().any(|(t, _)| t.ends_with("/lock"))
    })
    .await?;
    let state = sue.entries("lock")[0].clone();
    assert_eq!(state["holder"], "ann", "{state}");
    assert_eq!(state["epoch"], 1, "{state}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_queue_and_the_agents_loads_come_from_the_record_after_a_restart() -> anyhow::Result<()>
{
    let stack = TestStack::start().await?;
    for name in ["ann", "bob"] {
        staff::add_to_team(&stack, name, StaffRole::Agent, None, Some(1)).await?;
    }
    // Ann, available, takes the first session and is full; the second waits.
    let mut ann = available(&stack, "ann", Role::Agent).await?;
    let mut first = Participant::applicant(&stack, "kiosk-1").await?;
    let s1 = first.open(None).await?;
    ann.until("the first session", |seen| assigned(seen, &s1))
        .await?;
    let mut second = Participant::applicant(&stack, "kiosk-2").await?;
    let s2 = second.open(None).await?;
    drop((ann, first, second));

    let stack = stack.restart().await?;
    let admin = staff::add_signed_in(&stack, "root", StaffRole::Admin).await?;
    let (code, queue) =
        super::api::call(&stack, reqwest::Method::GET, "/v1/queue", &admin, None).await?;
    assert_eq!(code, 200, "{queue}");
    let waiting: Vec<&str> = queue["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(waiting, [s2.as_str()], "{queue}");
    // Ann is still available (as stored) but full (her session, from the record): the waiting
    // session goes to Bob once he is available, not to her.
    let mut ann = Participant::connect(&stack, "ann", stack.token("ann", Role::Agent)).await?;
    ann.client
        .subscribe(vec![testkit::mqtt::filter(
            "cc/v1/staff/ann/assignments",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )])
        .await?;
    let mut bob = available(&stack, "bob", Role::Agent).await?;
    bob.until("the waiting session", |seen| assigned(seen, &s2))
        .await?;
    // Ann closes her session: her room goes to the next one.
    ann.accepted(&s1, json!({"client_msg_id": "c", "type": "close"}))
        .await?;
    let mut third = Participant::applicant(&stack, "kiosk-3").await?;
    let s3 = third.open(None).await?;
    ann.until("the third session", |seen| assigned(seen, &s3))
        .await?;
    assert!(!assigned(&ann.seen, &s2), "{}", ann.everything());
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_session_closed_before_a_restart_takes_its_survey_and_resync() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    staff::add(&stack, "ann", StaffRole::Agent).await?;
    let mut kiosk = Participant::applicant(&stack, "kiosk-1").await?;
    let session = kiosk.open(None).await?;
    let mut ann = Participant::connect(&stack, "ann", stack.token("ann", Role::Agent)).await?;
    ann.accepted(&session, json!({"client_msg_id": "j", "type": "join"}))
        .await?;
    ann.accepted(&session, json!({"client_msg_id": "c", "type": "close"}))
        .await?;
    drop((kiosk, ann));

    // The gateway's side of closed sessions' access is its own; the pipeline takes both.
    let stack = stack.restart().await?;
    let commands = stack
        .commands()
        .ok_or_else(|| anyhow::anyhow!("no pipeline"))?;
    let submit = |cmid: &str, action: Action| Submission {
        v: 1,
        client_msg_id: cmid.to_owned(),
        action,
    };
    let survey = Action::Survey {
        rating: 2,
        comment: Some("Slow".into()),
    };
    let answer = commands
        .submit(&session, "kiosk-1", &submit("s", survey))
        .await?;
    assert!(
        matches!(&answer, Reply::Ack(ack) if matches!(ack.outcome, Outcome::Accepted { .. })),
        "{answer:?}"
    );
    let resync = Action::Resync {
        from_seq: 1,
        to_seq: None,
    };
    let page = commands
        .submit(&session, "kiosk-1", &submit("r", resync))
        .await?;
    let Reply::Page(page) = page else {
        panic!("not a page: {page:?}");
    };
    assert!(page.entries.len() >= 3, "{page:?}");
    stack.shutdown().await;
    Ok(())
}
