//! `/v1/retention/policies` and `/v1/sessions/{id}/hold` over HTTP: admins set how long closed
//! sessions' content is kept (supervisors read the policies); admins and supervisors place and
//! release legal holds. The rules and the audit records are in [`crate::retention`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemas::db::entities::agent::StaffRole;
use schemas::db::entities::{legal_hold, retention_policy};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath};
use crate::retention::{self, HoldOutcome, RetentionError};
use crate::{AdminState, Problem};

const READERS: &[StaffRole] = &[StaffRole::Admin, StaffRole::Supervisor];

fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A retention policy.
#[derive(Serialize, ToSchema)]
pub struct Policy {
    #[schema(example = "default")]
    pub name: String,
    /// `all`, `team:<name>` or `channel:<name>`. A session follows the most specific policy
    /// that covers it (team, then channel, then all); none: kept forever.
    #[schema(example = "all")]
    pub scope: String,
    /// Days a closed session's content is kept before it is purged.
    pub keep_days: i32,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<retention_policy::Model> for Policy {
    fn from(row: retention_policy::Model) -> Self {
        Self {
            name: row.name,
            scope: row.scope,
            keep_days: row.keep_days,
            created_at: time(row.created_at),
            updated_at: time(row.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PolicyList {
    pub items: Vec<Policy>,
}

/// `keep_days`, required: a whole number as JSON Schema counts them (`30.0` too).
fn whole_days<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    crate::people_http::whole_number(d)?
        .ok_or_else(|| serde::de::Error::custom("keep_days is a whole number, not null"))
}

// Scopes (in the schemas below): `all`, or `team:` / `channel:` and 1 to 128 characters
// without control characters.

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPolicy {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "default")]
    pub name: String,
    #[schema(
        pattern = "^(all|channel:(kiosk|phone|web)|team:(?=[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*[^\\s\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb])[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]{1,128})$",
        example = "team:appeals"
    )]
    pub scope: String,
    #[serde(deserialize_with = "whole_days")]
    #[schema(minimum = 1, maximum = 36500)]
    pub keep_days: i32,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    #[schema(
        pattern = "^(all|channel:(kiosk|phone|web)|team:(?=[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*[^\\s\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb])[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]{1,128})$"
    )]
    pub scope: Option<String>,
    #[serde(default, deserialize_with = "crate::people_http::whole_number")]
    #[schema(minimum = 1, maximum = 36500)]
    pub keep_days: Option<i32>,
}

/// A legal hold on a session.
#[derive(Serialize, ToSchema)]
pub struct Hold {
    pub session_id: String,
    pub reason: String,
    /// The admin or supervisor who placed it.
    pub held_by: String,
    #[schema(format = DateTime)]
    pub held_at: String,
}

impl From<legal_hold::Model> for Hold {
    fn from(row: legal_hold::Model) -> Self {
        Self {
            session_id: row.session_id,
            reason: row.reason,
            held_by: row.held_by,
            held_at: time(row.held_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// Why the session is kept: a case number, the court's request.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
        example = "case 2027-CV-113"
    )]
    pub reason: String,
}

/// The body as `T`, from a JSON object only: serde's derived structs also take a JSON array of
/// their fields in order, which the schema does not allow.
fn object<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> Result<T, Problem> {
    if !body.is_object() {
        return Err(Problem::invalid("the body must be a JSON object"));
    }
    crate::extract::value_as(body)
}

fn problem(error: RetentionError) -> Problem {
    match error {
        RetentionError::Conflict(detail) => {
            Problem::new(StatusCode::CONFLICT, "exists", "already exists").detail(detail)
        }
        RetentionError::Database(ref db) => crate::database_problem(db),
        RetentionError::Audit(ref error) => crate::audit_problem(error),
        RetentionError::Name => Problem::invalid_field("name", error),
        RetentionError::Scope(_) => Problem::invalid_field("scope", error),
        RetentionError::KeepDays => Problem::invalid_field("keep_days", error),
        RetentionError::Reason => Problem::invalid_field("reason", error),
    }
}

fn no_policy(name: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "no such policy")
        .detail(format!("no policy is named {}", crate::printable(name)))
}

fn no_session(id: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "no such session")
        .detail(format!("no session has the id {}", crate::printable(id)))
}

