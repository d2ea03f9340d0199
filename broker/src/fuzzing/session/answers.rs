//! The rest of what a client sends in session scripts: its answers to deliveries (PUBACK,
//! PUBREC, PUBCOMP), PUBREL, SUBSCRIBE and UNSUBSCRIBE, PINGREQ and DISCONNECT, and the answer
//! each must get.

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{self, DisconnectReasonCode, Packet};

use super::model::{Outstanding, Sub};
use super::script::{FILTERS, IdUse, Step};
use super::wire::encode;
use super::{Harness, qos_of};

impl Harness {
    /// Every other packet a client sends to a live connection, and the answer it must get.
    pub(super) async fn answer(&mut self, client: usize, step: &Step) {
        let model = &self.world.clients[client];
        let v5 = model.v5;
        let tainted = model.session.tainted;
        let conn = self.conns[client].as_mut().expect("live");
        let pkid = conn.next_pkid;
        conn.next_pkid = conn.next_pkid % 100 + 1;
        let pick = |nth: u8| {
            let outstanding = &model.session.outstanding;
            (!outstanding.is_empty()).then(|| outstanding[usize::from(nth) % outstanding.len()])
        };
        match *step {
            Step::PubRel { pkid } => {
                let held = model.session.unreleased.contains(&pkid);
                let rel = Packet::PubRel(v5::PubRel::new(pkid, None));
                let received = self.exchange(client, &encode(v5, &rel)).await;
                if tainted {
                    return;
                }
                let comp = received.iter().find_map(|p| match p {
                    Packet::PubComp(comp) if comp.pkid == pkid => Some(comp),
                    _ => None,
                });
                let comp = comp.unwrap_or_else(|| panic!("client {client}: no PUBCOMP {pkid}"));
                if v5 {
                    let expected = if held {
                        v5::PubCompReason::Success
                    } else {
                        v5::PubCompReason::PacketIdentifierNotFound
                    };
                    assert_eq!(comp.reason, expected, "client {client}: PUBREL {pkid}");
                }
                self.world.clients[client].session.unreleased.remove(&pkid);
            }
            Step::PubAck { nth } => {
                let picked = pick(nth);
                let id = picked.map_or(u16::from(nth) + 1, |(id, _)| id);
                // The flow ends as the client sends its answer: what the room it makes lets
                // through comes after.
                if matches!(picked, Some((_, Outstanding::Published(QoS::AtLeastOnce)))) {
                    self.forget(client, id);
                }
                self.exchange(
                    client,
                    &encode(v5, &Packet::PubAck(v5::PubAck::new(id, None))),
                )
                .await;
            }
            Step::PubRec { nth, accepted } => {
                let accepted = accepted || !v5;
                let picked = pick(nth);
                let id = picked.map_or(u16::from(nth) + 1, |(id, _)| id);
                let mut rec = v5::PubRec::new(id, None);
                if !accepted {
                    rec.reason = v5::PubRecReason::UnspecifiedError;
                }
                let known = matches!(
                    picked,
                    Some((
                        _,
                        Outstanding::Published(QoS::ExactlyOnce) | Outstanding::Released
                    ))
                );
                if known && accepted {
                    let outstanding = &mut self.world.clients[client].session.outstanding;
                    if let Some(entry) = outstanding.iter_mut().find(|(at, _)| *at == id) {
                        entry.1 = Outstanding::Released;
                    }
                } else if known {
                    self.forget(client, id);
                }
                let received = self
                    .exchange(client, &encode(v5, &Packet::PubRec(rec)))
                    .await;
                if tainted {
                    return;
                }
                let rel = received.iter().find_map(|p| match p {
                    Packet::PubRel(rel) if rel.pkid == id => Some(rel),
                    _ => None,
                });
                match (known, accepted) {
                    (true, true) => {
                        let rel = rel.unwrap_or_else(|| panic!("client {client}: no PUBREL {id}"));
                        assert_eq!(rel.reason, v5::PubRelReason::Success);
                    }
                    (true, false) => {
                        assert!(
                            rel.is_none(),
                            "client {client}: a refused delivery released"
                        );
                    }
                    (false, _) => {
                        let rel = rel.unwrap_or_else(|| panic!("client {client}: no PUBREL {id}"));
                        if v5 {
                            assert_eq!(rel.reason, v5::PubRelReason::PacketIdentifierNotFound);
                        }
                    }
                }
            }
            Step::PubComp { nth } => {
                let picked = pick(nth);
                let id = picked.map_or(u16::from(nth) + 1, |(id, _)| id);
                if matches!(picked, Some((_, Outstanding::Released))) {
                    self.forget(client, id);
                }
                self.exchange(
                    client,
                    &encode(v5, &Packet::PubComp(v5::PubComp::new(id, None))),
                )
                .await;
            }
            Step::Subscribe { .. } => self.subscribe(client, step, pkid).await,
            Step::Unsubscribe { filter } => {
                let name = FILTERS[filter];
                let held = model.session.subs.contains_key(name);
                let unsubscribe = v5::Unsubscribe::new(name, None);
                let mut unsubscribe_packet = Packet::Unsubscribe(unsubscribe);
                if let Packet::Unsubscribe(u) = &mut unsubscribe_packet {
                    u.pkid = pkid;
                }
                let received = self
                    .exchange(client, &encode(v5, &unsubscribe_packet))
                    .await;
                if tainted {
                    return;
                }
                let ack = received.iter().find_map(|p| match p {
                    Packet::UnsubAck(ack) if ack.pkid == pkid => Some(ack),
                    _ => None,
                });
                let ack = ack.unwrap_or_else(|| panic!("client {client}: no UNSUBACK"));
                if v5 {
                    let expected = if held {
                        v5::UnsubAckReason::Success
                    } else {
                        v5::UnsubAckReason::NoSubscriptionExisted
                    };
                    assert_eq!(
                        ack.reasons,
                        vec![expected],
                        "client {client}: unsubscribe {name}"
                    );
                }
                self.world.clients[client].session.subs.remove(name);
            }
            Step::Ping => {
                let received = self
                    .exchange(client, &encode(v5, &Packet::PingReq(v5::PingReq)))
                    .await;
                assert!(
                    tainted || received.iter().any(|p| matches!(p, Packet::PingResp(_))),
                    "client {client}: no PINGRESP"
                );
            }
            Step::Disconnect { with_will, expiry } => {
                let reason = if with_will {
                    DisconnectReasonCode::DisconnectWithWillMessage
                } else {
                    DisconnectReasonCode::NormalDisconnection
                };
                let disconnect = v5::Disconnect {
                    reason_code: reason,
                    properties: expiry.map(|seconds| v5::DisconnectProperties {
                        session_expiry_interval: Some(seconds),
                        reason_string: None,
                        user_properties: Vec::new(),
                        server_reference: None,
                    }),
                };
                self.exchange(client, &encode(v5, &Packet::Disconnect(disconnect)))
                    .await;
                let conn = self.conns[client].as_ref().expect("connected");
                assert!(
                    tainted || conn.closed,
                    "client {client}: DISCONNECT left it open"
                );
            }
            _ => {}
        }
    }

