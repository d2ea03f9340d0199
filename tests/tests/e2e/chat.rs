//! Conversations over MQTT for the admin API's tests: clients that sign in with a token, and a
//! kiosk that opens a session, as the protocol has them.

use rumqttc::v5::mqttbytes::QoS;
use serde_json::{Value, json};
use testkit::TestStack;
use testkit::mqtt::{PATIENCE, TestClientV5, filter};

/// Publishes `payload` to `topic` as `client` and waits for the answer on its ack topic.
pub async fn submit(
    client: &mut TestClientV5,
    topic: String,
    payload: Value,
) -> anyhow::Result<Value> {
    client
        .client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
        .await?;
    loop {
        let publish = tokio::time::timeout(PATIENCE, client.next_publish()).await??;
        if String::from_utf8_lossy(&publish.topic).ends_with("/ack") {
            return Ok(serde_json::from_slice(&publish.payload)?);
        }
    }
}

pub async fn connected(
    stack: &TestStack,
    subject: &str,
    token: String,
) -> anyhow::Result<TestClientV5> {
    let addr = stack.mqtt_tcp_addr();
    let mut options = rumqttc::v5::MqttOptions::new(subject, addr.ip().to_string(), addr.port());
    options.set_credentials(subject, token);
    let mut client = TestClientV5::connect(options).await?;
    client
        .subscribe(vec![filter(
            &format!("cc/v1/clients/{subject}/ack"),
            QoS::AtLeastOnce,
        )])
        .await?;
    Ok(client)
}

/// A kiosk `subject` (an applicant) connected, with a session of its own open on `channel`.
pub async fn kiosk_with_session(
    stack: &TestStack,
    subject: &str,
    channel: &str,
) -> anyhow::Result<(TestClientV5, String)> {
    let token = stack.token(subject, courtchat::Role::Applicant);
    let mut kiosk = connected(stack, subject, token).await?;
    let opened = submit(
        &mut kiosk,
        format!("cc/v1/open/{subject}"),
        json!({"client_msg_id": "o", "channel": channel}),
    )
    .await?;
    let session = opened["session_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no session: {opened}"))?
        .to_owned();
    Ok((kiosk, session))
}
