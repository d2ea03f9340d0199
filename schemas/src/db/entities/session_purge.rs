//! A session whose content retention purged: when, and under which policy. The audit chain's
//! `retention.purged` entry says what went; this row lets readers (the transcript, the purge
//! itself, the survey) know without walking the chain.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "session_purges")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    pub purged_at: DateTimeUtc,
    /// The name of the policy that made the session due.
    pub policy: String,
    /// The policy's `keep_days` when it purged.
    pub keep_days: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
