//! `/v1/people`: staff over HTTP. Admins create and change; supervisors read; everyone reads
//! their own record.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemas::db::entities::agent::{self, StaffRole};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::people::{self, NewStaff, PeopleError, StaffChanges, StaffFilter};
use crate::{AdminState, Problem};

/// A staff role.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    Agent,
    Supervisor,
    Admin,
}

impl From<RoleName> for StaffRole {
    fn from(role: RoleName) -> Self {
        match role {
            RoleName::Agent => StaffRole::Agent,
            RoleName::Supervisor => StaffRole::Supervisor,
            RoleName::Admin => StaffRole::Admin,
        }
    }
}

impl From<StaffRole> for RoleName {
    fn from(role: StaffRole) -> Self {
        match role {
            StaffRole::Agent => RoleName::Agent,
            StaffRole::Supervisor => RoleName::Supervisor,
            StaffRole::Admin => RoleName::Admin,
        }
    }
}

/// A member of staff as the API shows them.
#[derive(Serialize, ToSchema)]
pub struct Person {
    #[schema(example = "ann")]
    pub username: String,
    pub display_name: String,
    pub role: RoleName,
    pub team: Option<String>,
    /// Sessions at once.
    pub capacity: i32,
    pub active: bool,
    /// Whether they take new sessions now (they set it: `PUT /v1/me/availability`).
    pub available: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<agent::Model> for Person {
    fn from(row: agent::Model) -> Self {
        Self {
            username: row.subject,
            display_name: row.display_name,
            role: row.role.into(),
            team: row.team,
            capacity: row.capacity,
            active: row.active,
            available: row.available,
            created_at: row
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// One page of staff.
#[derive(Serialize, ToSchema)]
pub struct PersonPage {
    pub items: Vec<Person>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PeopleQuery {
    pub role: Option<RoleName>,
    #[param(min_length = 1, max_length = 64)]
    pub team: Option<String>,
    pub active: Option<bool>,
    /// From the previous page's `next_cursor`.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPerson {
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$", example = "bob")]
    pub username: String,
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*[^\\s\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb][^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*$"
    )]
    pub display_name: String,
    pub role: RoleName,
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*[^\\s\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb][^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*$"
    )]
    pub team: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 100)]
    pub capacity: Option<i32>,
    #[schema(min_length = 12, max_length = 1024, format = Password)]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonUpdate {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*[^\\s\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb][^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*$"
    )]
    pub display_name: Option<String>,
    pub role: Option<RoleName>,
    /// `null` clears the team.
    #[serde(default, deserialize_with = "present")]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*[^\\s\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb][^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff\\ufff9-\\ufffb]*$",
        nullable
    )]
    pub team: Option<Option<String>>,
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 100)]
    pub capacity: Option<i32>,
    /// `false` disables the account: its tokens stop working and its live connections end.
    pub active: Option<bool>,
    /// A new password; the person's tokens stop working.
    #[schema(min_length = 12, max_length = 1024, format = Password)]
    pub password: Option<String>,
}

/// An integer as JSON Schema counts them: `65.0` is the integer 65, as JSON Schema's integer
/// type has it (serde's integers refuse it).
pub(crate) fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = number
        .as_i64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| D::Error::custom(format!("{number} is not a whole number")))?;
    i32::try_from(whole)
        .map(Some)
        .map_err(|_| D::Error::custom(format!("{number} is out of range")))
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

// The patterns of names in the schemas above are the one rule for stored names
// (`schemas::wire::check_name_characters`: no control, bidirectional or invisible characters)
// and a character other than whitespace (people::valid_*).

const READERS: &[StaffRole] = &[StaffRole::Admin, StaffRole::Supervisor];

fn problem(error: PeopleError) -> Problem {
    match error {
        PeopleError::Exists(_) => {
            Problem::new(StatusCode::CONFLICT, "exists", "already exists").detail(error.to_string())
        }
        PeopleError::Database(ref db) => crate::database_problem(db),
        PeopleError::Audit(ref error) => crate::audit_problem(error),
        PeopleError::Password(crate::password::PasswordError::Hash(_)) => Problem::internal(),
        PeopleError::Username => Problem::invalid_field("username", error),
        PeopleError::DisplayName => Problem::invalid_field("display_name", error),
        PeopleError::Team => Problem::invalid_field("team", error),
        PeopleError::Capacity => Problem::invalid_field("capacity", error),
        PeopleError::Password(_) => Problem::invalid_field("password", error),
    }
}

