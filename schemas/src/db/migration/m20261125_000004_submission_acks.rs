//! Acknowledgements of submissions that leave no stream entry (lock operations, receipts, the
//! survey), so that a resubmission returns the original acknowledgement for those too.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000004_submission_acks"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SubmissionAcks::Table)
                    .col(string_len(SubmissionAcks::SessionId, 64))
                    .col(string_len(SubmissionAcks::Sender, 128))
                    .col(string_len(SubmissionAcks::ClientMsgId, 128))
                    .col(text(SubmissionAcks::Ack))
                    .col(timestamp_with_time_zone(SubmissionAcks::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(SubmissionAcks::SessionId)
                            .col(SubmissionAcks::Sender)
                            .col(SubmissionAcks::ClientMsgId),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SubmissionAcks::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SubmissionAcks {
    Table,
    SessionId,
    Sender,
    ClientMsgId,
    Ack,
    CreatedAt,
}
