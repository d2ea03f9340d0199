//! The decider: one batch, from what arrived to what is to be stored. It parses and checks what
//! arrived, loads what deciding needs, and decides each submission in arrival order; the
//! committer (`committer::store`) then writes everything in one transaction, answers resyncs
//! from what is then stored, and commits.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{SubsecRound, Utc};
use schemas::db::entities::submission_ack;
use schemas::topics::Topic;
use schemas::wire::{self, Action, RejectReason, StaffAction};
use sea_orm::Set;

use super::PipelineError;
use super::answers::{accepted, answer, reject, rejection, resubmitted};
use super::committer::store;
use super::decide::lifecycle;
use super::decide::{self, Context, Effects, Verdict, routing};
use super::decided::{Decided, OpenedRequest, Pending, ResyncJob};
use super::disclosure::reason_id;
use super::dispatch;
use super::input::{given_reason, new_session_id, primary_content, request_digest};
use super::load::{Answered, Key, answered, opened_before, overseers, staff_roles};
use super::outbox::Outbox;
use super::parsed::{Parsed, limit, parse};
use super::resync::PageLimits;
use super::worker::Worker;
use crate::pipeline::link::Incoming;

impl Worker {
    /// Decides every submission of `batch` and stores the accepted ones in one transaction.
    /// Every submission gets an answer in the outbox, tagged with its place in the batch.
    pub(super) async fn decide_and_store(
        &mut self,
        batch: &[Incoming],
    ) -> Result<Outbox, PipelineError> {
        let decided = self.decide(batch).await?;
        let limits = self.page_limits();
        let (outbox, closed) = store(&self.store, None, &self.audit, limits, decided).await?;
        for session_id in &closed {
            self.views.remove(session_id);
        }
        Ok(outbox)
    }

