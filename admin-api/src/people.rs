//! Help-desk staff: creating a member of staff (the first admin from the command line; more
//! through the API as it lands). Each change is recorded on the audit chain in the same
//! transaction as the row it changes.

use schemas::db::entities::agent::{self, StaffRole};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set, TransactionTrait};

use crate::password::{self, PasswordError};

/// A member of staff to create.
pub struct NewStaff {
    /// The sign-in name, also the subject of their tokens and their MQTT client id.
    pub username: String,
    pub display_name: String,
    pub role: StaffRole,
    pub team: Option<String>,
    pub password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PeopleError {
    #[error(
        "a username is 1 to 64 characters: letters, digits, '.', '_', '-' and '@' (it names MQTT topics)"
    )]
    Username,
    #[error("a display name is 1 to 128 characters")]
    DisplayName,
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("there is already a member of staff called {0}")]
    Exists(String),
    #[error("the database failed: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("the audit record could not be written: {0}")]
    Audit(#[from] bridge::AuditError),
}

/// Whether `username` may name a member of staff: it becomes a token subject, an MQTT client
/// id and a topic level, so it is kept to characters none of those treat specially.
pub fn valid_username(username: &str) -> bool {
    (1..=64).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// Creates a member of staff, with `actor` (who did it) on the audit chain.
pub async fn add_staff(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    actor: &str,
    new: NewStaff,
) -> Result<agent::Model, PeopleError> {
    if !valid_username(&new.username) {
        return Err(PeopleError::Username);
    }
    let display_name = new.display_name.trim().to_owned();
    if !(1..=128).contains(&display_name.chars().count()) {
        return Err(PeopleError::DisplayName);
    }
    let password = new.password;
    let hash = tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|_| PasswordError::Hash("the hashing task failed".to_owned()))??;

    let txn = store.connection().begin().await?;
    let existing = agent::Entity::find()
        .filter(agent::Column::Subject.eq(&new.username))
        .one(&txn)
        .await?;
    if existing.is_some() {
        return Err(PeopleError::Exists(new.username));
    }
    let mut chain = audit.batch(&txn).await?;
    let created = agent::ActiveModel {
        subject: Set(new.username.clone()),
        display_name: Set(display_name),
        role: Set(new.role),
        team: Set(new.team),
        active: Set(true),
        created_at: Set(chrono::Utc::now()),
        password_hash: Set(Some(hash)),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    chain.append(bridge::AuditEntry {
        actor: actor.to_owned(),
        action: "admin.staff.created".to_owned(),
        session_id: None,
        detail: serde_json::json!({
            "username": created.subject,
            "after": {
                "display_name": created.display_name,
                "role": role_name(created.role),
                "team": created.team,
                "capacity": created.capacity,
                "active": created.active,
            },
        }),
    })?;
    chain.flush(&txn).await?;
    txn.commit().await?;
    audit.settle(&chain, true);
    drop(chain);
    Ok(created)
}

pub fn role_name(role: StaffRole) -> &'static str {
    match role {
        StaffRole::Agent => "agent",
        StaffRole::Supervisor => "supervisor",
        StaffRole::Admin => "admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_kept_to_safe_characters() {
        for good in ["ann", "ann.lee", "a_b-c@court", &"x".repeat(64)] {
            assert!(valid_username(good), "{good}");
        }
        for bad in [
            "",
            "a/b",
            "a+b",
            "a#b",
            "ann lee",
            "ännchen",
            &"x".repeat(65),
        ] {
            assert!(!valid_username(bad), "{bad}");
        }
    }
}
