//! The batch writer's hot path on PostgreSQL: a batch's stream entries, session rows, kept
//! acknowledgements, audit entries and the audit head in **one statement**.
//!
//! Each table's rows travel as one JSON array parameter, unpacked by `jsonb_array_elements`
//! in a data-modifying `WITH` clause. The SQL text is the same for every batch, so it is
//! prepared once per connection, and a batch costs one round trip here (four with `BEGIN`, the
//! head's lock and `COMMIT`; one more per 12 KiB of rows, see `STATEMENT_BUDGET`) where one
//! statement per table and per run of rows cost eight or more. Round trips, not statements, bound the rate on PostgreSQL: each is a wake-up
//! of the committing task on a runtime busy with thousands of connections.
//!
//! JSON rather than typed arrays: rows carry NULLs (a session without a team, an entry without
//! a session), which the driver's array binding cannot express.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemas::db::entities::{audit_event, message, submission_ack};
use sea_orm::{ActiveEnum, ActiveValue, ConnectionTrait, DatabaseTransaction, Statement, Value};
use serde::Serialize;

use super::super::PipelineError;
use super::super::decide::{Effects, SessionState};

/// The whole statement: its parameters are the entries ($1), the session rows ($2), the kept
/// acknowledgements ($3), the audit entries in chain order ($4), the chain's new head ($5),
/// the batch's time ($6) and, when the chain's head was not locked and read first, the head it
/// must still be ($7; NULL otherwise): a head another process moved meanwhile is left alone,
/// no row is updated, and the batch fails (its transaction rolls back).
const STATEMENT: &str = r#"
WITH entries AS (
    INSERT INTO messages (session_id, seq, client_msg_id, sender, kind, body, created_at)
    SELECT r->>'session_id', (r->>'seq')::bigint, r->>'client_msg_id', r->>'sender',
           r->>'kind', r->>'body', (r->>'created_at')::timestamptz
    FROM jsonb_array_elements($1::jsonb) AS r
), sessions_moved AS (
    UPDATE sessions AS s SET
        last_seq = COALESCE((r->>'last_seq')::bigint, s.last_seq),
        status = CASE WHEN (r->>'stated')::boolean THEN r->>'status' ELSE s.status END,
        team = CASE WHEN (r->>'stated')::boolean THEN r->>'team' ELSE s.team END,
        assigned_agent = CASE WHEN (r->>'stated')::boolean
            THEN r->>'assigned_agent' ELSE s.assigned_agent END,
        lock_holder = CASE WHEN (r->>'stated')::boolean
            THEN r->>'lock_holder' ELSE s.lock_holder END,
        lock_epoch = CASE WHEN (r->>'stated')::boolean
            THEN (r->>'lock_epoch')::bigint ELSE s.lock_epoch END,
        lock_expires_at = CASE WHEN (r->>'stated')::boolean
            THEN (r->>'lock_expires_at')::timestamptz ELSE s.lock_expires_at END,
        closed_at = CASE WHEN (r->>'stated')::boolean
            THEN (r->>'closed_at')::timestamptz ELSE s.closed_at END,
        updated_at = $6
    FROM jsonb_array_elements($2::jsonb) AS r
    WHERE s.id = r->>'id'
), acks AS (
    INSERT INTO submission_acks
        (session_id, sender, client_msg_id, ack, request_digest, created_at)
    SELECT r->>'session_id', r->>'sender', r->>'client_msg_id', r->>'ack',
           r->>'request_digest', (r->>'created_at')::timestamptz
    FROM jsonb_array_elements($3::jsonb) AS r
), audit AS (
    INSERT INTO audit_events (at, actor, action, session_id, detail, prev_mac, mac)
    SELECT (r->>'at')::timestamptz, r->>'actor', r->>'action', r->>'session_id',
           r->>'detail', r->>'prev_mac', r->>'mac'
    FROM jsonb_array_elements($4::jsonb) WITH ORDINALITY AS a(r, n)
    ORDER BY n
)
UPDATE audit_head SET mac = $5 WHERE id = 1 AND ($7::text IS NULL OR mac = $7)
"#;

#[derive(Serialize)]
struct EntryRow<'a> {
    session_id: &'a str,
    seq: i64,
    client_msg_id: &'a str,
    sender: &'a str,
    kind: String,
    body: &'a str,
    created_at: DateTime<Utc>,
}

/// A session's new `last_seq`, its new state, or both.
#[derive(Serialize)]
struct SessionRow<'a> {
    id: &'a str,
    last_seq: Option<i64>,
    /// The state columns below are written only when set (otherwise they are placeholders).
    stated: bool,
    status: Option<String>,
    team: Option<&'a str>,
    assigned_agent: Option<&'a str>,
    lock_holder: Option<&'a str>,
    lock_epoch: i64,
    lock_expires_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
}

