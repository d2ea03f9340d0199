//! The MQTT topic scheme: every topic courtchat's protocol uses, as typed values.
//!
//! All protocol topics live under `cc/v1/`. Session-scoped topics carry the session id in the
//! third segment and, where a participant writes, the participant's subject in the last one, so
//! that authorization can decide from the topic alone whose it is. `PROTOCOL.md` describes what
//! flows on each; the gateway's authorizer (in `broker`) decides who may publish or subscribe.
//!
//! This module only parses and formats strings; it does no I/O.

use std::fmt;

/// The prefix of every protocol topic; a new major protocol version gets a new prefix.
pub const PREFIX: &str = "cc/v1";

/// What a session-scoped topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionTopic {
    /// The canonical stream of what every participant sees, in sequence order. Server-written.
    Messages,
    /// The canonical stream of staff-only events (internal notes). Server-written; never
    /// readable by applicants.
    Notes,
    /// Reply-lock state (retained). Server-written; staff only.
    Lock,
    /// Participants' read horizons (delivered / read up to a sequence number). Server-written;
    /// every participant reads them, so each side sees how far the other has read.
    Receipts,
    /// A participant's submissions to the pipeline; written by that participant, read by the
    /// service only.
    Submit,
    /// A participant's typing indicator in the conversation the applicant sees.
    Typing,
    /// A staff member's typing indicator while writing an internal note; staff only.
    NoteTyping,
    /// A participant's presence (online/offline, the latter usually as its will).
    Presence,
}

impl SessionTopic {
    pub const ALL: [SessionTopic; 8] = [
        SessionTopic::Messages,
        SessionTopic::Notes,
        SessionTopic::Lock,
        SessionTopic::Receipts,
        SessionTopic::Submit,
        SessionTopic::Typing,
        SessionTopic::NoteTyping,
        SessionTopic::Presence,
    ];

    /// The topic segment naming this kind.
    pub fn segment(self) -> &'static str {
        match self {
            SessionTopic::Messages => "messages",
            SessionTopic::Notes => "notes",
            SessionTopic::Lock => "lock",
            SessionTopic::Receipts => "receipts",
            SessionTopic::Submit => "submit",
            SessionTopic::Typing => "typing",
            SessionTopic::NoteTyping => "note-typing",
            SessionTopic::Presence => "presence",
        }
    }

    fn from_segment(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.segment() == segment)
    }

    /// Whether the topic ends in the subject of the participant it belongs to.
    pub fn has_subject(self) -> bool {
        matches!(
            self,
            SessionTopic::Submit
                | SessionTopic::Typing
                | SessionTopic::NoteTyping
                | SessionTopic::Presence
        )
    }

    /// Only the server (the service role) publishes on these.
    pub fn server_written(self) -> bool {
        matches!(
            self,
            SessionTopic::Messages
                | SessionTopic::Notes
                | SessionTopic::Lock
                | SessionTopic::Receipts
        )
    }

    /// Never delivered to applicants.
    pub fn staff_only(self) -> bool {
        matches!(
            self,
            SessionTopic::Notes | SessionTopic::Lock | SessionTopic::NoteTyping
        )
    }
}

/// A parsed protocol topic name (no wildcards).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topic<'a> {
    /// `cc/v1/sessions/{session}/{kind}` or `cc/v1/sessions/{session}/{kind}/{subject}`.
    Session {
        session: &'a str,
        kind: SessionTopic,
        subject: Option<&'a str>,
    },
    /// `cc/v1/open/{subject}`: an applicant asks for a new session. Read by the service.
    Open { subject: &'a str },
    /// `cc/v1/clients/{subject}/ack`: acknowledgements and resync replies for one client.
    /// Server-written; readable by that client only.
    Ack { subject: &'a str },
    /// `cc/v1/queue`: sessions waiting for an agent. Server-written; staff read it.
    Queue,
    /// `cc/v1/staff/{subject}/submit`: what a member of staff submits about themselves rather
    /// than a session (availability). Written by that subject; read by the service.
    StaffSubmit { subject: &'a str },
    /// `cc/v1/staff/{subject}/assignments`: sessions given to that member of staff.
    /// Server-written; read by that subject and supervisors.
    Assignments { subject: &'a str },
    /// `cc/v1/memberships`: who joined or left which session, from the chat pipeline to the
    /// gateway's authorizer. Service only, in both directions.
    Memberships,
}

impl<'a> Topic<'a> {
    /// Parses a topic name. `None` for anything outside `cc/v1/` or not in the scheme.
    pub fn parse(topic: &'a str) -> Option<Self> {
        let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        if segments
            .iter()
            .any(|s| s.is_empty() || s.contains(['+', '#']))
        {
            return None;
        }
        match segments.as_slice() {
            ["sessions", session, kind] => {
                let kind = SessionTopic::from_segment(kind)?;
                (!kind.has_subject()).then_some(Topic::Session {
                    session,
                    kind,
                    subject: None,
                })
            }
            ["sessions", session, kind, subject] => {
                let kind = SessionTopic::from_segment(kind)?;
                kind.has_subject().then_some(Topic::Session {
                    session,
                    kind,
                    subject: Some(subject),
                })
            }
            ["open", subject] => Some(Topic::Open { subject }),
            ["clients", subject, "ack"] => Some(Topic::Ack { subject }),
            ["queue"] => Some(Topic::Queue),
            ["staff", subject, "submit"] => Some(Topic::StaffSubmit { subject }),
            ["staff", subject, "assignments"] => Some(Topic::Assignments { subject }),
            ["memberships"] => Some(Topic::Memberships),
            _ => None,
        }
    }
}

impl fmt::Display for Topic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Session {
                session,
                kind,
                subject: None,
            } => write!(f, "{PREFIX}/sessions/{session}/{}", kind.segment()),
            Topic::Session {
                session,
                kind,
                subject: Some(subject),
            } => write!(
                f,
                "{PREFIX}/sessions/{session}/{}/{subject}",
                kind.segment()
            ),
            Topic::Open { subject } => write!(f, "{PREFIX}/open/{subject}"),
            Topic::Ack { subject } => write!(f, "{PREFIX}/clients/{subject}/ack"),
            Topic::Queue => write!(f, "{PREFIX}/queue"),
            Topic::StaffSubmit { subject } => write!(f, "{PREFIX}/staff/{subject}/submit"),
            Topic::Assignments { subject } => write!(f, "{PREFIX}/staff/{subject}/assignments"),
            Topic::Memberships => write!(f, "{PREFIX}/memberships"),
        }
    }
}

