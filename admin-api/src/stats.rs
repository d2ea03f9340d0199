//! The help desk's figures over a time range, computed from the stored record: first-response
//! and resolution times, satisfaction, sessions by state and outcome,
//! and agent utilization, overall, per team and per agent.
//!
//! [`compute`] is a pure function of the range and rows already read (`stats_load` reads them):
//! nothing here asks a clock or a database, so the definitions below are tested on hand-made
//! rows. The definitions, which the API documentation repeats:
//!
//! - **Scope.** Session figures are over the sessions *opened* in the range; a session counts
//!   for its team (`sessions.team`) and for its assigned agent (the one holding it last).
//! - **First response**: from the session's `opened` entry to the first `text` entry whose
//!   sender is not the applicant (nor `system`); a session without one is unanswered.
//! - **Resolution**: from the `opened` entry to the `closed` entry, for closed sessions; the
//!   share within [`RESOLUTION_TARGET_MS`] (inclusive) is reported too.
//! - **Outcome** of a closed session, the first that applies: escalated (an `escalated` entry),
//!   transferred (a `transferred` entry), answered (a staff text), unanswered.
//! - **Satisfaction**: the average rating, the count of each rating, and the response rate
//!   (survey answers over closed sessions).
//! - **No delivery latency.** The record keeps only each participant's latest receipt, whose
//!   time moves with reads too, so a figure computed from it measured reading, not delivery
//!   (it said 113-142 s for messages shown within 100 ms), and none is given. The server's
//!   part of delivery is measured as it happens, in `/metrics`
//!   (`courtchat_submission_to_commit_seconds`, `courtchat_commit_to_delivery_seconds`).
//! - **Utilization** of a member of staff: time in at least one active chat (a staff
//!   participation, from `joined_at` to the first of `left_at`, the session's close and the
//!   range's end) while signed in, over time signed in; signed in means available according to
//!   the `staff.availability` entries, clipped to the range. Nobody signed in: no figure.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use schemas::db::entities::session::{self, SessionStatus};
use schemas::wire::SessionEvent;
use serde::Serialize;
use utoipa::ToSchema;

pub(crate) use crate::stats_record::{
    AvailabilityChange, Entry, EntryKind, Range, Record, StaffMember, Stint,
};
use crate::stats_utilization::{StaffTime, staff_utilization};

/// The field's target for resolution: within five minutes.
pub(crate) const RESOLUTION_TARGET_MS: i64 = 5 * 60 * 1000;
/// The field's target band for utilization: 70 to 85 % of signed-in time in chats.
pub(crate) const UTILIZATION_BAND: (f64, f64) = (0.70, 0.85);
/// The field's target for the average rating: 4 of 5 or better.
pub(crate) const SATISFACTION_TARGET: f64 = 4.0;

/// Who `system` entries come from; not a reply.
const SYSTEM: &str = "system";

/// The figures over a range.
#[derive(Debug, PartialEq, Serialize, ToSchema)]
pub struct Stats {
    /// Start of the range (inclusive).
    #[schema(format = DateTime)]
    pub since: String,
    /// End of the range (exclusive).
    #[schema(format = DateTime)]
    pub until: String,
    pub targets: Targets,
    /// Every session and member of staff in the filters.
    pub overall: Overall,
    /// Per team: sessions by the session's team, utilization by the staff member's team.
    pub teams: Vec<TeamStats>,
    /// Per member of staff who had a session, a chat or signed-in time in the range.
    pub agents: Vec<AgentStats>,
}

/// The field's targets the figures are compared with.
#[derive(Debug, PartialEq, Serialize, ToSchema)]
pub struct Targets {
    /// Resolution within this many milliseconds (5 minutes).
    pub resolution_ms: i64,
    /// The utilization band's lower end (0.70).
    pub utilization_low: f64,
    /// The utilization band's upper end (0.85).
    pub utilization_high: f64,
    /// The average rating to reach (4 of 5).
    pub satisfaction_average: f64,
}

#[derive(Debug, PartialEq, Serialize, ToSchema)]
pub struct Overall {
    pub sessions: SessionFigures,
    pub utilization: Utilization,
}

#[derive(Debug, PartialEq, Serialize, ToSchema)]
pub struct TeamStats {
    /// The team; null for sessions and staff without one.
    pub team: Option<String>,
    pub sessions: SessionFigures,
    pub utilization: Utilization,
}

