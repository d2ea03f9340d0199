//! Who is there: every open session's applicant, and whether they were last seen present or
//! since when they have been gone; and so how many sessions each applicant has open.
//!
//! Read from the database when a worker starts (and again after a failed batch), then kept
//! current by the batches' decisions (opened, closed) and by what is heard of applicants:
//! their presence on `cc/v1/sessions/{session}/presence/{subject}` (the pipeline subscribes to
//! every session's presence; the gateway sends each one's latest again on subscribing, and
//! publishes `offline` itself when an applicant's last connection ends) and their submissions.
//! `online` or `away` presence and any submission count as present; `offline` as gone from that
//! moment; an applicant not heard of since the pipeline started watching counts as gone since
//! then. `decide::abandon` is the rule that closes sessions whose applicant has been gone long
//! enough.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use schemas::db::entities::session;
use schemas::wire::PresenceStatus;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use super::PipelineError;

/// What was last heard of a session's applicant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Present,
    /// Gone (offline, or not heard of) since then.
    GoneSince(DateTime<Utc>),
}

#[derive(Clone, Debug)]
struct Watched {
    applicant: String,
    seen: Seen,
}

#[derive(Default)]
pub(crate) struct Attendance {
    /// False until read from the database, and after a failed batch (whose decisions it
    /// followed) until read again.
    loaded: bool,
    sessions: HashMap<String, Watched>,
    open_by_applicant: HashMap<String, usize>,
}

impl Attendance {
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// Reads the open sessions from the database at `now`. What was heard of an applicant
    /// before stays; an applicant not heard of counts as gone since `now`.
    pub async fn load(
        &mut self,
        db: &impl ConnectionTrait,
        now: DateTime<Utc>,
    ) -> Result<(), PipelineError> {
        let open: Vec<(String, String)> = session::Entity::find()
            .select_only()
            .column(session::Column::Id)
            .column(session::Column::Applicant)
            .filter(session::Column::Status.ne(session::SessionStatus::Closed))
            .into_tuple()
            .all(db)
            .await?;
        let mut before = std::mem::take(&mut self.sessions);
        self.open_by_applicant.clear();
        for (session_id, applicant) in open {
            let seen = before
                .remove(&session_id)
                .map_or(Seen::GoneSince(now), |watched| watched.seen);
            self.watch(session_id, applicant, seen);
        }
        self.loaded = true;
        Ok(())
    }

    /// After a failed batch: read again before the next decisions rely on it.
    pub fn stale(&mut self) {
        self.loaded = false;
    }

    fn watch(&mut self, session_id: String, applicant: String, seen: Seen) {
        *self.open_by_applicant.entry(applicant.clone()).or_default() += 1;
        self.sessions
            .insert(session_id, Watched { applicant, seen });
    }

    /// Watches an open session of `applicant`, present (for tests that decide without a
    /// database).
    #[cfg(test)]
    pub fn insert_open(&mut self, session_id: &str, applicant: &str) {
        self.watch(session_id.to_owned(), applicant.to_owned(), Seen::Present);
        self.loaded = true;
    }

    /// How many sessions `applicant` has open.
    pub fn open_sessions_of(&self, applicant: &str) -> usize {
        self.open_by_applicant.get(applicant).copied().unwrap_or(0)
    }

    /// The applicant of an open session.
    pub fn applicant_of(&self, session_id: &str) -> Option<&str> {
        self.sessions
            .get(session_id)
            .map(|watched| watched.applicant.as_str())
    }

