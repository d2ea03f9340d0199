//! One life of the pipeline: its link, its caches, and two stages that overlap.
//!
//! The decider (this task) takes submissions (from the gateway and from in-process commands,
//! in arrival order) in batches and decides each batch against the sessions' views; the
//! committer (on a thread of its own, see `spawn_committer`) stores a decided batch in one transaction, then publishes what
//! it produced and lets the gateway know it is done with its submissions. While the committer
//! stores batch N, the decider decides batch N+1; it hands N+1 over only once N is stored, so
//! at most one batch is decided and not yet stored, and what it answered counts as stored for
//! the next (`Pending`). Persist-before-deliver holds (only the committer publishes, after the
//! commit) and each session keeps one order (batches are stored in the order decided).
//!
//! If storing a batch fails, the views (which already include that batch's decisions and the
//! next one's) are dropped, and both batches are decided again one submission at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::answers::{busy, unavailable, unreachable};
use super::attendance::Attendance;
use super::batch::{Decided, Pending};
use super::commands::Intake;
use super::outbox::Outbox;
use super::resync::PageLimits;
use super::roster::{Departure, Roster, StaffSettings};
use super::view::Views;
use super::{BridgeConfig, PipelineError, panic_message};
use crate::audit::AuditTrail;
use crate::link::{BrokerLink, Heard, Incoming, Link, LinkSettings, Origin};
use crate::rate::SenderLimits;

pub(crate) struct Worker {
    pub(super) ready: watch::Sender<bool>,
    pub(super) store: store::Store,
    pub(super) audit: Arc<AuditTrail>,
    pub(super) config: BridgeConfig,
    pub(super) views: Views,
    /// Who takes waiting sessions; read from the database when absent.
    pub(super) roster: Option<Roster>,
    /// Every sender's allowances (`bridge.rate_*`, `receipt_rate_*`, `resync_*`).
    pub(super) limits: SenderLimits,
    /// The open sessions' applicants and whether they are there.
    pub(super) attendance: Attendance,
    /// Sweeps since idle senders' allowances were last forgotten.
    pub(super) sweeps: u32,
    /// Staff's role and team as the last sweep read them, to tell who changed (kept when the
    /// roster is dropped: a roster read again after a change cannot tell; staff seated since by
    /// a batch are known by their seat).
    pub(super) staff_known: Option<StaffSettings>,
    /// Staff who may no longer hold sessions, with the sweeps left to look at them again: a
    /// sweep's decisions may fail to be stored, and looking again changes nothing once they are.
    pub(super) departing: Vec<(Departure, u8)>,
    /// The largest packet the gateway takes from the pipeline (from its CONNACK).
    pub(super) packet_limit: Arc<AtomicUsize>,
    /// What the batch being stored answered, until it is.
    pub(super) pending: Pending,
    /// Sessions closed by stored batches, whose views leave the cache once no batch that is not
    /// stored yet is about them (it may have changed them: a survey answer).
    closing: Vec<String>,
    pub(super) metrics: Option<Arc<telemetry::Metrics>>,
}

/// A batch for the committer: its submissions (those decided first, then those refused as
/// busy), what was decided, and the answers already made without deciding.
struct Job {
    batch: Vec<Incoming>,
    decided: Option<Decided>,
    undecided: Outbox,
    limits: PageLimits,
    done: oneshot::Sender<Stored>,
}

/// What became of a job.
enum Stored {
    /// Stored, published and acknowledged; the sessions it closed.
    Committed(Vec<String>),
    /// Not stored: the job's submissions, to be decided again.
    Failed {
        batch: Vec<Incoming>,
        undecided: Outbox,
        error: PipelineError,
    },
    /// The link ended.
    LinkLost,
}

impl Worker {
    pub(super) fn new(
        store: store::Store,
        audit: Arc<AuditTrail>,
        config: BridgeConfig,
        ready: watch::Sender<bool>,
        metrics: Option<Arc<telemetry::Metrics>>,
    ) -> Self {
        Self {
            ready,
            store,
            audit,
            limits: SenderLimits::new(&config),
            attendance: Attendance::default(),
            sweeps: 0,
            staff_known: None,
            departing: Vec::new(),
            config,
            views: Views::default(),
            roster: None,
            packet_limit: Arc::new(AtomicUsize::new(256 * 1024)),
            pending: Pending::default(),
            closing: Vec::new(),
            metrics,
        }
    }

