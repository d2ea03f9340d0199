//! Applicant grants, stored: what an applicant subject was issued and its latest token
//! (`schemas::db::entities::applicant_grant`). A grant is written with the audit entry of the
//! token that starts it, and moved on to each renewed token with that renewal's entry, each in
//! one transaction (`audited`), so the record and the grants never disagree.
//!
//! A renewal moves the grant only if it still names the token presented (a compare-and-set on
//! `token_id`): of two renewals racing with the same token one wins, and a token that was
//! renewed once can never be renewed again, so one token starts at most one chain.

use chrono::{DateTime, Utc};
use schemas::db::entities::{applicant_grant, kiosk, session};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
};

use crate::audited::audited;

/// Why a grant could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("the database failed: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("the audit record could not be written: {0}")]
    Audit(#[from] bridge::AuditError),
}

impl From<GrantError> for crate::Problem {
    fn from(error: GrantError) -> Self {
        match error {
            GrantError::Database(ref db) => crate::database_problem(db),
            GrantError::Audit(ref audit) => crate::audit_problem(audit),
        }
    }
}

/// Records a first token: its grant (deleting grants whose tokens have all expired, which no
/// one can renew any more), the kiosk's last use if a kiosk asked, and `entry`, at once.
pub async fn record_issue(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    kiosk: Option<kiosk::Model>,
    grant: applicant_grant::Model,
    entry: bridge::AuditEntry,
    now: DateTime<Utc>,
) -> Result<(), GrantError> {
    audited::<_, GrantError>(store, audit, async |txn| {
        applicant_grant::Entity::delete_many()
            .filter(applicant_grant::Column::ExpiresAt.lt(now.timestamp()))
            .exec(txn)
            .await?;
        if let Some(row) = kiosk {
            let mut active = row.into_active_model();
            active.last_used_at = Set(Some(now));
            active.update(txn).await?;
        }
        applicant_grant::Entity::insert(grant.into_active_model())
            .exec_without_returning(txn)
            .await?;
        Ok(((), Some(entry)))
    })
    .await
}

/// The grant of `subject`, if it has one.
pub async fn find(
    store: &store::Store,
    subject: &str,
) -> Result<Option<applicant_grant::Model>, sea_orm::DbErr> {
    applicant_grant::Entity::find_by_id(subject)
        .one(store.connection())
        .await
}

/// The session `subject` has open (the newest, if several): the one its renewed token goes on
/// serving, which the renewal's audit entry names.
pub async fn open_session(
    store: &store::Store,
    subject: &str,
) -> Result<Option<String>, sea_orm::DbErr> {
    Ok(session::Entity::find()
        .filter(session::Column::Applicant.eq(subject))
        .filter(session::Column::Status.ne(session::SessionStatus::Closed))
        .order_by_desc(session::Column::CreatedAt)
        .one(store.connection())
        .await?
        .map(|row| row.id))
}

/// A renewal to store: the grant moves from `previous` to the token `token_id` expiring at
/// `expires_at` (Unix seconds).
pub struct Renewal<'a> {
    pub subject: &'a str,
    pub previous: &'a str,
    pub token_id: &'a str,
    pub expires_at: i64,
    pub now: DateTime<Utc>,
}

/// Moves the grant to the renewed token and records `entry`, if the grant still names the
/// token presented; `false` (and nothing recorded) when another renewal took it first.
pub async fn record_renewal(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    renewal: Renewal<'_>,
    entry: bridge::AuditEntry,
) -> Result<bool, GrantError> {
    audited::<_, GrantError>(store, audit, async |txn| {
        let moved = applicant_grant::Entity::update_many()
            .col_expr(
                applicant_grant::Column::TokenId,
                Expr::value(renewal.token_id),
            )
            .col_expr(
                applicant_grant::Column::ExpiresAt,
                Expr::value(renewal.expires_at),
            )
            .col_expr(
                applicant_grant::Column::RenewedAt,
                Expr::value(Some(renewal.now)),
            )
            .col_expr(
                applicant_grant::Column::Renewals,
                Expr::col(applicant_grant::Column::Renewals).add(1),
            )
            .filter(applicant_grant::Column::Subject.eq(renewal.subject))
            .filter(applicant_grant::Column::TokenId.eq(renewal.previous))
            .exec(txn)
            .await?
            .rows_affected
            == 1;
        Ok((moved, moved.then_some(entry)))
    })
    .await
}
