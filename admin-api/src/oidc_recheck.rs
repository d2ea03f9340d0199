//! Leavers lose the desk within minutes: every `admin.oidc.recheck_secs` the server asks the
//! identity provider again about each sign-in made through it that has not expired, by using
//! its refresh token. The provider answers only while the person still has an account and a
//! session there; when it refuses (`invalid_grant`: disabled, deleted, signed out at the
//! provider), or its new ID token no longer gives a courtchat role (removed from the help desk's
//! groups), every courtchat token of the person is revoked (as disabling them here revokes
//! them: refused by the API and the gateway, their MQTT connections ended) and the sign-ins are
//! forgotten, with an `admin.oidc.revoked` entry on the record. A provider that cannot be
//! reached changes nothing: the check is made again next time, and no token outlives
//! `admin.oidc.max_session_secs` anyway.
//!
//! A sign-in without a refresh token (a provider that gives none for the scopes asked) cannot
//! be checked again; it lasts until its token expires.

use std::sync::{Arc, Weak};
use std::time::Duration;

use schemas::db::entities::{agent, oidc_session};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::audited::audited;
use crate::oidc_signin::OidcSignIn;
use crate::{AdminState, oidc_claims, people};

/// Starts the checks, when sign-in through a provider is configured with them. They stop once
/// the API's state is dropped.
pub(crate) fn spawn(state: &AdminState) {
    let Some(signin) = state.oidc.as_ref() else {
        return;
    };
    let every = signin.config.recheck_secs;
    if every == 0 {
        return;
    }
    let weak = Arc::downgrade(signin);
    let (store, audit, gate) = (state.store.clone(), state.audit.clone(), state.gate.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(signin) = Weak::upgrade(&weak) else {
                return;
            };
            if let Err(err) = check_all(&signin, &store, &audit, gate.as_ref()).await {
                tracing::warn!(error = %err, "the sign-ins through the identity provider could not be checked");
            }
        }
    });
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Checks every live sign-in with a refresh token that was not checked within the interval.
async fn check_all(
    signin: &OidcSignIn,
    store: &store::Store,
    audit: &bridge::AuditTrail,
    gate: &dyn people::Gate,
) -> Result<(), sea_orm::DbErr> {
    let now = unix_now();
    let now_i64 = i64::try_from(now).unwrap_or(i64::MAX);
    oidc_session::Entity::delete_many()
        .filter(oidc_session::Column::ExpiresAt.lte(now_i64))
        .exec(store.connection())
        .await?;
    let due = chrono::Utc::now()
        - chrono::Duration::seconds(i64::try_from(signin.config.recheck_secs).unwrap_or(0))
        + chrono::Duration::seconds(1);
    let rows = oidc_session::Entity::find()
        .filter(oidc_session::Column::RefreshToken.is_not_null())
        .filter(oidc_session::Column::CheckedAt.lt(due))
        .all(store.connection())
        .await?;
    for row in rows {
        let Some(refresh_token) = row.refresh_token.clone() else {
            continue;
        };
        let verdict = match signin.provider.refresh(&refresh_token).await {
            Ok(tokens) => match tokens.id_token {
                Some(id_token) => match signin.provider.verify(&id_token, None, unix_now()).await {
                    Ok(claims) => match oidc_claims::map(&claims, &signin.config) {
                        Ok(_) => Ok(tokens.refresh_token),
                        Err(why) => Err(why.to_string()),
                    },
                    Err(why) => {
                        tracing::warn!(error = %why, "a refreshed ID token was refused");
                        Ok(tokens.refresh_token)
                    }
                },
                None => Ok(tokens.refresh_token),
            },
            Err(oidc::OidcError::Refused { error, description }) if error == "invalid_grant" => {
                Err(format!(
                    "the identity provider no longer signs them in ({})",
                    description.unwrap_or(error)
                ))
            }
            Err(other) => {
                tracing::warn!(error = %other, username = %row.subject, "a sign-in could not be checked at the identity provider");
                continue;
            }
        };
        match verdict {
            Ok(rotated) => {
                oidc_session::Entity::update_many()
                    .col_expr(
                        oidc_session::Column::RefreshToken,
                        Expr::value(rotated.or(Some(refresh_token))),
                    )
                    .col_expr(
                        oidc_session::Column::CheckedAt,
                        Expr::value(chrono::Utc::now()),
                    )
                    .filter(oidc_session::Column::TokenId.eq(&row.token_id))
                    .exec(store.connection())
                    .await?;
            }
            Err(reason) => {
                if let Err(err) = revoke(store, audit, gate, &row, &reason).await {
                    tracing::error!(error = %err, username = %row.subject, "a leaver's tokens could not be revoked");
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum RevokeError {
    #[error("the database failed: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("the audit record could not be written: {0}")]
    Audit(#[from] bridge::AuditError),
}

/// Revokes every token of `row`'s person and forgets their sign-ins, on the record.
async fn revoke(
    store: &store::Store,
    audit: &bridge::AuditTrail,
    gate: &dyn people::Gate,
    row: &oidc_session::Model,
    reason: &str,
) -> Result<(), RevokeError> {
    // Tokens issued in this very second are refused too: `iat` has whole seconds.
    let not_before = unix_now() + 1;
    audited::<_, RevokeError>(store, audit, async |txn| {
        agent::Entity::update_many()
            .col_expr(
                agent::Column::TokensNotBefore,
                Expr::value(i64::try_from(not_before).unwrap_or(i64::MAX)),
            )
            .filter(agent::Column::Subject.eq(&row.subject))
            .filter(
                agent::Column::TokensNotBefore.lt(i64::try_from(not_before).unwrap_or(i64::MAX)),
            )
            .exec(txn)
            .await?;
        oidc_session::Entity::delete_many()
            .filter(oidc_session::Column::Subject.eq(&row.subject))
            .exec(txn)
            .await?;
        let entry = bridge::AuditEntry {
            actor: crate::oidc_accounts::ACTOR.to_owned(),
            action: "admin.oidc.revoked".to_owned(),
            session_id: None,
            detail: serde_json::json!({
                "username": row.subject,
                "token": row.token_id,
                "provider_subject": row.provider_subject,
                "reason": reason,
            }),
        };
        Ok(((), Some(entry)))
    })
    .await?;
    gate.revoke(&row.subject, not_before);
    tracing::info!(username = %row.subject, %reason, "a sign-in through the identity provider was revoked");
    Ok(())
}
