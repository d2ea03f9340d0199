//! The `courtchat` command: parses arguments, loads the configuration and runs one subcommand.
//! Everything it runs lives in the libraries; this file only wires and reports.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use courtchat::{Config, Listeners, Server};

/// courtchat: real-time help-desk chat for court licensing, on MQTT, with a durable record.
///
/// With no configuration at all, `courtchat serve` runs everything in one process on an embedded
/// SQLite database under ./data, with MQTT on 127.0.0.1:1883 (WebSocket: 127.0.0.1:8083/mqtt)
/// and the admin HTTP API on 127.0.0.1:8080.
#[derive(Parser)]
#[command(name = "courtchat", version, propagate_version = true)]
struct Cli {
    /// A TOML configuration file (see deploy/courtchat.example.toml). Settings in it override the
    /// built-in defaults; COURTCHAT_* environment variables override both, with `__` between
    /// nested keys, e.g. COURTCHAT_MQTT__TCP__LISTEN=0.0.0.0:1883.
    #[arg(long, short, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: MQTT listeners, admin HTTP API, database migrations.
    ///
    /// Stops cleanly (exit code 0) on Ctrl-C or SIGTERM.
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Run the chat pipeline as its own process, as an MQTT client of a running gateway.
    ///
    /// Set `bridge.in_process = false` on the server, and run this with the same configuration
    /// (database, token key, audit key). Stops cleanly on Ctrl-C or SIGTERM.
    Bridge {
        /// The gateway's MQTT TCP address; defaults to the configured listener, on loopback.
        #[arg(long, value_name = "HOST:PORT")]
        broker: Option<std::net::SocketAddr>,
    },
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Measure courtchat against other MQTT brokers in one run (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print a token (JWT) for an MQTT client, signed with the configured key.
    ///
    /// The client connects with its client id equal to SUBJECT and the token as its password.
    Token {
        /// The subject, which is also the client id the token may connect as.
        #[arg(long)]
        sub: String,
        /// applicant, agent, supervisor, admin or service.
        #[arg(long)]
        role: broker::Role,
        /// How long the token is valid: a number with s, m, h or d (e.g. 30m, 12h).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
    },
}

fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30m or 12h"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?}; use s, m, h or d")),
    };
    match value.checked_mul(seconds) {
        Some(0) | None => Err(format!("{text:?} is not a positive duration")),
        Some(total) => Ok(std::time::Duration::from_secs(total)),
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the HMAC chain of the audit trail and name the first entry that does not verify
    /// (changed, deleted, inserted or reordered). Exit code 1 if any.
    Verify,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// One publisher, several subscribers, one non-persisted topic, QoS 1: courtchat's gateway
    /// (started in this process on ephemeral ports) and every broker given with --against.
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
        /// Another broker to measure, as NAME=HOST:PORT (anonymous access). Repeatable.
        #[arg(
            long,
            value_name = "NAME=HOST:PORT",
            default_value = "mosquitto=127.0.0.1:1883"
        )]
        against: Vec<String>,
        /// Also write the reports as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration as TOML, with secrets redacted.
    Print,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, no backtrace: the message names what failed and what to change.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref(), std::env::vars())?;
    match cli.command {
        Command::Config(ConfigCommand::Print) => {
            let rendered = config.to_redacted_toml();
            print!("{rendered}");
            if !rendered.ends_with('\n') {
                println!();
            }
            Ok(())
        }
        Command::Token { sub, role, ttl } => {
            if role == broker::Role::Anonymous {
                anyhow::bail!("tokens cannot carry the anonymous role");
            }
            println!("{}", courtchat::mint_token(&config, &sub, role, ttl)?);
            Ok(())
        }
        Command::Migrate => runtime()?.block_on(migrate(config)),
        Command::Bridge { broker } => runtime()?.block_on(run_bridge(config, broker)),
        Command::Audit(AuditCommand::Verify) => runtime()?.block_on(verify_audit(config)),
        Command::Bench(BenchCommand::Relay {
            messages,
            payload,
            subscribers,
            rate,
            against,
            json,
        }) => {
            let relay = bench::RelayConfig {
                messages,
                payload,
                subscribers,
                rate,
                ..bench::RelayConfig::default()
            };
            init_logging(&config);
            runtime()?.block_on(bench_relay(config, relay, against, json))
        }
        Command::Serve => runtime()?.block_on(serve(config)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|filter| tracing_subscriber::EnvFilter::try_new(filter).ok())
        // Validated when the configuration was loaded.
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&config.log.filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    let store = store::Store::connect(&config.database).await?;
    let applied = store.migrate().await?;
    store.close().await;
    tracing::info!(applied, "database schema is up to date");
    Ok(())
}

async fn verify_audit(config: Config) -> anyhow::Result<()> {
    let store = store::Store::connect(&config.database).await?;
    let verification = courtchat::verify_audit(&config, &store).await;
    store.close().await;
    match verification? {
        courtchat::Verification {
            entries,
            first_broken: None,
        } => {
            println!("audit trail intact: {entries} entries verified");
            Ok(())
        }
        courtchat::Verification {
            entries,
            first_broken: Some((id, reason)),
        } => anyhow::bail!(
            "audit trail broken at entry {id}: {reason} ({entries} entries before it verified)"
        ),
    }
}

