//! A session's life: opening, status changes, transfer, escalation, closing, the survey.
//!
//! A reason given for escalating or closing is for staff: it is stored as an internal note of
//! the sender (under `{client_msg_id}#reason`) just before the event, which carries no reason,
//! so that it reaches staff on `notes` and never the applicant (see `disclosure`).

use schemas::db::entities::{participant, session, survey_response};
use schemas::topics::Topic;
use schemas::wire::{self, MembershipOp, OpenSession, RejectReason, SessionEvent, StreamContent};
use sea_orm::Set;

use super::status::set_status;
use super::{Context, Effects, Subject, Verdict, is_staff, lock, membership, refuse, routing};
use crate::audit::AuditEntry;
use crate::pipeline::disclosure::reason_id;
use crate::pipeline::view::{SessionView, Views};

/// An open request this applicant made before under the same id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OpenedBefore {
    pub session_id: String,
    /// Whether that request was this one (channel and first message).
    pub same: bool,
}

/// Opens a session with id `session_id` for `applicant`, or answers a repeated request with the
/// session it opened. Returns the verdict and the session it is about.
pub(crate) fn open(
    views: &mut Views,
    ctx: &mut Context<'_>,
    fx: &mut Effects,
    applicant: &str,
    request: OpenSession,
    before: Option<OpenedBefore>,
    session_id: String,
) -> (Verdict, Option<String>) {
    let cmid = request.client_msg_id.as_str();
    if let Some(before) = before {
        let verdict = if before.same {
            // The opening entry is always the session's first.
            Verdict::Accepted { seq: Some(1) }
        } else {
            refuse(
                RejectReason::DuplicateId,
                "this client_msg_id opened a session with a different request",
            )
        };
        return (verdict, Some(before.session_id));
    }
    if let Some(refusal) = too_many_open(ctx, fx, applicant) {
        return (refusal, None);
    }
    let channel = request.channel.to_string();
    let now = ctx.now;
    fx.opened.push((
        session::ActiveModel {
            id: Set(session_id.clone()),
            status: Set(session::SessionStatus::Queued),
            applicant: Set(applicant.to_owned()),
            channel: Set(channel.clone()),
            team: Set(request.topic.clone()),
            assigned_agent: Set(None),
            last_seq: Set(0),
            lock_holder: Set(None),
            lock_epoch: Set(0),
            lock_expires_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            closed_at: Set(None),
        },
        participant::ActiveModel {
            session_id: Set(session_id.clone()),
            subject: Set(applicant.to_owned()),
            role: Set(participant::ParticipantRole::Applicant),
            joined_at: Set(now),
            left_at: Set(None),
        },
    ));
    let mut view = SessionView::opened(applicant, channel, request.topic.clone());
    fx.audit.push(AuditEntry {
        actor: applicant.to_owned(),
        action: "session.opened".to_owned(),
        session_id: Some(session_id.clone()),
        detail: serde_json::json!({ "channel": request.channel, "topic": request.topic }),
    });
    let opened = StreamContent::Event {
        event: SessionEvent::Opened {
            channel: request.channel,
        },
    };
    let seq = fx.append(&mut view, now, &session_id, applicant, cmid, opened, None);
    if let Some(first) = request.first_message {
        let content = StreamContent::Message { body: first };
        let first_id = format!("{cmid}#first");
        fx.append(
            &mut view,
            now,
            &session_id,
            applicant,
            &first_id,
            content,
            None,
        );
    }
    fx.membership(
        &session_id,
        applicant,
        participant::ParticipantRole::Applicant,
        MembershipOp::Join,
    );
    // Staff watching the queue see the new session waiting.
    fx.outbox.entry(
        Topic::Queue.to_string(),
        &wire::QueueUpdate {
            v: wire::VERSION,
            session_id: session_id.clone(),
            status: wire::SessionStatus::Queued,
            channel: request.channel,
            team: request.topic,
            waiting_since: now,
        },
    );
    views.insert(session_id.clone(), view);
    (Verdict::Accepted { seq: Some(seq) }, Some(session_id))
}

