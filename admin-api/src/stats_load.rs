//! Reading the rows the figures are computed from ([`crate::stats::Record`]), bounded by the
//! range: the sessions opened in it and their own rows, and the staff's participations and
//! availability changes that overlap it. Nothing outside the range is read, except the last
//! availability change of each member of staff before it (how they stood when it began).

use chrono::{DateTime, Duration, Utc};
use schemas::db::entities::agent;
use schemas::db::entities::message::{self, MessageKind};
use schemas::db::entities::participant::{self, ParticipantRole};
use schemas::db::entities::{audit_event, session, survey_response};
use schemas::wire::StreamContent;
use sea_orm::sea_query::{Expr, Func, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::stats::{AvailabilityChange, Entry, EntryKind, Range, Record, StaffMember, Stint};

/// The audit action of an availability change.
const AVAILABILITY: &str = "staff.availability";

/// How much later than the change it records an availability entry may be written. A change
/// is dated by the pipeline's clock when it decided (the entry's `detail.at`); the row's `at`
/// is when the audit trail wrote it, moments later, and only `at` can be searched.
const AVAILABILITY_WRITE_SLACK: Duration = Duration::hours(1);

/// What the figures are asked about.
#[derive(Clone, Debug)]
pub(crate) struct Scope {
    pub range: Range,
    /// Sessions of this team, and staff of this team.
    pub team: Option<String>,
    /// Sessions assigned to this member of staff, and only them.
    pub agent: Option<String>,
}

impl Scope {
    /// The sessions opened in the range, within the filters.
    pub(crate) fn sessions(&self) -> Condition {
        sessions_opened(
            Some(self.range.since),
            Some(self.range.until),
            self.team.as_deref(),
            self.agent.as_deref(),
        )
    }

    /// The staff within the filters.
    fn staff(&self) -> Condition {
        let mut condition = Condition::all();
        if let Some(team) = &self.team {
            condition = condition.add(agent::Column::Team.eq(team));
        }
        if let Some(agent) = &self.agent {
            condition = condition.add(agent::Column::Subject.eq(agent));
        }
        condition
    }
}

/// Sessions opened in `[since, until)` of `team` assigned to `agent`, each when given.
pub(crate) fn sessions_opened(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    team: Option<&str>,
    agent: Option<&str>,
) -> Condition {
    let mut condition = Condition::all();
    if let Some(since) = since {
        condition = condition.add(session::Column::CreatedAt.gte(since));
    }
    if let Some(until) = until {
        condition = condition.add(session::Column::CreatedAt.lt(until));
    }
    if let Some(team) = team {
        condition = condition.add(session::Column::Team.eq(team));
    }
    if let Some(agent) = agent {
        condition = condition.add(session::Column::AssignedAgent.eq(agent));
    }
    condition
}

/// The ids of the sessions `condition` selects, as a subquery, so that their rows are read
/// without sending the ids back and forth.
pub(crate) fn session_ids(condition: Condition) -> SelectStatement {
    Query::select()
        .column(session::Column::Id)
        .from(session::Entity)
        .cond_where(condition)
        .to_owned()
}

fn staff_subjects(condition: Condition) -> SelectStatement {
    Query::select()
        .column(agent::Column::Subject)
        .from(agent::Entity)
        .cond_where(condition)
        .to_owned()
}

/// Reads the record of `scope`.
pub(crate) async fn load(db: &impl ConnectionTrait, scope: &Scope) -> Result<Record, DbErr> {
    let Range { since, until } = scope.range;
    let sessions = session::Entity::find()
        .filter(scope.sessions())
        .all(db)
        .await?;
    let in_scope = || session_ids(scope.sessions());
    let events = message::Entity::find()
        .filter(message::Column::SessionId.in_subquery(in_scope()))
        .filter(message::Column::Kind.eq(MessageKind::Event))
        .all(db)
        .await?;
    // Texts without their bodies, which no figure needs.
    let texts: Vec<(String, i64, String, DateTime<Utc>)> = message::Entity::find()
        .select_only()
        .columns([
            message::Column::SessionId,
            message::Column::Seq,
            message::Column::Sender,
            message::Column::CreatedAt,
        ])
        .filter(message::Column::SessionId.in_subquery(in_scope()))
        .filter(message::Column::Kind.eq(MessageKind::Text))
        .into_tuple()
        .all(db)
        .await?;
    let mut entries: Vec<Entry> = events
        .into_iter()
        .filter_map(
            |row| match StreamContent::from_stored(row.kind, &row.body)? {
                StreamContent::Event { event } => Some(Entry {
                    session_id: row.session_id,
                    seq: row.seq,
                    sender: row.sender,
                    at: row.created_at,
                    kind: EntryKind::Event(event),
                }),
                _ => None,
            },
        )
        .collect();
    entries.extend(
        texts
            .into_iter()
            .map(|(session_id, seq, sender, at)| Entry {
                session_id,
                seq,
                sender,
                at,
                kind: EntryKind::Text,
            }),
    );
    let surveys = survey_response::Entity::find()
        .filter(survey_response::Column::SessionId.in_subquery(in_scope()))
        .all(db)
        .await?;
    let staff: Vec<(String, Option<String>)> = agent::Entity::find()
        .select_only()
        .columns([agent::Column::Subject, agent::Column::Team])
        .filter(scope.staff())
        .order_by_asc(agent::Column::Subject)
        .into_tuple()
        .all(db)
        .await?;
    let staff = staff
        .into_iter()
        .map(|(subject, team)| StaffMember { subject, team })
        .collect();
    // Staff participations overlapping the range, in sessions that had not closed before it.
    let stints = participant::Entity::find()
        .find_also_related(session::Entity)
        .filter(participant::Column::Subject.in_subquery(staff_subjects(scope.staff())))
        .filter(participant::Column::Role.ne(ParticipantRole::Applicant))
        .filter(participant::Column::JoinedAt.lt(until))
        .filter(
            Condition::any()
                .add(participant::Column::LeftAt.is_null())
                .add(participant::Column::LeftAt.gt(since)),
        )
        .filter(
            Condition::any()
                .add(session::Column::ClosedAt.is_null())
                .add(session::Column::ClosedAt.gt(since)),
        )
        .all(db)
        .await?
        .into_iter()
        .map(|(row, session)| Stint {
            subject: row.subject,
            joined_at: row.joined_at,
            left_at: row.left_at,
            session_closed_at: session.and_then(|s| s.closed_at),
        })
        .collect();
    let availability = availability(db, scope).await?;
    Ok(Record {
        sessions,
        entries,
        surveys,
        staff,
        stints,
        availability,
    })
}

/// The staff's availability changes written in the range (and up to the slack after it), and
/// each one's last change written before it.
async fn availability(
    db: &impl ConnectionTrait,
    scope: &Scope,
) -> Result<Vec<AvailabilityChange>, DbErr> {
    let Range { since, until } = scope.range;
    let subjects = || staff_subjects(scope.staff());
    let last_before: Vec<i64> = audit_event::Entity::find()
        .select_only()
        .expr(Func::max(Expr::col(audit_event::Column::Id)))
        .filter(audit_event::Column::Action.eq(AVAILABILITY))
        .filter(audit_event::Column::Actor.in_subquery(subjects()))
        .filter(audit_event::Column::At.lt(since))
        .group_by(audit_event::Column::Actor)
        .into_tuple()
        .all(db)
        .await?;
    let rows = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq(AVAILABILITY))
        .filter(
            Condition::any()
                .add(audit_event::Column::Id.is_in(last_before))
                .add(
                    Condition::all()
                        .add(audit_event::Column::Actor.in_subquery(subjects()))
                        .add(audit_event::Column::At.gte(since))
                        .add(audit_event::Column::At.lt(until + AVAILABILITY_WRITE_SLACK)),
                ),
        )
        .order_by_asc(audit_event::Column::Id)
        .all(db)
        .await?;
    Ok(rows.into_iter().filter_map(availability_change).collect())
}