    /// Handles submissions until `stop` turns true (or its sender is gone) or the link ends.
    pub(super) async fn serve(
        mut self,
        broker: Arc<BrokerLink>,
        settings: LinkSettings,
        commands: Arc<Intake>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut link = Link::start(&broker, settings, self.ready.clone());
        self.packet_limit = link.max_packet();
        let mut intake = link.intake();
        let mut presence = link.presence();
        let link = Arc::new(link);
        // What the record holds is what a restarted gateway or dashboard must see: every open
        // session's lock state (retained), and the open sessions' applicants for abandonment.
        self.restore(&link).await;
        // One worker at a time takes the commands; a restarted one takes over the queue.
        let mut commands = commands.receiver.clone().lock_owned().await;
        let (jobs, queued) = mpsc::channel::<Job>(1);
        let committer = spawn_committer(
            self.store.clone(),
            self.audit.clone(),
            link.clone(),
            self.packet_limit.clone(),
            queued,
            self.metrics.clone(),
        );
        let mut in_flight: Option<oneshot::Receiver<Stored>> = None;
        // Lapsed reply locks are freed, recorded and announced even when nobody writes.
        let mut lock_sweep = tokio::time::interval(Duration::from_secs(1));
        // A second after the last sweep, not as many sweeps as seconds were missed: while the
        // database is unreachable each sweep waits out the connect timeout, and back-to-back
        // sweeps would take turns from the submissions waiting to be refused.
        lock_sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                _ = stop.changed() => break,
                _ = lock_sweep.tick() => None,
                first = intake.recv() => match first {
                    Some(first) => Some(first),
                    None => break,
                },
                Some(command) = commands.recv() => Some(command),
                Some(heard) = presence.recv() => {
                    self.heard(heard);
                    continue;
                }
            };
            let sweep = first.is_none();
            let mut batch: Vec<Incoming> = first.into_iter().collect();
            while !sweep && batch.len() < self.config.batch_max {
                match intake.try_recv().ok().or_else(|| commands.try_recv().ok()) {
                    Some(next) => batch.push(next),
                    None => break,
                }
            }
            if let Some(metrics) = &self.metrics {
                let waiting = intake.len() + commands.len();
                metrics.pipeline_queue_depth.set(waiting as i64);
            }
            let (batch, fresh, undecided) = self.shed(batch);
            let decided = if sweep {
                let swept = self.decide_sweep().await;
                // A second after this sweep ended: one that waited out the connect timeout ends
                // with the next tick due, which `select!` picks over waiting submissions 4 in 5.
                lock_sweep.reset();
                swept
            } else if fresh > 0 {
                self.decide_guarded(&batch[..fresh]).await.map(Some)
            } else {
                Ok(None)
            };
            // Wait for the batch being stored before handing this one over.
            let previous_stored = match in_flight.take() {
                None => true,
                Some(done) => match done.await {
                    Ok(Stored::Committed(closed)) => {
                        // Every batch but the one just decided is stored now.
                        let unstored = match &decided {
                            Ok(Some(decided)) => Some(&decided.touched),
                            _ => None,
                        };
                        let closing = std::mem::take(&mut self.closing);
                        for session_id in closing.into_iter().chain(closed) {
                            if unstored.is_some_and(|touched| touched.contains(&session_id)) {
                                self.closing.push(session_id);
                            } else {
                                self.views.remove(&session_id);
                            }
                        }
                        true
                    }
                    Ok(Stored::Failed {
                        batch: failed,
                        undecided: failed_undecided,
                        error,
                    }) => {
                        tracing::error!(error = %error, size = failed.len(), "a batch could not be stored; deciding its submissions one by one");
                        self.forget();
                        let decided_part = failed.len() - failed_undecided.answers.len();
                        if self
                            .now(&link, failed, decided_part, failed_undecided, Some(&error))
                            .await
                            .is_err()
                        {
                            break;
                        }
                        false
                    }
                    Ok(Stored::LinkLost) | Err(_) => break,
                },
            };
            let mut decided = match (previous_stored, decided) {
                // A sweep that found nothing, with nothing waiting for its answer.
                (true, Ok(None)) if batch.is_empty() => continue,
                (true, Ok(decided)) => decided,
                // Decided on views that held a batch that was not stored, or not decided at
                // all: one submission at a time, now.
                (_, failure) => {
                    let failure = failure.err();
                    if let Some(error) = &failure {
                        tracing::error!(error = %error, size = batch.len(), "a batch could not be decided; deciding its submissions one by one");
                    }
                    self.forget();
                    if !sweep
                        && self
                            .now(&link, batch, fresh, undecided, failure.as_ref())
                            .await
                            .is_err()
                    {
                        break;
                    }
                    continue;
                }
            };
            self.pending = decided
                .as_mut()
                .map(|d| std::mem::take(&mut d.pending))
                .unwrap_or_default();
            let (done, finished) = oneshot::channel();
            let job = Job {
                batch,
                decided,
                undecided,
                limits: self.page_limits(),
                done,
            };
            if jobs.send(job).await.is_err() {
                break;
            }
            in_flight = Some(finished);
        }
        // What was handed over is stored (or not) before the worker ends.
        if let Some(done) = in_flight {
            let _ = done.await;
        }
        drop(jobs);
        let _ = committer.await;
        self.ready.send_replace(false);
        link.close().await;
    }

    /// Drops everything the views and the pending answers say beyond what is stored.
    fn forget(&mut self) {
        self.views.clear();
        self.roster = None;
        self.pending = Pending::default();
        self.closing.clear();
        self.attendance.stale();
    }

    /// Takes a presence an applicant published (an `online`, `away` or `offline`).
    fn heard(&mut self, heard: Heard) {
        let now = Utc::now().trunc_subsecs(6);
        self.attendance
            .heard(&heard.session_id, &heard.subject, Some(heard.status), now);
    }

    /// Puts first what may still be decided and refuses as `busy` what waited longer than
    /// `bridge.max_queue_delay_ms`. Returns the batch in that order, how many come first, and
    /// the refusals (tagged with their places).
    fn shed(&self, batch: Vec<Incoming>) -> (Vec<Incoming>, usize, Outbox) {
        let limit = Duration::from_millis(self.config.max_queue_delay_ms);
        let shedding = !limit.is_zero();
        let (mut fresh, stale): (Vec<Incoming>, Vec<Incoming>) = batch
            .into_iter()
            .partition(|incoming| !shedding || incoming.arrived.elapsed() <= limit);
        let mut refusals = Outbox::default();
        if !stale.is_empty() {
            tracing::debug!(refused = stale.len(), "busy: submissions waited too long");
            // A sender told to come back in twice the delay finds the backlog gone or shed.
            let retry_ms = self.config.max_queue_delay_ms.saturating_mul(2);
            for (n, incoming) in stale.iter().enumerate() {
                refusals.extend(busy(incoming, fresh.len() + n, retry_ms));
            }
        }
        let decided = fresh.len();
        fresh.extend(stale);
        (fresh, decided, refusals)
    }

    /// Decides, stores, publishes and acknowledges `batch` now, without overlap, its first
    /// `fresh` submissions one by one if the batch as a whole fails. After `failure` (of
    /// deciding or storing it before), if that was the database being unreachable, they are
    /// refused at once instead: trying again would wait as long and find the same.
    async fn now(
        &mut self,
        link: &Link,
        batch: Vec<Incoming>,
        fresh: usize,
        undecided: Outbox,
        failure: Option<&PipelineError>,
    ) -> Result<(), rumqttc::v5::ClientError> {
        let mut outbox = match failure {
            Some(failure) if failure.is_unreachable() => {
                refused_unreachable(failure, &batch[..fresh])
            }
            _ => self.decide_batch(&batch[..fresh]).await,
        };
        outbox.extend(undecided);
        let limit = self.packet_limit.load(Ordering::Relaxed);
        deliver(link, limit, batch, outbox, self.metrics.as_deref()).await
    }

    /// [`Worker::decide`] with a panic turned into an error.
    async fn decide_guarded(&mut self, batch: &[Incoming]) -> Result<Decided, PipelineError> {
        std::panic::AssertUnwindSafe(self.decide(batch))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(PipelineError::Panicked(panic_message(&*panic))))
    }

    /// Decides and stores a batch. If that fails (a statement the database refuses, a panic),
    /// nothing of it was stored, and its submissions are decided again one by one, so that one
    /// bad submission does not take the others down; one that fails alone is refused as
    /// `unavailable`. If the database cannot be reached at all, the whole batch is refused as
    /// `unavailable` at once. Every submission of the batch gets an answer, tagged with its
    /// place.
    pub(super) async fn decide_batch(&mut self, batch: &[Incoming]) -> Outbox {
        if batch.is_empty() {
            return Outbox::default();
        }
        let failure = match self.guarded(batch).await {
            Ok(outbox) => return outbox,
            Err(failure) => failure,
        };
        if failure.is_unreachable() {
            // Each submission alone would wait for the same absent database in turn.
            return refused_unreachable(&failure, batch);
        }
        if batch.len() == 1 {
            tracing::error!(error = %failure, topic = %batch[0].topic, "a submission could not be stored");
            return unavailable(&batch[0], 0);
        }
        tracing::error!(error = %failure, size = batch.len(), "a batch could not be stored; deciding its submissions one by one");
        let mut outbox = Outbox::default();
        for (index, incoming) in batch.iter().enumerate() {
            match self.guarded(std::slice::from_ref(incoming)).await {
                Ok(mut one) => {
                    // Answers name their place in the whole batch.
                    for answer in &mut one.answers {
                        answer.incoming = Some(index);
                    }
                    outbox.extend(one);
                }
                Err(failure) => {
                    tracing::error!(error = %failure, topic = %incoming.topic, "a submission could not be stored");
                    outbox.extend(unavailable(incoming, index));
                }
            }
        }
        outbox
    }

    /// [`Worker::decide_and_store`], with a panic turned into an error. Cached views are
    /// dropped after any failure, to be read again from the database.
    async fn guarded(&mut self, batch: &[Incoming]) -> Result<Outbox, PipelineError> {
        let result = std::panic::AssertUnwindSafe(self.decide_and_store(batch))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(PipelineError::Panicked(panic_message(&*panic))));
        if result.is_err() {
            self.forget();
        }
        result
    }
}

