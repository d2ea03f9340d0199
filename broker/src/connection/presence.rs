//! Presence the gateway keeps and tells (PROTOCOL.md, interface 2 of issue 21): the latest
//! presence of each (session, subject), kept as retained state so that a desk that opens a
//! conversation later sees the applicant's, forgotten when the subject leaves the session or
//! the session is forgotten; and `offline`, published as the server on every open session of a
//! subject whose last connection ended (the chat pipeline closes abandoned sessions on it).

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use schemas::topics::{SessionTopic, Topic};

use super::Shared;
use crate::acl;
use crate::message::Message;
use crate::session::Outbound;
use crate::signal;

/// The fan-out key of publishes the gateway makes itself: no connection has it (keys count
/// from 1), so no subscriber's no-local or own-queue rule mistakes them for its own.
pub(super) const SERVER: crate::fanout::LinkKey = 0;

fn presence_topic(session: &str, subject: &str) -> String {
    Topic::Session {
        session,
        kind: SessionTopic::Presence,
        subject: Some(subject),
    }
    .to_string()
}

impl Shared {
    /// Keeps `message` as the latest presence on `topic`, if it is a presence topic of a
    /// session the gateway knows (the payload already checked and canonical). It is delivered,
    /// retained, to whoever subscribes later and may read it. Only for known sessions: a
    /// supervisor may publish presence anywhere, and what is kept for a session goes when the
    /// session is forgotten, which a session id nobody belongs to never is.
    pub(crate) fn remember_presence(&self, topic: &str, message: &Outbound) {
        let Some(Topic::Session {
            session,
            kind: SessionTopic::Presence,
            ..
        }) = Topic::parse(topic)
        else {
            return;
        };
        if !self.memberships.has_members(session) {
            return;
        }
        let kept = Outbound {
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos: message.qos,
            retain: true,
            properties: None,
            expires_at: None,
        };
        self.retained.update(topic, kept);
    }

    /// Forgets the presence of `subject` in `session`: it left.
    pub(crate) fn forget_presence(&self, session: &str, subject: &str) {
        self.retained.remove(&presence_topic(session, subject));
    }

    /// Publishes, as the server, `offline` for `subject` on every open session it belongs to,
    /// except on `already` (the topic its will just announced it on), and keeps it as the
    /// latest presence there.
    pub(crate) fn announce_offline(&self, subject: &str, already: Option<&str>) {
        for session in self.memberships.open_sessions_of(subject) {
            let topic = presence_topic(&session, subject);
            if already == Some(topic.as_str()) {
                continue;
            }
            let message = Outbound {
                topic: Bytes::from(topic.clone()),
                payload: signal::offline(),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: None,
                expires_at: None,
            };
            self.remember_presence(&topic, &message);
            self.publish_as_server(&topic, message);
        }
    }

    /// Hands `message` (under `cc/`) to its subscribers as a publish of the gateway itself.
    fn publish_as_server(&self, topic: &str, message: Outbound) {
        debug_assert!(acl::in_protocol(topic));
        let forwarded = std::sync::Arc::new(Message {
            topic: message.topic,
            payload: message.payload,
            qos: message.qos,
            retain: false,
            publisher: None,
            properties: None,
            via: None,
            expires_at: None,
        });
        let waiting = self.fanout.publish(SERVER, topic, &forwarded);
        self.deliver_when_room(waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::SignalKind;

    #[test]
    fn presence_topics_are_the_protocols() {
        assert_eq!(
            presence_topic("s-1", "kiosk-1"),
            "cc/v1/sessions/s-1/presence/kiosk-1"
        );
        assert_eq!(
            SignalKind::of(&presence_topic("s-1", "kiosk-1")),
            Some(SignalKind::Presence)
        );
    }
}