/// An availability entry read: `{"before": "available"|"away", "after": …, "at": …}`. The
/// time is the pipeline's (`detail.at`), or the row's when the detail has none.
fn availability_change(row: audit_event::Model) -> Option<AvailabilityChange> {
    let detail: serde_json::Value = serde_json::from_str(&row.detail).ok()?;
    let available = |key: &str| match detail.get(key)?.as_str()? {
        "available" => Some(true),
        "away" => Some(false),
        _ => None,
    };
    let at = detail
        .get("at")
        .and_then(|at| at.as_str())
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        .map_or(row.at, |at| at.with_timezone(&Utc));
    Some(AvailabilityChange {
        at,
        before: available("before")?,
        after: available("after")?,
        subject: row.actor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(detail: &str) -> audit_event::Model {
        audit_event::Model {
            id: 1,
            at: DateTime::parse_from_rfc3339("2026-12-01T08:00:01Z")
                .unwrap()
                .with_timezone(&Utc),
            actor: "ann".into(),
            action: AVAILABILITY.into(),
            session_id: None,
            detail: detail.into(),
            prev_mac: String::new(),
            mac: String::new(),
        }
    }

    #[test]
    fn availability_entries_are_read_from_their_detail() {
        let change = availability_change(row(
            r#"{"before":"away","after":"available","client_msg_id":"a","at":"2026-12-01T08:00:00.5Z"}"#,
        ))
        .unwrap();
        assert_eq!((change.before, change.after), (false, true));
        assert_eq!(change.at.to_rfc3339(), "2026-12-01T08:00:00.500+00:00");
        // Without a time of its own, the row's.
        let change = availability_change(row(r#"{"before":"available","after":"away"}"#)).unwrap();
        assert_eq!(change.at.to_rfc3339(), "2026-12-01T08:00:01+00:00");
        assert!(availability_change(row(r#"{"before":"maybe","after":"away"}"#)).is_none());
        assert!(availability_change(row("not json")).is_none());
    }
}
