//! Opens courtchat's database, brings its schema up to date and answers health checks.
//!
//! SQLite (a file under `./data/` by default) needs no other service; PostgreSQL is chosen by
//! giving a `postgres://` URL. The rest of courtchat receives a [`Store`] and never parses a
//! database URL itself, so the choice of backend stays in this crate.

mod direct;
mod private_files;
mod scratch;
mod start_reads;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use direct::{DirectSqlite, SqliteValue};
use schemas::db::Migrator;
use schemas::db::entities::{agent, message};
pub use scratch::{create_postgres_database, drop_postgres_database};
use sea_orm::sea_query::OnConflict;
use sea_orm::sqlx::postgres::PgSslMode;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, Set,
};
use sea_orm_migration::MigratorTrait;
use serde::{Deserialize, Serialize};

/// The `[database]` section of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (relative paths are relative to the working directory) or
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Upper bound on pooled connections.
    pub max_connections: u32,
    /// How long to wait for a connection before an operation fails.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// PostgreSQL: the longest one statement may run before the server cancels it (whole
    /// seconds, 0 for no limit), so that a stuck statement fails instead of holding the chat
    /// pipeline's writer.
    #[serde(with = "secs")]
    pub statement_timeout: Duration,
    /// PostgreSQL: the name courtchat's connections carry in `pg_stat_activity` and the
    /// server's logs.
    pub application_name: String,
    /// PostgreSQL: whether the connection must be encrypted and how the server's certificate is
    /// checked. When absent, the URL's `sslmode` applies (`prefer` if it has none).
    pub ssl_mode: Option<SslMode>,
    /// PostgreSQL: the CA certificate (PEM) the server's certificate must chain to, for
    /// `verify-ca` and `verify-full`. When absent, the system's roots are used.
    pub ssl_root_cert: Option<PathBuf>,
}

/// How a PostgreSQL connection is encrypted, as PostgreSQL's own `sslmode` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never encrypt.
    Disable,
    /// Encrypt when the server offers it.
    Prefer,
    /// Always encrypt; the certificate is not checked.
    Require,
    /// Always encrypt, with a certificate that chains to the trusted roots.
    VerifyCa,
    /// As `verify-ca`, and the certificate names the host connected to.
    VerifyFull,
}

impl From<SslMode> for PgSslMode {
    fn from(mode: SslMode) -> Self {
        match mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/courtchat.db".to_owned(),
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            application_name: "courtchat".to_owned(),
            ssl_mode: None,
            ssl_root_cert: None,
        }
    }
}

/// Durations are written as whole seconds in configuration files.
mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Which database a URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file at this path.
    Sqlite(PathBuf),
    Postgres,
}

impl Backend {
    /// Classifies a database URL, refusing schemes courtchat does not support.
    pub fn of(url: &str) -> Result<Self, StoreError> {
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err(StoreError::InvalidUrl(
                    "an SQLite URL needs a file path, e.g. sqlite://data/courtchat.db".to_owned(),
                ));
            }
            Ok(Backend::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::InvalidUrl(
                "the URL must start with sqlite:// or postgres://".to_owned(),
            ))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database.url is invalid: {0}")]
    InvalidUrl(String),
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create or secure the database file {path}: {source}")]
    CreateFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] DbErr),
    #[error("database migration failed: {0}")]
    Migrate(#[source] DbErr),
    #[error("the database is unreachable: {0}")]
    Unreachable(#[source] DbErr),
    #[error("database query failed: {0}")]
    Query(#[source] DbErr),
    #[error(
        "courtchat copies only its embedded SQLite database; back PostgreSQL up with its own tools (pg_dump, or base backups with WAL archiving)"
    )]
    BackupNotSqlite,
    #[error("{0} exists already; a backup never overwrites a file")]
    BackupExists(PathBuf),
}

/// Whether `error` says the database could not be reached (no connection, a connection lost,
/// the server shutting down or starting up) rather than that it refused a statement: what
/// failed this way may succeed unchanged once the database is back, and trying its parts one
/// by one would only wait longer.
pub fn is_unreachable(error: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    use sea_orm::{ConnAcquireErr, RuntimeErr};
    match error {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout | ConnAcquireErr::ConnectionClosed) => {
            true
        }
        DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(sqlx)) | DbErr::Query(RuntimeErr::SqlxError(sqlx)) => {
            match sqlx.as_ref() {
                Sqlx::Io(_)
                | Sqlx::Tls(_)
                | Sqlx::Protocol(_)
                | Sqlx::PoolTimedOut
                | Sqlx::PoolClosed
                | Sqlx::WorkerCrashed => true,
                // SQLSTATE class 08 (connection exception) and 57P01-57P03 (the server is
                // shutting down, crashed or not accepting connections yet).
                Sqlx::Database(db) => db
                    .code()
                    .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
                _ => false,
            }
        }
        _ => false,
    }
}

