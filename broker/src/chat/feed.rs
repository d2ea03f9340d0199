//! The membership feed: the chat pipeline announces joins, leaves and closes on
//! `cc/v1/memberships`, and the gateway applies each one to its authorizer's memberships the
//! moment the pipeline's PUBLISH arrives, in the pipeline's own connection task, before that
//! PUBLISH is acknowledged or routed ([`crate::Hook::on_publish`] runs before both). The
//! pipeline publishes a membership before the acknowledgement that tells the participant about
//! it, and its connection handles its publishes in order, so by the time the participant can
//! react (subscribe to the session), its membership is in place; a separate subscriber link
//! would race the acknowledgement (`courtchat bench chat` hit that race: SUBACK 0x80 on an
//! applicant's first subscription). Going through MQTT keeps this the same whether the bridge
//! runs in this process or in another one.

use schemas::wire::{MembershipOp, MembershipUpdate};

use crate::hooks::{Hook, Origin, Publish, Routing};
use crate::identity::Role;
use crate::memberships::Memberships;

/// Applies the service role's publishes on `cc/v1/memberships` to `memberships` (the broker's
/// own: [`crate::BrokerBuilder::memberships`]). The publish is routed on as any other (no one
/// subscribes to it today; the protocol lets only the service read it).
pub struct MembershipFeed {
    memberships: Memberships,
}

impl MembershipFeed {
    pub fn new(memberships: Memberships) -> Self {
        Self { memberships }
    }
}

impl Hook for MembershipFeed {
    fn on_publish(&self, publish: &mut Publish<'_>) -> Routing {
        // Only what the pipeline publishes itself: a will is the gateway's doing, not an
        // announcement.
        if publish.publisher.role == Role::Service
            && publish.origin == Origin::Client
            && is_feed(publish.topic)
        {
            apply(&self.memberships, publish.payload);
        }
        Routing::Route
    }
}

/// Whether `topic` is `cc/v1/memberships` (checked on each of the pipeline's publishes, so
/// without parsing or allocating).
fn is_feed(topic: &str) -> bool {
    topic
        .strip_prefix(schemas::topics::PREFIX)
        .is_some_and(|rest| rest == "/memberships")
}

/// Applies one update; a malformed one is logged and ignored (only the service role can publish
/// here, so it would be a bug in the pipeline, not an attack).
fn apply(memberships: &Memberships, payload: &[u8]) {
    match serde_json::from_slice::<MembershipUpdate>(payload) {
        Ok(update) => {
            let role = Role::from(update.role);
            match update.op {
                MembershipOp::Join => memberships.join(&update.session_id, &update.subject, role),
                MembershipOp::Leave => memberships.leave(&update.session_id, &update.subject),
                MembershipOp::Close => memberships.close(&update.session_id),
            }
        }
        Err(err) => tracing::warn!(error = %err, "malformed membership update ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_topic_is_the_protocol_one() {
        assert!(is_feed(&schemas::topics::Topic::Memberships.to_string()));
        assert!(!is_feed("cc/v1/memberships/x") && !is_feed("cc/v1/queue"));
    }

    #[test]
    fn updates_apply_and_malformed_ones_are_ignored() {
        let memberships = Memberships::default();
        apply(
            &memberships,
            br#"{"v":1,"session_id":"s1","subject":"agent-1","role":"agent","op":"join"}"#,
        );
        assert!(memberships.is_member("s1", "agent-1"));
        apply(
            &memberships,
            br#"{"session_id":"s1","subject":"agent-1","role":"wizard","op":"leave"}"#,
        );
        assert!(
            memberships.is_member("s1", "agent-1"),
            "a malformed update changes nothing"
        );
        apply(
            &memberships,
            br#"{"session_id":"s1","subject":"agent-1","role":"agent","op":"leave"}"#,
        );
        assert!(!memberships.is_member("s1", "agent-1"));
    }

    #[test]
    fn only_the_services_own_publishes_on_the_feed_apply() {
        let join = br#"{"v":1,"session_id":"s1","subject":"ap-1","role":"applicant","op":"join"}"#;
        let identity = |role| crate::identity::Identity {
            subject: "x".to_owned(),
            username: None,
            role,
            anonymous: false,
            expires_at: None,
            issued_at: None,
            token: crate::identity::TokenDetails::default(),
        };
        // (publisher's role, topic, origin, applied)
        let rows = [
            (Role::Service, "cc/v1/memberships", Origin::Client, true),
            (Role::Service, "cc/v1/memberships", Origin::Will, false),
            (Role::Supervisor, "cc/v1/memberships", Origin::Client, false),
            (Role::Service, "cc/v1/queue", Origin::Client, false),
        ];
        for (role, topic, origin, applied) in rows {
            let memberships = Memberships::default();
            let feed = MembershipFeed::new(memberships.clone());
            let publisher = identity(role);
            let mut properties = None;
            let mut publish =
                Publish::new(&publisher, topic, join, 1, false, origin, &mut properties);
            assert_eq!(feed.on_publish(&mut publish), Routing::Route);
            assert_eq!(
                memberships.is_member("s1", "ap-1"),
                applied,
                "{role} {topic} {origin:?}"
            );
        }
    }
}
