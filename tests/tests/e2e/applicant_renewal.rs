//! Applicant conversations longer than a token (issue 27, point 3), over real HTTP and MQTT: the
//! page renews its applicant token before it expires (`POST /v1/applicant-tokens/renew`) and
//! gets one for the same subject, channel and team, which goes on writing in the same session
//! after the first token has expired; only the latest token renews; a revoked kiosk's tokens
//! stop renewing; renewals are limited per subject, refused without an applicant token, bounded
//! by the renewable window, and on the audit chain.

use std::time::Duration;

use courtchat::StaffRole;
use schemas::db::entities::audit_event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use testkit::mqtt::{PATIENCE, try_connect_v5};
use testkit::{TestDatabase, TestStack};

use super::{chat, staff};

/// `POST path` with the bearer `token` (if any) and `body` (if any): status, `Retry-After` and
/// the JSON body.
async fn post(
    stack: &TestStack,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Option<u64>, Value)> {
    let mut request = reqwest::Client::new().post(stack.http_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok()?.parse().ok());
    Ok((
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    ))
}

async fn renew(stack: &TestStack, token: &str) -> anyhow::Result<(u16, Option<u64>, Value)> {
    post(stack, "/v1/applicant-tokens/renew", Some(token), None).await
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_owned()
}

async fn audited(stack: &TestStack, action: &str) -> anyhow::Result<Vec<audit_event::Model>> {
    Ok(audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq(action))
        .order_by_asc(audit_event::Column::Id)
        .all(stack.store().connection())
        .await?)
}

/// A stack whose applicant tokens last `ttl_secs`.
async fn stack_with(
    ttl_secs: u64,
    configure: impl FnOnce(&mut courtchat::Config),
) -> anyhow::Result<TestStack> {
    TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.admin.applicant_token_ttl_secs = ttl_secs;
        configure(config);
    })
    .await
}

