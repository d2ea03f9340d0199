//! `/v1/sessions` over real HTTP, on conversations held over MQTT: the list with filters and
//! pages, and a transcript with notes, events, receipts, lock history and the survey answer;
//! agents see only their own sessions.

use courtchat::StaffRole;
use serde_json::{Value, json};
use testkit::TestStack;

use super::chat::{self, connected, submit};
use super::staff;

async fn get(stack: &TestStack, path: &str, token: &str) -> anyhow::Result<(u16, Value)> {
    let response = reqwest::Client::new()
        .get(stack.http_url(path))
        .bearer_auth(token)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn conversations_are_listed_and_read_by_those_allowed() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let ann = staff::add_signed_in(&stack, "ann", StaffRole::Admin).await?;
    let bob = staff::add_signed_in(&stack, "bob", StaffRole::Agent).await?;
    let cal = staff::add_signed_in(&stack, "cal", StaffRole::Agent).await?;

    // Session one: a kiosk writes, Bob joins, answers under the lock, notes, closes; the kiosk
    // reads and answers the survey.
    let (mut kiosk, one) = chat::kiosk_with_session(&stack, "kiosk-a", "kiosk").await?;
    let kiosk_submit = format!("cc/v1/sessions/{one}/submit/kiosk-a");
    let bob_submit = format!("cc/v1/sessions/{one}/submit/bob");
    submit(
        &mut kiosk,
        kiosk_submit.clone(),
        json!({"client_msg_id": "m1", "type": "message", "body": "I need a licence"}),
    )
    .await?;
    let mut bob_mqtt = connected(&stack, "bob", bob.clone()).await?;
    for action in [
        json!({"client_msg_id": "j", "type": "join"}),
        json!({"client_msg_id": "l", "type": "lock", "op": "acquire"}),
        json!({"client_msg_id": "b1", "type": "message", "body": "Which one?"}),
        json!({"client_msg_id": "n1", "type": "note", "body": "check the ID"}),
        json!({"client_msg_id": "u", "type": "lock", "op": "release"}),
    ] {
        let ack = submit(&mut bob_mqtt, bob_submit.clone(), action.clone()).await?;
        assert_eq!(ack["status"], "accepted", "{action}: {ack}");
    }
    let ack = submit(
        &mut kiosk,
        kiosk_submit.clone(),
        json!({"client_msg_id": "r", "type": "receipt", "delivered_seq": 3, "read_seq": 3}),
    )
    .await?;
    assert_eq!(ack["status"], "accepted", "{ack}");
    let ack = submit(
        &mut bob_mqtt,
        bob_submit.clone(),
        json!({"client_msg_id": "c", "type": "close"}),
    )
    .await?;
    assert_eq!(ack["status"], "accepted", "{ack}");
    let ack = submit(
        &mut kiosk,
        kiosk_submit,
        json!({"client_msg_id": "s", "type": "survey", "rating": 5, "comment": "quick"}),
    )
    .await?;
    assert_eq!(ack["status"], "accepted", "{ack}");

    // Session two: another kiosk, nobody joins.
    let (_other, two) = chat::kiosk_with_session(&stack, "kiosk-b", "phone").await?;

    // The list: both for the admin, in the order opened, a page at a time; filters.
    let (status, all) = get(&stack, "/v1/sessions", &ann).await?;
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids(&all), [one.clone(), two.clone()]);
    let (_, first) = get(&stack, "/v1/sessions?limit=1", &ann).await?;
    assert_eq!(ids(&first), vec![one.clone()]);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, second) = get(
        &stack,
        &format!("/v1/sessions?limit=1&cursor={cursor}"),
        &ann,
    )
    .await?;
    assert_eq!(ids(&second), vec![two.clone()]);
    assert!(second.get("next_cursor").is_none());
    assert_eq!(
        ids(&get(&stack, "/v1/sessions?state=closed", &ann).await?.1),
        vec![one.clone()]
    );
    assert_eq!(
        ids(&get(&stack, "/v1/sessions?state=queued", &ann).await?.1),
        vec![two.clone()]
    );
    assert_eq!(
        ids(
            &get(&stack, "/v1/sessions?until=2000-01-01T00:00:00Z", &ann)
                .await?
                .1
        ),
        Vec::<String>::new()
    );
    assert_eq!(get(&stack, "/v1/sessions?state=lost", &ann).await?.0, 400);

    // Agents: only the sessions they took part in.
    assert_eq!(
        ids(&get(&stack, "/v1/sessions", &bob).await?.1),
        vec![one.clone()]
    );
    assert_eq!(
        ids(&get(&stack, "/v1/sessions", &cal).await?.1),
        Vec::<String>::new()
    );
    assert_eq!(
        get(&stack, &format!("/v1/sessions/{one}/transcript"), &cal)
            .await?
            .0,
        403
    );
    assert_eq!(
        get(&stack, "/v1/sessions/s-nope/transcript", &ann).await?.0,
        404
    );

    // The transcript, as Bob may read it too.
    let (status, transcript) = get(&stack, &format!("/v1/sessions/{one}/transcript"), &bob).await?;
    assert_eq!(status, 200, "{transcript}");
    assert_eq!(transcript["session"]["state"], "closed");
    let entries = transcript["entries"].as_array().expect("entries");
    let seqs: Vec<i64> = entries
        .iter()
        .map(|e| e["seq"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "the whole stream, in order"
    );
    let said = |kind: &str, body: &str| {
        entries
            .iter()
            .any(|e| e["kind"] == kind && e["body"] == body)
    };
    assert!(
        said("text", "I need a licence") && said("text", "Which one?"),
        "{transcript}"
    );
    assert!(
        said("note", "check the ID"),
        "staff see notes: {transcript}"
    );
    assert!(
        entries.iter().any(|e| e["kind"] == "event"),
        "events: {transcript}"
    );
    let locks: Vec<&str> = transcript["lock_history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(locks, ["lock.acquired", "lock.released"]);
    assert_eq!(transcript["receipts"][0]["subject"], "kiosk-a");
    assert_eq!(transcript["receipts"][0]["read_seq"], 3);
    assert_eq!(transcript["survey"]["rating"], 5);
    assert_eq!(transcript["survey"]["comment"], "quick");
    stack.shutdown().await;
    Ok(())
}

/// Submits each action as `who` on `session` and requires it accepted; the last one's seq.
async fn all_accepted(
    client: &mut testkit::mqtt::TestClientV5,
    session: &str,
    who: &str,
    actions: &[Value],
) -> anyhow::Result<i64> {
    let mut seq = 0;
    for action in actions {
        let ack = submit(
            client,
            format!("cc/v1/sessions/{session}/submit/{who}"),
            action.clone(),
        )
        .await?;
        anyhow::ensure!(ack["status"] == "accepted", "{who} {action}: {ack}");
        seq = ack["seq"].as_i64().unwrap_or(seq);
    }
    Ok(seq)
}

fn bodies(transcript: &Value) -> Vec<String> {
    transcript["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] != "event")
        .map(|e| e["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn an_agent_who_left_reads_only_what_they_could_see_and_reads_are_audited()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let ann = staff::add_signed_in(&stack, "ann", StaffRole::Supervisor).await?;
    let bob = staff::add_signed_in(&stack, "bob", StaffRole::Agent).await?;
    let cal = staff::add_signed_in(&stack, "cal", StaffRole::Agent).await?;
    let (mut kiosk, one) = chat::kiosk_with_session(&stack, "kiosk-a", "kiosk").await?;
    let mut bob_mqtt = connected(&stack, "bob", bob.clone()).await?;
    let mut cal_mqtt = connected(&stack, "cal", cal.clone()).await?;
    let say = |id: &str, body: &str| json!({"client_msg_id": id, "type": "message", "body": body});
    let note = |id: &str, body: &str| json!({"client_msg_id": id, "type": "note", "body": body});
    let act = |id: &str, kind: &str| json!({"client_msg_id": id, "type": kind});
    let lock = |id: &str, op: &str| json!({"client_msg_id": id, "type": "lock", "op": op});

    all_accepted(&mut kiosk, &one, "kiosk-a", &[say("k1", "my licence")]).await?;
    let bob_left = all_accepted(
        &mut bob_mqtt,
        &one,
        "bob",
        &[
            act("j1", "join"),
            note("n1", "bob's note"),
            act("x1", "leave"),
        ],
    )
    .await?;
    // After Bob left: Cal's note and reply, the applicant's answer, a receipt beyond it.
    all_accepted(
        &mut cal_mqtt,
        &one,
        "cal",
        &[
            act("j", "join"),
            note("n2", "written after bob left"),
            lock("l", "acquire"),
            say("c1", "cal answers"),
        ],
    )
    .await?;
    let last = all_accepted(&mut kiosk, &one, "kiosk-a", &[say("k2", "my new address")]).await?;
    all_accepted(
        &mut kiosk,
        &one,
        "kiosk-a",
        &[json!({"client_msg_id": "r", "type": "receipt", "delivered_seq": last, "read_seq": last})],
    )
    .await?;

    let path = format!("/v1/sessions/{one}/transcript");
    let (status, seen) = get(&stack, &path, &bob).await?;
    anyhow::ensure!(status == 200, "{seen}");
    anyhow::ensure!(seen["visible_through_seq"] == bob_left, "{seen}");
    anyhow::ensure!(
        bodies(&seen) == ["my licence", "bob's note"],
        "bob reads past his leaving: {:?}",
        bodies(&seen)
    );
    let max_seq = seen["entries"]
        .as_array()
        .and_then(|e| e.iter().filter_map(|e| e["seq"].as_i64()).max());
    anyhow::ensure!(max_seq == Some(bob_left), "{seen}");
    anyhow::ensure!(
        seen["receipts"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|r| r["read_seq"].as_i64().is_some_and(|s| s <= bob_left)),
        "receipts beyond the horizon: {seen}"
    );
    anyhow::ensure!(
        seen["lock_history"].as_array().is_some_and(Vec::is_empty),
        "Cal's lock was taken after Bob left: {seen}"
    );
    // Cal, still a participant, and the supervisor read it all.
    for (who, token) in [("cal", &cal), ("ann", &ann)] {
        let (status, whole) = get(&stack, &path, token).await?;
        anyhow::ensure!(
            status == 200 && whole.get("visible_through_seq").is_none(),
            "{who}: {whole}"
        );
        anyhow::ensure!(bodies(&whole).len() == 5, "{who}: {:?}", bodies(&whole));
    }
    // Bob rejoins and leaves again: what happened between is his again, nothing after.
    let again = all_accepted(
        &mut bob_mqtt,
        &one,
        "bob",
        &[act("j2", "join"), act("x2", "leave")],
    )
    .await?;
    all_accepted(&mut kiosk, &one, "kiosk-a", &[say("k3", "after bob again")]).await?;
    let (_, seen) = get(&stack, &path, &bob).await?;
    anyhow::ensure!(seen["visible_through_seq"] == again, "{seen}");
    anyhow::ensure!(
        bodies(&seen).len() == 5 && !bodies(&seen).contains(&"after bob again".to_owned()),
        "{:?}",
        bodies(&seen)
    );

    // Every read is on the chain: who read which session, how far.
    use schemas::db::entities::audit_event;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    let reads = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("session.transcript.read"))
        .order_by_asc(audit_event::Column::Id)
        .all(stack.store().connection())
        .await?;
    let seen: Vec<(String, Option<String>, Value)> = reads
        .into_iter()
        .map(|e| {
            let detail: Value = serde_json::from_str(&e.detail).unwrap_or_default();
            (e.actor, e.session_id, detail["through_seq"].clone())
        })
        .collect();
    let expected = vec![
        ("bob".to_owned(), Some(one.clone()), json!(bob_left)),
        ("cal".to_owned(), Some(one.clone()), Value::Null),
        ("ann".to_owned(), Some(one.clone()), Value::Null),
        ("bob".to_owned(), Some(one.clone()), json!(again)),
    ];
    anyhow::ensure!(seen == expected, "{seen:?}");
    stack.shutdown().await;
    Ok(())
}
