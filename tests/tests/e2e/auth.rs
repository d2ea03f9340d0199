//! Authentication and authorization through real clients: CONNACK refusals, expiry, the
//! protocol ACL and static rules.

use std::time::Duration;

use courtchat::Role;
use rumqttc::v5::mqttbytes::QoS as V5QoS;
use rumqttc::{ConnectReturnCode, LastWill, QoS, SubscribeReasonCode};
use testkit::mqtt::{ConnectOutcome, TestClient, TestClientV5, try_connect};
use testkit::{TestDatabase, TestStack};

const QUIET: Duration = Duration::from_millis(300);
const GRANTED_0: SubscribeReasonCode = SubscribeReasonCode::Success(QoS::AtMostOnce);
const GRANTED_1: SubscribeReasonCode = SubscribeReasonCode::Success(QoS::AtLeastOnce);

#[tokio::test]
async fn credentials_are_checked_with_connack_codes() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let with_password = |client_id: &str, password: String| {
        let mut options = TestClient::anonymous_tcp_options(&stack, client_id);
        options.set_credentials(client_id, password);
        options
    };
    let expired = stack.token_for("kiosk-1", Role::Applicant, Duration::from_secs(1));
    let foreign_secret = {
        // A token signed with a secret the server does not know.
        let mut other = stack.config().clone();
        other.mqtt.auth.secret = "some-other-secret-that-is-long-enough-to-use".to_owned();
        courtchat::mint_token(&other, "kiosk-1", Role::Applicant, Duration::from_secs(60))?
    };
    let rows = [
        (
            "no password",
            TestClient::anonymous_tcp_options(&stack, "kiosk-1"),
            ConnectOutcome::Refused(ConnectReturnCode::NotAuthorized),
        ),
        (
            "garbage",
            with_password("kiosk-1", "not-a-token".into()),
            ConnectOutcome::Refused(ConnectReturnCode::BadUserNamePassword),
        ),
        (
            "foreign key",
            with_password("kiosk-1", foreign_secret),
            ConnectOutcome::Refused(ConnectReturnCode::BadUserNamePassword),
        ),
        (
            "someone else's token",
            with_password("kiosk-2", stack.token("kiosk-1", Role::Applicant)),
            ConnectOutcome::Refused(ConnectReturnCode::NotAuthorized),
        ),
        (
            "valid",
            with_password("kiosk-1", stack.token("kiosk-1", Role::Applicant)),
            ConnectOutcome::Accepted,
        ),
    ];
    for (case, options, expected) in rows {
        assert_eq!(try_connect(options).await, expected, "{case}");
    }
    // The 1-second token has expired by now: exp is checked to the second.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        try_connect(with_password("kiosk-1", expired)).await,
        ConnectOutcome::Refused(ConnectReturnCode::BadUserNamePassword),
        "expired"
    );
    assert!(stack.broker_stats().refused_connects >= 5);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_connection_ends_when_its_token_expires() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut options = TestClient::anonymous_tcp_options(&stack, "agent-short");
    options.set_credentials(
        "agent-short",
        stack.token_for("agent-short", Role::Agent, Duration::from_secs(2)),
    );
    let mut client = TestClient::connect(options).await?;
    assert_eq!(
        client.subscribe("sandbox/x", QoS::AtMostOnce).await?,
        vec![GRANTED_0]
    );
    // Nothing else happens on this connection: only the expiry can close it.
    let closed = client.next_publish().await;
    assert!(
        closed.is_err_and(|err| err.to_string().contains("closed")),
        "the connection outlived its token"
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_protocol_acl_through_real_clients() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    stack.memberships().join("s1", "kiosk-1", Role::Applicant);
    stack.memberships().join("s1", "agent-1", Role::Agent);

    let mut applicant =
        TestClient::connect(TestClient::tcp_options(&stack, "kiosk-1", Role::Applicant)).await?;
    let mut agent =
        TestClient::connect(TestClient::ws_options(&stack, "agent-1", Role::Agent)).await?;
    let service =
        TestClient::connect(TestClient::tcp_options(&stack, "bridge", Role::Service)).await?;

    assert_eq!(
        applicant
            .subscribe("cc/v1/sessions/s1/messages", QoS::AtLeastOnce)
            .await?,
        vec![GRANTED_1]
    );
    assert_eq!(
        applicant
            .subscribe("cc/v1/sessions/s1/notes", QoS::AtLeastOnce)
            .await?,
        vec![SubscribeReasonCode::Failure]
    );
    assert_eq!(
        applicant
            .subscribe("cc/v1/sessions/s2/messages", QoS::AtLeastOnce)
            .await?,
        vec![SubscribeReasonCode::Failure]
    );
    assert_eq!(
        applicant
            .subscribe("cc/v1/sessions/+/messages", QoS::AtLeastOnce)
            .await?,
        vec![SubscribeReasonCode::Failure]
    );
    // A wildcard filter is granted as Mosquitto grants it, since static rules open some topics
    // to applicants; what it carries is checked message by message, so notes and other
    // sessions stay out of it (below).
    assert_eq!(
        applicant.subscribe("#", QoS::AtLeastOnce).await?,
        vec![GRANTED_1]
    );
    assert_eq!(
        agent
            .subscribe("cc/v1/sessions/s1/+", QoS::AtLeastOnce)
            .await?,
        vec![GRANTED_1]
    );

    service
        .client
        .publish(
            "cc/v1/sessions/s1/notes",
            QoS::AtLeastOnce,
            false,
            "staff only",
        )
        .await?;
    service
        .client
        .publish(
            "cc/v1/sessions/s1/messages",
            QoS::AtLeastOnce,
            false,
            "for everyone",
        )
        .await?;
    assert_eq!(agent.next_publish().await?.payload.as_ref(), b"staff only");
    assert_eq!(
        agent.next_publish().await?.payload.as_ref(),
        b"for everyone"
    );
    let seen: Vec<_> = std::iter::once(applicant.next_publish().await?)
        .chain(applicant.publishes_within(QUIET).await)
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    assert_eq!(
        seen,
        vec!["for everyone".to_owned()],
        "the applicant must never see notes, and sees a message once through two filters"
    );

    // Server-written topics are read-only: the applicant's attempt is denied and, by the default
    // MQTT 3.1.1 policy, ends its connection without reaching anyone.
    applicant
        .client
        .publish(
            "cc/v1/sessions/s1/messages",
            QoS::AtLeastOnce,
            false,
            "forged",
        )
        .await?;
    assert!(
        applicant.next_publish().await.is_err(),
        "the denied publisher should be disconnected"
    );
    assert!(
        agent.publishes_within(QUIET).await.is_empty(),
        "a forged message was delivered"
    );
    let stats = stack.broker_stats();
    assert_eq!((stats.denied_subscribes, stats.denied_publishes), (3, 1));

    // Membership is checked at every subscribe: once removed, the session is out of reach.
    stack.memberships().leave("s1", "agent-1");
    assert_eq!(
        agent
            .subscribe("cc/v1/sessions/s1/messages", QoS::AtLeastOnce)
            .await?,
        vec![SubscribeReasonCode::Failure]
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_drop_policy_keeps_the_connection_and_discards_the_message() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.acl.denied_publish = courtchat::DeniedPublish::Drop;
    })
    .await?;
    let mut agent =
        TestClient::connect(TestClient::tcp_options(&stack, "agent-1", Role::Agent)).await?;
    agent.subscribe("sandbox/echo", QoS::AtMostOnce).await?;
    agent
        .client
        .publish("cc/v1/queue", QoS::AtLeastOnce, false, "forged")
        .await?;
    agent
        .client
        .publish("sandbox/echo", QoS::AtLeastOnce, false, "still connected")
        .await?;
    assert_eq!(
        agent.next_publish().await?.payload.as_ref(),
        b"still connected"
    );
    assert_eq!(stack.broker_stats().denied_publishes, 1);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_forbidden_will_refuses_the_connect() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let mut options = TestClient::tcp_options(&stack, "kiosk-1", Role::Applicant);
    options.set_last_will(LastWill::new(
        "cc/v1/sessions/s1/messages",
        "forged",
        QoS::AtMostOnce,
        false,
    ));
    assert_eq!(
        try_connect(options).await,
        ConnectOutcome::Refused(ConnectReturnCode::NotAuthorized)
    );
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn anonymous_access_is_off_by_default_and_limited_to_static_rules() -> anyhow::Result<()> {
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.auth.allow_anonymous = true;
        config.mqtt.acl.rules.push(courtchat::StaticRule {
            role: Some(Role::Anonymous),
            username: None,
            client: None,
            access: courtchat::Access::Readwrite,
            topic: "public/#".to_owned(),
            effect: courtchat::Effect::Allow,
        });
    })
    .await?;
    let mut guest =
        TestClient::connect(TestClient::anonymous_tcp_options(&stack, "guest-1")).await?;
    assert_eq!(
        guest.subscribe("public/board", QoS::AtMostOnce).await?,
        vec![GRANTED_0]
    );
    assert_eq!(
        guest.subscribe("sandbox/x", QoS::AtMostOnce).await?,
        vec![SubscribeReasonCode::Failure]
    );
    assert_eq!(
        guest.subscribe("cc/v1/queue", QoS::AtMostOnce).await?,
        vec![SubscribeReasonCode::Failure]
    );
    guest
        .client
        .publish("public/board", QoS::AtLeastOnce, false, "hi")
        .await?;
    assert_eq!(guest.next_publish().await?.payload.as_ref(), b"hi");
    stack.shutdown().await;

    let closed = TestStack::start().await?;
    assert_eq!(
        try_connect(TestClient::anonymous_tcp_options(&closed, "guest-1")).await,
        ConnectOutcome::Refused(ConnectReturnCode::NotAuthorized)
    );
    closed.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn denials_are_recorded_in_the_audit_trail() -> anyhow::Result<()> {
    use schemas::db::entities::audit_event;
    use sea_orm::{EntityTrait, QueryOrder};

    let stack = TestStack::start().await?;
    let mut refused = TestClient::anonymous_tcp_options(&stack, "intruder");
    refused.set_credentials("intruder", "forged");
    assert!(matches!(
        try_connect(refused).await,
        ConnectOutcome::Refused(_)
    ));
    let mut applicant = TestClientV5::connect(TestClientV5::tcp_options(
        &stack,
        "kiosk-1",
        Role::Applicant,
    ))
    .await?;
    applicant
        .subscribe(vec![testkit::mqtt::filter(
            "cc/v1/sessions/s9/notes",
            V5QoS::AtLeastOnce,
        )])
        .await?;
    applicant
        .client
        .publish("cc/v1/queue", V5QoS::AtLeastOnce, false, "forged")
        .await?;
    applicant.next_puback().await?;

    // The recorder writes asynchronously; wait (bounded) for the three entries.
    let db = stack.store().connection();
    let deadline = tokio::time::Instant::now() + testkit::mqtt::PATIENCE;
    let entries = loop {
        let entries = audit_event::Entity::find()
            .order_by_asc(audit_event::Column::Id)
            .all(db)
            .await?;
        if entries.len() >= 3 || tokio::time::Instant::now() > deadline {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.session_id.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("intruder", "mqtt.connect.denied", None),
            ("kiosk-1", "mqtt.subscribe.denied", Some("s9")),
            ("kiosk-1", "mqtt.publish.denied", None),
        ]
    );
    assert!(
        entries[2].detail.contains("cc/v1/queue"),
        "{}",
        entries[2].detail
    );
    let verification = courtchat::verify_audit(stack.config(), stack.store()).await?;
    assert_eq!((verification.entries, verification.first_broken), (3, None));
    stack.shutdown().await;
    Ok(())
}

