//! What the audit trail says was stored, and checking the conversation tables against it.
//!
//! The chain's MACs prove that the audit entries are as they were written; on their own they say
//! nothing about the `messages` and `survey_responses` rows the entries describe, so a rewritten
//! body or a deleted message would go unnoticed. Every entry that records a stored row therefore
//! carries a digest of that row's meaningful fields in its detail (`"digest"`, beside `"seq"` for
//! a message; in the `survey.answered` entry for a survey answer). The detail is inside the MAC,
//! so the row's content is covered by the chain too.
//!
//! Checking goes in chain order, a page of entries at a time (so a large store is never held in
//! memory): each entry that names a row must find that row with the same digest. Then every row
//! must be named by an entry; that second pass runs only when the tables hold more rows than the
//! chain names, to say which one is extra. Entries written before digests existed still name
//! their row (its presence is checked) but not its content: they are counted as unverifiable,
//! not as tampering.
//!
//! Retention blanks the content of old sessions in place; the `retention.purged` entry it
//! appends names each row it changed with its digest before and after ([`purged`]), so such a
//! row is counted as purged by policy, and any other difference is still tampering.

use chrono::SecondsFormat;
use ring::digest;
use schemas::db::entities::{message, survey_response};
use sea_orm::ActiveEnum;
use sea_orm::prelude::DateTimeUtc;

/// The action of the entry that records a survey answer (written by the pipeline).
const SURVEY_ANSWERED: &str = "survey.answered";

/// Entries whose detail names a stored row's `seq` without recording it: the queue's
/// `session.routed` names the `joined` entry that its own `session.joined` entry records, and
/// `session.staff_removed` the `left` entry of staff taken out of a session. Read
/// as claims, they would count that row twice, once without a digest (a fresh install's
/// `audit verify` then reported rows "recorded before digests"), and the doubled count could
/// hide a row added outside the pipeline.
const REFERS_TO_ROWS: &[&str] = &["session.routed", "session.staff_removed"];

/// The content of a `messages` row that its audit entry vouches for.
///
/// Every column but the surrogate `id` is in, each for a reason:
/// - `session_id` and `seq`: the row's place in the one total order of its conversation; moving
///   a message to another place (swapping two sequence numbers, or into another session) changes
///   what the conversation says as surely as rewriting it;
/// - `sender`: who said it;
/// - `kind`: a note is staff-only and an event is not speech; turning one kind into another
///   changes who saw it and what it means;
/// - `body`: what was said (an event's JSON, for events);
/// - `client_msg_id`: ties the row to the sender's own submission and its acknowledgement, which
///   the sender holds;
/// - `created_at`: when it was said, at microseconds in RFC 3339 (what both databases keep, and
///   how the audit MAC writes times).
///
/// `id` is left out: it only numbers rows for the database and means nothing in the record.
#[derive(Clone, Copy, Debug)]
pub struct MessageRecord<'a> {
    pub session_id: &'a str,
    pub seq: i64,
    pub sender: &'a str,
    pub kind: message::MessageKind,
    pub body: &'a str,
    pub client_msg_id: &'a str,
    pub created_at: &'a DateTimeUtc,
}

impl MessageRecord<'_> {
    /// Hex SHA-256 over the length-prefixed fields, after a label that keeps a message's digest
    /// from ever equalling a survey answer's. This is a stored format: entries already written
    /// carry it, so changing it makes every earlier entry fail to verify.
    pub fn digest(&self) -> String {
        let mut fields = Fields::new("courtchat/message/v1");
        fields.put(self.session_id);
        fields.put(&self.seq.to_string());
        fields.put(self.sender);
        fields.put(&self.kind.to_value());
        fields.put(self.body);
        fields.put(self.client_msg_id);
        fields.put(&timestamp(self.created_at));
        fields.finish()
    }
}

impl<'a> From<&'a message::Model> for MessageRecord<'a> {
    fn from(row: &'a message::Model) -> Self {
        Self {
            session_id: &row.session_id,
            seq: row.seq,
            sender: &row.sender,
            kind: row.kind,
            body: &row.body,
            client_msg_id: &row.client_msg_id,
            created_at: &row.created_at,
        }
    }
}

/// The content of a `survey_responses` row that its `survey.answered` entry vouches for:
/// `session_id` (whose conversation was rated; one answer per session), `rating` and `comment`
/// (the answer itself; no comment and an empty one are told apart) and `submitted_at` (when,
/// as for messages).
#[derive(Clone, Copy, Debug)]
pub struct SurveyRecord<'a> {
    pub session_id: &'a str,
    pub rating: i16,
    pub comment: Option<&'a str>,
    pub submitted_at: &'a DateTimeUtc,
}

impl SurveyRecord<'_> {
    /// Hex SHA-256 over the length-prefixed fields, as [`MessageRecord::digest`].
    pub fn digest(&self) -> String {
        let mut fields = Fields::new("courtchat/survey/v1");
        fields.put(self.session_id);
        fields.put(&self.rating.to_string());
        match self.comment {
            Some(comment) => fields.put(comment),
            None => fields.absent(),
        }
        fields.put(&timestamp(self.submitted_at));
        fields.finish()
    }
}

impl<'a> From<&'a survey_response::Model> for SurveyRecord<'a> {
    fn from(row: &'a survey_response::Model) -> Self {
        Self {
            session_id: &row.session_id,
            rating: row.rating,
            comment: row.comment.as_deref(),
            submitted_at: &row.submitted_at,
        }
    }
}

fn timestamp(at: &DateTimeUtc) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Length-prefixed fields into SHA-256, so that no two different rows have the same input.
struct Fields(digest::Context);

impl Fields {
    fn new(label: &str) -> Self {
        let mut fields = Self(digest::Context::new(&digest::SHA256));
        fields.put(label);
        fields
    }

    fn put(&mut self, field: &str) {
        self.0.update(&(field.len() as u64).to_be_bytes());
        self.0.update(field.as_bytes());
    }

    /// A missing optional field: a length no present field can have.
    fn absent(&mut self) {
        self.0.update(&u64::MAX.to_be_bytes());
    }

    fn finish(self) -> String {
        hex::encode(self.0.finish().as_ref())
    }
}

/// A stored row, as a difference names it.
mod check;
mod key;
mod purged;

pub(crate) use check::{Claim, RecordCheck};
pub use check::{Difference, Discrepancy, RecordCounts};
pub use key::RecordKey;
pub(crate) use purged::{RETENTION_PURGED, Redactions};

#[cfg(test)]
mod digest_tests;
#[cfg(test)]
mod tests;
