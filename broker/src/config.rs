//! The `[mqtt]` section of the configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::acl::AclConfig;
use crate::auth::AuthConfig;
use crate::denial::DenialsConfig;
use crate::memberships::ClosedSessions;
use crate::retained::RetainedConfig;
use crate::signal::SignalsConfig;
use crate::subscribe_limit::SubscriptionsConfig;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    pub tcp: TcpConfig,
    pub websocket: WebSocketConfig,
    /// MQTT over TLS and over secure WebSocket; served when a certificate is configured.
    pub tls: TlsConfig,
    /// Threads that serve MQTT connections, on a runtime of their own apart from the rest of
    /// the server (the pipeline, the database, the admin API). Default: half the machine's
    /// cores, rounded up. 0: no threads of its own; connections run on the runtime that serves
    /// the listener. At most 256.
    pub workers: usize,
    /// Client connections accepted at once; the next CONNECT is refused with "server unavailable".
    pub max_connections: usize,
    /// Largest MQTT packet accepted from a client, in bytes. A larger one closes the connection.
    pub max_packet_size: usize,
    /// Time a new socket has to finish its WebSocket handshake and send CONNECT, in seconds.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// Longest client identifier accepted.
    pub max_client_id_len: usize,
    /// Longest a session outlives its connection, in seconds: caps MQTT 5's session expiry
    /// interval, and is how long an MQTT 3.1.1 persistent session (which has none) is kept.
    #[serde(with = "secs")]
    pub max_session_expiry: Duration,
    /// Deliveries that may wait for one client beyond its receive maximum, and (separately)
    /// in its connection's delivery queue while the server cannot write to it. A client that
    /// lets more pile up (it stopped acknowledging or reading) is disconnected, MQTT 5 with
    /// reason 0x97, rather than let its queues grow without bound; it reconnects and resumes or
    /// resyncs. The delivery queue (at least 64) is also what a persistent session keeps while
    /// its client is away, QoS 0 included; past it the newest are dropped and counted.
    pub max_pending_per_client: usize,
    /// How many of the most recently closed sessions keep their participants' access (for the
    /// survey and resync). Beyond it the oldest is forgotten: its memberships and retained
    /// lock state leave memory. At least 1.
    pub closed_sessions_kept: usize,
    /// Longest a closed session keeps its participants' access, in seconds, if it is not
    /// pushed out by `closed_sessions_kept` first; 0: no time limit.
    pub closed_session_access_secs: u64,
    /// Longest a publish for the chat pipeline waits for room in its queue once its sender has
    /// disconnected, in seconds; then it is dropped (and logged), and the sender, which never got
    /// the pipeline's acknowledgement (a PUBACK is not one), resubmits. While the sender is
    /// connected it waits as long as it takes.
    pub pipeline_queue_wait_secs: u64,
    /// QoS 2 publishes an MQTT 5 client may have sent and not yet released (PUBREL) at once:
    /// the receive maximum CONNACK announces (unless it is 65535, MQTT 5's default). A client
    /// that sends more is disconnected (0x93). (QoS 1 publishes are acknowledged as they
    /// arrive.) At least 1.
    pub receive_maximum: u16,
    /// Longest keep alive an MQTT 5 client may use, in seconds: one asking for more, or for none
    /// (0), is told this one in CONNACK (server keep alive) and held to it. 0: no maximum.
    /// MQTT 3.1.1 cannot be told, and keeps its own.
    pub max_keep_alive_secs: u16,
    /// Topic aliases per MQTT 5 connection, in each direction: announced in CONNACK for the
    /// client's use, and the most the gateway sets towards a client that allows them. 0: none.
    pub max_topic_aliases: u16,
    /// How much typing and presence each sender may publish (`[mqtt.signals]`).
    pub signals: SignalsConfig,
    /// How many topic filters each sender may subscribe to (`[mqtt.subscriptions]`).
    pub subscriptions: SubscriptionsConfig,
    /// How much clients may keep as retained messages outside `cc/` (`[mqtt.retained]`).
    pub retained: RetainedConfig,
    /// How denials are bounded before they are logged and recorded (`[mqtt.denials]`).
    pub denials: DenialsConfig,
    /// How clients prove who they are.
    pub auth: AuthConfig,
    /// Static authorization rules and the policy for denied publishes.
    pub acl: AclConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Address of the plain MQTT listener.
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Address of the MQTT-over-WebSocket listener.
    pub listen: SocketAddr,
    /// HTTP path clients upgrade on.
    pub path: String,
    /// Origins (e.g. `https://desk.example.org`) whose pages may open a connection; a request
    /// with any other Origin gets 403 (none at all when the list is empty). Requests without an
    /// Origin (non-browser clients) are always allowed. `courtchat serve` adds the origins of
    /// the pages it serves.
    pub allowed_origins: Vec<String>,
}

