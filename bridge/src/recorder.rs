//! Records the gateway's refusals and denials in the audit trail.
//!
//! The gateway reports them to hooks on connection tasks, which must not wait for a database, so
//! the recorder only queues the entry; one writer task appends queued entries in order. The
//! queue is bounded so that a flood of denials cannot exhaust memory; an entry that does not fit
//! is counted and logged as an error rather than silently lost.
//!
//! This crate does not know the gateway: the serving process (`courtchat`) registers a hook with
//! the broker that calls [`AuditRecorder`]'s methods, so the chat pipeline can run without the
//! broker's code in its process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::{AuditEntry, AuditTrail};

/// Entries waiting for the writer; a burst larger than this is counted as dropped. Not
/// configuration: it only has to absorb a burst while one append commits (about 100 bytes an
/// entry, so 1 MB at most), and a sustained flood is the gateway's to refuse, not this queue's.
const QUEUE: usize = 10_000;

/// Queues the gateway's refusals for the audit trail's writer.
pub struct AuditRecorder {
    queue: mpsc::Sender<AuditEntry>,
    dropped: AtomicU64,
}

impl AuditRecorder {
    /// The recorder, and the writer future that appends what it queues until the recorder is
    /// dropped (then it drains the queue and returns).
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

    /// A CONNECT the gateway refused (`mqtt.connect.denied`).
    pub fn refused_connect(&self, client_id: &str, reason: &str) {
        self.queue_entry(AuditEntry {
            actor: client_id.to_owned(),
            action: "mqtt.connect.denied".to_owned(),
            session_id: None,
            detail: serde_json::json!({ "reason": reason }),
        });
    }

    /// A PUBLISH the gateway denied (`mqtt.publish.denied`), on the session the topic names.
    pub fn denied_publish(&self, subject: &str, topic: &str, reason: &str) {
        self.queue_entry(AuditEntry {
            actor: subject.to_owned(),
            action: "mqtt.publish.denied".to_owned(),
            session_id: session_of(topic),
            detail: serde_json::json!({ "topic": topic, "reason": reason }),
        });
    }

    /// A SUBSCRIBE the gateway denied (`mqtt.subscribe.denied`), on the session the filter
    /// names.
    pub fn denied_subscribe(&self, subject: &str, filter: &str, reason: &str) {
        self.queue_entry(AuditEntry {
            actor: subject.to_owned(),
            action: "mqtt.subscribe.denied".to_owned(),
            session_id: session_of(filter),
            detail: serde_json::json!({ "filter": filter, "reason": reason }),
        });
    }

    fn queue_entry(&self, entry: AuditEntry) {
        if let Err(full) = self.queue.try_send(entry) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            let entry = full.into_inner();
            tracing::error!(
                actor = %entry.actor,
                action = %entry.action,
                detail = %entry.detail,
                "audit queue full: a denial was not recorded"
            );
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
