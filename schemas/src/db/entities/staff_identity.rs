//! The person at the court's identity provider a member of staff is (the ID token's `sub`),
//! bound at their first sign-in there; a later sign-in as another person is refused.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "staff_identities")]
pub struct Model {
    /// The member of staff (`agents.subject`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject: String,
    /// The provider's `sub` for them; unique.
    pub provider_subject: String,
    pub bound_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