/// Every submission of `batch` refused as `unavailable` because the database could not be
/// reached, tagged with its place.
fn refused_unreachable(failure: &PipelineError, batch: &[Incoming]) -> Outbox {
    tracing::error!(error = %failure, size = batch.len(), "the database is unreachable; submissions refused as unavailable");
    let mut outbox = Outbox::default();
    for (index, incoming) in batch.iter().enumerate() {
        outbox.extend(unreachable(incoming, index));
    }
    outbox
}

/// Starts the committer on a thread and runtime of its own, with its own database pool, and
/// returns what ends when it does.
///
/// A batch costs the committer several database round trips, and each reply has to wake it.
/// On the server's runtime that wake-up waits its turn behind thousands of connection tasks
/// (measured on PostgreSQL: the server idled "in transaction" between statements most of the
/// time); on a thread of its own, whose connections belong to its own runtime, the operating
/// system runs it as soon as the reply is there.
fn spawn_committer(
    store: store::Store,
    audit: Arc<AuditTrail>,
    link: Arc<Link>,
    packet_limit: Arc<AtomicUsize>,
    jobs: mpsc::Receiver<Job>,
    metrics: Option<Arc<telemetry::Metrics>>,
) -> oneshot::Receiver<()> {
    let (finished, ended) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("pipeline-commit".to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "the committer's runtime could not start");
                    return;
                }
            };
            runtime.block_on(async move {
                // Its own pool, opened here so that its connections are this runtime's; the
                // shared one (whose replies wake tasks on the server's runtime) if that fails.
                match store.separate_pool(1).await {
                    Ok(own) => {
                        commit(&own, audit, link, packet_limit, jobs, metrics).await;
                        let _ = own.connection().clone().close().await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the committer shares the server's database pool");
                        commit(&store, audit, link, packet_limit, jobs, metrics).await;
                    }
                }
            });
            let _ = finished.send(());
        });
    if let Err(error) = spawned {
        // Without a committer the worker's first hand-over fails and the supervisor restarts it.
        tracing::error!(%error, "the committer's thread could not start");
    }
    ended
}

