//! `/v1/audit`: the audit chain, read. Query with filters and cursor pages, export as JSON Lines
//! (streamed page by page, so a long trail never sits in memory), and verify the chain and the
//! conversation tables against it, as `courtchat audit verify` does.
//!
//! Admins and supervisors read everything; an agent reads only the entries of a session they
//! took part in (and must name it).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemas::db::entities::agent::StaffRole;
use schemas::db::entities::{audit_event, participant};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, forbidden};
use crate::extract::ApiQuery;
use crate::{AdminState, Problem};

/// Entries per page of an export.
const EXPORT_PAGE: u64 = 500;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries about this session.
    #[param(min_length = 1, max_length = 64)]
    pub session: Option<String>,
    /// Entries by this actor (a username, a subject, `system`, `cli`).
    #[param(min_length = 1, max_length = 128)]
    pub actor: Option<String>,
    /// Entries of this kind, e.g. `message.accepted`, `admin.staff.updated`.
    #[param(min_length = 1, max_length = 64)]
    pub action: Option<String>,
    /// Entries at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Entries before this time (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// From the previous page's `next_cursor`.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// Entries per page (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// The filters of an export; `after` resumes one that was cut short.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    #[param(min_length = 1, max_length = 64)]
    pub session: Option<String>,
    #[param(min_length = 1, max_length = 128)]
    pub actor: Option<String>,
    #[param(min_length = 1, max_length = 64)]
    pub action: Option<String>,
    #[param(format = DateTime)]
    pub since: Option<String>,
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Entries after this id (the last line of an export that was cut short).
    #[param(pattern = "^[0-9]{1,18}$")]
    pub after: Option<String>,
}

impl From<ExportQuery> for AuditQuery {
    fn from(q: ExportQuery) -> Self {
        Self {
            session: q.session,
            actor: q.actor,
            action: q.action,
            since: q.since,
            until: q.until,
            cursor: q.after,
            limit: None,
        }
    }
}

/// One entry of the chain.
#[derive(Serialize, ToSchema)]
pub struct AuditRecord {
    /// Its place in the chain.
    pub id: i64,
    #[schema(format = DateTime)]
    pub at: String,
    pub actor: String,
    pub action: String,
    pub session_id: Option<String>,
    /// What the entry recorded.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// HMAC of the previous entry, hex.
    pub prev_mac: String,
    /// HMAC of this entry, hex.
    pub mac: String,
}

