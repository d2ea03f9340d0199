//! The pipeline against hostile or unlucky input: nothing a client sends cuts the pipeline off,
//! loses other people's submissions or reaches the record unchecked, and a dropped connection
//! between the pipeline and the gateway loses nothing the gateway acknowledged.

use std::collections::{BTreeMap, HashMap};

use schemas::db::entities::agent::StaffRole;
use schemas::db::entities::message;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use testkit::TestDatabase;
use testkit::relay::Relay;

use super::*;

/// Opens a session for `applicant` (a [`Staff`]-style client with the applicant role).
async fn open(applicant: &mut Staff, payload: serde_json::Value) -> anyhow::Result<Ack> {
    let topic = format!("cc/v1/open/{}", applicant.subject);
    applicant
        .client
        .client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
        .await?;
    let before = applicant.acks.len();
    while applicant.acks.len() == before {
        let publish = applicant.client.next_publish().await?;
        if String::from_utf8_lossy(&publish.topic).ends_with("/ack") {
            applicant
                .acks
                .push(serde_json::from_slice(&publish.payload)?);
        }
    }
    Ok(applicant.acks[before].clone())
}

/// An applicant (a [`Staff`]-style client) with a kiosk session of its own open.
pub(super) async fn kiosk_with_session(
    stack: &TestStack,
    subject: &str,
) -> anyhow::Result<(Staff, String)> {
    let mut kiosk = Staff::connect(stack, subject, Role::Applicant).await?;
    let session = open(
        &mut kiosk,
        json!({"client_msg_id": "o", "channel": "kiosk"}),
    )
    .await?
    .session_id
    .expect("a session");
    Ok((kiosk, session))
}

/// Publishes a message without waiting for its answer (read later with [`acks_until`]).
pub(super) async fn send_message(
    kiosk: &Staff,
    session: &str,
    cmid: &str,
    body: &str,
) -> anyhow::Result<()> {
    kiosk
        .client
        .client
        .publish(
            format!("cc/v1/sessions/{session}/submit/{}", kiosk.subject),
            QoS::AtLeastOnce,
            false,
            json!({"client_msg_id": cmid, "type": "message", "body": body}).to_string(),
        )
        .await?;
    Ok(())
}

/// Reads what arrives until `client` holds `count` acknowledgements.
pub(super) async fn acks_until(client: &mut Staff, count: usize) -> anyhow::Result<()> {
    while client.acks.len() < count {
        let publish = client.client.next_publish().await?;
        if String::from_utf8_lossy(&publish.topic).ends_with("/ack") {
            client.acks.push(serde_json::from_slice(&publish.payload)?);
        }
    }
    Ok(())
}

/// Another writer locks the audit head and holds it until the returned transaction ends: the
/// pipeline's next batch waits meanwhile.
async fn hold_the_database(stack: &TestStack) -> anyhow::Result<sea_orm::DatabaseTransaction> {
    use sea_orm::TransactionTrait;
    let blocker = stack.store().connection().begin().await?;
    // Every batch locks the audit head first: SQLite's write lock, PostgreSQL's row lock.
    blocker
        .execute_unprepared("UPDATE audit_head SET mac = mac WHERE id = 1")
        .await?;
    Ok(blocker)
}

pub(super) async fn stored(
    stack: &TestStack,
    session: &str,
) -> anyhow::Result<Vec<message::Model>> {
    Ok(message::Entity::find()
        .filter(message::Column::SessionId.eq(session))
        .order_by_asc(message::Column::Seq)
        .all(stack.store().connection())
        .await?)
}

pub(super) fn accepted_seq(ack: &Ack) -> Option<u64> {
    match ack.outcome {
        Outcome::Accepted { seq } => seq,
        Outcome::Rejected { .. } => None,
    }
}

/// The next resync page on the ack topic (other acknowledgements are kept aside).
async fn resync_page(client: &mut Staff) -> anyhow::Result<Resync> {
    loop {
        let publish = client.client.next_publish().await?;
        if !String::from_utf8_lossy(&publish.topic).ends_with("/ack") {
            continue;
        }
        let value: serde_json::Value = serde_json::from_slice(&publish.payload)?;
        if value.get("entries").is_some() {
            return Ok(serde_json::from_value(value)?);
        }
        client.acks.push(serde_json::from_value(value)?);
    }
}