/// Every retention policy.
#[utoipa::path(get, path = "/v1/retention/policies", operation_id = "listRetentionPolicies", tag = "retention",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the policies, by name", body = PolicyList),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "agents may not read policies", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AdminState>,
    caller: Caller,
) -> Result<Json<PolicyList>, Problem> {
    caller.require(READERS)?;
    let rows = retention::policies(&state.store).await.map_err(problem)?;
    Ok(Json(PolicyList {
        items: rows.into_iter().map(Policy::from).collect(),
    }))
}

/// Creates a policy (one per scope). Recorded on the audit chain.
#[utoipa::path(post, path = "/v1/retention/policies", operation_id = "createRetentionPolicy", tag = "retention",
    request_body = NewPolicy,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = Policy),
        (status = 400, description = "invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins set policies", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the name or the scope has a policy already", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    ApiJson(new): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<Policy>), Problem> {
    caller.require(&[StaffRole::Admin])?;
    let new: NewPolicy = object(new)?;
    let row = retention::create_policy(
        &state.store,
        &state.audit,
        &caller.username,
        &new.name,
        &new.scope,
        new.keep_days,
        chrono::Utc::now(),
    )
    .await
    .map_err(problem)?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Changes a policy's scope or days. Recorded on the audit chain with before and after.
#[utoipa::path(patch, path = "/v1/retention/policies/{name}", operation_id = "updateRetentionPolicy", tag = "retention",
    params(("name" = String, Path, description = "the policy's name")),
    request_body = PolicyUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the policy as changed", body = Policy),
        (status = 400, description = "invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins change policies", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such policy", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "another policy has that scope", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(update): ApiJson<serde_json::Value>,
) -> Result<Json<Policy>, Problem> {
    caller.require(&[StaffRole::Admin])?;
    let update: PolicyUpdate = object(update)?;
    retention::update_policy(
        &state.store,
        &state.audit,
        &caller.username,
        &name,
        update.scope.as_deref(),
        update.keep_days,
        chrono::Utc::now(),
    )
    .await
    .map_err(problem)?
    .map(|row| Json(row.into()))
    .ok_or_else(|| no_policy(&name))
}

/// Deletes a policy. Recorded on the audit chain with what it was.
#[utoipa::path(delete, path = "/v1/retention/policies/{name}", operation_id = "deleteRetentionPolicy", tag = "retention",
    params(("name" = String, Path, description = "the policy's name")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins delete policies", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such policy", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    caller.require(&[StaffRole::Admin])?;
    if retention::delete_policy(&state.store, &state.audit, &caller.username, &name)
        .await
        .map_err(problem)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_policy(&name))
    }
}

/// Places a legal hold on a session: no retention policy purges it until the hold is
/// released. Recorded on the audit chain with who and why.
#[utoipa::path(post, path = "/v1/sessions/{id}/hold", operation_id = "placeLegalHold", tag = "retention",
    params(("id" = String, Path, description = "the session's id")),
    request_body = HoldRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "held", body = Hold),
        (status = 400, description = "invalid reason", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins and supervisors hold sessions", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such session", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "held already, or its content was purged already", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn hold(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<Hold>), Problem> {
    caller.require(READERS)?;
    let request: HoldRequest = object(request)?;
    let outcome = retention::hold(
        &state.store,
        &state.audit,
        &caller.username,
        &id,
        &request.reason,
        chrono::Utc::now(),
    )
    .await
    .map_err(problem)?;
    match outcome {
        HoldOutcome::Done(row) => Ok((StatusCode::CREATED, Json(row.into()))),
        HoldOutcome::NoSession => Err(no_session(&id)),
        HoldOutcome::Unchanged => Err(Problem::new(
            StatusCode::CONFLICT,
            "held",
            "the session is held already",
        )),
        HoldOutcome::Purged => Err(Problem::new(
            StatusCode::CONFLICT,
            "purged",
            "the session's content was purged already",
        )),
    }
}

/// Releases a session's legal hold; its policy applies again. Recorded on the audit chain.
#[utoipa::path(delete, path = "/v1/sessions/{id}/hold", operation_id = "releaseLegalHold", tag = "retention",
    params(("id" = String, Path, description = "the session's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the hold that was released", body = Hold),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins and supervisors release holds", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such session, or it is not held", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn release(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Hold>, Problem> {
    caller.require(READERS)?;
    match retention::release(&state.store, &state.audit, &caller.username, &id)
        .await
        .map_err(problem)?
    {
        HoldOutcome::Done(row) => Ok(Json(row.into())),
        HoldOutcome::Unchanged => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not-held",
            "the session is not held",
        )),
        HoldOutcome::NoSession | HoldOutcome::Purged => Err(no_session(&id)),
    }
}
