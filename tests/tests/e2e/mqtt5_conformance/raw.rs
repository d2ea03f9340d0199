//! An MQTT 5 client that sends exactly the packets a test names and returns every packet the
//! server sends, with nothing answered behind the test's back.

use std::time::Duration;

use anyhow::bail;
use bytes::BytesMut;
use courtchat::Role;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectProperties, ConnectReturnCode, Filter, LastWill, Login, Packet,
    PubComp, PubCompReason, PubRec, PubRecReason, PubRel, PubRelReason, Publish, Subscribe,
    SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::{Error as WireError, QoS};
use testkit::TestStack;
use testkit::mqtt::PATIENCE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a raw client's CONNECT says.
pub struct Hello {
    pub client_id: String,
    pub clean_start: bool,
    pub keep_alive: u16,
    pub properties: ConnectProperties,
    pub will: Option<LastWill>,
}

impl Hello {
    /// A clean start with keep alive 30 and no properties.
    pub fn new(client_id: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            clean_start: true,
            keep_alive: 30,
            properties: ConnectProperties::new(),
            will: None,
        }
    }
}

pub struct RawClient {
    socket: TcpStream,
    inbox: BytesMut,
    pub connack: ConnAck,
}

impl RawClient {
    /// Connects as an agent with a valid token and waits for a successful CONNACK.
    pub async fn connect(stack: &TestStack, hello: Hello) -> anyhow::Result<Self> {
        let socket = TcpStream::connect(stack.mqtt_tcp_addr()).await?;
        let login = Login {
            username: hello.client_id.clone(),
            password: stack.token(&hello.client_id, Role::Agent),
        };
        let connect = Connect {
            keep_alive: hello.keep_alive,
            client_id: hello.client_id,
            clean_start: hello.clean_start,
            properties: Some(hello.properties),
        };
        let mut client = Self {
            socket,
            inbox: BytesMut::new(),
            connack: ConnAck {
                session_present: false,
                code: ConnectReturnCode::UnspecifiedError,
                properties: None,
            },
        };
        client
            .send(Packet::Connect(connect, hello.will, Some(login)))
            .await?;
        match client.next().await? {
            Some(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => {
                client.connack = ack;
                Ok(client)
            }
            other => bail!("expected a successful CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: Packet) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        packet.write(&mut out, None)?;
        self.socket.write_all(&out).await?;
        Ok(())
    }

    pub async fn pubrec(&mut self, pkid: u16) -> anyhow::Result<()> {
        self.send(Packet::PubRec(PubRec {
            pkid,
            reason: PubRecReason::Success,
            properties: None,
        }))
        .await
    }

    pub async fn pubrel(&mut self, pkid: u16) -> anyhow::Result<()> {
        self.send(Packet::PubRel(PubRel {
            pkid,
            reason: PubRelReason::Success,
            properties: None,
        }))
        .await
    }

    pub async fn pubcomp(&mut self, pkid: u16) -> anyhow::Result<()> {
        self.send(Packet::PubComp(PubComp {
            pkid,
            reason: PubCompReason::Success,
            properties: None,
        }))
        .await
    }

    /// Subscribes to `filters` and returns the SUBACK's reason codes.
    pub async fn subscribe(
        &mut self,
        filters: Vec<Filter>,
    ) -> anyhow::Result<Vec<SubscribeReasonCode>> {
        self.send(Packet::Subscribe(Subscribe {
            pkid: 1,
            filters,
            properties: None,
        }))
        .await?;
        match self.next().await? {
            Some(Packet::SubAck(ack)) => Ok(ack.return_codes),
            other => bail!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes `publish` as it is (packet id, DUP flag and properties included).
    pub async fn publish(&mut self, publish: Publish) -> anyhow::Result<()> {
        self.send(Packet::Publish(publish)).await
    }

    /// The next packet from the server; `None` once it has closed the connection. An error if
    /// it does neither within [`PATIENCE`].
    pub async fn next(&mut self) -> anyhow::Result<Option<Packet>> {
        self.next_within(PATIENCE)
            .await?
            .map_or_else(|| bail!("the server neither answered nor closed"), Ok)
    }

    /// The next packet within `wait`: `Ok(None)` if nothing came, `Ok(Some(None))` if the
    /// server closed the connection.
    pub async fn next_within(&mut self, wait: Duration) -> anyhow::Result<Option<Option<Packet>>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match Packet::read(&mut self.inbox, None) {
                Ok(packet) => return Ok(Some(Some(packet))),
                Err(WireError::InsufficientBytes(_)) => {}
                Err(err) => bail!("the server sent something unreadable: {err}"),
            }
            match tokio::time::timeout_at(deadline, self.socket.read_buf(&mut self.inbox)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Ok(Some(None)),
                Ok(Ok(_)) => {}
                Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok(Some(None));
                }
                Ok(Err(err)) => return Err(err.into()),
            }
        }
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn next_publish(&mut self) -> anyhow::Result<Publish> {
        match self.next().await? {
            Some(Packet::Publish(publish)) => Ok(publish),
            other => bail!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Asserts that the server sends nothing within `quiet`.
    pub async fn assert_silent(&mut self, quiet: Duration, what: &str) -> anyhow::Result<()> {
        match self.next_within(quiet).await? {
            None => Ok(()),
            Some(packet) => bail!("{what}: expected nothing, got {packet:?}"),
        }
    }
}

/// A PUBLISH as a client sends it.
pub fn publish(topic: &str, qos: QoS, pkid: u16, payload: &str) -> Publish {
    let mut publish = Publish::new(topic, qos, payload.to_owned(), None);
    publish.pkid = pkid;
    publish
}
