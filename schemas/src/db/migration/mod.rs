//! The ordered list of migrations. `store` runs them at start and through `courtchat migrate`.

use sea_orm_migration::prelude::*;

mod m20261125_000001_initial;
mod m20261125_000002_message_sender_index;
mod m20261125_000003_audit_head;
mod m20261125_000004_submission_acks;
mod m20261130_000005_submission_request_digest;
mod m20261130_000006_staff_sign_in;
mod m20261201_000007_kiosks;
mod m20261201_000008_staff_availability;
mod m20261201_000009_legal_hold;
mod m20261201_000010_range_indexes;
mod m20261208_000011_ended_tokens;
mod m20261212_000012_staff_username_folded;
mod m20261214_000013_applicant_grants;
mod m20261214_000014_oidc_sessions;
mod m20261215_000015_staff_identities;

/// Every migration courtchat has, oldest first. Append only: applied migrations are never edited.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_initial::Migration),
            Box::new(m20261125_000002_message_sender_index::Migration),
            Box::new(m20261125_000003_audit_head::Migration),
            Box::new(m20261125_000004_submission_acks::Migration),
            Box::new(m20261130_000005_submission_request_digest::Migration),
            Box::new(m20261130_000006_staff_sign_in::Migration),
            Box::new(m20261201_000007_kiosks::Migration),
            Box::new(m20261201_000008_staff_availability::Migration),
            Box::new(m20261201_000009_legal_hold::Migration),
            Box::new(m20261201_000010_range_indexes::Migration),
            Box::new(m20261208_000011_ended_tokens::Migration),
            Box::new(m20261212_000012_staff_username_folded::Migration),
            Box::new(m20261214_000013_applicant_grants::Migration),
            Box::new(m20261214_000014_oidc_sessions::Migration),
            Box::new(m20261215_000015_staff_identities::Migration),
        ]
    }
}
