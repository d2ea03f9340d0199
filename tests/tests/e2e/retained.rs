//! Retained messages under `cc/` are the service's alone (the reply lock's state): a client's
//! retained publish there is refused (MQTT 5: PUBACK 0x87) and nothing of it is kept for later
//! subscribers, while the lock state the pipeline retains still reaches a desk that subscribes
//! later. Outside `cc/` they are MQTT's: kept with their QoS and properties, cleared by an empty
//! retained publish, and bounded (`[mqtt.retained]`, refused past it with 0x97).

use std::time::Duration;

use courtchat::{Role, StaffRole};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, LastWill, PubAckReason, PublishProperties, SubscribeReasonCode,
};
use serde_json::json;
use testkit::mqtt::{TestClient, TestClientV5, filter, try_connect_v5};
use testkit::{TestDatabase, TestStack};

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

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn retained_messages_outside_cc_keep_their_qos_and_properties_until_cleared()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    let user_properties = vec![
        ("b".to_owned(), "2".to_owned()),
        ("a".to_owned(), "1".to_owned()),
        ("b".to_owned(), "3".to_owned()),
    ];
    let properties = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("text/plain".to_owned()),
        response_topic: Some("sandbox/replies".to_owned()),
        correlation_data: Some("c-1".into()),
        user_properties: user_properties.clone(),
        ..PublishProperties::default()
    };
    publisher
        .client
        .publish_with_properties(
            "sandbox/status/door",
            QoS::AtLeastOnce,
            true,
            "open",
            properties,
        )
        .await?;
    assert_eq!(publisher.next_puback().await?.reason, PubAckReason::Success);
    publisher
        .client
        .publish("sandbox/status/light", QoS::AtMostOnce, true, "on")
        .await?;
    publisher
        .client
        .publish("sandbox/sync", QoS::AtLeastOnce, false, "")
        .await?;
    publisher.next_puback().await?;

    let mut sub =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "sub", Role::Agent)).await?;
    sub.subscribe(vec![filter("sandbox/status/+", QoS::AtLeastOnce)])
        .await?;
    let mut kept = sub.publishes_within(QUIET).await;
    kept.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(kept.len(), 2, "{kept:?}");
    let (door, light) = (&kept[0], &kept[1]);
    assert_eq!(
        (door.payload.as_ref(), door.qos, door.retain),
        (&b"open"[..], QoS::AtLeastOnce, true)
    );
    assert_eq!(
        (light.payload.as_ref(), light.qos, light.retain),
        (&b"on"[..], QoS::AtMostOnce, true),
        "at the QoS it was published with"
    );
    let props = door.properties.clone().expect("properties are kept");
    assert_eq!(
        props.user_properties, user_properties,
        "user properties in order"
    );
    assert_eq!(
        (
            props.payload_format_indicator,
            props.content_type.as_deref(),
            props.response_topic.as_deref(),
            props.correlation_data.as_deref()
        ),
        (
            Some(1),
            Some("text/plain"),
            Some("sandbox/replies"),
            Some(&b"c-1"[..])
        )
    );
    // MQTT 3.1.1 subscribers get them too, flagged retained.
    let mut old = TestClient::connect(TestClient::tcp_options(&stack, "old", Role::Agent)).await?;
    old.subscribe("sandbox/status/door", rumqttc::QoS::AtLeastOnce)
        .await?;
    let retained = old.next_publish().await?;
    assert!(retained.retain && retained.payload.as_ref() == b"open");

    // An empty retained publish clears the topic (and is delivered as it is).
    publisher
        .client
        .publish("sandbox/status/door", QoS::AtLeastOnce, true, "")
        .await?;
    publisher.next_puback().await?;
    assert!(sub.next_publish().await?.payload.is_empty());
    let mut later =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "later", Role::Agent)).await?;
    later
        .subscribe(vec![filter("sandbox/status/+", QoS::AtLeastOnce)])
        .await?;
    let topics: Vec<_> = later
        .publishes_within(QUIET)
        .await
        .iter()
        .map(|p| p.topic.clone())
        .collect();
    assert_eq!(topics, ["sandbox/status/light"]);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn retained_messages_outside_cc_are_bounded() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.retained.max_messages = 2;
        config.mqtt.retained.max_message_bytes = 100;
    })
    .await?;
    let mut watcher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "watcher", Role::Agent)).await?;
    watcher
        .subscribe(vec![filter("sandbox/kept/+", QoS::AtLeastOnce)])
        .await?;
    let mut publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    let big = "x".repeat(200);
    let rows = [
        ("sandbox/kept/1", "one", PubAckReason::Success),
        ("sandbox/kept/2", "two", PubAckReason::Success),
        ("sandbox/kept/3", "three", PubAckReason::QuotaExceeded),
        ("sandbox/kept/1", big.as_str(), PubAckReason::QuotaExceeded),
        ("sandbox/kept/1", "one again", PubAckReason::Success),
        ("sandbox/kept/2", "", PubAckReason::Success),
        ("sandbox/kept/3", "three", PubAckReason::Success),
    ];
    for (topic, payload, expected) in &rows {
        publisher
            .client
            .publish(*topic, QoS::AtLeastOnce, true, payload.to_string())
            .await?;
        assert_eq!(
            publisher.next_puback().await?.reason,
            *expected,
            "{topic} {payload:.10}"
        );
    }
    let delivered: Vec<String> = watcher
        .publishes_within(QUIET)
        .await
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    assert_eq!(
        delivered,
        ["one", "two", "one again", "", "three"],
        "what was refused was not delivered either"
    );
    // MQTT 3.1.1 cannot be told: acknowledged, neither kept nor delivered, and connected.
    let mut old = TestClient::connect(TestClient::tcp_options(&stack, "old", Role::Agent)).await?;
    old.client
        .publish("sandbox/kept/4", rumqttc::QoS::AtLeastOnce, true, "four")
        .await?;
    old.next_puback().await?;
    old.subscribe("sandbox/kept/+", rumqttc::QoS::AtLeastOnce)
        .await?;
    let mut kept: Vec<String> = old
        .publishes_within(QUIET)
        .await
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["one again", "three"]);
    assert!(watcher.publishes_within(QUIET).await.is_empty());
    assert_eq!(stack.broker_stats().refused_retained, 3);
    stack.shutdown().await;
    Ok(())
}
