//! The purge's reads and writes: closed sessions a page at a time, and one transaction per
//! batch that blanks the due sessions' content, marks them purged and records on the audit
//! chain what went.
//!
//! A batch's transaction takes the audit chain's head first, as placing or releasing a legal
//! hold does, and only then re-reads the holds: a hold placed while the batch was being chosen
//! is either committed before (and seen) or waits for the batch to end. Nothing is held across
//! batches, and the pipeline's own batches queue for the head only as long as one purge batch
//! takes.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use schemas::db::entities::message::{self, MessageKind};
use schemas::db::entities::session::{self, SessionStatus};
use schemas::db::entities::{legal_hold, retention_policy, session_purge, survey_response};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionTrait,
};
use serde::Serialize;

use crate::audit::{AuditEntry, AuditTrail, in_statement_sizes};
use crate::record::{MessageRecord, RETENTION_PURGED, Redactions, SurveyRecord};

use super::policy::{Candidate, RetentionPolicy, Scope};
use super::redact::{redacted_body, redacted_comment};
use super::{PurgedSession, RetentionError};

/// The stored policies the purge can apply; a row whose scope does not parse (written around
/// the API) is skipped with a warning rather than read as a wider scope.
pub(crate) async fn policies<C: ConnectionTrait>(db: &C) -> Result<Vec<RetentionPolicy>, DbErr> {
    let rows = retention_policy::Entity::find()
        .order_by_asc(retention_policy::Column::Name)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| match row.scope.parse::<Scope>() {
            Ok(scope) if row.keep_days >= 1 => Some(RetentionPolicy {
                name: row.name,
                scope,
                keep_days: row.keep_days as u32,
            }),
            _ => {
                tracing::warn!(policy = %row.name, scope = %row.scope, "a retention policy that cannot be applied is skipped");
                None
            }
        })
        .collect())
}

/// Where the scan of closed sessions goes on from: the last `(closed_at, id)` seen.
pub(crate) type Cursor = (DateTime<Utc>, String);

/// Up to `limit` closed, not yet purged sessions closed at or before `cutoff`, after `after`,
/// oldest first, with whether each is held.
pub(crate) async fn candidates<C: ConnectionTrait>(
    db: &C,
    cutoff: DateTime<Utc>,
    after: Option<&Cursor>,
    limit: u64,
) -> Result<Vec<Candidate>, DbErr> {
    let purged = Query::select()
        .column(session_purge::Column::SessionId)
        .from(session_purge::Entity)
        .to_owned();
    let mut query = session::Entity::find()
        .filter(session::Column::Status.eq(SessionStatus::Closed))
        .filter(session::Column::ClosedAt.is_not_null())
        .filter(session::Column::ClosedAt.lte(cutoff))
        .filter(session::Column::Id.not_in_subquery(purged));
    if let Some((closed_at, id)) = after {
        query = query.filter(
            Condition::any()
                .add(session::Column::ClosedAt.gt(*closed_at))
                .add(
                    Condition::all()
                        .add(session::Column::ClosedAt.eq(*closed_at))
                        .add(session::Column::Id.gt(id.as_str())),
                ),
        );
    }
    let rows = query
        .order_by_asc(session::Column::ClosedAt)
        .order_by_asc(session::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
    let held = held(db, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| Candidate {
            held: held.contains(&row.id),
            session_id: row.id,
            team: row.team,
            channel: row.channel,
            closed_at: row.closed_at,
            purged: false,
        })
        .collect())
}

/// Which of `ids` are under a legal hold.
async fn held<C: ConnectionTrait>(db: &C, ids: &[&str]) -> Result<HashSet<String>, DbErr> {
    let mut held = HashSet::new();
    for run in in_statement_sizes(ids) {
        let rows = legal_hold::Entity::find()
            .filter(legal_hold::Column::SessionId.is_in(run.iter().copied()))
            .all(db)
            .await?;
        held.extend(rows.into_iter().map(|row| row.session_id));
    }
    Ok(held)
}

/// Which of `ids` were purged already.
async fn purged<C: ConnectionTrait>(db: &C, ids: &[&str]) -> Result<HashSet<String>, DbErr> {
    let mut purged = HashSet::new();
    for run in in_statement_sizes(ids) {
        let rows = session_purge::Entity::find()
            .filter(session_purge::Column::SessionId.is_in(run.iter().copied()))
            .all(db)
            .await?;
        purged.extend(rows.into_iter().map(|row| row.session_id));
    }
    Ok(purged)
}

/// A due session and the policy that made it so.
pub(crate) struct Due {
    pub candidate: Candidate,
    pub policy: RetentionPolicy,
}

/// What purging one session changes, worked out from its rows.
pub(crate) struct Plan {
    pub report: PurgedSession,
    /// Message rows whose body changes, by id, with their new body (events only: text and
    /// notes are blanked by one statement per batch).
    events: Vec<(i64, String)>,
    redactions: Redactions,
}

