//! A client that lives in the gateway's own process: the chat pipeline of `courtchat serve`.
//!
//! It subscribes, receives and publishes as an MQTT client of the gateway would, under the same
//! authorization and hooks, but without a socket: what it receives is the gateway's own shared
//! message, and what it publishes is routed as a connection's publish is. No packet is encoded,
//! written, read or decoded on the way (issue 23: that hop cost the durable path more CPU than
//! storing). Its delivery guarantees are those the pipeline's MQTT link relies on:
//!
//! - **Manual acknowledgement**: a delivery at QoS 1 or 2 stays the client's until
//!   [`InProcessClient::ack`]; the pipeline acknowledges after it committed.
//! - **A receive maximum**: at most that many unacknowledged deliveries are handed over; the rest
//!   wait in the client's delivery queue, which is patient for the service role (its
//!   publishers wait for room), as the pipeline's connection's is.
//! - **Redelivery**: the client outlives whoever receives from it. [`InProcessClient::attach`]
//!   (a restarted pipeline) hands what the previous holder did not acknowledge over again,
//!   first, flagged as redelivered, as a resumed MQTT session does; and, as a new connection
//!   with the client id takes the session over, the previous holder receives nothing more.
//! - **Nothing decided twice by the gateway's doing**: an acknowledgement that arrives after
//!   the delivery was set aside for redelivery still takes it back, so a committed submission
//!   is not handed over again. (An MQTT acknowledgement lost with its connection cannot.)
//!
//! Retained messages sent because of a subscription (presence, for the pipeline) are handed
//! over first and need no acknowledgement.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::{QoS, matches, valid_filter, valid_topic};
use tokio::sync::{Semaphore, watch};

use crate::connection::Shared;
use crate::delivery_queue::{self, TryRecvError};
use crate::fanout::{Inbox, LinkKey};
use crate::hooks::{Origin, SubscribeOutcome};
use crate::identity::Identity;
use crate::listener::Listener;
use crate::message::{Forwarded, Message};
use crate::session::Outbound;

/// Why the gateway refused what an in-process client asked.
#[derive(Debug, thiserror::Error)]
pub enum InProcessError {
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    #[error("not a valid topic name or filter: {0:?}")]
    Invalid(String),
    #[error("the retained message was refused: {0}")]
    Retained(String),
}

/// One message handed to an in-process client.
#[derive(Debug)]
pub struct Delivery {
    /// Its place among the client's unacknowledged deliveries; `None` for one that needs no
    /// acknowledgement (QoS 0).
    id: Option<u64>,
    redelivered: bool,
    message: Forwarded,
}

impl Delivery {
    pub fn topic(&self) -> &str {
        // Topic names are checked as UTF-8 before anything is routed.
        std::str::from_utf8(&self.message.topic).unwrap_or_default()
    }

    pub fn payload(&self) -> &Bytes {
        &self.message.payload
    }

