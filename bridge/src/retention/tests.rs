//! The purge over a real SQLite store and chain, with the clock given: what goes, what a hold
//! keeps, what a dry run leaves, and that verification tells purged rows from tampered ones.

use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use schemas::db::entities::message::{self, MessageKind};
use schemas::db::entities::{
    legal_hold, retention_policy, session, session_purge, survey_response,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, Statement,
};

use super::*;
use crate::record::{MessageRecord, SurveyRecord};
use crate::{AuditEntry, AuditKey, Discrepancy, RecordKey};

struct Fixture {
    _dir: tempfile::TempDir,
    store: store::Store,
    key: AuditKey,
    trail: Arc<AuditTrail>,
    now: DateTime<Utc>,
}

/// Sessions `old-1`, `old-2` (closed 40 days before `now`, team `licensing`), `appeal`
/// (closed 40 days before, team `appeals`) and `recent` (closed 2 days before), each with a
/// message, a note and a closing event with a reason, recorded as the pipeline records them;
/// `old-1` has a survey answer with a comment. Policies: `all` 30 days, `team:appeals` 365.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = store::DatabaseConfig {
        url: format!("sqlite://{}", dir.path().join("retention.db").display()),
        ..store::DatabaseConfig::default()
    };
    let store = store::Store::open(&config).await.unwrap();
    let key = AuditKey::from_secret(&[3; 32]).unwrap();
    let trail = Arc::new(AuditTrail::open(&store, key.clone()).await.unwrap());
    let db = store.connection();
    let now: DateTime<Utc> = "2027-06-01T12:00:00Z".parse().unwrap();
    let at = Utc::now().trunc_subsecs(6);
    for (id, team, closed_days_ago) in [
        ("old-1", "licensing", 40),
        ("old-2", "licensing", 40),
        ("appeal", "appeals", 40),
        ("recent", "licensing", 2),
    ] {
        session::ActiveModel {
            id: Set(id.into()),
            status: Set(session::SessionStatus::Closed),
            applicant: Set("kiosk-1".into()),
            channel: Set("kiosk".into()),
            team: Set(Some(team.into())),
            assigned_agent: Set(Some("agent-1".into())),
            last_seq: Set(3),
            lock_holder: Set(None),
            lock_epoch: Set(0),
            lock_expires_at: Set(None),
            created_at: Set(at),
            updated_at: Set(at),
            closed_at: Set(Some(now - Duration::days(closed_days_ago))),
        }
        .insert(db)
        .await
        .unwrap();
        for (seq, kind, body) in [
            (1, MessageKind::Text, "My licence number is 12345."),
            (2, MessageKind::Note, "applicant seems upset"),
            (
                3,
                MessageKind::Event,
                r#"{"type":"closed","reason":"gave address","survey_offered":true}"#,
            ),
        ] {
            let row = message::ActiveModel {
                session_id: Set(id.into()),
                seq: Set(seq),
                client_msg_id: Set(format!("m-{seq}")),
                sender: Set("agent-1".into()),
                kind: Set(kind),
                body: Set(body.into()),
                created_at: Set(at),
                ..Default::default()
            }
            .insert(db)
            .await
            .unwrap();
            trail
                .append(AuditEntry {
                    actor: "agent-1".into(),
                    action: "message.accepted".into(),
                    session_id: Some(id.into()),
                    detail: serde_json::json!({
                        "seq": seq,
                        "digest": MessageRecord::from(&row).digest(),
                    }),
                })
                .await
                .unwrap();
        }
    }
    let survey = survey_response::ActiveModel {
        session_id: Set("old-1".into()),
        rating: Set(5),
        comment: Set(Some("thanks, Jane from Main St.".into())),
        submitted_at: Set(at),
    }
    .insert(db)
    .await
    .unwrap();
    trail
        .append(AuditEntry {
            actor: "kiosk-1".into(),
            action: "survey.answered".into(),
            session_id: Some("old-1".into()),
            detail: serde_json::json!({ "rating": 5, "digest": SurveyRecord::from(&survey).digest() }),
        })
        .await
        .unwrap();
    for (name, scope, keep_days) in [("default", "all", 30), ("appeals", "team:appeals", 365)] {
        retention_policy::ActiveModel {
            name: Set(name.into()),
            scope: Set(scope.into()),
            keep_days: Set(keep_days),
            created_at: Set(at),
            updated_at: Set(at),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
    }
    Fixture {
        _dir: dir,
        store,
        key,
        trail,
        now,
    }
}

fn retention(fixture: &Fixture, batch_sessions: u64) -> Retention {
    Retention::new(
        fixture.store.clone(),
        fixture.trail.clone(),
        RetentionConfig {
            run_every_secs: 0,
            batch_sessions,
            pause_ms: 0,
        },
    )
}

async fn bodies(store: &store::Store, session_id: &str) -> Vec<String> {
    message::Entity::find()
        .filter(message::Column::SessionId.eq(session_id))
        .all(store.connection())
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.body)
        .collect()
}

async fn sql(store: &store::Store, statement: &str) {
    let db = store.connection();
    db.execute_raw(Statement::from_string(db.get_database_backend(), statement))
        .await
        .unwrap();
}

