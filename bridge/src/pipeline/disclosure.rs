//! What an applicant may see of the stream: staff-only detail taken out of every entry on its
//! way to an applicant, live (the `messages` topic, which applicants read) and by resync.
//!
//! Staff write reasons for staff (escalating, closing), and routing is the service's business:
//! neither is the applicant's. Since this rule, a reason is not part of the event at all: it is
//! stored as an internal note of the same sender just before the event (`decide::lifecycle`),
//! which reaches staff on `notes` and never an applicant. Entries stored before it still hold
//! their reason in the event, so the applicant's form is also made here, whatever the row holds:
//! - `escalated` and `closed` without `reason`;
//! - `transferred` without `to_team` (which team handles the applicant is routing): who handed
//!   the conversation on (`from`) and who takes it (`to_agent`) stay, since both are people the
//!   applicant meets in the conversation anyway (their `joined` and their messages).
//!
//! Staff read the stored event whole in a resync and in the transcript; live, the team a
//! session was returned to reaches them on `cc/v1/queue`.

use schemas::wire::{SessionEvent, StreamContent};

/// The entry as an applicant may see it.
pub(crate) fn for_applicant(content: StreamContent) -> StreamContent {
    let StreamContent::Event { event } = content else {
        return content;
    };
    let event = match event {
        SessionEvent::Escalated { .. } => SessionEvent::Escalated { reason: None },
        SessionEvent::Closed { survey_offered, .. } => SessionEvent::Closed {
            reason: None,
            survey_offered,
        },
        SessionEvent::Transferred { from, to_agent, .. } => SessionEvent::Transferred {
            from,
            to_agent,
            to_team: None,
        },
        other => other,
    };
    StreamContent::Event { event }
}

/// An event without the reason it may hold (stored before reasons became notes), and that
/// reason.
pub(crate) fn split_reason(content: StreamContent) -> (StreamContent, Option<String>) {
    match content {
        StreamContent::Event {
            event: SessionEvent::Escalated { reason },
        } => (
            StreamContent::Event {
                event: SessionEvent::Escalated { reason: None },
            },
            reason,
        ),
        StreamContent::Event {
            event:
                SessionEvent::Closed {
                    reason,
                    survey_offered,
                },
        } => (
            StreamContent::Event {
                event: SessionEvent::Closed {
                    reason: None,
                    survey_offered,
                },
            },
            reason,
        ),
        other => (other, None),
    }
}

/// The client message id of the note that holds the reason given with action `cmid`.
pub(crate) fn reason_id(cmid: &str) -> String {
    format!("{cmid}#reason")
}

#[cfg(test)]
mod tests {
    use schemas::wire::Channel;

    use super::*;

    fn event(event: SessionEvent) -> StreamContent {
        StreamContent::Event { event }
    }

    #[test]
    fn an_applicant_sees_no_reason_and_no_routing() {
        let closed = |reason: Option<&str>| {
            event(SessionEvent::Closed {
                reason: reason.map(str::to_owned),
                survey_offered: true,
            })
        };
        let transferred = |to_agent: Option<&str>, to_team: Option<&str>| {
            event(SessionEvent::Transferred {
                from: Some("ann".into()),
                to_agent: to_agent.map(str::to_owned),
                to_team: to_team.map(str::to_owned),
            })
        };
        // (stored, what an applicant sees)
        let rows = [
            (
                event(SessionEvent::Escalated {
                    reason: Some("fraud suspected".into()),
                }),
                event(SessionEvent::Escalated { reason: None }),
            ),
            (closed(Some("fraud suspected")), closed(None)),
            (closed(None), closed(None)),
            (
                transferred(None, Some("fraud-investigations")),
                transferred(None, None),
            ),
            (
                transferred(Some("bob"), None),
                transferred(Some("bob"), None),
            ),
            (
                StreamContent::Message { body: "Hi".into() },
                StreamContent::Message { body: "Hi".into() },
            ),
            (
                event(SessionEvent::Opened {
                    channel: Channel::Kiosk,
                }),
                event(SessionEvent::Opened {
                    channel: Channel::Kiosk,
                }),
            ),
        ];
        for (stored, seen) in rows {
            assert_eq!(for_applicant(stored.clone()), seen, "{stored:?}");
        }
    }

    #[test]
    fn a_reason_is_split_from_its_event() {
        let (event_only, reason) = split_reason(event(SessionEvent::Escalated {
            reason: Some("angry".into()),
        }));
        assert_eq!(event_only, event(SessionEvent::Escalated { reason: None }));
        assert_eq!(reason.as_deref(), Some("angry"));
        let note = StreamContent::Note { body: "n".into() };
        assert_eq!(split_reason(note.clone()), (note, None));
        assert_eq!(reason_id("c-1"), "c-1#reason");
    }
}
