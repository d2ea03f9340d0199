//! One batch, start to commit: parse and check what arrived, load what deciding needs, decide
//! each submission in arrival order, write everything in one transaction, answer resyncs from
//! what is then stored, commit.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{SubsecRound, Utc};
use schemas::db::entities::submission_ack;
use schemas::topics::{SessionTopic, Topic};
use schemas::wire::{self, Ack, Action, OpenSession, Outcome, RejectReason, Submission};
use sea_orm::{Set, TransactionTrait};

use super::decide::lifecycle::{self, OpenedBefore};
use super::decide::{self, Context, Effects, Verdict};
use super::input::{
    check_action, check_body, client_msg_id_of, new_session_id, primary_content, request_digest,
};
use super::load::{Answered, Key, answered, opened_before, staff_roles};
use super::outbox::Outbox;
use super::resync::{self, PageLimits, PageRequest};
use super::worker::Worker;
use super::{PipelineError, writer};
use crate::audit::AuditEntry;
use crate::link::Incoming;

/// A submission after parsing and checking, before deciding.
enum Parsed {
    Open {
        applicant: String,
        request: OpenSession,
    },
    Submit {
        session_id: String,
        sender: String,
        submission: Submission,
    },
    /// Refused before deciding (not valid, or a value the record does not take).
    Refused {
        sender: String,
        session_id: Option<String>,
        cmid: String,
        reason: RejectReason,
        message: String,
    },
    /// Not a topic the pipeline answers (its subscriptions rule this out).
    Ignored,
}

fn parse(incoming: &Incoming, max_body_bytes: usize) -> Parsed {
    let refused =
        |sender: &str, session_id: Option<&str>, cmid: String, (reason, message)| Parsed::Refused {
            sender: sender.to_owned(),
            session_id: session_id.map(str::to_owned),
            cmid,
            reason,
            message,
        };
    let unsupported = || {
        (
            RejectReason::UnsupportedVersion,
            "this server speaks version 1".to_owned(),
        )
    };
    match Topic::parse(&incoming.topic) {
        Some(Topic::Open { subject }) => match OpenSession::from_json(&incoming.payload) {
            Err(err) => refused(
                subject,
                None,
                client_msg_id_of(&incoming.payload),
                (err.reason(), err.to_string()),
            ),
            Ok(request) if request.v != wire::VERSION => {
                refused(subject, None, request.client_msg_id, unsupported())
            }
            Ok(request) => {
                let first = request.first_message.as_deref();
                match first.map(|body| check_body("first_message", body, max_body_bytes)) {
                    Some(Err(refusal)) => refused(subject, None, request.client_msg_id, refusal),
                    _ => Parsed::Open {
                        applicant: subject.to_owned(),
                        request,
                    },
                }
            }
        },
        Some(Topic::Session {
            session,
            kind: SessionTopic::Submit,
            subject: Some(sender),
        }) => match Submission::from_json(&incoming.payload) {
            Err(err) => refused(
                sender,
                Some(session),
                client_msg_id_of(&incoming.payload),
                (err.reason(), err.to_string()),
            ),
            Ok(submission) if submission.v != wire::VERSION => refused(
                sender,
                Some(session),
                submission.client_msg_id,
                unsupported(),
            ),
            Ok(submission) => match check_action(&submission.action, max_body_bytes) {
                Err(refusal) => refused(sender, Some(session), submission.client_msg_id, refusal),
                Ok(()) => Parsed::Submit {
                    session_id: session.to_owned(),
                    sender: sender.to_owned(),
                    submission,
                },
            },
        },
        _ => Parsed::Ignored,
    }
}

