//! `courtchat serve`: binds every listener, opens the store and runs the broker and the admin API
//! in one process until told to stop.
//!
//! Binding is separate from starting so that a caller (the binary, or `testkit`) can bind port 0,
//! learn the real addresses and then start; and so that a port already in use is reported before
//! anything else happens.

use std::io;
use std::net::SocketAddr;

use crate::serve_error::ServeError;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Config;

/// Where to connect to a listener bound to `addr` from this machine.
pub(crate) fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}

/// Verifies the audit chain, and the conversation tables against it, now and then every
/// `every`, and reports the outcome in `metrics` (an alert watches it).
async fn verify_periodically(
    audit: Arc<bridge::AuditTrail>,
    store: store::Store,
    metrics: Arc<telemetry::Metrics>,
    every: std::time::Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match audit.verify_with_own_key(&store).await {
            Ok(verification) => {
                let intact = verification.is_intact();
                if !intact {
                    tracing::error!(first_broken = ?verification.first_broken, first_difference = ?verification.first_difference, "the audit chain does not verify");
                }
                admin_api::metrics::verified(&metrics, intact);
            }
            Err(error) => tracing::warn!(%error, "the audit chain could not be verified now"),
        }
    }
}

/// Purges, every `every`, the content of closed sessions past their retention policy (the
/// first run one period after start, so that a restart loop does not purge at each start).
/// A failed run is logged and tried again at the next tick.
async fn purge_periodically(retention: bridge::Retention, every: std::time::Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match retention.run(chrono::Utc::now(), false).await {
            Ok(report) if !report.purged.is_empty() || !report.held.is_empty() => {
                tracing::info!(
                    purged = report.purged.len(),
                    held = report.held.len(),
                    "retention ran"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "retention could not run now"),
        }
    }
}

/// Loads into `memberships` the participants of the closed sessions its window still holds
/// (`mqtt.closed_sessions_kept`, `mqtt.closed_session_access_secs` counted from each session's
/// `closed_at`), closing them in the order they closed, so that the oldest is forgotten first.
async fn restore_closed_sessions(
    store: &store::Store,
    memberships: &broker::Memberships,
) -> Result<(), ServeError> {
    let window = memberships.closed_window();
    let now = chrono::Utc::now();
    let since = window
        .access
        .and_then(|access| chrono::TimeDelta::from_std(access).ok())
        .and_then(|access| now.checked_sub_signed(access));
    let kept = u64::try_from(window.kept).unwrap_or(u64::MAX);
    let started = tokio::time::Instant::now();
    for (session, closed_at, participants) in store.recently_closed(kept, since).await? {
        for participant in participants {
            memberships.join(&session, &participant.subject, participant.role.into());
        }
        // Its access is counted from when it closed, on the clock the window runs on (which
        // reaches back before its own start on the platforms we run on; elsewhere, from now).
        let ago = (now - closed_at).to_std().unwrap_or_default();
        memberships.close_at(&session, started.checked_sub(ago).unwrap_or(started));
    }
    Ok(())
}

/// The origins of the pages the admin listener at `admin` serves (the desk, the kiosk page),
/// as a browser on this machine sends them: by address, and as `localhost` for loopback.
/// Behind a proxy the public origin is the operator's to list.
pub(crate) fn page_origins(admin: SocketAddr) -> Vec<String> {
    let here = loopback(admin);
    let mut origins = vec![format!("http://{here}")];
    if here.ip().is_loopback() {
        origins.push(format!("http://localhost:{}", here.port()));
    }
    origins
}

/// The browser pages the admin listener at `admin` serves, with the address a browser on this
/// machine opens them at: the landing page, the agent desk and the applicant page. The
/// start-up log prints them, so that whoever started the server knows where to go.
pub(crate) fn page_urls(admin: SocketAddr) -> [(&'static str, String); 3] {
    let here = loopback(admin);
    [
        ("home", format!("http://{here}/")),
        ("desk", format!("http://{here}/desk/")),
        ("kiosk", format!("http://{here}/kiosk/")),
    ]
}

/// The sockets a server listens on, bound but not yet served.
pub struct Listeners {
    mqtt_tcp: TcpListener,
    mqtt_ws: TcpListener,
    /// MQTT over TLS and over secure WebSocket, when a certificate is configured.
    mqtt_tls: Option<(TcpListener, TcpListener)>,
    admin: TcpListener,
}

/// Where a running server can be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addresses {
    pub mqtt_tcp: SocketAddr,
    pub mqtt_ws: SocketAddr,
    /// MQTT over TLS, when a certificate is configured.
    pub mqtt_tls: Option<SocketAddr>,
    /// MQTT over secure WebSocket, when a certificate is configured.
    pub mqtt_wss: Option<SocketAddr>,
    pub admin: SocketAddr,
}

