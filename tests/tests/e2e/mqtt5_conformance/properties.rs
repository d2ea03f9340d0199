//! Publish properties outside `cc/` reach MQTT 5 subscribers as the publisher set them, at every
//! QoS: payload format indicator, content type, response topic, correlation data and user
//! properties (in their order, repeats included). The message expiry interval is counted down
//! while a message waits for its subscriber, and a message that expired is not delivered.

use std::time::Duration;

use courtchat::Role;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use testkit::TestStack;
use testkit::mqtt::{TestClientV5, filter};

#[tokio::test]
async fn publish_properties_pass_through_unchanged_at_every_qos() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut sub =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "sub", Role::Agent)).await?;
    sub.subscribe(vec![filter("sandbox/props", QoS::ExactlyOnce)])
        .await?;
    let publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".to_owned()),
        response_topic: Some("sandbox/replies/pub".to_owned()),
        correlation_data: Some("req-42".into()),
        user_properties: vec![
            ("z".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned()),
            ("z".to_owned(), "3".to_owned()),
        ],
        ..PublishProperties::default()
    };
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher
            .client
            .publish_with_properties("sandbox/props", qos, false, "{}", sent.clone())
            .await?;
        let delivered = sub.next_publish().await?;
        assert_eq!(delivered.qos, qos);
        assert_eq!(
            delivered.properties.as_ref(),
            Some(&sent),
            "{qos:?}: every property as it was sent"
        );
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_message_expiry_interval_is_counted_down_while_a_message_waits() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let options = |clean| {
        let mut options = TestClientV5::tcp_options(&stack, "away", Role::Agent);
        options.set_clean_start(clean);
        options.set_session_expiry_interval(Some(60));
        options
    };
    let mut away = TestClientV5::connect(options(true)).await?;
    away.subscribe(vec![filter("sandbox/expiring", QoS::ExactlyOnce)])
        .await?;
    away.disconnect().await?;

    let mut publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    for (payload, expiry) in [("short", 1), ("long", 30), ("forever", 0)] {
        let properties = PublishProperties {
            message_expiry_interval: (expiry > 0).then_some(expiry),
            ..PublishProperties::default()
        };
        publisher
            .client
            .publish_with_properties(
                "sandbox/expiring",
                QoS::AtLeastOnce,
                false,
                payload,
                properties,
            )
            .await?;
        publisher.next_puback().await?;
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let mut back = TestClientV5::connect(options(false)).await?;
    assert!(back.connack.session_present);
    let long = back.next_publish().await?;
    let left = long.properties.and_then(|p| p.message_expiry_interval);
    assert_eq!(
        long.payload.as_ref(),
        b"long",
        "short expired while it waited"
    );
    assert!(
        left.is_some_and(|left| (27..=28).contains(&left)),
        "30 s less the 2.2 s it waited, rounded up: {left:?}"
    );
    let forever = back.next_publish().await?;
    assert_eq!(
        (
            forever.payload.as_ref(),
            forever.properties.and_then(|p| p.message_expiry_interval)
        ),
        (&b"forever"[..], None)
    );
    stack.shutdown().await;
    Ok(())
}
