//! The gateway's handling of untrusted bytes as one pure function, for the coverage-guided fuzz
//! target in `fuzz/` and the seeded property test below, which runs under `cargo test` where no
//! nightly toolchain is. Not part of the API: hidden, and free to change.
//!
//! [`connection`] does what a connection does with the bytes a client sends, minus the I/O and
//! the session: the CONNECT decides the version (`framing::decode_connect`), every complete
//! packet after it is decoded (`framing::decode`) and screened (`inbound::screen`) until one
//! ends the connection or the bytes run out, and each accepted PUBLISH is encoded as the
//! delivery it becomes, for both protocol versions (`codec::encode`). [`check`] runs it and
//! asserts what must hold for any input: no panic, every call returns, a decoded packet
//! consumes bytes, nothing complete is left undecoded while the connection waits for more, and
//! how the bytes are split into reads changes nothing.
//!
//! [`session`] goes past the verdict, into the per-session state machine: a real broker and a
//! few clients on in-memory streams (see its own notes).

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;

use crate::codec::{self, Version};
use crate::framing;
use crate::inbound::{self, Inbound};

// The session target needs a clock that only moves when told (tokio's `test-util`): built for
// the broker's tests and for the fuzz crate, which turns on the `fuzzing` feature.
#[cfg(any(test, feature = "fuzzing"))]
pub mod session;

/// What a connection makes of the bytes it has read, up to where it stops reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The protocol level the CONNECT chose (4 or 5), once one was read.
    pub version: Option<u8>,
    /// The packets handled after CONNECT, in order, by name.
    pub handled: Vec<&'static str>,
    pub end: End,
    /// Bytes taken off the buffer: every packet decoded, and the one that ended the connection.
    pub consumed: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The bytes ran out: the connection waits for more.
    Waiting,
    /// No session: the first packet was no acceptable CONNECT (the connection is closed,
    /// after a CONNACK 0x01 for an unsupported protocol level).
    Refused,
    /// The client disconnected; whether its will is published.
    Disconnected { with_will: bool },
    /// The server closes the connection; an MQTT 5 client is told this reason code.
    Closed { code: u8 },
}

/// Runs the connection over `input` arriving in reads of `read_size` bytes, with
/// `max_packet_size` as configured.
pub fn connection(input: &[u8], read_size: usize, max_packet_size: usize) -> Verdict {
    let read_size = read_size.max(1);
    let mut buf = BytesMut::new();
    let (mut fed, mut taken) = (0, 0);
    let mut version = None;
    let mut handled = Vec::new();
    // As a connection has them with the default `mqtt.max_topic_aliases`.
    let mut aliases =
        crate::topic_alias::Incoming::new(crate::BrokerConfig::default().max_topic_aliases);
    let end = loop {
        let before = buf.len();
        let decoded = match version {
            None => framing::decode_connect(&mut buf, max_packet_size),
            Some(version) => framing::decode(version, &mut buf, max_packet_size)
                .map(|packet| packet.map(|packet| (version, packet))),
        };
        taken += before - buf.len();
        let (speaking, packet) = match decoded {
            Ok(Some(decoded)) => {
                assert!(buf.len() < before, "a packet was decoded from no bytes");
                decoded
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete packet consumed bytes");
                let waiting = framing::header(&buf).ok().flatten();
                assert!(
                    waiting.is_none_or(|header| header.frame_len() > buf.len()),
                    "a complete frame was left in the buffer"
                );
                if fed == input.len() {
                    break End::Waiting;
                }
                let n = read_size.min(input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + n]);
                fed += n;
                continue;
            }
            Err(_) if version.is_none() => break End::Refused,
            Err(err) => {
                break End::Closed {
                    code: inbound::undecodable(&err).1 as u8,
                };
            }
        };
        if version.is_none() {
            // `decode_connect` decodes nothing but a CONNECT.
            version = Some(speaking);
            handled.push("CONNECT");
            if let Packet::Connect(_, Some(will), _) = &packet {
                // As `connection::serve` checks it: a topic that is not UTF-8 becomes "".
                let topic = String::from_utf8(will.topic.to_vec()).unwrap_or_default();
                let _ = inbound::is_publishable(&topic);
            }
            continue;
        }
        match inbound::screen(packet, &mut aliases) {
            Inbound::Disconnect { with_will, .. } => break End::Disconnected { with_will },
            Inbound::Close { code, .. } => break End::Closed { code: code as u8 },
            Inbound::Publish { publish, .. } => {
                deliverable(publish);
                handled.push("PUBLISH");
            }
            other => handled.push(name(&other)),
        }
    };
    Verdict {
        version: version.map(|version| match version {
            Version::V4 => 4,
            Version::V5 => 5,
        }),
        handled,
        end,
        consumed: taken,
    }
}

