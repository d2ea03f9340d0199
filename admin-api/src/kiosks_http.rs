//! `/v1/kiosks`: kiosks over HTTP. Admins enrol and revoke; supervisors read.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemas::db::entities::agent::StaffRole;
use schemas::db::entities::kiosk;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::kiosks::{self, KioskError, NewKiosk};
use crate::{AdminState, Problem};

/// A kiosk as the API shows it (never its credential, except once at enrolment).
#[derive(Serialize, ToSchema)]
pub struct Kiosk {
    #[schema(example = "k-9f3a61c20b7d4e58")]
    pub id: String,
    pub name: String,
    /// The team its applicants' sessions go to.
    pub team: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The admin who enrolled it.
    pub created_by: String,
    /// When it was revoked; absent while it is in use.
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    /// When its credential last obtained an applicant token.
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
}

fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl From<kiosk::Model> for Kiosk {
    fn from(row: kiosk::Model) -> Self {
        Self {
            id: row.id,
            name: row.name,
            team: row.team,
            created_at: time(row.created_at),
            created_by: row.created_by,
            revoked_at: row.revoked_at.map(time),
            last_used_at: row.last_used_at.map(time),
        }
    }
}

/// A newly enrolled kiosk and its credential.
#[derive(Serialize, ToSchema)]
pub struct EnrolledKiosk {
    pub kiosk: Kiosk,
    /// The kiosk's credential, `cck_<id>_<secret>`: shown this once and stored nowhere. The
    /// kiosk sends it as `Authorization: Bearer` to `/v1/applicant-tokens`.
    #[schema(example = "cck_k-9f3a61c20b7d4e58_4be1…")]
    pub credential: String,
}

#[derive(Serialize, ToSchema)]
pub struct KioskPage {
    pub items: Vec<Kiosk>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KiosksQuery {
    /// Only revoked kiosks (`true`) or only kiosks in use (`false`).
    pub revoked: Option<bool>,
    /// From the previous page's `next_cursor`.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKioskRequest {
    /// What staff call it, e.g. "Hall B, left".
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*[^\\s\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb][^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*$",
        example = "Hall B, left"
    )]
    pub name: String,
    /// The team its applicants' sessions go to (sent as the open request's `topic`).
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*[^\\s\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb][^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*$",
        example = "licensing"
    )]
    pub team: Option<String>,
}

const READERS: &[StaffRole] = &[StaffRole::Admin, StaffRole::Supervisor];

fn problem(error: KioskError) -> Problem {
    match error {
        KioskError::Database(ref db) => crate::database_problem(db),
        KioskError::Audit(ref error) => crate::audit_problem(error),
        KioskError::Random(_) => {
            tracing::error!(error = %error, "a kiosk credential could not be made");
            Problem::internal()
        }
        KioskError::Name => Problem::invalid_field("name", error),
        KioskError::Team => Problem::invalid_field("team", error),
    }
}

fn not_found(id: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "no such kiosk")
        .detail(format!("no kiosk has the id {}", crate::printable(id)))
}

/// Lists kiosks, in the order they were enrolled.
#[utoipa::path(get, path = "/v1/kiosks", operation_id = "listKiosks", tag = "kiosks",
    params(KiosksQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of kiosks", body = KioskPage),
        (status = 400, description = "malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "agents may not list kiosks", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<KiosksQuery>,
) -> Result<Json<KioskPage>, Problem> {
    caller.require(READERS)?;
    // Kiosks have random ids, so pages follow enrolment order and the cursor counts the
    // kiosks already listed, as sessions' do.
    let skip = crate::page::after(query.cursor.as_deref())?;
    let limit = crate::page::size(query.limit, 50, 200)?;
    let rows = kiosks::list(&state.store, query.revoked, skip as u64, limit + 1)
        .await
        .map_err(problem)?;
    let (rows, next_cursor) = crate::page::counted(rows, limit, skip);
    Ok(Json(KioskPage {
        items: rows.into_iter().map(Kiosk::from).collect(),
        next_cursor,
    }))
}

/// Enrols a kiosk. The answer holds its credential, which is shown only this once.
#[utoipa::path(post, path = "/v1/kiosks", operation_id = "enrolKiosk", tag = "kiosks",
    request_body = NewKioskRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "enrolled", body = EnrolledKiosk),
        (status = 400, description = "invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins enrol kiosks", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn enrol(
    State(state): State<AdminState>,
    caller: Caller,
    ApiJson(new): ApiJson<NewKioskRequest>,
) -> Result<(StatusCode, Json<EnrolledKiosk>), Problem> {
    caller.require(&[StaffRole::Admin])?;
    let (row, credential) = kiosks::enrol(
        &state.store,
        &state.audit,
        &caller.username,
        NewKiosk {
            name: new.name,
            team: new.team,
        },
        chrono::Utc::now(),
    )
    .await
    .map_err(problem)?;
    Ok((
        StatusCode::CREATED,
        Json(EnrolledKiosk {
            kiosk: row.into(),
            credential,
        }),
    ))
}

/// One kiosk.
#[utoipa::path(get, path = "/v1/kiosks/{id}", operation_id = "readKiosk", tag = "kiosks",
    params(("id" = String, Path, description = "the kiosk's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the kiosk", body = Kiosk),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "agents may not read kiosks", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such kiosk", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn read(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Kiosk>, Problem> {
    caller.require(READERS)?;
    kiosks::find(&state.store, &id)
        .await
        .map_err(problem)?
        .map(|row| Json(row.into()))
        .ok_or_else(|| not_found(&id))
}

/// Revokes a kiosk: its credential is refused from now on; tokens it already obtained run out
/// within `admin.applicant_token_ttl_secs`. Revoking a revoked kiosk changes nothing.
#[utoipa::path(post, path = "/v1/kiosks/{id}/revoke", operation_id = "revokeKiosk", tag = "kiosks",
    params(("id" = String, Path, description = "the kiosk's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the kiosk, revoked", body = Kiosk),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins revoke kiosks", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such kiosk", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Kiosk>, Problem> {
    caller.require(&[StaffRole::Admin])?;
    kiosks::revoke(
        &state.store,
        &state.audit,
        &caller.username,
        &id,
        chrono::Utc::now(),
    )
    .await
    .map_err(problem)?
    .map(|row| Json(row.into()))
    .ok_or_else(|| not_found(&id))
}
