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

use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::SecondsFormat;
use ring::digest;
use schemas::db::entities::{audit_event, message, survey_response};
use sea_orm::prelude::DateTimeUtc;
use sea_orm::{
    ActiveEnum, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde::Deserialize;

use crate::audit::{hex, in_statement_sizes};

/// The action of the entry that records a survey answer (written by the pipeline).
const SURVEY_ANSWERED: &str = "survey.answered";

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
        hex(self.0.finish().as_ref())
    }
}

/// A stored row, as a difference names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RecordKey {
    Message { session_id: String, seq: i64 },
    Survey { session_id: String },
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Message { session_id, seq } => write!(f, "message {session_id}#{seq}"),
            Self::Survey { session_id } => write!(f, "the survey answer of session {session_id}"),
        }
    }
}

/// How a stored row differs from the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discrepancy {
    /// The row is there, but not as recorded.
    Changed,
    /// The entry names a row that is not there.
    Deleted,
    /// A row that no entry names.
    Unrecorded,
}

/// The first stored row that differs from what the chain recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The audit entry that recorded the row (none for a row no entry names).
    pub entry: Option<i64>,
    pub record: RecordKey,
    pub discrepancy: Discrepancy,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(entry) = self.entry {
            write!(f, "audit entry {entry}: ")?;
        }
        let record = &self.record;
        match self.discrepancy {
            Discrepancy::Changed => write!(
                f,
                "{record} differs from what was recorded (its content, sender, kind, time or \
                 place was changed)"
            ),
            Discrepancy::Deleted => write!(f, "{record} was deleted"),
            Discrepancy::Unrecorded => write!(
                f,
                "{record} has no audit entry (it was added outside the pipeline)"
            ),
        }
    }
}

/// Stored rows checked against the entries that recorded them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordCounts {
    /// Messages whose digest matched.
    pub messages: u64,
    /// Survey answers whose digest matched.
    pub surveys: u64,
    /// Rows recorded before entries carried digests: present, but their content cannot be
    /// checked.
    pub unverifiable: u64,
}

/// A row one audit entry says was stored, with the digest of its content if the entry has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    entry: i64,
    record: RecordKey,
    digest: Option<String>,
}

/// The parts of an entry's detail that name a row.
#[derive(Deserialize)]
struct Detail {
    seq: Option<i64>,
    digest: Option<String>,
}

impl Claim {
    /// What `entry` (already verified in the chain) says was stored: the pipeline's entries for
    /// stream entries carry the message's `seq`, and `survey.answered` the survey's session.
    pub(crate) fn of(entry: &audit_event::Model) -> Option<Self> {
        let session_id = entry.session_id.clone()?;
        let detail: Detail = serde_json::from_str(&entry.detail).ok()?;
        let record = if entry.action == SURVEY_ANSWERED {
            RecordKey::Survey { session_id }
        } else {
            RecordKey::Message {
                session_id,
                seq: detail.seq?,
            }
        };
        Some(Self {
            entry: entry.id,
            record,
            digest: detail.digest,
        })
    }
}

/// Checks the conversation tables against the claims of a chain walked in order.
#[derive(Default)]
pub(crate) struct RecordCheck {
    pub(crate) counts: RecordCounts,
    /// Rows found for the claims so far (with a digest or without).
    messages_named: u64,
    surveys_named: u64,
}

