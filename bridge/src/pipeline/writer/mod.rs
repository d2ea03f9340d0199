//! The batch writer: stores what a batch's decisions changed, in the batch's one transaction,
//! with statements of a few fixed shapes, so that a batch costs a handful of round trips
//! whatever its size. The hot path (stream entries, sequence numbers and session state, kept
//! acknowledgements, audit entries) is one statement on PostgreSQL (`postgres`); on SQLite,
//! multi-row inserts and `CASE` updates in runs of powers of two (see `in_statement_sizes`),
//! run where the transaction is ([`Tx`]): on the committer's own connection, on its thread.

mod postgres;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use schemas::db::entities::{
    agent, message, participant, receipt, session, submission_ack, survey_response,
};
use sea_orm::sea_query::{CaseStatement, Expr};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryTrait, Set, Statement,
};

use super::PipelineError;
use super::decide::{Effects, ParticipantChange};
use crate::audit::{AuditBatch, in_statement_sizes};

/// Where a batch's statements run.
pub(crate) enum Tx<'a> {
    /// The ORM's transaction: always on PostgreSQL; on SQLite when the worker stores a batch
    /// itself (decided again one submission at a time).
    Orm(&'a DatabaseTransaction),
    /// The committer's own SQLite connection, in the transaction it began, on its thread.
    Direct(&'a store::DirectSqlite),
}

impl Tx<'_> {
    fn backend(&self) -> DbBackend {
        match self {
            Self::Orm(txn) => txn.get_database_backend(),
            Self::Direct(_) => DbBackend::Sqlite,
        }
    }

    /// Runs `statement` and returns the rows it changed.
    async fn run(&self, statement: &impl QueryTrait) -> Result<u64, PipelineError> {
        self.run_built(statement.build(self.backend())).await
    }

    async fn run_built(&self, built: Statement) -> Result<u64, PipelineError> {
        Ok(match self {
            Self::Orm(txn) => txn.execute_raw(built).await?.rows_affected(),
            Self::Direct(direct) => direct.execute(&built)?,
        })
    }
}

/// Writes `fx` (everything but its outbox, which is published after the commit).
pub(crate) async fn write(
    tx: Tx<'_>,
    audit: &mut AuditBatch<'_>,
    fx: &mut Effects,
    now: DateTime<Utc>,
) -> Result<(), PipelineError> {
    // Sessions first: every other row refers to its session.
    for (row, applicant) in std::mem::take(&mut fx.opened) {
        tx.run(&session::Entity::insert(row)).await?;
        tx.run(&participant::Entity::insert(applicant)).await?;
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
                tx.run(
                    &participant::Entity::delete_many()
                        .filter(participant::Column::SessionId.eq(&session_id))
                        .filter(participant::Column::Subject.eq(&subject)),
                )
                .await?;
                let row = participant::ActiveModel {
                    session_id: Set(session_id),
                    subject: Set(subject),
                    role: Set(role),
                    joined_at: Set(at),
                    left_at: Set(None),
                };
                tx.run(&participant::Entity::insert(row)).await?;
            }
            ParticipantChange::Left {
                session_id,
                subject,
                at,
            } => {
                tx.run(
                    &participant::Entity::update_many()
                        .col_expr(participant::Column::LeftAt, Expr::value(at))
                        .filter(participant::Column::SessionId.eq(&session_id))
                        .filter(participant::Column::Subject.eq(&subject)),
                )
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
            tx.run(&receipt::Entity::insert(row)).await?;
        } else {
            tx.run(&receipt::Entity::update(row).validate()?).await?;
        }
    }
    for survey in std::mem::take(&mut fx.surveys) {
        tx.run(&survey_response::Entity::insert(survey)).await?;
    }
    for (subject, available) in std::mem::take(&mut fx.availability) {
        tx.run(
            &agent::Entity::update_many()
                .col_expr(agent::Column::Available, Expr::value(available))
                .filter(agent::Column::Subject.eq(subject)),
        )
        .await?;
    }
    for entry in std::mem::take(&mut fx.audit) {
        audit.append(entry)?;
    }
    if let (Tx::Orm(txn), DbBackend::Postgres) = (&tx, tx.backend()) {
        let assumed = audit.assumed().map(str::to_owned);
        let (entries, head) = audit.take_pending();
        return postgres::write_hot_path(txn, fx, entries, head, assumed, now).await;
    }
    let entries = std::mem::take(&mut fx.entries);
    for rows in in_statement_sizes(&entries) {
        tx.run(&message::Entity::insert_many(rows.to_vec())).await?;
    }
    write_last_seqs(&tx, std::mem::take(&mut fx.last_seqs), now).await?;
    // Sessions whose state changed beyond their sequence: rarer (joins, locks, transfers,
    // closing), one statement each, as the decisions left them.
    for (session_id, view) in std::mem::take(&mut fx.states) {
        tx.run(
            &session::Entity::update_many()
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
                .filter(session::Column::Id.eq(&session_id)),
        )
        .await?;
    }
    let kept: Vec<submission_ack::ActiveModel> = std::mem::take(&mut fx.kept_acks);
    for rows in in_statement_sizes(&kept) {
        tx.run(&submission_ack::Entity::insert_many(rows.to_vec()))
            .await?;
    }
    write_audit(&tx, audit).await
}

/// The audit entries appended since the last flush, in chain order, and the head they lead
/// to (locked and read in this transaction).
async fn write_audit(tx: &Tx<'_>, audit: &mut AuditBatch<'_>) -> Result<(), PipelineError> {
    for statement in audit.take_statements(tx.backend()) {
        tx.run_built(statement).await?;
    }
    Ok(())
}

/// Each touched session's new `last_seq`, in one `CASE` update per run.
async fn write_last_seqs(
    tx: &Tx<'_>,
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
        tx.run(
            &session::Entity::update_many()
                .col_expr(session::Column::LastSeq, case.into())
                .col_expr(session::Column::UpdatedAt, Expr::value(now))
                .filter(session::Column::Id.is_in(run.iter().map(|(id, _)| id.as_str()))),
        )
        .await?;
    }
    Ok(())
}
