//! Scenario `relay`: P publishers, S subscribers, one topic, QoS 1, no persistence.
//! Measures end-to-end latency (publish call to receipt, per subscriber), throughput and, when
//! the broker's process is known, its CPU per delivery; checks that every subscriber received
//! every message exactly once, in each publisher's order.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::process::{CpuWindow, ServerCpu};
use crate::stats::Percentiles;
use crate::{BenchError, Target};

#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub topic: String,
    pub messages: usize,
    /// Payload size in bytes (at least 16: sequence number and send time).
    pub payload: usize,
    pub subscribers: usize,
    /// P: publishers; the messages are shared out between them.
    pub publishers: usize,
    /// Messages per second each publisher keeps to (open loop; publishers are spread evenly
    /// over the period); `None` publishes as fast as the client can, which measures throughput
    /// and turns latency into queueing time.
    pub rate: Option<u32>,
    /// Give up waiting for deliveries after this long.
    pub deadline: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            topic: "bench/relay".to_owned(),
            messages: 20_000,
            payload: 64,
            subscribers: 3,
            publishers: 1,
            rate: None,
            deadline: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RelayReport {
    pub target: String,
    /// Each publisher's pace, if it had one (messages per second).
    pub rate: Option<u32>,
    pub messages: usize,
    pub publishers: usize,
    pub subscribers: usize,
    /// Deliveries expected: messages × subscribers.
    pub expected: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
    /// From the first publish to the last delivery.
    pub elapsed_ms: u64,
    /// Deliveries per second over `elapsed_ms`.
    pub deliveries_per_sec: f64,
    pub latency: Percentiles,
    /// The broker's CPU from the first publish to the last delivery.
    pub server_cpu: ServerCpu,
}

/// What one subscriber saw.
#[derive(Default)]
struct Received {
    latencies: Vec<Duration>,
    seen: Vec<bool>,
    duplicates: usize,
    out_of_order: usize,
    /// The last sequence number seen from each publisher (message `seq` is publisher
    /// `seq % P`'s).
    last_seq: Vec<Option<u64>>,
    /// When the last delivery arrived (since the run's epoch).
    last_at: Duration,
}

fn options(target: &Target, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, target.addr.ip().to_string(), target.addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    options.set_inflight(100);
    if let Some(credentials) = &target.credentials {
        let (username, password) = credentials(client_id);
        options.set_credentials(username, password);
    }
    options
}

pub(crate) async fn connect(
    target: &Target,
    client_id: &str,
) -> Result<(AsyncClient, EventLoop), BenchError> {
    let (client, mut eventloop) = AsyncClient::new(options(target, client_id), 1000);
    // Without it, a PUBACK followed by a PUBLISH waits for the broker's delayed ACK (~40 ms).
    eventloop.network_options.set_tcp_nodelay(true);
    match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack))))
            if ack.code == rumqttc::ConnectReturnCode::Success =>
        {
            Ok((client, eventloop))
        }
        other => Err(BenchError::Connect {
            target: target.name.clone(),
            reason: format!("{other:?}"),
        }),
    }
}

/// Subscribes to `topic` at QoS 1 and waits for the SUBACK, so that nothing is published
/// before the subscription exists.
pub(crate) async fn subscribed(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    topic: &str,
) -> Result<(), String> {
    client
        .subscribe(topic, QoS::AtLeastOnce)
        .await
        .map_err(|err| err.to_string())?;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
            Ok(_) => {}
            Err(err) => return Err(err.to_string()),
        }
    }
}

