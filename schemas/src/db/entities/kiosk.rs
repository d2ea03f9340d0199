//! A kiosk an admin enrolled: a device that exchanges its credential for applicant tokens.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kiosks")]
pub struct Model {
    /// A random identifier chosen by the server (`k-…`); also the first part of the credential.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// What staff call it, e.g. "Hall B, left".
    pub name: String,
    /// The team its applicants' sessions go to (the open request's `topic`), if any.
    pub team: Option<String>,
    /// Lowercase hex of the SHA-256 of the credential's secret; the secret itself is never stored.
    pub credential_hash: String,
    pub created_at: DateTimeUtc,
    /// The admin who enrolled it.
    pub created_by: String,
    /// Set once revoked; a revoked kiosk's credential is refused.
    pub revoked_at: Option<DateTimeUtc>,
    /// When its credential last obtained a token.
    pub last_used_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
