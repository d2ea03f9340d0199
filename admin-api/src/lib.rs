//! courtchat's HTTP API: health and readiness today; agents, sessions, retention, audit and
//! statistics as the admin API issue lands.
//!
//! [`router`] builds the routes over an [`AdminState`]; [`serve`] runs them on an already-bound
//! listener until a shutdown future resolves. Every error is answered as RFC 9457 problem
//! details (`application/problem+json`).

mod problem;

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use problem::Problem;

/// The `[admin]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
}

// Loopback by default: the API has no authentication yet, and health probes usually run on the
// same host or through a port mapping the operator configures.
impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// What the handlers need; cloned per request.
#[derive(Clone)]
pub struct AdminState {
    pub store: store::Store,
    /// Whether the chat pipeline is receiving submissions; `None` when it runs elsewhere.
    pub pipeline_ready: Option<tokio::sync::watch::Receiver<bool>>,
}

/// The API's routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// Liveness: the process is up and serving HTTP.
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// How long readiness waits for the database's answer.
const READINESS_PING: std::time::Duration = std::time::Duration::from_secs(1);

/// Readiness: the database answers and, when it runs here, the chat pipeline is receiving.
/// Load balancers stop routing here while either is not so.
async fn readyz(State(state): State<AdminState>) -> Response {
    if let Some(ready) = &state.pipeline_ready
        && !*ready.borrow()
    {
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "chat pipeline not ready")
            .detail("the pipeline is not connected to the gateway yet")
            .into_response();
    }
    // A probe wants an answer within its own timeout, which is often a second or two; an
    // unreachable database would otherwise hold it for the whole connect timeout.
    match tokio::time::timeout(READINESS_PING, state.store.ping()).await {
        Ok(Ok(())) => Json(Status { status: "ready" }).into_response(),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness check failed");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
                .detail("the database did not answer a ping")
                .into_response()
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
                .detail("the database did not answer a ping within a second")
                .into_response()
        }
    }
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no such resource")
}
