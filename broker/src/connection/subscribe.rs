//! SUBSCRIBE: each filter checked and granted, retained messages sent, and subscriptions
//! revoked when a membership ends. Shared subscriptions (`$share/{group}/{filter}`) are kept
//! under their whole name, granted as their filter would be, and never under `cc/` (see
//! `fanout::shared_groups`).

use rumqttc::v5::mqttbytes::v5::{
    self, DisconnectReasonCode, Packet, RetainForwardRule, SubAck, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::valid_filter;

use super::delivery::min_qos;
use super::{Ending, Session, Wire};
use crate::denial::DenialKind;
use crate::fanout::shared_groups;
use crate::session::{Outbound, SubOptions};

impl Session<'_> {
    /// A SUBSCRIBE: each filter checked and granted the QoS asked for, the SUBACK, then the
    /// retained messages the retain handling option asks for.
    pub(super) async fn subscribe(
        &mut self,
        wire: &mut Wire,
        subscribe: v5::Subscribe,
    ) -> Result<(), Ending> {
        let identifier = subscribe.properties.as_ref().and_then(|p| p.id);
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        let allowed = self.shared.subscribe_allowance.take(
            &self.identity.subject,
            subscribe.filters.len(),
            std::time::Instant::now(),
        );
        if !allowed {
            // Refused whole, before any filter is checked or recorded: a flood of SUBSCRIBEs
            // costs one counter, not a denial per filter.
            self.shared.hooks.subscribe_limited(&self.identity);
            codes.resize(subscribe.filters.len(), SubscribeReasonCode::QuotaExceeded);
        }
        for filter in subscribe.filters.into_iter().filter(|_| allowed) {
            let path = filter.path;
            let share = shared_groups::parse(&path);
            if share.is_some() && filter.nolocal {
                // MQTT 5 §3.8.3.1: a protocol error.
                return Err(Ending::told(
                    "no local on a shared subscription",
                    DisconnectReasonCode::ProtocolError,
                ));
            }
            // The filter topics are matched with: a shared subscription's own.
            let matched = shared_groups::filter_of(&path);
            let code = if matches!(share, Some(Err(_))) {
                SubscribeReasonCode::TopicFilterInvalid
            } else if share.is_some() && crate::acl::in_protocol(matched) {
                // The chat protocol's filters must each get every message.
                SubscribeReasonCode::SharedSubscriptionsNotSupported
            } else if !valid_filter(matched) || matched.starts_with('$') {
                // `$` filters are refused: the gateway publishes nothing under `$`.
                SubscribeReasonCode::TopicFilterInvalid
            } else if let Err(reason) = self.shared.acl.check_filter(&self.identity, matched) {
                self.shared.hooks.denied(
                    DenialKind::Subscribe,
                    self.peer,
                    &self.identity.subject,
                    Some(&path),
                    &reason,
                );
                SubscribeReasonCode::NotAuthorized
            } else {
                let granted = filter.qos;
                let options = SubOptions {
                    qos: granted,
                    no_local: filter.nolocal,
                    retain_as_published: filter.preserve_retain,
                    identifier,
                };
                let existed = self
                    .state
                    .subscriptions
                    .insert(path.clone(), options)
                    .is_some();
                let send_retained = match filter.retain_forward_rule {
                    // MQTT 5 §4.8.2: none on a shared subscription.
                    _ if share.is_some() => false,
                    RetainForwardRule::OnEverySubscribe => true,
                    RetainForwardRule::OnNewSubscribe => !existed,
                    RetainForwardRule::Never => false,
                };
                if send_retained {
                    retained.extend(self.shared.retained.matching(&path).into_iter().map(
                        |mut message| {
                            // A retained message sent because of a subscription carries the retain
                            // flag, at no more than the subscription's QoS (MQTT 5 §3.3.1.3).
                            message.retain = true;
                            message.qos = min_qos(message.qos, granted);
                            if let Some(id) = identifier {
                                message
                                    .properties
                                    .get_or_insert_with(Default::default)
                                    .subscription_identifiers = vec![id];
                            }
                            message
                        },
                    ));
                }
                if !existed {
                    self.filter_added(&path);
                }
                SubscribeReasonCode::Success(granted)
            };
            self.shared
                .hooks
                .subscribed(&self.identity, &path, (&code).into());
            codes.push(code);
        }
        let ack = SubAck {
            pkid: subscribe.pkid,
            return_codes: codes,
            properties: None,
        };
        if wire.send(&Packet::SubAck(ack)).await.is_err() {
            return Err(Ending::abrupt("write failed"));
        }
        for message in retained {
            if !self.may_read(&message.topic) {
                continue;
            }
            if self.queue(wire, message).await.is_err() {
                return Err(Ending::abrupt("write failed"));
            }
        }
        Ok(())
    }

    /// Serves a new filter (already in `state.subscriptions`) from the routing index.
    pub(super) fn filter_added(&self, filter: &str) {
        if let Some(inbox) = &self.inbox {
            self.shared.fanout.add(self.key, filter, inbox);
        }
    }

    /// Stops serving a filter (already gone from `state.subscriptions`).
    pub(super) fn filter_removed(&self, filter: &str) {
        self.shared.fanout.remove(self.key, filter);
    }

    pub(super) fn may_read(&self, topic: &[u8]) -> bool {
        std::str::from_utf8(topic).is_ok_and(|topic| {
            self.shared
                .acl
                .check_subscribe(&self.identity, topic)
                .is_ok()
        })
    }

    /// Removes every filter this client may no longer hold after losing access to
    /// `session`. Deliveries already queued are caught by the per-message check in `deliver`.
    pub(super) async fn drop_revoked_filters(&mut self, session: &str) -> Result<(), Ending> {
        let revoked: Vec<String> = self
            .state
            .subscriptions
            .filters()
            .filter(|filter| {
                self.shared
                    .acl
                    .check_filter(&self.identity, shared_groups::filter_of(filter))
                    .is_err()
            })
            .map(str::to_owned)
            .collect();
        for filter in revoked {
            tracing::info!(client_id = %self.client_id, session, filter, "subscription revoked");
            self.state.subscriptions.remove(&filter);
            self.filter_removed(&filter);
        }
        // Deliveries waiting for the client are checked again too.
        let (identity, acl) = (&self.identity, &self.shared.acl);
        let readable = |message: &Outbound| {
            std::str::from_utf8(&message.topic)
                .is_ok_and(|topic| acl.check_subscribe(identity, topic).is_ok())
        };
        self.state.pending.retain(readable);
        Ok(())
    }
}
