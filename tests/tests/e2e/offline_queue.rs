//! Offline queueing for persistent sessions (MQTT 5 §4.1, 3.1.1 clean session off): what is
//! published for a session while its client is away is kept, QoS 0 included, up to
//! `mqtt.max_pending_per_client`, delivered in order when it resumes; past the bound the newest
//! are dropped and counted.

use std::time::Duration;

use courtchat::Role;
use rumqttc::v5::mqttbytes::QoS;
use testkit::mqtt::{TestClient, TestClientV5, filter};
use testkit::{TestDatabase, TestStack};

const QUIET: Duration = Duration::from_millis(300);

/// The queue of an away session holds this many (the bound's floor is 64).
const BOUND: usize = 64;

#[tokio::test]
async fn an_away_v5_session_keeps_its_deliveries_up_to_the_bound_and_drops_the_newest()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.max_pending_per_client = BOUND;
    })
    .await?;
    let options = |clean: bool| {
        let mut options = TestClientV5::tcp_options(&stack, "agent-away", Role::Agent);
        options.set_clean_start(clean);
        options.set_session_expiry_interval(Some(60));
        options
    };
    let mut first = TestClientV5::connect(options(true)).await?;
    first
        .subscribe(vec![filter("sandbox/inbox/#", QoS::AtLeastOnce)])
        .await?;
    first.disconnect().await?;
    tokio::time::sleep(QUIET).await;

    let mut publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    let qos = |n: usize| {
        if n.is_multiple_of(2) {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        }
    };
    let extra = 6;
    for n in 0..BOUND + extra {
        publisher
            .client
            .publish(format!("sandbox/inbox/{n}"), qos(n), false, n.to_string())
            .await?;
        if qos(n) == QoS::AtLeastOnce {
            publisher.next_puback().await?;
        }
    }
    // The last QoS 0 publish is routed before a later acknowledgement is sent.
    publisher
        .client
        .publish("sandbox/elsewhere", QoS::AtLeastOnce, false, "")
        .await?;
    publisher.next_puback().await?;
    assert_eq!(
        stack.broker_stats().dropped_deliveries,
        extra as u64,
        "the newest, past the bound, are dropped and counted"
    );

    let mut back = TestClientV5::connect(options(false)).await?;
    assert!(back.connack.session_present);
    let kept = back.publishes_within(QUIET).await;
    let got: Vec<(String, QoS)> = kept
        .iter()
        .map(|p| (String::from_utf8_lossy(&p.payload).into_owned(), p.qos))
        .collect();
    let expected: Vec<(String, QoS)> = (0..BOUND).map(|n| (n.to_string(), qos(n))).collect();
    assert_eq!(got, expected, "the oldest, in order, each at its QoS");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_away_v311_session_with_clean_session_off_gets_what_it_missed() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let options = || {
        let mut options = TestClient::tcp_options(&stack, "old-kiosk", Role::Agent);
        options.set_clean_session(false);
        options
    };
    let mut first = TestClient::connect(options()).await?;
    first
        .subscribe("sandbox/old", rumqttc::QoS::AtLeastOnce)
        .await?;
    first.disconnect().await?;
    tokio::time::sleep(QUIET).await;

    let mut publisher =
        TestClient::connect(TestClient::tcp_options(&stack, "old-pub", Role::Agent)).await?;
    for (payload, qos) in [
        ("one", rumqttc::QoS::AtLeastOnce),
        ("two", rumqttc::QoS::AtMostOnce),
        ("three", rumqttc::QoS::AtLeastOnce),
    ] {
        publisher
            .client
            .publish("sandbox/old", qos, false, payload)
            .await?;
    }
    publisher.next_puback().await?;
    publisher.next_puback().await?;

    let mut back = TestClient::connect(options()).await?;
    assert!(back.session_present);
    let missed: Vec<(String, rumqttc::QoS)> = back
        .publishes_within(QUIET)
        .await
        .iter()
        .map(|p| (String::from_utf8_lossy(&p.payload).into_owned(), p.qos))
        .collect();
    assert_eq!(
        missed,
        [
            ("one".to_owned(), rumqttc::QoS::AtLeastOnce),
            ("two".to_owned(), rumqttc::QoS::AtMostOnce),
            ("three".to_owned(), rumqttc::QoS::AtLeastOnce),
        ]
    );
    stack.shutdown().await;
    Ok(())
}
