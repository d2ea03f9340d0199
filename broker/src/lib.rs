//! courtchat's MQTT front door.
//!
//! This crate terminates MQTT itself, with rumqttc's public codecs, authenticates and authorizes
//! every connection, publish, subscription and delivery, and routes every topic through its own
//! index (`fanout`), whose memory follows the live subscriptions. (rumqttd's router, the routing
//! core until issue 22, is kept only as a benchmark reference behind the `rumqttd-reference`
//! feature: see ARCHITECTURE.md.)
//!
//! ```no_run
//! # async fn run() -> Result<(), broker::BrokerError> {
//! let broker = broker::Broker::start(broker::BrokerConfig::default(), Vec::new())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! broker.serve_tcp(listener, std::future::pending()).await;
//! # Ok(()) }
//! ```

mod acl;
mod auth;
mod codec;
mod config;
mod connection;
mod denial;
mod fanout;
mod feed;
mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod hooks;
mod inbound;
mod memberships;
mod message;
#[cfg(feature = "rumqttd-reference")]
mod reference;
mod session;
mod signal;
mod staff;
mod subscribe_limit;
mod tls;
mod topic_alias;
mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use acl::{
    Access, AclChain, AclConfig, Authorizer, Decision, DeniedPublish, Effect, ProtocolRules,
    StaticRule, StaticRules,
};
pub use auth::{
    AnonymousAuthenticator, AuthChain, AuthConfig, AuthOutcome, Authenticator, Claims, ConnectInfo,
    Identity, JwtAuthenticator, KeyError, Refusal, Role, TokenAlgorithm, TokenDetails, TokenKeys,
    load_or_create_secret,
};
pub use config::{BrokerConfig, TcpConfig, TlsConfig, WebSocketConfig};
pub use denial::{
    Bounded, Denial, DenialKind, DenialRecord, DenialsConfig, FoldedBy, FoldedDenials,
};
pub use hooks::{Hook, Stats};
pub use memberships::{ClosedSessions, Memberships};
#[cfg(feature = "rumqttd-reference")]
pub use reference::start_plain_rumqttd;
pub use signal::{SignalRefusal, SignalsConfig};
pub use staff::StaffRevocations;
pub use subscribe_limit::SubscriptionsConfig;
pub use tls::TlsError;