/// A long session resyncs in bounded pages that chain to its end, each echoing its request's
/// id; before pages, a reply over the packet limit cost the pipeline its connection and every
/// submission in flight.
#[tokio::test]
async fn a_long_session_resyncs_in_bounded_pages() -> anyhow::Result<()> {
    const MAX_PACKET: usize = 64 * 1024;
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.mqtt.max_packet_size = MAX_PACKET;
        config.bridge.rate_per_second = 1000.0;
        config.bridge.rate_burst = 1000.0;
    })
    .await?;
    // As PROTOCOL.md asks of a client: room for a page (rumqttc's own default is 10 KiB).
    let mut options = TestClientV5::tcp_options(&stack, "kiosk-long", Role::Applicant);
    options.set_max_packet_size(Some(MAX_PACKET as u32));
    let mut client = TestClientV5::connect(options).await?;
    client
        .subscribe(vec![filter(
            "cc/v1/clients/kiosk-long/ack",
            QoS::AtLeastOnce,
        )])
        .await?;
    let mut kiosk = Staff {
        client,
        subject: "kiosk-long".to_owned(),
        acks: Vec::new(),
        other: Vec::new(),
    };
    let session = open(
        &mut kiosk,
        json!({"client_msg_id": "o", "channel": "kiosk"}),
    )
    .await?
    .session_id
    .expect("a session");
    let body = "x".repeat(4000);
    for n in 0..74 {
        kiosk
            .accept(
                &session,
                json!({"client_msg_id": format!("m{n}"), "type": "message", "body": body}),
            )
            .await?;
    }

    let mut seqs = Vec::new();
    let mut from = 1;
    let mut pages = 0;
    loop {
        let id = format!("r{pages}");
        kiosk
            .client
            .client
            .publish(
                format!("cc/v1/sessions/{session}/submit/kiosk-long"),
                QoS::AtLeastOnce,
                false,
                json!({"client_msg_id": id, "type": "resync", "from_seq": from}).to_string(),
            )
            .await?;
        let page = resync_page(&mut kiosk).await?;
        pages += 1;
        assert_eq!(page.client_msg_id, id, "a page echoes its request's id");
        assert!(!page.entries.is_empty());
        assert!(
            serde_json::to_vec(&page)?.len() < MAX_PACKET,
            "a page fits in a packet"
        );
        for entry in &page.entries {
            let expected_prev = seqs.last().copied().unwrap_or(0);
            assert_eq!(entry.prev_seq, expected_prev, "pages chain by prev_seq");
            seqs.push(entry.seq);
        }
        match page.next_from_seq {
            Some(next) => from = next,
            None => break,
        }
    }
    assert!(pages > 1, "75 entries of 4 KB take more than one page");
    assert_eq!(seqs, (1..=75).collect::<Vec<u64>>());

    // The pipeline is still there for everyone else.
    let mut other = Staff::connect(&stack, "kiosk-other", Role::Applicant).await?;
    let opened = open(
        &mut other,
        json!({"client_msg_id": "o", "channel": "kiosk"}),
    )
    .await?;
    assert!(rejected(&opened).is_none(), "{opened:?}");
    stack.shutdown().await;
    Ok(())
}

/// Input the protocol refuses is refused with a reason, the rejection echoes nothing unbounded,
/// nothing of it is stored, and the pipeline goes on serving.
#[tokio::test]
async fn strict_input_is_refused_with_a_reason() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut kiosk = Staff::connect(&stack, "kiosk-strict", Role::Applicant).await?;
    let session = open(
        &mut kiosk,
        json!({"client_msg_id": "o", "channel": "kiosk"}),
    )
    .await?
    .session_id
    .expect("a session");
    let huge_id = "i".repeat(10_000);
    let rows = [
        (
            "a type given as a number",
            json!({"client_msg_id": "t0", "type": 0, "body": "x"}),
            RejectReason::Invalid,
        ),
        (
            "close given as a number",
            json!({"client_msg_id": "t8", "type": 8}),
            RejectReason::Invalid,
        ),
        (
            "an empty client_msg_id",
            json!({"client_msg_id": "", "type": "message", "body": "x"}),
            RejectReason::Invalid,
        ),
        (
            "a 10,000-character client_msg_id",
            json!({"client_msg_id": huge_id, "type": "message", "body": "x"}),
            RejectReason::Invalid,
        ),
        (
            "a right-to-left override",
            json!({"client_msg_id": "bidi", "type": "message", "body": "invoice \u{202E}fdp.exe"}),
            RejectReason::ContentRefused,
        ),
        (
            "a NUL",
            json!({"client_msg_id": "nul", "type": "message", "body": "a\u{0}b"}),
            RejectReason::ContentRefused,
        ),
        (
            "an isolate in a close reason",
            json!({"client_msg_id": "cr", "type": "close", "reason": "\u{2067}x"}),
            RejectReason::ContentRefused,
        ),
    ];
    for (case, payload, reason) in rows {
        let answer = kiosk.submit(&session, payload).await?;
        assert_eq!(rejected(&answer).map(|r| r.0), Some(reason), "{case}");
        assert!(
            answer.client_msg_id.len() <= 64,
            "{case}: echoed id bounded"
        );
    }
    // Only the opening is on record, and the session is still open for the next message.
    assert_eq!(stored(&stack, &session).await?.len(), 1);
    let ok = kiosk
        .accept(
            &session,
            json!({"client_msg_id": "fine", "type": "message", "body": "שלום, hello"}),
        )
        .await?;
    assert_eq!(accepted_seq(&ok), Some(2));
    stack.shutdown().await;
    Ok(())
}

