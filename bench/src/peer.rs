//! One chat participant: an MQTT client speaking the courtchat protocol, whose event loop runs in
//! its own task and records what arrives with the time it arrived.
//!
//! Setup steps (subscribe, open, join, lock) wait for their answers through [`Peer::expect`];
//! during a run the driver records stream entries and acknowledgements itself, so that the time
//! of arrival is taken the moment the packet is read, not when someone gets round to looking.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode,
};
use schemas::topics::{SessionTopic, Topic};
use schemas::wire::{
    Ack, Action, Channel, OpenSession, Outcome, ParticipantRole, StreamContent, StreamEntry,
    Submission,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::BenchError;

/// Mints the token (the CONNECT password) for a subject in its role in the sessions it takes
/// part in (the scenarios use applicants and agents).
pub type TokenMinter = Box<dyn Fn(&str, ParticipantRole) -> String + Send + Sync>;

/// A server that speaks the courtchat protocol.
pub struct ChatTarget {
    pub name: String,
    pub addr: SocketAddr,
    pub token: TokenMinter,
    /// The server's database, to register staff and to check the stored order afterwards.
    pub store: store::Store,
    /// The server's process on this machine, when known: its CPU is then read over the run.
    pub pid: Option<u32>,
}

/// Counters every participant of a run adds to, so that the run knows when it has drained.
#[derive(Default)]
pub(crate) struct Counters {
    /// Submissions sent whose acknowledgement the run waits for.
    pub sent: AtomicUsize,
    pub acked: AtomicUsize,
    /// Messages (not lock renewals) acknowledged as stored.
    pub accepted: AtomicUsize,
    /// Stream entries of kind message received, summed over participants.
    pub delivered: AtomicUsize,
}

/// An acknowledgement of a submission sent during the measured run.
#[derive(Clone, Debug)]
pub(crate) struct AckRecord {
    pub client_msg_id: String,
    /// When the submission was sent and its acknowledgement read, since the run's epoch.
    pub sent_at: Duration,
    pub acked_at: Duration,
    /// `Ok(seq)` when stored (with its place in the stream, if it has one), else the reason.
    pub outcome: Result<Option<u64>, String>,
}

/// What a participant received, in arrival order.
#[derive(Default)]
pub(crate) struct Observed {
    pub subject: String,
    /// Stream entries on the session's `messages` topic: (seq, arrival since the epoch).
    pub entries: Vec<(u64, Duration)>,
    /// Acknowledgements of measured submissions (client message ids starting with `m`, `r`
    /// or `l`, which carry their send time).
    pub acks: Vec<AckRecord>,
    /// Set when the connection failed before the participant was told to stop.
    pub failure: Option<String>,
}

/// What the lock-holding agent answers to each applicant message.
pub(crate) struct ReplyPlan {
    pub applicant: String,
    pub submit_topic: String,
    pub body: String,
}

/// What setup waits for.
#[derive(Debug)]
pub(crate) enum SetupEvent {
    SubAck(Vec<SubscribeReasonCode>),
    Ack(Ack),
}

pub(crate) struct Peer {
    pub subject: String,
    pub client: AsyncClient,
    setup: mpsc::UnboundedReceiver<SetupEvent>,
    pub reply: Arc<OnceLock<ReplyPlan>>,
    stop: watch::Sender<bool>,
    driver: JoinHandle<Observed>,
}

/// The client's request queue: deep enough that an agent replying from inside its event-loop
/// task (with `try_publish`) never finds it full at the rates measured here.
const REQUEST_QUEUE: usize = 1024;
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

impl Peer {
    /// Connects and starts the driver; the client is connected when this returns.
    pub async fn connect(
        target: &ChatTarget,
        subject: &str,
        role: ParticipantRole,
        epoch: Instant,
        counters: Arc<Counters>,
    ) -> Result<Self, BenchError> {
        let mut options =
            MqttOptions::new(subject, target.addr.ip().to_string(), target.addr.port());
        options.set_keep_alive(Duration::from_secs(60));
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        options.set_inflight(100);
        options.set_credentials(subject, (target.token)(subject, role));
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        // As browsers and most MQTT libraries do; with Nagle's algorithm a reply written while
        // an earlier packet is unacknowledged waits for the server's delayed ACK.
        eventloop.network_options.set_tcp_nodelay(true);
        let connected = tokio::time::timeout(SETUP_TIMEOUT, eventloop.poll()).await;
        match connected {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack))))
                if ack.code == ConnectReturnCode::Success => {}
            other => {
                return Err(BenchError::Connect {
                    target: target.name.clone(),
                    reason: format!("{subject}: {other:?}"),
                });
            }
        }
        let (setup_tx, setup) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let reply = Arc::new(OnceLock::new());
        let driver = tokio::spawn(drive(
            eventloop,
            Driver {
                client: client.clone(),
                setup: setup_tx,
                reply: Arc::clone(&reply),
                counters,
                epoch,
                replies: 0,
            },
            stop_rx,
        ));
        Ok(Self {
            subject: subject.to_owned(),
            client,
            setup,
            reply,
            stop,
            driver,
        })
    }

    /// Subscribes at QoS 1 and waits for the SUBACK; an error names a refused filter.
    pub async fn subscribe(&mut self, filter: &str) -> Result<(), String> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .map_err(|err| err.to_string())?;
        match self
            .expect(|event| matches!(event, SetupEvent::SubAck(_)))
            .await?
        {
            SetupEvent::SubAck(codes)
                if codes
                    .iter()
                    .all(|code| matches!(code, SubscribeReasonCode::Success(_))) =>
            {
                Ok(())
            }
            other => Err(format!(
                "{}: subscription to {filter} refused: {other:?}",
                self.subject
            )),
        }
    }

    /// Unsubscribes without waiting for the UNSUBACK: the server handles a client's packets in
    /// order, so its later requests already see the subscription gone.
    pub async fn unsubscribe(&mut self, filter: &str) -> Result<(), String> {
        self.client
            .unsubscribe(filter)
            .await
            .map_err(|err| err.to_string())
    }

    /// Publishes `payload` at QoS 1 and waits for the acknowledgement of `client_msg_id`.
    pub async fn request(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        client_msg_id: &str,
    ) -> Result<Ack, String> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|err| err.to_string())?;
        let wanted = client_msg_id.to_owned();
        match self
            .expect(
                move |event| matches!(event, SetupEvent::Ack(ack) if ack.client_msg_id == wanted),
            )
            .await?
        {
            SetupEvent::Ack(ack) => Ok(ack),
            SetupEvent::SubAck(_) => Err("unexpected SUBACK".to_owned()),
        }
    }

    /// Asks for a new session (as an applicant subscribed to its ack topic) and returns its id.
    pub async fn open_session(
        &mut self,
        client_msg_id: &str,
        channel: Channel,
    ) -> Result<String, String> {
        let open = OpenSession {
            v: 1,
            client_msg_id: client_msg_id.to_owned(),
            channel,
            topic: None,
            first_message: None,
        };
        let topic = Topic::Open {
            subject: &self.subject,
        }
        .to_string();
        let payload = serde_json::to_vec(&open).unwrap_or_default();
        let ack = self.request(topic, payload, client_msg_id).await?;
        match (ack.outcome, ack.session_id) {
            (Outcome::Accepted { .. }, Some(session_id)) => Ok(session_id),
            (outcome, _) => Err(format!("{}: open refused: {outcome:?}", self.subject)),
        }
    }

    /// Submits `action` to a session and waits for it to be accepted.
    pub async fn submit(
        &mut self,
        session: &str,
        client_msg_id: &str,
        action: Action,
    ) -> Result<Ack, String> {
        let ack = self
            .request(
                submit_topic(session, &self.subject),
                submission(client_msg_id, action),
                client_msg_id,
            )
            .await?;
        match &ack.outcome {
            Outcome::Accepted { .. } => Ok(ack),
            Outcome::Rejected { reason, message } => Err(format!(
                "{}: {client_msg_id} rejected: {reason:?}: {message}",
                self.subject
            )),
        }
    }

    async fn expect(&mut self, wanted: impl Fn(&SetupEvent) -> bool) -> Result<SetupEvent, String> {
        let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.setup.recv()).await {
                Ok(Some(event)) if wanted(&event) => return Ok(event),
                Ok(Some(_)) => {}
                Ok(None) => return Err(format!("{}: connection ended", self.subject)),
                Err(_) => {
                    return Err(format!(
                        "{}: no answer within {SETUP_TIMEOUT:?}",
                        self.subject
                    ));
                }
            }
        }
    }

    /// Disconnects and returns what the participant observed.
    pub async fn finish(self) -> Observed {
        let _ = self.stop.send(true);
        let _ = self.client.try_disconnect();
        let mut observed = self.driver.await.unwrap_or_default();
        observed.subject = self.subject;
        observed
    }
}

