//! courtchat's shared vocabulary, with no I/O of its own.
//!
//! - [`db`]: the database entities and the migrations that create them (sea-orm). Only this crate
//!   defines tables; `store` opens the database and runs [`db::Migrator`].
//!
//! The wire protocol (`schemas::wire`: serde types, JSON Schemas and `PROTOCOL.md`) joins this crate
//! with the chat pipeline; wire types and table rows stay separate types, converted with `From`.

pub mod db;
pub mod topics;
