//! The courtchat server as a library: its configuration and the composition behind
//! `courtchat serve`. The `courtchat` binary (main.rs) is a thin command-line shell over this, and
//! `testkit` starts the very same [`Server`] in-process.

mod audit;
mod config;
pub mod health;
mod metrics;
mod pipeline_gateway;
mod serve_error;
mod server;
mod staff;

pub use audit::{AuditError, audit_key};
pub use broker::{
    Access, DeniedPublish, Effect, Memberships, Role, StaffRevocations, StaticRule, Stats,
};
pub use config::{Config, ConfigError, LogConfig};
pub use serve_error::ServeError;
pub use server::{Addresses, Listeners, Server};

use std::time::{Duration, SystemTime};

pub use bridge::{
    AuditConfig, BrokerLink, CommandError, Commands, Difference, Discrepancy, PurgeReport,
    PurgedSession, RecordCounts, RecordKey, Reply, RetentionConfig, Verification,
};

/// Walks the audit trail in `store` with the key `config` names and reports the first entry
/// that does not verify, and the first stored message or survey answer that differs from what
/// the trail recorded.
pub async fn verify_audit(
    config: &Config,
    store: &store::Store,
) -> Result<Verification, AuditError> {
    Ok(bridge::AuditTrail::verify(store, &audit_key(&config.audit)?).await?)
}

/// Runs retention once on the configured database, as the server does on its schedule: every
/// closed session whose policy's days are past at `now` (and that no legal hold keeps) has its
/// content purged, recorded on the audit chain as done by `retention`; with `dry_run`, only
/// reports what would go.
pub async fn run_retention(
    config: &Config,
    now: chrono::DateTime<chrono::Utc>,
    dry_run: bool,
) -> Result<PurgeReport, RunRetentionError> {
    let store = store::Store::open(&config.database).await?;
    let audit = std::sync::Arc::new(audit::open_trail(&store, &config.audit).await?);
    let report = bridge::Retention::new(store.clone(), audit, config.retention.clone())
        .run(now, dry_run)
        .await;
    store.close().await;
    Ok(report?)
}

#[derive(Debug, thiserror::Error)]
pub enum RunRetentionError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Retention(#[from] bridge::RetentionError),
}

pub use admin_api::people::NewStaff;
/// Sign-in with the court's identity provider: which groups give which role and team.
pub use admin_api::{GroupRole, GroupTeam};
pub use schemas::db::entities::agent::StaffRole;

/// Creates a member of staff on the configured database (migrating it first, so that this works
/// on a fresh install before the first start), recorded on the audit chain as done from the
/// command line.
pub async fn add_staff(
    config: &Config,
    new: NewStaff,
) -> Result<schemas::db::entities::agent::Model, AddStaffError> {
    let store = store::Store::open(&config.database).await?;
    let audit = audit::open_trail(&store, &config.audit).await?;
    let created = admin_api::people::add_staff(&store, &audit, "cli", new).await;
    store.close().await;
    Ok(created?)
}

#[derive(Debug, thiserror::Error)]
pub enum AddStaffError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    People(#[from] admin_api::people::PeopleError),
}

/// The chat pipeline over `store`, configured by `config`, as `serve` and `bridge` run it.
pub async fn pipeline(
    config: &Config,
    store: &store::Store,
) -> Result<bridge::Pipeline, AuditError> {
    let audit = std::sync::Arc::new(audit::open_trail(store, &config.audit).await?);
    Ok(bridge::Pipeline::new(
        store.clone(),
        audit,
        config.bridge.clone(),
    ))
}

/// The pipeline's client id and subject at the gateway, in process or over MQTT.
const PIPELINE_CLIENT_ID: &str = "courtchat-bridge";

/// How the pipeline reaches the gateway listening at `addr`: as the service identity
/// `courtchat-bridge`, with a token minted from the configured key for each connection.
pub fn pipeline_link(config: &Config, addr: std::net::SocketAddr) -> bridge::BrokerLink {
    // Each connection gets a fresh token; this only bounds how long one connection may live.
    const TTL: Duration = Duration::from_secs(30 * 24 * 3600);
    let config = config.clone();
    bridge::BrokerLink::Mqtt {
        addr: server::loopback(addr),
        client_id: PIPELINE_CLIENT_ID.to_owned(),
        token: std::sync::Arc::new(move || {
            mint_token(&config, PIPELINE_CLIENT_ID, broker::Role::Service, TTL).unwrap_or_default()
        }),
    }
}

/// The pipeline's link to `broker` in this process: as the same service identity as over MQTT,
/// with the same window of unacknowledged submissions (`bridge.intake_window`).
pub fn in_process_link(
    broker: &broker::Broker,
    config: &Config,
) -> Result<bridge::BrokerLink, broker::InProcessError> {
    let identity = broker::Identity {
        subject: PIPELINE_CLIENT_ID.to_owned(),
        username: None,
        role: broker::Role::Service,
        anonymous: false,
        expires_at: None,
        issued_at: None,
        token: broker::TokenDetails::default(),
    };
    let client =
        broker.in_process_client(PIPELINE_CLIENT_ID, identity, config.bridge.intake_window)?;
    Ok(bridge::BrokerLink::InProcess(std::sync::Arc::new(
        pipeline_gateway::PipelineGateway(client),
    )))
}

/// Mints a token that the server configured by `config` accepts: for operators and scripts
/// (`courtchat token`) and tests, until the admin API issues tokens at login.
pub fn mint_token(
    config: &Config,
    subject: &str,
    role: broker::Role,
    ttl: Duration,
) -> Result<String, broker::KeyError> {
    mint_token_at(config, subject, role, ttl, SystemTime::now())
}

/// [`mint_token`] as if minted at `issued_at` (its `iat`; it expires `ttl` after that): for
/// tests of token age, such as staff revocations.
pub fn mint_token_at(
    config: &Config,
    subject: &str,
    role: broker::Role,
    ttl: Duration,
    issued_at: SystemTime,
) -> Result<String, broker::KeyError> {
    broker::TokenKeys::load(&config.mqtt.auth)?.mint(subject, role, ttl, issued_at)
}