/// The refusal of an open request beyond `bridge.max_open_sessions_per_applicant`, counting
/// the sessions this batch opened and closed so far.
fn too_many_open(ctx: &Context<'_>, fx: &Effects, applicant: &str) -> Option<Verdict> {
    let most = ctx.config.max_open_sessions_per_applicant;
    let opened_here = fx
        .opened
        .iter()
        .filter(|(row, _)| matches!(&row.applicant, Set(a) if a == applicant))
        .count();
    let closed_here = fx
        .closed
        .iter()
        .filter(|id| ctx.attendance.applicant_of(id) == Some(applicant))
        .count();
    let open =
        (ctx.attendance.open_sessions_of(applicant) + opened_here).saturating_sub(closed_here);
    (open >= most).then(|| {
        refuse(
            RejectReason::NotAllowed,
            format!(
                "this applicant has {open} open session(s), the most allowed at once ({most}); \
                 close one before opening another"
            ),
        )
    })
}

/// Hands the session to another agent (with the reply lock, under a new epoch) or back to a
/// team's queue, in one step. From a participant, the sender leaves; from a supervisor or admin
/// acting from outside (an assignment), the assigned agent, if still a participant, leaves.
pub(crate) fn transfer(
    view: &mut SessionView,
    ctx: &mut Context<'_>,
    fx: &mut Effects,
    s: &Subject<'_>,
    to_agent: Option<String>,
    to_team: Option<String>,
) -> Verdict {
    if !is_staff(s.role) && !s.overseer {
        return refuse(RejectReason::NotAllowed, "only staff transfer a session");
    }
    let (session_id, sender) = (s.session_id, s.sender);
    let from = if s.overseer {
        (view.assigned_agent.clone()).filter(|agent| view.members.contains_key(agent))
    } else {
        Some(sender.to_owned())
    };
    let seq = match (to_agent, to_team) {
        (Some(to), None) => {
            let Some(to_role) = ctx.staff_role(&to) else {
                return refuse(
                    RejectReason::NotAllowed,
                    "the target is not registered, active staff",
                );
            };
            if from.as_deref() == Some(to.as_str()) {
                let message = if s.overseer {
                    "the session is already assigned to this agent"
                } else {
                    "a session cannot be transferred to its sender"
                };
                return refuse(RejectReason::Invalid, message);
            }
            if !view.members.contains_key(&to) {
                let join_id = format!("{}#join", s.cmid);
                membership::add(view, ctx, fx, session_id, &to, &join_id, to_role);
            }
            lock::hand_to(view, ctx, fx, session_id, sender, &to);
            view.assigned_agent = Some(to.clone());
            let seq = handed_over(view, ctx, fx, s, from.as_deref(), Some(to.clone()), None);
            routing::notify(view, ctx, fx, session_id, &to, sender, seq);
            seq
        }
        (None, Some(team)) => {
            view.team = Some(team.clone());
            view.assigned_agent = None;
            let seq = handed_over(view, ctx, fx, s, from.as_deref(), None, Some(team));
            let queued = session::SessionStatus::Queued;
            set_status(view, ctx, fx, session_id, sender, s.cmid, queued);
            seq
        }
        _ => {
            return refuse(
                RejectReason::Invalid,
                "name exactly one of to_agent and to_team",
            );
        }
    };
    Verdict::Accepted { seq: Some(seq) }
}

/// The end of a transfer: the changed row, the `transferred` entry (returned, under the
/// sender's id) and the leaving of whoever handed the session over.
fn handed_over(
    view: &mut SessionView,
    ctx: &Context<'_>,
    fx: &mut Effects,
    s: &Subject<'_>,
    from: Option<&str>,
    to_agent: Option<String>,
    to_team: Option<String>,
) -> u64 {
    let (session_id, sender, cmid) = (s.session_id, s.sender, s.cmid);
    fx.changed.insert(session_id.to_owned());
    let transferred = StreamContent::Event {
        event: SessionEvent::Transferred {
            from: Some(sender.to_owned()),
            to_agent,
            to_team,
        },
    };
    let seq = fx.append(view, ctx.now, session_id, sender, cmid, transferred, None);
    if let Some(from) = from {
        membership::remove(view, ctx, fx, session_id, from, &format!("{cmid}#leave"));
    }
    seq
}