/// A token whose `iat` lies in the future beyond the tolerated skew (`mqtt.auth.iat_leeway`,
/// 60 s by default) is refused by the gateway (bad credentials) and by the admin API (401):
/// accepted, it would outlive every revocation by issue time.
#[tokio::test]
async fn a_token_issued_in_the_future_is_refused_by_the_gateway_and_the_api() -> anyhow::Result<()>
{
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as V5Code;
    use std::time::SystemTime;
    use testkit::mqtt::try_connect_v5;

    let stack = TestStack::start().await?;
    super::staff::add(&stack, "ann", courtchat::StaffRole::Admin).await?;
    let now = SystemTime::now();
    let ahead = now + Duration::from_secs(3600);
    let within_skew = now + Duration::from_secs(30);

    // MQTT 3.1.1 (0x04) and 5.0 (0x86).
    let v4 = |subject: &str, token: String| {
        let mut options = TestClient::anonymous_tcp_options(&stack, subject);
        options.set_credentials(subject, token);
        options
    };
    let v5 = |subject: &str, token: String| {
        let mut options = TestClientV5::tcp_options(&stack, subject, Role::Agent);
        options.set_credentials(subject, token);
        options
    };
    assert_eq!(
        try_connect(v4(
            "agent-1",
            stack.token_issued_at("agent-1", Role::Agent, ahead)
        ))
        .await,
        ConnectOutcome::Refused(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(
        try_connect_v5(v5(
            "agent-2",
            stack.token_issued_at("agent-2", Role::Agent, ahead)
        ))
        .await?,
        V5Code::BadUserNamePassword
    );
    // A clock a little ahead is tolerated.
    assert_eq!(
        try_connect(v4(
            "agent-3",
            stack.token_issued_at("agent-3", Role::Agent, within_skew)
        ))
        .await,
        ConnectOutcome::Accepted
    );

    // The admin API, with a token for a real admin.
    let people = |token: String| {
        reqwest::Client::new()
            .get(stack.http_url("/v1/people"))
            .bearer_auth(token)
            .send()
    };
    let response = people(stack.token_issued_at("ann", Role::Admin, ahead)).await?;
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["type"], "urn:courtchat:problem:unauthorized", "{body}");
    let response = people(stack.token_issued_at("ann", Role::Admin, within_skew)).await?;
    assert_eq!(response.status(), 200);
    stack.shutdown().await;
    Ok(())
}
