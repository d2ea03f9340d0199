//! The role-based rules for the protocol namespace `cc/`: role × session membership × the topic
//! scheme of `schemas::topics`, final for that namespace.

use schemas::topics::{PREFIX, SessionTopic, Topic};

use super::authorizer::{Authorizer, Decision};
use crate::identity::{Identity, Role};
use crate::memberships::Memberships;

/// The role-based rules for the protocol namespace (`cc/...`, and filters that could reach it).
pub struct ProtocolRules {
    pub memberships: Memberships,
}

/// A placeholder of a topic template, as bound by a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound<'a> {
    Exactly(&'a str),
    Any,
}

impl ProtocolRules {
    fn member(&self, identity: &Identity, session: Bound<'_>) -> bool {
        matches!(session, Bound::Exactly(session) if self.memberships.is_member(session, &identity.subject))
    }

    fn own(identity: &Identity, subject: Bound<'_>) -> bool {
        subject == Bound::Exactly(&identity.subject)
    }

    /// May `identity` receive messages of this kind in this session (from this subject)?
    fn may_read_session(
        &self,
        identity: &Identity,
        kind: SessionTopic,
        session: Bound<'_>,
    ) -> bool {
        match identity.role {
            Role::Service => true,
            // Submissions are raw input for the pipeline; staff read the canonical streams.
            _ if kind == SessionTopic::Submit => false,
            Role::Supervisor => true,
            Role::Agent => self.member(identity, session),
            Role::Applicant => !kind.staff_only() && self.member(identity, session),
            Role::Admin | Role::Anonymous => false,
        }
    }

    fn may_write_session(
        &self,
        identity: &Identity,
        kind: SessionTopic,
        session: &str,
        subject: Option<&str>,
    ) -> bool {
        if identity.role == Role::Service {
            return true;
        }
        if kind.server_written() || subject != Some(identity.subject.as_str()) {
            return false;
        }
        let session = Bound::Exactly(session);
        match identity.role {
            Role::Supervisor => true,
            // An agent asks to join a session through its submit topic; the pipeline decides.
            Role::Agent => kind == SessionTopic::Submit || self.member(identity, session),
            Role::Applicant => !kind.staff_only() && self.member(identity, session),
            _ => false,
        }
    }

    fn may_read(
        &self,
        identity: &Identity,
        template: Template,
        session: Bound<'_>,
        subject: Bound<'_>,
    ) -> bool {
        match template {
            Template::Session(kind) => self.may_read_session(identity, kind, session),
            Template::Ack => identity.role == Role::Service || Self::own(identity, subject),
            Template::Queue => matches!(
                identity.role,
                Role::Agent | Role::Supervisor | Role::Service
            ),
            // A member of staff's own assignments; supervisors watch everyone's.
            Template::Assignments => {
                matches!(identity.role, Role::Service | Role::Supervisor)
                    || (identity.role == Role::Agent && Self::own(identity, subject))
            }
            Template::Open | Template::StaffSubmit | Template::Memberships => {
                identity.role == Role::Service
            }
        }
    }
}

impl Authorizer for ProtocolRules {
    fn check_publish(&self, identity: &Identity, topic: &str) -> Decision {
        if !reaches_protocol(topic) {
            return Decision::Abstain;
        }
        if identity.anonymous {
            return Decision::Deny(
                "anonymous clients have no access to protocol topics".to_owned(),
            );
        }
        let allowed = match Topic::parse(topic) {
            Some(Topic::Session {
                session,
                kind,
                subject,
            }) => self.may_write_session(identity, kind, session, subject),
            Some(Topic::Open { subject }) => {
                identity.role == Role::Service
                    || (identity.role == Role::Applicant && subject == identity.subject)
            }
            Some(Topic::StaffSubmit { subject }) => {
                identity.role == Role::Service
                    || (matches!(identity.role, Role::Agent | Role::Supervisor)
                        && subject == identity.subject)
            }
            Some(
                Topic::Ack { .. } | Topic::Queue | Topic::Assignments { .. } | Topic::Memberships,
            ) => identity.role == Role::Service,
            None => return Decision::Deny(format!("{topic} is not a topic of the protocol")),
        };
        if allowed {
            Decision::Allow
        } else {
            Decision::Deny(format!("{} may not publish to {topic}", identity.role))
        }
    }

    fn check_subscribe(&self, identity: &Identity, filter: &str) -> Decision {
        if !reaches_protocol(filter) {
            return Decision::Abstain;
        }
        if identity.anonymous {
            return Decision::Deny(
                "anonymous clients have no access to protocol topics".to_owned(),
            );
        }
        // A filter is allowed only if every protocol topic it can match is readable.
        let mut matched_any = false;
        for template in Template::ALL {
            let Some((session, subject)) = template.bind(filter) else {
                continue;
            };
            matched_any = true;
            if !self.may_read(identity, template, session, subject) {
                return Decision::Deny(format!("{} may not subscribe to {filter}", identity.role));
            }
        }
        if matched_any {
            Decision::Allow
        } else {
            Decision::Deny(format!("{filter} matches no topic of the protocol"))
        }
    }

