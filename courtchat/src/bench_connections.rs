//! `courtchat bench connections`: C idle connections held open against a fresh `courtchat
//! serve`, then against a fresh Mosquitto with the same clients and subscriptions; memory per
//! connection and CPU per connection opened, side by side.

use std::path::PathBuf;

use courtchat::{Config, Role};

use crate::bench_child::{ChildServer, ServerArgs, mib, write_json};
use crate::bench_reference::{FreshMosquitto, Others};

/// What each client does once connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Nothing: a bare authenticated connection (an applicant).
    Bare,
    /// An idle kiosk: subscribed to its acknowledgements.
    Kiosk,
    /// An idle desk: an agent subscribed to its acknowledgements, the queue and its
    /// assignments, as the desk page subscribes (admin-api/web/shared).
    Desk,
}

impl Shape {
    fn role(self) -> Role {
        match self {
            Self::Desk => Role::Agent,
            Self::Bare | Self::Kiosk => Role::Applicant,
        }
    }

    fn filters(self) -> Vec<String> {
        let filters: &[&str] = match self {
            Self::Bare => &[],
            Self::Kiosk => &["cc/v1/clients/{id}/ack"],
            Self::Desk => &[
                "cc/v1/clients/{id}/ack",
                "cc/v1/queue",
                "cc/v1/staff/{id}/assignments",
            ],
        };
        filters.iter().map(|f| (*f).to_owned()).collect()
    }
}

pub async fn connections_cmd(
    config: Config,
    mut scenario: bench::ConnectionsConfig,
    shape: Shape,
    others: Others,
    args: ServerArgs,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    scenario.subscribe = shape.filters();
    eprintln!(
        "connections: {} at {}/s, each {:?} ({} filters) ...",
        scenario.connections,
        scenario.rate,
        shape,
        scenario.subscribe.len()
    );
    let mut reports = Vec::new();
    let server = ChildServer::start(config, &args, |config| {
        config.mqtt.max_connections = config.mqtt.max_connections.max(scenario.connections + 64);
    })
    .await?;
    let target = server.target(shape.role())?;
    let report = bench::connections(&target, &scenario, &server.memory_probe()).await;
    server.stop().await;
    reports.push(report?);

    if !others.no_mosquitto {
        let mosquitto = FreshMosquitto::start(&others.mosquitto).await?;
        let report =
            bench::connections(&mosquitto.target(), &scenario, &mosquitto.memory_probe()).await;
        drop(mosquitto);
        match report {
            Ok(report) => reports.push(report),
            Err(err) => eprintln!("connections: {err}"),
        }
    }
    for against in &others.against {
        let pid = against.pid;
        let memory: bench::MemoryProbe = Box::new(move || pid.and_then(bench::resident_bytes));
        match bench::connections(&against.target(), &scenario, &memory).await {
            Ok(report) => reports.push(report),
            Err(err) => eprintln!("connections: {err}"),
        }
    }

    print_table(&reports);
    write_json(json.as_deref(), &reports)?;
    let ours = &reports[0];
    anyhow::ensure!(ours.failed == 0, "{} connections failed", ours.failed);
    Ok(())
}

fn print_table(reports: &[bench::ConnectionsReport]) {
    println!(
        "{:<10} {:>9} {:>7} {:>6} {:>5} {:>8} {:>8} {:>9} {:>10} {:>10} {:>11} {:>12}",
        "target",
        "requested",
        "opened",
        "failed",
        "held",
        "p50 µs",
        "p99 µs",
        "max µs",
        "RSS before",
        "RSS after",
        "KiB/conn",
        "CPU µs/conn"
    );
    for r in reports {
        println!(
            "{:<10} {:>9} {:>7} {:>6} {:>5} {:>8} {:>8} {:>9} {:>6} MiB {:>6} MiB {:>11} {:>12}",
            r.target,
            r.requested,
            r.opened,
            r.failed,
            r.held,
            r.connect_latency.p50_us,
            r.connect_latency.p99_us,
            r.connect_latency.max_us,
            mib(r.rss_before_bytes),
            mib(r.rss_after_bytes),
            r.bytes_per_connection
                .map_or("?".to_owned(), |b| format!("{:.2}", b / 1024.0)),
            r.server_cpu
                .us_per_delivery
                .map_or("?".to_owned(), |us| format!("{us:.0}")),
        );
    }
    let ours = &reports[0];
    for other in &reports[1..] {
        println!(
            "courtchat / {}: memory per connection {}, CPU per connection {}",
            other.target,
            ratio(ours.bytes_per_connection, other.bytes_per_connection),
            ratio(
                ours.server_cpu.us_per_delivery,
                other.server_cpu.us_per_delivery
            ),
        );
    }
}

/// `a / b` as `1.23×`, or `?` when either is unknown.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "?".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_desk_subscribes_as_the_desk_page_does() {
        assert_eq!(Shape::Desk.role(), Role::Agent);
        assert_eq!(
            Shape::Desk.filters(),
            [
                "cc/v1/clients/{id}/ack",
                "cc/v1/queue",
                "cc/v1/staff/{id}/assignments"
            ]
        );
        assert!(Shape::Bare.filters().is_empty());
    }

    #[test]
    fn ratios_need_both_figures() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50×");
        assert_eq!(ratio(None, Some(2.0)), "?");
        assert_eq!(ratio(Some(3.0), Some(0.0)), "?");
    }
}
