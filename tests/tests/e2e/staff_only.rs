//! What staff write for staff never reaches an applicant: the reasons given for escalating and
//! closing, and routing detail (the team a session is sent to), neither live on the stream nor
//! in a resync, nor from an entry stored before reasons became notes. Staff get the reasons live
//! (as notes) and in a resync.

use courtchat::{Role, StaffRole};
use schemas::db::entities::message;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::{Value, json};
use testkit::TestStack;

use super::participants::{Participant, shape};
use super::staff;

const ESCALATE_REASON: &str = "fraud suspected";
const CLOSE_REASON: &str = "identity theft confirmed";
const TEAM: &str = "fraud-investigations";

/// Every page of a resync from 1, as `who` reads it.
async fn resync(who: &mut Participant, session: &str) -> anyhow::Result<Vec<Value>> {
    let (mut from, mut entries, mut n) = (1, Vec::new(), 0);
    loop {
        n += 1;
        let cmid = format!("rs-{n}-{}", who.seen.len());
        let page = who
            .act(
                session,
                json!({"client_msg_id": cmid, "type": "resync", "from_seq": from}),
            )
            .await?;
        let got = page["entries"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("not a page: {page}"))?;
        entries.extend(got.iter().cloned());
        match page["next_from_seq"].as_u64() {
            Some(next) => from = next,
            None => return Ok(entries),
        }
    }
}

/// Whether each entry names the one before it on its own topic (entries received live: the
/// first may follow some published before the subscription).
fn chained(entries: &[&Value]) -> bool {
    entries
        .windows(2)
        .all(|pair| pair[1]["prev_seq"] == pair[0]["seq"])
}

#[tokio::test]
async fn reasons_and_routing_reach_staff_and_never_the_applicant() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    staff::add(&stack, "ann", StaffRole::Agent).await?;
    staff::add(&stack, "sue", StaffRole::Supervisor).await?;
    let mut kiosk = Participant::applicant(&stack, "kiosk-1").await?;
    let session = kiosk.open(None).await?;
    kiosk.follow(&session, &["messages"]).await?;
    let mut ann = Participant::connect(&stack, "ann", stack.token("ann", Role::Agent)).await?;
    ann.accepted(&session, json!({"client_msg_id": "j", "type": "join"}))
        .await?;
    ann.follow(&session, &["messages", "notes"]).await?;
    // A supervisor follows the session from outside, as a desk does.
    let mut sue = Participant::connect(&stack, "sue", stack.token("sue", Role::Supervisor)).await?;
    sue.follow(&session, &["messages", "notes"]).await?;

    // Ann escalates with a reason and sends the session to another team's queue; Sue closes it
    // with a reason.
    ann.accepted(
        &session,
        json!({"client_msg_id": "e", "type": "escalate", "reason": ESCALATE_REASON}),
    )
    .await?;
    ann.until("the escalation's reason as a note", |seen| {
        seen.iter()
            .any(|(t, p)| t.ends_with("/notes") && p["body"] == ESCALATE_REASON)
    })
    .await?;
    ann.accepted(
        &session,
        json!({"client_msg_id": "t", "type": "transfer", "to_team": TEAM}),
    )
    .await?;
    sue.accepted(
        &session,
        json!({"client_msg_id": "c", "type": "close", "reason": CLOSE_REASON}),
    )
    .await?;

    // Live: the applicant sees that it was escalated, handed on and closed, and no reason, no
    // team; the supervisor got both reasons as notes.
    let closed = |seen: &[(String, Value)]| {
        seen.iter()
            .any(|(t, p)| t.ends_with("/messages") && p["event"]["type"] == "closed")
    };
    kiosk.until("the close", closed).await?;
    sue.until("the close", closed).await?;
    sue.until("the close's reason", |seen| {
        seen.iter()
            .any(|(t, p)| t.ends_with("/notes") && p["body"] == CLOSE_REASON)
    })
    .await?;
    let live = kiosk.everything();
    for secret in [ESCALATE_REASON, CLOSE_REASON, TEAM, "\"reason\""] {
        assert!(
            !live.contains(secret),
            "the applicant saw {secret:?} live:\n{live}"
        );
    }
    let shapes: Vec<String> = kiosk.entries("messages").into_iter().map(shape).collect();
    for event in ["escalated", "transferred", "closed"] {
        assert!(
            shapes.iter().any(|s| s == event),
            "{event} missing: {shapes:?}"
        );
    }
    assert!(chained(&kiosk.entries("messages")), "{shapes:?}");
    let notes: Vec<&Value> = sue.entries("notes");
    let bodies: Vec<&str> = notes.iter().filter_map(|n| n["body"].as_str()).collect();
    assert_eq!(bodies, [ESCALATE_REASON, CLOSE_REASON]);
    assert!(chained(&notes) && chained(&sue.entries("messages")));

    // By resync: the same for the applicant; staff read the reasons and the team.
    let page = resync(&mut kiosk, &session).await?;
    let read = serde_json::to_string(&page)?;
    for secret in [ESCALATE_REASON, CLOSE_REASON, TEAM] {
        assert!(
            !read.contains(secret),
            "the applicant read {secret:?}: {read}"
        );
    }
    assert!(page.iter().all(|e| e["kind"] != "note"), "{read}");
    let staff_page = serde_json::to_string(&resync(&mut sue, &session).await?)?;
    for secret in [ESCALATE_REASON, CLOSE_REASON, TEAM] {
        assert!(
            staff_page.contains(secret),
            "staff miss {secret:?}: {staff_page}"
        );
    }

    // An entry stored before reasons became notes holds its reason in the event: the
    // applicant's view leaves it out all the same; staff read it.
    let db = stack.store().connection();
    let escalated = message::Entity::find()
        .filter(message::Column::SessionId.eq(&session))
        .filter(message::Column::Body.contains("\"escalated\""))
        .one(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no escalated event"))?;
    let mut old: message::ActiveModel = escalated.into();
    old.body =
        Set(json!({"type": "escalated", "reason": "legacy: applicant is lying"}).to_string());
    old.update(db).await?;
    let read = serde_json::to_string(&resync(&mut kiosk, &session).await?)?;
    assert!(
        !read.contains("legacy"),
        "the applicant read an old reason: {read}"
    );
    let staff_page = serde_json::to_string(&resync(&mut sue, &session).await?)?;
    assert!(
        staff_page.contains("legacy: applicant is lying"),
        "{staff_page}"
    );
    stack.shutdown().await;
    Ok(())
}
