//! Hooks: plugins that observe the gateway without deciding anything (connects, disconnects,
//! accepted messages and denials). The chat pipeline registers one to write denials into the
//! audit trail; the gateway always counts them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Listener;
use crate::auth::Identity;
use crate::signal::SignalRefusal;

/// A refused connection or a denied publish or subscribe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    Connect {
        client_id: String,
        reason: String,
    },
    Publish {
        subject: String,
        topic: String,
        reason: String,
    },
    Subscribe {
        subject: String,
        filter: String,
        reason: String,
    },
}

/// Observes the gateway. Every method has an empty default, so a hook implements what it needs.
/// Hooks run on the connection's task: they must be quick and must not block.
pub trait Hook: Send + Sync {
    /// A client is connected (after CONNACK) on `listener`.
    fn on_connect(&self, _identity: &Identity, _listener: Listener) {}
    /// A connection that [`Hook::on_connect`] announced has ended.
    fn on_disconnect(&self, _identity: &Identity, _listener: Listener) {}
    fn on_message(&self, _identity: &Identity, _topic: &str) {}
    fn on_denied(&self, _denial: &Denial) {}
    /// A typing or presence publish (or will) that the gateway refused and did not deliver.
    fn on_signal_refused(&self, _identity: &Identity, _refusal: SignalRefusal) {}
}

/// Denial counts since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub refused_connects: u64,
    pub denied_publishes: u64,
    pub denied_subscribes: u64,
    /// Typing and presence publishes refused (not the payload their topic carries, too large,
    /// or over the sender's rate).
    pub refused_signals: u64,
}

/// The registered hooks, plus the counters the gateway keeps itself.
pub(crate) struct HookSet {
    hooks: Vec<Arc<dyn Hook>>,
    refused_connects: AtomicU64,
    denied_publishes: AtomicU64,
    denied_subscribes: AtomicU64,
    refused_signals: AtomicU64,
}

impl HookSet {
    pub(crate) fn new(hooks: Vec<Arc<dyn Hook>>) -> Self {
        Self {
            hooks,
            refused_connects: AtomicU64::new(0),
            denied_publishes: AtomicU64::new(0),
            denied_subscribes: AtomicU64::new(0),
            refused_signals: AtomicU64::new(0),
        }
    }

    pub(crate) fn connected(&self, identity: &Identity, listener: Listener) {
        self.hooks
            .iter()
            .for_each(|hook| hook.on_connect(identity, listener));
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

    pub(crate) fn denied(&self, denial: Denial) {
        let counter = match &denial {
            Denial::Connect { .. } => &self.refused_connects,
            Denial::Publish { .. } => &self.denied_publishes,
            Denial::Subscribe { .. } => &self.denied_subscribes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "courtchat::audit", ?denial, "denied");
        self.hooks.iter().for_each(|hook| hook.on_denied(&denial));
    }

    pub(crate) fn signal_refused(&self, identity: &Identity, refusal: SignalRefusal) {
        self.refused_signals.fetch_add(1, Ordering::Relaxed);
        self.hooks
            .iter()
            .for_each(|hook| hook.on_signal_refused(identity, refusal));
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            refused_connects: self.refused_connects.load(Ordering::Relaxed),
            denied_publishes: self.denied_publishes.load(Ordering::Relaxed),
            denied_subscribes: self.denied_subscribes.load(Ordering::Relaxed),
            refused_signals: self.refused_signals.load(Ordering::Relaxed),
        }
    }
}
