//! `courtchat serve` as a child process of the benchmark, on ephemeral ports with its own
//! scratch directory, so that its memory and CPU are its own and can be read from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use courtchat::{Config, Role};

/// The server under test's own arguments.
#[derive(clap::Args, Default)]
pub struct ServerArgs {
    /// Database for the server under test; a fresh SQLite file in a scratch directory by
    /// default. With PostgreSQL, give an empty database.
    #[arg(long, value_name = "URL")]
    pub(crate) database_url: Option<String>,
}

/// `courtchat serve` in a child process, on ephemeral ports, with its own scratch directory.
pub struct ChildServer {
    child: Child,
    scratch: PathBuf,
    /// The child's configuration (also what this process signs tokens with).
    pub config: Config,
    pub mqtt: SocketAddr,
}

impl ChildServer {
    /// Starts the server and waits until it is ready (`/readyz` answers 200).
    pub async fn start(
        mut config: Config,
        args: &ServerArgs,
        tune: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let scratch =
            std::env::temp_dir().join(format!("courtchat-bench-{}-serve", std::process::id()));
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        config.mqtt.tcp.listen = free_port()?;
        config.mqtt.websocket.listen = free_port()?;
        config.admin.listen = free_port()?;
        config.mqtt.tls.cert_file = PathBuf::new();
        config.database.url = match &args.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", scratch.join("bench.db").display()),
        };
        config.mqtt.auth.secret = String::new();
        config.mqtt.auth.secret_file = scratch.join("token-secret");
        config.audit.key = String::new();
        config.audit.key_file = scratch.join("audit-key");
        config.log.filter = "warn".to_owned();
        tune(&mut config);
        // The secret is created here, before the child reads it, so both sign with one key.
        broker::TokenKeys::load(&config.mqtt.auth)?;
        let file = scratch.join("courtchat.toml");
        std::fs::write(&file, toml::to_string(&config)?)?;
        let log = std::fs::File::create(scratch.join("serve.log"))?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("--config")
            .arg(&file)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The file says everything; COURTCHAT_* variables of this shell must not override it.
        for (name, _) in std::env::vars() {
            if name.starts_with("COURTCHAT_") {
                command.env_remove(name);
            }
        }
        let child = command.spawn().context("starting `courtchat serve`")?;
        let mut server = Self {
            child,
            scratch,
            mqtt: config.mqtt.tcp.listen,
            config,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "`courtchat serve` exited with {status}: {}",
                    self.log_tail()
                );
            }
            if ready(self.config.admin.listen).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "`courtchat serve` not ready within 60 s: {}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.scratch.join("serve.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// The server's process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server as a benchmark target whose clients sign in with `role`.
    pub fn target(&self, role: Role) -> anyhow::Result<bench::Target> {
        let keys = self.tokens()?;
        Ok(bench::Target {
            name: "courtchat".to_owned(),
            addr: self.mqtt,
            credentials: Some(Box::new(move |client_id: &str| {
                let token = keys
                    .mint(
                        client_id,
                        role,
                        Duration::from_secs(6 * 3600),
                        std::time::SystemTime::now(),
                    )
                    .unwrap_or_default();
                (client_id.to_owned(), token)
            })),
            pid: Some(self.pid()),
        })
    }

    /// Reads the server's resident memory.
    pub fn memory_probe(&self) -> bench::MemoryProbe {
        let pid = self.child.id();
        Box::new(move || bench::resident_bytes(pid))
    }

    /// Opens the server's database from this process.
    pub async fn store(&self) -> anyhow::Result<store::Store> {
        Ok(store::Store::connect(&self.config.database).await?)
    }

    /// Mints tokens with the server's key.
    pub fn tokens(&self) -> anyhow::Result<Arc<broker::TokenKeys>> {
        Ok(Arc::new(broker::TokenKeys::load(&self.config.mqtt.auth)?))
    }

    /// SIGTERM, then wait for the clean exit; removes the scratch directory.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Drop kills what did not exit and removes the scratch directory.
    }
}

/// A benchmark that fails half way must not leave a server running behind it.
impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A port free right now on loopback. Another process could take it before the child binds it;
/// the child then fails to start with a message naming the port, and the run is repeated.
pub(crate) fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

async fn ready(admin: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(admin).await else {
        return false;
    };
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    answer.starts_with(b"HTTP/1.1 200")
}

/// Bytes as MiB with one decimal, or `?` when unknown.
pub(crate) fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("?".to_owned(), |b| format!("{:.1}", b as f64 / 1048576.0))
}

pub(crate) fn write_json(path: Option<&Path>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Room for the run's connections, and a rate limit above what the run's senders keep to.
pub(crate) fn tune_for_chat(config: &mut Config, chat: &bench::ChatConfig) {
    let connections = chat.sessions * (1 + chat.agents);
    config.mqtt.max_connections = config.mqtt.max_connections.max(connections + 64);
    // Senders keep to R per second; the limiter must not be what is measured.
    config.bridge.rate_per_second = config.bridge.rate_per_second.max(chat.rate * 4.0);
    config.bridge.rate_burst = config.bridge.rate_burst.max(chat.rate * 8.0);
}

pub(crate) fn chat_target(
    server: &ChildServer,
    store: store::Store,
) -> anyhow::Result<bench::ChatTarget> {
    let keys = server.tokens()?;
    Ok(bench::ChatTarget {
        name: "courtchat".to_owned(),
        addr: server.mqtt,
        token: Box::new(move |subject, role| {
            keys.mint(
                subject,
                Role::from(role),
                Duration::from_secs(6 * 3600),
                std::time::SystemTime::now(),
            )
            .unwrap_or_default()
        }),
        store,
        pid: Some(server.pid()),
    })
}