impl RecordCheck {
    /// Looks up the rows `claims` (consecutive, in chain order) name and returns the first that
    /// is missing or differs.
    pub(crate) async fn check<C: ConnectionTrait>(
        &mut self,
        db: &C,
        claims: &[Claim],
    ) -> Result<Option<Difference>, DbErr> {
        let (messages, surveys) = rows_named(db, claims).await?;
        for claim in claims {
            let stored = match &claim.record {
                RecordKey::Message { session_id, seq } => messages
                    .get(&(session_id.clone(), *seq))
                    .map(|row| MessageRecord::from(row).digest()),
                RecordKey::Survey { session_id } => surveys
                    .get(session_id)
                    .map(|row| SurveyRecord::from(row).digest()),
            };
            let discrepancy = match (stored, &claim.digest) {
                (None, _) => Some(Discrepancy::Deleted),
                (Some(stored), Some(recorded)) if stored != *recorded => Some(Discrepancy::Changed),
                (Some(_), recorded) => {
                    let is_message = matches!(claim.record, RecordKey::Message { .. });
                    if is_message {
                        self.messages_named += 1;
                    } else {
                        self.surveys_named += 1;
                    }
                    match (recorded, is_message) {
                        (None, _) => self.counts.unverifiable += 1,
                        (Some(_), true) => self.counts.messages += 1,
                        (Some(_), false) => self.counts.surveys += 1,
                    }
                    None
                }
            };
            if let Some(discrepancy) = discrepancy {
                return Ok(Some(Difference {
                    entry: Some(claim.entry),
                    record: claim.record.clone(),
                    discrepancy,
                }));
            }
        }
        Ok(None)
    }

    /// After the whole chain has verified and every row it names matched: a row that no entry
    /// names. The chain names each row once, so this only searches when the tables hold more
    /// rows than the chain named.
    pub(crate) async fn unrecorded<C: ConnectionTrait>(
        &self,
        db: &C,
        page: u64,
    ) -> Result<Option<Difference>, DbErr> {
        if message::Entity::find().count(db).await? > self.messages_named
            && let Some(difference) = first_unrecorded_message(db, page).await?
        {
            return Ok(Some(difference));
        }
        if survey_response::Entity::find().count(db).await? > self.surveys_named {
            return first_unrecorded_survey(db, page).await;
        }
        Ok(None)
    }
}

type MessageRows = HashMap<(String, i64), message::Model>;
type SurveyRows = HashMap<String, survey_response::Model>;

/// The stored rows `claims` name, by key: exact lookups, in statements of a few sizes.
async fn rows_named<C: ConnectionTrait>(
    db: &C,
    claims: &[Claim],
) -> Result<(MessageRows, SurveyRows), DbErr> {
    let mut message_keys = Vec::new();
    let mut survey_keys = Vec::new();
    for claim in claims {
        match &claim.record {
            RecordKey::Message { session_id, seq } => message_keys.push((session_id, *seq)),
            RecordKey::Survey { session_id } => survey_keys.push(session_id),
        }
    }
    let mut messages = HashMap::new();
    for run in in_statement_sizes(&message_keys) {
        let mut named = Condition::any();
        for (session_id, seq) in run {
            named = named.add(
                Condition::all()
                    .add(message::Column::SessionId.eq(session_id.as_str()))
                    .add(message::Column::Seq.eq(*seq)),
            );
        }
        for row in message::Entity::find().filter(named).all(db).await? {
            messages.insert((row.session_id.clone(), row.seq), row);
        }
    }
    let mut surveys = HashMap::new();
    for run in in_statement_sizes(&survey_keys) {
        let named = survey_response::Column::SessionId.is_in(run.iter().map(|id| id.as_str()));
        for row in survey_response::Entity::find()
            .filter(named)
            .all(db)
            .await?
        {
            surveys.insert(row.session_id.clone(), row);
        }
    }
    Ok((messages, surveys))
}

