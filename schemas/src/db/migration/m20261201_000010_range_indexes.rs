//! Indexes for reading by time and by who or what: statistics and the session list take
//! sessions by when they were opened, statistics read availability changes from the audit
//! chain by action and time, and an investigation reads the chain by actor. Without them each
//! of those scans its whole table, which grows with every conversation.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000010_range_indexes"
    }
}

/// (name, table, columns)
fn indexes() -> [(&'static str, DynIden, Vec<DynIden>); 3] {
    [
        (
            "idx_sessions_created",
            Sessions::Table.into_iden(),
            vec![Sessions::CreatedAt.into_iden(), Sessions::Id.into_iden()],
        ),
        (
            "idx_audit_events_action_at",
            AuditEvents::Table.into_iden(),
            vec![AuditEvents::Action.into_iden(), AuditEvents::At.into_iden()],
        ),
        (
            "idx_audit_events_actor",
            AuditEvents::Table.into_iden(),
            vec![AuditEvents::Actor.into_iden(), AuditEvents::Id.into_iden()],
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, columns) in indexes() {
            let mut index = Index::create();
            index.name(name).table(table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, _) in indexes() {
            manager
                .drop_index(Index::drop().name(name).table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    CreatedAt,
    Id,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Action,
    At,
    Actor,
    Id,
}
