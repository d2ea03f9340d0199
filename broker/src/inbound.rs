//! What a connected client's packet asks of its connection, decided from the packet alone:
//! the checks that need no session, no authorization and no I/O. `connection` acts on the
//! verdict; `fuzzing` runs the same function over arbitrary bytes.

use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet, Publish, Subscribe, Unsubscribe};
use rumqttc::v5::mqttbytes::valid_topic;

use crate::codec::CodecError;

/// One packet from a connected client, as the connection is to handle it.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A PUBLISH whose topic name is valid (UTF-8, not empty, no wildcards) and that carries no
    /// property the gateway refuses. Authorization, reserved (`$`) topics included, comes next.
    Publish {
        publish: Publish,
        topic: String,
    },
    /// The client acknowledges our QoS 1 delivery with this packet id.
    PubAck(u16),
    /// The second step of a QoS 2 publish from the client: answered with PUBCOMP.
    PubRel(u16),
    /// PUBREC or PUBCOMP: the gateway delivers at most QoS 1, so it never starts a QoS 2 flow
    /// towards a client, and a stray acknowledgement is harmless.
    Ignored,
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    PingReq,
    /// The client's DISCONNECT: whether its will is to be published, and the session expiry
    /// interval it sets, if it sets one.
    Disconnect {
        with_will: bool,
        session_expiry: Option<u32>,
    },
    /// The connection ends; an MQTT 5 client is told why.
    Close {
        reason: &'static str,
        code: DisconnectReasonCode,
    },
}

impl Inbound {
    /// Whether the connection handles it at once even while earlier packets of the client are
    /// held (see `Session::relay`): acknowledgements of our deliveries and pings keep the
    /// deliveries to the client flowing.
    pub(crate) fn jumps_queue(&self) -> bool {
        matches!(
            self,
            Inbound::PubAck(_) | Inbound::Ignored | Inbound::PingReq
        )
    }
}

/// Screens one decoded packet.
pub(crate) fn screen(packet: Packet) -> Inbound {
    match packet {
        Packet::Publish(publish) => screen_publish(publish),
        Packet::PubAck(ack) => Inbound::PubAck(ack.pkid),
        Packet::PubRel(rel) => Inbound::PubRel(rel.pkid),
        Packet::PubRec(_) | Packet::PubComp(_) => Inbound::Ignored,
        Packet::Subscribe(subscribe) => Inbound::Subscribe(subscribe),
        Packet::Unsubscribe(unsubscribe) => Inbound::Unsubscribe(unsubscribe),
        Packet::PingReq(_) => Inbound::PingReq,
        Packet::Disconnect(disconnect) => Inbound::Disconnect {
            // MQTT 5 §3.1.2.5, §3.14.4: only a normal disconnection (0x00, also 3.1.1's only
            // kind) discards the will; 0x04 asks for it, and so does any error the client
            // reports.
            with_will: disconnect.reason_code != DisconnectReasonCode::NormalDisconnection,
            session_expiry: disconnect
                .properties
                .and_then(|p| p.session_expiry_interval),
        },
        Packet::Auth(_) => close(
            "enhanced authentication is not supported",
            DisconnectReasonCode::ProtocolError,
        ),
        Packet::Connect(..) => close("second CONNECT", DisconnectReasonCode::ProtocolError),
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp(_) => {
            close("unexpected packet", DisconnectReasonCode::ProtocolError)
        }
    }
}

fn screen_publish(publish: Publish) -> Inbound {
    // MQTT §1.5.4: a topic name that is not UTF-8 makes the packet malformed.
    let Ok(topic) = String::from_utf8(publish.topic.to_vec()) else {
        return close("topic is not UTF-8", DisconnectReasonCode::MalformedPacket);
    };
    if !is_topic_name(&topic) {
        // A wildcard in a topic name is a protocol violation (§4.7).
        return close("invalid topic", DisconnectReasonCode::TopicNameInvalid);
    }
    if let Some(props) = &publish.properties {
        // No topic alias maximum is granted in CONNACK (it is 0), so any alias is invalid.
        if props.topic_alias.is_some() {
            return close("topic alias", DisconnectReasonCode::TopicAliasInvalid);
        }
        if !props.subscription_identifiers.is_empty() {
            return close(
                "subscription identifier in PUBLISH",
                DisconnectReasonCode::ProtocolError,
            );
        }
    }
    Inbound::Publish { publish, topic }
}

fn close(reason: &'static str, code: DisconnectReasonCode) -> Inbound {
    Inbound::Close { reason, code }
}

