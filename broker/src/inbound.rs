//! What a connected client's packet asks of its connection, decided from the packet and the
//! connection's topic aliases alone: the checks that need no session, no authorization and no
//! I/O. `connection` acts on the verdict; `fuzzing` runs the same function over arbitrary bytes.

use rumqttc::v5::mqttbytes::v5::{
    DisconnectReasonCode, Packet, PubRecReason, Publish, Subscribe, Unsubscribe,
};
use rumqttc::v5::mqttbytes::valid_topic;

use crate::codec::CodecError;
use crate::topic_alias::{self, AliasError};

/// One packet from a connected client, as the connection is to handle it.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A PUBLISH whose topic name is valid (UTF-8, not empty, no wildcards; an alias already
    /// resolved and removed) and that carries no property the gateway refuses. Authorization,
    /// reserved (`$`) topics included, comes next.
    Publish {
        publish: Publish,
        topic: String,
    },
    /// The client acknowledges our QoS 1 delivery with this packet id.
    PubAck(u16),
    /// The second step of a QoS 2 publish from the client: answered with PUBCOMP.
    PubRel(u16),
    /// The client received our QoS 2 delivery (`accepted`), or refused it (a reason code of
    /// 0x80 or more, which ends the flow).
    PubRec {
        pkid: u16,
        accepted: bool,
    },
    /// The last step of our QoS 2 delivery.
    PubComp(u16),
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
            Inbound::PubAck(_) | Inbound::PubRec { .. } | Inbound::PubComp(_) | Inbound::PingReq
        )
    }
}

