//! One submission as it arrived, parsed, checked and charged to its sender's allowance, before
//! anything is loaded or decided for it: what `batch` decides.

use std::time::Instant;

use schemas::topics::{SessionTopic, Topic};
use schemas::wire::{self, Action, OpenSession, RejectReason, StaffSubmission, Submission};

use super::decide;
use super::input::{check_action, check_body, client_msg_id_of};
use crate::pipeline::link::Incoming;
use crate::pipeline::rate::{Charge, SenderLimits};

/// A submission after parsing and checking, before deciding.
pub(super) enum Parsed {
    Open {
        applicant: String,
        request: OpenSession,
    },
    Submit {
        session_id: String,
        sender: String,
        submission: Submission,
    },
    /// A member of staff's submission about themselves (availability).
    Staff {
        subject: String,
        submission: StaffSubmission,
    },
    /// Refused before deciding (not valid, or a value the record does not take).
    Refused {
        sender: String,
        session_id: Option<String>,
        cmid: String,
        reason: RejectReason,
        message: String,
    },
    /// Over the sender's limit: refused before anything is loaded or decided, and not audited
    /// (a flood of refusals must cost the record nothing; they are counted in the metrics).
    Limited {
        sender: String,
        session_id: Option<String>,
        cmid: String,
        message: String,
    },
    /// Not a topic the pipeline answers (its subscriptions rule this out).
    Ignored,
}

impl Parsed {
    /// The sender, the session (if any) and the client message id.
    pub(super) fn names(&self) -> Option<(&str, Option<&str>, &str)> {
        match self {
            Parsed::Open { applicant, request } => Some((applicant, None, &request.client_msg_id)),
            Parsed::Submit {
                session_id,
                sender,
                submission,
            } => Some((sender, Some(session_id), &submission.client_msg_id)),
            Parsed::Staff {
                subject,
                submission,
            } => Some((subject, None, &submission.client_msg_id)),
            Parsed::Refused {
                sender,
                session_id,
                cmid,
                ..
            }
            | Parsed::Limited {
                sender,
                session_id,
                cmid,
                ..
            } => Some((sender, session_id.as_deref(), cmid)),
            Parsed::Ignored => None,
        }
    }
}

/// Charges a submission to its sender's allowance (`rate`), or refuses it as `rate_limited`.
pub(super) fn limit(limits: &SenderLimits, parsed: Parsed, now: Instant) -> Parsed {
    let charge = match &parsed {
        Parsed::Submit { submission, .. } => match submission.action {
            Action::Receipt { .. } => Charge::Receipt,
            Action::Resync { .. } => Charge::Resync,
            _ => Charge::Action,
        },
        Parsed::Ignored | Parsed::Limited { .. } => return parsed,
        _ => Charge::Action,
    };
    let Some((sender, session_id, cmid)) = parsed.names() else {
        return parsed;
    };
    match limits.take(charge, sender, now) {
        Ok(()) => parsed,
        Err(wait) => {
            let what = match charge {
                Charge::Action => "submissions",
                Charge::Receipt => "receipts",
                Charge::Resync => "resyncs",
            };
            Parsed::Limited {
                sender: sender.to_owned(),
                session_id: session_id.map(str::to_owned),
                cmid: cmid.to_owned(),
                message: format!("too many {what}; retry in {} ms", wait.as_millis().max(1)),
            }
        }
    }
}

pub(super) fn parse(incoming: &Incoming, max_body_bytes: usize) -> Parsed {
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
                        request: decide::origin::as_issued(
                            request,
                            incoming.property(wire::CHANNEL_PROPERTY),
                            incoming.property(wire::TEAM_PROPERTY),
                        ),
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
        Some(Topic::StaffSubmit { subject }) => match StaffSubmission::from_json(&incoming.payload)
        {
            Err(err) => refused(
                subject,
                None,
                client_msg_id_of(&incoming.payload),
                (err.reason(), err.to_string()),
            ),
            Ok(submission) if submission.v != wire::VERSION => {
                refused(subject, None, submission.client_msg_id, unsupported())
            }
            Ok(submission) => Parsed::Staff {
                subject: subject.to_owned(),
                submission,
            },
        },
        _ => Parsed::Ignored,
    }
}
