//! Retention and legal holds through the real server: policies and holds over the admin API
//! (roles, audit records), conversations held over MQTT, then the purge run as the server and
//! `courtchat retention run` run it, with the clock moved on instead of waited for. What went
//! is blank in the transcript, which says so; a held session is untouched until released;
//! `audit verify` is intact and counts the purged rows, and still names a row deleted from a
//! session that was not purged; resync of a purged session still answers; a late survey
//! answer is refused. On SQLite always, on PostgreSQL when `COURTCHAT_TEST_POSTGRES_URL` is set.

use std::future::Future;

use chrono::{Duration, Utc};
use courtchat::StaffRole;
use schemas::db::entities::{audit_event, message};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Statement};
use serde_json::{Value, json};
use testkit::{TestDatabase, TestStack};

use super::api::call;
use super::chat::{self, connected, submit};
use super::staff;

/// A closed conversation on `channel`: the kiosk writes, `agent` joins, answers, writes a
/// note and closes with a reason; with a survey answer if `survey`.
async fn conversation(
    stack: &TestStack,
    kiosk_subject: &str,
    agent: (&str, &str),
    survey: bool,
) -> anyhow::Result<(testkit::mqtt::TestClientV5, String)> {
    let (mut kiosk, session) = chat::kiosk_with_session(stack, kiosk_subject, "kiosk").await?;
    let kiosk_topic = format!("cc/v1/sessions/{session}/submit/{kiosk_subject}");
    let ack = submit(
        &mut kiosk,
        kiosk_topic.clone(),
        json!({"client_msg_id": "m1", "type": "message", "body": "My licence number is 12345"}),
    )
    .await?;
    anyhow::ensure!(ack["status"] == "accepted", "{ack}");
    let (name, token) = agent;
    let mut agent = connected(stack, name, token.to_owned()).await?;
    let topic = format!("cc/v1/sessions/{session}/submit/{name}");
    for action in [
        json!({"client_msg_id": "j", "type": "join"}),
        json!({"client_msg_id": "l", "type": "lock", "op": "acquire"}),
        json!({"client_msg_id": "a", "type": "message", "body": "Thank you, Mr Smith"}),
        json!({"client_msg_id": "n", "type": "note", "body": "lives at 3 Main St"}),
        json!({"client_msg_id": "c", "type": "close", "reason": "address given"}),
    ] {
        let ack = submit(&mut agent, topic.clone(), action.clone()).await?;
        anyhow::ensure!(ack["status"] == "accepted", "{action}: {ack}");
    }
    if survey {
        let ack = submit(
            &mut kiosk,
            kiosk_topic,
            json!({"client_msg_id": "s", "type": "survey", "rating": 4, "comment": "Jane was kind"}),
        )
        .await?;
        anyhow::ensure!(ack["status"] == "accepted", "{ack}");
    }
    Ok((kiosk, session))
}

async fn transcript(stack: &TestStack, session: &str, token: &str) -> anyhow::Result<Value> {
    let (status, body) = call(
        stack,
        reqwest::Method::GET,
        &format!("/v1/sessions/{session}/transcript"),
        token,
        None,
    )
    .await?;
    anyhow::ensure!(status == 200, "{status} {body}");
    Ok(body)
}

