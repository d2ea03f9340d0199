//! The courtchat server as a library: its configuration and the composition behind
//! `courtchat serve`. The `courtchat` binary (main.rs) is a thin command-line shell over this, and
//! `testkit` starts the very same [`Server`] in-process.

mod config;
mod server;

pub use broker::{Access, DeniedPublish, Effect, Memberships, Role, StaticRule, Stats};
pub use config::{Config, ConfigError, LogConfig};
pub use server::{Addresses, Listeners, ServeError, Server};

use std::time::{Duration, SystemTime};

pub use bridge::{AuditConfig, Verification};

/// Walks the audit trail in `store` with the key `config` names and reports the first entry
/// that does not verify.
pub async fn verify_audit(
    config: &Config,
    store: &store::Store,
) -> Result<Verification, bridge::AuditError> {
    bridge::AuditTrail::verify(store, &bridge::AuditKey::load(&config.audit)?).await
}

/// Mints a token that the server configured by `config` accepts: for operators and scripts
/// (`courtchat token`) and tests, until the admin API issues tokens at login.
pub fn mint_token(
    config: &Config,
    subject: &str,
    role: broker::Role,
    ttl: Duration,
) -> Result<String, broker::KeyError> {
    broker::TokenKeys::load(&config.mqtt.auth)?.mint(subject, role, ttl, SystemTime::now())
}
