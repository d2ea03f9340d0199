//! Revoked staff credentials: subjects whose tokens issued before a given time no longer work.
//!
//! Tokens are self-contained, so disabling a member of staff (or lowering their role) in the
//! database changes nothing for the tokens they already hold until those expire. The admin API
//! records instead a *not-before* time for the subject: from then on the JWT authenticator
//! refuses any token for that subject issued earlier (or without an `iat`), and every live
//! connection authenticated as that subject is ended at once. A token issued at or after the
//! not-before time works again, so re-enabled staff simply log in anew.
//!
//! A broker owns one [`StaffRevocations`] ([`crate::Broker::staff_revocations`]); clones share
//! it. It is filled from the database at start by whoever starts the broker
//! ([`StaffRevocations::load`]), like the memberships.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::auth::Identity;

/// Not-before times by subject, and who to tell when one is set.
#[derive(Clone, Default)]
pub struct StaffRevocations {
    /// subject -> Unix seconds before which its tokens are refused
    not_before: Arc<RwLock<HashMap<String, u64>>>,
    /// Told about every [`StaffRevocations::revoke`], so that the gateway ends live connections.
    on_revoke: Arc<RwLock<Vec<RevokeListener>>>,
}

/// Called with the subject after its credentials were revoked.
pub type RevokeListener = Arc<dyn Fn(&str) + Send + Sync>;

impl StaffRevocations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses `subject`'s tokens issued before `not_before` (Unix seconds), or without an
    /// issue time, and ends its live connections now. A second revocation of the same subject
    /// keeps the later time; either way the subject's live connections are ended, so that a
    /// revocation always means "out now".
    pub fn revoke(&self, subject: &str, not_before: u64) {
        self.record(subject, not_before);
        // After recording: a connection registering meanwhile either is found here or checks
        // the recorded time once registered (`connection::serve`).
        let listeners = self
            .on_revoke
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for listener in listeners {
            listener(subject);
        }
    }

    /// Seeds revocations, such as those persisted in the database, without ending connections:
    /// meant for start, before any listener is served. Like [`StaffRevocations::revoke`], the
    /// later time wins for a subject given twice.
    pub fn load(&self, entries: impl IntoIterator<Item = (String, u64)>) {
        let mut map = self.write();
        for (subject, not_before) in entries {
            keep_later(&mut map, subject, not_before);
        }
    }

    /// The time before which `subject`'s tokens are refused, if it was ever revoked.
    pub fn not_before(&self, subject: &str) -> Option<u64> {
        self.read().get(subject).copied()
    }

    /// Whether a token for `subject` issued at `issued_at` (its `iat`) is refused.
    pub fn refuses(&self, subject: &str, issued_at: Option<u64>) -> bool {
        is_revoked(self.not_before(subject), issued_at)
    }

    /// Whether the credentials `identity` connected with have been revoked since. Anonymous
    /// identities carry no token, so they are never refused here.
    pub(crate) fn refuses_identity(&self, identity: &Identity) -> bool {
        !identity.anonymous && self.refuses(&identity.subject, identity.issued_at)
    }

    /// Registers `listener` for every later [`StaffRevocations::revoke`]. It runs on the
    /// caller's thread and must not block.
    pub fn on_revoke(&self, listener: RevokeListener) {
        self.on_revoke
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(listener);
    }

    fn record(&self, subject: &str, not_before: u64) {
        keep_later(&mut self.write(), subject.to_owned(), not_before);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, u64>> {
        // Each write is a single insert, so a poisoned lock still holds a consistent map.
        self.not_before
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, u64>> {
        self.not_before
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn keep_later(map: &mut HashMap<String, u64>, subject: String, not_before: u64) {
    let entry = map.entry(subject).or_insert(not_before);
    *entry = (*entry).max(not_before);
}

/// The decision: a token is revoked when its subject has a not-before time and the token was
/// issued before it, or does not say when it was issued.
fn is_revoked(not_before: Option<u64>, issued_at: Option<u64>) -> bool {
    match (not_before, issued_at) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(not_before), Some(issued_at)) => issued_at < not_before,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn the_decision() {
        // (not_before, iat, revoked)
        let rows = [
            (None, None, false),
            (None, Some(100), false),
            (Some(100), None, true),
            (Some(100), Some(0), true),
            (Some(100), Some(99), true),
            (Some(100), Some(100), false),
            (Some(100), Some(101), false),
        ];
        for (not_before, issued_at, revoked) in rows {
            assert_eq!(
                is_revoked(not_before, issued_at),
                revoked,
                "not_before {not_before:?}, iat {issued_at:?}"
            );
        }
    }

    #[test]
    fn the_later_revocation_wins() {
        let revocations = StaffRevocations::new();
        revocations.revoke("agent-1", 200);
        revocations.revoke("agent-1", 100);
        assert_eq!(revocations.not_before("agent-1"), Some(200));
        assert!(revocations.refuses("agent-1", Some(150)));
        revocations.revoke("agent-1", 300);
        assert!(revocations.refuses("agent-1", Some(250)));
        assert!(!revocations.refuses("agent-1", Some(300)));
        // Other subjects are untouched.
        assert!(!revocations.refuses("agent-2", None));
    }

    #[test]
    fn loading_seeds_without_telling_listeners() {
        let revocations = StaffRevocations::new();
        let told = Arc::new(Mutex::new(Vec::new()));
        revocations.on_revoke(Arc::new({
            let told = told.clone();
            move |subject| told.lock().unwrap().push(subject.to_owned())
        }));
        revocations.load([
            ("agent-1".to_owned(), 100),
            ("agent-2".to_owned(), 50),
            ("agent-1".to_owned(), 80),
        ]);
        assert_eq!(revocations.not_before("agent-1"), Some(100));
        assert_eq!(revocations.not_before("agent-2"), Some(50));
        assert!(told.lock().unwrap().is_empty());

        // A clone shares the table and the listeners; a revocation tells them.
        revocations.clone().revoke("agent-2", 40);
        assert_eq!(revocations.not_before("agent-2"), Some(50));
        assert_eq!(*told.lock().unwrap(), ["agent-2"]);
    }

    #[test]
    fn anonymous_identities_carry_no_token_to_refuse() {
        let revocations = StaffRevocations::new();
        revocations.revoke("guest", 100);
        let identity = |anonymous, issued_at| Identity {
            subject: "guest".to_owned(),
            username: None,
            role: crate::auth::Role::Agent,
            anonymous,
            expires_at: None,
            issued_at,
        };
        assert!(!revocations.refuses_identity(&identity(true, None)));
        assert!(revocations.refuses_identity(&identity(false, None)));
        assert!(revocations.refuses_identity(&identity(false, Some(99))));
        assert!(!revocations.refuses_identity(&identity(false, Some(100))));
    }
}