/// How long an SQLite connection waits for another's write to end before it fails.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An open database with an up-to-date schema. Cheap to clone: clones share one pool.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    backend: Backend,
    config: DatabaseConfig,
}

impl Store {
    /// Connects without touching the schema; see [`Store::open`] for the usual path.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let backend = Backend::of(&config.url)?;
        let mut url = config.url.clone();
        if let Backend::Sqlite(path) = &backend {
            create_parent_dir(path)?;
            private_files::prepare_database(path).map_err(|source| StoreError::CreateFile {
                path: path.clone(),
                source,
            })?;
            // `mode=rwc` creates the file on first start; without it SQLite refuses a missing file.
            if !url.contains("mode=") {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str("mode=rwc");
            }
        }

        let mut options = ConnectOptions::new(url);
        options
            .max_connections(config.max_connections.max(1))
            .connect_timeout(config.connect_timeout)
            .acquire_timeout(config.connect_timeout)
            // sqlx logs every statement at info level; that is noise, and it could carry message
            // bodies into logs.
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|opts| {
                // WAL lets readers (history, admin API) proceed while the pipeline writes;
                // synchronous=FULL makes a commit durable against power loss, which an
                // acknowledged court record needs.
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
            })
            .map_sqlx_postgres_opts({
                let config = config.clone();
                move |opts| {
                    let mut opts = opts
                        .application_name(&config.application_name)
                        // A startup parameter, so every connection of the pool has it from its
                        // first statement on; PostgreSQL takes milliseconds.
                        .options([(
                            "statement_timeout",
                            config.statement_timeout.as_millis().to_string(),
                        )]);
                    if let Some(mode) = config.ssl_mode {
                        opts = opts.ssl_mode(mode.into());
                    }
                    if let Some(cert) = &config.ssl_root_cert {
                        opts = opts.ssl_root_cert(cert);
                    }
                    opts
                }
            });
        let db = Database::connect(options)
            .await
            .map_err(StoreError::Connect)?;
        Ok(Self {
            db,
            backend,
            config: config.clone(),
        })
    }

    /// A pool of its own on the same database, of at most `max_connections`, for work that
    /// runs on a runtime of its own: a connection's socket belongs to the runtime that opened
    /// it, and its replies wake tasks through that runtime.
    pub async fn separate_pool(&self, max_connections: u32) -> Result<Self, StoreError> {
        let config = DatabaseConfig {
            max_connections,
            ..self.config.clone()
        };
        Self::connect(&config).await
    }

    /// Connects and applies every pending migration.
    pub async fn open(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let store = Self::connect(config).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations and returns how many were applied.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let pending = Migrator::get_pending_migrations(&self.db)
            .await
            .map_err(StoreError::Migrate)?
            .len();
        Migrator::up(&self.db, None)
            .await
            .map_err(StoreError::Migrate)?;
        if pending > 0 {
            tracing::info!(applied = pending, "database migrated");
        }
        Ok(pending)
    }

    /// Succeeds while the database answers a query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await.map_err(StoreError::Unreachable)
    }

    /// Registers members of staff (active, no team), leaving any subject already registered as
    /// it is. Until the admin API manages staff, this is how tools and benchmarks add them.
    pub async fn register_staff(
        &self,
        staff: &[(String, agent::StaffRole)],
    ) -> Result<(), StoreError> {
        // SQLite caps the bound parameters of one statement; 500 rows × 5 columns stays below.
        for chunk in staff.chunks(500) {
            let rows = chunk.iter().map(|(subject, role)| agent::ActiveModel {
                subject: Set(subject.clone()),
                display_name: Set(subject.clone()),
                role: Set(*role),
                team: Set(None),
                active: Set(true),
                created_at: Set(chrono_now()),
                ..Default::default()
            });
            agent::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::column(agent::Column::Subject)
                        .do_nothing()
                        .to_owned(),
                )
                .try_insert()
                .exec(&self.db)
                .await
                .map_err(StoreError::Query)?;
        }
        Ok(())
    }

    /// Every stored entry of a session (messages, notes and events), in its sequence order.
    pub async fn session_entries(
        &self,
        session_id: &str,
    ) -> Result<Vec<message::Model>, StoreError> {
        message::Entity::find()
            .filter(message::Column::SessionId.eq(session_id))
            .order_by_asc(message::Column::Seq)
            .all(&self.db)
            .await
            .map_err(StoreError::Query)
    }

    /// The connection pool, for the crates that read and write rows.
    /// Writes a consistent copy of the embedded SQLite database to `path` while the server runs:
    /// SQLite's `VACUUM INTO` reads one snapshot (writers go on meanwhile) and writes a new,
    /// compacted database file, which opens like the original. Refuses a path that exists, and
    /// PostgreSQL, whose own tools do this better.
    pub async fn backup_to(&self, path: &std::path::Path) -> Result<(), StoreError> {
        if !matches!(self.backend, Backend::Sqlite(_)) {
            return Err(StoreError::BackupNotSqlite);
        }
        if path.exists() {
            return Err(StoreError::BackupExists(path.to_owned()));
        }
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            private_files::create_dir(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        // VACUUM INTO fills an empty file and keeps its mode: made here, only the owner may read
        // the copy. `create_new` also keeps two backups from writing one file.
        private_files::create_empty(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => StoreError::BackupExists(path.to_owned()),
            _ => StoreError::CreateFile {
                path: path.to_owned(),
                source,
            },
        })?;
        let statement = sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Sqlite,
            "VACUUM INTO ?",
            [path.to_string_lossy().into_owned().into()],
        );
        if let Err(err) = self.db.execute_raw(statement).await {
            // Leave no empty or partial copy that looks like a backup.
            let _ = std::fs::remove_file(path);
            return Err(StoreError::Query(err));
        }
        Ok(())
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// On SQLite, a connection of its own to the file, for a thread that runs its statements
    /// itself ([`DirectSqlite`]); `None` on PostgreSQL.
    pub fn direct(&self) -> Option<Result<DirectSqlite, StoreError>> {
        match &self.backend {
            Backend::Sqlite(path) => {
                Some(DirectSqlite::open(path, SQLITE_BUSY_TIMEOUT).map_err(StoreError::Connect))
            }
            Backend::Postgres => None,
        }
    }

    /// Closes every pooled connection; later operations on any clone fail.
    pub async fn close(&self) {
        if let Err(err) = self.db.close_by_ref().await {
            tracing::warn!(error = %err, "closing the database failed");
        }
    }
}

