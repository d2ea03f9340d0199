//! A legal hold: a session whose content no retention policy may purge until the hold is
//! released (the row deleted). Placing and releasing one is recorded on the audit chain.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "legal_holds")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    /// Why the session is held (a case number, a request from the court).
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    /// The admin or supervisor who placed the hold.
    pub held_by: String,
    pub held_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
