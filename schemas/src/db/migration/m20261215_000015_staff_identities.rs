//! Which person at the court's identity provider each member of staff is: the ID token's `sub`,
//! bound at their first sign-in there. A username a directory gives to someone else later (Entra
//! reuses them) then cannot sign the new person into the old account.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261215_000015_staff_identities"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(StaffIdentities::Table)
                    .col(string_len(StaffIdentities::Subject, 128).primary_key())
                    .col(string_len(StaffIdentities::ProviderSubject, 255))
                    .col(timestamp_with_time_zone(StaffIdentities::BoundAt))
                    .to_owned(),
            )
            .await?;
        // One person at the provider is one member of staff.
        manager
            .create_index(
                Index::create()
                    .name("idx_staff_identities_provider_subject")
                    .table(StaffIdentities::Table)
                    .col(StaffIdentities::ProviderSubject)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(StaffIdentities::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum StaffIdentities {
    Table,
    Subject,
    ProviderSubject,
    BoundAt,
}
