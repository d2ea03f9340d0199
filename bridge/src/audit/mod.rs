//! The audit trail: an append-only table whose entries are chained with HMAC-SHA-256.
//!
//! Each entry's MAC covers its own fields and the previous entry's MAC, under a key only the
//! server holds. Changing an entry breaks its MAC; deleting one breaks the next entry's link;
//! inserting one needs a MAC nobody without the key can compute; reordering breaks the links.
//! (Removing entries from the *end* leaves a shorter chain that is still valid; detecting that
//! needs an anchor kept elsewhere, such as certified transcripts, which come later.)
//!
//! Entries that record a stored conversation row (a message, note or event, a survey answer)
//! carry a digest of it, so the chain covers what was said too; [`AuditTrail::verify`] checks
//! the tables against it ([`crate::record`]).
//!
//! Appends are serialized: within a process by a lock, and across processes (the gateway records
//! denials while a separate `courtchat bridge` records messages) by the `audit_head` row, which
//! every appending transaction locks first and moves to its last entry.

use std::path::PathBuf;

use chrono::{SecondsFormat, SubsecRound, Utc};
use ring::hmac;
use schemas::db::entities::{audit_event, audit_head};
use sea_orm::prelude::DateTimeUtc;
use sea_orm::{
    ColumnTrait, DatabaseBackend, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Set, Statement, TransactionTrait,
};
use serde::{Deserialize, Serialize};

use crate::record::{Claim, Difference, RecordCheck, RecordCounts};

/// The `[audit]` section of the configuration. The process that serves reads the key (inline,
/// or from `key_file`, which it creates on first start) and hands it to [`AuditKey::from_secret`];
/// this crate reads no files.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The HMAC key, inline (redacted when printed). Prefer `key_file`.
    pub key: String,
    /// A file holding the key; created with 32 random bytes on first start if missing.
    pub key_file: PathBuf,
    /// Seconds between the server's own verifications of the whole chain (and the tables
    /// against it), whose outcome `/metrics` reports; 0: only when asked.
    pub verify_every_secs: u64,
}

impl std::fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditConfig")
            .field(
                "key",
                &if self.key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("key_file", &self.key_file)
            .field("verify_every_secs", &self.verify_every_secs)
            .finish()
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            key: String::new(),
            key_file: PathBuf::from("data/audit-key"),
            verify_every_secs: 3600,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "the audit key (`audit.key` or the file `audit.key_file` names) must be at least 32 bytes"
    )]
    ShortKey,
    #[error("the audit trail could not be written or read: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("an audit detail could not be serialized: {0}")]
    Detail(#[from] serde_json::Error),
}

/// The HMAC key of the chain.
#[derive(Clone)]
pub struct AuditKey(hmac::Key);

impl AuditKey {
    /// The key from its secret bytes: at least 32 of them (HMAC-SHA-256's output size, below
    /// which a key is weaker than the MAC).
    pub fn from_secret(secret: &[u8]) -> Result<Self, AuditError> {
        if secret.len() < 32 {
            return Err(AuditError::ShortKey);
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// The MAC of one entry given the previous entry's MAC. Fields are length-prefixed so that
    /// no two different entries have the same input.
    fn mac(
        &self,
        prev_mac: &str,
        at: &DateTimeUtc,
        actor: &str,
        action: &str,
        session_id: Option<&str>,
        detail: &str,
    ) -> String {
        let mut context = hmac::Context::with_key(&self.0);
        let at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
        for field in [
            prev_mac,
            at.as_str(),
            actor,
            action,
            session_id.unwrap_or("\u{0}none"),
            detail,
        ] {
            context.update(&(field.len() as u64).to_be_bytes());
            context.update(field.as_bytes());
        }
        hex::encode(context.sign().as_ref())
    }

    /// Whether `entry`'s MAC matches its content and the link it claims (its `prev_mac`): it
    /// was written with this key, whether or not it still sits in the chain where it claims.
    pub(crate) fn authentic(&self, entry: &audit_event::Model) -> bool {
        self.chain_break(&entry.prev_mac, entry).is_none()
    }

    /// Why `entry` does not follow `prev_mac` in the chain, if it does not.
    fn chain_break(&self, prev_mac: &str, entry: &audit_event::Model) -> Option<&'static str> {
        if entry.prev_mac != prev_mac {
            Some("does not follow the previous entry (an entry was deleted, inserted or moved)")
        } else if self.mac(
            prev_mac,
            &entry.at,
            &entry.actor,
            &entry.action,
            entry.session_id.as_deref(),
            &entry.detail,
        ) != entry.mac
        {
            Some("its content does not match its MAC (the entry was changed or forged)")
        } else {
            None
        }
    }
}

/// One event to record.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    /// Who did it: a subject, `system`, or an admin.
    pub actor: String,
    /// What happened, dotted: `mqtt.publish.denied`, `message.accepted`, `lock.acquired`.
    pub action: String,
    pub session_id: Option<String>,
    pub detail: serde_json::Value,
}

