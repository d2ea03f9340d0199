//! MQTT 5 framing byte by byte: exact packets over a raw socket after a real CONNECT with a
//! token, for the encodings the specification allows that rumqttc's client sends in one way
//! only, or never (short DISCONNECTs, AUTH, frames that end early).

use std::time::Duration;

use anyhow::bail;
use bytes::BytesMut;
use courtchat::Role;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, DisconnectReasonCode, LastWill, Login, Packet, PubAckReason,
};
use rumqttc::v5::mqttbytes::{Error as WireError, QoS};
use testkit::TestStack;
use testkit::mqtt::{PATIENCE, TestClientV5, filter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const QUIET: Duration = Duration::from_millis(300);

/// An MQTT 5 connection that writes the bytes a test names and reads what the server answers.
struct RawClient {
    socket: TcpStream,
    inbox: BytesMut,
}

impl RawClient {
    /// Connects as an agent with a valid token (and `will`, if any) and waits for CONNACK.
    async fn connect(
        stack: &TestStack,
        client_id: &str,
        will: Option<LastWill>,
    ) -> anyhow::Result<Self> {
        let socket = TcpStream::connect(stack.mqtt_tcp_addr()).await?;
        let connect = rumqttc::v5::mqttbytes::v5::Connect {
            keep_alive: 30,
            client_id: client_id.to_owned(),
            clean_start: true,
            properties: None,
        };
        let login = Login {
            username: client_id.to_owned(),
            password: stack.token(client_id, Role::Agent),
        };
        let mut out = BytesMut::new();
        Packet::Connect(connect, will, Some(login)).write(&mut out, None)?;
        let mut client = Self {
            socket,
            inbox: BytesMut::new(),
        };
        client.send(&out).await?;
        match client.next().await? {
            Some(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => Ok(client),
            other => bail!("expected a successful CONNACK, got {other:?}"),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.socket.write_all(bytes).await?;
        Ok(())
    }

    /// The next packet from the server; `None` once it has closed the connection. An error if
    /// it does neither within [`PATIENCE`].
    async fn next(&mut self) -> anyhow::Result<Option<Packet>> {
        loop {
            match Packet::read(&mut self.inbox, None) {
                Ok(packet) => return Ok(Some(packet)),
                Err(WireError::InsufficientBytes(_)) => {}
                Err(err) => bail!("the server sent something unreadable: {err}"),
            }
            match tokio::time::timeout(PATIENCE, self.socket.read_buf(&mut self.inbox)).await {
                Err(_) => bail!("the server neither answered nor closed the connection"),
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(_)) => {}
                Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok(None);
                }
                Ok(Err(err)) => return Err(err.into()),
            }
        }
    }

    /// Everything the server sends until it closes the connection.
    async fn until_closed(&mut self) -> anyhow::Result<Vec<Packet>> {
        let mut packets = Vec::new();
        while let Some(packet) = self.next().await? {
            packets.push(packet);
        }
        Ok(packets)
    }
}

/// The reason codes of the DISCONNECTs among `packets`, and anything else as a failure.
fn disconnect_codes(packets: &[Packet]) -> Vec<DisconnectReasonCode> {
    packets
        .iter()
        .map(|packet| match packet {
            Packet::Disconnect(disconnect) => disconnect.reason_code,
            other => panic!("expected only DISCONNECT, got {other:?}"),
        })
        .collect()
}

fn will(client_id: &str) -> LastWill {
    LastWill::new(
        format!("sandbox/wills/{client_id}"),
        "gone",
        QoS::AtMostOnce,
        false,
        None,
    )
}

/// A subscriber to every will of these tests.
async fn watcher(stack: &TestStack) -> anyhow::Result<TestClientV5> {
    let mut watcher =
        TestClientV5::connect(TestClientV5::tcp_options(stack, "watcher", Role::Agent)).await?;
    watcher
        .subscribe(vec![filter("sandbox/wills/+", QoS::AtMostOnce)])
        .await?;
    Ok(watcher)
}

#[tokio::test]
async fn a_two_byte_disconnect_is_a_normal_disconnect_without_the_will() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut watcher = watcher(&stack).await?;
    let mut client = RawClient::connect(&stack, "leaver", Some(will("leaver"))).await?;
    // MQTT 5 §3.14.2.1: remaining length 0 means reason 0x00 and no properties. This is what
    // rumqttc's own v5 client sends.
    client.send(&[0xE0, 0x00]).await?;
    assert_eq!(
        disconnect_codes(&client.until_closed().await?),
        vec![],
        "a normal disconnect is not answered"
    );
    assert!(
        watcher.publishes_within(QUIET).await.is_empty(),
        "no will after a normal disconnect"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_disconnect_with_a_reason_code_and_no_property_length_is_read() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut watcher = watcher(&stack).await?;
    // MQTT 5 §3.14.2.2.1: a missing property length means no properties.
    let rows = [
        ("normal", [0xE0, 0x01, 0x00], false),
        ("with-will", [0xE0, 0x01, 0x04], true),
    ];
    for (client_id, bytes, will_expected) in rows {
        let mut client = RawClient::connect(&stack, client_id, Some(will(client_id))).await?;
        client.send(&bytes).await?;
        assert_eq!(
            disconnect_codes(&client.until_closed().await?),
            vec![],
            "{client_id}: the server closes without a DISCONNECT of its own"
        );
        let wills: Vec<_> = watcher
            .publishes_within(QUIET)
            .await
            .into_iter()
            .map(|publish| publish.topic)
            .collect();
        let expected: Vec<bytes::Bytes> = if will_expected {
            vec![format!("sandbox/wills/{client_id}").into()]
        } else {
            vec![]
        };
        assert_eq!(wills, expected, "{client_id}");
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn complete_frames_in_one_read_are_all_handled_and_one_that_ends_early_is_malformed()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;

    // Two complete packets in one write: both are answered without waiting for more bytes.
    let mut client = RawClient::connect(&stack, "framer", None).await?;
    let mut valid = vec![0x32, 0x13, 0x00, 0x0E];
    valid.extend_from_slice(b"sandbox/fz-chk");
    valid.extend_from_slice(&[0x00, 0x09, 0x00]);
    valid.extend_from_slice(&[0xC0, 0x00]);
    client.send(&valid).await?;
    match client.next().await? {
        Some(Packet::PubAck(ack)) => {
            assert_eq!((ack.pkid, ack.reason), (9, PubAckReason::Success))
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert!(matches!(client.next().await?, Some(Packet::PingResp(_))));
    drop(client);

    // Frames that end exactly where their property length is due, each followed in the same
    // write by a PINGREQ: the frame is complete, so it is malformed, not "more to come".
    let mut publish = vec![0x32, 0x15, 0x00, 0x11];
    publish.extend_from_slice(b"cc/v1/open/fz-chk");
    publish.extend_from_slice(&[0x00, 0x09]);
    let subscribe = vec![0x82, 0x02, 0x00, 0x09];
    for (case, mut bytes) in [("PUBLISH", publish), ("SUBSCRIBE", subscribe)] {
        let mut client = RawClient::connect(&stack, "framer", None).await?;
        bytes.extend_from_slice(&[0xC0, 0x00]);
        client.send(&bytes).await?;
        assert_eq!(
            disconnect_codes(&client.until_closed().await?),
            vec![DisconnectReasonCode::MalformedPacket],
            "{case}"
        );
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn auth_is_a_protocol_error() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    // Re-authenticate with an empty property length, and the two-byte form (reason 0x00).
    let rows: [&[u8]; 2] = [&[0xF0, 0x02, 0x19, 0x00], &[0xF0, 0x00]];
    for bytes in rows {
        let mut client = RawClient::connect(&stack, "authenticator", None).await?;
        client.send(bytes).await?;
        assert_eq!(
            disconnect_codes(&client.until_closed().await?),
            vec![DisconnectReasonCode::ProtocolError],
            "{bytes:02x?}"
        );
    }
    stack.shutdown().await;
    Ok(())
}
