//! Records the gateway's refusals and denials in the audit trail.
//!
//! The gateway reports them to hooks on connection tasks, which must not wait for a database, so
//! the recorder only queues the entry; one writer task appends queued entries in order. What
//! reaches it is already bounded (fields cut, repeats folded into counted entries by the
//! gateway), and the queue is bounded too, so that no flood can exhaust memory or disk. Nothing
//! is lost in silence: a denial that does not fit in the queue, or whose entry cannot be
//! written, is counted, and the writer puts the count on the chain itself
//! (`mqtt.denials.dropped`), as soon as it can, and in the metrics
//! (`courtchat_denials_dropped_total`). So, once the queue is written, the denials recorded
//! whole, those counted in folded entries and those dropped add up to every denial there was.
//!
//! This crate does not know the gateway: the serving process (`courtchat`) registers a hook with
//! the broker that turns its denials into entries and hands them to [`AuditRecorder`], so the
//! chat pipeline can run without the broker's code in its process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::{AuditEntry, AuditTrail};

/// Entries waiting for the writer; a burst larger than this is counted as dropped. Not
/// configuration: it only has to absorb a burst while entries commit (each at most a few
/// hundred bytes, the gateway bounds them), and a sustained flood is folded by the gateway.
const QUEUE: usize = 10_000;

/// Entries taken from the queue at once, between two checks for a dropped count to record.
const BATCH: usize = 256;

/// An entry waiting to be written, and how many denials it accounts for.
struct Queued {
    entry: AuditEntry,
    /// 1 for a denial recorded whole, or the count of a folded entry.
    denials: u64,
    folded: bool,
}

/// What the recorder and its writer share.
struct Tally {
    /// Denials not recorded (the queue was full, or their entry failed), since start.
    dropped: AtomicU64,
    /// Whether drops have happened since the writer last recorded their count (so that only
    /// the first of a burst is logged).
    overflowing: AtomicBool,
    metrics: Option<Arc<telemetry::Metrics>>,
}

impl Tally {
    fn drop_denials(&self, denials: u64) {
        self.dropped.fetch_add(denials, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.denials_dropped.inc_by(denials);
        }
    }
}

/// Queues the gateway's refusals for the audit trail's writer.
pub struct AuditRecorder {
    queue: mpsc::Sender<Queued>,
    tally: Arc<Tally>,
}

impl AuditRecorder {
    /// The recorder, and the writer future that appends what it queues until the recorder is
    /// dropped (then it drains the queue, records the last dropped count and returns). With
    /// `metrics`, denials recorded, folded and dropped are counted there too.
    pub fn new(
        trail: Arc<AuditTrail>,
        metrics: Option<Arc<telemetry::Metrics>>,
    ) -> (Arc<Self>, impl std::future::Future<Output = ()> + Send) {
        Self::with_queue(trail, metrics, QUEUE)
    }

    fn with_queue(
        trail: Arc<AuditTrail>,
        metrics: Option<Arc<telemetry::Metrics>>,
        capacity: usize,
    ) -> (Arc<Self>, impl std::future::Future<Output = ()> + Send) {
        let (queue, mut entries) = mpsc::channel::<Queued>(capacity);
        let tally = Arc::new(Tally {
            dropped: AtomicU64::new(0),
            overflowing: AtomicBool::new(false),
            metrics,
        });
        let writer = {
            let tally = tally.clone();
            async move {
                let mut written_dropped = 0;
                let mut batch = Vec::with_capacity(BATCH);
                while entries.recv_many(&mut batch, BATCH).await > 0 {
                    for queued in batch.drain(..) {
                        write(&trail, &tally, queued).await;
                    }
                    written_dropped = write_dropped(&trail, &tally, written_dropped).await;
                }
                write_dropped(&trail, &tally, written_dropped).await;
            }
        };
        (Arc::new(Self { queue, tally }), writer)
    }

    /// Denials that could not be recorded since start (their count is on the chain).
    pub fn dropped(&self) -> u64 {
        self.tally.dropped.load(Ordering::Relaxed)
    }

    /// One denial, recorded whole in `entry`.
    pub fn denial(&self, entry: AuditEntry) {
        self.queue_entry(Queued {
            entry,
            denials: 1,
            folded: false,
        });
    }

    /// `count` denials, counted in `entry`.
    pub fn folded(&self, entry: AuditEntry, count: u64) {
        self.queue_entry(Queued {
            entry,
            denials: count,
            folded: true,
        });
    }

