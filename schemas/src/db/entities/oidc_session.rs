//! A courtchat token issued at a sign-in through the court's identity provider, with what the
//! server needs to ask the provider again whether the person still has an account there.
//! Deleted when the token is signed out, revoked or expired.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "oidc_sessions")]
pub struct Model {
    /// The courtchat token's `jti`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub token_id: String,
    /// The member of staff (the token's `sub`).
    pub subject: String,
    /// The person as the provider knows them (the ID token's `sub`).
    pub provider_subject: String,
    /// The provider's session (`sid`), if it said.
    pub provider_session: Option<String>,
    /// The provider's refresh token, if it gave one: without it the session is not checked again.
    pub refresh_token: Option<String>,
    /// When the courtchat token expires, in Unix seconds.
    pub expires_at: i64,
    /// When the provider last said the person still has an account.
    pub checked_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