/// The first message, by session and sequence number, that no entry names: sessions are
/// compared by how many rows they hold and how many the chain names, and only a session that
/// holds more is searched row by row.
async fn first_unrecorded_message<C: ConnectionTrait>(
    db: &C,
    page: u64,
) -> Result<Option<Difference>, DbErr> {
    let mut after: Option<String> = None;
    loop {
        let mut query = message::Entity::find()
            .select_only()
            .column(message::Column::SessionId)
            .column_as(message::Column::Id.count(), "rows")
            .group_by(message::Column::SessionId)
            .order_by_asc(message::Column::SessionId)
            .limit(page);
        if let Some(after) = &after {
            query = query.filter(message::Column::SessionId.gt(after.as_str()));
        }
        let sessions: Vec<(String, i64)> = query.into_tuple().all(db).await?;
        if sessions.is_empty() {
            return Ok(None);
        }
        for (session_id, rows) in sessions {
            let named = seqs_named(db, &session_id, page).await?;
            if rows as usize > named.len()
                && let Some(seq) = first_seq_not_in(db, &session_id, &named, page).await?
            {
                return Ok(Some(Difference {
                    entry: None,
                    record: RecordKey::Message { session_id, seq },
                    discrepancy: Discrepancy::Unrecorded,
                }));
            }
            after = Some(session_id);
        }
    }
}

/// The sequence numbers the chain names in one session (entries read a page at a time through
/// the `(session_id, id)` index).
async fn seqs_named<C: ConnectionTrait>(
    db: &C,
    session_id: &str,
    page: u64,
) -> Result<HashSet<i64>, DbErr> {
    let mut named = HashSet::new();
    let mut after = None;
    loop {
        let mut query = audit_event::Entity::find()
            .filter(audit_event::Column::SessionId.eq(session_id))
            .order_by_asc(audit_event::Column::Id)
            .limit(page);
        if let Some(after) = after {
            query = query.filter(audit_event::Column::Id.gt(after));
        }
        let entries = query.all(db).await?;
        let Some(last) = entries.last() else {
            return Ok(named);
        };
        after = Some(last.id);
        named.extend(entries.iter().filter_map(|entry| match Claim::of(entry) {
            Some(Claim {
                record: RecordKey::Message { seq, .. },
                ..
            }) => Some(seq),
            _ => None,
        }));
    }
}

async fn first_seq_not_in<C: ConnectionTrait>(
    db: &C,
    session_id: &str,
    named: &HashSet<i64>,
    page: u64,
) -> Result<Option<i64>, DbErr> {
    let mut after = None;
    loop {
        let mut query = message::Entity::find()
            .select_only()
            .column(message::Column::Seq)
            .filter(message::Column::SessionId.eq(session_id))
            .order_by_asc(message::Column::Seq)
            .limit(page);
        if let Some(after) = after {
            query = query.filter(message::Column::Seq.gt(after));
        }
        let seqs: Vec<i64> = query.into_tuple().all(db).await?;
        let Some(&last) = seqs.last() else {
            return Ok(None);
        };
        if let Some(seq) = seqs.into_iter().find(|seq| !named.contains(seq)) {
            return Ok(Some(seq));
        }
        after = Some(last);
    }
}

/// The first survey answer, by session, that no `survey.answered` entry names.
async fn first_unrecorded_survey<C: ConnectionTrait>(
    db: &C,
    page: u64,
) -> Result<Option<Difference>, DbErr> {
    let mut after: Option<String> = None;
    loop {
        let mut query = survey_response::Entity::find()
            .select_only()
            .column(survey_response::Column::SessionId)
            .order_by_asc(survey_response::Column::SessionId)
            .limit(page);
        if let Some(after) = &after {
            query = query.filter(survey_response::Column::SessionId.gt(after.as_str()));
        }
        let mut sessions: Vec<String> = query.into_tuple().all(db).await?;
        if sessions.is_empty() {
            return Ok(None);
        }
        let mut answered = HashSet::new();
        for run in in_statement_sizes(&sessions) {
            let entries = audit_event::Entity::find()
                .filter(audit_event::Column::Action.eq(SURVEY_ANSWERED))
                .filter(audit_event::Column::SessionId.is_in(run.iter().map(String::as_str)))
                .all(db)
                .await?;
            answered.extend(entries.into_iter().filter_map(|entry| entry.session_id));
        }
        if let Some(session_id) = sessions.iter().find(|id| !answered.contains(*id)) {
            return Ok(Some(Difference {
                entry: None,
                record: RecordKey::Survey {
                    session_id: session_id.clone(),
                },
                discrepancy: Discrepancy::Unrecorded,
            }));
        }
        after = sessions.pop();
    }
}

