//! Every route of the admin API is limited per sender: a signed-in caller by their token's
//! subject, anyone else by their address. Beyond the allowance every route answers 429 with
//! `Retry-After`, as the OpenAPI document says of each operation, and one sender's flood does
//! not cost another sender anything.

use courtchat::{Role, StaffRole};
use serde_json::Value;
use testkit::{TestDatabase, TestStack};

use super::staff;

/// A stack allowing `per_subject` requests a minute per caller and `per_address` per address.
async fn limited(per_subject: u32, per_address: u32) -> anyhow::Result<TestStack> {
    TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.admin.requests_per_subject = per_subject.try_into().expect("nonzero");
        config.admin.requests_per_address = per_address.try_into().expect("nonzero");
    })
    .await
}

async fn get(
    stack: &TestStack,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<reqwest::Response> {
    let mut request = reqwest::Client::new().get(stack.http_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Ok(request.send().await?)
}

/// Requires `response` to be the API's 429 with a whole-second `Retry-After`.
async fn too_many(response: reqwest::Response, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(response.status() == 429, "{what}: {}", response.status());
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{what}: no Retry-After"))?;
    anyhow::ensure!(
        (1..=60).contains(&retry_after),
        "{what}: Retry-After {retry_after}"
    );
    let problem: Value = response.json().await?;
    anyhow::ensure!(
        problem["type"] == "urn:courtchat:problem:rate-limited",
        "{what}: {problem}"
    );
    Ok(())
}

#[tokio::test]
async fn every_route_is_limited_per_signed_in_caller() -> anyhow::Result<()> {
    let stack = limited(5, 100).await?;
    staff::add(&stack, "ann", StaffRole::Admin).await?;
    staff::add(&stack, "bob", StaffRole::Agent).await?;
    let ann = stack.token("ann", Role::Admin);
    let bob = stack.token("bob", Role::Agent);
    // Five of any route, answered or not, then 429 on every route for ann.
    for path in [
        "/v1/people",
        "/v1/sessions",
        "/v1/nothing-here",
        "/healthz",
        "/v1/people/ann",
    ] {
        let response = get(&stack, path, Some(&ann)).await?;
        anyhow::ensure!(response.status() != 429, "{path}: {}", response.status());
    }
    for path in [
        "/v1/people",
        "/v1/stats?since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z",
        "/v1/openapi.json",
        "/desk/",
    ] {
        too_many(get(&stack, path, Some(&ann)).await?, path).await?;
    }
    // Bob has his own allowance, and so does the address of both.
    anyhow::ensure!(get(&stack, "/v1/people/bob", Some(&bob)).await?.status() == 200);
    anyhow::ensure!(get(&stack, "/healthz", None).await?.status() == 200);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn callers_without_a_valid_token_are_limited_by_address() -> anyhow::Result<()> {
    let stack = limited(100, 3).await?;
    staff::add(&stack, "ann", StaffRole::Admin).await?;
    // A forged or expired token counts against the address, like none.
    for token in [None, Some("not.a.token"), None] {
        let response = get(&stack, "/kiosk/", token).await?;
        anyhow::ensure!(response.status() != 429, "{token:?}: {}", response.status());
    }
    too_many(get(&stack, "/healthz", None).await?, "/healthz").await?;
    too_many(
        get(&stack, "/v1/people", Some("not.a.token")).await?,
        "forged",
    )
    .await?;
    let refused = reqwest::Client::new()
        .post(stack.http_url("/v1/login"))
        .json(&serde_json::json!({"username": "ann", "password": staff::PASSWORD}))
        .send()
        .await?;
    too_many(refused, "sign-in").await?;
    // A signed-in caller from the same address is not held back by the address's flood.
    let ann = stack.token("ann", Role::Admin);
    anyhow::ensure!(get(&stack, "/v1/people", Some(&ann)).await?.status() == 200);
    stack.shutdown().await;
    Ok(())
}
