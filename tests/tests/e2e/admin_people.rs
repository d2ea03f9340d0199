//! `/v1/people` over real HTTP, with the MQTT effects: roles are checked on every route, lists
//! page and filter, and disabling or demoting someone ends their live MQTT connection and makes
//! the tokens they hold stop working, at the gateway and at the API alike.

use std::time::Duration;

use courtchat::StaffRole;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, DisconnectReasonCode};
use schemas::db::entities::audit_event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use testkit::TestStack;
use testkit::mqtt::{TestClientV5, try_connect_v5};

use super::staff;

/// A stack with the admin `ann`, and her token.
async fn stack_with_admin() -> anyhow::Result<(TestStack, String)> {
    let stack = TestStack::start().await?;
    let token = staff::add_signed_in(&stack, "ann", StaffRole::Admin).await?;
    Ok((stack, token))
}

/// Sends `method path` with `token` (if any) and `body` (if any); the status and JSON body.
async fn call(
    stack: &TestStack,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new().request(method.parse()?, stack.http_url(path));
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

async fn create(stack: &TestStack, admin: &str, username: &str, role: &str) -> anyhow::Result<()> {
    let (status, body) = call(
        stack,
        "POST",
        "/v1/people",
        Some(admin),
        Some(json!({"username": username, "display_name": username.to_uppercase(), "role": role, "team": "licensing", "password": staff::PASSWORD})),
    )
    .await?;
    anyhow::ensure!(status == 201, "create {username}: {status} {body}");
    Ok(())
}

/// A request (method, path, token, body) and the status it must get.
type Case<'a> = (&'a str, String, Option<&'a str>, Option<Value>, u16);

#[tokio::test]
async fn roles_are_checked_on_every_route_and_lists_page_and_filter() -> anyhow::Result<()> {
    let (stack, ann) = stack_with_admin().await?;
    create(&stack, &ann, "bob", "agent").await?;
    create(&stack, &ann, "sue", "supervisor").await?;
    let bob = staff::sign_in(&stack, "bob").await?;
    let sue = staff::sign_in(&stack, "sue").await?;
    let kiosk = stack.token("kiosk-1", courtchat::Role::Applicant);

    // Who may do what.
    let new = json!({"username": "zed", "display_name": "Zed", "role": "agent", "password": staff::PASSWORD});
    let cases: Vec<Case> = vec![
        ("GET", "/v1/people".into(), None, None, 401),
        ("GET", "/v1/people".into(), Some(kiosk.as_str()), None, 401),
        ("GET", "/v1/people".into(), Some("not.a.token"), None, 401),
        ("GET", "/v1/people".into(), Some(bob.as_str()), None, 403),
        (
            "GET",
            "/v1/people/bob".into(),
            Some(bob.as_str()),
            None,
            200,
        ),
        (
            "GET",
            "/v1/people/sue".into(),
            Some(bob.as_str()),
            None,
            403,
        ),
        ("GET", "/v1/people".into(), Some(sue.as_str()), None, 200),
        (
            "GET",
            "/v1/people/bob".into(),
            Some(sue.as_str()),
            None,
            200,
        ),
        (
            "POST",
            "/v1/people".into(),
            Some(sue.as_str()),
            Some(new.clone()),
            403,
        ),
        (
            "PATCH",
            "/v1/people/bob".into(),
            Some(sue.as_str()),
            Some(json!({"capacity": 5})),
            403,
        ),
        (
            "PATCH",
            "/v1/people/bob".into(),
            Some(bob.as_str()),
            Some(json!({"role": "admin"})),
            403,
        ),
        (
            "GET",
            "/v1/people/nobody".into(),
            Some(ann.as_str()),
            None,
            404,
        ),
        (
            "POST",
            "/v1/people".into(),
            Some(ann.as_str()),
            Some(
                json!({"username": "bob", "display_name": "Bob", "role": "agent", "password": staff::PASSWORD}),
            ),
            409,
        ),
        (
            "POST",
            "/v1/people".into(),
            Some(ann.as_str()),
            Some(
                json!({"username": "a/b", "display_name": "X", "role": "agent", "password": staff::PASSWORD}),
            ),
            400,
        ),
        (
            "POST",
            "/v1/people".into(),
            Some(ann.as_str()),
            Some(
                json!({"username": "x", "display_name": "X", "role": "agent", "password": "short"}),
            ),
            400,
        ),
        (
            "GET",
            "/v1/people?cursor=nonsense".into(),
            Some(ann.as_str()),
            None,
            400,
        ),
        (
            "GET",
            "/v1/people?limit=0".into(),
            Some(ann.as_str()),
            None,
            400,
        ),
        (
            "GET",
            "/v1/people?role=king".into(),
            Some(ann.as_str()),
            None,
            400,
        ),
    ];
    for (method, path, token, body, expected) in cases {
        let (status, answer) = call(&stack, method, &path, token, body).await?;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        if status >= 400 {
            assert!(
                answer["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("urn:courtchat:problem:")),
                "{answer}"
            );
        }
    }

    // Pages of two, in creation order, chained by cursors; and filters.
    let (_, first) = call(&stack, "GET", "/v1/people?limit=2", Some(&ann), None).await?;
    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["username"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(names(&first), ["ann", "bob"]);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, second) = call(
        &stack,
        "GET",
        &format!("/v1/people?limit=2&cursor={cursor}"),
        Some(&ann),
        None,
    )
    .await?;
    assert_eq!(names(&second), ["sue"]);
    assert!(second.get("next_cursor").is_none(), "{second}");
    let (_, agents) = call(
        &stack,
        "GET",
        "/v1/people?role=agent&team=licensing",
        Some(&sue),
        None,
    )
    .await?;
    assert_eq!(names(&agents), ["bob"]);
    assert_eq!(agents["items"][0]["capacity"], 3);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn disabling_someone_ends_their_connection_and_their_tokens() -> anyhow::Result<()> {
    let (stack, ann) = stack_with_admin().await?;
    create(&stack, &ann, "bob", "agent").await?;
    create(&stack, &ann, "sue", "supervisor").await?;
    let bob = staff::sign_in(&stack, "bob").await?;
    let sue = staff::sign_in(&stack, "sue").await?;
    let options = |subject: &str, token: &str| {
        let addr = stack.mqtt_tcp_addr();
        let mut options =
            rumqttc::v5::MqttOptions::new(subject, addr.ip().to_string(), addr.port());
        options.set_credentials(subject, token);
        options
    };
    let mut bob_mqtt = TestClientV5::connect(options("bob", &bob)).await?;
    let mut sue_mqtt = TestClientV5::connect(options("sue", &sue)).await?;

    // Bob is disabled: his connection ends at once, and his token stops working everywhere.
    let (status, body) = call(
        &stack,
        "PATCH",
        "/v1/people/bob",
        Some(&ann),
        Some(json!({"active": false})),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], false);
    let disconnect =
        tokio::time::timeout(Duration::from_secs(5), bob_mqtt.next_disconnect()).await??;
    assert_eq!(
        disconnect.reason_code,
        DisconnectReasonCode::AdministrativeAction
    );
    assert_eq!(
        try_connect_v5(options("bob", &bob)).await?,
        ConnectReturnCode::NotAuthorized
    );
    assert_eq!(
        call(&stack, "GET", "/v1/people/bob", Some(&bob), None)
            .await?
            .0,
        401
    );
    assert!(
        staff::sign_in(&stack, "bob").await.is_err(),
        "a disabled account cannot sign in"
    );

    // Sue is demoted: the same; her supervisor token no longer reads the staff list.
    let (status, _) = call(
        &stack,
        "PATCH",
        "/v1/people/sue",
        Some(&ann),
        Some(json!({"role": "agent"})),
    )
    .await?;
    assert_eq!(status, 200);
    let disconnect =
        tokio::time::timeout(Duration::from_secs(5), sue_mqtt.next_disconnect()).await??;
    assert_eq!(
        disconnect.reason_code,
        DisconnectReasonCode::AdministrativeAction
    );
    assert_eq!(
        call(&stack, "GET", "/v1/people", Some(&sue), None).await?.0,
        401
    );

    // A change that takes nothing away (a team) leaves tokens alone.
    let (status, _) = call(
        &stack,
        "PATCH",
        "/v1/people/ann",
        Some(&ann),
        Some(json!({"team": "front desk"})),
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(
        call(&stack, "GET", "/v1/people", Some(&ann), None).await?.0,
        200
    );

    // Bob enabled again signs in anew (tokens of the revocation's second are refused too).
    let (status, _) = call(
        &stack,
        "PATCH",
        "/v1/people/bob",
        Some(&ann),
        Some(json!({"active": true})),
    )
    .await?;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let fresh = staff::sign_in(&stack, "bob").await?;
    TestClientV5::connect(options("bob", &fresh)).await?;

    // Every change is on the chain, with before and after, by whom.
    let updates = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("admin.staff.updated"))
        .all(stack.store().connection())
        .await?;
    assert_eq!(updates.len(), 4);
    let first: Value = serde_json::from_str(&updates[0].detail)?;
    assert_eq!(updates[0].actor, "ann");
    assert_eq!(first["before"]["active"], true);
    assert_eq!(first["after"]["active"], false);
    assert_eq!(first["tokens_revoked"], true);
    let verification = courtchat::verify_audit(stack.config(), stack.store()).await?;
    assert_eq!(verification.first_broken, None);
    stack.shutdown().await;
    Ok(())
}

/// Sends `body` as JSON and requires a 400 whose problem names `field`.
async fn refused_naming(
    stack: &TestStack,
    method: &str,
    path: &str,
    token: &str,
    body: Value,
    field: &str,
) -> anyhow::Result<()> {
    let (status, problem) = call(stack, method, path, Some(token), Some(body.clone())).await?;
    anyhow::ensure!(
        status == 400 && problem["field"] == field,
        "{method} {path} {body}: {status} {problem}"
    );
    Ok(())
}

#[tokio::test]
async fn every_stored_name_follows_one_rule_and_usernames_ignore_case() -> anyhow::Result<()> {
    let (stack, ann) = stack_with_admin().await?;
    create(&stack, &ann, "bob", "agent").await?;
    let new = |username: &str, display_name: &str, team: &str| {
        json!({"username": username, "display_name": display_name, "role": "agent",
               "team": team, "password": staff::PASSWORD})
    };
    // Names that display as something they are not, or hide characters.
    for (display_name, team, field) in [
        ("Mallory\u{202E}nimdA", "licensing", "display_name"),
        ("Eve\u{200B}", "licensing", "display_name"),
        ("Eve\tAdmin", "licensing", "display_name"),
        ("\u{3000}", "licensing", "display_name"),
        ("Eve", "fees\u{2066}x\u{2069}", "team"),
        ("Eve", "fees\u{FEFF}", "team"),
        ("Eve", " ", "team"),
    ] {
        let body = new("eve", display_name, team);
        refused_naming(&stack, "POST", "/v1/people", &ann, body, field).await?;
    }
    for (change, field) in [
        (json!({"display_name": "Bob\u{202E}"}), "display_name"),
        (json!({"team": "a\u{2028}b"}), "team"),
    ] {
        refused_naming(&stack, "PATCH", "/v1/people/bob", &ann, change, field).await?;
    }
    refused_naming(
        &stack,
        "POST",
        "/v1/kiosks",
        &ann,
        json!({"name": "Hall\u{202E} B"}),
        "name",
    )
    .await?;
    refused_naming(
        &stack,
        "POST",
        "/v1/retention/policies",
        &ann,
        json!({"name": "bidi", "scope": "team:fees\u{202E}", "keep_days": 5}),
        "scope",
    )
    .await?;
    // A scope that could cover no session is refused too, not stored to apply to nothing.
    for scope in ["channel:phnoe", "channel:", "kiosk:hall-b"] {
        let body = json!({"name": "typo", "scope": scope, "keep_days": 5});
        refused_naming(
            &stack,
            "POST",
            "/v1/retention/policies",
            &ann,
            body,
            "scope",
        )
        .await?;
    }
    // Names in any script are fine.
    let (status, body) = call(
        &stack,
        "POST",
        "/v1/people",
        Some(&ann),
        Some(new("zoe", "Zoë Åström 李", "família")),
    )
    .await?;
    anyhow::ensure!(status == 201, "{status} {body}");

    // Usernames differing only by case are one account: over HTTP, from the command line, and
    // for anyone writing the table.
    for username in ["Bob", "BOB", "ZOE"] {
        let (status, problem) = call(
            &stack,
            "POST",
            "/v1/people",
            Some(&ann),
            Some(new(username, "Someone", "licensing")),
        )
        .await?;
        anyhow::ensure!(status == 409, "{username}: {status} {problem}");
    }
    let added = staff::add(&stack, "ANN", StaffRole::Agent).await;
    anyhow::ensure!(added.is_err(), "ANN was added beside ann");
    let db = stack.store().connection();
    let row = schemas::db::entities::agent::ActiveModel {
        subject: sea_orm::Set("bOb".to_owned()),
        display_name: sea_orm::Set("Bob".to_owned()),
        role: sea_orm::Set(StaffRole::Agent),
        active: sea_orm::Set(true),
        created_at: sea_orm::Set(chrono::Utc::now()),
        ..Default::default()
    };
    anyhow::ensure!(
        sea_orm::ActiveModelTrait::insert(row, db).await.is_err(),
        "the database took bOb beside bob"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_database_with_usernames_differing_by_case_is_not_upgraded_silently() -> anyhow::Result<()>
{
    use sea_orm::ConnectionTrait;
    let database = testkit::TestDatabase::sqlite()?;
    let config = store::DatabaseConfig {
        url: database.url(),
        ..store::DatabaseConfig::default()
    };
    // A database from before the rule: the index is not there, and two accounts clash.
    let store = store::Store::open(&config).await?;
    let db = store.connection();
    for statement in [
        "DROP INDEX idx_agents_subject_folded",
        "DELETE FROM seaql_migrations WHERE version = 'm20261212_000012_staff_username_folded'",
        "INSERT INTO agents (subject, display_name, role, active, created_at, capacity, \
         tokens_not_before, available) VALUES ('ann', 'Ann', 'admin', 1, '2026-01-01 00:00:00', \
         3, 0, 0), ('Ann', 'Ann 2', 'agent', 1, '2026-01-01 00:00:00', 3, 0, 0)",
    ] {
        db.execute_unprepared(statement).await?;
    }
    store.close().await;
    let refused = store::Store::open(&config).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    anyhow::ensure!(
        message.contains("ann") && message.contains("regardless of case"),
        "opened anyway, or without saying why: {message:?}"
    );
    Ok(())
}
