//! testkit: boots the whole courtchat stack in-process for a test.
//!
//! Every end-to-end test starts a [`TestStack`]: the same [`courtchat::Server`] that
//! `courtchat serve` runs, on ephemeral loopback ports, over a fresh database (a temporary SQLite
//! file by default, or a new PostgreSQL database), stopped when the stack is dropped.
//!
//! Tests that need PostgreSQL call [`postgres_url`], which reads `COURTCHAT_TEST_POSTGRES_URL` and
//! returns `None`, after printing a notice, when it is not set: such a test then returns early
//! and passes, so the suite runs on a machine without PostgreSQL.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod mqtt;
pub mod relay;

use anyhow::Context;
use courtchat::{Addresses, Config, Listeners, Role, Server};
use sea_orm::{ConnectionTrait, Database};

/// The variable that points the suite at a PostgreSQL server, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`.
pub const POSTGRES_ENV: &str = "COURTCHAT_TEST_POSTGRES_URL";
/// `postgres` runs the tests that take [`TestDatabase::chosen`] (and [`TestStack::start`]) on
/// PostgreSQL instead of SQLite; needs [`POSTGRES_ENV`].
pub const DATABASE_ENV: &str = "COURTCHAT_TEST_DATABASE";

/// The PostgreSQL server to test against, or `None` (with a notice on stderr) when unset.
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "notice: {POSTGRES_ENV} is not set; skipping the PostgreSQL variant of this test"
            );
            None
        }
    }
}

/// Logs from the stack under test, shown for failing tests (`RUST_LOG` picks the level).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Set to `separate` to run the chat pipeline outside the server in every test stack.
pub const BRIDGE_MODE_ENV: &str = "COURTCHAT_TEST_BRIDGE";

/// The audit chain key of every test stack.
pub const TEST_AUDIT_KEY: &str = "courtchat-test-audit-key-not-for-production";

/// The HS256 secret of every test stack; fixed, so that a test can also mint a token by hand.
pub const TEST_TOKEN_SECRET: &str = "courtchat-test-secret-not-for-production-use";

fn broker_rule(role: Role, topic: &str) -> courtchat::StaticRule {
    courtchat::StaticRule {
        role: Some(role),
        username: None,
        client: None,
        access: courtchat::Access::Readwrite,
        topic: topic.to_owned(),
        effect: courtchat::Effect::Allow,
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written to a temporary directory.
pub struct TestCertificate {
    dir: tempfile::TempDir,
    /// The certificate in DER, for a client's trust store.
    pub der: Vec<u8>,
    /// The same certificate in PEM.
    pub pem: String,
}

impl TestCertificate {
    pub fn generate() -> anyhow::Result<Self> {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem())?;
        std::fs::write(
            dir.path().join("key.pem"),
            certified.signing_key.serialize_pem(),
        )?;
        Ok(Self {
            dir,
            der: certified.cert.der().to_vec(),
            pem: certified.cert.pem(),
        })
    }

    /// Points `config` at this certificate, which turns the TLS listeners on.
    pub fn configure(&self, config: &mut Config) {
        config.mqtt.tls.cert_file = self.dir.path().join("cert.pem");
        config.mqtt.tls.key_file = self.dir.path().join("key.pem");
    }

    /// A TLS client configuration that trusts only this certificate.
    pub fn client_config(
        &self,
    ) -> anyhow::Result<std::sync::Arc<tokio_rustls::rustls::ClientConfig>> {
        use tokio_rustls::rustls;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(self.der.clone()))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(std::sync::Arc::new(config))
    }
}

/// Node.js, the npm packages of `tests/js` and Chromium, for the MQTT.js tests.
pub struct JsClients {
    /// `tests/js`, where the scripts and their node_modules are.
    pub dir: std::path::PathBuf,
    pub chromium: std::path::PathBuf,
}

/// Set to 1 (CI does) to fail, instead of skip, when the MQTT.js tests cannot run.
pub const REQUIRE_JS_ENV: &str = "COURTCHAT_TEST_REQUIRE_JS";

/// The MQTT.js test environment, or `None` with a notice when part of it is missing (run
/// `npm ci --prefix tests/js` and install Chromium; `COURTCHAT_TEST_CHROMIUM` overrides its path).
pub fn js_clients() -> Option<JsClients> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    let chromium = std::env::var_os("COURTCHAT_TEST_CHROMIUM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    let missing = [
        (!node, "node is not on PATH"),
        (
            !dir.join("node_modules/mqtt").is_dir(),
            "tests/js has no node_modules (npm ci --prefix tests/js)",
        ),
        (!chromium.is_file(), "Chromium is not installed"),
    ]
    .into_iter()
    .filter_map(|(missing, what)| missing.then_some(what))
    .collect::<Vec<_>>();
    if missing.is_empty() {
        return Some(JsClients { dir, chromium });
    }
    if std::env::var(REQUIRE_JS_ENV).is_ok_and(|v| v == "1") {
        panic!(
            "{REQUIRE_JS_ENV}=1 but the MQTT.js tests cannot run: {}",
            missing.join("; ")
        );
    }
    eprintln!("notice: skipping the MQTT.js tests: {}", missing.join("; "));
    None
}

