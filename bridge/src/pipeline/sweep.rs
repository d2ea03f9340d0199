//! The sweep: every second, and even when nobody writes, a batch of the pipeline's own. It frees
//! reply locks whose lease lapsed, closes sessions whose applicant has gone
//! (`decide::abandon`), takes staff's stored changes (team, capacity, role, disabling) into the
//! roster and the sessions of staff who may no longer hold them back to the queue
//! (`decide::staffing`), and makes the offers the queue then allows.

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use schemas::db::entities::session;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::PipelineError;
use super::decide::{self, Context, Effects, staffing};
use super::decided::Decided;
use super::dispatch;
use super::load::absence_cause;
use super::roster::{Departure, settings};
use super::view::Views;
use super::worker::Worker;

/// How many sweeps look at a departure: enough that one whose decisions were not stored (a
/// failed batch drops them) is acted on again.
const DEPARTURE_SWEEPS: u8 = 5;

impl Worker {
    /// Frees every reply lock whose lease has lapsed (`lock.expired`), closes sessions whose
    /// applicant has gone (`decide::abandon`), takes staff's changes (team, capacity, role,
    /// disabling) and the sessions of staff who may no longer hold them back to the queue
    /// (`decide::staffing`), and makes the offers the queue then allows, as a batch of its own.
    /// The database says which leases may have lapsed; the views decide.
    pub(super) async fn decide_sweep(&mut self) -> Result<Option<Decided>, PipelineError> {
        let now = Utc::now().trunc_subsecs(6);
        let db = self.store.connection();
        self.sweeps += 1;
        if self.sweeps >= 60 {
            self.sweeps = 0;
            self.limits.forget_idle();
        }
        if !self.attendance.is_loaded() {
            self.attendance.load(db, now).await?;
        }
        let lapsed: Vec<String> = session::Entity::find()
            .filter(session::Column::LockHolder.is_not_null())
            .filter(session::Column::LockExpiresAt.lte(now))
            .all(db)
            .await?
            .into_iter()
            .map(|row| row.id)
            .collect();
        let mut fx = Effects::default();
        let (no_staff, no_teams, no_overseers) = Default::default();
        let mut ctx = Context {
            now,
            instant: Instant::now(),
            config: &self.config,
            limits: &self.limits,
            staff: &no_staff,
            teams: &no_teams,
            overseers: &no_overseers,
            attendance: &self.attendance,
        };
        for session_id in &lapsed {
            if !self.views.load(db, session_id).await? {
                continue;
            }
            if let Some(view) = self.views.get_mut(session_id) {
                decide::lock::expire(view, &ctx, &mut fx, session_id);
            }
        }
        let after = Duration::from_secs(self.config.abandon_after_secs);
        for (session_id, gone_since) in decide::abandon::due(ctx.attendance, now, after) {
            if !self.views.load(db, &session_id).await? {
                continue;
            }
            if let Some(view) = self.views.get_mut(&session_id) {
                decide::abandon::close(view, &mut ctx, &mut fx, &session_id, gone_since);
            }
        }
        // An admin's changes to staff (team, capacity, role, disabling) reach the roster here;
        // whoever may no longer hold a session leaves it, and sessions that waited for any of
        // this are offered.
        let mut roster = match self.roster.take() {
            Some(roster) => roster,
            None => dispatch::load(db).await?,
        };
        let stored = dispatch::stored_seats(db).await?;
        // What was known of each member of staff: as the last sweep read it, or for staff seated
        // since (a batch seats newcomers), as their seat says.
        let mut known = self.staff_known.take().unwrap_or_default();
        for (subject, settings) in roster.settings() {
            known.entry(subject).or_insert(settings);
        }
        let mut found = roster.take_departures();
        found.extend(roster.departures(&known, &stored));
        self.staff_known = Some(settings(&stored));
        roster.refresh(stored);
        self.departing.extend(
            found
                .into_iter()
                .map(|departure| (departure, DEPARTURE_SWEEPS)),
        );
        for (departure, _) in &self.departing {
            unseat(&mut self.views, db, &ctx, &mut fx, departure).await?;
        }
        self.departing.retain_mut(|(_, left)| {
            *left -= 1;
            *left > 0
        });
        dispatch::follow(&mut roster, &fx, &self.views, now);
        let metrics = self.metrics.as_deref();
        dispatch::route(&mut self.views, &mut roster, db, &ctx, &mut fx, metrics).await?;
        dispatch::observe_staffing(&roster, metrics);
        self.roster = Some(roster);
        self.attendance.follow(fx.opened_sessions(), &fx.closed);
        if fx.audit.is_empty() {
            return Ok(None);
        }
        fx.seal(&self.views);
        Ok(Some(Decided::effects(fx, now)))
    }
}

/// Takes a member of staff whose seat went or changed out of each session they may no longer
/// hold (`decide::staffing`).
async fn unseat(
    views: &mut Views,
    db: &impl sea_orm::ConnectionTrait,
    ctx: &Context<'_>,
    fx: &mut Effects,
    departure: &Departure,
) -> Result<(), PipelineError> {
    let cause = match &departure.now {
        None => absence_cause(db, &departure.subject).await?,
        Some(_) if departure.role_changed => staffing::Cause::RoleChanged,
        Some(_) => staffing::Cause::TeamChanged,
    };
    let now = departure
        .now
        .as_ref()
        .map(|(role, team)| (*role, team.as_deref()));
    for session_id in &departure.sessions {
        if !views.load(db, session_id).await? {
            continue;
        }
        let Some(view) = views.get_mut(session_id) else {
            continue;
        };
        let member = view.members.contains_key(&departure.subject);
        if view.status == session::SessionStatus::Closed
            || !member
            || !staffing::must_leave(now, view.team.as_deref())
        {
            continue;
        }
        tracing::info!(subject = %departure.subject, session = %session_id, cause = cause.as_str(), "a member of staff leaves a session they may no longer hold");
        decide::departure::unseat(view, ctx, fx, session_id, &departure.subject, cause);
    }
    Ok(())
}
