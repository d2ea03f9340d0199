//! courtchat as separate processes, with real clients:
//! - durability: every message acknowledged as accepted survives `kill -9` of the server, taken
//!   while an applicant is writing as fast as it can; the check reads the database the restarted
//!   server uses; on the embedded SQLite and, when `COURTCHAT_TEST_POSTGRES_URL` is set, on
//!   PostgreSQL;
//! - the chat pipeline as its own process (`courtchat bridge`) beside `courtchat serve`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

const PATIENCE: Duration = Duration::from_secs(30);

fn courtchat(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_courtchat"));
    command.current_dir(dir);
    for (key, _) in
        std::env::vars().filter(|(key, _)| key.starts_with("COURTCHAT_") || key == "RUST_LOG")
    {
        command.env_remove(key);
    }
    command.envs([
        ("COURTCHAT_MQTT__TCP__LISTEN", "127.0.0.1:0"),
        ("COURTCHAT_MQTT__WEBSOCKET__LISTEN", "127.0.0.1:0"),
        ("COURTCHAT_ADMIN__LISTEN", "127.0.0.1:0"),
        // The writer below is a load generator, not a person.
        ("COURTCHAT_BRIDGE__RATE_PER_SECOND", "100000"),
        ("COURTCHAT_BRIDGE__RATE_BURST", "100000"),
    ]);
    command
}

/// Starts `courtchat serve` on `database` and returns it with its MQTT address once the
/// pipeline is ready.
fn serve(dir: &Path, database: &str) -> (Child, SocketAddr) {
    let mut child = courtchat(dir)
        .env("COURTCHAT_DATABASE__URL", database)
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("serve starts");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut mqtt = None;
    loop {
        let line = rx.recv_timeout(PATIENCE).expect("serve logs its start");
        if let Some(rest) = line.split("listener=\"mqtt-tcp\" addr=").nth(1) {
            mqtt = rest.split_whitespace().next().and_then(|a| a.parse().ok());
        }
        if line.contains("chat pipeline connected") {
            break;
        }
    }
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        while let Ok(line) = rx.recv() {
            if std::env::var("CRASH_DEBUG").is_ok() {
                eprintln!("server: {line}");
            }
        }
    });
    (child, mqtt.expect("the MQTT address was logged"))
}

fn token(dir: &Path, subject: &str) -> String {
    let out = courtchat(dir)
        .args([
            "token",
            "--sub",
            subject,
            "--role",
            "applicant",
            "--ttl",
            "1h",
        ])
        .output()
        .expect("token runs");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// An applicant connected to the server at `addr`, with its acknowledgements on a channel.
async fn applicant(
    dir: &Path,
    addr: SocketAddr,
) -> anyhow::Result<(
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    tokio::task::JoinHandle<()>,
)> {
    let mut options = MqttOptions::new("kiosk-crash", addr.ip().to_string(), addr.port());
    options.set_credentials("kiosk-crash", token(dir, "kiosk-crash"));
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 10_000);
    client
        .subscribe("cc/v1/clients/kiosk-crash/ack", QoS::AtLeastOnce)
        .await?;
    let (acks_tx, acks) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let driver = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(publish)) = event
                && let Ok(value) = serde_json::from_slice(&publish.payload)
                && acks_tx.send(value).is_err()
            {
                return;
            }
        }
    });
    Ok((client, acks, driver))
}

