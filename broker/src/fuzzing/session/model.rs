//! What the clients of a session script know, kept from what they sent and what the gateway
//! answered, and the checks every packet the gateway sends must pass against it. The model
//! never decides what the gateway should do from its own copy of the rules where the gateway's
//! answer says it (a CONNACK's session present flag, a PUBREC's reason code): it holds the
//! gateway to what it said before.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::{QoS, matches};

use crate::fanout::shared_groups;

/// Where one delivery to a client stands, as the client sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outstanding {
    /// A QoS 1 or 2 PUBLISH not answered yet.
    Published(QoS),
    /// QoS 2: the client sent PUBREC and got PUBREL; PUBCOMP is the client's to send.
    Released,
}

#[derive(Clone, Debug)]
pub(crate) struct Sub {
    pub id: Option<usize>,
    pub no_local: bool,
}

/// What outlives a connection when the gateway says the session is present.
#[derive(Debug, Default)]
pub(crate) struct SessionModel {
    /// QoS 2 packet ids the client published and the gateway accepted (PUBREC below 0x80),
    /// not yet released with PUBREL.
    pub unreleased: BTreeSet<u16>,
    /// Deliveries to the client with a packet id, not answered yet, in the order first sent.
    pub outstanding: Vec<(u16, Outstanding)>,
    pub subs: BTreeMap<String, Sub>,
    /// Raw bytes were sent in it: what the gateway holds may differ from this model, which is
    /// then no longer held against it (until a new session starts).
    pub tainted: bool,
}

#[derive(Debug, Default)]
pub(crate) struct ClientModel {
    pub v5: bool,
    /// A CONNACK accepted the connection, and it has not closed since.
    pub live: bool,
    /// The receive maximum and topic alias maximum this connection announced.
    pub receive_maximum: usize,
    pub alias_maximum: u16,
    /// Unreleased QoS 2 publishes the session had when this connection began: a 3.1.1
    /// connection has no cap on them, and one over MQTT 5 keeps what it resumed.
    pub unreleased_at_connect: usize,
    /// It announced a small maximum packet size: some deliveries are dropped for it.
    pub small_packets: bool,
    /// Right after a CONNACK that resumed the session: the deliveries in flight that are still
    /// to be sent again (MQTT §4.4), before anything else.
    pub resending: Option<Vec<(u16, Outstanding)>>,
    pub session: SessionModel,
    /// Aliases this connection set towards the gateway.
    pub aliases_in: HashMap<u16, String>,
    /// Aliases the gateway set towards this connection.
    pub aliases_out: HashMap<u16, bytes::Bytes>,
    /// The last QoS 2 publish sent under each packet id: (tag, topic), for a resend.
    pub last_qos2: HashMap<u16, (usize, String)>,
}

/// A publish a client made, by its tag (its payload is `m{tag}`).
#[derive(Debug)]
pub(crate) struct Sent {
    pub publisher: usize,
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
    /// Copies (not DUP) each client received.
    pub copies: BTreeMap<usize, usize>,
    /// Copies through each shared subscription (by its name), where a subscription
    /// identifier says which.
    pub by_group: BTreeMap<String, usize>,
    /// The most copies each client may receive, and the identifiers its copy for its ordinary
    /// subscriptions carries: as the subscriptions stood when it was published.
    pub bounds: BTreeMap<usize, Bound>,
}

#[derive(Debug, Default)]
pub(crate) struct Bound {
    pub plain: bool,
    pub plain_ids: Vec<usize>,
    pub groups: Vec<String>,
}

#[derive(Debug, Default)]
pub(crate) struct World {
    pub clients: Vec<ClientModel>,
    pub sent: Vec<Sent>,
    /// The next fresh subscription identifier.
    pub next_id: usize,
    /// The gateway's topic alias maximum.
    pub alias_maximum: u16,
}

/// A publish's payload names its tag.
pub(crate) fn payload(tag: usize) -> String {
    format!("m{tag}")
}

