//! Staff revocation: when the admin API disables a member of staff (or lowers their role), the
//! gateway ends their live connections at once and refuses the tokens they already hold, while
//! a token issued at or after the revocation works (re-enabled staff log in anew).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use courtchat::Role;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode as V5Code, DisconnectReasonCode};
use rumqttc::{ConnectReturnCode, MqttOptions, QoS};
use testkit::TestStack;
use testkit::mqtt::{ConnectOutcome, TestClient, TestClientV5, try_connect, try_connect_v5};

/// "At once": far below the 30-second keepalive and the test clients' patience.
const PROMPTLY: Duration = Duration::from_secs(2);

fn v4_options(stack: &TestStack, subject: &str, token: String) -> MqttOptions {
    let mut options = TestClient::anonymous_tcp_options(stack, subject);
    options.set_credentials(subject, token);
    options
}

fn v5_options(stack: &TestStack, subject: &str, token: String) -> rumqttc::v5::MqttOptions {
    let mut options = TestClientV5::tcp_options(stack, subject, Role::Agent);
    options.set_credentials(subject, token);
    options
}

#[tokio::test]
async fn revoked_staff_are_disconnected_and_their_old_tokens_refused() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let now = SystemTime::now();
    let not_before = now.duration_since(UNIX_EPOCH)?.as_secs();
    // Tokens the staff already hold were issued before the revocation.
    let earlier = now - Duration::from_secs(60);
    let old_v5 = stack.token_issued_at("agent-v5", Role::Agent, earlier);
    let old_v4 = stack.token_issued_at("agent-v4", Role::Supervisor, earlier);

    let mut agent_v5 =
        TestClientV5::connect(v5_options(&stack, "agent-v5", old_v5.clone())).await?;
    let mut agent_v4 = TestClient::connect(v4_options(&stack, "agent-v4", old_v4.clone())).await?;
    let bystander_token = stack.token_issued_at("agent-other", Role::Agent, earlier);
    let mut bystander =
        TestClient::connect(v4_options(&stack, "agent-other", bystander_token)).await?;

    let refused_before = stack.broker_stats().refused_connects;
    let started = Instant::now();
    stack.staff_revocations().revoke("agent-v5", not_before);
    stack.staff_revocations().revoke("agent-v4", not_before);

    // MQTT 5 is told why; MQTT 3.1.1 has no server DISCONNECT, so the socket just closes.
    let disconnect = agent_v5.next_disconnect().await?;
    assert_eq!(
        disconnect.reason_code,
        DisconnectReasonCode::AdministrativeAction
    );
    let closed = agent_v4.next_publish().await;
    assert!(
        closed.is_err_and(|err| err.to_string().contains("closed")),
        "the 3.1.1 connection outlived the revocation"
    );
    assert!(
        started.elapsed() < PROMPTLY,
        "revoked connections took {:?} to end",
        started.elapsed()
    );

    // Someone else's connection, with a token just as old, is untouched.
    assert_eq!(
        bystander
            .subscribe("sandbox/still-up", QoS::AtMostOnce)
            .await?,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    bystander
        .client
        .publish("sandbox/still-up", QoS::AtLeastOnce, false, "here")
        .await?;
    assert_eq!(bystander.next_publish().await?.payload.as_ref(), b"here");

    // The tokens they hold no longer work, and the refusals are counted (and audited) like any.
    assert_eq!(
        try_connect_v5(v5_options(&stack, "agent-v5", old_v5)).await?,
        V5Code::NotAuthorized
    );
    assert_eq!(
        try_connect(v4_options(&stack, "agent-v4", old_v4)).await,
        ConnectOutcome::Refused(ConnectReturnCode::NotAuthorized)
    );
    assert_eq!(stack.broker_stats().refused_connects, refused_before + 2);

    // A token issued at or after the revocation works: re-enabled staff log in anew.
    let at = UNIX_EPOCH + Duration::from_secs(not_before);
    let renewed_v5 = stack.token_issued_at("agent-v5", Role::Agent, at);
    let renewed_v4 = stack.token_issued_at("agent-v4", Role::Agent, at + Duration::from_secs(1));
    let agent_v5 = TestClientV5::connect(v5_options(&stack, "agent-v5", renewed_v5)).await?;
    let agent_v4 = TestClient::connect(v4_options(&stack, "agent-v4", renewed_v4)).await?;

    agent_v5.disconnect().await?;
    agent_v4.disconnect().await?;
    bystander.disconnect().await?;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_later_revocation_is_kept_over_an_earlier_one() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let now = SystemTime::now();
    let later = now.duration_since(UNIX_EPOCH)?.as_secs();
    let token = stack.token_issued_at("agent-1", Role::Agent, now - Duration::from_secs(30));
    stack.staff_revocations().revoke("agent-1", later);
    // An older revocation arriving late does not let the token back in.
    stack.staff_revocations().revoke("agent-1", later - 60);
    assert_eq!(
        try_connect_v5(v5_options(&stack, "agent-1", token)).await?,
        V5Code::NotAuthorized
    );
    // Revocations seeded at start (from the database) are enforced the same way.
    stack
        .staff_revocations()
        .load([("agent-2".to_owned(), later)]);
    let seeded = stack.token_issued_at("agent-2", Role::Agent, now - Duration::from_secs(30));
    assert_eq!(
        try_connect(v4_options(&stack, "agent-2", seeded)).await,
        ConnectOutcome::Refused(ConnectReturnCode::NotAuthorized)
    );
    stack.shutdown().await;
    Ok(())
}
