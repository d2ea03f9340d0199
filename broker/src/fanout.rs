//! Routing: which connections a publish goes to, by the gateway itself for every topic.
//!
//! A publish goes straight to the connections whose filters can match it, found through an index
//! keyed by the topic's first four levels (`cc/v1/sessions/{id}`, `cc/v1/clients/{subject}`,
//! `sensors/hall/door/1`), and an index entry disappears with its last subscriber, so memory
//! follows the live subscriptions. Filters with a wildcard among their first four levels (the
//! pipeline's, a supervisor's, `#` under a static rule) are kept per connection and checked one by
//! one; they are few. (rumqttd's router, which carried the topics outside `cc/` until issue 22,
//! kept every filter ever subscribed and every client id ever seen for the life of the process,
//! and cost each connection that used it tens of KiB: see ARCHITECTURE.md.)
//!
//! Every connection has one bounded delivery queue. Publishing never waits for a subscriber: a
//! connection whose queue is full has fallen too far behind and is disconnected (MQTT 5: 0x97),
//! as one whose own pending queue overflows is, rather than slowing the publisher (usually the
//! chat pipeline) for everyone or dropping in silence. A persistent session's queue goes on
//! collecting while its client is away (parked, see `session::Parked`); once it is full, what
//! comes next for it is dropped (the newest, as Mosquitto drops past `max_queued_messages`),
//! counted in [`Fanout::dropped`] and logged when the client returns.
//!
//! Shared subscriptions (`$share/{group}/{filter}`) are served by `shared_groups`.

pub(crate) mod shared_groups;

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rumqttc::v5::mqttbytes::matches;

use crate::delivery_queue::{self, TrySendError};
use crate::message::Forwarded;

/// Identifies one connection (or a persistent session's queue while its client is away); never
/// reused. 0 is the gateway's own.
pub(crate) type LinkKey = u64;

/// Levels of a topic that key the index: for the protocol, `cc`, `v1`, the scope (`sessions`,
/// `clients`, `open`) and its id.
const KEY_LEVELS: usize = 4;

/// A connection's delivery queue (which also tells it that the queue overflowed).
#[derive(Clone)]
pub(crate) struct Inbox {
    pub deliveries: delivery_queue::Sender<Forwarded>,
    /// Publishers wait for room in this queue instead of disconnecting its owner: the chat
    /// pipeline's (the service role), whose backlog is every participant's submissions. The
    /// publishing connection holds what its client sends next until there is room (see
    /// `Fanout::publish`), which is the backpressure its sender should feel.
    pub patient: bool,
}

/// The topics a filter can match, as the index sees them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Reach {
    /// Topics whose first levels are exactly this (`cc/v1/sessions/s-1`, `cc/v1/queue`).
    Keyed(String),
    /// Any topic (a wildcard among the first levels).
    Everywhere,
}

/// Decides how a (valid) filter is indexed.
pub(crate) fn plan(filter: &str) -> Reach {
    let mut head = filter.splitn(KEY_LEVELS + 1, '/').take(KEY_LEVELS);
    if head.any(|level| matches!(level, "+" | "#")) {
        Reach::Everywhere
    } else {
        Reach::Keyed(key_of(filter).to_owned())
    }
}

/// The index key of a topic: its first `KEY_LEVELS` levels.
fn key_of(topic: &str) -> &str {
    match topic.match_indices('/').nth(KEY_LEVELS - 1) {
        Some((end, _)) => &topic[..end],
        None => topic,
    }
}

/// Which connections can be interested in which topics.
#[derive(Default)]
pub(crate) struct Fanout {
    /// Read on every publish, written on subscribe, unsubscribe and disconnect.
    index: RwLock<Index>,
    /// Deliveries dropped since start because their subscriber's queue was full.
    dropped: AtomicU64,
}

/// A connection with filters under one key of the index.
struct Keyed {
    key: LinkKey,
    inbox: Inbox,
    /// How many of its filters have this key.
    filters: usize,
}

#[derive(Default)]
struct Index {
    /// By key: the connections with filters under it, and how many such filters each has.
    /// A list, not a map: most keys have one to three subscribers, and a list of one costs a
    /// fifth of the smallest map (issue 22: memory per connection).
    keyed: HashMap<Box<str>, Vec<Keyed>>,
    /// Connections with wildcard filters, checked one by one (supervisors, the pipeline).
    everywhere: HashMap<LinkKey, (Inbox, Vec<String>)>,
    /// Shared subscriptions, by group.
    shared: shared_groups::SharedGroups,
}

