//! The rows the help desk's figures are computed from, as `stats_load` reads them and
//! `stats` (and `stats_utilization`) compute on them: a range, each session's stream entries,
//! staff participations and availability changes.

use chrono::{DateTime, Utc};
use schemas::db::entities::{session, survey_response};
use schemas::wire::SessionEvent;

/// The range the figures are over: from `since` (inclusive) to `until` (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// One entry of a session's stream as the figures need it: a text (its body is not needed) or
/// an event.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub session_id: String,
    pub seq: i64,
    pub sender: String,
    pub at: DateTime<Utc>,
    pub kind: EntryKind,
}

#[derive(Clone, Debug)]
pub(crate) enum EntryKind {
    Text,
    Event(SessionEvent),
}

/// A member of staff's participation in a session.
#[derive(Clone, Debug)]
pub(crate) struct Stint {
    pub subject: String,
    pub joined_at: DateTime<Utc>,
    pub left_at: Option<DateTime<Utc>>,
    /// When the session closed, if it has.
    pub session_closed_at: Option<DateTime<Utc>>,
}

/// A `staff.availability` entry: whether the person was available before and after `at`.
#[derive(Clone, Debug)]
pub(crate) struct AvailabilityChange {
    pub subject: String,
    pub at: DateTime<Utc>,
    pub before: bool,
    pub after: bool,
}

/// A member of staff the figures may list.
#[derive(Clone, Debug)]
pub(crate) struct StaffMember {
    pub subject: String,
    pub team: Option<String>,
}

/// The rows the figures are computed from.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// The sessions opened in the range (within the filters).
    pub sessions: Vec<session::Model>,
    /// Their texts and events.
    pub entries: Vec<Entry>,
    pub surveys: Vec<survey_response::Model>,
    /// The staff who may be listed (within the filters).
    pub staff: Vec<StaffMember>,
    /// Their participations that overlap the range, in any session.
    pub stints: Vec<Stint>,
    /// Their availability changes in the range, and the last one before it.
    pub availability: Vec<AvailabilityChange>,
}
