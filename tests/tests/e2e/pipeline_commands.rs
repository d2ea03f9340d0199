//! Commands: in-process callers (the admin API) submit actions to the same single writer as
//! MQTT clients, ordered together with them, and get the same acknowledgement back.

use courtchat::Reply;
use schemas::db::entities::agent::StaffRole;
use schemas::wire::{Action, OpenSession, Submission};

use super::*;

fn submission(cmid: &str, action: Action) -> Submission {
    Submission {
        v: schemas::wire::VERSION,
        client_msg_id: cmid.to_owned(),
        action,
    }
}

fn ack(reply: Reply) -> Ack {
    match reply {
        Reply::Ack(ack) => ack,
        Reply::Page(page) => panic!("expected an acknowledgement, got a page: {page:?}"),
    }
}

#[tokio::test]
async fn commands_share_the_order_effects_and_answers_of_mqtt_submissions() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    register_staff(&stack, &[("agent-c", StaffRole::Agent)]).await?;
    let commands = stack.commands().expect("the pipeline runs with the stack");

    // An open through a command is a session like any other.
    let request = OpenSession {
        v: schemas::wire::VERSION,
        client_msg_id: "o".to_owned(),
        channel: schemas::wire::Channel::Web,
        topic: None,
        first_message: Some("Hello from the desk".to_owned()),
    };
    let opened = ack(commands.open("kiosk-cmd", &request).await?);
    assert!(rejected(&opened).is_none(), "{opened:?}");
    let session = opened.session_id.clone().expect("a session");
    assert_eq!(opened.outcome, Outcome::Accepted { seq: Some(1) });
    // The same command again: the original answer, as over MQTT.
    assert_eq!(ack(commands.open("kiosk-cmd", &request).await?), opened);

    // The applicant writes over MQTT while the agent joins and answers through commands; all
    // of it lands in one order, which the applicant sees on the stream.
    let mut kiosk = Staff::connect(&stack, "kiosk-cmd", Role::Applicant).await?;
    kiosk
        .subscribe_when_member(&format!("cc/v1/sessions/{session}/messages"))
        .await?;
    let joined = ack(commands
        .submit(&session, "agent-c", &submission("j", Action::Join))
        .await?);
    assert_eq!(joined.outcome, Outcome::Accepted { seq: Some(3) });
    let lock = Action::Lock {
        op: schemas::wire::LockOp::Acquire,
    };
    ack(commands
        .submit(&session, "agent-c", &submission("l", lock))
        .await?);
    let from_kiosk = kiosk
        .accept(
            &session,
            json!({"client_msg_id": "k1", "type": "message", "body": "Is anyone there?"}),
        )
        .await?;
    let reply = Action::Message {
        body: "Yes, how can I help?".into(),
    };
    let answered = ack(commands
        .submit(&session, "agent-c", &submission("a1", reply))
        .await?);
    let (Outcome::Accepted { seq: Some(k) }, Outcome::Accepted { seq: Some(a) }) =
        (&from_kiosk.outcome, &answered.outcome)
    else {
        panic!("{from_kiosk:?} {answered:?}")
    };
    assert!(a > k, "the agent's answer follows the question");
    // A refusal is a refusal: the agent's note needs no lock, a stranger's message is refused.
    let stranger = Action::Message { body: "hi".into() };
    let refused = ack(commands
        .submit(&session, "agent-x", &submission("x", stranger))
        .await?);
    assert_eq!(
        rejected(&refused).map(|r| r.0),
        Some(RejectReason::NotAllowed)
    );

    // The applicant saw every entry in order, the command's among them.
    let mut seen = Vec::new();
    while seen.last().copied() != Some(*a) {
        let publish = kiosk.client.next_publish().await?;
        if String::from_utf8_lossy(&publish.topic).ends_with("/messages") {
            let entry: StreamEntry = serde_json::from_slice(&publish.payload)?;
            seen.push(entry.seq);
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    // The command's acknowledgement went to its caller, not to an MQTT ack topic.
    assert!(
        kiosk.acks.iter().all(|ack| ack.client_msg_id != "a1"),
        "{:?}",
        kiosk.acks
    );

    // And a resync through a command returns a page.
    let resync = Action::Resync {
        from_seq: 1,
        to_seq: None,
    };
    match commands
        .submit(&session, "agent-c", &submission("r", resync))
        .await?
    {
        Reply::Page(page) => {
            let seqs: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (1..=*a).collect::<Vec<u64>>());
        }
        Reply::Ack(ack) => panic!("expected a page, got {ack:?}"),
    }
    stack.shutdown().await;
    Ok(())
}
