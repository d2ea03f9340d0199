//! Live connections by client id: takeovers, and what reaches a live connection from outside
//! it (a revoked membership, revoked credentials).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{Notify, oneshot};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::fanout::LinkKey;

/// Live connections by client id, so that a second CONNECT with the same id takes over
/// (MQTT 3.1.1 §3.1.4: the server disconnects the existing client).
#[derive(Default)]
pub(crate) struct ClientRegistry {
    live: Mutex<HashMap<String, Registered>>,
}

struct Registered {
    key: LinkKey,
    kick: CancellationToken,
    /// What the client has just lost access to.
    revocations: Arc<Mailbox>,
    /// Resolves (with an error) once the old connection has stored its session.
    gone: oneshot::Receiver<()>,
}

impl ClientRegistry {
    /// Registers `client_id` for `key`, first closing any connection that holds it.
    pub(super) async fn claim(
        &self,
        client_id: &str,
        key: LinkKey,
        kick: CancellationToken,
        revocations: Arc<Mailbox>,
        gone: oneshot::Receiver<()>,
    ) {
        let registered = Registered {
            key,
            kick,
            revocations,
            gone,
        };
        let previous = self.lock().insert(client_id.to_owned(), registered);
        if let Some(previous) = previous {
            tracing::info!(client_id, "client id taken over by a new connection");
            previous.kick.cancel();
            // The old connection detaches promptly once kicked; the bound only guards against a
            // wedged task holding the id forever (a bug, not a condition to tune for, so it is not
            // configuration).
            let _ = timeout(Duration::from_secs(5), previous.gone).await;
        }
    }

    /// Tells the connection of `subject`, if any, that it no longer belongs to `session`.
    pub(crate) fn revoke(&self, subject: &str, session: &str) {
        if let Some(registered) = self.lock().get(subject) {
            registered
                .revocations
                .send(Revocation::Session(session.to_owned()));
        }
    }

    /// Ends the connection of `subject`, if any: its credentials were revoked (`staff`).
    pub(crate) fn end(&self, subject: &str) {
        if let Some(registered) = self.lock().get(subject) {
            registered.revocations.send(Revocation::Credentials);
        }
    }

    /// Unregisters the connection `key` of `client_id`; whether it was the last one (no other
    /// connection has taken the id over).
    pub(super) fn release(&self, client_id: &str, key: LinkKey) -> bool {
        let mut live = self.lock();
        match live.get(client_id) {
            Some(registered) if registered.key == key => {
                live.remove(client_id);
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registered>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still safe to use.
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a live connection loses from outside it.
pub(super) enum Revocation {
    /// Its subject left this session: its subscriptions there go.
    Session(String),
    /// Its credentials were revoked: the connection ends (MQTT 5: Administrative action).
    Credentials,
}

/// What reaches one live connection from outside it: revocations, which are rare. A channel
/// would preallocate a block of slots per connection (about 1 KiB with tokio's unbounded
/// channel); this holds nothing until something arrives (issue 22: memory per connection).
#[derive(Default)]
pub(super) struct Mailbox {
    pending: std::sync::Mutex<std::collections::VecDeque<Revocation>>,
    arrived: Notify,
}

impl Mailbox {
    pub(super) fn send(&self, revocation: Revocation) {
        self.lock().push_back(revocation);
        self.arrived.notify_one();
    }

    /// The next revocation, oldest first. Cancel-safe: nothing is taken until it is returned.
    pub(super) async fn next(&self) -> Revocation {
        loop {
            let arrived = self.arrived.notified();
            if let Some(revocation) = self.lock().pop_front() {
                return revocation;
            }
            arrived.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Revocation>> {
        // Single pushes and pops: a poisoned queue is still consistent.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_mailbox_delivers_in_order_what_arrived_before_and_while_waiting() {
        let mailbox = Arc::new(Mailbox::default());
        mailbox.send(Revocation::Session("s1".to_owned()));
        mailbox.send(Revocation::Credentials);
        assert!(matches!(mailbox.next().await, Revocation::Session(s) if s == "s1"));
        assert!(matches!(mailbox.next().await, Revocation::Credentials));
        let waiting = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.next().await }
        });
        tokio::task::yield_now().await;
        mailbox.send(Revocation::Session("s2".to_owned()));
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("joined");
        assert!(matches!(got, Revocation::Session(s) if s == "s2"));
    }
}