/// A publish the gateway accepted must be deliverable to every client, whatever it carries: a
/// delivery that fails to encode would close the receiver's connection. It is delivered with
/// the receiver's packet id.
fn deliverable(mut publish: rumqttc::v5::mqttbytes::v5::Publish) {
    if publish.qos != QoS::AtMostOnce {
        publish.pkid = 1;
    }
    publish.dup = false;
    let delivery = Packet::Publish(publish);
    for to in [Version::V4, Version::V5] {
        let mut out = BytesMut::new();
        if let Err(err) = codec::encode(to, &delivery, &mut out) {
            panic!("an accepted publish cannot be delivered to {to:?}: {err}");
        }
    }
}

fn name(inbound: &Inbound) -> &'static str {
    match inbound {
        Inbound::Publish { .. } => "PUBLISH",
        Inbound::PubAck(_) => "PUBACK",
        Inbound::PubRel(_) => "PUBREL",
        Inbound::PubRec { .. } => "PUBREC",
        Inbound::PubComp(_) => "PUBCOMP",
        Inbound::Subscribe(_) => "SUBSCRIBE",
        Inbound::Unsubscribe(_) => "UNSUBSCRIBE",
        Inbound::PingReq => "PINGREQ",
        Inbound::Disconnect { .. } => "DISCONNECT",
        Inbound::Close { .. } => "CLOSE",
    }
}

/// The largest packet [`check`] accepts: small, so that length fields reach past it often.
pub const CHECK_MAX_PACKET_SIZE: usize = 4096;

/// Asserts the properties every input must have (see the module comment); panics otherwise.
pub fn check(input: &[u8]) {
    let whole = connection(input, input.len(), CHECK_MAX_PACKET_SIZE);
    for read_size in [1, 3, 64] {
        let split = connection(input, read_size, CHECK_MAX_PACKET_SIZE);
        assert_eq!(
            split, whole,
            "reads of {read_size} bytes changed the verdict"
        );
    }
    assert!(whole.consumed <= input.len());
}

/// Valid byte streams, a CONNECT and then packets of every kind a client sends, for MQTT 3.1.1
/// and 5.0: the fuzz target's seed corpus (`fuzz/corpus/connection/`, kept current by a test)
/// and the starting points of the property test.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (label, connect, packets) in [
        ("v4", v4_connect(), v4_packets()),
        ("v5", v5_connect(), v5_packets()),
    ] {
        seeds.push((format!("{label}-connect"), connect.clone()));
        // Every packet that leaves the connection open, then a DISCONNECT.
        let mut all = connect.clone();
        for (name, bytes) in packets {
            let mut stream = connect.clone();
            stream.extend_from_slice(&bytes);
            if !(name.starts_with("auth") || name.starts_with("disconnect")) {
                all.extend_from_slice(&bytes);
            }
            seeds.push((format!("{label}-{name}"), stream));
        }
        all.extend_from_slice(&[0xE0, 0x00]);
        seeds.push((format!("{label}-all"), all));
    }
    seeds
}

fn v5_bytes(packet: rumqttc::v5::mqttbytes::v5::Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet
        .write(&mut out, None)
        .expect("the seeds are valid packets");
    out.to_vec()
}

fn v4_bytes(packet: rumqttc::mqttbytes::v4::Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet
        .write(&mut out, usize::MAX)
        .expect("the seeds are valid packets");
    out.to_vec()
}

fn v5_connect() -> Vec<u8> {
    use rumqttc::v5::mqttbytes::v5::{
        Connect, ConnectProperties, LastWill, LastWillProperties, Login,
    };
    let mut properties = ConnectProperties::new();
    properties.session_expiry_interval = Some(60);
    properties.receive_maximum = Some(10);
    properties.max_packet_size = Some(4096);
    properties.user_properties = vec![("k".to_owned(), "v".to_owned())];
    let will = LastWill::new(
        "sandbox/wills/fz",
        "gone",
        QoS::AtLeastOnce,
        false,
        Some(LastWillProperties {
            delay_interval: Some(5),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(30),
            content_type: Some("text/plain".to_owned()),
            response_topic: None,
            correlation_data: None,
            user_properties: vec![("role".to_owned(), "service".to_owned())],
        }),
    );
    let connect = Connect {
        keep_alive: 30,
        client_id: "fz".to_owned(),
        clean_start: true,
        properties: Some(properties),
    };
    let login = Login::new("fz", "token");
    v5_bytes(Packet::Connect(connect, Some(will), Some(login)))
}

