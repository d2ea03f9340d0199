//! The scenarios that measure courtchat's gateway beside other brokers (`relay`, `fanout`): a
//! throwaway courtchat in this process, plain rumqttd, and every broker given with `--against`,
//! measured by the same code in one run so that their ratios mean something.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use courtchat::{Config, Listeners, Role, Server};

#[cfg(feature = "rumqttd-reference")]
use crate::bench_cli::free_port;
use crate::bench_cli::{ChildServer, ServerArgs, write_json};

/// Which of the brokers started here to measure.
pub struct Which {
    pub courtchat: bool,
    pub rumqttd: bool,
}

/// The brokers one run measures, and the in-process courtchat (if it is one of them) to shut
/// down afterwards.
struct Brokers {
    server: Option<Server>,
    scratch: PathBuf,
    targets: Vec<bench::Target>,
}

impl Brokers {
    async fn shutdown(self) {
        if let Some(server) = self.server {
            server.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Starts courtchat (and plain rumqttd unless left out) on ephemeral ports, and names each
/// `--against` broker.
async fn brokers(mut config: Config, against: &[String], which: Which) -> anyhow::Result<Brokers> {
    // A throwaway server: ephemeral ports, its own database and signing key, and a static rule
    // that opens the benchmark's topic, which is outside the chat protocol.
    let scratch = std::env::temp_dir().join(format!("courtchat-bench-{}", std::process::id()));
    let ephemeral = SocketAddr::from(([127, 0, 0, 1], 0));
    config.mqtt.tcp.listen = ephemeral;
    config.mqtt.websocket.listen = ephemeral;
    config.mqtt.tls.cert_file = PathBuf::new();
    config.admin.listen = ephemeral;
    config.database.url = format!("sqlite://{}", scratch.join("bench.db").display());
    config.mqtt.auth.secret = String::new();
    config.mqtt.auth.secret_file = scratch.join("token-secret");
    config.audit.key = String::new();
    config.audit.key_file = scratch.join("audit-key");
    open_bench_topics(&mut config);
    let mut targets = Vec::new();
    let server = if which.courtchat {
        let listeners = Listeners::bind(&config).await?;
        let server = Server::start(config.clone(), listeners).await?;
        let keys = Arc::new(broker::TokenKeys::load(&config.mqtt.auth)?);
        targets.push(agents_of("courtchat", server.addresses().mqtt_tcp, keys));
        Some(server)
    } else {
        None
    };
    #[cfg(feature = "rumqttd-reference")]
    if which.rumqttd {
        let addr = free_port()?;
        broker::start_plain_rumqttd(addr, 1000)?;
        // Its listener binds on its own thread.
        tokio::time::sleep(Duration::from_millis(300)).await;
        targets.push(bench::Target {
            name: "rumqttd".to_owned(),
            addr,
            credentials: None,
        });
    }
    #[cfg(not(feature = "rumqttd-reference"))]
    if which.rumqttd {
        eprintln!(
            "plain rumqttd left out: this build has no rumqttd \
             (cargo build --release -p courtchat --features rumqttd-reference)"
        );
    }
    for spec in against {
        let (name, url) = spec
            .split_once('=')
            .context("--against takes NAME=HOST:PORT or NAME=mqtt://HOST:PORT")?;
        let addr = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .unwrap_or(url)
            .trim_end_matches('/');
        targets.push(bench::Target {
            name: name.to_owned(),
            addr: addr.parse().with_context(|| {
                format!("--against {spec}: not an IP socket address (mqtt://HOST:PORT)")
            })?,
            credentials: None,
        });
    }

    Ok(Brokers {
        server,
        scratch,
        targets,
    })
}

/// A static rule that opens the benchmarks' topics (outside the chat protocol) to agents.
fn open_bench_topics(config: &mut Config) {
    config.mqtt.acl.rules.push(courtchat::StaticRule {
        role: Some(Role::Agent),
        username: None,
        client: None,
        access: courtchat::Access::Readwrite,
        topic: "bench/#".to_owned(),
        effect: courtchat::Effect::Allow,
    });
}

/// A courtchat target whose clients sign in as agents.
fn agents_of(name: &str, addr: SocketAddr, keys: Arc<broker::TokenKeys>) -> bench::Target {
    bench::Target {
        name: name.to_owned(),
        addr,
        credentials: Some(Box::new(move |client_id: &str| {
            let token = keys
                .mint(
                    client_id,
                    Role::Agent,
                    Duration::from_secs(3600),
                    std::time::SystemTime::now(),
                )
                .unwrap_or_default();
            (client_id.to_owned(), token)
        })),
    }
}

/// Runs the relay scenario against every broker and prints one table with the ratios.
pub async fn relay_cmd(
    config: Config,
    relay: bench::RelayConfig,
    against: Vec<String>,
    which: Which,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let brokers = brokers(config, &against, which).await?;
    let targets = &brokers.targets;
    let mut reports = Vec::new();
    for target in targets {
        eprintln!(
            "relay: {} messages × {} subscribers via {} ...",
            relay.messages, relay.subscribers, target.name
        );
        match bench::relay(target, &relay).await {
            Ok(report) => reports.push(report),
            Err(err) => eprintln!("relay: {err}"),
        }
    }
    brokers.shutdown().await;

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
    write_json(json.as_deref(), &reports)?;
    // Only courtchat's own losses fail the command: other brokers' are what they are, reported.
    let ours: usize = reports
        .iter()
        .filter(|r| r.target == "courtchat")
        .map(|r| r.lost + r.duplicates + r.out_of_order)
        .sum();
    anyhow::ensure!(
        ours == 0,
        "courtchat lost, duplicated or reordered {ours} deliveries"
    );
    anyhow::ensure!(!reports.is_empty(), "no target could be measured");
    Ok(())
}

/// Runs the fanout scenario (chat's traffic shape, nothing stored) against every broker.
/// courtchat runs as `courtchat serve` in a child process here, as in `chat`, so that the
/// load generator does not share its runtime.
pub async fn fanout_cmd(
    config: Config,
    fanout: bench::FanoutConfig,
    against: Vec<String>,
    which: Which,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let child = if which.courtchat {
        let args = ServerArgs { database_url: None };
        Some(ChildServer::start(config.clone(), &args, open_bench_topics).await?)
    } else {
        None
    };
    let others = Which {
        courtchat: false,
        ..which
    };
    let brokers = brokers(config, &against, others).await?;
    let mut targets = Vec::new();
    if let Some(child) = &child {
        targets.push(agents_of("courtchat", child.mqtt, child.tokens()?));
    }
    targets.extend(brokers.targets.iter().map(|t| bench::Target {
        name: t.name.clone(),
        addr: t.addr,
        credentials: None,
    }));
    let mut reports = Vec::new();
    for target in &targets {
        eprintln!(
            "fanout: {} groups × {} members at {}/s for {} s via {} ...",
            fanout.groups,
            fanout.members,
            fanout.rate,
            fanout.duration.as_secs(),
            target.name
        );
        match bench::fanout(target, &fanout).await {
            Ok(report) => reports.push(report),
            Err(err) => eprintln!("fanout: {err}"),
        }
    }
    brokers.shutdown().await;
    if let Some(child) = child {
        child.stop().await;
    }

    println!(
        "{:<12} {:>21} {:>6} {:>5} {:>5} {:>11} {:>13} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "target",
        "delivered/expected",
        "lost",
        "dup",
        "ooo",
        "messages/s",
        "deliveries/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs"
    );
    for r in &reports {
        println!(
            "{:<12} {:>21} {:>6} {:>5} {:>5} {:>11.0} {:>13.0} {:>8} {:>8} {:>8} {:>8} {:>8}",
            r.target,
            format!("{}/{}", r.delivered, r.expected),
            r.lost,
            r.duplicates,
            r.out_of_order,
            r.messages_per_sec,
            r.deliveries_per_sec,
            r.latency.p50_us,
            r.latency.p90_us,
            r.latency.p99_us,
            r.latency.p999_us,
            r.latency.max_us
        );
    }
    write_json(json.as_deref(), &reports)?;
    anyhow::ensure!(!reports.is_empty(), "no target could be measured");
    Ok(())
}
