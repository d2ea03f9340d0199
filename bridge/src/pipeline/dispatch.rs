//! The queue's part of a batch: reading the roster from the database, keeping it current with
//! what the batch decided, and making the offers it then allows (see `roster` for the rule and
//! `decide::routing` for what an offer records).

use chrono::{DateTime, Utc};
use schemas::db::entities::{agent, participant, session};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

use super::PipelineError;
use super::decide::{Context, Effects, ParticipantChange, routing};
use super::roster::{Roster, StoredSeat};
use super::view::Views;

/// Active staff who take part in sessions (agents and supervisors), as stored.
pub(super) async fn stored_seats(
    db: &impl ConnectionTrait,
) -> Result<Vec<StoredSeat>, PipelineError> {
    let rows = agent::Entity::find()
        .filter(agent::Column::Active.eq(true))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let role = participant::ParticipantRole::try_from(row.role).ok()?;
            Some(StoredSeat {
                subject: row.subject,
                role,
                team: row.team,
                capacity: usize::try_from(row.capacity).unwrap_or(0),
                available: row.available,
            })
        })
        .collect())
}

/// The roster as stored: seats, the open sessions their holders take part in, and the
/// sessions waiting, oldest first.
pub(super) async fn load(db: &impl ConnectionTrait) -> Result<Roster, PipelineError> {
    let mut roster = Roster::default();
    roster.refresh(stored_seats(db).await?);
    let open = session::Entity::find()
        .filter(session::Column::Status.ne(session::SessionStatus::Closed))
        .order_by_asc(session::Column::CreatedAt)
        .all(db)
        .await?;
    let mut open_ids = Vec::new();
    for row in open {
        if row.status == session::SessionStatus::Queued {
            // The table keeps no time of queueing; a session returned to the queue waits from
            // its creation here, which only moves it forward after a restart.
            roster.enqueue(&row.id, row.team, row.created_at);
        }
        open_ids.push(row.id);
    }
    for ids in open_ids.chunks(512) {
        let members = participant::Entity::find()
            .filter(participant::Column::SessionId.is_in(ids.to_vec()))
            .filter(participant::Column::LeftAt.is_null())
            .filter(participant::Column::Role.ne(participant::ParticipantRole::Applicant))
            .all(db)
            .await?;
        for member in members {
            if roster.seat(&member.subject).is_some() {
                roster.joined(&member.session_id, &member.subject);
            } else {
                roster.seatless(&member.session_id, &member.subject);
            }
        }
    }
    Ok(roster)
}

/// Brings the roster up to date with a batch's decisions, before its offers are made: who
/// joined or left which session, which sessions wait and which no longer do.
pub(super) fn follow(roster: &mut Roster, fx: &Effects, views: &Views, now: DateTime<Utc>) {
    for change in &fx.participants {
        match change {
            ParticipantChange::Joined {
                session_id,
                subject,
                ..
            } => roster.joined(session_id, subject),
            ParticipantChange::Left {
                session_id,
                subject,
                ..
            } => roster.left(session_id, subject),
        }
    }
    let opened = fx.opened_sessions().map(|(id, _)| id);
    for session_id in opened.chain(fx.changed.iter().map(String::as_str)) {
        let Some(view) = views.get(session_id) else {
            continue;
        };
        match view.status {
            session::SessionStatus::Queued => roster.enqueue(session_id, view.team.clone(), now),
            session::SessionStatus::Closed => roster.closed(session_id),
            session::SessionStatus::Active | session::SessionStatus::Escalated => {
                roster.unqueue(session_id)
            }
        }
    }
    for session_id in &fx.closed {
        roster.closed(session_id);
    }
}

/// Makes every offer the roster allows, loading the sessions' views as needed, and tells
/// `metrics` how long each offered session waited and how many still wait.
pub(super) async fn route(
    views: &mut Views,
    roster: &mut Roster,
    db: &impl ConnectionTrait,
    ctx: &Context<'_>,
    fx: &mut Effects,
    metrics: Option<&telemetry::Metrics>,
) -> Result<(), PipelineError> {
    while let Some((session_id, agent)) = roster.next_offer() {
        if !views.load(db, &session_id).await? {
            roster.closed(&session_id);
            continue;
        }
        let Some(view) = views.get_mut(&session_id) else {
            continue;
        };
        if view.status != session::SessionStatus::Queued {
            // Taken or closed by a decision the roster has not followed: not waiting.
            roster.unqueue(&session_id);
            continue;
        }
        routing::offer(view, roster, ctx, fx, &session_id, &agent);
        if let (Some(metrics), Some(since)) = (metrics, roster.waiting_since(&session_id)) {
            let waited = (ctx.now - since).to_std().unwrap_or_default();
            let router = metrics.queue_wait.with_label_values(&[routing::ROUTER]);
            router.observe(waited.as_secs_f64());
        }
        roster.offered(&session_id, &agent, ctx.now);
    }
    if let Some(metrics) = metrics {
        metrics.queue_waiting.set(roster.waiting() as i64);
    }
    Ok(())
}

/// Sets the staffing gauges. Counting walks every seat, so the sweep does it once a second
/// rather than every batch (a scrape reads them every few seconds at most).
pub(super) fn observe_staffing(roster: &Roster, metrics: Option<&telemetry::Metrics>) {
    if let Some(metrics) = metrics {
        let (available, in_chats) = roster.staffing();
        metrics.staff_available.set(available as i64);
        metrics.staff_in_chats.set(in_chats as i64);
    }
}