pub(crate) fn submit_topic(session: &str, subject: &str) -> String {
    Topic::Session {
        session,
        kind: SessionTopic::Submit,
        subject: Some(subject),
    }
    .to_string()
}

pub(crate) fn messages_topic(session: &str) -> String {
    Topic::Session {
        session,
        kind: SessionTopic::Messages,
        subject: None,
    }
    .to_string()
}

pub(crate) fn ack_topic(subject: &str) -> String {
    Topic::Ack { subject }.to_string()
}

pub(crate) fn submission(client_msg_id: &str, action: Action) -> Vec<u8> {
    serde_json::to_vec(&Submission {
        v: 1,
        client_msg_id: client_msg_id.to_owned(),
        action,
    })
    .unwrap_or_default()
}

/// A measured submission's client message id: a kind letter, a number unique per sender, and
/// the send time in nanoseconds since the run's epoch, which its acknowledgement echoes.
pub(crate) fn measured_id(kind: char, n: u64, sent_at: Duration) -> String {
    format!("{kind}{n}-{}", sent_at.as_nanos())
}

fn sent_at(client_msg_id: &str) -> Option<Duration> {
    let (_, nanos) = client_msg_id.rsplit_once('-')?;
    Some(Duration::from_nanos(nanos.parse().ok()?))
}