/// A reused client message id: the same submission gets its original answer; a different one
/// is refused as `duplicate_id`, and nothing of it is stored.
#[tokio::test]
async fn a_reused_client_msg_id_is_refused_unless_it_is_a_true_resubmission() -> anyhow::Result<()>
{
    let stack = TestStack::start().await?;
    register_staff(&stack, &[("agent-dup", StaffRole::Agent)]).await?;
    let mut kiosk = Staff::connect(&stack, "kiosk-dup", Role::Applicant).await?;
    let open_request = json!({"client_msg_id": "o", "channel": "kiosk", "first_message": "Hi"});
    let opened = open(&mut kiosk, open_request.clone()).await?;
    let session = opened.session_id.clone().expect("a session");
    // The same open again: the same session; another open with that id: refused.
    let again = open(&mut kiosk, open_request).await?;
    assert_eq!(again.session_id, opened.session_id);
    assert_eq!(accepted_seq(&again), Some(1));
    let other = open(
        &mut kiosk,
        json!({"client_msg_id": "o", "channel": "phone", "first_message": "Hi"}),
    )
    .await?;
    assert_eq!(
        rejected(&other).map(|r| r.0),
        Some(RejectReason::DuplicateId)
    );

    let message = |body: &str| json!({"client_msg_id": "m1", "type": "message", "body": body});
    let first = kiosk.accept(&session, message("first text")).await?;
    let replaced = kiosk.submit(&session, message("other text")).await?;
    assert_eq!(
        rejected(&replaced).map(|r| r.0),
        Some(RejectReason::DuplicateId)
    );
    let resent = kiosk.accept(&session, message("first text")).await?;
    assert_eq!(accepted_seq(&resent), accepted_seq(&first));
    let bodies: Vec<String> = stored(&stack, &session)
        .await?
        .into_iter()
        .filter(|m| m.client_msg_id == "m1")
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["first text"]);

    // Kept acknowledgements (no stream entry) compare the request too.
    let mut agent = Staff::connect(&stack, "agent-dup", Role::Agent).await?;
    agent
        .accept(&session, json!({"client_msg_id": "j", "type": "join"}))
        .await?;
    let acquire = json!({"client_msg_id": "l", "type": "lock", "op": "acquire"});
    let held = agent.accept(&session, acquire.clone()).await?;
    assert_eq!(agent.accept(&session, acquire).await?, held);
    let release = agent
        .submit(
            &session,
            json!({"client_msg_id": "l", "type": "lock", "op": "release"}),
        )
        .await?;
    assert_eq!(
        rejected(&release).map(|r| r.0),
        Some(RejectReason::DuplicateId)
    );
    assert_eq!(
        session_row(&stack, &session).await?.lock_holder.as_deref(),
        Some("agent-dup"),
        "the refused release changed nothing"
    );
    stack.shutdown().await;
    Ok(())
}

