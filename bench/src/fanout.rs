//! Scenario `fanout`: chat's traffic shape without chat's protocol, through any MQTT broker.
//!
//! G groups of M clients share one topic each (QoS 1, everyone subscribed). The first member
//! publishes R messages a second and the second answers each one as it arrives, as chat's
//! lock-holding agent does, so the broker routes 2·G·R messages a second, each to M clients,
//! over G·M connections. Nothing is stored and nothing is acknowledged beyond MQTT's PUBACK.
//!
//! Run against Mosquitto beside `chat`, it measures what the machine and the load generator can
//! carry at all for chat's shape: the ceiling that the durable pipeline works under.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Serialize;
use tokio::sync::watch;

use crate::process::{CpuWindow, ServerCpu};
use crate::relay::{connect, subscribed};
use crate::stats::Percentiles;
use crate::{BenchError, Target};

#[derive(Clone, Debug)]
pub struct FanoutConfig {
    pub topic_prefix: String,
    /// G: groups (chat's sessions).
    pub groups: usize,
    /// M: clients per group, at least 2 (chat's applicant and agents).
    pub members: usize,
    /// R: messages per second from each group's first member.
    pub rate: f64,
    pub duration: Duration,
    /// Payload bytes per message (at least 17: origin, sequence number and send time).
    pub payload: usize,
    /// How long to wait for the last deliveries after the last publish.
    pub drain: Duration,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self {
            topic_prefix: "bench/fan".to_owned(),
            groups: 1000,
            members: 3,
            rate: 1.0,
            duration: Duration::from_secs(20),
            payload: 100,
            drain: Duration::from_secs(15),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FanoutReport {
    pub target: String,
    pub groups: usize,
    pub members: usize,
    pub rate_per_group: f64,
    pub duration_s: f64,
    pub connections: usize,
    /// Messages published: the first members' and the answers.
    pub published: usize,
    /// Deliveries expected: published × members.
    pub expected: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
    /// Messages published per second over the run (chat's persisted/s).
    pub messages_per_sec: f64,
    pub deliveries_per_sec: f64,
    /// Publish call to receipt, per delivery.
    pub latency: Percentiles,
    /// The broker's CPU over the traffic and the drain.
    pub server_cpu: ServerCpu,
}

/// Who published a message: the group's first member, or its answerer.
const FIRST: u8 = 0;
const ANSWER: u8 = 1;

/// A message's header: origin, its sequence number from that origin, the send time.
fn stamp(payload: &mut [u8], origin: u8, seq: u64, sent: Duration) {
    payload[0] = origin;
    payload[1..9].copy_from_slice(&seq.to_be_bytes());
    payload[9..17].copy_from_slice(&(sent.as_nanos() as u64).to_be_bytes());
}

fn read_stamp(payload: &[u8]) -> Option<(u8, u64, Duration)> {
    let origin = *payload.first()?;
    let seq = u64::from_be_bytes(payload.get(1..9)?.try_into().ok()?);
    let sent = u64::from_be_bytes(payload.get(9..17)?.try_into().ok()?);
    Some((origin, seq, Duration::from_nanos(sent)))
}

/// What one member saw.
#[derive(Default)]
struct Seen {
    latencies: Vec<Duration>,
    /// The next sequence number expected from each origin.
    next: [u64; 2],
    duplicates: usize,
    out_of_order: usize,
}

impl Seen {
    fn record(&mut self, origin: u8, seq: u64, latency: Duration) {
        let next = &mut self.next[usize::from(origin.min(ANSWER))];
        if seq < *next {
            self.duplicates += 1;
            return;
        }
        if seq > *next {
            self.out_of_order += 1;
        }
        *next = seq + 1;
        self.latencies.push(latency);
    }
}

#[derive(Default)]
struct Counters {
    published: AtomicUsize,
    delivered: AtomicUsize,
}

struct Member {
    client: AsyncClient,
    task: tokio::task::JoinHandle<Seen>,
}

/// Runs the scenario against `target`.
pub async fn fanout(target: &Target, config: &FanoutConfig) -> Result<FanoutReport, BenchError> {
    let client_error = |reason: String| BenchError::Client {
        target: target.name.clone(),
        reason,
    };
    let members = config.members.max(2);
    let payload_len = config.payload.max(17);
    let epoch = Instant::now();
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    // Setup: every member connected and subscribed (SUBACK read) before the first message.
    let mut groups = Vec::with_capacity(config.groups);
    for g in 0..config.groups {
        let topic = format!("{}/{g}", config.topic_prefix);
        let mut group = Vec::with_capacity(members);
        for m in 0..members {
            let (client, mut eventloop) = connect(target, &format!("bench-fan-{g}-{m}")).await?;
            subscribed(&client, &mut eventloop, &topic)
                .await
                .map_err(client_error)?;
            let answers = m == 1;
            let (answerer, topic) = (client.clone(), topic.clone());
            let (counters, mut stop) = (Arc::clone(&counters), stop_rx.clone());
            let task = tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut answer = vec![0u8; payload_len];
                let mut answered = 0u64;
                loop {
                    let event = tokio::select! {
                        _ = stop.changed() => break,
                        event = eventloop.poll() => event,
                    };
                    match event {
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            let now = epoch.elapsed();
                            let Some((origin, seq, sent)) = read_stamp(&publish.payload) else {
                                continue;
                            };
                            seen.record(origin, seq, now.saturating_sub(sent));
                            counters.delivered.fetch_add(1, Ordering::Relaxed);
                            if answers && origin == FIRST {
                                stamp(&mut answer, ANSWER, answered, epoch.elapsed());
                                // try_publish: this task is the one that drains the client's
                                // request queue, so it must never wait on it.
                                if answerer
                                    .try_publish(&topic, QoS::AtLeastOnce, false, answer.clone())
                                    .is_ok()
                                {
                                    answered += 1;
                                    counters.published.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "fanout: a connection ended");
                            break;
                        }
                    }
                }
                seen
            });
            group.push(Member { client, task });
        }
        groups.push((topic, group));
    }