fn chrono_now() -> sea_orm::prelude::DateTimeUtc {
    sea_orm::prelude::DateTimeUtc::from(std::time::SystemTime::now())
}

fn create_parent_dir(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            private_files::create_dir(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_is_told_from_refused() {
        use sea_orm::sqlx::Error as Sqlx;
        use sea_orm::{ConnAcquireErr, RuntimeErr};
        use std::sync::Arc;
        let sqlx = |error: Sqlx| DbErr::Exec(RuntimeErr::SqlxError(Arc::new(error)));
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let unreachable = [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            DbErr::Conn(RuntimeErr::Internal("refused".to_owned())),
            sqlx(Sqlx::Io(io())),
            DbErr::Query(RuntimeErr::SqlxError(Arc::new(Sqlx::Io(io())))),
            sqlx(Sqlx::PoolTimedOut),
            sqlx(Sqlx::PoolClosed),
            sqlx(Sqlx::Protocol("unexpected end".to_owned())),
        ];
        for error in &unreachable {
            assert!(is_unreachable(error), "{error}");
        }
        let refused = [
            DbErr::RecordNotFound("s-1".to_owned()),
            DbErr::Custom("a statement the database refused".to_owned()),
            sqlx(Sqlx::RowNotFound),
            sqlx(Sqlx::ColumnNotFound("seq".to_owned())),
            DbErr::Exec(RuntimeErr::Internal("constraint".to_owned())),
        ];
        for error in &refused {
            assert!(!is_unreachable(error), "{error}");
        }
    }

    #[test]
    fn backend_is_chosen_by_scheme() {
        let cases: &[(&str, Option<Backend>)] = &[
            (
                "sqlite://data/courtchat.db",
                Some(Backend::Sqlite("data/courtchat.db".into())),
            ),
            (
                "sqlite:///var/lib/cc.db?mode=rwc",
                Some(Backend::Sqlite("/var/lib/cc.db".into())),
            ),
            (
                "sqlite:relative.db",
                Some(Backend::Sqlite("relative.db".into())),
            ),
            ("postgres://u:p@127.0.0.1/test", Some(Backend::Postgres)),
            ("postgresql://127.0.0.1/test", Some(Backend::Postgres)),
            ("sqlite://:memory:", None),
            ("sqlite://", None),
            ("mysql://localhost/db", None),
            ("data/courtchat.db", None),
        ];
        for (url, expected) in cases {
            assert_eq!(Backend::of(url).ok(), *expected, "{url}");
        }
    }

    #[tokio::test]
    async fn open_creates_the_directory_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/data/cc.db");
        let config = DatabaseConfig {
            url: format!("sqlite://{}", path.display()),
            ..DatabaseConfig::default()
        };
        let store = Store::open(&config).await.unwrap();
        assert!(path.exists());
        store.ping().await.unwrap();
        assert_eq!(
            store.migrate().await.unwrap(),
            0,
            "a second run applies nothing"
        );
        store.close().await;
        assert!(
            store.ping().await.is_err(),
            "a closed store is not reachable"
        );
    }
}
