//! Denials are recorded bounded: a flood of refused CONNECTs with 60 KB client ids grew the
//! data directory and the log by 432 MB in seconds, each denial written whole to the audit
//! chain and the log. Now the gateway cuts every field before anything is written (keeping its
//! length), folds the repeats from one address into a counted entry per window, counts what it
//! cannot record on the chain itself, and exports the three counts in /metrics; the log costs
//! the same bounded lines.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schemas::db::entities::audit_event;
use sea_orm::{EntityTrait, QueryOrder};
use testkit::{TestDatabase, TestStack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FLOOD: usize = 3_000;
const CLIENT_ID_BYTES: usize = 60 * 1024;

/// An MQTT 3.1.1 CONNECT without credentials whose client id is `id`.
fn connect_packet(id: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60]);
    body.extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_be_bytes());
    body.extend_from_slice(id);
    let mut packet = vec![0x10];
    let mut remaining = body.len();
    loop {
        let mut byte = (remaining % 128) as u8;
        remaining /= 128;
        if remaining > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if remaining == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// Sends one CONNECT from `from` and returns the CONNACK's return code (`None`: no CONNACK).
async fn refused(
    from: std::net::Ipv4Addr,
    addr: SocketAddr,
    packet: Arc<Vec<u8>>,
) -> anyhow::Result<Option<u8>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    let mut socket = socket.connect(addr).await?;
    socket.write_all(&packet).await?;
    let mut ack = [0u8; 4];
    let read = tokio::time::timeout(testkit::mqtt::PATIENCE, socket.read_exact(&mut ack)).await?;
    Ok(read.ok().map(|_| ack[3]))
}

/// The database file and its write-ahead log.
fn database_bytes(stack: &TestStack) -> u64 {
    let path = PathBuf::from(stack.config().database.url.trim_start_matches("sqlite://"));
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            std::fs::metadata(file).map_or(0, |meta| meta.len())
        })
        .sum()
}

/// A log sink: what the server writes at the production default level, kept in memory.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    fn len(&self) -> usize {
        self.0.lock().map_or(0, |log| log.len())
    }
}

/// The sum of every sample of `family` in a /metrics text.
fn total(metrics: &str, family: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// (attempted, recorded, folded, dropped) as /metrics has them.
async fn counts(stack: &TestStack) -> anyhow::Result<(u64, u64, u64, u64)> {
    let metrics = reqwest::get(stack.http_url("/metrics"))
        .await?
        .text()
        .await?;
    Ok((
        total(&metrics, "courtchat_connects_refused_total")
            + total(&metrics, "courtchat_denials_total"),
        total(&metrics, "courtchat_denials_recorded_total"),
        total(&metrics, "courtchat_denials_folded_total"),
        total(&metrics, "courtchat_denials_dropped_total"),
    ))
}

// One thread: the server's tasks log on it, so the capturing subscriber below sees them.
#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_refused_connects_is_recorded_bounded_and_accounted_for() -> anyhow::Result<()> {
    let log = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,rumqttd=warn"))
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .finish();
    let _capturing = tracing::subscriber::set_default(subscriber);
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        // A short window, so that the test sees the folded count written without waiting a
        // minute; the flood takes longer than one window, so several are folded.
        config.mqtt.denials.fold_window_secs = 1;
    })
    .await?;
    let before = (database_bytes(&stack), log.len());

    let packet = Arc::new(connect_packet(&[b'x'; CLIENT_ID_BYTES]));
    let addr = stack.mqtt_tcp_addr();
    let mut flood = tokio::task::JoinSet::new();
    let mut codes = Vec::new();
    for _ in 0..FLOOD {
        if flood.len() >= 32
            && let Some(done) = flood.join_next().await
        {
            codes.push(done??);
        }
        flood.spawn(refused(std::net::Ipv4Addr::LOCALHOST, addr, packet.clone()));
    }
    while let Some(done) = flood.join_next().await {
        codes.push(done??);
    }
    // Then a few from each of ten other addresses: each address is folded on its own.
    let others: Vec<std::net::Ipv4Addr> = (2..12).map(|n| [127, 0, 0, n].into()).collect();
    for from in &others {
        for _ in 0..5 {
            codes.push(refused(*from, addr, packet.clone()).await?);
        }
    }
    let attempts = FLOOD + 5 * others.len();
    // Every one refused as not authorized (no token): CONNACK 0x05.
    assert_eq!(codes.len(), attempts);
    assert!(
        codes.iter().all(|code| *code == Some(5)),
        "{:?}",
        &codes[..5]
    );

    // Every denial is accounted for: recorded whole, counted in a folded entry, or dropped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (attempted, recorded, folded, dropped) = loop {
        let counts = counts(&stack).await?;
        let (attempted, recorded, folded, dropped) = counts;
        if attempted >= attempts as u64 && recorded + folded + dropped == attempted {
            break counts;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "never accounted for: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(attempted, attempts as u64);
    let grown = (
        database_bytes(&stack).saturating_sub(before.0),
        log.len().saturating_sub(before.1),
    );
    eprintln!(
        "{attempts} refused CONNECTs with {CLIENT_ID_BYTES}-byte client ids: {recorded} recorded, \
         {folded} folded, {dropped} dropped; database and WAL grew {} bytes, the log {} bytes",
        grown.0, grown.1
    );
    assert!(
        grown.0 <= 4 * 1024 * 1024,
        "the database grew {} bytes",
        grown.0
    );
    assert!(grown.1 <= 1024 * 1024, "the log grew {} bytes", grown.1);

    // The chain says the same, and still verifies.
    let entries = audit_event::Entity::find()
        .order_by_asc(audit_event::Column::Id)
        .all(stack.store().connection())
        .await?;
    let detail = |entry: &audit_event::Model| -> serde_json::Value {
        serde_json::from_str(&entry.detail).unwrap_or_default()
    };
    let whole: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "mqtt.connect.denied")
        .collect();
    let counted = |action: &str| -> u64 {
        entries
            .iter()
            .filter(|e| e.action == action)
            .filter_map(|e| detail(e)["count"].as_u64())
            .sum()
    };
    assert_eq!(whole.len() as u64, recorded);
    assert_eq!(counted("mqtt.connect.denied.folded"), folded);
    assert_eq!(counted("mqtt.denials.dropped"), dropped);
    // Each kept its client id's first bytes and the length it had.
    let first = whole
        .first()
        .expect("the first of the flood is recorded whole");
    assert!(first.actor.len() <= 256 && first.actor.starts_with("xxxx"));
    assert_eq!(detail(first)["actor_len"], CLIENT_ID_BYTES);
    assert!(
        entries
            .iter()
            .all(|e| e.actor.len() <= 256 && e.detail.len() <= 2048)
    );
    for from in &others {
        let prefix = format!("{from}:");
        assert!(
            whole.iter().any(|e| detail(e)["address"]
                .as_str()
                .is_some_and(|a| a.starts_with(&prefix))),
            "{from} has an entry of its own"
        );
    }
    let verification = courtchat::verify_audit(stack.config(), stack.store()).await?;
    assert_eq!(verification.first_broken, None);
    stack.shutdown().await;
    Ok(())
}
