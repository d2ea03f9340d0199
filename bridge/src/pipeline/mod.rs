//! The chat pipeline: takes what participants submit, decides, stores, orders, audits, and only
//! then publishes.
//!
//! It is a client of the gateway as the service identity, so it runs the same in-process
//! (`courtchat serve`, through function calls) and as its own process (`courtchat bridge`, an
//! MQTT 5 client with a `service` token); see `link`. Submissions are handled in
//! batches: everything that has arrived is decided, written in one transaction (one commit, one
//! fsync) with its audit entries, and published after the commit: membership changes first,
//! then stream entries, then acknowledgements. A client therefore never sees an acknowledgement
//! or an entry for something that is not stored. Only then is each submission acknowledged to
//! the gateway (see `link`), so a dropped connection loses nothing the gateway acknowledged.
//!
//! Every value a client wrote is checked before anything is written; a batch that still fails
//! is decided again one submission at a time, so one bad submission costs only itself. A
//! supervisor restarts a worker that ends or panics.

mod answers;
mod attendance;
mod checkpointer;
mod commands;
mod committer;
mod config;
mod decide;
mod decided;
mod decider;
mod disclosure;
mod dispatch;
mod input;
pub(crate) mod link;
mod load;
pub(crate) mod lock;
mod outbox;
mod parsed;
pub(crate) mod rate;
mod reader;
mod restore;
mod resync;
mod roster;
mod supervisor;
mod sweep;
mod view;
mod worker;
mod writer;

pub use commands::{CommandError, Commands, Reply};
pub use config::BridgeConfig;
pub use link::{BrokerLink, Delivered, Gateway};
pub use lock::{LockChange, LockError, LockRequest, ReplyLock};
pub use supervisor::Pipeline;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the database failed: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Audit(#[from] crate::AuditError),
    /// A state the pipeline's own bookkeeping should rule out; the batch is abandoned.
    #[error("internal inconsistency: {0}")]
    Inconsistent(&'static str),
    /// Another process appended to the audit chain since this one last did, so the head this
    /// batch was chained to is stale; nothing was stored, and the batch is decided again.
    #[error("another writer moved the audit head")]
    HeadMoved,
    /// Deciding panicked; the batch is abandoned and its submissions decided one by one.
    #[error("deciding panicked: {0}")]
    Panicked(String),
}

impl PipelineError {
    /// Whether the database could not be reached, as opposed to refusing something: then
    /// nothing in the batch can be stored now, whichever submission it is.
    pub(crate) fn is_unreachable(&self) -> bool {
        match self {
            Self::Database(error) | Self::Audit(crate::AuditError::Database(error)) => {
                store::is_unreachable(error)
            }
            _ => false,
        }
    }
}

/// What a panic said, for the log.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}
