//! A batch against a real database, without a broker.

use std::sync::Arc;

use tokio::sync::watch;

use schemas::wire::{Ack, Outcome};

use super::*;
use crate::audit::AuditTrail;
use crate::pipeline::BridgeConfig;
use crate::pipeline::outbox::Told;

/// A worker on a fresh SQLite database in `dir`, with no broker.
async fn worker_on_sqlite(dir: &tempfile::TempDir) -> (store::Store, Worker) {
    let config = store::DatabaseConfig {
        url: format!("sqlite://{}", dir.path().join("batch.db").display()),
        ..store::DatabaseConfig::default()
    };
    let store = store::Store::open(&config).await.unwrap();
    let key = crate::AuditKey::from_secret(&[1; 32]).unwrap();
    let audit = Arc::new(AuditTrail::open(&store, key).await.unwrap());
    let worker = Worker::new(
        store.clone(),
        audit,
        BridgeConfig::default(),
        watch::Sender::new(false),
        None,
    );
    (store, worker)
}

/// Resubmissions that land in the same batch as their original (whose rows the batch has
/// not written yet) get the original's answer, not a second session or entry.
#[tokio::test]
async fn a_batch_recognises_its_own_resubmissions() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut pipeline) = worker_on_sqlite(&dir).await;
    let incoming =
        |topic: &str, payload: serde_json::Value| Incoming::local(topic, payload.to_string());
    let open = serde_json::json!({"client_msg_id": "open-1", "channel": "kiosk"});
    let outbox = pipeline
        .decide_and_store(&[
            incoming("cc/v1/open/kiosk-9", open.clone()),
            incoming("cc/v1/open/kiosk-9", open),
        ])
        .await
        .unwrap();
    let acks: Vec<Ack> = outbox
        .answers
        .iter()
        .map(|answer| match &answer.told {
            Told::Ack(ack) => ack.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(acks.len(), 2);
    let session = acks[0].session_id.clone().unwrap();
    assert_eq!(acks[1].session_id.as_deref(), Some(session.as_str()));

    let submit = format!("cc/v1/sessions/{session}/submit/kiosk-9");
    let message = serde_json::json!({"client_msg_id": "m-1", "type": "message", "body": "Hello"});
    let outbox = pipeline
        .decide_and_store(&[
            incoming(&submit, message.clone()),
            incoming(&submit, message),
        ])
        .await
        .unwrap();
    let seqs: Vec<Option<u64>> = outbox
        .answers
        .iter()
        .map(|answer| match &answer.told {
            Told::Ack(Ack {
                outcome: Outcome::Accepted { seq },
                ..
            }) => *seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs.len(), 2);
    assert_eq!(seqs[0], seqs[1], "one message, one sequence number");
    assert_eq!(outbox.entries.len(), 1, "published once");
    let stored = store.session_entries(&session).await.unwrap();
    assert_eq!(
        stored.iter().filter(|m| m.client_msg_id == "m-1").count(),
        1,
        "stored once"
    );
}

/// With no view cached (after a restart or a failed batch), a batch naming several sessions
/// reads them all at once and decides each as it would have: the next sequence number after
/// the stored one, `prev_seq` the last stored entry, and a session that does not exist
/// refused.
#[tokio::test]
async fn views_read_at_once_decide_as_views_read_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut pipeline) = worker_on_sqlite(&dir).await;
    let incoming =
        |topic: &str, payload: serde_json::Value| Incoming::local(topic, payload.to_string());
    let kiosks = ["kiosk-1", "kiosk-2", "kiosk-3"];
    let opens: Vec<Incoming> = kiosks
        .iter()
        .map(|kiosk| {
            let open = serde_json::json!({"client_msg_id": "open", "channel": "kiosk"});
            incoming(&format!("cc/v1/open/{kiosk}"), open)
        })
        .collect();
    let outbox = pipeline.decide_and_store(&opens).await.unwrap();
    let sessions: Vec<String> = outbox
        .answers
        .iter()
        .map(|answer| match &answer.told {
            Told::Ack(ack) => ack.session_id.clone().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    let say = |n: usize, cmid: &str| {
        let body = serde_json::json!({"client_msg_id": cmid, "type": "message", "body": "hi"});
        incoming(
            &format!("cc/v1/sessions/{}/submit/{}", sessions[n], kiosks[n]),
            body,
        )
    };
    let first: Vec<Incoming> = (0..3).map(|n| say(n, "m-1")).collect();
    pipeline.decide_and_store(&first).await.unwrap();
    let stored_last: Vec<i64> = {
        let mut last = Vec::new();
        for session in &sessions {
            let entries = store.session_entries(session).await.unwrap();
            last.push(entries.iter().map(|m| m.seq).max().unwrap());
        }
        last
    };

    pipeline.views.clear();
    let mut second: Vec<Incoming> = (0..3).map(|n| say(n, "m-2")).collect();
    let nowhere = serde_json::json!({"client_msg_id": "m-2", "type": "message", "body": "hi"});
    second.push(incoming(
        "cc/v1/sessions/no-such-session/submit/kiosk-1",
        nowhere,
    ));
    let outbox = pipeline.decide_and_store(&second).await.unwrap();
    let outcomes: Vec<Outcome> = outbox
        .answers
        .iter()
        .map(|answer| match &answer.told {
            Told::Ack(ack) => ack.outcome.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    for (n, last) in stored_last.iter().enumerate() {
        assert_eq!(
            outcomes[n],
            Outcome::Accepted {
                seq: Some(*last as u64 + 1)
            },
            "session {n}"
        );
        let view = pipeline.views.get(&sessions[n]).unwrap();
        assert_eq!(view.last_seq, last + 1);
        assert_eq!(view.members.len(), 1, "the applicant");
    }
    assert!(
        matches!(outcomes[3], Outcome::Rejected { .. }),
        "{:?}",
        outcomes[3]
    );
    // Each entry names the stored one before it on its topic.
    for (topic, payload) in &outbox.entries {
        let entry: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let n = sessions
            .iter()
            .position(|s| topic.contains(s.as_str()))
            .unwrap();
        assert_eq!(
            entry["prev_seq"],
            serde_json::json!(stored_last[n]),
            "{topic}"
        );
    }
    assert_eq!(outbox.entries.len(), 3);
}
