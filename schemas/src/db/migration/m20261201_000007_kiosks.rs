//! Kiosks: devices an admin enrols, each with a machine credential it exchanges for short-lived
//! applicant tokens. Only the credential's SHA-256 is stored; revoking keeps the row, so that
//! the record of what a kiosk's applicants wrote stays attributable to it.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000007_kiosks"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Kiosks::Table)
                    .col(string_len(Kiosks::Id, 32).primary_key())
                    .col(string_len(Kiosks::Name, 128))
                    .col(string_len_null(Kiosks::Team, 128))
                    // Lowercase hex of the secret's SHA-256.
                    .col(string_len(Kiosks::CredentialHash, 64))
                    .col(timestamp_with_time_zone(Kiosks::CreatedAt))
                    .col(string_len(Kiosks::CreatedBy, 128))
                    .col(timestamp_with_time_zone_null(Kiosks::RevokedAt))
                    .col(timestamp_with_time_zone_null(Kiosks::LastUsedAt))
                    .to_owned(),
            )
            .await?;
        // The list pages through kiosks in the order they were enrolled.
        manager
            .create_index(
                Index::create()
                    .name("idx_kiosks_created")
                    .table(Kiosks::Table)
                    .col(Kiosks::CreatedAt)
                    .col(Kiosks::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Kiosks::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Kiosks {
    Table,
    Id,
    Name,
    Team,
    CredentialHash,
    CreatedAt,
    CreatedBy,
    RevokedAt,
    LastUsedAt,
}
