//! A client's publishes in session scripts: QoS 0, 1 and 2, topic aliases, resends of QoS 2
//! publishes before their release, and what each must be answered with and forwarded as.

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{self, DisconnectReasonCode, Packet};

use super::model;
use super::script::{self, AliasUse, Step, TOPICS};
use super::wire::encode;
use super::{ALIAS_MAXIMUM, Harness, RECEIVE_MAXIMUM, publishable, qos_of, step_alias};

impl Harness {
    /// A PUBLISH, or a QoS 2 one sent again.
    pub(super) async fn publish(&mut self, client: usize, step: &Step) {
        let me = &self.world.clients[client];
        let (v5, tainted) = (me.v5, me.session.tainted);
        let (mut publish, tag, fresh) = match *step {
            Step::Publish {
                topic,
                qos,
                retain,
                alias,
                pkid,
                expiry,
            } => {
                let qos = qos_of(qos);
                let mut topic = TOPICS[topic].to_owned();
                let mut wire_topic = topic.clone();
                let alias = match alias {
                    _ if !v5 => None,
                    AliasUse::None => None,
                    AliasUse::Set(alias) => Some(alias),
                    AliasUse::Use(alias) => {
                        wire_topic = String::new();
                        if let Some(set) = me.aliases_in.get(&alias) {
                            topic = set.clone();
                        }
                        Some(alias)
                    }
                };
                // MQTT 5 §3.3.2.3.4: alias 0 or above the maximum is 0x94; an empty topic with
                // an alias not set on this connection, a protocol error.
                let closes = match alias {
                    Some(alias) if alias == 0 || alias > ALIAS_MAXIMUM => {
                        Some(DisconnectReasonCode::TopicAliasInvalid)
                    }
                    Some(alias) if wire_topic.is_empty() && !me.aliases_in.contains_key(&alias) => {
                        Some(DisconnectReasonCode::ProtocolError)
                    }
                    _ => None,
                };
                let tag = self.world.publish(client, &topic, qos, retain);
                let properties = (alias.is_some() || expiry).then(|| v5::PublishProperties {
                    topic_alias: alias,
                    message_expiry_interval: expiry.then_some(script::MESSAGE_EXPIRY),
                    ..v5::PublishProperties::default()
                });
                let mut publish =
                    v5::Publish::new(wire_topic, qos, model::payload(tag), properties);
                publish.retain = retain;
                publish.pkid = if qos == QoS::AtMostOnce { 0 } else { pkid };
                if let (Some(code), false) = (closes, tainted) {
                    let received = self
                        .exchange(client, &encode(v5, &Packet::Publish(publish)))
                        .await;
                    self.expect_closed(client, &received, code);
                    return;
                }
                if let Some(AliasUse::Set(alias)) = v5.then_some(step_alias(step)) {
                    self.world.clients[client]
                        .aliases_in
                        .insert(alias, topic.clone());
                }
                (publish, tag, true)
            }
            Step::Resend { pkid } => {
                let Some((tag, topic)) = me.last_qos2.get(&pkid).cloned() else {
                    return;
                };
                // Sent again after its release, it is a new publish (MQTT 5 §4.3.3): its
                // copies are counted afresh, under a tag of its own.
                let tag = if me.session.unreleased.contains(&pkid) {
                    tag
                } else {
                    self.world.publish(client, &topic, QoS::ExactlyOnce, false)
                };
                let mut publish =
                    v5::Publish::new(topic, QoS::ExactlyOnce, model::payload(tag), None);
                publish.pkid = pkid;
                publish.dup = true;
                (publish, tag, false)
            }
            _ => return,
        };
        let topic = self.world.sent[tag].topic.clone();
        let (pkid, qos) = (publish.pkid, publish.qos);
        let held = self.world.clients[client]
            .session
            .unreleased
            .contains(&pkid);
        let accepted = publishable(&topic, publish.retain);
        let before = self.world.copies(tag);
        let live_before: Vec<bool> = self.world.clients.iter().map(|c| c.live).collect();
        if !fresh {
            publish.topic = topic.clone().into();
        }
        let received = self
            .exchange(client, &encode(v5, &Packet::Publish(publish)))
            .await;
        if tainted {
            return;
        }
        if qos == QoS::ExactlyOnce
            && v5
            && !held
            && self.world.clients[client].session.unreleased.len() >= usize::from(RECEIVE_MAXIMUM)
        {
            self.expect_closed(
                client,
                &received,
                DisconnectReasonCode::ReceiveMaximumExceeded,
            );
            return;
        }
        if !accepted && !v5 {
            // MQTT 3.1.1 cannot be told no: it is disconnected (the default policy).
            assert!(
                !self.world.clients[client].live,
                "client {client}: a denied publish kept"
            );
            return;
        }
        let success = match qos {
            QoS::AtMostOnce => {
                assert!(
                    received
                        .iter()
                        .all(|p| !matches!(p, Packet::PubAck(_) | Packet::PubRec(_))),
                    "client {client}: QoS 0 acknowledged"
                );
                self.exactly_once(tag, accepted, &live_before);
                return;
            }
            QoS::AtLeastOnce => {
                let acks: Vec<_> = received
                    .iter()
                    .filter_map(|p| match p {
                        Packet::PubAck(ack) => Some(ack),
                        _ => None,
                    })
                    .collect();
                assert!(
                    matches!(acks.as_slice(), [ack] if ack.pkid == pkid),
                    "client {client}: PUBACK {pkid}: {received:?}"
                );
                acks[0].reason == v5::PubAckReason::Success
            }
            QoS::ExactlyOnce => {
                let recs: Vec<_> = received
                    .iter()
                    .filter_map(|p| match p {
                        Packet::PubRec(rec) => Some(rec),
                        _ => None,
                    })
                    .collect();
                assert!(
                    matches!(recs.as_slice(), [rec] if rec.pkid == pkid),
                    "client {client}: PUBREC {pkid}: {received:?}"
                );
                recs[0].reason == v5::PubRecReason::Success
            }
        };
        assert_eq!(
            success, accepted,
            "client {client}: publish to {topic} acknowledged as {success}"
        );
        if qos == QoS::ExactlyOnce && accepted {
            if held {
                // Already forwarded under this packet id, and not released: nothing again.
                assert_eq!(
                    self.world.copies(tag),
                    before,
                    "client {client}: QoS 2 packet id {pkid} forwarded again before PUBREL"
                );
            }
            let model = &mut self.world.clients[client];
            model.session.unreleased.insert(pkid);
            if fresh {
                model.last_qos2.insert(pkid, (tag, topic));
            }
        }
    }

