//! `/v1/stats`, its CSV and `/v1/surveys/export` over real HTTP, on a scripted eight-hour day
//! written straight into the tables (and availability onto the audit chain through
//! `bridge::AuditTrail`, as the pipeline writes it), every figure checked against the answer
//! worked out by hand.
//!
//! The day starts at `t0`, eight hours and two minutes ago (so that the whole range has
//! happened); times below are minutes after `t0` ("M12" is twelve minutes in). The audit
//! trail dates its rows now, so each availability change carries its own time in its detail,
//! as the pipeline's do.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use courtchat::StaffRole;
use schemas::db::entities::message::{self, MessageKind};
use schemas::db::entities::participant::{self, ParticipantRole};
use schemas::db::entities::session::{self, SessionStatus};
use schemas::db::entities::{receipt, survey_response};
use schemas::wire::{Channel, SessionEvent};
use sea_orm::{ActiveModelTrait, DatabaseConnection, Set};
use serde_json::{Value, json};
use testkit::TestStack;

use super::staff;

/// One line of a session's stream.
enum Say {
    Text(&'static str),
    Event(SessionEvent),
}

/// A session of the scripted day; times in seconds after `t0`.
struct Scripted {
    id: &'static str,
    team: &'static str,
    status: SessionStatus,
    agent: Option<&'static str>,
    /// (at, sender, what), in order: the seq is the place in this list, from 1.
    stream: Vec<(i64, &'static str, Say)>,
    /// (subject, role, joined, left)
    participants: Vec<(&'static str, ParticipantRole, i64, Option<i64>)>,
    /// (subject, delivered_seq, updated)
    receipts: Vec<(&'static str, i64, i64)>,
    /// (rating, comment, submitted)
    survey: Option<(i16, Option<&'static str>, i64)>,
}

const M: i64 = 60;

fn opened() -> Say {
    Say::Event(SessionEvent::Opened {
        channel: Channel::Kiosk,
    })
}

fn joined(subject: &str) -> Say {
    Say::Event(SessionEvent::Joined {
        subject: subject.into(),
    })
}

fn closed() -> Say {
    Say::Event(SessionEvent::Closed {
        reason: None,
        survey_offered: true,
    })
}

fn day() -> Vec<Scripted> {
    use ParticipantRole::{Agent, Applicant};
    use SessionStatus::*;
    vec![
        // Opened before the range: not one of the day's sessions, but Ann's time in it from
        // M0 to its close at M20 is chat time of the day.
        Scripted {
            id: "p0",
            team: "fees",
            status: Closed,
            agent: Some("ann"),
            stream: vec![
                (-30 * M, "ap-p0", opened()),
                (-29 * M, "ann", joined("ann")),
                (-28 * M, "ann", Say::Text("Good morning")),
                (20 * M, "ann", closed()),
            ],
            participants: vec![
                ("ap-p0", Applicant, -30 * M, None),
                ("ann", Agent, -29 * M, None),
            ],
            receipts: vec![],
            survey: None,
        },
        // Answered by Ann after 2 min, closed after 4 min, rated 5.
        Scripted {
            id: "s1",
            team: "fees",
            status: Closed,
            agent: Some("ann"),
            stream: vec![
                (10 * M, "ap-s1", opened()),
                (11 * M, "ann", joined("ann")),
                (12 * M, "ann", Say::Text("How can I help?")),
                (13 * M, "ap-s1", Say::Text("My licence fee")),
                (14 * M, "ann", closed()),
            ],
            participants: vec![
                ("ap-s1", Applicant, 10 * M, None),
                ("ann", Agent, 11 * M, None),
            ],
            // Delivery bounds: 3 s to the applicant (seq 3, Ann's text), 1 s to Ann (seq 4).
            receipts: vec![("ap-s1", 3, 12 * M + 3), ("ann", 4, 13 * M + 1)],
            survey: Some((5, Some("quick"), 15 * M)),
        },
        // Ann answers after 2.5 min and transfers to Bob, who closes at M90 (20 min); rated 3.
        Scripted {
            id: "s2",
            team: "fees",
            status: Closed,
            agent: Some("bob"),
            stream: vec![
                (70 * M, "ap-s2", opened()),
                (71 * M, "ann", joined("ann")),
                (72 * M + 30, "ann", Say::Text("One moment")),
                (
                    75 * M,
                    "ann",
                    Say::Event(SessionEvent::Transferred {
                        from: Some("ann".into()),
                        to_agent: Some("bob".into()),
                        to_team: None,
                    }),
                ),
                (75 * M, "bob", joined("bob")),
                (76 * M, "bob", Say::Text("Bob here")),
                (90 * M, "bob", closed()),
            ],
            participants: vec![
                ("ap-s2", Applicant, 70 * M, None),
                ("ann", Agent, 71 * M, Some(75 * M)),
                ("bob", Agent, 75 * M, None),
            ],
            // 2 s to the applicant (seq 6, Bob's text).
            receipts: vec![("ap-s2", 6, 76 * M + 2)],
            survey: Some((3, None, 91 * M)),
        },
        // Bob answers after 3 min; closed at M170 (80 min); rated 1.
        Scripted {
            id: "s7",
            team: "fees",
            status: Closed,
            agent: Some("bob"),
            stream: vec![
                (90 * M, "ap-s7", opened()),
                (92 * M, "bob", joined("bob")),
                (93 * M, "bob", Say::Text("Sorry for the wait")),
                (170 * M, "bob", closed()),
            ],
            participants: vec![
                ("ap-s7", Applicant, 90 * M, None),
                ("bob", Agent, 92 * M, None),
            ],
            receipts: vec![],
            survey: Some((1, Some("slow"), 171 * M)),
        },
        // Still waiting: unanswered, queued.
        Scripted {
            id: "s3",
            team: "fees",
            status: Queued,
            agent: None,
            stream: vec![
                (100 * M, "ap-s3", opened()),
                (100 * M + 10, "ap-s3", Say::Text("Hello?")),
            ],
            participants: vec![("ap-s3", Applicant, 100 * M, None)],
            receipts: vec![],
            survey: None,
        },
        // Cy joins and escalates without a word; closed at M130 (10 min).
        Scripted {
            id: "s4",
            team: "permits",
            status: Closed,
            agent: Some("cy"),
            stream: vec![
                (120 * M, "ap-s4", opened()),
                (121 * M, "cy", joined("cy")),
                (
                    125 * M,
                    "cy",
                    Say::Event(SessionEvent::Escalated { reason: None }),
                ),
                (130 * M, "cy", closed()),
            ],
            participants: vec![
                ("ap-s4", Applicant, 120 * M, None),
                ("cy", Agent, 121 * M, None),
            ],
            receipts: vec![],
            survey: None,
        },
        // The applicant gives up after 6 minutes: closed, unanswered.
        Scripted {
            id: "s8",
            team: "permits",
            status: Closed,
            agent: None,
            stream: vec![
                (200 * M, "ap-s8", opened()),
                (200 * M + 5, "ap-s8", Say::Text("Anyone?")),
                (206 * M, "ap-s8", closed()),
            ],
            participants: vec![("ap-s8", Applicant, 200 * M, None)],
            receipts: vec![],
            survey: None,
        },
        // Answered by Ann after 90 s, still going at the end of the range.
        Scripted {
            id: "s5",
            team: "fees",
            status: Active,
            agent: Some("ann"),
            stream: vec![
                (300 * M, "ap-s5", opened()),
                (301 * M, "ann", joined("ann")),
                (301 * M + 30, "ann", Say::Text("Hello")),
            ],
            participants: vec![
                ("ap-s5", Applicant, 300 * M, None),
                ("ann", Agent, 301 * M, None),
            ],
            // Ann's horizon holds only the opening: no text to bound.
            receipts: vec![("ann", 1, 301 * M)],
            survey: None,
        },
        // Answered after 45 s, closed after 3 min, rated 4.
        Scripted {
            id: "s6",
            team: "fees",
            status: Closed,
            agent: Some("ann"),
            stream: vec![
                (400 * M, "ap-s6", opened()),
                (400 * M, "ann", joined("ann")),
                (400 * M + 45, "ann", Say::Text("Yes, that form")),
                (401 * M, "ap-s6", Say::Text("Thanks")),
                (403 * M, "ann", closed()),
            ],
            participants: vec![
                ("ap-s6", Applicant, 400 * M, None),
                ("ann", Agent, 400 * M, None),
            ],
            // The applicant's row last moved at M402 (a read): the bound for Ann's text at
            // M400:45 is 75 s, though it was surely delivered sooner.
            receipts: vec![("ap-s6", 4, 402 * M)],
            survey: Some((4, Some("fine, thanks"), 404 * M)),
        },
    ]
}

async fn write(db: &DatabaseConnection, t0: DateTime<Utc>, s: Scripted) -> anyhow::Result<()> {
    let at = |seconds: i64| t0 + Duration::seconds(seconds);
    let opened_at = at(s.stream[0].0);
    let closed_at = (s.status == SessionStatus::Closed).then(|| at(s.stream.last().unwrap().0));
    session::ActiveModel {
        id: Set(s.id.into()),
        status: Set(s.status),
        applicant: Set(format!("ap-{}", s.id)),
        channel: Set("kiosk".into()),
        team: Set(Some(s.team.into())),
        assigned_agent: Set(s.agent.map(str::to_owned)),
        last_seq: Set(s.stream.len() as i64),
        lock_holder: Set(None),
        lock_epoch: Set(0),
        lock_expires_at: Set(None),
        created_at: Set(opened_at),
        updated_at: Set(opened_at),
        closed_at: Set(closed_at),
    }
    .insert(db)
    .await?;
    for (n, (seconds, sender, say)) in s.stream.into_iter().enumerate() {
        let (kind, body) = match say {
            Say::Text(text) => (MessageKind::Text, text.to_owned()),
            Say::Event(event) => (MessageKind::Event, serde_json::to_string(&event)?),
        };
        message::ActiveModel {
            session_id: Set(s.id.into()),
            seq: Set(n as i64 + 1),
            client_msg_id: Set(format!("c{n}")),
            sender: Set(sender.into()),
            kind: Set(kind),
            body: Set(body),
            created_at: Set(at(seconds)),
            ..Default::default()
        }
        .insert(db)
        .await?;
    }
    for (subject, role, joined, left) in s.participants {
        participant::ActiveModel {
            session_id: Set(s.id.into()),
            subject: Set(subject.into()),
            role: Set(role),
            joined_at: Set(at(joined)),
            left_at: Set(left.map(at)),
        }
        .insert(db)
        .await?;
    }
    for (subject, delivered, updated) in s.receipts {
        receipt::ActiveModel {
            session_id: Set(s.id.into()),
            subject: Set(subject.into()),
            delivered_seq: Set(delivered),
            read_seq: Set(delivered),
            updated_at: Set(at(updated)),
        }
        .insert(db)
        .await?;
    }
    if let Some((rating, comment, submitted)) = s.survey {
        survey_response::ActiveModel {
            session_id: Set(s.id.into()),
            rating: Set(rating),
            comment: Set(comment.map(str::to_owned)),
            submitted_at: Set(at(submitted)),
        }
        .insert(db)
        .await?;
    }
    Ok(())
}

/// Availability changes on the audit chain, as the pipeline records them: (subject, minute,
/// available after). Ann: available M0-M240 and M270 to the end, 450 min; Bob: M60-M180,
/// 120 min; Cy never.
async fn sign_ins(stack: &TestStack, t0: DateTime<Utc>) -> anyhow::Result<()> {
    let trail = bridge::AuditTrail::open(
        stack.store(),
        bridge::AuditKey::from_secret(testkit::TEST_AUDIT_KEY.as_bytes())?,
    )
    .await?;
    let changes = [
        ("ann", 0, true),
        ("bob", 60, true),
        ("bob", 180, false),
        ("ann", 240, false),
        ("ann", 270, true),
    ];
    for (n, (subject, minute, after)) in changes.into_iter().enumerate() {
        let name = |available: bool| if available { "available" } else { "away" };
        trail
            .append(bridge::AuditEntry {
                actor: subject.into(),
                action: "staff.availability".into(),
                session_id: None,
                detail: json!({
                    "before": name(!after),
                    "after": name(after),
                    "client_msg_id": format!("a{n}"),
                    "at": t0 + Duration::minutes(minute),
                }),
            })
            .await?;
    }
    Ok(())
}

async fn get(stack: &TestStack, path: &str, token: &str) -> anyhow::Result<reqwest::Response> {
    Ok(reqwest::Client::new()
        .get(stack.http_url(path))
        .bearer_auth(token)
        .send()
        .await?)
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `agents[i]` of `stats` named `name`.
fn agent<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["agents"]
        .as_array()
        .and_then(|agents| agents.iter().find(|a| a["agent"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_scripted_day_gives_the_figures_worked_out_by_hand() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let sue = staff::add_signed_in(&stack, "sue", StaffRole::Supervisor).await?;
    let al = staff::add_signed_in(&stack, "al", StaffRole::Agent).await?;
    for (name, team) in [("ann", "fees"), ("bob", "fees"), ("cy", "permits")] {
        staff::add_to_team(&stack, name, StaffRole::Agent, Some(team), None).await?;
    }
    let t0 = (Utc::now() - Duration::minutes(8 * 60 + 2)).trunc_subsecs(0);
    let db = stack.store().connection();
    for session in day() {
        write(db, t0, session).await?;
    }
    sign_ins(&stack, t0).await?;
    let range = format!("since={}&until={}", time(t0), time(t0 + Duration::hours(8)));

    // Who may ask, and what a malformed question gets.
    assert_eq!(
        get(&stack, &format!("/v1/stats?{range}"), &al)
            .await?
            .status(),
        403
    );
    assert_eq!(get(&stack, "/v1/surveys/export", &al).await?.status(), 403);
    let bad = get(&stack, "/v1/stats?since=yesterday&until=today", &sue).await?;
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    assert_eq!(
        get(&stack, "/v1/stats", &sue).await?.status(),
        400,
        "a range is required"
    );

    let response = get(&stack, &format!("/v1/stats?{range}"), &sue).await?;
    assert_eq!(response.status(), 200);
    let stats: Value = response.json().await?;
    let all = &stats["overall"]["sessions"];
    // The day's sessions: s1-s8 (p0 opened before the range). Closed: s1, s2, s4, s6, s7, s8.
    assert_eq!(
        all["by_state"],
        json!({"total": 8, "queued": 1, "active": 1, "escalated": 0, "closed": 6})
    );
    // s4 escalated; s2 transferred; s1, s6, s7 answered; s8 unanswered.
    assert_eq!(
        all["outcomes"],
        json!({"escalated": 1, "transferred": 1, "answered": 3, "unanswered": 1})
    );
    // First responses: s6 45 s, s5 90 s, s1 120 s, s2 150 s, s7 180 s; s3, s4, s8 none.
    // Mean (45 + 90 + 120 + 150 + 180) / 5 = 117 s; nearest rank of 5: p50 the 3rd, p90 and up
    // the 5th.
    assert_eq!(
        all["first_response"],
        json!({"answered": 5, "unanswered": 3, "time": {"count": 5, "mean_ms": 117_000,
            "p50_ms": 120_000, "p90_ms": 180_000, "p95_ms": 180_000, "p99_ms": 180_000,
            "max_ms": 180_000}})
    );
    // Resolutions: s6 3 min, s1 4, s8 6, s4 10, s2 20, s7 80; mean 123 / 6 = 20.5 min =
    // 1 230 s; p50 the 3rd (6 min), p90 the 6th (80 min). Within 5 min: s6, s1 = 2 of 6.
    assert_eq!(
        all["resolution"],
        json!({"time": {"count": 6, "mean_ms": 1_230_000, "p50_ms": 360_000,
            "p90_ms": 4_800_000, "p95_ms": 4_800_000, "p99_ms": 4_800_000,
            "max_ms": 4_800_000}, "within_target": 2, "within_target_share": 0.3333})
    );
    // Ratings 5, 3, 1, 4: average 13 / 4 = 3.25 (below 4); 4 answers of 6 closed sessions.
    assert_eq!(
        all["satisfaction"],
        json!({"responses": 4, "average": 3.25,
            "ratings": {"1": 1, "2": 0, "3": 1, "4": 1, "5": 1},
            "response_rate": 0.6667, "meets_target": false})
    );
    // No delivery latency: the latest receipt's time moves with reads, so a figure from it
    // measured reading (113-142 s for messages shown within 100 ms); /metrics has the server's
    // part of delivery instead.
    assert!(
        !all.to_string().contains("latency"),
        "a delivery figure the record cannot support: {all}"
    );

    // Ann's chats: p0 M0-M20 (clipped to the range), s1 M11-M14 (inside it), s2 M71-M75,
    // s5 M301-M480 (the range's end), s6 M400-M403 (inside s5's): 20 + 4 + 179 = 203 min,
    // all while signed in (M0-M240, M270-M480: 450 min). 203 / 450 = 0.4511, below the band.
    let ann = agent(&stats, "ann");
    assert_eq!(
        ann["utilization"],
        json!({"signed_in_ms": 450 * 60_000, "in_chat_ms": 203 * 60_000,
            "in_chat_while_away_ms": 0, "share": 0.4511, "in_target_band": false})
    );
    // Ann's sessions: s1, s5, s6; first responses 120, 90, 45 s: mean 85 s.
    assert_eq!(ann["sessions"]["by_state"]["total"], 3);
    assert_eq!(ann["sessions"]["first_response"]["time"]["mean_ms"], 85_000);
    assert_eq!(ann["team"], "fees");
    // Bob's chats: s2 M75-M90 and s7 M92-M170, 15 + 78 = 93 min of 120 signed in (M60-M180):
    // 0.775, within the band.
    let bob = agent(&stats, "bob");
    assert_eq!(
        bob["utilization"],
        json!({"signed_in_ms": 120 * 60_000, "in_chat_ms": 93 * 60_000,
            "in_chat_while_away_ms": 0, "share": 0.775, "in_target_band": true})
    );
    // Bob's sessions: s2 (its first reply was Ann's, 150 s) and s7 (180 s); ratings 3 and 1.
    assert_eq!(
        bob["sessions"]["first_response"]["time"]["mean_ms"],
        165_000
    );
    assert_eq!(bob["sessions"]["satisfaction"]["average"], 2.0);
    // Cy never signed in: no share (not 0), and the 9 minutes in s4 (M121-M130) show as
    // time in a chat while away.
    let cy = agent(&stats, "cy");
    assert_eq!(
        cy["utilization"],
        json!({"signed_in_ms": 0, "in_chat_ms": 0, "in_chat_while_away_ms": 9 * 60_000,
            "share": null, "in_target_band": null})
    );
    // Sue and Al did nothing that day: not listed.
    let listed: Vec<&str> = stats["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["agent"].as_str())
        .collect();
    assert_eq!(listed, ["ann", "bob", "cy"]);
    // Teams: fees has s1, s2, s3, s5, s6, s7 and Ann's and Bob's time, (203 + 93) / (450 +
    // 120) = 296 / 570 = 0.5193; permits has s4 and s8, and Cy's time, with no share.
    assert_eq!(stats["teams"][0]["team"], "fees");
    assert_eq!(stats["teams"][0]["sessions"]["by_state"]["total"], 6);
    assert_eq!(stats["teams"][0]["utilization"]["share"], 0.5193);
    assert_eq!(stats["teams"][1]["team"], "permits");
    assert_eq!(stats["teams"][1]["sessions"]["by_state"]["total"], 2);
    assert_eq!(stats["teams"][1]["utilization"]["share"], Value::Null);
    assert_eq!(stats["overall"]["utilization"]["share"], 0.5193);
    assert_eq!(stats["targets"]["resolution_ms"], 300_000);

    // Filters: a team's sessions and staff; one agent's sessions and time.
    let permits: Value = get(&stack, &format!("/v1/stats?{range}&team=permits"), &sue)
        .await?
        .json()
        .await?;
    assert_eq!(permits["overall"]["sessions"]["by_state"]["total"], 2);
    assert_eq!(permits["agents"].as_array().map(Vec::len), Some(1));
    let only_bob: Value = get(&stack, &format!("/v1/stats?{range}&agent=bob"), &sue)
        .await?
        .json()
        .await?;
    assert_eq!(only_bob["overall"]["sessions"]["by_state"]["total"], 2);
    assert_eq!(only_bob["overall"]["utilization"]["share"], 0.775);
    // A range in which nothing happened.
    let before: Value = get(
        &stack,
        &format!(
            "/v1/stats?since={}&until={}",
            time(t0 - Duration::hours(30)),
            time(t0 - Duration::hours(29))
        ),
        &sue,
    )
    .await?
    .json()
    .await?;
    assert_eq!(before["overall"]["sessions"]["by_state"]["total"], 0);
    assert_eq!(before["agents"], json!([]));

    // The CSV: a header, overall, two teams, three agents.
    let response = get(&stack, &format!("/v1/stats/export.csv?{range}"), &sue).await?;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()?
            .starts_with("text/csv")
    );
    let csv = response.text().await?;
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 7, "{csv}");
    assert!(lines[0].starts_with("scope,team,agent,sessions,"));
    assert!(!lines[0].contains("latency"), "{}", lines[0]);
    assert!(lines[1].starts_with("overall,,,8,1,1,0,6,1,1,3,1,5,3,117000,"));
    let ann_row = lines
        .iter()
        .find(|l| l.starts_with("agent,fees,ann,"))
        .expect("a row for Ann");
    assert!(
        ann_row.ends_with(",27000000,12180000,0,0.4511,false"),
        "{ann_row}"
    );

    // The survey export: four answers, in session order, with team and agent.
    let response = get(&stack, "/v1/surveys/export", &sue).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let answers: Vec<Value> = response
        .text()
        .await?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let sessions: Vec<&str> = answers
        .iter()
        .filter_map(|a| a["session_id"].as_str())
        .collect();
    assert_eq!(sessions, ["s1", "s2", "s6", "s7"]);
    assert_eq!(answers[2]["team"], "fees");
    assert_eq!(answers[2]["agent"], "ann");
    assert_eq!(answers[2]["rating"], 4);
    assert_eq!(answers[2]["comment"], "fine, thanks");
    let bobs = get(&stack, "/v1/surveys/export?agent=bob", &sue)
        .await?
        .text()
        .await?;
    assert_eq!(bobs.lines().count(), 2);
    let none = get(&stack, "/v1/surveys/export?team=x%00", &sue)
        .await?
        .text()
        .await?;
    assert_eq!(none, "");

    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn malformed_questions_get_problems_that_name_the_field() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let sue = staff::add_signed_in(&stack, "sue", StaffRole::Supervisor).await?;
    let range = "since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z";
    let long = "x".repeat(65);
    // (query, the field its problem names)
    let rows: Vec<(String, &str)> = vec![
        (String::new(), "since"),
        ("since=2026-01-01T00:00:00Z".to_owned(), "until"),
        (
            "since=yesterday&until=2026-01-02T00:00:00Z".to_owned(),
            "since",
        ),
        ("since=2026-01-01T00:00:00Z&until=today".to_owned(), "until"),
        (format!("{range}&team={long}"), "team"),
        (format!("{range}&colour=red"), "colour"),
        (format!("{range}&since=2026-01-01T00:00:00Z"), "since"),
    ];
    for (path, query) in [
        ("/v1/stats", &rows[..]),
        ("/v1/stats/export.csv", &rows[..]),
    ] {
        for (query, field) in query {
            let response = get(&stack, &format!("{path}?{query}"), &sue).await?;
            let status = response.status().as_u16();
            let problem: Value = response.json().await?;
            anyhow::ensure!(
                status == 400 && problem["field"] == *field,
                "{path}?{query}: {status} {problem}"
            );
            let detail = problem["detail"].as_str().unwrap_or_default();
            anyhow::ensure!(
                detail.starts_with(&format!("{field}: ")) && !detail.contains("deserialize"),
                "{path}?{query}: {detail}"
            );
        }
    }
    stack.shutdown().await;
    Ok(())
}
