//! The chat pipeline through real clients: an applicant opens a session and writes; every
//! accepted message is stored, gets the next sequence number, reaches the stream and is
//! acknowledged; resubmissions and bad input are answered as the protocol says.

use std::time::Duration;

use courtchat::Role;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Publish, SubscribeReasonCode};
use schemas::wire::{Ack, Outcome, RejectReason, Resync, StreamContent, StreamEntry};
use serde_json::json;
use testkit::TestStack;
use testkit::mqtt::{PATIENCE, TestClientV5, filter};

#[path = "pipeline_commands.rs"]
mod commands;
#[path = "pipeline_hardening.rs"]
mod hardening;
#[path = "pipeline_outage.rs"]
mod outage;
#[path = "pipeline_shared_chain.rs"]
mod shared_chain;

/// An applicant's client, sorting what arrives into acknowledgements and stream entries.
struct Applicant {
    client: TestClientV5,
    subject: String,
    acks: Vec<serde_json::Value>,
    entries: Vec<StreamEntry>,
}

impl Applicant {
    async fn connect(stack: &TestStack, subject: &str) -> anyhow::Result<Self> {
        let mut client =
            TestClientV5::connect(TestClientV5::tcp_options(stack, subject, Role::Applicant))
                .await?;
        client
            .subscribe(vec![filter(
                &format!("cc/v1/clients/{subject}/ack"),
                QoS::AtLeastOnce,
            )])
            .await?;
        Ok(Self {
            client,
            subject: subject.to_owned(),
            acks: Vec::new(),
            entries: Vec::new(),
        })
    }

    fn sort(&mut self, publish: Publish) -> anyhow::Result<()> {
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        if topic.ends_with("/ack") {
            self.acks.push(serde_json::from_slice(&publish.payload)?);
        } else {
            self.entries.push(serde_json::from_slice(&publish.payload)?);
        }
        Ok(())
    }

    /// Waits until `acks` acknowledgements and `entries` stream entries have arrived in all.
    async fn until(&mut self, acks: usize, entries: usize) -> anyhow::Result<()> {
        while self.acks.len() < acks || self.entries.len() < entries {
            let publish = self.client.next_publish().await?;
            self.sort(publish)?;
        }
        Ok(())
    }

    async fn submit(&self, session: &str, payload: serde_json::Value) -> anyhow::Result<()> {
        let topic = format!("cc/v1/sessions/{session}/submit/{}", self.subject);
        self.client
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await?;
        Ok(())
    }
}

fn ack(value: &serde_json::Value) -> Ack {
    serde_json::from_value(value.clone()).expect("an acknowledgement")
}