    /// The MQTT 5 user property `key`, if the publish carries it (on protocol topics, only what
    /// the gateway's hooks set).
    pub fn user_property(&self, key: &str) -> Option<&str> {
        self.message
            .properties
            .as_ref()?
            .user_properties
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// Whether it waits for [`InProcessClient::ack`].
    pub fn needs_ack(&self) -> bool {
        self.id.is_some()
    }

    /// Whether it was handed over before, to a holder that ended without acknowledging it.
    pub fn is_redelivery(&self) -> bool {
        self.redelivered
    }
}

#[derive(Default)]
struct State {
    /// Filters and the QoS each was granted.
    subscriptions: Vec<(String, QoS)>,
    /// Handed over and not acknowledged, by id (each holds one permit of the window).
    unacked: BTreeMap<u64, Forwarded>,
    /// Set aside by `attach`, to be handed over again first (each still holds its permit).
    again: VecDeque<(u64, Forwarded)>,
    /// Retained messages a subscription sent, to be handed over before what is queued.
    retained: VecDeque<Forwarded>,
    next_id: u64,
}

/// A client of the gateway inside its process. Made by [`crate::Broker::in_process_client`];
/// it stays subscribed until dropped.
pub struct InProcessClient {
    shared: Arc<Shared>,
    key: LinkKey,
    identity: Identity,
    publisher: Arc<str>,
    inbox: Inbox,
    deliveries: delivery_queue::Receiver<Forwarded>,
    /// One permit per delivery that may be unacknowledged at once (the receive maximum).
    window: Semaphore,
    state: Mutex<State>,
    /// Who receives: the latest [`InProcessClient::attach`]'s number.
    holder: watch::Sender<u64>,
}

/// Who receives from an [`InProcessClient`], until someone attaches after them: the number
/// of its attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder(pub u64);

impl InProcessClient {
    pub(crate) fn new(
        shared: Arc<Shared>,
        client_id: &str,
        identity: Identity,
        receive_maximum: u16,
    ) -> Result<Self, InProcessError> {
        shared
            .acl
            .check_connect(&identity)
            .map_err(InProcessError::NotAuthorized)?;
        let policy = shared.hooks.connected(&identity, Listener::InProcess);
        let capacity = shared.config.max_pending_per_client.max(64);
        let (sender, deliveries) = delivery_queue::channel(capacity);
        let key = shared.key();
        Ok(Self {
            inbox: Inbox {
                deliveries: sender,
                patient: policy.patient_queue,
            },
            deliveries,
            window: Semaphore::new(usize::from(receive_maximum.max(1))),
            key,
            identity,
            publisher: Arc::from(client_id),
            state: Mutex::new(State::default()),
            holder: watch::Sender::new(0),
            shared,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state whole (a push, a pop, a move).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Subscribes to `filter` at `qos` (again: the QoS is updated), and queues the retained
    /// messages it matches, as a subscription with retain handling 0 does.
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), InProcessError> {
        if !valid_filter(filter) || filter.starts_with('$') {
            return Err(InProcessError::Invalid(filter.to_owned()));
        }
        if let Err(reason) = self.shared.acl.check_filter(&self.identity, filter) {
            self.shared.hooks.subscribed(
                &self.identity,
                filter,
                SubscribeOutcome::Refused { reason_code: 0x87 },
            );
            return Err(InProcessError::NotAuthorized(reason));
        }
        let retained: Vec<Forwarded> = self
            .shared
            .retained
            .matching(filter)
            .into_iter()
            .filter(|message| self.may_read(&message.topic))
            .map(retained_message)
            .collect();
        let mut state = self.lock();
        match state
            .subscriptions
            .iter_mut()
            .find(|(held, _)| held == filter)
        {
            Some((_, granted)) => *granted = qos,
            None => {
                state.subscriptions.push((filter.to_owned(), qos));
                self.shared.fanout.add(self.key, filter, &self.inbox);
            }
        }
        state.retained.extend(retained);
        drop(state);
        self.shared.hooks.subscribed(
            &self.identity,
            filter,
            SubscribeOutcome::Granted { qos: qos as u8 },
        );
        Ok(())
    }

    /// Publishes at QoS 1, as a connection's publish is routed: authorized, through the
    /// publish hooks, retained if asked, to every subscriber. Never waits: a subscriber too far
    /// behind is disconnected, and copies for patient queues that are full are delivered as
    /// room appears.
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        retain: bool,
    ) -> Result<(), InProcessError> {
        if !valid_topic(topic) || topic.starts_with('$') {
            return Err(InProcessError::Invalid(topic.to_owned()));
        }
        self.shared
            .acl
            .check_publish(&self.identity, topic)
            .and_then(|()| crate::acl::check_retain(&self.identity, topic, retain))
            .map_err(InProcessError::NotAuthorized)?;
        self.shared.hooks.message(&self.identity, topic);
        let message = Outbound {
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            payload: payload.into(),
            qos: QoS::AtLeastOnce,
            retain,
            properties: None,
            expires_at: None,
        };
        let waiting = self
            .shared
            .route(
                &self.identity,
                Some(&self.publisher),
                self.key,
                message,
                Origin::Client,
            )
            .map_err(|refusal| InProcessError::Retained(refusal.to_string()))?;
        self.shared.deliver_when_room(waiting);
        Ok(())
    }

    /// The largest payload worth publishing: what a client may be sent at most.
    pub fn max_packet_size(&self) -> usize {
        self.shared.config.max_packet_size
    }

    /// A new holder takes over: what the previous one was handed and did not acknowledge is
    /// handed over again first, in the order it was first handed over, and the previous one
    /// receives nothing more (its acknowledgements still count).
    pub fn attach(&self) -> Holder {
        let mut state = self.lock();
        let unacked = std::mem::take(&mut state.unacked);
        state.again.extend(unacked);
        state.again.make_contiguous().sort_by_key(|(id, _)| *id);
        drop(state);
        let mut holder = 0;
        self.holder.send_modify(|latest| {
            *latest += 1;
            holder = *latest;
        });
        Holder(holder)
    }

    /// The next delivery for `holder`: what is set aside first, then what is queued, once the
    /// receive maximum leaves room. Cancel-safe: nothing is taken from the queue until it is
    /// handed over. `None` once someone attached after `holder`, or the gateway is gone.
    pub async fn recv(&self, holder: Holder) -> Option<Delivery> {
        let mut latest = self.holder.subscribe();
        loop {
            if *latest.borrow_and_update() != holder.0 {
                return None;
            }
            if let Some(delivery) = self.set_aside() {
                return Some(delivery);
            }
            let next = async {
                let room = self.window.acquire().await.ok()?;
                let message = self.deliveries.recv().await?;
                Some((room, message))
            };
            let (room, message) = tokio::select! {
                next = next => next?,
                // Taken over: checked again at the top.
                _ = latest.changed() => continue,
            };
            if let Some(delivery) = self.hand_over(message) {
                if delivery.needs_ack() {
                    room.forget();
                }
                return Some(delivery);
            }
        }
    }

    /// The next delivery for `holder` if one is ready now.
    pub fn try_recv(&self, holder: Holder) -> Option<Delivery> {
        if *self.holder.borrow() != holder.0 {
            return None;
        }
        loop {
            if let Some(delivery) = self.set_aside() {
                return Some(delivery);
            }
            let room = self.window.try_acquire().ok()?;
            let message = match self.deliveries.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return None,
            };
            if let Some(delivery) = self.hand_over(message) {
                if delivery.needs_ack() {
                    room.forget();
                }
                return Some(delivery);
            }
        }
    }

