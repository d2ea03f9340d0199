//! Tokens ended before their expiry (`POST /v1/logout`): the token's id, whose it was, and when
//! it would have expired. The gateway and the admin API refuse these ids; a row is of no use
//! after its expiry, so the admin API deletes expired rows as it adds new ones, and the server
//! loads only unexpired rows at start.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261208_000011_ended_tokens"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EndedTokens::Table)
                    .col(string_len(EndedTokens::TokenId, 64).primary_key())
                    .col(string_len(EndedTokens::Subject, 128))
                    .col(big_integer(EndedTokens::ExpiresAt))
                    .col(timestamp_with_time_zone(EndedTokens::EndedAt))
                    .to_owned(),
            )
            .await?;
        // Pruning deletes by expiry.
        manager
            .create_index(
                Index::create()
                    .name("idx_ended_tokens_expires_at")
                    .table(EndedTokens::Table)
                    .col(EndedTokens::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EndedTokens::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum EndedTokens {
    Table,
    TokenId,
    Subject,
    ExpiresAt,
    EndedAt,
}