#[derive(Debug, PartialEq, Serialize, ToSchema)]
pub struct AgentStats {
    /// The member of staff's username.
    pub agent: String,
    pub team: Option<String>,
    /// The sessions assigned to them.
    pub sessions: SessionFigures,
    pub utilization: Utilization,
}

/// What happened to a set of sessions.
#[derive(Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct SessionFigures {
    pub by_state: StateCounts,
    /// Closed sessions by outcome.
    pub outcomes: Outcomes,
    pub first_response: FirstResponse,
    pub resolution: Resolution,
    pub satisfaction: Satisfaction,
}

#[derive(Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct StateCounts {
    pub total: u64,
    pub queued: u64,
    pub active: u64,
    pub escalated: u64,
    pub closed: u64,
}

/// Closed sessions by outcome; each counts once, under the first that applies.
#[derive(Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct Outcomes {
    /// Escalated at some point.
    pub escalated: u64,
    /// Transferred at some point (and not escalated).
    pub transferred: u64,
    /// Staff replied (and it was neither escalated nor transferred).
    pub answered: u64,
    /// Closed without a staff reply.
    pub unanswered: u64,
}

#[derive(Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct FirstResponse {
    /// Sessions with a staff reply.
    pub answered: u64,
    /// Sessions without one (yet).
    pub unanswered: u64,
    /// From `opened` to the first staff text, over the answered sessions.
    pub time: Durations,
}

#[derive(Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct Resolution {
    /// From `opened` to `closed`, over the closed sessions.
    pub time: Durations,
    /// Closed sessions resolved within the target.
    pub within_target: u64,
    /// Their share of the closed sessions; null without closed sessions.
    pub within_target_share: Option<f64>,
}

#[derive(Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct Satisfaction {
    /// Survey answers.
    pub responses: u64,
    /// Their average rating, 1 to 5; null without answers.
    pub average: Option<f64>,
    /// Answers per rating.
    pub ratings: RatingCounts,
    /// Answers over closed sessions; null without closed sessions.
    pub response_rate: Option<f64>,
    /// Whether the average reaches the target; null without answers.
    pub meets_target: Option<bool>,
}

#[derive(Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct RatingCounts {
    #[serde(rename = "1")]
    pub one: u64,
    #[serde(rename = "2")]
    pub two: u64,
    #[serde(rename = "3")]
    pub three: u64,
    #[serde(rename = "4")]
    pub four: u64,
    #[serde(rename = "5")]
    pub five: u64,
}

/// A distribution of durations in milliseconds; percentiles by nearest rank. Null figures
/// when there are no samples.
#[derive(Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct Durations {
    pub count: u64,
    pub mean_ms: Option<i64>,
    pub p50_ms: Option<i64>,
    pub p90_ms: Option<i64>,
    pub p95_ms: Option<i64>,
    pub p99_ms: Option<i64>,
    pub max_ms: Option<i64>,
}

/// Signed-in time and the part of it spent in chats.
#[derive(Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct Utilization {
    /// Time available (signed in) within the range.
    pub signed_in_ms: i64,
    /// Time in at least one active chat while signed in.
    pub in_chat_ms: i64,
    /// Time in chats while not signed in (away): not part of the share, shown so it is not lost.
    pub in_chat_while_away_ms: i64,
    /// `in_chat_ms / signed_in_ms`; null when never signed in.
    pub share: Option<f64>,
    /// Whether the share is within the target band; null when there is no share.
    pub in_target_band: Option<bool>,
}

