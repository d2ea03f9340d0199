//! A client inside the broker's process (`Broker::in_process_client`), against real MQTT 5
//! clients over TCP: what they publish reaches it with the hooks' properties, under its receive
//! maximum, kept until acknowledged and handed over again to its next holder; what it publishes
//! reaches them; what it may not do is refused.

mod support;

use std::sync::Arc;
use std::time::Duration;

use broker::{
    AclChain, AnonymousAuthenticator, AuthChain, Authorizer, Broker, BrokerConfig, Decision,
    Holder, Hook, Identity, InProcessClient, InProcessError, Publish, Role, Routing, TokenDetails,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use support::{Client, PATIENCE};

/// Everything but `secret/…`.
struct AllButSecrets;

impl Authorizer for AllButSecrets {
    fn check_publish(&self, _identity: &Identity, topic: &str) -> Decision {
        if topic.starts_with("secret/") {
            Decision::Deny("secrets are kept".to_owned())
        } else {
            Decision::Allow
        }
    }

    fn check_subscribe(&self, _identity: &Identity, filter: &str) -> Decision {
        self.check_publish(_identity, filter)
    }
}

/// Adds `stamped-by: test` to every publish.
struct Stamp;

impl Hook for Stamp {
    fn on_publish(&self, publish: &mut Publish<'_>) -> Routing {
        publish
            .user_properties_mut()
            .push(("stamped-by".to_owned(), "test".to_owned()));
        Routing::Route
    }
}

fn service() -> Identity {
    Identity {
        subject: "pipeline".to_owned(),
        username: None,
        role: Role::Service,
        anonymous: false,
        expires_at: None,
        issued_at: None,
        token: TokenDetails::default(),
    }
}

struct Running {
    broker: Broker,
    port: u16,
    _stop: tokio_util::sync::DropGuard,
}

async fn start() -> Running {
    let broker = Broker::builder(BrokerConfig::default())
        .authentication(AuthChain::new(vec![Box::new(AnonymousAuthenticator {
            role: Role::Anonymous,
        })]))
        .authorization(AclChain::new(vec![Box::new(AllButSecrets)]))
        .hook(Arc::new(Stamp))
        .start()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let (broker, stop) = (broker.clone(), stop.clone());
        async move { broker.serve_tcp(listener, stop.cancelled_owned()).await }
    });
    Running {
        broker,
        port,
        _stop: stop.drop_guard(),
    }
}

async fn recv(client: &InProcessClient, holder: Holder) -> broker::Delivery {
    tokio::time::timeout(PATIENCE, client.recv(holder))
        .await
        .expect("a delivery in time")
        .expect("the broker is running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_wait_for_room_and_go_to_the_next_holder_until_acknowledged() {
    let running = start().await;
    let pipeline = running
        .broker
        .in_process_client("pipeline", service(), 2)
        .unwrap();
    pipeline.subscribe("submit/+", QoS::AtLeastOnce).unwrap();
    let first = pipeline.attach();
    let mut kiosk = Client::connect(running.port, "kiosk").await;
    kiosk.publish_all("submit/kiosk", &["a", "b", "c"]).await;

    // Two in hand, the third waits behind the receive maximum.
    let a = recv(&pipeline, first).await;
    let b = recv(&pipeline, first).await;
    assert_eq!(
        (a.payload().as_ref(), b.payload().as_ref()),
        (&b"a"[..], &b"b"[..])
    );
    assert!(a.needs_ack() && !a.is_redelivery());
    assert_eq!(a.topic(), "submit/kiosk");
    assert_eq!(a.user_property("stamped-by"), Some("test"));
    assert!(pipeline.try_recv(first).is_none(), "the window is full");
    assert_eq!(pipeline.queued(), 1);

    // Acknowledging one lets the next through.
    pipeline.ack(&a);
    let c = recv(&pipeline, first).await;
    assert_eq!(c.payload().as_ref(), b"c");

    // The first holder waits for more when a second one takes over: it gets nothing more.
    let pipeline = Arc::new(pipeline);
    let waiting = tokio::spawn({
        let pipeline = pipeline.clone();
        async move { pipeline.recv(first).await.map(|d| d.payload().clone()) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    kiosk.publish_all("submit/kiosk", &["d"]).await;
    let second = pipeline.attach();
    let taken_over = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap();
    // (It may have had `d` before the second attached; then `d` is the second's again.)
    assert!(
        matches!(taken_over.as_deref(), None | Some(b"d")),
        "{taken_over:?}"
    );
    assert!(pipeline.try_recv(first).is_none(), "taken over");

    // The new holder is handed what was not acknowledged again, first and in order, flagged.
    let b_again = recv(&pipeline, second).await;
    assert_eq!(b_again.payload().as_ref(), b"b");
    assert!(b_again.is_redelivery());
    // The old holder acknowledges `c` late (it was stored): it is not handed over again.
    pipeline.ack(&c);
    pipeline.ack(&b_again);
    let d = recv(&pipeline, second).await;
    assert_eq!(d.payload().as_ref(), b"d");
    pipeline.ack(&d);
    // Acknowledging twice gives no extra room: two fit, the third waits.
    pipeline.ack(&d);
    kiosk.publish_all("submit/kiosk", &["e", "f", "g"]).await;
    let _e = recv(&pipeline, second).await;
    let _f = recv(&pipeline, second).await;
    assert!(pipeline.try_recv(second).is_none(), "still two at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_it_publishes_reaches_subscribers_and_what_it_may_not_is_refused() {
    let running = start().await;
    let pipeline = running
        .broker
        .in_process_client("pipeline", service(), 8)
        .unwrap();
    let mut desk = Client::connect(running.port, "desk").await;
    desk.client
        .subscribe("entries/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    desk.next(|p| matches!(p, Packet::SubAck(_))).await;

    pipeline.publish("entries/1", "hello", false).unwrap();
    pipeline.publish("entries/lock", "held", true).unwrap();
    for expected in ["hello", "held"] {
        let Packet::Publish(publish) = desk.next(|p| matches!(p, Packet::Publish(_))).await else {
            unreachable!()
        };
        assert_eq!(publish.payload.as_ref(), expected.as_bytes());
        assert_eq!(publish.qos, QoS::AtLeastOnce);
    }
    // Retained: a later subscriber, in process too, is handed it at once, with no ack due.
    let watcher = running
        .broker
        .in_process_client("watcher", service(), 8)
        .unwrap();
    watcher.subscribe("entries/+", QoS::AtLeastOnce).unwrap();
    let holder = watcher.attach();
    let retained = recv(&watcher, holder).await;
    assert_eq!(retained.payload().as_ref(), b"held");
    assert!(!retained.needs_ack());

    assert!(matches!(
        pipeline.publish("secret/plans", "x", false),
        Err(InProcessError::NotAuthorized(_))
    ));
    assert!(matches!(
        pipeline.subscribe("secret/#", QoS::AtLeastOnce),
        Err(InProcessError::NotAuthorized(_))
    ));
    assert!(matches!(
        pipeline.publish("entries/+", "x", false),
        Err(InProcessError::Invalid(_))
    ));
}
