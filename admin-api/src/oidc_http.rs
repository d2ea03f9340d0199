//! Staff sign-in through the court's identity provider (`[admin.oidc]`), three routes:
//!
//! 1. `GET /v1/oidc/login` (the desk's "Sign in with your court account"): a new sign-in, with
//!    state, nonce and a PKCE verifier kept here and a cookie binding it to this browser; the
//!    browser is sent to the provider.
//! 2. `GET /v1/oidc/callback`: the provider sends the browser back with a code. The state and
//!    the cookie must match a sign-in under way; the code is exchanged (with the verifier), the
//!    ID token checked (signature against the provider's keys, issuer, audience, expiry, nonce),
//!    its claims mapped to a member of staff (`oidc_claims`, `oidc_accounts`), and a courtchat
//!    token issued as `POST /v1/login` issues one: the same JWT the gateway and the API take,
//!    with an id that `POST /v1/logout` ends, recorded as `admin.login` with `"method": "oidc"`.
//!    The browser goes to `/desk/#signin=<one-time code>`. Every refusal is a page (`oidc_page`)
//!    and, once the provider has answered, an `admin.login.failed` entry.
//! 3. `POST /v1/oidc/session`: the desk exchanges the one-time code for the token (and, where
//!    the provider offers it, the URL that ends the provider's session too at sign-out).
//!
//! Each is limited per client address (`admin.oidc.attempts_per_address`), on top of every
//! route's per-sender limit.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemas::db::entities::oidc_session;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::ApiJson;
use crate::oidc_accounts::{self, Resolved};
use crate::oidc_page::Page;
use crate::oidc_signin::{OidcSignIn, PENDING_FOR, digest};
use crate::{AdminState, Problem, applicant_tokens, oidc_claims};

/// The cookie that binds a sign-in to the browser that started it.
const COOKIE: &str = "courtchat_oidc";
/// The longest query a callback may carry (codes are opaque but short).
const MAX_QUERY: usize = 8192;

fn off() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "oidc-off",
        "sign-in with an identity provider is not configured",
    )
}

fn unreachable(error: &oidc::OidcError) -> Problem {
    tracing::warn!(%error, "the identity provider failed");
    Problem::new(
        StatusCode::BAD_GATEWAY,
        "provider-unavailable",
        "the court's sign-in service cannot be reached",
    )
    .detail("try again in a moment; if it goes on, tell the court's IT service")
}

fn too_many(wait: Duration) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "too many sign-in attempts",
    )
    .detail("wait before trying again")
    .retry_after(wait)
}

/// The configured sign-in, after this address's allowance.
fn configured(state: &AdminState, peer: SocketAddr) -> Result<&OidcSignIn, Problem> {
    let signin = state.oidc.as_deref().ok_or_else(off)?;
    signin.attempts.take(&peer.ip()).map_err(too_many)?;
    Ok(signin)
}

/// Where the provider returns: the configured URL, or this server as the request reached it.
fn redirect_uri(signin: &OidcSignIn, headers: &HeaderMap) -> Result<String, Problem> {
    if !signin.config.redirect_url.is_empty() {
        return Ok(signin.config.redirect_url.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .filter(|host| {
            (1..=255).contains(&host.len())
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .ok_or_else(|| Problem::invalid("the request has no usable Host").field("Host"))?;
    Ok(format!("http://{host}/v1/oidc/callback"))
}

/// Starts a sign-in at the identity provider.
#[utoipa::path(
    get,
    path = "/v1/oidc/login",
    operation_id = "oidc_login",
    tag = "sign-in",
    responses(
        (status = 303, description = "to the identity provider; sets a cookie binding the sign-in to this browser"),
        (status = 400, description = "the request has no usable Host (set admin.oidc.redirect_url)", body = String, content_type = "text/html"),
        (status = 404, description = "no identity provider is configured", body = String, content_type = "text/html"),
        (status = 502, description = "the identity provider cannot be reached", body = String, content_type = "text/html"),
        (status = 503, description = "too many sign-ins under way", body = String, content_type = "text/html"),
    )
)]
pub async fn login(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, Page> {
    let signin = configured(&state, peer)?;
    let redirect_uri = redirect_uri(signin, &headers)?;
    let authorization = signin
        .provider
        .authorize(&redirect_uri)
        .await
        .map_err(|err| unreachable(&err))?;
    let browser = oidc::random_token().map_err(|_| Problem::internal())?;
    let secure = if redirect_uri.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={browser}; Path=/v1/oidc; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        PENDING_FOR.as_secs()
    );
    signin
        .started(
            authorization.state,
            authorization.nonce,
            authorization.verifier,
            redirect_uri,
            digest(&browser),
        )
        .map_err(|_| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many sign-ins under way",
            )
            .retry_after(Duration::from_secs(10))
        })?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    let location = HeaderValue::from_str(&authorization.url).map_err(|_| Problem::internal())?;
    headers.insert(header::LOCATION, location);
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| Problem::internal())?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// What the provider sends back (RFC 6749 §4.1.2; others, such as `iss`, are ignored).
#[derive(Deserialize)]
struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn refused(kind: &str, title: &'static str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, kind, title).detail(detail)
}

