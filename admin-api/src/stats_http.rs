//! `/v1/stats`: the help desk's figures over a time range (`stats` computes them, `stats_load`
//! reads the rows), as JSON and as CSV; and `/v1/surveys/export`, the survey answers as JSON
//! Lines for whoever analyses feedback. Admins and supervisors only.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use schemas::db::entities::agent::StaffRole;
use schemas::db::entities::{session, survey_response};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::extract::ApiQuery;
use crate::stats::{Durations, Range, Record, SessionFigures, Stats, Utilization};
use crate::stats_load::{self, Scope};
use crate::{AdminState, Problem};

/// Survey answers per page of an export.
const EXPORT_PAGE: u64 = 500;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Start of the range (RFC 3339): sessions opened at or after it, staff time from it.
    #[param(format = DateTime)]
    pub since: String,
    /// End of the range (RFC 3339, exclusive; a time still to come counts as now).
    #[param(format = DateTime)]
    pub until: String,
    /// Sessions of this team, and staff of this team.
    #[param(min_length = 1, max_length = 64)]
    pub team: Option<String>,
    /// Sessions assigned to this member of staff, and only their time.
    #[param(min_length = 1, max_length = 128)]
    pub agent: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SurveyExportQuery {
    /// Answers about sessions opened at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Answers about sessions opened before this time (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Answers about sessions of this team.
    #[param(min_length = 1, max_length = 64)]
    pub team: Option<String>,
    /// Answers about sessions assigned to this member of staff.
    #[param(min_length = 1, max_length = 128)]
    pub agent: Option<String>,
}

/// One survey answer of the export.
#[derive(Serialize, ToSchema)]
pub struct SurveyLine {
    pub session_id: String,
    /// The session's team.
    pub team: Option<String>,
    /// The member of staff the session was assigned to.
    pub agent: Option<String>,
    /// 1 (poor) to 5 (excellent).
    pub rating: i16,
    pub comment: Option<String>,
    #[schema(format = DateTime)]
    pub submitted_at: String,
}

/// `team` and `agent` checked; `false` when one names nothing that can be stored (NUL), so
/// the answer is empty without asking the database.
fn names(team: Option<&str>, agent: Option<&str>) -> Result<bool, Problem> {
    for (name, value, max) in [("team", team, 64), ("agent", agent, 128)] {
        if let Some(value) = value
            && !(1..=max).contains(&value.chars().count())
        {
            return Err(Problem::invalid_field(
                name,
                format_args!("1 to {max} characters"),
            ));
        }
    }
    Ok([team, agent].into_iter().flatten().all(crate::storable))
}

/// The figures the query asks for.
async fn figures(state: &AdminState, query: StatsQuery) -> Result<Stats, Problem> {
    let since = crate::filters::time("since", Some(&query.since))?.unwrap_or_default();
    let until = crate::filters::time("until", Some(&query.until))?.unwrap_or_default();
    let storable = names(query.team.as_deref(), query.agent.as_deref())?;
    // Staff time still to come is not time anyone spent; an inverted range is an empty one.
    let until = until.min(Utc::now());
    let range = Range {
        since,
        until: until.max(since),
    };
    if !storable || range.since == range.until {
        return Ok(crate::stats::compute(range, &Record::default()));
    }
    let scope = Scope {
        range,
        team: query.team,
        agent: query.agent,
    };
    let record = stats_load::load(state.store.connection(), &scope)
        .await
        .map_err(|err| crate::database_problem(&err))?;
    Ok(crate::stats::compute(range, &record))
}

