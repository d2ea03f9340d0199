//! Staff sign-in with the court's identity provider (issue 27, points 1, 2 and 4), against a
//! real, certified OpenID provider (panva's oidc-provider, in Node: tests/js/oidc-provider.mjs)
//! started by the test, signing in through the desk in headless Chromium (tests/js/web-oidc.mjs):
//! success, group-to-role mapping, a person with no courtchat role or account, an ID token for
//! another audience, an expired ID token, a rotated signing key, a person disabled at the
//! provider (who loses the desk within the recheck interval and cannot sign in again), and
//! signing out of both courtchat and the provider. Password sign-in is off on this server.

use std::time::Duration;

use courtchat::StaffRole;
use schemas::db::entities::audit_event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};
use testkit::{TestDatabase, TestStack};

use super::staff;
use super::web_desk::Script;

const PASSWORD: &str = "a password at the court";

async fn audited(stack: &TestStack, action: &str) -> anyhow::Result<Vec<audit_event::Model>> {
    Ok(audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq(action))
        .order_by_asc(audit_event::Column::Id)
        .all(stack.store().connection())
        .await?)
}

/// The status of `GET path` with `token`.
async fn status_with(stack: &TestStack, token: &str, path: &str) -> anyhow::Result<u16> {
    Ok(reqwest::Client::new()
        .get(stack.http_url(path))
        .bearer_auth(token)
        .send()
        .await?
        .status()
        .as_u16())
}

/// A step of the browser, and its answer.
async fn step(browser: &mut Script, step: Value) -> anyhow::Result<Value> {
    browser.answer(step)?;
    browser.next().await
}

/// Tells the provider `command` and waits for its `ok`.
async fn tell(provider: &mut Script, command: Value) -> anyhow::Result<()> {
    provider.answer(command.clone())?;
    let answer = provider.next().await?;
    anyhow::ensure!(answer["ok"] == true, "{command} -> {answer}");
    Ok(())
}

fn sign_in(who: &str) -> Value {
    json!({"do": "sign-in", "as": who, "password": PASSWORD})
}

