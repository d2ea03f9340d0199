//! One conversation between an applicant and the help desk.
//!
//! The reply lock lives on the session row on purpose: a transfer moves the conversation and its
//! lock in one row update, so the two can never disagree.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    /// A random identifier chosen by the server; it appears in every topic of the session.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub status: SessionStatus,
    /// Subject of the applicant who opened the session.
    pub applicant: String,
    /// Where the applicant writes from (`kiosk`, `phone`, ...).
    pub channel: String,
    pub team: Option<String>,
    /// The agent the session is assigned to, if any.
    pub assigned_agent: Option<String>,
    /// The highest sequence number given to a message of this session (0 before the first).
    pub last_seq: i64,
    /// Subject of the agent holding the reply lock.
    pub lock_holder: Option<String>,
    /// Fencing epoch: incremented on every acquisition, so a stale holder's write is detectable.
    pub lock_epoch: i64,
    pub lock_expires_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub closed_at: Option<DateTimeUtc>,
}

/// The lifecycle of a session: queued, then active, possibly escalated, finally closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum SessionStatus {
    #[sea_orm(string_value = "queued")]
    Queued,
    #[sea_orm(string_value = "active")]
    Active,
    #[sea_orm(string_value = "escalated")]
    Escalated,
    #[sea_orm(string_value = "closed")]
    Closed,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::message::Entity")]
    Message,
    #[sea_orm(has_many = "super::participant::Entity")]
    Participant,
}

impl Related<super::message::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Message.def()
    }
}

impl Related<super::participant::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Participant.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
