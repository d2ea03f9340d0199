//! A change and its audit entry in one transaction: the entry is on the chain exactly when the
//! change is stored (an action the record does not show must not happen, and the record must
//! not show what did not happen). Staff, kiosks and retention policies change this way.
//!
//! The chain's turn is taken first, before the work reads anything: on SQLite a transaction
//! that reads first holds a snapshot, and if another writer (the gateway recording a denial,
//! the chat pipeline) commits before this one writes, its first write fails at once with a
//! snapshot error instead of waiting; taking the turn (a write to the head row) first makes it
//! wait its turn instead. On PostgreSQL the head row's lock orders the writers the same way.

use sea_orm::{DatabaseTransaction, TransactionTrait};

/// Runs `work` in a transaction holding the audit chain, appending the entry it returns (if
/// any) before committing; the chain's head is settled either way.
pub(crate) async fn audited<T, E>(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    work: impl AsyncFnOnce(&DatabaseTransaction) -> Result<(T, Option<bridge::AuditEntry>), E>,
) -> Result<T, E>
where
    E: From<sea_orm::DbErr> + From<bridge::AuditError>,
{
    let txn = store.connection().begin().await?;
    let mut chain = audit.batch(&txn).await?;
    let done = async {
        let (value, entry) = work(&txn).await?;
        if let Some(entry) = entry {
            chain.append(entry)?;
            chain.flush(&txn).await?;
        }
        txn.commit().await?;
        Ok::<_, E>(value)
    }
    .await;
    audit.settle(&chain, done.is_ok());
    drop(chain);
    done
}