/// A database that exists only for one test.
pub enum TestDatabase {
    Sqlite { dir: tempfile::TempDir },
    Postgres { server_url: String, name: String },
}

impl TestDatabase {
    /// A new SQLite file in a temporary directory.
    pub fn sqlite() -> anyhow::Result<Self> {
        Ok(Self::Sqlite {
            dir: tempfile::tempdir().context("creating a temporary directory")?,
        })
    }

    /// The database this run of the tests is about: SQLite, or a new PostgreSQL database when
    /// `COURTCHAT_TEST_DATABASE=postgres` (which needs `COURTCHAT_TEST_POSTGRES_URL`), so that
    /// the same tests prove both stores (`scripts/test` runs the pipeline's tests both ways).
    pub async fn chosen() -> anyhow::Result<Self> {
        match std::env::var(DATABASE_ENV).as_deref() {
            Ok("postgres") => {
                let url = postgres_url().context(
                    "COURTCHAT_TEST_DATABASE=postgres needs COURTCHAT_TEST_POSTGRES_URL",
                )?;
                Self::postgres(&url).await
            }
            Ok("sqlite") | Err(_) => Self::sqlite(),
            Ok(other) => anyhow::bail!("COURTCHAT_TEST_DATABASE={other}: sqlite or postgres"),
        }
    }

    /// A new, empty database on the PostgreSQL server at `server_url`.
    pub async fn postgres(server_url: &str) -> anyhow::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let name = format!(
            "courtchat_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = Database::connect(server_url)
            .await
            .context("connecting to PostgreSQL")?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .context("creating a test database")?;
        admin.close().await?;
        Ok(Self::Postgres {
            server_url: server_url.to_owned(),
            name,
        })
    }

    /// The `database.url` for this database.
    pub fn url(&self) -> String {
        match self {
            Self::Sqlite { dir } => {
                format!("sqlite://{}", dir.path().join("courtchat.db").display())
            }
            Self::Postgres { server_url, name } => {
                let mut url = url::Url::parse(server_url)
                    .expect("the PostgreSQL URL was parsed when the database was created");
                url.set_path(name);
                url.to_string()
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Self::Postgres { server_url, name } = self {
            // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived
            // thread with its own runtime removes the database.
            let (server_url, sql) = (
                server_url.clone(),
                format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            );
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let admin = Database::connect(&server_url).await?;
                    admin.execute_unprepared(&sql).await?;
                    admin.close().await?;
                    anyhow::Ok(())
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("warning: could not drop test database {name}");
            }
        }
    }
}

/// A running courtchat stack.
pub struct TestStack {
    /// The pipeline running outside the server (COURTCHAT_TEST_BRIDGE=separate).
    pipeline: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    server: Option<Server>,
    /// In-process submissions to the pipeline, wherever it runs.
    commands: Option<courtchat::Commands>,
    addresses: Addresses,
    config: Config,
    // Declared last: dropped after the server has released the database.
    _database: TestDatabase,
}

impl TestStack {
    /// The whole stack on the chosen database ([`TestDatabase::chosen`], SQLite unless told
    /// otherwise) with the default configuration.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(TestDatabase::chosen().await?, |_| {}).await
    }

    /// The whole stack on `database`, after `configure` has adjusted the test configuration.
    pub async fn start_with(
        database: TestDatabase,
        configure: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        init_tracing();
        let mut config = Config::default();
        let ephemeral = SocketAddr::from(([127, 0, 0, 1], 0));
        config.mqtt.tcp.listen = ephemeral;
        config.mqtt.websocket.listen = ephemeral;
        config.mqtt.tls.listen = ephemeral;
        config.mqtt.tls.websocket_listen = ephemeral;
        config.admin.listen = ephemeral;
        config.database.url = database.url();
        config.mqtt.connect_timeout = Duration::from_secs(5);
        config.mqtt.auth.secret = TEST_TOKEN_SECRET.to_owned();
        config.audit.key = TEST_AUDIT_KEY.to_owned();
        // Tests run side by side on two shared cores, where a submission can wait longer than
        // the production default before it is decided; only the tests of overload refuse
        // submissions as busy (they set their own delay).
        config.bridge.max_queue_delay_ms = 10_000;
        // Tests of plain MQTT behaviour use topics under sandbox/, outside the protocol.
        config.mqtt.acl.rules = [
            Role::Applicant,
            Role::Agent,
            Role::Supervisor,
            Role::Service,
        ]
        .into_iter()
        .map(|role| broker_rule(role, "sandbox/#"))
        .collect();
        configure(&mut config);
        config.validate()?;

        // COURTCHAT_TEST_BRIDGE=separate runs the chat pipeline outside the server, connected
        // over MQTT as `courtchat bridge` is, so the same tests cover both ways to run it.
        let separate = config.bridge.in_process
            && std::env::var(BRIDGE_MODE_ENV).is_ok_and(|mode| mode == "separate");
        Self::launch(config, separate, database).await
    }

