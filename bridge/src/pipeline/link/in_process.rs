//! The link in the gateway's process: the pipeline reaches the gateway by function calls, with
//! the MQTT link's guarantees (manual acknowledgement, a receive maximum, redelivery at the
//! next start) and no socket or packet in between.
//!
//! `bridge` does not link the gateway (ARCHITECTURE.md, "Crates are layered"): it names what
//! it needs of it here, [`Gateway`], and `courtchat`, which holds both, implements it over the
//! gateway's `broker::InProcessClient`.

use std::any::Any;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use super::{Arrival, Heard, Incoming, Origin, is_presence, presence_filter, received_at};

/// The gateway in this process, as the pipeline uses it.
pub trait Gateway: Send + Sync {
    /// A new start takes over: what was handed over and not acknowledged comes again, first,
    /// and earlier holders receive nothing more. Returns who the new holder is.
    fn attach(&self) -> u64;
    /// Subscribes to `filter`, at QoS 1 when `acknowledged` (else 0), handing over the retained
    /// messages it matches.
    fn subscribe(&self, filter: &str, acknowledged: bool) -> Result<(), String>;
    /// Publishes at QoS 1, retained if `retain`.
    fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> Result<(), String>;
    /// The next delivery for `holder`, once the receive maximum leaves room; `None` once
    /// someone attached after it, or the gateway is gone. Cancel-safe.
    fn recv(&self, holder: u64) -> BoxFuture<'_, Option<Box<dyn Delivered>>>;
    /// The next delivery for `holder` if one is ready now.
    fn try_recv(&self, holder: u64) -> Option<Box<dyn Delivered>>;
    /// Lets go of a delivery handed over by this gateway.
    fn ack(&self, delivery: &dyn Delivered);
    /// Deliveries waiting to be handed over.
    fn queued(&self) -> usize;
    /// The largest packet the gateway sends a client.
    fn max_packet_size(&self) -> usize;
}

/// One delivery from the [`Gateway`].
pub trait Delivered: Send + Sync {
    fn topic(&self) -> &str;
    fn payload(&self) -> &Bytes;
    /// A user property the gateway's hooks set (the arrival stamp, an open request's channel).
    fn property(&self, key: &str) -> Option<&str>;
    /// For the gateway's own [`Gateway::ack`].
    fn as_any(&self) -> &dyn Any;
}

/// Takes the gateway over for a new start of the pipeline: what the last one was handed and
/// did not acknowledge comes first, and presence is subscribed again so that every subject's
/// latest presence is handed over again. Ready once subscribed. Returns the new holder.
pub(super) fn start(gateway: &dyn Gateway, ready: watch::Sender<bool>) -> u64 {
    let holder = gateway.attach();
    let subscriptions = super::submission_filters()
        .into_iter()
        .map(|filter| (filter, true))
        .chain([(presence_filter(), false)]);
    for (filter, acknowledged) in subscriptions {
        if let Err(error) = gateway.subscribe(&filter, acknowledged) {
            // The service identity may subscribe to every protocol topic: this is a defect,
            // and the pipeline stays not ready (`/readyz` says so).
            tracing::error!(%filter, %error, "the gateway refused the pipeline's subscription");
            return holder;
        }
    }
    tracing::info!("chat pipeline connected (in process)");
    ready.send_replace(true);
    holder
}

/// What a delivery brings the pipeline: a submission to decide, or a presence.
pub(super) fn arrival(gateway: &dyn Gateway, delivery: Box<dyn Delivered>) -> Option<Arrival> {
    let topic = delivery.topic();
    if is_presence(topic) {
        let heard = Heard::of(topic, delivery.payload());
        // Nothing to decide (subscribed at QoS 0: nothing to acknowledge either).
        gateway.ack(&*delivery);
        return heard.map(Arrival::Presence);
    }
    let arrived = received_at(delivery.property(schemas::wire::RECEIVED_AT_PROPERTY));
    Some(Arrival::Submission(Incoming {
        topic: topic.to_owned(),
        payload: delivery.payload().clone(),
        origin: Origin::InProcess(delivery),
        arrived,
    }))
}
