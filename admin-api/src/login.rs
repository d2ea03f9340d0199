//! `POST /v1/login`: a member of staff exchanges a username and password for a token that
//! authorizes the HTTP API and is the password of their MQTT connection.
//!
//! Every attempt passes the sign-in limits first (`throttle`: per address, per account and
//! address, per account except from its known addresses); a failure (unknown account, disabled
//! account, wrong password: one answer for all three, so that the API does not tell which
//! accounts exist) is recorded on the audit chain with the address it came from, and so is a
//! success. A name that is no account is not recorded as typed (people type passwords into the
//! name field): the record keeps a keyed digest of it ([`crate::Tokens::pseudonym`]), so that
//! repeated attempts with one name can be told apart from attempts with many, and its length.
//!
//! Each token issued carries a fresh id (`jti`), which the success's audit entry names and
//! `POST /v1/logout` ends.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use schemas::db::entities::agent;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::ApiJson;
use crate::{AdminState, Problem, password};

/// The longest username accepted (the subject column's length).
const MAX_USERNAME: usize = 128;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(min_length = 1, max_length = 128, example = "ann")]
    pub username: String,
    #[schema(min_length = 1, max_length = 1024, format = Password)]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// A JWT: `Authorization: Bearer` for this API, and the MQTT password of the dashboard.
    pub token: String,
    /// When the token stops working (RFC 3339).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// Signs a member of staff in.
#[utoipa::path(
    post,
    path = "/v1/login",
    tag = "sign-in",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "signed in", body = LoginResponse),
        (status = 400, description = "malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unknown account, disabled account or wrong password", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "password sign-in is turned off (admin.password_sign_in)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the database is unreachable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn login(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, Problem> {
    if !state.login.password {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "password-sign-in-off",
            "sign-in with a password is turned off",
        )
        .detail("sign in with the court's account (/v1/oidc/login)"));
    }
    // Taken as given: a name with spaces around it names no account, and is refused as one.
    let username = request.username;
    if username.is_empty() || username.chars().count() > MAX_USERNAME {
        return Err(Problem::invalid(format!(
            "username must be 1 to {MAX_USERNAME} characters"
        )));
    }
    if request.password.is_empty() || request.password.chars().count() > password::MAX_LENGTH {
        return Err(Problem::invalid(format!(
            "password must be 1 to {} characters",
            password::MAX_LENGTH
        )));
    }
    if let Err(wait) = state.login.throttle.attempt(&username, peer.ip()) {
        tracing::warn!(address = %peer.ip(), "sign-in attempts over the limit");
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "too many sign-in attempts",
        )
        .detail("wait before trying again")
        .retry_after(wait));
    }

    let account = if crate::storable(&username) {
        agent::Entity::find()
            .filter(agent::Column::Subject.eq(&username))
            .one(state.store.connection())
            .await
            .map_err(|err| crate::database_problem(&err))?
    } else {
        None
    };
    let stored = account
        .as_ref()
        .filter(|account| account.active)
        .and_then(|account| account.password_hash.clone());
    // Hashing takes tens of milliseconds of CPU: off the request threads. An unknown account
    // is compared against a decoy, so that it takes as long as a wrong password.
    let attempt = request.password;
    let matches = tokio::task::spawn_blocking(move || match stored {
        Some(stored) => password::verify(&stored, &attempt),
        None => {
            let _ = password::verify(password::decoy(), &attempt);
            false
        }
    })
    .await
    .unwrap_or(false);

    let account = match account {
        Some(account) if matches => account,
        known_or_not => {
            let (actor, detail) = match known_or_not {
                Some(account) => (
                    account.subject,
                    serde_json::json!({ "address": peer.ip().to_string() }),
                ),
                None => unknown_name(state.tokens.as_ref(), &username, peer),
            };
            state.record(&actor, "admin.login.failed", detail).await?;
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "sign-in failed",
            )
            .detail("unknown account, disabled account or wrong password"));
        }
    };
    let ttl = state.login.token_ttl;
    let now = SystemTime::now();
    let minted = crate::tokens::new_token_id()
        .map_err(|_| "the system random generator failed".to_owned())
        .and_then(|id| {
            let token = state
                .tokens
                .mint(&account.subject, account.role, &id, ttl, now)?;
            Ok((id, token))
        });
    let (token_id, token) = minted.map_err(|err| {
        tracing::error!(error = %err, "a token could not be minted");
        Problem::internal()
    })?;
    state
        .record(
            &account.subject,
            "admin.login",
            serde_json::json!({ "address": peer.ip().to_string(), "token": token_id }),
        )
        .await?;
    // The account's owner signs in from here: strangers elsewhere no longer hold it up here.
    state.login.throttle.succeeded(&username, peer.ip());
    Ok(Json(LoginResponse {
        token,
        expires_at: rfc3339(now + ttl),
    }))
}

/// How the record names a sign-in attempt at a name that is no account: not as typed (it may
/// be a password typed into the wrong field) but as `unknown:` and a keyed digest of it, with
/// its length in the detail.
fn unknown_name(
    tokens: &dyn crate::Tokens,
    username: &str,
    peer: SocketAddr,
) -> (String, serde_json::Value) {
    let pseudonym = tokens.pseudonym(username);
    (
        format!("unknown:{pseudonym}"),
        serde_json::json!({
            "address": peer.ip().to_string(),
            "username": { "digest": pseudonym, "length": username.chars().count() },
        }),
    )
}

fn rfc3339(at: SystemTime) -> String {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    chrono::DateTime::<chrono::Utc>::from_timestamp(seconds as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
