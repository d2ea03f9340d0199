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
//! let broker = broker::Broker::builder(broker::BrokerConfig::default()).start()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! broker.serve_tcp(listener, std::future::pending()).await;
//! # Ok(()) }
//! ```

mod acl;
mod auth;
pub mod chat;
mod codec;
mod config;
mod connection;
mod delivery_queue;
mod denial;
mod error;
mod fanout;
mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod hook_set;
mod hooks;
mod identity;
mod in_process;
mod inbound;
mod listener;
mod memberships;
mod message;
#[cfg(feature = "rumqttd-reference")]
mod reference;
mod retained;
mod session;
mod signal;
mod staff;
mod subscribe_limit;
mod threads;
mod tls;
mod topic_alias;
mod transport;
mod upkeep;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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
    JwtAuthenticator, KeyError, Refusal, TokenAlgorithm, TokenKeys, load_or_create_secret,
};
pub use config::{BrokerConfig, TcpConfig, TlsConfig, WebSocketConfig};
pub use denial::{
    Bounded, Denial, DenialKind, DenialRecord, DenialsConfig, FoldedBy, FoldedDenials,
};
pub use error::BrokerError;
pub use hook_set::Stats;
pub use hooks::{ConnectionPolicy, Hook, Origin, Publish, Routing, SubscribeOutcome};
pub use identity::{Identity, Role, TokenDetails};
pub use in_process::{Delivery, Holder, InProcessClient, InProcessError};
pub use listener::Listener;
pub use memberships::{ClosedSessions, Memberships};
#[cfg(feature = "rumqttd-reference")]
pub use reference::start_plain_rumqttd;
pub use retained::RetainedConfig;
pub use signal::{SignalRefusal, SignalsConfig};
pub use staff::StaffRevocations;
pub use subscribe_limit::SubscriptionsConfig;
pub use tls::TlsError;

use connection::Shared;
use threads::GatewayThreads;
use transport::Transport;

/// A running broker core. Cheap to clone; every listener served from one `Broker` shares its
/// routing index, so a client on TCP and a client on WebSocket see each other's messages.
#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The gateway's own runtime (`mqtt.workers`), shut down when the last clone is dropped.
    /// Connections never hold it: only the host's handles do.
    threads: Option<Arc<GatewayThreads>>,
}

/// A broker about to start: its configuration, the plugin chains and the hooks. Made by
/// [`Broker::builder`]; [`BrokerBuilder::start`] starts it.
///
/// The broker's session memberships and staff revocations exist from here on
/// ([`BrokerBuilder::memberships`], [`BrokerBuilder::staff_revocations`]), so that chains and
/// hooks given to the builder can act on the same ones the broker keeps current.
pub struct BrokerBuilder {
    config: BrokerConfig,
    memberships: Memberships,
    staff_revocations: StaffRevocations,
    authentication: Option<AuthChain>,
    authorization: Option<AclChain>,
    hooks: Vec<Arc<dyn Hook>>,
}

impl BrokerBuilder {
    /// The configuration the broker will run with.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The session memberships the broker will keep ([`Broker::memberships`]), empty until
    /// someone joins.
    pub fn memberships(&self) -> &Memberships {
        &self.memberships
    }

    /// The staff revocations the broker will act on ([`Broker::staff_revocations`]), empty
    /// at first.
    pub fn staff_revocations(&self) -> &StaffRevocations {
        &self.staff_revocations
    }

    /// The authentication chain, instead of [`AuthChain::standard`] over the configuration and
    /// [`BrokerBuilder::staff_revocations`].
    pub fn authentication(self, chain: AuthChain) -> Self {
        Self {
            authentication: Some(chain),
            ..self
        }
    }

    /// The authorization chain, instead of [`AclChain::standard`] over the configuration and
    /// [`BrokerBuilder::memberships`].
    pub fn authorization(self, chain: AclChain) -> Self {
        Self {
            authorization: Some(chain),
            ..self
        }
    }

    /// Adds a hook after those already added; hooks are called in this order.
    pub fn hook(mut self, hook: Arc<dyn Hook>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Adds hooks, in order, after those already added.
    pub fn hooks(mut self, hooks: impl IntoIterator<Item = Arc<dyn Hook>>) -> Self {
        self.hooks.extend(hooks);
        self
    }

    /// Starts the broker, from within a tokio runtime. No socket is opened until a listener is
    /// served.
    pub fn start(self) -> Result<Broker, BrokerError> {
        let Self {
            config,
            memberships,
            staff_revocations,
            authentication,
            authorization,
            hooks,
        } = self;
        for rule in &config.acl.rules {
            rule.validate().map_err(BrokerError::Rule)?;
        }
        config
            .check()
            .map_err(|(key, reason)| BrokerError::Config(key, reason))?;
        let auth = match authentication {
            Some(chain) => chain,
            None => AuthChain::standard(&config.auth, staff_revocations.clone())?,
        };
        let acl =
            authorization.unwrap_or_else(|| AclChain::standard(&config.acl, memberships.clone()));
        let tls = tls::acceptor(&config.tls)?;
        // Connections and session-expiry timers are tokio tasks.
        tokio::runtime::Handle::try_current().map_err(|_| BrokerError::NoRuntime)?;
        let threads = GatewayThreads::start(config.workers)
            .map_err(BrokerError::Threads)?
            .map(Arc::new);
        let shared = Arc::new(Shared::new(
            config,
            auth,
            acl,
            memberships,
            staff_revocations,
            hooks,
        )?);
        upkeep::start(&shared);
        Ok(Broker {
            shared,
            tls,
            threads,
        })
    }
}

impl Broker {
    /// A broker to build over `config`: with nothing more, it authenticates with
    /// [`AuthChain::standard`], authorizes with [`AclChain::standard`] and has no hooks (so
    /// none of the chat pipeline's rules, [`chat::rules`], which courtchat's server registers).
    pub fn builder(config: BrokerConfig) -> BrokerBuilder {
        BrokerBuilder {
            memberships: Memberships::new(config.closed_sessions()),
            staff_revocations: StaffRevocations::new(),
            config,
            authentication: None,
            authorization: None,
            hooks: Vec::new(),
        }
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
        Stats {
            dropped_deliveries: self.shared.fanout.dropped(),
            refused_retained: self.shared.retained.refused(),
            ..self.shared.hooks.stats()
        }
    }

