//! Help-desk staff who may log in to the dashboard: agents, supervisors and admins.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agents")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The identity the agent authenticates as (the JWT subject and MQTT client id).
    #[sea_orm(unique)]
    pub subject: String,
    pub display_name: String,
    pub role: StaffRole,
    /// The team the agent works in; transfers may target a team instead of a person.
    pub team: Option<String>,
    /// Deactivated agents keep their row so that the record of what they wrote stays attributable.
    pub active: bool,
    pub created_at: DateTimeUtc,
    /// The password's argon2id hash (PHC string); none: no password sign-in.
    pub password_hash: Option<String>,
    /// How many sessions the agent takes at once.
    pub capacity: i32,
    /// Unix seconds before which the agent's tokens are refused (0: never revoked).
    pub tokens_not_before: i64,
    /// Whether they take new sessions now; written only by the chat pipeline, which offers
    /// waiting sessions to available staff.
    pub available: bool,
}

/// What a member of staff may do; applicants and services are not staff and have no row here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum StaffRole {
    #[sea_orm(string_value = "agent")]
    Agent,
    #[sea_orm(string_value = "supervisor")]
    Supervisor,
    #[sea_orm(string_value = "admin")]
    Admin,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
