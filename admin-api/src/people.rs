//! Help-desk staff: creating a member of staff (the first admin from the command line; more
//! through the API as it lands). Each change is recorded on the audit chain in the same
//! transaction as the row it changes.

use schemas::db::entities::agent::{self, StaffRole};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};

use crate::audited::audited;
use crate::password::{self, PasswordError};
use crate::staff_role;

/// A member of staff to create.
pub struct NewStaff {
    /// The sign-in name, also the subject of their tokens and their MQTT client id.
    pub username: String,
    pub display_name: String,
    pub role: StaffRole,
    pub team: Option<String>,
    /// Sessions at once; the default (3) when absent.
    pub capacity: Option<i32>,
    pub password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PeopleError {
    #[error(
        "a username is 1 to 64 characters: letters, digits, '.', '_', '-' and '@' (it names MQTT topics)"
    )]
    Username,
    #[error(
        "a display name is 1 to 128 characters, not all spaces, without control, bidirectional or invisible characters"
    )]
    DisplayName,
    #[error(
        "a team name is 1 to 64 characters, not all spaces, without control, bidirectional or invisible characters"
    )]
    Team,
    #[error("a capacity is 1 to 100 sessions")]
    Capacity,
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(
        "there is already a member of staff called {0} (usernames differing only by case are one)"
    )]
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

/// A display name: 1 to 128 characters, not only whitespace, of the characters every stored
/// name may hold (`schemas::wire::check_name_characters`: no control, bidirectional or
/// invisible characters, which would make it display as something it is not). The schema's
/// pattern says the same.
pub fn valid_display_name(name: &str) -> bool {
    valid_name(name, 128)
}

/// A team name: 1 to 64 characters, by the same rule as display names.
pub fn valid_team(team: &str) -> bool {
    valid_name(team, 64)
}

fn valid_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.chars().count())
        && name.chars().any(|c| !c.is_whitespace())
        && schemas::wire::check_name_characters("name", name).is_ok()
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
    let display_name = new.display_name;
    if !valid_display_name(&display_name) {
        return Err(PeopleError::DisplayName);
    }
    if new.team.as_deref().is_some_and(|team| !valid_team(team)) {
        return Err(PeopleError::Team);
    }
    if let Some(capacity) = new.capacity
        && !(1..=100).contains(&capacity)
    {
        return Err(PeopleError::Capacity);
    }
    let password = new.password;
    let hash = tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|_| PasswordError::Hash("the hashing task failed".to_owned()))??;

    // The chain's turn comes first, before anything is read: a read inside a transaction that
    // has not yet written sees a snapshot which a concurrent append (a denial, a chat message)
    // makes stale, and the write that follows then fails instead of waiting its turn.
    audited::<_, PeopleError>(store, audit, async |txn| {
        if let Some(taken) = staff_named(txn, &new.username).await? {
            return Err(PeopleError::Exists(taken.subject));
        }
        let created = agent::ActiveModel {
            subject: Set(new.username.clone()),
            display_name: Set(display_name),
            role: Set(new.role),
            team: Set(new.team),
            active: Set(true),
            created_at: Set(chrono::Utc::now()),
            password_hash: Set(Some(hash)),
            capacity: new.capacity.map_or(sea_orm::ActiveValue::NotSet, Set),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        let entry = bridge::AuditEntry {
            actor: actor.to_owned(),
            action: "admin.staff.created".to_owned(),
            session_id: None,
            detail: serde_json::json!({
                "username": created.subject,
                "after": recorded(&created),
            }),
        };
        Ok((created, Some(entry)))
    })
    .await
}

/// The member of staff whose username is `username` regardless of case: usernames differing
/// only by case name one account (a unique index on the lowercase name holds it too).
pub(crate) async fn staff_named<C: sea_orm::ConnectionTrait>(
    db: &C,
    username: &str,
) -> Result<Option<agent::Model>, sea_orm::DbErr> {
    use sea_orm::sea_query::{Expr, ExprTrait, Func};
    agent::Entity::find()
        .filter(
            Expr::expr(Func::lower(Expr::col(agent::Column::Subject)))
                .eq(username.to_ascii_lowercase()),
        )
        .one(db)
        .await
}

/// Ends a member of staff's live connections and refuses their tokens issued before a time:
/// the gateway's revocations, which the serving process passes in.
pub trait Gate: Send + Sync {
    fn revoke(&self, username: &str, not_before: u64);
}

/// Changes to a member of staff; absent fields stay as they are.
#[derive(Default)]
pub struct StaffChanges {
    pub display_name: Option<String>,
    pub role: Option<StaffRole>,
    /// `Some(None)` clears the team.
    pub team: Option<Option<String>>,
    pub capacity: Option<i32>,
    pub active: Option<bool>,
    pub password: Option<String>,
}

/// Whether going from `before` to `after` takes away what the person's tokens allow: disabling,
/// a lower role, or a new password. Their tokens are then revoked.
pub fn revokes(before: &agent::Model, after: &agent::Model, password_changed: bool) -> bool {
    (before.active && !after.active)
        || staff_role::rank(after.role) < staff_role::rank(before.role)
        || password_changed
}

/// What the audit chain records of a member of staff (never the password hash).
pub fn recorded(account: &agent::Model) -> serde_json::Value {
    serde_json::json!({
        "display_name": account.display_name,
        "role": staff_role::name(account.role),
        "team": account.team,
        "capacity": account.capacity,
        "active": account.active,
    })
}

