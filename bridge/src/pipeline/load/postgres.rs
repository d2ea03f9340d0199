//! Earlier answers to a batch's submission ids on PostgreSQL: one fixed statement per table,
//! the wanted ids passed as one JSON array.
//!
//! The portable lookup ORs one condition per id, so its text changes with the batch: PostgreSQL
//! parses and plans it anew every time, and planning a few dozen OR-ed triples costs more than
//! running it. On a busy desk these reads ran beside the writer on every batch. Here the text
//! is fixed, so the statement is prepared once per connection, and each wanted id is one probe
//! of the table's unique index (the LATERAL subquery makes that the plan whatever the table's
//! size).

use schemas::db::entities::{message, submission_ack};
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, Statement};

use super::Key;
use crate::pipeline::PipelineError;

const ENTRIES: &str = r#"
SELECT m.* FROM jsonb_array_elements($1::jsonb) AS w,
LATERAL (
    SELECT * FROM messages
    WHERE session_id = w->>0 AND sender = w->>1 AND client_msg_id = w->>2
    LIMIT 1
) AS m
"#;

const KEPT: &str = r#"
SELECT a.* FROM jsonb_array_elements($1::jsonb) AS w,
LATERAL (
    SELECT * FROM submission_acks
    WHERE session_id = w->>0 AND sender = w->>1 AND client_msg_id = w->>2
    LIMIT 1
) AS a
"#;

/// The stored entries and the kept acknowledgements of `wanted`.
pub(super) async fn lookup(
    txn: &impl ConnectionTrait,
    wanted: &[Key],
) -> Result<(Vec<message::Model>, Vec<submission_ack::Model>), PipelineError> {
    let ids = serde_json::to_string(wanted).map_err(|_| PipelineError::Inconsistent("ids"))?;
    let statement =
        |sql: &str| Statement::from_sql_and_values(DbBackend::Postgres, sql, [ids.clone().into()]);
    // Both at once, on two of the pool's connections: one round trip's wait instead of two.
    let (entries, kept) = tokio::try_join!(
        message::Entity::find()
            .from_raw_sql(statement(ENTRIES))
            .all(txn),
        submission_ack::Entity::find()
            .from_raw_sql(statement(KEPT))
            .all(txn),
    )?;
    Ok((entries, kept))
}
