//! MQTT 3.1.1 and 5.0 packets with rumqttc's public codecs (cutting the byte stream into
//! frames is `framing`'s).
//!
//! The gateway works on one packet model, MQTT 5's (`rumqttc::v5::mqttbytes::v5`), which is a
//! superset of 3.1.1's. A 3.1.1 client's packets are converted into it on the way in and out of
//! it on the way back, dropping what 3.1.1 cannot say (properties, reason codes beyond its few
//! CONNACK codes, server DISCONNECTs).

use bytes::BytesMut;
use rumqttc::mqttbytes as m4;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes as m5;
use rumqttc::v5::mqttbytes::v5;

/// The protocol a connection speaks, fixed by its CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    V4,
    V5,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("MQTT protocol level {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("packet larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("a client may not send {0}")]
    Unexpected(&'static str),
    /// A packet the gateway does not offer (AUTH: enhanced authentication).
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    #[error("the first packet was not CONNECT")]
    NotConnect,
}

/// Encodes `packet` for a client speaking `version`. `Ok(false)`: 3.1.1 has no such packet (a
/// server DISCONNECT) and nothing was written.
pub(crate) fn encode(
    version: Version,
    packet: &v5::Packet,
    out: &mut BytesMut,
) -> Result<bool, CodecError> {
    match version {
        Version::V5 => packet
            .write(out, None)
            .map(|_| true)
            .map_err(|err| CodecError::Malformed(err.to_string())),
        Version::V4 => match to_v4(packet) {
            Some(packet) => packet
                .write(out, usize::MAX)
                .map(|_| true)
                .map_err(|err| CodecError::Malformed(err.to_string())),
            None => Ok(false),
        },
    }
}

fn qos_from_v4(qos: m4::QoS) -> m5::QoS {
    match qos {
        m4::QoS::AtMostOnce => m5::QoS::AtMostOnce,
        m4::QoS::AtLeastOnce => m5::QoS::AtLeastOnce,
        m4::QoS::ExactlyOnce => m5::QoS::ExactlyOnce,
    }
}

fn qos_to_v4(qos: m5::QoS) -> m4::QoS {
    match qos {
        m5::QoS::AtMostOnce => m4::QoS::AtMostOnce,
        m5::QoS::AtLeastOnce => m4::QoS::AtLeastOnce,
        m5::QoS::ExactlyOnce => m4::QoS::ExactlyOnce,
    }
}

pub(crate) fn from_v4(packet: v4::Packet) -> Result<v5::Packet, CodecError> {
    Ok(match packet {
        v4::Packet::Connect(connect) => {
            let will = connect.last_will.map(|will| v5::LastWill {
                topic: will.topic.into_bytes().into(),
                message: will.message,
                qos: qos_from_v4(will.qos),
                retain: will.retain,
                properties: None,
            });
            let login = connect.login.map(|login| v5::Login {
                username: login.username,
                password: login.password,
            });
            let connect = v5::Connect {
                keep_alive: connect.keep_alive,
                client_id: connect.client_id,
                clean_start: connect.clean_session,
                properties: None,
            };
            v5::Packet::Connect(connect, will, login)
        }
        v4::Packet::Publish(publish) => v5::Packet::Publish(v5::Publish {
            dup: publish.dup,
            qos: qos_from_v4(publish.qos),
            retain: publish.retain,
            topic: publish.topic.into_bytes().into(),
            pkid: publish.pkid,
            payload: publish.payload,
            properties: None,
        }),
        v4::Packet::PubAck(ack) => v5::Packet::PubAck(v5::PubAck::new(ack.pkid, None)),
        v4::Packet::PubRec(rec) => v5::Packet::PubRec(v5::PubRec {
            pkid: rec.pkid,
            reason: v5::PubRecReason::Success,
            properties: None,
        }),
        v4::Packet::PubRel(rel) => v5::Packet::PubRel(v5::PubRel {
            pkid: rel.pkid,
            reason: v5::PubRelReason::Success,
            properties: None,
        }),
        v4::Packet::PubComp(comp) => v5::Packet::PubComp(v5::PubComp {
            pkid: comp.pkid,
            reason: v5::PubCompReason::Success,
            properties: None,
        }),
        v4::Packet::Subscribe(subscribe) => v5::Packet::Subscribe(v5::Subscribe {
            pkid: subscribe.pkid,
            filters: subscribe
                .filters
                .into_iter()
                .map(|filter| v5::Filter {
                    path: filter.path,
                    qos: qos_from_v4(filter.qos),
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: v5::RetainForwardRule::OnEverySubscribe,
                })
                .collect(),
            properties: None,
        }),
        v4::Packet::Unsubscribe(unsubscribe) => v5::Packet::Unsubscribe(v5::Unsubscribe {
            pkid: unsubscribe.pkid,
            filters: unsubscribe.topics,
            properties: None,
        }),
        v4::Packet::PingReq => v5::Packet::PingReq(v5::PingReq),
        v4::Packet::Disconnect => v5::Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::NormalDisconnection,
        )),
        v4::Packet::ConnAck(_) => return Err(CodecError::Unexpected("CONNACK")),
        v4::Packet::SubAck(_) => return Err(CodecError::Unexpected("SUBACK")),
        v4::Packet::UnsubAck(_) => return Err(CodecError::Unexpected("UNSUBACK")),
        v4::Packet::PingResp => return Err(CodecError::Unexpected("PINGRESP")),
    })
}

