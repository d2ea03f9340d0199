//! courtchat's HTTP API: health and readiness, staff sign-in, people, kiosks and the applicant
//! tokens they obtain, sessions (lists, transcripts, the queue, assign, transfer, close, legal
//! holds), the audit chain, statistics, retention policies, `/metrics`, and the browser pages
//! (the agent desk and the applicant page).
//!
//! [`router`] builds the routes over an [`AdminState`]; [`serve`] runs them on an already-bound
//! listener until a shutdown future resolves. Every error is answered as RFC 9457 problem
//! details (`application/problem+json`) with a stable `type`; the OpenAPI 3.1 document is at
//! `/v1/openapi.json`.

mod applicant_grants;
mod applicant_renewal;
mod applicant_throttle;
mod applicant_tokens;
mod audit_http;
mod audited;
mod auth;
mod enrolment_check;
mod extract;
mod filters;
mod kiosk_credential;
mod kiosks;
mod kiosks_http;
mod listener;
mod login;
mod logout;
pub mod metrics;
mod oidc_accounts;
mod oidc_claims;
mod oidc_config;
mod oidc_http;
mod oidc_page;
mod oidc_recheck;
mod oidc_signin;
mod openapi;
mod page;
pub mod password;
pub mod people;
mod people_http;
mod pipeline;
mod problem;
mod queue_http;
mod retention;
mod retention_http;
mod sender_limits;
mod session_actions_http;
mod sessions_http;
mod staff_role;
mod stats;
mod stats_http;
mod stats_load;
mod stats_record;
mod stats_utilization;
mod throttle;
mod tokens;
mod transcript_horizon;
pub mod web;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use applicant_tokens::ApplicantSettings;
pub use listener::serve;
pub use oidc_config::{GroupRole, GroupTeam, OidcConfig, TokenEndpointAuth};
pub use oidc_signin::OidcSignIn;
pub use openapi::ApiDoc;
pub use problem::Problem;
pub use throttle::LoginThrottle;
pub use tokens::{Tokens, Verified};

/// The `[admin]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
    /// How long a token issued at sign-in stays valid, in seconds.
    pub token_ttl_secs: u64,
    /// Sign-in attempts allowed at one account per minute from all of its unknown addresses
    /// together (a burst of as many); see `throttle`.
    pub login_attempts_per_account: NonZeroU32,
    /// Sign-in attempts allowed per client address per minute, whatever the account.
    pub login_attempts_per_address: NonZeroU32,
    /// Sign-in attempts allowed at one account from one client address per minute.
    pub login_attempts_per_account_and_address: NonZeroU32,
    /// Days an address an account signed in from stays known to it (exempt from
    /// `login_attempts_per_account`).
    pub login_known_address_days: NonZeroU32,
    /// How long an applicant token (`POST /v1/applicant-tokens`) stays valid, in seconds; the
    /// gateway ends the applicant's connection when it expires.
    pub applicant_token_ttl_secs: u64,
    /// Whether a request without a kiosk credential (the public phone page) gets an applicant
    /// token; `false` issues them to enrolled kiosks only.
    pub public_applicant_tokens: bool,
    /// Applicant tokens per client address per minute without a kiosk credential (refused
    /// credentials count too).
    pub applicant_tokens_per_address: NonZeroU32,
    /// Applicant tokens per kiosk per minute.
    pub applicant_tokens_per_kiosk: NonZeroU32,
    /// Renewals of one applicant subject's token per minute (`POST
    /// /v1/applicant-tokens/renew`; a page renews once in a token's lifetime, more only to
    /// retry).
    pub applicant_renewals_per_subject: NonZeroU32,
    /// How long after an applicant's first token its tokens may still be renewed, in seconds:
    /// the longest a conversation can last; no renewed token outlives it. 0: never renewed.
    pub applicant_renewable_secs: u64,
    /// Seconds without input (a key, a touch, a click) after which a kiosk with an open
    /// conversation or a draft on screen asks "Are you still there?" (a finished one is cleared
    /// after `kiosk_reset_secs`).
    pub kiosk_idle_secs: u64,
    /// Seconds the kiosk's question waits for an answer before it clears everything (screen,
    /// storage, connection) for the next person.
    pub kiosk_idle_warning_secs: u64,
    /// The URL browsers use for MQTT over WebSocket (`wss://chat.example.org/mqtt` behind a
    /// proxy); unset: the page's own host with the WebSocket listener's port and path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_websocket_url: Option<String>,
    /// Seconds the kiosk page keeps a finished conversation on screen before it clears
    /// itself for the next person.
    pub kiosk_reset_secs: u64,
    /// Requests per minute (a burst of as many) from one signed-in caller, by their token's
    /// subject; every route counts. Beyond them: 429 with Retry-After.
    pub requests_per_subject: NonZeroU32,
    /// Requests per minute from one client address (an IPv6 /64) without a valid token.
    pub requests_per_address: NonZeroU32,
    /// Seconds a request's head (and a JSON body) may take to arrive; a kept-alive connection
    /// idle for as long is closed too.
    pub request_read_timeout_secs: u64,
    /// Connections served at once; one beyond them is answered 503 and closed.
    pub max_connections: usize,
    /// Whether staff may sign in with a courtchat password (`POST /v1/login`); `false` leaves
    /// only the identity provider (`[admin.oidc]`).
    pub password_sign_in: bool,
    /// Sign-in with the court's identity provider (OpenID Connect); off unless configured.
    pub oidc: OidcConfig,
}

