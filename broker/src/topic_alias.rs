//! MQTT 5 topic aliases (§3.3.2.3.4), which live as long as one network connection, in both
//! directions.
//!
//! Client to server ([`Incoming`]): the gateway announces a maximum in CONNACK
//! (`mqtt.max_topic_aliases`) and resolves each alias to the topic the client last sent with it,
//! before anything else looks at the publish, as Mosquitto does; the alias itself is not passed
//! on. Server to client ([`Outgoing`]): when the client's CONNECT allows aliases, the gateway
//! gives each topic it delivers an alias, up to the smaller of the client's maximum and its own,
//! sending the topic with the alias the first time and an empty topic after; when every alias
//! is taken, the one used least recently is given to the new topic. MQTT 3.1.1 has no aliases.
//!
//! Topics are copied into the tables: a topic sliced from a received packet would keep the whole
//! packet's buffer alive for as long as the alias lasts.

use bytes::Bytes;

/// One connection's aliases, both ways.
#[derive(Debug, Default)]
pub(crate) struct Aliases {
    pub incoming: Incoming,
    pub outgoing: Outgoing,
}

/// Why a client's alias cannot be used (MQTT 5 reason codes of the DISCONNECT that follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AliasError {
    /// 0x94: alias 0, or above the maximum the server announced.
    Invalid,
    /// 0x82: an empty topic with an alias the client has not set on this connection.
    Unknown,
}

/// The aliases a client has set on this connection.
#[derive(Debug, Default)]
pub(crate) struct Incoming {
    max: u16,
    /// By alias - 1, as far as the highest alias set.
    topics: Vec<Option<Bytes>>,
}

impl Incoming {
    /// Accepts aliases 1..=`max` (0: none, as CONNACK then says).
    pub fn new(max: u16) -> Self {
        Self {
            max,
            topics: Vec::new(),
        }
    }

    /// The topic a PUBLISH names: `topic` itself, which (when not empty) also sets `alias`, or
    /// the topic `alias` was last set to when `topic` is empty.
    pub fn resolve(&mut self, topic: Bytes, alias: u16) -> Result<Bytes, AliasError> {
        if alias == 0 || alias > self.max {
            return Err(AliasError::Invalid);
        }
        let index = usize::from(alias) - 1;
        if topic.is_empty() {
            return self
                .topics
                .get(index)
                .cloned()
                .flatten()
                .ok_or(AliasError::Unknown);
        }
        if self.topics.len() <= index {
            self.topics.resize(index + 1, None);
        }
        self.topics[index] = Some(Bytes::copy_from_slice(&topic));
        Ok(topic)
    }
}

/// How a delivery names its topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Naming {
    /// In full, without an alias.
    Plain,
    /// By `alias` alone (an empty topic): the client already maps it to this topic.
    Known(u16),
    /// In full, setting `alias` for later deliveries (replacing whatever it named before).
    Assign(u16),
}

/// The aliases the gateway has set towards a client on this connection. Looked through one by
/// one: there are few (`mqtt.max_topic_aliases`), and a table of them costs a connection that
/// uses none nothing but its empty `Vec`.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    max: u16,
    /// By alias - 1: its topic and when it was last used.
    slots: Vec<(Bytes, u64)>,
    clock: u64,
}

impl Outgoing {
    /// Uses aliases 1..=`max` (0: none).
    pub fn new(max: u16) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// How to name `topic` in the next delivery. Nothing changes until [`Outgoing::sent`]: a
    /// delivery that is not written (too large for the client) must not set an alias.
    pub fn naming(&self, topic: &[u8]) -> Naming {
        if self.max == 0 {
            return Naming::Plain;
        }
        if let Some(index) = self.slots.iter().position(|(held, _)| held == topic) {
            return Naming::Known(alias_of(index));
        }
        if self.slots.len() < usize::from(self.max) {
            return Naming::Assign(alias_of(self.slots.len()));
        }
        let least_recent = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, used))| *used)
            .map_or(0, |(index, _)| index);
        Naming::Assign(alias_of(least_recent))
    }

    /// Records that a delivery named `topic` as `naming` said.
    pub fn sent(&mut self, topic: &[u8], naming: &Naming) {
        self.clock += 1;
        let (index, fresh) = match *naming {
            Naming::Plain => return,
            Naming::Known(alias) => (usize::from(alias) - 1, false),
            Naming::Assign(alias) => (usize::from(alias) - 1, true),
        };
        if fresh && index == self.slots.len() {
            self.slots.push((Bytes::copy_from_slice(topic), self.clock));
        } else if let Some(slot) = self.slots.get_mut(index) {
            if fresh {
                slot.0 = Bytes::copy_from_slice(topic);
            }
            slot.1 = self.clock;
        }
    }
}

/// The alias of the slot at `index`: at most `max` slots, and `max` is a u16.
fn alias_of(index: usize) -> u16 {
    u16::try_from(index + 1).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_sets_an_alias_then_uses_it_within_the_maximum() {
        let mut aliases = Incoming::new(2);
        let topic = |t: &'static str| Bytes::from_static(t.as_bytes());
        // (topic sent, alias, what it resolves to)
        let rows = [
            ("", 1, Err(AliasError::Unknown)),
            ("a/b", 1, Ok(topic("a/b"))),
            ("", 1, Ok(topic("a/b"))),
            ("c", 1, Ok(topic("c"))),
            ("", 1, Ok(topic("c"))),
            ("a/b", 0, Err(AliasError::Invalid)),
            ("a/b", 3, Err(AliasError::Invalid)),
            ("", 2, Err(AliasError::Unknown)),
        ];
        for (sent, alias, expected) in rows {
            assert_eq!(
                aliases.resolve(topic(sent), alias),
                expected,
                "{sent:?} {alias}"
            );
        }
        assert!(
            Incoming::new(0).resolve(topic("a"), 1).is_err(),
            "none allowed"
        );
    }

    #[test]
    fn deliveries_assign_aliases_then_reuse_the_least_recently_used() {
        let mut aliases = Outgoing::new(2);
        let mut deliver = |topic: &str| {
            let naming = aliases.naming(topic.as_bytes());
            aliases.sent(topic.as_bytes(), &naming);
            naming
        };
        let rows = [
            ("a", Naming::Assign(1)),
            ("a", Naming::Known(1)),
            ("b", Naming::Assign(2)),
            ("a", Naming::Known(1)),
            // Full: b was used least recently.
            ("c", Naming::Assign(2)),
            ("b", Naming::Assign(1)),
            ("c", Naming::Known(2)),
        ];
        for (topic, expected) in rows {
            assert_eq!(deliver(topic), expected, "{topic}");
        }
        assert_eq!(Outgoing::new(0).naming(b"a"), Naming::Plain);
    }

    #[test]
    fn an_alias_is_not_set_by_a_delivery_never_sent() {
        let aliases = Outgoing::new(4);
        assert_eq!(aliases.naming(b"a"), Naming::Assign(1));
        assert_eq!(aliases.naming(b"a"), Naming::Assign(1), "still unknown");
    }
}
