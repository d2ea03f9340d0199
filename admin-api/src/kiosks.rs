//! Kiosks: enrolling one (a row and a credential shown once), listing, revoking, and checking
//! a presented credential. Enrolment and revocation are recorded on the audit chain in the same
//! transaction as the row they change; a credential's use with the grant of the token it
//! obtained (`applicant_grants`).

use chrono::{DateTime, Utc};
use schemas::db::entities::kiosk;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use crate::audited::audited;
use crate::kiosk_credential::{self, Issued, Presented, RandomError};

/// A kiosk to enrol.
pub struct NewKiosk {
    pub name: String,
    pub team: Option<String>,
}

/// The longest team a kiosk may name, in characters: it travels as the open request's `topic`,
/// which the pipeline takes up to 128 bytes, and 32 characters of any script fit in that.
pub const TEAM_MAX: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KioskError {
    #[error(
        "a kiosk name is 1 to 128 characters, not all spaces, without control, bidirectional or invisible characters"
    )]
    Name,
    #[error(
        "a team is 1 to {TEAM_MAX} characters, without control, bidirectional or invisible characters"
    )]
    Team,
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("the database failed: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("the audit record could not be written: {0}")]
    Audit(#[from] bridge::AuditError),
}

/// A team a kiosk may send its applicants to: a staff team name that an open request's `topic`
/// also accepts.
pub fn valid_team(team: &str) -> bool {
    team.chars().count() <= TEAM_MAX
        && crate::people::valid_team(team)
        && schemas::wire::check_name("topic", team).is_ok()
}

/// What the audit chain records of a kiosk (never its credential or the credential's hash).
pub fn recorded(row: &kiosk::Model) -> serde_json::Value {
    serde_json::json!({
        "name": row.name,
        "team": row.team,
        "revoked": row.revoked_at.is_some(),
    })
}

/// Enrols a kiosk, with `actor` (the admin) on the audit chain. Returns the row and its
/// credential, which is not kept anywhere: this is the only time it is seen.
pub async fn enrol(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    actor: &str,
    new: NewKiosk,
    now: DateTime<Utc>,
) -> Result<(kiosk::Model, String), KioskError> {
    if !crate::people::valid_display_name(&new.name) {
        return Err(KioskError::Name);
    }
    if new.team.as_deref().is_some_and(|team| !valid_team(team)) {
        return Err(KioskError::Team);
    }
    let issued = Issued::random()?;
    let Issued {
        kiosk_id,
        credential,
        hash,
    } = issued;
    let row = audited::<_, KioskError>(store, audit, async |txn| {
        let row = kiosk::ActiveModel {
            id: Set(kiosk_id),
            name: Set(new.name),
            team: Set(new.team),
            credential_hash: Set(hash),
            created_at: Set(now),
            created_by: Set(actor.to_owned()),
            revoked_at: Set(None),
            last_used_at: Set(None),
        }
        .insert(txn)
        .await?;
        let entry = bridge::AuditEntry {
            actor: actor.to_owned(),
            action: "admin.kiosk.enrolled".to_owned(),
            session_id: None,
            detail: serde_json::json!({ "kiosk": row.id, "after": recorded(&row) }),
        };
        Ok((row, Some(entry)))
    })
    .await?;
    Ok((row, credential))
}

/// Revokes a kiosk: its credential is refused from now on (tokens it already obtained run out
/// within their short lifetime). Revoking a revoked kiosk changes nothing and records nothing.
/// `None` if there is no such kiosk.
pub async fn revoke(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    actor: &str,
    kiosk_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<kiosk::Model>, KioskError> {
    if !kiosk_credential::valid_kiosk_id(kiosk_id) {
        return Ok(None);
    }
    audited::<_, KioskError>(store, audit, async |txn| {
        let Some(before) = kiosk::Entity::find_by_id(kiosk_id).one(txn).await? else {
            return Ok((None, None));
        };
        if before.revoked_at.is_some() {
            return Ok((Some(before), None));
        }
        let mut row: kiosk::ActiveModel = before.clone().into();
        row.revoked_at = Set(Some(now));
        let after = row.update(txn).await?;
        let entry = bridge::AuditEntry {
            actor: actor.to_owned(),
            action: "admin.kiosk.revoked".to_owned(),
            session_id: None,
            detail: serde_json::json!({
                "kiosk": kiosk_id,
                "before": recorded(&before),
                "after": recorded(&after),
            }),
        };
        Ok((Some(after), Some(entry)))
    })
    .await
}

/// One kiosk by id.
pub async fn find(
    store: &store::Store,
    kiosk_id: &str,
) -> Result<Option<kiosk::Model>, KioskError> {
    if !kiosk_credential::valid_kiosk_id(kiosk_id) {
        return Ok(None);
    }
    Ok(kiosk::Entity::find_by_id(kiosk_id)
        .one(store.connection())
        .await?)
}

/// Up to `limit` kiosks in enrolment order, after the first `skip`; only revoked ones or only
/// active ones if `revoked` says so.
pub async fn list(
    store: &store::Store,
    revoked: Option<bool>,
    skip: u64,
    limit: u64,
) -> Result<Vec<kiosk::Model>, KioskError> {
    let mut query = kiosk::Entity::find();
    match revoked {
        Some(true) => query = query.filter(kiosk::Column::RevokedAt.is_not_null()),
        Some(false) => query = query.filter(kiosk::Column::RevokedAt.is_null()),
        None => {}
    }
    Ok(query
        .order_by_asc(kiosk::Column::CreatedAt)
        .order_by_asc(kiosk::Column::Id)
        .offset(skip)
        .limit(limit)
        .all(store.connection())
        .await?)
}

/// What a presented credential turned out to be.
#[derive(Debug)]
pub enum Presentation {
    /// An enrolled, unrevoked kiosk whose secret matches.
    Valid(kiosk::Model),
    /// The kiosk exists but is revoked.
    Revoked(kiosk::Model),
    /// No such kiosk, or the secret is not its secret.
    Unknown,
}

/// The pure part of checking a credential: `row` is the kiosk its id names, if any.
pub fn judge(presented: &Presented<'_>, row: Option<kiosk::Model>) -> Presentation {
    match row {
        Some(row) if presented.matches(&row.credential_hash) => {
            if row.revoked_at.is_some() {
                Presentation::Revoked(row)
            } else {
                Presentation::Valid(row)
            }
        }
        _ => Presentation::Unknown,
    }
}

/// Looks up the kiosk a credential names and judges it.
pub async fn present(
    store: &store::Store,
    presented: &Presented<'_>,
) -> Result<Presentation, KioskError> {
    let row = kiosk::Entity::find_by_id(presented.kiosk_id)
        .one(store.connection())
        .await?;
    Ok(judge(presented, row))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(issued: &Issued, revoked: bool) -> kiosk::Model {
        kiosk::Model {
            id: issued.kiosk_id.clone(),
            name: "Hall B".to_owned(),
            team: None,
            credential_hash: issued.hash.clone(),
            created_at: Utc::now(),
            created_by: "ann".to_owned(),
            revoked_at: revoked.then(Utc::now),
            last_used_at: None,
        }
    }

    #[test]
    fn a_credential_is_valid_only_for_its_unrevoked_kiosk() {
        let issued = Issued::from_bytes([1; 8], [2; 32]);
        let other = Issued::from_bytes([1; 8], [3; 32]);
        let presented = kiosk_credential::parse(&issued.credential).unwrap();
        assert!(matches!(
            judge(&presented, Some(row(&issued, false))),
            Presentation::Valid(_)
        ));
        assert!(matches!(
            judge(&presented, Some(row(&issued, true))),
            Presentation::Revoked(_)
        ));
        assert!(matches!(
            judge(&presented, Some(row(&other, false))),
            Presentation::Unknown
        ));
        assert!(matches!(
            judge(&presented, Some(row(&other, true))),
            Presentation::Unknown
        ));
        assert!(matches!(judge(&presented, None), Presentation::Unknown));
    }

    #[test]
    fn teams_are_what_an_open_request_takes() {
        assert!(valid_team("licensing"));
        assert!(valid_team("front desk"));
        assert!(valid_team(&"ü".repeat(TEAM_MAX)));
        for bad in [
            "",
            "a\u{7}",
            "left\u{202E}right",
            "zero\u{200B}width",
            &"x".repeat(TEAM_MAX + 1),
        ] {
            assert!(!valid_team(bad), "{bad:?}");
        }
    }
}
