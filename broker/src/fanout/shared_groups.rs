//! Shared subscriptions (MQTT 5 §4.8.2): `$share/{group}/{filter}`. Every message the filter
//! matches goes to one member of the group, in turn, as a copy of its own marked with the
//! subscription it came through (`Message::via`), so it reaches that member independently of
//! the member's other subscriptions: a client subscribed to `f` and to `$share/g/f` gets two
//! copies.
//!
//! Choices where the specification leaves them to the server:
//! - Round robin over the members, skipping those whose queue is full; a member is disconnected
//!   for a full queue (0x97, as any subscriber is) only when no member has room.
//! - Members whose persistent session is away (parked) are only given a message when no
//!   connected member has room: it then waits in the away member's queue until it resumes. A
//!   group of members that are all away loses nothing while their queues have room.
//! - Never under `cc/`: the chat protocol's filters must each get every message, so a topic
//!   under `cc/` is never delivered through a shared subscription (and `connection::subscribe`
//!   refuses one whose filter starts with `cc`).
//!
//! Groups are few; they are indexed like the ordinary filters, by the first levels of their
//! filter, so that a publish looks only at the groups that can match it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Inbox, LinkKey, Reach, plan};
use crate::delivery_queue::TrySendError;
use crate::message::Forwarded;
use rumqttc::v5::mqttbytes::matches;

/// What a shared subscription's name starts with.
pub(crate) const PREFIX: &str = "$share/";

/// A shared subscription's name, taken apart.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ShareName<'a> {
    pub group: &'a str,
    pub filter: &'a str,
}

/// `Some` when `name` is a shared subscription (starts with `$share/`): its group and filter,
/// or `Err` when it is malformed (an empty group or filter, a wildcard in the group; MQTT 5
/// §4.8.2). The filter itself is checked as any filter is.
pub(crate) fn parse(name: &str) -> Option<Result<ShareName<'_>, &'static str>> {
    let rest = name.strip_prefix(PREFIX)?;
    Some(match rest.split_once('/') {
        None => Err("a shared subscription names a group and a filter"),
        Some(("", _)) => Err("a shared subscription's group is empty"),
        Some((group, _)) if group.contains(['+', '#']) => {
            Err("a shared subscription's group contains a wildcard")
        }
        Some((_, "")) => Err("a shared subscription's filter is empty"),
        Some((group, filter)) => Ok(ShareName { group, filter }),
    })
}

/// The filter a subscription (shared or not) matches topics with.
pub(crate) fn filter_of(subscription: &str) -> &str {
    match parse(subscription) {
        Some(Ok(share)) => share.filter,
        _ => subscription,
    }
}

/// Whether the subscription `subscription` of a receiver takes part in delivering a copy routed
/// through `via` (see `Message::via`), and if so with which filter: a copy for a shared
/// subscription is that subscription's alone; any other copy is for the receiver's non-shared
/// subscriptions.
pub(crate) fn takes_part<'s>(via: Option<&str>, subscription: &'s str) -> Option<&'s str> {
    match via {
        Some(via) => (via == subscription).then(|| filter_of(subscription)),
        None => (!subscription.starts_with(PREFIX)).then_some(subscription),
    }
}

/// The shared subscriptions in use, by the reach of their filters.
#[derive(Default)]
pub(super) struct SharedGroups {
    keyed: HashMap<String, HashMap<Arc<str>, Group>>,
    everywhere: HashMap<Arc<str>, Group>,
}

struct Group {
    members: Vec<Member>,
    /// Whose turn is next (modulo the members); advanced by every message, under the index's
    /// read lock, hence atomic.
    turn: AtomicUsize,
}

struct Member {
    key: LinkKey,
    inbox: Inbox,
    /// Its client is away; its persistent session's queue still collects (see `Fanout::park`).
    away: bool,
}

/// How one publish went for the groups that match it.
#[derive(Default)]
pub(super) struct Shared {
    /// Copies for full patient queues, for the publisher to deliver when there is room.
    pub waiting: Vec<(Inbox, Forwarded)>,
    /// Copies dropped because no member of their group had room.
    pub dropped: u64,
}

