//! courtchat's chat pipeline.
//!
//! Today: the tamper-evident audit trail ([`AuditTrail`]) and the hook that records the
//! gateway's denials in it ([`AuditRecorder`]); the reply-lock state machine ([`ReplyLock`]) and
//! per-sender rate limits ([`RateLimiter`]) the pipeline will enforce. Next (issue 4): the pipeline proper, which takes
//! what participants submit, decides whether it is allowed, persists it in batched transactions,
//! gives it its place in the session's single order, appends it to the audit trail, and only then
//! publishes it; with reply locks, receipts and history resync. ARCHITECTURE.md walks the planned
//! path of a message.

mod audit;
mod lock;
mod pipeline;
mod rate;
mod record;
mod recorder;

pub use audit::{
    AuditBatch, AuditConfig, AuditEntry, AuditError, AuditKey, AuditTrail, Verification,
};
pub use lock::{LockChange, LockError, LockRequest, ReplyLock};
pub use pipeline::{BridgeConfig, BrokerLink, Pipeline, PipelineError};
pub use rate::{RateLimit, RateLimiter, TokenBucket};
pub use record::{Difference, Discrepancy, MessageRecord, RecordCounts, RecordKey, SurveyRecord};
pub use recorder::AuditRecorder;
