//! `courtchat bench knee`: for each series (a fresh Mosquitto relaying chat's shape, our gateway
//! relaying it, and the durable chat on SQLite and on PostgreSQL), the highest offered rate whose
//! 99th percentile stays within the limit with every delivery verified. Every step runs against
//! a fresh server, so that no step inherits another's load, memory or rows; the series are
//! measured in one sitting, so their ratios mean something.
//!
//! Rates are messages per second over the whole run: N sessions (or groups) whose applicant
//! sends R a second, each answered once, offer 2·N·R.

use std::path::PathBuf;
use std::time::Duration;

use courtchat::{Config, Role};
use serde::Serialize;

use crate::bench_brokers::open_bench_topics;
use crate::bench_child::{ChildServer, ServerArgs, chat_target, tune_for_chat, write_json};
use crate::bench_reference::FreshMosquitto;

/// What one series measures.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Series {
    /// A fresh Mosquitto (nothing persisted, Nagle off) relaying chat's shape: the reference.
    Mosquitto,
    /// Our gateway relaying chat's shape, nothing stored.
    Gateway,
    /// The chat protocol, every message stored, on SQLite.
    Sqlite,
    /// The chat protocol, every message stored, on PostgreSQL (`--database-url`).
    Postgres,
}

impl Series {
    fn durable(self) -> bool {
        matches!(self, Self::Sqlite | Self::Postgres)
    }
}

#[derive(clap::Args)]
pub struct KneeArgs {
    /// The series to measure, in this order.
    #[arg(long, value_delimiter = ',', default_values = ["mosquitto", "gateway", "sqlite"])]
    series: Vec<Series>,
    /// N: sessions (groups for the relaying series).
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Agents per session (the relaying series have one member more: the applicant).
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// The first rate tried, in messages per second.
    #[arg(long, default_value_t = 2000.0)]
    from: f64,
    /// Each step offers this much more than the last, until one fails.
    #[arg(long, default_value_t = 1.5)]
    factor: f64,
    /// Halvings of the interval between the last rate that held and the first that failed.
    #[arg(long, default_value_t = 2)]
    refine: u32,
    /// No rate above this is tried.
    #[arg(long, default_value_t = 60_000.0)]
    max: f64,
    /// Seconds of traffic per step.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// The 99th percentile a rate must stay within to hold, in milliseconds.
    #[arg(long, default_value_t = 50)]
    p99_ms: u64,
    /// After each durable series, offer twice its knee and report what was accepted.
    #[arg(long)]
    overload: bool,
    /// The Mosquitto binary for the reference series.
    #[arg(long, value_name = "PATH", default_value = "mosquitto")]
    mosquitto: String,
    /// PostgreSQL for the `postgres` series: each step gets a database of its own, created on
    /// that server beside the one named (which needs the right to create databases) and
    /// dropped afterwards, as each SQLite step gets a fresh file.
    #[arg(long, value_name = "URL")]
    postgres_url: Option<String>,
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

/// One series' search.
#[derive(Serialize)]
struct SeriesReport {
    series: Series,
    steps: Vec<bench::KneeStep>,
    knee: Option<f64>,
    first_failure: Option<f64>,
    /// At twice the knee, durable series only, with `--overload`.
    overload: Option<Overload>,
}

#[derive(Serialize)]
struct Overload {
    offered: f64,
    accepted_per_sec: f64,
    refused_busy: usize,
    /// Of what was accepted, submission to arrival at every participant.
    p99_us: u64,
    max_us: u64,
    verified: bool,
}

pub async fn knee_cmd(config: Config, args: KneeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.sessions > 0, "--sessions must be positive");
    anyhow::ensure!(
        !args.series.contains(&Series::Postgres) || args.postgres_url.is_some(),
        "the postgres series needs --postgres-url"
    );
    let limit = Duration::from_millis(args.p99_ms);
    let mut reports = Vec::new();
    for (n, &series) in args.series.iter().enumerate() {
        let mut search = bench::KneeSearch::new(args.from, args.factor, args.max, args.refine);
        let mut steps = Vec::new();
        while let Some(rate) = search.next_rate() {
            let prefix = format!("knee{n}s{}", steps.len());
            let step = match run_step(&config, &args, series, rate, &prefix).await {
                Ok(step) => {
                    eprintln!(
                        "knee: {series:?} at {rate:.0}/s: carried {:.0}/s, p99 {:.1} ms, verified {}: {}",
                        step.achieved,
                        step.p99_us as f64 / 1000.0,
                        step.verified,
                        if step.holds(limit) {
                            "holds"
                        } else {
                            "does not hold"
                        }
                    );
                    step
                }
                Err(error) => {
                    // A step that cannot complete (connections refused, a server that falls
                    // over) did not hold; the reason is the operator's to read.
                    eprintln!("knee: {series:?} at {rate:.0}/s: does not hold: {error:#}");
                    failed_step(rate)
                }
            };
            let held = step.holds(limit);
            search.record(rate, held);
            steps.push(step);
            // Let the last step's connections close before the next server starts.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let overload = match search.knee() {
            Some(knee) if args.overload && series.durable() => {
                Some(run_overload(&config, &args, series, knee * 2.0, &format!("knee{n}o")).await?)
            }
            _ => None,
        };
        reports.push(SeriesReport {
            series,
            steps,
            knee: search.knee(),
            first_failure: search.first_failure(),
            overload,
        });
    }
    print_table(&reports, &args);
    write_json(args.json.as_deref(), &reports)?;
    Ok(())
}

