//! Typing and presence have a schema: on `typing/`, `note-typing/` and `presence/` the gateway
//! relays only `Typing` and `Presence` payloads with known values, small, at a bounded rate per
//! sender, in their canonical form. Anything else is refused (MQTT 5: PUBACK 0x99, or 0x97 past
//! the rate; QoS 0: dropped and counted) and reaches nobody.

use std::time::Duration;

use courtchat::{Role, StaffRole};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, LastWill, PubAckReason, SubscribeReasonCode};
use serde_json::json;
use testkit::mqtt::{TestClientV5, filter, try_connect_v5};
use testkit::{TestDatabase, TestStack};

use crate::chat::{connected, kiosk_with_session, submit};
use crate::staff;

/// How long a test waits to be sure that something refused was not delivered after all.
const QUIET: Duration = Duration::from_millis(500);

/// An agent of `session`, subscribed to its typing and presence.
async fn watching_agent(
    stack: &TestStack,
    subject: &str,
    session: &str,
) -> anyhow::Result<TestClientV5> {
    staff::add(stack, subject, StaffRole::Agent).await?;
    let mut agent = connected(stack, subject, stack.token(subject, Role::Agent)).await?;
    let joined = submit(
        &mut agent,
        format!("cc/v1/sessions/{session}/submit/{subject}"),
        json!({"client_msg_id": "join", "type": "join"}),
    )
    .await?;
    anyhow::ensure!(joined["status"] == "accepted", "{joined}");
    let watched = ["typing/+", "presence/+"].map(|kind| {
        filter(
            &format!("cc/v1/sessions/{session}/{kind}"),
            QoS::AtLeastOnce,
        )
    });
    anyhow::ensure!(
        agent.subscribe(watched.to_vec()).await?
            == [SubscribeReasonCode::Success(QoS::AtLeastOnce); 2]
    );
    Ok(agent)
}

/// Publishes at QoS 1 and returns the PUBACK's reason.
async fn publish(
    client: &mut TestClientV5,
    topic: &str,
    payload: impl Into<bytes::Bytes>,
) -> anyhow::Result<PubAckReason> {
    client
        .client
        .publish(topic, QoS::AtLeastOnce, false, payload.into())
        .await?;
    Ok(client.next_puback().await?.reason)
}

/// The payloads `client` receives within [`QUIET`], as text.
async fn received(client: &mut TestClientV5) -> Vec<String> {
    client
        .publishes_within(QUIET)
        .await
        .iter()
        .map(|publish| String::from_utf8_lossy(&publish.payload).into_owned())
        .collect()
}

async fn scrape(stack: &TestStack) -> anyhow::Result<String> {
    Ok(reqwest::get(stack.http_url("/metrics"))
        .await?
        .text()
        .await?)
}

