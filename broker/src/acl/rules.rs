//! Static rules from the configuration (`[mqtt.acl]`), like Mosquitto's acl_file: who may read
//! or write which filters outside the protocol namespace, and whom a rule denies anywhere.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::authorizer::{Authorizer, Decision};
use super::protocol::{in_protocol, reaches_protocol};
use crate::identity::{Identity, Role};

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

    fn pattern(&self, identity: &Identity) -> Option<Cow<'_, str>> {
        // Most rules name no one: their pattern is their topic, with nothing to build for every
        // publish and delivery checked.
        if !self.topic.contains('%') {
            return Some(Cow::Borrowed(&self.topic));
        }
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
        Some(Cow::Owned(
            self.topic
                .replace("%c", &identity.subject)
                .replace("%u", username),
        ))
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
pub(super) fn covers(pattern: &str, filter: &str) -> bool {
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
pub(super) fn overlaps(pattern: &str, filter: &str) -> bool {
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