/// Entries appended inside one transaction; dropping it ends this process's turn.
///
/// Entries are chained in memory as they are appended and written together by
/// [`AuditBatch::flush`] (one multi-row insert and one head update per batch instead of two
/// statements per entry: the pipeline's throughput was bound by those round trips). The ids
/// the database gives them follow the insert's row order, which is the chain's order.
pub struct AuditBatch<'a> {
    _turn: tokio::sync::MutexGuard<'a, ()>,
    head: String,
    /// When the head was taken from this process's memory instead of locked and read: the
    /// head the database must still hold, checked by the statement that moves it.
    assumed: Option<String>,
    key: &'a AuditKey,
    pending: Vec<audit_event::ActiveModel>,
}

/// Splits `rows` into runs whose lengths are powers of two, at most 64: a multi-row statement
/// then has one of only seven shapes. The database driver caches a prepared statement per
/// distinct SQL text, so a shape per batch size filled its cache with large statements (memory
/// grew with every new batch size) and parsed a new one for most batches (CPU).
pub(crate) fn in_statement_sizes<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let size = if rows.len() >= 64 {
            64
        } else {
            1 << rows.len().ilog2()
        };
        let (run, rest) = rows.split_at(size);
        rows = rest;
        Some(run)
    })
}

impl AuditBatch<'_> {
    /// Chains `entry` after the previous one; it is written by the next [`AuditBatch::flush`],
    /// which must run before the transaction commits.
    pub fn append(&mut self, entry: AuditEntry) -> Result<(), AuditError> {
        // Microseconds: what PostgreSQL keeps, so the MAC verifies after a round trip.
        let at = Utc::now().trunc_subsecs(6);
        let detail = serde_json::to_string(&entry.detail)?;
        let mac = self.key.mac(
            &self.head,
            &at,
            &entry.actor,
            &entry.action,
            entry.session_id.as_deref(),
            &detail,
        );
        self.pending.push(audit_event::ActiveModel {
            at: Set(at),
            actor: Set(entry.actor),
            action: Set(entry.action),
            session_id: Set(entry.session_id),
            detail: Set(detail),
            prev_mac: Set(std::mem::replace(&mut self.head, mac.clone())),
            mac: Set(mac),
            ..Default::default()
        });
        Ok(())
    }

    /// Takes the entries appended since the last flush, in chain order, with the head they
    /// lead to, for a writer that stores them (and moves the stored head) itself, together
    /// with other rows in one statement, before the transaction commits.
    pub(crate) fn take_pending(&mut self) -> (Vec<audit_event::ActiveModel>, String) {
        (std::mem::take(&mut self.pending), self.head.clone())
    }

    /// The head this batch assumed the database holds without locking it (see
    /// [`AuditTrail::assuming_batch`]); the writer that moves the head must check it.
    pub(crate) fn assumed(&self) -> Option<&str> {
        self.assumed.as_deref()
    }

    /// The head once this batch's entries are written.
    pub fn head(&self) -> &str {
        &self.head
    }

    /// Writes the entries appended since the last flush, in order, and moves the stored head.
    pub async fn flush<C: sea_orm::ConnectionTrait>(&mut self, db: &C) -> Result<(), AuditError> {
        for statement in self.take_statements(db.get_database_backend()) {
            db.execute_raw(statement).await?;
        }
        Ok(())
    }

    /// The statements that write the entries appended since the last flush, in order, and move
    /// the stored head; none when nothing was appended. For a writer that runs them itself.
    pub(crate) fn take_statements(&mut self, backend: DatabaseBackend) -> Vec<Statement> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let pending = std::mem::take(&mut self.pending);
        let mut statements: Vec<Statement> = in_statement_sizes(&pending)
            .map(|rows| audit_event::Entity::insert_many(rows.to_vec()).build(backend))
            .collect();
        statements.push(
            audit_head::Entity::update_many()
                .col_expr(
                    audit_head::Column::Mac,
                    sea_orm::sea_query::Expr::value(self.head.clone()),
                )
                .filter(audit_head::Column::Id.eq(1))
                .build(backend),
        );
        statements
    }
}

