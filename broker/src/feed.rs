//! The membership feed: the gateway's own subscriber to `cc/v1/memberships`, where the chat
//! pipeline announces joins and leaves. Applying them here, rather than sharing memory with the
//! pipeline, works the same whether the bridge runs in this process or in another one.

use rumqttd::Notification;
use schemas::topics::Topic;
use schemas::wire::{MembershipOp, MembershipUpdate, ParticipantRole};
use tokio::sync::oneshot;

use crate::acl::Memberships;
use crate::auth::Role;
use crate::router::{Command, LinkKey, RouterFeeder};

/// Client ids in this namespace belong to the gateway's internal links; clients may not use
/// them (see `connection::check_client_id`), so none can take an internal link over.
pub(crate) const INTERNAL_PREFIX: &str = "courtchat.";

/// Attaches the feed's link and applies every update until the router goes away.
pub(crate) async fn run(router: RouterFeeder, memberships: Memberships, key: LinkKey) {
    let (reply, answer) = oneshot::channel();
    let attach = Command::Attach {
        key,
        client_id: format!("{INTERNAL_PREFIX}memberships"),
        clean_session: true,
        reply,
    };
    if router.send(attach).await.is_err() {
        return;
    }
    let mut rx = match answer.await {
        Ok(Ok(rx)) => rx,
        _ => {
            tracing::error!(
                "the membership feed could not attach to the router; memberships will not update"
            );
            return;
        }
    };
    let subscribe = Command::Subscribe {
        key,
        filters: vec![Topic::Memberships.to_string()],
    };
    if router.send(subscribe).await.is_err() {
        return;
    }
    loop {
        match rx.next().await {
            Ok(Some(Notification::Forward(forward))) => {
                apply(&memberships, &forward.publish.payload)
            }
            Ok(Some(Notification::Unschedule)) => {
                if rx.wake().await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Applies one update; a malformed one is logged and ignored (only the service role can publish
/// here, so it would be a bug in the pipeline, not an attack).
pub(crate) fn apply(memberships: &Memberships, payload: &[u8]) {
    match serde_json::from_slice::<MembershipUpdate>(payload) {
        Ok(update) => {
            let role = match update.role {
                ParticipantRole::Applicant => Role::Applicant,
                ParticipantRole::Agent => Role::Agent,
                ParticipantRole::Supervisor => Role::Supervisor,
            };
            match update.op {
                MembershipOp::Join => memberships.join(&update.session_id, &update.subject, role),
                MembershipOp::Leave => memberships.leave(&update.session_id, &update.subject),
            }
        }
        Err(err) => tracing::warn!(error = %err, "malformed membership update ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
