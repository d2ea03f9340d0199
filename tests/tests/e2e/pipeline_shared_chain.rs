//! The audit chain shared with another writer: a second process (a second server, or
//! `courtchat bridge` beside the gateway's denial recorder) appending between the pipeline's
//! batches. On PostgreSQL the pipeline chains a batch to the head it committed last without
//! reading it again, so it must notice the head moved and chain to the new one.

use schemas::db::entities::audit_event;
use sea_orm::{EntityTrait, QueryOrder};

use super::hardening::{accepted_seq, acks_until, kiosk_with_session, send_message};
use super::*;

#[tokio::test]
async fn another_writer_between_batches_leaves_the_chain_whole() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let (mut kiosk, session) = kiosk_with_session(&stack, "kiosk-shared").await?;
    let other = bridge::AuditTrail::open(
        stack.store(),
        bridge::AuditKey::from_secret(testkit::TEST_AUDIT_KEY.as_bytes())?,
    )
    .await?;

    for n in 0..4 {
        send_message(&kiosk, &session, &format!("m{n}"), "hello").await?;
        tokio::time::timeout(PATIENCE, acks_until(&mut kiosk, 2 + n)).await??;
        // Between every two batches, someone else appends.
        other
            .append(bridge::AuditEntry {
                actor: "other-process".to_owned(),
                action: "test.appended".to_owned(),
                session_id: None,
                detail: json!({ "after": n }),
            })
            .await?;
    }
    let seqs: Vec<Option<u64>> = kiosk.acks[1..].iter().map(accepted_seq).collect();
    assert_eq!(
        seqs,
        [Some(2), Some(3), Some(4), Some(5)],
        "{:?}",
        kiosk.acks
    );

    // Every entry follows the one before it, the other writer's included.
    let verification = courtchat::verify_audit(stack.config(), stack.store()).await?;
    assert_eq!(verification.first_broken, None);
    let actions: Vec<String> = audit_event::Entity::find()
        .order_by_asc(audit_event::Column::Id)
        .all(stack.store().connection())
        .await?
        .into_iter()
        .map(|entry| entry.action)
        .filter(|action| action == "test.appended" || action == "message.accepted")
        .collect();
    assert_eq!(
        actions,
        [
            "message.accepted",
            "test.appended",
            "message.accepted",
            "test.appended",
            "message.accepted",
            "test.appended",
            "message.accepted",
            "test.appended"
        ]
    );
    stack.shutdown().await;
    Ok(())
}
