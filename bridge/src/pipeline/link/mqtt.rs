//! The link over MQTT (the pipeline as its own process): one MQTT 5 session that outlives its
//! connections.
//!
//! A submission the gateway has acknowledged to its sender must be decided even if this
//! connection drops, so the link is built around the gateway keeping what the pipeline has not
//! finished:
//! - Clean Start off and a session expiry: while the pipeline reconnects, the gateway keeps its
//!   subscriptions and goes on collecting submissions for it.
//! - Manual acknowledgements: a submission is acknowledged to the gateway only after it was
//!   decided, committed and its answer queued ([`MqttLink::ack`]). What was in the pipeline's hands
//!   when the connection dropped is delivered again by the gateway (flagged DUP).
//! - A receive maximum (`bridge.intake_window`): at most that many submissions are in the
//!   pipeline's hands at once; the rest wait in the gateway, whose publishers then wait too.
//! - The gateway's maximum packet size, read from its CONNACK: the pipeline never builds a packet
//!   the gateway would refuse (a refused packet used to cost the connection, and with it every
//!   submission in flight).
//!
//! rumqttc's event loop reconnects when polled after an error, resending our own unacknowledged
//! publishes (entries and answers of committed batches) once the session resumes.
//!
//! Besides submissions, the link follows every session's presence (`cc/v1/sessions/+/presence/+`,
//! at QoS 0: nothing to acknowledge), subscribed again on every connection so that the gateway
//! sends each subject's latest presence again; the pipeline uses the applicants' to tell
//! abandoned sessions ([`Heard`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    Heard, Incoming, LinkSettings, Origin, is_presence, presence_filter, received_at,
    submission_filters,
};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, Subscribe};
use rumqttc::v5::{AsyncClient, ClientError, Event, EventLoop, MqttOptions, Request};
use tokio::sync::{mpsc, watch};

/// What became of a delivery with a given packet id, to recognise the gateway's redeliveries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// In the pipeline's hands, not yet decided.
    Pending(u64),
    /// Decided and acknowledged (the acknowledgement may have been lost with the connection).
    Acked(u64),
}

/// The largest packet the gateway accepts from us, when it has not said (MQTT's own limit).
const UNLIMITED_PACKET: usize = 268_435_455;

/// The client side of the link; the event loop runs in a task of its own.
pub(crate) struct MqttLink {
    client: AsyncClient,
    seen: Arc<Mutex<HashMap<u16, Seen>>>,
    max_packet: Arc<AtomicUsize>,
    driver: tokio::task::JoinHandle<()>,
}

/// What the driver hands the worker: submissions and presence.
type Received = (
    mpsc::UnboundedReceiver<Incoming>,
    mpsc::UnboundedReceiver<Heard>,
);

impl MqttLink {
    /// Starts connecting; `ready` turns true once submissions are being received and false
    /// whenever the connection is down.
    pub fn start(
        addr: SocketAddr,
        client_id: &str,
        token: TokenSource,
        settings: LinkSettings,
        ready: watch::Sender<bool>,
    ) -> (Self, Received) {
        let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_credentials(client_id, token());
        options.set_keep_alive(settings.keep_alive);
        options.set_max_packet_size(Some(1024 * 1024));
        options.set_clean_start(false);
        options.set_session_expiry_interval(Some(
            u32::try_from(settings.session_expiry.as_secs()).unwrap_or(u32::MAX),
        ));
        options.set_receive_maximum(Some(settings.intake_window.max(1)));
        options.set_manual_acks(true);
        // Each batch ends in a burst of small publishes (entries, then acknowledgements); with
        // Nagle's algorithm on, all but the first wait for the gateway's delayed TCP ACK, which
        // put ~25 ms on every acknowledgement (found by `courtchat bench chat`).
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        let (client, eventloop) = AsyncClient::new(options, 1024);
        // Unbounded on purpose: the event loop must never wait for the pipeline, because the
        // pipeline publishes through the same event loop (a bounded queue here deadlocks once
        // both directions fill up). The receive maximum bounds what can pile up.
        let (tx, intake) = mpsc::unbounded_channel();
        // Unbounded for the same reason; the gateway limits how often each subject publishes
        // presence, and the worker takes each as it comes.
        let (heard, presence) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let max_packet = Arc::new(AtomicUsize::new(UNLIMITED_PACKET));
        let driver = tokio::spawn(
            Driver {
                eventloop,
                client: client.clone(),
                tx,
                heard,
                seen: seen.clone(),
                max_packet: max_packet.clone(),
                ready,
                client_id: client_id.to_owned(),
                token,
            }
            .run(),
        );
        let link = Self {
            client,
            seen,
            max_packet,
            driver,
        };
        (link, (intake, presence))
    }

    /// The largest packet the gateway accepts from the pipeline, in bytes.
    pub fn max_packet(&self) -> Arc<AtomicUsize> {
        self.max_packet.clone()
    }

    pub async fn publish(
        &self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
    }

    /// Acknowledges decided submissions to the gateway, after their answers were queued.
    pub async fn ack(&self, decided: &[Incoming]) -> Result<(), ClientError> {
        for incoming in decided {
            let Origin::Mqtt(delivery) = &incoming.origin else {
                continue;
            };
            if let Some(seen) = lock(&self.seen).get_mut(&delivery.pkid)
                && let Seen::Pending(hash) = *seen
            {
                *seen = Seen::Acked(hash);
            }
            self.client.ack(delivery).await?;
        }
        Ok(())
    }