impl Worker {
    /// Decides every submission of `batch` and stores the accepted ones in one transaction.
    /// Every submission gets an answer in the outbox, tagged with its place in the batch.
    pub(super) async fn decide_and_store(
        &mut self,
        batch: &[Incoming],
    ) -> Result<Outbox, PipelineError> {
        let txn = self.store.connection().begin().await?;
        let trail = self.audit.clone();
        let mut audit = trail.batch(&txn).await?;
        let now = Utc::now().trunc_subsecs(6);
        let parsed: Vec<Parsed> = batch
            .iter()
            .map(|incoming| parse(incoming, self.config.max_body_bytes))
            .collect();

        // What deciding needs, loaded for the whole batch.
        let wanted = parsed
            .iter()
            .filter_map(|p| match p {
                Parsed::Submit {
                    session_id,
                    sender,
                    submission,
                } => Some((
                    session_id.clone(),
                    sender.clone(),
                    submission.client_msg_id.clone(),
                )),
                _ => None,
            })
            .collect();
        let mut answered = answered(&txn, wanted).await?;
        let mut named_staff = Vec::new();
        let mut opens = HashMap::new();
        for p in &parsed {
            match p {
                Parsed::Submit {
                    session_id,
                    sender,
                    submission,
                } => {
                    if !self.views.load(&txn, session_id).await? {
                        continue;
                    }
                    match &submission.action {
                        Action::Join => named_staff.push(sender.clone()),
                        Action::Transfer {
                            to_agent: Some(to), ..
                        } => named_staff.push(to.clone()),
                        Action::Receipt { .. } => {
                            self.views.load_receipt(&txn, session_id, sender).await?;
                        }
                        Action::Survey { .. } => self.views.load_survey(&txn, session_id).await?,
                        _ => {}
                    }
                }
                Parsed::Open { applicant, request } => {
                    let key = (applicant.clone(), request.client_msg_id.clone());
                    if let Some(before) = opened_before(&txn, applicant, request).await? {
                        opens.insert(key, before);
                    }
                }
                Parsed::Refused { .. } | Parsed::Ignored => {}
            }
        }
        let staff = staff_roles(&txn, named_staff).await?;

        let mut fx = Effects::default();
        let mut resyncs = Vec::new();
        let mut ctx = Context {
            now,
            instant: Instant::now(),
            config: &self.config,
            limiter: &mut self.limiter,
            staff: &staff,
        };
        for (index, p) in parsed.into_iter().enumerate() {
            let index = Some(index);
            match p {
                Parsed::Ignored => {}
                Parsed::Refused {
                    sender,
                    session_id,
                    cmid,
                    reason,
                    message,
                } => reject(
                    &mut fx,
                    index,
                    &sender,
                    session_id.as_deref(),
                    &cmid,
                    reason,
                    &message,
                ),
                Parsed::Open { applicant, request } => {
                    let cmid = request.client_msg_id.clone();
                    let key = (applicant.clone(), cmid.clone());
                    let before = opens.get(&key).cloned();
                    let (verdict, session_id) = lifecycle::open(
                        &mut self.views,
                        &mut ctx,
                        &mut fx,
                        &applicant,
                        request,
                        before,
                        new_session_id(),
                    );
                    if let (Verdict::Accepted { .. }, Some(session_id)) = (&verdict, &session_id) {
                        // The same request again in this batch finds this session.
                        opens.entry(key).or_insert_with(|| OpenedBefore {
                            session_id: session_id.clone(),
                            same: true,
                        });
                    }
                    answer(
                        &mut fx,
                        index,
                        &applicant,
                        session_id.as_deref(),
                        &cmid,
                        verdict,
                    );
                }
                Parsed::Submit {
                    session_id,
                    sender,
                    submission,
                } => {
                    let cmid = submission.client_msg_id.clone();
                    let key = (session_id.clone(), sender.clone(), cmid.clone());
                    if let Some(original) = answered.get(&key).cloned() {
                        resubmitted(&mut fx, index, &key, &submission.action, original);
                        continue;
                    }
                    let digest = request_digest(&submission.action);
                    let content = primary_content(&submission.action, &sender);
                    let verdict = decide::submission(
                        &mut self.views,
                        &mut ctx,
                        &mut fx,
                        &session_id,
                        &sender,
                        &cmid,
                        submission.action,
                    );
                    match &verdict {
                        Verdict::Accepted { seq: Some(seq) } => {
                            answered.insert(key, Answered::Entry { seq: *seq, content });
                        }
                        Verdict::Accepted { seq: None } => {
                            // Entries answer resubmissions through the messages table; the
                            // rest are kept.
                            let ack = accepted(&cmid, Some(&session_id), None);
                            let ack = serde_json::to_vec(&ack).unwrap_or_default();
                            fx.kept_acks.push(submission_ack::ActiveModel {
                                session_id: Set(session_id.clone()),
                                sender: Set(sender.clone()),
                                client_msg_id: Set(cmid.clone()),
                                ack: Set(String::from_utf8_lossy(&ack).into_owned()),
                                request_digest: Set(Some(digest.clone())),
                                created_at: Set(now),
                            });
                            answered.insert(
                                key,
                                Answered::Ack {
                                    ack,
                                    digest: Some(digest),
                                },
                            );
                        }
                        Verdict::Resync {
                            from_seq,
                            to_seq,
                            staff,
                        } => {
                            // Answered once this batch's own entries are written.
                            let last_seq = self
                                .views
                                .get(&session_id)
                                .map_or(0, |view| view.last_seq as u64);
                            resyncs.push((
                                fx.outbox.answers.len(),
                                session_id.clone(),
                                cmid.clone(),
                                (*staff, *from_seq, *to_seq, last_seq),
                            ));
                            fx.outbox.answer(index, &sender, &serde_json::Value::Null);
                            continue;
                        }
                        Verdict::Refused(..) => {}
                    }
                    answer(&mut fx, index, &sender, Some(&session_id), &cmid, verdict);
                }
            }
        }

        writer::write(&txn, &mut audit, &mut fx, &self.views, now).await?;
        let limits = PageLimits::new(
            self.config.resync_page_entries,
            self.config.resync_page_bytes,
            self.packet_limit.load(std::sync::atomic::Ordering::Relaxed),
        );
        for (position, session_id, cmid, (staff, from_seq, to_seq, last_seq)) in resyncs {
            let request = PageRequest {
                session_id: &session_id,
                cmid: &cmid,
                staff,
                from_seq,
                to_seq,
                last_seq,
            };
            let page = resync::page(&txn, &request, limits).await?;
            fx.outbox.answers[position].payload = serde_json::to_vec(&page).unwrap_or_default();
        }
        txn.commit().await?;
        drop(audit);
        for session_id in &fx.closed {
            self.views.remove(session_id);
        }
        Ok(fx.outbox)
    }
}

