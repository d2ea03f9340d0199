//! Why `courtchat serve` could not start or stopped: each names the setting to change where
//! there is one.

use std::io;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "port {port} is already in use (the {what} listener, `{key}` = {addr}); set `{key}` in the configuration file or {env} to another address"
    )]
    PortInUse {
        port: u16,
        what: &'static str,
        key: &'static str,
        env: &'static str,
        addr: SocketAddr,
    },
    #[error("cannot listen on {addr} (`{key}`): {source}")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error(transparent)]
    Keys(#[from] broker::KeyError),
    #[error("the chat pipeline cannot attach to the gateway: {0}")]
    PipelineLink(#[from] broker::InProcessError),
    #[error(transparent)]
    Audit(#[from] crate::AuditError),
    #[error(transparent)]
    Metrics(#[from] telemetry::MetricsError),
    #[error("`admin.oidc`: {0}")]
    Oidc(String),
    #[error("the {what} listener failed: {source}")]
    Listener {
        what: &'static str,
        source: io::Error,
    },
}
