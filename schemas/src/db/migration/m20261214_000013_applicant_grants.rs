//! Applicant grants: what the admin API issued an applicant subject (its channel, its kiosk and
//! team, its latest token's id and expiry), so that `POST /v1/applicant-tokens/renew` can give
//! the same subject a new token, only for the latest one, and never for a revoked kiosk.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261214_000013_applicant_grants"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApplicantGrants::Table)
                    .col(string_len(ApplicantGrants::Subject, 128).primary_key())
                    .col(string_len(ApplicantGrants::Channel, 16))
                    .col(string_len_null(ApplicantGrants::KioskId, 64))
                    .col(string_len_null(ApplicantGrants::Team, 128))
                    .col(string_len(ApplicantGrants::TokenId, 64))
                    .col(big_integer(ApplicantGrants::ExpiresAt))
                    .col(timestamp_with_time_zone(ApplicantGrants::IssuedAt))
                    .col(timestamp_with_time_zone_null(ApplicantGrants::RenewedAt))
                    .col(integer(ApplicantGrants::Renewals))
                    .to_owned(),
            )
            .await?;
        // Pruning deletes by expiry.
        manager
            .create_index(
                Index::create()
                    .name("idx_applicant_grants_expires_at")
                    .table(ApplicantGrants::Table)
                    .col(ApplicantGrants::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApplicantGrants::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum ApplicantGrants {
    Table,
    Subject,
    Channel,
    KioskId,
    Team,
    TokenId,
    ExpiresAt,
    IssuedAt,
    RenewedAt,
    Renewals,
}