/// Every action that leaves a stream entry says where in its acknowledgement.
#[tokio::test]
async fn acknowledgements_name_the_entry_each_action_left() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    register_staff(
        &stack,
        &[
            ("agent-s1", StaffRole::Agent),
            ("agent-s2", StaffRole::Agent),
        ],
    )
    .await?;
    let mut kiosk = Staff::connect(&stack, "kiosk-seq", Role::Applicant).await?;
    let opened = open(&mut kiosk, json!({"client_msg_id": "o", "channel": "web"})).await?;
    let session = opened.session_id.clone().expect("a session");
    let mut ann = Staff::connect(&stack, "agent-s1", Role::Agent).await?;
    let mut seqs = BTreeMap::new();
    seqs.insert("open", accepted_seq(&opened));
    let join = ann
        .accept(&session, json!({"client_msg_id": "j", "type": "join"}))
        .await?;
    seqs.insert("join", accepted_seq(&join));
    let escalate = ann
        .accept(
            &session,
            json!({"client_msg_id": "e", "type": "escalate", "reason": "needs a clerk"}),
        )
        .await?;
    seqs.insert("escalate", accepted_seq(&escalate));
    let transfer = ann
        .accept(
            &session,
            json!({"client_msg_id": "t", "type": "transfer", "to_agent": "agent-s2"}),
        )
        .await?;
    seqs.insert("transfer", accepted_seq(&transfer));
    let close = kiosk
        .accept(&session, json!({"client_msg_id": "c", "type": "close"}))
        .await?;
    seqs.insert("close", accepted_seq(&close));

    let record: HashMap<i64, message::Model> = stored(&stack, &session)
        .await?
        .into_iter()
        .map(|m| (m.seq, m))
        .collect();
    let expected = [
        ("open", "opened"),
        ("join", "joined"),
        ("escalate", "escalated"),
        ("transfer", "transferred"),
        ("close", "closed"),
    ];
    for (action, event) in expected {
        let seq = seqs[action].unwrap_or_else(|| panic!("{action} has no seq"));
        let row = &record[&(seq as i64)];
        let stored_event: serde_json::Value = serde_json::from_str(&row.body)?;
        assert_eq!(stored_event["type"], event, "{action} -> entry {seq}");
    }
    stack.shutdown().await;
    Ok(())
}

