//! Plain rumqttd, with its own listener and nothing of courtchat's, for benchmarks only (the
//! `rumqttd-reference` feature): the router that was courtchat's routing core until issue 22,
//! kept as a reference beside Mosquitto. Never started by `courtchat serve` (its listener has the
//! crash paths and missing checks that ARCHITECTURE.md lists).

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::{ConnectionSettings, ServerSettings};

/// Starts rumqttd on `listen` (MQTT 3.1.1, anonymous, no TLS) on its own threads. rumqttd cannot
/// be stopped; it lives until the process ends.
pub fn start_plain_rumqttd(listen: SocketAddr, max_connections: usize) -> std::io::Result<()> {
    let server = ServerSettings {
        name: "plain-rumqttd".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: 1024 * 1024,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        router: rumqttd::RouterConfig {
            max_connections,
            // rumqttd's own batching of QoS 0 messages per link and pass.
            max_outgoing_packet_count: 200,
            // A 1 MiB segment and ten of them per filter: the sizes courtchat ran it with.
            max_segment_size: 1024 * 1024,
            max_segment_count: 10,
            ..rumqttd::RouterConfig::default()
        },
        v4: Some(HashMap::from([("plain".to_owned(), server)])),
        ..rumqttd::Config::default()
    };
    std::thread::Builder::new()
        .name("plain-rumqttd".to_owned())
        .spawn(move || {
            if let Err(err) = rumqttd::Broker::new(config).start() {
                tracing::error!(error = %err, "plain rumqttd stopped");
            }
        })?;
    Ok(())
}