fn bodies(transcript: &Value) -> Vec<String> {
    transcript["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["kind"] != "event")
        .map(|entry| entry["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn verify(stack: &TestStack, token: &str) -> anyhow::Result<Value> {
    let (status, body) = call(stack, reqwest::Method::GET, "/v1/audit/verify", token, None).await?;
    anyhow::ensure!(status == 200, "{status} {body}");
    Ok(body)
}

async fn retention_end_to_end<F, Fut>(database: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<TestDatabase>>,
{
    let stack = TestStack::start_with(database().await?, |config| {
        // Purges run when this test says, with the clock it gives.
        config.retention.run_every_secs = 0;
        config.retention.batch_sessions = 1;
        config.retention.pause_ms = 0;
    })
    .await?;
    let ann = staff::add_signed_in(&stack, "ann", StaffRole::Admin).await?;
    let sue = staff::add_signed_in(&stack, "sue", StaffRole::Supervisor).await?;
    let bob = staff::add_signed_in(&stack, "bob", StaffRole::Agent).await?;
    use reqwest::Method;

    // Policies: admins write, supervisors read, agents neither; bad input is a 4xx problem.
    let policy = json!({"name": "default", "scope": "all", "keep_days": 30});
    assert_eq!(
        call(
            &stack,
            Method::POST,
            "/v1/retention/policies",
            &sue,
            Some(policy.clone())
        )
        .await?
        .0,
        403
    );
    let (status, created) = call(
        &stack,
        Method::POST,
        "/v1/retention/policies",
        &ann,
        Some(policy.clone()),
    )
    .await?;
    assert_eq!(status, 201, "{created}");
    let again = json!({"name": "other", "scope": "all", "keep_days": 5});
    assert_eq!(
        call(
            &stack,
            Method::POST,
            "/v1/retention/policies",
            &ann,
            Some(again)
        )
        .await?
        .0,
        409,
        "one policy per scope"
    );
    for bad in [
        json!({"name": "x", "scope": "kiosk:1", "keep_days": 5}),
        json!({"name": "x", "scope": "all", "keep_days": 0}),
        json!({"name": "bad name", "scope": "team:a", "keep_days": 5}),
    ] {
        let (status, problem) = call(
            &stack,
            Method::POST,
            "/v1/retention/policies",
            &ann,
            Some(bad.clone()),
        )
        .await?;
        assert_eq!(status, 400, "{bad}: {problem}");
        assert_eq!(problem["type"], "urn:courtchat:problem:invalid-request");
    }
    let appeals = json!({"name": "appeals", "scope": "team:appeals", "keep_days": 400});
    assert_eq!(
        call(
            &stack,
            Method::POST,
            "/v1/retention/policies",
            &ann,
            Some(appeals)
        )
        .await?
        .0,
        201
    );
    let (status, changed) = call(
        &stack,
        Method::PATCH,
        "/v1/retention/policies/appeals",
        &ann,
        Some(json!({"keep_days": 365})),
    )
    .await?;
    assert_eq!((status, changed["keep_days"].clone()), (200, json!(365)));
    assert_eq!(
        call(
            &stack,
            Method::DELETE,
            "/v1/retention/policies/appeals",
            &ann,
            None
        )
        .await?
        .0,
        204
    );
    assert_eq!(
        call(
            &stack,
            Method::DELETE,
            "/v1/retention/policies/appeals",
            &ann,
            None
        )
        .await?
        .0,
        404
    );
    let (status, list) = call(&stack, Method::GET, "/v1/retention/policies", &sue, None).await?;
    assert_eq!(
        (status, list["items"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    assert_eq!(
        call(&stack, Method::GET, "/v1/retention/policies", &bob, None)
            .await?
            .0,
        403
    );

    // Two conversations; the second is put under a legal hold by a supervisor.
    let (mut kiosk, purged) = conversation(&stack, "kiosk-1", ("bob", &bob), false).await?;
    let (_kiosk2, held) = conversation(&stack, "kiosk-2", ("bob", &bob), true).await?;
    let hold = |session: &str| format!("/v1/sessions/{session}/hold");
    let reason = json!({"reason": "case 2027-CV-113"});
    assert_eq!(
        call(
            &stack,
            Method::POST,
            &hold(&held),
            &bob,
            Some(reason.clone())
        )
        .await?
        .0,
        403,
        "agents do not hold"
    );
    assert_eq!(
        call(
            &stack,
            Method::POST,
            &hold(&held),
            &sue,
            Some(json!({"reason": "  "}))
        )
        .await?
        .0,
        400
    );
    assert_eq!(
        call(
            &stack,
            Method::POST,
            &hold("no-such-session"),
            &sue,
            Some(reason.clone())
        )
        .await?
        .0,
        404
    );
    let (status, placed) = call(
        &stack,
        Method::POST,
        &hold(&held),
        &sue,
        Some(reason.clone()),
    )
    .await?;
    assert_eq!(
        (status, placed["held_by"].clone()),
        (201, json!("sue")),
        "{placed}"
    );
    assert_eq!(
        call(
            &stack,
            Method::POST,
            &hold(&held),
            &ann,
            Some(reason.clone())
        )
        .await?
        .0,
        409
    );
    let (_, listed) = call(&stack, Method::GET, "/v1/sessions?held=true", &ann, None).await?;
    let listed: Vec<&str> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(listed, [held.as_str()]);

    // Nothing is due yet: a dry run a month on says what would go and changes nothing.
    let config = stack.config();
    let now = Utc::now();
    let early = courtchat::run_retention(config, now, false).await?;
    assert!(
        early.purged.is_empty() && early.held.is_empty(),
        "{early:?}"
    );
    let later = now + Duration::days(31);
    let preview = courtchat::run_retention(config, later, true).await?;
    let ids: Vec<&str> = preview
        .purged
        .iter()
        .map(|s| s.session_id.as_str())
        .collect();
    assert_eq!(ids, [purged.as_str()]);
    assert_eq!(preview.held, std::slice::from_ref(&held));
    // The closing reason is a note of its own (staff-only), after the agent's note.
    assert_eq!(
        bodies(&transcript(&stack, &purged, &ann).await?),
        [
            "My licence number is 12345",
            "Thank you, Mr Smith",
            "lives at 3 Main St",
            "address given"
        ]
    );

    // The purge: the first session's content goes, the held one stays.
    let report = courtchat::run_retention(config, later, false).await?;
    assert_eq!(report.purged, preview.purged);
    let gone = &report.purged[0];
    assert_eq!(
        (gone.messages, gone.notes, gone.events),
        (2, 2, 0),
        "{gone:?}"
    );
    let read = transcript(&stack, &purged, &ann).await?;
    assert_eq!(bodies(&read), ["", "", "", ""]);
    assert_eq!(read["purged"]["policy"], "default", "{read}");
    assert_eq!(read["session"]["purged"], true);
    assert!(
        !read.to_string().contains("address given"),
        "the closing reason went too: {read}"
    );
    let kept = transcript(&stack, &held, &ann).await?;
    assert_eq!(kept["hold"]["reason"], "case 2027-CV-113");
    assert!(kept["purged"].is_null());
    assert_eq!(kept["survey"]["comment"], "Jane was kind");

    // The record: intact, the purged rows counted apart; the purge and the hold are on it.
    let verification = verify(&stack, &ann).await?;
    assert_eq!(verification["intact"], true, "{verification}");
    assert_eq!(verification["purged"], 4, "{verification}");
    let db = stack.store().connection();
    let entries = audit_event::Entity::find()
        .filter(audit_event::Column::Action.is_in(["retention.purged", "session.hold.placed"]))
        .order_by_asc(audit_event::Column::Id)
        .all(db)
        .await?;
    let seen: Vec<(&str, &str, Option<&str>)> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.session_id.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("sue", "session.hold.placed", Some(held.as_str())),
            ("retention", "retention.purged", Some(purged.as_str())),
        ]
    );
    assert!(entries[0].detail.contains("case 2027-CV-113"));

    // Resync of the purged session still answers (with the blanked entries); a survey answer
    // after the purge is refused.
    let kiosk_topic = format!("cc/v1/sessions/{purged}/submit/kiosk-1");
    let resync = submit(
        &mut kiosk,
        kiosk_topic.clone(),
        json!({"client_msg_id": "rs", "type": "resync", "from_seq": 1}),
    )
    .await?;
    assert!(
        resync["entries"].as_array().is_some_and(|e| !e.is_empty()),
        "{resync}"
    );
    let late = submit(
        &mut kiosk,
        kiosk_topic,
        json!({"client_msg_id": "late", "type": "survey", "rating": 2, "comment": "my phone is 555"}),
    )
    .await?;
    assert_eq!(late["status"], "rejected", "{late}");

    // Deleting a row of the session that was NOT purged is still tampering, named.
    let victim = message::Entity::find()
        .filter(message::Column::SessionId.eq(&held))
        .filter(message::Column::Kind.eq(message::MessageKind::Text))
        .one(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no message in {held}"))?;
    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_string(
        backend,
        format!("DELETE FROM messages WHERE id = {}", victim.id),
    ))
    .await?;
    let verification = verify(&stack, &ann).await?;
    assert_eq!(verification["intact"], false, "{verification}");
    let named = verification["first_difference"]
        .as_str()
        .unwrap_or_default();
    assert!(
        named.contains(&format!("{held}#{}", victim.seq)) && named.contains("deleted"),
        "{verification}"
    );

    // Released (audited), the held session goes at the next purge.
    let (status, released) = call(&stack, Method::DELETE, &hold(&held), &ann, None).await?;
    assert_eq!(
        (status, released["reason"].clone()),
        (200, json!("case 2027-CV-113"))
    );
    assert_eq!(
        call(&stack, Method::DELETE, &hold(&held), &ann, None)
            .await?
            .0,
        404
    );
    let report = courtchat::run_retention(config, later, false).await?;
    let ids: Vec<&str> = report
        .purged
        .iter()
        .map(|s| s.session_id.as_str())
        .collect();
    assert_eq!(ids, [held.as_str()]);
    assert!(report.purged[0].survey_comment);
    let released = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("session.hold.released"))
        .one(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the release is not on the chain"))?;
    assert_eq!(released.actor, "ann");
    assert_eq!(
        call(&stack, Method::POST, &hold(&held), &sue, Some(reason))
            .await?
            .0,
        409,
        "a purged session cannot be held"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn retention_purges_what_is_due_and_keeps_the_record_on_sqlite() -> anyhow::Result<()> {
    retention_end_to_end(|| async { TestDatabase::sqlite() }).await
}

#[tokio::test]
async fn retention_purges_what_is_due_and_keeps_the_record_on_postgres() -> anyhow::Result<()> {
    let Some(url) = testkit::postgres_url() else {
        return Ok(());
    };
    retention_end_to_end(|| TestDatabase::postgres(&url)).await
}
