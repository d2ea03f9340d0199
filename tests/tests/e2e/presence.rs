//! Presence the gateway keeps and tells: the latest presence of each participant of a session
//! reaches, retained, a desk that opens the conversation later (and is forgotten when the
//! participant leaves); when a subject's last connection ends, the gateway itself publishes
//! `{"v":1,"status":"offline"}` on every open session the subject belongs to.

use std::time::Duration;

use courtchat::{Role, StaffRole};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, Publish, SubscribeReasonCode};
use serde_json::{Value, json};
use testkit::TestStack;
use testkit::mqtt::{TestClientV5, filter};

use crate::chat::{connected, kiosk_with_session, submit};
use crate::staff;

const ONLINE: &str = r#"{"v":1,"status":"online"}"#;
const OFFLINE: &str = r#"{"v":1,"status":"offline"}"#;

fn presence(session: &str, subject: &str) -> String {
    format!("cc/v1/sessions/{session}/presence/{subject}")
}

async fn say(client: &mut TestClientV5, topic: String, payload: Value) -> anyhow::Result<Value> {
    let answer = submit(client, topic, payload).await?;
    anyhow::ensure!(answer["status"] == "accepted", "{answer}");
    Ok(answer)
}

/// A member of staff registered, connected and joined to `session`.
async fn joined(stack: &TestStack, subject: &str, session: &str) -> anyhow::Result<TestClientV5> {
    staff::add(stack, subject, StaffRole::Agent).await?;
    let mut agent = connected(stack, subject, stack.token(subject, Role::Agent)).await?;
    say(
        &mut agent,
        format!("cc/v1/sessions/{session}/submit/{subject}"),
        json!({"client_msg_id": format!("join-{session}"), "type": "join"}),
    )
    .await?;
    Ok(agent)
}

/// Subscribes to every participant's presence in each of `sessions`, then returns what
/// arrives within half a second: the presence the gateway keeps.
async fn presence_kept(
    client: &mut TestClientV5,
    sessions: &[&str],
) -> anyhow::Result<Vec<Publish>> {
    let filters: Vec<_> = sessions
        .iter()
        .map(|session| filter(&presence(session, "+"), QoS::AtLeastOnce))
        .collect();
    let granted = client.subscribe(filters).await?;
    anyhow::ensure!(
        granted
            .iter()
            .all(|code| *code == SubscribeReasonCode::Success(QoS::AtLeastOnce)),
        "{granted:?}"
    );
    Ok(client.publishes_within(Duration::from_millis(500)).await)
}

fn seen(publishes: &[Publish]) -> Vec<(String, String, bool)> {
    let mut seen: Vec<_> = publishes
        .iter()
        .map(|publish| {
            (
                String::from_utf8_lossy(&publish.topic).into_owned(),
                String::from_utf8_lossy(&publish.payload).into_owned(),
                publish.retain,
            )
        })
        .collect();
    seen.sort();
    seen
}

/// A stack where one applicant may have several sessions open (one by default,
/// `bridge.max_open_sessions_per_applicant`): these tests are about presence across them.
async fn several_sessions_each() -> anyhow::Result<TestStack> {
    TestStack::start_with(testkit::TestDatabase::chosen().await?, |config| {
        config.bridge.max_open_sessions_per_applicant = 3;
    })
    .await
}