fn tag_of(payload: &[u8]) -> Option<usize> {
    std::str::from_utf8(payload.strip_prefix(b"m")?)
        .ok()?
        .parse()
        .ok()
}

impl World {
    pub fn new(clients: usize, alias_maximum: u16) -> Self {
        Self {
            clients: (0..clients).map(|_| ClientModel::default()).collect(),
            next_id: 1,
            alias_maximum,
            ..Self::default()
        }
    }

    /// Records a publish by `publisher` about to be sent, with what each client may receive of
    /// it; returns its tag.
    pub fn publish(&mut self, publisher: usize, topic: &str, qos: QoS, retain: bool) -> usize {
        let mut bounds = BTreeMap::new();
        for (index, client) in self.clients.iter().enumerate() {
            let mut bound = Bound::default();
            for (name, sub) in &client.session.subs {
                match shared_groups::parse(name) {
                    Some(Ok(share)) => {
                        if matches(topic, share.filter) && !crate::acl::in_protocol(topic) {
                            bound.groups.push(name.clone());
                        }
                    }
                    Some(Err(_)) => {}
                    None => {
                        if matches(topic, name) && !(sub.no_local && index == publisher) {
                            bound.plain = true;
                            bound.plain_ids.extend(sub.id);
                        }
                    }
                }
            }
            bound.plain_ids.sort_unstable();
            bound.plain_ids.dedup();
            bounds.insert(index, bound);
        }
        self.sent.push(Sent {
            publisher,
            topic: topic.to_owned(),
            qos,
            retain,
            copies: BTreeMap::new(),
            by_group: BTreeMap::new(),
            bounds,
        });
        self.sent.len() - 1
    }

    /// Copies of `tag` delivered so far, to anyone.
    pub fn copies(&self, tag: usize) -> usize {
        self.sent[tag].copies.values().sum()
    }

    /// Checks one packet the gateway sent to `client` and brings the model up to date with it.
    pub fn observe(&mut self, client: usize, packet: &Packet) {
        match packet {
            Packet::ConnAck(ack) => {
                let model = &mut self.clients[client];
                if ack.code == rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success {
                    model.live = true;
                    if !ack.session_present {
                        model.session = SessionModel::default();
                    }
                    model.unreleased_at_connect = model.session.unreleased.len();
                    model.resending = (ack.session_present && !model.session.tainted)
                        .then(|| model.session.outstanding.clone());
                }
                return;
            }
            Packet::Publish(publish) if publish.dup => {
                if let Some(resending) = &mut self.clients[client].resending {
                    resending.retain(|(pkid, _)| *pkid != publish.pkid);
                }
            }
            Packet::PubRel(rel) => {
                if let Some(resending) = &mut self.clients[client].resending {
                    resending.retain(|(pkid, stage)| {
                        *pkid != rel.pkid || *stage != Outstanding::Released
                    });
                    return;
                }
            }
            _ => self.resent(client),
        }
        match packet {
            Packet::Publish(publish) => self.delivered(client, publish),
            Packet::Disconnect(_) => self.clients[client].live = false,
            // Answers to the client's own packets are checked by the step that sent them.
            _ => {}
        }
    }

    /// Ends the resending that follows a resumed session's CONNACK: whatever was in flight and
    /// not sent again must be a PUBLISH now too large for the client, dropped as if its flow had
    /// ended (MQTT 5 §3.1.2.11.4).
    pub fn resent(&mut self, client: usize) {
        let model = &mut self.clients[client];
        let Some(left) = model.resending.take() else {
            return;
        };
        for (pkid, stage) in left {
            assert!(
                matches!(stage, Outstanding::Published(_)) && model.small_packets,
                "client {client}: {pkid} ({stage:?}) not sent again on resume"
            );
            model.session.outstanding.retain(|(at, _)| *at != pkid);
        }
    }