fn stale() -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "sign-in-expired",
        "this sign-in has expired or was already used",
    )
    .detail("start again from the desk")
}

/// Finishes a sign-in: the identity provider sends the browser back here.
#[utoipa::path(
    get,
    path = "/v1/oidc/callback",
    operation_id = "oidc_callback",
    tag = "sign-in",
    params(
        ("state" = Option<String>, Query, description = "the sign-in's state"),
        ("code" = Option<String>, Query, description = "the authorization code"),
        ("error" = Option<String>, Query, description = "the provider's refusal"),
    ),
    responses(
        (status = 303, description = "signed in: to /desk/#signin=<one-time code>"),
        (status = 400, description = "no such sign-in under way (expired, used, or from another browser)", body = String, content_type = "text/html"),
        (status = 401, description = "the provider refused, or its ID token failed a check (audience, expiry, signature, nonce)", body = String, content_type = "text/html"),
        (status = 403, description = "the person has no courtchat account, no courtchat role, or is disabled in courtchat", body = String, content_type = "text/html"),
        (status = 404, description = "no identity provider is configured", body = String, content_type = "text/html"),
        (status = 502, description = "the identity provider cannot be reached", body = String, content_type = "text/html"),
        (status = 503, description = "the database or the audit record is unavailable", body = String, content_type = "text/html"),
    )
)]
pub async fn callback(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Page> {
    let signin = configured(&state, peer)?;
    let query = query.unwrap_or_default();
    if query.len() > MAX_QUERY {
        return Err(Problem::invalid("the query is too long").into());
    }
    let callback: Callback = serde_urlencoded::from_str(&query)
        .map_err(|err| Problem::invalid(format!("the query: {err}")))?;
    let pending = callback
        .state
        .as_deref()
        .and_then(|key| signin.returned(key))
        .ok_or_else(stale)?;
    if cookie(&headers).map(digest).as_deref() != Some(pending.browser.as_str()) {
        return Err(stale().into());
    }
    let address = peer.ip().to_string();
    let failed = async |actor: &str, reason: String, problem: Problem| -> Page {
        let detail = serde_json::json!({ "address": address, "method": "oidc", "reason": reason });
        match state.record(actor, "admin.login.failed", detail).await {
            Ok(()) => problem.into(),
            Err(unrecorded) => unrecorded.into(),
        }
    };
    let unnamed = "unknown:oidc";
    if let Some(error) = callback.error {
        let said = oidc::OidcError::Refused {
            error,
            description: callback.error_description,
        };
        let problem = refused(
            "provider-refused",
            "the court's sign-in service did not sign you in",
            said.to_string(),
        );
        return Err(failed(unnamed, said.to_string(), problem).await);
    }
    let code = callback
        .code
        .filter(|code| (1..=2048).contains(&code.len()))
        .ok_or_else(|| Problem::invalid("the provider sent no code").field("code"))?;

    let tokens = match signin
        .provider
        .exchange(&code, &pending.verifier, &pending.redirect_uri)
        .await
    {
        Ok(tokens) => tokens,
        Err(refusal @ oidc::OidcError::Refused { .. }) => {
            let problem = refused(
                "provider-refused",
                "the court's sign-in service did not sign you in",
                refusal.to_string(),
            );
            return Err(failed(unnamed, refusal.to_string(), problem).await);
        }
        Err(other) => return Err(unreachable(&other).into()),
    };
    let id_token = tokens
        .id_token
        .ok_or_else(|| unreachable(&oidc::OidcError::Unreachable("no ID token".to_owned())))?;
    let now = SystemTime::now();
    let now_secs = applicant_tokens::seconds(now);
    let claims = match signin
        .provider
        .verify(&id_token, Some(&pending.nonce), now_secs)
        .await
    {
        Ok(claims) => claims,
        Err(oidc::OidcError::IdToken(why)) => {
            tracing::warn!(error = %why, "an ID token was refused");
            let problem = refused(
                "id-token-refused",
                "the sign-in could not be verified",
                format!("the ID token from the court's sign-in service was refused: {why}"),
            );
            return Err(failed(unnamed, why.to_string(), problem).await);
        }
        Err(other) => return Err(unreachable(&other).into()),
    };
    let mapped = match oidc_claims::map(&claims, &signin.config) {
        Ok(mapped) => mapped,
        Err(why) => {
            let problem = Problem::new(
                StatusCode::FORBIDDEN,
                "no-courtchat-role",
                "your court account gives no access to the help desk",
            )
            .detail(format!("{why}; ask a courtchat administrator"));
            return Err(failed(unnamed, why.to_string(), problem).await);
        }
    };
    let resolved = oidc_accounts::resolve(
        &state.store,
        &state.audit,
        state.gate.as_ref(),
        &mapped,
        &claims.subject,
        signin.config.create_unknown,
    )
    .await
    .map_err(|err| {
        tracing::error!(error = %err, "a sign-in's account could not be resolved");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database or the audit record is unavailable",
        )
    })?;
    let account = match resolved {
        Resolved::Account(account) => account,
        Resolved::Unknown => {
            let problem = Problem::new(
                StatusCode::FORBIDDEN,
                "no-courtchat-account",
                "you have no account on the help desk",
            )
            .detail(format!(
                "the court's sign-in service knows you as {}, but courtchat does not; ask a \
                 courtchat administrator to add you",
                mapped.username
            ));
            return Err(failed(&mapped.username, "no account".to_owned(), problem).await);
        }
        Resolved::Disabled => {
            let problem = Problem::new(
                StatusCode::FORBIDDEN,
                "account-disabled",
                "your help-desk account is disabled",
            )
            .detail("ask a courtchat administrator");
            return Err(failed(&mapped.username, "disabled".to_owned(), problem).await);
        }
        Resolved::OtherPerson => {
            let problem = Problem::new(
                StatusCode::FORBIDDEN,
                "identity-mismatch",
                "this help-desk account belongs to someone else",
            )
            .detail(format!(
                "the help-desk account {} was first signed in to by another person at the                  court's sign-in service; ask a courtchat administrator",
                mapped.username
            ));
            return Err(failed(&mapped.username, "another person".to_owned(), problem).await);
        }
    };

    // A courtchat token as POST /v1/login issues one, for at most the configured session.
    let ttl = state
        .login
        .token_ttl
        .min(Duration::from_secs(signin.config.max_session_secs));
    let token_id = crate::tokens::new_token_id().map_err(|_| Problem::internal())?;
    let token = state
        .tokens
        .mint(&account.subject, account.role, &token_id, ttl, now)
        .map_err(|err| {
            tracing::error!(error = %err, "a token could not be minted");
            Problem::internal()
        })?;
    let expires_secs = now_secs + ttl.as_secs();
    let session = oidc_session::Model {
        token_id: token_id.clone(),
        subject: account.subject.clone(),
        provider_subject: claims.subject.chars().take(255).collect(),
        provider_session: claims.session_id.map(|sid| sid.chars().take(255).collect()),
        refresh_token: tokens.refresh_token,
        expires_at: i64::try_from(expires_secs).unwrap_or(i64::MAX),
        checked_at: now.into(),
    };
    let entry = bridge::AuditEntry {
        actor: account.subject.clone(),
        action: "admin.login".to_owned(),
        session_id: None,
        detail: serde_json::json!({
            "address": address,
            "token": token_id,
            "method": "oidc",
            "issuer": signin.config.issuer,
            "provider_subject": session.provider_subject,
        }),
    };
    oidc_accounts::record_sign_in(&state.store, &state.audit, session, entry)
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "a sign-in could not be recorded");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database or the audit record is unavailable",
            )
        })?;
    let end_session_url = if signin.config.end_provider_session {
        let back = pending
            .redirect_uri
            .trim_end_matches("/v1/oidc/callback")
            .to_owned()
            + "/desk/";
        signin
            .provider
            .end_session_url(&id_token, &back)
            .await
            .unwrap_or(None)
    } else {
        None
    };
    let code = signin
        .hand_off(
            token,
            applicant_tokens::rfc3339(expires_secs),
            account.subject,
            end_session_url,
        )
        .map_err(|_| Problem::internal())?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    let location =
        HeaderValue::from_str(&format!("/desk/#signin={code}")).map_err(|_| Problem::internal())?;
    headers.insert(header::LOCATION, location);
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "courtchat_oidc=; Path=/v1/oidc; HttpOnly; SameSite=Lax; Max-Age=0",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffRequest {
    /// The one-time code from `/desk/#signin=…`.
    #[schema(min_length = 1, max_length = 64)]
    pub code: String,
}

