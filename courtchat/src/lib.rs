//! The courtchat server as a library: its configuration and the composition behind
//! `courtchat serve`. The `courtchat` binary (main.rs) is a thin command-line shell over this, and
//! `testkit` starts the very same [`Server`] in-process.

mod config;
mod server;

pub use config::{Config, ConfigError, LogConfig};
pub use server::{Addresses, Listeners, ServeError, Server};
