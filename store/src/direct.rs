//! A connection of its own to the SQLite file, whose statements run on the thread that calls
//! them.
//!
//! The ORM's SQLite driver keeps each connection on a worker thread of its own and hands it
//! every statement over a channel, and every answer back: two thread wake-ups per statement.
//! Measured on the chat pipeline's committer (2026-12-07, chat-1000), those hand-offs, not
//! SQLite, were most of the cost of storing a message. The committer, which runs on a thread
//! of its own and writes a batch in a handful of statements, uses this connection instead:
//! statements built by the ORM's query builders, run here, in place.
//!
//! Values are bound as the ORM's driver binds them (times as RFC 3339 text, booleans as
//! integers), so rows written here read back through the ORM alike and compare alike in SQL.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::SecondsFormat;
use rusqlite::types::Value as Bound;
/// A column's value as SQLite stores it (integer, real, text, blob or null).
pub use rusqlite::types::Value as SqliteValue;
use sea_orm::{DbErr, RuntimeErr, Statement, Value};

/// Statements kept prepared: the committer's few shapes (multi-row runs of seven sizes per
/// table) with room to spare.
const PREPARED: usize = 128;

/// An SQLite connection used directly, with the pool's settings.
pub struct DirectSqlite {
    // Used by one thread at a time, but held by futures that must be `Send`; never contended.
    conn: Mutex<rusqlite::Connection>,
}

impl std::fmt::Debug for DirectSqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectSqlite").finish_non_exhaustive()
    }
}

