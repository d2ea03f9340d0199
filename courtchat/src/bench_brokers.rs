//! The scenarios that measure courtchat's gateway beside other brokers (`relay`, `fanout`):
//! `courtchat serve` in a child process, a fresh Mosquitto, plain rumqttd (in this process,
//! with the `rumqttd-reference` feature) and every broker given with `--against`, measured by
//! the same code in one run so that their ratios mean something.

use std::path::PathBuf;
use std::time::Duration;

use courtchat::{Config, Role};

use crate::bench_child::{ChildServer, ServerArgs, write_json};
use crate::bench_connections::ratio;
use crate::bench_reference::{FreshMosquitto, Others};

/// Which of the brokers started here to measure.
pub struct Which {
    pub courtchat: bool,
    pub rumqttd: bool,
}

/// The brokers one run measures, and what to stop afterwards.
struct Brokers {
    courtchat: Option<ChildServer>,
    mosquitto: Option<FreshMosquitto>,
    targets: Vec<bench::Target>,
}

impl Brokers {
    async fn stop(self) {
        if let Some(server) = self.courtchat {
            server.stop().await;
        }
        drop(self.mosquitto);
    }
}

/// Starts courtchat (as `courtchat serve` with a static rule opening the benchmarks' topics),
/// a fresh Mosquitto and plain rumqttd unless left out, and names each `--against` broker.
async fn brokers(
    config: Config,
    others: &Others,
    which: Which,
    max_connections: usize,
) -> anyhow::Result<Brokers> {
    let mut targets = Vec::new();
    let courtchat = if which.courtchat {
        let args = ServerArgs { database_url: None };
        let server = ChildServer::start(config, &args, |config| {
            open_bench_topics(config);
            config.mqtt.max_connections = config.mqtt.max_connections.max(max_connections);
        })
        .await?;
        targets.push(server.target(Role::Agent)?);
        Some(server)
    } else {
        None
    };
    let mosquitto = if others.no_mosquitto {
        None
    } else {
        let mosquitto = FreshMosquitto::start(&others.mosquitto).await?;
        targets.push(mosquitto.target());
        Some(mosquitto)
    };
    #[cfg(feature = "rumqttd-reference")]
    if which.rumqttd {
        let addr = crate::bench_child::free_port()?;
        broker::start_plain_rumqttd(addr, max_connections)?;
        // Its listener binds on its own thread.
        tokio::time::sleep(Duration::from_millis(300)).await;
        targets.push(bench::Target {
            name: "rumqttd".to_owned(),
            addr,
            credentials: None,
            // In this process, beside the load generator: its CPU cannot be told apart.
            pid: None,
        });
    }
    #[cfg(not(feature = "rumqttd-reference"))]
    if which.rumqttd {
        eprintln!(
            "plain rumqttd left out: this build has no rumqttd \
             (cargo build --release -p courtchat --features rumqttd-reference)"
        );
    }
    targets.extend(others.against.iter().map(|against| against.target()));
    Ok(Brokers {
        courtchat,
        mosquitto,
        targets,
    })
}

/// A static rule that opens the benchmarks' topics (outside the chat protocol) to agents.
pub(crate) fn open_bench_topics(config: &mut Config) {
    config.mqtt.acl.rules.push(courtchat::StaticRule {
        role: Some(Role::Agent),
        username: None,
        client: None,
        access: courtchat::Access::Readwrite,
        topic: "bench/#".to_owned(),
        effect: courtchat::Effect::Allow,
    });
}

fn cpu_cells(cpu: &bench::ServerCpu) -> (String, String) {
    (
        cpu.percent.map_or("?".to_owned(), |p| format!("{p:.1}")),
        cpu.us_per_delivery
            .map_or("?".to_owned(), |us| format!("{us:.1}")),
    )
}

/// Runs the relay scenario against every broker and prints one table with the ratios.
pub async fn relay_cmd(
    config: Config,
    relay: bench::RelayConfig,
    others: Others,
    which: Which,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let clients = relay.publishers + relay.subscribers + 64;
    let brokers = brokers(config, &others, which, clients).await?;
    let mut reports = Vec::new();
    for target in &brokers.targets {
        eprintln!(
            "relay: {} messages from {} publishers{} to {} subscribers via {} ...",
            relay.messages,
            relay.publishers,
            relay
                .rate
                .map_or(String::new(), |rate| format!(" at {rate}/s each")),
            relay.subscribers,
            target.name
        );
        match bench::relay(target, &relay).await {
            Ok(report) => reports.push(report),
            Err(err) => eprintln!("relay: {err}"),
        }
    }
    brokers.stop().await;

    println!(
        "{:<12} {:>19} {:>5} {:>4} {:>4} {:>9} {:>12} {:>7} {:>7} {:>7} {:>8} {:>7} {:>6} {:>9}",
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
        "max µs",
        "CPU %",
        "CPU µs/d"
    );
    for r in &reports {
        let (percent, per_delivery) = cpu_cells(&r.server_cpu);
        println!(
            "{:<12} {:>19} {:>5} {:>4} {:>4} {:>7}ms {:>12.0} {:>7} {:>7} {:>7} {:>8} {:>7} {:>6} {:>9}",
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
            r.latency.max_us,
            percent,
            per_delivery
        );
    }
    if let Some(ours) = reports.iter().find(|r| r.target == "courtchat") {
        for other in reports.iter().filter(|r| r.target != "courtchat") {
            let us = |p: u64| Some(p as f64);
            println!(
                "courtchat / {}: throughput {}, CPU per delivery {}, p50 {}, p99 {}, p99.9 {}",
                other.target,
                ratio(
                    Some(ours.deliveries_per_sec),
                    Some(other.deliveries_per_sec)
                ),
                ratio(
                    ours.server_cpu.us_per_delivery,
                    other.server_cpu.us_per_delivery
                ),
                ratio(us(ours.latency.p50_us), us(other.latency.p50_us)),
                ratio(us(ours.latency.p99_us), us(other.latency.p99_us)),
                ratio(us(ours.latency.p999_us), us(other.latency.p999_us)),
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
pub async fn fanout_cmd(
    config: Config,
    fanout: bench::FanoutConfig,
    others: Others,
    which: Which,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let clients = fanout.groups * fanout.members + 64;
    let brokers = brokers(config, &others, which, clients).await?;
    let mut reports = Vec::new();
    for target in &brokers.targets {
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
        // Let the connections of one target close before the next is measured.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    brokers.stop().await;

    println!(
        "{:<12} {:>21} {:>6} {:>5} {:>5} {:>10} {:>12} {:>7} {:>7} {:>7} {:>8} {:>7} {:>6} {:>9}",
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
        "max µs",
        "CPU %",
        "CPU µs/d"
    );
    for r in &reports {
        let (percent, per_delivery) = cpu_cells(&r.server_cpu);
        println!(
            "{:<12} {:>21} {:>6} {:>5} {:>5} {:>10.0} {:>12.0} {:>7} {:>7} {:>7} {:>8} {:>7} {:>6} {:>9}",
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
            r.latency.max_us,
            percent,
            per_delivery
        );
    }
    write_json(json.as_deref(), &reports)?;
    anyhow::ensure!(!reports.is_empty(), "no target could be measured");
    Ok(())
}
