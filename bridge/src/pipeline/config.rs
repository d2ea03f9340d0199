//! The `[bridge]` section of the configuration.

use schemas::wire::LockMode;
use serde::{Deserialize, Serialize};

/// The `[bridge]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// Run the pipeline inside `courtchat serve`. Turn off when it runs as `courtchat bridge`.
    pub in_process: bool,
    /// Longest message body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Actions per second each sender may make, sustained: every submission but receipts and
    /// resyncs (messages, notes, opens, lock operations, joins, transfers, closing, the survey,
    /// availability, and submissions refused as invalid).
    pub rate_per_second: f64,
    /// Actions a sender may make in a burst.
    pub rate_burst: f64,
    /// Receipts per second each sender may send, sustained.
    pub receipt_rate_per_second: f64,
    /// Receipts a sender may send in a burst.
    pub receipt_rate_burst: f64,
    /// Resync requests per second each sender may make, sustained.
    pub resync_rate_per_second: f64,
    /// Resync requests a sender may make in a burst (a desk resyncs every session it follows
    /// when it loads).
    pub resync_rate_burst: f64,
    /// Bytes of entries resyncs may send back to each sender per second, sustained. A resync is
    /// charged, when it is decided, the most its page may hold (the smaller of
    /// `resync_page_bytes` and what the entries asked for can take up).
    pub resync_bytes_per_second: u64,
    /// Bytes of entries resyncs may send back to a sender at once; at least `resync_page_bytes`.
    pub resync_bytes_burst: u64,
    /// Most sessions one applicant may have open (not closed) at once; more are refused.
    pub max_open_sessions_per_applicant: usize,
    /// Seconds after which an open session whose applicant has gone is closed by the server
    /// (reason `abandoned`): gone means its presence said `offline`, or nothing was heard of
    /// the applicant (no submission, no `online` or `away` presence) since the pipeline
    /// started. 0 turns this off.
    pub abandon_after_secs: u64,
    /// Most submissions decided and committed together.
    pub batch_max: usize,
    /// `exclusive`: only the reply-lock holder's replies are accepted; `advisory`: any joined
    /// agent may reply, and the lock only shows who is answering.
    pub lock_mode: LockMode,
    /// How long a reply lock lasts without renewal, in seconds.
    pub lock_lease_secs: u64,
    /// Most submissions in the pipeline's hands at once (over MQTT, its receive maximum), in
    /// process or not; the rest wait in the gateway. Each is acknowledged to the gateway only
    /// once decided.
    pub intake_window: u16,
    /// How long the gateway keeps the pipeline's session (and collects submissions for it)
    /// while the pipeline is disconnected, in seconds (over MQTT only: in process, the gateway
    /// keeps them for as long as it runs). The gateway caps it at `mqtt.max_session_expiry`.
    pub link_session_expiry_secs: u64,
    /// Most entries in one resync reply; the reply says where the next page starts.
    pub resync_page_entries: usize,
    /// Most bytes of entries in one resync reply (and never more than the gateway's maximum
    /// packet size allows). Clients need a maximum packet size above this.
    pub resync_page_bytes: usize,
    /// Keep-alive of the pipeline's MQTT connection to the gateway, in seconds: how soon a
    /// silently dead connection is noticed and replaced (over MQTT only).
    pub link_keep_alive_secs: u64,
    /// Longest a submission may wait in the pipeline before its batch starts, in milliseconds.
    /// One that waited longer is refused as `busy` (cheaply: nothing is decided or stored), so
    /// that when more is offered than can be stored, what is accepted stays fast and the excess
    /// is told at once to come back later, instead of queueing seconds of work. 0 turns this off.
    pub max_queue_delay_ms: u64,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            in_process: true,
            max_body_bytes: 4096,
            rate_per_second: 5.0,
            rate_burst: 20.0,
            receipt_rate_per_second: 10.0,
            receipt_rate_burst: 40.0,
            resync_rate_per_second: 10.0,
            resync_rate_burst: 40.0,
            resync_bytes_per_second: 256 * 1024,
            resync_bytes_burst: 2 * 1024 * 1024,
            max_open_sessions_per_applicant: 1,
            abandon_after_secs: 600,
            batch_max: 256,
            lock_mode: LockMode::Exclusive,
            lock_lease_secs: 60,
            intake_window: 512,
            link_session_expiry_secs: 3600,
            resync_page_entries: 200,
            resync_page_bytes: 64 * 1024,
            link_keep_alive_secs: 30,
            max_queue_delay_ms: 250,
        }
    }
}
