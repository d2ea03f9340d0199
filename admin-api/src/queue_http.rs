//! The queue over HTTP: the sessions waiting for an agent (every member of staff sees them),
//! and a member of staff saying whether they take sessions. Availability goes through the chat
//! pipeline, which offers waiting sessions to available staff (least loaded first) and is the
//! only writer of it.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use schemas::db::entities::agent::StaffRole;
use schemas::db::entities::session::{self, SessionStatus};
use schemas::wire::{self, StaffAction, StaffSubmission};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::sessions_http::SessionPage;
use crate::{AdminState, Problem, pipeline};

/// Whether a member of staff takes new sessions.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AvailabilityStatus {
    Available,
    Away,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityChange {
    pub status: AvailabilityStatus,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// Sessions waiting for this team.
    #[param(min_length = 1, max_length = 64)]
    pub team: Option<String>,
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
}

/// Sets the caller's availability: available staff are offered waiting sessions of their team
/// while they have room (their capacity).
#[utoipa::path(put, path = "/v1/me/availability", operation_id = "setAvailability", tag = "queue",
    request_body = AvailabilityChange,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe: the same key is the same submission", pattern = "^[A-Za-z0-9._:-]{1,64}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "set", body = AvailabilityChange),
        (status = 400, description = "malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "admins take no sessions", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many actions; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the chat pipeline cannot take it now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn set_availability(
    State(state): State<AdminState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(change): ApiJson<AvailabilityChange>,
) -> Result<Json<AvailabilityChange>, Problem> {
    caller.require(&[StaffRole::Agent, StaffRole::Supervisor])?;
    let submission = StaffSubmission {
        v: wire::VERSION,
        client_msg_id: pipeline::client_msg_id(&headers)?,
        action: StaffAction::Availability {
            status: match change.status {
                AvailabilityStatus::Available => wire::Availability::Available,
                AvailabilityStatus::Away => wire::Availability::Away,
            },
        },
    };
    let reply = pipeline::commands(&state)?
        .staff(&caller.username, &submission)
        .await;
    pipeline::outcome(reply)?;
    Ok(Json(change))
}

/// Sessions waiting for an agent, oldest first.
#[utoipa::path(get, path = "/v1/queue", operation_id = "listWaitingSessions", tag = "queue",
    params(QueueQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of waiting sessions", body = SessionPage),
        (status = 400, description = "malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn waiting(
    State(state): State<AdminState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<QueueQuery>,
) -> Result<Json<SessionPage>, Problem> {
    let limit = crate::page::size(query.limit, 50, 200)?;
    let after = crate::page::after(query.cursor.as_deref())?;
    let mut select =
        session::Entity::find().filter(session::Column::Status.eq(SessionStatus::Queued));
    if let Some(team) = &query.team {
        if !(1..=64).contains(&team.chars().count()) {
            return Err(Problem::invalid_field("team", "1 to 64 characters"));
        }
        if !crate::storable(team) {
            return Ok(Json(SessionPage {
                items: Vec::new(),
                next_cursor: None,
            }));
        }
        select = select.filter(session::Column::Team.eq(team));
    }
    crate::sessions_http::page(&state, select, after, limit)
        .await
        .map(Json)
}
