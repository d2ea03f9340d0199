//! Retained messages (MQTT 5 §3.3.1.3), which the gateway keeps itself so that their QoS,
//! properties (user properties in their order) and retain handling survive.
//!
//! Under `cc/` only the service and the gateway retain anything (the lock state, the latest
//! presence; `acl::check_retain` refuses clients), and what they keep there goes with its
//! session. Everywhere else any client allowed to publish on a topic may retain a message
//! there, so those are bounded (`[mqtt.retained]`): a message larger than `max_message_bytes`,
//! or one that would take the store outside `cc/` past `max_messages` or `max_bytes`, is
//! refused (MQTT 5: PUBACK/PUBREC 0x97) and nothing of it is stored or delivered. Replacing or
//! clearing a topic's message is always possible within the bounds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rumqttc::v5::mqttbytes::v5::PublishProperties;
use serde::{Deserialize, Serialize};

use crate::session::Outbound;

/// The `[mqtt.retained]` section: how much clients may keep as retained messages outside `cc/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetainedConfig {
    /// Retained messages kept outside `cc/` at once (one per topic).
    pub max_messages: usize,
    /// Bytes those messages take together (topics, payloads and properties).
    pub max_bytes: usize,
    /// Bytes one retained message may take (its topic, payload and properties).
    pub max_message_bytes: usize,
}

impl Default for RetainedConfig {
    /// Room for a status topic per device of a large site, far below what would load the
    /// server's memory.
    fn default() -> Self {
        Self {
            max_messages: 10_000,
            max_bytes: 16 * 1024 * 1024,
            max_message_bytes: 64 * 1024,
        }
    }
}