/// The committer: stores each job in turn, then publishes and acknowledges it.
async fn commit(
    store: &store::Store,
    audit: Arc<AuditTrail>,
    link: Arc<Link>,
    packet_limit: Arc<AtomicUsize>,
    mut jobs: mpsc::Receiver<Job>,
    metrics: Option<Arc<telemetry::Metrics>>,
) {
    let metrics = metrics.as_deref();
    while let Some(job) = jobs.recv().await {
        let Job {
            batch,
            decided,
            undecided,
            limits,
            done,
        } = job;
        let started = Instant::now();
        let ratings: Vec<f64> = decided
            .iter()
            .flat_map(|decided| &decided.fx.surveys)
            .filter_map(|survey| match &survey.rating {
                sea_orm::ActiveValue::Set(rating) => Some(f64::from(*rating)),
                _ => None,
            })
            .collect();
        let stored = match decided {
            None => Ok((Outbox::default(), Vec::new())),
            Some(decided) => {
                std::panic::AssertUnwindSafe(super::batch::store(store, &audit, limits, decided))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Err(PipelineError::Panicked(panic_message(&*panic))))
            }
        };
        let outcome = match stored {
            Ok((mut outbox, closed)) => {
                if let Some(metrics) = metrics {
                    ratings
                        .iter()
                        .for_each(|r| metrics.survey_rating.observe(*r));
                    metrics
                        .commit_duration
                        .observe(started.elapsed().as_secs_f64());
                    metrics.batch_size.observe(batch.len() as f64);
                    for incoming in &batch {
                        let waited = incoming.arrived.elapsed().as_secs_f64();
                        metrics.submission_to_commit.observe(waited);
                    }
                }
                outbox.extend(undecided);
                let limit = packet_limit.load(Ordering::Relaxed);
                match deliver(&link, limit, batch, outbox, metrics).await {
                    Ok(()) => Stored::Committed(closed),
                    Err(_) => Stored::LinkLost,
                }
            }
            Err(error) => Stored::Failed {
                batch,
                undecided,
                error,
            },
        };
        let lost = matches!(outcome, Stored::LinkLost);
        let _ = done.send(outcome);
        if lost {
            return;
        }
    }
}

