//! A short run of the relay benchmark against the test stack: the load tool works, and nothing
//! is lost, duplicated or reordered. Speed is never asserted here (see BENCHMARKS.md).

use std::time::Duration;

use courtchat::Role;
use testkit::{TestDatabase, TestStack};

#[tokio::test]
async fn relay_smoke_loses_nothing() -> anyhow::Result<()> {
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
    let config = stack.config().clone();
    let target = bench::Target {
        name: "courtchat".to_owned(),
        addr: stack.mqtt_tcp_addr(),
        credentials: Some(Box::new(move |client_id: &str| {
            let token =
                courtchat::mint_token(&config, client_id, Role::Agent, Duration::from_secs(600))
                    .unwrap_or_default();
            (client_id.to_owned(), token)
        })),
    };
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
