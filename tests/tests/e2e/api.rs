//! The admin API as the tests call it: one request with a bearer token and an optional JSON
//! body, answered with its status and its JSON (null for an empty body).

use serde_json::Value;
use testkit::TestStack;

pub async fn call(
    stack: &TestStack,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new()
        .request(method, stack.http_url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)?
    };
    Ok((status, body))
}
