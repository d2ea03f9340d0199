//! Floods and silent peers: every connection gets a defined answer, and none delays another.

use std::time::Duration;

use bytes::BytesMut;
use courtchat::Role;
use rumqttc::v5::mqttbytes::v5::{Connect, DisconnectReasonCode, Login, Packet};
use testkit::mqtt::{ConnectOutcome, PATIENCE, TestClient, try_connect};
use testkit::{TestDatabase, TestStack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_connection_flood_gets_connacks_and_leaves_the_server_usable() -> anyhow::Result<()> {
    const LIMIT: usize = 20;
    const CLIENTS: usize = 60;
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.max_connections = LIMIT;
        // The in-process pipeline would hold a connection of its own.
        config.bridge.in_process = false;
    })
    .await?;
    // Idle sockets that never send CONNECT do not count against the limit nor block anyone.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(stack.mqtt_tcp_addr()).await?);
    }

    let mut attempts = tokio::task::JoinSet::new();
    for n in 0..CLIENTS {
        let options = TestClient::tcp_options(&stack, &format!("flood-{n}"), Role::Agent);
        attempts.spawn(async move {
            match TestClient::connect(options.clone()).await {
                Ok(client) => (ConnectOutcome::Accepted, Some(client)),
                Err(_) => (try_connect(options).await, None),
            }
        });
    }
    let mut held = Vec::new();
    let (mut accepted, mut unavailable, mut other) = (0, 0, Vec::new());
    while let Some(result) = attempts.join_next().await {
        match result? {
            (ConnectOutcome::Accepted, Some(client)) => {
                accepted += 1;
                held.push(client);
            }
            (ConnectOutcome::Refused(rumqttc::ConnectReturnCode::ServiceUnavailable), _) => {
                unavailable += 1
            }
            (outcome, _) => other.push(outcome),
        }
    }
    assert_eq!(
        (accepted, unavailable),
        (LIMIT, CLIENTS - LIMIT),
        "unexpected answers: {other:?}"
    );

    // Once the flood leaves, its slots are free again.
    for client in held {
        client.disconnect().await?;
    }
    drop(idle);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let outcome = try_connect(TestClient::tcp_options(
            &stack,
            "after-the-flood",
            Role::Agent,
        ))
        .await;
        if outcome == ConnectOutcome::Accepted {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots were not released: {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_silent_client_is_disconnected_after_one_and_a_half_keepalives() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut socket = tokio::net::TcpStream::connect(stack.mqtt_tcp_addr()).await?;
    let connect = Connect {
        keep_alive: 1,
        client_id: "silent".to_owned(),
        clean_start: true,
        properties: None,
    };
    let login = Login {
        username: "silent".to_owned(),
        password: stack.token("silent", Role::Agent),
    };
    let mut out = BytesMut::new();
    Packet::Connect(connect, None, Some(login)).write(&mut out, None)?;
    socket.write_all(&out).await?;

    // Read everything until the server closes the socket: a CONNACK, then a DISCONNECT 0x8D.
    let mut inbox = BytesMut::new();
    let closed = tokio::time::timeout(PATIENCE, async {
        while socket.read_buf(&mut inbox).await? > 0 {}
        anyhow::Ok(())
    })
    .await;
    assert!(closed.is_ok(), "the server kept a silent connection open");
    let mut packets = Vec::new();
    while let Ok(packet) = Packet::read(&mut inbox, None) {
        packets.push(packet);
    }
    assert!(
        matches!(packets.first(), Some(Packet::ConnAck(_))),
        "{packets:?}"
    );
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == DisconnectReasonCode::KeepAliveTimeout),
        "{packets:?}"
    );
    stack.shutdown().await;
    Ok(())
}
