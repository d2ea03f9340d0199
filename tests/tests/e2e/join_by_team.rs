//! Joining is limited to the session's team: an agent of another team (or of none) is refused
//! `not_allowed`, saying why; an agent of the team and any supervisor may join; a session that
//! names no team is open to every agent.

use courtchat::{Role, StaffRole};
use serde_json::json;
use testkit::TestStack;

use super::participants::Participant;
use super::staff;

#[tokio::test]
async fn only_the_sessions_team_and_supervisors_join_it() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let people = [
        ("ann", StaffRole::Agent, Some("fines")),
        ("bob", StaffRole::Agent, Some("renewals")),
        ("cat", StaffRole::Agent, None),
        ("sue", StaffRole::Supervisor, Some("renewals")),
    ];
    for (name, role, team) in people {
        staff::add_to_team(&stack, name, role, team, None).await?;
    }
    let mut kiosk = Participant::applicant(&stack, "kiosk-1").await?;
    let fines = kiosk.open(Some("fines")).await?;
    let mut other = Participant::applicant(&stack, "kiosk-2").await?;
    let anyone = other.open(None).await?;

    // (who, the session, accepted?)
    let rows = [
        ("bob", &fines, false),
        ("cat", &fines, false),
        ("ann", &fines, true),
        ("sue", &fines, true),
        ("bob", &anyone, true),
        ("cat", &anyone, true),
    ];
    for (name, session, allowed) in rows {
        let role = if name == "sue" {
            Role::Supervisor
        } else {
            Role::Agent
        };
        let mut desk = Participant::connect(&stack, name, stack.token(name, role)).await?;
        let ack = desk
            .act(session, json!({"client_msg_id": "j", "type": "join"}))
            .await?;
        if allowed {
            assert_eq!(ack["status"], "accepted", "{name}: {ack}");
        } else {
            assert_eq!(
                (ack["status"].as_str(), ack["reason"].as_str()),
                (Some("rejected"), Some("not_allowed")),
                "{name}: {ack}"
            );
            let message = ack["message"].as_str().unwrap_or_default();
            assert!(message.contains("team fines"), "{name}: {message}");
        }
        desk.client.disconnect().await?;
    }
    stack.shutdown().await;
    Ok(())
}
