//! State that belongs to a client rather than to one connection: its subscriptions with their
//! options, QoS 1 and 2 deliveries whose flow is not over (`inflight`), what waits behind its
//! receive maximum, the QoS 2 publishes it has not released yet, and a will waiting for its
//! delay. Kept across connections for persistent sessions until they expire. (Retained messages
//! are `retained`'s.)

mod inflight;
mod subscriptions;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use tokio::time::Instant;

pub(crate) use inflight::{InFlight, Received, Stage};
pub(crate) use subscriptions::Subscriptions;

/// A subscription's options (MQTT 5 §3.8.3.1; a 3.1.1 subscription has the defaults).
#[derive(Clone, Debug)]
pub(crate) struct SubOptions {
    /// The QoS granted: what was asked for.
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// The subscription identifier its SUBSCRIBE carried (MQTT 5 §3.8.2.1.2), put on every
    /// delivery it matches.
    pub identifier: Option<usize>,
}

/// A message on its way to one client.
#[derive(Clone, Debug)]
pub(crate) struct Outbound {
    pub topic: Bytes,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: Option<PublishProperties>,
    /// When its MQTT 5 message expiry interval runs out, counted from when the gateway received
    /// it: not delivered after that, and delivered with what is left of the interval before
    /// (§3.3.2.3.3).
    pub expires_at: Option<Instant>,
}

impl Outbound {
    /// Whether its message expiry interval has run out by `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// When a message received now with these properties expires, if it does. An interval of 0 is
/// passed on as it is, not counted: a message that expired as it arrived would reach no one.
pub(crate) fn expiry_deadline(properties: Option<&PublishProperties>) -> Option<Instant> {
    let seconds = properties?.message_expiry_interval.filter(|s| *s > 0)?;
    Some(Instant::now() + Duration::from_secs(u64::from(seconds)))
}

/// What is left of a message expiry interval that runs out at `at`, in whole seconds, rounded
/// up: never 0 for a message still deliverable.
pub(crate) fn remaining_expiry(at: Instant, now: Instant) -> u32 {
    let left = at.saturating_duration_since(now);
    let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    u32::try_from(seconds).unwrap_or(u32::MAX).max(1)
}

/// A will, and how long after the connection is lost it is published (MQTT 5 §3.1.3.2.2).
#[derive(Clone, Debug)]
pub(crate) struct Will {
    pub message: Outbound,
    /// The will delay interval, in seconds (0 for MQTT 3.1.1).
    pub delay: u32,
}

#[derive(Default)]
pub(crate) struct SessionState {
    pub subscriptions: Subscriptions,
    /// QoS 1 and 2 deliveries whose flow is not over, oldest first.
    pub inflight: InFlight,
    /// Deliveries waiting for room under the client's receive maximum.
    pub pending: VecDeque<Outbound>,
    /// QoS 2 publishes received and forwarded but not yet released: one sent again before its
    /// PUBREL is acknowledged and not forwarded twice, also after a resume.
    pub qos2_incoming: HashSet<u16>,
    /// The will of the connection that left this session, while its delay runs: published when
    /// the delay or the session ends, dropped if a connection with the client id comes first.
    /// Boxed: every session has the field, few ever fill it.
    pub will: Option<Box<Will>>,
    /// While the client is away: its delivery queue, which the `cc/` fan-out keeps filling.
    pub parked: Option<Parked>,
    last_pkid: u16,
}

/// The delivery queue of a persistent session whose client is away, still registered with the
/// fan-out under the connection key it last had: what is published meanwhile is kept, up to the
/// queue's bound (`mqtt.max_pending_per_client`).
pub(crate) struct Parked {
    pub key: crate::fanout::LinkKey,
    pub inbox: crate::fanout::Inbox,
    pub deliveries: crate::delivery_queue::Receiver<crate::message::Forwarded>,
}

impl SessionState {
    /// The next packet identifier not in use by an unacknowledged delivery.
    pub fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains(self.last_pkid) {
                return self.last_pkid;
            }
        }
    }
}

struct Stored {
    state: SessionState,
    /// Distinguishes this stored session from a later one with the same client id, so that an
    /// expiry timer never removes a session stored after it was armed.
    generation: u64,
}

/// Sessions of clients that are not connected, until they resume or expire.
#[derive(Default)]
pub(crate) struct SessionStore {
    stored: Mutex<HashMap<String, Stored>>,
    generations: std::sync::atomic::AtomicU64,
}

