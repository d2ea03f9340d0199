//! courtchat's shared vocabulary, with no I/O of its own.
//!
//! - [`db`]: the database entities and the migrations that create them (sea-orm). Only this crate
//!   defines tables; `store` opens the database and runs [`db::Migrator`].
//! - [`topics`]: the MQTT topic scheme.
//! - [`wire`]: the JSON payloads (serde types; JSON Schemas generated into `schemas/json/`).
//! - [`convert`]: every conversion between a wire type and a table row, written once.
//!
//! `PROTOCOL.md` is the reference for the topics and the payloads. Wire types and table rows
//! stay separate types, joined only by the conversions in [`convert`].

pub mod convert;
pub mod db;
pub mod topics;
pub mod wire;