fn to_v4(packet: &v5::Packet) -> Option<v4::Packet> {
    Some(match packet {
        v5::Packet::ConnAck(ack) => {
            use v4::ConnectReturnCode as V4;
            use v5::ConnectReturnCode as V5;
            let code = match ack.code {
                V5::Success => V4::Success,
                V5::RefusedProtocolVersion | V5::UnsupportedProtocolVersion => {
                    V4::RefusedProtocolVersion
                }
                V5::BadClientId | V5::ClientIdentifierNotValid => V4::BadClientId,
                V5::BadUserNamePassword => V4::BadUserNamePassword,
                V5::NotAuthorized
                | V5::Banned
                | V5::BadAuthenticationMethod
                | V5::PayloadFormatInvalid => V4::NotAuthorized,
                _ => V4::ServiceUnavailable,
            };
            v4::Packet::ConnAck(v4::ConnAck::new(code, ack.session_present))
        }
        v5::Packet::Publish(publish) => {
            let mut out = v4::Publish::from_bytes(
                String::from_utf8_lossy(&publish.topic).into_owned(),
                qos_to_v4(publish.qos),
                publish.payload.clone(),
            );
            out.dup = publish.dup;
            out.retain = publish.retain;
            out.pkid = publish.pkid;
            v4::Packet::Publish(out)
        }
        // 3.1.1 has no negative acknowledgement: a refused QoS 1/2 publish is acknowledged.
        v5::Packet::PubAck(ack) => v4::Packet::PubAck(v4::PubAck::new(ack.pkid)),
        v5::Packet::PubRec(rec) => v4::Packet::PubRec(v4::PubRec::new(rec.pkid)),
        v5::Packet::PubRel(rel) => v4::Packet::PubRel(v4::PubRel::new(rel.pkid)),
        v5::Packet::PubComp(comp) => v4::Packet::PubComp(v4::PubComp::new(comp.pkid)),
        v5::Packet::SubAck(ack) => v4::Packet::SubAck(v4::SubAck::new(
            ack.pkid,
            ack.return_codes
                .iter()
                .map(|code| match code {
                    v5::SubscribeReasonCode::Success(qos) => {
                        v4::SubscribeReasonCode::Success(qos_to_v4(*qos))
                    }
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        v5::Packet::UnsubAck(ack) => v4::Packet::UnsubAck(v4::UnsubAck::new(ack.pkid)),
        v5::Packet::PingResp(_) => v4::Packet::PingResp,
        v5::Packet::Disconnect(_) | v5::Packet::Auth(_) => return None,
        // Client-to-server packets are never sent by the gateway.
        v5::Packet::Connect(..)
        | v5::Packet::PingReq(_)
        | v5::Packet::Subscribe(_)
        | v5::Packet::Unsubscribe(_) => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_packets_round_trip_through_the_v5_model() {
        let mut publish = v4::Publish::new("a/b", m4::QoS::AtLeastOnce, "hi");
        publish.pkid = 7;
        publish.retain = true;
        let mut buf = BytesMut::new();
        v4::Packet::Publish(publish.clone())
            .write(&mut buf, usize::MAX)
            .unwrap();
        let model = crate::framing::decode(Version::V4, &mut buf, 1024)
            .unwrap()
            .unwrap();
        let mut out = BytesMut::new();
        assert!(encode(Version::V4, &model, &mut out).unwrap());
        assert_eq!(
            v4::Packet::read(&mut out, 1024).unwrap(),
            v4::Packet::Publish(publish)
        );
    }

    #[test]
    fn refusals_map_to_the_nearest_v4_code() {
        let rows = [
            (
                v5::ConnectReturnCode::BadUserNamePassword,
                v4::ConnectReturnCode::BadUserNamePassword,
            ),
            (
                v5::ConnectReturnCode::NotAuthorized,
                v4::ConnectReturnCode::NotAuthorized,
            ),
            (
                v5::ConnectReturnCode::ClientIdentifierNotValid,
                v4::ConnectReturnCode::BadClientId,
            ),
            (
                v5::ConnectReturnCode::QuotaExceeded,
                v4::ConnectReturnCode::ServiceUnavailable,
            ),
            // A will whose payload its topic does not carry.
            (
                v5::ConnectReturnCode::PayloadFormatInvalid,
                v4::ConnectReturnCode::NotAuthorized,
            ),
            (
                v5::ConnectReturnCode::UnsupportedProtocolVersion,
                v4::ConnectReturnCode::RefusedProtocolVersion,
            ),
        ];
        for (v5_code, v4_code) in rows {
            let ack = v5::Packet::ConnAck(v5::ConnAck {
                session_present: false,
                code: v5_code,
                properties: None,
            });
            let mut out = BytesMut::new();
            encode(Version::V4, &ack, &mut out).unwrap();
            match v4::Packet::read(&mut out, 64).unwrap() {
                v4::Packet::ConnAck(ack) => assert_eq!(ack.code, v4_code),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn v4_has_no_server_disconnect() {
        let disconnect = v5::Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::ServerShuttingDown,
        ));
        let mut out = BytesMut::new();
        assert!(!encode(Version::V4, &disconnect, &mut out).unwrap());
        assert!(out.is_empty());
    }
}
