//! Sign-ins through the court's identity provider: for each courtchat token issued that way,
//! whose it is, the provider's refresh token (with which the server asks the provider again
//! whether the person still has an account there) and when the token expires.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261214_000014_oidc_sessions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OidcSessions::Table)
                    .col(string_len(OidcSessions::TokenId, 64).primary_key())
                    .col(string_len(OidcSessions::Subject, 128))
                    .col(string_len(OidcSessions::ProviderSubject, 255))
                    .col(string_len_null(OidcSessions::ProviderSession, 255))
                    .col(text_null(OidcSessions::RefreshToken))
                    .col(big_integer(OidcSessions::ExpiresAt))
                    .col(timestamp_with_time_zone(OidcSessions::CheckedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_oidc_sessions_subject")
                    .table(OidcSessions::Table)
                    .col(OidcSessions::Subject)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(OidcSessions::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum OidcSessions {
    Table,
    TokenId,
    Subject,
    ProviderSubject,
    ProviderSession,
    RefreshToken,
    ExpiresAt,
    CheckedAt,
}
