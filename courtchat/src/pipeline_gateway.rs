//! The chat pipeline's gateway in this process: `bridge::Gateway` over the broker's
//! `InProcessClient`, joined here because `bridge` does not link the broker (ARCHITECTURE.md).

use std::any::Any;

use broker::{Delivery, InProcessClient};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use rumqttc::v5::mqttbytes::QoS;

/// The broker's client for the pipeline.
pub(crate) struct PipelineGateway(pub InProcessClient);

/// A delivery of that client, as the pipeline reads it.
struct Handed(Delivery);

impl bridge::Delivered for Handed {
    fn topic(&self) -> &str {
        self.0.topic()
    }

    fn payload(&self) -> &Bytes {
        self.0.payload()
    }

    fn property(&self, key: &str) -> Option<&str> {
        self.0.user_property(key)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn handed(delivery: Delivery) -> Box<dyn bridge::Delivered> {
    Box::new(Handed(delivery))
}

impl bridge::Gateway for PipelineGateway {
    fn attach(&self) -> u64 {
        self.0.attach().0
    }

    fn subscribe(&self, filter: &str, acknowledged: bool) -> Result<(), String> {
        let qos = if acknowledged {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        self.0
            .subscribe(filter, qos)
            .map_err(|error| error.to_string())
    }

    fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> Result<(), String> {
        self.0
            .publish(topic, payload, retain)
            .map_err(|error| error.to_string())
    }

    fn recv(&self, holder: u64) -> BoxFuture<'_, Option<Box<dyn bridge::Delivered>>> {
        let holder = broker::Holder(holder);
        FutureExt::boxed(self.0.recv(holder).map(|delivery| delivery.map(handed)))
    }

    fn try_recv(&self, holder: u64) -> Option<Box<dyn bridge::Delivered>> {
        self.0.try_recv(broker::Holder(holder)).map(handed)
    }

    fn ack(&self, delivery: &dyn bridge::Delivered) {
        // Only this gateway's deliveries reach here: the pipeline acknowledges each through
        // the link it came from.
        if let Some(Handed(delivery)) = delivery.as_any().downcast_ref::<Handed>() {
            self.0.ack(delivery);
        }
    }

    fn queued(&self) -> usize {
        self.0.queued()
    }

    fn max_packet_size(&self) -> usize {
        self.0.max_packet_size()
    }
}