impl SessionStore {
    /// Takes the stored session of `client_id`, if any.
    pub fn resume(&self, client_id: &str) -> Option<SessionState> {
        self.lock().remove(client_id).map(|stored| stored.state)
    }

    /// Takes whatever is stored for `client_id`, to be dropped (a clean start).
    pub fn discard(&self, client_id: &str) -> Option<SessionState> {
        self.lock().remove(client_id).map(|stored| stored.state)
    }

    /// Stores a session; returns the generation an expiry timer must present to remove it.
    pub fn store(&self, client_id: &str, state: SessionState) -> u64 {
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock()
            .insert(client_id.to_owned(), Stored { state, generation });
        generation
    }

    /// Takes the will waiting in the session stored as `generation`: its delay is over. `None` if
    /// the session was resumed, replaced or ended meanwhile.
    pub fn take_will(&self, client_id: &str, generation: u64) -> Option<Box<Will>> {
        self.lock()
            .get_mut(client_id)
            .filter(|s| s.generation == generation)
            .and_then(|stored| stored.state.will.take())
    }

    /// Takes the session stored as `generation`; `None` if it was resumed or replaced.
    pub fn expire(&self, client_id: &str, generation: u64) -> Option<SessionState> {
        let mut stored = self.lock();
        if stored
            .get(client_id)
            .is_some_and(|s| s.generation == generation)
        {
            stored.remove(client_id).map(|stored| stored.state)
        } else {
            None
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stored>> {
        // Single inserts and removes: a poisoned map is still consistent.
        self.stored
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Removes from a client's publish or will the user properties its receivers must not take
/// from it. Under `cc/`, all of them: participants act on what the gateway vouches for, and a
/// client's own `role` or `sender` would read as such a fact. Elsewhere user properties pass
/// (request/response and tracing use them).
pub(crate) fn sanitize_user_properties(properties: &mut PublishProperties, protocol_topic: bool) {
    if protocol_topic {
        properties.user_properties.clear();
    }
}

/// Seconds as the MQTT 5 session expiry property counts them; `u32::MAX` means never.
pub(crate) fn expiry(seconds: u32) -> Option<Duration> {
    (seconds != u32::MAX).then(|| Duration::from_secs(u64::from(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_user_properties_are_removed_under_cc_and_kept_elsewhere() {
        let client = |key: &str| (key.to_owned(), "x".to_owned());
        let rows = [(true, vec![]), (false, vec![client("trace"), client("a")])];
        for (protocol_topic, expected) in rows {
            let mut properties = PublishProperties {
                user_properties: vec![client("trace"), client("a")],
                ..PublishProperties::default()
            };
            sanitize_user_properties(&mut properties, protocol_topic);
            assert_eq!(properties.user_properties, expected, "{protocol_topic}");
        }
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_wrap() {
        let mut state = SessionState::default();
        let message = Outbound {
            topic: Bytes::from_static(b"t"),
            payload: Bytes::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires_at: None,
        };
        state.inflight.published(2, message);
        assert_eq!(state.next_pkid(), 1);
        assert_eq!(state.next_pkid(), 3, "2 is in flight");
        state.last_pkid = u16::MAX;
        assert_eq!(state.next_pkid(), 1, "0 is not a packet id");
    }

    #[test]
    fn what_is_left_of_a_message_expiry_interval_rounds_up() {
        let now = Instant::now();
        // (time left, seconds sent)
        let rows = [
            (Duration::from_secs(30), 30),
            (Duration::from_millis(27_800), 28),
            (Duration::from_millis(1), 1),
            (Duration::ZERO, 1),
        ];
        for (left, sent) in rows {
            assert_eq!(remaining_expiry(now + left, now), sent, "{left:?}");
        }
        let properties = |interval| PublishProperties {
            message_expiry_interval: interval,
            ..PublishProperties::default()
        };
        assert!(expiry_deadline(Some(&properties(Some(5)))).is_some());
        assert!(
            expiry_deadline(Some(&properties(Some(0)))).is_none(),
            "0 is not counted"
        );
        assert!(expiry_deadline(Some(&properties(None))).is_none());
        assert!(expiry_deadline(None).is_none());
    }

    #[test]
    fn an_expiry_timer_only_removes_its_own_generation() {
        let store = SessionStore::default();
        let first = store.store("c", SessionState::default());
        assert!(store.resume("c").is_some());
        let second = store.store("c", SessionState::default());
        assert!(
            store.expire("c", first).is_none(),
            "a stale timer must not remove the newer session"
        );
        assert!(store.expire("c", second).is_some());
        assert!(store.resume("c").is_none());
    }
}