impl Listeners {
    /// Binds every address in `config`; the first failure is reported with the setting to change.
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        let tls = &config.mqtt.tls;
        let mqtt_tls = if tls.enabled() {
            Some((
                bind(
                    tls.listen,
                    "MQTT TLS",
                    "mqtt.tls.listen",
                    "COURTCHAT_MQTT__TLS__LISTEN",
                )
                .await?,
                bind(
                    tls.websocket_listen,
                    "MQTT secure WebSocket",
                    "mqtt.tls.websocket_listen",
                    "COURTCHAT_MQTT__TLS__WEBSOCKET_LISTEN",
                )
                .await?,
            ))
        } else {
            None
        };
        Ok(Self {
            mqtt_tls,
            mqtt_tcp: bind(
                config.mqtt.tcp.listen,
                "MQTT TCP",
                "mqtt.tcp.listen",
                "COURTCHAT_MQTT__TCP__LISTEN",
            )
            .await?,
            mqtt_ws: bind(
                config.mqtt.websocket.listen,
                "MQTT WebSocket",
                "mqtt.websocket.listen",
                "COURTCHAT_MQTT__WEBSOCKET__LISTEN",
            )
            .await?,
            admin: bind(
                config.admin.listen,
                "admin HTTP",
                "admin.listen",
                "COURTCHAT_ADMIN__LISTEN",
            )
            .await?,
        })
    }

    pub fn addresses(&self) -> io::Result<Addresses> {
        Ok(Addresses {
            mqtt_tcp: self.mqtt_tcp.local_addr()?,
            mqtt_ws: self.mqtt_ws.local_addr()?,
            mqtt_tls: self
                .mqtt_tls
                .as_ref()
                .map(|(tls, _)| tls.local_addr())
                .transpose()?,
            mqtt_wss: self
                .mqtt_tls
                .as_ref()
                .map(|(_, wss)| wss.local_addr())
                .transpose()?,
            admin: self.admin.local_addr()?,
        })
    }
}

async fn bind(
    addr: SocketAddr,
    what: &'static str,
    key: &'static str,
    env: &'static str,
) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => ServeError::PortInUse {
                port: addr.port(),
                what,
                key,
                env,
                addr,
            },
            _ => ServeError::Bind { addr, key, source },
        })
}

/// A server that is up. Dropping it stops it without waiting; [`Server::shutdown`] stops it and
/// waits until every listener and connection has closed and the database is closed.
pub struct Server {
    addresses: Addresses,
    stop: CancellationToken,
    tasks: TaskTracker,
    store: store::Store,
    /// Taken at shutdown: dropping the broker drops the audit hook, which lets the audit writer
    /// drain its queue and finish.
    broker: Option<broker::Broker>,
    memberships: broker::Memberships,
    staff_revocations: broker::StaffRevocations,
    audit_writer: Option<tokio::task::JoinHandle<()>>,
    pipeline_ready: Option<tokio::sync::watch::Receiver<bool>>,
    /// In-process submissions to the pipeline, when it runs inside this server.
    commands: Option<bridge::Commands>,
    failure: tokio::sync::mpsc::Receiver<ServeError>,
}

