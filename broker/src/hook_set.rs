//! The hooks a broker was built with, called in their order, plus the counters the gateway
//! keeps itself and the folding of repeated denials (`denial`) before any hook records one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::denial::{Bounded, Denial, DenialKind, DenialRecord, DenialsConfig, Folder};
use crate::hooks::{ConnectionPolicy, Hook, Publish, Routing, SubscribeOutcome};
use crate::identity::Identity;
use crate::listener::Listener;
use crate::signal::SignalRefusal;

/// Denial counts since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub refused_connects: u64,
    pub denied_publishes: u64,
    pub denied_subscribes: u64,
    /// Typing and presence publishes refused (not the payload their topic carries, too large,
    /// or over the sender's rate).
    pub refused_signals: u64,
    /// SUBSCRIBEs refused because their sender's allowance of filters was spent.
    pub limited_subscribes: u64,
    /// Deliveries dropped because their subscriber's queue was full (`Fanout::dropped`).
    pub dropped_deliveries: u64,
    /// Retained publishes refused for not fitting `[mqtt.retained]`'s bounds.
    pub refused_retained: u64,
}

/// The registered hooks, plus the counters the gateway keeps itself and the folding of
/// repeated denials.
pub(crate) struct HookSet {
    hooks: Vec<Arc<dyn Hook>>,
    max_field_bytes: usize,
    folder: Mutex<Folder>,
    refused_connects: AtomicU64,
    denied_publishes: AtomicU64,
    denied_subscribes: AtomicU64,
    refused_signals: AtomicU64,
    limited_subscribes: AtomicU64,
}

impl HookSet {
    pub(crate) fn new(hooks: Vec<Arc<dyn Hook>>, denials: &DenialsConfig) -> Self {
        Self {
            hooks,
            max_field_bytes: denials.max_field_bytes,
            folder: Mutex::new(Folder::new(denials)),
            refused_connects: AtomicU64::new(0),
            denied_publishes: AtomicU64::new(0),
            denied_subscribes: AtomicU64::new(0),
            refused_signals: AtomicU64::new(0),
            limited_subscribes: AtomicU64::new(0),
        }
    }

    /// A connection is up: how the hooks would have it served.
    pub(crate) fn connected(&self, identity: &Identity, listener: Listener) -> ConnectionPolicy {
        let mut policy = ConnectionPolicy::default();
        for hook in &self.hooks {
            hook.on_connect(identity, listener, &mut policy);
        }
        policy
    }

    pub(crate) fn disconnected(&self, identity: &Identity, listener: Listener) {
        self.hooks
            .iter()
            .for_each(|hook| hook.on_disconnect(identity, listener));
    }

    pub(crate) fn message(&self, identity: &Identity, topic: &str) {
        self.hooks
            .iter()
            .for_each(|hook| hook.on_message(identity, topic));
    }

    /// A publish on its way to its subscribers, through every hook until one consumes it.
    pub(crate) fn publish(&self, publish: &mut Publish<'_>) -> Routing {
        for hook in &self.hooks {
            if hook.on_publish(publish) == Routing::Consume {
                return Routing::Consume;
            }
        }
        Routing::Route
    }

    pub(crate) fn subscribed(&self, identity: &Identity, filter: &str, outcome: SubscribeOutcome) {
        self.hooks
            .iter()
            .for_each(|hook| hook.on_subscribe(identity, filter, outcome));
    }

    /// A denial: `actor` is the client id offered (CONNECT) or the subject, `target` the topic
    /// or filter. Its text is bounded here, before anything counts, logs or records it.
    pub(crate) fn denied(
        &self,
        kind: DenialKind,
        peer: SocketAddr,
        actor: &str,
        target: Option<&str>,
        reason: &str,
    ) {
        let max = self.max_field_bytes;
        let denial = Denial {
            kind,
            peer,
            actor: Bounded::new(actor, max),
            target: target.map(|target| Bounded::new(target, max)),
            reason: Bounded::new(reason, max),
            at: SystemTime::now(),
        };
        let counter = match kind {
            DenialKind::Connect => &self.refused_connects,
            DenialKind::Publish => &self.denied_publishes,
            DenialKind::Subscribe => &self.denied_subscribes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.hooks.iter().for_each(|hook| hook.on_denied(&denial));
        let records = self.folder().observe(denial, Instant::now());
        self.record(records);
    }

    /// Records the counts of the windows over by `now` (the broker calls this every second).
    pub(crate) fn flush_due(&self, now: Instant) {
        let records = self.folder().due(now);
        self.record(records);
    }

    pub(crate) fn signal_refused(&self, identity: &Identity, refusal: SignalRefusal) {
        self.refused_signals.fetch_add(1, Ordering::Relaxed);
        self.hooks
            .iter()
            .for_each(|hook| hook.on_signal_refused(identity, refusal));
    }

    pub(crate) fn subscribe_limited(&self, identity: &Identity) {
        self.limited_subscribes.fetch_add(1, Ordering::Relaxed);
        self.hooks
            .iter()
            .for_each(|hook| hook.on_subscribe_limited(identity));
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            refused_connects: self.refused_connects.load(Ordering::Relaxed),
            denied_publishes: self.denied_publishes.load(Ordering::Relaxed),
            denied_subscribes: self.denied_subscribes.load(Ordering::Relaxed),
            refused_signals: self.refused_signals.load(Ordering::Relaxed),
            limited_subscribes: self.limited_subscribes.load(Ordering::Relaxed),
            ..Stats::default()
        }
    }

    /// Logs each record (one bounded line) and hands it to the hooks.
    fn record(&self, records: Vec<DenialRecord>) {
        for record in records {
            match &record {
                DenialRecord::Single(denial) => tracing::info!(
                    target: "courtchat::audit",
                    kind = denial.kind.as_str(),
                    peer = %denial.peer,
                    actor = %denial.actor.text,
                    actor_len = denial.actor.len,
                    target = denial.target.as_ref().map(|t| t.text.as_str()),
                    reason = %denial.reason.text,
                    "denied"
                ),
                DenialRecord::Folded(folded) => tracing::info!(
                    target: "courtchat::audit",
                    kind = folded.kind.as_str(),
                    by = %folded.by,
                    count = folded.count,
                    "denied again, counted"
                ),
            }
            self.hooks
                .iter()
                .for_each(|hook| hook.on_denial_record(&record));
        }
    }

    fn folder(&self) -> std::sync::MutexGuard<'_, Folder> {
        // Each change to the folder is a map operation with nothing between that can panic,
        // so a poisoned lock still holds consistent windows.
        self.folder
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for HookSet {
    /// The broker is gone: the counts of the windows still open are recorded now, so that no
    /// denial goes unaccounted for.
    fn drop(&mut self) {
        let records = self.folder().drain();
        self.record(records);
    }
}