    /// Serves MQTT over plain TCP on an already-bound listener until `shutdown` resolves, then
    /// closes every connection it accepted and returns.
    pub async fn serve_tcp(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        self.serve(listener, shutdown, Listener::Tcp).await
    }

    /// Serves MQTT over WebSocket (path and limits from the configuration) until `shutdown`.
    pub async fn serve_websocket(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        self.serve(listener, shutdown, Listener::WebSocket).await
    }

    /// Serves MQTT over TLS with the configured certificate until `shutdown`.
    pub async fn serve_tls(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        self.serve(listener, shutdown, Listener::Tls).await
    }

    /// Serves MQTT over secure WebSocket (TLS, then the WebSocket upgrade) until `shutdown`.
    pub async fn serve_secure_websocket(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        self.serve(listener, shutdown, Listener::SecureWebSocket)
            .await
    }

    /// A client inside this process, as `identity` (authorized as a connection would be; see
    /// [`InProcessClient`]), with at most `receive_maximum` deliveries unacknowledged at once.
    pub fn in_process_client(
        &self,
        client_id: &str,
        identity: Identity,
        receive_maximum: u16,
    ) -> Result<InProcessClient, InProcessError> {
        InProcessClient::new(self.shared.clone(), client_id, identity, receive_maximum)
    }

    /// Whether a certificate is configured, i.e. whether the TLS listeners can be served.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// Accepts on `listener` on the gateway's own threads when it has them, else here.
    async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
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
        let shared = self.shared.clone();
        let Some(threads) = &self.threads else {
            return accept(shared, tls, listener, shutdown, kind).await;
        };
        // A socket is driven by the runtime that registered it, so the listener moves to the
        // gateway's and every socket it accepts is registered there.
        let listener = match listener.into_std() {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(error = %err, "cannot hand the listener to the gateway's threads");
                return;
            }
        };
        let serving = threads.handle().spawn(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => accept(shared, tls, listener, shutdown, kind).await,
                Err(err) => tracing::error!(error = %err, "cannot listen on the gateway's threads"),
            }
        });
        if let Err(err) = serving.await
            && err.is_panic()
        {
            std::panic::resume_unwind(err.into_panic());
        }
    }
}

/// Accepts connections until `shutdown`, each served in a task of its own, then closes them all
/// and waits for them.
async fn accept(
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    kind: Listener,
) {
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
        let shared = shared.clone();
        let stop = stop.clone();
        // What only the handshakes need is boxed and let go with them: a task keeps what it
        // captures for its whole life (issue 22: memory per connection).
        let socket = Box::new((stream, peer, tls.clone()));
        // Everything slow (TLS and WebSocket handshakes, waiting for CONNECT) happens in the
        // connection's own task, so one idle socket never delays the next accept.
        // The handshakes run boxed, freed once done: TLS's and WebSocket's futures would
        // otherwise stay in every connection's task for its whole life.
        let task = async move {
            let handshaken = Box::pin(async {
                let (stream, peer, tls) = *socket;
                let config = &shared.config;
                let handshake = tokio::select! {
                    _ = stop.cancelled() => return None,
                    handshake = timeout(config.connect_timeout, handshake(kind, stream, tls, config)) => handshake,
                };
                match handshake {
                    Ok(Ok(transport)) => Some(Box::new(connection::Accepted { transport, peer })),
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "handshake failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "handshake timed out");
                        None
                    }
                }
            });
            if let Some(accepted) = handshaken.await {
                connection::serve(accepted, kind, shared, stop).await;
            }
        };
        connections.spawn(task);
    }
    stop.cancel();
    connections.close();
    connections.wait().await;
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
        None if kind == Listener::Tcp => return Ok(Transport::Tcp(stream)),
        None => Box::new(stream),
    };
    match kind {
        Listener::Tcp | Listener::Tls => Ok(Transport::Stream(io)),
        Listener::InProcess => Err("no socket is accepted for in-process clients".to_owned()),
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