fn v5_packets() -> Vec<(&'static str, Vec<u8>)> {
    use rumqttc::v5::mqttbytes::v5::{
        Disconnect, DisconnectProperties, DisconnectReasonCode, Filter, PubAck, PubAckReason,
        PubComp, PubCompReason, PubRec, PubRecReason, PubRel, PubRelReason, Publish,
        PublishProperties, RetainForwardRule, Subscribe, Unsubscribe,
    };
    let properties = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(30),
        response_topic: Some("sandbox/replies/fz".to_owned()),
        correlation_data: Some("c-1".into()),
        user_properties: vec![("trace".to_owned(), "abc".to_owned())],
        content_type: Some("application/json".to_owned()),
        ..PublishProperties::default()
    };
    let publish = |qos, pkid, properties| {
        let mut publish = Publish::new("cc/v1/sessions/s1/typing/fz", qos, "{}", properties);
        publish.pkid = pkid;
        v5_bytes(Packet::Publish(publish))
    };
    let mut filter = Filter::new("sandbox/+/fz", QoS::ExactlyOnce);
    filter.nolocal = true;
    filter.preserve_retain = true;
    filter.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
    let subscribe = Subscribe {
        pkid: 3,
        filters: vec![filter, Filter::new("cc/v1/sessions/s1/#", QoS::AtLeastOnce)],
        properties: None,
    };
    let unsubscribe = Unsubscribe {
        pkid: 4,
        filters: vec!["sandbox/+/fz".to_owned()],
        properties: None,
    };
    let disconnect = Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
        properties: Some(DisconnectProperties {
            session_expiry_interval: Some(0),
            reason_string: Some("bye".to_owned()),
            user_properties: Vec::new(),
            server_reference: None,
        }),
    };
    vec![
        ("publish-qos0", publish(QoS::AtMostOnce, 0, None)),
        (
            "publish-qos1",
            publish(QoS::AtLeastOnce, 1, Some(properties.clone())),
        ),
        (
            "publish-qos2",
            publish(QoS::ExactlyOnce, 2, Some(properties)),
        ),
        ("subscribe", v5_bytes(Packet::Subscribe(subscribe))),
        ("unsubscribe", v5_bytes(Packet::Unsubscribe(unsubscribe))),
        (
            "puback",
            v5_bytes(Packet::PubAck(PubAck {
                pkid: 1,
                reason: PubAckReason::Success,
                properties: None,
            })),
        ),
        (
            "pubrec",
            v5_bytes(Packet::PubRec(PubRec {
                pkid: 1,
                reason: PubRecReason::Success,
                properties: None,
            })),
        ),
        (
            "pubrel",
            v5_bytes(Packet::PubRel(PubRel {
                pkid: 2,
                reason: PubRelReason::Success,
                properties: None,
            })),
        ),
        (
            "pubcomp",
            v5_bytes(Packet::PubComp(PubComp {
                pkid: 1,
                reason: PubCompReason::Success,
                properties: None,
            })),
        ),
        ("pingreq", vec![0xC0, 0x00]),
        ("auth", vec![0xF0, 0x02, 0x19, 0x00]),
        (
            "disconnect-with-properties",
            v5_bytes(Packet::Disconnect(disconnect)),
        ),
        ("disconnect-with-will", vec![0xE0, 0x01, 0x04]),
        ("disconnect", vec![0xE0, 0x00]),
    ]
}

fn v4_connect() -> Vec<u8> {
    use rumqttc::mqttbytes::v4::{Connect, LastWill, Login};
    let mut connect = Connect::new("fz-4");
    connect.keep_alive = 30;
    connect.clean_session = false;
    connect.last_will = Some(LastWill::new(
        "sandbox/wills/fz-4",
        "gone",
        rumqttc::mqttbytes::QoS::AtMostOnce,
        true,
    ));
    connect.login = Some(Login::new("fz-4", "token"));
    v4_bytes(rumqttc::mqttbytes::v4::Packet::Connect(connect))
}

fn v4_packets() -> Vec<(&'static str, Vec<u8>)> {
    use rumqttc::mqttbytes::QoS as QoS4;
    use rumqttc::mqttbytes::v4::{
        Packet as P, PubAck, PubComp, PubRec, PubRel, Publish, Subscribe, SubscribeFilter,
        Unsubscribe,
    };
    let publish = |qos, pkid| {
        let mut publish = Publish::new("sandbox/fz", qos, "hello");
        publish.pkid = pkid;
        v4_bytes(P::Publish(publish))
    };
    // Packet identifiers are non-zero (rumqttc's constructors leave them 0, which the gateway
    // refuses as a protocol error).
    let mut subscribe = Subscribe::new_many([
        SubscribeFilter::new("sandbox/#".to_owned(), QoS4::AtLeastOnce),
        SubscribeFilter::new("cc/v1/queue".to_owned(), QoS4::ExactlyOnce),
    ]);
    subscribe.pkid = 3;
    let mut unsubscribe = Unsubscribe::new("sandbox/#");
    unsubscribe.pkid = 4;
    vec![
        ("publish-qos0", publish(QoS4::AtMostOnce, 0)),
        ("publish-qos1", publish(QoS4::AtLeastOnce, 1)),
        ("publish-qos2", publish(QoS4::ExactlyOnce, 2)),
        ("subscribe", v4_bytes(P::Subscribe(subscribe))),
        ("unsubscribe", v4_bytes(P::Unsubscribe(unsubscribe))),
        ("puback", v4_bytes(P::PubAck(PubAck::new(1)))),
        ("pubrec", v4_bytes(P::PubRec(PubRec::new(1)))),
        ("pubrel", v4_bytes(P::PubRel(PubRel::new(2)))),
        ("pubcomp", v4_bytes(P::PubComp(PubComp::new(1)))),
        ("pingreq", vec![0xC0, 0x00]),
        ("disconnect", vec![0xE0, 0x00]),
    ]
}

#[cfg(test)]
mod tests;
