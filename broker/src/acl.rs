//! What a connected principal may do: the authorization chain.
//!
//! Authorizers are typed plugins asked in a fixed order; each answers [`Decision::Allow`],
//! [`Decision::Deny`] or [`Decision::Abstain`], and a request nobody allowed is denied. The order
//! `courtchat` registers (see [`AclChain::standard`]):
//!
//! 1. static **deny** rules from the configuration (they can restrict anyone, anywhere);
//! 2. [`ProtocolRules`], which decides every topic under `cc/` from the role, the session
//!    membership and the topic scheme in `schemas::topics` — final for that namespace, so static
//!    rules cannot open internal notes to applicants or server topics to writers;
//! 3. static **allow** rules for everything outside the protocol namespace;
//! 4. deny.

use schemas::topics::{PREFIX, SessionTopic, Topic};
use serde::{Deserialize, Serialize};

use crate::identity::{Identity, Role};
use crate::memberships::Memberships;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
    Abstain,
}

/// A step of the authorization chain.
pub trait Authorizer: Send + Sync {
    fn check_connect(&self, _identity: &Identity) -> Decision {
        Decision::Abstain
    }
    fn check_publish(&self, identity: &Identity, topic: &str) -> Decision;
    /// Whether `identity` may read every topic `filter` matches (for a topic name: that topic).
    fn check_subscribe(&self, identity: &Identity, filter: &str) -> Decision;
    /// Whether `identity` may hold the wildcard filter `filter` because it may read *some*
    /// topic the filter matches; every delivery through it is then checked with
    /// [`Authorizer::check_subscribe`] on its topic. Defaults to the strict check.
    fn check_subscribe_some(&self, identity: &Identity, filter: &str) -> Decision {
        self.check_subscribe(identity, filter)
    }
}

/// Authorizers in order, ending in deny.
pub struct AclChain {
    steps: Vec<Box<dyn Authorizer>>,
}

impl AclChain {
    pub fn new(steps: Vec<Box<dyn Authorizer>>) -> Self {
        Self { steps }
    }

    /// The chain courtchat runs: static denials, protocol rules, static grants, deny.
    pub fn standard(rules: &AclConfig, memberships: Memberships) -> Self {
        Self::new(vec![
            Box::new(StaticRules::new(rules.rules.clone(), Effect::Deny)),
            Box::new(ProtocolRules { memberships }),
            Box::new(StaticRules::new(rules.rules.clone(), Effect::Allow)),
        ])
    }

    pub fn check_connect(&self, identity: &Identity) -> Result<(), String> {
        self.decide(|step| step.check_connect(identity))
            .or_else(|denied| {
                // Connecting is allowed unless someone objects: what a client may do is decided per
                // publish and subscribe.
                if denied.is_empty() {
                    Ok(())
                } else {
                    Err(denied)
                }
            })
    }

    pub fn check_publish(&self, identity: &Identity, topic: &str) -> Result<(), String> {
        self.decide(|step| step.check_publish(identity, topic))
    }

    /// Whether `identity` may read `topic` (a delivery), or every topic `filter` matches.
    pub fn check_subscribe(&self, identity: &Identity, filter: &str) -> Result<(), String> {
        self.decide(|step| step.check_subscribe(identity, filter))
    }

    /// Whether `identity` may hold `filter` as a subscription. A filter without wildcards must
    /// be readable; a wildcard filter is granted as Mosquitto grants it, when some topic it
    /// matches is readable, because every delivery through it is checked on its own topic
    /// (`connection::delivery`): `#` works for a role that static rules open some topics to,
    /// and still never carries a `cc/` topic or a denied one.
    pub fn check_filter(&self, identity: &Identity, filter: &str) -> Result<(), String> {
        if filter.split('/').any(|level| matches!(level, "+" | "#")) {
            self.decide(|step| step.check_subscribe_some(identity, filter))
        } else {
            self.check_subscribe(identity, filter)
        }
    }

    /// `Err("")` when every step abstained.
    fn decide(&self, ask: impl Fn(&dyn Authorizer) -> Decision) -> Result<(), String> {
        for step in &self.steps {
            match ask(step.as_ref()) {
                Decision::Allow => return Ok(()),
                Decision::Deny(reason) => return Err(reason),
                Decision::Abstain => {}
            }
        }
        Err(String::new())
    }
}

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

/// Whether `identity` may publish on `topic` with the retain flag `retain`. Under `cc/` only the
/// service keeps retained state (the reply lock): a client's retained message there would be
/// handed to every later subscriber of the session, and kept until the session is forgotten.
pub(crate) fn check_retain(identity: &Identity, topic: &str, retain: bool) -> Result<(), String> {
    if retain && identity.role != Role::Service && reaches_protocol(topic) {
        Err(format!(
            "{} may not publish retained messages under {PREFIX}",
            identity.role
        ))
    } else {
        Ok(())
    }
}

/// Whether a topic name lies in the protocol namespace `cc/...`.
pub(crate) fn in_protocol(topic: &str) -> bool {
    topic.split('/').next() == Some("cc")
}

