//! Short runs of the benchmarks against the test stack: the load tools work, and nothing is
//! lost, duplicated or reordered. Speed is never asserted here (see BENCHMARKS.md).

use std::time::Duration;

use courtchat::Role;
use testkit::{TestDatabase, TestStack};

/// The test stack with a static rule that opens the benchmarks' non-protocol topics to agents,
/// and a target whose clients sign in as agents.
async fn broker_target() -> anyhow::Result<(TestStack, bench::Target)> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.acl.rules.push(courtchat::StaticRule {
            role: Some(Role::Agent),
            username: None,
            client: None,
            access: courtchat::Access::Readwrite,
            topic: "bench/#".to_owned(),
            effect: courtchat::Effect::Allow,
        });
    })
    .await?;
    let target = signing_in_as(&stack, Role::Agent);
    Ok((stack, target))
}

#[tokio::test]
async fn relay_smoke_loses_nothing() -> anyhow::Result<()> {
    let (stack, target) = broker_target().await?;
    let relay = bench::RelayConfig {
        messages: 500,
        ..bench::RelayConfig::default()
    };
    let report = bench::relay(&target, &relay).await?;
    assert_eq!(
        (
            report.delivered,
            report.lost,
            report.duplicates,
            report.out_of_order
        ),
        (1500, 0, 0, 0),
        "{report:?}"
    );
    stack.shutdown().await;
    Ok(())
}

/// Several paced publishers share the messages out; every subscriber gets each one once, in
/// each publisher's order, and the server's CPU is read when its process is named.
#[tokio::test]
async fn relay_smoke_with_several_paced_publishers() -> anyhow::Result<()> {
    let (stack, mut target) = broker_target().await?;
    // The gateway runs in this process here, so this process's CPU is the server's (and the
    // clients'): enough to show that it is read.
    target.pid = Some(std::process::id());
    let relay = bench::RelayConfig {
        messages: 300,
        publishers: 4,
        subscribers: 2,
        rate: Some(100),
        ..bench::RelayConfig::default()
    };
    let report = bench::relay(&target, &relay).await?;
    assert_eq!(
        (
            report.publishers,
            report.delivered,
            report.lost,
            report.duplicates,
            report.out_of_order
        ),
        (4, 600, 0, 0, 0),
        "{report:?}"
    );
    // 75 messages per publisher at 100/s: the run is paced, not flat out.
    assert!(report.elapsed_ms >= 600, "{report:?}");
    assert!(report.server_cpu.seconds.is_some(), "{report:?}");
    assert!(report.server_cpu.us_per_delivery.is_some(), "{report:?}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn fanout_smoke_answers_and_delivers_everything_in_order() -> anyhow::Result<()> {
    let (stack, target) = broker_target().await?;
    let fanout = bench::FanoutConfig {
        groups: 5,
        members: 3,
        rate: 20.0,
        duration: Duration::from_secs(1),
        ..bench::FanoutConfig::default()
    };
    let report = bench::fanout(&target, &fanout).await?;
    // 5 groups × 20 messages, each answered: 200 published, each delivered to 3 members.
    assert_eq!(
        (
            report.published,
            report.delivered,
            report.lost,
            report.duplicates,
            report.out_of_order
        ),
        (200, 600, 0, 0, 0),
        "{report:?}"
    );
    stack.shutdown().await;
    Ok(())
}

/// The test stack as a benchmark target whose clients sign in with `role`. The gateway runs in
/// this process, so its CPU is the test's too: no process to read it from.
fn signing_in_as(stack: &TestStack, role: Role) -> bench::Target {
    let config = stack.config().clone();
    bench::Target {
        name: "courtchat".to_owned(),
        addr: stack.mqtt_tcp_addr(),
        credentials: Some(Box::new(move |client_id: &str| {
            let token = courtchat::mint_token(&config, client_id, role, Duration::from_secs(600))
                .unwrap_or_default();
            (client_id.to_owned(), token)
        })),
        pid: None,
    }
}

fn chat_target(stack: &TestStack) -> bench::ChatTarget {
    let config = stack.config().clone();
    bench::ChatTarget {
        name: "courtchat".to_owned(),
        addr: stack.mqtt_tcp_addr(),
        token: Box::new(move |subject, role| {
            courtchat::mint_token(&config, subject, Role::from(role), Duration::from_secs(600))
                .unwrap_or_default()
        }),
        store: stack.store().clone(),
        // The server runs in this process, beside the load generator: its CPU is this one's.
        pid: Some(std::process::id()),
    }
}

/// The chat scenario end to end: every message acknowledged, stored under the acknowledged
/// sequence number, and received once, in the stored order, by every participant.
#[tokio::test]
async fn chat_smoke_loses_nothing_and_keeps_one_order() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let target = chat_target(&stack);
    let chat = bench::ChatConfig {
        sessions: 4,
        agents: 2,
        rate: 2.0,
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(20),
        ..bench::ChatConfig::default()
    };
    let probe: bench::MemoryProbe = Box::new(|| None);
    let report = bench::chat(&target, &chat, &probe).await?;
    // 4 applicants × 4 messages, each answered by the lock holder.
    assert_eq!(
        (report.submitted, report.accepted, report.unacknowledged),
        (32, 32, 0),
        "{report:#?}"
    );
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.sessions_verified, 4);
    assert_eq!(report.delivered, report.deliveries_expected);
    assert!(report.deliveries_expected >= 32 * 3, "{report:#?}");
    let cpu = report.server_cpu;
    assert!(
        cpu.seconds.is_some() && cpu.us_per_delivery.is_some_and(|us| us > 0.0),
        "the CPU per message stored is read: {cpu:?}"
    );
    stack.shutdown().await;
    Ok(())
}