impl SharedGroups {
    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty() && self.everywhere.is_empty()
    }

    fn groups_mut(&mut self, filter: &str) -> &mut HashMap<Arc<str>, Group> {
        match plan(filter) {
            Reach::Keyed(prefix) => self.keyed.entry(prefix).or_default(),
            Reach::Everywhere => &mut self.everywhere,
        }
    }

    /// Makes `key` a member of the shared subscription `name` (well formed: see [`parse`]).
    pub fn add(&mut self, key: LinkKey, name: &str, inbox: &Inbox) {
        let groups = self.groups_mut(filter_of(name));
        let group = groups.entry(Arc::from(name)).or_insert_with(|| Group {
            members: Vec::new(),
            turn: AtomicUsize::new(0),
        });
        if !group.members.iter().any(|member| member.key == key) {
            group.members.push(Member {
                key,
                inbox: inbox.clone(),
                away: false,
            });
        }
    }

    /// Takes `key` out of the group `name`; the group goes with its last member.
    pub fn remove(&mut self, key: LinkKey, name: &str) {
        let filter = filter_of(name);
        let prefix = match plan(filter) {
            Reach::Keyed(prefix) => Some(prefix),
            Reach::Everywhere => None,
        };
        let groups = match &prefix {
            Some(prefix) => match self.keyed.get_mut(prefix) {
                Some(groups) => groups,
                None => return,
            },
            None => &mut self.everywhere,
        };
        if let Some(group) = groups.get_mut(name) {
            group.members.retain(|member| member.key != key);
            if group.members.is_empty() {
                groups.remove(name);
            }
        }
        if let Some(prefix) = prefix
            && self.keyed.get(&prefix).is_some_and(HashMap::is_empty)
        {
            self.keyed.remove(&prefix);
        }
    }

    /// The member `old` of `name` is now the connection `new`, with `inbox`, and present.
    pub fn rekey(&mut self, old: LinkKey, new: LinkKey, name: &str, inbox: &Inbox) {
        let groups = self.groups_mut(filter_of(name));
        if let Some(member) = groups
            .get_mut(name)
            .and_then(|group| group.members.iter_mut().find(|member| member.key == old))
        {
            member.key = new;
            member.inbox = inbox.clone();
            member.away = false;
        }
    }

    /// Marks `key` away in every group it is a member of.
    pub fn park(&mut self, key: LinkKey) {
        let groups = self
            .keyed
            .values_mut()
            .flat_map(HashMap::values_mut)
            .chain(self.everywhere.values_mut());
        for member in groups.flat_map(|group| group.members.iter_mut()) {
            if member.key == key {
                member.away = true;
            }
        }
    }

    /// Hands `message` on `topic` (whose index key is `topic_key`) to one member of every group
    /// whose filter matches it.
    pub fn publish(
        &self,
        from: LinkKey,
        topic: &str,
        topic_key: &str,
        message: &Forwarded,
    ) -> Shared {
        let mut outcome = Shared::default();
        let groups = self
            .keyed
            .get(topic_key)
            .into_iter()
            .flatten()
            .chain(&self.everywhere);
        for (name, group) in groups {
            if matches(topic, filter_of(name)) {
                group.hand_over(name, from, message, &mut outcome);
            }
        }
        outcome
    }
}

