//! What the pipeline knows of each session it decides for: loaded from the database the first
//! time a batch names the session, then kept current by the decisions themselves (the pipeline
//! is the only writer of a session), and dropped after any failed batch.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use schemas::db::entities::{
    message, participant, receipt, session, session_purge, survey_response,
};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use super::PipelineError;
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
        if self.sessions.contains_key(session_id) {
            return Ok(true);
        }
        let Some(row) = session::Entity::find_by_id(session_id).one(txn).await? else {
            return Ok(false);
        };
        let members = participant::Entity::find()
            .filter(participant::Column::SessionId.eq(session_id))
            .filter(participant::Column::LeftAt.is_null())
            .all(txn)
            .await?
            .into_iter()
            .map(|p| (p.subject, p.role))
            .collect();
        let last_of = |is_note: bool| {
            let kind = if is_note {
                message::Column::Kind.eq(message::MessageKind::Note)
            } else {
                message::Column::Kind.ne(message::MessageKind::Note)
            };
            message::Entity::find()
                .filter(message::Column::SessionId.eq(session_id))
                .filter(kind)
                .order_by_desc(message::Column::Seq)
                .one(txn)
        };
        let last_public_seq = last_of(false).await?.map_or(0, |m| m.seq);
        let last_note_seq = last_of(true).await?.map_or(0, |m| m.seq);
        let view = SessionView {
            status: row.status,
            channel: row.channel,
            team: row.team,
            assigned_agent: row.assigned_agent,
            closed_at: row.closed_at,
            last_seq: row.last_seq,
            last_public_seq,
            last_note_seq,
            members,
            lock: ReplyLock {
                holder: row.lock_holder,
                epoch: row.lock_epoch as u64,
                expires_at: row.lock_expires_at,
            },
            receipts: HashMap::new(),
            survey_answered: None,
        };
        self.sessions.insert(session_id.to_owned(), view);
        Ok(true)
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
