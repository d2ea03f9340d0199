//! `courtchat bench`: starts what is measured, runs a scenario from the `bench` crate, prints a
//! table and writes JSON. The scenarios themselves live in `bench`.
//!
//! Every scenario runs `courtchat serve` as a child process on ephemeral ports
//! (`bench_child`), so that its memory and CPU are its own and can be read from /proc. `relay`,
//! `fanout` and `connections` measure a fresh Mosquitto beside it (`bench_reference`), and any
//! broker named with `--against`; `relay` and `fanout` also plain rumqttd, in this process, when
//! built with the `rumqttd-reference` feature.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use courtchat::Config;

use crate::bench_brokers::{Which, fanout_cmd, relay_cmd};
use crate::bench_child::{ChildServer, ServerArgs, chat_target, mib, tune_for_chat, write_json};
use crate::bench_connections::{Shape, connections_cmd};
use crate::bench_knee::{KneeArgs, knee_cmd};
use crate::bench_reference::Others;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// P publishers, S subscribers, one non-persisted topic, QoS 1: courtchat, a fresh
    /// Mosquitto, plain rumqttd and every broker given with --against, with each server's CPU
    /// per delivery where its process is known.
    Relay {
        /// Messages to publish.
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Payload bytes per message (at least 16).
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value_t = 3)]
        subscribers: usize,
        /// P: publishers, sharing the messages out.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Each publisher publishes at this many messages per second instead of as fast as
        /// possible.
        #[arg(long)]
        rate: Option<u32>,
        #[command(flatten)]
        others: Others,
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
    /// shape, through courtchat's gateway (`courtchat serve` in a child process), a fresh
    /// Mosquitto, plain rumqttd and --against brokers.
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
        #[command(flatten)]
        others: Others,
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
    /// The knee of each series: the highest offered rate with p99 within the limit and every
    /// delivery verified, for a fresh Mosquitto and our gateway relaying chat's shape and for
    /// the durable chat on SQLite and PostgreSQL, one fresh server per step, in one sitting.
    Knee(KneeArgs),
    /// Open C idle authenticated connections at a given rate against `courtchat serve` (a child
    /// process), then a fresh Mosquitto; report connect latency, the server's memory per
    /// connection and its CPU per connection opened.
    Connections {
        /// C: connections.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// New connections per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Subscribe each client to its acknowledgement topic, as an idle kiosk does.
        #[arg(long, conflicts_with = "desk")]
        subscribe: bool,
        /// Sign each client in as an agent subscribed as an idle desk is (acknowledgements,
        /// queue, assignments).
        #[arg(long)]
        desk: bool,
        #[command(flatten)]
        others: Others,
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
            publishers,
            rate,
            others,
            no_rumqttd,
            json,
        } => {
            let relay = bench::RelayConfig {
                messages,
                payload,
                subscribers,
                publishers: publishers.max(1),
                rate,
                ..bench::RelayConfig::default()
            };
            let which = Which {
                courtchat: true,
                rumqttd: !no_rumqttd,
            };
            runtime.block_on(relay_cmd(config, relay, others, which, json))
        }
        BenchCommand::Fanout {
            groups,
            members,
            rate,
            duration,
            payload,
            others,
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
            runtime.block_on(fanout_cmd(config, fanout, others, which, json))
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
            desk,
            others,
            server,
            json,
        } => {
            let scenario = bench::ConnectionsConfig {
                connections,
                rate,
                ..bench::ConnectionsConfig::default()
            };
            let shape = match (desk, subscribe) {
                (true, _) => Shape::Desk,
                (false, true) => Shape::Kiosk,
                (false, false) => Shape::Bare,
            };
            runtime.block_on(connections_cmd(
                config, scenario, shape, others, server, json,
            ))
        }
        BenchCommand::Knee(args) => runtime.block_on(knee_cmd(config, args)),
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

async fn chat_cmd(
    config: Config,
    chat: bench::ChatConfig,
    overload: bool,
    args: ServerArgs,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let server = ChildServer::start(config, &args, |config| tune_for_chat(config, &chat)).await?;
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
    if let (Some(percent), Some(us)) = (r.server_cpu.percent, r.server_cpu.us_per_delivery) {
        println!("server CPU: {percent:.0} % of a core, {us:.1} µs per message stored");
    }
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