    async fn subscribe(&mut self, client: usize, step: &Step, pkid: u16) {
        let Step::Subscribe {
            filter,
            qos,
            no_local,
            retain_as_published,
            retain_handling,
            id,
        } = *step
        else {
            return;
        };
        let model = &self.world.clients[client];
        let (v5, tainted) = (model.v5, model.session.tainted);
        let name = FILTERS[filter];
        let qos = qos_of(qos);
        let no_local = no_local && v5;
        let id = match id {
            _ if !v5 => None,
            IdUse::None => None,
            IdUse::Zero => Some(0),
            IdUse::Fresh => {
                self.world.next_id += 1;
                Some(self.world.next_id - 1)
            }
        };
        let mut wanted = v5::Filter::new(name, qos);
        wanted.nolocal = no_local;
        wanted.preserve_retain = retain_as_published && v5;
        wanted.retain_forward_rule = match retain_handling {
            0 => v5::RetainForwardRule::OnEverySubscribe,
            1 => v5::RetainForwardRule::OnNewSubscribe,
            _ => v5::RetainForwardRule::Never,
        };
        let subscribe = v5::Subscribe {
            pkid,
            filters: vec![wanted],
            properties: id.map(|id| v5::SubscribeProperties {
                id: Some(id),
                user_properties: Vec::new(),
            }),
        };
        let received = self
            .exchange(client, &encode(v5, &Packet::Subscribe(subscribe)))
            .await;
        if tainted {
            return;
        }
        let share = crate::fanout::shared_groups::parse(name);
        if id == Some(0) || (no_local && share.is_some()) {
            self.expect_closed(client, &received, DisconnectReasonCode::ProtocolError);
            return;
        }
        let matched = crate::fanout::shared_groups::filter_of(name);
        let expected = if matches!(share, Some(Err(_))) {
            v5::SubscribeReasonCode::TopicFilterInvalid
        } else if share.is_some() && crate::acl::in_protocol(matched) {
            v5::SubscribeReasonCode::SharedSubscriptionsNotSupported
        } else if !rumqttc::v5::mqttbytes::valid_filter(matched) || matched.starts_with('$') {
            v5::SubscribeReasonCode::TopicFilterInvalid
        } else if matched.starts_with("deny/") {
            v5::SubscribeReasonCode::NotAuthorized
        } else {
            v5::SubscribeReasonCode::Success(qos)
        };
        let ack = received.iter().find_map(|p| match p {
            Packet::SubAck(ack) if ack.pkid == pkid => Some(ack),
            _ => None,
        });
        let ack = ack.unwrap_or_else(|| panic!("client {client}: no SUBACK"));
        let [code] = ack.return_codes.as_slice() else {
            panic!("client {client}: one filter, {:?}", ack.return_codes)
        };
        let success = matches!(code, v5::SubscribeReasonCode::Success(_));
        if v5 {
            assert!(
                *code == expected || *code == v5::SubscribeReasonCode::QuotaExceeded,
                "client {client}: subscribe {name}: {code:?}, not {expected:?}"
            );
        } else if success {
            assert_eq!(*code, expected, "client {client}: subscribe {name}");
        }
        if success {
            self.world.clients[client]
                .session
                .subs
                .insert(name.to_owned(), Sub { id, no_local });
        }
    }
}
