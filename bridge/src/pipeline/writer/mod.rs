//! The batch writer: stores what a batch's decisions changed, in the batch's one transaction,
//! with statements of a few fixed shapes, so that a batch costs a handful of round trips
//! whatever its size. The hot path (stream entries, sequence numbers and session state, kept
//! acknowledgements, audit entries) is one statement on PostgreSQL (`postgres`); on SQLite,
//! whose statements run in this process, multi-row inserts and `CASE` updates in runs of
//! powers of two (see `in_statement_sizes`).

mod postgres;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use schemas::db::entities::{agent, message, participant, receipt, session, submission_ack};
use sea_orm::sea_query::{CaseStatement, Expr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction,
    EntityTrait, QueryFilter, Set,
};

use super::PipelineError;
use super::decide::{Effects, ParticipantChange};
use crate::audit::{AuditBatch, in_statement_sizes};

/// Writes `fx` (everything but its outbox, which is published after the commit).
pub(crate) async fn write(
    txn: &DatabaseTransaction,
    audit: &mut AuditBatch<'_>,
    fx: &mut Effects,
    now: DateTime<Utc>,
) -> Result<(), PipelineError> {
    // Sessions first: every other row refers to its session.
    for (row, applicant) in std::mem::take(&mut fx.opened) {
        row.insert(txn).await?;
        applicant.insert(txn).await?;
    }
    for change in std::mem::take(&mut fx.participants) {
        match change {
            ParticipantChange::Joined {
                session_id,
                subject,
                role,
                at,
            } => {
                // A participant who left and comes back gets their row back.
                participant::Entity::delete_many()
                    .filter(participant::Column::SessionId.eq(&session_id))
                    .filter(participant::Column::Subject.eq(&subject))
                    .exec(txn)
                    .await?;
                participant::ActiveModel {
                    session_id: Set(session_id),
                    subject: Set(subject),
                    role: Set(role),
                    joined_at: Set(at),
                    left_at: Set(None),
                }
                .insert(txn)
                .await?;
            }
            ParticipantChange::Left {
                session_id,
                subject,
                at,
            } => {
                participant::Entity::update_many()
                    .col_expr(participant::Column::LeftAt, Expr::value(at))
                    .filter(participant::Column::SessionId.eq(&session_id))
                    .filter(participant::Column::Subject.eq(&subject))
                    .exec(txn)
                    .await?;
            }
        }
    }
    for write in std::mem::take(&mut fx.receipts) {
        let row = receipt::ActiveModel {
            session_id: Set(write.session_id),
            subject: Set(write.subject),
            delivered_seq: Set(write.delivered_seq),
            read_seq: Set(write.read_seq),
            updated_at: Set(write.at),
        };
        if write.new {
            row.insert(txn).await?;
        } else {
            row.update(txn).await?;
        }
    }
    for survey in std::mem::take(&mut fx.surveys) {
        survey.insert(txn).await?;
    }
    for (subject, available) in std::mem::take(&mut fx.availability) {
        agent::Entity::update_many()
            .col_expr(agent::Column::Available, Expr::value(available))
            .filter(agent::Column::Subject.eq(subject))
            .exec(txn)
            .await?;
    }
    for entry in std::mem::take(&mut fx.audit) {
        audit.append(entry)?;
    }
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        let assumed = audit.assumed().map(str::to_owned);
        let (entries, head) = audit.take_pending();
        return postgres::write_hot_path(txn, fx, entries, head, assumed, now).await;
    }
    let entries = std::mem::take(&mut fx.entries);
    for rows in in_statement_sizes(&entries) {
        message::Entity::insert_many(rows.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    write_last_seqs(txn, std::mem::take(&mut fx.last_seqs), now).await?;
    // Sessions whose state changed beyond their sequence: rarer (joins, locks, transfers,
    // closing), one statement each, as the decisions left them.
    for (session_id, view) in std::mem::take(&mut fx.states) {
        session::Entity::update_many()
            .col_expr(session::Column::Status, Expr::value(view.status))
            .col_expr(session::Column::Team, Expr::value(view.team.clone()))
            .col_expr(
                session::Column::AssignedAgent,
                Expr::value(view.assigned_agent.clone()),
            )
            .col_expr(
                session::Column::LockHolder,
                Expr::value(view.lock.holder.clone()),
            )
            .col_expr(
                session::Column::LockEpoch,
                Expr::value(view.lock.epoch as i64),
            )
            .col_expr(
                session::Column::LockExpiresAt,
                Expr::value(view.lock.expires_at),
            )
            .col_expr(session::Column::ClosedAt, Expr::value(view.closed_at))
            .col_expr(session::Column::UpdatedAt, Expr::value(now))
            .filter(session::Column::Id.eq(&session_id))
            .exec(txn)
            .await?;
    }
    let kept: Vec<submission_ack::ActiveModel> = std::mem::take(&mut fx.kept_acks);
    for rows in in_statement_sizes(&kept) {
        submission_ack::Entity::insert_many(rows.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    audit.flush(txn).await?;
    Ok(())
}

/// Each touched session's new `last_seq`, in one `CASE` update per run.
async fn write_last_seqs(
    txn: &DatabaseTransaction,
    last_seqs: HashMap<String, i64>,
    now: DateTime<Utc>,
) -> Result<(), PipelineError> {
    let last_seqs: Vec<(String, i64)> = last_seqs.into_iter().collect();
    for run in in_statement_sizes(&last_seqs) {
        let mut case = CaseStatement::new();
        for (session_id, seq) in run {
            case = case.case(
                session::Column::Id.eq(session_id.as_str()),
                Expr::value(*seq),
            );
        }
        let case = case.finally(Expr::col(session::Column::LastSeq));
        session::Entity::update_many()
            .col_expr(session::Column::LastSeq, case.into())
            .col_expr(session::Column::UpdatedAt, Expr::value(now))
            .filter(session::Column::Id.is_in(run.iter().map(|(id, _)| id.as_str())))
            .exec(txn)
            .await?;
    }
    Ok(())
}