    // The run: first members spread evenly over the first period, as in chat.
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let started = epoch.elapsed() + Duration::from_millis(200);
    let per_member = (config.rate * config.duration.as_secs_f64()).round() as u64;
    let period = Duration::from_secs_f64(1.0 / config.rate.max(1e-6));
    let cpu = CpuWindow::start(target.pid);
    let mut senders = Vec::with_capacity(groups.len());
    for (n, (topic, group)) in groups.iter().enumerate() {
        let offset = period.mul_f64(n as f64 / groups.len().max(1) as f64);
        let (client, topic, counters) = (
            group[0].client.clone(),
            topic.clone(),
            Arc::clone(&counters),
        );
        senders.push(tokio::spawn(async move {
            let mut payload = vec![0u8; payload_len];
            for seq in 0..per_member {
                tokio::time::sleep_until(start + offset + period.mul_f64(seq as f64)).await;
                stamp(&mut payload, FIRST, seq, epoch.elapsed());
                if client
                    .publish(&topic, QoS::AtLeastOnce, false, payload.clone())
                    .await
                    .is_err()
                {
                    break;
                }
                counters.published.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for sender in senders {
        let _ = sender.await;
    }
    let drain_until = tokio::time::Instant::now() + config.drain;
    loop {
        let expected = counters.published.load(Ordering::Relaxed) * members;
        if counters.delivered.load(Ordering::Relaxed) >= expected
            || tokio::time::Instant::now() >= drain_until
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let finished = epoch.elapsed();
    let server_cpu = cpu.finish();
    let _ = stop_tx.send(true);

    let (mut latencies, mut duplicates, mut out_of_order) = (Vec::new(), 0, 0);
    for (_, group) in groups {
        for member in group {
            let _ = member.client.disconnect().await;
            if let Ok(seen) = member.task.await {
                duplicates += seen.duplicates;
                out_of_order += seen.out_of_order;
                latencies.extend(seen.latencies);
            }
        }
    }
    let published = counters.published.load(Ordering::Relaxed);
    let expected = published * members;
    let delivered = latencies.len();
    let elapsed = finished.saturating_sub(started).as_secs_f64().max(1e-9);
    Ok(FanoutReport {
        target: target.name.clone(),
        groups: config.groups,
        members,
        rate_per_group: config.rate,
        duration_s: config.duration.as_secs_f64(),
        connections: config.groups * members,
        published,
        expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        duplicates,
        out_of_order,
        messages_per_sec: published as f64 / elapsed,
        deliveries_per_sec: delivered as f64 / elapsed,
        latency: Percentiles::of(&mut latencies),
        server_cpu: server_cpu.per_delivery(delivered),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let mut payload = vec![0u8; 17];
        stamp(&mut payload, ANSWER, 42, Duration::from_micros(1234));
        assert_eq!(
            read_stamp(&payload),
            Some((ANSWER, 42, Duration::from_micros(1234)))
        );
        assert_eq!(read_stamp(&payload[..16]), None);
    }

    #[test]
    fn a_member_counts_gaps_and_repeats_per_origin() {
        let mut seen = Seen::default();
        for (origin, seq) in [(FIRST, 0), (ANSWER, 0), (FIRST, 1), (FIRST, 3), (FIRST, 3)] {
            seen.record(origin, seq, Duration::from_millis(1));
        }
        assert_eq!((seen.out_of_order, seen.duplicates), (1, 1));
        assert_eq!(seen.latencies.len(), 4);
    }
}