    /// Ends the connection (the gateway keeps the session for the next start).
    pub async fn close(&self) {
        let _ = self.client.try_disconnect();
        // Give the event loop a moment to send the DISCONNECT before it is stopped.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.driver.abort();
    }
}

impl Drop for MqttLink {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn lock(seen: &Mutex<HashMap<u16, Seen>>) -> std::sync::MutexGuard<'_, HashMap<u16, Seen>> {
    // The map is updated in single statements that cannot leave it half-changed.
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

type TokenSource = Arc<dyn Fn() -> String + Send + Sync>;

/// When the gateway received a submission (its `RECEIVED_AT_PROPERTY`).
fn received_at_of(publish: &Publish) -> std::time::Instant {
    let stamp = publish.properties.as_ref().and_then(|properties| {
        properties
            .user_properties
            .iter()
            .find(|(key, _)| key == schemas::wire::RECEIVED_AT_PROPERTY)
            .map(|(_, value)| value.as_str())
    });
    received_at(stamp)
}

struct Driver {
    eventloop: EventLoop,
    client: AsyncClient,
    tx: mpsc::UnboundedSender<Incoming>,
    heard: mpsc::UnboundedSender<Heard>,
    seen: Arc<Mutex<HashMap<u16, Seen>>>,
    max_packet: Arc<AtomicUsize>,
    ready: watch::Sender<bool>,
    client_id: String,
    token: TokenSource,
}

impl Driver {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                    backoff = Duration::from_millis(100);
                    let limit = connack
                        .properties
                        .as_ref()
                        .and_then(|p| p.max_packet_size)
                        .map_or(UNLIMITED_PACKET, |size| size as usize);
                    self.max_packet.store(limit, Ordering::Relaxed);
                    // Presence is subscribed on every connection, even a resumed session:
                    // subscribing makes the gateway send every subject's latest presence again.
                    let presence = Filter::new(presence_filter(), QoS::AtMostOnce);
                    if connack.session_present {
                        // The gateway kept our subscriptions: submissions flow already.
                        tracing::info!("chat pipeline connected (session resumed)");
                        self.ready.send_replace(true);
                        self.eventloop
                            .pending
                            .push_front(Request::Subscribe(Subscribe::new(presence, None)));
                    } else {
                        // A new session: what we had been given is gone with the old one. One
                        // SUBSCRIBE, so that when it is acknowledged (ready) presence is heard
                        // too.
                        lock(&self.seen).clear();
                        let submissions =
                            submission_filters().map(|path| Filter::new(path, QoS::AtLeastOnce));
                        self.eventloop
                            .pending
                            .push_front(Request::Subscribe(Subscribe::new_many(
                                submissions.into_iter().chain([presence]),
                                None,
                            )));
                    }
                }
                // Every subscription is in place: from now on nothing submitted is missed.
                // (A resumed session is ready at its CONNACK; the SUBACK is presence's.)
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if !*self.ready.borrow() {
                        tracing::info!("chat pipeline connected");
                        self.ready.send_replace(true);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                    if is_presence(&topic) {
                        // Nothing to decide (subscribed at QoS 0: nothing to acknowledge
                        // either, unless a gateway delivered it otherwise).
                        if let Some(heard) = Heard::of(&topic, &publish.payload) {
                            let _ = self.heard.send(heard);
                        }
                        if publish.qos != QoS::AtMostOnce {
                            let _ = self.client.try_ack(&publish);
                        }
                        continue;
                    }
                    if !self.admit(&publish) {
                        continue;
                    }
                    let arrived = received_at_of(&publish);
                    let incoming = Incoming {
                        topic,
                        payload: publish.payload.clone(),
                        origin: Origin::Mqtt(Box::new(publish)),
                        arrived,
                    };
                    if self.tx.send(incoming).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    self.ready.send_replace(false);
                    tracing::warn!(error = %err, "the pipeline's broker connection ended; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    // A fresh token for every connection: the last one may have expired.
                    self.eventloop
                        .options
                        .set_credentials(&self.client_id, (self.token)());
                }
            }
        }
    }

    /// Whether a delivery is new. A redelivery (DUP) of one still in the pipeline's hands is
    /// dropped; one of a delivery already decided is acknowledged again without deciding it
    /// twice (its answer went out with the first).
    fn admit(&self, publish: &Publish) -> bool {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        publish.topic.hash(&mut hasher);
        publish.payload.hash(&mut hasher);
        let hash = hasher.finish();
        let mut seen = lock(&self.seen);
        match (publish.dup, seen.get(&publish.pkid).copied()) {
            (true, Some(Seen::Pending(h))) if h == hash => false,
            (true, Some(Seen::Acked(h))) if h == hash => {
                drop(seen);
                if self.client.try_ack(publish).is_err() {
                    tracing::warn!("a repeated delivery could not be acknowledged now");
                }
                false
            }
            _ => {
                seen.insert(publish.pkid, Seen::Pending(hash));
                true
            }
        }
    }
}