/// Screens one decoded packet; a PUBLISH's topic alias is resolved with (and may set) the
/// connection's `aliases`.
pub(crate) fn screen(packet: Packet, aliases: &mut topic_alias::Incoming) -> Inbound {
    match packet {
        Packet::Publish(publish) => screen_publish(publish, aliases),
        Packet::PubAck(ack) => Inbound::PubAck(ack.pkid),
        Packet::PubRel(rel) => Inbound::PubRel(rel.pkid),
        Packet::PubRec(rec) => Inbound::PubRec {
            pkid: rec.pkid,
            accepted: matches!(
                rec.reason,
                PubRecReason::Success | PubRecReason::NoMatchingSubscribers
            ),
        },
        Packet::PubComp(comp) => Inbound::PubComp(comp.pkid),
        // MQTT 5 §2.2.1, 3.1.1 §2.3.1: a SUBSCRIBE or UNSUBSCRIBE carries a non-zero packet
        // identifier (rumqttc's decoder checks only PUBLISH's). Its answer would carry 0, which
        // names no request. Left by the session fuzz target's findings.
        Packet::Subscribe(Subscribe { pkid: 0, .. })
        | Packet::Unsubscribe(Unsubscribe { pkid: 0, .. }) => {
            close("packet identifier 0", DisconnectReasonCode::ProtocolError)
        }
        // MQTT 5 §3.8.2.1.2: a subscription identifier of 0 is a protocol error.
        Packet::Subscribe(subscribe)
            if subscribe.properties.as_ref().and_then(|p| p.id) == Some(0) =>
        {
            close(
                "subscription identifier 0",
                DisconnectReasonCode::ProtocolError,
            )
        }
        Packet::Subscribe(subscribe) => Inbound::Subscribe(subscribe),
        // MQTT 5 §3.10.3, 3.1.1 §3.10.3: at least one topic filter. rumqttc's decoder lets an
        // empty one through, and its UNSUBACK would carry no reason code, which clients
        // (rumqttc's among them) cannot read. Found by the session fuzz target.
        Packet::Unsubscribe(unsubscribe) if unsubscribe.filters.is_empty() => close(
            "UNSUBSCRIBE without a topic filter",
            DisconnectReasonCode::ProtocolError,
        ),
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

fn screen_publish(mut publish: Publish, aliases: &mut topic_alias::Incoming) -> Inbound {
    // The alias is this connection's business: resolved here and not passed on.
    let alias = publish
        .properties
        .as_mut()
        .and_then(|props| props.topic_alias.take());
    if let Some(alias) = alias {
        match aliases.resolve(std::mem::take(&mut publish.topic), alias) {
            Ok(topic) => publish.topic = topic,
            Err(AliasError::Invalid) => {
                return close(
                    "topic alias invalid",
                    DisconnectReasonCode::TopicAliasInvalid,
                );
            }
            Err(AliasError::Unknown) => {
                return close(
                    "topic alias not set on this connection",
                    DisconnectReasonCode::ProtocolError,
                );
            }
        }
    }
    // MQTT §1.5.4: a topic name that is not UTF-8 makes the packet malformed.
    let Ok(topic) = String::from_utf8(publish.topic.to_vec()) else {
        return close("topic is not UTF-8", DisconnectReasonCode::MalformedPacket);
    };
    if !is_topic_name(&topic) {
        // A wildcard in a topic name is a protocol violation (§4.7).
        return close("invalid topic", DisconnectReasonCode::TopicNameInvalid);
    }
    if let Some(props) = &publish.properties
        && !props.subscription_identifiers.is_empty()
    {
        return close(
            "subscription identifier in PUBLISH",
            DisconnectReasonCode::ProtocolError,
        );
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
        let alias = |alias| PublishProperties {
            topic_alias: Some(alias),
            ..PublishProperties::default()
        };
        let identifier = PublishProperties {
            subscription_identifiers: vec![1],
            ..PublishProperties::default()
        };
        // (packet, the topic it is accepted under, or the reason code that ends the connection)
        let rows = [
            (publish(b"a/b", None), Ok("a/b")),
            // Reserved topics are denied later, like any unauthorized publish.
            (publish(b"$SYS/x", None), Ok("$SYS/x")),
            (
                publish(b"\xff", None),
                Err(DisconnectReasonCode::MalformedPacket),
            ),
            (
                publish(b"a/+", None),
                Err(DisconnectReasonCode::TopicNameInvalid),
            ),
            (
                publish(b"", None),
                Err(DisconnectReasonCode::TopicNameInvalid),
            ),
            // Aliases: 1 and 2 are accepted (the maximum is 2), set by a topic, then used.
            (
                publish(b"", Some(alias(2))),
                Err(DisconnectReasonCode::ProtocolError),
            ),
            (publish(b"a", Some(alias(2))), Ok("a")),
            (publish(b"", Some(alias(2))), Ok("a")),
            (publish(b"b/c", Some(alias(2))), Ok("b/c")),
            (publish(b"", Some(alias(2))), Ok("b/c")),
            (
                publish(b"", Some(alias(1))),
                Err(DisconnectReasonCode::ProtocolError),
            ),
            (
                publish(b"a", Some(alias(0))),
                Err(DisconnectReasonCode::TopicAliasInvalid),
            ),
            (
                publish(b"a", Some(alias(3))),
                Err(DisconnectReasonCode::TopicAliasInvalid),
            ),
            (
                publish(b"a", Some(identifier)),
                Err(DisconnectReasonCode::ProtocolError),
            ),
        ];
        let mut aliases = topic_alias::Incoming::new(2);
        for (packet, expected) in rows {
            let found = match screen(packet, &mut aliases) {
                Inbound::Publish { publish, topic } => {
                    assert_eq!(publish.topic, topic.as_bytes(), "the packet names it too");
                    assert!(
                        publish.properties.is_none_or(|p| p.topic_alias.is_none()),
                        "an alias is not passed on"
                    );
                    Ok(topic)
                }
                Inbound::Close { code, .. } => Err(code),
                other => panic!("{other:?}"),
            };
            assert_eq!(found, expected.map(str::to_owned));
        }
    }

    #[test]
    fn subscription_identifier_zero_is_a_protocol_error() {
        use rumqttc::v5::mqttbytes::v5::{Filter, SubscribeProperties};
        let subscribe = |id| {
            Packet::Subscribe(Subscribe {
                pkid: 1,
                filters: vec![Filter::new("a", QoS::AtLeastOnce)],
                properties: Some(SubscribeProperties {
                    id,
                    user_properties: Vec::new(),
                }),
            })
        };
        let mut aliases = topic_alias::Incoming::default();
        assert!(matches!(
            screen(subscribe(Some(0)), &mut aliases),
            Inbound::Close {
                code: DisconnectReasonCode::ProtocolError,
                ..
            }
        ));
        assert!(matches!(
            screen(subscribe(Some(7)), &mut aliases),
            Inbound::Subscribe(_)
        ));
    }

    #[test]
    fn a_subscribe_or_unsubscribe_with_packet_identifier_zero_is_a_protocol_error() {
        use rumqttc::v5::mqttbytes::v5::Filter;
        let subscribe = |pkid| {
            Packet::Subscribe(Subscribe {
                pkid,
                filters: vec![Filter::new("a", QoS::AtLeastOnce)],
                properties: None,
            })
        };
        let unsubscribe = |pkid| {
            Packet::Unsubscribe(Unsubscribe {
                pkid,
                filters: vec!["a".to_owned()],
                properties: None,
            })
        };
        let mut aliases = topic_alias::Incoming::default();
        for packet in [subscribe(0), unsubscribe(0)] {
            assert!(matches!(
                screen(packet, &mut aliases),
                Inbound::Close {
                    code: DisconnectReasonCode::ProtocolError,
                    ..
                }
            ));
        }
        assert!(matches!(
            screen(subscribe(1), &mut aliases),
            Inbound::Subscribe(_)
        ));
        assert!(matches!(
            screen(unsubscribe(1), &mut aliases),
            Inbound::Unsubscribe(_)
        ));
    }

    #[test]
    fn an_unsubscribe_without_a_filter_is_a_protocol_error() {
        let unsubscribe = |filters: Vec<String>| {
            Packet::Unsubscribe(Unsubscribe {
                pkid: 1,
                filters,
                properties: None,
            })
        };
        let mut aliases = topic_alias::Incoming::default();
        assert!(matches!(
            screen(unsubscribe(Vec::new()), &mut aliases),
            Inbound::Close {
                code: DisconnectReasonCode::ProtocolError,
                ..
            }
        ));
        assert!(matches!(
            screen(unsubscribe(vec!["a".to_owned()]), &mut aliases),
            Inbound::Unsubscribe(_)
        ));
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
            match screen(
                Packet::Disconnect(disconnect),
                &mut topic_alias::Incoming::default(),
            ) {
                Inbound::Disconnect {
                    with_will,
                    session_expiry,
                } => assert_eq!((with_will, session_expiry), expected),
                other => panic!("{other:?}"),
            }
        }
    }
}