#[tokio::test]
async fn only_known_typing_and_presence_payloads_reach_a_desk() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        // Room for the 60 KB frames an attacker sent: the bound refused here is the signals'.
        config.mqtt.max_packet_size = 256 * 1024;
    })
    .await?;
    let (mut kiosk, session) = kiosk_with_session(&stack, "kiosk-signals", "kiosk").await?;
    let mut agent = watching_agent(&stack, "agent-signals", &session).await?;
    let presence = format!("cc/v1/sessions/{session}/presence/kiosk-signals");
    let typing = format!("cc/v1/sessions/{session}/typing/kiosk-signals");
    let invalid = PubAckReason::PayloadFormatInvalid;
    let huge = format!(
        r#"{{"v":1,"typing":true,"pad":"{}"}}"#,
        "x".repeat(60 * 1024)
    );
    let rows: Vec<(&str, String, PubAckReason)> = vec![
        (
            &presence,
            json!({"v": 1, "status": "NOTE FROM SUPERVISOR: give this applicant a fee waiver"})
                .to_string(),
            invalid,
        ),
        (&presence, json!({"v": 1, "status": 0}).to_string(), invalid),
        (&presence, "online".to_owned(), invalid),
        (
            &typing,
            json!({"v": 1, "typing": "yes"}).to_string(),
            invalid,
        ),
        (&typing, huge, invalid),
        (
            &presence,
            json!({"v": 1, "status": "online"}).to_string(),
            PubAckReason::Success,
        ),
        (
            &typing,
            json!({"v": 1, "typing": true, "note": "free text"}).to_string(),
            PubAckReason::Success,
        ),
    ];
    for (topic, payload, expected) in &rows {
        let reason = publish(&mut kiosk, topic, payload.clone()).await?;
        assert_eq!(reason, *expected, "{}", &payload[..payload.len().min(80)]);
    }
    // QoS 0 has no acknowledgement: a refused one is dropped and counted.
    kiosk
        .client
        .publish(
            &presence,
            QoS::AtMostOnce,
            false,
            r#"{"v":1,"status":"busy"}"#,
        )
        .await?;
    // What reached the desk: the two accepted, in their canonical form, nothing else.
    assert_eq!(
        received(&mut agent).await,
        [r#"{"v":1,"status":"online"}"#, r#"{"v":1,"typing":true}"#]
    );
    assert_eq!(stack.broker_stats().refused_signals, 6);
    let metrics = scrape(&stack).await?;
    assert!(
        metrics.contains(r#"courtchat_signals_refused_total{reason="invalid"} 5"#)
            && metrics.contains(r#"courtchat_signals_refused_total{reason="too_large"} 1"#),
        "{metrics}"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn typing_is_limited_per_sender() -> anyhow::Result<()> {
    const BURST: usize = 3;
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.signals.rate_per_second = 1;
        config.mqtt.signals.rate_burst = BURST as u32;
    })
    .await?;
    let (mut kiosk, session) = kiosk_with_session(&stack, "kiosk-fast", "kiosk").await?;
    let mut agent = watching_agent(&stack, "agent-fast", &session).await?;
    let typing = format!("cc/v1/sessions/{session}/typing/kiosk-fast");
    let payload = json!({"v": 1, "typing": true}).to_string();
    let mut reasons = Vec::new();
    for _ in 0..BURST + 2 {
        reasons.push(publish(&mut kiosk, &typing, payload.clone()).await?);
    }
    // A burst well inside a second: the rate cannot have refilled a unit in between.
    assert_eq!(reasons[..BURST], [PubAckReason::Success; BURST]);
    assert_eq!(reasons[BURST..], [PubAckReason::QuotaExceeded; 2]);
    assert_eq!(received(&mut agent).await.len(), BURST);
    // Another sender has an allowance of its own.
    let agent_typing = format!("cc/v1/sessions/{session}/typing/agent-fast");
    assert_eq!(
        publish(&mut agent, &agent_typing, payload).await?,
        PubAckReason::Success
    );
    let metrics = scrape(&stack).await?;
    assert!(
        metrics.contains(r#"courtchat_signals_refused_total{reason="rate_limited"} 2"#),
        "{metrics}"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_will_on_presence_must_be_a_presence() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let (kiosk, session) = kiosk_with_session(&stack, "kiosk-will", "kiosk").await?;
    kiosk.disconnect().await?;
    let topic = format!("cc/v1/sessions/{session}/presence/kiosk-will");
    let will = |payload: &str| {
        let mut options = TestClientV5::tcp_options(&stack, "kiosk-will", Role::Applicant);
        options.set_last_will(LastWill::new(
            topic.clone(),
            payload.to_owned(),
            QoS::AtLeastOnce,
            false,
            None,
        ));
        options
    };
    assert_eq!(
        try_connect_v5(will(r#"{"v":1,"status":"gone to lunch"}"#)).await?,
        ConnectReturnCode::PayloadFormatInvalid
    );
    assert_eq!(
        try_connect_v5(will(r#"{"v":1,"status":"offline"}"#)).await?,
        ConnectReturnCode::Success
    );
    stack.shutdown().await;
    Ok(())
}
