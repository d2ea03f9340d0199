//! `courtchat bench`: starts what is measured, runs a scenario from the `bench` crate, prints a
//! table and writes JSON. The scenarios themselves live in `bench`.
//!
//! `relay` runs courtchat's gateway in this process (as issue 3 measured it), beside plain
//! rumqttd and any broker given with `--against`. The protocol scenarios (`chat`,
//! `connections`, `soak`) run `courtchat serve` as a child process on ephemeral ports, so that
//! its memory is its own and can be read from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use courtchat::{Config, Role};

use crate::bench_brokers::{Which, fanout_cmd, relay_cmd};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// One publisher, several subscribers, one non-persisted topic, QoS 1: courtchat's gateway
    /// (started in this process on ephemeral ports), plain rumqttd (likewise) and every broker
    /// given with --against.
    Relay {
        /// Messages to publish.
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Payload bytes per message (at least 16).
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value_t = 3)]
        subscribers: usize,
        /// Publish at this many messages per second instead of as fast as possible.
        #[arg(long)]
        rate: Option<u32>,
        /// Another broker to measure, as NAME=HOST:PORT or NAME=mqtt://HOST:PORT (MQTT 3.1.1
        /// over TCP, anonymous access). Repeatable.
        #[arg(
            long,
            value_name = "NAME=HOST:PORT",
            default_value = "mosquitto=127.0.0.1:1883"
        )]
        against: Vec<String>,
        /// Leave plain rumqttd out.
        #[arg(long)]
        no_rumqttd: bool,
        /// Also write the reports as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
    /// Chat's traffic shape without chat's protocol: G groups of M clients on one topic each
    /// (QoS 1, nothing stored); the first member publishes R messages a second and the second
    /// answers each. Measures what the machine and this load generator carry at all for chat's
    /// shape, through courtchat's gateway (in this process), plain rumqttd and --against brokers.
    Fanout {
        /// G: groups (chat's sessions).
        #[arg(long, default_value_t = 1000)]
        groups: usize,
        /// M: clients per group (chat's applicant and agents), at least 2.
        #[arg(long, default_value_t = 3)]
        members: usize,
        /// R: messages per second from each group's first member.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// T: seconds of traffic.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Payload bytes per message (at least 17).
        #[arg(long, default_value_t = 100)]
        payload: usize,
        #[arg(
            long,
            value_name = "NAME=HOST:PORT",
            default_value = "mosquitto=127.0.0.1:1883"
        )]
        against: Vec<String>,
        /// Leave plain rumqttd out.
        #[arg(long)]
        no_rumqttd: bool,
        /// Leave courtchat's gateway out (measure only the other brokers).
        #[arg(long)]
        no_courtchat: bool,
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
    /// Chat-shaped traffic through the real protocol against `courtchat serve` (a child
    /// process): N sessions of one applicant and K agents; applicants send R messages per second
    /// for T seconds and the lock-holding agent answers each. Verifies loss, duplicates and
    /// order at every participant against the database.
    Chat {
        /// N: sessions.
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        /// K: agents per session.
        #[arg(long, default_value_t = 2)]
        agents: usize,
        /// R: messages per second per applicant.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// T: seconds of traffic.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// B: message body bytes.
        #[arg(long, default_value_t = 100)]
        body: usize,
        /// More is offered than the server can store: `busy` refusals are expected (and
        /// reported, with the latency of what was accepted), not a failure.
        #[arg(long)]
        overload: bool,
        #[command(flatten)]
        server: ServerArgs,
        /// Also write the report as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
    /// Open C idle authenticated connections at a given rate against `courtchat serve` (a child
    /// process); report connect latency and the server's memory per connection.
    Connections {
        /// C: connections.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// New connections per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Subscribe each client to its acknowledgement topic, as an idle kiosk does.
        #[arg(long)]
        subscribe: bool,
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
    /// Open and close many sessions against `courtchat serve` (a child process), each with a
    /// new applicant and an agent from a fixed pool, sampling the server's resident memory.
    Soak {
        /// Sessions to open and close.
        #[arg(long, default_value_t = 100_000)]
        sessions: usize,
        /// Sessions in flight at once.
        #[arg(long, default_value_t = 32)]
        workers: usize,
        /// Read the server's memory after every this many sessions.
        #[arg(long, default_value_t = 1000)]
        sample_every: usize,
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Database for the server under test; a fresh SQLite file in a scratch directory by
    /// default. With PostgreSQL, give an empty database.
    #[arg(long, value_name = "URL")]
    pub(crate) database_url: Option<String>,
}

pub fn run(config: Config, command: BenchCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match command {
        BenchCommand::Relay {
            messages,
            payload,
            subscribers,
            rate,
            against,
            no_rumqttd,
            json,
        } => {
            let relay = bench::RelayConfig {
                messages,
                payload,
                subscribers,
                rate,
                ..bench::RelayConfig::default()
            };
            let which = Which {
                courtchat: true,
                rumqttd: !no_rumqttd,
            };
            runtime.block_on(relay_cmd(config, relay, against, which, json))
        }
        BenchCommand::Fanout {
            groups,
            members,
            rate,
            duration,
            payload,
            against,
            no_rumqttd,
            no_courtchat,
            json,
        } => {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            let fanout = bench::FanoutConfig {
                groups,
                members,
                rate,
                duration: Duration::from_secs(duration),
                payload,
                ..bench::FanoutConfig::default()
            };
            let which = Which {
                courtchat: !no_courtchat,
                rumqttd: !no_rumqttd,
            };
            runtime.block_on(fanout_cmd(config, fanout, against, which, json))
        }
        BenchCommand::Chat {
            sessions,
            agents,
            rate,
            duration,
            body,
            overload,
            server,
            json,
        } => {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            let chat = bench::ChatConfig {
                sessions,
                agents: agents.max(1),
                rate,
                duration: Duration::from_secs(duration),
                body,
                ..bench::ChatConfig::default()
            };
            runtime.block_on(chat_cmd(config, chat, overload, server, json))
        }
        BenchCommand::Connections {
            connections,
            rate,
            subscribe,
            server,
            json,
        } => {
            let scenario = bench::ConnectionsConfig {
                connections,
                rate,
                subscribe: subscribe.then(|| "cc/v1/clients/{id}/ack".to_owned()),
                ..bench::ConnectionsConfig::default()
            };
            runtime.block_on(connections_cmd(config, scenario, server, json))
        }
        BenchCommand::Soak {
            sessions,
            workers,
            sample_every,
            server,
            json,
        } => {
            let scenario = bench::SoakConfig {
                sessions,
                workers,
                sample_every,
                ..bench::SoakConfig::default()
            };
            runtime.block_on(soak_cmd(config, scenario, server, json))
        }
    }
}

fn chat_target(server: &ChildServer, store: store::Store) -> anyhow::Result<bench::ChatTarget> {
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
    })
}

