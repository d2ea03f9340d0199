//! `GET /metrics`: the server's metrics in Prometheus's text format, for a scraper on the admin
//! listener. What only the database knows (the audit chain's length) is read at each scrape;
//! everything else is kept current by the gateway and the pipeline as they work.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemas::db::entities::audit_event;
use sea_orm::{EntityTrait, QueryOrder, QuerySelect};

use crate::{AdminState, Problem};

/// The server's metrics, in Prometheus's text exposition format (version 0.0.4).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "health",
    responses(
        (status = 200, description = "every metric, `courtchat_`-prefixed", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 404, description = "this server keeps no metrics", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn serve(State(state): State<AdminState>) -> Response {
    let Some(metrics) = state.metrics.as_ref() else {
        return Problem::new(StatusCode::NOT_FOUND, "not-found", "no metrics here").into_response();
    };
    // Entry ids are consecutive from 1, so the last id is the chain's length. A database that
    // does not answer leaves the last figure in place rather than fail the whole scrape.
    let last = audit_event::Entity::find()
        .select_only()
        .column(audit_event::Column::Id)
        .order_by_desc(audit_event::Column::Id)
        .into_tuple::<i64>()
        .one(state.store.connection())
        .await;
    match last {
        Ok(last) => metrics.audit_chain_length.set(last.unwrap_or(0)),
        Err(error) => tracing::warn!(%error, "the audit chain's length could not be read"),
    }
    // A pipeline in another process has its own health; this server has nothing to report.
    let ready = state
        .pipeline_ready
        .as_ref()
        .is_none_or(|ready| *ready.borrow());
    metrics.pipeline_ready.set(i64::from(ready));
    (
        [(header::CONTENT_TYPE, telemetry::Metrics::CONTENT_TYPE)],
        metrics.render(),
    )
        .into_response()
}

/// Records a verification's outcome for `/metrics` (`courtchat_audit_intact` and when).
pub fn verified(metrics: &telemetry::Metrics, intact: bool) {
    metrics.audit_intact.set(i64::from(intact));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    metrics.audit_verified_at.set(now);
}
