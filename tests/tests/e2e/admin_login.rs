//! Staff sign-in over HTTP (`POST /v1/login`) and the admin API's contract: the token it
//! issues is the person's MQTT password; failures are refused alike, audited and rate-limited;
//! bad requests get problem details; the OpenAPI document names exactly the routes served.

use std::collections::BTreeSet;

use courtchat::StaffRole;
use rumqttc::v5::mqttbytes::QoS;
use schemas::db::entities::audit_event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use testkit::mqtt::{TestClientV5, filter};
use testkit::{TestDatabase, TestStack};

use super::staff;

const PASSWORD: &str = staff::PASSWORD;

async fn stack_with_admin() -> anyhow::Result<TestStack> {
    let stack = TestStack::start().await?;
    staff::add(&stack, "ann", StaffRole::Admin).await?;
    Ok(stack)
}

async fn login(stack: &TestStack, body: Value) -> anyhow::Result<(u16, Value)> {
    login_from(stack, LOOPBACK, body).await
}

/// The address the tests' own requests come from.
const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

/// [`login`] from the client address `from`: any address of 127.0.0.0/8 reaches the loopback
/// listener, so one machine plays the owner and strangers at distinct addresses.
async fn login_from(stack: &TestStack, from: [u8; 4], body: Value) -> anyhow::Result<(u16, Value)> {
    let response = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .build()?
        .post(stack.http_url("/v1/login"))
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

#[tokio::test]
async fn staff_sign_in_and_the_token_is_their_mqtt_password() -> anyhow::Result<()> {
    let stack = stack_with_admin().await?;
    let (status, body) = login(&stack, json!({"username": "ann", "password": PASSWORD})).await?;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("a token").to_owned();
    assert!(
        sea_orm::prelude::ChronoDateTimeWithTimeZone::parse_from_rfc3339(
            body["expires_at"].as_str().unwrap_or_default()
        )
        .is_ok(),
        "{body}"
    );

    // The same token opens the person's MQTT connection.
    let addr = stack.mqtt_tcp_addr();
    let mut options = rumqttc::v5::MqttOptions::new("ann", addr.ip().to_string(), addr.port());
    options.set_credentials("ann", token);
    let mut mqtt = TestClientV5::connect(options).await?;
    mqtt.subscribe(vec![filter("cc/v1/clients/ann/ack", QoS::AtLeastOnce)])
        .await?;

    let signed_in = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("admin.login"))
        .filter(audit_event::Column::Actor.eq("ann"))
        .all(stack.store().connection())
        .await?;
    assert_eq!(signed_in.len(), 1);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn failures_look_alike_are_audited_and_rate_limited() -> anyhow::Result<()> {
    let stack = stack_with_admin().await?;
    // A wrong password and an unknown account get the same answer.
    let (status, wrong) = login(
        &stack,
        json!({"username": "ann", "password": "not it at all"}),
    )
    .await?;
    assert_eq!(status, 401);
    let (status, unknown) =
        login(&stack, json!({"username": "nobody", "password": PASSWORD})).await?;
    assert_eq!(status, 401);
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["type"], "urn:courtchat:problem:invalid-credentials");

    let failed = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("admin.login.failed"))
        .all(stack.store().connection())
        .await?;
    let actors: BTreeSet<&str> = failed.iter().map(|e| e.actor.as_str()).collect();
    assert!(actors.contains("ann"), "{actors:?}");
    assert!(
        actors.iter().any(|actor| actor.starts_with("unknown:")),
        "an unknown name is recorded by its digest: {actors:?}"
    );
    assert!(
        failed[0].detail.contains("127.0.0.1"),
        "{}",
        failed[0].detail
    );
    // The password is nowhere on the record.
    assert!(failed.iter().all(|e| !e.detail.contains("not it at all")));

    // Five attempts a minute at one account from one address (the default): four more are
    // allowed, then 429 there, even with the right password.
    for _ in 0..4 {
        let (status, _) = login(
            &stack,
            json!({"username": "ann", "password": "still wrong!!"}),
        )
        .await?;
        assert_eq!(status, 401);
    }
    let response = reqwest::Client::new()
        .post(stack.http_url("/v1/login"))
        .json(&json!({"username": "ann", "password": PASSWORD}))
        .send()
        .await?;
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = response.json().await?;
    assert_eq!(body["type"], "urn:courtchat:problem:rate-limited");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_strangers_wrong_passwords_do_not_lock_the_owner_out() -> anyhow::Result<()> {
    let stack = stack_with_admin().await?;
    let stranger = [127, 0, 0, 66];
    let guess = json!({"username": "ann", "password": "a guess at it"});
    // The stranger spends the account's allowance at their address (five a minute)...
    for _ in 0..5 {
        let (status, body) = login_from(&stack, stranger, guess.clone()).await?;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) = login_from(&stack, stranger, guess.clone()).await?;
    assert_eq!(status, 429, "{body}");
    // ...even with the right password, from there...
    let right = json!({"username": "ann", "password": PASSWORD});
    let (status, _) = login_from(&stack, stranger, right.clone()).await?;
    assert_eq!(status, 429);
    // ...while the owner, at their own address, signs in.
    let (status, body) = login_from(&stack, LOOPBACK, right).await?;
    assert_eq!(status, 200, "the owner was locked out: {body}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn many_strangers_slow_an_account_but_not_its_owner_at_a_known_address() -> anyhow::Result<()>
{
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.admin.login_attempts_per_account = std::num::NonZeroU32::new(4).unwrap();
    })
    .await?;
    staff::add(&stack, "ann", StaffRole::Admin).await?;
    let right = json!({"username": "ann", "password": PASSWORD});
    let (owner, newcomer) = ([127, 0, 0, 7], [127, 0, 0, 99]);
    let (status, _) = login_from(&stack, owner, right.clone()).await?;
    assert_eq!(status, 200);
    // Two strangers guess: with the owner's first sign-in they spend the account-wide
    // allowance (four a minute), though each is far below its own (five per address).
    let guess = json!({"username": "ann", "password": "a guess at it"});
    for (stranger, expected) in [
        ([127, 0, 0, 10], 401),
        ([127, 0, 0, 10], 401),
        ([127, 0, 0, 11], 401),
        ([127, 0, 0, 11], 429),
    ] {
        let (status, body) = login_from(&stack, stranger, guess.clone()).await?;
        assert_eq!(status, expected, "{stranger:?}: {body}");
    }
    // A third address must wait now, even with the right password...
    let (status, body) = login_from(&stack, newcomer, right.clone()).await?;
    assert_eq!(status, 429, "{body}");
    // ...but the address the owner signed in from is theirs: they are not held up there.
    let (status, body) = login_from(&stack, owner, right).await?;
    assert_eq!(status, 200, "{body}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unknown_names_are_recorded_by_a_digest_not_as_typed() -> anyhow::Result<()> {
    let stack = stack_with_admin().await?;
    // A password typed into the name field, twice, and another unknown name.
    let typed = "hunter2 is my password";
    for username in [typed, typed, "nobody"] {
        let (status, _) = login(&stack, json!({"username": username, "password": "x"})).await?;
        assert_eq!(status, 401);
    }
    let (status, _) = login(&stack, json!({"username": "ann", "password": "wrong one"})).await?;
    assert_eq!(status, 401);

    let admin = staff::sign_in(&stack, "ann").await?;
    let response = reqwest::Client::new()
        .get(stack.http_url("/v1/audit?action=admin.login.failed"))
        .bearer_auth(&admin)
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await?;
    let entries = page["items"].as_array().expect("items");
    assert_eq!(entries.len(), 4, "{page}");
    // What was typed is nowhere on the record.
    let text = page.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("nobody"),
        "{text}"
    );
    let actors: Vec<&str> = entries
        .iter()
        .map(|entry| entry["actor"].as_str().unwrap_or_default())
        .collect();
    // The same name has the same digest, another name another; a known account is named.
    assert!(actors[0].starts_with("unknown:") && actors[0].len() > "unknown:".len());
    assert_eq!(actors[0], actors[1]);
    assert_ne!(actors[0], actors[2]);
    assert_eq!(actors[3], "ann");
    let name = &entries[0]["detail"]["username"];
    assert_eq!(name["length"], typed.chars().count());
    assert_eq!(
        format!("unknown:{}", name["digest"].as_str().unwrap_or_default()),
        actors[0]
    );
    assert_eq!(entries[2]["detail"]["username"]["length"], 6);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bad_requests_get_problem_details() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let http = reqwest::Client::new();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.post(stack.http_url("/v1/login"))
                .body("{not json")
                .header("content-type", "application/json"),
            400,
            "invalid-request",
        ),
        (
            http.post(stack.http_url("/v1/login"))
                .body(r#"{"username":"a"}"#),
            415,
            "unsupported-media-type",
        ),
        (
            http.post(stack.http_url("/v1/login"))
                .json(&json!({"username": "a"})),
            400,
            "invalid-request",
        ),
        (
            http.post(stack.http_url("/v1/login"))
                .json(&json!({"username": "a", "password": "b", "extra": 1})),
            400,
            "invalid-request",
        ),
        (
            http.post(stack.http_url("/v1/login"))
                .json(&json!({"username": "", "password": "b"})),
            400,
            "invalid-request",
        ),
        (
            http.get(stack.http_url("/v1/login")),
            405,
            "method-not-allowed",
        ),
        (http.get(stack.http_url("/v1/nothing")), 404, "not-found"),
    ];
    for (request, status, slug) in cases {
        let response = request.send().await?;
        assert_eq!(response.status().as_u16(), status, "{slug}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{slug}"
        );
        let body: Value = response.json().await?;
        assert_eq!(
            body["type"],
            format!("urn:courtchat:problem:{slug}"),
            "{body}"
        );
        assert_eq!(body["status"], status);
    }
    stack.shutdown().await;
    Ok(())
}