/// The figures of `record` over `range`.
pub(crate) fn compute(range: Range, record: &Record) -> Stats {
    let facts = session_facts(record);
    let utilization = staff_utilization(range, record);
    let team_of: HashMap<&str, Option<&str>> = record
        .staff
        .iter()
        .map(|m| (m.subject.as_str(), m.team.as_deref()))
        .collect();
    // Listed: staff with a session, a chat or an availability change in the range.
    let assigned: BTreeSet<&str> = facts
        .iter()
        .filter_map(|f| f.row.assigned_agent.as_deref())
        .collect();
    let listed: Vec<&StaffMember> = record
        .staff
        .iter()
        .filter(|m| {
            assigned.contains(m.subject.as_str())
                || utilization
                    .get(m.subject.as_str())
                    .is_some_and(|u| u.active)
        })
        .collect();
    let agents = {
        let mut agents: Vec<AgentStats> = listed
            .iter()
            .map(|m| AgentStats {
                agent: m.subject.clone(),
                team: m.team.clone(),
                sessions: figures(
                    facts
                        .iter()
                        .filter(|f| f.row.assigned_agent.as_deref() == Some(&m.subject)),
                ),
                utilization: summed(utilization.get(m.subject.as_str()).into_iter()),
            })
            .collect();
        agents.sort_by(|a, b| a.agent.cmp(&b.agent));
        agents
    };
    let teams: BTreeSet<Option<&str>> = facts
        .iter()
        .map(|f| f.row.team.as_deref())
        .chain(listed.iter().map(|m| m.team.as_deref()))
        .collect();
    let teams = teams
        .into_iter()
        .map(|team| TeamStats {
            team: team.map(str::to_owned),
            sessions: figures(facts.iter().filter(|f| f.row.team.as_deref() == team)),
            utilization: summed(
                listed
                    .iter()
                    .filter(|m| team_of.get(m.subject.as_str()).copied().flatten() == team)
                    .filter_map(|m| utilization.get(m.subject.as_str())),
            ),
        })
        .collect();
    Stats {
        since: time(range.since),
        until: time(range.until),
        targets: Targets {
            resolution_ms: RESOLUTION_TARGET_MS,
            utilization_low: UTILIZATION_BAND.0,
            utilization_high: UTILIZATION_BAND.1,
            satisfaction_average: SATISFACTION_TARGET,
        },
        overall: Overall {
            sessions: figures(facts.iter()),
            utilization: summed(
                listed
                    .iter()
                    .filter_map(|m| utilization.get(m.subject.as_str())),
            ),
        },
        teams,
        agents,
    }
}

pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// How a closed session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Escalated,
    Transferred,
    Answered,
    Unanswered,
}

/// What one session contributes to the figures.
struct SessionFacts<'a> {
    row: &'a session::Model,
    first_response_ms: Option<i64>,
    /// For closed sessions.
    resolution_ms: Option<i64>,
    outcome: Option<Outcome>,
    rating: Option<i16>,
}

fn millis(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

fn session_facts(record: &Record) -> Vec<SessionFacts<'_>> {
    let mut streams: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for entry in &record.entries {
        streams.entry(&entry.session_id).or_default().push(entry);
    }
    for stream in streams.values_mut() {
        stream.sort_by_key(|e| e.seq);
    }
    let ratings: HashMap<&str, i16> = record
        .surveys
        .iter()
        .map(|s| (s.session_id.as_str(), s.rating))
        .collect();
    record
        .sessions
        .iter()
        .map(|row| {
            let stream = streams.get(row.id.as_str()).map_or(&[][..], Vec::as_slice);
            let event = |wanted: fn(&SessionEvent) -> bool| {
                stream.iter().find(|e| match &e.kind {
                    EntryKind::Event(event) => wanted(event),
                    EntryKind::Text => false,
                })
            };
            let opened_at = event(|e| matches!(e, SessionEvent::Opened { .. }))
                .map_or(row.created_at, |e| e.at);
            let first_reply = stream.iter().find(|e| {
                matches!(e.kind, EntryKind::Text) && e.sender != row.applicant && e.sender != SYSTEM
            });
            let closed = row.status == SessionStatus::Closed;
            let closed_at = event(|e| matches!(e, SessionEvent::Closed { .. }))
                .map(|e| e.at)
                .or(row.closed_at);
            let outcome = closed.then(|| {
                if event(|e| matches!(e, SessionEvent::Escalated { .. })).is_some() {
                    Outcome::Escalated
                } else if event(|e| matches!(e, SessionEvent::Transferred { .. })).is_some() {
                    Outcome::Transferred
                } else if first_reply.is_some() {
                    Outcome::Answered
                } else {
                    Outcome::Unanswered
                }
            });
            SessionFacts {
                row,
                first_response_ms: first_reply.map(|e| millis(opened_at, e.at).max(0)),
                resolution_ms: closed
                    .then_some(closed_at)
                    .flatten()
                    .map(|at| millis(opened_at, at).max(0)),
                outcome,
                rating: ratings.get(row.id.as_str()).copied(),
            }
        })
        .collect()
}

