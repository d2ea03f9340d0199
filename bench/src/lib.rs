//! Load scenarios that speak MQTT through real connections to any broker, so that courtchat and
//! the brokers people would pick instead are measured by the same code in the same run.
//!
//! Figures are meant to be read as ratios between targets measured together: these machines are
//! shared and noisy, so an absolute number from one run says little on its own.

mod chat;
mod connections;
mod fanout;
mod knee;
mod peer;
mod process;
mod relay;
mod soak;
mod stats;

pub use chat::{ChatConfig, ChatReport, chat};
pub use connections::{ConnectionsConfig, ConnectionsReport, MemoryProbe, connections};
pub use fanout::{FanoutConfig, FanoutReport, fanout};
pub use knee::{KneeSearch, KneeStep};
pub use peer::{ChatTarget, TokenMinter};
pub use process::{CpuWindow, ServerCpu, cpu_time, resident_bytes};
pub use relay::{RelayConfig, RelayReport, relay};
pub use soak::{SoakConfig, SoakReport, soak};
pub use stats::Percentiles;

use std::net::SocketAddr;

/// Username and password for a client id.
pub type Credentials = Box<dyn Fn(&str) -> (String, String) + Send + Sync>;

/// A broker to measure.
pub struct Target {
    /// How the report names it.
    pub name: String,
    pub addr: SocketAddr,
    /// Username and password for a client id, when the broker wants credentials.
    pub credentials: Option<Credentials>,
    /// The broker's process on this machine, when known: its CPU is then read over each run.
    pub pid: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{target}: cannot connect: {reason}")]
    Connect { target: String, reason: String },
    #[error("{target}: the client failed: {reason}")]
    Client { target: String, reason: String },
}
