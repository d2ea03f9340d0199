//! Admin changes under audit traffic: while a stranger floods the gateway with refused CONNECTs
//! (which the gateway's recorder appends to the audit chain) and an applicant chats as fast as
//! it may (each message an entry the pipeline appends), every `PATCH /v1/people` still
//! succeeds, on SQLite and on PostgreSQL. An admin transaction that read before taking the
//! chain's turn failed with a snapshot error whenever another writer committed in between (9 of
//! 40 at 100 refused CONNECTs a second), so an attacker could keep an admin from disabling a
//! compromised account. The chat keeps the chain busy now that repeated denials are folded into
//! counted entries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use courtchat::StaffRole;
use rumqttc::v5::mqttbytes::QoS;
use schemas::db::entities::audit_event;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use testkit::mqtt::TestClientV5;
use testkit::{TestDatabase, TestStack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::staff;

/// An MQTT 3.1.1 CONNECT for `client_id` with a username and a password the gateway refuses.
fn refused_connect(client_id: &str) -> Vec<u8> {
    let field = |text: &str| {
        let mut bytes = (text.len() as u16).to_be_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes
    };
    let mut body = field("MQTT");
    // Level 4, flags: username, password, clean session; keep-alive 30 s.
    body.extend_from_slice(&[4, 0b1100_0010, 0, 30]);
    body.extend(field(client_id));
    body.extend(field(client_id));
    body.extend(field("not.a.token"));
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// Sends refused CONNECTs to `stack`'s MQTT listener, `per_second` of them, until `stop`,
/// counting in `answered` those the gateway answered.
async fn flood(
    stack_addr: std::net::SocketAddr,
    per_second: u32,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(1) / per_second);
    let mut n = 0u64;
    let mut attempts = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        every.tick().await;
        n += 1;
        let answered = answered.clone();
        attempts.spawn(async move {
            let Ok(mut socket) = tokio::net::TcpStream::connect(stack_addr).await else {
                return;
            };
            let packet = refused_connect(&format!("intruder-{n}"));
            if socket.write_all(&packet).await.is_ok() {
                let mut connack = [0u8; 4];
                let read =
                    tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut connack))
                        .await;
                if matches!(read, Ok(Ok(_))) {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        while attempts.try_join_next().is_some() {}
    }
    while attempts.join_next().await.is_some() {}
}

/// Publishes messages into `session` as `applicant`, one every few milliseconds, until `stop`.
async fn chatter(applicant: TestClientV5, session: String, stop: Arc<AtomicBool>) {
    let topic = format!("cc/v1/sessions/{session}/submit/chatty");
    let mut every = tokio::time::interval(Duration::from_millis(5));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        every.tick().await;
        n += 1;
        let message = json!({"client_msg_id": format!("m{n}"), "type": "message", "body": "hello"});
        if applicant
            .client
            .publish(topic.clone(), QoS::AtLeastOnce, false, message.to_string())
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn patches_succeed_under_a_flood_of_denials(database: TestDatabase) -> anyhow::Result<()> {
    let stack = TestStack::start_with(database, |config| {
        // The chatty applicant is a load, not a person.
        config.bridge.rate_per_second = 100_000.0;
        config.bridge.rate_burst = 100_000.0;
    })
    .await?;
    let ann = staff::add_signed_in(&stack, "ann", StaffRole::Admin).await?;
    staff::add(&stack, "bob", StaffRole::Agent).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let flooder = tokio::spawn(flood(
        stack.mqtt_tcp_addr(),
        100,
        stop.clone(),
        answered.clone(),
    ));
    let (applicant, session) = super::chat::kiosk_with_session(&stack, "chatty", "kiosk").await?;
    let chat = tokio::spawn(chatter(applicant, session, stop.clone()));
    // The flood is under way (and its denials on their way to the chain) before the first
    // change is made.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    while answered.load(Ordering::Relaxed) < 10 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the gateway never answered the flood"
        );
        poll.tick().await;
    }
    let db = stack.store().connection().clone();
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    for n in 0..40 {
        let response = client
            .patch(stack.http_url("/v1/people/bob"))
            .bearer_auth(&ann)
            .json(&json!({"capacity": 1 + n % 10, "active": n % 2 == 0}))
            .send()
            .await?;
        let status = response.status().as_u16();
        if status != 200 {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            failures.push(format!("#{n}: {status} {body}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    flooder.await?;
    chat.await?;
    let answered = answered.load(Ordering::Relaxed);
    let denied = audit_event::Entity::find()
        .filter(audit_event::Column::Action.starts_with("mqtt.connect"))
        .count(&db)
        .await?;
    anyhow::ensure!(
        failures.is_empty(),
        "{} of 40 changes failed during the flood ({answered} refused CONNECTs answered, \
         {denied} denial entries): {failures:?}",
        failures.len()
    );
    // Every change is on the chain, and the chain verifies.
    let updates = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("admin.staff.updated"))
        .count(&db)
        .await?;
    anyhow::ensure!(updates == 40, "{updates} changes recorded");
    let verification = courtchat::verify_audit(stack.config(), stack.store()).await?;
    anyhow::ensure!(verification.is_intact(), "{verification:?}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn admin_changes_succeed_under_a_flood_of_denials_on_sqlite() -> anyhow::Result<()> {
    patches_succeed_under_a_flood_of_denials(TestDatabase::sqlite()?).await
}

#[tokio::test]
async fn admin_changes_succeed_under_a_flood_of_denials_on_postgres() -> anyhow::Result<()> {
    let Some(url) = testkit::postgres_url() else {
        return Ok(());
    };
    patches_succeed_under_a_flood_of_denials(TestDatabase::postgres(&url).await?).await
}