struct Driver {
    client: AsyncClient,
    setup: mpsc::UnboundedSender<SetupEvent>,
    reply: Arc<OnceLock<ReplyPlan>>,
    counters: Arc<Counters>,
    epoch: Instant,
    replies: u64,
}

async fn drive(
    mut eventloop: EventLoop,
    mut me: Driver,
    mut stop: watch::Receiver<bool>,
) -> Observed {
    let mut observed = Observed::default();
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return observed,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let at = me.epoch.elapsed();
                match Topic::parse(&publish.topic) {
                    Some(Topic::Ack { .. }) => me.ack(&publish.payload, at, &mut observed),
                    Some(Topic::Session {
                        kind: SessionTopic::Messages,
                        ..
                    }) => me.entry(&publish.payload, at, &mut observed),
                    _ => {}
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let _ = me.setup.send(SetupEvent::SubAck(ack.return_codes));
            }
            Ok(_) => {}
            Err(err) => {
                if !*stop.borrow() {
                    observed.failure = Some(err.to_string());
                }
                return observed;
            }
        }
    }
}

impl Driver {
    fn ack(&mut self, payload: &[u8], at: Duration, observed: &mut Observed) {
        let Ok(ack) = serde_json::from_slice::<Ack>(payload) else {
            return;
        };
        let measured = ack.client_msg_id.starts_with(['m', 'r', 'l']);
        let sent = sent_at(&ack.client_msg_id).filter(|_| measured);
        let Some(sent_at) = sent else {
            let _ = self.setup.send(SetupEvent::Ack(ack));
            return;
        };
        let outcome = match &ack.outcome {
            Outcome::Accepted { seq } => Ok(*seq),
            Outcome::Rejected { reason, .. } => Err(format!("{reason:?}")),
        };
        if outcome.is_ok() && !ack.client_msg_id.starts_with('l') {
            self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.acked.fetch_add(1, Ordering::Relaxed);
        observed.acks.push(AckRecord {
            client_msg_id: ack.client_msg_id,
            sent_at,
            acked_at: at,
            outcome,
        });
    }

    fn entry(&mut self, payload: &[u8], at: Duration, observed: &mut Observed) {
        let Ok(entry) = serde_json::from_slice::<StreamEntry>(payload) else {
            return;
        };
        observed.entries.push((entry.seq, at));
        if !matches!(entry.content, StreamContent::Message { .. }) {
            return;
        }
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        // The agent holding the lock answers every applicant message as soon as it shows.
        let Some(plan) = self.reply.get() else {
            return;
        };
        if entry.sender != plan.applicant {
            return;
        }
        self.replies += 1;
        let id = measured_id('r', self.replies, self.epoch.elapsed());
        let payload = submission(
            &id,
            Action::Message {
                body: plan.body.clone(),
            },
        );
        // The request queue is drained by this very task, so waiting on it could deadlock.
        match self
            .client
            .try_publish(plan.submit_topic.clone(), QoS::AtLeastOnce, false, payload)
        {
            Ok(()) => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => tracing::warn!(error = %err, "reply not sent"),
        }
    }
}