fn not_found(username: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "no such person")
        .detail(format!("no member of staff is called {username}"))
}

/// Lists staff.
#[utoipa::path(get, path = "/v1/people", operation_id = "listPeople", tag = "people",
    params(PeopleQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of staff", body = PersonPage),
        (status = 400, description = "malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "agents may not list staff", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PeopleQuery>,
) -> Result<Json<PersonPage>, Problem> {
    caller.require(READERS)?;
    let after = crate::page::after(query.cursor.as_deref())?;
    let limit = crate::page::size(query.limit, 50, 200)?;
    if let Some(team) = &query.team
        && !(1..=64).contains(&team.chars().count())
    {
        return Err(Problem::invalid_field("team", "1 to 64 characters"));
    }
    if query
        .team
        .as_deref()
        .is_some_and(|team| !crate::storable(team))
    {
        // No team has such a name.
        return Ok(Json(PersonPage {
            items: Vec::new(),
            next_cursor: None,
        }));
    }
    let filter = StaffFilter {
        role: query.role.map(Into::into),
        team: query.team,
        active: query.active,
    };
    let rows = people::list_staff(&state.store, filter, after, limit + 1)
        .await
        .map_err(problem)?;
    let (rows, next_cursor) = crate::page::cut(rows, limit, |row| row.id);
    Ok(Json(PersonPage {
        items: rows.into_iter().map(Person::from).collect(),
        next_cursor,
    }))
}

/// Creates a member of staff.
#[utoipa::path(post, path = "/v1/people", operation_id = "createPerson", tag = "people",
    request_body = NewPerson,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = Person),
        (status = 400, description = "invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins create staff", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the username is taken", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    ApiJson(new): ApiJson<NewPerson>,
) -> Result<(StatusCode, Json<Person>), Problem> {
    caller.require(&[StaffRole::Admin])?;
    let created = people::add_staff(
        &state.store,
        &state.audit,
        &caller.username,
        NewStaff {
            username: new.username,
            display_name: new.display_name,
            role: new.role.into(),
            team: new.team,
            capacity: new.capacity,
            password: new.password,
        },
    )
    .await
    .map_err(problem)?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// One member of staff.
#[utoipa::path(get, path = "/v1/people/{username}", operation_id = "readPerson", tag = "people",
    params(("username" = String, Path, description = "the person's username")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the person", body = Person),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "agents read only themselves", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such person", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn read(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(username): ApiPath<String>,
) -> Result<Json<Person>, Problem> {
    if caller.username != username {
        caller.require(READERS)?;
    }
    if !crate::storable(&username) {
        return Err(not_found(&username));
    }
    people::find_staff(&state.store, &username)
        .await
        .map_err(problem)?
        .map(|row| Json(row.into()))
        .ok_or_else(|| not_found(&username))
}

/// Changes a member of staff: name, role, team, capacity, enabled, password. Disabling, a
/// lower role or a new password ends their live MQTT connections and revokes their tokens.
#[utoipa::path(patch, path = "/v1/people/{username}", operation_id = "updatePerson", tag = "people",
    params(("username" = String, Path, description = "the person's username")),
    request_body = PersonUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the person as changed", body = Person),
        (status = 400, description = "invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins change staff", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such person", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(username): ApiPath<String>,
    ApiJson(update): ApiJson<PersonUpdate>,
) -> Result<Json<Person>, Problem> {
    caller.require(&[StaffRole::Admin])?;
    if !crate::storable(&username) {
        return Err(not_found(&username));
    }
    let changes = StaffChanges {
        display_name: update.display_name,
        role: update.role.map(Into::into),
        team: update.team,
        capacity: update.capacity,
        active: update.active,
        password: update.password,
    };
    people::update_staff(
        &state.store,
        &state.audit,
        state.gate.as_ref(),
        &caller.username,
        &username,
        changes,
    )
    .await
    .map_err(problem)?
    .map(|row| Json(row.into()))
    .ok_or_else(|| not_found(&username))
}
