//! Revocation: a participant who leaves a session (or from whom it is transferred) loses access
//! at once — its subscriptions are removed and nothing published afterwards, or still queued for
//! it, reaches it.

use std::time::Duration;

use bytes::BytesMut;
use courtchat::Role;
use rumqttc::mqttbytes::v4::{Connect, Packet, Subscribe};
use rumqttc::{QoS, SubscribeReasonCode};
use testkit::TestStack;
use testkit::mqtt::TestClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn leaving_removes_the_subscription_at_once() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    stack.memberships().join("s1", "agent-1", Role::Agent);
    let mut agent =
        TestClient::connect(TestClient::tcp_options(&stack, "agent-1", Role::Agent)).await?;
    let service =
        TestClient::connect(TestClient::tcp_options(&stack, "bridge", Role::Service)).await?;
    assert_eq!(
        agent
            .subscribe("cc/v1/sessions/s1/messages", QoS::AtLeastOnce)
            .await?,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    agent
        .subscribe("sandbox/unrelated", QoS::AtMostOnce)
        .await?;

    service
        .client
        .publish(
            "cc/v1/sessions/s1/messages",
            QoS::AtLeastOnce,
            false,
            "before",
        )
        .await?;
    assert_eq!(agent.next_publish().await?.payload.as_ref(), b"before");

    stack.memberships().leave("s1", "agent-1");
    service
        .client
        .publish(
            "cc/v1/sessions/s1/messages",
            QoS::AtLeastOnce,
            false,
            "after",
        )
        .await?;
    assert!(
        agent.publishes_within(QUIET).await.is_empty(),
        "delivered after leaving"
    );

    // The subscription is gone, not merely filtered: joining again does not bring it back.
    stack.memberships().join("s1", "agent-1", Role::Agent);
    service
        .client
        .publish(
            "cc/v1/sessions/s1/messages",
            QoS::AtLeastOnce,
            false,
            "rejoined",
        )
        .await?;
    assert!(
        agent.publishes_within(QUIET).await.is_empty(),
        "the revoked subscription survived"
    );

    // Unrelated subscriptions are untouched.
    service
        .client
        .publish("sandbox/unrelated", QoS::AtLeastOnce, false, "still here")
        .await?;
    assert_eq!(agent.next_publish().await?.payload.as_ref(), b"still here");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn messages_already_queued_are_not_delivered_after_leaving() -> anyhow::Result<()> {
    const MESSAGES: usize = 300;
    const SIZE: usize = 16 * 1024;
    let stack = TestStack::start().await?;
    stack.memberships().join("s1", "agent-slow", Role::Agent);

    // A raw client with a tiny receive buffer that stops reading after SUBACK: what is published
    // to it piles up in the gateway.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut slow = socket.connect(stack.mqtt_tcp_addr()).await?;
    let mut connect = Connect::new("agent-slow");
    connect.set_login("agent-slow", stack.token("agent-slow", Role::Agent));
    let mut out = BytesMut::new();
    Packet::Connect(connect).write(&mut out, usize::MAX)?;
    let mut subscribe = Subscribe::new("cc/v1/sessions/s1/messages", QoS::AtMostOnce);
    subscribe.pkid = 1;
    Packet::Subscribe(subscribe).write(&mut out, usize::MAX)?;
    slow.write_all(&out).await?;
    let mut inbox = BytesMut::new();
    let mut read_packet = async |inbox: &mut BytesMut| -> anyhow::Result<Option<Packet>> {
        loop {
            match Packet::read(inbox, usize::MAX) {
                Ok(packet) => return Ok(Some(packet)),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(err) => anyhow::bail!("bad packet: {err}"),
            }
            match tokio::time::timeout(QUIET, slow.read_buf(inbox)).await {
                Err(_) | Ok(Ok(0)) => return Ok(None),
                Ok(read) => {
                    read?;
                }
            }
        }
    };
    assert!(matches!(
        read_packet(&mut inbox).await?,
        Some(Packet::ConnAck(_))
    ));
    assert!(matches!(
        read_packet(&mut inbox).await?,
        Some(Packet::SubAck(_))
    ));

    let mut service_options = TestClient::tcp_options(&stack, "bridge", Role::Service);
    service_options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let mut service = TestClient::connect(service_options).await?;
    for n in 0..MESSAGES {
        let mut payload = vec![b'.'; SIZE];
        payload[..8].copy_from_slice(&(n as u64).to_be_bytes());
        service
            .client
            .publish(
                "cc/v1/sessions/s1/messages",
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await?;
    }
    for _ in 0..MESSAGES {
        service.next_puback().await?;
    }

    stack.memberships().leave("s1", "agent-slow");

    // Now read everything the client is still sent.
    let mut received = Vec::new();
    while let Some(packet) = read_packet(&mut inbox).await? {
        if let Packet::Publish(publish) = packet {
            received.push(u64::from_be_bytes(publish.payload[..8].try_into()?));
        }
    }
    let expected_prefix: Vec<u64> = (0..received.len() as u64).collect();
    assert_eq!(
        received, expected_prefix,
        "what arrived is the start of the stream, in order"
    );
    assert!(
        received.len() < MESSAGES,
        "all {MESSAGES} messages were delivered, including those queued after the leave"
    );
    stack.shutdown().await;
    Ok(())
}

/// Publishes a membership change as the chat pipeline does.
async fn announce(
    service: &TestClient,
    session: &str,
    subject: &str,
    op: &str,
) -> anyhow::Result<()> {
    let update = format!(
        r#"{{"v":1,"session_id":"{session}","subject":"{subject}","role":"agent","op":"{op}"}}"#
    );
    service
        .client
        .publish("cc/v1/memberships", QoS::AtLeastOnce, false, update)
        .await?;
    Ok(())
}

#[tokio::test]
async fn memberships_arrive_through_the_protocol() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let service =
        TestClient::connect(TestClient::tcp_options(&stack, "bridge", Role::Service)).await?;
    let mut agent =
        TestClient::connect(TestClient::tcp_options(&stack, "agent-5", Role::Agent)).await?;
    let denied = vec![SubscribeReasonCode::Failure];
    assert_eq!(
        agent
            .subscribe("cc/v1/sessions/s5/messages", QoS::AtLeastOnce)
            .await?,
        denied
    );

    announce(&service, "s5", "agent-5", "join").await?;
    // The feed applies the update asynchronously; retry the subscription (bounded).
    let deadline = tokio::time::Instant::now() + testkit::mqtt::PATIENCE;
    while agent
        .subscribe("cc/v1/sessions/s5/messages", QoS::AtLeastOnce)
        .await?
        == denied
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the join never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service
        .client
        .publish(
            "cc/v1/sessions/s5/messages",
            QoS::AtLeastOnce,
            false,
            "welcome",
        )
        .await?;
    assert_eq!(agent.next_publish().await?.payload.as_ref(), b"welcome");

    announce(&service, "s5", "agent-5", "leave").await?;
    let deadline = tokio::time::Instant::now() + testkit::mqtt::PATIENCE;
    while stack.memberships().is_member("s5", "agent-5") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leave never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service
        .client
        .publish(
            "cc/v1/sessions/s5/messages",
            QoS::AtLeastOnce,
            false,
            "after leaving",
        )
        .await?;
    assert!(
        agent.publishes_within(QUIET).await.is_empty(),
        "delivered after the leave"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn only_the_service_announces_memberships_and_nobody_takes_the_feeds_id() -> anyhow::Result<()>
{
    let stack = TestStack::start().await?;
    // An agent trying to add itself is refused (and, as MQTT 3.1.1, disconnected).
    let agent =
        TestClient::connect(TestClient::tcp_options(&stack, "agent-6", Role::Agent)).await?;
    announce(&agent, "s6", "agent-6", "join").await?;
    tokio::time::sleep(QUIET).await;
    assert!(!stack.memberships().is_member("s6", "agent-6"));
    assert_eq!(stack.broker_stats().denied_publishes, 1);
    // The gateway's internal link ids are reserved.
    assert_eq!(
        testkit::mqtt::try_connect(TestClient::tcp_options(
            &stack,
            "courtchat.memberships",
            Role::Service
        ))
        .await,
        testkit::mqtt::ConnectOutcome::Refused(rumqttc::ConnectReturnCode::BadClientId)
    );
    stack.shutdown().await;
    Ok(())
}
