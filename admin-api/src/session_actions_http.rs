//! Assign, transfer and close a session over HTTP. Each is the caller's own submission to the
//! chat pipeline (a transfer, or a close), decided by its single writer in order with what
//! arrives over MQTT: the same stream entries, lock changes, audit entries and notices as the
//! same action over MQTT. Supervisors and admins act on any session; an agent only on a
//! session they take part in (the pipeline decides).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use schemas::db::entities::agent::StaffRole;
use schemas::wire::{self, Action, Outcome, Submission};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath};
use crate::{AdminState, Problem, pipeline};

// The schemas' patterns say what the record takes (`schemas::wire::check_text`): no control
// characters but newline and tab, no bidirectional controls, no invisible characters; and at
// most as many characters as fit the byte limits at four bytes each (names 128 bytes, texts
// `bridge.max_body_bytes`, 4,096 by default).

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    /// The agent (username) who takes the session.
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$", example = "ann")]
    pub agent: String,
}

/// To an agent, or back to a team's queue.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TransferRequest {
    ToAgent(ToAgent),
    ToTeam(ToTeam),
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToAgent {
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$", example = "ann")]
    pub to_agent: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToTeam {
    #[schema(
        pattern = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]{1,32}$",
        example = "renewals"
    )]
    pub to_team: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    #[schema(
        pattern = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]{0,1024}$"
    )]
    pub reason: Option<String>,
}

/// What the chat pipeline stored.
#[derive(Serialize, ToSchema)]
pub struct ActionOutcome {
    pub session_id: String,
    /// The submission's id: the request's `Idempotency-Key`, or one made for it.
    pub client_msg_id: String,
    /// The stream entry that records the action (`transferred`, `closed`).
    pub seq: Option<u64>,
}

/// Submits `action` to the session as the caller and answers with what was stored.
async fn act(
    state: &AdminState,
    caller: &Caller,
    headers: &HeaderMap,
    session_id: &str,
    action: Action,
) -> Result<Json<ActionOutcome>, Problem> {
    // Session ids are short and plain; anything else names no session (and must not reach the
    // database: PostgreSQL's text cannot hold NUL).
    if !crate::storable(session_id) || session_id.chars().count() > 128 {
        return Err(pipeline::refusal(
            wire::RejectReason::UnknownSession,
            "no session has this id",
        ));
    }
    let submission = Submission {
        v: wire::VERSION,
        client_msg_id: pipeline::client_msg_id(headers)?,
        action,
    };
    let reply = pipeline::commands(state)?
        .submit(session_id, &caller.username, &submission)
        .await;
    let ack = pipeline::outcome(reply)?;
    Ok(Json(ActionOutcome {
        session_id: session_id.to_owned(),
        client_msg_id: submission.client_msg_id,
        seq: match ack.outcome {
            Outcome::Accepted { seq } => seq,
            Outcome::Rejected { .. } => None,
        },
    }))
}

/// Gives the session to an agent: they join and take the reply lock; an agent who had it
/// leaves. Recorded as a transfer by the caller.
#[utoipa::path(post, path = "/v1/sessions/{id}/assign", operation_id = "assignSession", tag = "queue",
    params(
        ("id" = String, Path, description = "the session's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe: the same key is the same submission", pattern = "^[A-Za-z0-9._:-]{1,64}$"),
    ),
    request_body = AssignRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "assigned", body = ActionOutcome),
        (status = 400, description = "malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "agents do not assign; or the agent is not active staff", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such session", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the session is closed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "the agent has it already, or a name the protocol refuses", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many actions; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the chat pipeline cannot take it now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn assign(
    State(state): State<AdminState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<AssignRequest>,
) -> Result<Json<ActionOutcome>, Problem> {
    caller.require(&[StaffRole::Supervisor, StaffRole::Admin])?;
    let action = Action::Transfer {
        to_agent: Some(request.agent),
        to_team: None,
    };
    act(&state, &caller, &headers, &id, action).await
}

/// Hands the session to an agent or back to a team's queue.
#[utoipa::path(post, path = "/v1/sessions/{id}/transfer", operation_id = "transferSession", tag = "queue",
    params(
        ("id" = String, Path, description = "the session's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe: the same key is the same submission", pattern = "^[A-Za-z0-9._:-]{1,64}$"),
    ),
    request_body = TransferRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "transferred", body = ActionOutcome),
        (status = 400, description = "malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "not a participant, or the target is not active staff", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such session", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the session is closed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "not exactly one target, or a name the protocol refuses", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many actions; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the chat pipeline cannot take it now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn transfer(
    State(state): State<AdminState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<TransferRequest>,
) -> Result<Json<ActionOutcome>, Problem> {
    let action = match request {
        TransferRequest::ToAgent(to) => Action::Transfer {
            to_agent: Some(to.to_agent),
            to_team: None,
        },
        TransferRequest::ToTeam(to) => Action::Transfer {
            to_agent: None,
            to_team: Some(to.to_team),
        },
    };
    act(&state, &caller, &headers, &id, action).await
}

/// Ends the session; the applicant is offered the survey.
#[utoipa::path(post, path = "/v1/sessions/{id}/close", operation_id = "closeSession", tag = "queue",
    params(
        ("id" = String, Path, description = "the session's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe: the same key is the same submission", pattern = "^[A-Za-z0-9._:-]{1,64}$"),
    ),
    request_body = CloseRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "closed", body = ActionOutcome),
        (status = 400, description = "malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "not a participant", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such session", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the session is closed already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "a reason the record refuses", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many actions; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the chat pipeline cannot take it now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn close(
    State(state): State<AdminState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<CloseRequest>,
) -> Result<Json<ActionOutcome>, Problem> {
    let action = Action::Close {
        reason: request.reason,
    };
    act(&state, &caller, &headers, &id, action).await
}
