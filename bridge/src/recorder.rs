//! Records the gateway's denials in the audit trail.
//!
//! Hooks run on connection tasks and must not wait for a database, so the hook only queues the
//! entry; one writer task appends queued entries in order. The queue is bounded so that a flood
//! of denials cannot exhaust memory; an entry that does not fit is counted and logged as an
//! error rather than silently lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use broker::{Denial, Hook};
use tokio::sync::mpsc;

use crate::{AuditEntry, AuditTrail};

/// Entries waiting for the writer; a burst larger than this is counted as dropped.
const QUEUE: usize = 10_000;

/// The hook half; register it with the broker.
pub struct AuditRecorder {
    queue: mpsc::Sender<AuditEntry>,
    dropped: AtomicU64,
}

impl AuditRecorder {
    /// The hook, and the writer future that appends what it queues until the hook is dropped
    /// (then it drains the queue and returns).
    pub fn new(
        trail: Arc<AuditTrail>,
    ) -> (Arc<Self>, impl std::future::Future<Output = ()> + Send) {
        let (queue, mut entries) = mpsc::channel::<AuditEntry>(QUEUE);
        let writer = async move {
            while let Some(entry) = entries.recv().await {
                if let Err(err) = trail.append(entry).await {
                    tracing::error!(error = %err, "an audit entry could not be written");
                }
            }
        };
        let recorder = Arc::new(Self {
            queue,
            dropped: AtomicU64::new(0),
        });
        (recorder, writer)
    }

    /// Entries that could not be queued since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Hook for AuditRecorder {
    fn on_denied(&self, denial: &Denial) {
        let entry = match denial {
            Denial::Connect { client_id, reason } => AuditEntry {
                actor: client_id.clone(),
                action: "mqtt.connect.denied".to_owned(),
                session_id: None,
                detail: serde_json::json!({ "reason": reason }),
            },
            Denial::Publish {
                subject,
                topic,
                reason,
            } => AuditEntry {
                actor: subject.clone(),
                action: "mqtt.publish.denied".to_owned(),
                session_id: session_of(topic),
                detail: serde_json::json!({ "topic": topic, "reason": reason }),
            },
            Denial::Subscribe {
                subject,
                filter,
                reason,
            } => AuditEntry {
                actor: subject.clone(),
                action: "mqtt.subscribe.denied".to_owned(),
                session_id: session_of(filter),
                detail: serde_json::json!({ "filter": filter, "reason": reason }),
            },
        };
        if self.queue.try_send(entry).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(?denial, "audit queue full: a denial was not recorded");
        }
    }
}

/// The session a topic names, so that a session's audit view includes attempts on it.
fn session_of(topic: &str) -> Option<String> {
    match schemas::topics::Topic::parse(topic) {
        Some(schemas::topics::Topic::Session { session, .. }) => Some(session.to_owned()),
        _ => None,
    }
}
