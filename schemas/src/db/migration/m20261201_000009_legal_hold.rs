//! Retention's own state: legal holds (a session an admin or supervisor keeps from being
//! purged, and why), the sessions whose content was purged (and under which policy), one
//! policy per scope, and the index the purge scans closed sessions by.
//!
//! Holds and purges are tables of their own rather than columns on `sessions`: the chat
//! pipeline is the one writer of session rows, and these are written by the admin API and the
//! purge, which must never race it for a row.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000009_legal_hold"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LegalHolds::Table)
                    .col(string_len(LegalHolds::SessionId, 64).primary_key())
                    .col(text(LegalHolds::Reason))
                    .col(string_len(LegalHolds::HeldBy, 128))
                    .col(timestamp_with_time_zone(LegalHolds::HeldAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(LegalHolds::Table, LegalHolds::SessionId)
                            .to(Sessions::Table, Sessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SessionPurges::Table)
                    .col(string_len(SessionPurges::SessionId, 64).primary_key())
                    .col(timestamp_with_time_zone(SessionPurges::PurgedAt))
                    .col(string_len(SessionPurges::Policy, 128))
                    .col(integer(SessionPurges::KeepDays))
                    .foreign_key(
                        ForeignKey::create()
                            .from(SessionPurges::Table, SessionPurges::SessionId)
                            .to(Sessions::Table, Sessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Resolution picks the most specific scope; two policies for one scope would leave it
        // to chance which applies.
        manager
            .create_index(
                Index::create()
                    .name("idx_retention_policies_scope")
                    .table(RetentionPolicies::Table)
                    .col(RetentionPolicies::Scope)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The purge walks closed sessions oldest first, a page at a time.
        manager
            .create_index(
                Index::create()
                    .name("idx_sessions_closed")
                    .table(Sessions::Table)
                    .col(Sessions::ClosedAt)
                    .col(Sessions::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_sessions_closed")
                    .table(Sessions::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_retention_policies_scope")
                    .table(RetentionPolicies::Table)
                    .to_owned(),
            )
            .await?;
        for table in [
            SessionPurges::Table.into_iden(),
            LegalHolds::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum LegalHolds {
    Table,
    SessionId,
    Reason,
    HeldBy,
    HeldAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum SessionPurges {
    Table,
    SessionId,
    PurgedAt,
    Policy,
    KeepDays,
}

#[derive(DeriveIden)]
enum RetentionPolicies {
    Table,
    Scope,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    ClosedAt,
}
