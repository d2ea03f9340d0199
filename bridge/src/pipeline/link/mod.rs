//! The pipeline's link to the gateway: how submissions reach it and how what it decided goes
//! out. Two ways, with the same guarantees (see each):
//!
//! - **In-process** (`courtchat serve`): the gateway in this process, reached by function
//!   calls; no MQTT packet is encoded or decoded on this hop (`in_process`).
//! - **Over MQTT** (`courtchat bridge`, the pipeline as its own process): one MQTT 5 session
//!   over TCP that outlives its connections (`mqtt`).
//!
//! Either way: a submission is acknowledged to the gateway only after it was decided, committed
//! and its answer published ([`Link::ack`]); at most `bridge.intake_window` submissions are in
//! the pipeline's hands at once, the rest waiting in the gateway (whose publishers then wait
//! too); what the pipeline held and did not acknowledge when it stopped (a restart, a dropped
//! connection) is handed to it again. Besides submissions, the link follows every session's
//! presence, whose latest the gateway hands over again at every start; the pipeline uses the
//! applicants' to tell abandoned sessions ([`Heard`]).

mod in_process;
mod mqtt;

pub use in_process::{Delivered, Gateway};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// How the pipeline reaches the gateway.
pub enum BrokerLink {
    /// Over MQTT: where, as whom, and a fresh token per connection.
    Mqtt {
        addr: SocketAddr,
        client_id: String,
        token: Arc<dyn Fn() -> String + Send + Sync>,
    },
    /// In the gateway's process: the gateway, as the pipeline's (service) client sees it.
    InProcess(Arc<dyn Gateway>),
}

/// The link's settings (from `[bridge]`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkSettings {
    pub intake_window: u16,
    pub session_expiry: Duration,
    pub keep_alive: Duration,
}

/// What the pipeline subscribes to: submissions (each to be acknowledged) ...
fn submission_filters() -> [String; 3] {
    [
        format!("{}/open/+", schemas::topics::PREFIX),
        format!("{}/sessions/+/submit/+", schemas::topics::PREFIX),
        format!("{}/staff/+/submit", schemas::topics::PREFIX),
    ]
}

/// ... and presence (nothing to acknowledge), subscribed again at every start so that the
/// gateway hands over every subject's latest presence again.
fn presence_filter() -> String {
    format!("{}/sessions/+/presence/+", schemas::topics::PREFIX)
}

/// A submission as it arrived: its topic and payload as a client would publish them, and
/// where its answer goes besides the sender's ack topic.
pub(crate) struct Incoming {
    pub topic: String,
    pub payload: bytes::Bytes,
    pub origin: Origin,
    /// When the pipeline received it: how long it has waited decides whether it is still
    /// worth deciding (see `bridge.max_queue_delay_ms`).
    pub arrived: std::time::Instant,
}

pub(crate) enum Origin {
    /// Over MQTT: the delivery to acknowledge to the gateway once decided.
    Mqtt(Box<rumqttc::v5::mqttbytes::v5::Publish>),
    /// From the gateway in this process: the delivery to acknowledge once decided.
    InProcess(Box<dyn Delivered>),
    /// From inside the process (see `Commands`): the caller waiting for the answer.
    Command(tokio::sync::oneshot::Sender<crate::pipeline::Reply>),
    /// From a test.
    #[cfg(test)]
    Local,
}

impl Incoming {
    /// The MQTT 5 user property `key` the gateway set on this delivery, if any (clients' own
    /// user properties never reach the pipeline on protocol topics).
    pub(crate) fn property(&self, key: &str) -> Option<&str> {
        match &self.origin {
            Origin::Mqtt(publish) => publish
                .properties
                .as_ref()?
                .user_properties
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value.as_str()),
            Origin::InProcess(delivery) => delivery.property(key),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn local(topic: &str, payload: impl Into<bytes::Bytes>) -> Self {
        Self {
            topic: topic.to_owned(),
            payload: payload.into(),
            origin: Origin::Local,
            arrived: std::time::Instant::now(),
        }
    }
}

/// A presence a subject published in a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Heard {
    pub session_id: String,
    pub subject: String,
    pub status: schemas::wire::PresenceStatus,
}

impl Heard {
    /// The presence a publish carries, if it is a well-formed one on a presence topic.
    fn of(topic: &str, payload: &[u8]) -> Option<Self> {
        let schemas::topics::Topic::Session {
            session,
            kind: schemas::topics::SessionTopic::Presence,
            subject: Some(subject),
        } = schemas::topics::Topic::parse(topic)?
        else {
            return None;
        };
        let presence: schemas::wire::Presence = serde_json::from_slice(payload).ok()?;
        Some(Self {
            session_id: session.to_owned(),
            subject: subject.to_owned(),
            status: presence.status,
        })
    }
}

fn is_presence(topic: &str) -> bool {
    matches!(
        schemas::topics::Topic::parse(topic),
        Some(schemas::topics::Topic::Session {
            kind: schemas::topics::SessionTopic::Presence,
            ..
        })
    )
}

