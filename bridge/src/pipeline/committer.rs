//! The committer: on a thread and runtime of its own, stores each decided batch in one
//! transaction, then publishes what it produced (the outbox) and acknowledges its submissions
//! to the gateway; commands get their answers directly. The decider (`worker`) hands it one
//! batch at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use chrono::{DateTime, Utc};
use schemas::wire::{Outcome, RejectReason};
use sea_orm::TransactionTrait;

use super::answers::rejection;
use super::checkpointer::Checkpointer;
use super::commands::Reply;
use super::decide::Effects;
use super::decided::Decided;
use super::outbox::{Answer, Outbox, Told};
use super::resync::PageLimits;
use super::resync::{self, PageRequest};
use super::writer::{self, Tx};
use super::{PipelineError, panic_message};
use crate::audit::AuditTrail;
use crate::pipeline::link::{Incoming, Link, LinkLost, Origin};

/// A batch for the committer: its submissions (those decided first, then those refused as
/// busy), what was decided, and the answers already made without deciding.
pub(super) struct Job {
    pub batch: Vec<Incoming>,
    pub decided: Option<Decided>,
    pub undecided: Outbox,
    pub limits: PageLimits,
    pub done: oneshot::Sender<Stored>,
}

/// What became of a job.
pub(super) enum Stored {
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

/// Starts the committer on a thread and runtime of its own, with its own database pool, and
/// returns what ends when it does.
///
/// A batch costs the committer several database round trips, and each reply has to wake it.
/// On the server's runtime that wake-up waits its turn behind thousands of connection tasks
/// (measured on PostgreSQL: the server idled "in transaction" between statements most of the
/// time); on a thread of its own, whose connections belong to its own runtime, the operating
/// system runs it as soon as the reply is there.
pub(super) fn spawn_committer(
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
            // On SQLite, a connection of its own too, whose statements run on this thread
            // (`store::DirectSqlite`); the pool's otherwise.
            let direct = match store.direct() {
                Some(Ok(direct)) => Some(direct),
                Some(Err(error)) => {
                    tracing::warn!(%error, "the committer writes through the database pool");
                    None
                }
                None => None,
            };
            // Checkpoints on a thread of their own, once it runs, rather than in a commit.
            let _checkpointer = direct.as_ref().and_then(|direct| {
                let checkpointer = Checkpointer::start(&store)?;
                match direct.without_checkpoints() {
                    Ok(()) => Some(checkpointer),
                    Err(error) => {
                        tracing::warn!(%error, "checkpoints stay with the committer");
                        None
                    }
                }
            });
            let direct = direct.as_ref();
            runtime.block_on(async move {
                // Its own pool, opened here so that its connections are this runtime's; the
                // shared one (whose replies wake tasks on the server's runtime) if that fails.
                match store.separate_pool(1).await {
                    Ok(own) => {
                        commit(&own, direct, audit, link, packet_limit, jobs, metrics).await;
                        let _ = own.connection().clone().close().await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the committer shares the server's database pool");
                        commit(&store, direct, audit, link, packet_limit, jobs, metrics).await;
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
    direct: Option<&store::DirectSqlite>,
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
                std::panic::AssertUnwindSafe(self::store(store, direct, &audit, limits, decided))
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
pub(super) async fn deliver(
    link: &Link,
    limit: usize,
    batch: Vec<Incoming>,
    outbox: Outbox,
    metrics: Option<&telemetry::Metrics>,
) -> Result<(), LinkLost> {
    let committed = Instant::now();
    if let Some(metrics) = metrics {
        count_answers(metrics, &outbox);
    }
    let replies = outbox
        .publish(link, limit, |answer| {
            answer.incoming.is_some_and(|i| {
                matches!(batch.get(i).map(|b| &b.origin), Some(Origin::Command(_)))
            })
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

/// Counts a stored batch's answers by outcome: what the clients are told. Counted once the
/// batch is stored, not as it is decided: a batch that fails to be stored is decided again,
/// and its first answers were never told.
fn count_answers(metrics: &telemetry::Metrics, outbox: &Outbox) {
    for answer in &outbox.answers {
        // Resync pages are reads, not submissions decided.
        let Told::Ack(ack) = &answer.told else {
            continue;
        };
        match &ack.outcome {
            Outcome::Accepted { .. } => metrics.submissions_accepted.inc(),
            Outcome::Rejected { reason, .. } => {
                metrics
                    .submissions_rejected
                    .with_label_values(&[reason.as_str()])
                    .inc();
                if *reason == RejectReason::LockHeld {
                    metrics.lock_contention.inc();
                }
            }
        }
    }
}

/// Gives each command of the batch its answer.
fn reply(batch: Vec<Incoming>, replies: Vec<Answer>) {
    let mut batch: Vec<Option<Incoming>> = batch.into_iter().map(Some).collect();
    for answer in replies {
        let reply = match answer.told {
            Told::Ack(ack) => Reply::Ack(ack),
            Told::Page(page) => Reply::Page(*page),
            Told::PageDue => continue,
        };
        if let Some(Some(Incoming {
            origin: Origin::Command(caller),
            ..
        })) = answer
            .incoming
            .and_then(|i| batch.get_mut(i))
            .map(Option::take)
        {
            // The caller may have stopped waiting; its submission was decided all the same.
            let _ = caller.send(reply);
        }
    }
}

/// Stores a decided batch in one transaction (with its audit entries, chained in turn with
/// every other writer) and commits, then answers its resyncs from what is stored. Returns what
/// to publish and the sessions it closed. On SQLite the committer passes its own connection
/// (`direct`), whose statements run on its thread; otherwise the store's pool is used.
pub(super) async fn store(
    store: &store::Store,
    direct: Option<&store::DirectSqlite>,
    audit: &AuditTrail,
    limits: PageLimits,
    decided: Decided,
) -> Result<(Outbox, Vec<String>), PipelineError> {
    let Decided {
        mut fx,
        resyncs,
        now,
        ..
    } = decided;
    // Nothing to write or read (a batch of refusals: a flood over its limits): no transaction,
    // so that refusing stays cheap.
    if resyncs.is_empty() && fx.writes_nothing() {
        return Ok((fx.outbox, fx.closed));
    }
    if !fx.writes_nothing() {
        match direct {
            Some(direct) => write_direct(direct, audit, &mut fx, now).await?,
            None => write_pooled(store, audit, &mut fx, now).await?,
        }
    }
    // Read once committed, and bounded by the sequence number each was decided at, so a page
    // holds what it would have inside the transaction. A read that fails now cannot undo the
    // commit: that resync alone is answered `unavailable`, to be asked again.
    for job in resyncs {
        let request = PageRequest {
            session_id: &job.session_id,
            cmid: &job.cmid,
            staff: job.staff,
            from_seq: job.from_seq,
            to_seq: job.to_seq,
            last_seq: job.last_seq,
            max_bytes: job.max_bytes,
        };
        let told = match resync::page(store.connection(), &request, limits).await {
            Ok(page) => Told::Page(Box::new(page)),
            Err(error) => {
                tracing::error!(%error, session_id = %job.session_id, "a resync page could not be read");
                let message = "the page could not be read now; ask again";
                let ack = rejection(
                    &job.cmid,
                    Some(&job.session_id),
                    RejectReason::Unavailable,
                    message,
                );
                Told::Ack(ack)
            }
        };
        if let Some(answer) = fx.outbox.answers.get_mut(job.position) {
            answer.told = told;
        }
    }
    Ok((fx.outbox, fx.closed))
}

/// Writes and commits through the store's pool, in the ORM's transaction.
async fn write_pooled(
    store: &store::Store,
    audit: &AuditTrail,
    fx: &mut Effects,
    now: DateTime<Utc>,
) -> Result<(), PipelineError> {
    let txn = store.connection().begin().await?;
    let mut trail = audit.assuming_batch(&txn).await?;
    let written = async {
        writer::write(Tx::Orm(&txn), &mut trail, fx, now).await?;
        txn.commit().await?;
        Ok::<_, PipelineError>(())
    }
    .await;
    audit.settle(&trail, written.is_ok());
    written
}

/// Writes and commits on the committer's own SQLite connection; rolls back what failed.
async fn write_direct(
    direct: &store::DirectSqlite,
    audit: &AuditTrail,
    fx: &mut Effects,
    now: DateTime<Utc>,
) -> Result<(), PipelineError> {
    let written = async {
        let mut trail = audit.direct_batch(direct).await?;
        let written = async {
            writer::write(Tx::Direct(direct), &mut trail, fx, now).await?;
            direct.execute_batch("COMMIT")?;
            Ok::<_, PipelineError>(())
        }
        .await;
        audit.settle(&trail, written.is_ok());
        written
    }
    .await;
    if written.is_err()
        && direct.in_transaction()
        && let Err(error) = direct.execute_batch("ROLLBACK")
    {
        tracing::error!(%error, "a failed batch could not be rolled back");
    }
    written
}