    /// A filter under `cc/` is decided as strictly as ever: the protocol's filters name what
    /// they read. One that only reaches `cc/` through a leading wildcard (`#`, `+/…`) is left
    /// to the rules for the rest of the namespace; the protocol topics it matches are refused
    /// delivery by delivery.
    fn check_subscribe_some(&self, identity: &Identity, filter: &str) -> Decision {
        if in_protocol(filter) {
            self.check_subscribe(identity, filter)
        } else {
            Decision::Abstain
        }
    }
}

/// Whether a topic name lies in the protocol namespace `cc/...`.
pub(crate) fn in_protocol(topic: &str) -> bool {
    topic.split('/').next() == Some("cc")
}

/// Whether a topic or filter lies in the protocol namespace `cc/...`, or is a wildcard filter
/// that can match a protocol topic.
pub(super) fn reaches_protocol(topic_or_filter: &str) -> bool {
    // Every protocol topic starts with "cc", so only a leading wildcard needs the templates. This
    // runs for every delivery (see `connection::deliver`), so it must not allocate otherwise.
    match topic_or_filter.split('/').next() {
        Some("cc") => true,
        Some("+" | "#") => Template::ALL
            .iter()
            .any(|t| t.bind(topic_or_filter).is_some()),
        _ => false,
    }
}

/// The shapes of protocol topics, with placeholders for the session and the subject.
#[derive(Clone, Copy, Debug)]
enum Template {
    Session(SessionTopic),
    Open,
    Ack,
    Queue,
    StaffSubmit,
    Assignments,
    Memberships,
}

impl Template {
    const ALL: [Template; 14] = [
        Template::Session(SessionTopic::Messages),
        Template::Session(SessionTopic::Notes),
        Template::Session(SessionTopic::Lock),
        Template::Session(SessionTopic::Receipts),
        Template::Session(SessionTopic::Submit),
        Template::Session(SessionTopic::Typing),
        Template::Session(SessionTopic::NoteTyping),
        Template::Session(SessionTopic::Presence),
        Template::Open,
        Template::Ack,
        Template::Queue,
        Template::StaffSubmit,
        Template::Assignments,
        Template::Memberships,
    ];

    /// The template's segments, without allocating: this runs for every delivery of a
    /// protocol message. At most six: "cc", "v1", "sessions", the session, the kind, the subject.
    fn segments(self) -> ([Seg; 6], usize) {
        let mut segments = [Seg::Fixed(""); 6];
        let mut len = 0;
        let prefix = PREFIX.split('/').map(Seg::Fixed);
        let rest: &[Seg] = match self {
            Template::Session(kind) if kind.has_subject() => &[
                Seg::Fixed("sessions"),
                Seg::Session,
                Seg::Fixed(kind.segment()),
                Seg::Subject,
            ],
            Template::Session(kind) => &[
                Seg::Fixed("sessions"),
                Seg::Session,
                Seg::Fixed(kind.segment()),
            ],
            Template::Open => &[Seg::Fixed("open"), Seg::Subject],
            Template::Ack => &[Seg::Fixed("clients"), Seg::Subject, Seg::Fixed("ack")],
            Template::Queue => &[Seg::Fixed("queue")],
            Template::StaffSubmit => &[Seg::Fixed("staff"), Seg::Subject, Seg::Fixed("submit")],
            Template::Assignments => {
                &[Seg::Fixed("staff"), Seg::Subject, Seg::Fixed("assignments")]
            }
            Template::Memberships => &[Seg::Fixed("memberships")],
        };
        for seg in prefix.chain(rest.iter().copied()) {
            segments[len] = seg;
            len += 1;
        }
        (segments, len)
    }

    /// If `filter` can match topics of this shape, what it binds the placeholders to.
    fn bind(self, filter: &str) -> Option<(Bound<'_>, Bound<'_>)> {
        let (mut session, mut subject) = (Bound::Any, Bound::Any);
        let (template, len) = self.segments();
        let mut filter_segments = filter.split('/');
        for seg in &template[..len] {
            let part = filter_segments.next()?;
            match (part, seg) {
                ("#", _) => return Some((session, subject)),
                ("+", _) => {}
                (literal, Seg::Fixed(fixed)) if literal == *fixed => {}
                (_, Seg::Fixed(_)) => return None,
                (literal, Seg::Session) => session = Bound::Exactly(literal),
                (literal, Seg::Subject) => subject = Bound::Exactly(literal),
            }
        }
        match filter_segments.next() {
            None => Some((session, subject)),
            // "a/b/#" also matches "a/b" itself.
            Some("#") if filter_segments.next().is_none() => Some((session, subject)),
            Some(_) => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Seg {
    Fixed(&'static str),
    Session,
    Subject,
}