impl Server {
    /// Opens (and migrates) the database, then serves every listener.
    pub async fn start(config: Config, listeners: Listeners) -> Result<Self, ServeError> {
        let addresses = listeners
            .addresses()
            .map_err(|source| ServeError::Listener {
                what: "any",
                source,
            })?;
        let store = store::Store::open(&config.database).await?;
        let participants = store.active_participants().await?;
        // Denials go into the tamper-evident audit trail, through a hook and one writer task.
        let audit = Arc::new(crate::audit::open_trail(&store, &config.audit).await?);
        let metrics = Arc::new(telemetry::Metrics::new()?);
        let (recorder, writer) = bridge::AuditRecorder::new(audit.clone(), Some(metrics.clone()));
        let audit_writer = tokio::spawn(writer);
        let hooks: Vec<Arc<dyn broker::Hook>> = vec![
            Arc::new(crate::audit::DenialHook(recorder)),
            Arc::new(crate::metrics::MetricsHook::new(metrics.clone())),
        ];
        let mut mqtt = config.mqtt.clone();
        // The desk and kiosk pages this server serves may always open MQTT over WebSocket, and
        // by default no other page may: configured origins add to theirs.
        for origin in page_origins(addresses.admin) {
            let allowed = &mut mqtt.websocket.allowed_origins;
            if !allowed.contains(&origin) {
                allowed.push(origin);
            }
        }
        // The chat pipeline's rules at the gateway (the membership feed, the submission
        // stamp, the service queue) come first: what the audit and metrics hooks see of a
        // publish is what the pipeline gets.
        let builder = broker::Broker::builder(mqtt);
        let chat = broker::chat::rules(builder.memberships());
        let broker = builder.hooks(chat).hooks(hooks).start()?;
        // Who belongs to which open session, before the first client can connect.
        let memberships = broker.memberships().clone();
        let staff_revocations = broker.staff_revocations().clone();
        // Staff disabled or demoted earlier stay so across restarts, and so do signed-out tokens.
        staff_revocations.load(store.staff_revocations().await?);
        staff_revocations.load_ended(store.ended_tokens(crate::staff::unix_now()).await?);
        let tokens: Arc<dyn admin_api::Tokens> = Arc::new(crate::staff::StaffTokens {
            keys: broker::TokenKeys::load(&config.mqtt.auth)?,
            revocations: staff_revocations.clone(),
        });
        for participant in participants {
            memberships.join(
                &participant.session_id,
                &participant.subject,
                participant.role.into(),
            );
        }
        // Closed sessions keep their participants' access (the survey, resync) across a restart
        // for as long as the window would have kept them had the server run on.
        restore_closed_sessions(&store, &memberships).await?;

        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        // A listener that fails reports here, and the process stops rather than run half-deaf.
        let (fail_tx, failure) = tokio::sync::mpsc::channel(3);

        tracing::info!(listener = "mqtt-tcp", addr = %addresses.mqtt_tcp, "listening");
        tasks.spawn({
            let (broker, stop) = (broker.clone(), stop.clone());
            async move {
                broker
                    .serve_tcp(listeners.mqtt_tcp, stop.cancelled_owned())
                    .await
            }
        });
        tracing::info!(listener = "mqtt-websocket", addr = %addresses.mqtt_ws, path = %config.mqtt.websocket.path, "listening");
        tasks.spawn({
            let (broker, stop) = (broker.clone(), stop.clone());
            async move {
                broker
                    .serve_websocket(listeners.mqtt_ws, stop.cancelled_owned())
                    .await
            }
        });
        if let (Some((tls, wss)), Some(tls_addr), Some(wss_addr)) =
            (listeners.mqtt_tls, addresses.mqtt_tls, addresses.mqtt_wss)
        {
            tracing::info!(listener = "mqtt-tls", addr = %tls_addr, "listening");
            tracing::info!(listener = "mqtt-secure-websocket", addr = %wss_addr, path = %config.mqtt.websocket.path, "listening");
            tasks.spawn({
                let (broker, stop) = (broker.clone(), stop.clone());
                async move { broker.serve_tls(tls, stop.cancelled_owned()).await }
            });
            tasks.spawn({
                let (broker, stop) = (broker.clone(), stop.clone());
                async move {
                    broker
                        .serve_secure_websocket(wss, stop.cancelled_owned())
                        .await
                }
            });
        }
        if config.audit.verify_every_secs > 0 {
            let every = std::time::Duration::from_secs(config.audit.verify_every_secs);
            let (audit, store, metrics) = (audit.clone(), store.clone(), metrics.clone());
            let stop = stop.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = verify_periodically(audit, store, metrics, every) => {}
                }
            });
        }
        if config.retention.run_every_secs > 0 {
            let every = std::time::Duration::from_secs(config.retention.run_every_secs);
            // The same trail as the pipeline's, so that their appends take turns in memory.
            let retention =
                bridge::Retention::new(store.clone(), audit.clone(), config.retention.clone())
                    .with_metrics(metrics.clone());
            let stop = stop.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = purge_periodically(retention, every) => {}
                }
            });
        }
        let mut pipeline_ready = None;
        let mut commands = None;
        if config.bridge.in_process {
            // The pipeline is a client of this gateway, as it is when it runs on its own, but
            // reached by function calls rather than over a socket (`broker::InProcessClient`).
            let link = crate::in_process_link(&broker, &config)?;
            let pipeline =
                bridge::Pipeline::new(store.clone(), audit.clone(), config.bridge.clone())
                    .with_metrics(metrics.clone());
            pipeline_ready = Some(pipeline.readiness());
            commands = Some(pipeline.commands());
            let stop = stop.clone();
            tasks.spawn(async move { pipeline.run(link, stop.cancelled_owned()).await });
        }
        tracing::info!(listener = "admin-http", addr = %addresses.admin, "listening");
        for (page, url) in page_urls(addresses.admin) {
            tracing::info!(page, %url, "page");
        }
        let oidc = admin_api::OidcSignIn::new(&config.admin.oidc)
            .map_err(|err| ServeError::Oidc(err.to_string()))?
            .map(Arc::new);
        tasks.spawn({
            let state = admin_api::AdminState {
                store: store.clone(),
                pipeline_ready: pipeline_ready.clone(),
                audit: audit.clone(),
                tokens: tokens.clone(),
                login: Arc::new(admin_api::LoginSettings::new(&config.admin)),
                applicants: Arc::new(admin_api::ApplicantSettings::new(&config.admin)),
                gate: Arc::new(crate::staff::StaffGate(staff_revocations.clone())),
                commands: commands.clone(),
                metrics: Some(metrics.clone()),
                http: Arc::new(admin_api::HttpSettings::new(&config.admin)),
                web: Arc::new(admin_api::web::WebSettings {
                    mqtt_url: config.admin.mqtt_websocket_url.clone(),
                    mqtt_port: addresses.mqtt_ws.port(),
                    mqtt_path: config.mqtt.websocket.path.clone(),
                    kiosk_reset_secs: config.admin.kiosk_reset_secs,
                    kiosk_idle_secs: config.admin.kiosk_idle_secs,
                    kiosk_idle_warning_secs: config.admin.kiosk_idle_warning_secs,
                    password_sign_in: config.admin.password_sign_in,
                    provider_sign_in: oidc.is_some(),
                }),
                oidc,
            };
            let stop = stop.clone();
            async move {
                if let Err(source) =
                    admin_api::serve(listeners.admin, state, stop.clone().cancelled_owned()).await
                {
                    let _ = fail_tx
                        .send(ServeError::Listener {
                            what: "admin HTTP",
                            source,
                        })
                        .await;
                    stop.cancel();
                }
            }
        });
        tasks.close();

        Ok(Self {
            addresses,
            stop,
            tasks,
            store,
            broker: Some(broker),
            memberships,
            staff_revocations,
            audit_writer: Some(audit_writer),
            pipeline_ready,
            commands,
            failure,
        })
    }

    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// Submits actions to the chat pipeline from inside the process (the admin API); none when
    /// the pipeline runs as its own process.
    pub fn commands(&self) -> Option<bridge::Commands> {
        self.commands.clone()
    }

    pub fn store(&self) -> &store::Store {
        &self.store
    }

    /// Resolves once the in-process chat pipeline receives submissions (at once if it runs
    /// elsewhere). `/readyz` answers 503 until then.
    pub async fn pipeline_ready(&self) {
        if let Some(mut ready) = self.pipeline_ready.clone() {
            let _ = ready.wait_for(|ready| *ready).await;
        }
    }

    /// Who belongs to which session, as the gateway's authorizer sees it.
    pub fn memberships(&self) -> &broker::Memberships {
        &self.memberships
    }

    /// Staff whose tokens issued before a given time the gateway refuses; revoking a subject
    /// also ends its live connections at once.
    pub fn staff_revocations(&self) -> &broker::StaffRevocations {
        &self.staff_revocations
    }

    /// A link for a chat pipeline to this server's gateway from inside the process, as
    /// `serve` gives its own pipeline (for a pipeline run beside a server with
    /// `bridge.in_process = false`, as tests restart one).
    pub fn in_process_link(
        &self,
        config: &crate::Config,
    ) -> Option<Result<bridge::BrokerLink, broker::InProcessError>> {
        let broker = self.broker.as_ref()?;
        Some(crate::in_process_link(broker, config))
    }

    /// The gateway's denial counters.
    pub fn broker_stats(&self) -> broker::Stats {
        self.broker
            .as_ref()
            .map(broker::Broker::stats)
            .unwrap_or_default()
    }

    /// Resolves when a listener fails; the server is then already stopping.
    pub async fn failed(&mut self) -> ServeError {
        match self.failure.recv().await {
            Some(err) => err,
            None => std::future::pending().await,
        }
    }

    /// Stops accepting, closes every connection, waits for the tasks and closes the database.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        self.tasks.wait().await;
        // With the connections gone, nothing records denials any more: let the audit writer
        // write what is queued before the database closes.
        self.broker.take();
        if let Some(writer) = self.audit_writer.take()
            && writer.await.is_err()
        {
            tracing::error!("the audit writer failed");
        }
        self.store.close().await;
        tracing::info!("stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_origins_follow_the_admin_listener() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            page_origins(local),
            ["http://127.0.0.1:8080", "http://localhost:8080"]
        );
        let any: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        assert_eq!(
            page_origins(any),
            ["http://127.0.0.1:9000", "http://localhost:9000"]
        );
        let lan: SocketAddr = "192.0.2.7:8080".parse().unwrap();
        assert_eq!(page_origins(lan), ["http://192.0.2.7:8080"]);
    }

    #[test]
    fn the_pages_addresses_are_where_a_browser_here_finds_them() {
        let any: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        let urls: Vec<String> = page_urls(any).into_iter().map(|(_, url)| url).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:9000/",
                "http://127.0.0.1:9000/desk/",
                "http://127.0.0.1:9000/kiosk/"
            ]
        );
    }
}
