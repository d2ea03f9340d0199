//! The figures of [`super::compute`], worked out by hand on made-up rows.

use chrono::TimeZone;
use schemas::wire::Channel;

use super::*;
use schemas::db::entities::survey_response;

use crate::stats_utilization::{Spans, intersection, measure, signed_in, union};

/// `minutes` and `seconds` after 08:00 on the test day.
fn at(minutes: i64, seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap()
        + chrono::Duration::seconds(minutes * 60 + seconds)
}

fn day() -> Range {
    Range {
        since: at(0, 0),
        until: at(8 * 60, 0),
    }
}

fn session(
    id: &str,
    status: SessionStatus,
    team: &str,
    agent: Option<&str>,
    opened: DateTime<Utc>,
    closed: Option<DateTime<Utc>>,
) -> session::Model {
    session::Model {
        id: id.into(),
        status,
        applicant: format!("ap-{id}"),
        channel: "kiosk".into(),
        team: Some(team.into()),
        assigned_agent: agent.map(str::to_owned),
        last_seq: 0,
        lock_holder: None,
        lock_epoch: 0,
        lock_expires_at: None,
        created_at: opened,
        updated_at: opened,
        closed_at: closed,
    }
}

fn text(session: &str, seq: i64, sender: &str, at: DateTime<Utc>) -> Entry {
    Entry {
        session_id: session.into(),
        seq,
        sender: sender.into(),
        at,
        kind: EntryKind::Text,
    }
}

fn event(session: &str, seq: i64, at: DateTime<Utc>, event: SessionEvent) -> Entry {
    Entry {
        session_id: session.into(),
        seq,
        sender: SYSTEM.into(),
        at,
        kind: EntryKind::Event(event),
    }
}

fn opened(session: &str, at: DateTime<Utc>) -> Entry {
    let opened = SessionEvent::Opened {
        channel: Channel::Kiosk,
    };
    Entry {
        sender: format!("ap-{session}"),
        ..event(session, 1, at, opened)
    }
}

fn closed(session: &str, seq: i64, at: DateTime<Utc>) -> Entry {
    let closed = SessionEvent::Closed {
        reason: None,
        survey_offered: true,
    };
    event(session, seq, at, closed)
}

fn change(subject: &str, at: DateTime<Utc>, before: bool, after: bool) -> AvailabilityChange {
    AvailabilityChange {
        subject: subject.into(),
        at,
        before,
        after,
    }
}

fn stint(subject: &str, joined: DateTime<Utc>, left: Option<DateTime<Utc>>) -> Stint {
    Stint {
        subject: subject.into(),
        joined_at: joined,
        left_at: left,
        session_closed_at: None,
    }
}

fn member(subject: &str, team: &str) -> StaffMember {
    StaffMember {
        subject: subject.into(),
        team: Some(team.into()),
    }
}

const MINUTE: i64 = 60_000;

#[test]
fn durations_are_counted_averaged_and_ranked() {
    assert_eq!(durations(Vec::new()), Durations::default());
    let expected = Durations {
        count: 10,
        // 55 / 10 = 5.5, rounded half up.
        mean_ms: Some(6),
        p50_ms: Some(5),
        p90_ms: Some(9),
        p95_ms: Some(10),
        p99_ms: Some(10),
        max_ms: Some(10),
    };
    assert_eq!(durations((1..=10).rev().collect()), expected);
    let one = durations(vec![7]);
    assert_eq!(
        (one.p50_ms, one.p99_ms, one.mean_ms),
        (Some(7), Some(7), Some(7))
    );
}

#[test]
fn signed_in_periods_follow_the_availability_changes_clipped_to_the_range() {
    let (since, until) = (
        day().since.timestamp_millis(),
        day().until.timestamp_millis(),
    );
    let ms = |minutes: i64| at(minutes, 0).timestamp_millis();
    // (changes as (minute, before, after), periods as minutes from 08:00)
    type Row = (&'static [(i64, bool, bool)], &'static [(i64, i64)]);
    let rows: &[Row] = &[
        // Never a change: away.
        (&[], &[]),
        // Available before the range and never changed: the whole range.
        (&[(-30, false, true)], &[(0, 480)]),
        // No change before the range: the first one inside says how it began.
        (&[(60, true, false)], &[(0, 60)]),
        (&[(60, false, true), (120, true, false)], &[(60, 120)]),
        // Two periods; the change after the range does not count.
        (
            &[
                (10, false, true),
                (70, true, false),
                (400, false, true),
                (500, true, false),
            ],
            &[(10, 70), (400, 480)],
        ),
        // The last change before the range wins over an earlier one.
        (&[(-90, false, true), (-20, true, false)], &[]),
    ];
    for (changes, expected) in rows {
        let changes: Vec<AvailabilityChange> = changes
            .iter()
            .map(|&(minute, before, after)| change("ann", at(minute, 0), before, after))
            .collect();
        let refs: Vec<&AvailabilityChange> = changes.iter().rev().collect();
        let expected: Spans = expected.iter().map(|&(a, b)| (ms(a), ms(b))).collect();
        assert_eq!(signed_in(since, until, &refs), expected, "{changes:?}");
    }
}