/// Whether a topic or filter lies in the protocol namespace `cc/...`, or is a wildcard filter
/// that can match a protocol topic.
fn reaches_protocol(topic_or_filter: &str) -> bool {
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

/// The `[mqtt.acl]` section: static rules, like Mosquitto's acl_file, and the v4 policy for a
/// denied PUBLISH.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclConfig {
    /// What happens to an MQTT 3.1.1 client whose PUBLISH is denied (3.1.1 has no negative
    /// PUBACK): `disconnect` (the default) or `drop` (acknowledge and discard).
    pub denied_publish: DeniedPublish,
    pub rules: Vec<StaticRule>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeniedPublish {
    #[default]
    Disconnect,
    Drop,
}

/// One static rule. Exactly one of `role`, `username` and `client` selects whom it applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// `read` (subscribe), `write` (publish) or `readwrite`.
    pub access: Access,
    /// A topic filter; `%c` is replaced by the client id and `%u` by the username.
    pub topic: String,
    /// `allow` or `deny`.
    pub effect: Effect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
    Readwrite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

impl StaticRule {
    /// Checks what serde cannot; the error names the problem.
    pub fn validate(&self) -> Result<(), String> {
        let selectors = [
            self.role.is_some(),
            self.username.is_some(),
            self.client.is_some(),
        ];
        if selectors.iter().filter(|s| **s).count() != 1 {
            return Err(format!(
                "rule for {:?} needs exactly one of role, username, client",
                self.topic
            ));
        }
        if self.topic.is_empty()
            || !rumqttc::mqttbytes::valid_filter(&self.topic.replace(['%'], "x"))
        {
            return Err(format!("rule topic {:?} is not a valid filter", self.topic));
        }
        Ok(())
    }

    fn applies_to(&self, identity: &Identity) -> bool {
        if let Some(role) = self.role {
            return role == identity.role;
        }
        if let Some(username) = &self.username {
            return identity.username.as_deref() == Some(username.as_str());
        }
        self.client.as_deref() == Some(identity.subject.as_str())
    }

    fn pattern(&self, identity: &Identity) -> Option<String> {
        // A `%u` rule cannot apply to a client without a username.
        if self.topic.contains("%u") && identity.username.is_none() {
            return None;
        }
        let username = identity.username.as_deref().unwrap_or_default();
        // Identities with filter characters never reach here (client ids are checked at
        // CONNECT), but a username could contain them: such a rule does not apply.
        if username.contains(['+', '#', '/']) {
            return None;
        }
        Some(
            self.topic
                .replace("%c", &identity.subject)
                .replace("%u", username),
        )
    }
}

/// The static rules with one effect (see the chain order above).
pub struct StaticRules {
    rules: Vec<StaticRule>,
    effect: Effect,
}

impl StaticRules {
    pub fn new(rules: Vec<StaticRule>, effect: Effect) -> Self {
        Self {
            rules: rules
                .into_iter()
                .filter(|rule| rule.effect == effect)
                .collect(),
            effect,
        }
    }

    fn check(
        &self,
        identity: &Identity,
        topic_or_filter: &str,
        write: bool,
        reach: Reach,
    ) -> Decision {
        for rule in &self.rules {
            let access = match rule.access {
                Access::Read => !write,
                Access::Write => write,
                Access::Readwrite => true,
            };
            if !access || !rule.applies_to(identity) {
                continue;
            }
            let Some(pattern) = rule.pattern(identity) else {
                continue;
            };
            let hit = match (self.effect, reach) {
                // Allow only what the pattern wholly covers; deny whatever it touches.
                (Effect::Allow, Reach::Every) => covers(&pattern, topic_or_filter),
                (Effect::Deny, Reach::Every) => overlaps(&pattern, topic_or_filter),
                // A wildcard filter: granted where the pattern opens some topic it matches
                // outside the protocol (a grant never opens `cc/`), denied where the pattern
                // closes all of it.
                (Effect::Allow, Reach::Some) => {
                    !in_protocol(&pattern) && overlaps(&pattern, topic_or_filter)
                }
                (Effect::Deny, Reach::Some) => covers(&pattern, topic_or_filter),
            };
            if hit {
                return match self.effect {
                    Effect::Allow => Decision::Allow,
                    Effect::Deny => {
                        Decision::Deny(format!("denied by the static rule on {:?}", rule.topic))
                    }
                };
            }
        }
        Decision::Abstain
    }
}

impl Authorizer for StaticRules {
    fn check_publish(&self, identity: &Identity, topic: &str) -> Decision {
        // Grants never reach into the protocol namespace: ProtocolRules has decided it already.
        if self.effect == Effect::Allow && reaches_protocol(topic) {
            return Decision::Abstain;
        }
        self.check(identity, topic, true, Reach::Every)
    }

    fn check_subscribe(&self, identity: &Identity, filter: &str) -> Decision {
        if self.effect == Effect::Allow && reaches_protocol(filter) {
            return Decision::Abstain;
        }
        self.check(identity, filter, false, Reach::Every)
    }

    fn check_subscribe_some(&self, identity: &Identity, filter: &str) -> Decision {
        if in_protocol(filter) {
            return self.check_subscribe(identity, filter);
        }
        self.check(identity, filter, false, Reach::Some)
    }
}

/// Which of a filter's topics a rule must reach to decide it.
#[derive(Clone, Copy)]
enum Reach {
    /// Every topic (a grant covers the filter; a denial touches it).
    Every,
    /// Some topic (a grant touches the filter outside `cc/`; a denial covers it).
    Some,
}

/// Does every topic `filter` matches also match `pattern`?
fn covers(pattern: &str, filter: &str) -> bool {
    let mut filter_segments = filter.split('/');
    for p in pattern.split('/') {
        if p == "#" {
            return true;
        }
        match filter_segments.next() {
            None => return false,
            Some("#") => return false,
            Some("+") if p != "+" => return false,
            Some(f) if p != "+" && p != f => return false,
            Some(_) => {}
        }
    }
    filter_segments.next().is_none()
}

/// Is there a topic that both `pattern` and `filter` match?
fn overlaps(pattern: &str, filter: &str) -> bool {
    let (mut a, mut b) = (pattern.split('/'), filter.split('/'));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