    /// Starts the server (and the pipeline beside it when `separate`) over `database`.
    async fn launch(
        mut config: Config,
        separate: bool,
        database: TestDatabase,
    ) -> anyhow::Result<Self> {
        if separate {
            config.bridge.in_process = false;
        }
        let listeners = Listeners::bind(&config).await?;
        let server = Server::start(config.clone(), listeners).await?;
        let mut commands = server.commands();
        let pipeline = if separate {
            let pipeline = courtchat::pipeline(&config, server.store()).await?;
            commands = Some(pipeline.commands());
            let mut ready = pipeline.readiness();
            let link = courtchat::pipeline_link(&config, server.addresses().mqtt_tcp);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(pipeline.run(link, async move {
                let _ = stopped.await;
            }));
            tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|ready| *ready))
                .await
                .context("the separate chat pipeline did not become ready")??;
            Some((stop, task))
        } else {
            None
        };
        // A stack is ready when everything in it is: the pipeline too, or a test's first
        // submission could reach nobody.
        tokio::time::timeout(Duration::from_secs(30), server.pipeline_ready())
            .await
            .context("the chat pipeline did not become ready")?;
        Ok(Self {
            addresses: server.addresses(),
            commands,
            pipeline,
            server: Some(server),
            config,
            _database: database,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A token this stack accepts for `subject` in `role`, valid for an hour.
    pub fn token(&self, subject: &str, role: Role) -> String {
        self.token_for(subject, role, Duration::from_secs(3600))
    }

    /// A token valid for `ttl`.
    pub fn token_for(&self, subject: &str, role: Role, ttl: Duration) -> String {
        courtchat::mint_token(&self.config, subject, role, ttl)
            .expect("the test stack's secret signs tokens")
    }

    /// A token valid for an hour from `issued_at`, which it carries as its `iat`.
    pub fn token_issued_at(&self, subject: &str, role: Role, issued_at: SystemTime) -> String {
        courtchat::mint_token_at(
            &self.config,
            subject,
            role,
            Duration::from_secs(3600),
            issued_at,
        )
        .expect("the test stack's secret signs tokens")
    }

    /// Who belongs to which session, as the gateway sees it. The chat pipeline keeps it
    /// current through the protocol; tests of the gateway alone join and remove members
    /// directly.
    pub fn memberships(&self) -> &courtchat::Memberships {
        self.server
            .as_ref()
            .expect("the stack is running until shutdown consumes it")
            .memberships()
    }

    /// Staff whose older tokens the gateway refuses; revoking a subject also ends its live
    /// connections, as the admin API does when it disables staff or lowers their role.
    pub fn staff_revocations(&self) -> &courtchat::StaffRevocations {
        self.server
            .as_ref()
            .expect("the stack is running until shutdown consumes it")
            .staff_revocations()
    }

    /// A link for a chat pipeline the test runs itself to this stack's gateway, from inside
    /// the process (no socket), as `courtchat serve` links its own.
    pub fn in_process_link(&self) -> anyhow::Result<courtchat::BrokerLink> {
        Ok(self
            .server
            .as_ref()
            .expect("the stack is running until shutdown consumes it")
            .in_process_link(&self.config)
            .context("the gateway is running")??)
    }

    /// The gateway's denial counters.
    pub fn broker_stats(&self) -> courtchat::Stats {
        self.server
            .as_ref()
            .expect("the stack is running until shutdown consumes it")
            .broker_stats()
    }

    pub fn mqtt_tcp_addr(&self) -> SocketAddr {
        self.addresses.mqtt_tcp
    }

    /// The MQTT-over-TLS listener, if the stack was started with a certificate.
    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.addresses.mqtt_tls
    }

    /// `wss://127.0.0.1:PORT/mqtt`, if the stack was started with a certificate.
    pub fn mqtt_wss_url(&self) -> Option<String> {
        self.addresses
            .mqtt_wss
            .map(|addr| format!("wss://{addr}{}", self.config.mqtt.websocket.path))
    }

    /// `ws://127.0.0.1:PORT/mqtt`
    pub fn mqtt_ws_url(&self) -> String {
        format!(
            "ws://{}{}",
            self.addresses.mqtt_ws, self.config.mqtt.websocket.path
        )
    }

    /// `http://127.0.0.1:PORT{path}` on the admin API.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addresses.admin)
    }

    /// Submits actions to the stack's chat pipeline as an in-process caller (the admin API)
    /// does; none when the test configured the pipeline out of the stack.
    pub fn commands(&self) -> Option<courtchat::Commands> {
        self.commands.clone()
    }

    /// The stack's database.
    pub fn store(&self) -> &store::Store {
        self.server
            .as_ref()
            .expect("the stack is running until shutdown consumes it")
            .store()
    }

    /// Stops the stack and waits until every listener, connection and the database are closed.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    /// Stops the stack as [`TestStack::shutdown`] does and starts it again on the same database
    /// with the same configuration, on new ports: what the server rebuilds from the record.
    pub async fn restart(mut self) -> anyhow::Result<Self> {
        let separate = self.pipeline.is_some();
        self.stop().await;
        Self::launch(self.config, separate, self._database).await
    }

    async fn stop(&mut self) {
        if let Some((stop, task)) = self.pipeline.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}