#[derive(Serialize, ToSchema)]
pub struct OidcSession {
    /// A JWT, as `/v1/login` answers: `Authorization: Bearer` and the desk's MQTT password.
    pub token: String,
    /// When it stops working (RFC 3339).
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The member of staff, as courtchat knows them.
    pub username: String,
    /// Where to send the browser after `POST /v1/logout` to end the provider's session too;
    /// absent when the provider offers none or it is not wanted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_session_url: Option<String>,
}

/// Collects a finished sign-in: the desk's one-time code for the token.
#[utoipa::path(
    post,
    path = "/v1/oidc/session",
    operation_id = "oidc_session",
    tag = "sign-in",
    request_body = HandoffRequest,
    responses(
        (status = 200, description = "the token of the finished sign-in", body = OidcSession),
        (status = 400, description = "malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "no finished sign-in has this code (expired after a minute, or collected)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no identity provider is configured", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn session(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<HandoffRequest>,
) -> Result<Json<OidcSession>, Problem> {
    let signin = configured(&state, peer)?;
    if !(1..=64).contains(&request.code.len()) {
        return Err(Problem::invalid_field("code", "must be 1 to 64 characters"));
    }
    let handoff = signin.collect(&request.code).ok_or_else(|| {
        refused(
            "handoff-unknown",
            "no finished sign-in has this code",
            "it expired after a minute or was collected already; sign in again",
        )
    })?;
    Ok(Json(OidcSession {
        token: handoff.token,
        expires_at: handoff.expires_at,
        username: handoff.username,
        end_session_url: handoff.end_session_url,
    }))
}