/// `numerator / denominator` to four decimals; none over nothing.
fn share(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| round4(numerator as f64 / denominator as f64))
}

fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

fn figures<'a, 'r: 'a>(facts: impl Iterator<Item = &'a SessionFacts<'r>>) -> SessionFigures {
    let mut figures = SessionFigures::default();
    let (mut first_responses, mut resolutions) = (Vec::new(), Vec::new());
    let mut rating_sum = 0u64;
    for fact in facts {
        let states = &mut figures.by_state;
        states.total += 1;
        match fact.row.status {
            SessionStatus::Queued => states.queued += 1,
            SessionStatus::Active => states.active += 1,
            SessionStatus::Escalated => states.escalated += 1,
            SessionStatus::Closed => states.closed += 1,
        }
        let outcomes = &mut figures.outcomes;
        match fact.outcome {
            Some(Outcome::Escalated) => outcomes.escalated += 1,
            Some(Outcome::Transferred) => outcomes.transferred += 1,
            Some(Outcome::Answered) => outcomes.answered += 1,
            Some(Outcome::Unanswered) => outcomes.unanswered += 1,
            None => {}
        }
        match fact.first_response_ms {
            Some(ms) => {
                figures.first_response.answered += 1;
                first_responses.push(ms);
            }
            None => figures.first_response.unanswered += 1,
        }
        if let Some(ms) = fact.resolution_ms {
            resolutions.push(ms);
            if ms <= RESOLUTION_TARGET_MS {
                figures.resolution.within_target += 1;
            }
        }
        let ratings = &mut figures.satisfaction.ratings;
        // The pipeline refuses other ratings before writing; a row that has one anyway is not
        // an answer the scale can hold.
        let count = match fact.rating {
            Some(1) => Some(&mut ratings.one),
            Some(2) => Some(&mut ratings.two),
            Some(3) => Some(&mut ratings.three),
            Some(4) => Some(&mut ratings.four),
            Some(5) => Some(&mut ratings.five),
            _ => None,
        };
        if let (Some(count), Some(rating)) = (count, fact.rating) {
            *count += 1;
            figures.satisfaction.responses += 1;
            rating_sum += rating as u64;
        }
    }
    let closed = figures.by_state.closed;
    figures.first_response.time = durations(first_responses);
    figures.resolution.time = durations(resolutions);
    figures.resolution.within_target_share = share(figures.resolution.within_target, closed);
    let satisfaction = &mut figures.satisfaction;
    satisfaction.average = share(rating_sum, satisfaction.responses);
    satisfaction.response_rate = share(satisfaction.responses, closed);
    satisfaction.meets_target = satisfaction.average.map(|a| a >= SATISFACTION_TARGET);
    figures
}

/// Count, mean and nearest-rank percentiles of `samples`.
fn durations(mut samples: Vec<i64>) -> Durations {
    if samples.is_empty() {
        return Durations::default();
    }
    samples.sort_unstable();
    let n = samples.len();
    // Nearest rank: the smallest sample with at least p % of the samples at or below it.
    let rank = |p: usize| Some(samples[(p * n).div_ceil(100).max(1) - 1]);
    let sum: i128 = samples.iter().map(|&s| i128::from(s)).sum();
    let count = n as i128;
    Durations {
        count: n as u64,
        // Rounded half up; samples are never negative.
        mean_ms: Some(((sum + count / 2) / count) as i64),
        p50_ms: rank(50),
        p90_ms: rank(90),
        p95_ms: rank(95),
        p99_ms: rank(99),
        max_ms: samples.last().copied(),
    }
}

/// The staff times summed, and their share.
fn summed<'a>(times: impl Iterator<Item = &'a StaffTime>) -> Utilization {
    let mut total = Utilization::default();
    for time in times {
        total.signed_in_ms += time.signed_in_ms;
        total.in_chat_ms += time.in_chat_ms;
        total.in_chat_while_away_ms += time.in_chat_while_away_ms;
    }
    if total.signed_in_ms > 0 {
        let share = total.in_chat_ms as f64 / total.signed_in_ms as f64;
        total.share = Some(round4(share));
        total.in_target_band = Some((UTILIZATION_BAND.0..=UTILIZATION_BAND.1).contains(&share));
    }
    total
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
