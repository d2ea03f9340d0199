//! What the pipeline knows of each session it decides for: loaded from the database the first
//! time a batch names the session, then kept current by the decisions themselves (the pipeline
//! is the only writer of a session), and dropped after any failed batch.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use schemas::db::entities::{
    message, participant, receipt, session, session_purge, survey_response,
};
use sea_orm::sea_query::{
    Alias, Expr, ExprTrait, Order, Query, QueryStatementBuilder, SelectStatement,
};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::PipelineError;
use crate::audit::in_statement_sizes;
use crate::pipeline::lock::ReplyLock;

/// One session as the pipeline sees it: the row's state and what deciding needs beside it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SessionView {
    pub status: session::SessionStatus,
    pub channel: String,
    pub team: Option<String>,
    pub assigned_agent: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    pub last_seq: i64,
    /// The last entry on the applicant-visible topic, for `prev_seq`.
    pub last_public_seq: i64,
    /// The last internal note, for `prev_seq` on the notes topic.
    pub last_note_seq: i64,
    pub members: HashMap<String, participant::ParticipantRole>,
    pub lock: ReplyLock,
    /// Read horizons (delivered, read) of participants whose receipts were loaded; absent:
    /// not loaded yet. `None` inside: loaded, and the participant has none stored.
    pub receipts: HashMap<String, Option<(i64, i64)>>,
    /// Whether the survey was answered (or can no longer be: the session was purged), once
    /// loaded.
    pub survey_answered: Option<bool>,
}

impl SessionView {
    /// A session being opened now by `applicant`.
    pub fn opened(applicant: &str, channel: String, team: Option<String>) -> Self {
        Self {
            status: session::SessionStatus::Queued,
            channel,
            team,
            assigned_agent: None,
            closed_at: None,
            last_seq: 0,
            last_public_seq: 0,
            last_note_seq: 0,
            members: HashMap::from([(
                applicant.to_owned(),
                participant::ParticipantRole::Applicant,
            )]),
            lock: ReplyLock::default(),
            receipts: HashMap::new(),
            survey_answered: Some(false),
        }
    }
}

/// The cached views.
#[derive(Default)]
pub(crate) struct Views {
    sessions: HashMap<String, SessionView>,
}

impl Views {
    pub fn get(&self, session_id: &str) -> Option<&SessionView> {
        self.sessions.get(session_id)
    }

    pub fn get_mut(&mut self, session_id: &str) -> Option<&mut SessionView> {
        self.sessions.get_mut(session_id)
    }

    pub fn insert(&mut self, session_id: String, view: SessionView) {
        self.sessions.insert(session_id, view);
    }

    pub fn remove(&mut self, session_id: &str) {
        self.sessions.remove(session_id);
    }

    /// Forgets everything: after a failed batch, whose decisions changed views that were not
    /// stored.
    pub fn clear(&mut self) {
        self.sessions.clear();
    }

    /// Loads the session's view if it is not cached; false when there is no such session.
    pub async fn load(
        &mut self,
        txn: &impl ConnectionTrait,
        session_id: &str,
    ) -> Result<bool, PipelineError> {
        Ok(self.load_all(txn, [session_id]).await?.is_empty())
    }

