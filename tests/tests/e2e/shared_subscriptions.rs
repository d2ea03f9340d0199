//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 §4.8.2) outside `cc/`, through
//! rumqttc's v5 client: each message to one member in turn, beside the members' own
//! subscriptions; no retained messages; members leave by unsubscribing or disconnecting; a
//! persistent member that is away is passed over while another member is connected and keeps
//! what it is given otherwise; refused under `cc/`.

use std::collections::BTreeSet;
use std::time::Duration;

use courtchat::Role;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, SubscribeReasonCode};
use testkit::mqtt::{TestClientV5, filter};
use testkit::{TestDatabase, TestStack};

const QUIET: Duration = Duration::from_millis(300);
const GRANTED: SubscribeReasonCode = SubscribeReasonCode::Success(QoS::AtLeastOnce);

async fn agent(stack: &TestStack, client_id: &str) -> anyhow::Result<TestClientV5> {
    TestClientV5::connect(TestClientV5::tcp_options(stack, client_id, Role::Agent)).await
}

/// Publishes `payloads` on `topic` at QoS 1, each acknowledged before the next.
async fn publish_all(
    publisher: &mut TestClientV5,
    topic: &str,
    payloads: impl IntoIterator<Item = String>,
) -> anyhow::Result<()> {
    for payload in payloads {
        publisher
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await?;
        publisher.next_puback().await?;
    }
    Ok(())
}

/// The payloads of what `client` receives within `QUIET`.
async fn received(client: &mut TestClientV5) -> Vec<String> {
    client
        .publishes_within(QUIET)
        .await
        .iter()
        .map(|publish| String::from_utf8_lossy(&publish.payload).into_owned())
        .collect()
}

fn numbered(range: std::ops::Range<u32>) -> impl Iterator<Item = String> {
    range.map(|n| n.to_string())
}