/// When the gateway received a submission, from its `RECEIVED_AT_PROPERTY` (milliseconds
/// since the Unix epoch), as an instant of this process; now if it does not say.
fn received_at(stamp: Option<&str>) -> std::time::Instant {
    let now = std::time::Instant::now();
    let Some(received) = stamp.and_then(|value| value.parse::<u128>().ok()) else {
        return now;
    };
    let epoch_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    let waited = u64::try_from(epoch_now.saturating_sub(received)).unwrap_or(u64::MAX);
    now.checked_sub(Duration::from_millis(waited))
        .unwrap_or(now)
}

/// What reaches the pipeline through the link.
pub(crate) enum Arrival {
    Submission(Incoming),
    Presence(Heard),
}

/// The receiving side of the link, for the one who decides (taken once per start).
pub(crate) enum Intake {
    Mqtt {
        submissions: mpsc::UnboundedReceiver<Incoming>,
        presence: mpsc::UnboundedReceiver<Heard>,
    },
    InProcess {
        gateway: Arc<dyn Gateway>,
        holder: u64,
    },
}

impl Intake {
    /// The next arrival; `None` once the link is gone. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Arrival> {
        match self {
            Intake::Mqtt {
                submissions,
                presence,
            } => tokio::select! {
                submission = submissions.recv() => submission.map(Arrival::Submission),
                Some(heard) = presence.recv() => Some(Arrival::Presence(heard)),
            },
            Intake::InProcess { gateway, holder } => loop {
                let delivery = gateway.recv(*holder).await?;
                if let Some(arrival) = in_process::arrival(&**gateway, delivery) {
                    return Some(arrival);
                }
            },
        }
    }

    /// The next submission or presence already there, without waiting.
    pub fn try_recv(&mut self) -> Option<Arrival> {
        match self {
            Intake::Mqtt {
                submissions,
                presence,
            } => submissions
                .try_recv()
                .ok()
                .map(Arrival::Submission)
                .or_else(|| presence.try_recv().ok().map(Arrival::Presence)),
            Intake::InProcess { gateway, holder } => loop {
                let delivery = gateway.try_recv(*holder)?;
                if let Some(arrival) = in_process::arrival(&**gateway, delivery) {
                    return Some(arrival);
                }
            },
        }
    }

    /// Submissions waiting to be taken.
    pub fn len(&self) -> usize {
        match self {
            Intake::Mqtt { submissions, .. } => submissions.len(),
            Intake::InProcess { gateway, .. } => gateway.queued(),
        }
    }
}

/// The link was lost: what was not acknowledged is handed over again at the next start.
#[derive(Debug, thiserror::Error)]
#[error("the link to the gateway was lost: {0}")]
pub(crate) struct LinkLost(String);

/// The link, shared by those who publish and acknowledge.
pub(crate) enum Link {
    Mqtt(mqtt::MqttLink),
    InProcess(Arc<dyn Gateway>),
}

impl Link {
    /// Starts the link; `ready` turns true once submissions are being received (and, over MQTT,
    /// false whenever the connection is down). Returns it with its intake.
    pub fn start(
        broker: &BrokerLink,
        settings: LinkSettings,
        ready: watch::Sender<bool>,
    ) -> (Self, Intake) {
        match broker {
            BrokerLink::Mqtt {
                addr,
                client_id,
                token,
            } => {
                let (link, (submissions, presence)) =
                    mqtt::MqttLink::start(*addr, client_id, token.clone(), settings, ready);
                (
                    Link::Mqtt(link),
                    Intake::Mqtt {
                        submissions,
                        presence,
                    },
                )
            }
            BrokerLink::InProcess(gateway) => {
                let holder = in_process::start(&**gateway, ready);
                (
                    Link::InProcess(gateway.clone()),
                    Intake::InProcess {
                        gateway: gateway.clone(),
                        holder,
                    },
                )
            }
        }
    }

    /// The largest packet the gateway accepts from the pipeline, in bytes.
    pub fn max_packet(&self) -> Arc<AtomicUsize> {
        match self {
            Link::Mqtt(link) => link.max_packet(),
            Link::InProcess(gateway) => Arc::new(AtomicUsize::new(gateway.max_packet_size())),
        }
    }

    /// Publishes at QoS 1 (retained if `retain`).
    pub async fn publish(
        &self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), LinkLost> {
        match self {
            Link::Mqtt(link) => link
                .publish(topic, retain, payload)
                .await
                .map_err(|error| LinkLost(error.to_string())),
            Link::InProcess(gateway) => {
                // A refusal is the pipeline's defect, not the link's: logged, and the rest of
                // the batch goes on (over MQTT the gateway would refuse it in its PUBACK).
                if let Err(error) = gateway.publish(&topic, payload, retain) {
                    tracing::error!(%topic, %error, "the gateway refused a publish of the pipeline");
                }
                Ok(())
            }
        }
    }

    /// Acknowledges decided submissions to the gateway, after their answers were published.
    pub async fn ack(&self, decided: &[Incoming]) -> Result<(), LinkLost> {
        match self {
            Link::Mqtt(link) => link
                .ack(decided)
                .await
                .map_err(|error| LinkLost(error.to_string())),
            Link::InProcess(gateway) => {
                for incoming in decided {
                    if let Origin::InProcess(delivery) = &incoming.origin {
                        gateway.ack(&**delivery);
                    }
                }
                Ok(())
            }
        }
    }

    /// Ends the link (the gateway keeps what was not acknowledged for the next start).
    pub async fn close(&self) {
        if let Link::Mqtt(link) = self {
            link.close().await;
        }
    }
}
