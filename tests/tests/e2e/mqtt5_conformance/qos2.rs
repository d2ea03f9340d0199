//! QoS 2 end to end: granted as asked, delivered at min(published, granted) with PUBREC,
//! PUBREL and PUBCOMP, counted against the receiver's receive maximum until PUBCOMP, and kept
//! with a persistent session in both directions: what was not finished is finished after a
//! resume, and nothing is delivered twice. A client is held to the server's receive maximum.

use std::time::Duration;

use courtchat::Role;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectProperties, DisconnectReasonCode, Packet, PubCompReason, SubscribeReasonCode,
};
use testkit::mqtt::{TestClientV5, filter};
use testkit::{TestDatabase, TestStack};

use super::raw::{Hello, RawClient, publish};

const QUIET: Duration = Duration::from_millis(300);

fn persistent(client_id: &str, clean_start: bool, receive_maximum: Option<u16>) -> Hello {
    let mut hello = Hello::new(client_id);
    hello.clean_start = clean_start;
    hello.properties = ConnectProperties {
        session_expiry_interval: Some(60),
        receive_maximum,
        ..ConnectProperties::new()
    };
    hello
}

#[tokio::test]
async fn qos_two_is_granted_and_delivered_exactly_once() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut options = TestClientV5::tcp_options(&stack, "sub", Role::Agent);
    // One at a time: the second delivery waits for the first one's PUBCOMP.
    options.set_receive_maximum(Some(1));
    let mut sub = TestClientV5::connect(options).await?;
    assert_eq!(
        sub.subscribe(vec![filter("sandbox/q2", QoS::ExactlyOnce)])
            .await?,
        vec![SubscribeReasonCode::Success(QoS::ExactlyOnce)]
    );
    let publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    for (published, payload) in [
        (QoS::ExactlyOnce, "one"),
        (QoS::ExactlyOnce, "two"),
        (QoS::AtLeastOnce, "three"),
    ] {
        publisher
            .client
            .publish("sandbox/q2", published, false, payload)
            .await?;
    }
    let mut delivered = Vec::new();
    for _ in 0..3 {
        let publish = sub.next_publish().await?;
        delivered.push((publish.qos, String::from_utf8(publish.payload.to_vec())?));
    }
    assert_eq!(
        delivered,
        vec![
            (QoS::ExactlyOnce, "one".to_owned()),
            (QoS::ExactlyOnce, "two".to_owned()),
            (QoS::AtLeastOnce, "three".to_owned()),
        ],
        "at min(published, granted), each flow completing before the next under receive \
         maximum 1"
    );
    assert!(sub.publishes_within(QUIET).await.is_empty(), "exactly once");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_qos_two_delivery_counts_against_receive_maximum_until_pubcomp() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut sub = RawClient::connect(&stack, persistent("sub", true, Some(1))).await?;
    sub.subscribe(vec![filter("sandbox/q2", QoS::ExactlyOnce)])
        .await?;
    let publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    for payload in ["one", "two"] {
        publisher
            .client
            .publish("sandbox/q2", QoS::ExactlyOnce, false, payload)
            .await?;
    }
    let one = sub.next_publish().await?;
    assert_eq!(
        (one.qos, one.payload.as_ref()),
        (QoS::ExactlyOnce, &b"one"[..])
    );
    sub.pubrec(one.pkid).await?;
    match sub.next().await? {
        Some(Packet::PubRel(rel)) => assert_eq!(rel.pkid, one.pkid),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    sub.assert_silent(QUIET, "released but not complete: still in flight")
        .await?;
    sub.pubcomp(one.pkid).await?;
    let two = sub.next_publish().await?;
    assert_eq!(two.payload.as_ref(), b"two");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unfinished_qos_two_deliveries_are_finished_after_a_resume() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut sub = RawClient::connect(&stack, persistent("sub", true, None)).await?;
    sub.subscribe(vec![filter("sandbox/q2", QoS::ExactlyOnce)])
        .await?;
    let publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    for payload in ["one", "two"] {
        publisher
            .client
            .publish("sandbox/q2", QoS::ExactlyOnce, false, payload)
            .await?;
    }
    let one = sub.next_publish().await?;
    let two = sub.next_publish().await?;
    assert_eq!(
        (one.payload.as_ref(), two.payload.as_ref()),
        (&b"one"[..], &b"two"[..])
    );
    // `one` is received (PUBREC, answered with PUBREL), `two` not even that; then the
    // connection drops.
    sub.pubrec(one.pkid).await?;
    assert!(matches!(sub.next().await?, Some(Packet::PubRel(rel)) if rel.pkid == one.pkid));
    drop(sub);

    let mut back = RawClient::connect(&stack, persistent("sub", false, None)).await?;
    assert!(back.connack.session_present);
    // MQTT 5 §4.4: in their first order, the PUBREL again, the PUBLISH again flagged DUP.
    match back.next().await? {
        Some(Packet::PubRel(rel)) => assert_eq!(rel.pkid, one.pkid, "one is released again"),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    let again = back.next_publish().await?;
    assert_eq!(
        (again.pkid, again.dup, again.qos, again.payload.as_ref()),
        (two.pkid, true, QoS::ExactlyOnce, &b"two"[..]),
        "two is sent again, the same packet flagged DUP"
    );
    back.pubcomp(one.pkid).await?;
    back.pubrec(two.pkid).await?;
    assert!(matches!(back.next().await?, Some(Packet::PubRel(rel)) if rel.pkid == two.pkid));
    back.pubcomp(two.pkid).await?;
    publisher
        .client
        .publish("sandbox/q2", QoS::ExactlyOnce, false, "three")
        .await?;
    let three = back.next_publish().await?;
    assert_eq!(
        (three.dup, three.payload.as_ref()),
        (false, &b"three"[..]),
        "nothing of one or two is sent a third time"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_qos_two_publish_resent_after_a_resume_is_forwarded_once() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut watcher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "watcher", Role::Agent)).await?;
    watcher
        .subscribe(vec![filter("sandbox/q2", QoS::ExactlyOnce)])
        .await?;
    let mut sender = RawClient::connect(&stack, persistent("sender", true, None)).await?;
    sender
        .publish(publish("sandbox/q2", QoS::ExactlyOnce, 7, "once"))
        .await?;
    assert!(matches!(sender.next().await?, Some(Packet::PubRec(rec)) if rec.pkid == 7));
    drop(sender);

    // The PUBREC was lost with the connection, as far as the sender knows: it sends the
    // PUBLISH again, flagged DUP, in the resumed session, then releases it.
    let mut sender = RawClient::connect(&stack, persistent("sender", false, None)).await?;
    assert!(sender.connack.session_present);
    let mut again = publish("sandbox/q2", QoS::ExactlyOnce, 7, "once");
    again.dup = true;
    sender.publish(again).await?;
    assert!(matches!(sender.next().await?, Some(Packet::PubRec(rec)) if rec.pkid == 7));
    sender.pubrel(7).await?;
    match sender.next().await? {
        Some(Packet::PubComp(comp)) => {
            assert_eq!((comp.pkid, comp.reason), (7, PubCompReason::Success));
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // Released already: a second PUBREL finds no such publish.
    sender.pubrel(7).await?;
    match sender.next().await? {
        Some(Packet::PubComp(comp)) => assert_eq!(
            (comp.pkid, comp.reason),
            (7, PubCompReason::PacketIdentifierNotFound)
        ),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }

    assert_eq!(watcher.next_publish().await?.payload.as_ref(), b"once");
    assert!(
        watcher.publishes_within(QUIET).await.is_empty(),
        "forwarded exactly once"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn qos_two_publishes_beyond_the_receive_maximum_end_the_connection() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.receive_maximum = 2;
    })
    .await?;
    let mut sender = RawClient::connect(&stack, Hello::new("sender")).await?;
    let announced = sender
        .connack
        .properties
        .clone()
        .expect("a v5 CONNACK has properties");
    assert_eq!(announced.receive_max, Some(2));
    // (packet id sent, DUP): two unreleased at once are within the maximum, a repeat is not a
    // new one, and a released one makes room.
    for (pkid, dup) in [(1, false), (2, false), (1, true)] {
        let mut sent = publish("sandbox/q2", QoS::ExactlyOnce, pkid, "x");
        sent.dup = dup;
        sender.publish(sent).await?;
        assert!(matches!(sender.next().await?, Some(Packet::PubRec(rec)) if rec.pkid == pkid));
    }
    sender.pubrel(1).await?;
    assert!(matches!(sender.next().await?, Some(Packet::PubComp(comp)) if comp.pkid == 1));
    sender
        .publish(publish("sandbox/q2", QoS::ExactlyOnce, 3, "x"))
        .await?;
    assert!(matches!(sender.next().await?, Some(Packet::PubRec(rec)) if rec.pkid == 3));
    sender
        .publish(publish("sandbox/q2", QoS::ExactlyOnce, 4, "x"))
        .await?;
    match sender.next().await? {
        Some(Packet::Disconnect(disconnect)) => assert_eq!(
            disconnect.reason_code,
            DisconnectReasonCode::ReceiveMaximumExceeded
        ),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    stack.shutdown().await;
    Ok(())
}