async fn run_bridge(config: Config, broker: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    init_logging(&config);
    let mut stop = ShutdownSignal::install()?;
    let store = store::Store::open(&config.database).await?;
    let pipeline = courtchat::pipeline(&config, &store).await?;
    let link = courtchat::pipeline_link(&config, broker.unwrap_or(config.mqtt.tcp.listen));
    tracing::info!(broker = %link.addr, "chat pipeline starting");
    pipeline.run(link, async move { stop.recv().await }).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    // Installed before anything slow (migrations), so that a signal during start-up also ends
    // in a clean exit instead of the default kill.
    let mut stop = ShutdownSignal::install()?;
    let listeners = Listeners::bind(&config).await?;
    let mut server = tokio::select! {
        server = Server::start(config, listeners) => server?,
        _ = stop.recv() => {
            tracing::info!("shutdown requested during start-up");
            return Ok(());
        }
    };
    tokio::select! {
        _ = stop.recv() => {
            tracing::info!("shutdown requested");
            server.shutdown().await;
            Ok(())
        }
        err = server.failed() => {
            server.shutdown().await;
            Err(err.into())
        }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, registered when installed.
struct ShutdownSignal {
    #[cfg(unix)]
    signals: [tokio::signal::unix::Signal; 2],
}

impl ShutdownSignal {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                signals: [
                    signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
                    signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let [interrupt, terminate] = &mut self.signals;
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the relay scenario against an in-process courtchat and each `--against` broker, and
/// prints one table with the ratios.
async fn bench_relay(
    mut config: Config,
    relay: bench::RelayConfig,
    against: Vec<String>,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    // A throwaway server: ephemeral ports, its own database and signing key, and a static rule
    // that opens the benchmark's topic, which is outside the chat protocol.
    let scratch = std::env::temp_dir().join(format!("courtchat-bench-{}", std::process::id()));
    let ephemeral = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.mqtt.tcp.listen = ephemeral;
    config.mqtt.websocket.listen = ephemeral;
    config.mqtt.tls.cert_file = PathBuf::new();
    config.admin.listen = ephemeral;
    config.database.url = format!("sqlite://{}", scratch.join("bench.db").display());
    config.mqtt.auth.secret = String::new();
    config.mqtt.auth.secret_file = scratch.join("token-secret");
    config.audit.key = String::new();
    config.audit.key_file = scratch.join("audit-key");
    config.mqtt.acl.rules.push(courtchat::StaticRule {
        role: Some(courtchat::Role::Agent),
        username: None,
        client: None,
        access: courtchat::Access::Readwrite,
        topic: "bench/#".to_owned(),
        effect: courtchat::Effect::Allow,
    });
    let listeners = Listeners::bind(&config).await?;
    let server = Server::start(config.clone(), listeners).await?;
    let token_config = config.clone();
    let mut targets = vec![bench::Target {
        name: "courtchat".to_owned(),
        addr: server.addresses().mqtt_tcp,
        credentials: Some(Box::new(move |client_id: &str| {
            let token = courtchat::mint_token(
                &token_config,
                client_id,
                courtchat::Role::Agent,
                std::time::Duration::from_secs(3600),
            )
            .unwrap_or_default();
            (client_id.to_owned(), token)
        })),
    }];
    for spec in &against {
        let (name, addr) = spec
            .split_once('=')
            .context("--against takes NAME=HOST:PORT")?;
        targets.push(bench::Target {
            name: name.to_owned(),
            addr: addr
                .parse()
                .with_context(|| format!("--against {spec}: not a socket address"))?,
            credentials: None,
        });
    }

    let mut reports = Vec::new();
    for target in &targets {
        eprintln!(
            "relay: {} messages × {} subscribers via {} ...",
            relay.messages, relay.subscribers, target.name
        );
        match bench::relay(target, &relay).await {
            Ok(report) => reports.push(report),
            Err(err) => eprintln!("relay: {err}"),
        }
    }
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&scratch);

    println!(
        "{:<12} {:>19} {:>6} {:>5} {:>5} {:>9} {:>13} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "target",
        "delivered/expected",
        "lost",
        "dup",
        "ooo",
        "elapsed",
        "deliveries/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs"
    );
    for r in &reports {
        println!(
            "{:<12} {:>19} {:>6} {:>5} {:>5} {:>7}ms {:>13.0} {:>8} {:>8} {:>8} {:>8} {:>8}",
            r.target,
            format!("{}/{}", r.delivered, r.expected),
            r.lost,
            r.duplicates,
            r.out_of_order,
            r.elapsed_ms,
            r.deliveries_per_sec,
            r.latency.p50_us,
            r.latency.p90_us,
            r.latency.p99_us,
            r.latency.p999_us,
            r.latency.max_us
        );
    }
    if let Some(ours) = reports.iter().find(|r| r.target == "courtchat") {
        for other in reports.iter().filter(|r| r.target != "courtchat") {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            println!(
                "courtchat / {}: throughput {:.2}×, p50 latency {:.2}×, p99 latency {:.2}×",
                other.target,
                ratio(ours.deliveries_per_sec, other.deliveries_per_sec),
                ratio(ours.latency.p50_us as f64, other.latency.p50_us as f64),
                ratio(ours.latency.p99_us as f64, other.latency.p99_us as f64),
            );
        }
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&reports)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let lost: usize = reports.iter().map(|r| r.lost + r.duplicates).sum();
    anyhow::ensure!(lost == 0, "{lost} deliveries were lost or duplicated");
    anyhow::ensure!(!reports.is_empty(), "no target could be measured");
    Ok(())
}