#[tokio::test]
async fn each_message_goes_to_one_member_in_turn_beside_its_own_subscriptions() -> anyhow::Result<()>
{
    let stack = TestStack::start().await?;
    let mut one = agent(&stack, "worker-1").await?;
    assert_eq!(
        one.connack
            .properties
            .as_ref()
            .and_then(|p| p.shared_subscription_available),
        Some(1),
        "CONNACK offers shared subscriptions"
    );
    let mut two = agent(&stack, "worker-2").await?;
    let shared = "$share/workers/sandbox/jobs/+";
    for member in [&mut one, &mut two] {
        assert_eq!(
            member
                .subscribe(vec![filter(shared, QoS::AtLeastOnce)])
                .await?,
            [GRANTED]
        );
    }
    // A client with its own subscription and a group of its own gets both copies.
    let mut watcher = agent(&stack, "watcher").await?;
    assert_eq!(
        watcher
            .subscribe(vec![
                filter("sandbox/jobs/+", QoS::AtLeastOnce),
                filter("$share/audit/sandbox/jobs/+", QoS::AtMostOnce),
            ])
            .await?,
        [GRANTED, SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );

    let mut publisher = agent(&stack, "dispatcher").await?;
    publish_all(&mut publisher, "sandbox/jobs/a", numbered(0..6)).await?;
    let (got_one, got_two) = (received(&mut one).await, received(&mut two).await);
    assert_eq!(
        (got_one.len(), got_two.len()),
        (3, 3),
        "in turn: {got_one:?} {got_two:?}"
    );
    let all: BTreeSet<_> = got_one.iter().chain(&got_two).cloned().collect();
    assert_eq!(all, numbered(0..6).collect(), "each message exactly once");
    let copies = watcher.publishes_within(QUIET).await;
    assert_eq!(copies.len(), 12, "one copy per subscription");
    assert_eq!(
        copies.iter().filter(|p| p.qos == QoS::AtMostOnce).count(),
        6,
        "the shared subscription's copies at its own QoS"
    );

    // No retained message on a shared subscription (MQTT 5 §4.8.2); a plain one gets it.
    publisher
        .client
        .publish("sandbox/jobs/kept", QoS::AtLeastOnce, true, "retained")
        .await?;
    publisher.next_puback().await?;
    assert_eq!(
        received(&mut one).await.len() + received(&mut two).await.len(),
        1
    );
    assert_eq!(received(&mut watcher).await.len(), 2);
    let mut late = agent(&stack, "worker-3").await?;
    assert_eq!(
        late.subscribe(vec![filter(shared, QoS::AtLeastOnce)])
            .await?,
        [GRANTED]
    );
    assert!(received(&mut late).await.is_empty(), "no retained message");
    let mut plain = agent(&stack, "plain").await?;
    plain
        .subscribe(vec![filter("sandbox/jobs/+", QoS::AtLeastOnce)])
        .await?;
    assert_eq!(received(&mut plain).await, ["retained"]);

    // Unsubscribing and disconnecting leave the group.
    two.client.unsubscribe(shared).await?;
    late.disconnect().await?;
    tokio::time::sleep(QUIET).await;
    publish_all(&mut publisher, "sandbox/jobs/b", numbered(6..10)).await?;
    assert_eq!(received(&mut one).await, ["6", "7", "8", "9"]);
    assert!(received(&mut two).await.is_empty());
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_away_member_is_passed_over_then_keeps_what_it_is_given() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let shared = "$share/night/sandbox/work";
    let persistent = |clean: bool| {
        let mut options = TestClientV5::tcp_options(&stack, "night-1", Role::Agent);
        options.set_clean_start(clean);
        options.set_session_expiry_interval(Some(60));
        options
    };
    let mut away = TestClientV5::connect(persistent(true)).await?;
    away.subscribe(vec![filter(shared, QoS::AtLeastOnce)])
        .await?;
    let mut present = agent(&stack, "night-2").await?;
    present
        .subscribe(vec![filter(shared, QoS::AtLeastOnce)])
        .await?;
    away.disconnect().await?;
    // Nothing tells a client when the server has parked the session it left.
    tokio::time::sleep(QUIET).await;

    let mut publisher = agent(&stack, "dispatcher").await?;
    publish_all(&mut publisher, "sandbox/work", numbered(0..4)).await?;
    assert_eq!(
        received(&mut present).await,
        ["0", "1", "2", "3"],
        "the connected member takes the away member's turns"
    );
    present.disconnect().await?;
    tokio::time::sleep(QUIET).await;
    // Only the away member is left: its session keeps what it is given.
    publish_all(&mut publisher, "sandbox/work", numbered(4..6)).await?;
    let mut back = TestClientV5::connect(persistent(false)).await?;
    assert!(back.connack.session_present);
    assert_eq!(received(&mut back).await, ["4", "5"]);
    // And it is a member again, connected.
    publish_all(&mut publisher, "sandbox/work", numbered(6..7)).await?;
    assert_eq!(received(&mut back).await, ["6"]);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shared_subscriptions_are_refused_under_cc_and_checked_like_their_filter()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        // This test publishes on `cc/v1/queue` as the service itself.
        config.bridge.in_process = false;
    })
    .await?;
    let mut member = agent(&stack, "agent-1").await?;
    let codes = member
        .subscribe(vec![
            filter("$share/g/cc/v1/queue", QoS::AtLeastOnce),
            filter("$share/g/elsewhere/x", QoS::AtLeastOnce),
            filter("$share/g", QoS::AtLeastOnce),
            filter("$share//sandbox/x", QoS::AtLeastOnce),
            filter("$share/g/$SYS/x", QoS::AtLeastOnce),
            filter("$share/g/sandbox/#", QoS::AtLeastOnce),
        ])
        .await?;
    assert_eq!(
        codes,
        [
            // The agent may read the queue, but not one message in turn.
            SubscribeReasonCode::SharedSubscriptionsNotSupported,
            // No static rule opens `elsewhere/`.
            SubscribeReasonCode::NotAuthorized,
            SubscribeReasonCode::TopicFilterInvalid,
            SubscribeReasonCode::TopicFilterInvalid,
            SubscribeReasonCode::TopicFilterInvalid,
            GRANTED,
        ]
    );

    // `#` is granted as its filter would be, and still carries nothing under `cc/`.
    let mut service =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "svc", Role::Service)).await?;
    assert_eq!(
        service
            .subscribe(vec![
                filter("$share/all/#", QoS::AtLeastOnce),
                filter("cc/v1/queue", QoS::AtLeastOnce)
            ])
            .await?,
        [GRANTED, GRANTED]
    );
    service
        .client
        .publish("cc/v1/queue", QoS::AtLeastOnce, false, "{}")
        .await?;
    service
        .client
        .publish("sandbox/x", QoS::AtLeastOnce, false, "outside")
        .await?;
    let payloads: Vec<_> = service
        .publishes_within(QUIET)
        .await
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    assert_eq!(
        payloads,
        ["{}", "outside"],
        "the queue once (its own subscription), sandbox/x through the group"
    );

    // No local on a shared subscription is a protocol error (MQTT 5 §3.8.3.1).
    let mut no_local = filter("$share/g/sandbox/y", QoS::AtLeastOnce);
    no_local.nolocal = true;
    member.client.subscribe_many(vec![no_local]).await?;
    assert_eq!(
        member.next_disconnect().await?.reason_code,
        DisconnectReasonCode::ProtocolError
    );
    stack.shutdown().await;
    Ok(())
}
