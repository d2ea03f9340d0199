//! Members of staff for the admin API's tests: created as `courtchat user add` does, signed in
//! over HTTP as a dashboard does.

use courtchat::{NewStaff, StaffRole};
use serde_json::{Value, json};
use testkit::TestStack;

/// Every test member of staff's password.
pub const PASSWORD: &str = "correct horse battery staple";

/// Creates `username` with `role` (no team, default capacity).
pub async fn add(stack: &TestStack, username: &str, role: StaffRole) -> anyhow::Result<()> {
    add_to_team(stack, username, role, None, None).await
}

/// Creates `username` with `role` in `team`, taking `capacity` sessions at once.
pub async fn add_to_team(
    stack: &TestStack,
    username: &str,
    role: StaffRole,
    team: Option<&str>,
    capacity: Option<i32>,
) -> anyhow::Result<()> {
    courtchat::add_staff(
        stack.config(),
        NewStaff {
            username: username.to_owned(),
            display_name: username.to_owned(),
            role,
            team: team.map(str::to_owned),
            capacity,
            password: PASSWORD.to_owned(),
        },
    )
    .await?;
    Ok(())
}

/// Signs `username` in with [`PASSWORD`] and returns the token.
pub async fn sign_in(stack: &TestStack, username: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .post(stack.http_url("/v1/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 200,
        "sign-in of {username}: {}",
        response.status()
    );
    let body: Value = response.json().await?;
    Ok(body["token"].as_str().unwrap_or_default().to_owned())
}

/// [`add`], then [`sign_in`].
pub async fn add_signed_in(
    stack: &TestStack,
    username: &str,
    role: StaffRole,
) -> anyhow::Result<String> {
    add(stack, username, role).await?;
    sign_in(stack, username).await
}
