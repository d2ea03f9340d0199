//! Checking real tables against a real chain: clean when untouched, every change named.

use super::*;
use crate::{AuditEntry, AuditKey, AuditTrail, Verification};
use chrono::{SubsecRound, Utc};
use schemas::db::entities::session;
use sea_orm::ConnectionTrait;
use sea_orm::{ActiveModelTrait, Set};

const TEXT: message::MessageKind = message::MessageKind::Text;

/// Two conversations recorded as the pipeline records them, with the audit entry ids they
/// get: 1 is an entry written before digests (s-2#4, content not checkable), 2–4 are s-1#1–3,
/// 5–7 are s-2#1–3, 8 is s-1's survey answer, 9 an entry that names no row.
async fn recorded() -> (tempfile::TempDir, store::Store, AuditKey) {
    let dir = tempfile::tempdir().unwrap();
    let config = store::DatabaseConfig {
        url: format!("sqlite://{}", dir.path().join("record.db").display()),
        ..store::DatabaseConfig::default()
    };
    let store = store::Store::open(&config).await.unwrap();
    let key = AuditKey::from_secret(&[1; 32]).unwrap();
    let trail = AuditTrail::open(&store, key.clone()).await.unwrap();
    let db = store.connection();
    let now = Utc::now().trunc_subsecs(6);
    for id in ["s-1", "s-2"] {
        session::ActiveModel {
            id: Set(id.into()),
            status: Set(session::SessionStatus::Closed),
            applicant: Set("kiosk-1".into()),
            channel: Set("kiosk".into()),
            team: Set(None),
            assigned_agent: Set(None),
            last_seq: Set(4),
            lock_holder: Set(None),
            lock_epoch: Set(0),
            lock_expires_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            closed_at: Set(None),
        }
        .insert(db)
        .await
        .unwrap();
    }
    let write = |session_id: &'static str, seq: i64, digest: bool| {
        let trail = &trail;
        async move {
            let row = message::ActiveModel {
                session_id: Set(session_id.into()),
                seq: Set(seq),
                client_msg_id: Set(format!("m-{seq}")),
                sender: Set(if seq % 2 == 0 { "agent-1" } else { "kiosk-1" }.into()),
                kind: Set(TEXT),
                body: Set(format!("line {seq}")),
                created_at: Set(now),
                ..Default::default()
            }
            .insert(db)
            .await
            .unwrap();
            let mut detail = serde_json::json!({ "seq": seq, "client_msg_id": row.client_msg_id });
            if digest {
                detail["digest"] = MessageRecord::from(&row).digest().into();
            }
            trail
                .append(AuditEntry {
                    actor: row.sender.clone(),
                    action: "message.accepted".into(),
                    session_id: Some(session_id.into()),
                    detail,
                })
                .await
                .unwrap();
        }
    };
    write("s-2", 4, false).await;
    for session_id in ["s-1", "s-2"] {
        for seq in 1..=3 {
            write(session_id, seq, true).await;
        }
    }
    let survey = survey_response::ActiveModel {
        session_id: Set("s-1".into()),
        rating: Set(4),
        comment: Set(Some("clear".into())),
        submitted_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap();
    trail
        .append(AuditEntry {
            actor: "kiosk-1".into(),
            action: SURVEY_ANSWERED.into(),
            session_id: Some("s-1".into()),
            detail: serde_json::json!({
                "rating": 4,
                "digest": SurveyRecord::from(&survey).digest(),
            }),
        })
        .await
        .unwrap();
    trail
        .append(AuditEntry {
            actor: "agent-1".into(),
            action: "lock.acquired".into(),
            session_id: Some("s-1".into()),
            detail: serde_json::json!({ "holder": "agent-1", "epoch": 1 }),
        })
        .await
        .unwrap();
    (dir, store, key)
}

async fn verify(store: &store::Store, key: &AuditKey, page: u64) -> Verification {
    AuditTrail::verify_in_pages(store.connection(), key, page)
        .await
        .unwrap()
}

fn message_key(session_id: &str, seq: i64) -> RecordKey {
    RecordKey::Message {
        session_id: session_id.into(),
        seq,
    }
}

