//! Scenario `connections`: open C idle, authenticated connections at a steady rate, hold them,
//! and report how long each CONNECT took to be accepted and how much memory the server holds
//! per connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::process::{CpuWindow, ServerCpu};
use crate::stats::Percentiles;
use crate::{BenchError, Target};

#[derive(Clone, Debug)]
pub struct ConnectionsConfig {
    pub connections: usize,
    /// New connections per second.
    pub rate: f64,
    /// How long to hold them all before reading the server's memory, so that it settles.
    pub settle: Duration,
    /// Filters each client subscribes to once connected (`{id}` is replaced by its client
    /// id), in one SUBSCRIBE, as an idle kiosk subscribes to its acknowledgements or a desk to
    /// its acknowledgements, the queue and its assignments; empty for bare connections.
    pub subscribe: Vec<String>,
    pub prefix: String,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            connections: 1000,
            rate: 500.0,
            settle: Duration::from_secs(3),
            subscribe: Vec::new(),
            prefix: "idle".to_owned(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ConnectionsReport {
    pub target: String,
    pub requested: usize,
    pub opened: usize,
    pub failed: usize,
    /// Still connected when the memory was read.
    pub held: usize,
    /// TCP connect to CONNACK (and SUBACK, when subscribing), in µs.
    pub connect_latency: Percentiles,
    pub elapsed_ms: u64,
    /// The server's resident memory before the first connection and with all of them open.
    pub rss_before_bytes: Option<u64>,
    pub rss_after_bytes: Option<u64>,
    pub bytes_per_connection: Option<f64>,
    /// The server's CPU while the connections were opened; `us_per_delivery` is per
    /// connection opened here.
    pub server_cpu: ServerCpu,
}

/// Reads the server's resident memory in bytes.
pub type MemoryProbe = Box<dyn Fn() -> Option<u64> + Send + Sync>;

/// Runs the scenario; the connections are closed before it returns.
pub async fn connections(
    target: &Target,
    config: &ConnectionsConfig,
    memory: &MemoryProbe,
) -> Result<ConnectionsReport, BenchError> {
    let rss_before = memory();
    let cpu = CpuWindow::start(target.pid);
    let started = Instant::now();
    let (stop_tx, stop) = watch::channel(false);
    let (results, mut outcomes) = mpsc::unbounded_channel::<Result<Duration, String>>();
    let alive = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let period = Duration::from_secs_f64(1.0 / config.rate.max(1e-3));
    let begin = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(config.connections);
    for n in 0..config.connections {
        tokio::time::sleep_until(begin + period.mul_f64(n as f64)).await;
        let client_id = format!("{}-{n}", config.prefix);
        let mut options =
            MqttOptions::new(&client_id, target.addr.ip().to_string(), target.addr.port());
        options.set_keep_alive(Duration::from_secs(60));
        if let Some(credentials) = &target.credentials {
            let (username, password) = credentials(&client_id);
            options.set_credentials(username, password);
        }
        let filters: Vec<rumqttc::SubscribeFilter> = config
            .subscribe
            .iter()
            .map(|topic| {
                rumqttc::SubscribeFilter::new(topic.replace("{id}", &client_id), QoS::AtLeastOnce)
            })
            .collect();
        let subscribes = !filters.is_empty();
        let (results, mut stop, alive) = (results.clone(), stop.clone(), Arc::clone(&alive));
        tasks.push(tokio::spawn(async move {
            let (client, mut eventloop) = AsyncClient::new(options, 10);
            let asked = Instant::now();
            let mut ready = false;
            if subscribes {
                // Queued now, sent right after the CONNECT.
                let _ = client.try_subscribe_many(filters);
            }
            loop {
                let event = tokio::select! {
                    _ = stop.changed() => break,
                    event = eventloop.poll() => event,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if ack.code != ConnectReturnCode::Success {
                            let _ = results.send(Err(format!("{:?}", ack.code)));
                            return;
                        }
                        if !subscribes {
                            ready = true;
                            alive.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let _ = results.send(Ok(asked.elapsed()));
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) if !ready => {
                        // A refused filter would make a bare connection look like a subscribed
                        // one: it is a failure, not a connection held.
                        if ack
                            .return_codes
                            .iter()
                            .any(|code| matches!(code, rumqttc::SubscribeReasonCode::Failure))
                        {
                            let _ = results.send(Err(format!("subscription refused: {ack:?}")));
                            return;
                        }
                        ready = true;
                        alive.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let _ = results.send(Ok(asked.elapsed()));
                    }
                    Ok(_) => {}
                    Err(err) => {
                        if ready {
                            alive.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        } else {
                            let _ = results.send(Err(err.to_string()));
                        }
                        return;
                    }
                }
            }
            let _ = client.try_disconnect();
        }));
    }
    drop(results);
    let mut latencies = Vec::with_capacity(config.connections);
    let mut failed = 0;
    let wait = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(wait);
    while latencies.len() + failed < config.connections {
        tokio::select! {
            _ = &mut wait => break,
            outcome = outcomes.recv() => match outcome {
                Some(Ok(latency)) => latencies.push(latency),
                Some(Err(reason)) => {
                    if failed == 0 {
                        tracing::warn!(reason, "connection refused");
                    }
                    failed += 1;
                }
                None => break,
            },
        }
    }
    let elapsed = started.elapsed();
    let server_cpu = cpu.finish();
    tokio::time::sleep(config.settle).await;
    let rss_after = memory();
    let held = alive.load(std::sync::atomic::Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let opened = latencies.len();
    Ok(ConnectionsReport {
        target: target.name.clone(),
        requested: config.connections,
        opened,
        failed: config.connections - opened,
        held,
        connect_latency: Percentiles::of(&mut latencies),
        elapsed_ms: elapsed.as_millis() as u64,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        bytes_per_connection: match (rss_before, rss_after) {
            (Some(before), Some(after)) if held > 0 => {
                Some((after as f64 - before as f64) / held as f64)
            }
            _ => None,
        },
        server_cpu: server_cpu.per_delivery(opened),
    })
}
