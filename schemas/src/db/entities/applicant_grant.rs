//! What an applicant subject was issued (`POST /v1/applicant-tokens`) and its latest token, so
//! that the applicant page can renew that token for the same subject before it expires
//! (`POST /v1/applicant-tokens/renew`). Deleted once its latest token has expired.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "applicant_grants")]
pub struct Model {
    /// The applicant's subject (`ap-…`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject: String,
    /// `kiosk` or `phone`, as the first token said.
    pub channel: String,
    /// The kiosk whose credential obtained the first token; a revoked kiosk's grants are not
    /// renewed.
    pub kiosk_id: Option<String>,
    /// The kiosk's team, which every token of the grant carries.
    pub team: Option<String>,
    /// The `jti` of the latest token: only that token may be renewed.
    pub token_id: String,
    /// When the latest token expires, in Unix seconds.
    pub expires_at: i64,
    /// When the first token was issued.
    pub issued_at: DateTimeUtc,
    pub renewed_at: Option<DateTimeUtc>,
    /// How many times the grant's token was renewed.
    pub renewals: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