/// A database that refuses one row fails one submission, not its batch: the others in the
/// batch are stored and acknowledged, the offender is refused as `unavailable`.
async fn one_refused_row_does_not_take_its_batch_down(
    database: TestDatabase,
) -> anyhow::Result<()> {
    let postgres = database.url().starts_with("postgres");
    let stack = TestStack::start_with(database, |config| {
        config.bridge.rate_per_second = 1000.0;
        config.bridge.rate_burst = 1000.0;
        // Deciding a failed batch again one by one takes a while; what waits meanwhile must
        // not be shed, since this test is about isolation, not overload.
        config.bridge.max_queue_delay_ms = 0;
    })
    .await?;
    // A trigger stands in for whatever a database may refuse that validation did not foresee.
    let db = stack.store().connection();
    if postgres {
        db.execute_unprepared(
            "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
               IF NEW.body = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; \
             END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_poison BEFORE INSERT ON messages \
               FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
        )
        .await?;
    } else {
        db.execute_unprepared(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON messages \
             WHEN NEW.body = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END;",
        )
        .await?;
    }
    let mut applicants = Vec::new();
    for n in 0..4 {
        let mut kiosk = Staff::connect(&stack, &format!("kiosk-b{n}"), Role::Applicant).await?;
        let session = open(
            &mut kiosk,
            json!({"client_msg_id": "o", "channel": "kiosk"}),
        )
        .await?
        .session_id
        .expect("a session");
        applicants.push((kiosk, session));
    }
    // Everyone's messages at once, the poison among them, so that they share batches.
    for round in 0..5 {
        for (n, (kiosk, session)) in applicants.iter().enumerate() {
            let body = if n == 0 && round == 2 {
                "poison".to_owned()
            } else {
                format!("{n}.{round}")
            };
            kiosk
                .client
                .client
                .publish(
                    format!("cc/v1/sessions/{session}/submit/{}", kiosk.subject),
                    QoS::AtLeastOnce,
                    false,
                    json!({"client_msg_id": format!("m{round}"), "type": "message", "body": body})
                        .to_string(),
                )
                .await?;
        }
    }
    for (n, (kiosk, session)) in applicants.iter_mut().enumerate() {
        acks_until(kiosk, 6).await?;
        let outcomes: Vec<Option<RejectReason>> = kiosk.acks[1..]
            .iter()
            .map(|a| rejected(a).map(|r| r.0))
            .collect();
        let bodies: Vec<String> = stored(&stack, session)
            .await?
            .into_iter()
            .skip(1)
            .map(|m| m.body)
            .collect();
        if n == 0 {
            assert_eq!(
                outcomes,
                [None, None, Some(RejectReason::Unavailable), None, None]
            );
            assert_eq!(bodies, ["0.0", "0.1", "0.3", "0.4"]);
        } else {
            assert_eq!(outcomes, [None; 5], "kiosk-b{n}");
            assert_eq!(bodies.len(), 5, "kiosk-b{n}");
        }
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn one_refused_row_does_not_take_its_batch_down_on_sqlite() -> anyhow::Result<()> {
    one_refused_row_does_not_take_its_batch_down(TestDatabase::sqlite()?).await
}

#[tokio::test]
async fn one_refused_row_does_not_take_its_batch_down_on_postgres() -> anyhow::Result<()> {
    let Some(url) = testkit::postgres_url() else {
        return Ok(());
    };
    one_refused_row_does_not_take_its_batch_down(TestDatabase::postgres(&url).await?).await
}

/// Every submission the gateway acknowledged is decided, stored once and answered, even when
/// the pipeline's connection to the gateway drops again and again under load.
#[tokio::test]
async fn nothing_acknowledged_is_lost_when_the_pipelines_connection_drops() -> anyhow::Result<()> {
    nothing_acknowledged_is_lost(Interruption::ConnectionCut).await
}

/// The same when the pipeline linked in-process (as `courtchat serve` runs it) is stopped dead
/// again and again under load and started anew on the same gateway: what it held and had not
/// acknowledged is handed to the next one, and nothing is decided twice.
#[tokio::test]
async fn nothing_acknowledged_is_lost_when_the_in_process_pipeline_restarts() -> anyhow::Result<()>
{
    nothing_acknowledged_is_lost(Interruption::Restart).await
}

/// What happens to the pipeline while the load runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Interruption {
    /// Its MQTT connection is cut (it runs as its own process would).
    ConnectionCut,
    /// Its task is aborted and a new pipeline starts on the same in-process link.
    Restart,
}

/// A pipeline the test runs, and how to stop it.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn run_pipeline(stack: &TestStack, link: bridge::BrokerLink) -> anyhow::Result<Running> {
    let pipeline = courtchat::pipeline(stack.config(), stack.store()).await?;
    let mut ready = pipeline.readiness();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(pipeline.run(link, async move {
        let _ = stopped.await;
    }));
    ready.wait_for(|ready| *ready).await?;
    Ok(Running { stop, task })
}

