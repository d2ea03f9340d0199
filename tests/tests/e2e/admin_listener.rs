//! The admin listener's bounds: a request whose head does not arrive within
//! `admin.request_read_timeout_secs` has its connection closed, and one whose JSON body does not
//! is answered 408 (half-sent requests were kept open forever), and beyond `admin.max_connections` connections a new one is answered 503 and
//! closed, while the server goes on serving the others.

use std::net::SocketAddr;
use std::time::Duration;

use testkit::{TestDatabase, TestStack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn admin_addr(stack: &TestStack) -> anyhow::Result<SocketAddr> {
    let url = url::Url::parse(&stack.http_url("/"))?;
    let host = url.host_str().unwrap_or("127.0.0.1");
    Ok(format!("{host}:{}", url.port().unwrap_or(80)).parse()?)
}

/// Reads until the server closes the connection (or `patience` passes); what it sent.
async fn read_to_close(stream: &mut TcpStream, patience: Duration) -> anyhow::Result<Vec<u8>> {
    let mut received = Vec::new();
    tokio::time::timeout(patience, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the server kept the connection open for {patience:?}"))?;
    Ok(received)
}

/// Sends one complete request for `/healthz` on `stream` and reads the response's head.
async fn healthz(stream: &mut TcpStream) -> anyhow::Result<String> {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: courtchat\r\n\r\n")
        .await?;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed before answering: {received:?}");
        received.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_read_timeout() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.admin.request_read_timeout_secs = 1;
    })
    .await?;
    let addr = admin_addr(&stack)?;
    // A head that never ends, a byte now and then would not help either.
    let mut slow = TcpStream::connect(addr).await?;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: courtchat\r\n")
        .await?;
    read_to_close(&mut slow, Duration::from_secs(15)).await?;
    // A connection that sends nothing at all is closed too.
    let mut silent = TcpStream::connect(addr).await?;
    read_to_close(&mut silent, Duration::from_secs(15)).await?;
    // A body that stops short of its length is answered 408 when the time is up.
    let mut short = TcpStream::connect(addr).await?;
    short
        .write_all(
            b"POST /v1/login HTTP/1.1\r\nHost: courtchat\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"username\"",
        )
        .await?;
    let answer = read_to_close(&mut short, Duration::from_secs(15)).await?;
    let answer = String::from_utf8_lossy(&answer);
    anyhow::ensure!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    anyhow::ensure!(answer.contains("request-timeout"), "{answer}");
    // Whole requests are served as before.
    let mut whole = TcpStream::connect(addr).await?;
    let head = healthz(&mut whole).await?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_and_the_rest_served() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.admin.max_connections = 3;
        config.admin.request_read_timeout_secs = 60;
    })
    .await?;
    let addr = admin_addr(&stack)?;
    // Three connections, each served once and kept alive: the cap is reached.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await?;
        let head = healthz(&mut stream).await?;
        anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(stream);
    }
    let mut fourth = TcpStream::connect(addr).await?;
    let answer = read_to_close(&mut fourth, Duration::from_secs(10)).await?;
    let answer = String::from_utf8_lossy(&answer);
    anyhow::ensure!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    anyhow::ensure!(answer.contains("Retry-After: 1"), "{answer}");
    // The held connections are still served.
    let head = healthz(&mut held[0]).await?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    // One closes; a new connection gets its place once the server has seen it go.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(addr).await?;
        if let Ok(head) = healthz(&mut stream).await
            && head.starts_with("HTTP/1.1 200")
        {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the freed place was never given to a new connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.shutdown().await;
    Ok(())
}
