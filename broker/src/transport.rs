//! Byte transports under MQTT: a byte stream (TCP, or TLS over TCP) and WebSocket over either
//! (binary frames, subprotocol `mqtt`).
//!
//! All expose the same two operations to the protocol loop. `read_more` is cancel-safe (it only
//! awaits a single socket read or frame), so the loop can `select!` on it without losing bytes.
//!
//! Plain TCP, where most idle connections are, is read by readiness: the read buffer is
//! allocated only once bytes are there to read, and the protocol loop lets it go once it has
//! cut every packet out of it, so an idle connection holds no buffer at all.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A byte stream: a TCP socket or a TLS session over one. Boxed so that one protocol loop (and
/// one WebSocket layer) serves both; the indirection costs nothing next to a socket call.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) enum Transport {
    /// Plain TCP, read by readiness (see the module's notes).
    Tcp(TcpStream),
    /// TLS (or any other byte stream): its reads need a buffer while they wait.
    Stream(Box<dyn Io>),
    WebSocket(Box<WebSocketStream<Box<dyn Io>>>),
}

impl Transport {
    /// Appends whatever arrives next to `buf`; `Ok(0)` means the peer closed the connection.
    pub(crate) async fn read_more(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read_more(cx, buf)).await
    }

    /// `read_more` as a poll: the future the protocol loop waits on while a connection is idle
    /// is then two references, where an `async fn` over the three transports kept the largest
    /// one's state (192 bytes) in every connection's task (issue 22: memory per connection).
    /// Each poll makes at most one read, so nothing is lost when the wait is dropped.
    pub(crate) fn poll_read_more(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            Transport::Tcp(stream) => {
                ready!(stream.poll_read_ready(cx))?;
                buf.reserve(READ_CHUNK);
                // A read, not `try_read`: tokio's read forgets the socket's readiness after a
                // short read, so the next wait goes straight to epoll instead of first making a
                // read that finds nothing (one wasted system call per packet received; issue 22,
                // CPU per delivery).
                let read = tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf);
                if read.is_pending() && buf.is_empty() {
                    // Readiness was stale: nothing came. An idle connection must not keep the
                    // chunk reserved while it waits again.
                    *buf = BytesMut::new();
                }
                read
            }
            // tokio's read future holds nothing between polls but these two references.
            Transport::Stream(stream) => pin!(stream.read_buf(buf)).poll(cx),
            Transport::WebSocket(ws) => loop {
                match ready!(ws.poll_next_unpin(cx)) {
                    None => return Poll::Ready(Ok(0)),
                    Some(Ok(Message::Binary(data))) => {
                        if data.is_empty() {
                            continue;
                        }
                        buf.extend_from_slice(&data);
                        return Poll::Ready(Ok(data.len()));
                    }
                    Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(0)),
                    // tungstenite answers pings itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    // MQTT over WebSocket is binary only (MQTT 5.0 §6.0).
                    Some(Ok(Message::Text(_))) => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "text frame on an MQTT WebSocket",
                        )));
                    }
                    Some(Err(err)) => return Poll::Ready(Err(ws_error(err))),
                }
            },
        }
    }

    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Transport::Tcp(stream) => stream.write_all(bytes).await,
            Transport::Stream(stream) => stream.write_all(bytes).await,
            Transport::WebSocket(ws) => ws
                .send(Message::binary(bytes.to_vec()))
                .await
                .map_err(ws_error),
        }
    }

    /// Flushes and closes the write side; errors are irrelevant at that point.
    pub(crate) async fn close(&mut self) {
        match self {
            Transport::Tcp(stream) => {
                let _ = stream.shutdown().await;
            }
            Transport::Stream(stream) => {
                let _ = stream.shutdown().await;
            }
            Transport::WebSocket(ws) => {
                let _ = SinkExt::close(ws).await;
            }
        }
    }
}

/// Bytes read from a plain TCP socket at once: a few chat packets, or the start of a large one
/// (the buffer grows as a packet needs). Not configuration: it only trades a few system calls
/// for memory while reading.
const READ_CHUNK: usize = 2048;

/// Bytes tungstenite reserves for reading frames (its default is 128 KiB per connection): MQTT
/// packets from browsers are small, and the buffer grows as a frame needs.
const WEBSOCKET_READ_BUFFER: usize = 2048;

/// Upgrades an accepted socket to an MQTT WebSocket: the request must target `path` and offer
/// the `mqtt` subprotocol, which the response then selects.
pub(crate) async fn accept_websocket(
    stream: Box<dyn Io>,
    path: &str,
    allowed_origins: &[String],
    max_packet_size: usize,
) -> Result<Transport, WsError> {
    // The callback's signature is tungstenite's; its large error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path() != path {
            return Err(reject(
                StatusCode::NOT_FOUND,
                "no MQTT endpoint at this path",
            ));
        }
        // Browsers always send Origin; a page from an origin not on the list must not be able
        // to use a visitor's network position to reach the broker. An empty list admits no
        // page at all; clients that send no Origin are not browsers, and are always admitted.
        if let Some(origin) = request.headers().get("origin")
            && !allowed_origins
                .iter()
                .any(|allowed| origin.as_bytes() == allowed.as_bytes())
        {
            return Err(reject(StatusCode::FORBIDDEN, "this origin may not connect"));
        }
        let offers_mqtt = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("mqtt"));
        if !offers_mqtt {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "the Sec-WebSocket-Protocol header must offer \"mqtt\"",
            ));
        }
        response
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        Ok(response)
    };
    // One MQTT packet may span frames, but no single frame needs to exceed the packet limit.
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = WEBSOCKET_READ_BUFFER;
    config.max_message_size = Some(max_packet_size + 8);
    config.max_frame_size = Some(max_packet_size + 8);
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)).await?;
    Ok(Transport::WebSocket(Box::new(ws)))
}

fn reject(status: StatusCode, reason: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(reason.to_owned()));
    *response.status_mut() = status;
    response
}

fn ws_error(err: WsError) -> io::Error {
    match err {
        WsError::Io(err) => err,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::ConnectionAborted, err.to_string())
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}
