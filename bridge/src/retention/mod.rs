//! Retention: the content of closed sessions goes once their policy's days are past, unless a
//! legal hold keeps it, and the audit chain records what went.
//!
//! [`policy`] decides (which policy governs a session, whether it is due at a given time: pure
//! functions of the clock they are given), [`redact`] says what a purged row keeps, and
//! [`purge`] reads and writes. [`Retention::run`] walks closed sessions oldest first a page at
//! a time and purges each page's due sessions in one short transaction, pausing between
//! batches, so that the chat pipeline, which shares the database and the audit chain, waits at
//! most one batch. The purge does not go through the pipeline: closed sessions are no longer
//! written by it, except for a late survey answer, which a purged session refuses (the
//! pipeline reads `session_purges`).

mod policy;
mod purge;
mod redact;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use policy::{Scope, ScopeError};
use policy::{Verdict, verdict};

use crate::audit::{AuditError, AuditTrail};

/// The `[retention]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Seconds between the server's purges (the first runs this long after start); 0: only
    /// when run by hand (`courtchat retention run`).
    pub run_every_secs: u64,
    /// Sessions purged per transaction.
    pub batch_sessions: u64,
    /// Milliseconds to pause between two batches, leaving the database to live chat.
    pub pause_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            run_every_secs: 3600,
            batch_sessions: 100,
            pause_ms: 200,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("the database failed during the purge: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("a purge record could not be serialized: {0}")]
    Detail(#[from] serde_json::Error),
}

/// One session whose content went (or would go, in a dry run).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PurgedSession {
    pub session_id: String,
    /// The policy that made it due, and its days.
    pub policy: String,
    pub keep_days: u32,
    pub closed_at: DateTime<Utc>,
    /// The first and last seq of its stream.
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// Rows whose content was blanked: messages, notes, events (a reason given).
    pub messages: u64,
    pub notes: u64,
    pub events: u64,
    /// Whether the survey answer's comment went.
    pub survey_comment: bool,
}

/// What one run purged, or would purge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    pub purged: Vec<PurgedSession>,
    /// Sessions that are due but under a legal hold, kept.
    pub held: Vec<String>,
    /// Nothing was changed.
    pub dry_run: bool,
}

/// Runs purges over a store, recording on its audit chain.
pub struct Retention {
    store: store::Store,
    audit: Arc<AuditTrail>,
    config: RetentionConfig,
    metrics: Option<Arc<telemetry::Metrics>>,
}

impl Retention {
    /// `audit` should be the trail the rest of the process appends to (the pipeline's), so that
    /// its appends take turns in memory.
    pub fn new(store: store::Store, audit: Arc<AuditTrail>, config: RetentionConfig) -> Self {
        Self {
            store,
            audit,
            config,
            metrics: None,
        }
    }

    /// Counts purged sessions into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<telemetry::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Purges (or, with `dry_run`, only reports) every session due at `now`.
    pub async fn run(
        &self,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<PurgeReport, RetentionError> {
        let db = self.store.connection();
        let mut report = PurgeReport {
            dry_run,
            ..PurgeReport::default()
        };
        let policies = purge::policies(db).await?;
        let Some(cutoff) = policy::earliest_cutoff(&policies, now) else {
            return Ok(report);
        };
        let page = self.config.batch_sessions.max(1);
        let mut after = None;
        loop {
            let candidates = purge::candidates(db, cutoff, after.as_ref(), page).await?;
            let Some(last) = candidates.last() else {
                break;
            };
            after = Some((last.closed_at.unwrap_or_default(), last.session_id.clone()));
            let full = candidates.len() as u64 == page;
            let mut due = Vec::new();
            for candidate in candidates {
                match verdict(&policies, &candidate, now) {
                    Verdict::Purge(policy) => due.push(purge::Due {
                        policy: policy.clone(),
                        candidate,
                    }),
                    Verdict::Held(_) => report.held.push(candidate.session_id),
                    Verdict::Keep => {}
                }
            }
            if !due.is_empty() {
                if dry_run {
                    let plans = purge::plan(db, &due).await?;
                    report
                        .purged
                        .extend(plans.into_iter().map(|plan| plan.report));
                } else {
                    let purged = purge::purge_batch(&self.store, &self.audit, due, now).await?;
                    if let Some(metrics) = &self.metrics {
                        metrics.purged_sessions.inc_by(purged.len() as u64);
                    }
                    tracing::info!(sessions = purged.len(), "retention purged a batch");
                    report.purged.extend(purged);
                    if full {
                        tokio::time::sleep(Duration::from_millis(self.config.pause_ms)).await;
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
