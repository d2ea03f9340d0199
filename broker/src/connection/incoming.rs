//! What a connected client sends: its publishes (authorized, retained only where allowed,
//! typing and presence checked, then routed and acknowledged), unsubscribes, pings and
//! DISCONNECT. Subscribes are `subscribe`'s, acknowledgements of our deliveries
//! `acknowledgements`'.

use std::task::Poll;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    self, DisconnectReasonCode, Packet, PubAck, PubAckReason, PubComp, PubRec, PubRecReason,
    Publish, UnsubAck, UnsubAckReason,
};

use super::{Ending, Session, Wire};
use crate::acl::{self, DeniedPublish};
use crate::denial::DenialKind;
use crate::hooks::Origin;
use crate::inbound::{self, Inbound};
use crate::session::{self, Outbound};
use crate::signal::SignalRefusal;

/// Lets every task woken so far run before this one goes on. On tokio's single-threaded
/// runtime a task that wakes itself goes to the back of the run queue, behind them; tokio's
/// `yield_now` would instead wait for the next poll of the I/O driver, a system call.
async fn behind_the_woken() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Why a client's publish is refused, as MQTT 5 acknowledges it.
#[derive(Clone, Copy, Debug)]
enum Nack {
    /// 0x87: the authorizer denied it.
    NotAuthorized,
    /// 0x99: typing or presence that is not what its topic carries, or too large.
    PayloadFormatInvalid,
    /// 0x97: more typing or presence than the sender's rate allows, or a retained message
    /// beyond the retained store's bounds (`[mqtt.retained]`).
    QuotaExceeded,
}

impl Nack {
    fn puback(self) -> PubAckReason {
        match self {
            Nack::NotAuthorized => PubAckReason::NotAuthorized,
            Nack::PayloadFormatInvalid => PubAckReason::PayloadFormatInvalid,
            Nack::QuotaExceeded => PubAckReason::QuotaExceeded,
        }
    }

    fn pubrec(self) -> PubRecReason {
        match self {
            Nack::NotAuthorized => PubRecReason::NotAuthorized,
            Nack::PayloadFormatInvalid => PubRecReason::PayloadFormatInvalid,
            Nack::QuotaExceeded => PubRecReason::QuotaExceeded,
        }
    }
}