// Loopback by default: health probes usually run on the same host or through a port mapping
// the operator configures.
impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token_ttl_secs: 8 * 3600,
            login_attempts_per_account: NonZeroU32::new(20).expect("nonzero"),
            login_attempts_per_address: NonZeroU32::new(30).expect("nonzero"),
            login_attempts_per_account_and_address: NonZeroU32::new(5).expect("nonzero"),
            login_known_address_days: NonZeroU32::new(30).expect("nonzero"),
            applicant_token_ttl_secs: 3600,
            public_applicant_tokens: true,
            applicant_tokens_per_address: applicant_tokens::DEFAULT_PER_ADDRESS,
            applicant_tokens_per_kiosk: applicant_tokens::DEFAULT_PER_KIOSK,
            applicant_renewals_per_subject: NonZeroU32::new(4).expect("nonzero"),
            applicant_renewable_secs: 12 * 3600,
            kiosk_idle_secs: 120,
            kiosk_idle_warning_secs: 30,
            mqtt_websocket_url: None,
            kiosk_reset_secs: 120,
            requests_per_subject: NonZeroU32::new(600).expect("nonzero"),
            requests_per_address: NonZeroU32::new(600).expect("nonzero"),
            request_read_timeout_secs: 10,
            max_connections: 1024,
            password_sign_in: true,
            oidc: OidcConfig::default(),
        }
    }
}

impl AdminConfig {
    /// The longest `request_read_timeout_secs`.
    pub const READ_TIMEOUT_MAX_SECS: u64 = 3600;
    /// The most `max_connections` (far beyond what one process's descriptors allow).
    pub const MAX_CONNECTIONS_MAX: usize = 1 << 20;
}

/// What the handlers need; cloned per request.
#[derive(Clone)]
pub struct AdminState {
    pub store: store::Store,
    /// Whether the chat pipeline is receiving submissions; `None` when it runs elsewhere.
    pub pipeline_ready: Option<tokio::sync::watch::Receiver<bool>>,
    /// The audit chain: sign-ins and every administrative action are recorded on it.
    pub audit: Arc<bridge::AuditTrail>,
    /// The server's token keys.
    pub tokens: Arc<dyn Tokens>,
    pub login: Arc<LoginSettings>,
    pub applicants: Arc<ApplicantSettings>,
    /// The gateway's revocations: disabling or demoting someone ends their connections.
    pub gate: Arc<dyn people::Gate>,
    /// What the browser pages are told about the server.
    pub web: Arc<web::WebSettings>,
    /// The server's metrics, served at `/metrics`; none: 404 there.
    pub metrics: Option<Arc<telemetry::Metrics>>,
    /// The chat pipeline, when it runs in this process: assignments, transfers, closing and
    /// availability go through it. `None` when it runs as its own process.
    pub commands: Option<bridge::Commands>,
    /// How the listener and every route bound their senders.
    pub http: Arc<HttpSettings>,
    /// Sign-in through the court's identity provider, when configured.
    pub oidc: Option<Arc<OidcSignIn>>,
}

