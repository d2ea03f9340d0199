//! The pipeline when PostgreSQL goes away while chat runs (a restart, a dropped connection):
//! nothing acknowledged is lost, what cannot be stored is refused at once with a reason,
//! readiness answers 503 meanwhile, and chat recovers by itself once the database is back.

use std::collections::BTreeMap;

use sea_orm::ConnectionTrait;

use testkit::TestDatabase;
use testkit::relay::Relay;

use super::hardening::{acks_until, kiosk_with_session, send_message, stored};
use super::*;

/// The server's connect timeout in this test: how long one attempt to reach the database
/// waits.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Submissions sent while the database is away.
const DURING: usize = 20;

/// How long those may go unanswered: a few connect timeouts, not one per submission (which a
/// pipeline that tried them one by one would take).
const OUTAGE_ANSWER: Duration = Duration::from_secs(10);

/// `/readyz`'s status, waiting until it is `status` or `patience` has passed.
async fn readiness_becomes(
    stack: &TestStack,
    status: u16,
    patience: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + patience;
    let http = reqwest::Client::new();
    loop {
        let now = http.get(stack.http_url("/readyz")).send().await?.status();
        if now.as_u16() == status {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {now}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends a message and notes its id in `sent`, the order the record must show.
async fn send(
    kiosk: &Staff,
    session: &str,
    sent: &mut Vec<String>,
    cmid: String,
) -> anyhow::Result<()> {
    send_message(kiosk, session, &cmid, &format!("text of {cmid}")).await?;
    sent.push(cmid);
    Ok(())
}

/// Where the PostgreSQL server of `url` listens.
async fn server_addr(url: &str) -> anyhow::Result<std::net::SocketAddr> {
    let url = url::Url::parse(url)?;
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    tokio::net::lookup_host((host, url.port().unwrap_or(5432)))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{url} names no address"))
}

#[tokio::test]
async fn a_database_outage_loses_nothing_refuses_at_once_and_recovers() -> anyhow::Result<()> {
    let Some(server) = testkit::postgres_url() else {
        return Ok(());
    };
    let database = TestDatabase::postgres(&server).await?;
    let direct_url = database.url();
    // The server reaches PostgreSQL only through a relay the test can take down.
    let relay = Relay::start(server_addr(&direct_url).await?).await?;
    let mut through_relay = url::Url::parse(&direct_url)?;
    through_relay
        .set_ip_host(relay.addr().ip())
        .map_err(|()| anyhow::anyhow!("not a host URL"))?;
    through_relay
        .set_port(Some(relay.addr().port()))
        .map_err(|()| anyhow::anyhow!("not a host URL"))?;
    let stack = TestStack::start_with(database, |config| {
        config.database.url = through_relay.to_string();
        config.database.connect_timeout = CONNECT_TIMEOUT;
        // One kiosk sends everything here; its rate is not what is tested.
        config.bridge.rate_per_second = 1000.0;
        config.bridge.rate_burst = 1000.0;
    })
    .await?;
    let (mut kiosk, session) = kiosk_with_session(&stack, "kiosk-outage").await?;
    let mut sent = Vec::new();

    // Chat as usual; then connections lost between messages, by a network failure and by the
    // server ending them as a restart does (SQLSTATE 57P01): the pool connects again and
    // nothing is refused.
    let direct = sea_orm::Database::connect(&direct_url).await?;
    for phase in ["before", "after-cut", "after-terminate"] {
        match phase {
            "after-cut" => relay.cut(),
            "after-terminate" => {
                direct
                    .execute_unprepared(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    )
                    .await?;
            }
            _ => {}
        }
        for n in 0..5 {
            send(&kiosk, &session, &mut sent, format!("{phase}-{n}")).await?;
        }
        tokio::time::timeout(PATIENCE, acks_until(&mut kiosk, 1 + sent.len())).await??;
    }
    direct.close().await?;
    for ack in &kiosk.acks {
        assert!(rejected(ack).is_none(), "refused: {ack:?}");
    }

    // The database goes away: readiness says so, and submissions are refused with a reason,
    // each within a bound.
    relay.take_down();
    readiness_becomes(&stack, 503, PATIENCE).await?;
    let answered = kiosk.acks.len();
    let mut refused = Vec::new();
    for n in 0..DURING {
        let cmid = format!("during-{n}");
        send_message(&kiosk, &session, &cmid, "while the database is away").await?;
        refused.push(cmid);
    }
    tokio::time::timeout(
        OUTAGE_ANSWER,
        acks_until(&mut kiosk, answered + refused.len()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("submissions went unanswered while the database was away"))??;
    for ack in &kiosk.acks[answered..] {
        let (reason, message) =
            rejected(ack).ok_or_else(|| anyhow::anyhow!("accepted without a database: {ack:?}"))?;
        assert!(
            matches!(reason, RejectReason::Unavailable | RejectReason::Busy),
            "{ack:?}"
        );
        assert!(
            message.contains("nothing was stored"),
            "the refusal says what became of it: {message}"
        );
    }

    // Back: readiness recovers by itself, the refused submissions go through when sent again,
    // and chat goes on.
    relay.restore();
    readiness_becomes(&stack, 200, PATIENCE).await?;
    let answered = kiosk.acks.len();
    for cmid in refused {
        send(&kiosk, &session, &mut sent, cmid).await?;
    }
    for n in 0..5 {
        send(&kiosk, &session, &mut sent, format!("after-{n}")).await?;
    }
    let expected = answered + DURING + 5;
    tokio::time::timeout(PATIENCE, acks_until(&mut kiosk, expected)).await??;
    for ack in &kiosk.acks[answered..] {
        assert!(rejected(ack).is_none(), "refused after recovery: {ack:?}");
    }

    // Everything acknowledged is stored once, in the order sent, and on the audit chain.
    let accepted: BTreeMap<String, u64> = kiosk
        .acks
        .iter()
        .filter_map(|ack| {
            super::hardening::accepted_seq(ack).map(|seq| (ack.client_msg_id.clone(), seq))
        })
        .collect();
    let rows = stored(&stack, &session).await?;
    let ids: Vec<&str> = rows
        .iter()
        .skip(1)
        .map(|m| m.client_msg_id.as_str())
        .collect();
    assert_eq!(ids, sent, "each message stored once, in the order sent");
    for row in &rows {
        assert_eq!(accepted.get(&row.client_msg_id), Some(&(row.seq as u64)));
    }
    let verification = courtchat::verify_audit(stack.config(), stack.store()).await?;
    assert_eq!(verification.first_broken, None);
    stack.shutdown().await;
    Ok(())
}
