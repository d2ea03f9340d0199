//! The audit trail vouches for what was said, not only for itself: a conversation written through
//! the real server (messages, a note, join and close events, a survey answer) verifies, and each
//! way of rewriting it behind the server's back (a body, a sender, a kind, a deleted message,
//! two swapped sequence numbers, a survey rating, a forged row) is caught by `audit verify` and
//! named. On SQLite always, on PostgreSQL when `COURTCHAT_TEST_POSTGRES_URL` is set.

use courtchat::{Difference, Discrepancy, RecordKey, Role, Verification};
use rumqttc::v5::mqttbytes::QoS;
use schemas::db::entities::{agent, audit_event, message};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set,
};
use serde_json::{Value, json};
use testkit::mqtt::{TestClientV5, filter};
use testkit::{TestDatabase, TestStack};

/// A participant's client that waits for the acknowledgement of each of its requests.
struct Participant {
    client: TestClientV5,
    subject: String,
}

impl Participant {
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
        })
    }

    /// Publishes `payload` on `topic` and returns its acknowledgement, which must accept it.
    async fn request(&mut self, topic: String, payload: Value) -> anyhow::Result<Value> {
        self.client
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await?;
        loop {
            let publish = self.client.next_publish().await?;
            let ack: Value = serde_json::from_slice(&publish.payload)?;
            if ack["client_msg_id"] == payload["client_msg_id"] {
                anyhow::ensure!(ack["status"] == "accepted", "refused: {ack}");
                return Ok(ack);
            }
        }
    }

    async fn submit(&mut self, session: &str, payload: Value) -> anyhow::Result<Value> {
        let topic = format!("cc/v1/sessions/{session}/submit/{}", self.subject);
        self.request(topic, payload).await
    }
}

/// The conversation [`recorded_conversation`] writes: its session and the sequence numbers of
/// the rows the tamperings aim at, as their acknowledgements gave them.
struct Conversation {
    session: String,
    /// The agent's answer.
    answer: i64,
    /// The agent's internal note.
    note: i64,
    /// The applicant's reply.
    reply: i64,
}

impl Conversation {
    /// `statement` with `{s}`, `{answer}`, `{note}` and `{reply}` filled in.
    fn fill(&self, statement: &str) -> String {
        statement
            .replace("{s}", &self.session)
            .replace("{answer}", &self.answer.to_string())
            .replace("{note}", &self.note.to_string())
            .replace("{reply}", &self.reply.to_string())
    }

    fn seq(&self, row: Row) -> Option<i64> {
        match row {
            Row::Answer => Some(self.answer),
            Row::Note => Some(self.note),
            Row::Reply => Some(self.reply),
            Row::Forged => Some(FORGED_SEQ),
            Row::Survey => None,
        }
    }
}