/// Sessions opened and closed one after another all complete, and the gateway keeps no
/// membership for them beyond its window of recently closed sessions.
#[tokio::test]
async fn soak_smoke_opens_and_closes_sessions() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.bridge.rate_per_second = 10_000.0;
        config.bridge.rate_burst = 10_000.0;
    })
    .await?;
    let target = chat_target(&stack);
    let soak = bench::SoakConfig {
        sessions: 40,
        workers: 4,
        sample_every: 10,
        ..bench::SoakConfig::default()
    };
    let probe: bench::MemoryProbe = Box::new(|| Some(1));
    let report = bench::soak(&target, &soak, &probe).await?;
    assert_eq!((report.completed, report.failed), (40, 0), "{report:#?}");
    assert!(report.samples.len() >= 4, "{report:#?}");
    stack.shutdown().await;
    Ok(())
}

/// Idle authenticated connections open and are held; each one's CONNACK and SUBACK are timed.
#[tokio::test]
async fn connections_smoke_holds_every_connection() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let target = signing_in_as(&stack, Role::Applicant);
    let scenario = bench::ConnectionsConfig {
        connections: 50,
        rate: 500.0,
        settle: Duration::from_millis(200),
        subscribe: vec!["cc/v1/clients/{id}/ack".to_owned()],
        ..bench::ConnectionsConfig::default()
    };
    let probe: bench::MemoryProbe = Box::new(|| None);
    let report = bench::connections(&target, &scenario, &probe).await?;
    assert_eq!(
        (report.opened, report.failed, report.held),
        (50, 0, 50),
        "{report:#?}"
    );
    assert!(report.connect_latency.max_us > 0);
    stack.shutdown().await;
    Ok(())
}

/// Desks: agents subscribed to their acknowledgements, the queue and their assignments in one
/// SUBSCRIBE are held; applicants asking for the same are refused the queue, and the scenario
/// counts them as failed rather than held.
#[tokio::test]
async fn connections_smoke_counts_refused_subscriptions_as_failures() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let desk_filters = vec![
        "cc/v1/clients/{id}/ack".to_owned(),
        "cc/v1/queue".to_owned(),
        "cc/v1/staff/{id}/assignments".to_owned(),
    ];
    for (role, held) in [(Role::Agent, 20), (Role::Applicant, 0)] {
        let target = signing_in_as(&stack, role);
        let scenario = bench::ConnectionsConfig {
            connections: 20,
            rate: 500.0,
            settle: Duration::from_millis(200),
            subscribe: desk_filters.clone(),
            prefix: format!("{role:?}").to_lowercase(),
        };
        let probe: bench::MemoryProbe = Box::new(|| None);
        let report = bench::connections(&target, &scenario, &probe).await?;
        assert_eq!(
            (report.opened, report.failed, report.held),
            (held, 20 - held, held),
            "{role:?}: {report:#?}"
        );
    }
    stack.shutdown().await;
    Ok(())
}
