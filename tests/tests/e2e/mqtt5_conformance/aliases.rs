//! Topic aliases (MQTT 5 §3.3.2.3.4). Server to client: given when the client's CONNECT allows
//! them, within its maximum, the least recently used reassigned when all are taken. Client to
//! server: accepted within the maximum CONNACK announces (`mqtt.max_topic_aliases`), resolved
//! per connection, and not passed on.

use std::time::Duration;

use courtchat::Role;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet, PublishProperties};
use testkit::mqtt::{TestClient, TestClientV5, filter};
use testkit::{TestDatabase, TestStack};

use super::raw::{Hello, RawClient, publish};

const QUIET: Duration = Duration::from_millis(300);

fn alias(alias: u16) -> PublishProperties {
    PublishProperties {
        topic_alias: Some(alias),
        ..PublishProperties::default()
    }
}

#[tokio::test]
async fn deliveries_name_their_topic_by_alias_within_the_clients_maximum() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut options = TestClientV5::tcp_options(&stack, "aliased", Role::Agent);
    options.set_topic_alias_max(Some(2));
    let mut aliased = TestClientV5::connect(options).await?;
    aliased
        .subscribe(vec![filter("sandbox/alias/+", QoS::AtLeastOnce)])
        .await?;
    // A client that allows none gets none, nor does an MQTT 3.1.1 client.
    let mut plain =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "plain", Role::Agent)).await?;
    plain
        .subscribe(vec![filter("sandbox/alias/+", QoS::AtLeastOnce)])
        .await?;
    let mut old = TestClient::connect(TestClient::tcp_options(&stack, "old", Role::Agent)).await?;
    old.subscribe("sandbox/alias/+", rumqttc::QoS::AtLeastOnce)
        .await?;

    let publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    let sent = ["a", "a", "b", "c", "a"];
    for topic in sent {
        publisher
            .client
            .publish(
                format!("sandbox/alias/{topic}"),
                QoS::AtLeastOnce,
                false,
                topic,
            )
            .await?;
    }
    // (topic on the wire, alias): the first use sets an alias, later ones name only it; with
    // both taken, the least recently used is given to the new topic.
    let expected = [
        ("sandbox/alias/a", Some(1)),
        ("", Some(1)),
        ("sandbox/alias/b", Some(2)),
        ("sandbox/alias/c", Some(1)),
        ("sandbox/alias/a", Some(2)),
    ];
    for (n, (topic, alias)) in expected.into_iter().enumerate() {
        let publish = aliased.next_publish().await?;
        assert_eq!(
            (
                publish.topic.as_ref(),
                publish.properties.and_then(|p| p.topic_alias)
            ),
            (topic.as_bytes(), alias),
            "delivery {n} ({})",
            sent[n]
        );
        let publish = plain.next_publish().await?;
        assert_eq!(
            (
                publish.topic.as_ref(),
                publish.properties.and_then(|p| p.topic_alias)
            ),
            (format!("sandbox/alias/{}", sent[n]).as_bytes(), None),
            "no aliases for a client that allows none"
        );
        let publish = old.next_publish().await?;
        assert_eq!(publish.topic, format!("sandbox/alias/{}", sent[n]));
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_clients_aliases_are_resolved_within_the_announced_maximum() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.max_topic_aliases = 3;
    })
    .await?;
    let mut watcher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "watcher", Role::Agent)).await?;
    watcher
        .subscribe(vec![filter("sandbox/alias/#", QoS::AtLeastOnce)])
        .await?;
    let publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    let announced = publisher
        .connack
        .properties
        .clone()
        .expect("a v5 CONNACK has properties");
    assert_eq!(announced.topic_alias_max, Some(3));
    publisher
        .client
        .publish_with_properties("sandbox/alias/in", QoS::AtLeastOnce, false, "set", alias(3))
        .await?;
    publisher
        .client
        .publish_with_properties("", QoS::AtLeastOnce, false, "used", alias(3))
        .await?;
    for payload in ["set", "used"] {
        let publish = watcher.next_publish().await?;
        assert_eq!(
            (
                publish.topic.as_ref(),
                publish.payload.as_ref(),
                publish.properties.and_then(|p| p.topic_alias)
            ),
            (&b"sandbox/alias/in"[..], payload.as_bytes(), None),
            "resolved, and the publisher's alias is not passed on"
        );
    }

    // Aliases do not outlive their connection, and stay within the maximum.
    let rows = [
        ("", 3, DisconnectReasonCode::ProtocolError),
        (
            "sandbox/alias/in",
            4,
            DisconnectReasonCode::TopicAliasInvalid,
        ),
        (
            "sandbox/alias/in",
            0,
            DisconnectReasonCode::TopicAliasInvalid,
        ),
    ];
    for (topic, number, code) in rows {
        let mut raw = RawClient::connect(&stack, Hello::new("raw")).await?;
        let mut aliased = publish(topic, QoS::AtLeastOnce, 1, "x");
        aliased.properties = Some(alias(number));
        raw.publish(aliased).await?;
        match raw.next().await? {
            Some(Packet::Disconnect(disconnect)) => {
                assert_eq!(disconnect.reason_code, code, "{topic:?} {number}")
            }
            other => panic!("{topic:?} {number}: expected DISCONNECT, got {other:?}"),
        }
    }
    assert!(watcher.publishes_within(QUIET).await.is_empty());

    stack.shutdown().await;
    Ok(())
}
