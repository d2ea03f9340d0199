//! The acknowledgement given to a submission that left no stream entry, kept so a resubmission
//! with the same client message id gets the same answer.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "submission_acks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub sender: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub client_msg_id: String,
    /// The acknowledgement as sent (JSON).
    #[sea_orm(column_type = "Text")]
    pub ack: String,
    /// SHA-256 (hex) of the request it answers, as the server parsed it; none for
    /// acknowledgements kept before digests were.
    pub request_digest: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
