//! The membership feed: the chat pipeline announces joins and leaves on `cc/v1/memberships`, and
//! the gateway applies each one to its authorizer the moment the pipeline's PUBLISH arrives, in
//! the pipeline's own connection task. The pipeline publishes a membership before the
//! acknowledgement that tells the participant about it, so by the time the participant can react
//! (subscribe to the session), its membership is in place; a separate subscriber link would race
//! the acknowledgement (`courtchat bench chat` hit that race: SUBACK 0x80 on an applicant's
//! first subscription). Going through MQTT keeps this the same whether the bridge runs in this
//! process or in another one.

use schemas::wire::{MembershipOp, MembershipUpdate};

use crate::identity::Role;
use crate::memberships::Memberships;

/// Client ids in this namespace belong to the gateway's internal links; clients may not use
/// them (see `connection::check_client_id`), so none can take an internal link over.
pub(crate) const INTERNAL_PREFIX: &str = "courtchat.";

/// Whether `topic` is `cc/v1/memberships` (checked on each of the pipeline's publishes, so
/// without parsing or allocating).
pub(crate) fn is_feed(topic: &str) -> bool {
    topic
        .strip_prefix(schemas::topics::PREFIX)
        .is_some_and(|rest| rest == "/memberships")
}

/// Applies one update; a malformed one is logged and ignored (only the service role can publish
/// here, so it would be a bug in the pipeline, not an attack).
pub(crate) fn apply(memberships: &Memberships, payload: &[u8]) {
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
}
