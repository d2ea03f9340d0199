//! The audit trail against a real SQLite database: a chain that verifies and resumes, every kind
//! of tampering caught at its entry, two writers on one chain, and keys that do not fit.

use super::*;
use sea_orm::{ConnectionTrait, Statement};

async fn trail_with(entries: usize) -> (tempfile::TempDir, store::Store, AuditKey, AuditTrail) {
    let dir = tempfile::tempdir().unwrap();
    let config = store::DatabaseConfig {
        url: format!("sqlite://{}", dir.path().join("audit.db").display()),
        ..store::DatabaseConfig::default()
    };
    let store = store::Store::open(&config).await.unwrap();
    let key = AuditKey::from_secret(&[1; 32]).unwrap();
    let trail = AuditTrail::open(&store, key.clone()).await.unwrap();
    for n in 0..entries {
        trail
            .append(AuditEntry {
                actor: format!("agent-{n}"),
                action: "test.event".to_owned(),
                session_id: Some("s1".to_owned()),
                detail: serde_json::json!({ "n": n }),
            })
            .await
            .unwrap();
    }
    (dir, store, key, trail)
}

async fn sql(store: &store::Store, statement: &str) {
    let db = store.connection();
    db.execute_raw(Statement::from_string(db.get_database_backend(), statement))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_intact_chain_verifies_and_resumes_after_reopening() {
    let (_dir, store, key, trail) = trail_with(3).await;
    drop(trail);
    // A reopened trail continues the chain from the stored head.
    let reopened = AuditTrail::open(&store, key.clone()).await.unwrap();
    reopened
        .append(AuditEntry {
            actor: "system".to_owned(),
            action: "test.after-restart".to_owned(),
            session_id: None,
            detail: serde_json::Value::Null,
        })
        .await
        .unwrap();
    assert_eq!(
        AuditTrail::verify(&store, &key).await.unwrap(),
        Verification {
            entries: 4,
            ..Verification::default()
        }
    );
}

#[tokio::test]
async fn every_kind_of_tampering_is_caught_at_the_right_entry() {
    // (what the attacker does, the entry verification must name)
    let rows: &[(&str, i64)] = &[
        (
            "UPDATE audit_events SET detail = '{\"n\":99}' WHERE id = 3",
            3,
        ),
        (
            "UPDATE audit_events SET actor = 'someone-else' WHERE id = 2",
            2,
        ),
        ("DELETE FROM audit_events WHERE id = 3", 4),
        (
            "INSERT INTO audit_events (id, at, actor, action, session_id, detail, prev_mac, mac) \
             SELECT 10, at, actor, action, session_id, detail, prev_mac, mac FROM audit_events WHERE id = 2",
            10,
        ),
        // Reordering: swap the contents of entries 2 and 3.
        (
            "UPDATE audit_events SET id = CASE id WHEN 2 THEN -3 WHEN 3 THEN -2 END WHERE id IN (2, 3); \
             UPDATE audit_events SET id = -id WHERE id < 0",
            2,
        ),
    ];
    for (tampering, expected) in rows {
        let (_dir, store, key, _trail) = trail_with(5).await;
        for statement in tampering.split("; ") {
            sql(&store, statement).await;
        }
        let verification = AuditTrail::verify(&store, &key).await.unwrap();
        assert_eq!(
            verification.first_broken.as_ref().map(|(id, _)| *id),
            Some(*expected),
            "{tampering}: {verification:?}"
        );
    }
}

#[tokio::test]
async fn two_writers_share_one_chain() {
    // Two trails over one database stand for two processes (the gateway and a separate
    // bridge); their appends interleave through the head row and the chain stays whole.
    let (_dir, store, key, first) = trail_with(0).await;
    let second = AuditTrail::open(&store, key.clone()).await.unwrap();
    let entry = |who: &str, n: usize| AuditEntry {
        actor: who.to_owned(),
        action: "test.concurrent".to_owned(),
        session_id: None,
        detail: serde_json::json!({ "n": n }),
    };
    async fn write(trail: &AuditTrail, who: &str, entry: impl Fn(&str, usize) -> AuditEntry) {
        for n in 0..25 {
            trail.append(entry(who, n)).await.unwrap();
        }
    }
    tokio::join!(
        write(&first, "gateway", entry),
        write(&second, "bridge", entry)
    );
    assert_eq!(
        AuditTrail::verify(&store, &key).await.unwrap(),
        Verification {
            entries: 50,
            ..Verification::default()
        }
    );
}

#[test]
fn keys_shorter_than_the_mac_are_refused() {
    for (bytes, accepted) in [(0, false), (31, false), (32, true), (64, true)] {
        assert_eq!(
            AuditKey::from_secret(&vec![7; bytes]).is_ok(),
            accepted,
            "{bytes} bytes"
        );
    }
}

#[tokio::test]
async fn another_key_does_not_verify() {
    let (_dir, store, _key, _trail) = trail_with(2).await;
    let other = AuditKey::from_secret(&[2; 32]).unwrap();
    assert_eq!(
        AuditTrail::verify(&store, &other)
            .await
            .unwrap()
            .first_broken
            .map(|(id, _)| id),
        Some(1)
    );
}
