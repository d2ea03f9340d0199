//! The gateway's part of the metrics: a broker hook that keeps the live connections by listener
//! and role and counts refusals, into the server's `telemetry::Metrics` (the pipeline records its
//! own; the admin API serves them all at `/metrics`).

use std::sync::Arc;

use broker::{ConnectionPolicy, Denial, DenialKind, Hook, Identity, Listener, SignalRefusal};

pub(crate) struct MetricsHook(pub Arc<telemetry::Metrics>);

/// The kinds [`refusal_kind`] gives.
const REFUSAL_KINDS: [&str; 4] = ["bad_credentials", "not_authorized", "will", "other"];

impl MetricsHook {
    /// A hook over `metrics`, with every refusal and denial series at 0, so that dashboards and
    /// alerts find them before the first one happens.
    pub(crate) fn new(metrics: Arc<telemetry::Metrics>) -> Self {
        for kind in REFUSAL_KINDS {
            metrics.connects_refused.with_label_values(&[kind]);
        }
        for kind in ["publish", "subscribe"] {
            metrics.denials.with_label_values(&[kind]);
        }
        for refusal in [
            SignalRefusal::Invalid,
            SignalRefusal::TooLarge,
            SignalRefusal::RateLimited,
        ] {
            metrics
                .signals_refused
                .with_label_values(&[refusal.as_str()]);
        }
        Self(metrics)
    }
}

impl Hook for MetricsHook {
    fn on_connect(&self, identity: &Identity, listener: Listener, _policy: &mut ConnectionPolicy) {
        let labels = [listener.as_str(), identity.role.as_str()];
        self.0.connections.with_label_values(&labels).inc();
    }

    fn on_disconnect(&self, identity: &Identity, listener: Listener) {
        let labels = [listener.as_str(), identity.role.as_str()];
        self.0.connections.with_label_values(&labels).dec();
    }

    fn on_denied(&self, denial: &Denial) {
        match denial.kind {
            DenialKind::Connect => self
                .0
                .connects_refused
                .with_label_values(&[refusal_kind(&denial.reason.text)])
                .inc(),
            DenialKind::Publish | DenialKind::Subscribe => self
                .0
                .denials
                .with_label_values(&[denial.kind.as_str()])
                .inc(),
        }
    }

    fn on_signal_refused(&self, _identity: &Identity, refusal: SignalRefusal) {
        self.0
            .signals_refused
            .with_label_values(&[refusal.as_str()])
            .inc();
    }

    fn on_subscribe_limited(&self, _identity: &Identity) {
        self.0.subscribes_limited.inc();
    }
}

/// A refusal's reason as a label with few values: the gateway's reasons are sentences (they
/// name the client and the rule), which would make a series per client.
fn refusal_kind(reason: &str) -> &'static str {
    if reason.starts_with("bad credentials") {
        "bad_credentials"
    } else if reason.starts_with("will:") {
        "will"
    } else if reason.starts_with("not authorized") {
        "not_authorized"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_fall_into_a_few_kinds() {
        let rows = [
            ("bad credentials: the token expired", "bad_credentials"),
            ("not authorized: no token", "not_authorized"),
            ("will: agent may not publish to cc/v1/queue", "will"),
            ("applicant may not connect", "other"),
        ];
        for (reason, kind) in rows {
            assert_eq!(refusal_kind(reason), kind, "{reason}");
        }
    }
}