/// Applies `changes` to `username`, recording before and after on the audit chain in the same
/// transaction, and, if they take rights away ([`revokes`]), refuses the person's older tokens
/// from the next second on and ends their live connections. `None` if there is no such person.
pub async fn update_staff(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    gate: &dyn Gate,
    actor: &str,
    username: &str,
    changes: StaffChanges,
) -> Result<Option<agent::Model>, PeopleError> {
    if changes
        .display_name
        .as_deref()
        .is_some_and(|name| !valid_display_name(name))
    {
        return Err(PeopleError::DisplayName);
    }
    if let Some(Some(team)) = &changes.team
        && !valid_team(team)
    {
        return Err(PeopleError::Team);
    }
    if let Some(capacity) = changes.capacity
        && !(1..=100).contains(&capacity)
    {
        return Err(PeopleError::Capacity);
    }
    let hash = match changes.password {
        Some(password) => Some(
            tokio::task::spawn_blocking(move || password::hash(&password))
                .await
                .map_err(|_| PasswordError::Hash("the hashing task failed".to_owned()))??,
        ),
        None => None,
    };

    // The chain's turn before the first read (see `add_staff`).
    let changed = audited::<_, PeopleError>(store, audit, async |txn| {
        let Some(before) = agent::Entity::find()
            .filter(agent::Column::Subject.eq(username))
            .one(txn)
            .await?
        else {
            return Ok((None, None));
        };
        let mut row: agent::ActiveModel = before.clone().into();
        if let Some(name) = changes.display_name {
            row.display_name = Set(name);
        }
        if let Some(role) = changes.role {
            row.role = Set(role);
        }
        if let Some(team) = changes.team {
            row.team = Set(team);
        }
        if let Some(capacity) = changes.capacity {
            row.capacity = Set(capacity);
        }
        if let Some(active) = changes.active {
            row.active = Set(active);
        }
        let password_changed = hash.is_some();
        if let Some(hash) = hash {
            row.password_hash = Set(Some(hash));
        }
        // Tokens issued in this very second are refused too: `iat` has whole seconds.
        let not_before = unix_now() + 1;
        let mut after_guess = before.clone();
        apply_preview(&mut after_guess, &row);
        let revoke = revokes(&before, &after_guess, password_changed);
        if revoke {
            row.tokens_not_before = Set(not_before as i64);
        }
        let after = row.update(txn).await?;
        let entry = bridge::AuditEntry {
            actor: actor.to_owned(),
            action: "admin.staff.updated".to_owned(),
            session_id: None,
            detail: serde_json::json!({
                "username": username,
                "before": recorded(&before),
                "after": recorded(&after),
                "password_changed": password_changed,
                "tokens_revoked": revoke,
            }),
        };
        Ok((Some((after, revoke.then_some(not_before))), Some(entry)))
    })
    .await?;
    let Some((after, revoked)) = changed else {
        return Ok(None);
    };
    if let Some(not_before) = revoked {
        gate.revoke(username, not_before);
    }
    Ok(Some(after))
}

/// The values `row` sets, over `model`: what the row will be once updated.
fn apply_preview(model: &mut agent::Model, row: &agent::ActiveModel) {
    if let sea_orm::ActiveValue::Set(role) = &row.role {
        model.role = *role;
    }
    if let sea_orm::ActiveValue::Set(active) = &row.active {
        model.active = *active;
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Filters of a list of staff.
#[derive(Default)]
pub struct StaffFilter {
    pub role: Option<StaffRole>,
    pub team: Option<String>,
    pub active: Option<bool>,
}

/// Up to `limit` members of staff matching `filter`, in creation order, after the one with id
/// `after` (a cursor).
pub async fn list_staff(
    store: &store::Store,
    filter: StaffFilter,
    after: i64,
    limit: u64,
) -> Result<Vec<agent::Model>, PeopleError> {
    use sea_orm::{QueryOrder, QuerySelect};
    let mut query = agent::Entity::find().filter(agent::Column::Id.gt(after));
    if let Some(role) = filter.role {
        query = query.filter(agent::Column::Role.eq(role));
    }
    if let Some(team) = filter.team {
        query = query.filter(agent::Column::Team.eq(team));
    }
    if let Some(active) = filter.active {
        query = query.filter(agent::Column::Active.eq(active));
    }
    Ok(query
        .order_by_asc(agent::Column::Id)
        .limit(limit)
        .all(store.connection())
        .await?)
}

/// One member of staff by username.
pub async fn find_staff(
    store: &store::Store,
    username: &str,
) -> Result<Option<agent::Model>, PeopleError> {
    Ok(agent::Entity::find()
        .filter(agent::Column::Subject.eq(username))
        .one(store.connection())
        .await?)
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

    #[test]
    fn names_follow_the_one_rule_for_stored_names() {
        // (name, a valid display name, a valid team)
        let rows: &[(&str, bool, bool)] = &[
            ("Ann Lee-Smith", true, true),
            (" Ann ", true, true),
            ("Zoë Åström 李", true, true),
            ("family 👨\u{200D}👩", true, true),
            ("", false, false),
            ("   ", false, false),
            ("\u{3000}", false, false),
            ("Ann\0", false, false),
            ("Ann\nLee", false, false),
            ("Ann\tLee", false, false),
            ("Ann\u{85}", false, false),
            ("Ann\u{202E}eeL", false, false),
            ("An\u{2066}n", false, false),
            ("A\u{200B}nn", false, false),
            ("Ann\u{FEFF}", false, false),
            (&"x".repeat(64), true, true),
            (&"x".repeat(65), true, false),
            (&"é".repeat(128), true, false),
            (&"x".repeat(129), false, false),
        ];
        for (name, display, team) in rows {
            assert_eq!(valid_display_name(name), *display, "display name {name:?}");
            assert_eq!(valid_team(name), *team, "team {name:?}");
        }
    }
}