fn seq_of(ack: &Value) -> anyhow::Result<i64> {
    ack["seq"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no seq in {ack}"))
}

/// A stack with one conversation written through it: the session opened with a first message
/// and offered to the available agent, takes the reply lock, answers and writes a note, the applicant replies, the
/// agent closes, the applicant answers the survey.
async fn recorded_conversation(
    database: TestDatabase,
) -> anyhow::Result<(TestStack, Conversation)> {
    let stack = TestStack::start_with(database, |_| {}).await?;
    agent::ActiveModel {
        subject: Set("agent-1".to_owned()),
        display_name: Set("Ann".to_owned()),
        role: Set(agent::StaffRole::Agent),
        team: Set(None),
        active: Set(true),
        created_at: Set(sea_orm::prelude::ChronoUtc::now()),
        ..Default::default()
    }
    .insert(stack.store().connection())
    .await?;

    // Ann takes sessions, so the queue offers her this one (its `session.routed` entry names
    // the `joined` row another entry records; a fresh install's verification once counted
    // that as a row recorded before digests).
    let mut ann = Participant::connect(&stack, "agent-1", Role::Agent).await?;
    ann.request(
        "cc/v1/staff/agent-1/submit".to_owned(),
        json!({"client_msg_id": "d", "type": "availability", "status": "available"}),
    )
    .await?;
    let mut kiosk = Participant::connect(&stack, "kiosk-1", Role::Applicant).await?;
    let opened = kiosk
        .request(
            "cc/v1/open/kiosk-1".to_owned(),
            json!({"client_msg_id": "open", "channel": "kiosk", "first_message": "Hello"}),
        )
        .await?;
    let session = opened["session_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no session id in {opened}"))?
        .to_owned();
    // Already a participant: the join changes nothing and is accepted.
    ann.submit(&session, json!({"client_msg_id": "j", "type": "join"}))
        .await?;
    ann.submit(
        &session,
        json!({"client_msg_id": "l", "type": "lock", "op": "acquire"}),
    )
    .await?;
    let answer = ann
        .submit(
            &session,
            json!({"client_msg_id": "a1", "type": "message", "body": "How can I help?"}),
        )
        .await?;
    let note = ann
        .submit(
            &session,
            json!({"client_msg_id": "n1", "type": "note", "body": "check the case number"}),
        )
        .await?;
    let reply = kiosk
        .submit(
            &session,
            json!({"client_msg_id": "m1", "type": "message", "body": "My hearing is on Monday."}),
        )
        .await?;
    ann.submit(&session, json!({"client_msg_id": "c", "type": "close"}))
        .await?;
    kiosk
        .submit(
            &session,
            json!({"client_msg_id": "s", "type": "survey", "rating": 4, "comment": "clear"}),
        )
        .await?;
    let conversation = Conversation {
        answer: seq_of(&answer)?,
        note: seq_of(&note)?,
        reply: seq_of(&reply)?,
        session,
    };
    Ok((stack, conversation))
}

/// The id of the audit entry that recorded message `seq` of `session`, or its survey answer.
async fn entry_of(stack: &TestStack, session: &str, seq: Option<i64>) -> anyhow::Result<i64> {
    let entries = audit_event::Entity::find()
        .filter(audit_event::Column::SessionId.eq(session))
        .all(stack.store().connection())
        .await?;
    entries
        .iter()
        .find(|entry| match seq {
            Some(seq) => {
                serde_json::from_str::<Value>(&entry.detail).is_ok_and(|d| d["seq"] == seq)
            }
            None => entry.action == "survey.answered",
        })
        .map(|entry| entry.id)
        .ok_or_else(|| anyhow::anyhow!("no audit entry for {session} {seq:?}"))
}

/// The row a tampering aims at.
#[derive(Clone, Copy, Debug)]
enum Row {
    Answer,
    Note,
    Reply,
    /// A row the pipeline never wrote, at [`FORGED_SEQ`].
    Forged,
    Survey,
}

/// Far beyond the conversation's last sequence number.
const FORGED_SEQ: i64 = 99;

/// What a tampering must produce: the row it names, how it differs, and whether the
/// difference names the audit entry that recorded the row (a forged row has none).
struct Expected {
    row: Row,
    discrepancy: Discrepancy,
    names_entry: bool,
}