/// The bounds of the listener and of every route: requests per sender, the time a request may
/// take to arrive, connections at once.
pub struct HttpSettings {
    pub(crate) senders: sender_limits::SenderLimits,
    pub(crate) read_timeout: Duration,
    pub(crate) max_connections: usize,
}

impl HttpSettings {
    pub fn new(config: &AdminConfig) -> Self {
        Self {
            senders: sender_limits::SenderLimits::new(
                config.requests_per_subject,
                config.requests_per_address,
            ),
            read_timeout: Duration::from_secs(config.request_read_timeout_secs.max(1)),
            max_connections: config.max_connections.max(1),
        }
    }
}

/// How sign-in behaves.
pub struct LoginSettings {
    pub throttle: LoginThrottle,
    pub token_ttl: Duration,
    /// Whether `POST /v1/login` signs anyone in (`admin.password_sign_in`).
    pub password: bool,
}

impl LoginSettings {
    pub fn new(config: &AdminConfig) -> Self {
        Self {
            throttle: LoginThrottle::new(throttle::LoginLimits {
                per_address: config.login_attempts_per_address,
                per_account_and_address: config.login_attempts_per_account_and_address,
                per_account: config.login_attempts_per_account,
                known_address_for: Duration::from_secs(
                    u64::from(config.login_known_address_days.get()) * 86_400,
                ),
            }),
            token_ttl: Duration::from_secs(config.token_ttl_secs),
            password: config.password_sign_in,
        }
    }
}

impl AdminState {
    /// Appends an entry to the audit chain; a chain that cannot be written refuses the request
    /// (an action the record does not show must not happen).
    async fn record(
        &self,
        actor: &str,
        action: &str,
        detail: serde_json::Value,
    ) -> Result<(), Problem> {
        self.audit
            .append(bridge::AuditEntry {
                actor: actor.to_owned(),
                action: action.to_owned(),
                session_id: None,
                detail,
            })
            .await
            .map_err(|err| {
                tracing::error!(error = %err, action, "an audit entry could not be written");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the audit record cannot be written",
                )
            })
    }
}

/// Whether `text` can be stored or looked up: PostgreSQL's text cannot hold NUL (a query with
/// one fails), so a value with NUL names nothing that exists, on either store.
pub(crate) fn storable(text: &str) -> bool {
    !text.contains('\0')
}

/// `text` as a record may show it: control characters (NUL among them) as U+FFFD.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// The answer to a database error: the database being away is 503, anything else 500; logged
/// with its cause either way (a change that did not happen must leave a trace for whoever is
/// asked why).
fn database_problem(error: &sea_orm::DbErr) -> Problem {
    if store::is_unreachable(error) {
        tracing::warn!(%error, "the database is unreachable");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "database unreachable",
        )
        .retry_after(Duration::from_secs(1))
    } else {
        tracing::error!(%error, "a query failed");
        Problem::internal()
    }
}

/// The answer to a change whose audit entry could not be written (so the change was not made
/// either): 503, logged with its cause.
fn audit_problem(error: &bridge::AuditError) -> Problem {
    tracing::error!(%error, "an audited change failed: its audit entry could not be written");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the audit record cannot be written",
    )
    .retry_after(Duration::from_secs(1))
}

