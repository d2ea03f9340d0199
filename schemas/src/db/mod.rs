//! Database entities and migrations.
//!
//! The same migrations run on SQLite (the embedded default) and PostgreSQL, so they use only
//! portable column types: text for enumerations, 64-bit integers for sequence numbers and
//! timestamps with time zone. Applied migrations are never edited; a change is a new migration.

pub mod entities;
mod migration;

pub use migration::Migrator;