#[test]
fn spans_merge_and_intersect() {
    assert_eq!(
        union(vec![(5, 8), (1, 3), (2, 4), (8, 9)]),
        [(1, 4), (5, 9)]
    );
    assert_eq!(
        intersection(&[(0, 10), (20, 30)], &[(5, 25), (28, 40)]),
        [(5, 10), (20, 25), (28, 30)]
    );
    assert_eq!(measure(&[(0, 10), (20, 25)]), 15);
}

/// Four sessions of team `fees` and one of `permits`, two agents.
fn scripted() -> Record {
    use SessionStatus::*;
    let transferred = SessionEvent::Transferred {
        from: Some("ann".into()),
        to_agent: Some("bob".into()),
        to_team: None,
    };
    Record {
        sessions: vec![
            session(
                "s1",
                Closed,
                "fees",
                Some("ann"),
                at(10, 0),
                Some(at(14, 0)),
            ),
            session(
                "s2",
                Closed,
                "fees",
                Some("bob"),
                at(20, 0),
                Some(at(32, 0)),
            ),
            session("s3", Queued, "fees", None, at(40, 0), None),
            session(
                "s4",
                Closed,
                "permits",
                Some("ann"),
                at(50, 0),
                Some(at(51, 0)),
            ),
            session("s5", Active, "fees", Some("ann"), at(60, 0), None),
        ],
        entries: vec![
            // s1: the applicant writes, Ann answers 90 s after the opening, closed at 4 min.
            opened("s1", at(10, 0)),
            text("s1", 2, "ap-s1", at(10, 5)),
            text("s1", 3, "ann", at(11, 30)),
            text("s1", 4, "ap-s1", at(12, 0)),
            closed("s1", 5, at(14, 0)),
            // s2: Ann answers after 3 min, transfers to Bob, closed at 12 min.
            opened("s2", at(20, 0)),
            text("s2", 2, "ann", at(23, 0)),
            event("s2", 3, at(25, 0), transferred),
            closed("s2", 4, at(32, 0)),
            // s3: waiting; only the applicant and the system speak.
            opened("s3", at(40, 0)),
            text("s3", 2, "ap-s3", at(40, 10)),
            text("s3", 3, SYSTEM, at(41, 0)),
            // s4: closed after a minute without a reply.
            opened("s4", at(50, 0)),
            closed("s4", 2, at(51, 0)),
            // s5: Ann answers after 30 s.
            opened("s5", at(60, 0)),
            text("s5", 2, "ann", at(60, 30)),
        ],
        surveys: vec![
            survey_response::Model {
                session_id: "s1".into(),
                rating: 5,
                comment: Some("quick".into()),
                submitted_at: at(15, 0),
            },
            survey_response::Model {
                session_id: "s2".into(),
                rating: 2,
                comment: None,
                submitted_at: at(33, 0),
            },
        ],
        staff: vec![
            member("ann", "fees"),
            member("bob", "fees"),
            member("cy", "permits"),
        ],
        stints: vec![
            // Ann: 00:10-00:14 and 00:20-00:25, overlapping 00:12-01:12: 00:10-01:12 = 62 min.
            stint("ann", at(10, 0), Some(at(14, 0))),
            stint("ann", at(20, 0), Some(at(25, 0))),
            stint("ann", at(12, 0), Some(at(72, 0))),
            // Bob: from before the range to when the session closed (00:32).
            Stint {
                session_closed_at: Some(at(32, 0)),
                ..stint("bob", at(-30, 0), None)
            },
        ],
        availability: vec![
            // Ann: available 00:00-01:40 (100 min) with a break 00:30-00:40, so 90 min.
            change("ann", at(-5, 0), false, true),
            change("ann", at(30, 0), true, false),
            change("ann", at(40, 0), false, true),
            change("ann", at(100, 0), true, false),
            // Bob never signs in; Cy neither, and does nothing.
        ],
    }
}