/// `{s}` in a statement stands for the session id, `{answer}`, `{note}` and `{reply}` for those
/// rows' sequence numbers.
const TAMPERINGS: &[(&str, &[&str], Expected)] = &[
    (
        "a body rewritten",
        &["UPDATE messages SET body = 'My hearing is on Tuesday.' \
           WHERE session_id = '{s}' AND seq = {reply}"],
        Expected {
            row: Row::Reply,
            discrepancy: Discrepancy::Changed,
            names_entry: true,
        },
    ),
    (
        "a sender changed",
        &["UPDATE messages SET sender = 'agent-1' WHERE session_id = '{s}' AND seq = {reply}"],
        Expected {
            row: Row::Reply,
            discrepancy: Discrepancy::Changed,
            names_entry: true,
        },
    ),
    (
        "a note made visible to the applicant",
        &["UPDATE messages SET kind = 'text' WHERE session_id = '{s}' AND seq = {note}"],
        Expected {
            row: Row::Note,
            discrepancy: Discrepancy::Changed,
            names_entry: true,
        },
    ),
    (
        "a message deleted",
        &["DELETE FROM messages WHERE session_id = '{s}' AND seq = {answer}"],
        Expected {
            row: Row::Answer,
            discrepancy: Discrepancy::Deleted,
            names_entry: true,
        },
    ),
    (
        "two messages' seq swapped",
        &[
            "UPDATE messages SET seq = -1 WHERE session_id = '{s}' AND seq = {answer}",
            "UPDATE messages SET seq = {answer} WHERE session_id = '{s}' AND seq = {reply}",
            "UPDATE messages SET seq = {reply} WHERE session_id = '{s}' AND seq = -1",
        ],
        // The earlier of the two in chain order.
        Expected {
            row: Row::Answer,
            discrepancy: Discrepancy::Changed,
            names_entry: true,
        },
    ),
    (
        "a survey rating changed",
        &["UPDATE survey_responses SET rating = 1 WHERE session_id = '{s}'"],
        Expected {
            row: Row::Survey,
            discrepancy: Discrepancy::Changed,
            names_entry: true,
        },
    ),
    (
        "a forged row inserted",
        &[
            "INSERT INTO messages (session_id, seq, client_msg_id, sender, kind, body, created_at) \
           SELECT session_id, 99, 'forged', 'agent-1', 'text', 'You have no case.', created_at \
           FROM messages WHERE session_id = '{s}' AND seq = {reply}",
        ],
        Expected {
            row: Row::Forged,
            discrepancy: Discrepancy::Unrecorded,
            names_entry: false,
        },
    ),
];

async fn verify(stack: &TestStack) -> anyhow::Result<Verification> {
    Ok(courtchat::verify_audit(stack.config(), stack.store()).await?)
}

/// Writes the conversation on a fresh database from `database` for each case: untouched it
/// verifies, and each tampering is caught and named.
async fn every_tampering_is_caught<F, Fut>(database: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<TestDatabase>>,
{
    let (stack, _conversation) = recorded_conversation(database().await?).await?;
    let verification = verify(&stack).await?;
    assert!(verification.is_intact(), "{verification:?}");
    let stored = message::Entity::find()
        .count(stack.store().connection())
        .await?;
    assert!(
        stored >= 7,
        "the conversation has at least seven stream entries"
    );
    assert_eq!(
        (
            verification.records.messages,
            verification.records.surveys,
            verification.records.unverifiable
        ),
        (stored, 1, 0),
        "every stored stream entry and the survey answer are checked: {verification:?}"
    );
    stack.shutdown().await;

    for (what, statements, expected) in TAMPERINGS {
        let (stack, conversation) = recorded_conversation(database().await?).await?;
        let db = stack.store().connection();
        for statement in *statements {
            db.execute_unprepared(&conversation.fill(statement)).await?;
        }
        let verification = verify(&stack).await?;
        let session = &conversation.session;
        let seq = conversation.seq(expected.row);
        let record = match seq {
            Some(seq) => RecordKey::Message {
                session_id: session.clone(),
                seq,
            },
            None => RecordKey::Survey {
                session_id: session.clone(),
            },
        };
        let entry = if expected.names_entry {
            Some(entry_of(&stack, session, seq).await?)
        } else {
            None
        };
        assert_eq!(
            verification.first_difference,
            Some(Difference {
                entry,
                record: record.clone(),
                discrepancy: expected.discrepancy,
            }),
            "{what}: {verification:?}"
        );
        assert_eq!(
            verification.first_broken, None,
            "{what}: the chain itself is untouched"
        );
        assert!(!verification.is_intact(), "{what}");
        let said = verification
            .first_difference
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(said.contains(&record.to_string()), "{what}: {said}");
        if let Some(entry) = entry {
            assert!(said.starts_with(&format!("audit entry {entry}:")), "{said}");
        }
        stack.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn tampering_with_the_conversation_is_caught_on_sqlite() -> anyhow::Result<()> {
    every_tampering_is_caught(|| async { TestDatabase::sqlite() }).await
}

#[tokio::test]
async fn tampering_with_the_conversation_is_caught_on_postgres() -> anyhow::Result<()> {
    let Some(url) = testkit::postgres_url() else {
        return Ok(());
    };
    every_tampering_is_caught(|| TestDatabase::postgres(&url)).await
}
