//! The MQTT listeners as clients see them: rumqttc over TCP and WebSocket against the interim
//! gateway (MQTT 3.1.1; see the README's "MQTT support today").

use std::time::Duration;

use courtchat::Role;
use rumqttc::{ConnectReturnCode, LastWill, QoS, SubscribeReasonCode};
use testkit::TestStack;
use testkit::mqtt::{ConnectOutcome, TestClient, try_connect};
use tokio::io::AsyncWriteExt;

/// Long enough for a message that is going to arrive to arrive; used only to assert absence.
const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn tcp_and_websocket_clients_share_one_router() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut over_ws =
        TestClient::connect(TestClient::ws_options(&stack, "dashboard-1", Role::Agent)).await?;
    let mut over_tcp =
        TestClient::connect(TestClient::tcp_options(&stack, "kiosk-1", Role::Agent)).await?;
    over_ws
        .subscribe("sandbox/lobby/+", QoS::AtLeastOnce)
        .await?;
    over_tcp
        .subscribe("sandbox/lobby/replies", QoS::AtLeastOnce)
        .await?;

    over_tcp
        .client
        .publish(
            "sandbox/lobby/questions",
            QoS::AtLeastOnce,
            false,
            "from tcp",
        )
        .await?;
    let got = over_ws.next_publish().await?;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_ref()),
        ("sandbox/lobby/questions", &b"from tcp"[..])
    );

    over_ws
        .client
        .publish("sandbox/lobby/replies", QoS::AtMostOnce, false, "from ws")
        .await?;
    assert_eq!(over_tcp.next_publish().await?.payload.as_ref(), b"from ws");
    // The WebSocket client's own wildcard subscription sees its publish too (no-local is v5).
    assert_eq!(over_ws.next_publish().await?.payload.as_ref(), b"from ws");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn qos_two_publish_completes_and_is_delivered_once() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut subscriber =
        TestClient::connect(TestClient::tcp_options(&stack, "sub", Role::Agent)).await?;
    subscriber.subscribe("sandbox/q2", QoS::ExactlyOnce).await?;
    let publisher =
        TestClient::connect(TestClient::tcp_options(&stack, "pub", Role::Agent)).await?;
    publisher
        .client
        .publish("sandbox/q2", QoS::ExactlyOnce, false, "once")
        .await?;
    let delivered = subscriber.next_publish().await?;
    assert_eq!(
        (delivered.qos, delivered.payload.as_ref()),
        (QoS::ExactlyOnce, &b"once"[..])
    );
    assert!(subscriber.publishes_within(QUIET).await.is_empty());
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn subscriptions_are_granted_as_asked_and_reserved_filters_refused() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut client =
        TestClient::connect(TestClient::tcp_options(&stack, "granted", Role::Agent)).await?;
    let rows = [
        (
            "sandbox/q0",
            QoS::AtMostOnce,
            SubscribeReasonCode::Success(QoS::AtMostOnce),
        ),
        (
            "sandbox/q1",
            QoS::AtLeastOnce,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
        ),
        (
            "sandbox/q2",
            QoS::ExactlyOnce,
            SubscribeReasonCode::Success(QoS::ExactlyOnce),
        ),
        ("$SYS/#", QoS::AtMostOnce, SubscribeReasonCode::Failure),
        // Shared subscriptions are offered outside `cc/` only.
        (
            "$share/g/cc/v1/queue",
            QoS::AtMostOnce,
            SubscribeReasonCode::Failure,
        ),
    ];
    for (filter, qos, expected) in rows {
        assert_eq!(
            client.subscribe(filter, qos).await?,
            vec![expected],
            "{filter}"
        );
    }
    // The connection survives refused filters.
    client
        .client
        .publish("sandbox/q1", QoS::AtLeastOnce, false, "still here")
        .await?;
    assert_eq!(client.next_publish().await?.payload.as_ref(), b"still here");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn delivery_qos_is_the_lower_of_published_and_granted() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut at_most_once =
        TestClient::connect(TestClient::tcp_options(&stack, "sub-q0", Role::Agent)).await?;
    let mut at_least_once =
        TestClient::connect(TestClient::tcp_options(&stack, "sub-q1", Role::Agent)).await?;
    at_most_once
        .subscribe("sandbox/qos", QoS::AtMostOnce)
        .await?;
    at_least_once
        .subscribe("sandbox/qos", QoS::AtLeastOnce)
        .await?;
    let publisher =
        TestClient::connect(TestClient::tcp_options(&stack, "pub", Role::Agent)).await?;
    for (published, to_q0, to_q1) in [
        (QoS::AtMostOnce, QoS::AtMostOnce, QoS::AtMostOnce),
        (QoS::AtLeastOnce, QoS::AtMostOnce, QoS::AtLeastOnce),
        (QoS::ExactlyOnce, QoS::AtMostOnce, QoS::AtLeastOnce),
    ] {
        publisher
            .client
            .publish("sandbox/qos", published, false, "m")
            .await?;
        assert_eq!(
            at_most_once.next_publish().await?.qos,
            to_q0,
            "published {published:?}"
        );
        assert_eq!(
            at_least_once.next_publish().await?.qos,
            to_q1,
            "published {published:?}"
        );
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn retained_messages_reach_later_subscribers() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let publisher =
        TestClient::connect(TestClient::tcp_options(&stack, "retainer", Role::Agent)).await?;
    publisher
        .client
        .publish("sandbox/desk/status", QoS::AtLeastOnce, true, "open")
        .await?;
    // Publish a QoS 1 marker and wait for it, so the retained publish has been routed.
    let mut probe =
        TestClient::connect(TestClient::tcp_options(&stack, "probe", Role::Agent)).await?;
    probe
        .subscribe("sandbox/desk/marker", QoS::AtMostOnce)
        .await?;
    publisher
        .client
        .publish("sandbox/desk/marker", QoS::AtLeastOnce, false, "")
        .await?;
    probe.next_publish().await?;

    let mut late =
        TestClient::connect(TestClient::tcp_options(&stack, "late", Role::Agent)).await?;
    late.subscribe("sandbox/desk/status", QoS::AtMostOnce)
        .await?;
    let retained = late.next_publish().await?;
    assert!(retained.retain);
    assert_eq!(retained.payload.as_ref(), b"open");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn will_is_published_on_abrupt_loss_and_not_on_disconnect() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut watcher =
        TestClient::connect(TestClient::tcp_options(&stack, "watcher", Role::Agent)).await?;
    watcher
        .subscribe("sandbox/presence/#", QoS::AtMostOnce)
        .await?;

    let mut crashing = TestClient::tcp_options(&stack, "kiosk-crash", Role::Agent);
    crashing.set_last_will(LastWill::new(
        "sandbox/presence/kiosk-crash",
        "gone",
        QoS::AtMostOnce,
        false,
    ));
    TestClient::connect(crashing).await?.kill();
    let will = watcher.next_publish().await?;
    assert_eq!(
        (will.topic.as_str(), will.payload.as_ref()),
        ("sandbox/presence/kiosk-crash", &b"gone"[..])
    );

    let mut polite = TestClient::tcp_options(&stack, "kiosk-polite", Role::Agent);
    polite.set_last_will(LastWill::new(
        "sandbox/presence/kiosk-polite",
        "gone",
        QoS::AtMostOnce,
        false,
    ));
    TestClient::connect(polite).await?.disconnect().await?;
    assert!(
        watcher.publishes_within(QUIET).await.is_empty(),
        "a will after DISCONNECT"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_second_connect_with_the_same_id_takes_over() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut first =
        TestClient::connect(TestClient::tcp_options(&stack, "agent-7", Role::Agent)).await?;
    first.subscribe("sandbox/t", QoS::AtMostOnce).await?;
    let mut second =
        TestClient::connect(TestClient::tcp_options(&stack, "agent-7", Role::Agent)).await?;
    second.subscribe("sandbox/t", QoS::AtMostOnce).await?;
    second
        .client
        .publish("sandbox/t", QoS::AtLeastOnce, false, "x")
        .await?;
    assert_eq!(second.next_publish().await?.payload.as_ref(), b"x");
    assert!(
        first.next_publish().await.is_err(),
        "the first connection should have been closed"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn refusals_are_connacks_not_dropped_sockets() -> anyhow::Result<()> {
    let stack = TestStack::start_with(testkit::TestDatabase::sqlite()?, |config| {
        config.mqtt.max_connections = 1;
        // The in-process pipeline would hold a connection of its own.
        config.bridge.in_process = false;
    })
    .await?;

    let rows = [
        (
            "sandbox/a/b",
            ConnectOutcome::Refused(ConnectReturnCode::BadClientId),
        ),
        (
            "a+b",
            ConnectOutcome::Refused(ConnectReturnCode::BadClientId),
        ),
        ("#", ConnectOutcome::Refused(ConnectReturnCode::BadClientId)),
        (
            "$sys",
            ConnectOutcome::Refused(ConnectReturnCode::BadClientId),
        ),
    ];
    for (client_id, expected) in rows {
        assert_eq!(
            try_connect(TestClient::tcp_options(&stack, client_id, Role::Agent)).await,
            expected,
            "{client_id}"
        );
    }
    let long_id = "x".repeat(129);
    assert_eq!(
        try_connect(TestClient::tcp_options(&stack, &long_id, Role::Agent)).await,
        ConnectOutcome::Refused(ConnectReturnCode::BadClientId)
    );

    // The one permitted connection is taken; the next is told the server is unavailable.
    let holder =
        TestClient::connect(TestClient::tcp_options(&stack, "holder", Role::Agent)).await?;
    assert_eq!(
        try_connect(TestClient::tcp_options(&stack, "one-too-many", Role::Agent)).await,
        ConnectOutcome::Refused(ConnectReturnCode::ServiceUnavailable)
    );
    holder.disconnect().await?;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn mqtt_3_1_clients_get_unacceptable_protocol_version() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut socket = tokio::net::TcpStream::connect(stack.mqtt_tcp_addr()).await?;
    // MQTT 3.1: protocol name "MQIsdp", level 3.
    socket
        .write_all(&[
            0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 0,
        ])
        .await?;
    let mut connack = [0u8; 4];
    tokio::io::AsyncReadExt::read_exact(&mut socket, &mut connack).await?;
    assert_eq!(
        connack,
        [0x20, 2, 0, 1],
        "CONNACK 0x01: unacceptable protocol version"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn idle_sockets_do_not_delay_other_clients() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    // A half-open TCP socket that never sends CONNECT, a WebSocket socket that never finishes its
    // handshake, and a socket that sent half a CONNECT.
    let _silent = tokio::net::TcpStream::connect(stack.mqtt_tcp_addr()).await?;
    let ws_addr = stack
        .mqtt_ws_url()
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut stalled_ws = tokio::net::TcpStream::connect(&ws_addr).await?;
    stalled_ws
        .write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")
        .await?;
    let mut partial = tokio::net::TcpStream::connect(stack.mqtt_tcp_addr()).await?;
    partial.write_all(&[0x10, 20, 0, 4, b'M']).await?;

    assert_eq!(
        try_connect(TestClient::tcp_options(
            &stack,
            "after-idle-tcp",
            Role::Agent
        ))
        .await,
        ConnectOutcome::Accepted
    );
    assert_eq!(
        try_connect(TestClient::ws_options(&stack, "after-idle-ws", Role::Agent)).await,
        ConnectOutcome::Accepted
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn malformed_and_oversize_packets_close_only_their_connection() -> anyhow::Result<()> {
    let stack = TestStack::start_with(testkit::TestDatabase::sqlite()?, |config| {
        config.mqtt.max_packet_size = 4096
    })
    .await?;
    let mut bystander =
        TestClient::connect(TestClient::tcp_options(&stack, "bystander", Role::Agent)).await?;
    bystander.subscribe("sandbox/ok", QoS::AtMostOnce).await?;

    let offenders: [&[u8]; 3] = [
        // Reserved packet type 0.
        &[0x00, 0x00],
        // A remaining length that never terminates.
        &[0x10, 0xff, 0xff, 0xff, 0xff, 0x7f],
        // A PUBLISH announcing 1 MB, over the 4 KiB limit.
        &[0x30, 0x80, 0x80, 0x40],
    ];
    for bytes in offenders {
        let mut socket = tokio::net::TcpStream::connect(stack.mqtt_tcp_addr()).await?;
        socket.write_all(bytes).await?;
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(
            testkit::mqtt::PATIENCE,
            tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut sink),
        )
        .await;
        assert!(
            closed.is_ok(),
            "the server kept a connection open after {bytes:?}"
        );
    }

    // An oversize PUBLISH from a connected client closes that client only.
    let offender =
        TestClient::connect(TestClient::tcp_options(&stack, "offender", Role::Agent)).await?;
    offender
        .client
        .publish("sandbox/ok", QoS::AtMostOnce, false, vec![0u8; 8192])
        .await?;
    bystander
        .client
        .publish("sandbox/ok", QoS::AtLeastOnce, false, "fine")
        .await?;
    assert_eq!(bystander.next_publish().await?.payload.as_ref(), b"fine");
    assert_eq!(
        try_connect(TestClient::tcp_options(&stack, "newcomer", Role::Agent)).await,
        ConnectOutcome::Accepted
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn keepalive_zero_is_allowed() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut options = TestClient::tcp_options(&stack, "no-keepalive", Role::Agent);
    options.set_keep_alive(Duration::ZERO);
    let mut client = TestClient::connect(options).await?;
    client.subscribe("sandbox/k", QoS::AtMostOnce).await?;
    client
        .client
        .publish("sandbox/k", QoS::AtLeastOnce, false, "alive")
        .await?;
    assert_eq!(client.next_publish().await?.payload.as_ref(), b"alive");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn persistent_sessions_keep_subscriptions_across_reconnects() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let persistent = || {
        let mut options = TestClient::tcp_options(&stack, "agent-persistent", Role::Agent);
        options.set_clean_session(false);
        options
    };
    let mut first = TestClient::connect(persistent()).await?;
    assert!(!first.session_present, "a new session is not present");
    first
        .subscribe("sandbox/queue/new", QoS::AtLeastOnce)
        .await?;
    first.disconnect().await?;

    let mut again = TestClient::connect(persistent()).await?;
    assert!(again.session_present, "the session should have been kept");
    let publisher = TestClient::connect(TestClient::tcp_options(
        &stack,
        "queue-publisher",
        Role::Agent,
    ))
    .await?;
    publisher
        .client
        .publish("sandbox/queue/new", QoS::AtLeastOnce, false, "session 42")
        .await?;
    assert_eq!(
        again.next_publish().await?.payload.as_ref(),
        b"session 42",
        "subscription not kept"
    );

    // A clean session discards it.
    again.disconnect().await?;
    let mut clean = TestClient::tcp_options(&stack, "agent-persistent", Role::Agent);
    clean.set_clean_session(true);
    assert!(!TestClient::connect(clean).await?.session_present);
    stack.shutdown().await;
    Ok(())
}

/// Sends a WebSocket upgrade request and returns the HTTP status code of the answer.
async fn upgrade_status(
    stack: &TestStack,
    path: &str,
    protocol: Option<&str>,
    origin: Option<&str>,
) -> anyhow::Result<u16> {
    let host = stack
        .mqtt_ws_url()
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut socket = tokio::net::TcpStream::connect(&host).await?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    if let Some(protocol) = protocol {
        request.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    if let Some(origin) = origin {
        request.push_str(&format!("Origin: {origin}\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).await?;
    let mut response = vec![0u8; 256];
    let n = tokio::time::timeout(
        testkit::mqtt::PATIENCE,
        tokio::io::AsyncReadExt::read(&mut socket, &mut response),
    )
    .await??;
    let status_line = String::from_utf8_lossy(&response[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok(status_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .parse()?)
}

#[tokio::test]
async fn websocket_handshakes_check_path_subprotocol_and_origin() -> anyhow::Result<()> {
    let stack = TestStack::start_with(testkit::TestDatabase::sqlite()?, |config| {
        config.mqtt.websocket.allowed_origins = vec!["https://desk.example.org".to_owned()];
    })
    .await?;
    // The desk and kiosk pages this server serves are allowed besides the configured origins.
    let pages = stack.http_url("").trim_end_matches('/').to_owned();
    let port = pages.rsplit(':').next().unwrap_or_default();
    let pages_by_name = format!("http://localhost:{port}");
    let rows = [
        ("/mqtt", Some("mqtt"), None, 101),
        ("/mqtt", Some("mqtt"), Some("https://desk.example.org"), 101),
        ("/mqtt", Some("mqtt"), Some(pages.as_str()), 101),
        ("/mqtt", Some("mqtt"), Some(pages_by_name.as_str()), 101),
        ("/mqtt", Some("mqtt"), Some("http://127.0.0.1:1"), 403),
        ("/mqtt", Some("mqtt"), Some("https://evil.example"), 403),
        ("/mqtt", None, None, 400),
        ("/other", Some("mqtt"), None, 404),
    ];
    for (path, protocol, origin, expected) in rows {
        assert_eq!(
            upgrade_status(&stack, path, protocol, origin).await?,
            expected,
            "{path} {protocol:?} {origin:?}"
        );
    }
    stack.shutdown().await;
    Ok(())
}
