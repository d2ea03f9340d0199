//! The kinds of listener a connection can come in on, as logs, metrics and hooks name them.

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listener {
    Tcp,
    Tls,
    WebSocket,
    SecureWebSocket,
    /// Not a listener: a client inside the gateway's process (`in_process`).
    InProcess,
}

impl Listener {
    pub const ALL: [Listener; 4] = [
        Listener::Tcp,
        Listener::Tls,
        Listener::WebSocket,
        Listener::SecureWebSocket,
    ];

    pub(crate) fn uses_tls(self) -> bool {
        matches!(self, Listener::Tls | Listener::SecureWebSocket)
    }

    /// Its name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Tcp => "tcp",
            Listener::Tls => "tls",
            Listener::WebSocket => "websocket",
            Listener::SecureWebSocket => "secure_websocket",
            Listener::InProcess => "in_process",
        }
    }
}
