//! `/v1/sessions`: conversations, read. A list with filters (state, agent, team, time) and
//! cursor pages, and a session's transcript: its stream (messages, notes, events), read
//! receipts, reply-lock history and survey answer, and whether a legal hold keeps it or
//! retention purged its content.
//!
//! Admins and supervisors read every session; an agent reads the sessions they took part in,
//! but only what they could see while a participant (`transcript_horizon`). Every transcript read is
//! recorded on the audit chain (`session.transcript.read`: who, which session, how far).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use schemas::db::entities::agent::StaffRole;
use schemas::db::entities::session::{self, SessionStatus};
use schemas::db::entities::{
    audit_event, legal_hold, message, participant, receipt, session_purge, survey_response,
};
use sea_orm::sea_query::Query;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, forbidden};
use crate::extract::{ApiPath, ApiQuery};
use crate::transcript_horizon::Horizon;
use crate::{AdminState, Problem};

/// A session's state.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Queued,
    Active,
    Escalated,
    Closed,
}

impl From<SessionState> for SessionStatus {
    fn from(state: SessionState) -> Self {
        match state {
            SessionState::Queued => SessionStatus::Queued,
            SessionState::Active => SessionStatus::Active,
            SessionState::Escalated => SessionStatus::Escalated,
            SessionState::Closed => SessionStatus::Closed,
        }
    }
}