impl Fanout {
    /// Serves `filter`, which the connection `key` did not hold, from the index if it reaches
    /// into `cc/`.
    pub fn add(&self, key: LinkKey, filter: &str, inbox: &Inbox) {
        let mut index = self.lock();
        if filter.starts_with(shared_groups::PREFIX) {
            index.shared.add(key, filter, inbox);
            return;
        }
        match plan(filter) {
            Reach::Keyed(prefix) => {
                let subscribers = index.keyed.entry(prefix.into_boxed_str()).or_default();
                match subscribers.iter_mut().find(|held| held.key == key) {
                    Some(held) => held.filters += 1,
                    None => {
                        // Room for exactly one in a new list: most keys (a client's own
                        // topics) never get a second subscriber, and a first push would
                        // make room for four.
                        if subscribers.is_empty() {
                            subscribers.reserve_exact(1);
                        }
                        subscribers.push(Keyed {
                            key,
                            inbox: inbox.clone(),
                            filters: 1,
                        });
                    }
                }
            }
            Reach::Everywhere => {
                index
                    .everywhere
                    .entry(key)
                    .or_insert_with(|| (inbox.clone(), Vec::new()))
                    .1
                    .push(filter.to_owned());
            }
        }
    }

    /// Stops serving `filter` for `key`; an entry goes with its last filter.
    pub fn remove(&self, key: LinkKey, filter: &str) {
        let mut index = self.lock();
        if filter.starts_with(shared_groups::PREFIX) {
            index.shared.remove(key, filter);
            return;
        }
        match plan(filter) {
            Reach::Keyed(prefix) => {
                let Some(subscribers) = index.keyed.get_mut(prefix.as_str()) else {
                    return;
                };
                if let Some(at) = subscribers.iter().position(|held| held.key == key) {
                    subscribers[at].filters -= 1;
                    if subscribers[at].filters == 0 {
                        subscribers.swap_remove(at);
                        // A list that many subscribers left lets its room go.
                        if subscribers.len() <= subscribers.capacity() / 4 {
                            subscribers.shrink_to_fit();
                        }
                    }
                }
                if subscribers.is_empty() {
                    index.keyed.remove(prefix.as_str());
                }
            }
            Reach::Everywhere => {
                if let Some((_, filters)) = index.everywhere.get_mut(&key) {
                    filters.retain(|held| held != filter);
                    if filters.is_empty() {
                        index.everywhere.remove(&key);
                    }
                }
            }
        }
    }