/// The API's routes. Every route under `/v1` is in the OpenAPI document (a test checks).
pub fn router(state: AdminState) -> Router {
    // Forget the limits of keys idle long enough to be full again.
    let (login, applicants, http, oidc) = (
        state.login.clone(),
        state.applicants.clone(),
        state.http.clone(),
        state.oidc.clone(),
    );
    oidc_recheck::spawn(&state);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            if Arc::strong_count(&login) == 1 {
                return;
            }
            login.throttle.forget_idle();
            applicants.throttle.forget_idle();
            http.senders.forget_idle();
            if let Some(oidc) = &oidc {
                oidc.forget_idle();
            }
        }
    });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/login", post(login::login))
        .route("/v1/logout", post(logout::logout))
        .route("/v1/oidc/login", get(oidc_http::login))
        .route("/v1/oidc/callback", get(oidc_http::callback))
        .route("/v1/oidc/session", post(oidc_http::session))
        .route(
            "/v1/people",
            get(people_http::list).post(people_http::create),
        )
        .route(
            "/v1/people/{username}",
            get(people_http::read).patch(people_http::update),
        )
        .route(
            "/v1/kiosks",
            get(kiosks_http::list).post(kiosks_http::enrol),
        )
        .route("/v1/kiosks/{id}", get(kiosks_http::read))
        .route("/v1/kiosks/{id}/revoke", post(kiosks_http::revoke))
        .route("/v1/applicant-tokens", post(applicant_tokens::issue))
        .route("/v1/applicant-tokens/renew", post(applicant_renewal::renew))
        .route("/v1/kiosk-credential", get(enrolment_check::check))
        .route("/v1/sessions", get(sessions_http::list))
        .route(
            "/v1/sessions/{id}/transcript",
            get(sessions_http::transcript),
        )
        .route(
            "/v1/sessions/{id}/assign",
            post(session_actions_http::assign),
        )
        .route(
            "/v1/sessions/{id}/transfer",
            post(session_actions_http::transfer),
        )
        .route("/v1/sessions/{id}/close", post(session_actions_http::close))
        .route(
            "/v1/sessions/{id}/hold",
            post(retention_http::hold).delete(retention_http::release),
        )
        .route(
            "/v1/retention/policies",
            get(retention_http::list).post(retention_http::create),
        )
        .route(
            "/v1/retention/policies/{name}",
            axum::routing::patch(retention_http::update).delete(retention_http::delete),
        )
        .route("/v1/queue", get(queue_http::waiting))
        .route("/v1/me/availability", put(queue_http::set_availability))
        .route("/v1/audit", get(audit_http::query))
        .route("/v1/audit/export", get(audit_http::export))
        .route("/v1/audit/verify", get(audit_http::verify))
        .route("/v1/stats", get(stats_http::stats))
        .route("/v1/stats/export.csv", get(stats_http::export_csv))
        .route("/v1/surveys/export", get(stats_http::export_surveys))
        .route("/metrics", get(metrics::serve))
        .route("/", get(web::home))
        .route("/desk", get(web::to_desk))
        .route("/desk/", get(web::desk))
        .route("/desk/{file}", get(web::desk_file))
        .route("/kiosk", get(web::to_kiosk))
        .route("/kiosk/", get(web::kiosk))
        .route("/kiosk/{file}", get(web::kiosk_file))
        .route("/web/config.json", get(web::config))
        .route("/web/{*path}", get(web::shared))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            sender_limits::limit,
        ))
        .with_state(state)
}

#[derive(Serialize, ToSchema)]
struct Status {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health",
    responses((status = 200, description = "the process is up", body = Status)))]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// How long readiness waits for the database's answer.
const READINESS_PING: Duration = Duration::from_secs(1);

/// Readiness: the database answers and, when it runs here, the chat pipeline is receiving.
/// Load balancers stop routing here while either is not so.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health",
    responses(
        (status = 200, description = "ready", body = Status),
        (status = 503, description = "the database or the chat pipeline is not ready", body = Problem, content_type = "application/problem+json"),
    ))]
async fn readyz(State(state): State<AdminState>) -> Response {
    let database = |detail: &str| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database-unreachable",
            "database unreachable",
        )
        .detail(detail)
        .into_response()
    };
    if let Some(ready) = &state.pipeline_ready
        && !*ready.borrow()
    {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "pipeline-not-ready",
            "chat pipeline not ready",
        )
        .detail("the pipeline is not connected to the gateway yet")
        .into_response();
    }
    // A probe wants an answer within its own timeout, which is often a second or two; an
    // unreachable database would otherwise hold it for the whole connect timeout.
    match tokio::time::timeout(READINESS_PING, state.store.ping()).await {
        Ok(Ok(())) => Json(Status { status: "ready" }).into_response(),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness check failed");
            database("the database did not answer a ping")
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
            database("the database did not answer a ping within a second")
        }
    }
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "no such resource")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "method not allowed on this resource",
    )
}
