//! The append-only audit trail. Each entry carries the HMAC of its content chained to the previous
//! entry's, so that a changed, deleted, inserted or reordered entry breaks the chain.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    /// Position in the chain.
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at: DateTimeUtc,
    /// Who did it: a subject, `system`, or an admin's identity.
    pub actor: String,
    /// What happened, e.g. `message.accepted`, `lock.acquired`, `publish.denied`.
    pub action: String,
    pub session_id: Option<String>,
    /// Details as JSON text. Stored as text rather than a JSON column so that the bytes the MAC
    /// covers are exactly the bytes read back.
    #[sea_orm(column_type = "Text")]
    pub detail: String,
    /// Hex HMAC-SHA-256 of the previous entry (empty for the first).
    pub prev_mac: String,
    /// Hex HMAC-SHA-256 over this entry's fields and `prev_mac`.
    pub mac: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
