//! What the broker's integration tests share: a real MQTT 5 client (rumqttc) and what it
//! receives.

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

/// How long a test waits for what it expects.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A connected MQTT 5 client and what it receives.
pub struct Client {
    pub client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Packet>,
}

impl Client {
    /// Connects as `id` to the broker on `port` and waits for its CONNACK.
    pub async fn connect(port: u16, id: &str) -> Self {
        let options = MqttOptions::new(id, "127.0.0.1", port);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, incoming) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(packet) = event
                    && tx.send(packet).is_err()
                {
                    return;
                }
            }
        });
        let mut client = Self { client, incoming };
        client.next(|p| matches!(p, Packet::ConnAck(_))).await;
        client
    }

    /// The next packet received that is `wanted`, skipping others.
    pub async fn next(&mut self, wanted: impl Fn(&Packet) -> bool) -> Packet {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let packet = self.incoming.recv().await.expect("connection open");
                if wanted(&packet) {
                    return packet;
                }
            }
        })
        .await
        .expect("the packet in time")
    }

    /// Publishes `payloads` to `topic` at QoS 1 and waits for every acknowledgement.
    #[allow(dead_code)] // Not every test binary publishes this way.
    pub async fn publish_all(&mut self, topic: &str, payloads: &[&str]) {
        for payload in payloads {
            self.client
                .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
                .await
                .unwrap();
        }
        for _ in payloads {
            self.next(|p| matches!(p, Packet::PubAck(_))).await;
        }
    }
}
