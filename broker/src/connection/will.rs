//! The will: kept from the CONNECT in memory of its own ([`kept`]), and published after its
//! delay (MQTT 5 §3.1.3.2.2): a will with a delay interval waits in
//! its stored session and is published when the delay runs out or the session ends, whichever
//! comes first, unless a connection with the same client id comes before (it resumes or
//! discards the session, and the will with it).
//!
//! Only outside `cc/`: there the gateway itself says `offline` on every session of a subject
//! whose last connection ends, at once, and the chat pipeline's own timer
//! (`bridge.abandon_after_secs`) is what waits for a client to come back; a will under `cc/` is
//! published when the connection is lost, whatever its delay (see PROTOCOL.md).

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{self, PublishProperties};

use super::Shared;
use super::presence::SERVER;
use crate::acl;
use crate::message::Message;
use crate::session::{self, Outbound, Will};

/// How long `will` waits once its connection is lost, in a session that outlives the
/// connection by `session_expiry` seconds; `None`: it is published now.
pub(super) fn delay_of(will: &Will, session_expiry: u32) -> Option<u32> {
    let topic = std::str::from_utf8(&will.message.topic).unwrap_or_default();
    (will.delay > 0 && session_expiry > 0 && !acl::in_protocol(topic))
        .then(|| will.delay.min(session_expiry))
}

impl Shared {
    /// Publishes the will of `client_id`, whose delay or session is over, as its client would
    /// have published it. Publish hooks do not see it: the connection they would be told of,
    /// and its identity, is gone (such wills are never under `cc/`, where the chat rules act).
    pub(super) fn publish_will(&self, client_id: &str, will: Will) {
        let mut message = will.message;
        let topic = String::from_utf8_lossy(&message.topic).into_owned();
        debug_assert!(!acl::in_protocol(&topic), "wills under cc/ are not delayed");
        message.expires_at = session::expiry_deadline(message.properties.as_ref());
        if message.retain
            && let Err(refusal) = self.retained.store(&topic, message.clone())
        {
            // As for a will published at once: one that does not fit the store goes nowhere.
            tracing::debug!(client_id, topic, %refusal, "delayed retained will refused");
            return;
        }
        let forwarded = Arc::new(Message {
            topic: message.topic,
            payload: message.payload,
            qos: message.qos,
            retain: message.retain,
            publisher: Some(Arc::from(client_id)),
            properties: message.properties,
            expires_at: message.expires_at,
            via: None,
        });
        tracing::debug!(client_id, topic, "delayed will published");
        let waiting = self.fanout.publish(SERVER, &topic, &forwarded);
        self.deliver_when_room(waiting);
    }
}

/// Publishes the will waiting in the session of `client_id` stored as `generation` after
/// `seconds`, if it is still there then.
pub(super) fn publish_will_later(
    shared: Weak<Shared>,
    client_id: String,
    generation: u64,
    seconds: u32,
) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(u64::from(seconds))).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Some(will) = shared.sessions.take_will(&client_id, generation) {
            shared.publish_will(&client_id, *will);
        }
    });
}

/// The will as the session keeps it until the connection ends, in memory of its own.
///
/// The CONNECT's fields are slices of the buffer it was read into (a chunk of at least
/// 2 KiB, token included): a will kept as it was decoded kept all of it alive for the life
/// of the connection (issue 22: memory per idle connection; a desk always has a will).
pub(super) fn kept(will: v5::LastWill) -> Will {
    Will {
        delay: will
            .properties
            .as_ref()
            .and_then(|p| p.delay_interval)
            .unwrap_or(0),
        message: Outbound {
            topic: Bytes::copy_from_slice(&will.topic),
            payload: Bytes::copy_from_slice(&will.message),
            qos: will.qos,
            retain: will.retain,
            properties: will.properties.map(will_properties),
            // Counted from when it is published.
            expires_at: None,
        },
    }
}

fn will_properties(p: v5::LastWillProperties) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data.map(|data| Bytes::copy_from_slice(&data)),
        user_properties: p.user_properties,
        content_type: p.content_type,
        ..PublishProperties::default()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rumqttc::v5::mqttbytes::QoS;

    #[test]
    fn a_kept_will_does_not_hold_the_buffer_its_connect_was_read_into() {
        use bytes::BytesMut;
        use rumqttc::v5::mqttbytes::v5::{self, Packet};

        use super::kept;
        use crate::framing;

        let will = v5::LastWill {
            topic: Bytes::from_static(b"cc/v1/staff/a/submit"),
            message: Bytes::from_static(b"{}"),
            qos: rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            retain: false,
            properties: Some(v5::LastWillProperties {
                delay_interval: None,
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: Some(Bytes::from_static(b"c")),
                user_properties: Vec::new(),
            }),
        };
        let connect = v5::Connect {
            keep_alive: 60,
            client_id: "a".to_owned(),
            clean_start: true,
            properties: None,
        };
        let mut out = BytesMut::new();
        Packet::Connect(connect, Some(will), None)
            .write(&mut out, None)
            .unwrap();
        let mut buf = BytesMut::with_capacity(4096);
        buf.extend_from_slice(&out);
        let start = buf.as_ptr() as usize;
        let read = start..start + buf.capacity();
        let Some((_, Packet::Connect(_, Some(will), _))) =
            framing::decode_connect(&mut buf, 1 << 20).unwrap()
        else {
            panic!("a CONNECT with a will");
        };
        let kept = kept(will).message;
        let correlation = kept
            .properties
            .as_ref()
            .and_then(|p| p.correlation_data.as_ref());
        for (name, bytes) in [
            ("topic", &kept.topic),
            ("payload", &kept.payload),
            ("correlation data", correlation.unwrap()),
        ] {
            assert!(
                !read.contains(&(bytes.as_ptr() as usize)),
                "the will's {name} is a slice of the read buffer"
            );
        }
        assert_eq!(&kept.topic[..], b"cc/v1/staff/a/submit");
        assert_eq!(&kept.payload[..], b"{}");
    }

    use super::*;
    use crate::session::Outbound;

    #[test]
    fn a_will_waits_for_the_shorter_of_its_delay_and_its_session() {
        let will = |topic: &'static str, delay| Will {
            message: Outbound {
                topic: Bytes::from_static(topic.as_bytes()),
                payload: Bytes::new(),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: None,
                expires_at: None,
            },
            delay,
        };
        // (topic, will delay, session expiry) -> how long the will waits
        let rows = [
            ("a/b", 3, 5, Some(3)),
            ("a/b", 5, 2, Some(2)),
            ("a/b", 5, 0, None),
            ("a/b", 0, 60, None),
            ("a/b", 5, u32::MAX, Some(5)),
            ("cc/v1/sessions/s1/presence/k1", 5, 60, None),
        ];
        for (topic, delay, expiry, expected) in rows {
            assert_eq!(
                delay_of(&will(topic, delay), expiry),
                expected,
                "{topic} {delay} {expiry}"
            );
        }
    }
}