    /// Moves the registrations of `filters` from the connection key `old` to `new`, with
    /// `inbox`, at once: a resumed session takes over the queue its previous connection left,
    /// and no message published meanwhile is missed or doubled.
    pub fn rekey<'f>(
        &self,
        old: LinkKey,
        new: LinkKey,
        filters: impl Iterator<Item = &'f str>,
        inbox: &Inbox,
    ) {
        let mut index = self.lock();
        for filter in filters {
            if filter.starts_with(shared_groups::PREFIX) {
                index.shared.rekey(old, new, filter, inbox);
                continue;
            }
            match plan(filter) {
                Reach::Keyed(prefix) => {
                    if let Some(subscribers) = index.keyed.get_mut(prefix.as_str())
                        && let Some(held) = subscribers.iter_mut().find(|held| held.key == old)
                    {
                        held.key = new;
                        held.inbox = inbox.clone();
                    }
                }
                Reach::Everywhere => {
                    if let Some((_, held)) = index.everywhere.remove(&old) {
                        index.everywhere.insert(new, (inbox.clone(), held));
                    }
                }
            }
        }
    }

    /// The client of `key` is away and its persistent session's queue parked: its shared
    /// subscriptions prefer other members until it resumes (`rekey`).
    pub fn park(&self, key: LinkKey) {
        self.lock().shared.park(key);
    }

    /// Stops serving every one of `filters` for `key` (a connection or session that ends).
    pub fn remove_all<'f>(&self, key: LinkKey, filters: impl Iterator<Item = &'f str>) {
        for filter in filters {
            self.remove(key, filter);
        }
    }

    /// Queues `message` once for every connection that may subscribe to `topic`; each then
    /// applies its own filters and options. Never waits: the copies for patient queues that are
    /// full come back, for the publisher (`from`) to deliver when there is room (it holds what
    /// its client sends meanwhile, and keeps delivering to it, so no cycle of waiting forms).
    #[must_use]
    pub fn publish(
        &self,
        from: LinkKey,
        topic: &str,
        message: &Forwarded,
    ) -> Vec<(Inbox, Forwarded)> {
        let index = self.read();
        let keyed = index.keyed.get(key_of(topic));
        let wildcard = index.everywhere.iter().filter(|(key, (_, filters))| {
            !keyed.is_some_and(|subscribers| subscribers.iter().any(|held| held.key == **key))
                && filters.iter().any(|filter| matches(topic, filter))
        });
        let targets = keyed
            .into_iter()
            .flatten()
            .map(|held| (&held.key, &held.inbox))
            .chain(wildcard.map(|(key, (inbox, _))| (key, inbox)));
        let mut waiting = Vec::new();
        let mut dropped = 0;
        for (key, inbox) in targets {
            match inbox.deliveries.try_send(message.clone()) {
                Ok(()) | Err(TrySendError::Closed(_)) => {}
                // Waiting for one's own queue would never end: only its owner drains it.
                Err(TrySendError::Full(message)) if inbox.patient && *key != from => {
                    waiting.push((inbox.clone(), message));
                }
                Err(TrySendError::Full(_)) => {
                    inbox.deliveries.overflow();
                    dropped += 1;
                }
            }
        }
        // The chat protocol's filters must each get every message: no topic under `cc/` goes
        // through a shared subscription.
        if !index.shared.is_empty() && !crate::acl::in_protocol(topic) {
            let shared = index.shared.publish(from, topic, key_of(topic), message);
            waiting.extend(shared.waiting);
            dropped += shared.dropped;
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        waiting
    }

    /// Deliveries dropped since start because their subscriber's queue was full: a connected
    /// client's (which is disconnected for it) or an away persistent session's.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Index entries, for tests and the session fuzz target, which check nothing is left behind.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn len(&self) -> usize {
        let index = self.read();
        index.keyed.len() + index.everywhere.len() + usize::from(!index.shared.is_empty())
    }

    fn lock(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        // Each operation leaves the maps consistent, so a poisoned lock is still usable.
        self.index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn plans() {
        let keyed = |prefix: &str| Reach::Keyed(prefix.to_owned());
        let rows: &[(&str, Reach)] = &[
            ("cc/v1/sessions/s1/messages", keyed("cc/v1/sessions/s1")),
            ("cc/v1/sessions/s1/+", keyed("cc/v1/sessions/s1")),
            ("cc/v1/sessions/s1/#", keyed("cc/v1/sessions/s1")),
            ("cc/v1/sessions/s1", keyed("cc/v1/sessions/s1")),
            ("cc/v1/clients/kiosk-1/ack", keyed("cc/v1/clients/kiosk-1")),
            ("cc/v1/queue", keyed("cc/v1/queue")),
            ("cc", keyed("cc")),
            ("bench/relay", keyed("bench/relay")),
            ("a/b/c/d/e/+", keyed("a/b/c/d")),
            ("cc/v1/sessions/+/submit/+", Reach::Everywhere),
            ("cc/v1/sessions/#", Reach::Everywhere),
            ("cc/#", Reach::Everywhere),
            ("#", Reach::Everywhere),
            ("+/v1/sessions/s1/messages", Reach::Everywhere),
            ("bench/#", Reach::Everywhere),
        ];
        for (filter, reach) in rows {
            assert_eq!(&plan(filter), reach, "{filter}");
        }
        assert_eq!(key_of("cc/v1/sessions/s1/submit/k1"), "cc/v1/sessions/s1");
        assert_eq!(key_of("cc/v1/queue"), "cc/v1/queue");
    }

    /// Every topic a filter matches has the filter's key, or the filter reaches everywhere:
    /// the index can never hide a message from a subscriber.
    #[test]
    fn a_keyed_filter_only_matches_topics_with_its_key() {
        let topics = [
            "cc",
            "cc/v1",
            "cc/v1/queue",
            "cc/v1/sessions/s1",
            "cc/v1/sessions/s1/messages",
            "cc/v1/sessions/s1/submit/k1",
            "cc/v1/sessions/s2/messages",
            "cc/v1/clients/k1/ack",
            "a/b/c/d",
            "a/b/c/d/e",
            "a/b/x/d/e",
            "/a",
            "a//b",
        ];
        let filters = [
            "a/b/c/d/#",
            "a/b/c/d/e",
            "a/b/c/d/+",
            "/a",
            "a//b",
            "cc",
            "cc/#",
            "cc/v1/sessions/s1/#",
            "cc/v1/sessions/s1/+",
            "cc/v1/sessions/s1/+/+",
            "cc/v1/sessions/s1",
            "cc/v1/clients/k1/ack",
            "cc/v1/queue",
            "cc/v1/+",
        ];
        for filter in filters {
            let Reach::Keyed(prefix) = plan(filter) else {
                continue;
            };
            for topic in topics {
                if rumqttc::v5::mqttbytes::matches(topic, filter) {
                    assert_eq!(key_of(topic), prefix, "{filter} matches {topic}");
                }
            }
        }
    }

    fn message() -> Forwarded {
        std::sync::Arc::new(crate::message::Message {
            topic: Bytes::from_static(b"cc/v1/sessions/s1/messages"),
            payload: Bytes::new(),
            qos: rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            retain: false,
            publisher: None,
            properties: None,
            via: None,
            expires_at: None,
        })
    }

    fn inbox(capacity: usize, patient: bool) -> (Inbox, delivery_queue::Receiver<Forwarded>) {
        let (deliveries, rx) = delivery_queue::channel(capacity);
        let inbox = Inbox {
            deliveries,
            patient,
        };
        (inbox, rx)
    }

    #[test]
    fn one_copy_per_connection_and_entries_go_with_their_last_filter() {
        let fanout = Fanout::default();
        let (inbox, rx) = inbox(8, false);
        fanout.add(1, "cc/v1/sessions/s1/messages", &inbox);
        fanout.add(1, "cc/v1/sessions/s1/lock", &inbox);
        fanout.add(1, "cc/v1/sessions/+/messages", &inbox);
        let _ = fanout.publish(9, "cc/v1/sessions/s1/messages", &message());
        let _ = fanout.publish(9, "cc/v1/sessions/s2/messages", &message());
        let _ = fanout.publish(9, "cc/v1/sessions/s2/notes", &message());
        assert_eq!(
            (
                rx.try_recv().is_ok(),
                rx.try_recv().is_ok(),
                rx.try_recv().is_ok()
            ),
            (true, true, false),
            "s1 once though three filters reach it, s2's messages through the wildcard, \
             s2's notes not at all"
        );
        fanout.remove(1, "cc/v1/sessions/s1/messages");
        let _ = fanout.publish(9, "cc/v1/sessions/s1/lock", &message());
        assert!(rx.try_recv().is_ok(), "the lock filter still holds s1");
        fanout.remove(1, "cc/v1/sessions/s1/lock");
        fanout.remove(1, "cc/v1/sessions/+/messages");
        assert_eq!(fanout.len(), 0);
        let _ = fanout.publish(9, "cc/v1/sessions/s1/messages", &message());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_key_with_one_subscriber_holds_room_for_one() {
        let fanout = Fanout::default();
        let (one, _one_rx) = inbox(8, false);
        let (two, _two_rx) = inbox(8, false);
        let room = |fanout: &Fanout| fanout.read().keyed["cc/v1/clients/k1"].capacity();
        fanout.add(1, "cc/v1/clients/k1/ack", &one);
        fanout.add(1, "cc/v1/clients/k1/other", &one);
        assert_eq!(room(&fanout), 1, "a client's own key, as most are");
        fanout.add(2, "cc/v1/clients/k1/ack", &two);
        fanout.remove(2, "cc/v1/clients/k1/ack");
        assert_eq!(room(&fanout), 1, "room let go when subscribers leave");
    }

    #[test]
    fn a_full_queue_flags_overflow_unless_its_owner_is_patient() {
        let fanout = Fanout::default();
        let (hasty, _hasty_rx) = inbox(1, false);
        fanout.add(7, "cc/v1/queue", &hasty);
        assert!(fanout.publish(9, "cc/v1/queue", &message()).is_empty());
        assert!(!hasty.deliveries.is_overflowed());
        assert!(fanout.publish(9, "cc/v1/queue", &message()).is_empty());
        assert!(hasty.deliveries.is_overflowed());

        let (patient, patient_rx) = inbox(1, true);
        fanout.add(8, "cc/v1/open/+", &patient);
        assert!(fanout.publish(9, "cc/v1/open/k1", &message()).is_empty());
        // Full: the copy comes back to the publisher to deliver when there is room.
        let waiting = fanout.publish(9, "cc/v1/open/k1", &message());
        assert_eq!(waiting.len(), 1);
        assert!(!patient.deliveries.is_overflowed());
        assert!(patient_rx.try_recv().is_ok());
        // Its owner publishing to itself does not wait for itself.
        assert!(fanout.publish(8, "cc/v1/open/k1", &message()).is_empty());
    }
}
