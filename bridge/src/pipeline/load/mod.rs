//! What deciding a batch needs from the database beyond the sessions' views, loaded for the
//! whole batch before anything is decided: earlier answers to the same ids, earlier opens, and
//! the staff the batch names.

mod postgres;
mod sqlite;

use std::collections::{HashMap, HashSet};

use schemas::db::entities::{agent, message, participant, submission_ack};
use schemas::wire::{OpenSession, SessionEvent, StreamContent};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::PipelineError;
use super::decide::lifecycle::OpenedBefore;
use super::decide::staffing::Cause;
use super::input::stored_content;
use crate::pipeline::reader::Reader;

/// The original answer to a submission already stored.
#[derive(Clone)]
pub(crate) enum Answered {
    /// It left a stream entry with this sequence number and content.
    Entry {
        seq: u64,
        content: Option<StreamContent>,
    },
    /// Its kept acknowledgement (lock operations, receipts, the survey), and the digest of the
    /// request it answered (none when kept before digests were).
    Ack {
        ack: schemas::wire::Ack,
        digest: Option<String>,
    },
}

pub(crate) type Key = (String, String, String);

/// What the batch's submissions already stored answer with (resubmissions): one fixed
/// statement per table, on SQLite on the decider's reading thread when there is one.
pub(super) async fn answered(
    txn: &impl ConnectionTrait,
    reader: Option<&Reader>,
    wanted: std::collections::HashSet<Key>,
) -> Result<HashMap<Key, Answered>, PipelineError> {
    let mut answered = HashMap::new();
    if wanted.is_empty() {
        return Ok(answered);
    }
    let wanted: Vec<Key> = wanted.into_iter().collect();
    let (entries, kept) = match (txn.get_database_backend(), reader) {
        (sea_orm::DbBackend::Postgres, _) => postgres::lookup(txn, &wanted).await?,
        (_, Some(reader)) => reader.run(move |db| sqlite::lookup(db, &wanted)).await?,
        (_, None) => sqlite::lookup_pooled(txn, &wanted).await?,
    };
    remember(&mut answered, entries, kept);
    Ok(answered)
}

/// Files stored entries and kept acknowledgements under their ids; an entry wins over an
/// acknowledgement of the same id.
fn remember(
    answered: &mut HashMap<Key, Answered>,
    entries: Vec<message::Model>,
    kept: Vec<submission_ack::Model>,
) {
    for row in entries {
        let answer = Answered::Entry {
            seq: row.seq as u64,
            content: stored_content(&row),
        };
        answered.insert((row.session_id, row.sender, row.client_msg_id), answer);
    }
    for row in kept {
        // Read once, here: every kept answer was written from an `Ack`. One that no longer
        // reads as one is left out, and its submission decided as new (lock operations and
        // receipts decide the same again) rather than answered with what it cannot say.
        let ack = match serde_json::from_str(&row.ack) {
            Ok(ack) => ack,
            Err(error) => {
                tracing::error!(%error, session_id = %row.session_id, "a kept answer does not read as an acknowledgement");
                continue;
            }
        };
        let key = (row.session_id, row.sender, row.client_msg_id);
        answered.entry(key).or_insert(Answered::Ack {
            ack,
            digest: row.request_digest,
        });
    }
}

/// The session an earlier open request of `applicant` with this id opened, and whether it was
/// the same request (channel and first message).
pub(super) async fn opened_before(
    txn: &impl ConnectionTrait,
    applicant: &str,
    request: &OpenSession,
) -> Result<Option<OpenedBefore>, PipelineError> {
    let cmid = &request.client_msg_id;
    let Some(opening) = message::Entity::find()
        .filter(message::Column::Sender.eq(applicant))
        .filter(message::Column::ClientMsgId.eq(cmid))
        .filter(message::Column::Seq.eq(1))
        .one(txn)
        .await?
    else {
        return Ok(None);
    };
    let first = message::Entity::find()
        .filter(message::Column::SessionId.eq(&opening.session_id))
        .filter(message::Column::ClientMsgId.eq(format!("{cmid}#first")))
        .one(txn)
        .await?;
    let opened = StreamContent::Event {
        event: SessionEvent::Opened {
            channel: request.channel,
        },
    };
    let same = stored_content(&opening) == Some(opened)
        && first.map(|row| row.body) == request.first_message;
    Ok(Some(OpenedBefore {
        session_id: opening.session_id,
        same,
    }))
}

/// The staff the batch names.
pub(super) type NamedStaff = (
    HashMap<String, Option<participant::ParticipantRole>>,
    HashMap<String, String>,
);

/// The participant role of each named subject that is registered, active staff (admins take
/// part in no session); `None` for the others. And the team of those who have one.
pub(super) async fn staff_roles(
    txn: &impl ConnectionTrait,
    subjects: Vec<String>,
) -> Result<NamedStaff, PipelineError> {
    let mut roles: HashMap<String, Option<participant::ParticipantRole>> =
        subjects.iter().map(|s| (s.clone(), None)).collect();
    let mut teams = HashMap::new();
    if subjects.is_empty() {
        return Ok((roles, teams));
    }
    let rows = agent::Entity::find()
        .filter(agent::Column::Subject.is_in(subjects))
        .filter(agent::Column::Active.eq(true))
        .all(txn)
        .await?;
    for row in rows {
        let role = participant::ParticipantRole::try_from(row.role).ok();
        if let Some(team) = row.team {
            teams.insert(row.subject.clone(), team);
        }
        roles.insert(row.subject, role);
    }
    Ok((roles, teams))
}

/// Why `subject`, who has no seat in the roster any more, is not active staff who take part in
/// sessions: disabled, an admin now, or not in the table at all.
pub(super) async fn absence_cause(
    db: &impl ConnectionTrait,
    subject: &str,
) -> Result<Cause, PipelineError> {
    let row = agent::Entity::find()
        .filter(agent::Column::Subject.eq(subject))
        .one(db)
        .await?;
    Ok(match row {
        None => Cause::Removed,
        Some(row) if !row.active => Cause::Disabled,
        Some(_) => Cause::RoleChanged,
    })
}

/// Which of `subjects` are active supervisors or admins: they may assign, transfer and close
/// sessions they do not take part in.
pub(super) async fn overseers(
    txn: &impl ConnectionTrait,
    subjects: Vec<String>,
) -> Result<HashSet<String>, PipelineError> {
    if subjects.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = agent::Entity::find()
        .filter(agent::Column::Subject.is_in(subjects))
        .filter(agent::Column::Active.eq(true))
        .filter(agent::Column::Role.is_in([agent::StaffRole::Supervisor, agent::StaffRole::Admin]))
        .all(txn)
        .await?;
    Ok(rows.into_iter().map(|row| row.subject).collect())
}