impl RetainedConfig {
    /// Checks what serde cannot; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_message_bytes > self.max_bytes {
            return Err((
                "mqtt.retained.max_message_bytes",
                "must not exceed mqtt.retained.max_bytes".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Why a retained message was not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RetainRefusal {
    #[error("the retained message is larger than mqtt.retained.max_message_bytes")]
    Oversized,
    #[error("mqtt.retained.max_messages retained messages are kept already")]
    CountReached,
    #[error("the retained messages would take more than mqtt.retained.max_bytes")]
    BytesReached,
}

/// Retained messages by topic.
pub(crate) struct RetainedStore {
    limits: RetainedConfig,
    inner: Mutex<Inner>,
    refused: AtomicU64,
}

#[derive(Default)]
struct Inner {
    messages: HashMap<String, Outbound>,
    /// How many of `messages` lie outside `cc/`, and their bytes (see [`size`]).
    bounded: usize,
    bounded_bytes: usize,
}

impl RetainedStore {
    pub fn new(limits: RetainedConfig) -> Self {
        Self {
            limits,
            inner: Mutex::default(),
            refused: AtomicU64::new(0),
        }
    }

    /// Records a client's retained publish (or will): an empty payload clears the topic, any
    /// other replaces its message if it fits the bounds (see the module's header).
    pub fn store(&self, topic: &str, message: Outbound) -> Result<(), RetainRefusal> {
        let mut inner = self.lock();
        if message.payload.is_empty() {
            inner.take(topic);
            return Ok(());
        }
        if !crate::acl::in_protocol(topic) {
            let replaced = inner.messages.get(topic).map(|old| size(topic, old));
            let size = size(topic, &message);
            let refusal = if size > self.limits.max_message_bytes {
                Some(RetainRefusal::Oversized)
            } else if replaced.is_none() && inner.bounded >= self.limits.max_messages {
                Some(RetainRefusal::CountReached)
            } else if inner.bounded_bytes - replaced.unwrap_or(0) + size > self.limits.max_bytes {
                Some(RetainRefusal::BytesReached)
            } else {
                None
            };
            if let Some(refusal) = refusal {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(refusal);
            }
        }
        inner.put(topic, message);
        Ok(())
    }

    /// Records what the gateway or the service keeps under `cc/` (never refused: it goes with
    /// its session); an empty payload clears the topic.
    pub fn update(&self, topic: &str, message: Outbound) {
        debug_assert!(crate::acl::in_protocol(topic));
        let mut inner = self.lock();
        if message.payload.is_empty() {
            inner.take(topic);
        } else {
            inner.put(topic, message);
        }
    }

    /// Removes the retained message on `topic`, if any.
    pub fn remove(&self, topic: &str) {
        self.lock().take(topic);
    }

    /// Removes every retained message whose topic starts with `prefix` (under `cc/`).
    pub fn remove_under(&self, prefix: &str) {
        debug_assert!(crate::acl::in_protocol(prefix));
        self.lock()
            .messages
            .retain(|topic, _| !topic.starts_with(prefix));
    }

    /// The retained messages whose topics `filter` matches.
    pub fn matching(&self, filter: &str) -> Vec<Outbound> {
        self.lock()
            .messages
            .iter()
            .filter(|(topic, _)| rumqttc::v5::mqttbytes::matches(topic, filter))
            .map(|(_, message)| message.clone())
            .collect()
    }

    /// Retained publishes refused since start for not fitting the bounds.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each operation leaves the map and its counts consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn put(&mut self, topic: &str, message: Outbound) {
        let bounded = !crate::acl::in_protocol(topic);
        if bounded {
            self.bounded_bytes += size(topic, &message);
        }
        match self.messages.insert(topic.to_owned(), message) {
            Some(old) if bounded => self.bounded_bytes -= size(topic, &old),
            Some(_) => {}
            None if bounded => self.bounded += 1,
            None => {}
        }
    }

    fn take(&mut self, topic: &str) {
        if let Some(old) = self.messages.remove(topic)
            && !crate::acl::in_protocol(topic)
        {
            self.bounded -= 1;
            self.bounded_bytes -= size(topic, &old);
        }
    }
}

/// What a retained message is counted as: its topic, payload and properties' bytes, roughly
/// what it takes in memory beyond a fixed overhead.
fn size(topic: &str, message: &Outbound) -> usize {
    topic.len() + message.payload.len() + message.properties.as_ref().map_or(0, properties_size)
}

fn properties_size(properties: &PublishProperties) -> usize {
    let text = |value: &Option<String>| value.as_ref().map_or(0, String::len);
    properties
        .user_properties
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum::<usize>()
        + text(&properties.response_topic)
        + text(&properties.content_type)
        + properties
            .correlation_data
            .as_ref()
            .map_or(0, |data| data.len())
        + properties.subscription_identifiers.len() * 4
        + 16
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rumqttc::v5::mqttbytes::QoS;

    use super::*;

    fn message(payload: &'static [u8]) -> Outbound {
        Outbound {
            topic: Bytes::from_static(b"a/b"),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: None,
            expires_at: None,
        }
    }

    #[test]
    fn retained_messages_are_replaced_and_cleared() {
        let store = RetainedStore::new(RetainedConfig::default());
        store.store("a/b", message(b"one")).unwrap();
        store.store("a/b", message(b"two")).unwrap();
        assert_eq!(
            store
                .matching("a/+")
                .iter()
                .map(|m| m.payload.clone())
                .collect::<Vec<_>>(),
            vec![Bytes::from_static(b"two")]
        );
        store.store("a/b", message(b"")).unwrap();
        assert!(store.matching("#").is_empty());
        assert_eq!(store.lock().bounded_bytes, 0);
    }

    #[test]
    fn bounds_apply_outside_cc_and_a_topic_can_always_be_replaced_or_cleared() {
        // At most 3 messages, 20 bytes in all, 10 bytes each (a message of 5 bytes on `t/n` is 8).
        let store = RetainedStore::new(RetainedConfig {
            max_messages: 3,
            max_bytes: 20,
            max_message_bytes: 10,
        });
        let rows: &[(&str, &'static [u8], Result<(), RetainRefusal>)] = &[
            ("t/1", b"12345", Ok(())),
            ("t/2", b"12345", Ok(())),
            ("t/3", b"12345", Err(RetainRefusal::BytesReached)),
            ("t/3", b"12345678", Err(RetainRefusal::Oversized)),
            ("t/3", b"1", Ok(())),
            ("t/4", b"1", Err(RetainRefusal::CountReached)),
            ("t/2", b"1234", Ok(())),
            ("t/1", b"1234567", Err(RetainRefusal::BytesReached)),
            ("t/1", b"", Ok(())),
            ("t/4", b"1", Ok(())),
            // The protocol's own retained state is the service's, and goes with its session.
            ("cc/v1/sessions/s/lock", b"1234567", Ok(())),
        ];
        for (topic, payload, expected) in rows {
            assert_eq!(
                &store.store(topic, message(payload)),
                expected,
                "{topic} {payload:?}"
            );
        }
        assert_eq!(store.refused(), 4);
        let inner = store.lock();
        assert_eq!((inner.bounded, inner.bounded_bytes), (3, 7 + 4 + 4));
    }
}
