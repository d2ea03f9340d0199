//! The schema, on SQLite always and on PostgreSQL when `COURTCHAT_TEST_POSTGRES_URL` is set:
//! migrations apply through the real server start, and the constraints the chat pipeline relies
//! on hold.

use schemas::db::entities::{message, session};
use sea_orm::prelude::ChronoUtc as Utc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseBackend, EntityTrait, Set, Statement};
use testkit::{TestDatabase, TestStack};

async fn check_schema(database: TestDatabase) -> anyhow::Result<()> {
    let stack = TestStack::start_with(database, |_| {}).await?;
    let db = stack.store().connection();

    // Migrations ran at start; running them again applies nothing.
    assert_eq!(stack.store().migrate().await?, 0);

    let now = Utc::now();
    session::ActiveModel {
        id: Set("s-1".into()),
        status: Set(session::SessionStatus::Queued),
        applicant: Set("applicant-1".into()),
        channel: Set("kiosk".into()),
        team: Set(None),
        assigned_agent: Set(None),
        last_seq: Set(0),
        lock_holder: Set(None),
        lock_epoch: Set(0),
        lock_expires_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        closed_at: Set(None),
    }
    .insert(db)
    .await?;

    let msg = |seq: i64, client_msg_id: &str| message::ActiveModel {
        session_id: Set("s-1".into()),
        seq: Set(seq),
        client_msg_id: Set(client_msg_id.into()),
        sender: Set("applicant-1".into()),
        kind: Set(message::MessageKind::Text),
        body: Set("hello".into()),
        created_at: Set(now),
        ..Default::default()
    };
    msg(1, "c-1").insert(db).await?;
    msg(2, "c-2").insert(db).await?;

    // One total order: a second message with an existing sequence number is refused.
    assert!(
        msg(2, "c-3").insert(db).await.is_err(),
        "duplicate (session, seq) accepted"
    );
    // Idempotency: the same sender and client message id cannot be stored twice.
    assert!(
        msg(3, "c-1").insert(db).await.is_err(),
        "duplicate client message id accepted"
    );
    // A message must belong to an existing session.
    let orphan = message::ActiveModel {
        session_id: Set("no-such-session".into()),
        ..msg(1, "c-9")
    };
    assert!(
        orphan.insert(db).await.is_err(),
        "message without a session accepted"
    );

    let stored = message::Entity::find().all(db).await?;
    assert_eq!(stored.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);

    // The enumerations round-trip as readable strings.
    let raw = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT status FROM sessions WHERE id = 's-1'",
        ))
        .await?
        .expect("the session row exists");
    assert_eq!(raw.try_get::<String>("", "status")?, "queued");

    // Deleting a session (retention) removes its messages with it.
    session::Entity::delete_by_id("s-1").exec(db).await?;
    assert!(message::Entity::find().all(db).await?.is_empty());

    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn schema_on_sqlite() -> anyhow::Result<()> {
    check_schema(TestDatabase::sqlite()?).await
}

#[tokio::test]
async fn schema_on_postgres() -> anyhow::Result<()> {
    let Some(url) = testkit::postgres_url() else {
        return Ok(());
    };
    check_schema(TestDatabase::postgres(&url).await?).await
}

#[tokio::test]
async fn readyz_on_postgres() -> anyhow::Result<()> {
    let Some(url) = testkit::postgres_url() else {
        return Ok(());
    };
    let stack = TestStack::start_with(TestDatabase::postgres(&url).await?, |_| {}).await?;
    assert_eq!(reqwest::get(stack.http_url("/readyz")).await?.status(), 200);
    stack.shutdown().await;
    Ok(())
}

/// The connection settings a deployment sets reach PostgreSQL: the name the connections carry,
/// the statement timeout (which cancels a statement that runs too long) and TLS; a CA that did
/// not sign the server's certificate is refused when the certificate must be verified.
#[tokio::test]
async fn postgres_connection_settings_take_effect() -> anyhow::Result<()> {
    let Some(url) = testkit::postgres_url() else {
        return Ok(());
    };
    let database = TestDatabase::postgres(&url).await?;
    let config = store::DatabaseConfig {
        url: database.url(),
        application_name: "courtchat-settings-test".to_owned(),
        statement_timeout: std::time::Duration::from_secs(1),
        ssl_mode: Some(store::SslMode::Require),
        ..store::DatabaseConfig::default()
    };
    let store = store::Store::connect(&config).await?;
    let db = store.connection();
    let row = db
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT current_setting('application_name') AS name, \
                    current_setting('statement_timeout') AS timeout, \
                    (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS ssl",
        ))
        .await?
        .expect("one row");
    assert_eq!(
        row.try_get::<String>("", "name")?,
        "courtchat-settings-test"
    );
    assert_eq!(row.try_get::<String>("", "timeout")?, "1s");
    assert!(
        row.try_get::<bool>("", "ssl")?,
        "the connection is encrypted"
    );

    let slow = db
        .execute_unprepared("SELECT pg_sleep(5)")
        .await
        .expect_err("the statement timeout cancels it");
    assert!(
        slow.to_string().contains("statement timeout"),
        "cancelled for its timeout: {slow}"
    );
    store.close().await;

    // A CA of our own did not sign the server's certificate.
    let stranger = testkit::TestCertificate::generate()?;
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &stranger.pem)?;
    let refused = store::Store::connect(&store::DatabaseConfig {
        ssl_mode: Some(store::SslMode::VerifyCa),
        ssl_root_cert: Some(ca),
        connect_timeout: std::time::Duration::from_secs(2),
        ..config
    })
    .await;
    assert!(refused.is_err(), "an unverified server is refused");
    Ok(())
}
