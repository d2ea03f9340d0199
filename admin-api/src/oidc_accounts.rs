//! The member of staff a sign-in through the identity provider is for: found by username
//! (regardless of case, as password sign-in finds them), created at first sign-in only when
//! `admin.oidc.create_unknown` says so, and kept in step with the provider's groups (a changed
//! role or team is changed here, audited like an admin's change, and a lower role revokes the
//! person's older tokens as it would then). A sign-in, its provider session and its audit entry
//! are stored in one transaction.

use schemas::db::entities::{agent, oidc_session};
use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};

use crate::audited::audited;
use crate::oidc_claims::Mapped;
use crate::people::{self, Gate, PeopleError, StaffChanges};

/// The actor the record names for changes the provider's claims make.
pub const ACTOR: &str = "oidc";

/// Who a sign-in is for.
pub enum Resolved {
    /// An active member of staff, with the role and team the provider's groups give.
    Account(agent::Model),
    /// Nobody courtchat knows, and none is created.
    Unknown,
    /// A member of staff courtchat has disabled.
    Disabled,
}

/// Finds (or creates) the member of staff `mapped` names, and brings their role and team in
/// line with the provider's.
pub async fn resolve(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    gate: &dyn Gate,
    mapped: &Mapped,
    create_unknown: bool,
) -> Result<Resolved, PeopleError> {
    let found = people::staff_named(store.connection(), &mapped.username).await?;
    let account = match found {
        Some(account) if !account.active => return Ok(Resolved::Disabled),
        Some(account) => account,
        None if !create_unknown => return Ok(Resolved::Unknown),
        None => match create(store, audit, mapped).await {
            Ok(account) => return Ok(Resolved::Account(account)),
            // Two first sign-ins at once: the other created it.
            Err(PeopleError::Exists(_)) => {
                match people::staff_named(store.connection(), &mapped.username).await? {
                    Some(account) if account.active => account,
                    Some(_) => return Ok(Resolved::Disabled),
                    None => return Ok(Resolved::Unknown),
                }
            }
            Err(other) => return Err(other),
        },
    };
    if account.role == mapped.role && account.team == mapped.team {
        return Ok(Resolved::Account(account));
    }
    let changes = StaffChanges {
        role: Some(mapped.role),
        team: Some(mapped.team.clone()),
        ..StaffChanges::default()
    };
    Ok(
        match people::update_staff(store, audit, gate, ACTOR, &account.subject, changes).await? {
            Some(updated) if updated.active => Resolved::Account(updated),
            Some(_) => Resolved::Disabled,
            None => Resolved::Unknown,
        },
    )
}

/// Creates the account of a first sign-in: no password (they sign in at the provider).
async fn create(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    mapped: &Mapped,
) -> Result<agent::Model, PeopleError> {
    if mapped
        .team
        .as_deref()
        .is_some_and(|team| !people::valid_team(team))
    {
        return Err(PeopleError::Team);
    }
    audited::<_, PeopleError>(store, audit, async |txn| {
        if let Some(taken) = people::staff_named(txn, &mapped.username).await? {
            return Err(PeopleError::Exists(taken.subject));
        }
        let created = agent::ActiveModel {
            subject: Set(mapped.username.clone()),
            display_name: Set(mapped.display_name.clone()),
            role: Set(mapped.role),
            team: Set(mapped.team.clone()),
            active: Set(true),
            created_at: Set(chrono::Utc::now()),
            password_hash: Set(None),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        let entry = bridge::AuditEntry {
            actor: ACTOR.to_owned(),
            action: "admin.staff.created".to_owned(),
            session_id: None,
            detail: serde_json::json!({
                "username": created.subject,
                "after": people::recorded(&created),
                "first_sign_in": true,
            }),
        };
        Ok((created, Some(entry)))
    })
    .await
}

/// Stores a sign-in's provider session with its audit entry (`admin.login`), at once.
pub async fn record_sign_in(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    session: oidc_session::Model,
    entry: bridge::AuditEntry,
) -> Result<(), PeopleError> {
    audited::<_, PeopleError>(store, audit, async |txn| {
        oidc_session::Entity::insert(session.into_active_model())
            .exec_without_returning(txn)
            .await?;
        Ok(((), Some(entry)))
    })
    .await
}