#[tokio::test]
async fn staff_sign_in_through_a_real_openid_provider() -> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let user =
        |groups: &[&str], name: &str| json!({"password": PASSWORD, "name": name, "groups": groups});
    let users = json!({
        "bob": user(&["cc-agents", "licensing-office"], "Bob Baker"),
        "sue": user(&["cc-agents", "cc-supervisors"], "Sue Smith"),
        "eve": user(&["visitors"], "Eve"),
        "zed": user(&["cc-agents"], "Zed"),
        "dan": user(&["cc-agents"], "Dan"),
        // Another person, to whom the directory gave the username Bob had.
        "bob-2": json!({"password": PASSWORD, "name": "Robert", "groups": ["cc-agents"], "username": "bob"}),
    });
    let mut provider = Script::start(&js, "oidc-provider.mjs", &json!({"users": users}))?;
    let issuer = provider.next().await?["ready"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(issuer.starts_with("http://127.0.0.1:"), "{issuer}");

    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.admin.password_sign_in = false;
        let oidc = &mut config.admin.oidc;
        oidc.issuer = issuer.clone();
        oidc.client_id = "courtchat".to_owned();
        oidc.client_secret = "courtchat-test-client-secret".to_owned();
        oidc.scopes = vec!["profile".to_owned(), "groups".to_owned()];
        let role = |group: &str, role: &str| courtchat::GroupRole {
            group: group.to_owned(),
            role: role.to_owned(),
        };
        oidc.roles = vec![
            role("cc-agents", "agent"),
            role("cc-supervisors", "supervisor"),
            role("cc-admins", "admin"),
        ];
        oidc.teams = vec![courtchat::GroupTeam {
            group: "licensing-office".to_owned(),
            team: "licensing".to_owned(),
        }];
        // No skew: the expired ID token below is a second past its expiry.
        oidc.clock_skew_secs = 0;
        oidc.recheck_secs = 2;
    })
    .await?;
    let base = stack.http_url("");
    let base = base.trim_end_matches('/').to_owned();
    tell(
        &mut provider,
        json!({"cmd": "client", "client": {
            "client_id": "courtchat",
            "client_secret": "courtchat-test-client-secret",
            "redirect_uris": [format!("{base}/v1/oidc/callback")],
            "post_logout_redirect_uris": [format!("{base}/desk/")],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }}),
    )
    .await?;
    // Bob, Sue and Dan are staff already (Sue as an agent); Zed is not, and none is created.
    staff::add_to_team(&stack, "bob", StaffRole::Agent, Some("licensing"), None).await?;
    staff::add(&stack, "sue", StaffRole::Agent).await?;
    staff::add(&stack, "dan", StaffRole::Agent).await?;

    // Password sign-in is off, and the desk is told to offer the provider only.
    let refused = reqwest::Client::new()
        .post(stack.http_url("/v1/login"))
        .json(&json!({"username": "bob", "password": staff::PASSWORD}))
        .send()
        .await?;
    assert_eq!(refused.status(), 403);
    let web: Value = reqwest::get(stack.http_url("/web/config.json"))
        .await?
        .json()
        .await?;
    assert_eq!(web["password_sign_in"], false, "{web}");
    assert_eq!(web["provider_sign_in"], true, "{web}");

    let mut browser = Script::start(
        &js,
        "web-oidc.mjs",
        &json!({
            "chromium": js.chromium,
            "base": base,
            "artifacts": super::node::artifacts_dir(),
        }),
    )?;
    anyhow::ensure!(browser.next().await?["ready"] == true);

    // Bob signs in at the provider and lands on the desk with a courtchat token, which the API
    // takes; the sign-in is on the record like a password sign-in.
    let bob = step(&mut browser, sign_in("bob")).await?;
    assert_eq!(bob["outcome"], "desk", "{bob}");
    assert_eq!(bob["auth"]["username"], "bob");
    let bob_token = bob["auth"]["token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        status_with(&stack, &bob_token, "/v1/people/bob").await?,
        200
    );
    let logins = audited(&stack, "admin.login").await?;
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0].actor, "bob");
    assert!(
        logins[0].detail.contains("\"method\":\"oidc\""),
        "{}",
        logins[0].detail
    );
    assert!(!logins[0].detail.contains(&bob_token));

    // Sue's groups make her a supervisor: the provider's word changes her role here, audited.
    let sue = step(&mut browser, sign_in("sue")).await?;
    assert_eq!(sue["outcome"], "desk", "{sue}");
    let sue_token = sue["auth"]["token"].as_str().unwrap_or_default().to_owned();
    let person: Value = reqwest::Client::new()
        .get(stack.http_url("/v1/people/sue"))
        .bearer_auth(&sue_token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(person["role"], "supervisor", "{person}");
    let updates = audited(&stack, "admin.staff.updated").await?;
    assert!(
        updates
            .iter()
            .any(|e| e.actor == "oidc" && e.detail.contains("sue"))
    );

    // Bob's account is bound to Bob at the provider: another person given the username "bob"
    // there is refused, on the record, and the binding is too.
    let other = step(&mut browser, sign_in("bob-2")).await?;
    assert_eq!(other["outcome"], "refused", "{other}");
    assert_eq!(other["problem"], "urn:courtchat:problem:identity-mismatch");
    assert_eq!(other["status"], 403);
    let bound = audited(&stack, "admin.staff.identity_bound").await?;
    assert!(
        bound
            .iter()
            .any(|e| e.detail.contains("\"provider_subject\":\"bob\"")),
        "{bound:?}"
    );

    // Eve's groups give no role; Zed has none at courtchat: each refused with a clear page, and
    // on the record.
    let eve = step(&mut browser, sign_in("eve")).await?;
    assert_eq!(eve["outcome"], "refused", "{eve}");
    assert_eq!(eve["problem"], "urn:courtchat:problem:no-courtchat-role");
    let zed = step(&mut browser, sign_in("zed")).await?;
    assert_eq!(zed["outcome"], "refused", "{zed}");
    assert_eq!(zed["problem"], "urn:courtchat:problem:no-courtchat-account");
    assert_eq!(zed["status"], 403);
    let failures = audited(&stack, "admin.login.failed").await?;
    assert!(failures.iter().any(|e| e.actor == "zed"), "{failures:?}");

    // An ID token for another client, signed by the provider's own key: refused.
    tell(
        &mut provider,
        json!({"cmd": "mischief", "audience": "other-app"}),
    )
    .await?;
    let wrong = step(&mut browser, sign_in("bob")).await?;
    assert_eq!(wrong["outcome"], "refused", "{wrong}");
    assert_eq!(wrong["problem"], "urn:courtchat:problem:id-token-refused");
    assert!(
        wrong["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("audience"),
        "{wrong}"
    );
    // An ID token that lives a second and arrives after two: expired, refused.
    tell(
        &mut provider,
        json!({"cmd": "mischief", "idTokenTtl": 1, "tokenDelayMs": 2200}),
    )
    .await?;
    let expired = step(&mut browser, sign_in("bob")).await?;
    assert_eq!(expired["outcome"], "refused", "{expired}");
    assert!(
        expired["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{expired}"
    );
    tell(&mut provider, json!({"cmd": "mischief"})).await?;

    // The provider rotates its signing key: courtchat, holding the old key set, fetches the
    // new one for the new key's id, and the sign-in goes through.
    tell(&mut provider, json!({"cmd": "rotate"})).await?;
    let rotated = step(&mut browser, sign_in("bob")).await?;
    assert_eq!(
        rotated["outcome"],
        "desk",
        "{rotated} {:?}",
        audited(&stack, "admin.oidc.revoked").await?
    );

    // Dan signs in, then is disabled at the provider: within the recheck interval every
    // courtchat token of his is refused, his desk signs him out, and he cannot sign in again.
    let dan = step(&mut browser, sign_in("dan")).await?;
    assert_eq!(dan["outcome"], "desk", "{dan}");
    let dan_token = dan["auth"]["token"].as_str().unwrap_or_default().to_owned();
    tell(&mut provider, json!({"cmd": "disable", "user": "dan"})).await?;
    let revoked = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let status = status_with(&stack, &dan_token, "/v1/people/dan").await?;
            if status == 401 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert!(revoked.is_ok(), "dan's token still works");
    let ended = audited(&stack, "admin.oidc.revoked").await?;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(ended[0].detail.contains("dan"));
    let desk = step(&mut browser, json!({"do": "signed-out?", "as": "dan"})).await?;
    assert_eq!(desk["outcome"], "signed-out", "{desk}");
    let again = step(&mut browser, sign_in("dan")).await?;
    assert_eq!(again["outcome"], "refused", "{again}");
    assert_eq!(again["problem"], "urn:courtchat:problem:provider-refused");
    // Bob, still at the provider, was not touched.
    assert_eq!(
        status_with(&stack, &bob_token, "/v1/people/bob").await?,
        200
    );

    // Bob signs out: the token is ended here and the provider's session there.
    let out = step(&mut browser, json!({"do": "sign-out", "as": "bob"})).await?;
    assert_eq!(out["outcome"], "signed-out", "{out}");
    let rotated_token = rotated["auth"]["token"].as_str().unwrap_or_default();
    assert_eq!(
        status_with(&stack, rotated_token, "/v1/people/bob").await?,
        401
    );
    assert_eq!(audited(&stack, "admin.logout").await?.len(), 1);

    let _ = browser.finish();
    let _ = provider.finish();
    stack.shutdown().await;
    Ok(())
}
