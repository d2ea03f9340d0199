//! Staff who may no longer hold a session leave it: an admin disabling an agent, or demoting a
//! supervisor into an agent of another team, over HTTP, returns their sessions to the queue
//! (their lock released), where another available agent is offered them; each with an audit
//! entry naming the cause. And the last agent to leave a session on their own returns it to the
//! queue.

use courtchat::{Role, StaffRole};
use schemas::db::entities::audit_event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use testkit::TestStack;

use super::api::call;
use super::participants::{Participant, assigned};
use super::staff;

/// A member of staff's desk: connected with a sign-in token, following its assignments,
/// available.
async fn available(stack: &TestStack, name: &str) -> anyhow::Result<Participant> {
    let token = staff::sign_in(stack, name).await?;
    Participant::available_desk(stack, name, token).await
}

async fn removals(stack: &TestStack, session: &str) -> anyhow::Result<Vec<Value>> {
    let rows = audit_event::Entity::find()
        .filter(audit_event::Column::SessionId.eq(session))
        .filter(audit_event::Column::Action.eq("session.staff_removed"))
        .all(stack.store().connection())
        .await?;
    Ok(rows
        .iter()
        .map(|row| serde_json::from_str(&row.detail).unwrap_or_default())
        .collect())
}

/// Changes `name` over HTTP as `admin`: answered 200 at once, although the pipeline appends to
/// the audit chain meanwhile (issue 21, point 7).
async fn change(stack: &TestStack, admin: &str, name: &str, body: Value) -> anyhow::Result<()> {
    let path = format!("/v1/people/{name}");
    let (code, answer) = call(stack, reqwest::Method::PATCH, &path, admin, Some(body)).await?;
    anyhow::ensure!(code == 200, "{code} {answer}");
    Ok(())
}