impl Group {
    /// Gives one member a copy: the first in turn with room, connected members before away ones.
    fn hand_over(&self, name: &Arc<str>, from: LinkKey, message: &Forwarded, outcome: &mut Shared) {
        let count = self.members.len();
        if count == 0 {
            return;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % count;
        let in_turn = || (0..count).map(|i| &self.members[(start + i) % count]);
        let mut copy: Forwarded = Arc::new(message.through(name));
        let mut first_full = None;
        for member in in_turn()
            .filter(|member| !member.away)
            .chain(in_turn().filter(|member| member.away))
        {
            match member.inbox.deliveries.try_send(copy) {
                Ok(()) => return,
                // Its connection is ending and leaving the group.
                Err(TrySendError::Closed(back)) => copy = back,
                Err(TrySendError::Full(back)) => {
                    first_full.get_or_insert(member);
                    copy = back;
                }
            }
        }
        // No member has room: as for any subscriber whose queue is full.
        match first_full {
            Some(member) if member.inbox.patient && member.key != from => {
                outcome.waiting.push((member.inbox.clone(), copy));
            }
            Some(member) => {
                member.inbox.deliveries.overflow();
                outcome.dropped += 1;
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery_queue;

    #[test]
    fn names() {
        let share = |group, filter| Some(Ok(ShareName { group, filter }));
        let rows: &[(&str, Option<Result<ShareName<'_>, &str>>)] = &[
            ("$share/g/sandbox/x", share("g", "sandbox/x")),
            ("$share/g/#", share("g", "#")),
            ("$share/g/+/x", share("g", "+/x")),
            ("$share/g//x", share("g", "/x")),
            ("sandbox/x", None),
            ("$SYS/x", None),
            ("$sharex/g/x", None),
        ];
        for (name, expected) in rows {
            assert_eq!(&parse(name), expected, "{name}");
        }
        for malformed in [
            "$share/g",
            "$share//x",
            "$share/g/",
            "$share/g+/x",
            "$share/#/x",
        ] {
            assert!(matches!(parse(malformed), Some(Err(_))), "{malformed}");
        }
        assert_eq!(filter_of("$share/g/a/b"), "a/b");
        assert_eq!(filter_of("a/b"), "a/b");
        assert_eq!(takes_part(None, "a/b"), Some("a/b"));
        assert_eq!(takes_part(None, "$share/g/a/b"), None);
        assert_eq!(
            takes_part(Some("$share/g/a/b"), "$share/g/a/b"),
            Some("a/b")
        );
        assert_eq!(takes_part(Some("$share/g/a/b"), "$share/h/a/b"), None);
        assert_eq!(takes_part(Some("$share/g/a/b"), "a/b"), None);
    }

    fn message() -> Forwarded {
        Arc::new(crate::message::Message {
            topic: bytes::Bytes::from_static(b"sandbox/x"),
            payload: bytes::Bytes::new(),
            qos: rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            retain: false,
            publisher: None,
            properties: None,
            expires_at: None,
            via: None,
        })
    }

    fn inbox(capacity: usize) -> (Inbox, delivery_queue::Receiver<Forwarded>) {
        let (deliveries, rx) = delivery_queue::channel(capacity);
        let inbox = Inbox {
            deliveries,
            patient: false,
        };
        (inbox, rx)
    }

    const NAME: &str = "$share/g/sandbox/+";

    #[test]
    fn in_turn_skipping_full_queues_and_away_members() {
        let mut groups = SharedGroups::default();
        let (one, one_rx) = inbox(1);
        let (two, two_rx) = inbox(8);
        let (three, three_rx) = inbox(8);
        groups.add(1, NAME, &one);
        groups.add(2, NAME, &two);
        groups.add(3, NAME, &three);
        let publish = |groups: &SharedGroups| {
            let outcome = groups.publish(9, "sandbox/x", "sandbox/x", &message());
            assert!(outcome.waiting.is_empty() && outcome.dropped == 0);
        };
        let lengths =
            |one: &delivery_queue::Receiver<Forwarded>| (one.len(), two_rx.len(), three_rx.len());
        for _ in 0..3 {
            publish(&groups);
        }
        assert_eq!(lengths(&one_rx), (1, 1, 1), "one each, in turn");
        // One's queue (of 1) is full: its turn passes to the next member with room.
        for _ in 0..3 {
            publish(&groups);
        }
        assert_eq!(lengths(&one_rx), (1, 3, 2));
        let copy = one_rx.try_recv().expect("one's copy");
        assert_eq!(
            copy.via.as_deref(),
            Some(NAME),
            "marked with its subscription"
        );

        // Away members get nothing while a connected one has room.
        groups.park(2);
        groups.park(3);
        for _ in 0..4 {
            publish(&groups);
            assert!(one_rx.try_recv().is_ok());
        }
        assert_eq!(lengths(&one_rx), (0, 3, 2));
        // With the connected member full, an away one takes it, to wait for its return.
        publish(&groups);
        publish(&groups);
        assert_eq!(lengths(&one_rx), (1, 3, 3));

        // Back under a new key: in turn again.
        groups.rekey(3, 13, NAME, &three);
        assert!(one_rx.try_recv().is_ok());
        for _ in 0..3 {
            publish(&groups);
        }
        assert_eq!(
            lengths(&one_rx),
            (1, 3, 5),
            "one and three share, two is away"
        );
    }

    #[test]
    fn only_when_no_member_has_room_is_one_disconnected() {
        let mut groups = SharedGroups::default();
        let (one, _one_rx) = inbox(1);
        let (two, _two_rx) = inbox(1);
        groups.add(1, NAME, &one);
        groups.add(2, NAME, &two);
        groups.park(2);
        for _ in 0..2 {
            let outcome = groups.publish(9, "sandbox/x", "sandbox/x", &message());
            assert_eq!(
                outcome.dropped, 0,
                "the away member takes it when one is full"
            );
        }
        assert!(!one.deliveries.is_overflowed() && !two.deliveries.is_overflowed());
        let outcome = groups.publish(9, "sandbox/x", "sandbox/x", &message());
        assert_eq!(outcome.dropped, 1);
        assert!(
            one.deliveries.is_overflowed() && !two.deliveries.is_overflowed(),
            "the connected member in turn"
        );
    }

    #[test]
    fn groups_go_with_their_last_member() {
        let mut groups = SharedGroups::default();
        let (one, _rx) = inbox(1);
        groups.add(1, NAME, &one);
        groups.add(1, "$share/h/sandbox/x", &one);
        groups.add(2, "$share/h/sandbox/x", &one);
        groups.remove(1, NAME);
        groups.remove(1, "$share/h/sandbox/x");
        assert!(!groups.is_empty());
        groups.remove(2, "$share/h/sandbox/x");
        assert!(groups.is_empty());
    }
}
