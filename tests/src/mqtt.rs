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

/// Packets a client's event loop received, for the test to wait on.
struct Inbox<P>(mpsc::UnboundedReceiver<P>);

impl<P> Inbox<P> {
    /// The next packet `wanted` accepts, skipping others; an error if the connection closes or
    /// nothing matching arrives within [`PATIENCE`].
    async fn next_matching(&mut self, wanted: impl Fn(&P) -> bool) -> anyhow::Result<P> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.0.recv()).await {
                Err(_) => bail!("nothing matching arrived in time"),
                Ok(None) => bail!("the connection closed"),
                Ok(Some(packet)) if wanted(&packet) => return Ok(packet),
                Ok(Some(_)) => continue,
            }
        }
    }

    /// Every packet that arrives within `quiet`: for asserting that something did not come.
    async fn within(&mut self, quiet: Duration) -> Vec<P> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(Some(packet)) = tokio::time::timeout_at(deadline, self.0.recv()).await {
            seen.push(packet);
        }
        seen
    }
}

/// A connected MQTT 3.1.1 client.
pub struct TestClient {
    pub client: AsyncClient,
    /// The CONNACK's session-present flag.
    pub session_present: bool,
    incoming: Inbox<Packet>,
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
            incoming: Inbox(incoming),
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
        let packets = self.incoming.within(quiet).await;
        packets
            .into_iter()
            .filter_map(|packet| match packet {
                Packet::Publish(publish) => Some(publish),
                _ => None,
            })
            .collect()
    }

    async fn next_matching(&mut self, wanted: impl Fn(&Packet) -> bool) -> anyhow::Result<Packet> {
        self.incoming.next_matching(wanted).await
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
            Err(err) => {
                tracing::debug!(error = %err, "test client's connection ended");
                return;
            }
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

/// A connected MQTT 5 client (rumqttc v5), driven like [`TestClient`].
pub struct TestClientV5 {
    pub client: rumqttc::v5::AsyncClient,
    /// The CONNACK, with its properties.
    pub connack: v5::ConnAck,
    incoming: Inbox<v5::Packet>,
    driver: JoinHandle<()>,
}

use rumqttc::v5::mqttbytes::v5;

impl TestClientV5 {
    /// Options for an authenticated MQTT 5 connection over TCP.
    pub fn tcp_options(stack: &TestStack, client_id: &str, role: Role) -> rumqttc::v5::MqttOptions {
        let addr = stack.mqtt_tcp_addr();
        let mut options =
            rumqttc::v5::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_credentials(client_id, stack.token(client_id, role));
        options
    }

    /// Connects and waits for a successful CONNACK.
    pub async fn connect(options: rumqttc::v5::MqttOptions) -> anyhow::Result<Self> {
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 100);
        let first = tokio::time::timeout(PATIENCE, eventloop.poll())
            .await
            .context("no CONNACK in time")?
            .context("connection failed")?;
        let connack = match first {
            rumqttc::v5::Event::Incoming(v5::Packet::ConnAck(ack))
                if ack.code == v5::ConnectReturnCode::Success =>
            {
                ack
            }
            other => bail!("expected a successful CONNACK, got {other:?}"),
        };
        let (tx, incoming) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            loop {
                let packet = match eventloop.poll().await {
                    Ok(rumqttc::v5::Event::Incoming(packet)) => packet,
                    Ok(rumqttc::v5::Event::Outgoing(_)) => continue,
                    // rumqttc reports the server's DISCONNECT as an error; the tests want to see
                    // it as the packet it was.
                    Err(rumqttc::v5::ConnectionError::MqttState(
                        rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
                    )) => v5::Packet::Disconnect(v5::Disconnect::new(reason_code)),
                    Err(err) => {
                        tracing::debug!(error = %err, "test client's connection ended");
                        return;
                    }
                };
                let last = matches!(packet, v5::Packet::Disconnect(_));
                if tx.send(packet).is_err() || last {
                    return;
                }
            }
        });
        Ok(Self {
            client,
            connack,
            incoming: Inbox(incoming),
            driver,
        })
    }

    /// Subscribes with explicit options and returns the SUBACK's reason codes.
    pub async fn subscribe(
        &mut self,
        filters: Vec<v5::Filter>,
    ) -> anyhow::Result<Vec<v5::SubscribeReasonCode>> {
        self.client.subscribe_many(filters).await?;
        self.next_suback().await
    }

    /// Subscribes with SUBSCRIBE properties (a subscription identifier) and returns the
    /// SUBACK's reason codes.
    pub async fn subscribe_with_properties(
        &mut self,
        filters: Vec<v5::Filter>,
        properties: v5::SubscribeProperties,
    ) -> anyhow::Result<Vec<v5::SubscribeReasonCode>> {
        self.client
            .subscribe_many_with_properties(filters, properties)
            .await?;
        self.next_suback().await
    }

    async fn next_suback(&mut self) -> anyhow::Result<Vec<v5::SubscribeReasonCode>> {
        match self
            .next_matching(|p| matches!(p, v5::Packet::SubAck(_)))
            .await?
        {
            v5::Packet::SubAck(ack) => Ok(ack.return_codes),
            _ => unreachable!("next_matching returned a packet its predicate rejected"),
        }
    }

    pub async fn next_publish(&mut self) -> anyhow::Result<v5::Publish> {
        match self
            .next_matching(|p| matches!(p, v5::Packet::Publish(_)))
            .await?
        {
            v5::Packet::Publish(publish) => Ok(publish),
            _ => unreachable!("next_matching returned a packet its predicate rejected"),
        }
    }

    pub async fn next_puback(&mut self) -> anyhow::Result<v5::PubAck> {
        match self
            .next_matching(|p| matches!(p, v5::Packet::PubAck(_)))
            .await?
        {
            v5::Packet::PubAck(ack) => Ok(ack),
            _ => unreachable!("next_matching returned a packet its predicate rejected"),
        }
    }

    /// The next PUBREC (the server's answer to a QoS 2 publish of this client).
    pub async fn next_pubrec(&mut self) -> anyhow::Result<v5::PubRec> {
        match self
            .next_matching(|p| matches!(p, v5::Packet::PubRec(_)))
            .await?
        {
            v5::Packet::PubRec(rec) => Ok(rec),
            _ => unreachable!("next_matching returned a packet its predicate rejected"),
        }
    }

    /// The DISCONNECT the server sends before closing the connection.
    pub async fn next_disconnect(&mut self) -> anyhow::Result<v5::Disconnect> {
        match self
            .next_matching(|p| matches!(p, v5::Packet::Disconnect(_)))
            .await?
        {
            v5::Packet::Disconnect(disconnect) => Ok(disconnect),
            _ => unreachable!("next_matching returned a packet its predicate rejected"),
        }
    }

    /// Every PUBLISH that arrives within `quiet`.
    pub async fn publishes_within(&mut self, quiet: Duration) -> Vec<v5::Publish> {
        let packets = self.incoming.within(quiet).await;
        packets
            .into_iter()
            .filter_map(|packet| match packet {
                v5::Packet::Publish(publish) => Some(publish),
                _ => None,
            })
            .collect()
    }

    async fn next_matching(
        &mut self,
        wanted: impl Fn(&v5::Packet) -> bool,
    ) -> anyhow::Result<v5::Packet> {
        self.incoming.next_matching(wanted).await
    }

    /// Drops the connection without DISCONNECT.
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

/// A subscription filter with MQTT 5 options.
pub fn filter(path: &str, qos: rumqttc::v5::mqttbytes::QoS) -> v5::Filter {
    v5::Filter::new(path, qos)
}

/// Connects once with MQTT 5 and returns the CONNACK's reason code.
pub async fn try_connect_v5(
    options: rumqttc::v5::MqttOptions,
) -> anyhow::Result<v5::ConnectReturnCode> {
    let (_client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    match tokio::time::timeout(PATIENCE, eventloop.poll()).await? {
        Ok(rumqttc::v5::Event::Incoming(v5::Packet::ConnAck(ack))) => Ok(ack.code),
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => Ok(code),
        other => bail!("no CONNACK: {other:?}"),
    }
}
