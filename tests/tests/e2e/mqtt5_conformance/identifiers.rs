//! Subscription identifiers (MQTT 5 §3.8.2.1.2, §3.3.4): kept per subscription, and every
//! matching subscription's identifier on the one delivery a message makes.

use std::time::Duration;

use courtchat::Role;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    DisconnectReasonCode, Filter, SubscribeProperties, SubscribeReasonCode,
};
use testkit::TestStack;
use testkit::mqtt::{TestClientV5, filter};

const QUIET: Duration = Duration::from_millis(300);

/// Subscribes to `filters` with subscription identifier `id` (none: `None`).
async fn subscribe_with_id(
    client: &mut TestClientV5,
    filters: Vec<Filter>,
    id: Option<usize>,
) -> anyhow::Result<Vec<SubscribeReasonCode>> {
    let properties = SubscribeProperties {
        id,
        user_properties: Vec::new(),
    };
    client.subscribe_with_properties(filters, properties).await
}

/// The identifiers the next delivery carries, and its payload.
async fn next_with_ids(client: &mut TestClientV5) -> anyhow::Result<(Vec<usize>, String)> {
    let publish = client.next_publish().await?;
    let ids = publish
        .properties
        .map(|p| p.subscription_identifiers)
        .unwrap_or_default();
    Ok((ids, String::from_utf8(publish.payload.to_vec())?))
}

#[tokio::test]
async fn every_matching_subscriptions_identifier_is_on_the_delivery() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut sub =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "sub", Role::Agent)).await?;
    let properties = sub
        .connack
        .properties
        .clone()
        .expect("a v5 CONNACK has properties");
    assert_eq!(properties.subscription_identifiers_available, Some(1));
    subscribe_with_id(
        &mut sub,
        vec![filter("sandbox/ids/+", QoS::AtLeastOnce)],
        Some(7),
    )
    .await?;
    subscribe_with_id(
        &mut sub,
        vec![filter("sandbox/ids/#", QoS::AtMostOnce)],
        Some(300_000),
    )
    .await?;
    // Without an identifier: it adds none.
    assert_eq!(
        sub.subscribe(vec![filter("sandbox/ids/a", QoS::AtMostOnce)])
            .await?,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    let publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    for topic in ["sandbox/ids/a", "sandbox/ids/b/c"] {
        publisher
            .client
            .publish(topic, QoS::AtLeastOnce, false, topic)
            .await?;
    }
    assert_eq!(
        next_with_ids(&mut sub).await?,
        (vec![7, 300_000], "sandbox/ids/a".to_owned()),
        "one delivery for three matching subscriptions, with both identifiers"
    );
    assert_eq!(
        next_with_ids(&mut sub).await?,
        (vec![300_000], "sandbox/ids/b/c".to_owned())
    );

    // Subscribing again replaces the subscription, identifier included.
    subscribe_with_id(
        &mut sub,
        vec![filter("sandbox/ids/#", QoS::AtMostOnce)],
        None,
    )
    .await?;
    publisher
        .client
        .publish("sandbox/ids/b/c", QoS::AtLeastOnce, false, "again")
        .await?;
    assert_eq!(next_with_ids(&mut sub).await?, (vec![], "again".to_owned()));

    // A retained message sent because of a subscription carries that subscription's.
    publisher
        .client
        .publish("sandbox/kept", QoS::AtLeastOnce, true, "kept")
        .await?;
    let mut probe =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "probe", Role::Agent)).await?;
    probe
        .subscribe(vec![filter("sandbox/kept", QoS::AtMostOnce)])
        .await?;
    probe.next_publish().await?;
    subscribe_with_id(
        &mut sub,
        vec![filter("sandbox/kept", QoS::AtMostOnce)],
        Some(11),
    )
    .await?;
    assert_eq!(
        next_with_ids(&mut sub).await?,
        (vec![11], "kept".to_owned())
    );
    assert!(sub.publishes_within(QUIET).await.is_empty());
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn subscription_identifier_zero_is_a_protocol_error() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut sub =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "sub", Role::Agent)).await?;
    let properties = SubscribeProperties {
        id: Some(0),
        user_properties: Vec::new(),
    };
    sub.client
        .subscribe_many_with_properties(vec![filter("sandbox/ids/+", QoS::AtLeastOnce)], properties)
        .await?;
    assert_eq!(
        sub.next_disconnect().await?.reason_code,
        DisconnectReasonCode::ProtocolError
    );
    stack.shutdown().await;
    Ok(())
}
