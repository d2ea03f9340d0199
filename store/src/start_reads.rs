//! What a server reads from the record before it accepts its first client, so that state the
//! record holds is rebuilt from it, never only in memory: the open sessions' participants, the
//! closed sessions whose participants keep their access, staff whose tokens are revoked and
//! tokens ended by a sign-out.

use std::collections::HashMap;

use schemas::db::entities::{agent, ended_token, participant, session};
use sea_orm::prelude::DateTimeUtc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::{Store, StoreError};

impl Store {
    /// Every current participant of every open session: who may reach which session's topics.
    /// The gateway loads this at start; afterwards the chat pipeline keeps it current.
    pub async fn active_participants(&self) -> Result<Vec<participant::Model>, StoreError> {
        participant::Entity::find()
            .filter(participant::Column::LeftAt.is_null())
            .inner_join(session::Entity)
            .filter(session::Column::Status.ne(session::SessionStatus::Closed))
            .all(&self.db)
            .await
            .map_err(StoreError::Query)
    }

    /// The sessions a restarted gateway still keeps open to their participants (for the survey
    /// and resync): the `kept` most recently closed sessions that closed at or after `since`,
    /// oldest closing first, each with when it closed and its current participants (those who
    /// had not left when it closed).
    pub async fn recently_closed(
        &self,
        kept: u64,
        since: Option<DateTimeUtc>,
    ) -> Result<Vec<(String, DateTimeUtc, Vec<participant::Model>)>, StoreError> {
        let mut newest = session::Entity::find()
            .filter(session::Column::Status.eq(session::SessionStatus::Closed))
            .filter(session::Column::ClosedAt.is_not_null());
        if let Some(since) = since {
            newest = newest.filter(session::Column::ClosedAt.gte(since));
        }
        let mut sessions = newest
            .order_by_desc(session::Column::ClosedAt)
            .order_by_desc(session::Column::Id)
            .limit(kept)
            .all(&self.db)
            .await
            .map_err(StoreError::Query)?;
        sessions.reverse();
        let mut closed = Vec::with_capacity(sessions.len());
        // SQLite caps the bound parameters of one statement; 500 ids stay well below.
        for chunk in sessions.chunks(500) {
            let ids = chunk.iter().map(|session| session.id.clone());
            let mut members: HashMap<String, Vec<participant::Model>> = HashMap::new();
            for participant in participant::Entity::find()
                .filter(participant::Column::SessionId.is_in(ids))
                .filter(participant::Column::LeftAt.is_null())
                .all(&self.db)
                .await
                .map_err(StoreError::Query)?
            {
                members
                    .entry(participant.session_id.clone())
                    .or_default()
                    .push(participant);
            }
            for session in chunk {
                let closed_at = session.closed_at.unwrap_or(session.updated_at);
                let members = members.remove(&session.id).unwrap_or_default();
                closed.push((session.id.clone(), closed_at, members));
            }
        }
        Ok(closed)
    }

    /// Every member of staff whose tokens issued before a time are refused (disabled or
    /// demoted), with that time in Unix seconds. The gateway loads this at start; afterwards
    /// the admin API keeps it current.
    pub async fn staff_revocations(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(agent::Entity::find()
            .filter(agent::Column::TokensNotBefore.gt(0))
            .all(&self.db)
            .await
            .map_err(StoreError::Query)?
            .into_iter()
            .map(|row| (row.subject, row.tokens_not_before.max(0) as u64))
            .collect())
    }

    /// Every staff token ended before its expiry (`POST /v1/logout`) that has not expired by
    /// `now` (Unix seconds), as `(token id, expiry)`. The gateway loads this at start;
    /// afterwards the admin API keeps it current.
    pub async fn ended_tokens(&self, now: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        Ok(ended_token::Entity::find()
            .filter(ended_token::Column::ExpiresAt.gte(now))
            .all(&self.db)
            .await
            .map_err(StoreError::Query)?
            .into_iter()
            .map(|row| (row.token_id, row.expires_at.max(0) as u64))
            .collect())
    }
}