impl<'a> SessionRow<'a> {
    /// A row that changes nothing until its sequence number or state is set.
    fn untouched(id: &'a str) -> Self {
        Self {
            id,
            last_seq: None,
            stated: false,
            status: None,
            team: None,
            assigned_agent: None,
            lock_holder: None,
            lock_epoch: 0,
            lock_expires_at: None,
            closed_at: None,
        }
    }
}

#[derive(Serialize)]
struct AckRow<'a> {
    session_id: &'a str,
    sender: &'a str,
    client_msg_id: &'a str,
    ack: &'a str,
    request_digest: Option<&'a str>,
    created_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct AuditRow<'a> {
    at: DateTime<Utc>,
    actor: &'a str,
    action: &'a str,
    session_id: Option<&'a str>,
    detail: &'a str,
    prev_mac: &'a str,
    mac: &'a str,
}

/// A column the decisions always set; one they did not is a bug, and fails the batch.
fn set<T>(value: &ActiveValue<T>) -> Result<&T, PipelineError>
where
    T: Into<Value>,
{
    value
        .try_as_ref()
        .ok_or(PipelineError::Inconsistent("a row to write lacks a column"))
}

/// Writes the batch's entries, session rows (sequence and state), kept acknowledgements and
/// audit entries, and moves the audit head to `head`, in one statement. Takes those parts out
/// of `fx`.
pub(super) async fn write_hot_path(
    txn: &DatabaseTransaction,
    fx: &mut Effects,
    audit: Vec<audit_event::ActiveModel>,
    head: String,
    mut assumed: Option<String>,
    now: DateTime<Utc>,
) -> Result<(), PipelineError> {
    let entries = std::mem::take(&mut fx.entries);
    let entry_rows = entries
        .iter()
        .map(entry_row)
        .collect::<Result<Vec<_>, _>>()?;
    let last_seqs = std::mem::take(&mut fx.last_seqs);
    let states = std::mem::take(&mut fx.states);
    let session_rows = session_rows(&last_seqs, &states);
    let kept = std::mem::take(&mut fx.kept_acks);
    let ack_rows = kept.iter().map(ack_row).collect::<Result<Vec<_>, _>>()?;
    let audit_rows = audit.iter().map(audit_row).collect::<Result<Vec<_>, _>>()?;
    let tables = [
        serialized(&entry_rows)?,
        serialized(&session_rows)?,
        serialized(&ack_rows)?,
        serialized(&audit_rows)?,
    ];
    // Every part moves the head to the batch's last entry: the transaction ends with it there.
    // The first checks the assumed head; once it has moved it, the row is this transaction's
    // until it ends.
    for [entries, sessions, acks, audit] in parts(tables, STATEMENT_BUDGET) {
        let checked = assumed.take();
        let moved_elsewhere = checked.is_some();
        let statement = Statement::from_sql_and_values(
            txn.get_database_backend(),
            STATEMENT,
            [
                Value::from(entries),
                Value::from(sessions),
                Value::from(acks),
                Value::from(audit),
                Value::from(head.clone()),
                Value::from(now),
                Value::from(checked),
            ],
        );
        let result = txn.execute_raw(statement).await?;
        if result.rows_affected() != 1 {
            return Err(if moved_elsewhere {
                PipelineError::HeadMoved
            } else {
                PipelineError::Inconsistent("the audit head row is missing")
            });
        }
    }
    Ok(())
}

/// The most row data (JSON bytes) one statement carries. The driver (sqlx) does not set
/// `TCP_NODELAY` on its PostgreSQL connections and, over TLS, writes a message larger than one
/// TLS record (16 KiB) in two writes: Nagle's algorithm then holds the second until the server
/// acknowledges the first, which the server delays by ~40 ms, on every such statement (found
/// with strace: runs whose batches outgrew one record stayed 40 ms per batch slower for good).
/// A batch larger than this is written in several statements of the same transaction.
const STATEMENT_BUDGET: usize = 12 * 1024;

fn serialized<T: Serialize>(rows: &[T]) -> Result<Vec<String>, PipelineError> {
    rows.iter()
        .map(|row| {
            serde_json::to_string(row)
                .map_err(|_| PipelineError::Inconsistent("a row to write is not serializable"))
        })
        .collect()
}

/// Splits each table's rows (already JSON) into statements of at most `budget` bytes of rows
/// (one row larger than that goes alone), keeping each table's order (the audit entries' ids
/// follow it), and returns each statement's four JSON arrays. Always at least one statement.
fn parts(tables: [Vec<String>; 4], budget: usize) -> Vec<[String; 4]> {
    let mut statements = Vec::new();
    let mut current: [Vec<String>; 4] = Default::default();
    let mut bytes = 0;
    for (table, rows) in tables.into_iter().enumerate() {
        for row in rows {
            let size = row.len() + 1;
            if bytes > 0 && bytes + size > budget {
                statements.push(std::mem::take(&mut current));
                bytes = 0;
            }
            bytes += size;
            current[table].push(row);
        }
    }
    statements.push(current);
    statements
        .into_iter()
        .map(|tables| tables.map(|rows| format!("[{}]", rows.join(","))))
        .collect()
}

