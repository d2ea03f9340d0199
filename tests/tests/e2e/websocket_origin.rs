//! Which pages may open MQTT over WebSocket when nothing is configured: the pages this server
//! serves (the desk, the kiosk page) and clients that send no Origin (not browsers); a page
//! from any other origin is refused (HTTP 403), so it cannot use a visitor's browser to reach
//! the gateway. Configured origins add to these (`mqtt::websocket_handshakes_check_path_…`).

use courtchat::Role;
use testkit::TestStack;
use testkit::mqtt::TestClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The HTTP status of a WebSocket upgrade to the MQTT path from a page of `origin`.
async fn upgrade_status(stack: &TestStack, origin: Option<&str>) -> anyhow::Result<u16> {
    let url = url::Url::parse(&stack.mqtt_ws_url())?;
    let host = format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port().unwrap_or_default()
    );
    let mut socket = tokio::net::TcpStream::connect(&host).await?;
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n",
        url.path()
    );
    if let Some(origin) = origin {
        request.push_str(&format!("Origin: {origin}\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).await?;
    let mut response = vec![0u8; 256];
    let n = tokio::time::timeout(testkit::mqtt::PATIENCE, socket.read(&mut response)).await??;
    let head = String::from_utf8_lossy(&response[..n]);
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    Ok(status.parse()?)
}

#[tokio::test]
async fn by_default_only_the_pages_own_origin_and_clients_without_one_connect() -> anyhow::Result<()>
{
    let stack = TestStack::start().await?;
    assert!(stack.config().mqtt.websocket.allowed_origins.is_empty());
    let pages = stack.http_url("");
    let port = url::Url::parse(&pages)?.port().unwrap_or_default();
    let pages_by_name = format!("http://localhost:{port}");
    let rows = [
        (None, 101),
        (Some(pages.as_str()), 101),
        (Some(pages_by_name.as_str()), 101),
        (Some("https://evil.example"), 403),
        (Some("http://127.0.0.1:1"), 403),
        (Some("null"), 403),
    ];
    for (origin, expected) in rows {
        assert_eq!(
            upgrade_status(&stack, origin).await?,
            expected,
            "{origin:?}"
        );
    }
    // A client without an Origin (rumqttc sends none) speaks MQTT over it as before.
    let client =
        TestClient::connect(TestClient::ws_options(&stack, "ws-tool", Role::Agent)).await?;
    client.disconnect().await?;
    stack.shutdown().await;
    Ok(())
}