impl Session<'_> {
    /// Handles one packet from the client; `Some` ends the connection.
    pub(super) async fn incoming(&mut self, wire: &mut Wire, packet: Inbound) -> Option<Ending> {
        let reply = match packet {
            Inbound::Publish { publish, topic } => match self.publish(publish, topic).await {
                Ok(reply) => {
                    // Deliveries before the acknowledgement, as Mosquitto writes them: on one
                    // thread, the subscribers this publish woke write while the publisher
                    // waits its turn, so the acknowledgement's write is not in their latency
                    // (issue 22: paced p99). Where other threads run them, waiting would only
                    // wake another thread.
                    if reply.is_some() && self.one_thread {
                        behind_the_woken().await;
                    }
                    reply
                }
                Err(ending) => return Some(ending),
            },
            Inbound::PubAck(pkid) => return self.puback(wire, pkid).await,
            Inbound::PubRec { pkid, accepted } => return self.pubrec(wire, pkid, accepted).await,
            Inbound::PubComp(pkid) => return self.pubcomp(wire, pkid).await,
            Inbound::PubRel(pkid) => {
                // MQTT 5 §3.7.2.1: a PUBREL for no QoS 2 publish the session holds (one refused,
                // or released already) is completed with 0x92.
                let reason = if self.state.qos2_incoming.remove(&pkid) {
                    v5::PubCompReason::Success
                } else {
                    v5::PubCompReason::PacketIdentifierNotFound
                };
                Some(Packet::PubComp(PubComp {
                    pkid,
                    reason,
                    properties: None,
                }))
            }
            Inbound::Subscribe(subscribe) => {
                return self.subscribe(wire, subscribe).await.err();
            }
            Inbound::Unsubscribe(unsubscribe) => {
                let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
                for filter in unsubscribe.filters {
                    if self.state.subscriptions.remove(&filter).is_some() {
                        self.filter_removed(&filter);
                        reasons.push(UnsubAckReason::Success);
                    } else {
                        reasons.push(UnsubAckReason::NoSubscriptionExisted);
                    }
                }
                Some(Packet::UnsubAck(UnsubAck {
                    pkid: unsubscribe.pkid,
                    reasons,
                    properties: None,
                }))
            }
            Inbound::PingReq => Some(Packet::PingResp(v5::PingResp)),
            Inbound::Disconnect {
                with_will,
                session_expiry,
            } => {
                // MQTT 5 §3.14.2.2.2: a session that was to end with the connection cannot be
                // made persistent at DISCONNECT; otherwise the new interval applies.
                if let Some(interval) = session_expiry
                    && self.expiry > 0
                {
                    let max = u32::try_from(self.shared.config.max_session_expiry.as_secs())
                        .unwrap_or(u32::MAX - 1);
                    self.expiry = interval.min(max);
                }
                return Some(Ending::Clean { with_will });
            }
            Inbound::Close { reason, code } => {
                tracing::debug!(client_id = %self.client_id, reason, "protocol violation");
                return Some(Ending::told(reason, code));
            }
        };
        match reply {
            Some(reply) if wire.send(&reply).await.is_err() => Some(Ending::abrupt("write failed")),
            _ => None,
        }
    }

    /// A PUBLISH from the client (its topic name already checked): authorized, routed,
    /// acknowledged.
    async fn publish(&mut self, publish: Publish, topic: String) -> Result<Option<Packet>, Ending> {
        let (pkid, qos) = (publish.pkid, publish.qos);
        // MQTT 5 §3.3.4: beyond the receive maximum CONNACK announced, a new QoS 2 publish is a
        // protocol violation. (MQTT 3.1.1 was told nothing: its packet ids bound it.)
        if qos == QoS::ExactlyOnce
            && self.is_v5()
            && !self.state.qos2_incoming.contains(&pkid)
            && self.state.qos2_incoming.len() >= usize::from(self.shared.config.receive_maximum)
        {
            return Err(Ending::told(
                "receive maximum exceeded",
                DisconnectReasonCode::ReceiveMaximumExceeded,
            ));
        }
        // The reserved `$` namespace is refused like any unauthorized topic: MQTT 5 says so in
        // its acknowledgement and keeps the connection.
        let decision = if inbound::is_reserved(&topic) {
            Err("topics beginning with `$` are reserved".to_owned())
        } else {
            self.shared
                .acl
                .check_publish(&self.identity, &topic)
                .and_then(|()| acl::check_retain(&self.identity, &topic, publish.retain))
        };
        // The negative acknowledgement to answer with (MQTT 5 only), if any.
        let refused = match decision {
            // A QoS 2 publish sent again before its release was taken the first time.
            Ok(()) if qos == QoS::ExactlyOnce && self.state.qos2_incoming.contains(&pkid) => None,
            Ok(()) => {
                let signal = self.shared.signals.check(
                    &self.identity.subject,
                    &topic,
                    &publish.payload,
                    std::time::Instant::now(),
                );
                match signal {
                    Ok(signal) => {
                        if qos == QoS::ExactlyOnce {
                            self.state.qos2_incoming.insert(pkid);
                        }
                        self.shared.hooks.message(&self.identity, &topic);
                        // The message may outlive the read that brought it (delivery
                        // queues, a session away, in flight, retained, the presence kept):
                        // its bytes are copied out of the read buffer, which they would
                        // otherwise keep whole (2 KiB or more) for as long as they live.
                        let message = Outbound {
                            topic: Bytes::copy_from_slice(&publish.topic),
                            // Typing and presence go on in their canonical form.
                            payload: signal
                                .unwrap_or_else(|| Bytes::copy_from_slice(&publish.payload)),
                            qos,
                            retain: publish.retain,
                            expires_at: session::expiry_deadline(publish.properties.as_ref()),
                            properties: publish.properties,
                        };
                        self.shared.remember_presence(&topic, &message);
                        // A retained message the store has no room for: 0x97, not delivered.
                        self.route(message, Origin::Client)
                            .err()
                            .and_then(|_| self.is_v5().then_some(Nack::QuotaExceeded))
                    }
                    // Refused and not delivered; 3.1.1 has no way to say so, and a client
                    // sending too fast or malformed typing is not worth a disconnect.
                    Err(refusal) => {
                        self.shared.hooks.signal_refused(&self.identity, refusal);
                        let nack = match refusal {
                            SignalRefusal::TooLarge | SignalRefusal::Invalid => {
                                Nack::PayloadFormatInvalid
                            }
                            SignalRefusal::RateLimited => Nack::QuotaExceeded,
                        };
                        self.is_v5().then_some(nack)
                    }
                }
            }
            Err(reason) => {
                self.shared.hooks.denied(
                    DenialKind::Publish,
                    self.peer,
                    &self.identity.subject,
                    Some(&topic),
                    &reason,
                );
                match self.shared.config.acl.denied_publish {
                    // MQTT 5 says no in its acknowledgement.
                    _ if qos != QoS::AtMostOnce && self.is_v5() => Some(Nack::NotAuthorized),
                    // MQTT 3.1.1 has no negative acknowledgement: the configured policy decides.
                    DeniedPublish::Disconnect if !self.is_v5() => {
                        return Err(Ending::told(
                            "publish denied",
                            DisconnectReasonCode::NotAuthorized,
                        ));
                    }
                    _ => None,
                }
            }
        };
        Ok(match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Packet::PubAck(PubAck {
                pkid,
                reason: refused.map_or(PubAckReason::Success, Nack::puback),
                properties: None,
            })),
            QoS::ExactlyOnce => Some(Packet::PubRec(PubRec {
                pkid,
                reason: refused.map_or(PubRecReason::Success, Nack::pubrec),
                properties: None,
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::behind_the_woken;

    /// On one thread, a task woken before the publisher waits its turn runs first: the
    /// subscriber's delivery is written before the publisher's acknowledgement.
    #[test]
    fn on_one_thread_the_woken_run_first() {
        for wait in [false, true] {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let order = Arc::new(Mutex::new(Vec::new()));
            runtime.block_on(async {
                let woken = Arc::new(tokio::sync::Notify::new());
                let subscriber = tokio::spawn({
                    let (woken, order) = (woken.clone(), order.clone());
                    async move {
                        woken.notified().await;
                        order.lock().unwrap().push("delivery");
                    }
                });
                let publisher = tokio::spawn({
                    let order = order.clone();
                    async move {
                        // Let the subscriber start waiting.
                        tokio::task::yield_now().await;
                        woken.notify_one();
                        if wait {
                            behind_the_woken().await;
                        }
                        order.lock().unwrap().push("acknowledgement");
                    }
                });
                publisher.await.unwrap();
                subscriber.await.unwrap();
            });
            let expected = if wait {
                ["delivery", "acknowledgement"]
            } else {
                ["acknowledgement", "delivery"]
            };
            assert_eq!(*order.lock().unwrap(), expected, "waiting: {wait}");
        }
    }
}