#[test]
fn a_scripted_hour_gives_the_figures_worked_out_by_hand() {
    let stats = compute(day(), &scripted());
    let all = &stats.overall.sessions;
    assert_eq!(
        all.by_state,
        StateCounts {
            total: 5,
            queued: 1,
            active: 1,
            escalated: 0,
            closed: 3,
        }
    );
    // s1 answered, s2 transferred, s4 unanswered.
    assert_eq!(
        all.outcomes,
        Outcomes {
            escalated: 0,
            transferred: 1,
            answered: 1,
            unanswered: 1,
        }
    );
    // First responses: s5 30 s, s1 90 s, s2 180 s; s3 and s4 unanswered.
    assert_eq!(
        (all.first_response.answered, all.first_response.unanswered),
        (3, 2)
    );
    assert_eq!(
        all.first_response.time,
        Durations {
            count: 3,
            mean_ms: Some(100_000),
            p50_ms: Some(90_000),
            p90_ms: Some(180_000),
            p95_ms: Some(180_000),
            p99_ms: Some(180_000),
            max_ms: Some(180_000),
        }
    );
    // Resolutions: s4 1 min, s1 4 min (within 5), s2 12 min; mean 17/3 min.
    let resolution = &all.resolution;
    assert_eq!(resolution.time.count, 3);
    assert_eq!(resolution.time.mean_ms, Some(340_000));
    assert_eq!(resolution.time.p50_ms, Some(4 * MINUTE));
    assert_eq!(resolution.time.max_ms, Some(12 * MINUTE));
    assert_eq!(resolution.within_target, 2);
    assert_eq!(resolution.within_target_share, Some(0.6667));
    // Ratings 5 and 2 over 3 closed sessions.
    let satisfaction = &all.satisfaction;
    assert_eq!(satisfaction.responses, 2);
    assert_eq!(satisfaction.average, Some(3.5));
    assert_eq!(satisfaction.response_rate, Some(0.6667));
    assert_eq!(satisfaction.meets_target, Some(false));
    assert_eq!(
        (
            satisfaction.ratings.two,
            satisfaction.ratings.five,
            satisfaction.ratings.one
        ),
        (1, 1, 0)
    );
    // Ann: chats 00:10-01:12 (62 min); signed in 00:00-00:30 and 00:40-01:40 (90 min);
    // chatting while signed in 00:10-00:30 and 00:40-01:12 = 20 + 32 = 52 min, while away
    // 00:30-00:40 = 10 min; share 52/90 = 0.5778, below the band.
    let ann = stats.agents.iter().find(|a| a.agent == "ann").unwrap();
    assert_eq!(
        ann.utilization,
        Utilization {
            signed_in_ms: 90 * MINUTE,
            in_chat_ms: 52 * MINUTE,
            in_chat_while_away_ms: 10 * MINUTE,
            share: Some(0.5778),
            in_target_band: Some(false),
        }
    );
    assert_eq!(ann.sessions.by_state.total, 3, "s1, s4, s5");
    // Bob never signed in: no share, and his 32 minutes in a chat are shown as while away.
    let bob = stats.agents.iter().find(|a| a.agent == "bob").unwrap();
    assert_eq!(bob.utilization.share, None);
    assert_eq!(bob.utilization.in_target_band, None);
    assert_eq!(bob.utilization.in_chat_while_away_ms, 32 * MINUTE);
    assert_eq!(bob.sessions.satisfaction.average, Some(2.0));
    // Cy did nothing: not listed, so `permits` has its session but no staff time.
    assert_eq!(stats.agents.len(), 2);
    let teams: Vec<_> = stats.teams.iter().map(|t| t.team.as_deref()).collect();
    assert_eq!(teams, [Some("fees"), Some("permits")]);
    let fees = &stats.teams[0];
    assert_eq!(fees.sessions.by_state.total, 4);
    assert_eq!(fees.utilization.signed_in_ms, 90 * MINUTE);
    assert_eq!(fees.utilization.in_chat_while_away_ms, 42 * MINUTE);
    let permits = &stats.teams[1];
    assert_eq!(permits.sessions.outcomes.unanswered, 1);
    assert_eq!(permits.utilization.share, None);
    assert_eq!(stats.overall.utilization.share, Some(0.5778));
}

#[test]
fn utilization_within_the_band_is_reported_as_such() {
    let record = Record {
        staff: vec![member("ann", "fees")],
        // 48 of 60 minutes: 0.8.
        stints: vec![stint("ann", at(0, 0), Some(at(48, 0)))],
        availability: vec![
            change("ann", at(0, 0), false, true),
            change("ann", at(60, 0), true, false),
        ],
        ..Record::default()
    };
    let stats = compute(day(), &record);
    assert_eq!(stats.agents[0].utilization.share, Some(0.8));
    assert_eq!(stats.agents[0].utilization.in_target_band, Some(true));
}

#[test]
fn nothing_gives_empty_figures_not_zero_shares() {
    let stats = compute(day(), &Record::default());
    assert_eq!(stats.overall.sessions, SessionFigures::default());
    assert_eq!(stats.overall.utilization, Utilization::default());
    assert!(stats.teams.is_empty() && stats.agents.is_empty());
    assert_eq!(stats.since, "2026-12-01T08:00:00.000000Z");
}
