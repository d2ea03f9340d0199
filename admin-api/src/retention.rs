//! Retention's rules over the database: policies (how long closed sessions' content is kept,
//! per scope) and legal holds (a session kept from any purge until released). Every change is
//! recorded on the audit chain, with what it was before and after, in the same transaction as
//! the row it changes. The purge itself is `bridge`'s ([`bridge::Retention`]).
//!
//! Placing a hold takes the audit chain's head before it checks the session, as each purge
//! batch does before it re-reads the holds: so a hold either lands before a batch looks (and
//! keeps the session) or after the batch committed (and finds the session purged, 409).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use schemas::db::entities::{legal_hold, retention_policy, session, session_purge};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, ModelTrait, QueryFilter,
    QueryOrder, Set,
};

use crate::audited::audited;

/// The longest policy name, in characters.
pub const NAME_MAX: usize = 64;
/// The most days a policy keeps content (a hundred years: beyond that, keep forever by having
/// no policy).
pub const KEEP_DAYS_MAX: i32 = 36_500;
/// The longest hold reason, in characters.
pub const REASON_MAX: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("a policy name is 1 to {NAME_MAX} letters, digits, '.', '_' or '-'")]
    Name,
    #[error(transparent)]
    Scope(#[from] bridge::ScopeError),
    #[error("keep_days is a whole number from 1 to {KEEP_DAYS_MAX}")]
    KeepDays,
    #[error("a reason is 1 to {REASON_MAX} characters, not all spaces, without control characters")]
    Reason,
    #[error("{0}")]
    Conflict(String),
    #[error("the database failed: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("the audit record could not be written: {0}")]
    Audit(#[from] bridge::AuditError),
}

pub fn valid_name(name: &str) -> bool {
    (1..=NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub fn valid_reason(reason: &str) -> bool {
    (1..=REASON_MAX).contains(&reason.chars().count())
        && reason.chars().any(|c| !c.is_whitespace())
        && !reason.chars().any(char::is_control)
}

fn check_keep_days(keep_days: i32) -> Result<(), RetentionError> {
    if (1..=KEEP_DAYS_MAX).contains(&keep_days) {
        Ok(())
    } else {
        Err(RetentionError::KeepDays)
    }
}

/// What the audit chain records of a policy.
fn recorded(row: &retention_policy::Model) -> serde_json::Value {
    serde_json::json!({ "scope": row.scope, "keep_days": row.keep_days })
}

/// Every policy, by name.
pub async fn policies(
    store: &store::Store,
) -> Result<Vec<retention_policy::Model>, RetentionError> {
    Ok(retention_policy::Entity::find()
        .order_by_asc(retention_policy::Column::Name)
        .all(store.connection())
        .await?)
}

async fn scope_taken<C: ConnectionTrait>(
    db: &C,
    scope: &str,
    other_than: Option<i64>,
) -> Result<bool, RetentionError> {
    let mut query =
        retention_policy::Entity::find().filter(retention_policy::Column::Scope.eq(scope));
    if let Some(id) = other_than {
        query = query.filter(retention_policy::Column::Id.ne(id));
    }
    Ok(query.one(db).await?.is_some())
}

/// Creates a policy, recorded as done by `actor`.
pub async fn create_policy(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    actor: &str,
    name: &str,
    scope: &str,
    keep_days: i32,
    now: DateTime<Utc>,
) -> Result<retention_policy::Model, RetentionError> {
    if !valid_name(name) {
        return Err(RetentionError::Name);
    }
    // Stored as it prints, so that one scope has one spelling.
    let scope = scope.parse::<bridge::Scope>()?.to_string();
    check_keep_days(keep_days)?;
    audited::<_, RetentionError>(store, audit, async |txn| {
        if retention_policy::Entity::find()
            .filter(retention_policy::Column::Name.eq(name))
            .one(txn)
            .await?
            .is_some()
        {
            return Err(RetentionError::Conflict(format!(
                "a policy is named {name} already"
            )));
        }
        if scope_taken(txn, &scope, None).await? {
            return Err(RetentionError::Conflict(format!(
                "a policy for {scope} exists already; change it instead"
            )));
        }
        let row = retention_policy::ActiveModel {
            name: Set(name.to_owned()),
            scope: Set(scope.clone()),
            keep_days: Set(keep_days),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        let entry = bridge::AuditEntry {
            actor: actor.to_owned(),
            action: "admin.retention.policy.created".to_owned(),
            session_id: None,
            detail: serde_json::json!({ "policy": name, "after": recorded(&row) }),
        };
        Ok((row, Some(entry)))
    })
    .await
}

/// Changes a policy's scope or days; `None` if there is no such policy. A change that changes
/// nothing records nothing.
pub async fn update_policy(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    actor: &str,
    name: &str,
    scope: Option<&str>,
    keep_days: Option<i32>,
    now: DateTime<Utc>,
) -> Result<Option<retention_policy::Model>, RetentionError> {
    let scope = scope
        .map(|scope| scope.parse::<bridge::Scope>().map(|s| s.to_string()))
        .transpose()?;
    if let Some(keep_days) = keep_days {
        check_keep_days(keep_days)?;
    }
    if !valid_name(name) {
        return Ok(None);
    }
    audited::<_, RetentionError>(store, audit, async |txn| {
        let Some(before) = retention_policy::Entity::find()
            .filter(retention_policy::Column::Name.eq(name))
            .one(txn)
            .await?
        else {
            return Ok((None, None));
        };
        let scope = scope.unwrap_or_else(|| before.scope.clone());
        let keep_days = keep_days.unwrap_or(before.keep_days);
        if scope == before.scope && keep_days == before.keep_days {
            return Ok((Some(before), None));
        }
        if scope_taken(txn, &scope, Some(before.id)).await? {
            return Err(RetentionError::Conflict(format!(
                "a policy for {scope} exists already"
            )));
        }
        let mut row: retention_policy::ActiveModel = before.clone().into();
        row.scope = Set(scope);
        row.keep_days = Set(keep_days);
        row.updated_at = Set(now);
        let after = row.update(txn).await?;
        let entry = bridge::AuditEntry {
            actor: actor.to_owned(),
            action: "admin.retention.policy.changed".to_owned(),
            session_id: None,
            detail: serde_json::json!({
                "policy": name,
                "before": recorded(&before),
                "after": recorded(&after),
            }),
        };
        Ok((Some(after), Some(entry)))
    })
    .await
}

/// Deletes a policy; false if there is no such policy.
pub async fn delete_policy(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    actor: &str,
    name: &str,
) -> Result<bool, RetentionError> {
    if !valid_name(name) {
        return Ok(false);
    }
    audited::<_, RetentionError>(store, audit, async |txn| {
        let Some(before) = retention_policy::Entity::find()
            .filter(retention_policy::Column::Name.eq(name))
            .one(txn)
            .await?
        else {
            return Ok((false, None));
        };
        let entry = bridge::AuditEntry {
            actor: actor.to_owned(),
            action: "admin.retention.policy.deleted".to_owned(),
            session_id: None,
            detail: serde_json::json!({ "policy": name, "before": recorded(&before) }),
        };
        before.delete(txn).await?;
        Ok((true, Some(entry)))
    })
    .await
}

/// Why a hold could not be placed or released.
pub enum HoldOutcome<T> {
    Done(T),
    NoSession,
    /// Placing: held already. Releasing: not held.
    Unchanged,
    /// Placing: its content was purged already.
    Purged,
}

/// Places a legal hold on a session, recorded with `actor` and `reason`.
pub async fn hold(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    actor: &str,
    session_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<HoldOutcome<legal_hold::Model>, RetentionError> {
    if !valid_reason(reason) {
        return Err(RetentionError::Reason);
    }
    if !crate::storable(session_id) {
        return Ok(HoldOutcome::NoSession);
    }
    audited::<_, RetentionError>(store, audit, async |txn| {
        if session::Entity::find_by_id(session_id)
            .one(txn)
            .await?
            .is_none()
        {
            return Ok((HoldOutcome::NoSession, None));
        }
        if legal_hold::Entity::find_by_id(session_id)
            .one(txn)
            .await?
            .is_some()
        {
            return Ok((HoldOutcome::Unchanged, None));
        }
        if session_purge::Entity::find_by_id(session_id)
            .one(txn)
            .await?
            .is_some()
        {
            return Ok((HoldOutcome::Purged, None));
        }
        let row = legal_hold::ActiveModel {
            session_id: Set(session_id.to_owned()),
            reason: Set(reason.to_owned()),
            held_by: Set(actor.to_owned()),
            held_at: Set(now),
        }
        .insert(txn)
        .await?;
        let entry = bridge::AuditEntry {
            actor: actor.to_owned(),
            action: "session.hold.placed".to_owned(),
            session_id: Some(session_id.to_owned()),
            detail: serde_json::json!({ "reason": reason }),
        };
        Ok((HoldOutcome::Done(row), Some(entry)))
    })
    .await
}

/// Releases a session's legal hold, recorded with `actor` and the hold that ends.
pub async fn release(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    actor: &str,
    session_id: &str,
) -> Result<HoldOutcome<legal_hold::Model>, RetentionError> {
    if !crate::storable(session_id) {
        return Ok(HoldOutcome::NoSession);
    }
    audited::<_, RetentionError>(store, audit, async |txn| {
        if session::Entity::find_by_id(session_id)
            .one(txn)
            .await?
            .is_none()
        {
            return Ok((HoldOutcome::NoSession, None));
        }
        let Some(held) = legal_hold::Entity::find_by_id(session_id).one(txn).await? else {
            return Ok((HoldOutcome::Unchanged, None));
        };
        let entry = bridge::AuditEntry {
            actor: actor.to_owned(),
            action: "session.hold.released".to_owned(),
            session_id: Some(session_id.to_owned()),
            detail: serde_json::json!({
                "reason": held.reason,
                "held_by": held.held_by,
                "held_at": held.held_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            }),
        };
        held.clone().delete(txn).await?;
        Ok((HoldOutcome::Done(held), Some(entry)))
    })
    .await
}

/// Which of `ids` are held and which purged: for lists and transcripts.
pub(crate) async fn marks<C: ConnectionTrait>(
    db: &C,
    ids: &[String],
) -> Result<(HashSet<String>, HashSet<String>), sea_orm::DbErr> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let held = legal_hold::Entity::find()
        .filter(legal_hold::Column::SessionId.is_in(ids.iter().map(String::as_str)))
        .all(db)
        .await?
        .into_iter()
        .map(|row| row.session_id)
        .collect();
    let purged = session_purge::Entity::find()
        .filter(session_purge::Column::SessionId.is_in(ids.iter().map(String::as_str)))
        .all(db)
        .await?
        .into_iter()
        .map(|row| row.session_id)
        .collect();
    Ok((held, purged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reasons_and_days_are_checked() {
        for (name, ok) in [
            ("default", true),
            ("team-appeals_2.0", true),
            ("", false),
            ("with space", false),
            ("ü", false),
            (&"x".repeat(NAME_MAX + 1) as &str, false),
        ] {
            assert_eq!(valid_name(name), ok, "{name:?}");
        }
        for (reason, ok) in [
            ("case 2026-CV-113", true),
            ("   ", false),
            ("", false),
            ("line\nbreak", false),
            (&"r".repeat(REASON_MAX + 1) as &str, false),
        ] {
            assert_eq!(valid_reason(reason), ok, "{reason:?}");
        }
        for (days, ok) in [
            (0, false),
            (1, true),
            (KEEP_DAYS_MAX, true),
            (KEEP_DAYS_MAX + 1, false),
            (-3, false),
        ] {
            assert_eq!(check_keep_days(days).is_ok(), ok, "{days}");
        }
    }
}
