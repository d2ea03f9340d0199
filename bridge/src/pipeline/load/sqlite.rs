//! Earlier answers to a batch's submission ids on SQLite: one fixed statement per table, the
//! wanted ids passed as one JSON array, run on the decider's reading thread (`reader`).
//!
//! The text is the same for every batch, so it is prepared once; each wanted id is one probe of
//! the table's unique index on (session, sender, client id). The portable lookup OR-ed one
//! condition per id, in statements of seven sizes, two statements per size a batch needed.

use chrono::{DateTime, Utc};
use schemas::db::entities::{message, submission_ack};
use sea_orm::{ActiveEnum, ConnectionTrait, DbBackend, EntityTrait, Statement};
use store::{DirectSqlite, SqliteValue};

use super::Key;
use crate::pipeline::PipelineError;

// `?1` rather than `?`: the pool's driver and the direct connection both take it.
const ENTRIES: &str = "SELECT m.id, m.session_id, m.seq, m.client_msg_id, m.sender, m.kind, \
     m.body, m.created_at FROM json_each(?1) AS w JOIN messages AS m \
     ON m.session_id = w.value ->> 0 AND m.sender = w.value ->> 1 \
     AND m.client_msg_id = w.value ->> 2";

const KEPT: &str = "SELECT a.session_id, a.sender, a.client_msg_id, a.ack, a.request_digest, \
     a.created_at FROM json_each(?1) AS w JOIN submission_acks AS a \
     ON a.session_id = w.value ->> 0 AND a.sender = w.value ->> 1 \
     AND a.client_msg_id = w.value ->> 2";

/// The stored entries and the kept acknowledgements of `wanted`.
pub(super) fn lookup(
    db: &DirectSqlite,
    wanted: &[Key],
) -> Result<(Vec<message::Model>, Vec<submission_ack::Model>), PipelineError> {
    let ids = serde_json::to_string(wanted).map_err(|_| PipelineError::Inconsistent("ids"))?;
    let entries = db
        .query(ENTRIES, &ids)?
        .into_iter()
        .map(|row| entry(row).ok_or(PipelineError::Inconsistent("a stored entry")))
        .collect::<Result<_, _>>()?;
    let kept = db
        .query(KEPT, &ids)?
        .into_iter()
        .map(|row| kept(row).ok_or(PipelineError::Inconsistent("a kept answer")))
        .collect::<Result<_, _>>()?;
    Ok((entries, kept))
}

/// [`lookup`] through the pool, when there is no reading thread.
pub(super) async fn lookup_pooled(
    txn: &impl ConnectionTrait,
    wanted: &[Key],
) -> Result<(Vec<message::Model>, Vec<submission_ack::Model>), PipelineError> {
    let ids = serde_json::to_string(wanted).map_err(|_| PipelineError::Inconsistent("ids"))?;
    let statement =
        |sql: &str| Statement::from_sql_and_values(DbBackend::Sqlite, sql, [ids.clone().into()]);
    let entries = message::Entity::find()
        .from_raw_sql(statement(ENTRIES))
        .all(txn)
        .await?;
    let kept = submission_ack::Entity::find()
        .from_raw_sql(statement(KEPT))
        .all(txn)
        .await?;
    Ok((entries, kept))
}

fn entry(row: Vec<SqliteValue>) -> Option<message::Model> {
    let mut row = row.into_iter();
    Some(message::Model {
        id: integer(row.next()?)?,
        session_id: text(row.next()?)?,
        seq: integer(row.next()?)?,
        client_msg_id: text(row.next()?)?,
        sender: text(row.next()?)?,
        kind: message::MessageKind::try_from_value(&text(row.next()?)?).ok()?,
        body: text(row.next()?)?,
        created_at: time(row.next()?)?,
    })
}

fn kept(row: Vec<SqliteValue>) -> Option<submission_ack::Model> {
    let mut row = row.into_iter();
    Some(submission_ack::Model {
        session_id: text(row.next()?)?,
        sender: text(row.next()?)?,
        client_msg_id: text(row.next()?)?,
        ack: text(row.next()?)?,
        request_digest: match row.next()? {
            SqliteValue::Null => None,
            value => Some(text(value)?),
        },
        created_at: time(row.next()?)?,
    })
}

fn integer(value: SqliteValue) -> Option<i64> {
    match value {
        SqliteValue::Integer(v) => Some(v),
        _ => None,
    }
}

fn text(value: SqliteValue) -> Option<String> {
    match value {
        SqliteValue::Text(v) => Some(v),
        _ => None,
    }
}

/// A time as the pool's driver writes it (RFC 3339).
fn time(value: SqliteValue) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&text(value)?)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_as_models_and_a_wrong_type_is_none() {
        let row = vec![
            SqliteValue::Integer(7),
            SqliteValue::Text("s".into()),
            SqliteValue::Integer(3),
            SqliteValue::Text("c".into()),
            SqliteValue::Text("a".into()),
            SqliteValue::Text("note".into()),
            SqliteValue::Text("b".into()),
            SqliteValue::Text("2026-12-08T03:41:26.12+00:00".into()),
        ];
        let model = entry(row.clone()).unwrap();
        assert_eq!((model.id, model.seq), (7, 3));
        assert_eq!(model.kind, message::MessageKind::Note);
        assert_eq!(model.created_at.timestamp_subsec_micros(), 120_000);
        let mut wrong = row;
        wrong[2] = SqliteValue::Text("3".into());
        assert!(entry(wrong).is_none());

        let ack = kept(vec![
            SqliteValue::Text("s".into()),
            SqliteValue::Text("a".into()),
            SqliteValue::Text("c".into()),
            SqliteValue::Text("{}".into()),
            SqliteValue::Null,
            SqliteValue::Text("2026-12-08T03:41:26+00:00".into()),
        ])
        .unwrap();
        assert_eq!(ack.request_digest, None);
    }
}
