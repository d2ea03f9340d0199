//! What purging leaves of a stored row: a pure function of the row.
//!
//! Content is what people wrote: a message's or note's body, the free-text reason staff gave
//! for an escalation or a closing, and the survey's comment. Those are blanked. What the record
//! needs stays: every row keeps its place (session, seq), sender, kind, client message id and
//! time, and an event keeps what happened (who joined, left, took over; the status; that the
//! session closed), so the conversation's shape, the statistics drawn from it and the audit
//! chain's account of it survive, and resync and transcripts still work.
//!
//! Rows are blanked rather than deleted for that reason: a deleted row would leave holes in the
//! `seq` order that resync and clients would have to explain, and would take the times that
//! response statistics are computed from. The applicant's subject and the session's channel and
//! team are kept too: the subject is a random name the server gave, not the person's identity.

use schemas::db::entities::message::MessageKind;
use schemas::wire::SessionEvent;

/// The body a row of `kind` keeps after a purge, or `None` if it holds no content to remove.
pub(crate) fn redacted_body(kind: MessageKind, body: &str) -> Option<String> {
    match kind {
        MessageKind::Text | MessageKind::Note => (!body.is_empty()).then(String::new),
        MessageKind::Event => {
            let mut event: SessionEvent = serde_json::from_str(body).ok()?;
            let reason = match &mut event {
                SessionEvent::Escalated { reason } | SessionEvent::Closed { reason, .. } => reason,
                _ => return None,
            };
            reason.take()?;
            serde_json::to_string(&event).ok()
        }
    }
}

/// The comment a survey answer keeps after a purge: none. The rating stays (it is not personal
/// and the statistics count it).
pub(crate) fn redacted_comment(comment: Option<&str>) -> Option<Option<String>> {
    comment.map(|_| None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_blanked_and_the_shape_kept() {
        // (kind, stored body, what it becomes; None: left as it is)
        let rows: &[(MessageKind, &str, Option<&str>)] = &[
            (MessageKind::Text, "My hearing is on Monday.", Some("")),
            (MessageKind::Note, "check the case number", Some("")),
            (MessageKind::Text, "", None),
            (
                MessageKind::Event,
                r#"{"type":"closed","reason":"applicant's address given","survey_offered":true}"#,
                Some(r#"{"type":"closed","survey_offered":true}"#),
            ),
            (
                MessageKind::Event,
                r#"{"type":"escalated","reason":"angry"}"#,
                Some(r#"{"type":"escalated"}"#),
            ),
            (
                MessageKind::Event,
                r#"{"type":"closed","survey_offered":true}"#,
                None,
            ),
            (
                MessageKind::Event,
                r#"{"type":"joined","subject":"agent-1"}"#,
                None,
            ),
            (MessageKind::Event, "not json", None),
        ];
        for (kind, body, expected) in rows {
            let redacted = redacted_body(*kind, body);
            assert_eq!(redacted.as_deref(), *expected, "{kind:?} {body}");
            if let Some(redacted) = redacted {
                assert!(
                    schemas::wire::StreamContent::from_stored(*kind, &redacted).is_some(),
                    "a redacted row still reads as a stream entry"
                );
            }
        }
        assert_eq!(redacted_comment(Some("clear")), Some(None));
        assert_eq!(redacted_comment(None), None);
    }
}
