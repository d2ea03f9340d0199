//! The `courtchat` command: parses arguments, loads the configuration and runs one subcommand.
//! Everything it runs lives in the libraries; this file only wires and reports.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use courtchat::{Config, Listeners, Server};

mod bench_brokers;
mod bench_child;
mod bench_cli;
mod bench_connections;
mod bench_knee;
mod bench_reference;

/// courtchat: real-time help-desk chat for court licensing, on MQTT, with a durable record.
///
/// With no configuration at all, `courtchat serve` runs everything in one process on an embedded
/// SQLite database under ./data, with MQTT on 127.0.0.1:1883 (WebSocket: 127.0.0.1:8083/mqtt)
/// and the admin HTTP API on 127.0.0.1:8080.
#[derive(Parser)]
#[command(name = "courtchat", version, propagate_version = true)]
struct Cli {
    /// A TOML configuration file (see deploy/courtchat.example.toml). Settings in it override the
    /// built-in defaults; COURTCHAT_* environment variables override both, with `__` between
    /// nested keys, e.g. COURTCHAT_MQTT__TCP__LISTEN=0.0.0.0:1883.
    #[arg(long, short, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: MQTT listeners, admin HTTP API, database migrations.
    ///
    /// Stops cleanly (exit code 0) on Ctrl-C or SIGTERM.
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Run the chat pipeline as its own process, as an MQTT client of a running gateway.
    ///
    /// Set `bridge.in_process = false` on the server, and run this with the same configuration
    /// (database, token key, audit key). Stops cleanly on Ctrl-C or SIGTERM.
    Bridge {
        /// The gateway's MQTT TCP address; defaults to the configured listener, on loopback.
        #[arg(long, value_name = "HOST:PORT")]
        broker: Option<std::net::SocketAddr>,
    },
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Purge closed sessions' content past their retention policy, as the server does on its
    /// schedule.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Manage help-desk staff from the server (the first admin of a fresh install).
    #[command(subcommand)]
    User(UserCommand),
    /// Measure courtchat against other MQTT brokers in one run (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench_cli::BenchCommand),
    /// Write a consistent copy of the embedded SQLite database to PATH while the server runs.
    ///
    /// The keys are not in the database: back up audit.key_file (the audit chain's HMAC key)
    /// and mqtt.auth.secret_file (the token key) apart from it, and keep the audit key out of
    /// the database backups (whoever holds both could forge the record). For PostgreSQL, use
    /// its own tools (pg_dump, or base backups with WAL archiving).
    Backup {
        /// Where to write the copy; it must not exist.
        path: std::path::PathBuf,
    },
    /// Exit 0 if the server's admin listener answers /readyz with 200 (database and chat
    /// pipeline ready), 1 otherwise: a container health check.
    Health,
    /// Print a token (JWT) for an MQTT client, signed with the configured key.
    ///
    /// The client connects with its client id equal to SUBJECT and the token as its password.
    Token {
        /// The subject, which is also the client id the token may connect as.
        #[arg(long)]
        sub: String,
        /// applicant, agent, supervisor, admin or service.
        #[arg(long)]
        role: broker::Role,
        /// How long the token is valid: a number with s, m, h or d (e.g. 30m, 12h).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
    },
}

fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30m or 12h"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?}; use s, m, h or d")),
    };
    match value.checked_mul(seconds) {
        Some(0) | None => Err(format!("{text:?} is not a positive duration")),
        Some(total) => Ok(std::time::Duration::from_secs(total)),
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the HMAC chain of the audit trail and name the first entry that does not verify
    /// (changed, deleted, inserted or reordered), and check the stored messages and survey
    /// answers against the entries that recorded them (changed, deleted, added). Exit code 1 if
    /// anything differs.
    Verify,
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Purge now every closed session whose policy's days are past and that no legal hold
    /// keeps: message and note bodies, reasons, survey comments go; each purge is recorded on
    /// the audit chain. Prints each session with its policy and what went.
    Run {
        /// Only print what would go; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Decide as if it were this time (RFC 3339), e.g. to preview what goes next month.
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        now: Option<chrono::DateTime<chrono::Utc>>,
    },
}

fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&chrono::Utc))
        .map_err(|_| format!("{text:?} is not an RFC 3339 time like 2027-06-01T00:00:00Z"))
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a member of staff who signs in with a password (`POST /v1/login`).
    ///
    /// The password is read from standard input (one line, at least 12 characters), never from
    /// the command line, where other users could read it: e.g.
    /// `courtchat user add ann --role admin < password-file`.
    Add {
        /// The sign-in name: letters, digits, '.', '_', '-', '@'; also the MQTT client id.
        name: String,
        /// agent, supervisor or admin.
        #[arg(long, value_enum)]
        role: StaffRoleArg,
        /// The name others see; the sign-in name if not given.
        #[arg(long)]
        display_name: Option<String>,
        /// The team the person works in.
        #[arg(long)]
        team: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StaffRoleArg {
    Agent,
    Supervisor,
    Admin,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration as TOML, with secrets redacted.
    Print,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, no backtrace: the message names what failed and what to change.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref(), std::env::vars())?;
    match cli.command {
        Command::Config(ConfigCommand::Print) => {
            let rendered = config.to_redacted_toml();
            print!("{rendered}");
            if !rendered.ends_with('\n') {
                println!();
            }
            Ok(())
        }
        Command::Token { sub, role, ttl } => {
            if role == broker::Role::Anonymous {
                anyhow::bail!("tokens cannot carry the anonymous role");
            }
            println!("{}", courtchat::mint_token(&config, &sub, role, ttl)?);
            Ok(())
        }
        Command::Migrate => runtime()?.block_on(migrate(config)),
        Command::Bridge { broker } => runtime()?.block_on(run_bridge(config, broker)),
        Command::Audit(AuditCommand::Verify) => runtime()?.block_on(verify_audit(config)),
        Command::Retention(RetentionCommand::Run { dry_run, now }) => {
            let now = now.unwrap_or_else(chrono::Utc::now);
            let report = runtime()?.block_on(courtchat::run_retention(&config, now, dry_run))?;
            print_purge(&report);
            Ok(())
        }
        Command::User(UserCommand::Add {
            name,
            role,
            display_name,
            team,
        }) => {
            let password = read_password()?;
            let role = match role {
                StaffRoleArg::Agent => courtchat::StaffRole::Agent,
                StaffRoleArg::Supervisor => courtchat::StaffRole::Supervisor,
                StaffRoleArg::Admin => courtchat::StaffRole::Admin,
            };
            let new = courtchat::NewStaff {
                display_name: display_name.unwrap_or_else(|| name.clone()),
                username: name,
                role,
                team,
                capacity: None,
                password,
            };
            let created = runtime()?.block_on(courtchat::add_staff(&config, new))?;
            println!("created {} ({:?})", created.subject, created.role);
            Ok(())
        }
        Command::Bench(command) => {
            init_logging(&config);
            bench_cli::run(config, command)
        }
        Command::Serve => runtime()?.block_on(serve(config)),
        Command::Backup { path } => runtime()?.block_on(backup(config, path)),
        Command::Health => {
            let patience = std::time::Duration::from_secs(3);
            match runtime()?.block_on(courtchat::health::ready(config.admin.listen, patience)) {
                Ok(()) => Ok(()),
                Err(why) => {
                    eprintln!("not ready: {why}");
                    std::process::exit(1);
                }
            }
        }
    }
}

/// One line of standard input, without its line ending: the password of `user add`.
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password (it will show as you type; pipe it in to avoid that): ");
        std::io::stderr().flush().ok();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    Ok(password)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|filter| tracing_subscriber::EnvFilter::try_new(filter).ok())
        // Validated when the configuration was loaded.
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&config.log.filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    let store = store::Store::connect(&config.database).await?;
    let applied = store.migrate().await?;
    store.close().await;
    tracing::info!(applied, "database schema is up to date");
    Ok(())
}

async fn backup(config: Config, path: std::path::PathBuf) -> anyhow::Result<()> {
    init_logging(&config);
    // Said before connecting: a PostgreSQL server need not be reachable to learn this.
    if !matches!(
        store::Backend::of(&config.database.url)?,
        store::Backend::Sqlite(_)
    ) {
        return Err(store::StoreError::BackupNotSqlite.into());
    }
    let store = store::Store::connect(&config.database).await?;
    let copied = store.backup_to(&path).await;
    store.close().await;
    copied?;
    tracing::info!(path = %path.display(), "database copied; back up the audit and token keys apart from it");
    Ok(())
}

