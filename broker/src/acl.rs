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

mod authorizer;
mod protocol;
mod rules;

use schemas::topics::PREFIX;

use crate::identity::{Identity, Role};
use crate::memberships::Memberships;

pub use authorizer::{Authorizer, Decision};
pub use protocol::ProtocolRules;
pub(crate) use protocol::in_protocol;
use protocol::reaches_protocol;
pub use rules::{Access, AclConfig, DeniedPublish, Effect, StaticRule, StaticRules};

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

#[cfg(test)]
mod tests;
