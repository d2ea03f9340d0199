//! State that belongs to a client rather than to one connection: its subscriptions with their
//! options, QoS 1 deliveries not yet acknowledged, and what waits behind its receive maximum.
//! Kept across connections for persistent sessions until they expire. (Retained messages are
//! `retained`'s.)

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::PublishProperties;

/// A subscription's options (MQTT 5 §3.8.3.1; a 3.1.1 subscription has the defaults).
#[derive(Clone, Debug)]
pub(crate) struct SubOptions {
    /// The QoS granted, at most 1: the gateway does not deliver at QoS 2.
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
}

/// A message on its way to one client.
#[derive(Clone, Debug)]
pub(crate) struct Outbound {
    pub topic: Bytes,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: Option<PublishProperties>,
}

#[derive(Default)]
pub(crate) struct SessionState {
    pub subscriptions: HashMap<String, SubOptions>,
    /// QoS 1 deliveries sent and not yet acknowledged, oldest first.
    pub inflight: VecDeque<(u16, Outbound)>,
    /// Deliveries waiting for room under the client's receive maximum.
    pub pending: VecDeque<Outbound>,
    /// QoS 2 publishes received and forwarded but not yet released.
    pub qos2_incoming: HashSet<u16>,
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
    pub deliveries: tokio::sync::mpsc::Receiver<crate::message::Forwarded>,
}

impl SessionState {
    /// The next packet identifier not in use by an unacknowledged delivery.
    pub fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            if !self
                .inflight
                .iter()
                .any(|(pkid, _)| *pkid == self.last_pkid)
            {
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
        };
        state.inflight.push_back((2, message));
        assert_eq!(state.next_pkid(), 1);
        assert_eq!(state.next_pkid(), 3, "2 is in flight");
        state.last_pkid = u16::MAX;
        assert_eq!(state.next_pkid(), 1, "0 is not a packet id");
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
