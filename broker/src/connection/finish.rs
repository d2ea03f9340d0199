//! How a connection ends: the will (or its delay), publishes still waiting for the pipeline's
//! queue, parking a persistent session's queue.

use super::will::{delay_of, publish_will_later};
use super::{Ending, Session};
use crate::session;

impl Session<'_> {
    /// Publishes the will if the ending calls for it (or keeps it for its delay), leaves the
    /// routing index and keeps the session if it outlives the connection.
    pub(super) async fn finish(&mut self, ending: Ending) -> Option<Kept> {
        let reason = match &ending {
            Ending::Clean { .. } => "client disconnected",
            Ending::Abrupt { reason, .. } => reason,
            Ending::Shutdown => "server shutdown",
        };
        tracing::debug!(client_id = %self.client_id, reason, "connection closed");
        let will_due = matches!(
            ending,
            Ending::Abrupt { .. } | Ending::Clean { with_will: true }
        );
        let mut will_topic = None;
        let mut will_delay = None;
        if let (true, Some(will)) = (will_due, self.will.take()) {
            if let Some(delay) = delay_of(&will, self.expiry) {
                // Kept with the session (stored below) until its delay runs out.
                will_delay = Some(delay);
                self.state.will = Some(Box::new(will));
            } else {
                let mut will = will.message;
                will.expires_at = session::expiry_deadline(will.properties.as_ref());
                let topic = String::from_utf8_lossy(&will.topic).into_owned();
                self.shared.remember_presence(&topic, &will);
                will_topic = Some(topic);
                // A retained will that does not fit the retained store is not published (logged).
                let _ = self.route(will, crate::hooks::Origin::Will);
            }
        }
        // Publishes accepted but still waiting for room in the pipeline's queue are delivered
        // after the connection is gone.
        self.shared
            .deliver_when_room(std::mem::take(&mut self.waiting));
        match (self.inbox.take(), self.deliveries.take()) {
            // A kept session goes on collecting its deliveries while the client is away.
            (Some(inbox), Some(deliveries)) if self.expiry > 0 => {
                self.shared.fanout.park(self.key);
                self.state.parked = Some(session::Parked {
                    key: self.key,
                    inbox,
                    deliveries,
                });
            }
            (Some(_), _) => {
                self.shared
                    .fanout
                    .remove_all(self.key, self.state.subscriptions.filters());
            }
            (None, _) => {}
        }
        let shutdown = matches!(ending, Ending::Shutdown);
        if self.shared.clients.release(&self.client_id, self.key) && !shutdown {
            // No other connection took this one's place: its subject is gone from every open
            // session it belongs to (its will may have said so on one already). Not at
            // shutdown: presence is not kept across a restart, and everyone goes at once.
            self.shared
                .announce_offline(&self.identity.subject, will_topic.as_deref());
        }
        self.shared
            .hooks
            .disconnected(&self.identity, self.listener);
        if self.expiry == 0 {
            return None;
        }
        let generation = self
            .shared
            .sessions
            .store(&self.client_id, std::mem::take(&mut self.state));
        Some(Kept {
            generation,
            expiry: self.expiry,
            will_delay,
        })
    }
}

/// A session kept after its connection, and the timers it needs.
pub(super) struct Kept {
    /// Its generation in the session store.
    generation: u64,
    /// Seconds until it expires.
    expiry: u32,
    /// Seconds until the will it holds is published, if it holds one.
    will_delay: Option<u32>,
}

impl Kept {
    /// Arms the expiry of the session of `client_id`, and the publishing of its will.
    pub(super) fn arm(self, shared: &std::sync::Arc<super::Shared>, client_id: &str) {
        let weak = std::sync::Arc::downgrade(shared);
        if let Some(delay) = self.will_delay {
            publish_will_later(weak.clone(), client_id.to_owned(), self.generation, delay);
        }
        expire_later(weak, client_id.to_owned(), self.generation, self.expiry);
    }
}

/// Ends a stored session when its expiry interval has passed without the client returning.
fn expire_later(
    shared: std::sync::Weak<super::Shared>,
    client_id: String,
    generation: u64,
    seconds: u32,
) {
    let Some(after) = session::expiry(seconds) else {
        return;
    };
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Some(mut expired) = shared.sessions.expire(&client_id, generation) {
            // The session ends: a will still waiting for its delay is published now.
            if let Some(will) = expired.will.take() {
                shared.publish_will(&client_id, *will);
            }
            shared.release(expired);
            tracing::debug!(client_id, "session expired");
        }
    });
}