    pub(super) fn page_limits(&self) -> PageLimits {
        PageLimits::new(
            self.config.resync_page_entries,
            self.config.resync_page_bytes,
            self.packet_limit.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Decides every submission of `batch`, reading what it needs from the database but
    /// writing nothing: the views move on, and what is to be stored, audited and published is
    /// returned. Answers of a batch decided earlier and not yet committed (`self.pending`) count
    /// as stored.
    pub(super) async fn decide(&mut self, batch: &[Incoming]) -> Result<Decided, PipelineError> {
        let txn = self.store.connection();
        let now = Utc::now().trunc_subsecs(6);
        let instant = Instant::now();
        let parsed: Vec<Parsed> = batch
            .iter()
            .map(|incoming| parse(incoming, self.config.max_body_bytes))
            .map(|parsed| limit(&self.limits, parsed, instant))
            .collect();
        if !self.attendance.is_loaded() {
            self.attendance.load(txn, now).await?;
        }
        // Whatever an applicant submits says they are there.
        for p in &parsed {
            if let Some((sender, Some(session_id), _)) = p.names() {
                self.attendance.heard(session_id, sender, None, now);
            }
        }

        // What deciding needs, loaded for the whole batch.
        let mut wanted = std::collections::HashSet::<Key>::new();
        for p in &parsed {
            if let Parsed::Submit {
                session_id,
                sender,
                submission,
            } = p
            {
                let cmid = &submission.client_msg_id;
                wanted.insert((session_id.clone(), sender.clone(), cmid.clone()));
                // The note that holds the reason of an earlier escalate or close, to compare.
                if matches!(
                    submission.action,
                    Action::Escalate { .. } | Action::Close { .. }
                ) {
                    wanted.insert((session_id.clone(), sender.clone(), reason_id(cmid)));
                }
            }
        }
        let mut answered = answered(txn, self.reader.as_ref(), wanted.clone()).await?;
        for key in &wanted {
            if let Some(pending) = self.pending.answers.get(key) {
                answered.insert(key.clone(), pending.clone());
            }
        }
        let mut new_answers = HashMap::new();
        let mut named_staff = Vec::new();
        let mut acting_from_outside = Vec::new();
        let mut opens = HashMap::new();
        // Every session the batch names, read at once where not cached.
        let absent = self
            .views
            .load_all(
                txn,
                parsed.iter().filter_map(|p| match p {
                    Parsed::Submit { session_id, .. } => Some(session_id.as_str()),
                    _ => None,
                }),
            )
            .await?;
        // Dropped with any failure below, and read again next time.
        let mut roster = match self.roster.take() {
            Some(roster) => roster,
            None => dispatch::load(txn).await?,
        };
        for p in &parsed {
            match p {
                Parsed::Submit {
                    session_id,
                    sender,
                    submission,
                } => {
                    if absent.contains(session_id) || !self.views.load(txn, session_id).await? {
                        continue;
                    }
                    if matches!(
                        submission.action,
                        Action::Transfer { .. } | Action::Close { .. } | Action::Resync { .. }
                    ) && self
                        .views
                        .get(session_id)
                        .is_some_and(|view| !view.members.contains_key(sender))
                    {
                        acting_from_outside.push(sender.clone());
                    }
                    match &submission.action {
                        Action::Join => named_staff.push(sender.clone()),
                        Action::Transfer {
                            to_agent: Some(to), ..
                        } => named_staff.push(to.clone()),
                        Action::Receipt { .. } => {
                            self.views.load_receipt(txn, session_id, sender).await?;
                        }
                        Action::Survey { .. } => self.views.load_survey(txn, session_id).await?,
                        _ => {}
                    }
                }
                Parsed::Open { applicant, request } => {
                    let key = (applicant.clone(), request.client_msg_id.clone());
                    // The batch being stored opened it: not in the database yet.
                    if self.pending.opens.contains_key(&key) {
                        continue;
                    }
                    if let Some(before) = opened_before(txn, applicant, request).await? {
                        opens.insert(key, before);
                    }
                }
                Parsed::Staff { .. }
                | Parsed::Refused { .. }
                | Parsed::Limited { .. }
                | Parsed::Ignored => {}
            }
        }
        let (staff, teams) = staff_roles(txn, named_staff).await?;
        let overseers = overseers(txn, acting_from_outside).await?;
        // Staff added since the roster was last read say they are available, join or are
        // handed a session: read it again, so that their seat counts what they take (and a
        // later change of their role or team finds their sessions).
        let unseated = parsed
            .iter()
            .any(|p| matches!(p, Parsed::Staff { subject, .. } if roster.seat(subject).is_none()))
            || staff
                .iter()
                .any(|(subject, role)| role.is_some() && roster.seat(subject).is_none());
        if unseated {
            roster.seat_newcomers(dispatch::stored_seats(txn).await?);
        }

        let mut fx = Effects::default();
        let mut resyncs = Vec::new();
        let mut new_opens = HashMap::new();
        let mut ctx = Context {
            now,
            instant,
            config: &self.config,
            limits: &self.limits,
            staff: &staff,
            teams: &teams,
            overseers: &overseers,
            attendance: &self.attendance,
        };
        for (index, p) in parsed.into_iter().enumerate() {
            let index = Some(index);
            match p {
                Parsed::Ignored => {}
                Parsed::Staff {
                    subject,
                    submission,
                } => {
                    let cmid = submission.client_msg_id;
                    let verdict = match submission.action {
                        StaffAction::Availability { status } => routing::availability(
                            &mut roster,
                            &ctx,
                            &mut fx,
                            &subject,
                            &cmid,
                            status,
                        ),
                    };
                    answer(&mut fx, index, &subject, None, &cmid, verdict);
                }
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
                Parsed::Limited {
                    sender,
                    session_id,
                    cmid,
                    message,
                } => {
                    let reason = RejectReason::RateLimited;
                    let ack = rejection(&cmid, session_id.as_deref(), reason, &message);
                    fx.outbox.answer(index, &sender, ack);
                }
                Parsed::Open { applicant, request } => {
                    let cmid = request.client_msg_id.clone();
                    let key = (applicant.clone(), cmid.clone());
                    // Opened earlier in this batch, in the one being stored, or before.
                    let before = new_opens
                        .get(&key)
                        .or_else(|| self.pending.opens.get(&key))
                        .map(|earlier: &OpenedRequest| earlier.compared_with(&request))
                        .or_else(|| opens.get(&key).cloned());
                    let new = before.is_none();
                    let (channel, first) = (request.channel, request.first_message.clone());
                    let (verdict, session_id) = lifecycle::open(
                        &mut self.views,
                        &mut ctx,
                        &mut fx,
                        &applicant,
                        request,
                        before,
                        new_session_id(),
                    );
                    if let (true, Verdict::Accepted { .. }, Some(session_id)) =
                        (new, &verdict, &session_id)
                    {
                        let opened = OpenedRequest {
                            session_id: session_id.clone(),
                            channel,
                            first_message: first,
                        };
                        new_opens.insert(key, opened);
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
                    let reason_key = (session_id.clone(), sender.clone(), reason_id(&cmid));
                    if let Some(original) = answered.get(&key).cloned() {
                        let reason = answered.get(&reason_key);
                        resubmitted(&mut fx, index, &key, &submission.action, original, reason);
                        continue;
                    }
                    // Kept, should it be accepted, to compare a resubmission with.
                    let reason_note =
                        given_reason(&submission.action).map(|body| Answered::Entry {
                            seq: 0,
                            content: Some(wire::StreamContent::Note {
                                body: body.to_owned(),
                            }),
                        });
                    let content = primary_content(&submission.action, &sender);
                    // Only a kept acknowledgement needs the request's digest (entries are
                    // compared by content): no hash per message on the hot path.
                    let digest = (content.is_none() || submission.action == Action::Join)
                        .then(|| request_digest(&submission.action));
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
                            let answer = Answered::Entry { seq: *seq, content };
                            new_answers.insert(key.clone(), answer.clone());
                            answered.insert(key, answer);
                            if let Some(note) = reason_note {
                                new_answers.insert(reason_key.clone(), note.clone());
                                answered.insert(reason_key, note);
                            }
                        }
                        Verdict::Accepted { seq: None } => {
                            // Entries answer resubmissions through the messages table; the
                            // rest are kept.
                            let ack = accepted(&cmid, Some(&session_id), None);
                            fx.kept_acks.push(submission_ack::ActiveModel {
                                session_id: Set(session_id.clone()),
                                sender: Set(sender.clone()),
                                client_msg_id: Set(cmid.clone()),
                                ack: Set(serde_json::to_string(&ack).unwrap_or_default()),
                                request_digest: Set(digest.clone()),
                                created_at: Set(now),
                            });
                            let answer = Answered::Ack { ack, digest };
                            new_answers.insert(key.clone(), answer.clone());
                            answered.insert(key, answer);
                        }
                        Verdict::Resync {
                            from_seq,
                            to_seq,
                            staff,
                            max_bytes,
                        } => {
                            // Answered once this batch's own entries are written.
                            let last_seq = self
                                .views
                                .get(&session_id)
                                .map_or(0, |view| view.last_seq as u64);
                            resyncs.push(ResyncJob {
                                position: fx.outbox.page_due(index, &sender),
                                session_id: session_id.clone(),
                                cmid: cmid.clone(),
                                staff: *staff,
                                from_seq: *from_seq,
                                to_seq: *to_seq,
                                last_seq,
                                max_bytes: *max_bytes,
                            });
                            continue;
                        }
                        Verdict::Refused(..) => {}
                    }
                    answer(&mut fx, index, &sender, Some(&session_id), &cmid, verdict);
                }
            }
        }

        // Waiting sessions (new, returned to the queue) go to whoever has room now.
        dispatch::follow(&mut roster, &fx, &self.views, now);
        let metrics = self.metrics.as_deref();
        dispatch::route(&mut self.views, &mut roster, txn, &ctx, &mut fx, metrics).await?;
        self.roster = Some(roster);
        self.attendance.follow(fx.opened_sessions(), &fx.closed);

        fx.seal(&self.views);
        let touched = batch
            .iter()
            .filter_map(|incoming| match Topic::parse(&incoming.topic) {
                Some(Topic::Session { session, .. }) => Some(session.to_owned()),
                _ => None,
            })
            .collect();
        Ok(Decided {
            fx,
            resyncs,
            now,
            pending: Pending {
                answers: new_answers,
                opens: new_opens,
            },
            touched,
        })
    }
}

#[cfg(test)]
#[path = "decider_tests.rs"]
mod tests;
