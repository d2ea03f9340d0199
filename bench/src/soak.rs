//! Scenario `soak`: opens and closes many sessions, one after another on a few workers, and
//! samples the server's resident memory as it goes. Memory that grows with every session that
//! ever existed shows as a slope; memory that follows the live sessions stays flat.
//!
//! Each session is what a short real one is: a new applicant (a new client id) connects,
//! opens a session and subscribes to it; an agent from a fixed pool joins, takes the reply
//! lock and subscribes; each writes one message; the agent closes the session and unsubscribes;
//! the applicant disconnects.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use schemas::db::entities::agent::StaffRole;
use schemas::wire::{Action, Channel, LockOp, ParticipantRole};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::peer::{ChatTarget, Counters, Peer, ack_topic, messages_topic};
use crate::{BenchError, MemoryProbe};

#[derive(Clone, Debug)]
pub struct SoakConfig {
    pub sessions: usize,
    /// Sessions in flight at once (one agent each).
    pub workers: usize,
    /// Read the server's memory after every this many sessions.
    pub sample_every: usize,
    /// The share of sessions treated as warm-up, before the reference reading.
    pub warm_up: f64,
    pub prefix: String,
}

impl Default for SoakConfig {
    fn default() -> Self {
        Self {
            sessions: 1000,
            workers: 16,
            sample_every: 100,
            warm_up: 0.1,
            prefix: "soak".to_owned(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    pub target: String,
    pub sessions: usize,
    pub completed: usize,
    pub failed: usize,
    pub elapsed_ms: u64,
    pub sessions_per_sec: f64,
    /// (sessions completed, resident bytes), in order.
    pub samples: Vec<(usize, u64)>,
    /// Resident memory at the end of the warm-up, and the highest and last readings after it.
    pub rss_after_warm_up: u64,
    pub rss_max_after_warm_up: u64,
    pub rss_end: u64,
    /// (max after warm-up − at warm-up) / at warm-up, in percent.
    pub growth_percent: f64,
}

/// Runs the scenario; `memory` reads the server's resident bytes.
pub async fn soak(
    target: &ChatTarget,
    config: &SoakConfig,
    memory: &MemoryProbe,
) -> Result<SoakReport, BenchError> {
    let fail = |reason: String| BenchError::Client {
        target: target.name.clone(),
        reason,
    };
    let workers = config.workers.clamp(1, config.sessions.max(1));
    let staff: Vec<(String, StaffRole)> = (0..workers)
        .map(|w| (format!("{}-agent{w}", config.prefix), StaffRole::Agent))
        .collect();
    target
        .store
        .register_staff(&staff)
        .await
        .map_err(|err| fail(err.to_string()))?;
    let epoch = Instant::now();
    let counters = Arc::new(Counters::default());
    let mut agents = Vec::with_capacity(workers);
    for (subject, _) in &staff {
        let mut agent = Peer::connect(
            target,
            subject,
            ParticipantRole::Agent,
            epoch,
            Arc::clone(&counters),
        )
        .await?;
        agent.subscribe(&ack_topic(subject)).await.map_err(fail)?;
        agents.push(agent);
    }

    let next = AtomicUsize::new(0);
    let completed = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::<String>::new());
    let started = Instant::now();
    // Workers share one task: each spends its time waiting for the server, not computing.
    let work = futures_util::future::join_all(agents.iter_mut().map(|agent| async {
        loop {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if n >= config.sessions {
                break;
            }
            match one_session(target, config, n, agent, epoch, &counters).await {
                Ok(()) => {
                    completed.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => failures.lock().await.push(err),
            }
        }
    }));
    let samples = std::sync::Mutex::new(Vec::<(usize, u64)>::new());
    let sample = || {
        if let Some(rss) = memory() {
            let done = completed.load(Ordering::Relaxed);
            samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((done, rss));
        }
    };
    let sampler = async {
        let mut next_sample = 0;
        loop {
            if completed.load(Ordering::Relaxed) >= next_sample {
                sample();
                next_sample += config.sample_every.max(1);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = work => {}
        _ = sampler => {}
    }
    let elapsed = started.elapsed();
    // Let the server finish what the last sessions left behind (closing, disconnects).
    tokio::time::sleep(Duration::from_secs(2)).await;
    sample();
    for agent in agents {
        agent.finish().await;
    }

    let samples = samples.into_inner().unwrap_or_else(|p| p.into_inner());
    let failures = failures.into_inner();
    if let Some(first) = failures.first() {
        tracing::warn!(failed = failures.len(), first, "soak: sessions failed");
    }
    let completed = completed.into_inner();
    let warm = (config.sessions as f64 * config.warm_up) as usize;
    let reference = samples
        .iter()
        .find(|(done, _)| *done >= warm)
        .map_or(0, |(_, rss)| *rss);
    let after: Vec<u64> = samples
        .iter()
        .filter(|(done, _)| *done >= warm)
        .map(|(_, rss)| *rss)
        .collect();
    let max_after = after.iter().copied().max().unwrap_or(reference);
    Ok(SoakReport {
        target: target.name.clone(),
        sessions: config.sessions,
        completed,
        failed: failures.len(),
        elapsed_ms: elapsed.as_millis() as u64,
        sessions_per_sec: completed as f64 / elapsed.as_secs_f64().max(1e-9),
        rss_after_warm_up: reference,
        rss_max_after_warm_up: max_after,
        rss_end: samples.last().map_or(0, |(_, rss)| *rss),
        growth_percent: if reference > 0 {
            (max_after as f64 - reference as f64) * 100.0 / reference as f64
        } else {
            0.0
        },
        samples,
    })
}

async fn one_session(
    target: &ChatTarget,
    config: &SoakConfig,
    n: usize,
    agent: &mut Peer,
    epoch: Instant,
    counters: &Arc<Counters>,
) -> Result<(), String> {
    let subject = format!("{}-k{n}", config.prefix);
    let mut applicant = Peer::connect(
        target,
        &subject,
        ParticipantRole::Applicant,
        epoch,
        Arc::clone(counters),
    )
    .await
    .map_err(|err| err.to_string())?;
    let result = async {
        applicant.subscribe(&ack_topic(&subject)).await?;
        let session_id = applicant.open_session("soak-open", Channel::Phone).await?;
        let stream = messages_topic(&session_id);
        applicant.subscribe(&stream).await?;
        agent.submit(&session_id, "soak-join", Action::Join).await?;
        agent.subscribe(&stream).await?;
        agent
            .submit(
                &session_id,
                "soak-lock",
                Action::Lock {
                    op: LockOp::Acquire,
                },
            )
            .await?;
        let body = |text: &str| Action::Message {
            body: text.to_owned(),
        };
        applicant
            .submit(
                &session_id,
                "soak-question",
                body("When does my license expire?"),
            )
            .await?;
        agent
            .submit(
                &session_id,
                "soak-answer",
                body("On the date printed on its back."),
            )
            .await?;
        agent
            .submit(&session_id, "soak-close", Action::Close { reason: None })
            .await?;
        agent.unsubscribe(&stream).await
    }
    .await;
    applicant.finish().await;
    result
}