async fn nothing_acknowledged_is_lost(interruption: Interruption) -> anyhow::Result<()> {
    const APPLICANTS: usize = 8;
    const MESSAGES: usize = 40;
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.bridge.in_process = false;
        config.bridge.rate_per_second = 1000.0;
        config.bridge.rate_burst = 1000.0;
        // A small window, so that much of the load waits in the gateway during the cuts.
        config.bridge.intake_window = 16;
        // What waits in the gateway during a cut would otherwise be refused as busy on
        // arrival; this test is about every submission being decided.
        config.bridge.max_queue_delay_ms = 0;
    })
    .await?;
    let relay = Relay::start(stack.mqtt_tcp_addr()).await?;
    let gateway = match stack.in_process_link()? {
        bridge::BrokerLink::InProcess(gateway) => gateway,
        bridge::BrokerLink::Mqtt { .. } => unreachable!("an in-process link"),
    };
    let link = || match interruption {
        Interruption::ConnectionCut => courtchat::pipeline_link(stack.config(), relay.addr()),
        Interruption::Restart => bridge::BrokerLink::InProcess(gateway.clone()),
    };
    let mut running = run_pipeline(&stack, link()).await?;

    let mut applicants = Vec::new();
    for n in 0..APPLICANTS {
        let mut kiosk = Staff::connect(&stack, &format!("kiosk-d{n}"), Role::Applicant).await?;
        let session = open(
            &mut kiosk,
            json!({"client_msg_id": "o", "channel": "kiosk"}),
        )
        .await?
        .session_id
        .expect("a session");
        applicants.push((kiosk, session));
    }
    let load = tokio::spawn({
        let publishers: Vec<_> = applicants
            .iter()
            .map(|(kiosk, session)| {
                (
                    kiosk.client.client.clone(),
                    kiosk.subject.clone(),
                    session.clone(),
                )
            })
            .collect();
        async move {
            for m in 0..MESSAGES {
                for (client, subject, session) in &publishers {
                    let payload = json!({"client_msg_id": format!("m{m}"), "type": "message", "body": format!("{subject} {m}")});
                    client
                        .publish(
                            format!("cc/v1/sessions/{session}/submit/{subject}"),
                            QoS::AtLeastOnce,
                            false,
                            payload.to_string(),
                        )
                        .await?;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(())
        }
    });
    // Cut the pipeline off, or stop it dead and start another, three times while the load
    // runs.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        match interruption {
            Interruption::ConnectionCut => relay.cut(),
            Interruption::Restart => {
                running.task.abort();
                let _ = (&mut running.task).await;
                running = run_pipeline(&stack, link()).await?;
            }
        }
    }
    load.await??;

    for (kiosk, session) in applicants.iter_mut() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut answered: BTreeMap<String, u64> = BTreeMap::new();
        while answered.len() < MESSAGES {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let publish = tokio::time::timeout(left, kiosk.client.next_publish())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{}: {} of {MESSAGES} submissions answered",
                        kiosk.subject,
                        answered.len()
                    )
                })??;
            if !String::from_utf8_lossy(&publish.topic).ends_with("/ack") {
                continue;
            }
            let answer: Ack = serde_json::from_slice(&publish.payload)?;
            let seq = accepted_seq(&answer)
                .ok_or_else(|| anyhow::anyhow!("{} refused: {answer:?}", kiosk.subject))?;
            // A repeated answer (after a redelivery) names the same entry.
            if let Some(earlier) = answered.insert(answer.client_msg_id.clone(), seq) {
                assert_eq!(earlier, seq, "{}: {}", kiosk.subject, answer.client_msg_id);
            }
        }
        let rows = stored(&stack, session).await?;
        let ids: Vec<&str> = rows
            .iter()
            .skip(1)
            .map(|m| m.client_msg_id.as_str())
            .collect();
        assert_eq!(ids.len(), MESSAGES, "{}: stored once each", kiosk.subject);
        let mut last = 0;
        for m in 0..MESSAGES {
            let id = format!("m{m}");
            let row = rows.iter().find(|r| r.client_msg_id == id).expect("stored");
            assert_eq!(answered[&id], row.seq as u64, "{} {id}", kiosk.subject);
            assert!(
                row.seq > last,
                "{}: stored in the order sent",
                kiosk.subject
            );
            last = row.seq;
        }
    }
    let _ = running.stop.send(());
    running.task.await?;
    // The gateway's client holds the gateway (and its audit hook, which the stack's shutdown
    // waits for) as the server's own pipeline does until it stops.
    drop(gateway);
    stack.shutdown().await;
    Ok(())
}

/// When the store falls behind, what waited too long is refused at once as `busy` with a retry
/// hint (and not stored), while what is accepted is stored as usual; every submission is
/// answered.
#[tokio::test]
async fn submissions_that_waited_too_long_are_refused_as_busy() -> anyhow::Result<()> {
    const MESSAGES: usize = 20;
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.bridge.rate_per_second = 1000.0;
        config.bridge.rate_burst = 1000.0;
        config.bridge.max_queue_delay_ms = 150;
    })
    .await?;
    let (mut kiosk, session) = kiosk_with_session(&stack, "kiosk-busy").await?;
    // Another writer holds the database for a while: the pipeline's next commit waits.
    let blocker = hold_the_database(&stack).await?;
    for n in 0..MESSAGES {
        send_message(&kiosk, &session, &format!("m{n}"), &format!("{n}")).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    blocker.rollback().await?;

    acks_until(&mut kiosk, MESSAGES + 1).await?;
    let stored_ids: Vec<String> = stored(&stack, &session)
        .await?
        .into_iter()
        .map(|m| m.client_msg_id)
        .collect();
    let mut busy = 0;
    for answer in &kiosk.acks[1..] {
        match rejected(answer) {
            Some((RejectReason::Busy, message)) => {
                busy += 1;
                assert!(message.contains("retry in 300 ms"), "{message}");
                assert!(
                    !stored_ids.contains(&answer.client_msg_id),
                    "busy, yet stored"
                );
            }
            Some(other) => panic!("unexpected refusal {other:?}"),
            None => assert!(stored_ids.contains(&answer.client_msg_id)),
        }
    }
    assert!(
        busy > 0,
        "submissions held behind the database waited past the limit"
    );
    // Once the store keeps up, the same id is taken, as a client retries: after the hint.
    let retry = json!({"client_msg_id": "m19", "type": "message", "body": "19"});
    let mut answer = kiosk.submit(&session, retry.clone()).await?;
    for _ in 0..20 {
        if rejected(&answer).map(|r| r.0) != Some(RejectReason::Busy) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        answer = kiosk.submit(&session, retry.clone()).await?;
    }
    assert!(accepted_seq(&answer).is_some(), "{answer:?}");
    stack.shutdown().await;
    Ok(())
}

