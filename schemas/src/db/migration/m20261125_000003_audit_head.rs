//! The audit chain's head in a row of its own, so that writers in different processes (the
//! gateway recording denials, the pipeline recording messages) take turns: each append locks
//! this row for its transaction.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000003_audit_head"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditHead::Table)
                    .col(integer(AuditHead::Id).primary_key())
                    .col(string_len(AuditHead::Mac, 64))
                    .to_owned(),
            )
            .await?;
        // The head starts at the last entry already written, if any.
        let last = Query::select()
            .column(AuditEvents::Mac)
            .from(AuditEvents::Table)
            .order_by(AuditEvents::Id, Order::Desc)
            .limit(1)
            .to_owned();
        let insert = Query::insert()
            .into_table(AuditHead::Table)
            .columns([AuditHead::Id, AuditHead::Mac])
            .values_panic([1.into(), Expr::cust("''")])
            .to_owned();
        manager.exec_stmt(insert).await?;
        let update = Query::update()
            .table(AuditHead::Table)
            .value(
                AuditHead::Mac,
                Expr::expr(SimpleExpr::SubQuery(
                    None,
                    Box::new(last.into_sub_query_statement()),
                )),
            )
            .and_where(Expr::exists(
                Query::select()
                    .column(AuditEvents::Id)
                    .from(AuditEvents::Table)
                    .to_owned(),
            ))
            .to_owned();
        manager.exec_stmt(update).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditHead::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AuditHead {
    Table,
    Id,
    Mac,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    Mac,
}