#[tokio::test]
async fn an_applicant_opens_a_session_and_every_message_is_stored_ordered_and_acknowledged()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut kiosk = Applicant::connect(&stack, "kiosk-1").await?;

    // Open a session with a first message.
    let open =
        json!({"v": 1, "client_msg_id": "open-1", "channel": "kiosk", "first_message": "Hello"});
    kiosk
        .client
        .client
        .publish(
            "cc/v1/open/kiosk-1",
            QoS::AtLeastOnce,
            false,
            open.to_string(),
        )
        .await?;
    kiosk.until(1, 0).await?;
    let opened = ack(&kiosk.acks[0]);
    assert_eq!(opened.client_msg_id, "open-1");
    assert!(
        matches!(opened.outcome, Outcome::Accepted { .. }),
        "{opened:?}"
    );
    let session = opened.session_id.expect("the session id");

    // The gateway learns the membership from the pipeline; subscribe once it has.
    let stream = format!("cc/v1/sessions/{session}/messages");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while kiosk
        .client
        .subscribe(vec![filter(&stream, QoS::AtLeastOnce)])
        .await?
        != vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the applicant never became a member"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What was written before subscribing is fetched with a resync.
    kiosk
        .submit(
            &session,
            json!({"client_msg_id": "r-1", "type": "resync", "from_seq": 1}),
        )
        .await?;
    kiosk.until(2, 0).await?;
    let resync: Resync = serde_json::from_value(kiosk.acks[1].clone())?;
    let got: Vec<(u64, u64)> = resync.entries.iter().map(|e| (e.seq, e.prev_seq)).collect();
    assert_eq!(got, vec![(1, 0), (2, 1)]);
    assert_eq!(
        resync.entries[1].content,
        StreamContent::Message {
            body: "Hello".into()
        }
    );

    // Ten messages: ten acknowledgements with consecutive sequence numbers, and the same ten
    // entries on the stream, in that order, each naming its predecessor.
    for n in 0..10 {
        kiosk.submit(&session, json!({"client_msg_id": format!("m{n}"), "type": "message", "body": format!("line {n}")})).await?;
    }
    kiosk.until(12, 10).await?;
    let seqs: Vec<u64> = kiosk.acks[2..]
        .iter()
        .map(|a| match ack(a).outcome {
            Outcome::Accepted { seq: Some(seq) } => seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, (3..=12).collect::<Vec<_>>());
    let stream_seqs: Vec<(u64, u64)> = kiosk.entries.iter().map(|e| (e.seq, e.prev_seq)).collect();
    assert_eq!(
        stream_seqs,
        (3..=12).map(|s| (s, s - 1)).collect::<Vec<_>>()
    );
    assert_eq!(
        kiosk.entries[0].content,
        StreamContent::Message {
            body: "line 0".into()
        }
    );

    // A resubmission returns the original acknowledgement and adds nothing.
    kiosk
        .submit(
            &session,
            json!({"client_msg_id": "m3", "type": "message", "body": "line 3"}),
        )
        .await?;
    kiosk.until(13, 10).await?;
    assert_eq!(
        ack(&kiosk.acks[12]).outcome,
        Outcome::Accepted { seq: Some(6) }
    );

    // Bad input is refused with a reason, and stores nothing.
    let rows = [
        (
            json!({"client_msg_id": "bad-1", "type": "message", "body": 42}),
            RejectReason::Invalid,
        ),
        (
            json!({"client_msg_id": "bad-2", "type": "message", "body": "x".repeat(5000)}),
            RejectReason::TooLarge,
        ),
        (
            json!({"client_msg_id": "bad-3", "type": "message", "body": "bell\u{7}"}),
            RejectReason::ContentRefused,
        ),
        (
            json!({"client_msg_id": "bad-4", "type": "note", "body": "only staff write notes"}),
            RejectReason::NotAllowed,
        ),
        (
            json!({"v": 2, "client_msg_id": "bad-5", "type": "message", "body": "from the future"}),
            RejectReason::UnsupportedVersion,
        ),
    ];
    for (n, (payload, _)) in rows.iter().enumerate() {
        kiosk.submit(&session, payload.clone()).await?;
        kiosk.until(14 + n, 10).await?;
    }
    for (n, (payload, expected)) in rows.iter().enumerate() {
        let answer = ack(&kiosk.acks[13 + n]);
        assert_eq!(
            answer.client_msg_id,
            payload["client_msg_id"].as_str().unwrap_or_default()
        );
        assert!(
            matches!(answer.outcome, Outcome::Rejected { reason, .. } if reason == *expected),
            "{answer:?}"
        );
    }
    assert!(
        kiosk
            .client
            .publishes_within(Duration::from_millis(300))
            .await
            .is_empty(),
        "nothing more on the stream"
    );

    // The record: twelve rows, sequence 1..=12 without gaps, and an intact audit chain.
    use schemas::db::entities::message;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    let db = stack.store().connection();
    let rows = message::Entity::find()
        .filter(message::Column::SessionId.eq(&session))
        .order_by_asc(message::Column::Seq)
        .all(db)
        .await?;
    assert_eq!(
        rows.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    assert_eq!(session_row(&stack, &session).await?.last_seq, 12);
    let verification = courtchat::verify_audit(stack.config(), stack.store()).await?;
    assert_eq!(verification.first_broken, None);
    assert!(
        verification.entries >= 12 + 1 + 5,
        "opening, twelve entries and five rejections are audited"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn opening_is_idempotent_and_strangers_cannot_write() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut kiosk = Applicant::connect(&stack, "kiosk-2").await?;
    let open = json!({"client_msg_id": "open-1", "channel": "phone"}).to_string();
    kiosk
        .client
        .client
        .publish("cc/v1/open/kiosk-2", QoS::AtLeastOnce, false, open.clone())
        .await?;
    kiosk
        .client
        .client
        .publish("cc/v1/open/kiosk-2", QoS::AtLeastOnce, false, open)
        .await?;
    kiosk.until(2, 0).await?;
    let (first, second) = (ack(&kiosk.acks[0]), ack(&kiosk.acks[1]));
    assert_eq!(
        first.session_id, second.session_id,
        "the same request, the same session"
    );

    // Another applicant is not a participant: the gateway refuses its submission (MQTT 5: 0x87).
    let session = first.session_id.expect("a session id");
    let mut stranger = TestClientV5::connect(TestClientV5::tcp_options(
        &stack,
        "kiosk-3",
        Role::Applicant,
    ))
    .await?;
    let topic = format!("cc/v1/sessions/{session}/submit/kiosk-3");
    stranger
        .client
        .publish(
            topic,
            QoS::AtLeastOnce,
            false,
            r#"{"client_msg_id":"x","type":"message","body":"hi"}"#,
        )
        .await?;
    assert_eq!(
        stranger.next_puback().await?.reason,
        rumqttc::v5::mqttbytes::v5::PubAckReason::NotAuthorized
    );
    stack.shutdown().await;
    Ok(())
}

/// A member of staff's client, collecting acknowledgements and everything else it receives.
struct Staff {
    client: TestClientV5,
    subject: String,
    acks: Vec<Ack>,
    other: Vec<(String, serde_json::Value)>,
}

impl Staff {
    async fn connect(stack: &TestStack, subject: &str, role: Role) -> anyhow::Result<Self> {
        let mut client =
            TestClientV5::connect(TestClientV5::tcp_options(stack, subject, role)).await?;
        client
            .subscribe(vec![filter(
                &format!("cc/v1/clients/{subject}/ack"),
                QoS::AtLeastOnce,
            )])
            .await?;
        Ok(Self {
            client,
            subject: subject.to_owned(),
            acks: Vec::new(),
            other: Vec::new(),
        })
    }

    /// Submits and waits for the acknowledgement.
    async fn submit(&mut self, session: &str, payload: serde_json::Value) -> anyhow::Result<Ack> {
        let topic = format!("cc/v1/sessions/{session}/submit/{}", self.subject);
        self.client
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await?;
        let before = self.acks.len();
        while self.acks.len() == before {
            let publish = self.client.next_publish().await?;
            let topic = String::from_utf8_lossy(&publish.topic).into_owned();
            let value: serde_json::Value = serde_json::from_slice(&publish.payload)?;
            if topic.ends_with("/ack") {
                self.acks.push(serde_json::from_value(value)?);
            } else {
                self.other.push((topic, value));
            }
        }
        Ok(self.acks[before].clone())
    }

    /// Submits and requires an acceptance.
    async fn accept(&mut self, session: &str, payload: serde_json::Value) -> anyhow::Result<Ack> {
        let answer = self.submit(session, payload).await?;
        anyhow::ensure!(rejected(&answer).is_none(), "refused: {answer:?}");
        Ok(answer)
    }

    /// Subscribes once the gateway knows the membership.
    async fn subscribe_when_member(&mut self, filter_path: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self
            .client
            .subscribe(vec![filter(filter_path, QoS::AtLeastOnce)])
            .await?
            != vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never became a member",
                self.subject
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// The session's stored row, as the pipeline left it.
async fn session_row(
    stack: &TestStack,
    id: &str,
) -> anyhow::Result<schemas::db::entities::session::Model> {
    use sea_orm::EntityTrait;
    schemas::db::entities::session::Entity::find_by_id(id)
        .one(stack.store().connection())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no stored session {id}"))
}

fn rejected(ack: &Ack) -> Option<(RejectReason, String)> {
    match &ack.outcome {
        Outcome::Rejected { reason, message } => Some((*reason, message.clone())),
        Outcome::Accepted { .. } => None,
    }
}

async fn register_staff(
    stack: &TestStack,
    staff: &[(&str, schemas::db::entities::agent::StaffRole)],
) -> anyhow::Result<()> {
    use schemas::db::entities::agent;
    use sea_orm::{ActiveModelTrait, Set};
    for (subject, role) in staff {
        agent::ActiveModel {
            subject: Set((*subject).to_owned()),
            display_name: Set(subject.to_uppercase()),
            role: Set(*role),
            team: Set(None),
            active: Set(true),
            created_at: Set(chrono_now()),
            ..Default::default()
        }
        .insert(stack.store().connection())
        .await?;
    }
    Ok(())
}

fn chrono_now() -> sea_orm::prelude::DateTimeUtc {
    sea_orm::prelude::ChronoUtc::now()
}

#[tokio::test]
async fn agents_join_and_only_the_lock_holder_answers() -> anyhow::Result<()> {
    use schemas::db::entities::agent::StaffRole;
    let stack = TestStack::start().await?;
    register_staff(
        &stack,
        &[
            ("agent-1", StaffRole::Agent),
            ("agent-2", StaffRole::Agent),
            ("sup-1", StaffRole::Supervisor),
        ],
    )
    .await?;
    let mut kiosk = Applicant::connect(&stack, "kiosk-9").await?;
    let open = json!({"client_msg_id": "open", "channel": "kiosk"}).to_string();
    kiosk
        .client
        .client
        .publish("cc/v1/open/kiosk-9", QoS::AtLeastOnce, false, open)
        .await?;
    kiosk.until(1, 0).await?;
    let session = ack(&kiosk.acks[0]).session_id.expect("a session id");
    let stream = format!("cc/v1/sessions/{session}/messages");
    let mut applicant_sub = kiosk
        .client
        .subscribe(vec![filter(&stream, QoS::AtLeastOnce)])
        .await?;
    while applicant_sub != vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)] {
        tokio::time::sleep(Duration::from_millis(20)).await;
        applicant_sub = kiosk
            .client
            .subscribe(vec![filter(&stream, QoS::AtLeastOnce)])
            .await?;
    }

    let mut ann = Staff::connect(&stack, "agent-1", Role::Agent).await?;
    let mut bob = Staff::connect(&stack, "agent-2", Role::Agent).await?;
    let mut sue = Staff::connect(&stack, "sup-1", Role::Supervisor).await?;
    // Someone who is not registered staff cannot join, whatever their token says.
    let mut eve = Staff::connect(&stack, "agent-x", Role::Agent).await?;
    assert_eq!(
        rejected(
            &eve.submit(&session, json!({"client_msg_id": "j", "type": "join"}))
                .await?
        )
        .map(|r| r.0),
        Some(RejectReason::NotAllowed)
    );

    for staff in [&mut ann, &mut bob, &mut sue] {
        staff
            .accept(&session, json!({"client_msg_id": "j", "type": "join"}))
            .await?;
        staff
            .subscribe_when_member(&format!("cc/v1/sessions/{session}/+"))
            .await?;
    }

    // Without the lock, nobody answers; with it, only its holder.
    let reply = |n: &str, body: &str| json!({"client_msg_id": n, "type": "message", "body": body});
    assert_eq!(
        rejected(&bob.submit(&session, reply("b1", "Hi")).await?).map(|r| r.0),
        Some(RejectReason::LockNotHeld)
    );
    ann.accept(
        &session,
        json!({"client_msg_id": "l1", "type": "lock", "op": "acquire"}),
    )
    .await?;
    let (reason, message) = rejected(
        &bob.submit(
            &session,
            json!({"client_msg_id": "l2", "type": "lock", "op": "acquire"}),
        )
        .await?,
    )
    .expect("refused");
    assert_eq!(
        (reason, message.contains("agent-1")),
        (RejectReason::LockHeld, true),
        "the refusal names the holder"
    );
    assert_eq!(
        rejected(&bob.submit(&session, reply("b2", "Hello?")).await?).map(|r| r.0),
        Some(RejectReason::LockHeld)
    );
    let answered = ann.submit(&session, reply("a1", "How can I help?")).await?;
    let Outcome::Accepted {
        seq: Some(answer_seq),
    } = answered.outcome
    else {
        panic!("{answered:?}")
    };
    // An internal note: staff see it, the applicant never does.
    let note = ann
        .submit(
            &session,
            json!({"client_msg_id": "n1", "type": "note", "body": "check the ID"}),
        )
        .await?;
    let Outcome::Accepted {
        seq: Some(note_seq),
    } = note.outcome
    else {
        panic!("{note:?}")
    };

    // A supervisor takes over: a new epoch, and the previous holder can no longer answer.
    sue.accept(
        &session,
        json!({"client_msg_id": "t", "type": "lock", "op": "takeover"}),
    )
    .await?;
    let (reason, message) =
        rejected(&ann.submit(&session, reply("a2", "still me")).await?).expect("refused");
    assert_eq!(
        (reason, message.contains("sup-1")),
        (RejectReason::LockHeld, true)
    );
    let sup_answer = sue
        .submit(&session, reply("s1", "I am taking this one."))
        .await?;
    assert!(
        matches!(sup_answer.outcome, Outcome::Accepted { seq: Some(seq) } if seq == note_seq + 1)
    );

    // The applicant's stream: the join events and both answers, never the note, in stored order,
    // with prev_seq skipping the note.
    kiosk.until(1, 6).await?;
    let seen: Vec<u64> = kiosk.entries.iter().map(|e| e.seq).collect();
    assert!(
        !seen.contains(&note_seq),
        "the applicant received an internal note: {seen:?}"
    );
    assert!(seen.contains(&answer_seq) && seen.contains(&(note_seq + 1)));
    let last = kiosk.entries.last().expect("entries");
    assert_eq!((last.seq, last.prev_seq), (note_seq + 1, answer_seq));
    for pair in kiosk.entries.windows(2) {
        assert_eq!(
            pair[1].prev_seq, pair[0].seq,
            "the applicant's stream is gap-free by prev_seq"
        );
    }
    // Staff saw the note on the notes topic, and the lock state (retained).
    let topics: Vec<&str> = sue.other.iter().map(|(topic, _)| topic.as_str()).collect();
    assert!(topics.iter().any(|t| t.ends_with("/lock")), "{topics:?}");

    // Leaving revokes access.
    bob.accept(&session, json!({"client_msg_id": "bye", "type": "leave"}))
        .await?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while stack.memberships().is_member(&session, "agent-2") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leave never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        bob.client
            .subscribe(vec![filter(&stream, QoS::AtLeastOnce)])
            .await?,
        vec![SubscribeReasonCode::NotAuthorized]
    );
    let verification = courtchat::verify_audit(stack.config(), stack.store()).await?;
    assert_eq!(verification.first_broken, None);
    stack.shutdown().await;
    Ok(())
}

/// Opens a session for `applicant` and returns its id.
async fn open_session(kiosk: &mut Applicant) -> anyhow::Result<String> {
    let topic = format!("cc/v1/open/{}", kiosk.subject);
    let open = json!({"client_msg_id": "open", "channel": "kiosk"}).to_string();
    kiosk
        .client
        .client
        .publish(topic, QoS::AtLeastOnce, false, open)
        .await?;
    kiosk
        .until(kiosk.acks.len() + 1, kiosk.entries.len())
        .await?;
    Ok(ack(kiosk.acks.last().expect("an ack"))
        .session_id
        .expect("a session id"))
}

#[tokio::test]
async fn transfer_escalate_close_and_survey() -> anyhow::Result<()> {
    use schemas::db::entities::{agent::StaffRole, session as sessions, survey_response};
    use sea_orm::EntityTrait;
    let stack = TestStack::start().await?;
    register_staff(
        &stack,
        &[("agent-1", StaffRole::Agent), ("agent-2", StaffRole::Agent)],
    )
    .await?;
    let mut kiosk = Applicant::connect(&stack, "kiosk-7").await?;
    let session = open_session(&mut kiosk).await?;
    let mut ann = Staff::connect(&stack, "agent-1", Role::Agent).await?;
    let mut bob = Staff::connect(&stack, "agent-2", Role::Agent).await?;
    ann.accept(&session, json!({"client_msg_id": "j", "type": "join"}))
        .await?;
    ann.accept(
        &session,
        json!({"client_msg_id": "l", "type": "lock", "op": "acquire"}),
    )
    .await?;

    // Transfer to agent-2: ann leaves, bob joins and holds the lock, in one step.
    let transfer = ann
        .submit(
            &session,
            json!({"client_msg_id": "t", "type": "transfer", "to_agent": "agent-2"}),
        )
        .await?;
    assert!(rejected(&transfer).is_none(), "{transfer:?}");
    let db = stack.store().connection();
    let row = session_row(&stack, &session).await?;
    assert_eq!(
        (
            row.assigned_agent.as_deref(),
            row.lock_holder.as_deref(),
            row.lock_epoch
        ),
        (Some("agent-2"), Some("agent-2"), 2)
    );
    let answered = bob
        .submit(
            &session,
            json!({"client_msg_id": "b1", "type": "message", "body": "Taking over."}),
        )
        .await?;
    assert!(
        rejected(&answered).is_none(),
        "the new holder answers at once: {answered:?}"
    );
    assert_eq!(
        rejected(
            &ann.submit(
                &session,
                json!({"client_msg_id": "a9", "type": "message", "body": "me?"})
            )
            .await?
        )
        .map(|r| r.0),
        Some(RejectReason::NotAllowed),
        "the previous agent is no longer a participant"
    );

    // Escalate, then close; after closing only the survey is taken.
    bob.accept(
        &session,
        json!({"client_msg_id": "e", "type": "escalate", "reason": "fee waiver"}),
    )
    .await?;
    assert_eq!(
        session_row(&stack, &session).await?.status,
        sessions::SessionStatus::Escalated
    );
    bob.accept(&session, json!({"client_msg_id": "c", "type": "close"}))
        .await?;
    assert_eq!(
        session_row(&stack, &session).await?.status,
        sessions::SessionStatus::Closed
    );
    assert_eq!(
        rejected(
            &bob.submit(
                &session,
                json!({"client_msg_id": "b2", "type": "message", "body": "one more"})
            )
            .await?
        )
        .map(|r| r.0),
        Some(RejectReason::SessionClosed)
    );

    let survey = |rating: i64, cmid: &str| json!({"client_msg_id": cmid, "type": "survey", "rating": rating, "comment": "clear"});
    kiosk.submit(&session, survey(9, "s1")).await?;
    kiosk.submit(&session, survey(5, "s2")).await?;
    kiosk.submit(&session, survey(4, "s3")).await?;
    // Resubmitting the accepted answer returns its original acknowledgement.
    kiosk.submit(&session, survey(5, "s2")).await?;
    let before = kiosk.acks.len();
    kiosk.until(before + 4, 0).await?;
    let answers: Vec<Option<RejectReason>> = kiosk.acks[before..]
        .iter()
        .map(|a| rejected(&ack(a)).map(|r| r.0))
        .collect();
    assert_eq!(
        answers,
        vec![
            Some(RejectReason::Invalid),
            None,
            Some(RejectReason::NotAllowed),
            None
        ],
        "1..5, once; the same answer again is acknowledged as before"
    );
    let stored = survey_response::Entity::find_by_id(&session)
        .one(db)
        .await?
        .expect("the survey answer");
    assert_eq!(
        (stored.rating, stored.comment.as_deref()),
        (5, Some("clear"))
    );

    // Transfer back to a team's queue from another session.
    let mut kiosk2 = Applicant::connect(&stack, "kiosk-8").await?;
    let second = open_session(&mut kiosk2).await?;
    bob.accept(&second, json!({"client_msg_id": "j2", "type": "join"}))
        .await?;
    bob.accept(
        &second,
        json!({"client_msg_id": "t2", "type": "transfer", "to_team": "renewals"}),
    )
    .await?;
    let row = session_row(&stack, &second).await?;
    assert_eq!(
        (row.status, row.team.as_deref(), row.lock_holder),
        (sessions::SessionStatus::Queued, Some("renewals"), None)
    );
    let verification = courtchat::verify_audit(stack.config(), stack.store()).await?;
    assert_eq!(verification.first_broken, None);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn receipts_move_read_horizons_forward_and_the_other_side_sees_them() -> anyhow::Result<()> {
    use schemas::db::entities::{agent::StaffRole, receipt};
    use sea_orm::EntityTrait;
    let stack = TestStack::start().await?;
    register_staff(&stack, &[("agent-1", StaffRole::Agent)]).await?;
    let mut kiosk = Applicant::connect(&stack, "kiosk-4").await?;
    let session = open_session(&mut kiosk).await?;
    let mut ann = Staff::connect(&stack, "agent-1", Role::Agent).await?;
    ann.accept(&session, json!({"client_msg_id": "j", "type": "join"}))
        .await?;
    ann.subscribe_when_member(&format!("cc/v1/sessions/{session}/receipts"))
        .await?;
    for n in 0..3 {
        kiosk
            .submit(
                &session,
                json!({"client_msg_id": format!("m{n}"), "type": "message", "body": "hi"}),
            )
            .await?;
    }
    // Seq: 1 opened, 2 joined, 3 active, 4..6 the messages.
    kiosk
        .submit(
            &session,
            json!({"client_msg_id": "r1", "type": "receipt", "delivered_seq": 6, "read_seq": 5}),
        )
        .await?;
    kiosk
        .submit(
            &session,
            json!({"client_msg_id": "r2", "type": "receipt", "read_seq": 2}),
        )
        .await?;
    kiosk
        .submit(
            &session,
            json!({"client_msg_id": "r3", "type": "receipt", "read_seq": 99}),
        )
        .await?;
    kiosk.until(kiosk.acks.len() + 6, 0).await?;

    let db = stack.store().connection();
    let row = receipt::Entity::find_by_id((session.clone(), "kiosk-4".to_owned()))
        .one(db)
        .await?
        .expect("a receipt row");
    assert_eq!(
        (row.delivered_seq, row.read_seq),
        (6, 6),
        "forward only, and never past the stream"
    );
    // The agent saw each horizon as it moved.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let publish = ann.client.next_publish().await?;
        if String::from_utf8_lossy(&publish.topic).ends_with("/receipts") {
            let state: schemas::wire::ReceiptState = serde_json::from_slice(&publish.payload)?;
            seen.push((state.subject, state.delivered_seq, state.read_seq));
        }
    }
    let kiosk_id = "kiosk-4".to_owned();
    assert_eq!(
        seen,
        vec![
            (kiosk_id.clone(), 6, 5),
            (kiosk_id.clone(), 6, 5),
            (kiosk_id, 6, 6)
        ]
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn presence_and_typing_reach_the_right_people() -> anyhow::Result<()> {
    use rumqttc::v5::mqttbytes::v5::LastWill;
    use schemas::db::entities::agent::StaffRole;
    let stack = TestStack::start().await?;
    register_staff(&stack, &[("agent-1", StaffRole::Agent)]).await?;
    let mut kiosk = Applicant::connect(&stack, "kiosk-5").await?;
    let session = open_session(&mut kiosk).await?;

    // The agent joins, then (as a dashboard does on its next connect) connects with a will:
    // "offline" on its presence topic when it vanishes. A will is checked like a publish at
    // CONNECT, so it needs the membership first.
    let mut first = Staff::connect(&stack, "agent-1", Role::Agent).await?;
    first
        .accept(&session, json!({"client_msg_id": "j", "type": "join"}))
        .await?;
    first
        .subscribe_when_member(&format!("cc/v1/sessions/{session}/messages"))
        .await?;
    let presence = format!("cc/v1/sessions/{session}/presence/agent-1");
    let mut options = TestClientV5::tcp_options(&stack, "agent-1", Role::Agent);
    options.set_last_will(LastWill::new(
        &presence,
        r#"{"v":1,"status":"offline"}"#,
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let mut ann = TestClientV5::connect(options).await?;
    ann.subscribe(vec![filter(
        &format!("cc/v1/sessions/{session}/typing/+"),
        QoS::AtLeastOnce,
    )])
    .await?;

    // The applicant watches presence and typing, and cannot watch note typing.
    let watch = |kind: &str| {
        filter(
            &format!("cc/v1/sessions/{session}/{kind}/+"),
            QoS::AtLeastOnce,
        )
    };
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    let mut codes = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while codes != vec![granted, granted, SubscribeReasonCode::NotAuthorized] {
        assert!(tokio::time::Instant::now() < deadline, "{codes:?}");
        codes = kiosk
            .client
            .subscribe(vec![
                watch("presence"),
                watch("typing"),
                watch("note-typing"),
            ])
            .await?;
    }

    // Typing, both ways.
    let typing = |who: &str| format!("cc/v1/sessions/{session}/typing/{who}");
    kiosk
        .client
        .client
        .publish(
            typing("kiosk-5"),
            QoS::AtMostOnce,
            false,
            r#"{"v":1,"typing":true}"#,
        )
        .await?;
    let seen = ann.next_publish().await?;
    assert_eq!(String::from_utf8_lossy(&seen.topic), typing("kiosk-5"));
    ann.client
        .publish(
            typing("agent-1"),
            QoS::AtMostOnce,
            false,
            r#"{"v":1,"typing":true}"#,
        )
        .await?;
    // The agent's note typing is for staff only: the gateway never lets the applicant see it.
    let note_typing = format!("cc/v1/sessions/{session}/note-typing/agent-1");
    ann.client
        .publish(
            note_typing,
            QoS::AtMostOnce,
            false,
            r#"{"v":1,"typing":true}"#,
        )
        .await?;

    // Both are sent before the agent vanishes (QoS 0 would be dropped with the connection).
    ann.client
        .publish(
            typing("agent-1"),
            QoS::AtLeastOnce,
            false,
            r#"{"v":1,"typing":false}"#,
        )
        .await?;
    ann.next_puback().await?;
    // The agent vanishes: its will tells the applicant.
    ann.kill();
    let mut topics = Vec::new();
    while !topics.iter().any(|t: &String| t.contains("/presence/")) {
        let publish = kiosk.client.next_publish().await?;
        topics.push(String::from_utf8_lossy(&publish.topic).into_owned());
    }
    assert!(topics.contains(&typing("agent-1")), "{topics:?}");
    assert!(
        !topics.iter().any(|t| t.contains("note-typing")),
        "the applicant saw note typing: {topics:?}"
    );
    assert_eq!(topics.last().map(String::as_str), Some(presence.as_str()));
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn three_agents_racing_for_the_lock_get_exactly_one_reply_per_epoch() -> anyhow::Result<()> {
    use schemas::db::entities::{agent::StaffRole, audit_event, message};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    const ROUNDS: usize = 10;
    // Each agent fires 31 actions at once: more than the default burst, and the race is about
    // the lock, not the limits.
    let stack = TestStack::start_with(testkit::TestDatabase::chosen().await?, |config| {
        config.bridge.rate_burst = 1000.0;
    })
    .await?;
    let names = ["agent-1", "agent-2", "agent-3"];
    register_staff(&stack, &names.map(|n| (n, StaffRole::Agent))).await?;
    let mut kiosk = Applicant::connect(&stack, "kiosk-6").await?;
    let session = open_session(&mut kiosk).await?;
    let mut agents = Vec::new();
    for name in names {
        let mut agent = Staff::connect(&stack, name, Role::Agent).await?;
        agent
            .accept(&session, json!({"client_msg_id": "j", "type": "join"}))
            .await?;
        agent
            .subscribe_when_member(&format!("cc/v1/sessions/{session}/messages"))
            .await?;
        agents.push(agent);
    }

    // Every agent fires ROUNDS × (acquire, reply, release) without waiting for answers.
    for round in 0..ROUNDS {
        for agent in &agents {
            let topic = format!("cc/v1/sessions/{session}/submit/{}", agent.subject);
            for payload in [
                json!({"client_msg_id": format!("acq-{round}"), "type": "lock", "op": "acquire"}),
                json!({"client_msg_id": format!("msg-{round}"), "type": "message", "body": format!("{} #{round}", agent.subject)}),
                json!({"client_msg_id": format!("rel-{round}"), "type": "lock", "op": "release"}),
            ] {
                agent
                    .client
                    .client
                    .publish(&topic, QoS::AtLeastOnce, false, payload.to_string())
                    .await?;
            }
        }
    }
    // Collect every answer and every stream entry each agent receives.
    let mut received: Vec<Vec<u64>> = Vec::new();
    for agent in &mut agents {
        let mut seqs = Vec::new();
        let mut acks = 0;
        while acks < ROUNDS * 3 {
            let publish = agent.client.next_publish().await?;
            if String::from_utf8_lossy(&publish.topic).ends_with("/ack") {
                acks += 1;
            } else {
                seqs.push(serde_json::from_slice::<StreamEntry>(&publish.payload)?.seq);
            }
        }
        // Entries published after this agent's last answer are still on their way.
        seqs.extend(
            agent
                .client
                .publishes_within(Duration::from_millis(300))
                .await
                .iter()
                .filter_map(|p| {
                    serde_json::from_slice::<StreamEntry>(&p.payload)
                        .ok()
                        .map(|e| e.seq)
                }),
        );
        received.push(seqs);
    }

    // The record: every accepted reply was written under a distinct lock epoch.
    let db = stack.store().connection();
    let accepted = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("message.accepted"))
        .filter(audit_event::Column::SessionId.eq(&session))
        .all(db)
        .await?;
    let epochs: Vec<u64> = accepted
        .iter()
        .filter_map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.detail).ok()?["lock_epoch"].as_u64()
        })
        .collect();
    let mut distinct = epochs.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(!epochs.is_empty(), "no reply was accepted");
    assert_eq!(
        distinct.len(),
        epochs.len(),
        "two replies under one epoch: {epochs:?}"
    );
    assert_eq!(
        session_row(&stack, &session).await?.lock_epoch,
        epochs.len() as i64,
        "one reply per acquisition"
    );

    // And every agent saw the stream in the stored order, without gaps or repeats.
    let stored: Vec<u64> = message::Entity::find()
        .filter(message::Column::SessionId.eq(&session))
        .order_by_asc(message::Column::Seq)
        .all(db)
        .await?
        .into_iter()
        .map(|m| m.seq as u64)
        .collect();
    for (agent, seqs) in names.iter().zip(&received) {
        let first = seqs.first().copied().unwrap_or_default();
        let expected: Vec<u64> = stored.iter().copied().filter(|seq| *seq >= first).collect();
        assert_eq!(seqs, &expected, "{agent} saw a different order");
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_lapsed_lock_is_freed_recorded_and_announced() -> anyhow::Result<()> {
    use schemas::db::entities::{agent::StaffRole, audit_event};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let stack = TestStack::start_with(testkit::TestDatabase::chosen().await?, |config| {
        config.bridge.lock_lease_secs = 1
    })
    .await?;
    register_staff(
        &stack,
        &[("agent-1", StaffRole::Agent), ("agent-2", StaffRole::Agent)],
    )
    .await?;
    let mut kiosk = Applicant::connect(&stack, "kiosk-3").await?;
    let session = open_session(&mut kiosk).await?;
    let mut ann = Staff::connect(&stack, "agent-1", Role::Agent).await?;
    let mut bob = Staff::connect(&stack, "agent-2", Role::Agent).await?;
    for staff in [&mut ann, &mut bob] {
        staff
            .accept(&session, json!({"client_msg_id": "j", "type": "join"}))
            .await?;
    }
    bob.subscribe_when_member(&format!("cc/v1/sessions/{session}/lock"))
        .await?;
    ann.accept(
        &session,
        json!({"client_msg_id": "l", "type": "lock", "op": "acquire"}),
    )
    .await?;

    // Nobody renews: within a couple of seconds the lock state says it is free.
    let mut free = false;
    while !free {
        let publish = bob.client.next_publish().await?;
        if String::from_utf8_lossy(&publish.topic).ends_with("/lock") {
            let state: schemas::wire::LockState = serde_json::from_slice(&publish.payload)?;
            free = state.holder.is_none() && state.epoch == 1;
        }
    }
    let expired = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("lock.expired"))
        .filter(audit_event::Column::SessionId.eq(&session))
        .all(stack.store().connection())
        .await?;
    assert_eq!(expired.len(), 1);
    // The next agent acquires under a new epoch.
    bob.accept(
        &session,
        json!({"client_msg_id": "l", "type": "lock", "op": "acquire"}),
    )
    .await?;
    stack.shutdown().await;
    Ok(())
}

/// A persistent session's protocol deliveries wait for its client: an agent away while a
/// session is queued finds the queue update when it comes back. (The gateway routes `cc/`
/// itself, so it is the gateway, not rumqttd, that must keep them.)
#[tokio::test]
async fn a_persistent_session_gets_what_was_published_while_it_was_away() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let persistent = || {
        let mut options = testkit::mqtt::TestClient::tcp_options(&stack, "agent-away", Role::Agent);
        options.set_clean_session(false);
        options
    };
    let mut agent = testkit::mqtt::TestClient::connect(persistent()).await?;
    agent
        .subscribe("cc/v1/queue", rumqttc::QoS::AtLeastOnce)
        .await?;
    agent.disconnect().await?;

    let mut kiosk = Applicant::connect(&stack, "kiosk-while-away").await?;
    let session = open_session(&mut kiosk).await?;

    let mut again = testkit::mqtt::TestClient::connect(persistent()).await?;
    assert!(again.session_present);
    let update: serde_json::Value = serde_json::from_slice(&again.next_publish().await?.payload)?;
    assert_eq!(
        (update["session_id"].as_str(), update["status"].as_str()),
        (Some(session.as_str()), Some("queued")),
        "{update}"
    );
    // Back online, it gets the next one live.
    let mut other = Applicant::connect(&stack, "kiosk-after").await?;
    let next = open_session(&mut other).await?;
    let update: serde_json::Value = serde_json::from_slice(&again.next_publish().await?.payload)?;
    assert_eq!(update["session_id"].as_str(), Some(next.as_str()));
    stack.shutdown().await;
    Ok(())
}