/// How a packet that could not be decoded ends the connection.
pub(crate) fn undecodable(err: &CodecError) -> (&'static str, DisconnectReasonCode) {
    match err {
        CodecError::TooLarge(_) => ("packet too large", DisconnectReasonCode::PacketTooLarge),
        CodecError::Unsupported(_) => (
            "enhanced authentication is not supported",
            DisconnectReasonCode::ProtocolError,
        ),
        CodecError::Unexpected(_) | CodecError::NotConnect => {
            ("unexpected packet", DisconnectReasonCode::ProtocolError)
        }
        CodecError::Malformed(_) | CodecError::UnsupportedVersion(_) => {
            ("malformed packet", DisconnectReasonCode::MalformedPacket)
        }
    }
}

/// A valid topic name: not empty (rumqttc's `valid_topic` allows that), no wildcards.
fn is_topic_name(topic: &str) -> bool {
    !topic.is_empty() && valid_topic(topic)
}

/// A topic a client may publish to, or name in its will, before authorization: a valid topic
/// name outside the reserved `$` namespace.
pub(crate) fn is_publishable(topic: &str) -> bool {
    is_topic_name(topic) && !is_reserved(topic)
}

/// Topics beginning with `$` are the server's (MQTT §4.7.2); the gateway offers none to clients.
pub(crate) fn is_reserved(topic: &str) -> bool {
    topic.starts_with('$')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Disconnect, DisconnectProperties, PublishProperties};

    #[test]
    fn publishable_topics() {
        let rows = [
            ("a/b", true),
            ("a", true),
            ("/", true),
            ("", false),
            ("a/+", false),
            ("a/#", false),
            ("$SYS/x", false),
        ];
        for (topic, ok) in rows {
            assert_eq!(is_publishable(topic), ok, "{topic:?}");
        }
    }

    fn publish(topic: &[u8], properties: Option<PublishProperties>) -> Packet {
        let mut publish = Publish::new("", QoS::AtLeastOnce, "x", properties);
        publish.topic = bytes::Bytes::copy_from_slice(topic);
        publish.pkid = 1;
        Packet::Publish(publish)
    }

    #[test]
    fn publishes_that_end_the_connection() {
        let alias = PublishProperties {
            topic_alias: Some(1),
            ..PublishProperties::default()
        };
        let identifier = PublishProperties {
            subscription_identifiers: vec![1],
            ..PublishProperties::default()
        };
        let rows = [
            (publish(b"a/b", None), None),
            // Reserved topics are denied later, like any unauthorized publish.
            (publish(b"$SYS/x", None), None),
            (
                publish(b"\xff", None),
                Some(DisconnectReasonCode::MalformedPacket),
            ),
            (
                publish(b"a/+", None),
                Some(DisconnectReasonCode::TopicNameInvalid),
            ),
            (
                publish(b"", None),
                Some(DisconnectReasonCode::TopicNameInvalid),
            ),
            (
                publish(b"a", Some(alias)),
                Some(DisconnectReasonCode::TopicAliasInvalid),
            ),
            (
                publish(b"a", Some(identifier)),
                Some(DisconnectReasonCode::ProtocolError),
            ),
        ];
        for (packet, expected) in rows {
            let found = match screen(packet) {
                Inbound::Publish { .. } => None,
                Inbound::Close { code, .. } => Some(code),
                other => panic!("{other:?}"),
            };
            assert_eq!(found, expected);
        }
    }

    #[test]
    fn disconnects() {
        let with_expiry = Disconnect {
            reason_code: DisconnectReasonCode::NormalDisconnection,
            properties: Some(DisconnectProperties {
                session_expiry_interval: Some(30),
                reason_string: None,
                user_properties: Vec::new(),
                server_reference: None,
            }),
        };
        let rows = [
            (
                Disconnect::new(DisconnectReasonCode::NormalDisconnection),
                (false, None),
            ),
            (
                Disconnect::new(DisconnectReasonCode::DisconnectWithWillMessage),
                (true, None),
            ),
            (
                Disconnect::new(DisconnectReasonCode::ProtocolError),
                (true, None),
            ),
            (with_expiry, (false, Some(30))),
        ];
        for (disconnect, expected) in rows {
            match screen(Packet::Disconnect(disconnect)) {
                Inbound::Disconnect {
                    with_will,
                    session_expiry,
                } => assert_eq!((with_will, session_expiry), expected),
                other => panic!("{other:?}"),
            }
        }
    }
}
