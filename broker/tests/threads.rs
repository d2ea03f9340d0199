//! `mqtt.workers`: the gateway's connections run on threads of their own (one, several, or
//! none, on the caller's runtime), each way relaying a real client's messages; the threads
//! exist while the broker does and are gone once it is dropped.
//!
//! One test in this file on purpose: it counts the process's threads by name.

use std::time::Duration;

use broker::{AclChain, AnonymousAuthenticator, AuthChain, Broker, BrokerConfig, Decision, Role};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const PATIENCE: Duration = Duration::from_secs(10);

struct Everything;

impl broker::Authorizer for Everything {
    fn check_publish(&self, _identity: &broker::Identity, _topic: &str) -> Decision {
        Decision::Allow
    }

    fn check_subscribe(&self, _identity: &broker::Identity, _filter: &str) -> Decision {
        Decision::Allow
    }
}

/// The process's threads named as the gateway names its own.
fn gateway_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "mqtt-gateway")
        .count()
}

async fn eventually(what: &str, mut holds: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !holds() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Subscribes, publishes at QoS 1 from a second client, and returns the payload received.
async fn relay(port: u16, workers: usize) -> Vec<u8> {
    let connect = |id: &str| {
        let mut options = MqttOptions::new(format!("{id}-{workers}"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        AsyncClient::new(options, 16)
    };
    let (subscriber, mut sub_events) = connect("subscriber");
    subscriber
        .subscribe("rooms/+", QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = sub_events.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .expect("subscribed");
    let (publisher, mut pub_events) = connect("publisher");
    publisher
        .publish(
            "rooms/a",
            QoS::AtLeastOnce,
            false,
            format!("hello {workers}"),
        )
        .await
        .unwrap();
    let acked = tokio::spawn(async move {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = pub_events.poll().await.unwrap() {
                break;
            }
        }
    });
    let payload = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Event::Incoming(Packet::Publish(publish)) = sub_events.poll().await.unwrap() {
                break publish.payload.to_vec();
            }
        }
    })
    .await
    .expect("delivered");
    tokio::time::timeout(PATIENCE, acked)
        .await
        .expect("acknowledged")
        .unwrap();
    payload
}

#[tokio::test]
async fn connections_run_on_the_configured_threads_and_they_end_with_the_broker() {
    assert_eq!(gateway_threads(), 0);
    for workers in [0, 1, 2] {
        let broker = Broker::builder(BrokerConfig {
            workers,
            ..BrokerConfig::default()
        })
        .authentication(AuthChain::new(vec![Box::new(AnonymousAuthenticator {
            role: Role::Anonymous,
        })]))
        .authorization(AclChain::new(vec![Box::new(Everything)]))
        .start()
        .unwrap();
        // Threads name themselves once they run.
        eventually(&format!("{workers} threads start"), || {
            gateway_threads() == workers
        })
        .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = tokio_util::sync::CancellationToken::new();
        let serving = tokio::spawn({
            let (broker, stop) = (broker.clone(), stop.clone());
            async move { broker.serve_tcp(listener, stop.cancelled_owned()).await }
        });

        assert_eq!(
            relay(port, workers).await,
            format!("hello {workers}").as_bytes()
        );

        stop.cancel();
        tokio::time::timeout(PATIENCE, serving)
            .await
            .expect("the listener stops when told")
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "nothing listens once served out ({workers})"
        );
        drop(broker);
        eventually(&format!("the {workers} threads end"), || {
            gateway_threads() == 0
        })
        .await;
    }
}
