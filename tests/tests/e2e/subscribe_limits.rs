//! Subscriptions are limited per sender like every other kind of request: each filter a
//! SUBSCRIBE names is charged to its sender's allowance (`[mqtt.subscriptions]`), and a
//! SUBSCRIBE that does not fit is refused whole (MQTT 5: SUBACK 0x97 for each filter; MQTT
//! 3.1.1: 0x80), before any filter is checked, so a flood of them costs a counter and neither
//! authorization checks nor denials on the audit chain.

use courtchat::Role;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;
use testkit::mqtt::{TestClient, TestClientV5, filter};
use testkit::{TestDatabase, TestStack};

#[tokio::test]
async fn a_sender_past_its_allowance_of_filters_is_refused_whole() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.subscriptions.rate_per_second = 1;
        config.mqtt.subscriptions.rate_burst = 5;
    })
    .await?;
    let own = |subject: &str| filter(&format!("cc/v1/clients/{subject}/ack"), QoS::AtLeastOnce);
    let mut ann =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "ap-ann", Role::Applicant)).await?;
    // Four filters of her own and one she may not read: five, her whole allowance.
    for _ in 0..4 {
        assert_eq!(
            ann.subscribe(vec![own("ap-ann")]).await?,
            [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        );
    }
    assert_eq!(
        ann.subscribe(vec![own("ap-bob")]).await?,
        [SubscribeReasonCode::NotAuthorized]
    );
    let denied = stack.broker_stats().denied_subscribes;

    // Past it, a SUBSCRIBE is refused whole, whatever its filters.
    assert_eq!(
        ann.subscribe(vec![own("ap-ann"), own("ap-bob")]).await?,
        [SubscribeReasonCode::QuotaExceeded; 2]
    );
    for _ in 0..20 {
        assert_eq!(
            ann.subscribe(vec![own("ap-bob")]).await?,
            [SubscribeReasonCode::QuotaExceeded]
        );
    }
    let stats = stack.broker_stats();
    assert_eq!(stats.limited_subscribes, 21);
    assert_eq!(
        stats.denied_subscribes, denied,
        "refused before the authorizer: no denial to record"
    );

    // Others have their own allowance; MQTT 3.1.1 is told 0x80.
    let mut bob =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "ap-bob", Role::Applicant)).await?;
    assert_eq!(
        bob.subscribe(vec![own("ap-bob")]).await?,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let mut cid =
        TestClient::connect(TestClient::tcp_options(&stack, "ap-cid", Role::Applicant)).await?;
    let topic = "cc/v1/clients/ap-cid/ack";
    for _ in 0..5 {
        assert_eq!(
            cid.subscribe(topic, rumqttc::QoS::AtLeastOnce).await?,
            [rumqttc::SubscribeReasonCode::Success(
                rumqttc::QoS::AtLeastOnce
            )]
        );
    }
    assert_eq!(
        cid.subscribe(topic, rumqttc::QoS::AtLeastOnce).await?,
        [rumqttc::SubscribeReasonCode::Failure]
    );

    let metrics = reqwest::get(stack.http_url("/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("courtchat_subscribes_limited_total 22"),
        "{metrics}"
    );
    stack.shutdown().await;
    Ok(())
}
