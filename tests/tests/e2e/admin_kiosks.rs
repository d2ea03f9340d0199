//! Kiosks and applicant tokens over real HTTP, with the MQTT effects: admins enrol and revoke
//! kiosks; a kiosk's credential, or nothing on the public phone path, becomes a short-lived
//! token for a fresh applicant subject that opens a session; limits, revocation and the audit
//! chain hold; and PROTOCOL.md's example script runs as written.

use std::process::Command;
use std::time::Duration;

use courtchat::StaffRole;
use schemas::db::entities::{audit_event, session};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use testkit::{TestDatabase, TestStack};

use super::{chat, staff};

/// Sends `method path` with the bearer `token` (if any) and `body` (if any): the status, the
/// `Retry-After` header and the JSON body.
async fn call(
    stack: &TestStack,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Option<u64>, Value)> {
    let mut request = reqwest::Client::new().request(method.parse()?, stack.http_url(path));
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

/// Enrols a kiosk as `admin`: its id and credential.
async fn enrol(stack: &TestStack, admin: &str, body: Value) -> anyhow::Result<(String, String)> {
    let (status, _, enrolled) = call(stack, "POST", "/v1/kiosks", Some(admin), Some(body)).await?;
    anyhow::ensure!(status == 201, "enrol: {status} {enrolled}");
    Ok((
        enrolled["kiosk"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        enrolled["credential"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ))
}

/// Asks for an applicant token with `credential` (none: the public path).
async fn exchange(
    stack: &TestStack,
    credential: Option<&str>,
) -> anyhow::Result<(u16, Option<u64>, Value)> {
    call(stack, "POST", "/v1/applicant-tokens", credential, None).await
}

async fn audited(stack: &TestStack, action: &str) -> anyhow::Result<Vec<audit_event::Model>> {
    Ok(audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq(action))
        .all(stack.store().connection())
        .await?)
}

#[tokio::test]
async fn admins_enrol_kiosks_supervisors_read_them_agents_do_neither() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = staff::add_signed_in(&stack, "ann", StaffRole::Admin).await?;
    let supervisor = staff::add_signed_in(&stack, "sue", StaffRole::Supervisor).await?;
    let agent = staff::add_signed_in(&stack, "bob", StaffRole::Agent).await?;

    let (status, _, enrolled) = call(
        &stack,
        "POST",
        "/v1/kiosks",
        Some(&admin),
        Some(json!({"name": "Hall B, left", "team": "licensing"})),
    )
    .await?;
    assert_eq!(status, 201, "{enrolled}");
    let id = enrolled["kiosk"]["id"].as_str().expect("an id").to_owned();
    let credential = enrolled["credential"].as_str().expect("a credential");
    assert!(id.starts_with("k-"), "{id}");
    assert!(
        credential.starts_with(&format!("cck_{id}_")),
        "{credential}"
    );
    assert_eq!(enrolled["kiosk"]["team"], "licensing");
    assert_eq!(enrolled["kiosk"]["created_by"], "ann");
    assert_eq!(enrolled["kiosk"]["revoked_at"], Value::Null);

    for (token, may_read) in [(&supervisor, true), (&agent, false)] {
        let (status, _, body) = call(
            &stack,
            "POST",
            "/v1/kiosks",
            Some(token),
            Some(json!({"name": "mine"})),
        )
        .await?;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["type"], "urn:courtchat:problem:forbidden");
        let (status, _, _) = call(
            &stack,
            "POST",
            &format!("/v1/kiosks/{id}/revoke"),
            Some(token),
            None,
        )
        .await?;
        assert_eq!(status, 403);
        let (status, _, page) = call(&stack, "GET", "/v1/kiosks", Some(token), None).await?;
        assert_eq!(status, if may_read { 200 } else { 403 }, "{page}");
        let (status, _, one) = call(
            &stack,
            "GET",
            &format!("/v1/kiosks/{id}"),
            Some(token),
            None,
        )
        .await?;
        assert_eq!(status, if may_read { 200 } else { 403 }, "{one}");
        if may_read {
            assert_eq!(page["items"][0]["id"], id.as_str());
            assert_eq!(one["name"], "Hall B, left");
            assert!(one.get("credential").is_none(), "shown only once: {one}");
        }
    }

    // Pages of one, in enrolment order.
    let (second, _) = enrol(&stack, &admin, json!({"name": "Hall C"})).await?;
    let (status, _, first_page) =
        call(&stack, "GET", "/v1/kiosks?limit=1", Some(&admin), None).await?;
    assert_eq!(status, 200);
    assert_eq!(first_page["items"][0]["id"], id.as_str());
    let cursor = first_page["next_cursor"].as_str().expect("a next page");
    let (_, _, next_page) = call(
        &stack,
        "GET",
        &format!("/v1/kiosks?limit=1&cursor={cursor}"),
        Some(&admin),
        None,
    )
    .await?;
    assert_eq!(next_page["items"][0]["id"], second.as_str());
    assert!(next_page.get("next_cursor").is_none(), "{next_page}");

    // Invalid fields and unknown kiosks are problems, not failures.
    for bad in [
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": "x", "team": "left\u{202E}right"}),
        json!({"name": "x", "team": "t".repeat(33)}),
        json!({"name": "x", "extra": 1}),
    ] {
        let (status, _, body) = call(
            &stack,
            "POST",
            "/v1/kiosks",
            Some(&admin),
            Some(bad.clone()),
        )
        .await?;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    for path in ["/v1/kiosks/k-0000000000000000", "/v1/kiosks/nothing%00"] {
        let (status, _, body) = call(&stack, "GET", path, Some(&admin), None).await?;
        assert_eq!(status, 404, "{path}: {body}");
    }

    // The enrolment is on the record, with who did it and never the credential.
    let enrolments = audited(&stack, "admin.kiosk.enrolled").await?;
    assert_eq!(enrolments.len(), 2);
    assert_eq!(enrolments[0].actor, "ann");
    assert!(
        enrolments[0].detail.contains(&id),
        "{}",
        enrolments[0].detail
    );
    let secret = credential.rsplit('_').next().unwrap_or_default();
    assert!(enrolments.iter().all(|e| !e.detail.contains(secret)));
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_kiosk_credential_becomes_an_applicant_who_opens_a_session() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = staff::add_signed_in(&stack, "ann", StaffRole::Admin).await?;
    let (kiosk, credential) = enrol(
        &stack,
        &admin,
        json!({"name": "Hall B", "team": "licensing"}),
    )
    .await?;

    let (status, _, first) = exchange(&stack, Some(&credential)).await?;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["channel"], "kiosk");
    assert_eq!(first["team"], "licensing");
    let subject = first["subject"].as_str().expect("a subject").to_owned();
    assert!(
        subject.starts_with("ap-") && subject.len() > 20,
        "{subject}"
    );
    let expires_at = chrono::DateTime::parse_from_rfc3339(first["expires_at"].as_str().unwrap())?;
    let left = expires_at.signed_duration_since(chrono::Utc::now());
    assert!(
        left > chrono::Duration::seconds(3500) && left <= chrono::Duration::seconds(3600),
        "the default TTL is an hour: {left}"
    );
    let (_, _, second) = exchange(&stack, Some(&credential)).await?;
    assert_ne!(
        second["subject"], first["subject"],
        "a fresh subject each time"
    );

    // The token is the applicant's MQTT password: it opens a session for the kiosk's team.
    let token = first["token"].as_str().expect("a token").to_owned();
    let mut applicant = chat::connected(&stack, &subject, token.clone()).await?;
    let opened = chat::submit(
        &mut applicant,
        format!("cc/v1/open/{subject}"),
        json!({"v": 1, "client_msg_id": "o", "channel": first["channel"], "topic": first["team"]}),
    )
    .await?;
    assert_eq!(opened["status"], "accepted", "{opened}");
    let session_id = opened["session_id"].as_str().expect("a session").to_owned();
    let row = session::Entity::find_by_id(&session_id)
        .one(stack.store().connection())
        .await?
        .expect("stored");
    assert_eq!(row.applicant, subject);
    assert_eq!(row.channel, "kiosk");
    assert_eq!(row.team.as_deref(), Some("licensing"));

    // It opens nothing on the admin API.
    for (method, path) in [
        ("GET", "/v1/people"),
        ("GET", "/v1/kiosks"),
        ("POST", "/v1/kiosks"),
        ("GET", "/v1/sessions"),
    ] {
        let body = (method == "POST").then(|| json!({"name": "x"}));
        let (status, _, problem) = call(&stack, method, path, Some(&token), body).await?;
        assert_eq!(status, 401, "{method} {path}: {problem}");
    }
    // Nor is it, or a staff token, a kiosk credential.
    for not_a_credential in [token.as_str(), admin.as_str(), "cck_nothing"] {
        let (status, _, problem) = exchange(&stack, Some(not_a_credential)).await?;
        assert_eq!(status, 401, "{problem}");
        assert_eq!(problem["type"], "urn:courtchat:problem:invalid-credentials");
    }

    // Each issuance is on the record under the kiosk, and the kiosk shows its last use.
    let issued = audited(&stack, "applicant.token.issued").await?;
    assert_eq!(issued.len(), 2);
    assert!(issued.iter().all(|e| e.actor == kiosk));
    assert!(issued[0].detail.contains(&subject), "{}", issued[0].detail);
    assert!(issued.iter().all(|e| !e.detail.contains(&token)));
    let (_, _, shown) = call(
        &stack,
        "GET",
        &format!("/v1/kiosks/{kiosk}"),
        Some(&admin),
        None,
    )
    .await?;
    assert!(shown["last_used_at"].is_string(), "{shown}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_revoked_kiosk_gets_nothing() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let admin = staff::add_signed_in(&stack, "ann", StaffRole::Admin).await?;
    let (kiosk, credential) = enrol(&stack, &admin, json!({"name": "Hall B"})).await?;
    let (kept, _) = enrol(&stack, &admin, json!({"name": "Hall C"})).await?;
    assert_eq!(exchange(&stack, Some(&credential)).await?.0, 200);

    let revoke = format!("/v1/kiosks/{kiosk}/revoke");
    let (status, _, revoked) = call(&stack, "POST", &revoke, Some(&admin), None).await?;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    // Again: the same answer, and nothing new on the record.
    let (status, _, again) = call(&stack, "POST", &revoke, Some(&admin), None).await?;
    assert_eq!(status, 200);
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    let revocations = audited(&stack, "admin.kiosk.revoked").await?;
    assert_eq!(revocations.len(), 1);
    assert_eq!(revocations[0].actor, "ann");
    let detail: Value = serde_json::from_str(&revocations[0].detail)?;
    assert_eq!(detail["before"]["revoked"], false);
    assert_eq!(detail["after"]["revoked"], true);

    let (status, _, problem) = exchange(&stack, Some(&credential)).await?;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["type"], "urn:courtchat:problem:invalid-credentials");
    assert_eq!(
        audited(&stack, "applicant.token.issued").await?.len(),
        1,
        "nothing issued after revocation"
    );
    assert_eq!(audited(&stack, "applicant.token.refused").await?.len(), 1);

    for (filter, expected) in [("true", &kiosk), ("false", &kept)] {
        let (_, _, page) = call(
            &stack,
            "GET",
            &format!("/v1/kiosks?revoked={filter}"),
            Some(&admin),
            None,
        )
        .await?;
        let ids: Vec<&str> = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["id"].as_str())
            .collect();
        assert_eq!(ids, [expected.as_str()], "revoked={filter}");
    }
    let (status, _, _) = call(
        &stack,
        "POST",
        "/v1/kiosks/k-0000000000000000/revoke",
        Some(&admin),
        None,
    )
    .await?;
    assert_eq!(status, 404);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn tokens_are_limited_per_address_and_per_kiosk_and_the_public_path_can_be_off()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.admin.applicant_tokens_per_address = std::num::NonZeroU32::new(3).unwrap();
        config.admin.applicant_token_ttl_secs = 600;
    })
    .await?;
    let mut subjects = Vec::new();
    for _ in 0..3 {
        let (status, _, issued) = exchange(&stack, None).await?;
        assert_eq!(status, 200, "{issued}");
        assert_eq!(issued["channel"], "phone");
        assert!(issued.get("team").is_none(), "{issued}");
        subjects.push(issued["subject"].as_str().unwrap_or_default().to_owned());
    }
    subjects.dedup();
    assert_eq!(subjects.len(), 3);
    let (status, retry_after, problem) = exchange(&stack, None).await?;
    assert_eq!(status, 429, "{problem}");
    assert_eq!(problem["type"], "urn:courtchat:problem:rate-limited");
    let retry_after = retry_after.expect("Retry-After");
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    // A refused credential from the same address is held up too.
    assert_eq!(exchange(&stack, Some("cck_guess")).await?.0, 429);

    // A phone's token opens a session like a kiosk's, for as long as configured.
    let phone = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.admin.applicant_token_ttl_secs = 600;
    })
    .await?;
    let (_, _, issued) = exchange(&phone, None).await?;
    let subject = issued["subject"].as_str().expect("a subject").to_owned();
    let left = chrono::DateTime::parse_from_rfc3339(issued["expires_at"].as_str().unwrap())?
        .signed_duration_since(chrono::Utc::now());
    assert!(left <= chrono::Duration::seconds(600), "{left}");
    let token = issued["token"].as_str().unwrap_or_default().to_owned();
    let mut applicant = chat::connected(&phone, &subject, token).await?;
    let opened = chat::submit(
        &mut applicant,
        format!("cc/v1/open/{subject}"),
        json!({"client_msg_id": "o", "channel": "phone"}),
    )
    .await?;
    assert_eq!(opened["status"], "accepted", "{opened}");
    let issued = audited(&phone, "applicant.token.issued").await?;
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].actor, subject);
    assert!(
        issued[0].detail.contains("127.0.0.1"),
        "{}",
        issued[0].detail
    );
    phone.shutdown().await;
    stack.shutdown().await;

    let closed = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.admin.public_applicant_tokens = false;
        config.admin.applicant_tokens_per_kiosk = std::num::NonZeroU32::new(1).unwrap();
    })
    .await?;
    let (status, _, problem) = exchange(&closed, None).await?;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(
        problem["type"],
        "urn:courtchat:problem:kiosk-credential-required"
    );
    // Kiosks still get theirs, within their own limit (one a minute here).
    let admin = staff::add_signed_in(&closed, "ann", StaffRole::Admin).await?;
    let (_, credential) = enrol(&closed, &admin, json!({"name": "Hall B"})).await?;
    let (_, other) = enrol(&closed, &admin, json!({"name": "Hall C"})).await?;
    assert_eq!(exchange(&closed, Some(&credential)).await?.0, 200);
    let (status, retry_after, problem) = exchange(&closed, Some(&credential)).await?;
    assert_eq!(status, 429, "{problem}");
    assert!(retry_after.is_some_and(|wait| (1..=60).contains(&wait)));
    assert_eq!(
        exchange(&closed, Some(&other)).await?.0,
        200,
        "kiosks do not share"
    );
    closed.shutdown().await;
    Ok(())
}