async fn soak_cmd(
    config: Config,
    scenario: bench::SoakConfig,
    args: ServerArgs,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let server = ChildServer::start(config, &args, |config| {
        // The pooled agents serve a session every few milliseconds, far faster than a person;
        // the per-sender limit would refuse them.
        config.bridge.rate_per_second = config.bridge.rate_per_second.max(10_000.0);
        config.bridge.rate_burst = config.bridge.rate_burst.max(10_000.0);
    })
    .await?;
    let target = chat_target(&server, server.store().await?)?;
    eprintln!(
        "soak: {} sessions, {} at a time ...",
        scenario.sessions, scenario.workers
    );
    let report = bench::soak(&target, &scenario, &server.memory_probe()).await;
    target.store.close().await;
    server.stop().await;
    let r = report?;
    println!(
        "sessions completed/failed  elapsed   sessions/s   RSS after warm-up   max after   end    growth"
    );
    println!(
        "{:>9}/{:<6}          {:>6.1} s {:>9.0}   {:>10} MiB {:>8} MiB {:>6} MiB {:>+6.1} %",
        r.completed,
        r.failed,
        r.elapsed_ms as f64 / 1000.0,
        r.sessions_per_sec,
        mib(Some(r.rss_after_warm_up)),
        mib(Some(r.rss_max_after_warm_up)),
        mib(Some(r.rss_end)),
        r.growth_percent
    );
    let step = (r.samples.len() / 10).max(1);
    let curve: Vec<String> = r
        .samples
        .iter()
        .step_by(step)
        .map(|(done, rss)| format!("{done}:{}", mib(Some(*rss))))
        .collect();
    println!("RSS (MiB) by sessions completed: {}", curve.join(" "));
    write_json(json.as_deref(), &r)?;
    anyhow::ensure!(r.failed == 0, "{} sessions failed", r.failed);
    Ok(())
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

    /// Reads the server's resident memory.
    pub fn memory_probe(&self) -> bench::MemoryProbe {
        let pid = self.child.id();
        Box::new(move || resident_bytes(pid))
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
fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("?".to_owned(), |b| format!("{:.1}", b as f64 / 1048576.0))
}

/// VmRSS of a process, from /proc (Linux).
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub(crate) fn write_json(path: Option<&Path>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn chat_cmd(
    config: Config,
    chat: bench::ChatConfig,
    overload: bool,
    args: ServerArgs,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let connections = chat.sessions * (1 + chat.agents);
    let server = ChildServer::start(config, &args, |config| {
        config.mqtt.max_connections = config.mqtt.max_connections.max(connections + 64);
        // Senders keep to R per second; the limiter must not be what is measured.
        config.bridge.rate_per_second = config.bridge.rate_per_second.max(chat.rate * 4.0);
        config.bridge.rate_burst = config.bridge.rate_burst.max(chat.rate * 8.0);
    })
    .await?;
    let target = chat_target(&server, server.store().await?)?;
    eprintln!(
        "chat: {} sessions × (1 applicant + {} agents), {} msg/s each for {} s, {} B bodies ...",
        chat.sessions,
        chat.agents,
        chat.rate,
        chat.duration.as_secs(),
        chat.body
    );
    let report = bench::chat(&target, &chat, &server.memory_probe()).await;
    target.store.close().await;
    server.stop().await;
    let report = report?;
    println!(
        "{:<10} {:>9} {:>9} {:>8} {:>6} {:>7} {:>11} {:>13} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "target",
        "submitted",
        "accepted",
        "rejected",
        "unack",
        "lost",
        "persisted/s",
        "deliveries/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs"
    );
    let r = &report;
    println!(
        "{:<10} {:>9} {:>9} {:>8} {:>6} {:>7} {:>11.0} {:>13.0} {:>8} {:>8} {:>8} {:>9} {:>8}",
        r.target,
        r.submitted,
        r.accepted,
        r.rejected.values().sum::<usize>(),
        r.unacknowledged,
        r.lost_acknowledged,
        r.persisted_per_sec,
        r.deliveries_per_sec,
        r.latency.p50_us,
        r.latency.p90_us,
        r.latency.p99_us,
        r.latency.p999_us,
        r.latency.max_us
    );
    println!(
        "acknowledgement µs: p50 {} p90 {} p99 {} p99.9 {} max {}",
        r.ack_latency.p50_us,
        r.ack_latency.p90_us,
        r.ack_latency.p99_us,
        r.ack_latency.p999_us,
        r.ack_latency.max_us
    );
    println!(
        "deliveries {}/{} (missing {}, duplicates {}), participants out of order {}, sessions verified against the database {}/{}, connection failures {}, setup {} ms",
        r.delivered,
        r.deliveries_expected,
        r.missing_deliveries,
        r.duplicate_deliveries,
        r.out_of_order_participants,
        r.sessions_verified,
        r.sessions,
        r.connection_failures,
        r.setup_ms
    );
    println!(
        "server memory: {} MiB idle, {} MiB with {} connections set up ({} per connection), {} MiB after the run",
        mib(r.rss_bytes[0]),
        mib(r.rss_bytes[1]),
        r.connections,
        match (r.rss_bytes[0], r.rss_bytes[1]) {
            (Some(idle), Some(set_up)) if r.connections > 0 => format!(
                "{:.1} KiB",
                (set_up as f64 - idle as f64) / r.connections as f64 / 1024.0
            ),
            _ => "?".to_owned(),
        },
        mib(r.rss_bytes[2])
    );
    if !r.rejected.is_empty() {
        println!("rejections: {:?}", r.rejected);
    }
    write_json(json.as_deref(), &report)?;
    let clean = if overload {
        report.is_clean_under_overload()
    } else {
        report.is_clean()
    };
    anyhow::ensure!(
        clean,
        "the run was not clean: see lost, missing, duplicates, order and rejections above"
    );
    Ok(())
}

async fn connections_cmd(
    config: Config,
    scenario: bench::ConnectionsConfig,
    args: ServerArgs,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let server = ChildServer::start(config, &args, |config| {
        config.mqtt.max_connections = config.mqtt.max_connections.max(scenario.connections + 64);
    })
    .await?;
    let keys = server.tokens()?;
    let target = bench::Target {
        name: "courtchat".to_owned(),
        addr: server.mqtt,
        credentials: Some(Box::new(move |client_id: &str| {
            let token = keys
                .mint(
                    client_id,
                    Role::Applicant,
                    Duration::from_secs(6 * 3600),
                    std::time::SystemTime::now(),
                )
                .unwrap_or_default();
            (client_id.to_owned(), token)
        })),
    };
    eprintln!(
        "connections: {} at {}/s{} ...",
        scenario.connections,
        scenario.rate,
        if scenario.subscribe.is_some() {
            ", each subscribed to its ack topic"
        } else {
            ""
        }
    );
    let report = bench::connections(&target, &scenario, &server.memory_probe()).await;
    server.stop().await;
    let r = report?;
    println!(
        "{:<10} {:>9} {:>7} {:>6} {:>5} {:>8} {:>8} {:>8} {:>9} {:>8} {:>10} {:>10} {:>12}",
        "target",
        "requested",
        "opened",
        "failed",
        "held",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "RSS before",
        "RSS after",
        "bytes/conn"
    );
    println!(
        "{:<10} {:>9} {:>7} {:>6} {:>5} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6} MiB {:>6} MiB {:>12}",
        r.target,
        r.requested,
        r.opened,
        r.failed,
        r.held,
        r.connect_latency.p50_us,
        r.connect_latency.p90_us,
        r.connect_latency.p99_us,
        r.connect_latency.p999_us,
        r.connect_latency.max_us,
        mib(r.rss_before_bytes),
        mib(r.rss_after_bytes),
        r.bytes_per_connection.map_or("?".to_owned(), |b| format!(
            "{:.0} ({:.1} KiB)",
            b,
            b / 1024.0
        ))
    );
    write_json(json.as_deref(), &r)?;
    anyhow::ensure!(r.failed == 0, "{} connections failed", r.failed);
    Ok(())
}