#[cfg(test)]
mod digest_tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTimeUtc {
        chrono::Utc
            .with_ymd_and_hms(2026, 12, 1, 9, 30, 0)
            .unwrap()
            .checked_add_signed(chrono::Duration::microseconds(123_456))
            .unwrap()
    }

    fn message(at: &DateTimeUtc) -> MessageRecord<'_> {
        MessageRecord {
            session_id: "s-1",
            seq: 7,
            sender: "kiosk-1",
            kind: message::MessageKind::Text,
            body: "My hearing is on Monday.",
            client_msg_id: "m-7",
            created_at: at,
        }
    }

    #[test]
    fn a_message_digest_is_stable() {
        // Stored in entries already written: this value must never change. It is SHA-256 over
        // "courtchat/message/v1", "s-1", "7", "kiosk-1", "text", the body, "m-7" and
        // "2026-12-01T09:30:00.123456Z", each after its length as eight big-endian bytes.
        let at = at();
        assert_eq!(
            message(&at).digest(),
            "b3152ddb78d6806958f85a84067084bb13057cb5597185869af0d9ca15691318"
        );
    }

    #[test]
    fn every_field_of_a_message_is_covered() {
        let at = at();
        let later = at + chrono::Duration::microseconds(1);
        let original = message(&at);
        // (what changed, the changed record)
        let rows: Vec<(&str, MessageRecord)> = vec![
            (
                "session",
                MessageRecord {
                    session_id: "s-2",
                    ..original
                },
            ),
            ("seq", MessageRecord { seq: 8, ..original }),
            (
                "sender",
                MessageRecord {
                    sender: "agent-1",
                    ..original
                },
            ),
            (
                "kind",
                MessageRecord {
                    kind: message::MessageKind::Note,
                    ..original
                },
            ),
            (
                "body",
                MessageRecord {
                    body: "My hearing is on Tuesday.",
                    ..original
                },
            ),
            (
                "client id",
                MessageRecord {
                    client_msg_id: "m-8",
                    ..original
                },
            ),
            (
                "time",
                MessageRecord {
                    created_at: &later,
                    ..original
                },
            ),
            // Length prefixes: moving text from one field to the next changes the digest.
            (
                "boundary",
                MessageRecord {
                    sender: "kiosk-1M",
                    body: "y hearing is on Monday.",
                    ..original
                },
            ),
        ];
        for (what, changed) in rows {
            assert_ne!(changed.digest(), original.digest(), "{what} is not covered");
        }
    }

    #[test]
    fn every_field_of_a_survey_answer_is_covered() {
        let at = at();
        let later = at + chrono::Duration::microseconds(1);
        let original = SurveyRecord {
            session_id: "s-1",
            rating: 4,
            comment: Some("clear"),
            submitted_at: &at,
        };
        let rows: Vec<(&str, SurveyRecord)> = vec![
            (
                "session",
                SurveyRecord {
                    session_id: "s-2",
                    ..original
                },
            ),
            (
                "rating",
                SurveyRecord {
                    rating: 5,
                    ..original
                },
            ),
            (
                "comment",
                SurveyRecord {
                    comment: Some("unclear"),
                    ..original
                },
            ),
            (
                "no comment",
                SurveyRecord {
                    comment: None,
                    ..original
                },
            ),
            (
                "time",
                SurveyRecord {
                    submitted_at: &later,
                    ..original
                },
            ),
        ];
        for (what, changed) in rows {
            assert_ne!(changed.digest(), original.digest(), "{what} is not covered");
        }
        assert_ne!(
            SurveyRecord {
                comment: None,
                ..original
            }
            .digest(),
            SurveyRecord {
                comment: Some(""),
                ..original
            }
            .digest(),
            "no comment and an empty one are told apart"
        );
    }

    #[test]
    fn a_row_read_back_has_the_digest_it_was_written_with() {
        let at = at();
        let row = message::Model {
            id: 42,
            session_id: "s-1".into(),
            seq: 7,
            client_msg_id: "m-7".into(),
            sender: "kiosk-1".into(),
            kind: message::MessageKind::Text,
            body: "My hearing is on Monday.".into(),
            created_at: at,
        };
        assert_eq!(MessageRecord::from(&row).digest(), message(&at).digest());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditEntry, AuditKey, AuditTrail, Verification};
    use chrono::{SubsecRound, Utc};
    use schemas::db::entities::session;
    use sea_orm::{ActiveModelTrait, Set};

    const TEXT: message::MessageKind = message::MessageKind::Text;

    /// Two conversations recorded as the pipeline records them, with the audit entry ids they
    /// get: 1 is an entry written before digests (s-2#4, content not checkable), 2–4 are s-1#1–3,
    /// 5–7 are s-2#1–3, 8 is s-1's survey answer, 9 an entry that names no row.
    async fn recorded() -> (tempfile::TempDir, store::Store, AuditKey) {
        let dir = tempfile::tempdir().unwrap();
        let config = store::DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("record.db").display()),
            ..store::DatabaseConfig::default()
        };
        let store = store::Store::open(&config).await.unwrap();
        let key = AuditKey::from_secret(&[1; 32]).unwrap();
        let trail = AuditTrail::open(&store, key.clone()).await.unwrap();
        let db = store.connection();
        let now = Utc::now().trunc_subsecs(6);
        for id in ["s-1", "s-2"] {
            session::ActiveModel {
                id: Set(id.into()),
                status: Set(session::SessionStatus::Closed),
                applicant: Set("kiosk-1".into()),
                channel: Set("kiosk".into()),
                team: Set(None),
                assigned_agent: Set(None),
                last_seq: Set(4),
                lock_holder: Set(None),
                lock_epoch: Set(0),
                lock_expires_at: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
                closed_at: Set(None),
            }
            .insert(db)
            .await
            .unwrap();
        }
        let write = |session_id: &'static str, seq: i64, digest: bool| {
            let trail = &trail;
            async move {
                let row = message::ActiveModel {
                    session_id: Set(session_id.into()),
                    seq: Set(seq),
                    client_msg_id: Set(format!("m-{seq}")),
                    sender: Set(if seq % 2 == 0 { "agent-1" } else { "kiosk-1" }.into()),
                    kind: Set(TEXT),
                    body: Set(format!("line {seq}")),
                    created_at: Set(now),
                    ..Default::default()
                }
                .insert(db)
                .await
                .unwrap();
                let mut detail =
                    serde_json::json!({ "seq": seq, "client_msg_id": row.client_msg_id });
                if digest {
                    detail["digest"] = MessageRecord::from(&row).digest().into();
                }
                trail
                    .append(AuditEntry {
                        actor: row.sender.clone(),
                        action: "message.accepted".into(),
                        session_id: Some(session_id.into()),
                        detail,
                    })
                    .await
                    .unwrap();
            }
        };
        write("s-2", 4, false).await;
        for session_id in ["s-1", "s-2"] {
            for seq in 1..=3 {
                write(session_id, seq, true).await;
            }
        }
        let survey = survey_response::ActiveModel {
            session_id: Set("s-1".into()),
            rating: Set(4),
            comment: Set(Some("clear".into())),
            submitted_at: Set(now),
        }
        .insert(db)
        .await
        .unwrap();
        trail
            .append(AuditEntry {
                actor: "kiosk-1".into(),
                action: SURVEY_ANSWERED.into(),
                session_id: Some("s-1".into()),
                detail: serde_json::json!({
                    "rating": 4,
                    "digest": SurveyRecord::from(&survey).digest(),
                }),
            })
            .await
            .unwrap();
        trail
            .append(AuditEntry {
                actor: "agent-1".into(),
                action: "lock.acquired".into(),
                session_id: Some("s-1".into()),
                detail: serde_json::json!({ "holder": "agent-1", "epoch": 1 }),
            })
            .await
            .unwrap();
        (dir, store, key)
    }

    async fn verify(store: &store::Store, key: &AuditKey, page: u64) -> Verification {
        AuditTrail::verify_in_pages(store.connection(), key, page)
            .await
            .unwrap()
    }

    fn message_key(session_id: &str, seq: i64) -> RecordKey {
        RecordKey::Message {
            session_id: session_id.into(),
            seq,
        }
    }

    #[tokio::test]
    async fn an_untouched_conversation_verifies_in_pages_of_any_size() {
        let (_dir, store, key) = recorded().await;
        for page in [1, 2, 3, 1_000] {
            assert_eq!(
                verify(&store, &key, page).await,
                Verification {
                    entries: 9,
                    first_broken: None,
                    records: RecordCounts {
                        messages: 6,
                        surveys: 1,
                        unverifiable: 1,
                    },
                    first_difference: None,
                },
                "page {page}"
            );
        }
    }

    #[tokio::test]
    async fn every_change_to_the_tables_is_named() {
        use Discrepancy::*;
        let survey = RecordKey::Survey {
            session_id: "s-1".into(),
        };
        let forged = "INSERT INTO messages (session_id, seq, client_msg_id, sender, kind, body, \
                      created_at) SELECT session_id, 9, 'x', sender, kind, body, created_at \
                      FROM messages WHERE session_id = 's-1' AND seq = 2";
        // (what the attacker does, the difference verification must report)
        let rows: Vec<(Vec<&str>, Option<Difference>)> = vec![
            (
                vec!["UPDATE messages SET body = 'x' WHERE session_id = 's-1' AND seq = 2"],
                Some(Difference {
                    entry: Some(3),
                    record: message_key("s-1", 2),
                    discrepancy: Changed,
                }),
            ),
            (
                vec!["UPDATE messages SET sender = 'x' WHERE session_id = 's-2' AND seq = 1"],
                Some(Difference {
                    entry: Some(5),
                    record: message_key("s-2", 1),
                    discrepancy: Changed,
                }),
            ),
            (
                vec!["UPDATE messages SET kind = 'note' WHERE session_id = 's-1' AND seq = 1"],
                Some(Difference {
                    entry: Some(2),
                    record: message_key("s-1", 1),
                    discrepancy: Changed,
                }),
            ),
            (
                vec!["DELETE FROM messages WHERE session_id = 's-1' AND seq = 3"],
                Some(Difference {
                    entry: Some(4),
                    record: message_key("s-1", 3),
                    discrepancy: Deleted,
                }),
            ),
            (
                // Moved to another conversation: gone from where it was recorded.
                vec![
                    "UPDATE messages SET session_id = 's-2', seq = 7, client_msg_id = 'moved' WHERE session_id = 's-1' AND seq = 3",
                ],
                Some(Difference {
                    entry: Some(4),
                    record: message_key("s-1", 3),
                    discrepancy: Deleted,
                }),
            ),
            (
                vec![
                    "UPDATE messages SET seq = -1 WHERE session_id = 's-2' AND seq = 2",
                    "UPDATE messages SET seq = 2 WHERE session_id = 's-2' AND seq = 3",
                    "UPDATE messages SET seq = 3 WHERE session_id = 's-2' AND seq = -1",
                ],
                Some(Difference {
                    entry: Some(6),
                    record: message_key("s-2", 2),
                    discrepancy: Changed,
                }),
            ),
            (
                vec!["UPDATE survey_responses SET comment = NULL"],
                Some(Difference {
                    entry: Some(8),
                    record: survey.clone(),
                    discrepancy: Changed,
                }),
            ),
            (
                vec!["DELETE FROM survey_responses"],
                Some(Difference {
                    entry: Some(8),
                    record: survey.clone(),
                    discrepancy: Deleted,
                }),
            ),
            (
                vec![forged],
                Some(Difference {
                    entry: None,
                    record: message_key("s-1", 9),
                    discrepancy: Unrecorded,
                }),
            ),
            (
                vec![
                    "INSERT INTO survey_responses (session_id, rating, comment, submitted_at) \
                     SELECT 's-2', rating, comment, submitted_at FROM survey_responses",
                ],
                Some(Difference {
                    entry: None,
                    record: RecordKey::Survey {
                        session_id: "s-2".into(),
                    },
                    discrepancy: Unrecorded,
                }),
            ),
            // Before digests, a row's presence is recorded but not its content.
            (
                vec!["DELETE FROM messages WHERE session_id = 's-2' AND seq = 4"],
                Some(Difference {
                    entry: Some(1),
                    record: message_key("s-2", 4),
                    discrepancy: Deleted,
                }),
            ),
            (
                vec!["UPDATE messages SET body = 'x' WHERE session_id = 's-2' AND seq = 4"],
                None,
            ),
        ];
        for (statements, expected) in rows {
            for page in [1, 2, 1_000] {
                let (_dir, store, key) = recorded().await;
                for statement in &statements {
                    store
                        .connection()
                        .execute_unprepared(statement)
                        .await
                        .unwrap();
                }
                let verification = verify(&store, &key, page).await;
                assert_eq!(
                    verification.first_difference, expected,
                    "{statements:?}, page {page}: {verification:?}"
                );
                assert_eq!(verification.first_broken, None, "{statements:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_broken_chain_stops_the_content_check_at_the_break() {
        let (_dir, store, key) = recorded().await;
        let db = store.connection();
        // Entry 6 (s-2#2) is forged, and the row it names changed: the break is reported, and
        // rows are only checked up to it, so s-2#2's change is not reported as well.
        db.execute_unprepared("UPDATE audit_events SET actor = 'x' WHERE id = 6")
            .await
            .unwrap();
        db.execute_unprepared(
            "UPDATE messages SET body = 'x' WHERE session_id = 's-2' AND seq = 2",
        )
        .await
        .unwrap();
        let verification = verify(&store, &key, 2).await;
        assert_eq!(verification.first_broken.map(|(id, _)| id), Some(6));
        assert_eq!(verification.first_difference, None);
        assert_eq!(verification.entries, 5);
        // A change before the break is reported beside it.
        db.execute_unprepared(
            "UPDATE messages SET body = 'x' WHERE session_id = 's-1' AND seq = 1",
        )
        .await
        .unwrap();
        let verification = verify(&store, &key, 2).await;
        assert_eq!(verification.first_broken.map(|(id, _)| id), Some(6));
        assert_eq!(
            verification.first_difference.map(|d| d.entry),
            Some(Some(2))
        );
    }

    #[test]
    fn differences_read_as_sentences() {
        let rows = [
            (
                Difference {
                    entry: Some(123),
                    record: message_key("s-1", 7),
                    discrepancy: Discrepancy::Changed,
                },
                "audit entry 123: message s-1#7 differs from what was recorded",
            ),
            (
                Difference {
                    entry: Some(5),
                    record: message_key("s-1", 9),
                    discrepancy: Discrepancy::Deleted,
                },
                "audit entry 5: message s-1#9 was deleted",
            ),
            (
                Difference {
                    entry: None,
                    record: message_key("s-1", 12),
                    discrepancy: Discrepancy::Unrecorded,
                },
                "message s-1#12 has no audit entry",
            ),
        ];
        for (difference, expected) in rows {
            assert!(difference.to_string().starts_with(expected), "{difference}");
        }
    }
}