/// Every operation the OpenAPI document names is served (none answers "no such resource"),
/// and every route the router declares is in the document.
#[tokio::test]
async fn the_openapi_document_names_exactly_the_routes_served() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(stack.http_url("/v1/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = BTreeSet::new();
    for (path, operations) in paths {
        for method in operations.as_object().expect("operations").keys() {
            documented.insert(path.clone());
            let request = http.request(method.to_uppercase().parse()?, stack.http_url(path));
            let response = request.send().await?;
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(
                body["type"] != "urn:courtchat:problem:not-found"
                    && body["type"] != "urn:courtchat:problem:method-not-allowed",
                "{method} {path} is documented but not served: {body}"
            );
        }
    }
    // The router's routes, read from its source: each is documented (the document itself
    // aside, and the browser pages (the landing page `/` too) and their files, which are not
    // API operations:
    // `the_pages_are_served_with_their_security_headers` covers them).
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../admin-api/src/lib.rs"),
    )?;
    let routed: BTreeSet<String> = source
        .split(".route(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|path| *path != "/v1/openapi.json" && *path != "/")
        .filter(|path| {
            !["/desk", "/kiosk", "/web/"]
                .iter()
                .any(|page| path.starts_with(page))
        })
        .map(str::to_owned)
        .collect();
    assert!(!routed.is_empty());
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    stack.shutdown().await;
    Ok(())
}
