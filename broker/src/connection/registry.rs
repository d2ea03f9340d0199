//! Live connections by client id: takeovers, and what reaches a live connection from outside
//! it (a revoked membership, revoked credentials).

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::timeout;

use crate::fanout::LinkKey;

/// Live connections by client id, so that a second CONNECT with the same id takes over
/// (MQTT 3.1.1 §3.1.4: the server disconnects the existing client).
#[derive(Default)]
pub(crate) struct ClientRegistry {
    live: Mutex<HashMap<String, Registered>>,
}

struct Registered {
    key: LinkKey,
    /// What the client has just lost access to, and whether it was taken over.
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
        revocations: Arc<Mailbox>,
        gone: oneshot::Receiver<()>,
    ) {
        let registered = Registered {
            key,
            revocations,
            gone,
        };
        let previous = self.lock().insert(client_id.to_owned(), registered);
        if let Some(previous) = previous {
            tracing::info!(client_id, "client id taken over by a new connection");
            previous.revocations.take_over();
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

/// What reaches one live connection from outside it: a takeover, and revocations, which are
/// rare. (A takeover was a cancellation token per connection, a child of the listener's: 128
/// bytes more each.) A channel
/// would preallocate a block of slots per connection (about 1 KiB with tokio's unbounded
/// channel); this holds nothing until something arrives, and the connection waits on it with
/// a future of one reference (a `Notify` wait was 88 bytes in every connection's task; issue
/// 22: memory per connection).
#[derive(Default)]
pub(super) struct Mailbox {
    state: std::sync::Mutex<MailboxState>,
}

#[derive(Default)]
struct MailboxState {
    pending: std::collections::VecDeque<Revocation>,
    /// The connection's task, while it waits with nothing pending.
    waiting: Option<Waker>,
    /// Another connection took the client id over.
    taken_over: bool,
    /// The connection's task, while it waits for a takeover.
    waiting_for_takeover: Option<Waker>,
}

impl Mailbox {
    pub(super) fn send(&self, revocation: Revocation) {
        let mut state = self.lock();
        state.pending.push_back(revocation);
        let waiting = state.waiting.take();
        drop(state);
        if let Some(waker) = waiting {
            waker.wake();
        }
    }

    /// Tells the connection that another one took its client id over.
    pub(super) fn take_over(&self) {
        let mut state = self.lock();
        state.taken_over = true;
        let waiting = state.waiting_for_takeover.take();
        drop(state);
        if let Some(waker) = waiting {
            waker.wake();
        }
    }

    /// Resolves once another connection has taken the client id over. Waited for by one task
    /// at a time (the connection's).
    pub(super) async fn taken_over(&self) {
        poll_fn(|cx| {
            let mut state = self.lock();
            if state.taken_over {
                return Poll::Ready(());
            }
            if !state
                .waiting_for_takeover
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                state.waiting_for_takeover = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }

    /// The next revocation, oldest first. Cancel-safe: nothing is taken until it is returned.
    /// Waited for by one task at a time (the connection's).
    pub(super) async fn next(&self) -> Revocation {
        poll_fn(|cx| {
            let mut state = self.lock();
            match state.pending.pop_front() {
                Some(revocation) => {
                    if state.pending.is_empty() {
                        state.pending = std::collections::VecDeque::new();
                    }
                    Poll::Ready(revocation)
                }
                None => {
                    if !state
                        .waiting
                        .as_ref()
                        .is_some_and(|waker| waker.will_wake(cx.waker()))
                    {
                        state.waiting = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxState> {
        // Single pushes and pops: a poisoned queue is still consistent.
        self.state
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

    #[tokio::test]
    async fn a_takeover_wakes_the_connection_and_stays_said() {
        let mailbox = Arc::new(Mailbox::default());
        let waiting = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.taken_over().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        mailbox.take_over();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("joined");
        assert!(
            futures_util::FutureExt::now_or_never(mailbox.taken_over()).is_some(),
            "a later wait ends at once"
        );
    }
}