/// Publishes a stored batch's outbox, then acknowledges its submissions to the gateway (a
/// submission is let go of only once its answer is on its way), and gives commands their
/// answers directly.
async fn deliver(
    link: &Link,
    limit: usize,
    batch: Vec<Incoming>,
    outbox: Outbox,
    metrics: Option<&telemetry::Metrics>,
) -> Result<(), rumqttc::v5::ClientError> {
    let committed = Instant::now();
    if let Some(metrics) = metrics {
        count_answers(metrics, &outbox);
    }
    let mut replies = Vec::new();
    outbox
        .publish(link, limit, |answer| {
            let command = answer.incoming.is_some_and(|i| {
                matches!(batch.get(i).map(|b| &b.origin), Some(Origin::Command(_)))
            });
            if command {
                replies.push((answer.incoming, answer.payload.clone()));
            }
            command
        })
        .await?;
    link.ack(&batch).await?;
    reply(batch, replies);
    if let Some(metrics) = metrics {
        let delivered = committed.elapsed().as_secs_f64();
        metrics.commit_to_delivery.observe(delivered);
    }
    Ok(())
}

/// Counts a stored batch's answers by outcome: what the clients are told.
fn count_answers(metrics: &telemetry::Metrics, outbox: &Outbox) {
    #[derive(serde::Deserialize)]
    struct Told<'a> {
        #[serde(borrow)]
        status: Option<&'a str>,
        #[serde(borrow)]
        reason: Option<&'a str>,
    }
    for answer in &outbox.answers {
        // Resync pages carry no status; they are reads, not submissions decided.
        let Ok(told) = serde_json::from_slice::<Told<'_>>(&answer.payload) else {
            continue;
        };
        match (told.status, told.reason) {
            (Some("accepted"), _) => metrics.submissions_accepted.inc(),
            (Some("rejected"), Some(reason)) => {
                metrics
                    .submissions_rejected
                    .with_label_values(&[reason])
                    .inc();
                if reason == "lock_held" {
                    metrics.lock_contention.inc();
                }
            }
            _ => {}
        }
    }
}

/// Gives each command of the batch its answer.
fn reply(batch: Vec<Incoming>, replies: Vec<(Option<usize>, Vec<u8>)>) {
    let mut batch: Vec<Option<Incoming>> = batch.into_iter().map(Some).collect();
    for (index, payload) in replies {
        if let Some(Some(Incoming {
            origin: Origin::Command(caller),
            ..
        })) = index.and_then(|i| batch.get_mut(i)).map(Option::take)
        {
            // The caller may have stopped waiting; its submission was decided all the same.
            let _ = caller.send(payload.into());
        }
    }
}