    /// Takes a batch's decisions (`Effects::opened_sessions`, `Effects::closed`): sessions
    /// opened, with their applicant (present: they just asked), and sessions closed.
    pub fn follow<'a>(
        &mut self,
        opened: impl IntoIterator<Item = (&'a str, &'a str)>,
        closed: &[String],
    ) {
        for (id, applicant) in opened {
            self.watch(id.to_owned(), applicant.to_owned(), Seen::Present);
        }
        for session_id in closed {
            self.closed(session_id);
        }
    }

    fn closed(&mut self, session_id: &str) {
        let Some(watched) = self.sessions.remove(session_id) else {
            return;
        };
        if let Some(count) = self.open_by_applicant.get_mut(&watched.applicant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.open_by_applicant.remove(&watched.applicant);
            }
        }
    }

    /// Something was heard of `subject` in `session` at `now`: a presence status, or (`None`) a
    /// submission. Only the session's applicant counts; others are ignored.
    pub fn heard(
        &mut self,
        session_id: &str,
        subject: &str,
        status: Option<PresenceStatus>,
        now: DateTime<Utc>,
    ) {
        let Some(watched) = self.sessions.get_mut(session_id) else {
            return;
        };
        if watched.applicant != subject {
            return;
        }
        watched.seen = match (status, watched.seen) {
            (Some(PresenceStatus::Offline), Seen::GoneSince(since)) => Seen::GoneSince(since),
            (Some(PresenceStatus::Offline), Seen::Present) => Seen::GoneSince(now),
            (Some(PresenceStatus::Online | PresenceStatus::Away) | None, _) => Seen::Present,
        };
    }

    /// Every open session with what was last heard of its applicant.
    pub fn sessions(&self) -> impl Iterator<Item = (&str, &str, Seen)> {
        self.sessions
            .iter()
            .map(|(id, watched)| (id.as_str(), watched.applicant.as_str(), watched.seen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decide::testing::at;

    fn attendance(sessions: &[(&str, &str)]) -> Attendance {
        let mut attendance = Attendance::default();
        for (id, applicant) in sessions {
            attendance.watch(
                (*id).to_owned(),
                (*applicant).to_owned(),
                Seen::GoneSince(at(0)),
            );
        }
        attendance.loaded = true;
        attendance
    }

    fn seen(attendance: &Attendance, id: &str) -> Seen {
        attendance
            .sessions()
            .find(|(s, _, _)| *s == id)
            .map(|(_, _, seen)| seen)
            .unwrap()
    }

    #[test]
    fn presence_and_submissions_say_who_is_there() {
        let mut attendance = attendance(&[("s-1", "kiosk-1")]);
        use PresenceStatus::{Away, Offline, Online};
        // (what was heard, from whom, at, then seen)
        let rows = [
            (Some(Offline), "kiosk-1", 5, Seen::GoneSince(at(0))),
            (Some(Online), "kiosk-1", 6, Seen::Present),
            (Some(Offline), "agent", 7, Seen::Present),
            (Some(Offline), "kiosk-1", 8, Seen::GoneSince(at(8))),
            (Some(Offline), "kiosk-1", 9, Seen::GoneSince(at(8))),
            (None, "kiosk-1", 10, Seen::Present),
            (Some(Offline), "kiosk-1", 11, Seen::GoneSince(at(11))),
            (Some(Away), "kiosk-1", 12, Seen::Present),
        ];
        for (status, subject, t, expected) in rows {
            attendance.heard("s-1", subject, status, at(t));
            assert_eq!(
                seen(&attendance, "s-1"),
                expected,
                "{status:?} from {subject} at {t}"
            );
        }
        // A session not watched is not learnt from presence.
        attendance.heard("s-9", "kiosk-9", Some(Online), at(1));
        assert!(attendance.sessions().all(|(id, _, _)| id != "s-9"));
    }

    #[test]
    fn open_sessions_are_counted_per_applicant() {
        let mut attendance =
            attendance(&[("s-1", "kiosk-1"), ("s-2", "kiosk-1"), ("s-3", "kiosk-2")]);
        assert_eq!(attendance.open_sessions_of("kiosk-1"), 2);
        assert_eq!(attendance.applicant_of("s-3"), Some("kiosk-2"));
        attendance.follow([("s-4", "kiosk-1")], &["s-1".to_owned()]);
        assert_eq!(attendance.applicant_of("s-4"), Some("kiosk-1"));
        attendance.closed("s-4");
        assert_eq!(attendance.open_sessions_of("kiosk-1"), 1);
        attendance.closed("s-3");
        assert_eq!(attendance.open_sessions_of("kiosk-2"), 0);
        assert_eq!(attendance.applicant_of("s-3"), None);
    }
}