    /// A QoS 0 publish reaches every live subscriber once, and one live member of each shared
    /// group that has one, at once.
    pub(super) fn exactly_once(&self, tag: usize, accepted: bool, live_before: &[bool]) {
        let world = &self.world;
        let sent = &world.sent[tag];
        // A client that said it takes only small packets may have had its copy dropped.
        let everyone_known = world.clients.iter().all(|c| {
            !c.session.tainted && (c.live || c.session.subs.is_empty()) && !c.small_packets
        });
        if sent.retain || !everyone_known || !world.clients[sent.publisher].live {
            return;
        }
        let live: Vec<usize> = (0..world.clients.len())
            .filter(|i| live_before[*i] && world.clients[*i].live)
            .collect();
        if live.len() != world.clients.iter().filter(|c| c.live).count() {
            return;
        }
        let mut groups = std::collections::BTreeSet::new();
        let mut expected = 0;
        for &index in &live {
            let bound = &sent.bounds[&index];
            expected += usize::from(bound.plain);
            groups.extend(bound.groups.iter().cloned());
        }
        if !accepted {
            expected = 0;
            groups.clear();
        }
        expected += groups.len();
        assert_eq!(
            world.copies(tag),
            expected,
            "m{tag} to {}: {:?} ({:?})",
            sent.topic,
            sent.copies,
            sent.bounds
        );
    }
}
