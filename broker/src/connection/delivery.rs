//! Deliveries to one client: the queue behind its receive maximum, QoS, subscription options
//! and identifiers, the per-message access check, message expiry, topic aliases and its maximum
//! packet size. (The client's answers to them are `acknowledgements`'.)

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::{QoS, matches};
use tokio::time::Instant;

use super::{Ending, Session, Wire};
use crate::delivery_queue::{self, TryRecvError};
use crate::fanout::shared_groups;
use crate::message::{Forwarded, Message};
use crate::session::{self, Outbound};
use crate::topic_alias::Naming;

impl Session<'_> {
    /// Delivers up to `FAIR_SHARE` queued deliveries without waiting, so that a client that
    /// sends without pause still gets what is queued for it (the `select!` in `relay` prefers
    /// reading, and the queue is bounded).
    pub(super) async fn drain_some(
        &mut self,
        wire: &mut Wire,
        forwarded: &delivery_queue::Receiver<Forwarded>,
    ) -> Option<Ending> {
        for _ in 0..FAIR_SHARE {
            match forwarded.try_recv() {
                Ok(message) => {
                    if let Some(ending) = self.forwarded(wire, Some(message)).await {
                        return Some(ending);
                    }
                }
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => {
                    return self.forwarded(wire, None).await;
                }
            }
        }
        None
    }

    /// One delivery from the routing index (`None`: the queue closed, which only happens when
    /// the broker is gone).
    pub(super) async fn forwarded(
        &mut self,
        wire: &mut Wire,
        message: Option<Forwarded>,
    ) -> Option<Ending> {
        let Some(message) = message else {
            return Some(Ending::Shutdown);
        };
        if self.deliver(wire, &message).await.is_err() {
            return Some(Ending::abrupt("write failed"));
        }
        if self.state.pending.len() > self.shared.config.max_pending_per_client {
            tracing::warn!(client_id = %self.client_id, "too many deliveries waiting; disconnecting");
            return Some(Ending::told(
                "too many undelivered messages",
                DisconnectReasonCode::QuotaExceeded,
            ));
        }
        None
    }

    /// Delivers one message to this client, as its subscriptions say.
    pub(super) async fn deliver(
        &mut self,
        wire: &mut Wire,
        message: &Message,
    ) -> std::io::Result<()> {
        let Ok(topic_name) = std::str::from_utf8(&message.topic) else {
            return Ok(());
        };
        // Expired while it waited in this connection's queue (or a parked session's).
        if message.expires_at.is_some_and(|at| at <= Instant::now()) {
            return Ok(());
        }
        // Access may have been revoked while this message was queued, and a wildcard filter may
        // match topics its subscriber may not read: every delivery is checked, not only the
        // subscription.
        if self
            .shared
            .acl
            .check_subscribe(&self.identity, topic_name)
            .is_err()
        {
            return Ok(());
        }
        let own = message
            .publisher
            .as_deref()
            .is_some_and(|publisher| publisher == self.client_id);
        // The options of every matching subscription decide together (MQTT 5 §3.3.4): the
        // highest granted QoS, no-local if the client published it, retain-as-published if any
        // subscription asks for it, and the one delivery carries the identifiers of them all.
        let mut granted: Option<QoS> = None;
        let mut retain_as_published = false;
        let mut identifiers = Vec::new();
        for (filter, options) in self.state.subscriptions.iter() {
            // A copy routed through a shared subscription is that subscription's alone.
            let Some(filter) = shared_groups::takes_part(message.via.as_deref(), filter) else {
                continue;
            };
            if !matches(topic_name, filter) || (options.no_local && own) {
                continue;
            }
            granted = Some(granted.map_or(options.qos, |qos| max_qos(qos, options.qos)));
            retain_as_published |= options.retain_as_published;
            identifiers.extend(options.identifier);
        }
        let Some(granted) = granted else {
            return Ok(());
        };
        let mut properties = message.properties.clone();
        if !identifiers.is_empty() {
            // Their order means nothing (§3.3.4); sorted, a delivery reads the same every time.
            identifiers.sort_unstable();
            identifiers.dedup();
            properties
                .get_or_insert_with(PublishProperties::default)
                .subscription_identifiers = identifiers;
        }
        let outbound = Outbound {
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos: min_qos(message.qos, granted),
            retain: retain_as_published && message.retain,
            properties,
            expires_at: message.expires_at,
        };
        self.queue(wire, outbound).await
    }

    /// Sends `message` now, or queues it behind the client's receive maximum; drops it if its
    /// message expiry interval has run out (MQTT 5 §3.3.2.3.3: its delivery has not started).
    pub(super) async fn queue(
        &mut self,
        wire: &mut Wire,
        message: Outbound,
    ) -> std::io::Result<()> {
        if message.expired(Instant::now()) {
            return Ok(());
        }
        if message.qos == QoS::AtMostOnce {
            return self.write_publish(wire, &message, 0, false).await;
        }
        if self.state.inflight.len() >= self.limits.receive_maximum {
            self.state.pending.push_back(message);
            return Ok(());
        }
        let pkid = self.state.next_pkid();
        self.state.inflight.published(pkid, message.clone());
        self.write_publish(wire, &message, pkid, false).await
    }

    /// Sends queued deliveries while the client's receive maximum has room.
    pub(super) async fn release_pending(&mut self, wire: &mut Wire) -> std::io::Result<()> {
        while self.state.inflight.len() < self.limits.receive_maximum {
            let Some(message) = self.state.pending.pop_front() else {
                break;
            };
            self.queue(wire, message).await?;
        }
        Ok(())
    }

    /// Writes one PUBLISH: with what is left of its message expiry interval, and its topic
    /// named through this connection's aliases.
    pub(super) async fn write_publish(
        &mut self,
        wire: &mut Wire,
        message: &Outbound,
        pkid: u16,
        dup: bool,
    ) -> std::io::Result<()> {
        let mut properties = message.properties.clone();
        if let Some(at) = message.expires_at {
            properties
                .get_or_insert_with(PublishProperties::default)
                .message_expiry_interval = Some(session::remaining_expiry(at, Instant::now()));
        }
        let naming = self.aliases.outgoing.naming(&message.topic);
        let topic = match naming {
            Naming::Known(_) => Bytes::new(),
            Naming::Plain | Naming::Assign(_) => message.topic.clone(),
        };
        if let Naming::Known(alias) | Naming::Assign(alias) = naming {
            properties
                .get_or_insert_with(PublishProperties::default)
                .topic_alias = Some(alias);
        }
        let publish = Publish {
            dup,
            qos: message.qos,
            retain: message.retain,
            topic,
            pkid,
            payload: message.payload.clone(),
            properties,
        };
        let packet = Packet::Publish(publish);
        if packet.size() > self.limits.max_packet_size {
            // MQTT 5 §3.1.2.11.4: a message the client cannot accept is discarded, as if sent.
            tracing::debug!(client_id = %self.client_id, "delivery larger than the client's maximum packet size dropped");
            if message.qos != QoS::AtMostOnce {
                self.state.inflight.discard(pkid);
            }
            return Ok(());
        }
        wire.send(&packet).await?;
        self.aliases.outgoing.sent(&message.topic, &naming);
        Ok(())
    }
}

/// Deliveries handled between two reads from the client, at most (see `Session::drain_some`).
/// Not configuration: it only interleaves a connection's reading and writing fairly; how much
/// may wait for a client is `mqtt.max_pending_per_client`.
pub(super) const FAIR_SHARE: usize = 64;

pub(super) fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

pub(super) fn max_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn qos_order() {
        assert_eq!(
            min_qos(QoS::ExactlyOnce, QoS::AtLeastOnce),
            QoS::AtLeastOnce
        );
        assert_eq!(min_qos(QoS::AtMostOnce, QoS::AtLeastOnce), QoS::AtMostOnce);
        assert_eq!(max_qos(QoS::AtMostOnce, QoS::AtLeastOnce), QoS::AtLeastOnce);
    }
}
