//! courtchat's chat pipeline.
//!
//! [`Pipeline`] takes what participants submit, decides whether it is allowed, persists it in
//! batched transactions, gives it its place in the session's single order, appends it to the
//! tamper-evident audit trail ([`AuditTrail`]), and only then publishes it; with reply locks
//! ([`ReplyLock`]), per-sender limits (on the `limits` crate), receipts and paged history resync.
//! [`AuditRecorder`] records the gateway's denials on the same trail. ARCHITECTURE.md walks the
//! path of a message.

mod audit;
mod pipeline;
mod record;
mod recorder;
mod retention;

pub use audit::{
    AuditBatch, AuditConfig, AuditEntry, AuditError, AuditKey, AuditTrail, Verification,
};
pub use pipeline::{
    BridgeConfig, BrokerLink, CommandError, Commands, Delivered, Gateway, LockChange, LockError,
    LockRequest, Pipeline, PipelineError, Reply, ReplyLock,
};
pub use record::{Difference, Discrepancy, MessageRecord, RecordCounts, RecordKey, SurveyRecord};
pub use recorder::AuditRecorder;
pub use retention::{
    PurgeReport, PurgedSession, Retention, RetentionConfig, RetentionError, Scope, ScopeError,
};