/// While one batch is being stored the next is decided; a resubmission decided then (its
/// original not yet committed) still gets the original's answer, and nothing is stored twice.
#[tokio::test]
async fn a_resubmission_decided_while_its_original_is_stored_is_not_stored_twice()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.bridge.max_queue_delay_ms = 0;
    })
    .await?;
    let (mut kiosk, session) = kiosk_with_session(&stack, "kiosk-overlap").await?;
    let blocker = hold_the_database(&stack).await?;
    let topic = format!("cc/v1/sessions/{session}/submit/kiosk-overlap");
    let message = json!({"client_msg_id": "m1", "type": "message", "body": "once"}).to_string();
    let reopen = json!({"client_msg_id": "o", "channel": "kiosk"}).to_string();
    for (topic, payload) in [
        (topic.as_str(), &message),
        ("cc/v1/open/kiosk-overlap", &reopen),
        (topic.as_str(), &message),
    ] {
        kiosk
            .client
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await?;
        // Each in a batch of its own: the first is then stored while the others are decided.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    blocker.rollback().await?;
    acks_until(&mut kiosk, 4).await?;
    let first = accepted_seq(&kiosk.acks[1]).expect("accepted");
    assert_eq!(kiosk.acks[2].session_id.as_deref(), Some(session.as_str()));
    assert_eq!(
        accepted_seq(&kiosk.acks[3]),
        Some(first),
        "the original's answer"
    );
    let ids: Vec<String> = stored(&stack, &session)
        .await?
        .into_iter()
        .map(|m| m.client_msg_id)
        .collect();
    assert_eq!(ids.iter().filter(|id| *id == "m1").count(), 1, "{ids:?}");
    stack.shutdown().await;
    Ok(())
}

/// A batch too large for one statement (on PostgreSQL its rows are split into statements of at
/// most 12 KiB, see `bridge::pipeline::writer::postgres`) is stored whole, in order, in one
/// transaction, and the audit record over it verifies.
#[tokio::test]
async fn a_batch_larger_than_one_statement_is_stored_whole_and_audited() -> anyhow::Result<()> {
    const MESSAGES: usize = 60;
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.bridge.rate_per_second = 1000.0;
        config.bridge.rate_burst = 1000.0;
    })
    .await?;
    let (mut kiosk, session) = kiosk_with_session(&stack, "kiosk-large").await?;
    // Held behind another writer, the messages pile up and are decided as one batch: 60 rows
    // of ~600 bytes of entry and audit record each, several statements' worth.
    let blocker = hold_the_database(&stack).await?;
    let body = "b".repeat(400);
    for n in 0..MESSAGES {
        send_message(&kiosk, &session, &format!("m{n}"), &format!("{n} {body}")).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.rollback().await?;

    acks_until(&mut kiosk, MESSAGES + 1).await?;
    for answer in &kiosk.acks[1..] {
        assert!(accepted_seq(answer).is_some(), "{answer:?}");
    }
    // The session's opening event may come first; the messages follow in the order sent, with
    // consecutive sequence numbers.
    let messages: Vec<(i64, String)> = stored(&stack, &session)
        .await?
        .into_iter()
        .filter(|m| m.client_msg_id.starts_with('m'))
        .map(|m| (m.seq, m.client_msg_id))
        .collect();
    let first = messages.first().map(|m| m.0).unwrap_or_default();
    let expected: Vec<(i64, String)> = (0..MESSAGES)
        .map(|n| (first + n as i64, format!("m{n}")))
        .collect();
    assert_eq!(messages, expected);
    let verification = courtchat::verify_audit(stack.config(), stack.store()).await?;
    assert!(verification.is_intact(), "{verification:?}");
    stack.shutdown().await;
    Ok(())
}
