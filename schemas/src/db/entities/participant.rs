//! Who belongs to a session, in which role, and since when. Authorization asks this table
//! whether a subject may reach a session's topics.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "participants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject: String,
    pub role: ParticipantRole,
    pub joined_at: DateTimeUtc,
    /// Set when the participant leaves or the session is transferred away from them.
    pub left_at: Option<DateTimeUtc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum ParticipantRole {
    #[sea_orm(string_value = "applicant")]
    Applicant,
    #[sea_orm(string_value = "agent")]
    Agent,
    #[sea_orm(string_value = "supervisor")]
    Supervisor,
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
