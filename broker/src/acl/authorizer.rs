//! The plugin point of authorization: what each step of the chain answers.

use crate::identity::Identity;

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