/// Works out what purging `due` would change, from the rows as they are in `db`.
pub(crate) async fn plan<C: ConnectionTrait>(db: &C, due: &[Due]) -> Result<Vec<Plan>, DbErr> {
    let ids: Vec<&str> = due
        .iter()
        .map(|due| due.candidate.session_id.as_str())
        .collect();
    let mut rows: HashMap<String, Vec<message::Model>> = HashMap::new();
    let mut surveys = HashMap::new();
    for run in in_statement_sizes(&ids) {
        for row in message::Entity::find()
            .filter(message::Column::SessionId.is_in(run.iter().copied()))
            .order_by_asc(message::Column::SessionId)
            .order_by_asc(message::Column::Seq)
            .all(db)
            .await?
        {
            rows.entry(row.session_id.clone()).or_default().push(row);
        }
        for row in survey_response::Entity::find()
            .filter(survey_response::Column::SessionId.is_in(run.iter().copied()))
            .all(db)
            .await?
        {
            surveys.insert(row.session_id.clone(), row);
        }
    }
    Ok(due
        .iter()
        .map(|due| {
            let id = &due.candidate.session_id;
            plan_session(
                due,
                rows.get(id).map_or(&[][..], Vec::as_slice),
                surveys.get(id),
            )
        })
        .collect())
}

/// What purging one session changes: a pure function of its rows.
fn plan_session(
    due: &Due,
    rows: &[message::Model],
    survey: Option<&survey_response::Model>,
) -> Plan {
    let mut report = PurgedSession {
        session_id: due.candidate.session_id.clone(),
        policy: due.policy.name.clone(),
        keep_days: due.policy.keep_days,
        // Candidates are closed sessions.
        closed_at: due.candidate.closed_at.unwrap_or_default(),
        first_seq: rows.first().map(|row| row.seq),
        last_seq: rows.last().map(|row| row.seq),
        messages: 0,
        notes: 0,
        events: 0,
        survey_comment: false,
    };
    let mut redactions = Redactions::default();
    let mut events = Vec::new();
    for row in rows {
        let Some(body) = redacted_body(row.kind, &row.body) else {
            continue;
        };
        match row.kind {
            MessageKind::Text => report.messages += 1,
            MessageKind::Note => report.notes += 1,
            MessageKind::Event => {
                report.events += 1;
                events.push((row.id, body.clone()));
            }
        }
        let after = message::Model {
            body,
            ..row.clone()
        };
        redactions.rows.push((
            row.seq,
            MessageRecord::from(row).digest(),
            MessageRecord::from(&after).digest(),
        ));
    }
    if let Some(survey) = survey
        && let Some(comment) = redacted_comment(survey.comment.as_deref())
    {
        report.survey_comment = true;
        let after = survey_response::Model {
            comment,
            ..survey.clone()
        };
        redactions.survey = Some((
            SurveyRecord::from(survey).digest(),
            SurveyRecord::from(&after).digest(),
        ));
    }
    Plan {
        report,
        events,
        redactions,
    }
}

/// The detail of a `retention.purged` entry: what a reader wants to know, and the digests
/// verification needs ([`Redactions`]).
#[derive(Serialize)]
struct Detail<'a> {
    policy: &'a str,
    scope: String,
    keep_days: u32,
    closed_at: String,
    /// The session's stream at the purge, first and last seq.
    first_seq: Option<i64>,
    last_seq: Option<i64>,
    messages: u64,
    notes: u64,
    events: u64,
    survey_comment: bool,
    #[serde(flatten)]
    redactions: &'a Redactions,
}

