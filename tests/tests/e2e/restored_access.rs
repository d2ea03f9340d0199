//! What the gateway rebuilds from the record at start: a closed session still inside the
//! window (`mqtt.closed_sessions_kept`, `mqtt.closed_session_access_secs` counted from its
//! `closed_at`) stays open to its participants across a restart, for the applicant's survey and
//! resync and for the desks still showing it; one outside the window does not.

use courtchat::{Role, StaffRole};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode};
use schemas::db::entities::session;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use testkit::mqtt::{TestClientV5, filter};
use testkit::{TestDatabase, TestStack};

use crate::chat::{connected, submit};
use crate::staff;

/// Publishes `payload` on `topic`; the pipeline's answer, or `None` when the gateway refused
/// the publish (PUBACK 0x87: the sender has no access to the session).
async fn answer(
    client: &mut TestClientV5,
    topic: String,
    payload: Value,
) -> anyhow::Result<Option<Value>> {
    client
        .client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
        .await?;
    // The PUBACK comes before the answer: the connection writes it before any delivery.
    if client.next_puback().await?.reason != PubAckReason::Success {
        return Ok(None);
    }
    let reply = client.next_publish().await?;
    Ok(Some(serde_json::from_slice(&reply.payload)?))
}

fn submit_topic(session: &str, subject: &str) -> String {
    format!("cc/v1/sessions/{session}/submit/{subject}")
}

/// Opens a session as `kiosk` (already connected as `subject`) and closes it; returns its id.
async fn open_and_close(
    kiosk: &mut TestClientV5,
    subject: &str,
    n: usize,
    agent: Option<&mut TestClientV5>,
) -> anyhow::Result<String> {
    let opened = submit(
        kiosk,
        format!("cc/v1/open/{subject}"),
        json!({"client_msg_id": format!("open-{n}"), "channel": "kiosk"}),
    )
    .await?;
    let session = opened["session_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("not opened: {opened}"))?
        .to_owned();
    if let Some(agent) = agent {
        let joined = submit(
            agent,
            submit_topic(&session, "desk-agent"),
            json!({"client_msg_id": format!("join-{n}"), "type": "join"}),
        )
        .await?;
        anyhow::ensure!(joined["status"] == "accepted", "{joined}");
    }
    let closed = submit(
        kiosk,
        submit_topic(&session, subject),
        json!({"client_msg_id": format!("close-{n}"), "type": "close"}),
    )
    .await?;
    anyhow::ensure!(closed["status"] == "accepted", "{closed}");
    Ok(session)
}

async fn applicant(stack: &TestStack, subject: &str) -> anyhow::Result<TestClientV5> {
    connected(stack, subject, stack.token(subject, Role::Applicant)).await
}

/// Whether the applicant's resync of `session` is answered with its entries.
async fn resync_answered(
    kiosk: &mut TestClientV5,
    subject: &str,
    session: &str,
) -> anyhow::Result<bool> {
    let resync =
        json!({"client_msg_id": format!("resync-{session}"), "type": "resync", "from_seq": 1});
    let Some(page) = answer(kiosk, submit_topic(session, subject), resync).await? else {
        return Ok(false);
    };
    anyhow::ensure!(page["session_id"] == session, "{page}");
    Ok(page["entries"].as_array().is_some_and(|e| !e.is_empty()))
}

#[tokio::test]
async fn closed_sessions_in_the_window_keep_their_access_across_a_restart() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.mqtt.closed_sessions_kept = 2;
    })
    .await?;
    staff::add(&stack, "desk-agent", StaffRole::Agent).await?;
    let agent_token = stack.token("desk-agent", Role::Agent);
    let mut agent = connected(&stack, "desk-agent", agent_token.clone()).await?;
    let subject = "kiosk-restarted";
    let mut kiosk = applicant(&stack, subject).await?;
    let mut sessions = Vec::new();
    for n in 0..3 {
        sessions.push(open_and_close(&mut kiosk, subject, n, Some(&mut agent)).await?);
    }
    kiosk.disconnect().await?;
    agent.disconnect().await?;

    let stack = stack.restart().await?;
    let mut kiosk = applicant(&stack, subject).await?;
    let (outside, kept) = (&sessions[0], &sessions[1..]);
    for session in kept {
        assert!(
            resync_answered(&mut kiosk, subject, session).await?,
            "{session}: a resync after the restart is answered"
        );
        let survey =
            json!({"client_msg_id": format!("survey-{session}"), "type": "survey", "rating": 2});
        let ack = answer(&mut kiosk, submit_topic(session, subject), survey).await?;
        assert_eq!(
            ack.as_ref().map(|ack| ack["status"].clone()),
            Some(json!("accepted")),
            "{session}: the survey after the restart is taken: {ack:?}"
        );
    }
    assert!(
        !resync_answered(&mut kiosk, subject, outside).await?,
        "the session outside the window is forgotten after the restart as before it"
    );
    // The desk that still shows the kept sessions may read them again.
    let mut agent = connected(&stack, "desk-agent", agent_token).await?;
    for session in kept {
        let stream = filter(
            &format!("cc/v1/sessions/{session}/messages"),
            QoS::AtLeastOnce,
        );
        assert_eq!(
            agent.subscribe(vec![stream]).await?,
            [SubscribeReasonCode::Success(QoS::AtLeastOnce)],
            "{session}"
        );
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_closed_sessions_access_time_counts_from_when_it_closed() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.mqtt.closed_session_access_secs = 3600;
    })
    .await?;
    let subject = "kiosk-aged";
    let mut kiosk = applicant(&stack, subject).await?;
    let recent = open_and_close(&mut kiosk, subject, 0, None).await?;
    let old = open_and_close(&mut kiosk, subject, 1, None).await?;
    kiosk.disconnect().await?;
    // The record says the second closed two hours ago: past its hour of access, whatever the
    // order the gateway saw the closes in.
    session::Entity::update_many()
        .col_expr(
            session::Column::ClosedAt,
            Expr::value(chrono::Utc::now() - chrono::TimeDelta::hours(2)),
        )
        .filter(session::Column::Id.eq(&old))
        .exec(stack.store().connection())
        .await?;

    let stack = stack.restart().await?;
    let mut kiosk = applicant(&stack, subject).await?;
    assert!(resync_answered(&mut kiosk, subject, &recent).await?);
    assert!(!resync_answered(&mut kiosk, subject, &old).await?);
    stack.shutdown().await;
    Ok(())
}
