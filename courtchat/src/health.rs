//! `courtchat health`: whether the server's admin listener answers `/readyz` with 200, for a
//! container's health check in an image that has no curl. One HTTP/1.0 request over a plain
//! socket is all it takes, so no HTTP client library is linked for it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Asks `admin` (the admin listener; a wildcard address means this machine) for `/readyz` and
/// says whether it answered 200 within `patience`, or why not.
pub async fn ready(admin: SocketAddr, patience: Duration) -> Result<(), String> {
    let addr = crate::server::loopback(admin);
    let exchange = async {
        let mut socket = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        socket.write_all(request.as_bytes()).await?;
        let mut head = vec![0; 64];
        let read = socket.read(&mut head).await?;
        head.truncate(read);
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(patience, exchange)
        .await
        .map_err(|_| format!("{addr} did not answer within {patience:?}"))?
        .map_err(|error| format!("{addr}: {error}"))?;
    let status_line = String::from_utf8_lossy(&head);
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status == "200" {
        Ok(())
    } else {
        Err(format!("{addr} answered /readyz with {status:?}"))
    }
}