fn failed_step(offered: f64) -> bench::KneeStep {
    bench::KneeStep {
        offered,
        achieved: 0.0,
        p99_us: u64::MAX,
        p999_us: u64::MAX,
        max_us: u64::MAX,
        verified: false,
        cpu_us_per_message: None,
        cpu_percent: None,
    }
}

/// The per-session rate that offers `rate` messages a second in all.
fn per_session(args: &KneeArgs, rate: f64) -> f64 {
    rate / (2.0 * args.sessions as f64)
}

fn chat_config(args: &KneeArgs, rate: f64, prefix: &str) -> bench::ChatConfig {
    bench::ChatConfig {
        sessions: args.sessions,
        agents: args.agents.max(1),
        rate: per_session(args, rate),
        duration: Duration::from_secs(args.duration),
        drain: Duration::from_secs(20),
        prefix: prefix.to_owned(),
        ..bench::ChatConfig::default()
    }
}

/// A fresh PostgreSQL database for one step, dropped by [`Scratch::drop`].
struct Scratch {
    base: String,
    name: String,
}

impl Scratch {
    async fn create(base: &str, prefix: &str) -> anyhow::Result<(Self, String)> {
        let name = format!("courtchat_{}_{prefix}", std::process::id());
        let url = store::create_postgres_database(base, &name).await?;
        let scratch = Self {
            base: base.to_owned(),
            name,
        };
        Ok((scratch, url))
    }

    async fn drop(self) {
        if let Err(error) = store::drop_postgres_database(&self.base, &self.name).await {
            eprintln!("knee: the scratch database {} stays: {error}", self.name);
        }
    }
}

async fn run_step(
    config: &Config,
    args: &KneeArgs,
    series: Series,
    rate: f64,
    prefix: &str,
) -> anyhow::Result<bench::KneeStep> {
    match series {
        Series::Mosquitto | Series::Gateway => {
            let fanout = bench::FanoutConfig {
                groups: args.sessions,
                members: args.agents.max(1) + 1,
                rate: per_session(args, rate),
                duration: Duration::from_secs(args.duration),
                ..bench::FanoutConfig::default()
            };
            let report = if series == Series::Mosquitto {
                let mosquitto = FreshMosquitto::start(&args.mosquitto).await?;
                bench::fanout(&mosquitto.target(), &fanout).await?
            } else {
                let connections = fanout.groups * fanout.members + 64;
                let server = ChildServer::start(config.clone(), &ServerArgs::default(), |c| {
                    open_bench_topics(c);
                    c.mqtt.max_connections = c.mqtt.max_connections.max(connections);
                })
                .await?;
                let report = bench::fanout(&server.target(Role::Agent)?, &fanout).await;
                server.stop().await;
                report?
            };
            let seconds = report.server_cpu.seconds;
            Ok(bench::KneeStep {
                offered: rate,
                achieved: report.messages_per_sec,
                p99_us: report.latency.p99_us,
                p999_us: report.latency.p999_us,
                max_us: report.latency.max_us,
                verified: report.lost == 0
                    && report.duplicates == 0
                    && report.out_of_order == 0
                    && report.delivered == report.expected,
                cpu_us_per_message: seconds
                    .filter(|_| report.published > 0)
                    .map(|s| s * 1e6 / report.published as f64),
                cpu_percent: report.server_cpu.percent,
            })
        }
        Series::Sqlite | Series::Postgres => {
            let report = chat_step(config, args, series, rate, prefix).await?;
            Ok(bench::KneeStep {
                offered: rate,
                achieved: report.persisted_per_sec,
                p99_us: report.latency.p99_us,
                p999_us: report.latency.p999_us,
                max_us: report.latency.max_us,
                verified: report.is_clean(),
                cpu_us_per_message: report.server_cpu.us_per_delivery,
                cpu_percent: report.server_cpu.percent,
            })
        }
    }
}

