//! Revoked staff credentials: subjects whose tokens issued before a given time no longer work.
//!
//! Tokens are self-contained, so disabling a member of staff (or lowering their role) in the
//! database changes nothing for the tokens they already hold until those expire. The admin API
//! records instead a *not-before* time for the subject: from then on the JWT authenticator
//! refuses any token for that subject issued earlier (or without an `iat`), and every live
//! connection authenticated as that subject is ended at once. A token issued at or after the
//! not-before time works again, so re-enabled staff simply log in anew.
//!
//! One token can also be ended alone (`POST /v1/logout`): staff tokens carry an id (`jti`), and
//! an ended id is refused by the authenticator (and by the admin API, which asks the same
//! table) until the token would have expired anyway; live connections authenticated with it
//! end at once, while the subject's other tokens go on working.
//!
//! A broker owns one [`StaffRevocations`] ([`crate::Broker::staff_revocations`]); clones share
//! it. It is filled from the database at start by whoever starts the broker
//! ([`StaffRevocations::load`], [`StaffRevocations::load_ended`]), like the memberships.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::identity::Identity;

/// Not-before times by subject, ended tokens, and who to tell when either is set.
#[derive(Clone, Default)]
pub struct StaffRevocations {
    /// subject -> Unix seconds before which its tokens are refused
    not_before: Arc<RwLock<HashMap<String, u64>>>,
    /// token id -> Unix seconds at which the token expires (and can be forgotten)
    ended: Arc<RwLock<HashMap<String, u64>>>,
    /// Told about every [`StaffRevocations::revoke`] and [`StaffRevocations::end_token`], so
    /// that the gateway ends live connections.
    on_revoke: Arc<RwLock<Vec<RevokeListener>>>,
}

/// Called with the subject after its credentials, or one of its tokens, were revoked. The
/// connection then ends if [`StaffRevocations::refuses_identity`] refuses what it connected with.
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
        self.tell(subject);
    }

    /// Refuses the token `token_id` of `subject` (which expires at `expires_at`, Unix seconds)
    /// from now on, and ends the live connections authenticated with it. Ended tokens that
    /// have expired since are forgotten here, so that the table holds only tokens that would
    /// still work.
    pub fn end_token(&self, subject: &str, token_id: &str, expires_at: u64) {
        {
            let mut ended = write(&self.ended);
            let now = unix_now();
            ended.retain(|_, expiry| *expiry >= now);
            ended.insert(token_id.to_owned(), expires_at);
        }
        self.tell(subject);
    }

    /// Seeds ended tokens, `(token id, expiry in Unix seconds)`, such as those kept in the
    /// database, without ending connections: meant for start. Expired ones are skipped.
    pub fn load_ended(&self, entries: impl IntoIterator<Item = (String, u64)>) {
        let now = unix_now();
        write(&self.ended).extend(entries.into_iter().filter(|(_, expiry)| *expiry >= now));
    }

    /// Whether the token with id `token_id` was ended; a token without an id never is.
    pub fn ended(&self, token_id: Option<&str>) -> bool {
        token_id.is_some_and(|id| read(&self.ended).contains_key(id))
    }

    /// Tells the listeners about `subject`, after recording: a connection registering
    /// meanwhile either is found here or checks what was recorded once registered
    /// (`connection::serve`).
    fn tell(&self, subject: &str) {
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

    /// Whether the credentials `identity` connected with have been revoked since, or its token
    /// ended. Anonymous identities carry no token, so they are never refused here.
    pub(crate) fn refuses_identity(&self, identity: &Identity) -> bool {
        !identity.anonymous
            && (self.refuses(&identity.subject, identity.issued_at)
                || self.ended(identity.token.id.as_deref()))
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
        read(&self.not_before)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, u64>> {
        write(&self.not_before)
    }
}

// Each write is a single insert or a retain, so a poisoned lock still holds a consistent map.
fn read(
    map: &RwLock<HashMap<String, u64>>,
) -> std::sync::RwLockReadGuard<'_, HashMap<String, u64>> {
    map.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(
    map: &RwLock<HashMap<String, u64>>,
) -> std::sync::RwLockWriteGuard<'_, HashMap<String, u64>> {
    map.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
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
            role: crate::identity::Role::Agent,
            anonymous,
            expires_at: None,
            issued_at,
            token: crate::identity::TokenDetails::default(),
        };
        assert!(!revocations.refuses_identity(&identity(true, None)));
        assert!(revocations.refuses_identity(&identity(false, None)));
        assert!(revocations.refuses_identity(&identity(false, Some(99))));
        assert!(!revocations.refuses_identity(&identity(false, Some(100))));
    }

    #[test]
    fn an_ended_token_is_refused_and_its_subjects_other_tokens_are_not() {
        let revocations = StaffRevocations::new();
        let told = Arc::new(Mutex::new(Vec::new()));
        revocations.on_revoke(Arc::new({
            let told = told.clone();
            move |subject| told.lock().unwrap().push(subject.to_owned())
        }));
        let identity = |id: Option<&str>| Identity {
            subject: "ann".to_owned(),
            username: None,
            role: crate::identity::Role::Admin,
            anonymous: false,
            expires_at: None,
            issued_at: Some(100),
            token: crate::identity::TokenDetails {
                id: id.map(str::to_owned),
                ..Default::default()
            },
        };
        let later = unix_now() + 3600;
        revocations.end_token("ann", "t-1", later);
        assert_eq!(*told.lock().unwrap(), ["ann"]);
        assert!(revocations.ended(Some("t-1")));
        assert!(revocations.refuses_identity(&identity(Some("t-1"))));
        assert!(!revocations.refuses_identity(&identity(Some("t-2"))));
        assert!(!revocations.refuses_identity(&identity(None)));
        assert!(!revocations.ended(None));

        // Loading skips what has expired, and ending another token forgets expired ones.
        revocations.load_ended([
            ("t-old".to_owned(), unix_now() - 10),
            ("t-3".to_owned(), later),
        ]);
        assert!(!revocations.ended(Some("t-old")));
        assert!(revocations.ended(Some("t-3")));
        write(&revocations.ended).insert("t-expired".to_owned(), unix_now() - 10);
        revocations.end_token("bob", "t-4", later);
        assert!(!revocations.ended(Some("t-expired")));
        assert!(revocations.ended(Some("t-1")) && revocations.ended(Some("t-4")));
    }
}