impl From<SessionStatus> for SessionState {
    fn from(status: SessionStatus) -> Self {
        match status {
            SessionStatus::Queued => SessionState::Queued,
            SessionStatus::Active => SessionState::Active,
            SessionStatus::Escalated => SessionState::Escalated,
            SessionStatus::Closed => SessionState::Closed,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SessionsQuery {
    pub state: Option<SessionState>,
    /// Sessions assigned to this agent.
    #[param(min_length = 1, max_length = 128)]
    pub agent: Option<String>,
    #[param(min_length = 1, max_length = 64)]
    pub team: Option<String>,
    /// Only sessions under a legal hold (`true`) or only those not held (`false`).
    pub held: Option<bool>,
    /// Sessions opened at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Sessions opened before this time (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
}

/// A session as the list shows it.
#[derive(Serialize, ToSchema)]
pub struct SessionSummary {
    pub id: String,
    pub state: SessionState,
    pub applicant: String,
    pub channel: String,
    pub team: Option<String>,
    pub assigned_agent: Option<String>,
    /// Entries in its stream.
    pub entries: i64,
    #[schema(format = DateTime)]
    pub opened_at: String,
    #[schema(format = DateTime)]
    pub closed_at: Option<String>,
    /// Under a legal hold: no retention policy purges it.
    pub held: bool,
    /// Its content was purged by a retention policy.
    pub purged: bool,
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl From<session::Model> for SessionSummary {
    fn from(row: session::Model) -> Self {
        Self {
            id: row.id,
            state: row.status.into(),
            applicant: row.applicant,
            channel: row.channel,
            team: row.team,
            assigned_agent: row.assigned_agent,
            entries: row.last_seq,
            opened_at: time(row.created_at),
            closed_at: row.closed_at.map(time),
            held: false,
            purged: false,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SessionPage {
    pub items: Vec<SessionSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One entry of a session's stream.
#[derive(Serialize, ToSchema)]
pub struct TranscriptEntry {
    pub seq: i64,
    /// `text` (everyone sees it), `note` (staff only) or `event`.
    pub kind: String,
    pub sender: String,
    pub body: String,
    #[schema(format = DateTime)]
    pub at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ReadReceipt {
    pub subject: String,
    pub delivered_seq: i64,
    pub read_seq: i64,
}

/// A change of the reply lock, from the audit chain.
#[derive(Serialize, ToSchema)]
pub struct LockChange {
    #[schema(format = DateTime)]
    pub at: String,
    pub actor: String,
    /// `lock.acquired`, `lock.renewed`, `lock.released`, `lock.taken_over`, `lock.expired`.
    pub action: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct SurveyAnswer {
    pub rating: i16,
    pub comment: Option<String>,
    #[schema(format = DateTime)]
    pub submitted_at: String,
}

/// A session's legal hold.
#[derive(Serialize, ToSchema)]
pub struct HoldInfo {
    pub reason: String,
    pub held_by: String,
    #[schema(format = DateTime)]
    pub held_at: String,
}

/// When and why a session's content was purged: message and note bodies, the reasons given
/// for escalating or closing, and the survey comment are blank from then on.
#[derive(Serialize, ToSchema)]
pub struct PurgeInfo {
    #[schema(format = DateTime)]
    pub purged_at: String,
    /// The retention policy that purged it, and its days then.
    pub policy: String,
    pub keep_days: i32,
}

#[derive(Serialize, ToSchema)]
pub struct Transcript {
    pub session: SessionSummary,
    /// For an agent who has left the session: the last entry they could see (the one that
    /// records their leaving); nothing written after it is shown, and receipts, lock history
    /// and the hold go no further. Absent when the whole transcript is shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visible_through_seq: Option<i64>,
    /// Present while the session is under a legal hold.
    pub hold: Option<HoldInfo>,
    /// Present once retention purged the session's content.
    pub purged: Option<PurgeInfo>,
    /// The stream in order, notes included (this is for staff).
    pub entries: Vec<TranscriptEntry>,
    pub receipts: Vec<ReadReceipt>,
    pub lock_history: Vec<LockChange>,
    pub survey: Option<SurveyAnswer>,
}

/// Limits an agent to sessions they took part in.
fn took_part(username: &str) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(participant::Column::SessionId)
        .from(participant::Entity)
        .and_where(participant::Column::Subject.eq(username))
        .to_owned()
}

/// Sessions, filtered, a page at a time, in the order they were opened.
#[utoipa::path(get, path = "/v1/sessions", operation_id = "listSessions", tag = "sessions",
    params(SessionsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of sessions", body = SessionPage),
        (status = 400, description = "malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SessionsQuery>,
) -> Result<Json<SessionPage>, Problem> {
    let limit = crate::page::size(query.limit, 50, 200)?;
    let after = crate::page::after(query.cursor.as_deref())?;
    let since = crate::filters::time("since", query.since.as_deref())?;
    let until = crate::filters::time("until", query.until.as_deref())?;
    for (name, value, max) in [("agent", &query.agent, 128), ("team", &query.team, 64)] {
        if let Some(value) = value
            && !(1..=max).contains(&value.chars().count())
        {
            return Err(Problem::invalid_field(
                name,
                format_args!("1 to {max} characters"),
            ));
        }
    }
    if [&query.agent, &query.team]
        .into_iter()
        .flatten()
        .any(|value| !crate::storable(value))
    {
        return Ok(Json(SessionPage {
            items: Vec::new(),
            next_cursor: None,
        }));
    }
    let mut select = session::Entity::find();
    if let Some(status) = query.state {
        select = select.filter(session::Column::Status.eq(SessionStatus::from(status)));
    }
    if let Some(agent) = &query.agent {
        select = select.filter(session::Column::AssignedAgent.eq(agent));
    }
    if let Some(team) = &query.team {
        select = select.filter(session::Column::Team.eq(team));
    }
    if let Some(held) = query.held {
        let holds = Query::select()
            .column(legal_hold::Column::SessionId)
            .from(legal_hold::Entity)
            .to_owned();
        select = select.filter(if held {
            session::Column::Id.in_subquery(holds)
        } else {
            session::Column::Id.not_in_subquery(holds)
        });
    }
    if let Some(since) = since {
        select = select.filter(session::Column::CreatedAt.gte(since));
    }
    if let Some(until) = until {
        select = select.filter(session::Column::CreatedAt.lt(until));
    }
    if caller.role == StaffRole::Agent {
        select = select.filter(
            Condition::any()
                .add(session::Column::Id.in_subquery(took_part(&caller.username)))
                .add(session::Column::AssignedAgent.eq(&caller.username)),
        );
    }
    page(&state, select, after, limit).await.map(Json)
}

/// The page of `select` after the first `after` sessions. Sessions have random ids, so pages
/// follow the order they were opened in (then id), and the cursor counts the sessions already
/// listed: new sessions sort last, so a page already read does not shift.
pub(crate) async fn page(
    state: &AdminState,
    select: sea_orm::Select<session::Entity>,
    after: i64,
    limit: u64,
) -> Result<SessionPage, Problem> {
    let rows = select
        .order_by_asc(session::Column::CreatedAt)
        .order_by_asc(session::Column::Id)
        .offset(after as u64)
        .limit(limit + 1)
        .all(state.store.connection())
        .await
        .map_err(|err| crate::database_problem(&err))?;
    let (rows, next_cursor) = crate::page::counted(rows, limit, after);
    let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
    let (held, purged) = crate::retention::marks(state.store.connection(), &ids)
        .await
        .map_err(|err| crate::database_problem(&err))?;
    Ok(SessionPage {
        items: rows
            .into_iter()
            .map(|row| {
                let (is_held, is_purged) = (held.contains(&row.id), purged.contains(&row.id));
                SessionSummary {
                    held: is_held,
                    purged: is_purged,
                    ..row.into()
                }
            })
            .collect(),
        next_cursor,
    })
}

/// A session's transcript.
#[utoipa::path(get, path = "/v1/sessions/{id}/transcript", operation_id = "readTranscript", tag = "sessions",
    params(("id" = String, Path, description = "the session's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the transcript", body = Transcript),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "an agent who did not take part", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such session", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn transcript(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Transcript>, Problem> {
    let missing = || {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "no such session")
            .detail(format!("no session has the id {}", crate::printable(&id)))
    };
    if !crate::storable(&id) {
        return Err(missing());
    }
    let db = state.store.connection();
    let failed = |err: sea_orm::DbErr| crate::database_problem(&err);
    let row = session::Entity::find_by_id(id.clone())
        .one(db)
        .await
        .map_err(failed)?
        .ok_or_else(missing)?;
    let horizon = Horizon::of(db, &caller, &row).await.map_err(failed)?;
    let Some(horizon) = horizon else {
        return Err(forbidden().detail("not one of your sessions"));
    };
    // Who read which session, and how far, is on the record before they see it.
    state
        .audit
        .append(bridge::AuditEntry {
            actor: caller.username.clone(),
            action: "session.transcript.read".to_owned(),
            session_id: Some(id.clone()),
            detail: serde_json::json!({
                "role": crate::staff_role::name(caller.role),
                "through_seq": horizon.through_seq(),
            }),
        })
        .await
        .map_err(|error| crate::audit_problem(&error))?;
    let mut entries = message::Entity::find().filter(message::Column::SessionId.eq(&id));
    if let Some(last) = horizon.through_seq() {
        entries = entries.filter(message::Column::Seq.lte(last));
    }
    let entries = entries
        .order_by_asc(message::Column::Seq)
        .all(db)
        .await
        .map_err(failed)?
        .into_iter()
        .map(|m| TranscriptEntry {
            seq: m.seq,
            kind: match m.kind {
                message::MessageKind::Text => "text",
                message::MessageKind::Note => "note",
                message::MessageKind::Event => "event",
            }
            .to_owned(),
            sender: m.sender,
            body: m.body,
            at: time(m.created_at),
        })
        .collect();
    let receipts = receipt::Entity::find()
        .filter(receipt::Column::SessionId.eq(&id))
        .order_by_asc(receipt::Column::Subject)
        .all(db)
        .await
        .map_err(failed)?
        .into_iter()
        .map(|r| ReadReceipt {
            subject: r.subject,
            delivered_seq: horizon.clamp(r.delivered_seq),
            read_seq: horizon.clamp(r.read_seq),
        })
        .collect();
    let mut lock_history = audit_event::Entity::find()
        .filter(audit_event::Column::SessionId.eq(&id))
        .filter(audit_event::Column::Action.starts_with("lock."));
    if let Horizon::Left { at, .. } = horizon {
        lock_history = lock_history.filter(audit_event::Column::At.lte(at));
    }
    let lock_history = lock_history
        .order_by_asc(audit_event::Column::Id)
        .all(db)
        .await
        .map_err(failed)?
        .into_iter()
        .map(|e| LockChange {
            at: time(e.at),
            actor: e.actor,
            action: e.action,
            detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::String(e.detail)),
        })
        .collect();
    let survey = survey_response::Entity::find()
        .filter(survey_response::Column::SessionId.eq(&id))
        .one(db)
        .await
        .map_err(failed)?
        .filter(|s| horizon.saw(s.submitted_at))
        .map(|s| SurveyAnswer {
            rating: s.rating,
            comment: s.comment,
            submitted_at: time(s.submitted_at),
        });
    let hold = legal_hold::Entity::find_by_id(id.clone())
        .one(db)
        .await
        .map_err(failed)?
        .filter(|h| horizon.saw(h.held_at));
    let purged = session_purge::Entity::find_by_id(id.clone())
        .one(db)
        .await
        .map_err(failed)?;
    Ok(Json(Transcript {
        visible_through_seq: horizon.through_seq(),
        session: SessionSummary {
            held: hold.is_some(),
            purged: purged.is_some(),
            ..row.into()
        },
        hold: hold.map(|h| HoldInfo {
            reason: h.reason,
            held_by: h.held_by,
            held_at: time(h.held_at),
        }),
        purged: purged.map(|p| PurgeInfo {
            purged_at: time(p.purged_at),
            policy: p.policy,
            keep_days: p.keep_days,
        }),
        entries,
        receipts,
        lock_history,
        survey,
    }))
}
