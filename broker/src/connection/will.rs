//! Wills published after their delay (MQTT 5 §3.1.3.2.2): a will with a delay interval waits in
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

use super::Shared;
use super::presence::SERVER;
use crate::acl;
use crate::message::Message;
use crate::session::{self, Will};

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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rumqttc::v5::mqttbytes::QoS;

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
