//! Scratch PostgreSQL databases: one created empty for a run and dropped after it, so that a
//! benchmark on PostgreSQL starts each run as fresh as it does on a new SQLite file.

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

use crate::{Backend, StoreError};

/// Creates an empty PostgreSQL database `name` (letters, digits and `_` only) on the server
/// `url` names, and returns its URL: for benchmarks that want a fresh database for each run,
/// as they get a fresh SQLite file.
pub async fn create_postgres_database(url: &str, name: &str) -> Result<String, StoreError> {
    let (admin, quoted) = postgres_admin(url, name).await?;
    let created = admin
        .execute_unprepared(&format!("CREATE DATABASE {quoted}"))
        .await;
    let _ = admin.close().await;
    created.map_err(StoreError::Query)?;
    let mut scratch = url::Url::parse(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
    scratch.set_path(&format!("/{name}"));
    Ok(scratch.to_string())
}

/// Drops the database [`create_postgres_database`] made, closing what is still connected to it.
pub async fn drop_postgres_database(url: &str, name: &str) -> Result<(), StoreError> {
    let (admin, quoted) = postgres_admin(url, name).await?;
    let dropped = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .await;
    let _ = admin.close().await;
    dropped.map(|_| ()).map_err(StoreError::Query)
}

async fn postgres_admin(url: &str, name: &str) -> Result<(DatabaseConnection, String), StoreError> {
    if Backend::of(url)? != Backend::Postgres {
        return Err(StoreError::InvalidUrl(
            "a postgres:// URL is needed".to_owned(),
        ));
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(StoreError::InvalidUrl(format!(
            "{name:?} is not a plain database name"
        )));
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(1).sqlx_logging(false);
    let admin = Database::connect(options)
        .await
        .map_err(StoreError::Connect)?;
    Ok((admin, format!("\"{name}\"")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DatabaseConfig, Store};

    /// A scratch database is created empty, takes the schema, and is dropped; names that are
    /// not plain are refused before anything reaches the server.
    #[tokio::test]
    async fn scratch_postgres_databases_are_created_and_dropped() {
        assert!(matches!(
            create_postgres_database("postgres://127.0.0.1/x", "a;drop").await,
            Err(StoreError::InvalidUrl(_))
        ));
        assert!(matches!(
            create_postgres_database("sqlite://x.db", "plain").await,
            Err(StoreError::InvalidUrl(_))
        ));
        let Ok(base) = std::env::var("COURTCHAT_TEST_POSTGRES_URL") else {
            eprintln!("notice: skipping: COURTCHAT_TEST_POSTGRES_URL is not set");
            return;
        };
        let name = format!("courtchat_scratch_{}", std::process::id());
        let url = create_postgres_database(&base, &name).await.unwrap();
        assert!(url.ends_with(&format!("/{name}")), "{url}");
        let config = DatabaseConfig {
            url,
            ..DatabaseConfig::default()
        };
        let store = Store::open(&config).await.unwrap();
        store.ping().await.unwrap();
        store.close().await;
        drop_postgres_database(&base, &name).await.unwrap();
        assert!(
            Store::connect(&config).await.is_err(),
            "the database is gone"
        );
    }
}
