//! The will delay interval (MQTT 5 §3.1.3.2.2): a will is published when its delay runs out or
//! its session ends, whichever comes first, and not at all if a connection with the same client
//! id comes before.

use std::time::{Duration, Instant};

use courtchat::Role;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, LastWillProperties};
use testkit::TestStack;
use testkit::mqtt::{TestClientV5, filter};

fn options(
    stack: &TestStack,
    delay: u32,
    session_expiry: u32,
    clean: bool,
) -> rumqttc::v5::MqttOptions {
    let mut options = TestClientV5::tcp_options(stack, "leaver", Role::Agent);
    options.set_clean_start(clean);
    options.set_session_expiry_interval(Some(session_expiry));
    options.set_last_will(LastWill::new(
        "sandbox/wills/leaver",
        "gone",
        QoS::AtLeastOnce,
        false,
        Some(LastWillProperties {
            delay_interval: Some(delay),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        }),
    ));
    options
}

async fn watcher(stack: &TestStack) -> anyhow::Result<TestClientV5> {
    let mut watcher =
        TestClientV5::connect(TestClientV5::tcp_options(stack, "watcher", Role::Agent)).await?;
    watcher
        .subscribe(vec![filter("sandbox/wills/+", QoS::AtLeastOnce)])
        .await?;
    Ok(watcher)
}

#[tokio::test]
async fn a_will_waits_for_the_shorter_of_its_delay_and_its_session() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut watcher = watcher(&stack).await?;
    // (will delay, session expiry, about when the will comes)
    let rows = [(2, 60, 2), (60, 1, 1), (5, 0, 0)];
    for (delay, expiry, after) in rows {
        let leaver = TestClientV5::connect(options(&stack, delay, expiry, true)).await?;
        leaver.kill();
        let start = Instant::now();
        let will = watcher.next_publish().await?;
        let waited = start.elapsed();
        assert_eq!(will.payload.as_ref(), b"gone");
        let after = Duration::from_secs(after);
        assert!(
            waited + Duration::from_millis(300) >= after && waited < after + Duration::from_secs(2),
            "delay {delay}, session expiry {expiry}: published after {waited:?}"
        );
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_client_back_before_the_delay_runs_out_has_no_will_published() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut watcher = watcher(&stack).await?;
    // Resuming the session, or starting a new one: either way the client is back.
    for clean in [false, true] {
        let leaver = TestClientV5::connect(options(&stack, 2, 60, true)).await?;
        leaver.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let back = TestClientV5::connect(options(&stack, 2, 60, clean)).await?;
        assert!(
            watcher
                .publishes_within(Duration::from_secs(3))
                .await
                .is_empty(),
            "clean start {clean}: the will is not published"
        );
        // And the returning connection's own will is there as before.
        back.kill();
        assert_eq!(watcher.next_publish().await?.payload.as_ref(), b"gone");
    }
    stack.shutdown().await;
    Ok(())
}
