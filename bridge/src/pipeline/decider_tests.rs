//! A batch against a real database, without a broker.

use std::sync::Arc;

use tokio::sync::watch;

use schemas::wire::{Ack, Outcome};

use super::*;
use crate::audit::AuditTrail;
use crate::pipeline::BridgeConfig;
use crate::pipeline::outbox::Told;

/// Resubmissions that land in the same batch as their original (whose rows the batch has
/// not written yet) get the original's answer, not a second session or entry.
#[tokio::test]
async fn a_batch_recognises_its_own_resubmissions() {
    let dir = tempfile::tempdir().unwrap();
    let config = store::DatabaseConfig {
        url: format!("sqlite://{}", dir.path().join("batch.db").display()),
        ..store::DatabaseConfig::default()
    };
    let store = store::Store::open(&config).await.unwrap();
    let key = crate::AuditKey::from_secret(&[1; 32]).unwrap();
    let audit = Arc::new(AuditTrail::open(&store, key).await.unwrap());
    let mut pipeline = Worker::new(
        store.clone(),
        audit,
        BridgeConfig::default(),
        watch::Sender::new(false),
        None,
    );
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