/// Purges `due` in one transaction (skipping any that a hold or an earlier purge took out of
/// it meanwhile) and returns what went.
pub(crate) async fn purge_batch(
    store: &store::Store,
    audit: &AuditTrail,
    due: Vec<Due>,
    now: DateTime<Utc>,
) -> Result<Vec<PurgedSession>, RetentionError> {
    let txn = store.connection().begin().await?;
    let mut chain = audit.batch(&txn).await?;
    let done = async {
        let ids: Vec<&str> = due
            .iter()
            .map(|due| due.candidate.session_id.as_str())
            .collect();
        let held = held(&txn, &ids).await?;
        let purged = purged(&txn, &ids).await?;
        let due: Vec<Due> = due
            .into_iter()
            .filter(|due| {
                let id = &due.candidate.session_id;
                !held.contains(id) && !purged.contains(id)
            })
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let plans = plan(&txn, &due).await?;
        let ids: Vec<&str> = plans
            .iter()
            .map(|plan| plan.report.session_id.as_str())
            .collect();
        for run in in_statement_sizes(&ids) {
            message::Entity::update_many()
                .col_expr(message::Column::Body, Expr::value(""))
                .filter(message::Column::SessionId.is_in(run.iter().copied()))
                .filter(message::Column::Kind.is_in([MessageKind::Text, MessageKind::Note]))
                .filter(message::Column::Body.ne(""))
                .exec(&txn)
                .await?;
        }
        for (id, body) in plans.iter().flat_map(|plan| &plan.events) {
            message::Entity::update_many()
                .col_expr(message::Column::Body, Expr::value(body.clone()))
                .filter(message::Column::Id.eq(*id))
                .exec(&txn)
                .await?;
        }
        let with_comment: Vec<&str> = plans
            .iter()
            .filter(|plan| plan.report.survey_comment)
            .map(|plan| plan.report.session_id.as_str())
            .collect();
        for run in in_statement_sizes(&with_comment) {
            survey_response::Entity::update_many()
                .col_expr(
                    survey_response::Column::Comment,
                    Expr::value(Option::<String>::None),
                )
                .filter(survey_response::Column::SessionId.is_in(run.iter().copied()))
                .exec(&txn)
                .await?;
        }
        let marks: Vec<session_purge::ActiveModel> = plans
            .iter()
            .map(|plan| session_purge::ActiveModel {
                session_id: Set(plan.report.session_id.clone()),
                purged_at: Set(now),
                policy: Set(plan.report.policy.clone()),
                keep_days: Set(plan.report.keep_days as i32),
            })
            .collect();
        for run in in_statement_sizes(&marks) {
            session_purge::Entity::insert_many(run.to_vec())
                .exec_without_returning(&txn)
                .await?;
        }
        for (plan, due) in plans.iter().zip(&due) {
            let report = &plan.report;
            let detail = Detail {
                policy: &report.policy,
                scope: due.policy.scope.to_string(),
                keep_days: report.keep_days,
                closed_at: report
                    .closed_at
                    .to_rfc3339_opts(SecondsFormat::Micros, true),
                first_seq: report.first_seq,
                last_seq: report.last_seq,
                messages: report.messages,
                notes: report.notes,
                events: report.events,
                survey_comment: report.survey_comment,
                redactions: &plan.redactions,
            };
            chain.append(AuditEntry {
                actor: "retention".to_owned(),
                action: RETENTION_PURGED.to_owned(),
                session_id: Some(report.session_id.clone()),
                detail: serde_json::to_value(&detail)?,
            })?;
        }
        chain.flush(&txn).await?;
        txn.commit().await?;
        Ok::<_, RetentionError>(plans.into_iter().map(|plan| plan.report).collect())
    }
    .await;
    audit.settle(&chain, done.is_ok());
    drop(chain);
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, kind: MessageKind, body: &str) -> message::Model {
        message::Model {
            id: seq * 10,
            session_id: "s".to_owned(),
            seq,
            client_msg_id: format!("c{seq}"),
            sender: "kiosk-1".to_owned(),
            kind,
            body: body.to_owned(),
            created_at: "2027-01-01T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_plan_counts_and_digests_what_changes() {
        let due = Due {
            candidate: Candidate {
                session_id: "s".to_owned(),
                team: None,
                channel: "kiosk".to_owned(),
                closed_at: Some("2027-01-01T11:00:00Z".parse().unwrap()),
                held: false,
                purged: false,
            },
            policy: RetentionPolicy {
                name: "default".to_owned(),
                scope: Scope::All,
                keep_days: 30,
            },
        };
        let rows = [
            row(
                1,
                MessageKind::Event,
                r#"{"type":"opened","channel":"kiosk"}"#,
            ),
            row(2, MessageKind::Text, "Hello"),
            row(3, MessageKind::Note, "check"),
            row(4, MessageKind::Text, ""),
            row(
                5,
                MessageKind::Event,
                r#"{"type":"closed","reason":"done","survey_offered":true}"#,
            ),
        ];
        let survey = survey_response::Model {
            session_id: "s".to_owned(),
            rating: 4,
            comment: Some("clear".to_owned()),
            submitted_at: "2027-01-01T11:01:00Z".parse().unwrap(),
        };
        let plan = plan_session(&due, &rows, Some(&survey));
        let report = &plan.report;
        assert_eq!(
            (
                report.messages,
                report.notes,
                report.events,
                report.survey_comment
            ),
            (1, 1, 1, true)
        );
        assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(5)));
        let seqs: Vec<i64> = plan.redactions.rows.iter().map(|(seq, ..)| *seq).collect();
        assert_eq!(seqs, [2, 3, 5], "only rows with content");
        let (_, before, after) = &plan.redactions.rows[0];
        assert_eq!(before, &MessageRecord::from(&rows[1]).digest());
        assert_eq!(
            after,
            &MessageRecord::from(&row(2, MessageKind::Text, "")).digest()
        );
        assert_eq!(
            plan.events,
            [(50, r#"{"type":"closed","survey_offered":true}"#.to_owned())]
        );

        let nothing = plan_session(&due, &rows[..1], None);
        assert!(nothing.redactions.rows.is_empty() && nothing.redactions.survey.is_none());
    }
}