/// Whether `topic` lies in the protocol's namespace at all (whether or not it parses).
pub fn is_protocol(topic_or_filter: &str) -> bool {
    topic_or_filter == PREFIX
        || topic_or_filter.starts_with("cc/")
        || topic_or_filter.starts_with('+')
        || topic_or_filter.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_round_trip() {
        let rows: &[(&str, Option<Topic>)] = &[
            (
                "cc/v1/sessions/s1/messages",
                Some(Topic::Session {
                    session: "s1",
                    kind: SessionTopic::Messages,
                    subject: None,
                }),
            ),
            (
                "cc/v1/sessions/s1/notes",
                Some(Topic::Session {
                    session: "s1",
                    kind: SessionTopic::Notes,
                    subject: None,
                }),
            ),
            (
                "cc/v1/sessions/s1/lock",
                Some(Topic::Session {
                    session: "s1",
                    kind: SessionTopic::Lock,
                    subject: None,
                }),
            ),
            (
                "cc/v1/sessions/s1/submit/kiosk-1",
                Some(Topic::Session {
                    session: "s1",
                    kind: SessionTopic::Submit,
                    subject: Some("kiosk-1"),
                }),
            ),
            (
                "cc/v1/sessions/s1/note-typing/agent-1",
                Some(Topic::Session {
                    session: "s1",
                    kind: SessionTopic::NoteTyping,
                    subject: Some("agent-1"),
                }),
            ),
            (
                "cc/v1/open/kiosk-1",
                Some(Topic::Open { subject: "kiosk-1" }),
            ),
            (
                "cc/v1/clients/kiosk-1/ack",
                Some(Topic::Ack { subject: "kiosk-1" }),
            ),
            ("cc/v1/queue", Some(Topic::Queue)),
            (
                "cc/v1/staff/ann/submit",
                Some(Topic::StaffSubmit { subject: "ann" }),
            ),
            (
                "cc/v1/staff/ann/assignments",
                Some(Topic::Assignments { subject: "ann" }),
            ),
            ("cc/v1/staff/ann", None),
            ("cc/v1/memberships", Some(Topic::Memberships)),
            // Kinds that carry a subject need one, and the others must not have one.
            ("cc/v1/sessions/s1/submit", None),
            ("cc/v1/sessions/s1/messages/kiosk-1", None),
            ("cc/v1/sessions/s1/unknown", None),
            ("cc/v1/sessions//messages", None),
            ("cc/v1/sessions/+/messages", None),
            ("cc/v2/queue", None),
            ("sandbox/a", None),
        ];
        for (raw, expected) in rows {
            let parsed = Topic::parse(raw);
            assert_eq!(&parsed, expected, "{raw}");
            if let Some(topic) = parsed {
                assert_eq!(topic.to_string(), *raw);
            }
        }
    }

    #[test]
    fn kind_properties_are_consistent() {
        for kind in SessionTopic::ALL {
            assert!(
                !(kind.server_written() && kind.has_subject()),
                "{kind:?}: server topics have no subject"
            );
        }
        assert!(SessionTopic::Notes.staff_only() && SessionTopic::NoteTyping.staff_only());
        assert!(!SessionTopic::Messages.staff_only());
    }
}
