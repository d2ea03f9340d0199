//! What a worker takes from the record when it starts: every open session's lock state,
//! published again (retained), and the open sessions' applicants.

use std::sync::atomic::Ordering;

use chrono::{SubsecRound, Utc};
use schemas::db::entities::session;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::decide;
use super::outbox::Outbox;
use super::worker::Worker;
use crate::pipeline::link::Link;

impl Worker {
    /// Publishes, retained, the lock state of every open session as stored (the gateway keeps
    /// retained state in memory only: after a restart a dashboard would see every lock free),
    /// and reads the open sessions' applicants. A failure is logged: the locks are published
    /// again with their next change, and the applicants are read with the next batch.
    pub(super) async fn restore(&mut self, link: &Link) {
        let db = self.store.connection();
        let now = Utc::now().trunc_subsecs(6);
        if let Err(error) = self.attendance.load(db, now).await {
            tracing::warn!(%error, "the open sessions could not be read at start");
        }
        let open = match session::Entity::find()
            .filter(session::Column::Status.ne(session::SessionStatus::Closed))
            .all(db)
            .await
        {
            Ok(open) => open,
            Err(error) => {
                tracing::warn!(%error, "the lock states could not be read at start");
                return;
            }
        };
        let mut outbox = Outbox::default();
        for row in open {
            let lock = crate::pipeline::lock::ReplyLock {
                holder: row.lock_holder,
                epoch: row.lock_epoch as u64,
                expires_at: row.lock_expires_at,
            };
            decide::lock::announce(&mut outbox, &row.id, &lock, self.config.lock_mode);
        }
        let limit = self.packet_limit.load(Ordering::Relaxed);
        if let Err(error) = outbox.publish(link, limit, |_| false).await {
            tracing::warn!(%error, "the lock states could not be published at start");
        }
    }
}