/// Runs the scenario against `target`.
pub async fn relay(target: &Target, config: &RelayConfig) -> Result<RelayReport, BenchError> {
    let client_error = |reason: String| BenchError::Client {
        target: target.name.clone(),
        reason,
    };
    let epoch = Instant::now();
    let (done_tx, mut done_rx) = mpsc::channel(config.subscribers);
    // Tells subscribers still waiting at the deadline to stop and report what they have.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut subscribers = Vec::new();
    for n in 0..config.subscribers {
        let (client, mut eventloop) = connect(target, &format!("bench-sub-{n}")).await?;
        subscribed(&client, &mut eventloop, &config.topic)
            .await
            .map_err(client_error)?;
        let (messages, done, mut stop) = (config.messages, done_tx.clone(), stop_rx.clone());
        let publishers = config.publishers.max(1);
        subscribers.push((
            client,
            tokio::spawn(async move {
                let mut received = Received {
                    seen: vec![false; messages],
                    last_seq: vec![None; publishers],
                    ..Received::default()
                };
                let mut count = 0;
                while count < messages {
                    let event = tokio::select! {
                        _ = stop.changed() => break,
                        event = eventloop.poll() => event,
                    };
                    match event {
                        Ok(Event::Incoming(Packet::Publish(publish)))
                            if publish.payload.len() >= 16 =>
                        {
                            let now = epoch.elapsed();
                            let seq = u64::from_be_bytes(
                                publish.payload[..8].try_into().unwrap_or_default(),
                            );
                            let sent = Duration::from_nanos(u64::from_be_bytes(
                                publish.payload[8..16].try_into().unwrap_or_default(),
                            ));
                            let Some(slot) = received.seen.get_mut(seq as usize) else {
                                continue;
                            };
                            if std::mem::replace(slot, true) {
                                received.duplicates += 1;
                                continue;
                            }
                            let last = &mut received.last_seq[seq as usize % publishers];
                            if last.is_some_and(|last| seq < last) {
                                received.out_of_order += 1;
                            }
                            *last = Some(seq);
                            received.latencies.push(now.saturating_sub(sent));
                            received.last_at = now;
                            count += 1;
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "subscriber connection ended");
                            break;
                        }
                    }
                }
                if count == messages {
                    let _ = done.send(epoch.elapsed()).await;
                }
                received
            }),
        ));
    }
    drop(done_tx);

    let publishers = config.publishers.max(1);
    let mut clients = Vec::with_capacity(publishers);
    for p in 0..publishers {
        let (publisher, mut publisher_loop) = connect(target, &format!("bench-pub-{p}")).await?;
        let driver = tokio::spawn(async move { while publisher_loop.poll().await.is_ok() {} });
        clients.push((publisher, driver));
    }
    let cpu = CpuWindow::start(target.pid);
    let started = epoch.elapsed();
    let publish_start = tokio::time::Instant::now();
    let mut senders = Vec::with_capacity(publishers);
    for (p, (publisher, _)) in clients.iter().enumerate() {
        let (publisher, topic, rate) = (publisher.clone(), config.topic.clone(), config.rate);
        let (messages, payload_len) = (config.messages as u64, config.payload.max(16));
        senders.push(tokio::spawn(async move {
            let mut payload = vec![0u8; payload_len];
            let pace = rate.filter(|rate| *rate > 0).map(|rate| {
                let period = Duration::from_secs_f64(1.0 / f64::from(rate));
                (period, period.mul_f64(p as f64 / publishers as f64))
            });
            for (n, seq) in (p as u64..messages).step_by(publishers).enumerate() {
                if let Some((period, offset)) = pace {
                    tokio::time::sleep_until(publish_start + offset + period.mul_f64(n as f64))
                        .await;
                }
                payload[..8].copy_from_slice(&seq.to_be_bytes());
                payload[8..16].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
                publisher
                    .publish(&topic, QoS::AtLeastOnce, false, payload.clone())
                    .await
                    .map_err(|err| err.to_string())?;
            }
            Ok::<_, String>(())
        }));
    }
    for sender in senders {
        sender
            .await
            .map_err(|err| client_error(err.to_string()))?
            .map_err(client_error)?;
    }

    // Every subscriber reports when it has everything; the deadline bounds the wait.
    let mut finished = started;
    let deadline = tokio::time::sleep(config.deadline);
    tokio::pin!(deadline);
    let mut reported = 0;
    while reported < config.subscribers {
        tokio::select! {
            _ = &mut deadline => break,
            at = done_rx.recv() => match at {
                Some(at) => { finished = finished.max(at); reported += 1; }
                None => break,
            },
        }
    }
    let server_cpu = cpu.finish();
    let mut latencies = Vec::new();
    let (mut delivered, mut duplicates, mut out_of_order) = (0, 0, 0);
    let mut last_delivery = started;
    let _ = stop_tx.send(true);
    for (client, task) in subscribers {
        let _ = client.disconnect().await;
        if let Ok(received) = task.await {
            delivered += received.latencies.len();
            duplicates += received.duplicates;
            out_of_order += received.out_of_order;
            last_delivery = last_delivery.max(received.last_at);
            latencies.extend(received.latencies);
        }
    }
    // With losses, the run ends at the last delivery that did arrive, not at the deadline.
    finished = finished.max(last_delivery);
    for (publisher, driver) in clients {
        let _ = publisher.disconnect().await;
        driver.abort();
    }

    let elapsed = finished.saturating_sub(started);
    let expected = config.messages * config.subscribers;
    Ok(RelayReport {
        target: target.name.clone(),
        rate: config.rate,
        messages: config.messages,
        publishers,
        subscribers: config.subscribers,
        expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        duplicates,
        out_of_order,
        elapsed_ms: elapsed.as_millis() as u64,
        deliveries_per_sec: delivered as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Percentiles::of(&mut latencies),
        server_cpu: server_cpu.per_delivery(delivered),
    })
}
