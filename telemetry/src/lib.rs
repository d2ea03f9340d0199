//! courtchat's metrics, for Prometheus: one registry per server, holding every metric the other
//! crates record (they take an `Arc<Metrics>` and touch its fields), and the text exposition
//! `/metrics` serves. The `prometheus` crate belongs to this crate alone.
//!
//! Names follow Prometheus's conventions: the `courtchat_` prefix, base units (seconds, bytes)
//! in the name, `_total` on counters, labels with a small fixed set of values (a refusal's
//! reason, a listener, a role), never a session id or a subject.

#[cfg(target_os = "linux")]
mod process;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latencies from a fraction of a millisecond (a relayed message) to well past the field's
/// 100 ms line, where an alert fires.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// How long a session waited for an agent: seconds to an hour.
const WAIT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Submissions decided in one batch.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Every metric courtchat exports.
pub struct Metrics {
    registry: Registry,
    /// Open MQTT connections, by listener (`tcp`, `tls`, `websocket`, `secure_websocket`) and
    /// role.
    pub connections: IntGaugeVec,
    /// CONNECTs refused, by reason (`bad_credentials`, `not_authorized`, `will`, `other`).
    pub connects_refused: IntCounterVec,
    /// Publishes and subscriptions the authorizer denied, by `kind` (`publish`, `subscribe`).
    pub denials: IntCounterVec,
    /// Typing and presence publishes (and wills) the gateway refused and did not deliver, by
    /// `reason` (`invalid`, `too_large`, `rate_limited`).
    pub signals_refused: IntCounterVec,
    /// SUBSCRIBEs refused whole because their sender's allowance of filters was spent.
    pub subscribes_limited: IntCounter,
    /// Refused CONNECTs and denials written on the audit chain as entries of their own.
    pub denials_recorded: IntCounter,
    /// Refused CONNECTs and denials counted on the chain in a folded entry (repeats from one
    /// address or subject within the window), not each in an entry of its own.
    pub denials_folded: IntCounter,
    /// Refused CONNECTs and denials that could not be recorded (the recorder's queue was full
    /// or the write failed): their count is written on the chain instead.
    pub denials_dropped: IntCounter,
    /// Submissions and open requests the pipeline accepted.
    pub submissions_accepted: IntCounter,
    /// Submissions refused, by reason (the protocol's: `lock_held`, `busy`, `rate_limited`, ...).
    pub submissions_rejected: IntCounterVec,
    /// From the gateway receiving a submission to its batch's commit.
    pub submission_to_commit: Histogram,
    /// From a batch's commit to its entries and answers handed to the gateway.
    pub commit_to_delivery: Histogram,
    /// Submissions decided per batch.
    pub batch_size: Histogram,
    /// How long storing a batch took (its transaction).
    pub commit_duration: Histogram,
    /// Submissions waiting to be decided (from the gateway and from commands).
    pub pipeline_queue_depth: IntGauge,
    /// Reply-lock requests refused because another agent holds the lock.
    pub lock_contention: IntCounter,
    /// Sessions waiting for an agent.
    pub queue_waiting: IntGauge,
    /// How long sessions waited before an offer, by who made it (`router`).
    pub queue_wait: HistogramVec,
    /// Sessions whose content retention purged.
    pub purged_sessions: IntCounter,
    /// Entries on the audit chain.
    pub audit_chain_length: IntGauge,
    /// 1 when the last verification found the chain (and the tables against it) intact, 0 when
    /// it found a break, -1 before the first.
    pub audit_intact: IntGauge,
    /// When the chain was last verified (Unix seconds; 0: never).
    pub audit_verified_at: IntGauge,
    /// 1 while the chat pipeline receives submissions, else 0.
    pub pipeline_ready: IntGauge,
    /// Staff who take sessions now (available).
    pub staff_available: IntGauge,
    /// Of those, how many are in at least one open session: with `staff_available`, live
    /// utilization.
    pub staff_in_chats: IntGauge,
    /// Post-chat survey ratings (1 to 5), as they are stored.
    pub survey_rating: Histogram,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("courtchat".to_owned()), None)?;
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        };
        let metrics = Self {
            connections: IntGaugeVec::new(
                Opts::new("connections", "Open MQTT connections"),
                &["listener", "role"],
            )?,
            connects_refused: IntCounterVec::new(
                Opts::new("connects_refused_total", "CONNECTs refused"),
                &["reason"],
            )?,
            denials: IntCounterVec::new(
                Opts::new(
                    "denials_total",
                    "Publishes and subscriptions the authorizer denied",
                ),
                &["kind"],
            )?,
            signals_refused: IntCounterVec::new(
                Opts::new(
                    "signals_refused_total",
                    "Typing and presence publishes refused and not delivered",
                ),
                &["reason"],
            )?,
            subscribes_limited: IntCounter::new(
                "subscribes_limited_total",
                "SUBSCRIBE requests refused because their sender's allowance of filters was spent",
            )?,
            denials_recorded: IntCounter::new(
                "denials_recorded_total",
                "Refused CONNECTs and denials written on the audit chain in entries of their own",
            )?,
            denials_folded: IntCounter::new(
                "denials_folded_total",
                "Refused CONNECTs and denials counted in folded audit entries",
            )?,
            denials_dropped: IntCounter::new(
                "denials_dropped_total",
                "Refused CONNECTs and denials not recorded, counted on the audit chain instead",
            )?,
            submissions_accepted: IntCounter::new(
                "submissions_accepted_total",
                "Submissions and open requests accepted and stored",
            )?,
            submissions_rejected: IntCounterVec::new(
                Opts::new("submissions_rejected_total", "Submissions refused"),
                &["reason"],
            )?,
            submission_to_commit: histogram(
                "submission_to_commit_seconds",
                "From the gateway receiving a submission to its batch's commit",
                LATENCY_BUCKETS,
            )?,
            commit_to_delivery: histogram(
                "commit_to_delivery_seconds",
                "From a batch's commit to its entries and answers handed to the gateway",
                LATENCY_BUCKETS,
            )?,
            batch_size: histogram(
                "batch_size_submissions",
                "Submissions decided per batch",
                BATCH_BUCKETS,
            )?,
            commit_duration: histogram(
                "commit_duration_seconds",
                "How long storing a batch took",
                LATENCY_BUCKETS,
            )?,
            pipeline_queue_depth: IntGauge::new(
                "pipeline_queue_depth_submissions",
                "Submissions waiting to be decided",
            )?,
            lock_contention: IntCounter::new(
                "lock_contention_total",
                "Reply-lock requests refused because another agent holds the lock",
            )?,
            queue_waiting: IntGauge::new(
                "queue_waiting_sessions",
                "Sessions waiting for an agent",
            )?,
            queue_wait: HistogramVec::new(
                HistogramOpts::new(
                    "queue_wait_seconds",
                    "How long sessions waited before an offer",
                )
                .buckets(WAIT_BUCKETS.to_vec()),
                &["by"],
            )?,
            purged_sessions: IntCounter::new(
                "purged_sessions_total",
                "Sessions whose content retention purged",
            )?,
            audit_chain_length: IntGauge::new(
                "audit_chain_length_entries",
                "Entries on the audit chain",
            )?,
            audit_intact: IntGauge::new(
                "audit_intact",
                "1: the last verification found the audit chain intact; 0: broken; -1: not verified yet",
            )?,
            audit_verified_at: IntGauge::new(
                "audit_verified_timestamp_seconds",
                "When the audit chain was last verified",
            )?,
            pipeline_ready: IntGauge::new(
                "pipeline_ready",
                "1 while the chat pipeline receives submissions",
            )?,
            staff_available: IntGauge::new("staff_available", "Staff who take sessions now")?,
            staff_in_chats: IntGauge::new(
                "staff_in_chats",
                "Available staff in at least one open session",
            )?,
            survey_rating: histogram(
                "survey_rating",
                "Post-chat survey ratings, 1 to 5",
                &[1.0, 2.0, 3.0, 4.0, 5.0],
            )?,
            registry,
        };
        metrics.register()?;
        Ok(metrics)
    }

    fn register(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.connections.clone()))?;
        r.register(Box::new(self.connects_refused.clone()))?;
        r.register(Box::new(self.denials.clone()))?;
        r.register(Box::new(self.signals_refused.clone()))?;
        r.register(Box::new(self.subscribes_limited.clone()))?;
        r.register(Box::new(self.denials_recorded.clone()))?;
        r.register(Box::new(self.denials_folded.clone()))?;
        r.register(Box::new(self.denials_dropped.clone()))?;
        r.register(Box::new(self.submissions_accepted.clone()))?;
        r.register(Box::new(self.submissions_rejected.clone()))?;
        r.register(Box::new(self.submission_to_commit.clone()))?;
        r.register(Box::new(self.commit_to_delivery.clone()))?;
        r.register(Box::new(self.batch_size.clone()))?;
        r.register(Box::new(self.commit_duration.clone()))?;
        r.register(Box::new(self.pipeline_queue_depth.clone()))?;
        r.register(Box::new(self.lock_contention.clone()))?;
        r.register(Box::new(self.queue_waiting.clone()))?;
        r.register(Box::new(self.queue_wait.clone()))?;
        r.register(Box::new(self.purged_sessions.clone()))?;
        r.register(Box::new(self.audit_chain_length.clone()))?;
        r.register(Box::new(self.audit_intact.clone()))?;
        r.register(Box::new(self.audit_verified_at.clone()))?;
        r.register(Box::new(self.pipeline_ready.clone()))?;
        r.register(Box::new(self.staff_available.clone()))?;
        r.register(Box::new(self.staff_in_chats.clone()))?;
        r.register(Box::new(self.survey_rating.clone()))?;
        self.audit_intact.set(-1);
        // Memory, CPU and open files of this process (`courtchat_process_resident_memory_bytes`,
        // ...), read from /proc at each scrape; elsewhere than Linux, nothing.
        #[cfg(target_os = "linux")]
        // No namespace of its own: the registry's prefix makes it `courtchat_process_…`.
        r.register(Box::new(process::ProcessMetrics::new()?))?;
        Ok(())
    }

    /// The text exposition format (version 0.0.4), as `/metrics` serves it.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding to a Vec fails only on a metric family that breaks the format, which the
        // registry's checks at registration rule out.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# encoding failed: {error}\n");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The content type of [`Metrics::render`].
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exported_under_the_prefix_with_its_labels() {
        let metrics = Metrics::new().unwrap();
        metrics
            .connections
            .with_label_values(&["websocket", "agent"])
            .inc();
        metrics
            .submissions_rejected
            .with_label_values(&["busy"])
            .inc_by(3);
        metrics.submission_to_commit.observe(0.004);
        metrics
            .queue_wait
            .with_label_values(&["router"])
            .observe(12.0);
        let text = metrics.render();
        assert!(text.contains(r#"courtchat_connections{listener="websocket",role="agent"} 1"#));
        assert!(text.contains(r#"courtchat_submissions_rejected_total{reason="busy"} 3"#));
        assert!(text.contains("courtchat_submission_to_commit_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains(r#"courtchat_queue_wait_seconds_count{by="router"} 1"#));
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(line.starts_with("courtchat_"), "{line}");
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("courtchat_process_resident_memory_bytes"));
    }

    /// prometheus's own collector exported whole seconds, so a server that had used less than
    /// a second of CPU read 0 however busy it was.
    #[cfg(target_os = "linux")]
    #[test]
    fn cpu_time_is_exported_with_its_fractions() {
        let metrics = Metrics::new().unwrap();
        // Spend CPU until /proc shows some, whatever this machine's speed.
        let mut spin = 0u64;
        while process::cpu_seconds().unwrap() < 0.05 {
            spin = std::hint::black_box(spin.wrapping_mul(31).wrapping_add(7));
        }
        let text = metrics.render();
        let line = text
            .lines()
            .find(|line| line.starts_with("courtchat_process_cpu_seconds_total "))
            .expect("the CPU counter is exported");
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 0.05, "{line}");
        assert!(
            text.contains("# TYPE courtchat_process_cpu_seconds_total counter"),
            "declared a counter"
        );
        assert_eq!(
            text.lines()
                .filter(|line| line.starts_with("courtchat_process_cpu_seconds_total "))
                .count(),
            1,
            "exported once"
        );
        assert!(
            text.contains("courtchat_process_open_fds"),
            "the others stay"
        );
    }
}
