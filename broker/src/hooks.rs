//! Hooks: plugins on typed points of the gateway's work, registered when the broker is built
//! ([`crate::BrokerBuilder::hook`]) and called in that order on the connection's task.
//!
//! Some points let a hook act: at connect it may set how the connection is served
//! ([`ConnectionPolicy`]); a publish it may stamp with user properties or consume
//! ([`Hook::on_publish`]). The rest observe: disconnects, each filter subscribed and its outcome,
//! accepted messages, denials and refused typing or presence. The chat pipeline's rules are
//! hooks of the first kind (`crate::chat`); the server adds one that records denials on the
//! audit trail and one that counts everything into its metrics.
//!
//! Denials reach hooks twice: each one as it happens, its text already bounded, for counting
//! ([`Hook::on_denied`]); and as records, repeats folded (see `denial`), for what is written
//! ([`Hook::on_denial_record`]): the log line and the audit entry cost the same bounded amount
//! whatever a stranger sends.

use rumqttc::v5::mqttbytes::v5::{PublishProperties, SubscribeReasonCode};

use crate::denial::{Denial, DenialRecord};
use crate::identity::Identity;
use crate::listener::Listener;
use crate::signal::SignalRefusal;

/// A plugin of the gateway. Every method has a default that does nothing (and routes every
/// publish), so a hook implements what it needs. Hooks run on the connection's task, in the
/// order they were registered: they must be quick and must not block.
pub trait Hook: Send + Sync {
    /// A client is connected (after CONNACK) on `listener`. A hook may set how the gateway
    /// serves the connection in `policy`; each hook sees what the hooks before it set.
    fn on_connect(
        &self,
        _identity: &Identity,
        _listener: Listener,
        _policy: &mut ConnectionPolicy,
    ) {
    }
    /// A connection that [`Hook::on_connect`] announced has ended.
    fn on_disconnect(&self, _identity: &Identity, _listener: Listener) {}
    /// A publish the gateway accepted (authorized, typing and presence checked), or a will
    /// about to be published, before it is retained or handed to any subscriber. A hook may
    /// change its user properties (what it adds, subscribers receive: the client's own were
    /// already screened) or consume it: [`Routing::Consume`] ends it here, unretained and
    /// delivered to no one, and no later hook sees it. The publisher's acknowledgement follows
    /// every hook, so what a hook did is in place before the publisher hears it was accepted.
    fn on_publish(&self, _publish: &mut Publish<'_>) -> Routing {
        Routing::Route
    }
    /// One filter of a SUBSCRIBE, as decided (a SUBSCRIBE refused whole by the sender's
    /// allowance is [`Hook::on_subscribe_limited`] instead, once).
    fn on_subscribe(&self, _identity: &Identity, _filter: &str, _outcome: SubscribeOutcome) {}
    /// A publish accepted on `topic`, before [`Hook::on_publish`].
    fn on_message(&self, _identity: &Identity, _topic: &str) {}
    /// Every denial as it happens, its text bounded: for counting.
    fn on_denied(&self, _denial: &Denial) {}
    /// What is to be recorded of the denials: the first of an address's or subject's window
    /// whole, and when the window ends, how many more there were. Every denial is in exactly
    /// one record.
    fn on_denial_record(&self, _record: &DenialRecord) {}
    /// A typing or presence publish (or will) that the gateway refused and did not deliver.
    fn on_signal_refused(&self, _identity: &Identity, _refusal: SignalRefusal) {}
    /// A SUBSCRIBE refused whole because its sender's allowance of filters was spent.
    fn on_subscribe_limited(&self, _identity: &Identity) {}
}

/// How the gateway serves one connection, as the hooks set it at connect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionPolicy {
    /// Publishers wait for room in this connection's delivery queue when it is full, instead of
    /// disconnecting it as too slow a reader: meant for a consumer whose backlog is everyone's
    /// input (the chat pipeline, `chat::ServiceQueue`). The publisher then holds what its
    /// client sends next until there is room, which is the backpressure that sender feels.
    pub patient_queue: bool,
}

/// What becomes of a publish after [`Hook::on_publish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// Retained if flagged, and handed to its subscribers.
    Route,
    /// Taken by the hook: not retained, delivered to no one. The publisher is acknowledged as
    /// for any accepted publish.
    Consume,
}

/// Where a publish comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The client sent it.
    Client,
    /// The client's will, published for it as its connection ended.
    Will,
}

/// One publish as [`Hook::on_publish`] sees it.
pub struct Publish<'a> {
    /// Who published it (for a will: whose will it is).
    pub publisher: &'a Identity,
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// 0, 1 or 2.
    pub qos: u8,
    pub retain: bool,
    pub origin: Origin,
    properties: &'a mut Option<PublishProperties>,
}

impl<'a> Publish<'a> {
    pub(crate) fn new(
        publisher: &'a Identity,
        topic: &'a str,
        payload: &'a [u8],
        qos: u8,
        retain: bool,
        origin: Origin,
        properties: &'a mut Option<PublishProperties>,
    ) -> Self {
        Self {
            publisher,
            topic,
            payload,
            qos,
            retain,
            origin,
            properties,
        }
    }

    /// Its MQTT 5 user properties, in order (under `cc/`, only what earlier hooks added: a
    /// client's own are removed there).
    pub fn user_properties(&self) -> &[(String, String)] {
        self.properties
            .as_ref()
            .map_or(&[], |properties| properties.user_properties.as_slice())
    }

    /// Its user properties to change: what is here after the last hook is what subscribers
    /// receive.
    pub fn user_properties_mut(&mut self) -> &mut Vec<(String, String)> {
        &mut self
            .properties
            .get_or_insert_with(PublishProperties::default)
            .user_properties
    }
}

/// What became of one filter of a SUBSCRIBE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// Granted, at this QoS (0, 1 or 2).
    Granted { qos: u8 },
    /// Refused, with this MQTT 5 reason code (0x87 not authorized, 0x8F filter invalid, 0x97
    /// quota exceeded, 0x9E shared subscriptions not supported, 0xA1 subscription identifiers
    /// not supported, …), whichever version the client speaks.
    Refused { reason_code: u8 },
}

impl From<&SubscribeReasonCode> for SubscribeOutcome {
    fn from(code: &SubscribeReasonCode) -> Self {
        let reason_code = match code {
            SubscribeReasonCode::Success(qos) => {
                return SubscribeOutcome::Granted { qos: *qos as u8 };
            }
            SubscribeReasonCode::Failure | SubscribeReasonCode::Unspecified => 0x80,
            SubscribeReasonCode::ImplementationSpecific => 0x83,
            SubscribeReasonCode::NotAuthorized => 0x87,
            SubscribeReasonCode::TopicFilterInvalid => 0x8F,
            SubscribeReasonCode::PkidInUse => 0x91,
            SubscribeReasonCode::QuotaExceeded => 0x97,
            SubscribeReasonCode::SharedSubscriptionsNotSupported => 0x9E,
            SubscribeReasonCode::SubscriptionIdNotSupported => 0xA1,
            SubscribeReasonCode::WildcardSubscriptionsNotSupported => 0xA2,
        };
        SubscribeOutcome::Refused { reason_code }
    }
}
