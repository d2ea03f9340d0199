//! The clients' side of the wire in session scripts: their packets written as MQTT 3.1.1 or
//! 5.0, and what the gateway sends them read back into MQTT 5's model, which the checks read.

use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{self, Packet};

pub(super) fn v5_bytes(packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet
        .write(&mut out, None)
        .expect("the harness writes valid packets");
    out.to_vec()
}

pub(super) fn v4_bytes(packet: v4::Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet
        .write(&mut out, usize::MAX)
        .expect("the harness writes valid packets");
    out.to_vec()
}

/// A client's packet as its version writes it (3.1.1 drops what it cannot say).
pub(super) fn encode(v5: bool, packet: &Packet) -> Vec<u8> {
    if v5 {
        return v5_bytes(packet);
    }
    let qos = |qos: QoS| match qos {
        QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::mqttbytes::QoS::ExactlyOnce,
    };
    let packet = match packet {
        Packet::Publish(publish) => {
            let mut out = v4::Publish::new(
                String::from_utf8_lossy(&publish.topic),
                qos(publish.qos),
                publish.payload.to_vec(),
            );
            out.pkid = publish.pkid;
            out.dup = publish.dup;
            out.retain = publish.retain;
            v4::Packet::Publish(out)
        }
        Packet::PubAck(ack) => v4::Packet::PubAck(v4::PubAck::new(ack.pkid)),
        Packet::PubRec(rec) => v4::Packet::PubRec(v4::PubRec::new(rec.pkid)),
        Packet::PubRel(rel) => v4::Packet::PubRel(v4::PubRel::new(rel.pkid)),
        Packet::PubComp(comp) => v4::Packet::PubComp(v4::PubComp::new(comp.pkid)),
        Packet::Subscribe(subscribe) => {
            let filters = subscribe
                .filters
                .iter()
                .map(|f| v4::SubscribeFilter::new(f.path.clone(), qos(f.qos)));
            let mut out = v4::Subscribe::new_many(filters);
            out.pkid = subscribe.pkid;
            v4::Packet::Subscribe(out)
        }
        Packet::Unsubscribe(unsubscribe) => {
            let mut out = v4::Unsubscribe::new(unsubscribe.filters[0].clone());
            out.pkid = unsubscribe.pkid;
            v4::Packet::Unsubscribe(out)
        }
        Packet::PingReq(_) => v4::Packet::PingReq,
        Packet::Disconnect(_) => v4::Packet::Disconnect,
        other => panic!("the harness sends no {other:?} as 3.1.1"),
    };
    v4_bytes(packet)
}

/// A packet the gateway sent to a 3.1.1 client, in the MQTT 5 model the checks read.
pub(super) fn from_v4(packet: v4::Packet) -> Packet {
    let qos = |qos: rumqttc::mqttbytes::QoS| match qos {
        rumqttc::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    };
    match packet {
        v4::Packet::ConnAck(ack) => Packet::ConnAck(v5::ConnAck {
            session_present: ack.session_present,
            code: if ack.code == v4::ConnectReturnCode::Success {
                v5::ConnectReturnCode::Success
            } else {
                v5::ConnectReturnCode::UnspecifiedError
            },
            properties: None,
        }),
        v4::Packet::Publish(publish) => {
            let mut out = v5::Publish::new(publish.topic, qos(publish.qos), publish.payload, None);
            out.pkid = publish.pkid;
            out.dup = publish.dup;
            out.retain = publish.retain;
            Packet::Publish(out)
        }
        v4::Packet::PubAck(ack) => Packet::PubAck(v5::PubAck::new(ack.pkid, None)),
        v4::Packet::PubRec(rec) => Packet::PubRec(v5::PubRec::new(rec.pkid, None)),
        v4::Packet::PubRel(rel) => Packet::PubRel(v5::PubRel::new(rel.pkid, None)),
        v4::Packet::PubComp(comp) => Packet::PubComp(v5::PubComp::new(comp.pkid, None)),
        v4::Packet::SubAck(ack) => Packet::SubAck(v5::SubAck {
            pkid: ack.pkid,
            return_codes: ack
                .return_codes
                .into_iter()
                .map(|code| match code {
                    v4::SubscribeReasonCode::Success(granted) => {
                        v5::SubscribeReasonCode::Success(qos(granted))
                    }
                    v4::SubscribeReasonCode::Failure => v5::SubscribeReasonCode::Unspecified,
                })
                .collect(),
            properties: None,
        }),
        v4::Packet::UnsubAck(ack) => Packet::UnsubAck(v5::UnsubAck {
            pkid: ack.pkid,
            reasons: Vec::new(),
            properties: None,
        }),
        v4::Packet::PingResp => Packet::PingResp(v5::PingResp),
        other => panic!("the gateway sent a client's packet: {other:?}"),
    }
}

/// Undoes a misreading of rumqttc 0.25.1's MQTT 5 PUBLISH reader: it counts each subscription
/// identifier's property byte twice against the properties' length, so it stops early and leaves
/// the last identifiers of a PUBLISH that carries several (0x0B and a variable byte integer
/// each) at the start of its payload. The gateway writes them right; the harness's payloads
/// never begin with 0x0B, so what does is taken back into the properties.
pub(super) fn repair(publish: &mut v5::Publish) {
    let mut payload = &publish.payload[..];
    let mut ids = Vec::new();
    while let [0x0B, rest @ ..] = payload {
        let Some((id, len)) = varint(rest) else {
            break;
        };
        ids.push(id);
        payload = &rest[len..];
    }
    if ids.is_empty() {
        return;
    }
    let properties = publish.properties.get_or_insert_with(Default::default);
    properties.subscription_identifiers.extend(ids);
    publish.payload = publish
        .payload
        .slice(publish.payload.len() - payload.len()..);
}

/// A variable byte integer (MQTT 5 §1.5.5) and its length in bytes.
fn varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0;
    for (i, byte) in bytes.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}
