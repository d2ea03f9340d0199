//! How a connection ends: the will, publishes still waiting for the pipeline's queue, parking a
//! persistent session's queue, detaching from the router.

use super::router_link::end_router_session;
use super::{Ending, Session};
use crate::router::Command;
use crate::session;

impl Session<'_> {
    /// Publishes the will if the ending calls for it, detaches from the router and keeps the
    /// session if it outlives the connection. Returns the stored session's generation.
    pub(super) async fn finish(&mut self, ending: Ending) -> Option<u64> {
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
        if let (true, Some(will)) = (will_due, self.will.take()) {
            let topic = String::from_utf8_lossy(&will.topic).into_owned();
            self.shared.remember_presence(&topic, &will);
            will_topic = Some(topic);
            let _ = self.route(will).await;
        }
        // Publishes accepted but still waiting for room in the pipeline's queue are delivered
        // after the connection is gone.
        self.shared
            .deliver_when_room(std::mem::take(&mut self.waiting));
        match (self.inbox.take(), self.deliveries.take()) {
            // A kept session goes on collecting its `cc/` deliveries while the client is away.
            (Some(inbox), Some(deliveries)) if self.expiry > 0 => {
                self.state.parked = Some(session::Parked {
                    key: self.key,
                    inbox,
                    deliveries,
                });
            }
            (Some(_), _) => {
                self.shared
                    .fanout
                    .remove_all(self.key, self.state.subscriptions.keys());
            }
            (None, _) => {}
        }
        let _ = self
            .shared
            .router
            .send(Command::Detach { key: self.key })
            .await;
        if self.persistent_link && self.expiry == 0 {
            // The session ends here (its CONNECT or DISCONNECT gave no expiry): in rumqttd too,
            // which would otherwise keep it, and what it matches, forever.
            let _ = end_router_session(self.shared, self.client_id.clone()).await;
        }
        if let Some(id) = self.router_id.take() {
            // The feeder runs commands in order: the detach above reaches the router before
            // any later attach under this id.
            self.shared.link_ids.give_back(id);
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
        (self.expiry > 0).then(|| {
            self.shared
                .sessions
                .store(&self.client_id, std::mem::take(&mut self.state))
        })
    }
}
