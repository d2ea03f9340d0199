//! What a submission must be before it is decided: every value a client wrote checked (so
//! that nothing the database would refuse reaches it), and what a resubmission is compared
//! with to tell a true resubmission from a reused id.

use schemas::db::entities::message;
use schemas::wire::{self, Action, RejectReason, SessionEvent, StreamContent};

use super::disclosure::split_reason;

/// A refusal: the reason and a message for people.
pub(crate) type Refusal = (RejectReason, String);

/// A text the record may hold: not empty, within the size limit, and only characters that
/// display as what they are (see [`wire::check_text`]).
pub(crate) fn check_body(field: &'static str, body: &str, max_bytes: usize) -> Result<(), Refusal> {
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
pub(crate) fn check_action(action: &Action, max_body_bytes: usize) -> Result<(), Refusal> {
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
pub(crate) fn primary_content(action: &Action, sender: &str) -> Option<StreamContent> {
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
        // The reason is a note of its own (see `given_reason`).
        Action::Escalate { .. } => event(SessionEvent::Escalated { reason: None }),
        Action::Close { .. } => event(SessionEvent::Closed {
            reason: None,
            survey_offered: true,
        }),
        Action::Receipt { .. } | Action::Lock { .. } | Action::Resync { .. } => None,
        Action::Survey { .. } => None,
    }
}

/// The reason an action gives for staff (escalating, closing), stored as a note of its own;
/// a blank one is none.
pub(crate) fn given_reason(action: &Action) -> Option<&str> {
    match action {
        Action::Escalate { reason } | Action::Close { reason } => {
            reason.as_deref().filter(|reason| !reason.trim().is_empty())
        }
        _ => None,
    }
}

/// Whether `action` is the submission that left `stored` under its id (and, for escalating and
/// closing, `stored_reason`, the note under the id's `#reason`): a true resubmission. An event
/// stored before reasons became notes holds its reason itself.
pub(crate) fn same_entry(
    action: &Action,
    sender: &str,
    stored: Option<&StreamContent>,
    stored_reason: Option<&StreamContent>,
) -> bool {
    let (stored, old_reason) = match stored.cloned().map(split_reason) {
        Some((content, reason)) => (Some(content), reason),
        None => (None, None),
    };
    let noted = match stored_reason {
        Some(StreamContent::Note { body }) => Some(body.clone()),
        _ => None,
    };
    primary_content(action, sender) == stored
        && given_reason(action) == old_reason.or(noted).as_deref()
}

/// A stored entry's content, as it was published.
pub(crate) fn stored_content(row: &message::Model) -> Option<StreamContent> {
    StreamContent::from_stored(row.kind, &row.body)
}

/// SHA-256 (hex) of an action as the server parsed it: the same request gives the same digest
/// however its JSON was spelled.
pub(crate) fn request_digest(action: &Action) -> String {
    let canonical = serde_json::to_vec(action).unwrap_or_default();
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &canonical).as_ref())
}

/// The client message id of a payload that did not parse as a whole, so the rejection can
/// still name it; empty when it is not a well-formed id (an answer echoes nothing unbounded).
pub(crate) fn client_msg_id_of(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|value| value.get("client_msg_id")?.as_str().map(str::to_owned))
        .filter(|id| wire::check_client_msg_id(id).is_ok())
        .unwrap_or_default()
}

/// 16 random hex characters: unguessable, so a session id does not reveal others.
pub(crate) fn new_session_id() -> String {
    let mut bytes = [0u8; 8];
    // The system generator does not fail on supported platforms; a failure would leave zeros,
    // which the unique primary key would then refuse.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    format!(
        "s-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use schemas::topics::Topic;
    use schemas::wire::{LockOp, Submission};

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
        // A reason is compared with the note that holds it, or with the reason an event stored
        // before reasons became notes holds.
        let close = |reason: Option<&str>| Action::Close {
            reason: reason.map(str::to_owned),
        };
        let stored = primary_content(&close(Some("done")), "a");
        let note = |body: &str| StreamContent::Note { body: body.into() };
        let old_event = StreamContent::Event {
            event: SessionEvent::Closed {
                reason: Some("done".into()),
                survey_offered: true,
            },
        };
        // (action, stored event, stored reason note, same?)
        let rows = [
            (
                close(Some("done")),
                stored.clone(),
                Some(note("done")),
                true,
            ),
            (
                close(Some("spam")),
                stored.clone(),
                Some(note("done")),
                false,
            ),
            (close(None), stored.clone(), Some(note("done")), false),
            (close(None), stored.clone(), None, true),
            (close(Some("  ")), stored.clone(), None, true),
            (close(Some("done")), stored.clone(), None, false),
            (close(Some("done")), Some(old_event.clone()), None, true),
            (close(Some("spam")), Some(old_event), None, false),
        ];
        for (action, stored, reason, same) in rows {
            assert_eq!(
                same_entry(&action, "a", stored.as_ref(), reason.as_ref()),
                same,
                "{action:?} against {stored:?} and {reason:?}"
            );
        }
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

    #[test]
    fn session_ids_are_distinct_and_shaped() {
        let (a, b) = (new_session_id(), new_session_id());
        assert_ne!(a, b);
        assert!(a.starts_with("s-") && a.len() == 18, "{a}");
        assert!(Topic::parse(&format!("cc/v1/sessions/{a}/messages")).is_some());
    }
}
