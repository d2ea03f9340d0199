//! Who belongs to which session, as the gateway's authorizer sees it: joins and leaves as the
//! chat pipeline announces them (`chat::feed`), and closed sessions kept for their participants'
//! survey and resync within a window, then forgotten.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::identity::Role;

/// Which sessions each subject belongs to, as the chat pipeline announces joins, leaves and
/// closes (`broker::chat::MembershipFeed`). The gateway reads it on every check; a broker owns one
/// ([`crate::Broker::memberships`]), and clones share it.
#[derive(Clone)]
pub struct Memberships {
    sessions: Arc<RwLock<Members>>,
    /// Closed sessions whose memberships are still kept, oldest first.
    closed: Arc<Mutex<ClosedQueue>>,
    /// Told about every removal, so that the gateway can revoke live subscriptions at once.
    on_leave: Arc<RwLock<Vec<LeaveListener>>>,
    /// Told when a closed session is forgotten altogether.
    on_forget: Arc<RwLock<Vec<ForgetListener>>>,
}

/// Called with (session, subject) after a subject has left a session.
pub type LeaveListener = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Called with a session id once a closed session's memberships have been dropped.
pub type ForgetListener = Arc<dyn Fn(&str) + Send + Sync>;

/// How long a closed session's participants keep their access (for the survey and resync):
/// while it is among the `kept` most recently closed sessions and, if `access` is set, no
/// longer than that after it closed, whichever ends first. Then the session is forgotten: a
/// bound on memory however many sessions come and go (`mqtt.closed_sessions_kept`,
/// `mqtt.closed_session_access_secs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClosedSessions {
    pub kept: usize,
    pub access: Option<Duration>,
}

impl Default for ClosedSessions {
    /// Room for the sessions a busy help desk closes in a day or two, at a few kilobytes each;
    /// no time limit.
    fn default() -> Self {
        Self {
            kept: 2_000,
            access: None,
        }
    }
}

/// Who belongs where, both ways round: by session for every check, by subject for what a
/// subject's leaving concerns (its presence).
#[derive(Default)]
struct Members {
    /// session id -> subject -> role in that session
    by_session: HashMap<String, HashMap<String, Role>>,
    /// subject -> the sessions it belongs to
    by_subject: HashMap<String, HashSet<String>>,
}

/// The closed sessions still kept, oldest first, with when each closed.
struct ClosedQueue {
    window: ClosedSessions,
    sessions: VecDeque<(String, Instant)>,
    /// The same sessions' ids, to tell a closed session from an open one at once.
    ids: HashSet<String>,
}

impl ClosedQueue {
    /// Removes and returns the sessions outside the window at `now`.
    fn evict(&mut self, now: Instant) -> Vec<String> {
        let mut evicted = Vec::new();
        while let Some((_, closed_at)) = self.sessions.front() {
            let expired = self
                .window
                .access
                .is_some_and(|access| now.saturating_duration_since(*closed_at) >= access);
            if self.sessions.len() <= self.window.kept && !expired {
                break;
            }
            if let Some((session, _)) = self.sessions.pop_front() {
                self.ids.remove(&session);
                evicted.push(session);
            }
        }
        evicted
    }
}

impl Default for Memberships {
    fn default() -> Self {
        Self::new(ClosedSessions::default())
    }
}

impl Memberships {
    /// No memberships yet; closed sessions are kept as `window` says.
    pub fn new(window: ClosedSessions) -> Self {
        Self {
            sessions: Arc::default(),
            closed: Arc::new(Mutex::new(ClosedQueue {
                window,
                sessions: VecDeque::new(),
                ids: HashSet::new(),
            })),
            on_leave: Arc::default(),
            on_forget: Arc::default(),
        }
    }

    /// How long closed sessions are kept.
    pub fn closed_window(&self) -> ClosedSessions {
        self.closed_queue().window
    }

    /// Registers `listener` for every later [`Memberships::leave`]. It runs on the caller's
    /// thread and must not block.
    pub fn on_leave(&self, listener: LeaveListener) {
        self.on_leave
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(listener);
    }

