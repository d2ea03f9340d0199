//! The chat pipeline: takes what participants submit, decides, stores, orders, audits, and only
//! then publishes.
//!
//! It is an MQTT 5 client of the gateway with a `service` token, so it runs the same in-process
//! (`courtchat serve`) and as its own process (`courtchat bridge`). Submissions are handled in
//! batches: everything that has arrived is decided, written in one transaction (one commit, one
//! fsync) with its audit entries, and published after the commit: membership changes first,
//! then stream entries, then acknowledgements. A client therefore never sees an acknowledgement
//! or an entry for something that is not stored.
//!
//! Built so far: opening sessions, applicants' messages, resync, idempotent resubmission,
//! size, content and rate limits. Agents' work (join, reply locks, notes, transfer, escalation,
//! closing, receipts, the survey) is the rest of issue 4; such submissions are refused with
//! `not_allowed` and a message that says so.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
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
    QueryOrder, Set, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::audit::{AuditBatch, AuditEntry, AuditTrail, in_statement_sizes, padded};
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the database failed: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Audit(#[from] crate::AuditError),
}

/// How the pipeline reaches the gateway: where, as whom, and a fresh token per connection.
pub struct BrokerLink {
    pub addr: SocketAddr,
    pub client_id: String,
    pub token: Box<dyn Fn() -> String + Send + Sync>,
}

