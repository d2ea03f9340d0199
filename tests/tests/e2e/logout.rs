//! `POST /v1/logout` ends the token it is called with, and only that one: the admin API and the
//! gateway refuse it from then on, its live MQTT connection ends at once, the person's other
//! tokens go on working, the sign-out is audited, and the ended token stays refused after a
//! restart on the same database (issue 21, point 10).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use courtchat::{Role, StaffRole};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, DisconnectReasonCode};
use schemas::db::entities::{audit_event, ended_token};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::Value;
use testkit::mqtt::{TestClientV5, filter, try_connect_v5};
use testkit::{TestDatabase, TestStack};

use super::staff;

/// "At once": far below the keepalive and the test clients' patience.
const PROMPTLY: Duration = Duration::from_secs(2);

/// A stack on `database`, which outlives it, so that another stack can start on the same data.
async fn stack_on(database: &TestDatabase) -> anyhow::Result<TestStack> {
    let url = database.url();
    TestStack::start_with(TestDatabase::sqlite()?, move |config| {
        config.database.url = url;
    })
    .await
}

/// `method path` with the bearer `token`: the status and the body.
async fn call(
    stack: &TestStack,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new().request(method.parse()?, stack.http_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

fn mqtt_options(stack: &TestStack, token: &str) -> rumqttc::v5::MqttOptions {
    let mut options = TestClientV5::tcp_options(stack, "ann", Role::Admin);
    options.set_credentials("ann", token);
    options
}

/// ann's MQTT 5 connection with `token`, shown to be up by a subscription.
async fn connected(stack: &TestStack, token: &str) -> anyhow::Result<TestClientV5> {
    let mut client = TestClientV5::connect(mqtt_options(stack, token)).await?;
    client
        .subscribe(vec![filter("cc/v1/clients/ann/ack", QoS::AtLeastOnce)])
        .await?;
    Ok(client)
}

#[tokio::test]
async fn logging_out_ends_that_token_everywhere_and_for_good() -> anyhow::Result<()> {
    let database = TestDatabase::chosen().await?;
    let stack = stack_on(&database).await?;
    staff::add(&stack, "ann", StaffRole::Admin).await?;
    // Signed in twice: two browsers, two tokens.
    let first = staff::sign_in(&stack, "ann").await?;
    let second = staff::sign_in(&stack, "ann").await?;
    assert_ne!(first, second);
    let mut live = connected(&stack, &first).await?;

    let started = Instant::now();
    let (status, body) = call(&stack, "POST", "/v1/logout", Some(&first)).await?;
    assert_eq!(status, 204, "{body}");
    // Its live MQTT connection is ended at once, and told why.
    let disconnect = tokio::time::timeout(PROMPTLY, live.next_disconnect()).await??;
    assert_eq!(
        disconnect.reason_code,
        DisconnectReasonCode::AdministrativeAction
    );
    assert!(started.elapsed() < PROMPTLY, "{:?}", started.elapsed());

    // The ended token is refused over HTTP (signing out again too) and over MQTT...
    for (method, path) in [("GET", "/v1/people"), ("POST", "/v1/logout")] {
        let (status, body) = call(&stack, method, path, Some(&first)).await?;
        assert_eq!(status, 401, "{method} {path}: {body}");
    }
    assert_eq!(
        try_connect_v5(mqtt_options(&stack, &first)).await?,
        ConnectReturnCode::NotAuthorized
    );
    // ...while the other works on both.
    let (status, body) = call(&stack, "GET", "/v1/people", Some(&second)).await?;
    assert_eq!(status, 200, "{body}");
    let mut other = connected(&stack, &second).await?;

    // Ending a third token leaves the connection made with the second up. The gateway is told
    // before the 204, and a connection handles what it is told before what its client sends
    // next, so a round trip after the sign-out shows the connection survived it.
    let third = staff::sign_in(&stack, "ann").await?;
    let (status, _) = call(&stack, "POST", "/v1/logout", Some(&third)).await?;
    assert_eq!(status, 204);
    other
        .subscribe(vec![filter("cc/v1/clients/ann/ack", QoS::AtMostOnce)])
        .await
        .map_err(|err| anyhow::anyhow!("the other token's connection was ended: {err}"))?;

    // Each sign-out is on the record, naming the token it ended.
    let logouts = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("admin.logout"))
        .all(stack.store().connection())
        .await?;
    assert_eq!(logouts.len(), 2);
    assert!(logouts.iter().all(|entry| entry.actor == "ann"));
    let stored = ended_token::Entity::find()
        .all(stack.store().connection())
        .await?;
    assert_eq!(stored.len(), 2);
    assert!(
        logouts[0].detail.contains(&stored[0].token_id)
            || logouts[0].detail.contains(&stored[1].token_id)
    );
    other.disconnect().await?;
    stack.shutdown().await;

    // After a restart on the same database the ended token is still refused, the other not.
    let stack = stack_on(&database).await?;
    let (status, _) = call(&stack, "GET", "/v1/people", Some(&first)).await?;
    assert_eq!(status, 401);
    assert_eq!(
        try_connect_v5(mqtt_options(&stack, &first)).await?,
        ConnectReturnCode::NotAuthorized
    );
    let (status, _) = call(&stack, "GET", "/v1/people", Some(&second)).await?;
    assert_eq!(status, 200);
    connected(&stack, &second).await?.disconnect().await?;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn only_sign_in_tokens_can_be_ended_and_expired_ones_are_pruned() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    staff::add(&stack, "ann", StaffRole::Admin).await?;
    // No token, and a token without an id (`courtchat token`): nothing to end.
    let (status, _) = call(&stack, "POST", "/v1/logout", None).await?;
    assert_eq!(status, 401);
    let minted = stack.token("ann", Role::Admin);
    let (status, body) = call(&stack, "POST", "/v1/logout", Some(&minted)).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["type"], "urn:courtchat:problem:token-without-id");

    // Rows of tokens that have expired are deleted by the next sign-out; others are kept.
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    for (id, expires_at) in [("expired", now - 10), ("still-valid", now + 3600)] {
        ended_token::ActiveModel {
            token_id: Set(id.to_owned()),
            subject: Set("ann".to_owned()),
            expires_at: Set(expires_at),
            ended_at: Set(chrono::Utc::now()),
        }
        .insert(stack.store().connection())
        .await?;
    }
    let token = staff::sign_in(&stack, "ann").await?;
    let (status, _) = call(&stack, "POST", "/v1/logout", Some(&token)).await?;
    assert_eq!(status, 204);
    let kept: Vec<String> = ended_token::Entity::find()
        .all(stack.store().connection())
        .await?
        .into_iter()
        .map(|row| row.token_id)
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.contains(&"still-valid".to_owned()), "{kept:?}");
    assert!(!kept.contains(&"expired".to_owned()), "{kept:?}");
    stack.shutdown().await;
    Ok(())
}