    fn delivered(&mut self, client: usize, publish: &Publish) {
        let alias_limit = self.alias_maximum;
        let model = &mut self.clients[client];
        assert!(model.live, "client {client}: a PUBLISH before CONNACK");
        // The topic, through this connection's aliases (MQTT 5 §3.3.2.3.4).
        let alias = publish.properties.as_ref().and_then(|p| p.topic_alias);
        let topic = match alias {
            Some(alias) => {
                assert!(
                    model.v5 && alias >= 1 && alias <= model.alias_maximum.min(alias_limit),
                    "client {client}: alias {alias} beyond the {} it allows",
                    model.alias_maximum
                );
                if publish.topic.is_empty() {
                    model.aliases_out.get(&alias).cloned().unwrap_or_else(|| {
                        panic!("client {client}: alias {alias} used before it was set")
                    })
                } else {
                    model.aliases_out.insert(alias, publish.topic.clone());
                    publish.topic.clone()
                }
            }
            None => {
                assert!(!publish.topic.is_empty(), "client {client}: no topic");
                publish.topic.clone()
            }
        };
        let tainted = model.session.tainted;
        if publish.qos != QoS::AtMostOnce && !tainted {
            let outstanding = &mut model.session.outstanding;
            let at = outstanding.iter().position(|(id, _)| *id == publish.pkid);
            if publish.dup {
                assert!(
                    matches!(
                        at.map(|at| outstanding[at].1),
                        Some(Outstanding::Published(_))
                    ),
                    "client {client}: DUP PUBLISH {} that was not in flight",
                    publish.pkid
                );
            } else {
                assert!(
                    at.is_none(),
                    "client {client}: packet id {} reused while in flight",
                    publish.pkid
                );
                assert!(
                    outstanding.len() < model.receive_maximum,
                    "client {client}: more than its receive maximum of {} in flight",
                    model.receive_maximum
                );
                outstanding.push((publish.pkid, Outstanding::Published(publish.qos)));
            }
        }
        let Some(tag) = tag_of(&publish.payload) else {
            return;
        };
        let sent = &mut self.sent[tag];
        assert_eq!(
            topic,
            sent.topic.as_bytes(),
            "client {client}: m{tag} under another topic"
        );
        assert!(
            (publish.qos as u8) <= (sent.qos as u8),
            "client {client}: m{tag} above the QoS it was published with"
        );
        // A retained message is sent again to every new subscription; a DUP is a resend.
        if sent.retain || publish.dup || tainted {
            return;
        }
        let copies = sent.copies.entry(client).or_default();
        *copies += 1;
        let bound = &sent.bounds[&client];
        assert!(
            *copies <= usize::from(bound.plain) + bound.groups.len(),
            "client {client}: m{tag} {copies} times ({bound:?})"
        );
        if !model.v5 {
            return;
        }
        let ids = publish
            .properties
            .as_ref()
            .map(|p| p.subscription_identifiers.clone())
            .unwrap_or_default();
        // A copy through a shared subscription carries its identifier alone; the copy for the
        // ordinary subscriptions carries all of theirs.
        let id_of = |name: &str| model.session.subs.get(name).and_then(|sub| sub.id);
        let shared: Vec<&String> = bound
            .groups
            .iter()
            .filter(|name| id_of(name).is_some_and(|id| ids.contains(&id)))
            .collect();
        match shared.as_slice() {
            // A copy through a shared subscription without an identifier carries none.
            [] if ids.is_empty() && bound.groups.iter().any(|name| id_of(name).is_none()) => {}
            [] => assert_eq!(
                ids, bound.plain_ids,
                "client {client}: m{tag}'s identifiers"
            ),
            [name] => {
                assert_eq!(
                    ids.len(),
                    1,
                    "client {client}: m{tag} through {name}: {ids:?}"
                );
                let through = sent.by_group.entry((*name).clone()).or_default();
                *through += 1;
                assert_eq!(*through, 1, "m{tag} went to {name} twice");
            }
            more => panic!("client {client}: m{tag} through {more:?} at once"),
        }
    }
}