impl From<audit_event::Model> for AuditRecord {
    fn from(row: audit_event::Model) -> Self {
        Self {
            id: row.id,
            at: row.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            actor: row.actor,
            action: row.action,
            session_id: row.session_id,
            // Stored as text so that the MAC covers its exact bytes; shown as JSON.
            detail: serde_json::from_str(&row.detail)
                .unwrap_or(serde_json::Value::String(row.detail)),
            prev_mac: row.prev_mac,
            mac: row.mac,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The chain checked end to end.
#[derive(Serialize, ToSchema)]
pub struct AuditVerification {
    /// The chain verifies and the conversation tables hold exactly what it recorded.
    pub intact: bool,
    /// Entries verified, up to the first that does not.
    pub entries: u64,
    /// The first entry that does not verify.
    pub first_broken: Option<BrokenEntry>,
    /// The first stored row that differs from what the chain recorded, described.
    pub first_difference: Option<String>,
    /// Rows whose content a retention policy purged, as the chain's `retention.purged`
    /// entries recorded it (not tampering).
    pub purged: u64,
}

#[derive(Serialize, ToSchema)]
pub struct BrokenEntry {
    pub id: i64,
    pub reason: String,
}

/// The filters, checked, as a query; and the first id to read after.
fn filtered(
    caller: &Caller,
    query: &AuditQuery,
) -> Result<(Select<audit_event::Entity>, i64), Problem> {
    let since = crate::filters::time("since", query.since.as_deref())?;
    let until = crate::filters::time("until", query.until.as_deref())?;
    for (name, value, max) in [
        ("session", &query.session, 64),
        ("actor", &query.actor, 128),
        ("action", &query.action, 64),
    ] {
        if let Some(value) = value
            && !(1..=max).contains(&value.chars().count())
        {
            return Err(Problem::invalid_field(
                name,
                format_args!("1 to {max} characters"),
            ));
        }
    }
    if caller.role == StaffRole::Agent && query.session.is_none() {
        return Err(forbidden().detail("agents read the audit of one of their sessions: name it"));
    }
    let after = crate::page::after(query.cursor.as_deref())?;
    // Checked last, so that every other fault of the request is still reported.
    if [&query.session, &query.actor, &query.action]
        .into_iter()
        .flatten()
        .any(|value| !crate::storable(value))
    {
        // Names nothing stored: an empty result, without asking the database.
        return Ok((
            audit_event::Entity::find().filter(audit_event::Column::Id.lt(0)),
            0,
        ));
    }
    let mut select = audit_event::Entity::find();
    if let Some(session) = &query.session {
        select = select.filter(audit_event::Column::SessionId.eq(session));
    }
    if let Some(actor) = &query.actor {
        select = select.filter(audit_event::Column::Actor.eq(actor));
    }
    if let Some(action) = &query.action {
        select = select.filter(audit_event::Column::Action.eq(action));
    }
    if let Some(since) = since {
        select = select.filter(audit_event::Column::At.gte(since));
    }
    if let Some(until) = until {
        select = select.filter(audit_event::Column::At.lt(until));
    }
    Ok((select.order_by_asc(audit_event::Column::Id), after))
}

/// Refuses an agent who did not take part in the session they name.
async fn agent_may_read(
    state: &AdminState,
    caller: &Caller,
    query: &AuditQuery,
) -> Result<(), Problem> {
    if caller.role != StaffRole::Agent {
        return Ok(());
    }
    let session = query.session.as_deref().unwrap_or_default();
    if !crate::storable(session) {
        return Err(forbidden().detail("not one of your sessions"));
    }
    let took_part = participant::Entity::find()
        .filter(participant::Column::SessionId.eq(session))
        .filter(participant::Column::Subject.eq(&caller.username))
        .one(state.store.connection())
        .await
        .map_err(|err| crate::database_problem(&err))?
        .is_some();
    if took_part {
        Ok(())
    } else {
        Err(forbidden().detail("not one of your sessions"))
    }
}

/// Audit entries, filtered, a page at a time.
#[utoipa::path(get, path = "/v1/audit", operation_id = "queryAudit", tag = "audit",
    params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of entries, in chain order", body = AuditPage),
        (status = 400, description = "malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "an agent asking beyond their sessions", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn query(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, Problem> {
    let limit = crate::page::size(query.limit, 100, 500)?;
    let (select, after) = filtered(&caller, &query)?;
    agent_may_read(&state, &caller, &query).await?;
    let rows = select
        .filter(audit_event::Column::Id.gt(after))
        .limit(limit + 1)
        .all(state.store.connection())
        .await
        .map_err(|err| crate::database_problem(&err))?;
    let (rows, next_cursor) = crate::page::cut(rows, limit, |row| row.id);
    Ok(Json(AuditPage {
        items: rows.into_iter().map(AuditRecord::from).collect(),
        next_cursor,
    }))
}

/// Audit entries, filtered, as JSON Lines: one entry per line, streamed.
#[utoipa::path(get, path = "/v1/audit/export", operation_id = "exportAudit", tag = "audit",
    params(ExportQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "every matching entry, one JSON object per line", body = String, content_type = "application/x-ndjson"),
        (status = 400, description = "malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins and supervisors export", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, Problem> {
    caller.require(&[StaffRole::Admin, StaffRole::Supervisor])?;
    let query = AuditQuery::from(query);
    let (select, after) = filtered(&caller, &query)?;
    let db = state.store.connection().clone();
    // Page after page, each read when the previous one has been sent.
    let pages = futures_util::stream::unfold(Some(after), move |cursor| {
        let (select, db) = (select.clone(), db.clone());
        async move {
            let after = cursor?;
            match select
                .filter(audit_event::Column::Id.gt(after))
                .limit(EXPORT_PAGE)
                .all(&db)
                .await
            {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let next = (rows.len() as u64 == EXPORT_PAGE)
                        .then(|| rows.last().map(|r| r.id))
                        .flatten();
                    let mut lines = Vec::new();
                    for row in rows {
                        let _ = serde_json::to_writer(&mut lines, &AuditRecord::from(row));
                        lines.push(b'\n');
                    }
                    Some((Ok::<_, std::io::Error>(Bytes::from(lines)), next))
                }
                Err(error) => {
                    // The status is sent; cutting the body short tells the client it is incomplete.
                    tracing::error!(%error, "the audit export failed part way");
                    Some((Err(std::io::Error::other("the audit export failed")), None))
                }
            }
        }
    });
    let mut response = Body::from_stream(pages).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// Walks the chain and checks the conversation tables against it.
#[utoipa::path(get, path = "/v1/audit/verify", operation_id = "verifyAudit", tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the result, intact or not", body = AuditVerification),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins and supervisors verify", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn verify(
    State(state): State<AdminState>,
    caller: Caller,
) -> Result<Json<AuditVerification>, Problem> {
    caller.require(&[StaffRole::Admin, StaffRole::Supervisor])?;
    let verification = state
        .audit
        .verify_with_own_key(&state.store)
        .await
        .map_err(|error| {
            tracing::error!(%error, "audit verification could not run");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the audit record cannot be read",
            )
        })?;
    if let Some(metrics) = &state.metrics {
        crate::metrics::verified(metrics, verification.is_intact());
    }
    Ok(Json(AuditVerification {
        intact: verification.is_intact(),
        entries: verification.entries,
        first_broken: verification
            .first_broken
            .map(|(id, reason)| BrokenEntry { id, reason }),
        first_difference: verification.first_difference.map(|d| d.to_string()),
        purged: verification.records.purged,
    }))
}
