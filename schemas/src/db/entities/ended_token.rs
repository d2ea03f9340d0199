//! A staff token ended before its expiry by `POST /v1/logout`: refused by the gateway and the
//! admin API until it would have expired, then deleted.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ended_tokens")]
pub struct Model {
    /// The token's `jti`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub token_id: String,
    /// Whose token it was (its `sub`).
    pub subject: String,
    /// When the token would have expired, in Unix seconds (its `exp`): the row is kept until
    /// then.
    pub expires_at: i64,
    pub ended_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
