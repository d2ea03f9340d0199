//! The first schema: staff, sessions and their participants, messages, receipts, the audit trail,
//! retention policies and survey responses, with the indexes the chat pipeline reads by.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000001_initial"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .col(big_pk_auto(Agents::Id))
                    .col(string_len_uniq(Agents::Subject, 128))
                    .col(string_len(Agents::DisplayName, 256))
                    .col(string_len(Agents::Role, 16))
                    .col(string_len_null(Agents::Team, 128))
                    .col(boolean(Agents::Active))
                    .col(timestamp_with_time_zone(Agents::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .col(string_len(Sessions::Id, 64).primary_key())
                    .col(string_len(Sessions::Status, 16))
                    .col(string_len(Sessions::Applicant, 128))
                    .col(string_len(Sessions::Channel, 32))
                    .col(string_len_null(Sessions::Team, 128))
                    .col(string_len_null(Sessions::AssignedAgent, 128))
                    .col(big_integer(Sessions::LastSeq).default(0))
                    .col(string_len_null(Sessions::LockHolder, 128))
                    .col(big_integer(Sessions::LockEpoch).default(0))
                    .col(timestamp_with_time_zone_null(Sessions::LockExpiresAt))
                    .col(timestamp_with_time_zone(Sessions::CreatedAt))
                    .col(timestamp_with_time_zone(Sessions::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Sessions::ClosedAt))
                    .to_owned(),
            )
            .await?;
        // The queue view (sessions by status, oldest first) and "my sessions" for an applicant.
        index(
            manager,
            Sessions::Table,
            "idx_sessions_status_created",
            &[Sessions::Status, Sessions::CreatedAt],
            false,
        )
        .await?;
        index(
            manager,
            Sessions::Table,
            "idx_sessions_applicant",
            &[Sessions::Applicant],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Participants::Table)
                    .col(string_len(Participants::SessionId, 64))
                    .col(string_len(Participants::Subject, 128))
                    .col(string_len(Participants::Role, 16))
                    .col(timestamp_with_time_zone(Participants::JoinedAt))
                    .col(timestamp_with_time_zone_null(Participants::LeftAt))
                    .primary_key(
                        Index::create()
                            .col(Participants::SessionId)
                            .col(Participants::Subject),
                    )
                    .foreign_key(&mut session_fk(
                        Participants::Table,
                        Participants::SessionId,
                    ))
                    .to_owned(),
            )
            .await?;
        // Authorization looks up the sessions a subject belongs to.
        index(
            manager,
            Participants::Table,
            "idx_participants_subject",
            &[Participants::Subject],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .col(big_pk_auto(Messages::Id))
                    .col(string_len(Messages::SessionId, 64))
                    .col(big_integer(Messages::Seq))
                    .col(string_len(Messages::ClientMsgId, 128))
                    .col(string_len(Messages::Sender, 128))
                    .col(string_len(Messages::Kind, 16))
                    .col(text(Messages::Body))
                    .col(timestamp_with_time_zone(Messages::CreatedAt))
                    .foreign_key(&mut session_fk(Messages::Table, Messages::SessionId))
                    .to_owned(),
            )
            .await?;
        // The total order of a session, and the range read behind history resync.
        index(
            manager,
            Messages::Table,
            "uq_messages_session_seq",
            &[Messages::SessionId, Messages::Seq],
            true,
        )
        .await?;
        // Idempotent resubmission: one message per sender and client message id.
        index(
            manager,
            Messages::Table,
            "uq_messages_session_sender_client_msg",
            &[Messages::SessionId, Messages::Sender, Messages::ClientMsgId],
            true,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Receipts::Table)
                    .col(string_len(Receipts::SessionId, 64))
                    .col(string_len(Receipts::Subject, 128))
                    .col(big_integer(Receipts::DeliveredSeq).default(0))
                    .col(big_integer(Receipts::ReadSeq).default(0))
                    .col(timestamp_with_time_zone(Receipts::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(Receipts::SessionId)
                            .col(Receipts::Subject),
                    )
                    .foreign_key(&mut session_fk(Receipts::Table, Receipts::SessionId))
                    .to_owned(),
            )
            .await?;

        // No foreign key to sessions: the audit trail outlives purged conversations.
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(big_pk_auto(AuditEvents::Id))
                    .col(timestamp_with_time_zone(AuditEvents::At))
                    .col(string_len(AuditEvents::Actor, 128))
                    .col(string_len(AuditEvents::Action, 64))
                    .col(string_len_null(AuditEvents::SessionId, 64))
                    .col(text(AuditEvents::Detail))
                    .col(string_len(AuditEvents::PrevMac, 64))
                    .col(string_len(AuditEvents::Mac, 64))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            AuditEvents::Table,
            "idx_audit_events_session",
            &[AuditEvents::SessionId, AuditEvents::Id],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(RetentionPolicies::Table)
                    .col(big_pk_auto(RetentionPolicies::Id))
                    .col(string_len_uniq(RetentionPolicies::Name, 128))
                    .col(string_len(RetentionPolicies::Scope, 160))
                    .col(
                        integer(RetentionPolicies::KeepDays)
                            .check(Expr::col(RetentionPolicies::KeepDays).gte(1)),
                    )
                    .col(timestamp_with_time_zone(RetentionPolicies::CreatedAt))
                    .col(timestamp_with_time_zone(RetentionPolicies::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(SurveyResponses::Table)
                    .col(string_len(SurveyResponses::SessionId, 64).primary_key())
                    .col(
                        small_integer(SurveyResponses::Rating)
                            .check(Expr::col(SurveyResponses::Rating).between(1, 5)),
                    )
                    .col(text_null(SurveyResponses::Comment))
                    .col(timestamp_with_time_zone(SurveyResponses::SubmittedAt))
                    .foreign_key(&mut session_fk(
                        SurveyResponses::Table,
                        SurveyResponses::SessionId,
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Children before parents, so foreign keys never block a drop.
        for table in [
            SurveyResponses::Table.into_iden(),
            RetentionPolicies::Table.into_iden(),
            AuditEvents::Table.into_iden(),
            Receipts::Table.into_iden(),
            Messages::Table.into_iden(),
            Participants::Table.into_iden(),
            Sessions::Table.into_iden(),
            Agents::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

async fn index<T, C>(
    manager: &SchemaManager<'_>,
    table: T,
    name: &str,
    cols: &[C],
    unique: bool,
) -> Result<(), DbErr>
where
    T: IntoIden + 'static,
    C: IntoIden + Copy + 'static,
{
    let mut index = Index::create();
    index.name(name).table(table);
    for col in cols {
        index.col(*col);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index.to_owned()).await
}

/// Rows that belong to a session go when the session is purged by retention.
fn session_fk<T, C>(table: T, col: C) -> ForeignKeyCreateStatement
where
    T: IntoIden + Copy + 'static,
    C: IntoIden + 'static,
{
    ForeignKey::create()
        .from(table, col)
        .to(Sessions::Table, Sessions::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[derive(DeriveIden, Clone, Copy)]
enum Agents {
    Table,
    Id,
    Subject,
    DisplayName,
    Role,
    Team,
    Active,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Sessions {
    Table,
    Id,
    Status,
    Applicant,
    Channel,
    Team,
    AssignedAgent,
    LastSeq,
    LockHolder,
    LockEpoch,
    LockExpiresAt,
    CreatedAt,
    UpdatedAt,
    ClosedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Participants {
    Table,
    SessionId,
    Subject,
    Role,
    JoinedAt,
    LeftAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Messages {
    Table,
    Id,
    SessionId,
    Seq,
    ClientMsgId,
    Sender,
    Kind,
    Body,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Receipts {
    Table,
    SessionId,
    Subject,
    DeliveredSeq,
    ReadSeq,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum AuditEvents {
    Table,
    Id,
    At,
    Actor,
    Action,
    SessionId,
    Detail,
    PrevMac,
    Mac,
}

#[derive(DeriveIden, Clone, Copy)]
enum RetentionPolicies {
    Table,
    Id,
    Name,
    Scope,
    KeepDays,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum SurveyResponses {
    Table,
    SessionId,
    Rating,
    Comment,
    SubmittedAt,
}
