//! JSON that names a key twice is refused wherever a client sends JSON, by one rule
//! (`schemas::wire::parse_json`): over MQTT the pipeline answers `invalid` and stores nothing;
//! over HTTP the API answers 400 with a problem naming the key. `{"body":"a","body":"b"}` was
//! taken as "b", while another reader of the same bytes might see "a".

use courtchat::{Role, StaffRole};
use rumqttc::v5::mqttbytes::QoS;
use schemas::db::entities::{agent, message};
use schemas::wire::{Ack, Outcome, RejectReason};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::Value;
use testkit::TestStack;
use testkit::mqtt::{TestClientV5, filter};

use super::staff;

/// Publishes `payload` (raw text) on `topic` and returns the next acknowledgement.
async fn answer(client: &mut TestClientV5, topic: &str, payload: &str) -> anyhow::Result<Ack> {
    client
        .client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_owned())
        .await?;
    loop {
        let publish = client.next_publish().await?;
        if String::from_utf8_lossy(&publish.topic).ends_with("/ack") {
            return Ok(serde_json::from_slice(&publish.payload)?);
        }
    }
}

fn refused_as_invalid(ack: &Ack, key: &str) -> anyhow::Result<()> {
    match &ack.outcome {
        Outcome::Rejected { reason, message }
            if *reason == RejectReason::Invalid && message.contains(&format!("`{key}`")) =>
        {
            Ok(())
        }
        other => anyhow::bail!("not refused as invalid naming `{key}`: {other:?}"),
    }
}

#[tokio::test]
async fn mqtt_submissions_naming_a_key_twice_are_refused() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut kiosk = TestClientV5::connect(TestClientV5::tcp_options(
        &stack,
        "kiosk-dup",
        Role::Applicant,
    ))
    .await?;
    kiosk
        .subscribe(vec![filter(
            "cc/v1/clients/kiosk-dup/ack",
            QoS::AtLeastOnce,
        )])
        .await?;
    let open = "cc/v1/open/kiosk-dup";
    let twice = r#"{"client_msg_id":"o1","channel":"kiosk","channel":"web"}"#;
    refused_as_invalid(&answer(&mut kiosk, open, twice).await?, "channel")?;
    let opened = answer(
        &mut kiosk,
        open,
        r#"{"client_msg_id":"o2","channel":"kiosk"}"#,
    )
    .await?;
    let session = opened.session_id.clone().expect("a session");
    anyhow::ensure!(
        matches!(opened.outcome, Outcome::Accepted { .. }),
        "{opened:?}"
    );

    let submit = format!("cc/v1/sessions/{session}/submit/kiosk-dup");
    let twice = r#"{"client_msg_id":"m1","type":"message","body":"I agree","body":"I refuse"}"#;
    refused_as_invalid(&answer(&mut kiosk, &submit, twice).await?, "body")?;
    let bodies: Vec<String> = message::Entity::find()
        .filter(message::Column::SessionId.eq(&session))
        .filter(message::Column::ClientMsgId.eq("m1"))
        .all(stack.store().connection())
        .await?
        .into_iter()
        .map(|m| m.body)
        .collect();
    anyhow::ensure!(bodies.is_empty(), "stored: {bodies:?}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn http_bodies_naming_a_key_twice_are_refused_naming_it() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let ann = staff::add_signed_in(&stack, "ann", StaffRole::Admin).await?;
    let client = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, body: &str| {
        client
            .request(method, stack.http_url(path))
            .bearer_auth(&ann)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    let password = staff::PASSWORD;
    let cases = [
        (
            reqwest::Method::POST,
            "/v1/people",
            format!(
                r#"{{"username":"bob","display_name":"Bob","display_name":"Eve","role":"agent","password":"{password}"}}"#
            ),
            "display_name",
        ),
        (
            reqwest::Method::PATCH,
            "/v1/people/ann",
            r#"{"active":true,"active":false}"#.to_owned(),
            "active",
        ),
        (
            reqwest::Method::POST,
            "/v1/retention/policies",
            r#"{"name":"short","scope":"all","keep_days":30,"keep_days":1}"#.to_owned(),
            "keep_days",
        ),
    ];
    for (method, path, body, key) in cases {
        let response = send(method.clone(), path, &body).await?;
        let status = response.status().as_u16();
        let problem: Value = response.json().await?;
        anyhow::ensure!(status == 400, "{method} {path}: {status} {problem}");
        anyhow::ensure!(problem["field"] == key, "{method} {path}: {problem}");
        anyhow::ensure!(
            problem["type"] == "urn:courtchat:problem:invalid-request",
            "{problem}"
        );
    }
    // Nothing of them happened.
    let db = stack.store().connection();
    let bob = agent::Entity::find()
        .filter(agent::Column::Subject.eq("bob"))
        .one(db)
        .await?;
    anyhow::ensure!(bob.is_none(), "bob was created");
    let ann_row = agent::Entity::find()
        .filter(agent::Column::Subject.eq("ann"))
        .one(db)
        .await?;
    anyhow::ensure!(ann_row.is_some_and(|a| a.active), "ann was disabled");
    stack.shutdown().await;
    Ok(())
}
