//! One life of the pipeline: its link, its caches, and two stages that overlap.
//!
//! The decider (this task) takes submissions (from the gateway and from in-process commands,
//! in arrival order) in batches and decides each batch against the sessions' views; the
//! committer (on a thread of its own, `committer`) stores a decided batch in one transaction, then publishes what
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
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::answers::{busy, unavailable, unreachable};
use super::attendance::Attendance;
use super::commands::Intake;
use super::committer::{Job, Stored, deliver, spawn_committer};
use super::decided::{Decided, Pending};
use super::outbox::Outbox;
use super::reader::Reader;
use super::roster::{Departure, Roster, StaffSettings};
use super::view::Views;
use super::{BridgeConfig, PipelineError, panic_message};
use crate::audit::AuditTrail;
use crate::pipeline::link::{Arrival, BrokerLink, Heard, Incoming, Link, LinkLost, LinkSettings};
use crate::pipeline::rate::SenderLimits;

/// A batch smaller than `bridge.batch_max` divided by this waits for the batch being stored
/// before it is decided (see the group commit in `serve`); a larger one is decided while the
/// other is stored, so that deciding and storing overlap when there is much of both.
const GROUP_BELOW: usize = 4;

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
    /// On SQLite, the thread the decider's batch reads run on (`reader`).
    pub(super) reader: Option<Reader>,
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
            reader: None,
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
        self.reader = Reader::start(&self.store);
        let (link, mut intake) = Link::start(&broker, settings, self.ready.clone());
        self.packet_limit = link.max_packet();
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
                    Some(Arrival::Submission(first)) => Some(first),
                    Some(Arrival::Presence(heard)) => {
                        self.heard(heard);
                        continue;
                    }
                    None => break,
                },
                Some(command) = commands.recv() => Some(command),
            };
            let sweep = first.is_none();
            let mut batch: Vec<Incoming> = first.into_iter().collect();
            self.gather(&mut batch, sweep, &mut intake, &mut commands);
            // Group commit: a small batch waits for the batch being stored, and what arrives
            // meanwhile joins it. Each commit costs a write and an fsync of the log whatever
            // its size; deciding early, while the last one is stored, gained nothing at low
            // rates (it only waits for the same commit) and cost a commit a message.
            if !sweep
                && batch.len() < self.config.batch_max / GROUP_BELOW
                && let Some(done) = in_flight.take()
            {
                // Nothing is decided yet: whether it was stored or decided again, this batch
                // is decided on what is stored now.
                if self.settle(&link, done.await, None).await.is_none() {
                    break;
                }
                self.gather(&mut batch, sweep, &mut intake, &mut commands);
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
            let mut previous_stored = true;
            if let Some(done) = in_flight.take() {
                let unstored = match &decided {
                    Ok(Some(decided)) => Some(&decided.touched),
                    _ => None,
                };
                let unstored = unstored.cloned();
                match self.settle(&link, done.await, unstored.as_ref()).await {
                    Some(stored) => previous_stored = stored,
                    None => break,
                }
            }
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

    /// Adds what is waiting to `batch`, up to `bridge.batch_max` (nothing for a sweep).
    fn gather(
        &mut self,
        batch: &mut Vec<Incoming>,
        sweep: bool,
        intake: &mut crate::pipeline::link::Intake,
        commands: &mut mpsc::Receiver<Incoming>,
    ) {
        while !sweep && batch.len() < self.config.batch_max {
            match intake.try_recv() {
                Some(Arrival::Submission(next)) => batch.push(next),
                Some(Arrival::Presence(heard)) => self.heard(heard),
                None => match commands.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                },
            }
        }
    }

    /// Takes what became of the batch being stored. Returns whether it was stored (if not,
    /// its submissions have been decided again one by one, and what was decided on views that
    /// held it must be too), or `None` when the link is lost. `unstored`: the sessions of a
    /// batch decided since, whose views must stay until it is stored.
    async fn settle(
        &mut self,
        link: &Link,
        outcome: Result<Stored, oneshot::error::RecvError>,
        unstored: Option<&std::collections::HashSet<String>>,
    ) -> Option<bool> {
        match outcome {
            Ok(Stored::Committed(closed)) => {
                let closing = std::mem::take(&mut self.closing);
                for session_id in closing.into_iter().chain(closed) {
                    if unstored.is_some_and(|touched| touched.contains(&session_id)) {
                        self.closing.push(session_id);
                    } else {
                        self.views.remove(&session_id);
                    }
                }
                Some(true)
            }
            Ok(Stored::Failed {
                batch: failed,
                undecided: failed_undecided,
                error,
            }) => {
                tracing::error!(error = %error, size = failed.len(), "a batch could not be stored; deciding its submissions one by one");
                self.forget();
                let decided_part = failed.len() - failed_undecided.answers.len();
                self.now(link, failed, decided_part, failed_undecided, Some(&error))
                    .await
                    .ok()?;
                Some(false)
            }
            Ok(Stored::LinkLost) | Err(_) => None,
        }
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
    ) -> Result<(), LinkLost> {
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