#[tokio::test]
async fn an_untouched_conversation_verifies_in_pages_of_any_size() {
    let (_dir, store, key) = recorded().await;
    for page in [1, 2, 3, 1_000] {
        assert_eq!(
            verify(&store, &key, page).await,
            Verification {
                entries: 9,
                first_broken: None,
                records: RecordCounts {
                    messages: 6,
                    surveys: 1,
                    unverifiable: 1,
                    purged: 0,
                },
                first_difference: None,
            },
            "page {page}"
        );
    }
}

/// The queue's `session.routed` names the `seq` of the `joined` entry that another entry
/// records: it is neither a row recorded without a digest nor a second claim on the row, which
/// would let a row added outside the pipeline go unnoticed.
#[tokio::test]
async fn an_entry_that_refers_to_a_row_is_not_a_claim_on_it() {
    let (_dir, store, key) = recorded().await;
    let trail = AuditTrail::open(&store, key.clone()).await.unwrap();
    trail
        .append(AuditEntry {
            actor: "router".into(),
            action: "session.routed".into(),
            session_id: Some("s-1".into()),
            detail: serde_json::json!({ "agent": "agent-1", "seq": 2, "load": 0 }),
        })
        .await
        .unwrap();
    let verification = verify(&store, &key, 1_000).await;
    assert_eq!(verification.first_difference, None);
    assert_eq!(
        verification.records.unverifiable, 1,
        "only s-2#4 predates digests"
    );
    assert_eq!(verification.records.messages, 6);

    // A row nobody recorded is still found although the routed entry names a `seq`.
    message::ActiveModel {
        session_id: Set("s-1".into()),
        seq: Set(9),
        client_msg_id: Set("forged".into()),
        sender: Set("agent-1".into()),
        kind: Set(TEXT),
        body: Set("inserted by hand".into()),
        created_at: Set(Utc::now().trunc_subsecs(6)),
        ..Default::default()
    }
    .insert(store.connection())
    .await
    .unwrap();
    let difference = verify(&store, &key, 1_000).await.first_difference;
    assert_eq!(
        difference.map(|d| (d.record, d.discrepancy)),
        Some((message_key("s-1", 9), Discrepancy::Unrecorded))
    );
}