/// A submission as it arrived.
struct Incoming {
    topic: String,
    payload: bytes::Bytes,
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

enum Decided {
    /// Stored; the sequence number when it has one.
    Accepted(Option<u64>),
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
    /// It left a stream entry with this sequence number.
    Entry(u64),
    /// Its kept acknowledgement (lock operations, receipts, the survey).
    Ack(Vec<u8>),
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
            let key = (row.session_id, row.sender, row.client_msg_id);
            answered.insert(key, Answered::Entry(row.seq as u64));
        }
        for row in submission_ack::Entity::find().filter(kept).all(txn).await? {
            let key = (row.session_id, row.sender, row.client_msg_id);
            answered
                .entry(key)
                .or_insert(Answered::Ack(row.ack.into_bytes()));
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

pub struct Pipeline {
    /// True while connected and subscribed: submissions are being received.
    ready: tokio::sync::watch::Sender<bool>,
    store: store::Store,
    audit: Arc<AuditTrail>,
    config: BridgeConfig,
    sessions: HashMap<String, SessionView>,
    limiter: RateLimiter,
}

impl Pipeline {
    pub fn new(store: store::Store, audit: Arc<AuditTrail>, config: BridgeConfig) -> Self {
        let limiter = RateLimiter::new(RateLimit {
            per_second: config.rate_per_second,
            burst: config.rate_burst,
        });
        Self {
            ready: tokio::sync::watch::Sender::new(false),
            store,
            audit,
            config,
            sessions: HashMap::new(),
            limiter,
        }
    }

    /// Follows whether the pipeline is receiving submissions (connected and subscribed). Until it
    /// is, submissions published to the gateway reach nobody; `/readyz` reports it.
    pub fn readiness(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Connects to the gateway and handles submissions until `shutdown` resolves, reconnecting
    /// (with a fresh token) when the connection drops.
    pub async fn run(mut self, link: BrokerLink, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let session = self.connected(&link, &mut shutdown);
            if session.await {
                return;
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One connection's life; true when it ended because of `shutdown`.
    async fn connected(
        &mut self,
        link: &BrokerLink,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        let mut options = MqttOptions::new(
            &link.client_id,
            link.addr.ip().to_string(),
            link.addr.port(),
        );
        options.set_credentials(&link.client_id, (link.token)());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(Some(1024 * 1024));
        // Each batch ends in a burst of small publishes (entries, then acknowledgements); with
        // Nagle's algorithm on, all but the first wait for the gateway's delayed TCP ACK, which
        // put ~25 ms on every acknowledgement (found by `courtchat bench chat`).
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        // Unbounded on purpose: the event loop must never wait for the pipeline, because the
        // pipeline publishes through the same event loop (a bounded queue here deadlocks once
        // both directions fill up). Per-sender rate limits bound what can pile up.
        let (tx, mut rx) = mpsc::unbounded_channel::<Incoming>();
        let ready = self.ready.clone();
        let driver = tokio::spawn(async move {
            let mut subscribed = 0;
            loop {
                match eventloop.poll().await {
                    // Both subscriptions are in place: from now on nothing submitted is missed.
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subscribed += 1;
                        if subscribed == 2 {
                            ready.send_replace(true);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                        if tx
                            .send(Incoming {
                                topic,
                                payload: publish.payload,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        ready.send_replace(false);
                        tracing::warn!(error = %err, "the pipeline's broker connection ended");
                        return;
                    }
                }
            }
        });
        for filter in [
            format!("{}/open/+", schemas::topics::PREFIX),
            format!("{}/sessions/+/submit/+", schemas::topics::PREFIX),
        ] {
            if client.subscribe(filter, QoS::AtLeastOnce).await.is_err() {
                driver.abort();
                return false;
            }
        }
        tracing::info!("chat pipeline connected");
        // Lapsed reply locks are freed, recorded and announced even when nobody writes.
        let mut lock_sweep = tokio::time::interval(Duration::from_secs(1));
        let stopped = loop {
            let first = tokio::select! {
                _ = shutdown.as_mut() => break true,
                _ = lock_sweep.tick() => {
                    match self.expire_locks().await {
                        Ok(outbox) => {
                            if publish(&client, outbox).await.is_err() {
                                break false;
                            }
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "lapsed locks could not be released");
                            self.sessions.clear();
                        }
                    }
                    continue;
                }
                first = rx.recv() => first,
            };
            let Some(first) = first else { break false };
            let mut batch = vec![first];
            while batch.len() < self.config.batch_max {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            match self.decide_and_store(batch).await {
                Ok(outbox) => {
                    if publish(&client, outbox).await.is_err() {
                        break false;
                    }
                }
                Err(err) => {
                    // Nothing of the batch was stored: forget cached sequence numbers, and let
                    // senders time out and resubmit (their client message ids make that safe).
                    tracing::error!(error = %err, "a batch could not be stored");
                    self.sessions.clear();
                }
            }
        };
        self.ready.send_replace(false);
        let _ = client.disconnect().await;
        driver.abort();
        stopped
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
    async fn decide_and_store(&mut self, batch: Vec<Incoming>) -> Result<Outbox, PipelineError> {
        let txn = self.store.connection().begin().await?;
        let trail = self.audit.clone();
        let mut work = Work::new(&txn, trail.batch(&txn).await?);
        work.answered = answered(&txn, &batch).await?;
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
        let request: OpenSession = match serde_json::from_slice(payload) {
            Ok(request) => request,
            Err(err) => {
                return reject(
                    w,
                    applicant,
                    None,
                    &client_msg_id_of(payload),
                    RejectReason::Invalid,
                    &err.to_string(),
                )
                .await;
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
            w.outbox.ack(
                applicant,
                &cmid,
                Some(&existing.session_id),
                Outcome::Accepted { seq: None },
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
            && let Err((reason, message)) = check_body(first, self.config.max_body_bytes)
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
        self.append_entry(w, &session_id, applicant, &cmid, opened, None)
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
            Outcome::Accepted { seq: None },
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
        let submission: Submission = match serde_json::from_slice(payload) {
            Ok(submission) => submission,
            Err(err) => {
                let cmid = client_msg_id_of(payload);
                return reject(
                    w,
                    sender,
                    Some(session_id),
                    &cmid,
                    RejectReason::Invalid,
                    &err.to_string(),
                )
                .await;
            }
        };
        let cmid = submission.client_msg_id.clone();
        // The same submission again: the original acknowledgement.
        let key = (session_id.to_owned(), sender.to_owned(), cmid.clone());
        if let Some(answered) = w.answered.get(&key).cloned() {
            match answered {
                Answered::Entry(seq) => w.outbox.ack(
                    sender,
                    &cmid,
                    Some(session_id),
                    Outcome::Accepted { seq: Some(seq) },
                ),
                Answered::Ack(ack) => w.outbox.acks.push((ack_topic(sender), ack)),
            }
            return Ok(());
        }
        let leaves_entry = matches!(
            submission.action,
            Action::Message { .. }
                | Action::Note { .. }
                | Action::Join
                | Action::Leave
                | Action::Transfer { .. }
                | Action::Escalate { .. }
                | Action::Close { .. }
        );
        match self
            .decide(w, session_id, sender, &cmid, submission)
            .await?
        {
            Ok(Some(Decided::Accepted(seq))) => {
                w.outbox
                    .ack(sender, &cmid, Some(session_id), Outcome::Accepted { seq });
                // Entries answer resubmissions through the messages table; the rest are kept.
                if !leaves_entry && let Some((_, ack)) = w.outbox.acks.last() {
                    let ack = ack.clone();
                    submission_ack::ActiveModel {
                        session_id: Set(session_id.to_owned()),
                        sender: Set(sender.to_owned()),
                        client_msg_id: Set(cmid.clone()),
                        ack: Set(String::from_utf8_lossy(&ack).into_owned()),
                        created_at: Set(Utc::now().trunc_subsecs(6)),
                    }
                    .insert(w.txn)
                    .await?;
                    w.answered.insert(key, Answered::Ack(ack));
                }
                Ok(())
            }
            // Answered already (a resync reply).
            Ok(None) => Ok(()),
            Err((reason, message)) => {
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
    ) -> Result<Result<Option<Decided>, Refusal>, PipelineError> {
        let refuse = |reason, message: &str| Ok(Err((reason, message.to_owned())));
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
                self.resync(w, session_id, sender, staff.is_some(), from_seq, to_seq)
                    .await?;
                Ok(Ok(None))
            }
            Action::Message { body } | Action::Note { body }
                if self.limiter.check(sender, Instant::now()).is_err() =>
            {
                let _ = body;
                refuse(RejectReason::RateLimited, "too many messages; slow down")
            }
            Action::Message { body } => {
                if let Err((reason, message)) = check_body(&body, self.config.max_body_bytes) {
                    return Ok(Err((reason, message)));
                }
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
                Ok(Ok(Some(Decided::Accepted(Some(seq)))))
            }
            Action::Note { body } => {
                if staff.is_none() {
                    return refuse(RejectReason::NotAllowed, "only staff write internal notes");
                }
                if let Err((reason, message)) = check_body(&body, self.config.max_body_bytes) {
                    return Ok(Err((reason, message)));
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
                Ok(Ok(Some(Decided::Accepted(Some(seq)))))
            }
            Action::Join => {
                if role.is_some() {
                    return Ok(Ok(Some(Decided::Accepted(None))));
                }
                let Some(staff_role) = self.staff_role(w.txn, sender).await? else {
                    return refuse(
                        RejectReason::NotAllowed,
                        "only registered, active staff may join a session",
                    );
                };
                self.join(w, session_id, sender, cmid, staff_role, now)
                    .await?;
                Ok(Ok(Some(Decided::Accepted(None))))
            }
            Action::Leave => {
                if role == Some(participant::ParticipantRole::Applicant) {
                    return refuse(
                        RejectReason::NotAllowed,
                        "the applicant closes the session instead of leaving it",
                    );
                }
                self.leave(w, session_id, sender, cmid, now).await?;
                Ok(Ok(Some(Decided::Accepted(None))))
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
                        Ok(Ok(Some(Decided::Accepted(None))))
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
                match (to_agent, to_team) {
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
                            .await?;
                    }
                    (None, Some(team)) => {
                        self.transfer_to_team(w, session_id, sender, cmid, &team, now)
                            .await?;
                    }
                    _ => {
                        return refuse(
                            RejectReason::Invalid,
                            "name exactly one of to_agent and to_team",
                        );
                    }
                }
                Ok(Ok(Some(Decided::Accepted(None))))
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
                self.append_entry(
                    w,
                    session_id,
                    sender,
                    &format!("{cmid}#escalated"),
                    escalated,
                    None,
                )
                .await?;
                Ok(Ok(Some(Decided::Accepted(None))))
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
                    .append_entry(
                        w,
                        session_id,
                        sender,
                        &format!("{cmid}#closed"),
                        closed,
                        None,
                    )
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
                Ok(Ok(Some(Decided::Accepted(Some(seq)))))
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
                if !(1..=5).contains(&rating) {
                    return refuse(RejectReason::Invalid, "the rating is 1 to 5");
                }
                if comment
                    .as_ref()
                    .is_some_and(|c| c.len() > self.config.max_body_bytes)
                {
                    return refuse(RejectReason::TooLarge, "the comment is too long");
                }
                if survey_response::Entity::find_by_id(session_id)
                    .one(w.txn)
                    .await?
                    .is_some()
                {
                    return refuse(RejectReason::NotAllowed, "the survey was already answered");
                }
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
                    detail: serde_json::json!({ "rating": rating, "client_msg_id": cmid }),
                })?;
                Ok(Ok(Some(Decided::Accepted(None))))
            }
            Action::Receipt {
                delivered_seq,
                read_seq,
            } => {
                self.receipt(w, session_id, sender, delivered_seq, read_seq, now)
                    .await?;
                Ok(Ok(Some(Decided::Accepted(None))))
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
    ) -> Result<(), PipelineError> {
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
        self.append_entry(w, session_id, from, cmid, transferred, None)
            .await?;
        self.leave(w, session_id, from, &format!("{cmid}#leave"), now)
            .await
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
    ) -> Result<(), PipelineError> {
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
        self.append_entry(w, session_id, from, cmid, transferred, None)
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
        .await
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
    ) -> Result<(), PipelineError> {
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
        let becomes_active = {
            let view = self
                .sessions
                .get_mut(session_id)
                .expect("the view is loaded");
            view.members.insert(subject.to_owned(), role);
            view.status == session::SessionStatus::Queued
        };
        let joined = StreamContent::Event {
            event: SessionEvent::Joined {
                subject: subject.to_owned(),
            },
        };
        self.append_entry(w, session_id, subject, cmid, joined, None)
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
        Ok(())
    }

    async fn leave(
        &mut self,
        w: &mut Work<'_, '_>,
        session_id: &str,
        subject: &str,
        cmid: &str,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), PipelineError> {
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
        self.append_entry(w, session_id, subject, cmid, left, None)
            .await?;
        w.outbox
            .memberships
            .push(membership(session_id, subject, role, MembershipOp::Leave));
        Ok(())
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
        let view = self
            .sessions
            .get_mut(session_id)
            .expect("the view is loaded before an entry is appended");
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
            Answered::Entry(seq as u64),
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

    /// Sends the requester exactly the entries it asked for that it may read.
    async fn resync(
        &mut self,
        w: &mut Work<'_, '_>,
        session_id: &str,
        sender: &str,
        staff: bool,
        from_seq: u64,
        to_seq: Option<u64>,
    ) -> Result<(), PipelineError> {
        // The stream is read back from the database: what this batch appended goes first.
        w.flush().await?;
        let last_seq = self
            .sessions
            .get(session_id)
            .map_or(0, |view| view.last_seq);
        let to_seq = to_seq.unwrap_or(last_seq as u64).min(last_seq as u64);
        let mut query = message::Entity::find()
            .filter(message::Column::SessionId.eq(session_id))
            .filter(message::Column::Seq.lte(to_seq as i64));
        // Applicants never receive internal notes, not even through a resync.
        if !staff {
            query = query.filter(message::Column::Kind.ne(message::MessageKind::Note));
        }
        let rows = query.order_by_asc(message::Column::Seq).all(w.txn).await?;
        // Each entry's prev_seq is the previous one on its own topic, also before the range.
        let (mut prev_public, mut prev_note) = (0, 0);
        let mut entries = Vec::new();
        for row in rows {
            let is_note = row.kind == message::MessageKind::Note;
            let prev = if is_note { prev_note } else { prev_public };
            if row.seq as u64 >= from_seq {
                let content = match row.kind {
                    message::MessageKind::Text => StreamContent::Message { body: row.body },
                    message::MessageKind::Note => StreamContent::Note { body: row.body },
                    message::MessageKind::Event => match serde_json::from_str(&row.body) {
                        Ok(event) => StreamContent::Event { event },
                        Err(_) => continue,
                    },
                };
                entries.push(StreamEntry {
                    v: wire::VERSION,
                    session_id: session_id.to_owned(),
                    seq: row.seq as u64,
                    prev_seq: prev,
                    at: row.created_at,
                    sender: row.sender,
                    content,
                });
            }
            if is_note {
                prev_note = row.seq as u64;
            } else {
                prev_public = row.seq as u64;
            }
        }
        let reply = Resync {
            v: wire::VERSION,
            session_id: session_id.to_owned(),
            entries,
            last_seq: last_seq as u64,
        };
        w.outbox.acks.push((
            ack_topic(sender),
            serde_json::to_vec(&reply).unwrap_or_default(),
        ));
        Ok(())
    }
}

impl Outbox {
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

/// A message body the record may hold: not empty, within the size limit, printable.
fn check_body(body: &str, max_bytes: usize) -> Result<(), (RejectReason, String)> {
    if body.trim().is_empty() {
        return Err((RejectReason::TooLarge, "the message is empty".to_owned()));
    }
    if body.len() > max_bytes {
        return Err((
            RejectReason::TooLarge,
            format!("the message is longer than {max_bytes} bytes"),
        ));
    }
    if body
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err((
            RejectReason::ContentRefused,
            "control characters are not accepted".to_owned(),
        ));
    }
    Ok(())
}

/// The client message id of a payload that did not parse as a whole, so the rejection can
/// still name it.
fn client_msg_id_of(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|value| value.get("client_msg_id")?.as_str().map(str::to_owned))
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

/// Publishes what a committed batch produced: memberships (so the gateway lets participants
/// in), stream entries, acknowledgements.
async fn publish(client: &AsyncClient, outbox: Outbox) -> Result<(), rumqttc::v5::ClientError> {
    let memberships = Topic::Memberships.to_string();
    for update in outbox.memberships {
        client
            .publish(
                &memberships,
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&update).unwrap_or_default(),
            )
            .await?;
    }
    // Lock state is retained, so that a dashboard that subscribes later sees the holder.
    for (topic, payload) in outbox.locks {
        client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await?;
    }
    for (topic, payload) in outbox.entries.into_iter().chain(outbox.acks) {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await?;
    }
    Ok(())
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
                check_body(body, 32).err().map(|(reason, _)| reason),
                *expected,
                "{body:?}"
            );
        }
        assert_eq!(
            check_body(&"x".repeat(33), 32).err().map(|(r, _)| r),
            Some(RejectReason::TooLarge)
        );
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
        let mut pipeline = Pipeline::new(store.clone(), audit, BridgeConfig::default());
        let incoming = |topic: &str, payload: serde_json::Value| Incoming {
            topic: topic.to_owned(),
            payload: payload.to_string().into(),
        };
        let open = serde_json::json!({"client_msg_id": "open-1", "channel": "kiosk"});
        let outbox = pipeline
            .decide_and_store(vec![
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
            .decide_and_store(vec![
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
