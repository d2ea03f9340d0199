//! What a submission is told: its acknowledgement, its refusal (audited, or not when nothing
//! was decided or the sender was over a limit), or for a resubmission the original answer.

use schemas::topics::{SessionTopic, Topic};
use schemas::wire::{self, Ack, Action, Outcome, RejectReason};

use super::decide::{Effects, Verdict};
use super::input::{client_msg_id_of, request_digest, same_entry};
use super::load::{Answered, Key};
use super::outbox::Outbox;
use crate::audit::AuditEntry;
use crate::pipeline::link::Incoming;

pub(super) fn accepted(cmid: &str, session_id: Option<&str>, seq: Option<u64>) -> Ack {
    Ack {
        v: wire::VERSION,
        client_msg_id: cmid.to_owned(),
        session_id: session_id.map(str::to_owned),
        outcome: Outcome::Accepted { seq },
    }
}

/// Answers a decided submission: its acknowledgement, or its refusal (audited).
pub(super) fn answer(
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
                .answer(index, sender, accepted(cmid, session_id, seq));
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
    let ack = rejection(cmid, session_id, reason, message);
    fx.outbox.answer(index, sender, ack);
}

pub(super) fn rejection(
    cmid: &str,
    session_id: Option<&str>,
    reason: RejectReason,
    message: &str,
) -> Ack {
    Ack {
        v: wire::VERSION,
        client_msg_id: cmid.to_owned(),
        session_id: session_id.map(str::to_owned),
        outcome: Outcome::Rejected {
            reason,
            message: message.to_owned(),
        },
    }
}

/// A submission with an id already answered: the original answer if it is the same
/// submission, `duplicate_id` if the id was reused for another. `reason` is the note that holds
/// the reason the original gave, if it was an escalate or close with one.
pub(super) fn resubmitted(
    fx: &mut Effects,
    index: Option<usize>,
    (session_id, sender, cmid): &Key,
    action: &Action,
    original: Answered,
    reason: Option<&Answered>,
) {
    let same = match &original {
        Answered::Entry { content, .. } => {
            let reason = match reason {
                Some(Answered::Entry { content, .. }) => content.as_ref(),
                _ => None,
            };
            same_entry(action, sender, content.as_ref(), reason)
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
                .answer(index, sender, accepted(cmid, Some(session_id), Some(seq)));
        }
        Answered::Ack { ack, .. } => fx.outbox.answer(index, sender, ack),
    }
}

/// The answer to a submission that could not be stored: `unavailable`, not audited (the
/// database that failed holds the trail), so that the sender knows to resubmit.
pub(crate) fn unavailable(incoming: &Incoming, index: usize) -> Outbox {
    let message = "it could not be stored now; nothing was stored; resubmit it";
    undecided(incoming, index, RejectReason::Unavailable, message)
}

/// The answer to a submission that could not be stored because the database is unreachable:
/// `unavailable`, saying so, not audited (the trail is in that database).
pub(crate) fn unreachable(incoming: &Incoming, index: usize) -> Outbox {
    let message = "the database is unreachable; nothing was stored; resubmit it";
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
        Some(Topic::Open { subject } | Topic::StaffSubmit { subject }) => (subject, None),
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
    outbox.answer(Some(index), sender, ack);
    outbox
}