fn record(accepted: &mut BTreeMap<String, u64>, ack: &serde_json::Value) {
    if ack["status"] == "accepted" && ack["seq"].is_u64() {
        accepted.insert(
            ack["client_msg_id"].as_str().unwrap_or_default().to_owned(),
            ack["seq"].as_u64().unwrap_or_default(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let database = format!(
        "sqlite://{}",
        dir.path().join("data/courtchat.db").display()
    );
    acknowledged_messages_survive_kill_9(dir.path(), &database).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9_on_postgres() -> anyhow::Result<()> {
    let Ok(server) = std::env::var("COURTCHAT_TEST_POSTGRES_URL") else {
        eprintln!(
            "notice: skipping the PostgreSQL crash test: COURTCHAT_TEST_POSTGRES_URL is not set"
        );
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let database = ScratchPostgres::create(&server).await?;
    acknowledged_messages_survive_kill_9(dir.path(), &database.url).await?;
    database.drop().await
}

/// A database of its own on the PostgreSQL server, for one test.
struct ScratchPostgres {
    server: String,
    name: String,
    url: String,
}

impl ScratchPostgres {
    async fn create(server: &str) -> anyhow::Result<Self> {
        use sea_orm::ConnectionTrait;
        let name = format!("courtchat_crash_{}", std::process::id());
        let admin = sea_orm::Database::connect(server).await?;
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        admin.close().await?;
        let mut url = url::Url::parse(server)?;
        url.set_path(&name);
        Ok(Self {
            server: server.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    async fn drop(self) -> anyhow::Result<()> {
        use sea_orm::ConnectionTrait;
        let admin = sea_orm::Database::connect(&self.server).await?;
        admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await?;
        admin.close().await?;
        Ok(())
    }
}

/// Three `kill -9`s of `courtchat serve` on `database` while an applicant writes as fast as it
/// can; then every message acknowledged as accepted is stored with its sequence number, with no
/// gap, and the audit chain is intact.
async fn acknowledged_messages_survive_kill_9(dir: &Path, database: &str) -> anyhow::Result<()> {
    let mut session = String::new();
    let mut accepted: BTreeMap<String, u64> = BTreeMap::new();
    // Three crashes, each after a different number of acknowledgements, so the plug is pulled
    // at different points of the batching cycle.
    for (round, kill_after) in [50usize, 300, 1000].into_iter().enumerate() {
        let (mut server, addr) = serve(dir, database);
        let (client, mut acks, driver) = applicant(dir, addr).await?;
        if session.is_empty() {
            let open = serde_json::json!({"client_msg_id": "open", "channel": "kiosk"});
            client
                .publish(
                    "cc/v1/open/kiosk-crash",
                    QoS::AtLeastOnce,
                    false,
                    open.to_string(),
                )
                .await?;
            let opened = tokio::time::timeout(PATIENCE, acks.recv())
                .await?
                .expect("an answer to open");
            session = opened["session_id"]
                .as_str()
                .expect("a session id")
                .to_owned();
        }
        // Write as fast as possible.
        let submit = format!("cc/v1/sessions/{session}/submit/kiosk-crash");
        let writer = {
            let client = client.clone();
            tokio::spawn(async move {
                for n in 0..20_000 {
                    let message = serde_json::json!({"client_msg_id": format!("r{round}-m{n}"), "type": "message", "body": format!("line {n}")});
                    if client
                        .publish(&submit, QoS::AtLeastOnce, false, message.to_string())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
        };
        let mut this_round = 0;
        while this_round < kill_after {
            let ack = tokio::time::timeout(PATIENCE, acks.recv())
                .await?
                .expect("acknowledgements keep coming");
            record(&mut accepted, &ack);
            this_round += 1;
        }
        let kill = Command::new("kill")
            .args(["-9", &server.id().to_string()])
            .status()?;
        assert!(kill.success());
        server.wait()?;
        // Acknowledgements already on their way in the socket are acknowledgements too.
        while let Ok(Some(ack)) =
            tokio::time::timeout(Duration::from_millis(300), acks.recv()).await
        {
            record(&mut accepted, &ack);
        }
        writer.abort();
        driver.abort();
    }

    // Restart on the same data: every acknowledged message is there, with its sequence number.
    let (mut restarted, _) = serve(dir, database);
    let config = courtchat::Config::load(
        None,
        [("COURTCHAT_DATABASE__URL".to_owned(), database.to_owned())],
    )?;
    let config = courtchat::Config {
        audit: courtchat::AuditConfig {
            key: String::new(),
            key_file: dir.join("data/audit-key"),
            ..Default::default()
        },
        ..config
    };
    let store = store::Store::connect(&config.database).await?;
    use schemas::db::entities::message;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    let rows = message::Entity::find()
        .filter(message::Column::SessionId.eq(&session))
        .order_by_asc(message::Column::Seq)
        .all(store.connection())
        .await?;
    let stored: BTreeMap<String, u64> = rows
        .iter()
        .map(|m| (m.client_msg_id.clone(), m.seq as u64))
        .collect();
    let missing: Vec<_> = accepted
        .iter()
        .filter(|(cmid, seq)| stored.get(*cmid) != Some(seq))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages were lost or renumbered: {missing:?}",
        missing.len(),
        accepted.len()
    );
    // The stored order has no gaps, and the audit chain survived the crashes intact.
    let seqs: Vec<u64> = rows.iter().map(|m| m.seq as u64).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let verification = courtchat::verify_audit(&config, &store).await?;
    assert_eq!(verification.first_broken, None);
    eprintln!(
        "{} messages acknowledged across three kill -9s; {} entries stored",
        accepted.len(),
        rows.len()
    );
    store.close().await;
    restarted.kill()?;
    restarted.wait()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_as_its_own_process() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The server without its in-process pipeline...
    let mut server = courtchat(dir.path())
        .env("COURTCHAT_BRIDGE__IN_PROCESS", "false")
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let stderr = server.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("serve logs its start")?;
        if let Some(rest) = line.split("listener=\"mqtt-tcp\" addr=").nth(1) {
            break rest.split_whitespace().next().unwrap_or_default().parse()?;
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    // ...and `courtchat bridge` connecting to it.
    let mut bridge = courtchat(dir.path())
        .args(["bridge", "--broker", &addr.to_string()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let stderr = bridge.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    while !lines
        .next()
        .expect("bridge logs its start")?
        .contains("chat pipeline connected")
    {}
    std::thread::spawn(move || lines.for_each(drop));

    let (client, mut acks, driver) = applicant(dir.path(), addr).await?;
    let open = serde_json::json!({"client_msg_id": "open", "channel": "phone"});
    client
        .publish(
            "cc/v1/open/kiosk-crash",
            QoS::AtLeastOnce,
            false,
            open.to_string(),
        )
        .await?;
    let opened = tokio::time::timeout(PATIENCE, acks.recv())
        .await?
        .expect("an answer to open");
    let session = opened["session_id"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let message = serde_json::json!({"client_msg_id": "m1", "type": "message", "body": "hello"});
    client
        .publish(
            format!("cc/v1/sessions/{session}/submit/kiosk-crash"),
            QoS::AtLeastOnce,
            false,
            message.to_string(),
        )
        .await?;
    let answer = tokio::time::timeout(PATIENCE, acks.recv())
        .await?
        .expect("an answer to the message");
    assert_eq!(
        (answer["status"].as_str(), answer["seq"].as_u64()),
        (Some("accepted"), Some(2))
    );
    driver.abort();

    for child in [&mut bridge, &mut server] {
        let status = Command::new("kill")
            .args(["-s", "TERM", &child.id().to_string()])
            .status()?;
        assert!(status.success());
    }
    assert_eq!(bridge.wait()?.code(), Some(0), "bridge stops cleanly");
    assert_eq!(server.wait()?.code(), Some(0), "serve stops cleanly");
    Ok(())
}