/// The result of walking the chain and checking the conversation tables against it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verification {
    /// Entries whose MAC and link verified, up to the first that does not.
    pub entries: u64,
    /// The first entry that does not verify, with the reason.
    pub first_broken: Option<(i64, String)>,
    /// Stored rows found as the verified entries recorded them, up to the first difference.
    pub records: RecordCounts,
    /// The first stored row that differs from what the verified part of the chain recorded, in
    /// chain order; a row no entry names comes after every entry.
    pub first_difference: Option<Difference>,
}

impl Verification {
    /// The chain verified and the conversation tables hold exactly what it recorded.
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none() && self.first_difference.is_none()
    }
}

/// Entries (and rows) read per query while verifying, so that memory does not grow with the
/// store.
const VERIFY_PAGE: u64 = 1_000;

/// Appends to and verifies the chain.
pub struct AuditTrail {
    db: DatabaseConnection,
    key: AuditKey,
    /// Serializes this process's appends, so they queue here instead of at the database.
    turn: tokio::sync::Mutex<()>,
    /// The head as this process last committed it, while no append of this process has
    /// failed since (then unknown until read again).
    known_head: std::sync::Mutex<Option<String>>,
}

impl AuditTrail {
    pub async fn open(store: &store::Store, key: AuditKey) -> Result<Self, AuditError> {
        Ok(Self {
            db: store.connection().clone(),
            key,
            turn: tokio::sync::Mutex::new(()),
            known_head: std::sync::Mutex::new(None),
        })
    }

    /// Appends `entry` to the chain, in a transaction of its own.
    pub async fn append(&self, entry: AuditEntry) -> Result<(), AuditError> {
        let txn = self.db.begin().await?;
        let mut batch = self.batch(&txn).await?;
        let appended = async {
            batch.append(entry)?;
            batch.flush(&txn).await?;
            txn.commit().await?;
            Ok::<_, AuditError>(())
        }
        .await;
        self.settle(&batch, appended.is_ok());
        drop(batch);
        appended
    }

    /// Records how `batch` ended, before it ends this process's turn: committed, its head is
    /// the chain's head; otherwise the head is unknown until it is read again.
    pub fn settle(&self, batch: &AuditBatch<'_>, committed: bool) {
        *self.known() = committed.then(|| batch.head().to_owned());
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // One assignment at a time: a poisoned lock still holds a whole value.
        self.known_head
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Like [`AuditTrail::batch`], but on PostgreSQL, when this process committed the head
    /// last, starts from the head it remembers without locking or reading it: one round trip
    /// less per batch for the chat pipeline. The writer must then move the head only if it is
    /// still the one assumed ([`AuditBatch::assumed`]) and fail the batch otherwise (another
    /// process appended meanwhile); the batch is then decided again, from a locked read.
    pub(crate) async fn assuming_batch<C: sea_orm::ConnectionTrait>(
        &self,
        db: &C,
    ) -> Result<AuditBatch<'_>, AuditError> {
        if db.get_database_backend() == DatabaseBackend::Postgres {
            let turn = self.turn.lock().await;
            let known = self.known().clone();
            if let Some(head) = known {
                return Ok(self.started(turn, head.clone(), Some(head)));
            }
        }
        self.batch(db).await
    }