#[tokio::test]
async fn due_sessions_are_blanked_held_ones_kept_and_the_record_still_verifies() {
    let fixture = fixture().await;
    legal_hold::ActiveModel {
        session_id: Set("old-2".into()),
        reason: Set("case 2027-CV-1".into()),
        held_by: Set("sup".into()),
        held_at: Set(fixture.now),
    }
    .insert(fixture.store.connection())
    .await
    .unwrap();

    // A dry run says what would go and changes nothing.
    let preview = retention(&fixture, 1).run(fixture.now, true).await.unwrap();
    let ids: Vec<&str> = preview
        .purged
        .iter()
        .map(|p| p.session_id.as_str())
        .collect();
    assert_eq!(ids, ["old-1"]);
    assert_eq!(preview.held, ["old-2"]);
    assert!(preview.dry_run);
    assert_eq!(
        bodies(&fixture.store, "old-1").await[0],
        "My licence number is 12345."
    );

    // Pages of one session each: the scan goes on past sessions that are not due.
    let report = retention(&fixture, 1)
        .run(fixture.now, false)
        .await
        .unwrap();
    assert_eq!(report.purged, preview.purged, "the dry run said what went");
    let purged = &report.purged[0];
    assert_eq!(
        (
            purged.policy.as_str(),
            purged.messages,
            purged.notes,
            purged.events,
            purged.survey_comment
        ),
        ("default", 1, 1, 1, true)
    );
    assert_eq!(
        bodies(&fixture.store, "old-1").await,
        ["", "", r#"{"type":"closed","survey_offered":true}"#]
    );
    let survey = survey_response::Entity::find_by_id("old-1")
        .one(fixture.store.connection())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (survey.rating, survey.comment),
        (5, None),
        "the rating stays"
    );
    for kept in ["old-2", "appeal", "recent"] {
        assert_eq!(
            bodies(&fixture.store, kept).await[0],
            "My licence number is 12345.",
            "{kept}"
        );
    }
    assert!(
        session_purge::Entity::find_by_id("old-1")
            .one(fixture.store.connection())
            .await
            .unwrap()
            .is_some()
    );

    let verification = AuditTrail::verify(&fixture.store, &fixture.key)
        .await
        .unwrap();
    assert!(verification.is_intact(), "{verification:?}");
    assert_eq!(
        verification.records.purged, 4,
        "three rows and the survey answer"
    );

    // Purged once: a second run finds nothing; a year on, the appeal goes too, and only it.
    let again = retention(&fixture, 100)
        .run(fixture.now, false)
        .await
        .unwrap();
    assert!(again.purged.is_empty());
    let later = retention(&fixture, 100)
        .run(fixture.now + Duration::days(400), false)
        .await
        .unwrap();
    let ids: Vec<&str> = later.purged.iter().map(|p| p.session_id.as_str()).collect();
    assert_eq!(ids, ["appeal", "recent"]);
    assert_eq!(later.held, ["old-2"]);
    let verification = AuditTrail::verify(&fixture.store, &fixture.key)
        .await
        .unwrap();
    assert!(verification.is_intact(), "{verification:?}");
}

#[tokio::test]
async fn tampering_is_still_named_beside_purged_rows() {
    // (what is done behind the server's back, the row verification names, how)
    let rows: &[(&str, (&str, i64), Discrepancy)] = &[
        (
            "UPDATE messages SET body = '' WHERE session_id = 'old-2' AND seq = 1",
            ("old-2", 1),
            Discrepancy::Changed,
        ),
        (
            "DELETE FROM messages WHERE session_id = 'old-2' AND seq = 2",
            ("old-2", 2),
            Discrepancy::Deleted,
        ),
        (
            "UPDATE messages SET body = 'rewritten after the purge' WHERE session_id = 'old-1' AND seq = 1",
            ("old-1", 1),
            Discrepancy::Changed,
        ),
        (
            "DELETE FROM messages WHERE session_id = 'old-1' AND seq = 2",
            ("old-1", 2),
            Discrepancy::Deleted,
        ),
    ];
    for (tampering, (session_id, seq), discrepancy) in rows {
        let fixture = fixture().await;
        sql(
            &fixture.store,
            "DELETE FROM retention_policies WHERE name = 'appeals'",
        )
        .await;
        // Only old-1 is due: the others are held or recent.
        for held in ["old-2", "appeal"] {
            legal_hold::ActiveModel {
                session_id: Set(held.into()),
                reason: Set("case".into()),
                held_by: Set("sup".into()),
                held_at: Set(fixture.now),
            }
            .insert(fixture.store.connection())
            .await
            .unwrap();
        }
        let report = retention(&fixture, 10)
            .run(fixture.now, false)
            .await
            .unwrap();
        assert_eq!(report.purged.len(), 1);
        sql(&fixture.store, tampering).await;
        let verification = AuditTrail::verify(&fixture.store, &fixture.key)
            .await
            .unwrap();
        let difference = verification.first_difference.expect(tampering);
        assert_eq!(
            (difference.record, difference.discrepancy),
            (
                RecordKey::Message {
                    session_id: (*session_id).into(),
                    seq: *seq
                },
                *discrepancy
            ),
            "{tampering}"
        );
    }
}

#[tokio::test]
async fn a_row_changed_before_the_purge_stays_evidence() {
    let fixture = fixture().await;
    // Rewritten before the purge: the purge records the digest it found, which is not the
    // one the message's own entry recorded, so verification still names the row.
    sql(
        &fixture.store,
        "UPDATE messages SET body = 'forged' WHERE session_id = 'old-1' AND seq = 1",
    )
    .await;
    retention(&fixture, 10)
        .run(fixture.now, false)
        .await
        .unwrap();
    let verification = AuditTrail::verify(&fixture.store, &fixture.key)
        .await
        .unwrap();
    let difference = verification.first_difference.expect("named");
    assert_eq!(
        (difference.record, difference.discrepancy),
        (
            RecordKey::Message {
                session_id: "old-1".into(),
                seq: 1
            },
            Discrepancy::Changed
        )
    );
}
