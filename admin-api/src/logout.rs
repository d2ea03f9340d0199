//! `POST /v1/logout`: a member of staff ends the token they call it with. The token's id
//! (`jti`) is kept in the database with its expiry, in the same transaction as the audit entry
//! that records the sign-out; then the gateway is told ([`crate::Tokens::end`]), which refuses
//! the token from then on and ends the MQTT connections made with it, and so does this API.
//! The person's other tokens (another browser, another desk) go on working.
//!
//! The server loads the ended tokens that have not expired at start (`store::Store::ended_tokens`);
//! each sign-out deletes the rows of tokens that have expired since, which nobody could use
//! any more, so the table holds only what still matters.
//!
//! Limited per sender by construction: a sign-out needs a valid token that has not been ended,
//! and each one ends it, so signing out again takes a new sign-in, which its own limits slow.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use schemas::db::entities::{ended_token, oidc_session};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};

use crate::audited::audited;
use crate::auth::Caller;
use crate::{AdminState, Problem};

/// Why a sign-out was not stored.
#[derive(Debug, thiserror::Error)]
enum LogoutError {
    #[error("the database failed: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("the audit record could not be written: {0}")]
    Audit(#[from] bridge::AuditError),
}

impl From<LogoutError> for Problem {
    fn from(error: LogoutError) -> Self {
        match error {
            LogoutError::Database(ref db) => crate::database_problem(db),
            LogoutError::Audit(err) => {
                tracing::error!(error = %err, "a sign-out could not be audited");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the audit record cannot be written",
                )
            }
        }
    }
}

/// Ends the token this request is made with.
#[utoipa::path(
    post,
    path = "/v1/logout",
    tag = "sign-in",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "the token is ended: this API and the gateway refuse it from now on, and the MQTT connections made with it were ended; the person's other tokens still work"),
        (status = 400, description = "the token carries no id (not from /v1/login), so it cannot be ended alone", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "no token, or one that is invalid, expired or already ended", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the database or the audit record is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logout(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
) -> Result<StatusCode, Problem> {
    let Some(token_id) = caller.token_id.clone() else {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "token-without-id",
            "this token cannot be ended alone",
        )
        .detail(
            "it carries no id (jti): only tokens from POST /v1/login can be; an admin can \
             revoke all of a person's tokens by disabling them",
        ));
    };
    let now = SystemTime::now();
    let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let expires_at = caller.token_expires_at;
    audited::<_, LogoutError>(&state.store, &state.audit, async |txn| {
        ended_token::Entity::delete_many()
            .filter(ended_token::Column::ExpiresAt.lt(to_i64(now_secs)))
            .exec(txn)
            .await?;
        // Two sign-outs racing with the same token both get here: the second changes nothing.
        ended_token::Entity::insert(ended_token::ActiveModel {
            token_id: Set(token_id.clone()),
            subject: Set(caller.username.clone()),
            expires_at: Set(to_i64(expires_at)),
            ended_at: Set(now.into()),
        })
        .on_conflict(
            OnConflict::column(ended_token::Column::TokenId)
                .do_nothing()
                .to_owned(),
        )
        .try_insert()
        .exec(txn)
        .await?;
        // A sign-in through the identity provider is checked there no more.
        oidc_session::Entity::delete_by_id(token_id.as_str())
            .exec(txn)
            .await?;
        let entry = bridge::AuditEntry {
            actor: caller.username.clone(),
            action: "admin.logout".to_owned(),
            session_id: None,
            detail: serde_json::json!({
                "token": token_id,
                "address": peer.ip().to_string(),
            }),
        };
        Ok(((), Some(entry)))
    })
    .await?;
    // Stored first: a restart from here on still refuses the token.
    state.tokens.end(&caller.username, &token_id, expires_at);
    tracing::info!(username = %caller.username, "signed out");
    Ok(StatusCode::NO_CONTENT)
}

fn to_i64(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}