    fn queue_entry(&self, queued: Queued) {
        if let Err(full) = self.queue.try_send(queued) {
            let denials = full.into_inner().denials;
            self.tally.drop_denials(denials);
            if !self.tally.overflowing.swap(true, Ordering::Relaxed) {
                // One line per burst: the count follows on the chain and in the log.
                tracing::error!("audit queue full: denials are counted, not recorded one by one");
            }
        }
    }
}

/// Appends one queued entry; if it cannot be written, its denials count as dropped.
async fn write(trail: &AuditTrail, tally: &Tally, queued: Queued) {
    match trail.append(queued.entry).await {
        Ok(()) => {
            if let Some(metrics) = &tally.metrics {
                if queued.folded {
                    metrics.denials_folded.inc_by(queued.denials);
                } else {
                    metrics.denials_recorded.inc_by(queued.denials);
                }
            }
        }
        Err(err) => {
            tracing::error!(error = %err, denials = queued.denials, "an audit entry could not be written; its denials are counted as dropped");
            tally.drop_denials(queued.denials);
        }
    }
}

/// Records on the chain how many denials were dropped since `written` (the total the chain
/// already has); returns the total it has now.
async fn write_dropped(trail: &AuditTrail, tally: &Tally, written: u64) -> u64 {
    let total = tally.dropped.load(Ordering::Relaxed);
    if total == written {
        return written;
    }
    let entry = AuditEntry {
        actor: "gateway".to_owned(),
        action: "mqtt.denials.dropped".to_owned(),
        session_id: None,
        detail: serde_json::json!({ "count": total - written, "total": total }),
    };
    match trail.append(entry).await {
        Ok(()) => {
            tally.overflowing.store(false, Ordering::Relaxed);
            tracing::warn!(
                count = total - written,
                total,
                "denials were not recorded one by one; their count is on the audit chain"
            );
            total
        }
        Err(err) => {
            // Tried again after the next entry, and when the recorder stops.
            tracing::error!(error = %err, "the count of dropped denials could not be written");
            written
        }
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{EntityTrait, QueryOrder};

    use super::*;
    use crate::AuditKey;

    fn denied(actor: &str) -> AuditEntry {
        AuditEntry {
            actor: actor.to_owned(),
            action: "mqtt.connect.denied".to_owned(),
            session_id: None,
            detail: serde_json::json!({ "reason": "no token" }),
        }
    }

    #[tokio::test]
    async fn what_does_not_fit_is_counted_on_the_chain_and_in_the_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let config = store::DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("recorder.db").display()),
            ..store::DatabaseConfig::default()
        };
        let store = store::Store::open(&config).await.unwrap();
        let key = AuditKey::from_secret(&[7; 32]).unwrap();
        let trail = Arc::new(AuditTrail::open(&store, key.clone()).await.unwrap());
        let metrics = Arc::new(telemetry::Metrics::new().unwrap());
        let (recorder, writer) = AuditRecorder::with_queue(trail, Some(metrics.clone()), 3);
        // The writer is not running yet: three fit, the rest are counted.
        recorder.denial(denied("a"));
        recorder.folded(denied("a"), 40);
        recorder.denial(denied("b"));
        recorder.denial(denied("c"));
        recorder.folded(denied("c"), 9);
        assert_eq!(recorder.dropped(), 10);
        drop(recorder);
        writer.await;

        let entries = schemas::db::entities::audit_event::Entity::find()
            .order_by_asc(schemas::db::entities::audit_event::Column::Id)
            .all(store.connection())
            .await
            .unwrap();
        let summary: Vec<_> = entries
            .iter()
            .map(|e| (e.actor.as_str(), e.action.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("a", "mqtt.connect.denied"),
                ("a", "mqtt.connect.denied"),
                ("b", "mqtt.connect.denied"),
                ("gateway", "mqtt.denials.dropped"),
            ]
        );
        let dropped: serde_json::Value = serde_json::from_str(&entries[3].detail).unwrap();
        assert_eq!(dropped, serde_json::json!({ "count": 10, "total": 10 }));
        assert_eq!(
            (
                metrics.denials_recorded.get(),
                metrics.denials_folded.get(),
                metrics.denials_dropped.get()
            ),
            (2, 40, 10)
        );
        let verification = AuditTrail::verify(&store, &key).await.unwrap();
        assert_eq!(verification.first_broken, None);
    }
}