/// The help desk's figures over a time range, overall, per team and per member of staff.
///
/// Session figures are over the sessions opened in the range; a session counts for its team
/// and for the agent it is assigned to (the last one to hold it). **First response**: from the
/// session's `opened` entry to the first `text` entry whose sender is not the applicant;
/// sessions without one are unanswered. **Resolution**: from `opened` to `closed`, closed
/// sessions only, with the share within the 5-minute target. **Outcome** of a closed session,
/// the first that applies: escalated, transferred, answered (a staff text), unanswered.
/// **Satisfaction**: average rating, answers per rating, response rate = survey answers /
/// closed sessions (target: 4 of 5). **No delivery latency**: the record keeps only each
/// participant's latest receipt, whose time moves with reads too, so it cannot tell when a
/// message was delivered; the server's part of delivery is in `/metrics`
/// (`courtchat_submission_to_commit_seconds`, `courtchat_commit_to_delivery_seconds`).
/// **Utilization** of a member of staff: time in at least one active chat
/// (participation as agent or supervisor, from joining to the first of leaving, the session's
/// close and the range's end) while signed in, over signed-in time; signed in = available
/// according to the `staff.availability` audit entries, clipped to the range; null when
/// never signed in; target band 70–85 %. Per team, utilization sums the team's staff.
#[utoipa::path(get, path = "/v1/stats", operation_id = "readStats", tag = "statistics",
    params(StatsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the figures", body = Stats),
        (status = 400, description = "malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins and supervisors read statistics", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stats(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Json<Stats>, Problem> {
    caller.require(&[StaffRole::Admin, StaffRole::Supervisor])?;
    figures(&state, query).await.map(Json)
}

/// The figures of `/v1/stats` as CSV: a header line, then one row overall, one per team and
/// one per member of staff (`scope` says which). Durations in milliseconds; empty cells where
/// `/v1/stats` has null.
#[utoipa::path(get, path = "/v1/stats/export.csv", operation_id = "exportStatsCsv", tag = "statistics",
    params(StatsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the figures, one row per scope", body = String, content_type = "text/csv"),
        (status = 400, description = "malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins and supervisors read statistics", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_csv(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> Result<Response, Problem> {
    caller.require(&[StaffRole::Admin, StaffRole::Supervisor])?;
    let stats = figures(&state, query).await?;
    let mut response = csv(&stats).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"courtchat-stats.csv\""),
    );
    Ok(response)
}

/// Survey answers as JSON Lines (session id, its team and agent, rating, comment, when),
/// streamed in the order of the session ids, for the sessions opened in the range.
#[utoipa::path(get, path = "/v1/surveys/export", operation_id = "exportSurveys", tag = "statistics",
    params(SurveyExportQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "every matching answer, one JSON object (SurveyLine) per line", body = String, content_type = "application/x-ndjson"),
        (status = 400, description = "malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "only admins and supervisors export", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_surveys(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SurveyExportQuery>,
) -> Result<Response, Problem> {
    caller.require(&[StaffRole::Admin, StaffRole::Supervisor])?;
    let since = crate::filters::time("since", query.since.as_deref())?;
    let until = crate::filters::time("until", query.until.as_deref())?;
    let storable = names(query.team.as_deref(), query.agent.as_deref())?;
    let sessions =
        stats_load::sessions_opened(since, until, query.team.as_deref(), query.agent.as_deref());
    let db = state.store.connection().clone();
    // Page after page, each read when the previous one has been sent; `None`: done.
    let start = storable.then(String::new);
    let pages = futures_util::stream::unfold(start, move |after| {
        let (sessions, db) = (sessions.clone(), db.clone());
        async move {
            let after = after?;
            match survey_page(&db, sessions, &after).await {
                Ok(lines) if lines.is_empty() => None,
                Ok(lines) => {
                    let next = (lines.len() as u64 == EXPORT_PAGE)
                        .then(|| lines.last().map(|l| l.session_id.clone()))
                        .flatten();
                    let mut bytes = Vec::new();
                    for line in lines {
                        let _ = serde_json::to_writer(&mut bytes, &line);
                        bytes.push(b'\n');
                    }
                    Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), next))
                }
                Err(error) => {
                    // The status is sent; cutting the body short tells the client it is incomplete.
                    tracing::error!(%error, "the survey export failed part way");
                    Some((Err(std::io::Error::other("the survey export failed")), None))
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

/// The answers after session `after` about the sessions `sessions` selects, with their
/// sessions' team and agent.
async fn survey_page(
    db: &sea_orm::DatabaseConnection,
    sessions: sea_orm::Condition,
    after: &str,
) -> Result<Vec<SurveyLine>, sea_orm::DbErr> {
    let answers = survey_response::Entity::find()
        .filter(survey_response::Column::SessionId.in_subquery(stats_load::session_ids(sessions)))
        .filter(survey_response::Column::SessionId.gt(after))
        .order_by_asc(survey_response::Column::SessionId)
        .limit(EXPORT_PAGE)
        .all(db)
        .await?;
    let ids: Vec<&str> = answers.iter().map(|a| a.session_id.as_str()).collect();
    let rows: Vec<(String, Option<String>, Option<String>)> = session::Entity::find()
        .select_only()
        .columns([
            session::Column::Id,
            session::Column::Team,
            session::Column::AssignedAgent,
        ])
        .filter(session::Column::Id.is_in(ids))
        .into_tuple()
        .all(db)
        .await?;
    let of: std::collections::HashMap<String, (Option<String>, Option<String>)> = rows
        .into_iter()
        .map(|(id, team, agent)| (id, (team, agent)))
        .collect();
    Ok(answers
        .into_iter()
        .map(|answer| {
            let (team, agent) = of.get(&answer.session_id).cloned().unwrap_or_default();
            SurveyLine {
                team,
                agent,
                rating: answer.rating,
                comment: answer.comment,
                submitted_at: crate::stats::time(answer.submitted_at),
                session_id: answer.session_id,
            }
        })
        .collect())
}

/// The CSV's columns, in order.
const COLUMNS: &[&str] = &[
    "scope",
    "team",
    "agent",
    "sessions",
    "queued",
    "active",
    "escalated",
    "closed",
    "outcome_escalated",
    "outcome_transferred",
    "outcome_answered",
    "outcome_unanswered",
    "first_response_answered",
    "first_response_unanswered",
    "first_response_mean_ms",
    "first_response_p50_ms",
    "first_response_p90_ms",
    "first_response_max_ms",
    "resolution_closed",
    "resolution_mean_ms",
    "resolution_p50_ms",
    "resolution_p90_ms",
    "resolution_max_ms",
    "resolution_within_target",
    "resolution_within_target_share",
    "survey_responses",
    "satisfaction_average",
    "rating_1",
    "rating_2",
    "rating_3",
    "rating_4",
    "rating_5",
    "survey_response_rate",
    "signed_in_ms",
    "in_chat_ms",
    "in_chat_while_away_ms",
    "utilization",
    "utilization_in_target_band",
];

/// `stats` as CSV (RFC 4180, CRLF line ends).
fn csv(stats: &Stats) -> String {
    let mut out = String::new();
    line(&mut out, COLUMNS.iter().map(|c| c.to_string()));
    let overall = &stats.overall;
    line(
        &mut out,
        row(
            "overall",
            None,
            None,
            &overall.sessions,
            &overall.utilization,
        ),
    );
    for team in &stats.teams {
        let cells = row(
            "team",
            team.team.as_deref(),
            None,
            &team.sessions,
            &team.utilization,
        );
        line(&mut out, cells);
    }
    for agent in &stats.agents {
        let cells = row(
            "agent",
            agent.team.as_deref(),
            Some(&agent.agent),
            &agent.sessions,
            &agent.utilization,
        );
        line(&mut out, cells);
    }
    out
}

fn line(out: &mut String, cells: impl Iterator<Item = String>) {
    let cells: Vec<String> = cells.map(|cell| cell_text(&cell)).collect();
    out.push_str(&cells.join(","));
    out.push_str("\r\n");
}

/// A cell as CSV holds it: quoted when it has a comma, a quote or a line end; and a text that
/// a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) led by `'`, since a
/// team name comes from the applicant's request.
fn cell_text(cell: &str) -> String {
    let cell = if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    };
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}

fn row(
    scope: &str,
    team: Option<&str>,
    agent: Option<&str>,
    s: &SessionFigures,
    u: &Utilization,
) -> impl Iterator<Item = String> {
    fn opt<T: ToString>(value: Option<T>) -> String {
        value.map(|v| v.to_string()).unwrap_or_default()
    }
    let spread = |d: &Durations| [opt(d.mean_ms), opt(d.p50_ms), opt(d.p90_ms), opt(d.max_ms)];
    let (fr, res, sat) = (&s.first_response, &s.resolution, &s.satisfaction);
    let mut cells = vec![
        scope.to_owned(),
        opt(team),
        opt(agent),
        s.by_state.total.to_string(),
        s.by_state.queued.to_string(),
        s.by_state.active.to_string(),
        s.by_state.escalated.to_string(),
        s.by_state.closed.to_string(),
        s.outcomes.escalated.to_string(),
        s.outcomes.transferred.to_string(),
        s.outcomes.answered.to_string(),
        s.outcomes.unanswered.to_string(),
        fr.answered.to_string(),
        fr.unanswered.to_string(),
    ];
    cells.extend(spread(&fr.time));
    cells.push(res.time.count.to_string());
    cells.extend(spread(&res.time));
    cells.extend([
        res.within_target.to_string(),
        opt(res.within_target_share),
        sat.responses.to_string(),
        opt(sat.average),
        sat.ratings.one.to_string(),
        sat.ratings.two.to_string(),
        sat.ratings.three.to_string(),
        sat.ratings.four.to_string(),
        sat.ratings.five.to_string(),
        opt(sat.response_rate),
        u.signed_in_ms.to_string(),
        u.in_chat_ms.to_string(),
        u.in_chat_while_away_ms.to_string(),
        opt(u.share),
        opt(u.in_target_band),
    ]);
    cells.into_iter()
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::stats::compute;

    fn parsed(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a test time")
            .with_timezone(&Utc)
    }

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        // (cell, as written)
        let rows = [
            ("fees", "fees"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            ("-1+2", "'-1+2"),
            ("@sum", "'@sum"),
            ("two\nlines", "\"two\nlines\""),
            ("", ""),
        ];
        for (cell, expected) in rows {
            assert_eq!(cell_text(cell), expected, "{cell:?}");
        }
    }

    #[test]
    fn the_csv_has_a_header_and_a_row_per_scope_of_equal_width() {
        let range = Range {
            since: parsed("2026-12-01T08:00:00Z"),
            until: parsed("2026-12-01T16:00:00Z"),
        };
        let text = csv(&compute(range, &Record::default()));
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 2, "header and overall");
        assert_eq!(lines[0].split(',').count(), COLUMNS.len());
        assert_eq!(lines[1].split(',').count(), COLUMNS.len());
        assert!(lines[1].starts_with("overall,,,0,0,0,0,0,"));
    }
}