fn accepted(cmid: &str, session_id: Option<&str>, seq: Option<u64>) -> Ack {
    Ack {
        v: wire::VERSION,
        client_msg_id: cmid.to_owned(),
        session_id: session_id.map(str::to_owned),
        outcome: Outcome::Accepted { seq },
    }
}

/// Answers a decided submission: its acknowledgement, or its refusal (audited).
fn answer(
    fx: &mut Effects,
    index: Option<usize>,
    sender: &str,
    session_id: Option<&str>,
    cmid: &str,
    verdict: Verdict,
) {
    match verdict {
        Verdict::Accepted { seq } => {
            fx.outbox
                .answer(index, sender, &accepted(cmid, session_id, seq));
        }
        Verdict::Refused(reason, message) => {
            reject(fx, index, sender, session_id, cmid, reason, &message);
        }
        // Answered by the caller, with a page.
        Verdict::Resync { .. } => {}
    }
}

/// Refuses a submission: recorded in the audit trail, answered on the sender's ack topic.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reject(
    fx: &mut Effects,
    index: Option<usize>,
    sender: &str,
    session_id: Option<&str>,
    cmid: &str,
    reason: RejectReason,
    message: &str,
) {
    fx.audit.push(AuditEntry {
        actor: sender.to_owned(),
        action: "submission.rejected".to_owned(),
        session_id: session_id.map(str::to_owned),
        detail: serde_json::json!({ "client_msg_id": cmid, "reason": reason, "message": message }),
    });
    let ack = Ack {
        v: wire::VERSION,
        client_msg_id: cmid.to_owned(),
        session_id: session_id.map(str::to_owned),
        outcome: Outcome::Rejected {
            reason,
            message: message.to_owned(),
        },
    };
    fx.outbox.answer(index, sender, &ack);
}

/// A submission with an id already answered: the original answer if it is the same
/// submission, `duplicate_id` if the id was reused for another.
fn resubmitted(
    fx: &mut Effects,
    index: Option<usize>,
    (session_id, sender, cmid): &Key,
    action: &Action,
    original: Answered,
) {
    let same = match &original {
        Answered::Entry { content, .. } => {
            primary_content(action, sender).as_ref() == content.as_ref()
        }
        Answered::Ack { digest, .. } => digest
            .as_ref()
            .is_none_or(|digest| *digest == request_digest(action)),
    };
    if !same {
        let message = "this client_msg_id was already used for a different submission";
        reject(
            fx,
            index,
            sender,
            Some(session_id),
            cmid,
            RejectReason::DuplicateId,
            message,
        );
        return;
    }
    match original {
        Answered::Entry { seq, .. } => {
            fx.outbox
                .answer(index, sender, &accepted(cmid, Some(session_id), Some(seq)));
        }
        Answered::Ack { ack, .. } => {
            let ack: serde_json::Value = serde_json::from_slice(&ack).unwrap_or_default();
            fx.outbox.answer(index, sender, &ack);
        }
    }
}

/// The answer to a submission that could not be stored: `unavailable`, not audited (the
/// database that failed holds the trail), so that the sender knows to resubmit.
pub(crate) fn unavailable(incoming: &Incoming, index: usize) -> Outbox {
    let message = "it could not be stored now; nothing was stored; resubmit it";
    undecided(incoming, index, RejectReason::Unavailable, message)
}

/// The answer to a submission that waited too long to be worth deciding: `busy`, with when to
/// come back. Not audited: nothing was decided, and shedding load must stay cheap.
pub(crate) fn busy(incoming: &Incoming, index: usize, retry_ms: u64) -> Outbox {
    let message = format!("the server is busy; nothing was stored; retry in {retry_ms} ms");
    undecided(incoming, index, RejectReason::Busy, &message)
}

/// A refusal of a submission that was not decided.
fn undecided(incoming: &Incoming, index: usize, reason: RejectReason, message: &str) -> Outbox {
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
    let ack = Ack {
        v: wire::VERSION,
        client_msg_id: cmid,
        session_id: session_id.map(str::to_owned),
        outcome: Outcome::Rejected {
            reason,
            message: message.to_owned(),
        },
    };
    outbox.answer(Some(index), sender, &ack);
    outbox
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::watch;

    use super::*;
    use crate::audit::AuditTrail;
    use crate::pipeline::BridgeConfig;

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
            .answers
            .iter()
            .map(|answer| serde_json::from_slice(&answer.payload).unwrap())
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
            .answers
            .iter()
            .map(|answer| {
                match serde_json::from_slice::<Ack>(&answer.payload)
                    .unwrap()
                    .outcome
                {
                    Outcome::Accepted { seq } => seq,
                    other => panic!("{other:?}"),
                }
            })
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
