//! The member of staff a sign-in through the identity provider is for: found by username
//! (regardless of case, as password sign-in finds them), created at first sign-in only when
//! `admin.oidc.create_unknown` says so, and kept in step with the provider's groups (a changed
//! role or team is changed here, audited like an admin's change, and a lower role revokes the
//! person's older tokens as it would then). A sign-in, its provider session and its audit entry
//! are stored in one transaction.
//!
//! An account is bound to the person the provider signed in the first time (the ID token's
//! `sub`, in `staff_identities`): a directory that later gives the username to someone else
//! (Entra reuses them) cannot sign the new person into the old account, and one person at the
//! provider is never two members of staff.

use schemas::db::entities::{agent, oidc_session, staff_identity};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};

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
    /// The account is bound to another person at the provider, or this person to another
    /// account.
    OtherPerson,
}

/// Finds (or creates) the member of staff `mapped` names, and brings their role and team in
/// line with the provider's.
pub async fn resolve(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    gate: &dyn Gate,
    mapped: &Mapped,
    provider_subject: &str,
    create_unknown: bool,
) -> Result<Resolved, PeopleError> {
    let found = people::staff_named(store.connection(), &mapped.username).await?;
    let account = match found {
        Some(account) if !account.active => return Ok(Resolved::Disabled),
        Some(account) => account,
        None if !create_unknown => return Ok(Resolved::Unknown),
        None => match create(store, audit, mapped).await {
            Ok(account) => {
                if !bound(store, audit, &account.subject, provider_subject).await? {
                    return Ok(Resolved::OtherPerson);
                }
                return Ok(Resolved::Account(account));
            }
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
    // Before anything about the account changes on the provider's word.
    if !bound(store, audit, &account.subject, provider_subject).await? {
        return Ok(Resolved::OtherPerson);
    }
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

/// Whether the member of staff `subject` is the provider's `provider_subject`: bound to them
/// at their first sign-in through the provider (audited), and compared afterwards.
async fn bound(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    subject: &str,
    provider_subject: &str,
) -> Result<bool, PeopleError> {
    let db = store.connection();
    if let Some(identity) = staff_identity::Entity::find_by_id(subject).one(db).await? {
        return Ok(identity.provider_subject == provider_subject);
    }
    let taken = staff_identity::Entity::find()
        .filter(staff_identity::Column::ProviderSubject.eq(provider_subject))
        .one(db)
        .await?;
    if taken.is_some() {
        return Ok(false);
    }
    let bind = audited::<_, PeopleError>(store, audit, async |txn| {
        staff_identity::ActiveModel {
            subject: Set(subject.to_owned()),
            provider_subject: Set(provider_subject.to_owned()),
            bound_at: Set(chrono::Utc::now()),
        }
        .insert(txn)
        .await?;
        let entry = bridge::AuditEntry {
            actor: ACTOR.to_owned(),
            action: "admin.staff.identity_bound".to_owned(),
            session_id: None,
            detail: serde_json::json!({ "username": subject, "provider_subject": provider_subject }),
        };
        Ok(((), Some(entry)))
    })
    .await;
    match bind {
        Ok(()) => Ok(true),
        // Two first sign-ins at once: whichever bound first decides.
        Err(PeopleError::Database(_)) => Ok(staff_identity::Entity::find_by_id(subject)
            .one(db)
            .await?
            .is_some_and(|identity| identity.provider_subject == provider_subject)),
        Err(other) => Err(other),
    }
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