    /// How many deliveries wait in the queue (not counting those set aside).
    pub fn queued(&self) -> usize {
        self.deliveries.len()
    }

    /// Acknowledges a delivery: it is the client's no more. Acknowledging one twice, or one
    /// that needs none, does nothing.
    pub fn ack(&self, delivery: &Delivery) {
        let Some(id) = delivery.id else {
            return;
        };
        let mut state = self.lock();
        let taken = state.unacked.remove(&id).is_some() || {
            let before = state.again.len();
            state.again.retain(|(held, _)| *held != id);
            state.again.len() < before
        };
        drop(state);
        if taken {
            self.window.add_permits(1);
        }
    }

    /// Retained messages, then deliveries set aside by `attach`.
    fn set_aside(&self) -> Option<Delivery> {
        let mut state = self.lock();
        if let Some(message) = state.retained.pop_front() {
            return Some(Delivery {
                id: None,
                redelivered: false,
                message,
            });
        }
        let (id, message) = state.again.pop_front()?;
        state.unacked.insert(id, message.clone());
        Some(Delivery {
            id: Some(id),
            redelivered: true,
            message,
        })
    }

    /// Turns a queued message into a delivery, as the subscriptions say: `None` for one that is
    /// not to be delivered (expired, unreadable, or matching no subscription any more).
    fn hand_over(&self, message: Forwarded) -> Option<Delivery> {
        if message
            .expires_at
            .is_some_and(|at| at <= tokio::time::Instant::now())
        {
            return None;
        }
        if !self.may_read(&message.topic) {
            return None;
        }
        let topic = std::str::from_utf8(&message.topic).ok()?;
        let mut state = self.lock();
        let granted = state
            .subscriptions
            .iter()
            .filter(|(filter, _)| matches(topic, filter))
            .map(|(_, qos)| *qos as u8)
            .max()?;
        if granted.min(message.qos as u8) == 0 {
            return Some(Delivery {
                id: None,
                redelivered: false,
                message,
            });
        }
        state.next_id += 1;
        let id = state.next_id;
        state.unacked.insert(id, message.clone());
        Some(Delivery {
            id: Some(id),
            redelivered: false,
            message,
        })
    }

    fn may_read(&self, topic: &[u8]) -> bool {
        std::str::from_utf8(topic).is_ok_and(|topic| {
            self.shared
                .acl
                .check_subscribe(&self.identity, topic)
                .is_ok()
        })
    }
}

/// A retained message as a subscription delivers it: flagged retained, at most once.
fn retained_message(message: Outbound) -> Forwarded {
    Arc::new(Message {
        topic: message.topic,
        payload: message.payload,
        qos: QoS::AtMostOnce,
        retain: true,
        publisher: None,
        properties: message.properties,
        expires_at: message.expires_at,
        via: None,
    })
}

impl Drop for InProcessClient {
    fn drop(&mut self) {
        let state = self.lock();
        self.shared.fanout.remove_all(
            self.key,
            state
                .subscriptions
                .iter()
                .map(|(filter, _)| filter.as_str()),
        );
        drop(state);
        self.shared
            .hooks
            .disconnected(&self.identity, Listener::InProcess);
    }
}
