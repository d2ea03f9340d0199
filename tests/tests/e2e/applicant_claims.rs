//! An applicant's channel and team come from the token the admin API issued, not from what the
//! applicant says when it opens a session: a phone cannot pass for a kiosk or route itself to a
//! team, and a kiosk's sessions go to the kiosk's team (issue 21, point 10).

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use schemas::db::entities::session;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use testkit::TestStack;
use testkit::mqtt::{PATIENCE, TestClientV5};

use super::{chat, staff};
use courtchat::StaffRole;

/// `POST {path}` with the bearer `token` (if any) and `body` (if any): the status and the body.
async fn post(
    stack: &TestStack,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new().post(stack.http_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

/// An applicant token: a kiosk's with its `credential`, or the public phone path's.
async fn applicant(stack: &TestStack, credential: Option<&str>) -> anyhow::Result<Value> {
    let (status, issued) = post(stack, "/v1/applicant-tokens", credential, None).await?;
    anyhow::ensure!(status == 200, "applicant token: {status} {issued}");
    Ok(issued)
}

/// Opens a session as the applicant `issued` names with `request`, sent with the MQTT 5 user
/// properties a forger would set; the stored session.
async fn open(stack: &TestStack, issued: &Value, request: Value) -> anyhow::Result<session::Model> {
    let subject = issued["subject"].as_str().unwrap_or_default();
    let token = issued["token"].as_str().unwrap_or_default().to_owned();
    let mut client: TestClientV5 = chat::connected(stack, subject, token).await?;
    let forged = PublishProperties {
        user_properties: vec![
            ("courtchat-channel".to_owned(), "kiosk".to_owned()),
            ("courtchat-team".to_owned(), "other-team".to_owned()),
        ],
        ..PublishProperties::default()
    };
    client
        .client
        .publish_with_properties(
            format!("cc/v1/open/{subject}"),
            QoS::AtLeastOnce,
            false,
            request.to_string(),
            forged,
        )
        .await?;
    let ack = loop {
        let publish = tokio::time::timeout(PATIENCE, client.next_publish()).await??;
        if String::from_utf8_lossy(&publish.topic).ends_with("/ack") {
            break serde_json::from_slice::<Value>(&publish.payload)?;
        }
    };
    anyhow::ensure!(ack["status"] == "accepted", "open: {ack}");
    let session_id = ack["session_id"].as_str().unwrap_or_default().to_owned();
    client.disconnect().await?;
    session::Entity::find_by_id(&session_id)
        .one(stack.store().connection())
        .await?
        .ok_or_else(|| anyhow::anyhow!("session {session_id} not stored"))
}

#[tokio::test]
async fn a_phone_cannot_pass_for_a_kiosk_and_a_kiosk_session_has_the_kiosks_team()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = staff::add_signed_in(&stack, "ann", StaffRole::Admin).await?;
    let (status, enrolled) = post(
        &stack,
        "/v1/kiosks",
        Some(&admin),
        Some(json!({"name": "Hall B", "team": "licensing"})),
    )
    .await?;
    assert_eq!(status, 201, "{enrolled}");
    let credential = enrolled["credential"].as_str().unwrap_or_default();

    // A phone that says it is a kiosk of another team is a phone, without a team.
    let phone = applicant(&stack, None).await?;
    let row = open(
        &stack,
        &phone,
        json!({"v": 1, "client_msg_id": "o", "channel": "kiosk", "topic": "other-team"}),
    )
    .await?;
    assert_eq!(
        (row.channel.as_str(), row.team.as_deref()),
        ("phone", None),
        "{row:?}"
    );

    // A kiosk's session has the kiosk's team, whatever the request says (or leaves out).
    for request in [
        json!({"v": 1, "client_msg_id": "o", "channel": "phone", "topic": "other-team"}),
        json!({"v": 1, "client_msg_id": "o", "channel": "web"}),
    ] {
        let kiosk = applicant(&stack, Some(credential)).await?;
        let row = open(&stack, &kiosk, request.clone()).await?;
        assert_eq!(
            (row.channel.as_str(), row.team.as_deref()),
            ("kiosk", Some("licensing")),
            "{request}"
        );
    }
    stack.shutdown().await;
    Ok(())
}