#[tokio::test]
async fn every_change_to_the_tables_is_named() {
    use Discrepancy::*;
    let survey = RecordKey::Survey {
        session_id: "s-1".into(),
    };
    let forged = "INSERT INTO messages (session_id, seq, client_msg_id, sender, kind, body, \
                  created_at) SELECT session_id, 9, 'x', sender, kind, body, created_at \
                  FROM messages WHERE session_id = 's-1' AND seq = 2";
    // (what the attacker does, the difference verification must report)
    let rows: Vec<(Vec<&str>, Option<Difference>)> = vec![
        (
            vec!["UPDATE messages SET body = 'x' WHERE session_id = 's-1' AND seq = 2"],
            Some(Difference {
                entry: Some(3),
                record: message_key("s-1", 2),
                discrepancy: Changed,
            }),
        ),
        (
            vec!["UPDATE messages SET sender = 'x' WHERE session_id = 's-2' AND seq = 1"],
            Some(Difference {
                entry: Some(5),
                record: message_key("s-2", 1),
                discrepancy: Changed,
            }),
        ),
        (
            vec!["UPDATE messages SET kind = 'note' WHERE session_id = 's-1' AND seq = 1"],
            Some(Difference {
                entry: Some(2),
                record: message_key("s-1", 1),
                discrepancy: Changed,
            }),
        ),
        (
            vec!["DELETE FROM messages WHERE session_id = 's-1' AND seq = 3"],
            Some(Difference {
                entry: Some(4),
                record: message_key("s-1", 3),
                discrepancy: Deleted,
            }),
        ),
        (
            // Moved to another conversation: gone from where it was recorded.
            vec![
                "UPDATE messages SET session_id = 's-2', seq = 7, client_msg_id = 'moved' WHERE session_id = 's-1' AND seq = 3",
            ],
            Some(Difference {
                entry: Some(4),
                record: message_key("s-1", 3),
                discrepancy: Deleted,
            }),
        ),
        (
            vec![
                "UPDATE messages SET seq = -1 WHERE session_id = 's-2' AND seq = 2",
                "UPDATE messages SET seq = 2 WHERE session_id = 's-2' AND seq = 3",
                "UPDATE messages SET seq = 3 WHERE session_id = 's-2' AND seq = -1",
            ],
            Some(Difference {
                entry: Some(6),
                record: message_key("s-2", 2),
                discrepancy: Changed,
            }),
        ),
        (
            vec!["UPDATE survey_responses SET comment = NULL"],
            Some(Difference {
                entry: Some(8),
                record: survey.clone(),
                discrepancy: Changed,
            }),
        ),
        (
            vec!["DELETE FROM survey_responses"],
            Some(Difference {
                entry: Some(8),
                record: survey.clone(),
                discrepancy: Deleted,
            }),
        ),
        (
            vec![forged],
            Some(Difference {
                entry: None,
                record: message_key("s-1", 9),
                discrepancy: Unrecorded,
            }),
        ),
        (
            vec![
                "INSERT INTO survey_responses (session_id, rating, comment, submitted_at) \
                 SELECT 's-2', rating, comment, submitted_at FROM survey_responses",
            ],
            Some(Difference {
                entry: None,
                record: RecordKey::Survey {
                    session_id: "s-2".into(),
                },
                discrepancy: Unrecorded,
            }),
        ),
        // Before digests, a row's presence is recorded but not its content.
        (
            vec!["DELETE FROM messages WHERE session_id = 's-2' AND seq = 4"],
            Some(Difference {
                entry: Some(1),
                record: message_key("s-2", 4),
                discrepancy: Deleted,
            }),
        ),
        (
            vec!["UPDATE messages SET body = 'x' WHERE session_id = 's-2' AND seq = 4"],
            None,
        ),
    ];
    for (statements, expected) in rows {
        for page in [1, 2, 1_000] {
            let (_dir, store, key) = recorded().await;
            for statement in &statements {
                store
                    .connection()
                    .execute_unprepared(statement)
                    .await
                    .unwrap();
            }
            let verification = verify(&store, &key, page).await;
            assert_eq!(
                verification.first_difference, expected,
                "{statements:?}, page {page}: {verification:?}"
            );
            assert_eq!(verification.first_broken, None, "{statements:?}");
        }
    }
}

#[tokio::test]
async fn a_broken_chain_stops_the_content_check_at_the_break() {
    let (_dir, store, key) = recorded().await;
    let db = store.connection();
    // Entry 6 (s-2#2) is forged, and the row it names changed: the break is reported, and
    // rows are only checked up to it, so s-2#2's change is not reported as well.
    db.execute_unprepared("UPDATE audit_events SET actor = 'x' WHERE id = 6")
        .await
        .unwrap();
    db.execute_unprepared("UPDATE messages SET body = 'x' WHERE session_id = 's-2' AND seq = 2")
        .await
        .unwrap();
    let verification = verify(&store, &key, 2).await;
    assert_eq!(verification.first_broken.map(|(id, _)| id), Some(6));
    assert_eq!(verification.first_difference, None);
    assert_eq!(verification.entries, 5);
    // A change before the break is reported beside it.
    db.execute_unprepared("UPDATE messages SET body = 'x' WHERE session_id = 's-1' AND seq = 1")
        .await
        .unwrap();
    let verification = verify(&store, &key, 2).await;
    assert_eq!(verification.first_broken.map(|(id, _)| id), Some(6));
    assert_eq!(
        verification.first_difference.map(|d| d.entry),
        Some(Some(2))
    );
}

#[test]
fn differences_read_as_sentences() {
    let rows = [
        (
            Difference {
                entry: Some(123),
                record: message_key("s-1", 7),
                discrepancy: Discrepancy::Changed,
            },
            "audit entry 123: message s-1#7 differs from what was recorded",
        ),
        (
            Difference {
                entry: Some(5),
                record: message_key("s-1", 9),
                discrepancy: Discrepancy::Deleted,
            },
            "audit entry 5: message s-1#9 was deleted",
        ),
        (
            Difference {
                entry: None,
                record: message_key("s-1", 12),
                discrepancy: Discrepancy::Unrecorded,
            },
            "message s-1#12 has no audit entry",
        ),
    ];
    for (difference, expected) in rows {
        assert!(difference.to_string().starts_with(expected), "{difference}");
    }
}
