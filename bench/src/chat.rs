//! Scenario `chat`: N sessions, each with one applicant and K agents, speaking the courtchat
//! protocol through real connections. Every applicant sends R messages per second for T seconds
//! (QoS 1); the agent holding the session's reply lock answers each one as it appears.
//!
//! Measured per message: the time from submission to its arrival at every participant on the
//! session's stream, and the time to the sender's acknowledgement. Verified against the database
//! afterwards: every acknowledged message is stored under the sequence number its
//! acknowledgement named, and every participant received every stream entry of the run exactly
//! once, in the stored order (which makes the order identical for everyone).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rumqttc::QoS;
use schemas::db::entities::{agent::StaffRole, message::MessageKind};
use schemas::wire::{Action, Channel, LockOp, ParticipantRole};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::peer::{
    ChatTarget, Counters, Observed, Peer, ReplyPlan, ack_topic, measured_id, messages_topic,
    submission, submit_topic,
};
use crate::process::{CpuWindow, ServerCpu};
use crate::stats::Percentiles;
use crate::{BenchError, MemoryProbe};

#[derive(Clone, Debug)]
pub struct ChatConfig {
    pub sessions: usize,
    /// Agents per session; the first holds the reply lock and answers.
    pub agents: usize,
    /// Messages per second each applicant sends.
    pub rate: f64,
    pub duration: Duration,
    /// Message body size in bytes.
    pub body: usize,
    /// Sessions set up at once.
    pub setup_parallelism: usize,
    /// How long to wait, after the last applicant message, for acknowledgements and deliveries.
    pub drain: Duration,
    /// How often the lock holder renews its lease (the server's default lease is 60 s).
    pub lock_renewal: Duration,
    /// Prefix of every subject, so that runs against one database do not collide.
    pub prefix: String,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            sessions: 10,
            agents: 2,
            rate: 1.0,
            duration: Duration::from_secs(5),
            body: 100,
            setup_parallelism: 64,
            drain: Duration::from_secs(30),
            lock_renewal: Duration::from_secs(20),
            prefix: "bench".to_owned(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ChatReport {
    pub target: String,
    pub sessions: usize,
    pub agents_per_session: usize,
    pub rate_per_applicant: f64,
    pub duration_s: f64,
    pub body_bytes: usize,
    /// Participants connected (sessions × (1 + agents)).
    pub connections: usize,
    pub setup_ms: u64,
    /// Messages submitted during the run (applicants' and agents' replies).
    pub submitted: usize,
    /// Acknowledged as stored.
    pub accepted: usize,
    /// Refused by the server, by reason.
    pub rejected: BTreeMap<String, usize>,
    /// Submitted but never acknowledged within the drain period.
    pub unacknowledged: usize,
    /// Acknowledged as stored but absent from the database (or stored under another seq).
    pub lost_acknowledged: usize,
    /// From the first submission to the last acknowledgement.
    pub elapsed_ms: u64,
    /// Stored messages per second over `elapsed_ms`.
    pub persisted_per_sec: f64,
    /// Stream entries every participant should have received (from the run's first entry on).
    pub deliveries_expected: usize,
    pub delivered: usize,
    pub missing_deliveries: usize,
    pub duplicate_deliveries: usize,
    /// Participants whose entries did not arrive in the stored order.
    pub out_of_order_participants: usize,
    /// Sessions whose every participant saw exactly the stored stream, in order.
    pub sessions_verified: usize,
    pub deliveries_per_sec: f64,
    /// Submission to arrival at each participant (the sender included), in µs.
    pub latency: Percentiles,
    /// Submission to the sender's acknowledgement, in µs.
    pub ack_latency: Percentiles,
    /// Lock renewals refused (the answering agent lost its lock).
    pub lock_renewals_refused: usize,
    /// Participants whose connection failed during the run.
    pub connection_failures: usize,
    /// The server's resident memory before setup, with every session set up, and after the
    /// run (before the participants disconnect).
    pub rss_bytes: [Option<u64>; 3],
    /// The server's CPU over the traffic and the drain; per delivery here means per message
    /// stored (accepted), the figure to set beside a broker's CPU per message relayed.
    pub server_cpu: ServerCpu,
}

impl ChatReport {
    /// Nothing acknowledged was lost, nothing missing, duplicated or out of order, nothing
    /// refused or left unanswered.
    pub fn is_clean(&self) -> bool {
        self.lost_acknowledged == 0
            && self.unacknowledged == 0
            && self.rejected.is_empty()
            && self.missing_deliveries == 0
            && self.duplicate_deliveries == 0
            && self.out_of_order_participants == 0
            && self.connection_failures == 0
            && self.sessions_verified == self.sessions
    }

    /// [`ChatReport::is_clean`] for a run that offers more than the server can store: `busy`
    /// refusals are the expected answer to the excess; anything else must be clean.
    pub fn is_clean_under_overload(&self) -> bool {
        let only_busy = self.rejected.keys().all(|reason| reason == "Busy");
        only_busy
            && Self {
                rejected: BTreeMap::new(),
                ..self.clone()
            }
            .is_clean()
    }
}

/// One session's participants: the applicant first, then the agents (the first holds the lock).
struct Rig {
    session_id: String,
    applicant: Peer,
    agents: Vec<Peer>,
}

/// Runs the scenario. Registers the agents it needs as staff first.
pub async fn chat(
    target: &ChatTarget,
    config: &ChatConfig,
    memory: &MemoryProbe,
) -> Result<ChatReport, BenchError> {
    let fail = |reason: String| BenchError::Client {
        target: target.name.clone(),
        reason,
    };
    let staff: Vec<(String, StaffRole)> = (0..config.sessions)
        .flat_map(|n| {
            (0..config.agents).map(move |k| (agent_subject(&config.prefix, n, k), StaffRole::Agent))
        })
        .collect();
    target
        .store
        .register_staff(&staff)
        .await
        .map_err(|err| fail(err.to_string()))?;

    let rss_idle = memory();
    let epoch = Instant::now();
    let counters = Arc::new(Counters::default());
    let body = "x".repeat(config.body.max(1));

    // Setup: connect, open, join, lock, subscribe: all before the first measured message.
    let setup_started = Instant::now();
    let gate = Arc::new(Semaphore::new(config.setup_parallelism.max(1)));
    let mut setups = Vec::with_capacity(config.sessions);
    for n in 0..config.sessions {
        let gate = Arc::clone(&gate);
        let counters = Arc::clone(&counters);
        let target: &ChatTarget = target;
        let (config, body) = (config.clone(), body.clone());
        setups.push(async move {
            let _permit = gate.acquire().await;
            set_up(target, &config, n, epoch, counters, body).await
        });
    }
    let mut rigs = Vec::with_capacity(config.sessions);
    for result in futures_util::future::join_all(setups).await {
        rigs.push(result.map_err(fail)?);
    }
    let setup_ms = setup_started.elapsed().as_millis() as u64;
    let rss_set_up = memory();
    tracing::info!(
        sessions = rigs.len(),
        setup_ms,
        "chat: every session is set up"
    );

    // The run: applicants spread evenly over the first period so that the load is smooth.
    let cpu = CpuWindow::start(target.pid);
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let per_applicant = (config.rate * config.duration.as_secs_f64()).round() as u64;
    let period = Duration::from_secs_f64(1.0 / config.rate.max(1e-6));
    let mut senders = Vec::new();
    for (n, rig) in rigs.iter().enumerate() {
        let offset = period.mul_f64(n as f64 / config.sessions.max(1) as f64);
        let client = rig.applicant.client.clone();
        let topic = submit_topic(&rig.session_id, &rig.applicant.subject);
        let (sent, body) = (Arc::clone(&counters), body.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..per_applicant {
                tokio::time::sleep_until(start + offset + period.mul_f64(i as f64)).await;
                let id = measured_id('m', i, epoch.elapsed());
                let payload = submission(&id, Action::Message { body: body.clone() });
                if client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                    .await
                    .is_err()
                {
                    break;
                }
                sent.sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
        // The answering agent keeps its lease for as long as the run lasts.
        let holder = &rig.agents[0];
        let client = holder.client.clone();
        let topic = submit_topic(&rig.session_id, &holder.subject);
        let (sent, every, until) = (
            Arc::clone(&counters),
            config.lock_renewal,
            start + config.duration,
        );
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            loop {
                tokio::time::sleep_until(start + offset + every * (n + 1)).await;
                if tokio::time::Instant::now() >= until {
                    break;
                }
                n += 1;
                let id = measured_id('l', u64::from(n), epoch.elapsed());
                let payload = submission(&id, Action::Lock { op: LockOp::Renew });
                if client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
                    .await
                    .is_ok()
                {
                    sent.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for sender in senders {
        let _ = sender.await;
    }
    // Drain: every submission answered and every accepted message seen by every participant.
    let participants = 1 + config.agents;
    let drain_until = tokio::time::Instant::now() + config.drain;
    loop {
        let sent = counters.sent.load(Ordering::Relaxed);
        let acked = counters.acked.load(Ordering::Relaxed);
        let accepted = counters.accepted.load(Ordering::Relaxed);
        let delivered = counters.delivered.load(Ordering::Relaxed);
        if acked >= sent && delivered >= accepted * participants {
            break;
        }
        if tokio::time::Instant::now() >= drain_until {
            tracing::warn!(sent, acked, accepted, delivered, "chat: drain period over");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server_cpu = cpu.finish();

    let mut sessions = Vec::with_capacity(rigs.len());
    for rig in rigs {
        let mut observed = vec![rig.applicant.finish().await];
        for agent in rig.agents {
            observed.push(agent.finish().await);
        }
        sessions.push((rig.session_id, observed));
    }
    let rss_after = memory();
    let mut report = verify(
        target,
        config,
        setup_ms,
        sessions,
        counters.sent.load(Ordering::Relaxed),
    )
    .await?;
    report.rss_bytes = [rss_idle, rss_set_up, rss_after];
    report.server_cpu = server_cpu.per_delivery(report.accepted);
    Ok(report)
}

async fn set_up(
    target: &ChatTarget,
    config: &ChatConfig,
    n: usize,
    epoch: Instant,
    counters: Arc<Counters>,
    body: String,
) -> Result<Rig, String> {
    let subject = format!("{}-k{n}", config.prefix);
    let mut applicant = Peer::connect(
        target,
        &subject,
        ParticipantRole::Applicant,
        epoch,
        Arc::clone(&counters),
    )
    .await
    .map_err(|err| err.to_string())?;
    applicant.subscribe(&ack_topic(&subject)).await?;
    let session_id = applicant.open_session("setup-open", Channel::Kiosk).await?;
    applicant.subscribe(&messages_topic(&session_id)).await?;

    let mut agents = Vec::with_capacity(config.agents);
    for k in 0..config.agents {
        let subject = agent_subject(&config.prefix, n, k);
        let mut agent = Peer::connect(
            target,
            &subject,
            ParticipantRole::Agent,
            epoch,
            Arc::clone(&counters),
        )
        .await
        .map_err(|err| err.to_string())?;
        agent.subscribe(&ack_topic(&subject)).await?;
        agent
            .submit(&session_id, "setup-join", Action::Join)
            .await?;
        // The membership reaches the gateway's authorizer on its own path; a subscription that
        // overtakes it is refused, so it is asked again.
        let mut tries = 0;
        loop {
            match agent.subscribe(&messages_topic(&session_id)).await {
                Ok(()) => break,
                Err(err) if tries >= 20 => return Err(err),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        agents.push(agent);
    }
    if let Some(holder) = agents.first_mut() {
        holder
            .submit(
                &session_id,
                "setup-lock",
                Action::Lock {
                    op: LockOp::Acquire,
                },
            )
            .await?;
        let plan = ReplyPlan {
            applicant: applicant.subject.clone(),
            submit_topic: submit_topic(&session_id, &holder.subject),
            body,
        };
        let _ = holder.reply.set(plan);
    }
    Ok(Rig {
        session_id,
        applicant,
        agents,
    })
}

fn agent_subject(prefix: &str, session: usize, agent: usize) -> String {
    format!("{prefix}-a{session}-{agent}")
}

/// Checks what every participant saw against the database and computes the figures.
async fn verify(
    target: &ChatTarget,
    config: &ChatConfig,
    setup_ms: u64,
    sessions: Vec<(String, Vec<Observed>)>,
    submitted_with_renewals: usize,
) -> Result<ChatReport, BenchError> {
    let mut report = ChatReport {
        target: target.name.clone(),
        sessions: sessions.len(),
        agents_per_session: config.agents,
        rate_per_applicant: config.rate,
        duration_s: config.duration.as_secs_f64(),
        body_bytes: config.body,
        connections: sessions.len() * (1 + config.agents),
        setup_ms,
        submitted: 0,
        accepted: 0,
        rejected: BTreeMap::new(),
        unacknowledged: 0,
        lost_acknowledged: 0,
        elapsed_ms: 0,
        persisted_per_sec: 0.0,
        deliveries_expected: 0,
        delivered: 0,
        missing_deliveries: 0,
        duplicate_deliveries: 0,
        out_of_order_participants: 0,
        sessions_verified: 0,
        deliveries_per_sec: 0.0,
        latency: Percentiles::default(),
        ack_latency: Percentiles::default(),
        lock_renewals_refused: 0,
        connection_failures: 0,
        rss_bytes: [None; 3],
        server_cpu: ServerCpu::default(),
    };
    let mut latencies = Vec::new();
    let mut ack_latencies = Vec::new();
    let (mut first_sent, mut last_acked, mut last_delivery) =
        (Duration::MAX, Duration::ZERO, Duration::ZERO);
    let mut renewals = 0;
    for (session_id, observed) in &sessions {
        let stored = target
            .store
            .session_entries(session_id)
            .await
            .map_err(|err| BenchError::Client {
                target: target.name.clone(),
                reason: err.to_string(),
            })?;
        let stored_by_seq: HashMap<i64, (&str, &str)> = stored
            .iter()
            .map(|m| (m.seq, (m.sender.as_str(), m.client_msg_id.as_str())))
            .collect();
        // When each stored message was submitted, from its sender's acknowledgement.
        let mut submitted_at: HashMap<u64, Duration> = HashMap::new();
        for seen in observed {
            if seen.failure.is_some() {
                report.connection_failures += 1;
            }
            for ack in &seen.acks {
                if ack.client_msg_id.starts_with('l') {
                    renewals += 1;
                    if ack.outcome.is_err() {
                        report.lock_renewals_refused += 1;
                    }
                    continue;
                }
                first_sent = first_sent.min(ack.sent_at);
                last_acked = last_acked.max(ack.acked_at);
                ack_latencies.push(ack.acked_at.saturating_sub(ack.sent_at));
                match &ack.outcome {
                    Ok(Some(seq)) => {
                        report.accepted += 1;
                        submitted_at.insert(*seq, ack.sent_at);
                        let stored_as = stored_by_seq.get(&(*seq as i64));
                        if stored_as != Some(&(seen.subject.as_str(), ack.client_msg_id.as_str())) {
                            report.lost_acknowledged += 1;
                        }
                    }
                    Ok(None) => report.lost_acknowledged += 1,
                    Err(reason) => *report.rejected.entry(reason.clone()).or_default() += 1,
                }
            }
        }
        // Every participant subscribed before the run began, so each must hold every entry on
        // the stream from the run's first one on, exactly once and in the stored order.
        let Some(first) = submitted_at.keys().min().copied() else {
            continue;
        };
        let expected: Vec<u64> = stored
            .iter()
            .filter(|m| m.kind != MessageKind::Note && m.seq as u64 >= first)
            .map(|m| m.seq as u64)
            .collect();
        let mut session_clean = true;
        for seen in observed {
            let got: Vec<u64> = seen
                .entries
                .iter()
                .map(|(seq, _)| *seq)
                .filter(|seq| *seq >= first)
                .collect();
            report.deliveries_expected += expected.len();
            let mut unique: Vec<u64> = got.clone();
            unique.sort_unstable();
            unique.dedup();
            let duplicates = got.len() - unique.len();
            let missing = expected
                .iter()
                .filter(|seq| unique.binary_search(seq).is_err())
                .count();
            report.delivered += got.len() - duplicates;
            report.duplicate_deliveries += duplicates;
            report.missing_deliveries += missing;
            let in_order = got.windows(2).all(|pair| pair[0] < pair[1]);
            if !in_order {
                report.out_of_order_participants += 1;
            }
            session_clean &= duplicates == 0 && missing == 0 && in_order && got == expected;
            for (seq, at) in &seen.entries {
                if let Some(sent) = submitted_at.get(seq) {
                    latencies.push(at.saturating_sub(*sent));
                    last_delivery = last_delivery.max(*at);
                }
            }
        }
        if session_clean {
            report.sessions_verified += 1;
        }
    }
    let acked = report.accepted + report.rejected.values().sum::<usize>();
    report.submitted = submitted_with_renewals.saturating_sub(renewals).max(acked);
    report.unacknowledged = report.submitted - acked;
    if first_sent < last_acked {
        let elapsed = last_acked - first_sent;
        report.elapsed_ms = elapsed.as_millis() as u64;
        report.persisted_per_sec = report.accepted as f64 / elapsed.as_secs_f64();
        report.deliveries_per_sec = report.delivered as f64
            / last_delivery
                .max(last_acked)
                .saturating_sub(first_sent)
                .as_secs_f64();
    }
    report.latency = Percentiles::of(&mut latencies);
    report.ack_latency = Percentiles::of(&mut ack_latencies);
    Ok(report)
}
