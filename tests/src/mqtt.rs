//! MQTT test clients: rumqttc (v4 and v5) driven the way an application drives it, with the
//! event loop in its own task and incoming packets collected on a channel.
//!
//! Waits are bounded so that a broken server fails a test instead of hanging it; the bounds are
//! generous and never the thing a test asserts.

use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::TestStack;
use courtchat::Role;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A connected MQTT 3.1.1 client.
pub struct TestClient {
    pub client: AsyncClient,
    /// The CONNACK's session-present flag.
    pub session_present: bool,
    incoming: mpsc::UnboundedReceiver<Packet>,
    driver: JoinHandle<()>,
}

impl TestClient {
    /// Options for a plain TCP connection to `stack`, authenticated as `client_id` in `role`.
    pub fn tcp_options(stack: &TestStack, client_id: &str, role: Role) -> MqttOptions {
        let mut options = Self::anonymous_tcp_options(stack, client_id);
        options.set_credentials(client_id, stack.token(client_id, role));
        options
    }

    /// Options for an authenticated MQTT-over-TLS connection trusting `certificate`.
    pub fn tls_options(
        stack: &TestStack,
        certificate: &crate::TestCertificate,
        client_id: &str,
        role: Role,
    ) -> anyhow::Result<MqttOptions> {
        let addr = stack
            .mqtt_tls_addr()
            .context("the stack has no TLS listener")?;
        let mut options = MqttOptions::new(client_id, "127.0.0.1", addr.port());
        options.set_transport(Transport::Tls(rumqttc::TlsConfiguration::Rustls(
            certificate.client_config()?,
        )));
        options.set_keep_alive(Duration::from_secs(30));
        options.set_credentials(client_id, stack.token(client_id, role));
        Ok(options)
    }

    /// Options for an authenticated secure-WebSocket connection trusting `certificate`.
    pub fn wss_options(
        stack: &TestStack,
        certificate: &crate::TestCertificate,
        client_id: &str,
        role: Role,
    ) -> anyhow::Result<MqttOptions> {
        let url = stack
            .mqtt_wss_url()
            .context("the stack has no secure WebSocket listener")?;
        let mut options = MqttOptions::new(client_id, url, 443);
        options.set_transport(Transport::Wss(rumqttc::TlsConfiguration::Rustls(
            certificate.client_config()?,
        )));
        options.set_keep_alive(Duration::from_secs(30));
        options.set_credentials(client_id, stack.token(client_id, role));
        Ok(options)
    }

    /// Options for a plain TCP connection without credentials.
    pub fn anonymous_tcp_options(stack: &TestStack, client_id: &str) -> MqttOptions {
        let addr = stack.mqtt_tcp_addr();
        let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    /// Options for an authenticated WebSocket connection (rumqttc needs the whole URL as host).
    pub fn ws_options(stack: &TestStack, client_id: &str, role: Role) -> MqttOptions {
        let addr = stack.mqtt_ws_url();
        let mut options = MqttOptions::new(client_id, addr, stack.mqtt_tcp_addr().port());
        options.set_transport(Transport::Ws);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_credentials(client_id, stack.token(client_id, role));
        options
    }

    /// Connects and waits for a successful CONNACK.
    pub async fn connect(options: MqttOptions) -> anyhow::Result<Self> {
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let first = tokio::time::timeout(PATIENCE, eventloop.poll())
            .await
            .context("no CONNACK in time")?
            .context("connection failed")?;
        let session_present = match first {
            Event::Incoming(Packet::ConnAck(ack))
                if ack.code == rumqttc::ConnectReturnCode::Success =>
            {
                ack.session_present
            }
            other => bail!("expected a successful CONNACK, got {other:?}"),
        };
        let (tx, incoming) = mpsc::unbounded_channel();
        let driver = tokio::spawn(drive(eventloop, tx));
        Ok(Self {
            client,
            session_present,
            incoming,
            driver,
        })
    }

    /// Subscribes and waits for the SUBACK, returning its return codes.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: QoS,
    ) -> anyhow::Result<Vec<rumqttc::SubscribeReasonCode>> {
        self.client.subscribe(filter, qos).await?;
        match self
            .next_matching(|p| matches!(p, Packet::SubAck(_)))
            .await?
        {
            Packet::SubAck(ack) => Ok(ack.return_codes),
            _ => unreachable!("next_matching returned a packet its predicate rejected"),
        }
    }

    /// The next PUBLISH delivered to this client.
    pub async fn next_publish(&mut self) -> anyhow::Result<Publish> {
        match self
            .next_matching(|p| matches!(p, Packet::Publish(_)))
            .await?
        {
            Packet::Publish(publish) => Ok(publish),
            _ => unreachable!("next_matching returned a packet its predicate rejected"),
        }
    }

    /// Waits for the next PUBACK (the server has taken a QoS 1 publish of this client).
    pub async fn next_puback(&mut self) -> anyhow::Result<u16> {
        match self
            .next_matching(|p| matches!(p, Packet::PubAck(_)))
            .await?
        {
            Packet::PubAck(ack) => Ok(ack.pkid),
            _ => unreachable!("next_matching returned a packet its predicate rejected"),
        }
    }

    /// Waits `quiet` and returns every PUBLISH that arrived meanwhile: for asserting that
    /// something was *not* delivered.
    pub async fn publishes_within(&mut self, quiet: Duration) -> Vec<Publish> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(Some(packet)) = tokio::time::timeout_at(deadline, self.incoming.recv()).await {
            if let Packet::Publish(publish) = packet {
                seen.push(publish);
            }
        }
        seen
    }

    async fn next_matching(&mut self, wanted: impl Fn(&Packet) -> bool) -> anyhow::Result<Packet> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Err(_) => bail!("nothing matching arrived in time"),
                Ok(None) => bail!("the connection closed"),
                Ok(Some(packet)) if wanted(&packet) => return Ok(packet),
                Ok(Some(_)) => continue,
            }
        }
    }

    /// Drops the connection without DISCONNECT, as a crashed kiosk would.
    pub fn kill(self) {
        self.driver.abort();
    }

    /// Sends DISCONNECT and waits for the event loop to finish.
    pub async fn disconnect(self) -> anyhow::Result<()> {
        self.client.disconnect().await?;
        let _ = tokio::time::timeout(PATIENCE, self.driver).await;
        Ok(())
    }
}

async fn drive(mut eventloop: EventLoop, incoming: mpsc::UnboundedSender<Packet>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(packet)) => {
                if incoming.send(packet).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(_)) => {}
            // The test decides what a closed connection means; never reconnect behind its back.
            Err(_) => return,
        }
    }
}

/// How a server answered a CONNECT.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectOutcome {
    Accepted,
    /// A CONNACK with this return code.
    Refused(rumqttc::ConnectReturnCode),
    /// No CONNACK: the socket was closed or the connection failed otherwise.
    NoConnAck(String),
}

/// Connects once, reports the server's answer and drops the connection.
pub async fn try_connect(options: MqttOptions) -> ConnectOutcome {
    let (_client, mut eventloop) = AsyncClient::new(options, 10);
    match tokio::time::timeout(PATIENCE, eventloop.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack))))
            if ack.code == rumqttc::ConnectReturnCode::Success =>
        {
            ConnectOutcome::Accepted
        }
        Ok(Err(rumqttc::ConnectionError::ConnectionRefused(code))) => ConnectOutcome::Refused(code),
        Ok(other) => ConnectOutcome::NoConnAck(format!("{other:?}")),
        Err(_) => ConnectOutcome::NoConnAck("timed out".to_owned()),
    }
}