async fn verify_audit(config: Config) -> anyhow::Result<()> {
    let store = store::Store::connect(&config.database).await?;
    let verification = courtchat::verify_audit(&config, &store).await;
    store.close().await;
    let courtchat::Verification {
        entries,
        first_broken,
        records,
        first_difference,
    } = verification?;
    let rows = format!(
        "{} and {}",
        counted(records.messages, "message", "messages"),
        counted(records.surveys, "survey answer", "survey answers"),
    );
    let purged = match records.purged {
        0 => String::new(),
        n => format!(
            "; {} whose content a retention policy purged, as the chain recorded",
            counted(n, "row", "rows")
        ),
    };
    let unverifiable = match records.unverifiable {
        0 => String::new(),
        n => format!(
            "; {} recorded before entries carried content digests: present, content not checkable",
            counted(n, "row", "rows")
        ),
    };
    // The first problem in chain order: rows are only checked up to a broken entry, so a
    // difference, if any, comes before the break.
    match (first_difference, first_broken) {
        (None, None) => {
            println!("audit trail intact: {entries} entries verified");
            println!(
                "conversation matches the audit trail: {rows} checked against their entries\
                 {purged}{unverifiable}"
            );
            Ok(())
        }
        (Some(difference), broken) => {
            let broken = broken
                .map(|(id, reason)| format!("; the chain itself breaks at entry {id}: {reason}"))
                .unwrap_or_default();
            anyhow::bail!(
                "the stored conversation differs from the audit trail: {difference}; {entries} \
                 entries verified, {rows} matched before it{unverifiable}{broken}"
            )
        }
        (None, Some((id, reason))) => anyhow::bail!(
            "audit trail broken at entry {id}: {reason} ({entries} entries before it verified)"
        ),
    }
}

/// One line per session that went (or would go), then a summary.
fn print_purge(report: &courtchat::PurgeReport) {
    let verb = if report.dry_run {
        "would purge"
    } else {
        "purged"
    };
    for session in &report.purged {
        let seqs = match (session.first_seq, session.last_seq) {
            (Some(first), Some(last)) => format!("seq {first}-{last}"),
            _ => "no entries".to_owned(),
        };
        println!(
            "{verb} {} (policy {}, {} days; closed {}; {seqs}): {}, {}, {}{}",
            session.session_id,
            session.policy,
            session.keep_days,
            session
                .closed_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            counted(session.messages, "message", "messages"),
            counted(session.notes, "note", "notes"),
            counted(session.events, "event reason", "event reasons"),
            if session.survey_comment {
                ", the survey comment"
            } else {
                ""
            },
        );
    }
    for held in &report.held {
        println!("kept {held}: due, but under a legal hold");
    }
    println!(
        "{}: {} {verb}, {} kept by a legal hold",
        if report.dry_run {
            "dry run, nothing changed"
        } else {
            "done"
        },
        counted(report.purged.len() as u64, "session", "sessions"),
        report.held.len(),
    );
}

fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

async fn run_bridge(config: Config, broker: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    init_logging(&config);
    let mut stop = ShutdownSignal::install()?;
    let store = store::Store::open(&config.database).await?;
    let pipeline = courtchat::pipeline(&config, &store).await?;
    let broker = broker.unwrap_or(config.mqtt.tcp.listen);
    let link = courtchat::pipeline_link(&config, broker);
    tracing::info!(%broker, "chat pipeline starting");
    pipeline.run(link, async move { stop.recv().await }).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    // Installed before anything slow (migrations), so that a signal during start-up also ends
    // in a clean exit instead of the default kill.
    let mut stop = ShutdownSignal::install()?;
    let listeners = Listeners::bind(&config).await?;
    let mut server = tokio::select! {
        server = Server::start(config, listeners) => server?,
        _ = stop.recv() => {
            tracing::info!("shutdown requested during start-up");
            return Ok(());
        }
    };
    tokio::select! {
        _ = stop.recv() => {
            tracing::info!("shutdown requested");
            server.shutdown().await;
            Ok(())
        }
        err = server.failed() => {
            server.shutdown().await;
            Err(err.into())
        }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, registered when installed.
struct ShutdownSignal {
    #[cfg(unix)]
    signals: [tokio::signal::unix::Signal; 2],
}

impl ShutdownSignal {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                signals: [
                    signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
                    signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let [interrupt, terminate] = &mut self.signals;
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