#[tokio::test]
async fn a_desk_that_opens_the_conversation_later_sees_the_applicants_presence()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let (mut kiosk, session) = kiosk_with_session(&stack, "kiosk-here", "kiosk").await?;
    for status in ["away", "online"] {
        kiosk
            .client
            .publish(
                presence(&session, "kiosk-here"),
                QoS::AtLeastOnce,
                false,
                json!({"v": 1, "status": status}).to_string(),
            )
            .await?;
        assert_eq!(kiosk.next_puback().await?.reason, PubAckReason::Success);
    }
    let mut agent = joined(&stack, "agent-later", &session).await?;
    agent
        .client
        .publish(
            presence(&session, "agent-later"),
            QoS::AtLeastOnce,
            false,
            ONLINE,
        )
        .await?;
    assert_eq!(agent.next_puback().await?.reason, PubAckReason::Success);
    let kept = presence_kept(&mut agent, &[&session]).await?;
    assert_eq!(
        seen(&kept),
        [
            (presence(&session, "agent-later"), ONLINE.to_owned(), true),
            (presence(&session, "kiosk-here"), ONLINE.to_owned(), true),
        ],
        "the latest presence of each participant, retained"
    );

    // The agent leaves: its presence there is forgotten, the applicant's stays.
    say(
        &mut agent,
        format!("cc/v1/sessions/{session}/submit/agent-later"),
        json!({"client_msg_id": "leave", "type": "leave"}),
    )
    .await?;
    let mut supervisor = TestClientV5::connect(TestClientV5::tcp_options(
        &stack,
        "sup-later",
        Role::Supervisor,
    ))
    .await?;
    let kept = presence_kept(&mut supervisor, &[&session]).await?;
    assert_eq!(
        seen(&kept),
        [(presence(&session, "kiosk-here"), ONLINE.to_owned(), true)]
    );

    // A supervisor may say it is present anywhere, but nothing is kept for a session nobody
    // belongs to: it would never be forgotten.
    supervisor
        .client
        .publish(
            presence("s-nobody", "sup-later"),
            QoS::AtLeastOnce,
            false,
            ONLINE,
        )
        .await?;
    assert_eq!(
        supervisor.next_puback().await?.reason,
        PubAckReason::Success
    );
    let mut desk = TestClientV5::connect(TestClientV5::tcp_options(
        &stack,
        "sup-other",
        Role::Supervisor,
    ))
    .await?;
    assert!(presence_kept(&mut desk, &["s-nobody"]).await?.is_empty());
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_subject_whose_last_connection_ends_is_offline_in_each_open_session() -> anyhow::Result<()>
{
    let stack = several_sessions_each().await?;
    let subject = "kiosk-leaving";
    let (mut kiosk, first) = kiosk_with_session(&stack, subject, "kiosk").await?;
    let second = say(
        &mut kiosk,
        format!("cc/v1/open/{subject}"),
        json!({"client_msg_id": "o2", "channel": "kiosk"}),
    )
    .await?["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let closed = say(
        &mut kiosk,
        format!("cc/v1/open/{subject}"),
        json!({"client_msg_id": "o3", "channel": "kiosk"}),
    )
    .await?["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    say(
        &mut kiosk,
        format!("cc/v1/sessions/{closed}/submit/{subject}"),
        json!({"client_msg_id": "c3", "type": "close"}),
    )
    .await?;
    let mut supervisor = TestClientV5::connect(TestClientV5::tcp_options(
        &stack,
        "sup-watching",
        Role::Supervisor,
    ))
    .await?;
    assert!(
        presence_kept(&mut supervisor, &[&first, &second, &closed])
            .await?
            .is_empty()
    );

    // A takeover is not the end of the subject's connection: nothing is announced.
    let kiosk = connected(&stack, subject, stack.token(subject, Role::Applicant)).await?;
    assert!(
        supervisor
            .publishes_within(Duration::from_millis(500))
            .await
            .is_empty(),
        "a takeover announces nothing"
    );

    // The applicant goes without a will: the gateway says so, live, on its open sessions only.
    kiosk.client.disconnect().await?;
    let mut announced = Vec::new();
    for _ in 0..2 {
        announced.push(supervisor.next_publish().await?);
    }
    announced.extend(
        supervisor
            .publishes_within(Duration::from_millis(500))
            .await,
    );
    let mut expected = [
        (presence(&first, subject), OFFLINE.to_owned(), false),
        (presence(&second, subject), OFFLINE.to_owned(), false),
    ];
    expected.sort();
    assert_eq!(seen(&announced), expected);
    // And keeps it for a desk that looks later.
    let mut desk = TestClientV5::connect(TestClientV5::tcp_options(
        &stack,
        "sup-later",
        Role::Supervisor,
    ))
    .await?;
    let kept = presence_kept(&mut desk, &[&first]).await?;
    assert_eq!(
        seen(&kept),
        [(presence(&first, subject), OFFLINE.to_owned(), true)]
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_will_on_one_session_and_the_gateway_on_the_others_say_offline_once() -> anyhow::Result<()>
{
    let stack = several_sessions_each().await?;
    let subject = "kiosk-will";
    let (mut kiosk, first) = kiosk_with_session(&stack, subject, "kiosk").await?;
    let second = say(
        &mut kiosk,
        format!("cc/v1/open/{subject}"),
        json!({"client_msg_id": "o2", "channel": "kiosk"}),
    )
    .await?["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    kiosk.disconnect().await?;
    let mut options = TestClientV5::tcp_options(&stack, subject, Role::Applicant);
    options.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        presence(&first, subject),
        // Extra fields are dropped: the will goes out in its canonical form.
        json!({"v": 1, "status": "offline", "by": "will"}).to_string(),
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let kiosk = TestClientV5::connect(options).await?;
    let mut supervisor = TestClientV5::connect(TestClientV5::tcp_options(
        &stack,
        "sup-will",
        Role::Supervisor,
    ))
    .await?;
    // What is kept from when the first connection ended; only what comes live matters here.
    assert_eq!(
        presence_kept(&mut supervisor, &[&first, &second])
            .await?
            .len(),
        2
    );
    // Gone without DISCONNECT: the will is published.
    kiosk.kill();
    let mut announced = vec![supervisor.next_publish().await?];
    announced.extend(
        supervisor
            .publishes_within(Duration::from_millis(1000))
            .await,
    );
    let mut expected = [
        (presence(&first, subject), OFFLINE.to_owned(), false),
        (presence(&second, subject), OFFLINE.to_owned(), false),
    ];
    expected.sort();
    assert_eq!(seen(&announced), expected);
    stack.shutdown().await;
    Ok(())
}
