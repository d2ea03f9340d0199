//! MQTT 5 through rumqttc's v5 client: reason codes, QoS downgrade, subscription options,
//! request/response properties, session expiry, receive maximum, maximum packet size, and
//! server DISCONNECTs with reasons.

use std::time::Duration;

use courtchat::Role;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, DisconnectReasonCode, LastWill, LastWillProperties, PubAckReason,
    PubRecReason, PublishProperties, RetainForwardRule, SubscribeReasonCode,
};
use testkit::mqtt::{TestClient, TestClientV5, filter, try_connect_v5};
use testkit::{TestDatabase, TestStack};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn connack_reason_codes() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.max_connections = 1;
        // The in-process pipeline would hold a connection of its own.
        config.bridge.in_process = false;
    })
    .await?;
    let mut forged = TestClientV5::tcp_options(&stack, "kiosk-1", Role::Applicant);
    forged.set_credentials("kiosk-1", "forged");
    let mut anonymous = TestClientV5::tcp_options(&stack, "kiosk-1", Role::Applicant);
    anonymous.set_credentials("kiosk-1", "");
    let mut other_id = TestClientV5::tcp_options(&stack, "kiosk-1", Role::Applicant);
    other_id.set_client_id("kiosk-2".to_owned());
    let rows = [
        ("bad token", forged, ConnectReturnCode::BadUserNamePassword),
        ("no token", anonymous, ConnectReturnCode::NotAuthorized),
        (
            "client id is not the subject",
            other_id,
            ConnectReturnCode::NotAuthorized,
        ),
    ];
    for (case, options, expected) in rows {
        assert_eq!(try_connect_v5(options).await?, expected, "{case}");
    }
    let holder =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "holder", Role::Agent)).await?;
    assert_eq!(
        try_connect_v5(TestClientV5::tcp_options(
            &stack,
            "one-too-many",
            Role::Agent
        ))
        .await?,
        ConnectReturnCode::QuotaExceeded,
        "the connection limit"
    );
    // CONNACK tells the client what the server offers and what it does not.
    let properties = holder
        .connack
        .properties
        .clone()
        .expect("a v5 CONNACK has properties");
    assert_eq!(properties.shared_subscription_available, Some(1));
    assert_eq!(properties.subscription_identifiers_available, Some(1));
    assert_eq!(
        properties.topic_alias_max,
        Some(10),
        "mqtt.max_topic_aliases"
    );
    assert_eq!(properties.max_qos, None, "QoS 2 is available");
    assert_eq!(properties.receive_max, Some(1024), "mqtt.receive_maximum");
    holder.disconnect().await?;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn denials_are_reason_codes_and_the_connection_stays() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut applicant = TestClientV5::connect(TestClientV5::tcp_options(
        &stack,
        "kiosk-1",
        Role::Applicant,
    ))
    .await?;
    assert_eq!(
        applicant
            .subscribe(vec![
                filter("cc/v1/queue", QoS::AtLeastOnce),
                filter("sandbox/ok", QoS::AtLeastOnce)
            ])
            .await?,
        vec![
            SubscribeReasonCode::NotAuthorized,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        ]
    );
    applicant
        .client
        .publish("cc/v1/queue", QoS::AtLeastOnce, false, "forged")
        .await?;
    assert_eq!(
        applicant.next_puback().await?.reason,
        PubAckReason::NotAuthorized
    );
    applicant
        .client
        .publish("sandbox/ok", QoS::AtLeastOnce, false, "fine")
        .await?;
    assert_eq!(applicant.next_puback().await?.reason, PubAckReason::Success);
    assert_eq!(applicant.next_publish().await?.payload.as_ref(), b"fine");
    assert_eq!(
        applicant
            .subscribe(vec![filter("$share/g/cc/v1/queue", QoS::AtMostOnce)])
            .await?,
        vec![SubscribeReasonCode::SharedSubscriptionsNotSupported]
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn qos_is_downgraded_to_the_subscription() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut sub =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "sub", Role::Agent)).await?;
    sub.subscribe(vec![
        filter("sandbox/q0", QoS::AtMostOnce),
        filter("sandbox/q1", QoS::AtLeastOnce),
    ])
    .await?;
    let publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    publisher
        .client
        .publish("sandbox/q0", QoS::AtLeastOnce, false, "a")
        .await?;
    assert_eq!(sub.next_publish().await?.qos, QoS::AtMostOnce);
    publisher
        .client
        .publish("sandbox/q1", QoS::AtMostOnce, false, "b")
        .await?;
    assert_eq!(sub.next_publish().await?.qos, QoS::AtMostOnce);
    publisher
        .client
        .publish("sandbox/q1", QoS::AtLeastOnce, false, "c")
        .await?;
    let delivered = sub.next_publish().await?;
    assert_eq!(
        (delivered.qos, delivered.payload.as_ref()),
        (QoS::AtLeastOnce, &b"c"[..])
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn no_local_and_retain_as_published() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut me =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "me", Role::Agent)).await?;
    let mut no_local = filter("sandbox/chat", QoS::AtMostOnce);
    no_local.nolocal = true;
    let mut keep_retain = filter("sandbox/flags", QoS::AtMostOnce);
    keep_retain.preserve_retain = true;
    keep_retain.retain_forward_rule = RetainForwardRule::Never;
    me.subscribe(vec![
        no_local,
        keep_retain,
        filter("sandbox/plain", QoS::AtMostOnce),
    ])
    .await?;

    me.client
        .publish("sandbox/chat", QoS::AtMostOnce, false, "from me")
        .await?;
    let other =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "other", Role::Agent)).await?;
    other
        .client
        .publish("sandbox/chat", QoS::AtMostOnce, false, "from other")
        .await?;
    assert_eq!(
        me.next_publish().await?.payload.as_ref(),
        b"from other",
        "no-local"
    );

    other
        .client
        .publish("sandbox/flags", QoS::AtMostOnce, true, "kept")
        .await?;
    assert!(me.next_publish().await?.retain, "retain as published");
    other
        .client
        .publish("sandbox/plain", QoS::AtMostOnce, true, "cleared")
        .await?;
    assert!(
        !me.next_publish().await?.retain,
        "a live delivery clears the flag by default"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn retain_handling_options() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    let props = PublishProperties {
        content_type: Some("text/plain".to_owned()),
        ..PublishProperties::default()
    };
    publisher
        .client
        .publish_with_properties("sandbox/status", QoS::AtLeastOnce, true, "open", props)
        .await?;
    // Wait until the retained message is recorded: a subscriber that sees it live.
    let mut probe =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "probe", Role::Agent)).await?;
    probe
        .subscribe(vec![filter("sandbox/status", QoS::AtMostOnce)])
        .await?;
    let retained = probe.next_publish().await?;
    assert!(retained.retain);
    assert_eq!(
        retained.properties.and_then(|p| p.content_type).as_deref(),
        Some("text/plain"),
        "properties are retained"
    );

    let mut sub =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "sub", Role::Agent)).await?;
    let with_rule = |rule| {
        let mut f = filter("sandbox/status", QoS::AtLeastOnce);
        f.retain_forward_rule = rule;
        vec![f]
    };
    sub.subscribe(with_rule(RetainForwardRule::Never)).await?;
    assert!(
        sub.publishes_within(QUIET).await.is_empty(),
        "retain handling 2: never"
    );
    sub.client.unsubscribe("sandbox/status").await?;
    sub.subscribe(with_rule(RetainForwardRule::OnNewSubscribe))
        .await?;
    let first = sub.next_publish().await?;
    assert!(
        first.retain && first.qos == QoS::AtLeastOnce,
        "retained at min(published, granted)"
    );
    sub.subscribe(with_rule(RetainForwardRule::OnNewSubscribe))
        .await?;
    assert!(
        sub.publishes_within(QUIET).await.is_empty(),
        "retain handling 1: only for a new subscription"
    );
    sub.subscribe(with_rule(RetainForwardRule::OnEverySubscribe))
        .await?;
    assert_eq!(
        sub.next_publish().await?.payload.as_ref(),
        b"open",
        "retain handling 0: every time"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn request_response_properties_pass_through_and_v4_clients_get_plain_messages()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut responder =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "responder", Role::Agent)).await?;
    responder
        .subscribe(vec![filter("sandbox/requests", QoS::AtLeastOnce)])
        .await?;
    let mut v4 =
        TestClient::connect(TestClient::tcp_options(&stack, "old-kiosk", Role::Agent)).await?;
    v4.subscribe("sandbox/requests", rumqttc::QoS::AtLeastOnce)
        .await?;

    let requester =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "requester", Role::Agent)).await?;
    let props = PublishProperties {
        response_topic: Some("sandbox/replies/requester".to_owned()),
        correlation_data: Some("req-42".into()),
        user_properties: vec![("trace".to_owned(), "abc".to_owned())],
        content_type: Some("application/json".to_owned()),
        ..PublishProperties::default()
    };
    requester
        .client
        .publish_with_properties("sandbox/requests", QoS::AtLeastOnce, false, "{}", props)
        .await?;
    let request = responder.next_publish().await?;
    let props = request.properties.expect("properties arrive");
    assert_eq!(
        props.response_topic.as_deref(),
        Some("sandbox/replies/requester")
    );
    assert_eq!(props.correlation_data.as_deref(), Some(&b"req-42"[..]));
    assert_eq!(
        props.user_properties,
        vec![("trace".to_owned(), "abc".to_owned())],
        "only the sender's user properties"
    );
    assert_eq!(props.content_type.as_deref(), Some("application/json"));
    // An MQTT 3.1.1 subscriber gets the same message without properties (rumqttd's own v4
    // writer would have dropped the connection here).
    assert_eq!(v4.next_publish().await?.payload.as_ref(), b"{}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn sessions_resume_until_they_expire() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let options = |expiry: u32, clean: bool| {
        let mut options = TestClientV5::tcp_options(&stack, "agent-roaming", Role::Agent);
        options.set_clean_start(clean);
        options.set_session_expiry_interval(Some(expiry));
        options
    };
    let mut first = TestClientV5::connect(options(60, true)).await?;
    assert!(!first.connack.session_present);
    first
        .subscribe(vec![filter("sandbox/inbox", QoS::AtLeastOnce)])
        .await?;
    first.disconnect().await?;

    // Published while the client is away, kept for it.
    let publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    publisher
        .client
        .publish("sandbox/inbox", QoS::AtLeastOnce, false, "while away")
        .await?;
    let mut publisher = publisher;
    publisher.next_puback().await?;

    let mut back = TestClientV5::connect(options(1, false)).await?;
    assert!(back.connack.session_present);
    let missed = back.next_publish().await?;
    assert_eq!(
        (missed.payload.as_ref(), missed.qos),
        (&b"while away"[..], QoS::AtLeastOnce)
    );
    back.disconnect().await?;

    // With a 1-second expiry, the session is gone after 2 seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut expired = TestClientV5::connect(options(0, false)).await?;
    assert!(!expired.connack.session_present);
    publisher
        .client
        .publish("sandbox/inbox", QoS::AtLeastOnce, false, "nobody")
        .await?;
    assert!(
        expired.publishes_within(QUIET).await.is_empty(),
        "the expired session's subscription is gone"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn receive_maximum_and_maximum_packet_size_are_respected() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut options = TestClientV5::tcp_options(&stack, "small-client", Role::Agent);
    options.set_receive_maximum(Some(2));
    options.set_max_packet_size(Some(1024));
    options.set_manual_acks(true);
    let mut sub = TestClientV5::connect(options).await?;
    sub.subscribe(vec![filter("sandbox/flow", QoS::AtLeastOnce)])
        .await?;

    let publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    publisher
        .client
        .publish("sandbox/flow", QoS::AtLeastOnce, false, vec![b'x'; 4096])
        .await?;
    for n in 0..5u8 {
        publisher
            .client
            .publish("sandbox/flow", QoS::AtLeastOnce, false, vec![n])
            .await?;
    }
    // The 4 KiB message exceeds the client's maximum packet size and is dropped; of the rest,
    // only two are in flight until the client acknowledges.
    let first = sub.next_publish().await?;
    let second = sub.next_publish().await?;
    assert_eq!(
        (first.payload.as_ref(), second.payload.as_ref()),
        (&[0u8][..], &[1u8][..])
    );
    assert!(
        sub.publishes_within(QUIET).await.is_empty(),
        "a third delivery exceeded receive maximum 2"
    );
    sub.client.ack(&first).await?;
    assert_eq!(sub.next_publish().await?.payload.as_ref(), &[2u8]);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_server_says_why_it_disconnects() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut first =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "agent-1", Role::Agent)).await?;
    let _second =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "agent-1", Role::Agent)).await?;
    assert_eq!(
        first.next_disconnect().await?.reason_code,
        DisconnectReasonCode::SessionTakenOver
    );

    let mut options = TestClientV5::tcp_options(&stack, "short-lived", Role::Agent);
    options.set_credentials(
        "short-lived",
        stack.token_for("short-lived", Role::Agent, Duration::from_secs(2)),
    );
    let mut short = TestClientV5::connect(options).await?;
    assert_eq!(
        short.next_disconnect().await?.reason_code,
        DisconnectReasonCode::MaximumConnectTime
    );

    let mut watched =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "agent-2", Role::Agent)).await?;
    let shutdown = tokio::spawn(stack.shutdown());
    assert_eq!(
        watched.next_disconnect().await?.reason_code,
        DisconnectReasonCode::ServerShuttingDown
    );
    shutdown.await?;
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_acknowledging_is_disconnected_not_buffered_forever()
-> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.max_pending_per_client = 20
    })
    .await?;
    let mut options = TestClientV5::tcp_options(&stack, "stalled", Role::Agent);
    options.set_receive_maximum(Some(1));
    options.set_manual_acks(true);
    let mut stalled = TestClientV5::connect(options).await?;
    stalled
        .subscribe(vec![filter("sandbox/flood", QoS::AtLeastOnce)])
        .await?;
    let publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    for n in 0..40u8 {
        publisher
            .client
            .publish("sandbox/flood", QoS::AtLeastOnce, false, vec![n])
            .await?;
    }
    assert_eq!(
        stalled.next_disconnect().await?.reason_code,
        DisconnectReasonCode::QuotaExceeded
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_publish_to_a_reserved_topic_is_denied_and_the_connection_stays() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut agent =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "agent-1", Role::Agent)).await?;
    agent
        .subscribe(vec![filter("sandbox/ok", QoS::AtLeastOnce)])
        .await?;
    // QoS 0 has no acknowledgement to say no in: dropped.
    agent
        .client
        .publish("$SYS/x", QoS::AtMostOnce, false, "dropped")
        .await?;
    agent
        .client
        .publish("$SYS/x", QoS::AtLeastOnce, false, "denied")
        .await?;
    assert_eq!(
        agent.next_puback().await?.reason,
        PubAckReason::NotAuthorized
    );
    agent
        .client
        .publish("$internal", QoS::ExactlyOnce, false, "denied")
        .await?;
    assert_eq!(
        agent.next_pubrec().await?.reason,
        PubRecReason::NotAuthorized
    );
    agent
        .client
        .publish("sandbox/ok", QoS::AtLeastOnce, false, "fine")
        .await?;
    assert_eq!(agent.next_puback().await?.reason, PubAckReason::Success);
    assert_eq!(agent.next_publish().await?.payload.as_ref(), b"fine");
    assert_eq!(stack.broker_stats().denied_publishes, 3);

    // MQTT 3.1.1 has no negative acknowledgement: `mqtt.acl.denied_publish` (disconnect).
    let mut old =
        TestClient::connect(TestClient::tcp_options(&stack, "old-kiosk", Role::Agent)).await?;
    old.client
        .publish("$SYS/x", rumqttc::QoS::AtLeastOnce, false, "denied")
        .await?;
    assert!(
        old.next_puback().await.is_err(),
        "the 3.1.1 connection is closed"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_session_resumed_without_an_expiry_interval_gets_what_it_missed_then_ends()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let options = |expiry: Option<u32>, clean: bool| {
        let mut options = TestClientV5::tcp_options(&stack, "agent-roaming", Role::Agent);
        options.set_clean_start(clean);
        options.set_session_expiry_interval(expiry);
        options
    };
    let mut first = TestClientV5::connect(options(Some(60), true)).await?;
    first
        .subscribe(vec![filter("sandbox/inbox", QoS::AtLeastOnce)])
        .await?;
    first.disconnect().await?;
    let mut publisher =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "pub", Role::Agent)).await?;
    publisher
        .client
        .publish("sandbox/inbox", QoS::AtLeastOnce, false, "while away")
        .await?;
    publisher.next_puback().await?;

    // No session expiry on the new CONNECT: the stored session resumes, and ends with this
    // connection (MQTT 5 §3.1.2.11.2: absent means 0 from now on).
    let mut back = TestClientV5::connect(options(None, false)).await?;
    assert!(back.connack.session_present);
    assert_eq!(back.next_publish().await?.payload.as_ref(), b"while away");
    publisher
        .client
        .publish("sandbox/inbox", QoS::AtLeastOnce, false, "after return")
        .await?;
    assert_eq!(back.next_publish().await?.payload.as_ref(), b"after return");
    back.disconnect().await?;

    // So nothing of it is left: not in the gateway, not in the router.
    publisher
        .client
        .publish("sandbox/inbox", QoS::AtLeastOnce, false, "nobody")
        .await?;
    publisher.next_puback().await?;
    let mut again = TestClientV5::connect(options(Some(60), false)).await?;
    assert!(!again.connack.session_present);
    assert!(
        again.publishes_within(QUIET).await.is_empty(),
        "the ended session's subscription is gone"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn client_user_properties_never_reach_other_participants_under_cc() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    stack.memberships().join("s1", "kiosk-1", Role::Applicant);
    stack.memberships().join("s1", "agent-1", Role::Agent);
    let mut agent =
        TestClientV5::connect(TestClientV5::tcp_options(&stack, "agent-1", Role::Agent)).await?;
    assert_eq!(
        agent
            .subscribe(vec![
                filter("cc/v1/sessions/s1/typing/+", QoS::AtLeastOnce),
                filter("cc/v1/sessions/s1/presence/+", QoS::AtLeastOnce),
            ])
            .await?,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); 2]
    );
    let forged = vec![
        ("role".to_owned(), "service".to_owned()),
        ("sender".to_owned(), "agent-9".to_owned()),
    ];
    let mut options = TestClientV5::tcp_options(&stack, "kiosk-1", Role::Applicant);
    options.set_last_will(LastWill::new(
        "cc/v1/sessions/s1/presence/kiosk-1",
        r#"{"v":1,"status":"offline"}"#,
        QoS::AtLeastOnce,
        false,
        Some(LastWillProperties {
            delay_interval: None,
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: forged.clone(),
        }),
    ));
    let kiosk = TestClientV5::connect(options).await?;
    let props = PublishProperties {
        user_properties: forged,
        content_type: Some("text/plain".to_owned()),
        ..PublishProperties::default()
    };
    kiosk
        .client
        .publish_with_properties(
            "cc/v1/sessions/s1/typing/kiosk-1",
            QoS::AtLeastOnce,
            false,
            r#"{"v":1,"typing":true}"#,
            props,
        )
        .await?;
    let typing = agent.next_publish().await?;
    assert_eq!(typing.payload.as_ref(), br#"{"v":1,"typing":true}"#);
    let props = typing.properties.unwrap_or_default();
    assert_eq!(
        props.user_properties,
        vec![],
        "the sender's user properties"
    );
    assert_eq!(
        props.content_type.as_deref(),
        Some("text/plain"),
        "other properties pass"
    );

    // The will is a publish on the client's behalf: the same rule.
    kiosk.kill();
    let presence = agent.next_publish().await?;
    assert_eq!(presence.payload.as_ref(), br#"{"v":1,"status":"offline"}"#);
    assert_eq!(
        presence
            .properties
            .map(|props| props.user_properties)
            .unwrap_or_default(),
        vec![],
        "the will's user properties"
    );
    stack.shutdown().await;
    Ok(())
}