/// Set to 1 (CI does) to fail, instead of skip, when curl, jq or the mosquitto clients are
/// missing.
const REQUIRE_CLI_TOOLS_ENV: &str = "COURTCHAT_TEST_REQUIRE_CLI_TOOLS";

/// The first `bash` block of PROTOCOL.md's "Getting an applicant identity".
fn protocol_example() -> anyhow::Result<String> {
    let protocol = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/PROTOCOL.md"),
    )?;
    let section = protocol
        .split("\n## Getting an applicant identity\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .ok_or_else(|| anyhow::anyhow!("PROTOCOL.md has no \"Getting an applicant identity\""))?;
    let script = section
        .split("\n```bash\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .ok_or_else(|| anyhow::anyhow!("the section has no bash block"))?;
    Ok(script.to_owned())
}

/// What is missing of what the example needs.
fn missing_cli_tools() -> Vec<&'static str> {
    ["bash", "curl", "jq", "mosquitto_rr"]
        .into_iter()
        .filter(|tool| {
            !Command::new(tool)
                .arg(if *tool == "mosquitto_rr" {
                    "--help"
                } else {
                    "--version"
                })
                .output()
                .is_ok_and(|out| out.status.success() || *tool == "mosquitto_rr")
        })
        .collect()
}

#[tokio::test]
async fn the_protocol_example_opens_a_session_as_a_kiosk_and_as_a_phone() -> anyhow::Result<()> {
    let script = protocol_example()?;
    let missing = missing_cli_tools();
    if !missing.is_empty() {
        anyhow::ensure!(
            !std::env::var(REQUIRE_CLI_TOOLS_ENV).is_ok_and(|v| v == "1"),
            "{REQUIRE_CLI_TOOLS_ENV}=1 but the PROTOCOL.md example cannot run: missing {missing:?}"
        );
        eprintln!("notice: skipping the PROTOCOL.md example: missing {missing:?}");
        return Ok(());
    }
    let stack = TestStack::start().await?;
    let admin = staff::add_signed_in(&stack, "ann", StaffRole::Admin).await?;
    let (_, credential) = enrol(
        &stack,
        &admin,
        json!({"name": "Hall B", "team": "licensing"}),
    )
    .await?;
    let mqtt = stack.mqtt_tcp_addr();
    for (credential, channel) in [(Some(credential.as_str()), "kiosk"), (None, "phone")] {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(&script)
            .env("CC_API", stack.http_url(""))
            .env("CC_MQTT_HOST", mqtt.ip().to_string())
            .env("CC_MQTT_PORT", mqtt.port().to_string())
            .env_remove("CC_KIOSK_CREDENTIAL");
        if let Some(credential) = credential {
            command.env("CC_KIOSK_CREDENTIAL", credential);
        }
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || command.output()),
        )
        .await???;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{channel}: the example failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let ack: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or_default())?;
        assert_eq!(ack["status"], "accepted", "{channel}: {ack}");
        let session_id = ack["session_id"].as_str().expect("a session");
        let row = session::Entity::find_by_id(session_id)
            .one(stack.store().connection())
            .await?
            .expect("stored");
        assert_eq!(row.channel, channel);
        let team = (channel == "kiosk").then(|| "licensing".to_owned());
        assert_eq!(row.team, team);
    }
    stack.shutdown().await;
    Ok(())
}