#[tokio::test]
async fn a_kiosk_conversation_outlives_its_first_token_until_the_kiosk_is_revoked()
-> anyhow::Result<()> {
    let stack = stack_with(8, |_| {}).await?;
    let admin = staff::add_signed_in(&stack, "ann", StaffRole::Admin).await?;
    let (status, _, enrolled) = post(
        &stack,
        "/v1/kiosks",
        Some(&admin),
        Some(json!({"name": "Hall B", "team": "licensing"})),
    )
    .await?;
    assert_eq!(status, 201, "{enrolled}");
    let kiosk = enrolled["kiosk"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let credential = text(&enrolled, "credential");

    let (status, _, first) = post(&stack, "/v1/applicant-tokens", Some(&credential), None).await?;
    assert_eq!(status, 200, "{first}");
    let subject = text(&first, "subject");
    let first_token = text(&first, "token");
    let mut applicant = chat::connected(&stack, &subject, first_token.clone()).await?;
    let opened = chat::submit(
        &mut applicant,
        format!("cc/v1/open/{subject}"),
        json!({"v": 1, "client_msg_id": "o", "channel": "kiosk"}),
    )
    .await?;
    let session = opened["session_id"].as_str().expect("a session").to_owned();

    // Renewed halfway through the first token's life, as the page does late in it: the same
    // subject, channel and team, a new token that expires later.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, _, renewed) = renew(&stack, &first_token).await?;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(renewed["subject"], first["subject"]);
    assert_eq!(renewed["channel"], "kiosk");
    assert_eq!(renewed["team"], "licensing");
    let second_token = text(&renewed, "token");
    assert_ne!(second_token, first_token);
    assert!(
        text(&renewed, "expires_at") > text(&first, "expires_at"),
        "{renewed}"
    );
    // Only the latest token renews: the first one started its chain and is done.
    let (status, _, problem) = renew(&stack, &first_token).await?;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["type"], "urn:courtchat:problem:token-superseded");

    // The first token's connection ends when that token expires (MQTT 5: 0xA0), and the token
    // opens nothing any more...
    let ended = tokio::time::timeout(PATIENCE, applicant.next_disconnect()).await??;
    assert_eq!(
        ended.reason_code,
        rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::MaximumConnectTime,
        "{ended:?}"
    );
    // (The gateway ends it at `exp` and jsonwebtoken still admits `exp` itself, so a connect
    // within that second passes; the token is refused from the next one.)
    let addr = stack.mqtt_tcp_addr();
    let refused = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut with_first =
                rumqttc::v5::MqttOptions::new(subject.as_str(), addr.ip().to_string(), addr.port());
            with_first.set_credentials(subject.as_str(), first_token.as_str());
            let code = try_connect_v5(with_first).await?;
            if code != rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success {
                return anyhow::Ok(code);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await??;
    assert_eq!(
        refused,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::BadUserNamePassword
    );
    // ...while the renewed one goes on in the same conversation.
    let mut applicant = chat::connected(&stack, &subject, second_token.clone()).await?;
    let ack = chat::submit(
        &mut applicant,
        format!("cc/v1/sessions/{session}/submit/{subject}"),
        json!({"client_msg_id": "m1", "type": "message", "body": "Still here after an hour"}),
    )
    .await?;
    assert_eq!(ack["status"], "accepted", "{ack}");

    // The chain goes on from the latest token.
    let (status, _, third) = renew(&stack, &second_token).await?;
    assert_eq!(status, 200, "{third}");
    let third_token = text(&third, "token");

    // Each renewal is on the record: the applicant, the session it goes on serving, the kiosk,
    // which token it replaced; never a token itself.
    let renewals = audited(&stack, "applicant.token.renewed").await?;
    assert_eq!(renewals.len(), 2);
    for entry in &renewals {
        assert_eq!(entry.actor, subject);
        assert_eq!(entry.session_id.as_deref(), Some(session.as_str()));
        assert!(entry.detail.contains(&kiosk), "{}", entry.detail);
        for token in [&first_token, &second_token, &third_token] {
            assert!(!entry.detail.contains(token.as_str()));
        }
    }

    // A revoked kiosk's pages stop renewing, and the refusal is on the record.
    let (status, _, revoked) = post(
        &stack,
        &format!("/v1/kiosks/{kiosk}/revoke"),
        Some(&admin),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{revoked}");
    let (status, _, problem) = renew(&stack, &third_token).await?;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["type"], "urn:courtchat:problem:kiosk-revoked");
    let refused = audited(&stack, "applicant.token.refused").await?;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].actor, kiosk);
    assert!(refused[0].detail.contains(&subject));
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn only_applicant_tokens_renew_and_each_subject_only_so_often() -> anyhow::Result<()> {
    let stack = stack_with(3600, |config| {
        config.admin.applicant_renewals_per_subject = std::num::NonZeroU32::new(2).unwrap();
    })
    .await?;
    let admin = staff::add_signed_in(&stack, "ann", StaffRole::Admin).await?;
    let forged = stack.token("ap-000000000000000000000000", courtchat::Role::Applicant);
    // (bearer, why it is refused)
    for (token, what) in [
        (None, "no token"),
        (Some(admin.as_str()), "a staff token"),
        (Some("not-a-token"), "garbage"),
        (
            Some(forged.as_str()),
            "an applicant token that no grant names",
        ),
    ] {
        let (status, _, problem) = post(&stack, "/v1/applicant-tokens/renew", token, None).await?;
        assert_eq!(status, 401, "{what}: {problem}");
    }

    // A phone's token renews (a phone has no kiosk to be revoked), twice a minute here.
    let (status, _, phone) = post(&stack, "/v1/applicant-tokens", None, None).await?;
    assert_eq!(status, 200, "{phone}");
    assert_eq!(phone["channel"], "phone");
    let mut token = text(&phone, "token");
    for _ in 0..2 {
        let (status, _, renewed) = renew(&stack, &token).await?;
        assert_eq!(status, 200, "{renewed}");
        assert_eq!(renewed["subject"], phone["subject"]);
        assert_eq!(renewed["channel"], "phone");
        assert!(renewed.get("team").is_none(), "{renewed}");
        token = text(&renewed, "token");
    }
    let (status, retry_after, problem) = renew(&stack, &token).await?;
    assert_eq!(status, 429, "{problem}");
    assert!(retry_after.is_some_and(|wait| wait >= 1), "{retry_after:?}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn no_token_is_renewed_past_the_renewable_window() -> anyhow::Result<()> {
    let stack = stack_with(3600, |config| config.admin.applicant_renewable_secs = 2).await?;
    let (status, _, phone) = post(&stack, "/v1/applicant-tokens", None, None).await?;
    assert_eq!(status, 200, "{phone}");
    // Within the window a renewed token is cut short at its end, not given a whole hour.
    let (status, _, renewed) = renew(&stack, &text(&phone, "token")).await?;
    assert_eq!(status, 200, "{renewed}");
    let expires = chrono::DateTime::parse_from_rfc3339(&text(&renewed, "expires_at"))?;
    assert!(
        expires.signed_duration_since(chrono::Utc::now()) <= chrono::Duration::seconds(2),
        "{expires}"
    );
    // A token that outlives the window (issued for an hour, the window two seconds) is valid
    // still, but no longer renews: the window is a time, so this waits it out.
    let (status, _, second) = post(&stack, "/v1/applicant-tokens", None, None).await?;
    assert_eq!(status, 200, "{second}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, _, problem) = renew(&stack, &text(&second, "token")).await?;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["type"], "urn:courtchat:problem:renewal-limit");
    stack.shutdown().await;
    Ok(())
}
