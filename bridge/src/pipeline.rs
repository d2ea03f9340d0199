//! The chat pipeline: takes what participants submit, decides, stores, orders, audits, and only
//! then publishes.
//!
//! It is an MQTT 5 client of the gateway with a `service` token, so it runs the same in-process
//! (`courtchat serve`) and as its own process (`courtchat bridge`). Submissions are handled in
//! batches: everything that has arrived is decided, written in one transaction (one commit, one
//! fsync) with its audit entries, and published after the commit: membership changes first,
//! then stream entries, then acknowledgements. A client therefore never sees an acknowledgement
//! or an entry for something that is not stored. Only then is each submission acknowledged to
//! the gateway (see `link`), so a dropped connection loses nothing the gateway acknowledged.
//!
//! Every value a client wrote is checked before anything is written; a batch that still fails
//! is decided again one submission at a time, so one bad submission costs only itself. A
//! supervisor restarts a worker that ends or panics.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use futures_util::FutureExt;
use schemas::db::entities::{
    agent, message, participant, receipt, session, submission_ack, survey_response,
};
use schemas::topics::{SessionTopic, Topic};
use schemas::wire::{
    self, Ack, Action, LockMode, LockOp, MembershipOp, MembershipUpdate, OpenSession, Outcome,
    RejectReason, Resync, SessionEvent, StreamContent, StreamEntry, Submission,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::audit::{AuditBatch, AuditEntry, AuditTrail, in_statement_sizes, padded};
use crate::link::{BrokerLink, Incoming, Link, LinkSettings};
use crate::lock::{LockChange, LockError, LockRequest, ReplyLock};
use crate::rate::{RateLimit, RateLimiter};

/// The `[bridge]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// Run the pipeline inside `courtchat serve`. Turn off when it runs as `courtchat bridge`.
    pub in_process: bool,
    /// Longest message body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Submissions per second each sender may make, sustained.
    pub rate_per_second: f64,
    /// Submissions a sender may make in a burst.
    pub rate_burst: f64,
    /// Most submissions decided and committed together.
    pub batch_max: usize,
    /// `exclusive`: only the reply-lock holder's replies are accepted; `advisory`: any joined
    /// agent may reply, and the lock only shows who is answering.
    pub lock_mode: LockMode,
    /// How long a reply lock lasts without renewal, in seconds.
    pub lock_lease_secs: u64,
    /// Most submissions in the pipeline's hands at once (its MQTT receive maximum); the rest
    /// wait in the gateway. Each is acknowledged to the gateway only once decided.
    pub intake_window: u16,
    /// How long the gateway keeps the pipeline's session (and collects submissions for it)
    /// while the pipeline is disconnected, in seconds. The gateway caps it at
    /// `mqtt.max_session_expiry`.
    pub link_session_expiry_secs: u64,
    /// Most entries in one resync reply; the reply says where the next page starts.
    pub resync_page_entries: usize,
    /// Most bytes of entries in one resync reply (and never more than the gateway's maximum
    /// packet size allows). Clients need a maximum packet size above this.
    pub resync_page_bytes: usize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            in_process: true,
            max_body_bytes: 4096,
            rate_per_second: 5.0,
            rate_burst: 20.0,
            batch_max: 256,
            lock_mode: LockMode::Exclusive,
            lock_lease_secs: 60,
            intake_window: 512,
            link_session_expiry_secs: 3600,
            resync_page_entries: 200,
            resync_page_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the database failed: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Audit(#[from] crate::AuditError),
    /// A state the pipeline's own bookkeeping should rule out; the batch is abandoned.
    #[error("internal inconsistency: {0}")]
    Inconsistent(&'static str),
    /// Deciding panicked; the batch is abandoned and its submissions decided one by one.
    #[error("deciding panicked: {0}")]
    Panicked(String),
}

/// What a session looks like to the pipeline, cached after the first read.
#[derive(Clone, Debug)]
struct SessionView {
    status: session::SessionStatus,
    last_seq: i64,
    /// The last entry on the applicant-visible topic, for `prev_seq`.
    last_public_seq: i64,
    /// The last internal note, for `prev_seq` on the notes topic.
    last_note_seq: i64,
    members: HashMap<String, participant::ParticipantRole>,
    lock: ReplyLock,
}

/// A refusal: the reason and a message for people.
type Refusal = (RejectReason, String);

/// What deciding a submission came to.
enum Verdict {
    /// Stored; the sequence number of the stream entry it left, when it left one.
    Accepted { seq: Option<u64> },
    /// Answered already, with a reply of its own (a resync page).
    Answered,
    /// Refused: nothing was stored.
    Refused(RejectReason, String),
}

fn membership(
    session_id: &str,
    subject: &str,
    role: participant::ParticipantRole,
    op: MembershipOp,
) -> MembershipUpdate {
    MembershipUpdate {
        v: wire::VERSION,
        session_id: session_id.to_owned(),
        subject: subject.to_owned(),
        role: match role {
            participant::ParticipantRole::Applicant => wire::ParticipantRole::Applicant,
            participant::ParticipantRole::Agent => wire::ParticipantRole::Agent,
            participant::ParticipantRole::Supervisor => wire::ParticipantRole::Supervisor,
        },
        op,
    }
}

/// One batch: its transaction, the audit entries appended in it, and what it will publish.
struct Work<'t, 'a> {
    txn: &'t DatabaseTransaction,
    audit: AuditBatch<'a>,
    outbox: Outbox,
    /// Sessions closed in this batch: their views leave the cache once it commits (a later
    /// survey or resync reads them from the database again).
    closed: Vec<String>,
    /// Entries appended in this batch and each touched session's new last sequence number,
    /// written together by `flush`: a multi-row insert and one update instead of two statements
    /// per entry (each a round trip to the database thread; the pipeline's throughput was
    /// bound by them).
    entries: Vec<message::ActiveModel>,
    last_seqs: HashMap<String, i64>,
    /// What each (session, sender, client message id) already stored answers with: loaded for
    /// the whole batch at its start and kept current, so that a resubmission, even within the
    /// batch, gets its original acknowledgement without a query per submission.
    answered: HashMap<(String, String, String), Answered>,
}

/// The original answer to a submission already stored.
#[derive(Clone)]
enum Answered {
    /// It left a stream entry with this sequence number and content.
    Entry {
        seq: u64,
        content: Option<StreamContent>,
    },
    /// Its kept acknowledgement (lock operations, receipts, the survey), and the digest of the
    /// request it answered (none when kept before digests were).
    Ack {
        ack: Vec<u8>,
        digest: Option<String>,
    },
}

/// What the batch's submissions already stored answer with (resubmissions), in two queries.
async fn answered(
    txn: &DatabaseTransaction,
    batch: &[Incoming],
) -> Result<HashMap<(String, String, String), Answered>, PipelineError> {
    let mut wanted = std::collections::HashSet::new();
    for incoming in batch {
        if let Some(Topic::Session {
            session,
            kind: SessionTopic::Submit,
            subject: Some(subject),
        }) = Topic::parse(&incoming.topic)
        {
            let cmid = client_msg_id_of(&incoming.payload);
            wanted.insert((session.to_owned(), subject.to_owned(), cmid));
        }
    }
    let mut answered = HashMap::new();
    if wanted.is_empty() {
        return Ok(answered);
    }
    // Exact triples, OR-ed (each one an index lookup), padded so that the statement has few
    // shapes (see `in_statement_sizes`).
    let wanted: Vec<(String, String, String)> = padded(wanted.into_iter().collect());
    for run in in_statement_sizes(&wanted) {
        let mut entries = Condition::any();
        let mut kept = Condition::any();
        for (session_id, sender, cmid) in run {
            entries = entries.add(
                Condition::all()
                    .add(message::Column::SessionId.eq(session_id.as_str()))
                    .add(message::Column::Sender.eq(sender.as_str()))
                    .add(message::Column::ClientMsgId.eq(cmid.as_str())),
            );
            kept = kept.add(
                Condition::all()
                    .add(submission_ack::Column::SessionId.eq(session_id.as_str()))
                    .add(submission_ack::Column::Sender.eq(sender.as_str()))
                    .add(submission_ack::Column::ClientMsgId.eq(cmid.as_str())),
            );
        }
        for row in message::Entity::find().filter(entries).all(txn).await? {
            let answer = Answered::Entry {
                seq: row.seq as u64,
                content: stored_content(&row),
            };
            answered.insert((row.session_id, row.sender, row.client_msg_id), answer);
        }
        for row in submission_ack::Entity::find().filter(kept).all(txn).await? {
            let key = (row.session_id, row.sender, row.client_msg_id);
            answered.entry(key).or_insert(Answered::Ack {
                ack: row.ack.into_bytes(),
                digest: row.request_digest,
            });
        }
    }
    Ok(answered)
}

impl Work<'_, '_> {
    fn new<'t, 'a>(txn: &'t DatabaseTransaction, audit: AuditBatch<'a>) -> Work<'t, 'a> {
        Work {
            txn,
            audit,
            outbox: Outbox::default(),
            closed: Vec::new(),
            entries: Vec::new(),
            last_seqs: HashMap::new(),
            answered: HashMap::new(),
        }
    }

    /// Writes what this batch has appended so far; before the commit, and before anything
    /// reads the stream back.
    async fn flush(&mut self) -> Result<(), PipelineError> {
        let entries = std::mem::take(&mut self.entries);
        for rows in in_statement_sizes(&entries) {
            message::Entity::insert_many(rows.to_vec())
                .exec_without_returning(self.txn)
                .await?;
        }
        let last_seqs: Vec<(String, i64)> =
            std::mem::take(&mut self.last_seqs).into_iter().collect();
        for run in in_statement_sizes(&last_seqs) {
            let mut case = sea_orm::sea_query::CaseStatement::new();
            for (session_id, seq) in run {
                case = case.case(
                    session::Column::Id.eq(session_id.as_str()),
                    Expr::value(*seq),
                );
            }
            let case = case.finally(Expr::col(session::Column::LastSeq));
            session::Entity::update_many()
                .col_expr(session::Column::LastSeq, case.into())
                .col_expr(
                    session::Column::UpdatedAt,
                    Expr::value(Utc::now().trunc_subsecs(6)),
                )
                .filter(session::Column::Id.is_in(run.iter().map(|(id, _)| id.as_str())))
                .exec(self.txn)
                .await?;
        }
        self.audit.flush(self.txn).await?;
        Ok(())
    }
}

/// What a batch publishes once committed, in order.
#[derive(Default)]
struct Outbox {
    memberships: Vec<MembershipUpdate>,
    /// Lock states, published retained.
    locks: Vec<(String, Vec<u8>)>,
    entries: Vec<(String, Vec<u8>)>,
    acks: Vec<(String, Vec<u8>)>,
}

/// The chat pipeline: a supervisor that keeps one [`Worker`] running until shutdown.
pub struct Pipeline {
    /// True while connected and subscribed: submissions are being received.
    ready: watch::Sender<bool>,
    store: store::Store,
    audit: Arc<AuditTrail>,
    config: BridgeConfig,
}

impl Pipeline {
    pub fn new(store: store::Store, audit: Arc<AuditTrail>, config: BridgeConfig) -> Self {
        Self {
            ready: watch::Sender::new(false),
            store,
            audit,
            config,
        }
    }

    /// Follows whether the pipeline is receiving submissions (connected and subscribed). Until it
    /// is, submissions published to the gateway wait there; `/readyz` reports it.
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Connects to the gateway and handles submissions until `shutdown` resolves. The link
    /// reconnects by itself (with a fresh token); a worker that ends or panics is logged,
    /// reported not ready and restarted with fresh caches and a fresh connection, whose session
    /// with the gateway gives it back every submission not yet decided.
    pub async fn run(self, link: BrokerLink, shutdown: impl Future<Output = ()>) {
        let link = Arc::new(link);
        let settings = LinkSettings {
            intake_window: self.config.intake_window,
            session_expiry: Duration::from_secs(self.config.link_session_expiry_secs),
            keep_alive: Duration::from_secs(30),
        };
        let ready = self.ready.clone();
        supervise(ready, shutdown, |stop| {
            let worker = Worker::new(
                self.store.clone(),
                self.audit.clone(),
                self.config.clone(),
                self.ready.clone(),
            );
            worker.serve(link.clone(), settings, stop)
        })
        .await;
    }
}

/// Runs what `start` makes until `shutdown`, starting it again (after a growing pause) whenever
/// it ends or panics; `ready` is false in between. `start` gets a receiver that turns true when
/// it is time to stop.
async fn supervise<F, Fut>(
    ready: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
    mut start: F,
) where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    const FIRST_PAUSE: Duration = Duration::from_millis(100);
    let mut shutdown = std::pin::pin!(shutdown);
    let (stop, stopping) = watch::channel(false);
    let mut pause = FIRST_PAUSE;
    loop {
        let started = tokio::time::Instant::now();
        let mut task = tokio::spawn(start(stopping.clone()));
        let ended = tokio::select! {
            ended = &mut task => ended,
            _ = shutdown.as_mut() => {
                stop.send_replace(true);
                let _ = task.await;
                ready.send_replace(false);
                return;
            }
        };
        ready.send_replace(false);
        match ended {
            Ok(()) => tracing::error!("the chat pipeline stopped; restarting it"),
            Err(err) => match err.try_into_panic() {
                Ok(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(panic = %message, "the chat pipeline panicked; restarting it");
                }
                Err(_) => tracing::error!("the chat pipeline was cancelled; restarting it"),
            },
        }
        // A worker that ran for a while gets a quick restart; one that keeps failing, less often.
        if started.elapsed() > Duration::from_secs(60) {
            pause = FIRST_PAUSE;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.as_mut() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// One life of the pipeline: its connection, its caches, its loop.
struct Worker {
    ready: watch::Sender<bool>,
    store: store::Store,
    audit: Arc<AuditTrail>,
    config: BridgeConfig,
    sessions: HashMap<String, SessionView>,
    limiter: RateLimiter,
    /// The largest packet the gateway takes from the pipeline (from its CONNACK).
    packet_limit: Arc<AtomicUsize>,
}

impl Worker {
    fn new(
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
            sessions: HashMap::new(),
            limiter,
            packet_limit: Arc::new(AtomicUsize::new(256 * 1024)),
        }
    }

    /// Handles submissions until `stop` turns true (or its sender is gone) or the link ends.
    async fn serve(
        mut self,
        broker: Arc<BrokerLink>,
        settings: LinkSettings,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut link = Link::start(&broker, settings, self.ready.clone());
        self.packet_limit = link.max_packet();
        // Lapsed reply locks are freed, recorded and announced even when nobody writes.
        let mut lock_sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            let first = tokio::select! {
                _ = stop.changed() => break,
                _ = lock_sweep.tick() => {
                    match self.expire_locks().await {
                        Ok(outbox) => {
                            if self.publish(&link, outbox).await.is_err() {
                                break;
                            }
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "lapsed locks could not be released");
                            self.sessions.clear();
                        }
                    }
                    continue;
                }
                first = link.recv() => first,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < self.config.batch_max {
                match link.try_recv() {
                    Some(next) => batch.push(next),
                    None => break,
                }
            }
            let outbox = self.decide_batch(&batch).await;
            // Answers first, then the gateway's acknowledgements: a submission is let go of
            // only once its answer is on its way.
            if self.publish(&link, outbox).await.is_err() || link.ack(&batch).await.is_err() {
                break;
            }
        }
        self.ready.send_replace(false);
        link.close().await;
    }

    /// Decides and stores a batch. If that fails (a statement the database refuses, a panic),
    /// nothing of it was stored, and its submissions are decided again one by one, so that
    /// one bad submission does not take the others down; one that fails alone is refused as
    /// `unavailable`. Every submission of the batch gets an answer.
    async fn decide_batch(&mut self, batch: &[Incoming]) -> Outbox {
        let failure = match self.guarded(batch).await {
            Ok(outbox) => return outbox,
            Err(failure) => failure,
        };
        if batch.len() == 1 {
            tracing::error!(error = %failure, topic = %batch[0].topic, "a submission could not be stored");
            return unavailable(&batch[0]);
        }
        tracing::error!(error = %failure, size = batch.len(), "a batch could not be stored; deciding its submissions one by one");
        let mut outbox = Outbox::default();
        for incoming in batch {
            match self.guarded(std::slice::from_ref(incoming)).await {
                Ok(one) => outbox.extend(one),
                Err(failure) => {
                    tracing::error!(error = %failure, topic = %incoming.topic, "a submission could not be stored");
                    outbox.extend(unavailable(incoming));
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
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(PipelineError::Panicked(message))
            });
        if result.is_err() {
            self.sessions.clear();
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
        let mut work = Work::new(&txn, trail.batch(&txn).await?);
        for session_id in lapsed {
            if self.view(&txn, &session_id).await?.is_none() {
                continue;
            }
            let mut lock = self.lock_of(&session_id);
            if let Ok(change @ LockChange::Expired { .. }) =
                lock.apply(LockRequest::Expire, now, Duration::ZERO)
            {
                let result = self
                    .store_lock(&mut work, &session_id, "system", lock, &change, now)
                    .await;
                if let Err(err) = result {
                    self.sessions.clear();
                    return Err(err);
                }
            }
        }
        if let Err(err) = work.flush().await {
            self.sessions.clear();
            return Err(err);
        }
        let Work { audit, outbox, .. } = work;
        if let Err(err) = txn.commit().await {
            self.sessions.clear();
            return Err(err.into());
        }
        drop(audit);
        Ok(outbox)
    }

    /// Decides every submission of `batch` and stores the accepted ones in one transaction.
    async fn decide_and_store(&mut self, batch: &[Incoming]) -> Result<Outbox, PipelineError> {
        let txn = self.store.connection().begin().await?;
        let trail = self.audit.clone();
        let mut work = Work::new(&txn, trail.batch(&txn).await?);
        work.answered = answered(&txn, batch).await?;
        // Views change as the batch is decided. If it fails, nothing of it was stored, and every
        // view is dropped, to be read again from the database (cloning them all per batch, to
        // restore, cost time on every batch for the sake of a rare failure).
        for incoming in batch {
            let result = match Topic::parse(&incoming.topic) {
                Some(Topic::Open { subject }) => {
                    let subject = subject.to_owned();
                    self.open(&mut work, &subject, &incoming.payload).await
                }
                Some(Topic::Session {
                    session,
                    kind: SessionTopic::Submit,
                    subject: Some(subject),
                }) => {
                    let (session, subject) = (session.to_owned(), subject.to_owned());
                    self.submit(&mut work, &session, &subject, &incoming.payload)
                        .await
                }
                _ => Ok(()),
            };
            if let Err(err) = result {
                self.sessions.clear();
                return Err(err);
            }
        }
        if let Err(err) = work.flush().await {
            self.sessions.clear();
            return Err(err);
        }
        let Work {
            audit,
            outbox,
            closed,
            ..
        } = work;
        match txn.commit().await {
            Ok(()) => {
                drop(audit);
                for session_id in closed {
                    self.sessions.remove(&session_id);
                }
                Ok(outbox)
            }
            Err(err) => {
                self.sessions.clear();
                Err(err.into())
            }
        }
    }

    async fn open(
        &mut self,
        w: &mut Work<'_, '_>,
        applicant: &str,
        payload: &[u8],
    ) -> Result<(), PipelineError> {
        let request = match OpenSession::from_json(payload) {
            Ok(request) => request,
            Err(err) => {
                let cmid = client_msg_id_of(payload);
                return reject(w, applicant, None, &cmid, err.reason(), &err.to_string()).await;
            }
        };
        let cmid = request.client_msg_id.clone();
        if request.v != wire::VERSION {
            return reject(
                w,
                applicant,
                None,
                &cmid,
                RejectReason::UnsupportedVersion,
                "this server speaks version 1",
            )
            .await;
        }
        // The same request again: the same session. Its opening entry may be one this batch
        // appended, so what the batch holds is written first.
        w.flush().await?;
        if let Some(existing) = message::Entity::find()
            .filter(message::Column::Sender.eq(applicant))
            .filter(message::Column::ClientMsgId.eq(&cmid))
            .filter(message::Column::Seq.eq(1))
            .one(w.txn)
            .await?
        {
            let first = message::Entity::find()
                .filter(message::Column::SessionId.eq(&existing.session_id))
                .filter(message::Column::ClientMsgId.eq(format!("{cmid}#first")))
                .one(w.txn)
                .await?;
            let opened = StreamContent::Event {
                event: SessionEvent::Opened {
                    channel: request.channel,
                },
            };
            let same = stored_content(&existing) == Some(opened)
                && first.map(|row| row.body) == request.first_message;
            if !same {
                return reject(
                    w,
                    applicant,
                    Some(&existing.session_id),
                    &cmid,
                    RejectReason::DuplicateId,
                    "this client_msg_id opened a session with a different request",
                )
                .await;
            }
            w.outbox.ack(
                applicant,
                &cmid,
                Some(&existing.session_id),
                Outcome::Accepted {
                    seq: Some(existing.seq as u64),
                },
            );
            return Ok(());
        }
        if let Err(retry) = self.limiter.check(applicant, Instant::now()) {
            let message = format!("too many requests; retry in {} ms", retry.as_millis());
            return reject(
                w,
                applicant,
                None,
                &cmid,
                RejectReason::RateLimited,
                &message,
            )
            .await;
        }
        if let Some(first) = &request.first_message
            && let Err((reason, message)) =
                check_body("first_message", first, self.config.max_body_bytes)
        {
            return reject(w, applicant, None, &cmid, reason, &message).await;
        }

        let session_id = new_session_id();
        let now = Utc::now().trunc_subsecs(6);
        session::ActiveModel {
            id: Set(session_id.clone()),
            status: Set(session::SessionStatus::Queued),
            applicant: Set(applicant.to_owned()),
            channel: Set(serde_json::to_value(request.channel)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()),
            team: Set(request.topic.clone()),
            assigned_agent: Set(None),
            last_seq: Set(0),
            lock_holder: Set(None),
            lock_epoch: Set(0),
            lock_expires_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            closed_at: Set(None),
        }
        .insert(w.txn)
        .await?;
        participant::ActiveModel {
            session_id: Set(session_id.clone()),
            subject: Set(applicant.to_owned()),
            role: Set(participant::ParticipantRole::Applicant),
            joined_at: Set(now),
            left_at: Set(None),
        }
        .insert(w.txn)
        .await?;
        let view = SessionView {
            status: session::SessionStatus::Queued,
            last_seq: 0,
            last_public_seq: 0,
            last_note_seq: 0,
            members: HashMap::from([(
                applicant.to_owned(),
                participant::ParticipantRole::Applicant,
            )]),
            lock: ReplyLock::default(),
        };
        self.sessions.insert(session_id.clone(), view);
        w.audit.append(AuditEntry {
            actor: applicant.to_owned(),
            action: "session.opened".to_owned(),
            session_id: Some(session_id.clone()),
            detail: serde_json::json!({ "channel": request.channel, "topic": request.topic }),
        })?;
        let opened = StreamContent::Event {
            event: SessionEvent::Opened {
                channel: request.channel,
            },
        };
        let opened_seq = self
            .append_entry(w, &session_id, applicant, &cmid, opened, None)
            .await?;
        if let Some(first) = request.first_message {
            let content = StreamContent::Message { body: first };
            self.append_entry(
                w,
                &session_id,
                applicant,
                &format!("{cmid}#first"),
                content,
                None,
            )
            .await?;
        }
        w.outbox.memberships.push(MembershipUpdate {
            v: wire::VERSION,
            session_id: session_id.clone(),
            subject: applicant.to_owned(),
            role: wire::ParticipantRole::Applicant,
            op: MembershipOp::Join,
        });
        // Staff watching the queue see the new session waiting.
        let waiting = wire::QueueUpdate {
            v: wire::VERSION,
            session_id: session_id.clone(),
            status: wire::SessionStatus::Queued,
            channel: request.channel,
            team: request.topic.clone(),
            waiting_since: now,
        };
        w.outbox.entries.push((
            Topic::Queue.to_string(),
            serde_json::to_vec(&waiting).unwrap_or_default(),
        ));
        w.outbox.ack(
            applicant,
            &cmid,
            Some(&session_id),
            Outcome::Accepted {
                seq: Some(opened_seq),
            },
        );
        Ok(())
    }

    async fn submit(
        &mut self,
        w: &mut Work<'_, '_>,
        session_id: &str,
        sender: &str,
        payload: &[u8],
    ) -> Result<(), PipelineError> {
        let submission = match Submission::from_json(payload) {
            Ok(submission) => submission,
            Err(err) => {
                let cmid = client_msg_id_of(payload);
                return reject(
                    w,
                    sender,
                    Some(session_id),
                    &cmid,
                    err.reason(),
                    &err.to_string(),
                )
                .await;
            }
        };
        let cmid = submission.client_msg_id.clone();
        // Everything a client wrote is checked before anything is written: a value the
        // database would refuse must never reach it (it would fail the whole batch).
        if let Err((reason, message)) = check_action(&submission.action, self.config.max_body_bytes)
        {
            return reject(w, sender, Some(session_id), &cmid, reason, &message).await;
        }
        // The same submission again: the original acknowledgement. The same id for something
        // else: refused, since the sender would otherwise take the original's answer for its
        // own.
        let key = (session_id.to_owned(), sender.to_owned(), cmid.clone());
        if let Some(answered) = w.answered.get(&key).cloned() {
            let same = match &answered {
                Answered::Entry { content, .. } => {
                    primary_content(&submission.action, sender).as_ref() == content.as_ref()
                }
                Answered::Ack { digest, .. } => digest
                    .as_ref()
                    .is_none_or(|digest| *digest == request_digest(&submission.action)),
            };
            if !same {
                return reject(
                    w,
                    sender,
                    Some(session_id),
                    &cmid,
                    RejectReason::DuplicateId,
                    "this client_msg_id was already used for a different submission",
                )
                .await;
            }
            match answered {
                Answered::Entry { seq, .. } => w.outbox.ack(
                    sender,
                    &cmid,
                    Some(session_id),
                    Outcome::Accepted { seq: Some(seq) },
                ),
                Answered::Ack { ack, .. } => w.outbox.acks.push((ack_topic(sender), ack)),
            }
            return Ok(());
        }
        let digest = request_digest(&submission.action);
        match self
            .decide(w, session_id, sender, &cmid, submission)
            .await?
        {
            Verdict::Accepted { seq } => {
                w.outbox
                    .ack(sender, &cmid, Some(session_id), Outcome::Accepted { seq });
                // Entries answer resubmissions through the messages table; the rest are kept.
                if seq.is_none()
                    && let Some((_, ack)) = w.outbox.acks.last()
                {
                    let ack = ack.clone();
                    submission_ack::ActiveModel {
                        session_id: Set(session_id.to_owned()),
                        sender: Set(sender.to_owned()),
                        client_msg_id: Set(cmid.clone()),
                        ack: Set(String::from_utf8_lossy(&ack).into_owned()),
                        request_digest: Set(Some(digest.clone())),
                        created_at: Set(Utc::now().trunc_subsecs(6)),
                    }
                    .insert(w.txn)
                    .await?;
                    w.answered.insert(
                        key,
                        Answered::Ack {
                            ack,
                            digest: Some(digest),
                        },
                    );
                }
                Ok(())
            }
            Verdict::Answered => Ok(()),
            Verdict::Refused(reason, message) => {
                reject(w, sender, Some(session_id), &cmid, reason, &message).await
            }
        }
    }

    /// Decides a submission and writes what it changes. The outer error is a database failure
    /// (the batch is abandoned); the inner one a refusal for the sender.
    async fn decide(
        &mut self,
        w: &mut Work<'_, '_>,
        session_id: &str,
        sender: &str,
        cmid: &str,
        submission: Submission,
    ) -> Result<Verdict, PipelineError> {
        let refuse = |reason, message: &str| Ok(Verdict::Refused(reason, message.to_owned()));
        if submission.v != wire::VERSION {
            return refuse(
                RejectReason::UnsupportedVersion,
                "this server speaks version 1",
            );
        }
        let Some(view) = self.view(w.txn, session_id).await? else {
            return refuse(RejectReason::UnknownSession, "no such session");
        };
        // After closing, only the applicant's survey answer (and reading) is taken.
        if view.status == session::SessionStatus::Closed
            && !matches!(
                submission.action,
                Action::Survey { .. } | Action::Resync { .. }
            )
        {
            return refuse(RejectReason::SessionClosed, "the session is closed");
        }
        let role = view.members.get(sender).copied();
        let staff = match role {
            Some(
                participant::ParticipantRole::Agent | participant::ParticipantRole::Supervisor,
            ) => role,
            _ => None,
        };
        if role.is_none() && !matches!(submission.action, Action::Join) {
            return refuse(
                RejectReason::NotAllowed,
                "you are not a participant of this session",
            );
        }
        let now = Utc::now().trunc_subsecs(6);
        match submission.action {
            Action::Resync { from_seq, to_seq } => {
                self.resync(
                    w,
                    session_id,
                    sender,
                    cmid,
                    staff.is_some(),
                    from_seq,
                    to_seq,
                )
                .await?;
                Ok(Verdict::Answered)
            }
            Action::Message { body } | Action::Note { body }
                if self.limiter.check(sender, Instant::now()).is_err() =>
            {
                let _ = body;
                refuse(RejectReason::RateLimited, "too many messages; slow down")
            }
            Action::Message { body } => {
                let mut epoch = None;
                if staff.is_some() && self.config.lock_mode == LockMode::Exclusive {
                    let lock = self.lock_of(session_id);
                    match lock.may_reply(sender, now) {
                        Ok(current) => epoch = Some(current),
                        Err(LockError::Held { holder }) => {
                            return refuse(
                                RejectReason::LockHeld,
                                &format!("{holder} holds the reply lock"),
                            );
                        }
                        Err(LockError::NotHeld) => {
                            return refuse(
                                RejectReason::LockNotHeld,
                                "acquire the reply lock before replying",
                            );
                        }
                    }
                }
                let seq = self
                    .append_entry(
                        w,
                        session_id,
                        sender,
                        cmid,
                        StreamContent::Message { body },
                        epoch,
                    )
                    .await?;
                Ok(Verdict::Accepted { seq: Some(seq) })
            }
            Action::Note { body } => {
                if staff.is_none() {
                    return refuse(RejectReason::NotAllowed, "only staff write internal notes");
                }
                let seq = self
                    .append_entry(
                        w,
                        session_id,
                        sender,
                        cmid,
                        StreamContent::Note { body },
                        None,
                    )
                    .await?;
                Ok(Verdict::Accepted { seq: Some(seq) })
            }
            Action::Join => {
                if role.is_some() {
                    return Ok(Verdict::Accepted { seq: None });
                }
                let Some(staff_role) = self.staff_role(w.txn, sender).await? else {
                    return refuse(
                        RejectReason::NotAllowed,
                        "only registered, active staff may join a session",
                    );
                };
                let seq = self
                    .join(w, session_id, sender, cmid, staff_role, now)
                    .await?;
                Ok(Verdict::Accepted { seq: Some(seq) })
            }
            Action::Leave => {
                if role == Some(participant::ParticipantRole::Applicant) {
                    return refuse(
                        RejectReason::NotAllowed,
                        "the applicant closes the session instead of leaving it",
                    );
                }
                let seq = self.leave(w, session_id, sender, cmid, now).await?;
                Ok(Verdict::Accepted { seq: Some(seq) })
            }
            Action::Lock { op } => {
                if staff.is_none() {
                    return refuse(RejectReason::NotAllowed, "only staff use the reply lock");
                }
                let request = match op {
                    LockOp::Acquire => LockRequest::Acquire(sender),
                    LockOp::Release => LockRequest::Release(sender),
                    LockOp::Renew => LockRequest::Renew(sender),
                    LockOp::Takeover if staff == Some(participant::ParticipantRole::Supervisor) => {
                        LockRequest::Takeover(sender)
                    }
                    LockOp::Takeover => {
                        return refuse(
                            RejectReason::NotAllowed,
                            "only a supervisor takes the lock over",
                        );
                    }
                };
                let lease = Duration::from_secs(self.config.lock_lease_secs);
                let mut lock = self.lock_of(session_id);
                match lock.apply(request, now, lease) {
                    Ok(change) => {
                        self.store_lock(w, session_id, sender, lock, &change, now)
                            .await?;
                        Ok(Verdict::Accepted { seq: None })
                    }
                    Err(LockError::Held { holder }) => refuse(
                        RejectReason::LockHeld,
                        &format!("{holder} holds the reply lock"),
                    ),
                    Err(LockError::NotHeld) => {
                        refuse(RejectReason::LockNotHeld, "you do not hold the reply lock")
                    }
                }
            }
            Action::Transfer { to_agent, to_team } => {
                if staff.is_none() {
                    return refuse(RejectReason::NotAllowed, "only staff transfer a session");
                }
                let seq = match (to_agent, to_team) {
                    (Some(to), None) => {
                        let Some(to_role) = self.staff_role(w.txn, &to).await? else {
                            return refuse(
                                RejectReason::NotAllowed,
                                "the target is not registered, active staff",
                            );
                        };
                        if to == sender {
                            return refuse(
                                RejectReason::Invalid,
                                "a session cannot be transferred to its sender",
                            );
                        }
                        self.transfer_to_agent(w, session_id, sender, cmid, &to, to_role, now)
                            .await?
                    }
                    (None, Some(team)) => {
                        self.transfer_to_team(w, session_id, sender, cmid, &team, now)
                            .await?
                    }
                    _ => {
                        return refuse(
                            RejectReason::Invalid,
                            "name exactly one of to_agent and to_team",
                        );
                    }
                };
                Ok(Verdict::Accepted { seq: Some(seq) })
            }
            Action::Escalate { reason } => {
                if staff.is_none() {
                    return refuse(RejectReason::NotAllowed, "only staff escalate a session");
                }
                self.set_status(
                    w,
                    session_id,
                    sender,
                    cmid,
                    session::SessionStatus::Escalated,
                    now,
                )
                .await?;
                let escalated = StreamContent::Event {
                    event: SessionEvent::Escalated { reason },
                };
                let seq = self
                    .append_entry(w, session_id, sender, cmid, escalated, None)
                    .await?;
                Ok(Verdict::Accepted { seq: Some(seq) })
            }
            Action::Close { reason } => {
                // Whoever holds the lock loses it; the session stays readable for the survey.
                let mut lock = self.lock_of(session_id);
                if let Some(holder) = lock.holder.clone()
                    && let Ok(change) =
                        lock.apply(LockRequest::Release(&holder), now, Duration::ZERO)
                {
                    self.store_lock(w, session_id, sender, lock, &change, now)
                        .await?;
                }
                update_session(
                    w,
                    session_id,
                    vec![(session::Column::ClosedAt, Expr::value(Some(now)))],
                    now,
                )
                .await?;
                self.set_status(
                    w,
                    session_id,
                    sender,
                    cmid,
                    session::SessionStatus::Closed,
                    now,
                )
                .await?;
                let closed = StreamContent::Event {
                    event: SessionEvent::Closed {
                        reason,
                        survey_offered: true,
                    },
                };
                let seq = self
                    .append_entry(w, session_id, sender, cmid, closed, None)
                    .await?;
                // The gateway keeps the participants' access for the survey and resync while
                // the session is among the most recently closed, then forgets it.
                w.outbox.memberships.push(membership(
                    session_id,
                    sender,
                    role.unwrap_or(participant::ParticipantRole::Supervisor),
                    MembershipOp::Close,
                ));
                w.closed.push(session_id.to_owned());
                Ok(Verdict::Accepted { seq: Some(seq) })
            }
            Action::Survey { rating, comment } => {
                if role != Some(participant::ParticipantRole::Applicant) {
                    return refuse(
                        RejectReason::NotAllowed,
                        "only the applicant answers the survey",
                    );
                }
                if self.sessions.get(session_id).map(|view| view.status)
                    != Some(session::SessionStatus::Closed)
                {
                    return refuse(
                        RejectReason::NotAllowed,
                        "the survey opens when the session closes",
                    );
                }
                if survey_response::Entity::find_by_id(session_id)
                    .one(w.txn)
                    .await?
                    .is_some()
                {
                    return refuse(RejectReason::NotAllowed, "the survey was already answered");
                }
                let digest = crate::record::SurveyRecord {
                    session_id,
                    rating: i16::from(rating),
                    comment: comment.as_deref(),
                    submitted_at: &now,
                }
                .digest();
                survey_response::ActiveModel {
                    session_id: Set(session_id.to_owned()),
                    rating: Set(i16::from(rating)),
                    comment: Set(comment),
                    submitted_at: Set(now),
                }
                .insert(w.txn)
                .await?;
                w.audit.append(AuditEntry {
                    actor: sender.to_owned(),
                    action: "survey.answered".to_owned(),
                    session_id: Some(session_id.to_owned()),
                    detail: serde_json::json!({ "rating": rating, "client_msg_id": cmid, "digest": digest }),
                })?;
                Ok(Verdict::Accepted { seq: None })
            }
            Action::Receipt {
                delivered_seq,
                read_seq,
            } => {
                self.receipt(w, session_id, sender, delivered_seq, read_seq, now)
                    .await?;
                Ok(Verdict::Accepted { seq: None })
            }
        }
    }

    /// Moves the session to another agent in one step: the sender leaves, the target joins and
    /// holds the reply lock under a new epoch.
    #[allow(clippy::too_many_arguments)]
    async fn transfer_to_agent(
        &mut self,
        w: &mut Work<'_, '_>,
        session_id: &str,
        from: &str,
        cmid: &str,
        to: &str,
        to_role: participant::ParticipantRole,
        now: chrono::DateTime<Utc>,
    ) -> Result<u64, PipelineError> {
        let already_member = self
            .sessions
            .get(session_id)
            .is_some_and(|view| view.members.contains_key(to));
        if !already_member {
            self.join(w, session_id, to, &format!("{cmid}#join"), to_role, now)
                .await?;
        }
        let lease = Duration::from_secs(self.config.lock_lease_secs);
        let mut lock = self.lock_of(session_id);
        if let Ok(change) = lock.apply(LockRequest::Takeover(to), now, lease) {
            self.store_lock(w, session_id, from, lock, &change, now)
                .await?;
        }
        update_session(
            w,
            session_id,
            vec![(
                session::Column::AssignedAgent,
                Expr::value(Some(to.to_owned())),
            )],
            now,
        )
        .await?;
        let transferred = StreamContent::Event {
            event: SessionEvent::Transferred {
                from: Some(from.to_owned()),
                to_agent: Some(to.to_owned()),
                to_team: None,
            },
        };
        let seq = self
            .append_entry(w, session_id, from, cmid, transferred, None)
            .await?;
        self.leave(w, session_id, from, &format!("{cmid}#leave"), now)
            .await?;
        Ok(seq)
    }

    /// Hands the session back to a team's queue: the sender leaves, the lock is freed.
    async fn transfer_to_team(
        &mut self,
        w: &mut Work<'_, '_>,
        session_id: &str,
        from: &str,
        cmid: &str,
        team: &str,
        now: chrono::DateTime<Utc>,
    ) -> Result<u64, PipelineError> {
        update_session(
            w,
            session_id,
            vec![
                (session::Column::Team, Expr::value(Some(team.to_owned()))),
                (
                    session::Column::AssignedAgent,
                    Expr::value(Option::<String>::None),
                ),
            ],
            now,
        )
        .await?;
        let transferred = StreamContent::Event {
            event: SessionEvent::Transferred {
                from: Some(from.to_owned()),
                to_agent: None,
                to_team: Some(team.to_owned()),
            },
        };
        let seq = self
            .append_entry(w, session_id, from, cmid, transferred, None)
            .await?;
        self.leave(w, session_id, from, &format!("{cmid}#leave"), now)
            .await?;
        self.set_status(
            w,
            session_id,
            from,
            cmid,
            session::SessionStatus::Queued,
            now,
        )
        .await?;
        Ok(seq)
    }

    /// Persists and publishes a lifecycle change (with its stream event and, for queued and
    /// escalated sessions, a queue update for staff).
    async fn set_status(
        &mut self,
        w: &mut Work<'_, '_>,
        session_id: &str,
        actor: &str,
        cmid: &str,
        status: session::SessionStatus,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), PipelineError> {
        update_session(
            w,
            session_id,
            vec![(session::Column::Status, Expr::value(status))],
            now,
        )
        .await?;
        if let Some(view) = self.sessions.get_mut(session_id) {
            view.status = status;
        }
        let wire_status = match status {
            session::SessionStatus::Queued => wire::SessionStatus::Queued,
            session::SessionStatus::Active => wire::SessionStatus::Active,
            session::SessionStatus::Escalated => wire::SessionStatus::Escalated,
            session::SessionStatus::Closed => wire::SessionStatus::Closed,
        };
        let changed = StreamContent::Event {
            event: SessionEvent::StatusChanged {
                status: wire_status,
            },
        };
        self.append_entry(
            w,
            session_id,
            actor,
            &format!("{cmid}#status"),
            changed,
            None,
        )
        .await?;
        if matches!(
            status,
            session::SessionStatus::Queued | session::SessionStatus::Escalated
        ) && let Some(row) = session::Entity::find_by_id(session_id).one(w.txn).await?
        {
            let update = wire::QueueUpdate {
                v: wire::VERSION,
                session_id: session_id.to_owned(),
                status: wire_status,
                channel: serde_json::from_value(serde_json::Value::String(row.channel))
                    .unwrap_or(wire::Channel::Kiosk),
                team: row.team,
                waiting_since: now,
            };
            w.outbox.entries.push((
                Topic::Queue.to_string(),
                serde_json::to_vec(&update).unwrap_or_default(),
            ));
        }
        Ok(())
    }

    /// Moves a participant's read horizon forward (never back, never past the stream) and tells
    /// the session. Receipts are not audited: they are frequent and carry no content.
    async fn receipt(
        &mut self,
        w: &mut Work<'_, '_>,
        session_id: &str,
        subject: &str,
        delivered: Option<u64>,
        read: Option<u64>,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), PipelineError> {
        let last_seq = self
            .sessions
            .get(session_id)
            .map_or(0, |view| view.last_seq);
        let existing = receipt::Entity::find_by_id((session_id.to_owned(), subject.to_owned()))
            .one(w.txn)
            .await?;
        let (old_delivered, old_read) = existing
            .as_ref()
            .map_or((0, 0), |r| (r.delivered_seq, r.read_seq));
        let clamp = |seq: Option<u64>| seq.map_or(0, |seq| (seq as i64).min(last_seq));
        let read_seq = old_read.max(clamp(read));
        // What was read was delivered.
        let delivered_seq = old_delivered.max(clamp(delivered)).max(read_seq);
        let row = receipt::ActiveModel {
            session_id: Set(session_id.to_owned()),
            subject: Set(subject.to_owned()),
            delivered_seq: Set(delivered_seq),
            read_seq: Set(read_seq),
            updated_at: Set(now),
        };
        if existing.is_some() {
            row.update(w.txn).await?;
        } else {
            row.insert(w.txn).await?;
        }
        let state = wire::ReceiptState {
            v: wire::VERSION,
            session_id: session_id.to_owned(),
            subject: subject.to_owned(),
            delivered_seq: delivered_seq as u64,
            read_seq: read_seq as u64,
        };
        let topic = Topic::Session {
            session: session_id,
            kind: SessionTopic::Receipts,
            subject: None,
        };
        w.outbox.entries.push((
            topic.to_string(),
            serde_json::to_vec(&state).unwrap_or_default(),
        ));
        Ok(())
    }

    fn lock_of(&self, session_id: &str) -> ReplyLock {
        self.sessions
            .get(session_id)
            .map(|view| view.lock.clone())
            .unwrap_or_default()
    }

    /// The staff role of `subject`, if it is a registered, active member of staff.
    async fn staff_role(
        &self,
        txn: &DatabaseTransaction,
        subject: &str,
    ) -> Result<Option<participant::ParticipantRole>, PipelineError> {
        let agent = agent::Entity::find()
            .filter(agent::Column::Subject.eq(subject))
            .filter(agent::Column::Active.eq(true))
            .one(txn)
            .await?;
        Ok(agent.and_then(|agent| match agent.role {
            agent::StaffRole::Agent => Some(participant::ParticipantRole::Agent),
            agent::StaffRole::Supervisor => Some(participant::ParticipantRole::Supervisor),
            agent::StaffRole::Admin => None,
        }))
    }

    async fn join(
        &mut self,
        w: &mut Work<'_, '_>,
        session_id: &str,
        subject: &str,
        cmid: &str,
        role: participant::ParticipantRole,
        now: chrono::DateTime<Utc>,
    ) -> Result<u64, PipelineError> {
        // A participant who left and comes back gets their row back.
        participant::Entity::delete_many()
            .filter(participant::Column::SessionId.eq(session_id))
            .filter(participant::Column::Subject.eq(subject))
            .exec(w.txn)
            .await?;
        participant::ActiveModel {
            session_id: Set(session_id.to_owned()),
            subject: Set(subject.to_owned()),
            role: Set(role),
            joined_at: Set(now),
            left_at: Set(None),
        }
        .insert(w.txn)
        .await?;
        let Some(view) = self.sessions.get_mut(session_id) else {
            return Err(PipelineError::Inconsistent(
                "a join before its session's view",
            ));
        };
        view.members.insert(subject.to_owned(), role);
        let becomes_active = view.status == session::SessionStatus::Queued;
        let joined = StreamContent::Event {
            event: SessionEvent::Joined {
                subject: subject.to_owned(),
            },
        };
        let seq = self
            .append_entry(w, session_id, subject, cmid, joined, None)
            .await?;
        if becomes_active {
            self.set_status(
                w,
                session_id,
                "system",
                cmid,
                session::SessionStatus::Active,
                now,
            )
            .await?;
        }
        w.outbox
            .memberships
            .push(membership(session_id, subject, role, MembershipOp::Join));
        Ok(seq)
    }

    async fn leave(
        &mut self,
        w: &mut Work<'_, '_>,
        session_id: &str,
        subject: &str,
        cmid: &str,
        now: chrono::DateTime<Utc>,
    ) -> Result<u64, PipelineError> {
        participant::Entity::update_many()
            .col_expr(
                participant::Column::LeftAt,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(participant::Column::SessionId.eq(session_id))
            .filter(participant::Column::Subject.eq(subject))
            .exec(w.txn)
            .await?;
        let role = self
            .sessions
            .get_mut(session_id)
            .and_then(|view| view.members.remove(subject))
            .unwrap_or(participant::ParticipantRole::Agent);
        // Whoever leaves lets go of the reply lock.
        let mut lock = self.lock_of(session_id);
        if let Ok(change @ LockChange::Released { .. }) =
            lock.apply(LockRequest::Release(subject), now, Duration::ZERO)
        {
            self.store_lock(w, session_id, subject, lock, &change, now)
                .await?;
        }
        let left = StreamContent::Event {
            event: SessionEvent::Left {
                subject: subject.to_owned(),
            },
        };
        let seq = self
            .append_entry(w, session_id, subject, cmid, left, None)
            .await?;
        w.outbox
            .memberships
            .push(membership(session_id, subject, role, MembershipOp::Leave));
        Ok(seq)
    }

    /// Persists a lock change on the session row, audits it and publishes the lock state.
    async fn store_lock(
        &mut self,
        w: &mut Work<'_, '_>,
        session_id: &str,
        actor: &str,
        lock: ReplyLock,
        change: &LockChange,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), PipelineError> {
        update_session(
            w,
            session_id,
            vec![
                (
                    session::Column::LockHolder,
                    Expr::value(lock.holder.clone()),
                ),
                (session::Column::LockEpoch, Expr::value(lock.epoch as i64)),
                (session::Column::LockExpiresAt, Expr::value(lock.expires_at)),
            ],
            now,
        )
        .await?;
        let action = match change {
            LockChange::Acquired { .. } => "lock.acquired",
            LockChange::Renewed { .. } => "lock.renewed",
            LockChange::Released { .. } => "lock.released",
            LockChange::TakenOver { .. } => "lock.taken_over",
            LockChange::Expired { .. } => "lock.expired",
            LockChange::Unchanged => return Ok(()),
        };
        w.audit.append(AuditEntry {
            actor: actor.to_owned(),
            action: action.to_owned(),
            session_id: Some(session_id.to_owned()),
            detail: serde_json::json!({ "holder": lock.holder, "epoch": lock.epoch }),
        })?;
        let state = wire::LockState {
            v: wire::VERSION,
            session_id: session_id.to_owned(),
            holder: lock.holder.clone(),
            epoch: lock.epoch,
            expires_at: lock.expires_at,
            mode: self.config.lock_mode,
        };
        let topic = Topic::Session {
            session: session_id,
            kind: SessionTopic::Lock,
            subject: None,
        };
        w.outbox.locks.push((
            topic.to_string(),
            serde_json::to_vec(&state).unwrap_or_default(),
        ));
        if let Some(view) = self.sessions.get_mut(session_id) {
            view.lock = lock;
        }
        Ok(())
    }

    /// The session as the pipeline sees it, read from the database the first time.
    async fn view(
        &mut self,
        txn: &DatabaseTransaction,
        session_id: &str,
    ) -> Result<Option<&SessionView>, PipelineError> {
        if !self.sessions.contains_key(session_id) {
            let Some(row) = session::Entity::find_by_id(session_id).one(txn).await? else {
                return Ok(None);
            };
            let members = participant::Entity::find()
                .filter(participant::Column::SessionId.eq(session_id))
                .filter(participant::Column::LeftAt.is_null())
                .all(txn)
                .await?
                .into_iter()
                .map(|p| (p.subject, p.role))
                .collect();
            let last_of = |kind_is_note: bool| {
                let query =
                    message::Entity::find().filter(message::Column::SessionId.eq(session_id));
                let query = if kind_is_note {
                    query.filter(message::Column::Kind.eq(message::MessageKind::Note))
                } else {
                    query.filter(message::Column::Kind.ne(message::MessageKind::Note))
                };
                query.order_by_desc(message::Column::Seq).one(txn)
            };
            let last_public_seq = last_of(false).await?.map_or(0, |m| m.seq);
            let last_note_seq = last_of(true).await?.map_or(0, |m| m.seq);
            let lock = ReplyLock {
                holder: row.lock_holder,
                epoch: row.lock_epoch as u64,
                expires_at: row.lock_expires_at,
            };
            self.sessions.insert(
                session_id.to_owned(),
                SessionView {
                    status: row.status,
                    last_seq: row.last_seq,
                    last_public_seq,
                    last_note_seq,
                    members,
                    lock,
                },
            );
        }
        Ok(self.sessions.get(session_id))
    }

    /// Gives `content` the session's next sequence number, stores it, audits it and queues its
    /// stream entry. Returns the sequence number.
    async fn append_entry(
        &mut self,
        w: &mut Work<'_, '_>,
        session_id: &str,
        sender: &str,
        client_msg_id: &str,
        content: StreamContent,
        lock_epoch: Option<u64>,
    ) -> Result<u64, PipelineError> {
        let is_note = matches!(content, StreamContent::Note { .. });
        let Some(view) = self.sessions.get_mut(session_id) else {
            return Err(PipelineError::Inconsistent(
                "an entry appended before its session's view was loaded",
            ));
        };
        let seq = view.last_seq + 1;
        view.last_seq = seq;
        // Each topic's entries name their predecessor on that topic.
        let prev_seq = if is_note {
            std::mem::replace(&mut view.last_note_seq, seq)
        } else {
            std::mem::replace(&mut view.last_public_seq, seq)
        };
        let at = Utc::now().trunc_subsecs(6);
        let (kind, body) = match &content {
            StreamContent::Message { body } => (message::MessageKind::Text, body.clone()),
            StreamContent::Note { body } => (message::MessageKind::Note, body.clone()),
            StreamContent::Event { event } => (
                message::MessageKind::Event,
                serde_json::to_string(event).unwrap_or_default(),
            ),
        };
        // The entry's content, covered by its audit entry's MAC (see `crate::record`).
        let digest = crate::record::MessageRecord {
            session_id,
            seq,
            sender,
            kind,
            body: &body,
            client_msg_id,
            created_at: &at,
        }
        .digest();
        w.entries.push(message::ActiveModel {
            session_id: Set(session_id.to_owned()),
            seq: Set(seq),
            client_msg_id: Set(client_msg_id.to_owned()),
            sender: Set(sender.to_owned()),
            kind: Set(kind),
            body: Set(body),
            created_at: Set(at),
            ..Default::default()
        });
        w.last_seqs.insert(session_id.to_owned(), seq);
        w.answered.insert(
            (
                session_id.to_owned(),
                sender.to_owned(),
                client_msg_id.to_owned(),
            ),
            Answered::Entry {
                seq: seq as u64,
                content: Some(content.clone()),
            },
        );
        let event = match &content {
            StreamContent::Event { event } => serde_json::to_value(event).unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        w.audit.append(AuditEntry {
            actor: sender.to_owned(),
            action: audit_action(&content),
            session_id: Some(session_id.to_owned()),
            detail: serde_json::json!({
                "seq": seq,
                "client_msg_id": client_msg_id,
                "lock_epoch": lock_epoch,
                "event": event,
                "digest": digest,
            }),
        })?;
        let entry = StreamEntry {
            v: wire::VERSION,
            session_id: session_id.to_owned(),
            seq: seq as u64,
            prev_seq: prev_seq as u64,
            at,
            sender: sender.to_owned(),
            content,
        };
        let topic = Topic::Session {
            session: session_id,
            kind: if is_note {
                SessionTopic::Notes
            } else {
                SessionTopic::Messages
            },
            subject: None,
        };
        w.outbox.entries.push((
            topic.to_string(),
            serde_json::to_vec(&entry).unwrap_or_default(),
        ));
        Ok(seq as u64)
    }

    /// Sends the requester the entries it asked for that it may read, one bounded page: at
    /// most `bridge.resync_page_entries` entries and `bridge.resync_page_bytes` bytes (and
    /// never more than the gateway takes in one packet). `next_from_seq` says where the next
    /// page starts.
    #[allow(clippy::too_many_arguments)]
    async fn resync(
        &mut self,
        w: &mut Work<'_, '_>,
        session_id: &str,
        sender: &str,
        cmid: &str,
        staff: bool,
        from_seq: u64,
        to_seq: Option<u64>,
    ) -> Result<(), PipelineError> {
        // Room left in a packet for the reply's envelope, topic and properties.
        const ENVELOPE: usize = 1024;
        // The stream is read back from the database: what this batch appended goes first.
        w.flush().await?;
        let last_seq = self
            .sessions
            .get(session_id)
            .map_or(0, |view| view.last_seq);
        let to_seq = to_seq.unwrap_or(last_seq as u64).min(last_seq as u64) as i64;
        let from_seq = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let in_session =
            || message::Entity::find().filter(message::Column::SessionId.eq(session_id));
        // Each entry's prev_seq is the previous one on its own topic, also before the range.
        let before = |is_note: bool| {
            let kind = if is_note {
                message::Column::Kind.eq(message::MessageKind::Note)
            } else {
                message::Column::Kind.ne(message::MessageKind::Note)
            };
            in_session()
                .filter(message::Column::Seq.lt(from_seq))
                .filter(kind)
                .order_by_desc(message::Column::Seq)
                .one(w.txn)
        };
        let mut prev_public = before(false).await?.map_or(0, |m| m.seq as u64);
        let mut prev_note = if staff {
            before(true).await?.map_or(0, |m| m.seq as u64)
        } else {
            0
        };
        let page_entries = self.config.resync_page_entries.max(1);
        let mut query = in_session()
            .filter(message::Column::Seq.gte(from_seq))
            .filter(message::Column::Seq.lte(to_seq));
        // Applicants never receive internal notes, not even through a resync.
        if !staff {
            query = query.filter(message::Column::Kind.ne(message::MessageKind::Note));
        }
        let rows = query
            .order_by_asc(message::Column::Seq)
            .limit(page_entries as u64 + 1)
            .all(w.txn)
            .await?;
        let budget = self.config.resync_page_bytes.min(
            self.packet_limit
                .load(Ordering::Relaxed)
                .saturating_sub(ENVELOPE),
        );
        let (mut entries, mut used, mut next_from_seq) = (Vec::new(), 0, None);
        for (n, row) in rows.into_iter().enumerate() {
            if n == page_entries {
                next_from_seq = Some(row.seq as u64);
                break;
            }
            let is_note = row.kind == message::MessageKind::Note;
            let seq = row.seq as u64;
            let prev = if is_note { prev_note } else { prev_public };
            if let Some(content) = stored_content(&row) {
                let entry = StreamEntry {
                    v: wire::VERSION,
                    session_id: session_id.to_owned(),
                    seq,
                    prev_seq: prev,
                    at: row.created_at,
                    sender: row.sender,
                    content,
                };
                let size = serde_json::to_vec(&entry).map_or(0, |bytes| bytes.len()) + 1;
                // A page holds at least one entry, so that every page makes progress.
                if !entries.is_empty() && used + size > budget {
                    next_from_seq = Some(seq);
                    break;
                }
                used += size;
                entries.push(entry);
            }
            if is_note {
                prev_note = seq;
            } else {
                prev_public = seq;
            }
        }
        let reply = Resync {
            v: wire::VERSION,
            client_msg_id: cmid.to_owned(),
            session_id: session_id.to_owned(),
            entries,
            last_seq: last_seq as u64,
            next_from_seq,
        };
        w.outbox.acks.push((
            ack_topic(sender),
            serde_json::to_vec(&reply).unwrap_or_default(),
        ));
        Ok(())
    }
}

impl Outbox {
    fn extend(&mut self, other: Outbox) {
        self.memberships.extend(other.memberships);
        self.locks.extend(other.locks);
        self.entries.extend(other.entries);
        self.acks.extend(other.acks);
    }

    fn ack(
        &mut self,
        subject: &str,
        client_msg_id: &str,
        session_id: Option<&str>,
        outcome: Outcome,
    ) {
        let ack = Ack {
            v: wire::VERSION,
            client_msg_id: client_msg_id.to_owned(),
            session_id: session_id.map(str::to_owned),
            outcome,
        };
        self.acks.push((
            ack_topic(subject),
            serde_json::to_vec(&ack).unwrap_or_default(),
        ));
    }
}

/// Sets `values` on the session's row, and its `updated_at`, inside the batch's transaction.
async fn update_session(
    w: &Work<'_, '_>,
    session_id: &str,
    values: Vec<(session::Column, sea_orm::sea_query::SimpleExpr)>,
    now: chrono::DateTime<Utc>,
) -> Result<(), PipelineError> {
    let mut update = session::Entity::update_many()
        .col_expr(session::Column::UpdatedAt, Expr::value(now))
        .filter(session::Column::Id.eq(session_id));
    for (column, value) in values {
        update = update.col_expr(column, value);
    }
    update.exec(w.txn).await?;
    Ok(())
}

/// What an entry is, for the audit trail: `message.accepted`, `note.accepted`, or the session
/// event (`session.joined`, `session.transferred`, `session.closed`, ...).
fn audit_action(content: &StreamContent) -> String {
    match content {
        StreamContent::Message { .. } => "message.accepted".to_owned(),
        StreamContent::Note { .. } => "note.accepted".to_owned(),
        StreamContent::Event { event } => {
            let kind = serde_json::to_value(event)
                .ok()
                .and_then(|value| value["type"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "event".to_owned());
            format!("session.{kind}")
        }
    }
}

fn ack_topic(subject: &str) -> String {
    Topic::Ack { subject }.to_string()
}

/// Refuses a submission: recorded in the audit trail, answered on the sender's ack topic.
async fn reject(
    w: &mut Work<'_, '_>,
    sender: &str,
    session_id: Option<&str>,
    client_msg_id: &str,
    reason: RejectReason,
    message: &str,
) -> Result<(), PipelineError> {
    w.audit.append(AuditEntry {
            actor: sender.to_owned(),
            action: "submission.rejected".to_owned(),
            session_id: session_id.map(str::to_owned),
            detail: serde_json::json!({ "client_msg_id": client_msg_id, "reason": reason, "message": message }),
        })?;
    w.outbox.ack(
        sender,
        client_msg_id,
        session_id,
        Outcome::Rejected {
            reason,
            message: message.to_owned(),
        },
    );
    Ok(())
}

/// A text the record may hold: not empty, within the size limit, and only characters that
/// display as what they are (see [`wire::check_text`]).
fn check_body(field: &'static str, body: &str, max_bytes: usize) -> Result<(), Refusal> {
    if body.trim().is_empty() {
        return Err((RejectReason::TooLarge, format!("{field} is empty")));
    }
    check_optional_text(field, body, max_bytes)
}

/// [`check_body`] for text that may be empty (reasons, comments).
fn check_optional_text(field: &'static str, text: &str, max_bytes: usize) -> Result<(), Refusal> {
    if text.len() > max_bytes {
        return Err((
            RejectReason::TooLarge,
            format!("{field} is longer than {max_bytes} bytes"),
        ));
    }
    wire::check_text(field, text).map_err(|err| (err.reason(), err.to_string()))
}

/// Every value a client wrote into an action, checked before anything is decided or written.
fn check_action(action: &Action, max_body_bytes: usize) -> Result<(), Refusal> {
    let name = |field, name: &str| {
        wire::check_name(field, name).map_err(|err| (err.reason(), err.to_string()))
    };
    match action {
        Action::Message { body } | Action::Note { body } => {
            check_body("body", body, max_body_bytes)
        }
        Action::Transfer { to_agent, to_team } => {
            if let Some(agent) = to_agent {
                name("to_agent", agent)?;
            }
            if let Some(team) = to_team {
                name("to_team", team)?;
            }
            Ok(())
        }
        Action::Escalate { reason } | Action::Close { reason } => reason
            .as_deref()
            .map_or(Ok(()), |r| check_optional_text("reason", r, max_body_bytes)),
        Action::Survey { rating, comment } => {
            if !(1..=5).contains(rating) {
                return Err((RejectReason::Invalid, "the rating is 1 to 5".to_owned()));
            }
            comment.as_deref().map_or(Ok(()), |c| {
                check_optional_text("comment", c, max_body_bytes)
            })
        }
        Action::Receipt { .. } | Action::Lock { .. } | Action::Join | Action::Leave => Ok(()),
        Action::Resync { .. } => Ok(()),
    }
}

/// The stream entry an action leaves under the sender's own client message id, if any: what a
/// resubmission with that id must match to be the same submission.
fn primary_content(action: &Action, sender: &str) -> Option<StreamContent> {
    let event = |event| Some(StreamContent::Event { event });
    match action {
        Action::Message { body } => Some(StreamContent::Message { body: body.clone() }),
        Action::Note { body } => Some(StreamContent::Note { body: body.clone() }),
        Action::Join => event(SessionEvent::Joined {
            subject: sender.to_owned(),
        }),
        Action::Leave => event(SessionEvent::Left {
            subject: sender.to_owned(),
        }),
        Action::Transfer { to_agent, to_team } => event(SessionEvent::Transferred {
            from: Some(sender.to_owned()),
            to_agent: to_agent.clone(),
            to_team: to_team.clone(),
        }),
        Action::Escalate { reason } => event(SessionEvent::Escalated {
            reason: reason.clone(),
        }),
        Action::Close { reason } => event(SessionEvent::Closed {
            reason: reason.clone(),
            survey_offered: true,
        }),
        Action::Receipt { .. } | Action::Lock { .. } | Action::Resync { .. } => None,
        Action::Survey { .. } => None,
    }
}

/// A stored entry's content, as it was published.
fn stored_content(row: &message::Model) -> Option<StreamContent> {
    match row.kind {
        message::MessageKind::Text => Some(StreamContent::Message {
            body: row.body.clone(),
        }),
        message::MessageKind::Note => Some(StreamContent::Note {
            body: row.body.clone(),
        }),
        message::MessageKind::Event => serde_json::from_str(&row.body)
            .ok()
            .map(|event| StreamContent::Event { event }),
    }
}

/// SHA-256 (hex) of an action as the server parsed it: the same request gives the same digest
/// however its JSON was spelled.
fn request_digest(action: &Action) -> String {
    let canonical = serde_json::to_vec(action).unwrap_or_default();
    crate::audit::hex(ring::digest::digest(&ring::digest::SHA256, &canonical).as_ref())
}

/// The client message id of a payload that did not parse as a whole, so the rejection can
/// still name it; empty when it is not a well-formed id (an answer echoes nothing unbounded).
fn client_msg_id_of(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|value| value.get("client_msg_id")?.as_str().map(str::to_owned))
        .filter(|id| wire::check_client_msg_id(id).is_ok())
        .unwrap_or_default()
}

/// 16 random hex characters: unguessable, so a session id does not reveal others.
fn new_session_id() -> String {
    let mut bytes = [0u8; 8];
    // The system generator does not fail on supported platforms; a failure would leave zeros,
    // which the unique primary key would then refuse.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    format!(
        "s-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

impl Worker {
    /// Publishes what a committed batch produced: memberships (so the gateway lets
    /// participants in), lock states, stream entries, acknowledgements. A payload the gateway
    /// would refuse is not sent (it would cost the connection): everything the pipeline builds
    /// is bounded well below the limit, so this is logged as the defect it would be.
    async fn publish(&self, link: &Link, outbox: Outbox) -> Result<(), rumqttc::v5::ClientError> {
        let limit = self.packet_limit.load(Ordering::Relaxed);
        let memberships = Topic::Memberships.to_string();
        let publishes = outbox
            .memberships
            .into_iter()
            .map(|update| {
                let payload = serde_json::to_vec(&update).unwrap_or_default();
                (memberships.clone(), payload, false)
            })
            // Lock state is retained, so that a dashboard that subscribes later sees the holder.
            .chain(outbox.locks.into_iter().map(|(t, p)| (t, p, true)))
            .chain(outbox.entries.into_iter().map(|(t, p)| (t, p, false)))
            .chain(outbox.acks.into_iter().map(|(t, p)| (t, p, false)));
        for (topic, payload, retain) in publishes {
            if !fits(limit, &topic, &payload) {
                tracing::error!(%topic, size = payload.len(), limit, "a publish larger than the gateway accepts was not sent");
                continue;
            }
            link.publish(topic, retain, payload).await?;
        }
        Ok(())
    }
}

/// Whether a QoS 1 PUBLISH of `payload` to `topic` (with room for its header, packet id and
/// properties) fits in a packet of `limit` bytes.
fn fits(limit: usize, topic: &str, payload: &[u8]) -> bool {
    const OVERHEAD: usize = 64;
    topic.len() + payload.len() + OVERHEAD <= limit
}

/// The answer to a submission that could not be stored: `unavailable`, not audited (the
/// database that failed holds the trail), so that the sender knows to resubmit.
fn unavailable(incoming: &Incoming) -> Outbox {
    let mut outbox = Outbox::default();
    let cmid = client_msg_id_of(&incoming.payload);
    let (sender, session_id) = match Topic::parse(&incoming.topic) {
        Some(Topic::Open { subject }) => (subject, None),
        Some(Topic::Session {
            session,
            kind: SessionTopic::Submit,
            subject: Some(subject),
        }) => (subject, Some(session)),
        _ => return outbox,
    };
    outbox.ack(
        sender,
        &cmid,
        session_id,
        Outcome::Rejected {
            reason: RejectReason::Unavailable,
            message: "it could not be stored now; nothing was stored; resubmit it".to_owned(),
        },
    );
    outbox
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let rows: &[(&str, Option<RejectReason>)] = &[
            ("Hello", None),
            ("line one\nline two\ttab", None),
            ("", Some(RejectReason::TooLarge)),
            ("   ", Some(RejectReason::TooLarge)),
            ("bell\u{7}", Some(RejectReason::ContentRefused)),
        ];
        for (body, expected) in rows {
            assert_eq!(
                check_body("body", body, 32).err().map(|(reason, _)| reason),
                *expected,
                "{body:?}"
            );
        }
        assert_eq!(
            check_body("body", &"x".repeat(33), 32)
                .err()
                .map(|(r, _)| r),
            Some(RejectReason::TooLarge)
        );
    }

    #[test]
    fn actions_are_checked_before_anything_is_written() {
        let long_name = "a".repeat(wire::NAME_MAX + 1);
        let rows: Vec<(Action, Option<RejectReason>)> = vec![
            (Action::Message { body: "Hi".into() }, None),
            (
                Action::Note {
                    body: "x\u{202E}y".into(),
                },
                Some(RejectReason::ContentRefused),
            ),
            (
                Action::Transfer {
                    to_agent: Some(long_name),
                    to_team: None,
                },
                Some(RejectReason::TooLarge),
            ),
            (
                Action::Transfer {
                    to_agent: None,
                    to_team: Some("team\u{0}".into()),
                },
                Some(RejectReason::ContentRefused),
            ),
            (
                Action::Escalate {
                    reason: Some("r".repeat(33)),
                },
                Some(RejectReason::TooLarge),
            ),
            (Action::Close { reason: None }, None),
            (
                Action::Survey {
                    rating: 6,
                    comment: None,
                },
                Some(RejectReason::Invalid),
            ),
            (
                Action::Survey {
                    rating: 5,
                    comment: Some("\u{2066}great".into()),
                },
                Some(RejectReason::ContentRefused),
            ),
        ];
        for (action, expected) in rows {
            assert_eq!(
                check_action(&action, 32).err().map(|(reason, _)| reason),
                expected,
                "{action:?}"
            );
        }
    }

    /// What a resubmission is compared with: the entry the original left under its id.
    #[test]
    fn a_resubmission_matches_only_its_own_entry() {
        let message = Action::Message { body: "Hi".into() };
        let stored = primary_content(&message, "kiosk-1");
        assert_eq!(primary_content(&message, "kiosk-1"), stored);
        assert_ne!(
            primary_content(&Action::Message { body: "Bye".into() }, "kiosk-1"),
            stored
        );
        assert_ne!(
            primary_content(&Action::Note { body: "Hi".into() }, "kiosk-1"),
            stored
        );
        assert_eq!(
            primary_content(
                &Action::Lock {
                    op: LockOp::Acquire
                },
                "a"
            ),
            None
        );
        let close = |reason: &str| Action::Close {
            reason: Some(reason.into()),
        };
        assert_ne!(
            primary_content(&close("done"), "a"),
            primary_content(&close("spam"), "a")
        );
        // Kept acknowledgements compare request digests, which ignore how the JSON was spelled.
        let spelled = |json: &str| Submission::from_json(json.as_bytes()).unwrap().action;
        assert_eq!(
            request_digest(&spelled(
                r#"{"client_msg_id":"a","type":"lock","op":"acquire"}"#
            )),
            request_digest(&spelled(
                r#"{ "op" : "acquire", "type":"lock", "client_msg_id":"b"}"#
            ))
        );
        assert_ne!(
            request_digest(&spelled(
                r#"{"client_msg_id":"a","type":"lock","op":"acquire"}"#
            )),
            request_digest(&spelled(
                r#"{"client_msg_id":"a","type":"lock","op":"release"}"#
            ))
        );
    }

    /// A worker that panics or ends is restarted, and readiness is false in between.
    #[tokio::test(start_paused = true)]
    async fn a_failed_worker_is_restarted_and_reported_not_ready() {
        let ready = watch::Sender::new(false);
        // What each start found: whether the supervisor had reported not ready by then.
        let found = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let supervisor = tokio::spawn({
            let (ready, found) = (ready.clone(), found.clone());
            async move {
                supervise(
                    ready.clone(),
                    async move {
                        let _ = shutdown_rx.await;
                    },
                    move |mut stop| {
                        let ready = ready.clone();
                        let n = {
                            let mut found = found.lock().unwrap();
                            found.push(*ready.borrow());
                            found.len()
                        };
                        async move {
                            ready.send_replace(true);
                            match n {
                                1 => panic!("the first worker fails"),
                                2 => {}
                                _ => {
                                    let _ = stop.changed().await;
                                }
                            }
                        }
                    },
                )
                .await
            }
        });
        // The first worker panics, the second ends, the third keeps running.
        while found.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(*found.lock().unwrap(), [false, false, false]);
        assert!(*ready.borrow(), "the third worker is running");
        shutdown_tx.send(()).unwrap();
        supervisor.await.unwrap();
        assert!(!*ready.borrow(), "not ready once stopped");
        assert_eq!(found.lock().unwrap().len(), 3, "no restart after shutdown");
    }

    #[test]
    fn session_ids_are_distinct_and_shaped() {
        let (a, b) = (new_session_id(), new_session_id());
        assert_ne!(a, b);
        assert!(a.starts_with("s-") && a.len() == 18, "{a}");
        assert!(Topic::parse(&format!("cc/v1/sessions/{a}/messages")).is_some());
    }

    /// Resubmissions that land in the same batch as their original (whose rows the batch has
    /// not written yet) get the original's answer, not a second session or entry.
    #[tokio::test]
    async fn a_batch_recognises_its_own_resubmissions() {
        let dir = tempfile::tempdir().unwrap();
        let config = store::DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("batch.db").display()),
            ..store::DatabaseConfig::default()
        };
        let store = store::Store::open(&config).await.unwrap();
        let key = crate::AuditKey::load(&crate::AuditConfig {
            key_file: dir.path().join("audit-key"),
            ..crate::AuditConfig::default()
        })
        .unwrap();
        let audit = Arc::new(AuditTrail::open(&store, key).await.unwrap());
        let mut pipeline = Worker::new(
            store.clone(),
            audit,
            BridgeConfig::default(),
            watch::Sender::new(false),
        );
        let incoming =
            |topic: &str, payload: serde_json::Value| Incoming::local(topic, payload.to_string());
        let open = serde_json::json!({"client_msg_id": "open-1", "channel": "kiosk"});
        let outbox = pipeline
            .decide_and_store(&[
                incoming("cc/v1/open/kiosk-9", open.clone()),
                incoming("cc/v1/open/kiosk-9", open),
            ])
            .await
            .unwrap();
        let acks: Vec<Ack> = outbox
            .acks
            .iter()
            .map(|(_, ack)| serde_json::from_slice(ack).unwrap())
            .collect();
        assert_eq!(acks.len(), 2);
        let session = acks[0].session_id.clone().unwrap();
        assert_eq!(acks[1].session_id.as_deref(), Some(session.as_str()));

        let submit = format!("cc/v1/sessions/{session}/submit/kiosk-9");
        let message =
            serde_json::json!({"client_msg_id": "m-1", "type": "message", "body": "Hello"});
        let outbox = pipeline
            .decide_and_store(&[
                incoming(&submit, message.clone()),
                incoming(&submit, message),
            ])
            .await
            .unwrap();
        let seqs: Vec<Option<u64>> = outbox
            .acks
            .iter()
            .map(
                |(_, ack)| match serde_json::from_slice::<Ack>(ack).unwrap().outcome {
                    Outcome::Accepted { seq } => seq,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(seqs.len(), 2);
        assert_eq!(seqs[0], seqs[1], "one message, one sequence number");
        assert_eq!(outbox.entries.len(), 1, "published once");
        let stored = store.session_entries(&session).await.unwrap();
        assert_eq!(
            stored.iter().filter(|m| m.client_msg_id == "m-1").count(),
            1,
            "stored once"
        );
    }
}