#[tokio::test]
async fn a_disabled_agents_session_returns_to_the_queue_and_goes_to_another() -> anyhow::Result<()>
{
    let stack = TestStack::start().await?;
    let root = staff::add_signed_in(&stack, "root", StaffRole::Admin).await?;
    for name in ["ann", "bob"] {
        staff::add_to_team(&stack, name, StaffRole::Agent, Some("renewals"), Some(1)).await?;
    }
    let mut ann = available(&stack, "ann").await?;
    let mut kiosk = Participant::applicant(&stack, "kiosk-1").await?;
    let session = kiosk.open(Some("renewals")).await?;
    ann.until("the session", |seen| assigned(seen, &session))
        .await?;
    ann.accepted(
        &session,
        json!({"client_msg_id": "l", "type": "lock", "op": "acquire"}),
    )
    .await?;
    let mut bob = available(&stack, "bob").await?;
    kiosk.follow(&session, &["messages"]).await?;

    change(&stack, &root, "ann", json!({"active": false})).await?;

    // Bob is offered the session; the applicant sees Ann leave and Bob join.
    bob.until("the session, offered again", |seen| {
        assigned(seen, &session)
    })
    .await?;
    let notice = bob
        .seen
        .iter()
        .find(|(t, _)| t.ends_with("/assignments"))
        .map(|(_, p)| p.clone())
        .unwrap_or_default();
    assert_eq!(notice["by"], "router", "{notice}");
    kiosk
        .until("the session active again", |seen| {
            seen.iter().any(|(_, p)| p["event"]["status"] == "active")
        })
        .await?;
    let events: Vec<(String, String)> = kiosk
        .entries("messages")
        .iter()
        .map(|e| {
            (
                e["event"]["type"].as_str().unwrap_or_default().to_owned(),
                e["event"]["subject"]
                    .as_str()
                    .or_else(|| e["event"]["status"].as_str())
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("left", "ann"),
        ("status_changed", "queued"),
        ("joined", "bob"),
        ("status_changed", "active"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .to_vec();
    assert!(events.ends_with(&expected), "{events:?}");
    let removed = removals(&stack, &session).await?;
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(
        (
            &removed[0]["subject"],
            &removed[0]["cause"],
            &removed[0]["requeued"]
        ),
        (&json!("ann"), &json!("disabled"), &json!(true))
    );
    // The lock went with Ann: Bob may take it.
    bob.follow(&session, &["messages"]).await?;
    bob.accepted(
        &session,
        json!({"client_msg_id": "l", "type": "lock", "op": "acquire"}),
    )
    .await?;
    // The record still vouches for every row, each recorded once: the removal's entry names
    // Ann's `left` entry without claiming it a second time.
    let verification = courtchat::verify_audit(stack.config(), stack.store()).await?;
    assert!(verification.is_intact(), "{verification:?}");
    assert_eq!(verification.records.unverifiable, 0, "{verification:?}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_supervisor_demoted_into_another_team_leaves_that_teams_session() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let root = staff::add_signed_in(&stack, "root", StaffRole::Admin).await?;
    staff::add_to_team(&stack, "sue", StaffRole::Supervisor, Some("fines"), None).await?;
    staff::add_to_team(&stack, "bob", StaffRole::Agent, Some("renewals"), Some(1)).await?;
    staff::add_to_team(&stack, "cat", StaffRole::Agent, Some("renewals"), Some(1)).await?;
    let mut kiosk = Participant::applicant(&stack, "kiosk-1").await?;
    let renewals = kiosk.open(Some("renewals")).await?;
    let mut other = Participant::applicant(&stack, "kiosk-2").await?;
    let open_to_all = other.open(None).await?;
    // Sue, a supervisor, joins a renewals session and one for no team.
    let mut sue = Participant::connect(&stack, "sue", stack.token("sue", Role::Supervisor)).await?;
    for session in [&renewals, &open_to_all] {
        sue.accepted(session, json!({"client_msg_id": "j", "type": "join"}))
            .await?;
    }
    let mut bob = available(&stack, "bob").await?;

    // Demoted to an agent of fines: she may no longer hold the renewals session (it goes to
    // Bob), and keeps the other.
    change(&stack, &root, "sue", json!({"role": "agent"})).await?;
    bob.until("the renewals session", |seen| assigned(seen, &renewals))
        .await?;
    let removed = removals(&stack, &renewals).await?;
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["cause"], "role_changed", "{removed:?}");
    assert!(removals(&stack, &open_to_all).await?.is_empty());

    // Moved from fines to another team while in a session for no team: she keeps it. Cat,
    // available and full, has her capacity raised after that change: the sweep that offers her
    // the waiting session has seen the change too, and nothing was returned to the queue.
    let mut cat = available(&stack, "cat").await?;
    let busy = Participant::applicant(&stack, "kiosk-4")
        .await?
        .open(None)
        .await?;
    cat.until("a first session", |seen| assigned(seen, &busy))
        .await?;
    let third = Participant::applicant(&stack, "kiosk-3")
        .await?
        .open(None)
        .await?;
    change(&stack, &root, "sue", json!({"team": "appeals"})).await?;
    change(&stack, &root, "cat", json!({"capacity": 2})).await?;
    cat.until("the waiting session", |seen| assigned(seen, &third))
        .await?;
    assert!(!assigned(&cat.seen, &open_to_all), "{}", cat.everything());
    assert!(removals(&stack, &open_to_all).await?.is_empty());
    stack.shutdown().await;
    Ok(())
}

/// An agent who leaves a session on their own, the last of its staff, does not leave the
/// applicant with nobody: the session waits in its team's queue again and is offered to the
/// next available agent.
#[tokio::test]
async fn the_last_agent_to_leave_returns_the_session_to_the_queue() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    for name in ["ann", "bob"] {
        staff::add_to_team(&stack, name, StaffRole::Agent, Some("renewals"), Some(1)).await?;
    }
    let mut ann = available(&stack, "ann").await?;
    let mut kiosk = Participant::applicant(&stack, "kiosk-1").await?;
    let session = kiosk.open(Some("renewals")).await?;
    ann.until("the session", |seen| assigned(seen, &session))
        .await?;
    let mut bob = available(&stack, "bob").await?;
    kiosk.follow(&session, &["messages"]).await?;

    ann.accepted(&session, json!({"client_msg_id": "bye", "type": "leave"}))
        .await?;

    bob.until("the session, offered again", |seen| {
        assigned(seen, &session)
    })
    .await?;
    kiosk
        .until("the session active again with bob", |seen| {
            let bob_joined = seen.iter().position(|(_, p)| {
                p["event"]["type"] == "joined" && p["event"]["subject"] == "bob"
            });
            bob_joined.is_some_and(|at| {
                seen[at..]
                    .iter()
                    .any(|(_, p)| p["event"]["status"] == "active")
            })
        })
        .await?;
    let events: Vec<Value> = kiosk
        .entries("messages")
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    let tail: Vec<Value> = events.iter().rev().take(4).rev().cloned().collect();
    assert_eq!(
        tail,
        [
            json!({"type": "left", "subject": "ann"}),
            json!({"type": "status_changed", "status": "queued"}),
            json!({"type": "joined", "subject": "bob"}),
            json!({"type": "status_changed", "status": "active"}),
        ],
        "{events:?}"
    );
    stack.shutdown().await;
    Ok(())
}