impl DirectSqlite {
    /// Opens `path` (which must exist: the pool created and migrated it) with the settings
    /// every pooled connection has: write-ahead log, synchronous commits, foreign keys, and
    /// waiting up to `busy` for another writer.
    pub fn open(path: &Path, busy: Duration) -> Result<Self, DbErr> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(failed)?;
        conn.busy_timeout(busy).map_err(failed)?;
        conn.execute_batch(
            // Statement journals (a multi-row insert's undo, should it fail half way) in memory:
            // they live for one statement, and a file for each cost an open and writes. The
            // database file mapped: a connection's page cache is dropped whenever another
            // commits, and its pages are then read again, by a system call each without a map.
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY; PRAGMA mmap_size = 268435456;",
        )
        .map_err(failed)?;
        conn.set_prepared_statement_cache_capacity(PREPARED);
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, rusqlite::Connection> {
        // A statement that panicked half way left nothing the next one relies on: SQLite ends
        // a failed statement itself, and the transaction is rolled back by its owner.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `statement` (built by the ORM for SQLite) and returns the rows it changed.
    pub fn execute(&self, statement: &Statement) -> Result<u64, DbErr> {
        let conn = self.conn();
        let mut prepared = conn.prepare_cached(&statement.sql).map_err(failed)?;
        let values = match &statement.values {
            Some(values) => values.0.iter().map(bind).collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let changed = prepared
            .execute(rusqlite::params_from_iter(values))
            .map_err(failed)?;
        Ok(changed as u64)
    }

    /// Runs statements without parameters (`BEGIN IMMEDIATE`, `COMMIT`).
    pub fn execute_batch(&self, sql: &str) -> Result<(), DbErr> {
        self.conn().execute_batch(sql).map_err(failed)
    }

    /// The first column of the first row `sql` returns, as text; `None` without a row.
    pub fn query_text(&self, sql: &str) -> Result<Option<String>, DbErr> {
        let conn = self.conn();
        let mut prepared = conn.prepare_cached(sql).map_err(failed)?;
        let mut rows = prepared.query([]).map_err(failed)?;
        match rows.next().map_err(failed)? {
            Some(row) => row.get(0).map(Some).map_err(failed),
            None => Ok(None),
        }
    }

    /// The rows `sql` returns for its one text parameter, each as its columns' values.
    pub fn query(&self, sql: &str, param: &str) -> Result<Vec<Vec<SqliteValue>>, DbErr> {
        let conn = self.conn();
        let mut prepared = conn.prepare_cached(sql).map_err(failed)?;
        let width = prepared.column_count();
        let mut rows = prepared.query([param]).map_err(failed)?;
        let mut all = Vec::new();
        while let Some(row) = rows.next().map_err(failed)? {
            let values = (0..width)
                .map(|i| row.get::<_, SqliteValue>(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(failed)?;
            all.push(values);
        }
        Ok(all)
    }

    /// Leaves checkpoints to another connection ([`DirectSqlite::checkpoint`]): by default the
    /// connection whose commit takes the log past 1,000 pages copies it into the database
    /// there and then, and that commit waits for it.
    pub fn without_checkpoints(&self) -> Result<(), DbErr> {
        self.conn()
            .execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .map_err(failed)
    }

    /// Copies what it can of the log into the database without waiting for writers or
    /// readers (a passive checkpoint); returns the log's frames and how many are copied.
    pub fn checkpoint(&self) -> Result<(i64, i64), DbErr> {
        let conn = self.conn();
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        })
        .map_err(failed)
    }

    /// Whether a transaction is open on this connection (one that failed half way must be
    /// rolled back before the next begins).
    pub fn in_transaction(&self) -> bool {
        !self.conn().is_autocommit()
    }
}

fn failed(error: rusqlite::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::Internal(format!("sqlite: {error}")))
}

/// `value` as the ORM's SQLite driver binds it.
fn bind(value: &Value) -> Result<Bound, DbErr> {
    fn int(v: Option<i64>) -> Bound {
        v.map_or(Bound::Null, Bound::Integer)
    }
    fn text(v: Option<String>) -> Bound {
        v.map_or(Bound::Null, Bound::Text)
    }
    Ok(match value {
        Value::Bool(v) => int(v.map(i64::from)),
        Value::TinyInt(v) => int(v.map(i64::from)),
        Value::SmallInt(v) => int(v.map(i64::from)),
        Value::Int(v) => int(v.map(i64::from)),
        Value::BigInt(v) => int(*v),
        Value::TinyUnsigned(v) => int(v.map(i64::from)),
        Value::SmallUnsigned(v) => int(v.map(i64::from)),
        Value::Unsigned(v) => int(v.map(i64::from)),
        Value::BigUnsigned(v) => match v {
            Some(v) => Bound::Integer(i64::try_from(*v).map_err(|_| {
                DbErr::Exec(RuntimeErr::Internal(format!(
                    "{v} does not fit SQLite's integer"
                )))
            })?),
            None => Bound::Null,
        },
        Value::Float(v) => v.map_or(Bound::Null, |v| Bound::Real(f64::from(v))),
        Value::Double(v) => v.map_or(Bound::Null, Bound::Real),
        Value::String(v) => text(v.clone()),
        Value::Char(v) => text(v.map(String::from)),
        Value::Enum(v) => text(match v {
            sea_orm::sea_query::OptionEnum::Some(v) => Some(v.value.to_string()),
            sea_orm::sea_query::OptionEnum::None(_) => None,
        }),
        Value::Bytes(v) => v.clone().map_or(Bound::Null, Bound::Blob),
        Value::Json(v) => text(v.as_ref().map(|json| json.to_string())),
        Value::ChronoDateTimeUtc(v) => {
            text(v.map(|at| at.to_rfc3339_opts(SecondsFormat::AutoSi, false)))
        }
        Value::ChronoDateTimeWithTimeZone(v) => {
            text(v.map(|at| at.to_rfc3339_opts(SecondsFormat::AutoSi, false)))
        }
        Value::ChronoDateTime(v) => text(v.map(|at| at.format("%F %T%.f").to_string())),
        Value::ChronoDate(v) => text(v.map(|d| d.format("%F").to_string())),
        other => {
            return Err(DbErr::Exec(RuntimeErr::Internal(format!(
                "the direct SQLite connection does not bind {other:?}"
            ))));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn values_are_bound_as_the_pool_binds_them() {
        let at = Utc.with_ymd_and_hms(2026, 12, 8, 3, 41, 26).unwrap()
            + chrono::Duration::microseconds(123_456);
        assert_eq!(
            bind(&Value::ChronoDateTimeUtc(Some(at))).unwrap(),
            Bound::Text("2026-12-08T03:41:26.123456+00:00".to_owned())
        );
        assert_eq!(bind(&Value::Bool(Some(true))).unwrap(), Bound::Integer(1));
        assert_eq!(bind(&Value::Int(None)).unwrap(), Bound::Null);
        assert_eq!(
            bind(&Value::String(Some("x".into()))).unwrap(),
            Bound::Text("x".into())
        );
        assert!(bind(&Value::BigUnsigned(Some(u64::MAX))).is_err());
    }

    /// The same row written through the pool and through the direct connection is stored as
    /// the same text, reads back through the ORM as the same model, and a failed statement
    /// says why.
    #[tokio::test]
    async fn rows_written_directly_read_back_as_the_pool_writes_them() {
        use schemas::db::entities::audit_event;
        use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, QueryOrder, QueryTrait, Set};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cc.db");
        let config = crate::DatabaseConfig {
            url: format!("sqlite://{}", path.display()),
            ..crate::DatabaseConfig::default()
        };
        let store = crate::Store::open(&config).await.unwrap();
        let direct = store.direct().unwrap().unwrap();
        let at = Utc.with_ymd_and_hms(2026, 12, 8, 3, 41, 26).unwrap()
            + chrono::Duration::microseconds(120_000);
        let row = |actor: &str| audit_event::ActiveModel {
            at: Set(at),
            actor: Set(actor.to_owned()),
            action: Set("test".to_owned()),
            session_id: Set(None),
            detail: Set("{}".to_owned()),
            prev_mac: Set(String::new()),
            mac: Set(actor.to_owned()),
            ..Default::default()
        };
        audit_event::Entity::insert(row("pool"))
            .exec_without_returning(store.connection())
            .await
            .unwrap();
        let built = audit_event::Entity::insert(row("direct")).build(DbBackend::Sqlite);
        direct.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert!(direct.in_transaction());
        assert_eq!(direct.execute(&built).unwrap(), 1);
        direct.execute_batch("COMMIT").unwrap();

        let raw = store
            .connection()
            .query_all_raw(sea_orm::Statement::from_string(
                DbBackend::Sqlite,
                "SELECT at, session_id IS NULL AS no_session FROM audit_events ORDER BY id",
            ))
            .await
            .unwrap();
        let texts: Vec<(String, bool)> = raw
            .iter()
            .map(|r| {
                (
                    r.try_get("", "at").unwrap(),
                    r.try_get("", "no_session").unwrap(),
                )
            })
            .collect();
        assert_eq!(texts.len(), 2);
        assert_eq!(texts[0], texts[1], "stored alike");
        let models = audit_event::Entity::find()
            .order_by_asc(audit_event::Column::Id)
            .all(store.connection())
            .await
            .unwrap();
        assert_eq!(models[1].at, at);
        assert_eq!(models[1].session_id, None);
        assert_eq!(
            direct
                .query_text("SELECT mac FROM audit_events ORDER BY id DESC")
                .unwrap(),
            Some("direct".to_owned())
        );

        // A second row with the same id breaks the primary key: an error, not a panic.
        let mut dup = row("dup");
        dup.id = Set(models[1].id);
        let refused = direct.execute(&audit_event::Entity::insert(dup).build(DbBackend::Sqlite));
        assert!(refused.unwrap_err().to_string().contains("UNIQUE"));
        store.close().await;
    }
}
