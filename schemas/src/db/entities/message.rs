//! Every accepted message of a session, in its one total order.
//!
//! `(session_id, seq)` is unique, which is what makes the order total; `(session_id, sender,
//! client_msg_id)` is unique, which is what makes a resubmission return the original instead of a
//! duplicate.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub session_id: String,
    /// The message's place in its session: 1, 2, 3, ... with no gaps.
    pub seq: i64,
    /// The sender's own identifier for the submission, used to deduplicate retries.
    pub client_msg_id: String,
    pub sender: String,
    pub kind: MessageKind,
    #[sea_orm(column_type = "Text")]
    pub body: String,
    pub created_at: DateTimeUtc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum MessageKind {
    /// Visible to every participant.
    #[sea_orm(string_value = "text")]
    Text,
    /// Staff only: never delivered to the applicant.
    #[sea_orm(string_value = "note")]
    Note,
    /// A lifecycle event (join, leave, transfer, ...) recorded in the stream.
    #[sea_orm(string_value = "event")]
    Event,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::session::Entity",
        from = "Column::SessionId",
        to = "super::session::Column::Id"
    )]
    Session,
}

impl Related<super::session::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Session.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
