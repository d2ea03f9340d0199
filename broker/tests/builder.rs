//! A broker built with chains and hooks of its own, through a real MQTT 5 client: a hook that
//! stamps publishes with a user property, one that consumes them, and one that watches each
//! filter subscribed and its outcome.

mod support;

use std::sync::{Arc, Mutex};

use broker::{
    AclChain, AnonymousAuthenticator, AuthChain, Authorizer, Broker, BrokerConfig, Decision, Hook,
    Identity, Publish, Role, Routing, SubscribeOutcome,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties, SubscribeReasonCode};
use support::Client;

/// Everything but `secret/…`.
struct AllButSecrets;

impl AllButSecrets {
    fn decide(topic_or_filter: &str) -> Decision {
        if topic_or_filter.starts_with("secret/") {
            Decision::Deny("secrets are kept".to_owned())
        } else {
            Decision::Allow
        }
    }
}

impl Authorizer for AllButSecrets {
    fn check_publish(&self, _identity: &Identity, topic: &str) -> Decision {
        Self::decide(topic)
    }

    fn check_subscribe(&self, _identity: &Identity, filter: &str) -> Decision {
        Self::decide(filter)
    }
}

/// Adds `stamped-by: test` to every publish under `stamped/`.
struct Stamp;

impl Hook for Stamp {
    fn on_publish(&self, publish: &mut Publish<'_>) -> Routing {
        if publish.topic.starts_with("stamped/") {
            publish
                .user_properties_mut()
                .push(("stamped-by".to_owned(), "test".to_owned()));
        }
        Routing::Route
    }
}

/// Takes every publish under `swallowed/`, keeping its payload.
#[derive(Default)]
struct Swallow(Mutex<Vec<Vec<u8>>>);

impl Hook for Swallow {
    fn on_publish(&self, publish: &mut Publish<'_>) -> Routing {
        if !publish.topic.starts_with("swallowed/") {
            return Routing::Route;
        }
        self.0.lock().unwrap().push(publish.payload.to_vec());
        Routing::Consume
    }
}

/// Every filter subscribed, with its outcome.
#[derive(Default)]
struct Subscriptions(Mutex<Vec<(String, SubscribeOutcome)>>);

impl Hook for Subscriptions {
    fn on_subscribe(&self, _identity: &Identity, filter: &str, outcome: SubscribeOutcome) {
        self.0.lock().unwrap().push((filter.to_owned(), outcome));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_registered_on_the_builder_stamp_consume_and_watch() {
    let swallow = Arc::new(Swallow::default());
    let subscriptions = Arc::new(Subscriptions::default());
    let broker = Broker::builder(BrokerConfig::default())
        .authentication(AuthChain::new(vec![Box::new(AnonymousAuthenticator {
            role: Role::Anonymous,
        })]))
        .authorization(AclChain::new(vec![Box::new(AllButSecrets)]))
        .hook(Arc::new(Stamp))
        .hook(swallow.clone())
        .hook(subscriptions.clone())
        .start()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn({
        let (broker, stop) = (broker.clone(), stop.clone());
        async move { broker.serve_tcp(listener, stop.cancelled_owned()).await }
    });

    let mut reader = Client::connect(port, "reader").await;
    for filter in ["swallowed/#", "stamped/#", "secret/plans"] {
        reader
            .client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        let Packet::SubAck(ack) = reader.next(|p| matches!(p, Packet::SubAck(_))).await else {
            unreachable!()
        };
        let granted = !filter.starts_with("secret/");
        assert_eq!(
            ack.return_codes,
            [if granted {
                SubscribeReasonCode::Success(QoS::AtLeastOnce)
            } else {
                SubscribeReasonCode::NotAuthorized
            }],
            "{filter}"
        );
    }
    assert_eq!(
        *subscriptions.0.lock().unwrap(),
        [
            (
                "swallowed/#".to_owned(),
                SubscribeOutcome::Granted { qos: 1 }
            ),
            ("stamped/#".to_owned(), SubscribeOutcome::Granted { qos: 1 }),
            (
                "secret/plans".to_owned(),
                SubscribeOutcome::Refused { reason_code: 0x87 }
            ),
        ]
    );

    // One publisher, one reader: what it publishes arrives in order, so the stamped publish
    // arriving first means the swallowed one before it was delivered to no one.
    let mut writer = Client::connect(port, "writer").await;
    writer
        .client
        .publish("swallowed/a", QoS::AtLeastOnce, false, "gone")
        .await
        .unwrap();
    let properties = PublishProperties {
        user_properties: vec![("from".to_owned(), "writer".to_owned())],
        ..PublishProperties::default()
    };
    writer
        .client
        .publish_with_properties("stamped/a", QoS::AtLeastOnce, false, "kept", properties)
        .await
        .unwrap();
    for _ in 0..2 {
        let Packet::PubAck(ack) = writer.next(|p| matches!(p, Packet::PubAck(_))).await else {
            unreachable!()
        };
        assert_eq!(
            ack.reason,
            PubAckReason::Success,
            "a consumed publish is accepted"
        );
    }

    let Packet::Publish(delivered) = reader.next(|p| matches!(p, Packet::Publish(_))).await else {
        unreachable!()
    };
    assert_eq!(std::str::from_utf8(&delivered.topic), Ok("stamped/a"));
    assert_eq!(std::str::from_utf8(&delivered.payload), Ok("kept"));
    assert_eq!(
        delivered.properties.unwrap().user_properties,
        [
            ("from".to_owned(), "writer".to_owned()),
            ("stamped-by".to_owned(), "test".to_owned()),
        ],
        "the client's user property, then the hook's"
    );
    assert_eq!(*swallow.0.lock().unwrap(), [b"gone".to_vec()]);

    stop.cancel();
    serving.await.unwrap();
}
