//! The `courtchat` binary as an operator meets it: help, configuration, migrations, a port
//! already in use, and stopping on a signal. These run the real executable in a temporary working
//! directory; the in-process stack is tested through `testkit` in tests/.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(30);

/// The binary, run in `dir` with only the given COURTCHAT_* variables.
fn courtchat(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_courtchat"));
    command.current_dir(dir);
    for (key, _) in
        std::env::vars().filter(|(key, _)| key.starts_with("COURTCHAT_") || key == "RUST_LOG")
    {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    command
}

/// Every listener on an ephemeral loopback port.
const EPHEMERAL: [(&str, &str); 3] = [
    ("COURTCHAT_MQTT__TCP__LISTEN", "127.0.0.1:0"),
    ("COURTCHAT_MQTT__WEBSOCKET__LISTEN", "127.0.0.1:0"),
    ("COURTCHAT_ADMIN__LISTEN", "127.0.0.1:0"),
];

fn run(command: &mut Command) -> Output {
    command.output().expect("the courtchat binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(courtchat(dir.path(), &[]).arg("--help"));
    assert!(out.status.success());
    let help = text(&out.stdout);
    for expected in [
        "serve",
        "migrate",
        "config",
        "token",
        "retention",
        "--config",
        "COURTCHAT_",
    ] {
        assert!(
            help.contains(expected),
            "--help does not mention {expected}:\n{help}"
        );
    }
    let out = run(courtchat(dir.path(), &[]).args(["config", "--help"]));
    assert!(text(&out.stdout).contains("print"));
}

#[test]
fn config_print_layers_file_and_environment_and_redacts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cc.toml"),
        "[admin]\nlisten = \"127.0.0.1:18080\"\n[log]\nfilter = \"debug\"\n",
    )
    .unwrap();
    let out = run(courtchat(
        dir.path(),
        &[
            ("COURTCHAT_LOG__FILTER", "warn"),
            (
                "COURTCHAT_DATABASE__URL",
                "postgres://courtchat:hunter2@db:5432/courtchat",
            ),
        ],
    )
    .args(["--config", "cc.toml", "config", "print"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("listen = \"127.0.0.1:18080\""),
        "file value missing:\n{printed}"
    );
    assert!(
        printed.contains("filter = \"warn\""),
        "environment should override the file:\n{printed}"
    );
    assert!(!printed.contains("hunter2"), "password printed:\n{printed}");
    assert!(printed.contains("REDACTED"));
}

#[test]
fn invalid_configuration_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cc.toml"), "[mqtt]\nmax_conections = 5\n").unwrap();
    let out = run(courtchat(dir.path(), &[]).args(["--config", "cc.toml", "serve"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("max_conections"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        courtchat(dir.path(), &[("COURTCHAT_DATABASE__URL", "mysql://x/y")])
            .args(["config", "print"]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("database.url"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn migrate_creates_the_embedded_database_under_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(courtchat(dir.path(), &[]).arg("migrate"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.path().join("data/courtchat.db").is_file());
    // Every migration there is: one file each in schemas (counted, so that a new one does not
    // need this test changed).
    let migrations = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/src/db/migration"
    ))
    .unwrap()
    .filter_map(Result::ok)
    .filter(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        name.starts_with("m2") && name.ends_with(".rs")
    })
    .count();
    assert!(
        text(&out.stderr).contains(&format!("applied={migrations}")),
        "{migrations} migrations: {}",
        text(&out.stderr)
    );

    let again = run(courtchat(dir.path(), &[]).arg("migrate"));
    assert!(again.status.success());
    assert!(
        text(&again.stderr).contains("applied=0"),
        "{}",
        text(&again.stderr)
    );
}

/// `user add` with the password on standard input, as README's quick start shows it.
fn user_add(dir: &Path, args: &[&str], password: &str) -> Output {
    let mut child = courtchat(dir, &[])
        .args(["user", "add"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the courtchat binary runs");
    let mut stdin = child.stdin.take().expect("piped");
    writeln!(stdin, "{password}").unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn user_add_creates_the_first_admin_from_a_password_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = user_add(
        dir.path(),
        &["ann", "--role", "admin"],
        "correct horse battery",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("created ann"),
        "{}",
        text(&out.stdout)
    );
    // The password appears nowhere in what the command printed.
    assert!(!text(&out.stdout).contains("horse") && !text(&out.stderr).contains("horse"));

    let again = user_add(
        dir.path(),
        &["ann", "--role", "agent"],
        "another long password",
    );
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already"),
        "{}",
        text(&again.stderr)
    );
    let short = user_add(dir.path(), &["bob", "--role", "agent"], "short");
    assert!(!short.status.success());
    assert!(
        text(&short.stderr).contains("12"),
        "{}",
        text(&short.stderr)
    );
    let bad = user_add(
        dir.path(),
        &["bob/x", "--role", "agent"],
        "correct horse battery",
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("username"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn audit_verify_names_a_message_the_trail_never_recorded() {
    use schemas::db::entities::{message, session};
    use sea_orm::{ActiveModelTrait, Set};

    let dir = tempfile::tempdir().unwrap();
    assert!(
        run(courtchat(dir.path(), &[]).arg("migrate"))
            .status
            .success()
    );
    let out = run(courtchat(dir.path(), &[]).args(["audit", "verify"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "audit trail intact: 0 entries verified\n\
         conversation matches the audit trail: 0 messages and 0 survey answers checked against \
         their entries\n"
    );

    // A message written straight into the database, as someone with its password could.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = store::DatabaseConfig {
            url: format!(
                "sqlite://{}",
                dir.path().join("data/courtchat.db").display()
            ),
            ..store::DatabaseConfig::default()
        };
        let store = store::Store::connect(&config).await.unwrap();
        let db = store.connection();
        let now = sea_orm::prelude::ChronoUtc::now();
        session::ActiveModel {
            id: Set("s-forged".into()),
            status: Set(session::SessionStatus::Closed),
            applicant: Set("kiosk-1".into()),
            channel: Set("kiosk".into()),
            team: Set(None),
            assigned_agent: Set(None),
            last_seq: Set(1),
            lock_holder: Set(None),
            lock_epoch: Set(0),
            lock_expires_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            closed_at: Set(None),
        }
        .insert(db)
        .await
        .unwrap();
        message::ActiveModel {
            session_id: Set("s-forged".into()),
            seq: Set(1),
            client_msg_id: Set("m-1".into()),
            sender: Set("agent-1".into()),
            kind: Set(message::MessageKind::Text),
            body: Set("Your case was dismissed.".into()),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
        store.close().await;
    });

    let out = run(courtchat(dir.path(), &[]).args(["audit", "verify"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let said = text(&out.stderr);
    assert!(
        said.contains(
            "the stored conversation differs from the audit trail: message s-forged#1 has no \
             audit entry"
        ),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "one line: {said}");
}

#[test]
fn retention_run_dry_run_shows_what_would_go_and_changes_nothing() {
    use schemas::db::entities::{message, retention_policy, session};
    use sea_orm::{ActiveModelTrait, EntityTrait, Set};

    let dir = tempfile::tempdir().unwrap();
    assert!(
        run(courtchat(dir.path(), &[]).arg("migrate"))
            .status
            .success()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = store::DatabaseConfig {
        url: format!(
            "sqlite://{}",
            dir.path().join("data/courtchat.db").display()
        ),
        ..store::DatabaseConfig::default()
    };
    let body = |store: &store::Store| {
        let db = store.connection().clone();
        async move {
            message::Entity::find()
                .one(&db)
                .await
                .unwrap()
                .map(|row| row.body)
        }
    };
    // A session closed on 1 January 2027 and a policy that keeps content 30 days.
    runtime.block_on(async {
        let store = store::Store::connect(&config).await.unwrap();
        let db = store.connection();
        let closed: sea_orm::prelude::DateTimeUtc = "2027-01-01T10:00:00Z".parse().unwrap();
        session::ActiveModel {
            id: Set("s-old".into()),
            status: Set(session::SessionStatus::Closed),
            applicant: Set("kiosk-1".into()),
            channel: Set("kiosk".into()),
            team: Set(None),
            assigned_agent: Set(None),
            last_seq: Set(1),
            lock_holder: Set(None),
            lock_epoch: Set(0),
            lock_expires_at: Set(None),
            created_at: Set(closed),
            updated_at: Set(closed),
            closed_at: Set(Some(closed)),
        }
        .insert(db)
        .await
        .unwrap();
        message::ActiveModel {
            session_id: Set("s-old".into()),
            seq: Set(1),
            client_msg_id: Set("m-1".into()),
            sender: Set("kiosk-1".into()),
            kind: Set(message::MessageKind::Text),
            body: Set("My licence number is 12345".into()),
            created_at: Set(closed),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
        retention_policy::ActiveModel {
            name: Set("default".into()),
            scope: Set("all".into()),
            keep_days: Set(30),
            created_at: Set(closed),
            updated_at: Set(closed),
            ..Default::default()
        }
        .insert(db)
        .await
        .unwrap();
        store.close().await;
    });
    let retention = |args: &[&str]| {
        let mut command = courtchat(dir.path(), &[]);
        command.args(["retention", "run"]).args(args);
        run(&mut command)
    };

    // Not due on 15 January.
    let out = retention(&["--dry-run", "--now", "2027-01-15T00:00:00Z"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "dry run, nothing changed: 0 sessions would purge, 0 kept by a legal hold\n"
    );
    let out = retention(&["--dry-run", "--now", "2027-06-01T00:00:00Z"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "would purge s-old (policy default, 30 days; closed 2027-01-01T10:00:00Z; seq 1-1): \
         1 message, 0 notes, 0 event reasons\n\
         dry run, nothing changed: 1 session would purge, 0 kept by a legal hold\n"
    );
    let store = runtime.block_on(store::Store::connect(&config)).unwrap();
    assert_eq!(
        runtime.block_on(body(&store)).as_deref(),
        Some("My licence number is 12345")
    );

    let out = retention(&["--now", "2027-06-01T00:00:00Z"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("purged s-old (policy default"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(runtime.block_on(body(&store)).as_deref(), Some(""));
    runtime.block_on(store.close());

    let out = retention(&["--now", "next tuesday"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}

#[test]
fn a_port_in_use_is_one_line_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let cases = [
        ("COURTCHAT_MQTT__TCP__LISTEN", "mqtt.tcp.listen"),
        ("COURTCHAT_MQTT__WEBSOCKET__LISTEN", "mqtt.websocket.listen"),
        ("COURTCHAT_ADMIN__LISTEN", "admin.listen"),
    ];
    for (variable, key) in cases {
        let mut env: Vec<(&str, &str)> = EPHEMERAL
            .iter()
            .copied()
            .filter(|(k, _)| *k != variable)
            .collect();
        env.push((variable, &addr));
        let out = run(courtchat(dir.path(), &env).arg("serve"));
        assert_eq!(out.status.code(), Some(1), "{key}");
        let stderr = text(&out.stderr);
        let lines: Vec<_> = stderr
            .lines()
            .filter(|line| line.starts_with("error"))
            .collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].contains(&port.to_string()) && lines[0].contains(key),
            "{stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
}

/// A server started by a test, with its log lines readable as they come.
struct Serving {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Serving {
    fn start(dir: &Path) -> Self {
        let mut child = courtchat(dir, &EPHEMERAL)
            .arg("serve")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("courtchat serve starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for the log line announcing `listener` and returns its address.
    fn address_of(&self, listener: &str) -> SocketAddr {
        let marker = format!("listener=\"{listener}\" addr=");
        loop {
            let line = self
                .lines
                .recv_timeout(PATIENCE)
                .expect("serve logs its listeners");
            if let Some(rest) = line.split(&marker).nth(1) {
                return rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .expect("a socket address");
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn http_status(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn serve_runs_everything_and_stops_cleanly_on_sigterm_and_ctrl_c() {
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let server = Serving::start(dir.path());
        let mqtt = server.address_of("mqtt-tcp");
        server.address_of("mqtt-websocket");
        let admin = server.address_of("admin-http");

        assert!(http_status(admin, "/healthz").contains("200"));
        // Ready once the database answers and the chat pipeline has connected.
        let deadline = std::time::Instant::now() + PATIENCE;
        while !http_status(admin, "/readyz").contains("200") {
            assert!(
                std::time::Instant::now() < deadline,
                "/readyz never became 200"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(TcpStream::connect(mqtt).is_ok());
        assert!(
            dir.path().join("data/courtchat.db").is_file(),
            "the embedded database lives in ./data"
        );

        server.signal(signal);
        let status = server.wait();
        assert_eq!(
            status.code(),
            Some(0),
            "SIG{signal} should stop serve with exit code 0"
        );
    }
}

/// An MQTT 3.1.1 CONNECT with username and password, encoded by hand: the CLI tests have no MQTT
/// client, and the packet is short.
fn connect_packet(client_id: &str, password: &str) -> Vec<u8> {
    let field = |s: &str| {
        let mut out = (s.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out
    };
    let mut body = field("MQTT");
    body.extend([4, 0b1100_0010, 0, 60]); // level 4; username, password, clean session; keepalive 60
    body.extend(field(client_id));
    body.extend(field(client_id));
    body.extend(field(password));
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

/// The CONNACK return code the server answers `packet` with.
fn connack_code(addr: SocketAddr, packet: &[u8]) -> u8 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(packet).unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack[0], 0x20, "not a CONNACK: {connack:?}");
    connack[3]
}

#[test]
fn token_mints_what_serve_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(courtchat(dir.path(), &[]).args([
        "token",
        "--sub",
        "kiosk-1",
        "--role",
        "applicant",
        "--ttl",
        "10m",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
    assert!(
        dir.path().join("data/token-secret").is_file(),
        "the signing secret is created on first use"
    );

    let server = Serving::start(dir.path());
    let mqtt = server.address_of("mqtt-tcp");
    assert_eq!(
        connack_code(mqtt, &connect_packet("kiosk-1", &token)),
        0,
        "accepted"
    );
    assert_eq!(
        connack_code(mqtt, &connect_packet("kiosk-2", &token)),
        5,
        "another client id: not authorized"
    );
    assert_eq!(
        connack_code(mqtt, &connect_packet("kiosk-1", "forged")),
        4,
        "bad credentials"
    );
    server.signal("TERM");
    assert_eq!(server.wait().code(), Some(0));

    // The two refusals are in the audit trail, and its chain verifies.
    let out = run(courtchat(dir.path(), &[]).args(["audit", "verify"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("intact: 2 entries"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("conversation matches the audit trail: 0 messages"),
        "{}",
        text(&out.stdout)
    );

    for (role, ttl) in [
        ("wizard", "1h"),
        ("anonymous", "1h"),
        ("agent", "0"),
        ("agent", "5y"),
    ] {
        let out = run(courtchat(dir.path(), &[])
            .args(["token", "--sub", "kiosk-1", "--role", role, "--ttl", ttl]));
        assert_eq!(
            out.status.code(),
            Some(if role == "anonymous" { 1 } else { 2 }),
            "--role {role} --ttl {ttl} accepted"
        );
        assert!(
            text(&out.stderr).contains(if role == "agent" { ttl } else { role }),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn backup_copies_a_running_server_and_health_follows_readyz() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serving::start(dir.path());
    let admin = server.address_of("admin-http").to_string();
    let health =
        || run(courtchat(dir.path(), &[("COURTCHAT_ADMIN__LISTEN", &admin)]).arg("health"));
    let deadline = std::time::Instant::now() + PATIENCE;
    while !health().status.success() {
        assert!(std::time::Instant::now() < deadline, "never healthy");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Something to copy, written while the server runs; then the copy, taken while it runs.
    assert!(
        user_add(
            dir.path(),
            &["ann", "--role", "admin"],
            "a long passphrase here"
        )
        .status
        .success()
    );
    let copy = dir.path().join("backups/courtchat-copy.db");
    let out = run(courtchat(dir.path(), &[]).arg("backup").arg(&copy));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(copy.is_file());
    // The record is the server user's alone: the data directory, the database and its WAL,
    // and a backup with the directory made for it (under the usual umask SQLite made them
    // 0644 and the directories were 0755).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &std::path::Path| {
            std::fs::metadata(path)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
                .permissions()
                .mode()
                & 0o777
        };
        let data = dir.path().join("data");
        for (path, expected) in [
            (data.clone(), 0o700),
            (data.join("courtchat.db"), 0o600),
            (data.join("courtchat.db-wal"), 0o600),
            (copy.parent().unwrap().to_owned(), 0o700),
            (copy.clone(), 0o600),
        ] {
            assert_eq!(mode(&path), expected, "{}", path.display());
        }
    }
    let again = run(courtchat(dir.path(), &[]).arg("backup").arg(&copy));
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("exists already"),
        "{}",
        text(&again.stderr)
    );

    // The copy is a database of its own: the staff member is there and the audit chain (the
    // key file is the server's) verifies.
    let url = format!("sqlite://{}", copy.display());
    let verified =
        run(courtchat(dir.path(), &[("COURTCHAT_DATABASE__URL", &url)]).args(["audit", "verify"]));
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    let report = text(&verified.stdout);
    assert!(
        report.starts_with("audit trail intact: 1 entries verified"),
        "{report}"
    );

    server.signal("TERM");
    server.wait();
    let down = health();
    assert_eq!(down.status.code(), Some(1));
    assert!(
        text(&down.stderr).contains("not ready"),
        "{}",
        text(&down.stderr)
    );

    // PostgreSQL is backed up with its own tools; nothing is connected to to say so.
    let postgres = run(courtchat(
        dir.path(),
        &[(
            "COURTCHAT_DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/none",
        )],
    )
    .arg("backup")
    .arg(dir.path().join("pg.db")));
    assert!(!postgres.status.success());
    assert!(
        text(&postgres.stderr).contains("pg_dump"),
        "{}",
        text(&postgres.stderr)
    );
}
