//! A publish on its way from its publisher to its subscribers: one value, shared by every
//! subscriber's queue, that each connection turns into its own delivery (QoS, retain flag,
//! subscription identifiers) as its subscriptions say.

use std::sync::Arc;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::PublishProperties;

/// What every subscriber's copy of a publish shares.
#[derive(Clone, Debug)]
pub(crate) struct Message {
    pub topic: Bytes,
    pub payload: Bytes,
    /// The QoS it was published with; each subscriber gets at most its subscription's.
    pub qos: QoS,
    /// The retain flag it was published with, for subscriptions with retain-as-published.
    pub retain: bool,
    /// The publishing client, for no-local; `None` for what the gateway publishes itself.
    pub publisher: Option<Arc<str>>,
    pub properties: Option<PublishProperties>,
    /// When its message expiry interval runs out, counted from when the gateway received it
    /// (see `session::Outbound`).
    pub expires_at: Option<tokio::time::Instant>,
    /// The shared subscription (`$share/{group}/{filter}`) this copy was routed through, to the
    /// one member of the group that takes it; `None` for the copy every matching non-shared
    /// subscription of a receiver decides together. Marked on the message rather than beside
    /// it in the queue, so a queue's element stays one pointer (see `shared_groups`).
    pub via: Option<Arc<str>>,
}

impl Message {
    /// This message, as the copy routed through the shared subscription `via`.
    pub fn through(&self, via: &Arc<str>) -> Self {
        Self {
            via: Some(via.clone()),
            ..self.clone()
        }
    }
}

/// A message in a connection's delivery queue.
pub(crate) type Forwarded = Arc<Message>;
