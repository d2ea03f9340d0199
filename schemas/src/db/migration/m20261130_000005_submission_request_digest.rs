//! A digest of the request each kept acknowledgement answers, so that a resubmission that reuses
//! a `client_msg_id` for a different request is told apart from a true resubmission.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261130_000005_submission_request_digest"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Nullable: acknowledgements kept before this migration have no digest, and a
        // resubmission of one of them is answered as before.
        manager
            .alter_table(
                Table::alter()
                    .table(SubmissionAcks::Table)
                    .add_column(string_len_null(SubmissionAcks::RequestDigest, 64))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SubmissionAcks::Table)
                    .drop_column(SubmissionAcks::RequestDigest)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum SubmissionAcks {
    Table,
    RequestDigest,
}