    /// Loads the views of `session_ids` not cached yet, three statements for them all (in
    /// runs of a few fixed sizes), where one session at a time made it three a session: the
    /// batch after a restart, or after a failed batch, names many sessions none of which is
    /// cached. Returns the ids of sessions that do not exist.
    pub async fn load_all(
        &mut self,
        txn: &impl ConnectionTrait,
        session_ids: impl IntoIterator<Item = &str>,
    ) -> Result<std::collections::HashSet<String>, PipelineError> {
        let mut missing: Vec<String> = session_ids
            .into_iter()
            .filter(|id| !self.sessions.contains_key(*id))
            .map(str::to_owned)
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let mut absent: std::collections::HashSet<String> = missing.iter().cloned().collect();
        for run in in_statement_sizes(&missing) {
            let ids = || run.iter().map(String::as_str);
            let rows = session::Entity::find()
                .filter(session::Column::Id.is_in(ids()))
                .all(txn)
                .await?;
            let mut members: HashMap<String, HashMap<String, participant::ParticipantRole>> =
                HashMap::new();
            for p in participant::Entity::find()
                .filter(participant::Column::SessionId.is_in(ids()))
                .filter(participant::Column::LeftAt.is_null())
                .all(txn)
                .await?
            {
                members
                    .entry(p.session_id)
                    .or_default()
                    .insert(p.subject, p.role);
            }
            let mut last: HashMap<String, (i64, i64)> = HashMap::new();
            let backend = txn.get_database_backend();
            for row in txn.query_all_raw(backend.build(&last_seqs(run))).await? {
                let id: String = row.try_get("", "id")?;
                let public: Option<i64> = row.try_get("", "last_public")?;
                let note: Option<i64> = row.try_get("", "last_note")?;
                last.insert(id, (public.unwrap_or(0), note.unwrap_or(0)));
            }
            for row in rows {
                let (last_public_seq, last_note_seq) = last.get(&row.id).copied().unwrap_or((0, 0));
                let view = SessionView {
                    status: row.status,
                    channel: row.channel,
                    team: row.team,
                    assigned_agent: row.assigned_agent,
                    closed_at: row.closed_at,
                    last_seq: row.last_seq,
                    last_public_seq,
                    last_note_seq,
                    members: members.remove(&row.id).unwrap_or_default(),
                    lock: ReplyLock {
                        holder: row.lock_holder,
                        epoch: row.lock_epoch as u64,
                        expires_at: row.lock_expires_at,
                    },
                    receipts: HashMap::new(),
                    survey_answered: None,
                };
                absent.remove(&row.id);
                self.sessions.insert(row.id, view);
            }
        }
        Ok(absent)
    }

    /// Loads `subject`'s stored read horizons into a loaded view, if not known yet.
    pub async fn load_receipt(
        &mut self,
        txn: &impl ConnectionTrait,
        session_id: &str,
        subject: &str,
    ) -> Result<(), PipelineError> {
        let Some(view) = self.sessions.get_mut(session_id) else {
            return Ok(());
        };
        if view.receipts.contains_key(subject) {
            return Ok(());
        }
        let stored = receipt::Entity::find_by_id((session_id.to_owned(), subject.to_owned()))
            .one(txn)
            .await?
            .map(|row| (row.delivered_seq, row.read_seq));
        view.receipts.insert(subject.to_owned(), stored);
        Ok(())
    }

    /// Loads whether the survey of a loaded view was answered, if not known yet.
    pub async fn load_survey(
        &mut self,
        txn: &impl ConnectionTrait,
        session_id: &str,
    ) -> Result<(), PipelineError> {
        let Some(view) = self.sessions.get_mut(session_id) else {
            return Ok(());
        };
        if view.survey_answered.is_none() {
            let answered = survey_response::Entity::find_by_id(session_id)
                .one(txn)
                .await?
                .is_some();
            // A session whose content retention purged takes no answer any more: a comment
            // written now would be content that no purge removes.
            let purged = !answered
                && session_purge::Entity::find_by_id(session_id)
                    .one(txn)
                    .await?
                    .is_some();
            view.survey_answered = Some(answered || purged);
        }
        Ok(())
    }
}

/// Each of `ids` with its last entry on the applicant-visible topic and its last note: two
/// correlated subqueries a session, each the first row of an index walked backwards.
fn last_seqs(ids: &[String]) -> SelectStatement {
    let last = |note: bool| {
        let kind = if note {
            message::Column::Kind.eq(message::MessageKind::Note)
        } else {
            message::Column::Kind.ne(message::MessageKind::Note)
        };
        Query::select()
            .column((message::Entity, message::Column::Seq))
            .from(message::Entity)
            .and_where(
                Expr::col((message::Entity, message::Column::SessionId))
                    .equals((session::Entity, session::Column::Id)),
            )
            .and_where(kind)
            .order_by((message::Entity, message::Column::Seq), Order::Desc)
            .limit(1)
            .to_owned()
    };
    Query::select()
        .column((session::Entity, session::Column::Id))
        .expr_as(
            Expr::SubQuery(None, Box::new(last(false).into_sub_query_statement())),
            Alias::new("last_public"),
        )
        .expr_as(
            Expr::SubQuery(None, Box::new(last(true).into_sub_query_statement())),
            Alias::new("last_note"),
        )
        .from(session::Entity)
        .and_where(
            Expr::col((session::Entity, session::Column::Id)).is_in(ids.iter().map(String::as_str)),
        )
        .to_owned()
}