fn entry_row(row: &message::ActiveModel) -> Result<EntryRow<'_>, PipelineError> {
    Ok(EntryRow {
        session_id: set(&row.session_id)?,
        seq: *set(&row.seq)?,
        client_msg_id: set(&row.client_msg_id)?,
        sender: set(&row.sender)?,
        kind: set(&row.kind)?.to_value(),
        body: set(&row.body)?,
        created_at: *set(&row.created_at)?,
    })
}

/// One row per touched session, in a stable order (by id), merging its new sequence number
/// and its new state: one `UPDATE` may change a row only once.
fn session_rows<'a>(
    last_seqs: &'a std::collections::HashMap<String, i64>,
    states: &'a [(String, SessionState)],
) -> Vec<SessionRow<'a>> {
    let mut rows: BTreeMap<&str, SessionRow<'a>> = last_seqs
        .iter()
        .map(|(id, seq)| {
            let mut row = SessionRow::untouched(id);
            row.last_seq = Some(*seq);
            (id.as_str(), row)
        })
        .collect();
    for (id, state) in states {
        let row = rows
            .entry(id.as_str())
            .or_insert_with(|| SessionRow::untouched(id));
        row.stated = true;
        row.status = Some(state.status.to_value());
        row.team = state.team.as_deref();
        row.assigned_agent = state.assigned_agent.as_deref();
        row.lock_holder = state.lock.holder.as_deref();
        row.lock_epoch = state.lock.epoch as i64;
        row.lock_expires_at = state.lock.expires_at;
        row.closed_at = state.closed_at;
    }
    rows.into_values().collect()
}

fn ack_row(row: &submission_ack::ActiveModel) -> Result<AckRow<'_>, PipelineError> {
    Ok(AckRow {
        session_id: set(&row.session_id)?,
        sender: set(&row.sender)?,
        client_msg_id: set(&row.client_msg_id)?,
        ack: set(&row.ack)?,
        request_digest: set(&row.request_digest)?.as_deref(),
        created_at: *set(&row.created_at)?,
    })
}

fn audit_row(row: &audit_event::ActiveModel) -> Result<AuditRow<'_>, PipelineError> {
    Ok(AuditRow {
        at: *set(&row.at)?,
        actor: set(&row.actor)?,
        action: set(&row.action)?,
        session_id: set(&row.session_id)?.as_deref(),
        detail: set(&row.detail)?,
        prev_mac: set(&row.prev_mac)?,
        mac: set(&row.mac)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::lock::ReplyLock;
    use schemas::db::entities::session::SessionStatus;

    #[test]
    fn large_batches_are_split_within_the_budget_keeping_each_tables_order() {
        let rows = |prefix: &str, n: usize| -> Vec<String> {
            (0..n).map(|i| format!("\"{prefix}{i:03}\"")).collect()
        };
        // 8 bytes per row with its comma: 4 rows fit a budget of 32.
        let statements = parts([rows("e", 5), rows("s", 2), vec![], rows("a", 3)], 32);
        let joined: Vec<String> = statements.iter().map(|s| s.join(" ")).collect();
        assert_eq!(
            joined,
            [
                r#"["e000","e001","e002","e003"] [] [] []"#,
                r#"["e004"] ["s000","s001"] [] ["a000"]"#,
                r#"[] [] [] ["a001","a002"]"#,
            ]
        );
        // One row over the budget goes alone; nothing at all is still one statement.
        let big = parts([vec!["x".repeat(100)], rows("s", 1), vec![], vec![]], 32);
        assert_eq!(big.len(), 2);
        assert_eq!(
            parts(Default::default(), 32),
            [["[]", "[]", "[]", "[]"].map(String::from)]
        );
    }

    #[test]
    fn a_session_with_a_new_sequence_and_a_new_state_is_one_row() {
        let last_seqs = [("a".to_owned(), 7), ("b".to_owned(), 3)]
            .into_iter()
            .collect();
        let states = vec![
            (
                "b".to_owned(),
                SessionState {
                    status: SessionStatus::Closed,
                    team: Some("licensing".to_owned()),
                    assigned_agent: None,
                    lock: ReplyLock::default(),
                    closed_at: None,
                },
            ),
            (
                "c".to_owned(),
                SessionState {
                    status: SessionStatus::Active,
                    team: None,
                    assigned_agent: Some("agent-1".to_owned()),
                    lock: ReplyLock::default(),
                    closed_at: None,
                },
            ),
        ];
        let rows = session_rows(&last_seqs, &states);
        let summary: Vec<_> = rows
            .iter()
            .map(|r| (r.id, r.last_seq, r.stated, r.status.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("a", Some(7), false, None),
                ("b", Some(3), true, Some("closed")),
                ("c", None, true, Some("active")),
            ]
        );
        let json = serde_json::to_value(&rows[1]).unwrap();
        assert_eq!(json["team"], "licensing");
        assert_eq!(json["assigned_agent"], serde_json::Value::Null);
    }
}
