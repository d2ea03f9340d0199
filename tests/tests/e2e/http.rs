//! The admin HTTP API's health endpoints, over real HTTP.

use courtchat::Role;
use testkit::TestStack;

#[tokio::test]
async fn smoke_mqtt_and_healthz() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;

    // A real MQTT client reaches the broker...
    let mut client = testkit::mqtt::TestClient::connect(testkit::mqtt::TestClient::tcp_options(
        &stack,
        "smoke",
        Role::Agent,
    ))
    .await?;
    client
        .subscribe("sandbox/smoke/echo", rumqttc::QoS::AtMostOnce)
        .await?;
    client
        .client
        .publish(
            "sandbox/smoke/echo",
            rumqttc::QoS::AtLeastOnce,
            false,
            "hello",
        )
        .await?;
    assert_eq!(client.next_publish().await?.payload.as_ref(), b"hello");

    // ...and the health endpoint answers over HTTP.
    let response = reqwest::get(stack.http_url("/healthz")).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await?["status"], "ok");

    client.disconnect().await?;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn readyz_follows_the_database() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let ready = reqwest::get(stack.http_url("/readyz")).await?;
    assert_eq!(ready.status(), 200);

    // Closing the pool makes the database unreachable for the server; readiness must say so
    // while liveness stays up.
    stack.store().close().await;
    let not_ready = reqwest::get(stack.http_url("/readyz")).await?;
    assert_eq!(not_ready.status(), 503);
    assert_eq!(
        not_ready.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = not_ready.json().await?;
    assert_eq!(problem["status"], 503);
    assert_eq!(problem["title"], "database unreachable");
    assert_eq!(
        problem["type"],
        "urn:courtchat:problem:database-unreachable"
    );
    assert_eq!(
        reqwest::get(stack.http_url("/healthz")).await?.status(),
        200
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unknown_paths_are_problem_details() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let response = reqwest::get(stack.http_url("/no/such/thing")).await?;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(response.json::<serde_json::Value>().await?["status"], 404);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_every_listener() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mqtt = stack.mqtt_tcp_addr();
    let healthz = stack.http_url("/healthz");
    stack.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(mqtt).await.is_err(),
        "MQTT port still open"
    );
    assert!(
        reqwest::get(healthz).await.is_err(),
        "admin port still open"
    );
    Ok(())
}

#[tokio::test]
async fn the_pages_are_served_with_their_security_headers() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    for path in [
        "/desk/",
        "/kiosk/",
        "/desk/desk.js",
        "/web/shared/courtchat.js",
    ] {
        let response = client.get(stack.http_url(path)).send().await?;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str()?;
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
    }
    let moved = client.get(stack.http_url("/desk")).send().await?;
    assert_eq!(moved.status(), 308);
    assert_eq!(moved.headers()["location"], "/desk/");
    // The pages learn where MQTT over WebSocket is from the server that served them.
    let config: serde_json::Value = client
        .get(stack.http_url("/web/config.json"))
        .send()
        .await?
        .json()
        .await?;
    let ws = stack.mqtt_ws_url();
    let port = ws.rsplit(':').next().and_then(|p| p.split('/').next());
    assert_eq!(config["mqtt_port"].to_string(), port.unwrap_or_default());
    assert_eq!(config["mqtt_path"], "/mqtt");
    assert_eq!(config["kiosk_reset_secs"], 120);
    let missing = client
        .get(stack.http_url("/desk/secrets.txt"))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    stack.shutdown().await;
    Ok(())
}