    /// Registers `listener` for every closed session that is forgotten.
    pub fn on_forget(&self, listener: ForgetListener) {
        self.on_forget
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(listener);
    }

    /// Records that `session` closed now. Its members keep access while the window of
    /// [`ClosedSessions`] holds it; then every one of them leaves it and it is forgotten.
    pub fn close(&self, session: &str) {
        self.close_at(session, Instant::now());
    }

    /// [`Memberships::close`] at a given time.
    pub fn close_at(&self, session: &str, now: Instant) {
        let evicted = {
            // The pipeline announces a close once: a resubmitted close gets the original
            // acknowledgement and publishes nothing.
            let mut closed = self.closed_queue();
            closed.sessions.push_back((session.to_owned(), now));
            closed.ids.insert(session.to_owned());
            closed.evict(now)
        };
        for session in evicted {
            self.forget(&session);
        }
    }

    /// Forgets the closed sessions whose access has run out by `now`; the broker calls this
    /// regularly when `access` is set, since no close may come to push them out.
    pub fn forget_expired(&self, now: Instant) {
        let evicted = self.closed_queue().evict(now);
        for session in evicted {
            self.forget(&session);
        }
    }

    fn closed_queue(&self) -> std::sync::MutexGuard<'_, ClosedQueue> {
        // Each change is a push or pops from the front, so a poisoned lock still holds a
        // consistent queue.
        self.closed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget(&self, session: &str) {
        let members: Vec<String> = self
            .read()
            .by_session
            .get(session)
            .map(|members| members.keys().cloned().collect())
            .unwrap_or_default();
        for subject in members {
            self.leave(session, &subject);
        }
        let listeners = self
            .on_forget
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for listener in listeners {
            listener(session);
        }
    }

    /// Sessions with at least one member, for tests and statistics.
    pub fn sessions(&self) -> usize {
        self.read().by_session.len()
    }

    pub fn join(&self, session: &str, subject: &str, role: Role) {
        let mut members = self.write();
        members
            .by_session
            .entry(session.to_owned())
            .or_default()
            .insert(subject.to_owned(), role);
        members
            .by_subject
            .entry(subject.to_owned())
            .or_default()
            .insert(session.to_owned());
    }

    /// Whether anyone belongs to `session` (open, or closed and still kept).
    pub fn has_members(&self, session: &str) -> bool {
        self.read().by_session.contains_key(session)
    }

    /// The sessions `subject` belongs to that are not closed.
    pub fn open_sessions_of(&self, subject: &str) -> Vec<String> {
        let sessions: Vec<String> = self
            .read()
            .by_subject
            .get(subject)
            .map(|sessions| sessions.iter().cloned().collect())
            .unwrap_or_default();
        let closed = self.closed_queue();
        sessions
            .into_iter()
            .filter(|session| !closed.ids.contains(session))
            .collect()
    }

    /// Removes `subject` from `session` (a leave, or a transfer away) and revokes its access.
    pub fn leave(&self, session: &str, subject: &str) {
        {
            let mut members = self.write();
            if let Some(of_session) = members.by_session.get_mut(session) {
                of_session.remove(subject);
                if of_session.is_empty() {
                    members.by_session.remove(session);
                }
            }
            if let Some(of_subject) = members.by_subject.get_mut(subject) {
                of_subject.remove(session);
                if of_subject.is_empty() {
                    members.by_subject.remove(subject);
                }
            }
        }
        let listeners = self
            .on_leave
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for listener in listeners {
            listener(session, subject);
        }
    }

    pub fn is_member(&self, session: &str, subject: &str) -> bool {
        self.read()
            .by_session
            .get(session)
            .is_some_and(|members| members.contains_key(subject))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Members> {
        // Each write is an insert or a remove in both maps, with nothing between that can
        // panic, so a poisoned lock still holds consistent maps.
        self.sessions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Members> {
        self.sessions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests;
