//! Retained messages under `cc/` are the service's alone (the reply lock's state): a client's
//! retained publish there is refused (MQTT 5: PUBACK 0x87) and nothing of it is kept for later
//! subscribers, while the lock state the pipeline retains still reaches a desk that subscribes
//! later.

use std::time::Duration;

use courtchat::{Role, StaffRole};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, LastWill, PubAckReason, SubscribeReasonCode};
use serde_json::json;
use testkit::TestStack;
use testkit::mqtt::{TestClientV5, filter, try_connect_v5};

use crate::chat::{connected, kiosk_with_session, submit};
use crate::staff;

#[tokio::test]
async fn clients_cannot_retain_under_cc_but_the_lock_state_is_retained() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let (mut kiosk, session) = kiosk_with_session(&stack, "kiosk-retain", "kiosk").await?;
    staff::add(&stack, "agent-retain", StaffRole::Agent).await?;
    let mut agent = connected(
        &stack,
        "agent-retain",
        stack.token("agent-retain", Role::Agent),
    )
    .await?;
    let submit_topic = |subject: &str| format!("cc/v1/sessions/{session}/submit/{subject}");
    let joined = submit(
        &mut agent,
        submit_topic("agent-retain"),
        json!({"client_msg_id": "j", "type": "join"}),
    )
    .await?;
    assert_eq!(joined["status"], "accepted", "{joined}");
    let locked = submit(
        &mut agent,
        submit_topic("agent-retain"),
        json!({"client_msg_id": "l", "type": "lock", "op": "acquire"}),
    )
    .await?;
    assert_eq!(locked["status"], "accepted", "{locked}");

    // Retained publishes of a client under cc/, each a topic the client may publish on.
    let typing = format!("cc/v1/sessions/{session}/typing/kiosk-retain");
    let attempts = [
        (typing.clone(), json!({"v": 1, "typing": true})),
        (
            submit_topic("kiosk-retain"),
            json!({"client_msg_id": "m", "type": "message", "body": "kept for everyone?"}),
        ),
    ];
    for (topic, payload) in &attempts {
        kiosk
            .client
            .publish(topic, QoS::AtLeastOnce, true, payload.to_string())
            .await?;
        assert_eq!(
            kiosk.next_puback().await?.reason,
            PubAckReason::NotAuthorized,
            "{topic}"
        );
    }
    // The same publish without the flag is taken.
    kiosk
        .client
        .publish(
            &typing,
            QoS::AtLeastOnce,
            false,
            json!({"v": 1, "typing": false}).to_string(),
        )
        .await?;
    assert_eq!(kiosk.next_puback().await?.reason, PubAckReason::Success);
    assert_eq!(stack.broker_stats().denied_publishes, 2);

    // A desk that opens the conversation now gets the lock state, retained, and nothing a
    // client tried to keep there.
    let mut supervisor = TestClientV5::connect(TestClientV5::tcp_options(
        &stack,
        "sup-retain",
        Role::Supervisor,
    ))
    .await?;
    let everything = ["lock", "typing/+"].map(|kind| {
        filter(
            &format!("cc/v1/sessions/{session}/{kind}"),
            QoS::AtLeastOnce,
        )
    });
    assert_eq!(
        supervisor.subscribe(everything.to_vec()).await?,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce); 2]
    );
    let retained = supervisor
        .publishes_within(Duration::from_millis(500))
        .await;
    let topics: Vec<String> = retained
        .iter()
        .map(|publish| String::from_utf8_lossy(&publish.topic).into_owned())
        .collect();
    assert_eq!(topics, [format!("cc/v1/sessions/{session}/lock")]);
    assert!(retained[0].retain);
    let lock: serde_json::Value = serde_json::from_slice(&retained[0].payload)?;
    assert_eq!(lock["holder"], "agent-retain", "{lock}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_retained_will_under_cc_is_refused_with_the_connect() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let (kiosk, session) = kiosk_with_session(&stack, "kiosk-will-retain", "kiosk").await?;
    kiosk.disconnect().await?;
    let topic = format!("cc/v1/sessions/{session}/presence/kiosk-will-retain");
    let offline = json!({"v": 1, "status": "offline"}).to_string();
    for (retain, expected) in [
        (true, ConnectReturnCode::NotAuthorized),
        (false, ConnectReturnCode::Success),
    ] {
        let mut options = TestClientV5::tcp_options(&stack, "kiosk-will-retain", Role::Applicant);
        options.set_last_will(LastWill::new(
            topic.clone(),
            offline.clone(),
            QoS::AtLeastOnce,
            retain,
            None,
        ));
        assert_eq!(try_connect_v5(options).await?, expected, "retain {retain}");
    }
    stack.shutdown().await;
    Ok(())
}