use connection::Shared;
use transport::Transport;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot start the broker: {0}")]
    Start(#[from] std::io::Error),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("`mqtt.acl.rules`: {0}")]
    Rule(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the broker must be started from within a tokio runtime")]
    NoRuntime,
    /// A setting that cannot be used, with its key.
    #[error("`{0}`: {1}")]
    Config(&'static str, String),
}

/// A running broker core. Cheap to clone; every listener served from one `Broker` shares its
/// routing index, so a client on TCP and a client on WebSocket see each other's messages.
#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// How often closed sessions are checked for having run out of access, when they can
/// (`mqtt.closed_session_access_secs`); the limit is in whole seconds, so a session is
/// forgotten at most this late.
const SWEEP: Duration = Duration::from_secs(1);

/// Sweeps between two forgettings of idle senders' allowances: often enough that memory follows
/// the recent senders, rarely enough that it costs nothing.
const IDLE_SENDERS_EVERY: u64 = 60;

impl Broker {
    /// Starts the broker with the standard plugin chains: JWT authentication against the
    /// broker's staff revocations ([`Broker::staff_revocations`], empty at first; then anonymous
    /// access, if enabled), and the authorization chain of [`AclChain::standard`] over the
    /// broker's session memberships ([`Broker::memberships`], empty until someone joins). No
    /// socket is opened until a listener is served.
    pub fn start(config: BrokerConfig, hooks: Vec<Arc<dyn Hook>>) -> Result<Self, BrokerError> {
        for rule in &config.acl.rules {
            rule.validate().map_err(BrokerError::Rule)?;
        }
        config
            .check()
            .map_err(|(key, reason)| BrokerError::Config(key, reason))?;
        let staff_revocations = StaffRevocations::new();
        let mut authenticators: Vec<Box<dyn Authenticator>> = vec![Box::new(
            JwtAuthenticator::new(TokenKeys::load(&config.auth)?)
                .with_revocations(staff_revocations.clone()),
        )];
        if config.auth.allow_anonymous {
            authenticators.push(Box::new(AnonymousAuthenticator {
                role: config.auth.anonymous_role,
            }));
        }
        let tls = tls::acceptor(&config.tls)?;
        let memberships = Memberships::new(config.closed_sessions());
        let acl = AclChain::standard(&config.acl, memberships.clone());
        // Connections and session-expiry timers are tokio tasks.
        tokio::runtime::Handle::try_current().map_err(|_| BrokerError::NoRuntime)?;
        let shared = Arc::new(Shared::new(
            config,
            AuthChain::new(authenticators),
            acl,
            memberships.clone(),
            staff_revocations.clone(),
            hooks,
        )?);
        // A subject that leaves a session loses its live subscriptions to it at once. The
        // listener holds the broker weakly: memberships may outlive it (in tests, for one).
        let weak = Arc::downgrade(&shared);
        memberships.on_leave(Arc::new(move |session, subject| {
            if let Some(shared) = weak.upgrade() {
                shared.clients.revoke(subject, session);
                shared.forget_presence(session, subject);
            }
        }));
        // A subject whose credentials are revoked loses its live connection at once.
        let weak = Arc::downgrade(&shared);
        staff_revocations.on_revoke(Arc::new(move |subject| {
            if let Some(shared) = weak.upgrade() {
                shared.clients.end(subject);
            }
        }));
        // A forgotten session's retained messages (its lock state) go with it.
        let weak = Arc::downgrade(&shared);
        memberships.on_forget(Arc::new(move |session| {
            if let Some(shared) = weak.upgrade() {
                shared.forget_session(session);
            }
        }));
        // Housekeeping, until the broker is gone: closed sessions whose time is up are
        // forgotten even when no later close pushes them out, senders whose typing allowance
        // is whole again are forgotten, and the counts of folded denials whose window is over
        // are recorded.
        let weak = Arc::downgrade(&shared);
        let timed = memberships.closed_window().access.is_some();
        tokio::spawn(async move {
            let mut sweep = tokio::time::interval(SWEEP);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for tick in 0_u64.. {
                let now = sweep.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                if timed {
                    shared.memberships.forget_expired(now);
                }
                if tick % IDLE_SENDERS_EVERY == 0 {
                    shared.signals.forget_idle();
                    shared.subscribe_allowance.forget_idle();
                }
                shared.hooks.flush_due(now.into_std());
            }
        });
        Ok(Self { shared, tls })
    }

    /// Who belongs to which session, as the authorizer sees it: kept current by the chat
    /// pipeline's announcements, and filled from the database at start by whoever starts the
    /// broker.
    pub fn memberships(&self) -> &Memberships {
        &self.shared.memberships
    }

    /// Subjects whose tokens issued before a given time are refused, and whose live
    /// connections a revocation ends: filled from the database at start by whoever starts the
    /// broker, then kept current by the admin API.
    pub fn staff_revocations(&self) -> &StaffRevocations {
        &self.shared.staff_revocations
    }

    /// Counters of refusals and denials since start.
    pub fn stats(&self) -> Stats {
        self.shared.hooks.stats()
    }

    /// Serves MQTT over plain TCP on an already-bound listener until `shutdown` resolves, then
    /// closes every connection it accepted and returns.
    pub async fn serve_tcp(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.serve(listener, shutdown, Listener::Tcp).await
    }

    /// Serves MQTT over WebSocket (path and limits from the configuration) until `shutdown`.
    pub async fn serve_websocket(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.serve(listener, shutdown, Listener::WebSocket).await
    }

    /// Serves MQTT over TLS with the configured certificate until `shutdown`.
    pub async fn serve_tls(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.serve(listener, shutdown, Listener::Tls).await
    }

    /// Serves MQTT over secure WebSocket (TLS, then the WebSocket upgrade) until `shutdown`.
    pub async fn serve_secure_websocket(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) {
        self.serve(listener, shutdown, Listener::SecureWebSocket)
            .await
    }

    /// Whether a certificate is configured, i.e. whether the TLS listeners can be served.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
        kind: Listener,
    ) {
        let tls = match (kind.uses_tls(), &self.tls) {
            (false, _) => None,
            (true, Some(acceptor)) => Some(acceptor.clone()),
            (true, None) => {
                tracing::error!(
                    "a TLS listener was served without mqtt.tls.cert_file; it accepts nothing"
                );
                return;
            }
        };
        let stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Typically EMFILE: back off instead of spinning on the error.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Chat traffic is many small packets; Nagle's algorithm would add up to 40 ms each.
            let _ = stream.set_nodelay(true);
            let shared = self.shared.clone();
            let stop = stop.clone();
            let tls = tls.clone();
            // Everything slow (TLS and WebSocket handshakes, waiting for CONNECT) happens in the
            // connection's own task, so one idle socket never delays the next accept.
            connections.spawn(async move {
                let config = &shared.config;
                let handshake = tokio::select! {
                    _ = stop.cancelled() => return,
                    handshake = timeout(config.connect_timeout, handshake(kind, stream, tls, config)) => handshake,
                };
                let transport = match handshake {
                    Ok(Ok(transport)) => transport,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "handshake timed out");
                        return;
                    }
                };
                connection::serve(transport, peer, kind, shared, stop, BytesMut::with_capacity(4096)).await;
            });
        }
        stop.cancel();
        connections.close();
        connections.wait().await;
    }
}

/// Runs the handshakes below MQTT for one accepted socket: TLS, then the WebSocket upgrade, as
/// the listener's kind requires.
async fn handshake(
    kind: Listener,
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    config: &BrokerConfig,
) -> Result<Transport, String> {
    let io: Box<dyn transport::Io> = match tls {
        Some(acceptor) => Box::new(
            acceptor
                .accept(stream)
                .await
                .map_err(|err| format!("TLS: {err}"))?,
        ),
        None => Box::new(stream),
    };
    match kind {
        Listener::Tcp | Listener::Tls => Ok(Transport::Stream(io)),
        Listener::WebSocket | Listener::SecureWebSocket => {
            let websocket = &config.websocket;
            transport::accept_websocket(
                io,
                &websocket.path,
                &websocket.allowed_origins,
                config.max_packet_size,
            )
            .await
            .map_err(|err| format!("WebSocket: {err}"))
        }
    }
}

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listener {
    Tcp,
    Tls,
    WebSocket,
    SecureWebSocket,
}

impl Listener {
    pub const ALL: [Listener; 4] = [
        Listener::Tcp,
        Listener::Tls,
        Listener::WebSocket,
        Listener::SecureWebSocket,
    ];

    fn uses_tls(self) -> bool {
        matches!(self, Listener::Tls | Listener::SecureWebSocket)
    }

    /// Its name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Tcp => "tcp",
            Listener::Tls => "tls",
            Listener::WebSocket => "websocket",
            Listener::SecureWebSocket => "secure_websocket",
        }
    }
}
