//! MQTT over TLS and over secure WebSocket, with a certificate generated for the test.

use courtchat::Role;
use rumqttc::QoS;
use testkit::mqtt::{ConnectOutcome, TestClient, try_connect};
use testkit::{TestCertificate, TestDatabase, TestStack};
use tokio::io::AsyncWriteExt;

async fn stack_with_tls() -> anyhow::Result<(TestStack, TestCertificate)> {
    let certificate = TestCertificate::generate()?;
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        certificate.configure(config)
    })
    .await?;
    Ok((stack, certificate))
}

#[tokio::test]
async fn all_four_listeners_share_one_broker() -> anyhow::Result<()> {
    let (stack, certificate) = stack_with_tls().await?;
    let mut over_tls = TestClient::connect(TestClient::tls_options(
        &stack,
        &certificate,
        "kiosk-tls",
        Role::Agent,
    )?)
    .await?;
    let mut over_wss = TestClient::connect(TestClient::wss_options(
        &stack,
        &certificate,
        "dash-wss",
        Role::Agent,
    )?)
    .await?;
    let mut over_ws =
        TestClient::connect(TestClient::ws_options(&stack, "dash-ws", Role::Agent)).await?;
    let over_tcp =
        TestClient::connect(TestClient::tcp_options(&stack, "kiosk-tcp", Role::Agent)).await?;
    for client in [&mut over_tls, &mut over_wss, &mut over_ws] {
        client.subscribe("sandbox/all", QoS::AtMostOnce).await?;
    }
    over_tcp
        .client
        .publish("sandbox/all", QoS::AtLeastOnce, false, "everyone")
        .await?;
    for client in [&mut over_tls, &mut over_wss, &mut over_ws] {
        assert_eq!(client.next_publish().await?.payload.as_ref(), b"everyone");
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn tls_listeners_authenticate_like_the_others() -> anyhow::Result<()> {
    let (stack, certificate) = stack_with_tls().await?;
    let mut no_token = TestClient::tls_options(&stack, &certificate, "kiosk-1", Role::Applicant)?;
    no_token.set_credentials("kiosk-1", "forged");
    assert_eq!(
        try_connect(no_token).await,
        ConnectOutcome::Refused(rumqttc::ConnectReturnCode::BadUserNamePassword)
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_stalled_tls_handshake_does_not_delay_others() -> anyhow::Result<()> {
    let (stack, certificate) = stack_with_tls().await?;
    let tls_addr = stack.mqtt_tls_addr().expect("TLS is configured");
    // One socket that never says anything, one that sends plain MQTT to the TLS port.
    let _silent = tokio::net::TcpStream::connect(tls_addr).await?;
    let mut plain = tokio::net::TcpStream::connect(tls_addr).await?;
    plain
        .write_all(&[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0])
        .await?;
    assert_eq!(
        try_connect(TestClient::tls_options(
            &stack,
            &certificate,
            "after-stall",
            Role::Agent
        )?)
        .await,
        ConnectOutcome::Accepted
    );
    assert_eq!(
        try_connect(TestClient::wss_options(
            &stack,
            &certificate,
            "after-stall-wss",
            Role::Agent
        )?)
        .await,
        ConnectOutcome::Accepted
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn without_a_certificate_there_are_no_tls_listeners() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    assert!(stack.mqtt_tls_addr().is_none() && stack.mqtt_wss_url().is_none());
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn mqtt5_clients_connect_over_every_listener() -> anyhow::Result<()> {
    use rumqttc::v5::mqttbytes::QoS as V5QoS;
    use testkit::mqtt::{TestClientV5, filter};

    let (stack, certificate) = stack_with_tls().await?;
    let tls_config = || {
        rumqttc::TlsConfiguration::Rustls(certificate.client_config().expect("a client TLS config"))
    };
    let tls_addr = stack.mqtt_tls_addr().expect("TLS is configured");
    let transports = [
        (
            "tcp",
            stack.mqtt_tcp_addr().ip().to_string(),
            stack.mqtt_tcp_addr().port(),
            rumqttc::Transport::Tcp,
        ),
        (
            "tls",
            "127.0.0.1".to_owned(),
            tls_addr.port(),
            rumqttc::Transport::Tls(tls_config()),
        ),
        ("ws", stack.mqtt_ws_url(), 0, rumqttc::Transport::Ws),
        (
            "wss",
            stack.mqtt_wss_url().expect("WSS is configured"),
            0,
            rumqttc::Transport::Wss(tls_config()),
        ),
    ];
    let mut clients = Vec::new();
    for (kind, host, port, transport) in transports {
        let client_id = format!("v5-{kind}");
        let mut options = rumqttc::v5::MqttOptions::new(&client_id, host, port);
        options.set_transport(transport);
        options.set_credentials(&client_id, stack.token(&client_id, Role::Agent));
        let mut client = TestClientV5::connect(options).await?;
        client
            .subscribe(vec![filter("sandbox/v5-all", V5QoS::AtLeastOnce)])
            .await?;
        clients.push(client);
    }
    clients[0]
        .client
        .publish(
            "sandbox/v5-all",
            V5QoS::AtLeastOnce,
            false,
            "to every listener",
        )
        .await?;
    for client in &mut clients {
        let publish = client.next_publish().await?;
        assert_eq!(
            (publish.payload.as_ref(), publish.qos),
            (&b"to every listener"[..], V5QoS::AtLeastOnce)
        );
    }
    stack.shutdown().await;
    Ok(())
}