async fn chat_step(
    config: &Config,
    args: &KneeArgs,
    series: Series,
    rate: f64,
    prefix: &str,
) -> anyhow::Result<bench::ChatReport> {
    let chat = chat_config(args, rate, prefix);
    let (scratch, database_url) = match (series, &args.postgres_url) {
        (Series::Postgres, Some(base)) => {
            let (scratch, url) = Scratch::create(base, prefix).await?;
            (Some(scratch), Some(url))
        }
        _ => (None, None),
    };
    let report = async {
        let server = ChildServer::start(config.clone(), &ServerArgs { database_url }, |c| {
            tune_for_chat(c, &chat)
        })
        .await?;
        let target = chat_target(&server, server.store().await?)?;
        let report = bench::chat(&target, &chat, &server.memory_probe()).await;
        target.store.close().await;
        server.stop().await;
        Ok::<_, anyhow::Error>(report?)
    }
    .await;
    if let Some(scratch) = scratch {
        scratch.drop().await;
    }
    report
}

async fn run_overload(
    config: &Config,
    args: &KneeArgs,
    series: Series,
    rate: f64,
    prefix: &str,
) -> anyhow::Result<Overload> {
    let report = chat_step(config, args, series, rate, prefix).await?;
    Ok(Overload {
        offered: rate,
        accepted_per_sec: report.persisted_per_sec,
        refused_busy: report.rejected.get("Busy").copied().unwrap_or(0),
        p99_us: report.latency.p99_us,
        max_us: report.latency.max_us,
        verified: report.is_clean_under_overload(),
    })
}

fn print_table(reports: &[SeriesReport], args: &KneeArgs) {
    let reference = reports
        .iter()
        .find(|r| r.series == Series::Mosquitto)
        .and_then(|r| r.knee);
    println!(
        "knee: the highest offered rate with p99 ≤ {} ms and every delivery verified; {} sessions × (1 + {} agents), {} s a step",
        args.p99_ms, args.sessions, args.agents, args.duration
    );
    println!(
        "{:<10} {:>10} {:>12} {:>8} {:>9} {:>8} {:>10} {:>7} {:>12}",
        "series",
        "knee msg/s",
        "first failed",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "CPU µs/msg",
        "CPU %",
        "× Mosquitto"
    );
    for r in reports {
        let at_knee = r
            .knee
            .and_then(|knee| r.steps.iter().find(|s| s.offered == knee));
        let ms =
            |us: Option<u64>| us.map_or("-".to_owned(), |us| format!("{:.1}", us as f64 / 1000.0));
        let or_dash =
            |v: Option<f64>, places: usize| v.map_or("-".to_owned(), |v| format!("{v:.places$}"));
        println!(
            "{:<10} {:>10} {:>12} {:>8} {:>9} {:>8} {:>10} {:>7} {:>12}",
            format!("{:?}", r.series).to_lowercase(),
            or_dash(r.knee, 0),
            or_dash(r.first_failure, 0),
            ms(at_knee.map(|s| s.p99_us)),
            ms(at_knee.map(|s| s.p999_us)),
            ms(at_knee.map(|s| s.max_us)),
            or_dash(at_knee.and_then(|s| s.cpu_us_per_message), 1),
            or_dash(at_knee.and_then(|s| s.cpu_percent), 0),
            or_dash(r.knee.zip(reference).map(|(k, m)| k / m), 2),
        );
    }
    for r in reports {
        if let Some(o) = &r.overload {
            println!(
                "{:?} at twice its knee ({:.0}/s offered): {:.0}/s accepted, {} refused busy, accepted p99 {:.1} ms, max {:.1} ms, verified {}",
                r.series,
                o.offered,
                o.accepted_per_sec,
                o.refused_busy,
                o.p99_us as f64 / 1000.0,
                o.max_us as f64 / 1000.0,
                o.verified
            );
        }
    }
}