/// Asks a supervisor to step in.
pub(crate) fn escalate(
    view: &mut SessionView,
    ctx: &mut Context<'_>,
    fx: &mut Effects,
    s: &Subject<'_>,
    reason: Option<String>,
) -> Verdict {
    if !is_staff(s.role) {
        return refuse(RejectReason::NotAllowed, "only staff escalate a session");
    }
    reason_note(view, ctx, fx, s, reason);
    let escalated = session::SessionStatus::Escalated;
    set_status(view, ctx, fx, s.session_id, s.sender, s.cmid, escalated);
    let event = StreamContent::Event {
        event: SessionEvent::Escalated { reason: None },
    };
    let seq = fx.append(view, ctx.now, s.session_id, s.sender, s.cmid, event, None);
    Verdict::Accepted { seq: Some(seq) }
}

/// Ends the session: whoever holds the lock loses it, the applicant is offered the survey, and
/// the participants keep access for it (and for resync) for a while.
pub(crate) fn close(
    view: &mut SessionView,
    ctx: &mut Context<'_>,
    fx: &mut Effects,
    s: &Subject<'_>,
    reason: Option<String>,
) -> Verdict {
    if let Some(holder) = view.lock.holder.clone() {
        lock::release_by(view, ctx, fx, s.session_id, s.sender, &holder);
    }
    reason_note(view, ctx, fx, s, reason);
    view.closed_at = Some(ctx.now);
    let closed = session::SessionStatus::Closed;
    set_status(view, ctx, fx, s.session_id, s.sender, s.cmid, closed);
    let event = StreamContent::Event {
        event: SessionEvent::Closed {
            reason: None,
            survey_offered: true,
        },
    };
    let seq = fx.append(view, ctx.now, s.session_id, s.sender, s.cmid, event, None);
    // The gateway keeps the participants' access for the survey and resync while the session
    // is among the most recently closed, then forgets it.
    let role = s.role.unwrap_or(participant::ParticipantRole::Supervisor);
    fx.membership(s.session_id, s.sender, role, MembershipOp::Close);
    fx.closed.push(s.session_id.to_owned());
    Verdict::Accepted { seq: Some(seq) }
}

/// Stores the reason given for an action, if any, as an internal note of its sender: staff read
/// it on `notes` and in resyncs; the applicant never does.
fn reason_note(
    view: &mut SessionView,
    ctx: &Context<'_>,
    fx: &mut Effects,
    s: &Subject<'_>,
    reason: Option<String>,
) {
    let Some(body) = reason.filter(|reason| !reason.trim().is_empty()) else {
        return;
    };
    let note = StreamContent::Note { body };
    let id = reason_id(s.cmid);
    fx.append(view, ctx.now, s.session_id, s.sender, &id, note, None);
}

/// The applicant's answer to the post-chat survey, once, after closing.
pub(crate) fn survey(
    view: &mut SessionView,
    ctx: &mut Context<'_>,
    fx: &mut Effects,
    s: &Subject<'_>,
    rating: u8,
    comment: Option<String>,
) -> Verdict {
    if s.role != Some(participant::ParticipantRole::Applicant) {
        return refuse(
            RejectReason::NotAllowed,
            "only the applicant answers the survey",
        );
    }
    if view.status != session::SessionStatus::Closed {
        return refuse(
            RejectReason::NotAllowed,
            "the survey opens when the session closes",
        );
    }
    if view.survey_answered == Some(true) {
        return refuse(
            RejectReason::NotAllowed,
            "the survey was already answered, or is closed",
        );
    }
    view.survey_answered = Some(true);
    let digest = crate::record::SurveyRecord {
        session_id: s.session_id,
        rating: i16::from(rating),
        comment: comment.as_deref(),
        submitted_at: &ctx.now,
    }
    .digest();
    fx.surveys.push(survey_response::ActiveModel {
        session_id: Set(s.session_id.to_owned()),
        rating: Set(i16::from(rating)),
        comment: Set(comment),
        submitted_at: Set(ctx.now),
    });
    fx.audit.push(AuditEntry {
        actor: s.sender.to_owned(),
        action: "survey.answered".to_owned(),
        session_id: Some(s.session_id.to_owned()),
        detail: serde_json::json!({ "rating": rating, "client_msg_id": s.cmid, "digest": digest }),
    });
    Verdict::Accepted { seq: None }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "lifecycle_reasons_tests.rs"]
mod reasons_tests;
