//! Checking the conversation tables against the chain, a page at a time.

use std::collections::{HashMap, HashSet};
use std::fmt;

use schemas::db::entities::{audit_event, message, survey_response};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde::Deserialize;

use crate::audit::{AuditKey, in_statement_sizes};

use super::key::RecordKey;
use super::purged::Purges;
use super::{MessageRecord, REFERS_TO_ROWS, SURVEY_ANSWERED, SurveyRecord};

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
    /// Rows (messages and survey answers) whose content a retention policy removed, found as
    /// the purge's `retention.purged` entry recorded it. Not tampering.
    pub purged: u64,
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
        if REFERS_TO_ROWS.contains(&entry.action.as_str()) {
            return None;
        }
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
    /// is missing or differs. A row whose content differs because a later purge of its session
    /// blanked it, as that purge's entry (authentic under `key`) recorded, counts as purged.
    pub(crate) async fn check<C: ConnectionTrait>(
        &mut self,
        db: &C,
        key: &AuditKey,
        claims: &[Claim],
    ) -> Result<Option<Difference>, DbErr> {
        let (messages, surveys) = rows_named(db, claims).await?;
        let stored: Vec<Option<String>> = claims
            .iter()
            .map(|claim| match &claim.record {
                RecordKey::Message { session_id, seq } => messages
                    .get(&(session_id.clone(), *seq))
                    .map(|row| MessageRecord::from(row).digest()),
                RecordKey::Survey { session_id } => surveys
                    .get(session_id)
                    .map(|row| SurveyRecord::from(row).digest()),
            })
            .collect();
        // Purge entries are read only for the sessions that have a row to explain.
        let differing: HashSet<&str> = claims
            .iter()
            .zip(&stored)
            .filter(
                |(claim, stored)| matches!((stored, &claim.digest), (Some(s), Some(r)) if s != r),
            )
            .map(|(claim, _)| claim.record.session_id())
            .collect();
        let purges = if differing.is_empty() {
            Purges::default()
        } else {
            Purges::load(db, key, &differing).await?
        };
        for (claim, stored) in claims.iter().zip(stored) {
            let discrepancy = match (stored, &claim.digest) {
                (None, _) => Some(Discrepancy::Deleted),
                (Some(stored), Some(recorded)) if stored != *recorded => {
                    if purges.redacted(claim.entry, &claim.record, recorded, &stored) {
                        self.named(&claim.record);
                        self.counts.purged += 1;
                        None
                    } else {
                        Some(Discrepancy::Changed)
                    }
                }
                (Some(_), recorded) => {
                    self.named(&claim.record);
                    let is_message = matches!(claim.record, RecordKey::Message { .. });
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

    /// Counts a row found for a claim, for [`RecordCheck::unrecorded`].
    fn named(&mut self, record: &RecordKey) {
        match record {
            RecordKey::Message { .. } => self.messages_named += 1,
            RecordKey::Survey { .. } => self.surveys_named += 1,
        }
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
