//! The server keep alive (MQTT 5 §3.2.2.3.14): an MQTT 5 client asking for a longer keep alive
//! than `mqtt.max_keep_alive_secs`, or for none, is told the maximum in CONNACK and held to it.
//! MQTT 3.1.1 cannot be told, and keeps its own.

use std::time::{Duration, Instant};

use courtchat::Role;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
use testkit::mqtt::{TestClient, TestClientV5, filter};
use testkit::{TestDatabase, TestStack};

use super::raw::{Hello, RawClient};

const MAX: u16 = 2;

async fn stack() -> anyhow::Result<TestStack> {
    TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.max_keep_alive_secs = MAX;
    })
    .await
}

#[tokio::test]
async fn a_client_asking_for_more_or_none_is_told_the_maximum_and_held_to_it() -> anyhow::Result<()>
{
    let stack = stack().await?;
    // (keep alive asked for, what CONNACK says)
    let rows = [(30, Some(MAX)), (0, Some(MAX)), (1, None), (MAX, None)];
    for (asked, told) in rows {
        let mut hello = Hello::new("idle");
        hello.keep_alive = asked;
        let mut idle = RawClient::connect(&stack, hello).await?;
        let properties = idle
            .connack
            .properties
            .clone()
            .expect("a v5 CONNACK has properties");
        assert_eq!(properties.server_keep_alive, told, "asked for {asked}");
        // Silent from here on: one and a half keep alive periods later the server ends it.
        let held_to = told.unwrap_or(asked);
        let start = Instant::now();
        match idle.next().await? {
            Some(Packet::Disconnect(disconnect)) => assert_eq!(
                disconnect.reason_code,
                DisconnectReasonCode::KeepAliveTimeout,
                "asked for {asked}"
            ),
            other => panic!("asked for {asked}: expected DISCONNECT, got {other:?}"),
        }
        let waited = start.elapsed();
        let due = Duration::from_millis(u64::from(held_to) * 1500);
        assert!(
            waited + Duration::from_millis(200) >= due && waited < due + Duration::from_secs(2),
            "asked for {asked}: held to {held_to} s, closed after {waited:?}"
        );
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_client_that_adopts_the_server_keep_alive_stays_and_v3_keeps_its_own()
-> anyhow::Result<()> {
    let stack = stack().await?;
    // rumqttc adopts the server keep alive from CONNACK and pings that often.
    let mut v5 =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "agent-5", Role::Agent)).await?;
    let properties = v5
        .connack
        .properties
        .clone()
        .expect("a v5 CONNACK has properties");
    assert_eq!(properties.server_keep_alive, Some(MAX));
    v5.subscribe(vec![filter("sandbox/alive", QoS::AtLeastOnce)])
        .await?;
    // An MQTT 3.1.1 client asking for 30 s is not held to 2: it sends nothing meanwhile.
    let mut v3 =
        TestClient::connect(TestClient::tcp_options(&stack, "agent-3", Role::Agent)).await?;
    v3.subscribe("sandbox/alive", rumqttc::QoS::AtLeastOnce)
        .await?;
    tokio::time::sleep(Duration::from_secs(u64::from(MAX) * 3)).await;
    v5.client
        .publish("sandbox/alive", QoS::AtLeastOnce, false, "still here")
        .await?;
    assert_eq!(v5.next_publish().await?.payload.as_ref(), b"still here");
    assert_eq!(v3.next_publish().await?.payload.as_ref(), b"still here");
    stack.shutdown().await;
    Ok(())
}