    /// Starts appending inside the caller's transaction `db`: waits for this process's turn,
    /// then locks the chain's head row until that transaction ends, so that a rolled-back
    /// transaction leaves the chain as it was and no other writer can interleave.
    pub async fn batch<C: sea_orm::ConnectionTrait>(
        &self,
        db: &C,
    ) -> Result<AuditBatch<'_>, AuditError> {
        let turn = self.turn.lock().await;
        let head = if db.get_database_backend() == DatabaseBackend::Postgres {
            // Lock and read in one round trip: on PostgreSQL round trips bound the rate.
            let locked = db
                .query_one_raw(Statement::from_string(
                    DatabaseBackend::Postgres,
                    "UPDATE audit_head SET mac = mac WHERE id = 1 RETURNING mac",
                ))
                .await?;
            match locked {
                Some(row) => row.try_get::<String>("", "mac")?,
                None => String::new(),
            }
        } else {
            // A no-op update takes SQLite's write lock before the read.
            audit_head::Entity::update_many()
                .col_expr(
                    audit_head::Column::Mac,
                    sea_orm::sea_query::Expr::col(audit_head::Column::Mac),
                )
                .filter(audit_head::Column::Id.eq(1))
                .exec(db)
                .await?;
            audit_head::Entity::find_by_id(1)
                .one(db)
                .await?
                .map(|h| h.mac)
                .unwrap_or_default()
        };
        Ok(self.started(turn, head, None))
    }

    /// A batch in this process's `turn`, chained to `head`.
    fn started<'a>(
        &'a self,
        turn: tokio::sync::MutexGuard<'a, ()>,
        head: String,
        assumed: Option<String>,
    ) -> AuditBatch<'a> {
        AuditBatch {
            _turn: turn,
            head,
            assumed,
            key: &self.key,
            pending: Vec::new(),
        }
    }

    /// Starts appending on the committer's own SQLite connection: waits for this process's
    /// turn, then begins that connection's transaction, taking SQLite's write lock (in this
    /// order: a writer holding the lock while it waits for the turn would hold up the one whose
    /// turn it is), and reads the head under it. The caller commits or rolls back.
    pub(crate) async fn direct_batch(
        &self,
        direct: &store::DirectSqlite,
    ) -> Result<AuditBatch<'_>, AuditError> {
        let turn = self.turn.lock().await;
        direct.execute_batch("BEGIN IMMEDIATE")?;
        let head = direct
            .query_text("SELECT mac FROM audit_head WHERE id = 1")?
            .unwrap_or_default();
        Ok(self.started(turn, head, None))
    }

    /// [`AuditTrail::verify`] with this trail's key.
    pub async fn verify_with_own_key(
        &self,
        store: &store::Store,
    ) -> Result<Verification, AuditError> {
        Self::verify(store, &self.key).await
    }

    /// Walks the whole chain in id order and names the first entry that does not verify, and
    /// checks the conversation tables against what the verified entries recorded
    /// ([`crate::record`]).
    pub async fn verify(store: &store::Store, key: &AuditKey) -> Result<Verification, AuditError> {
        Self::verify_in_pages(store.connection(), key, VERIFY_PAGE).await
    }

    pub(crate) async fn verify_in_pages<C: sea_orm::ConnectionTrait>(
        db: &C,
        key: &AuditKey,
        page: u64,
    ) -> Result<Verification, AuditError> {
        let mut verification = Verification::default();
        let mut records = RecordCheck::default();
        let mut prev = String::new();
        let mut after = None;
        // The chain is walked to its end (or break) even after a row differs, so that
        // `first_broken` always answers for the chain itself; rows stop being looked up.
        while verification.first_broken.is_none() {
            let mut query = audit_event::Entity::find()
                .order_by_asc(audit_event::Column::Id)
                .limit(page);
            if let Some(after) = after {
                query = query.filter(audit_event::Column::Id.gt(after));
            }
            let entries = query.all(db).await?;
            let Some(last) = entries.last() else {
                break;
            };
            after = Some(last.id);
            let mut claims = Vec::new();
            for entry in &entries {
                if let Some(reason) = key.chain_break(&prev, entry) {
                    verification.first_broken = Some((entry.id, reason.to_owned()));
                    break;
                }
                verification.entries += 1;
                prev = entry.mac.clone();
                claims.extend(Claim::of(entry));
            }
            if verification.first_difference.is_none() {
                verification.first_difference = records.check(db, key, &claims).await?;
            }
        }
        if verification.is_intact() {
            verification.first_difference = records.unrecorded(db, page).await?;
        }
        verification.records = records.counts;
        Ok(verification)
    }
}

#[cfg(test)]
mod shape_tests {
    use super::*;

    #[test]
    fn statements_have_few_shapes() {
        let rows: Vec<u32> = (0..203).collect();
        let sizes: Vec<usize> = in_statement_sizes(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, vec![64, 64, 64, 8, 2, 1]);
        assert_eq!(
            in_statement_sizes(&rows).flatten().count(),
            203,
            "every row, once"
        );
    }
}

#[cfg(test)]
mod tests;
