//! One life of the pipeline: its link, its caches, and the loop that takes submissions (from
//! the gateway and from in-process commands, in arrival order) in batches, decides and stores
//! each batch, publishes what it produced, then lets the gateway know it is done with them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use futures_util::FutureExt;
use schemas::db::entities::session;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
use tokio::sync::{mpsc, watch};

use super::batch::{busy, unavailable};
use super::commands::Intake;
use super::decide::{self, Context, Effects};
use super::outbox::Outbox;
use super::view::Views;
use super::{BridgeConfig, PipelineError, writer};
use crate::audit::AuditTrail;
use crate::link::{BrokerLink, Incoming, Link, LinkSettings, Origin};
use crate::rate::{RateLimit, RateLimiter};

pub(crate) struct Worker {
    pub(super) ready: watch::Sender<bool>,
    pub(super) store: store::Store,
    pub(super) audit: Arc<AuditTrail>,
    pub(super) config: BridgeConfig,
    pub(super) views: Views,
    pub(super) limiter: RateLimiter,
    /// The largest packet the gateway takes from the pipeline (from its CONNACK).
    pub(super) packet_limit: Arc<AtomicUsize>,
}

impl Worker {
    pub(super) fn new(
        store: store::Store,
        audit: Arc<AuditTrail>,
        config: BridgeConfig,
        ready: watch::Sender<bool>,
    ) -> Self {
        let limiter = RateLimiter::new(RateLimit {
            per_second: config.rate_per_second,
            burst: config.rate_burst,
        });
        Self {
            ready,
            store,
            audit,
            config,
            views: Views::default(),
            limiter,
            packet_limit: Arc::new(AtomicUsize::new(256 * 1024)),
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
        // One worker at a time takes the commands; a restarted one takes over the queue.
        let mut commands = commands.receiver.clone().lock_owned().await;
        // Lapsed reply locks are freed, recorded and announced even when nobody writes.
        let mut lock_sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            let first = tokio::select! {
                _ = stop.changed() => break,
                _ = lock_sweep.tick() => {
                    let outbox = match self.expire_locks().await {
                        Ok(outbox) => outbox,
                        Err(err) => {
                            tracing::error!(error = %err, "lapsed locks could not be released");
                            self.views.clear();
                            continue;
                        }
                    };
                    if self.publish(&link, outbox).await.is_err() {
                        break;
                    }
                    continue;
                }
                first = link.recv() => first,
                Some(command) = commands.recv() => Some(command),
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < self.config.batch_max {
                match link.try_recv().or_else(|| take(&mut commands)) {
                    Some(next) => batch.push(next),
                    None => break,
                }
            }
            let (batch, outbox) = self.shed_and_decide(batch).await;
            // Answers first, then the gateway's acknowledgements: a submission is let go of
            // only once its answer is on its way. Commands get theirs back directly.
            let mut replies = Vec::new();
            let published = outbox
                .publish(&link, self.limit(), |answer| {
                    let command = answer
                        .incoming
                        .is_some_and(|i| matches!(batch[i].origin, Origin::Command(_)));
                    if command {
                        replies.push((answer.incoming, answer.payload.clone()));
                    }
                    command
                })
                .await;
            if published.is_err() || link.ack(&batch).await.is_err() {
                break;
            }
            reply(batch, replies);
        }
        self.ready.send_replace(false);
        link.close().await;
    }

    fn limit(&self) -> usize {
        self.packet_limit.load(Ordering::Relaxed)
    }

    async fn publish(&self, link: &Link, outbox: Outbox) -> Result<(), rumqttc::v5::ClientError> {
        outbox.publish(link, self.limit(), |_| false).await
    }

    /// Refuses as `busy` what waited longer than `bridge.max_queue_delay_ms`, and decides the
    /// rest. Returns the batch in the order its answers' places refer to.
    async fn shed_and_decide(&mut self, batch: Vec<Incoming>) -> (Vec<Incoming>, Outbox) {
        let limit = Duration::from_millis(self.config.max_queue_delay_ms);
        let shedding = !limit.is_zero();
        let (mut fresh, stale): (Vec<Incoming>, Vec<Incoming>) = batch
            .into_iter()
            .partition(|incoming| !shedding || incoming.arrived.elapsed() <= limit);
        let mut outbox = if fresh.is_empty() {
            Outbox::default()
        } else {
            self.decide_batch(&fresh).await
        };
        if !stale.is_empty() {
            tracing::debug!(refused = stale.len(), "busy: submissions waited too long");
            // A sender told to come back in twice the delay finds the backlog gone or shed.
            let retry_ms = self.config.max_queue_delay_ms.saturating_mul(2);
            for (n, incoming) in stale.iter().enumerate() {
                outbox.extend(busy(incoming, fresh.len() + n, retry_ms));
            }
        }
        fresh.extend(stale);
        (fresh, outbox)
    }

    /// Decides and stores a batch. If that fails (a statement the database refuses, a panic),
    /// nothing of it was stored, and its submissions are decided again one by one, so that one
    /// bad submission does not take the others down; one that fails alone is refused as
    /// `unavailable`. Every submission of the batch gets an answer, tagged with its place.
    pub(super) async fn decide_batch(&mut self, batch: &[Incoming]) -> Outbox {
        let failure = match self.guarded(batch).await {
            Ok(outbox) => return outbox,
            Err(failure) => failure,
        };
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
            .unwrap_or_else(|panic| Err(PipelineError::Panicked(super::panic_message(&*panic))));
        if result.is_err() {
            self.views.clear();
        }
        result
    }

    /// Frees every reply lock whose lease has lapsed: persisted, audited (`lock.expired`) and
    /// published, in one transaction.
    async fn expire_locks(&mut self) -> Result<Outbox, PipelineError> {
        let now = Utc::now().trunc_subsecs(6);
        let lapsed: Vec<String> = session::Entity::find()
            .filter(session::Column::LockHolder.is_not_null())
            .filter(session::Column::LockExpiresAt.lte(now))
            .all(self.store.connection())
            .await?
            .into_iter()
            .map(|row| row.id)
            .collect();
        if lapsed.is_empty() {
            return Ok(Outbox::default());
        }
        let txn = self.store.connection().begin().await?;
        let trail = self.audit.clone();
        let mut audit = trail.batch(&txn).await?;
        let mut fx = Effects::default();
        let no_staff = Default::default();
        let ctx = Context {
            now,
            instant: Instant::now(),
            config: &self.config,
            limiter: &mut self.limiter,
            staff: &no_staff,
        };
        for session_id in &lapsed {
            if !self.views.load(&txn, session_id).await? {
                continue;
            }
            if let Some(view) = self.views.get_mut(session_id) {
                decide::lock::expire(view, &ctx, &mut fx, session_id);
            }
        }
        let written = async {
            writer::write(&txn, &mut audit, &mut fx, &self.views, now).await?;
            txn.commit().await?;
            Ok::<_, PipelineError>(())
        }
        .await;
        if let Err(err) = written {
            self.views.clear();
            return Err(err);
        }
        drop(audit);
        Ok(fx.outbox)
    }
}

/// A command waiting in the queue, if any.
fn take(commands: &mut mpsc::Receiver<Incoming>) -> Option<Incoming> {
    commands.try_recv().ok()
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
