//! Why a broker cannot start.

use crate::auth::KeyError;
use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot start the broker: {0}")]
    Start(#[from] std::io::Error),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("`mqtt.acl.rules`: {0}")]
    Rule(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the broker must be started from within a tokio runtime")]
    NoRuntime,
    #[error("cannot start the gateway's threads (mqtt.workers): {0}")]
    Threads(#[source] std::io::Error),
    /// A setting that cannot be used, with its key.
    #[error("`{0}`: {1}")]
    Config(&'static str, String),
}