/// The most threads `mqtt.workers` may ask for.
const MAX_WORKERS: usize = 256;

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            tcp: TcpConfig::default(),
            websocket: WebSocketConfig::default(),
            tls: TlsConfig::default(),
            workers: crate::threads::default_workers(std::thread::available_parallelism().ok()),
            max_connections: 10_000,
            max_packet_size: 256 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_client_id_len: 128,
            max_session_expiry: Duration::from_secs(24 * 3600),
            max_pending_per_client: 10_000,
            closed_sessions_kept: ClosedSessions::default().kept,
            closed_session_access_secs: ClosedSessions::default()
                .access
                .map_or(0, |access| access.as_secs()),
            pipeline_queue_wait_secs: 60,
            receive_maximum: 1024,
            max_keep_alive_secs: 300,
            max_topic_aliases: 10,
            signals: SignalsConfig::default(),
            subscriptions: SubscriptionsConfig::default(),
            retained: RetainedConfig::default(),
            denials: DenialsConfig::default(),
            auth: AuthConfig::default(),
            acl: AclConfig::default(),
        }
    }
}

impl BrokerConfig {
    /// Checks the settings serde cannot (of the sections that have such rules); the error names
    /// the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        self.signals.rate()?;
        self.subscriptions.rate()?;
        self.denials.check()?;
        self.retained.check()?;
        // Each worker is an operating-system thread; more than this is a typo, not a plan.
        if self.workers > MAX_WORKERS {
            return Err(("mqtt.workers", format!("must be at most {MAX_WORKERS}")));
        }
        if self.receive_maximum == 0 {
            return Err(("mqtt.receive_maximum", "must be at least 1".to_owned()));
        }
        if self.signals.max_payload_bytes < 64 {
            // The known payloads take about 30 bytes; less would refuse them.
            return Err((
                "mqtt.signals.max_payload_bytes",
                "must be at least 64".to_owned(),
            ));
        }
        Ok(())
    }

    /// The closed-session window these settings describe.
    pub fn closed_sessions(&self) -> ClosedSessions {
        ClosedSessions {
            kept: self.closed_sessions_kept,
            access: (self.closed_session_access_secs > 0)
                .then(|| Duration::from_secs(self.closed_session_access_secs)),
        }
    }
}

// Loopback by default: exposing a service to a network is the operator's deliberate choice
// (`mqtt.tcp.listen = "0.0.0.0:1883"`).
impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
        }
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8083)),
            path: "/mqtt".to_owned(),
            allowed_origins: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Empty: no TLS listeners.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key_file: PathBuf,
    /// Address of the MQTT-over-TLS listener.
    pub listen: SocketAddr,
    /// Address of the MQTT-over-secure-WebSocket listener (same path as `mqtt.websocket.path`).
    pub websocket_listen: SocketAddr,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8883)),
            websocket_listen: SocketAddr::from(([127, 0, 0, 1], 8084)),
        }
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_bounded() {
        for (workers, ok) in [
            (0, true),
            (1, true),
            (MAX_WORKERS, true),
            (MAX_WORKERS + 1, false),
        ] {
            let config = BrokerConfig {
                workers,
                ..BrokerConfig::default()
            };
            assert_eq!(config.check().is_ok(), ok, "{workers}");
        }
    }

    #[test]
    fn the_closed_session_window_follows_its_two_keys() {
        // (closed_sessions_kept, closed_session_access_secs) -> the window
        let table = [
            ((2_000, 0), (2_000, None)),
            ((5, 0), (5, None)),
            ((5, 3600), (5, Some(Duration::from_secs(3600)))),
        ];
        for ((kept, secs), (expected_kept, expected_access)) in table {
            let config = BrokerConfig {
                closed_sessions_kept: kept,
                closed_session_access_secs: secs,
                ..BrokerConfig::default()
            };
            assert_eq!(
                config.closed_sessions(),
                ClosedSessions {
                    kept: expected_kept,
                    access: expected_access
                },
                "{kept}, {secs}"
            );
        }
        assert_eq!(
            BrokerConfig::default().closed_sessions(),
            ClosedSessions::default(),
            "the documented default is the window's default"
        );
    }
}
