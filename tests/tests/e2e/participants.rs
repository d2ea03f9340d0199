//! People in a conversation for the tests of the pipeline's rules (staff-only text, abandoned
//! sessions, limits, staffing, restarts): an MQTT 5 client that keeps everything it receives,
//! so that a test can say what someone saw live, and waits for conditions, never for a time.

use std::future::Future;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;
use serde_json::{Value, json};
use testkit::TestStack;
use testkit::mqtt::{PATIENCE, TestClientV5, filter};

/// Waits until `condition` holds, checking every 20 ms, for at most `within`.
pub async fn eventually<F, Fut>(
    within: Duration,
    what: &str,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition().await? {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One participant's connection, and everything it received, in order.
pub struct Participant {
    pub client: TestClientV5,
    pub subject: String,
    /// (topic, payload) of every publish received.
    pub seen: Vec<(String, Value)>,
}

impl Participant {
    /// Connects as `subject` with `token` and subscribes to its ack topic.
    pub async fn connect(stack: &TestStack, subject: &str, token: String) -> anyhow::Result<Self> {
        let addr = stack.mqtt_tcp_addr();
        let mut options =
            rumqttc::v5::MqttOptions::new(subject, addr.ip().to_string(), addr.port());
        options.set_credentials(subject, token);
        options.set_max_packet_size(Some(1024 * 1024));
        Self::connect_with(options, subject).await
    }

    /// Connects with `options` (a will, say) and subscribes to the ack topic.
    pub async fn connect_with(
        options: rumqttc::v5::MqttOptions,
        subject: &str,
    ) -> anyhow::Result<Self> {
        let mut client = TestClientV5::connect(options).await?;
        let codes = client
            .subscribe(vec![filter(
                &format!("cc/v1/clients/{subject}/ack"),
                QoS::AtLeastOnce,
            )])
            .await?;
        anyhow::ensure!(
            codes == [SubscribeReasonCode::Success(QoS::AtLeastOnce)],
            "{codes:?}"
        );
        Ok(Self {
            client,
            subject: subject.to_owned(),
            seen: Vec::new(),
        })
    }

    /// An applicant of `stack`, connected.
    pub async fn applicant(stack: &TestStack, subject: &str) -> anyhow::Result<Self> {
        Self::connect(
            stack,
            subject,
            stack.token(subject, courtchat::Role::Applicant),
        )
        .await
    }

    /// A member of staff's desk, connected with `token`: following its assignments and
    /// available, so that the queue offers it sessions.
    pub async fn available_desk(
        stack: &TestStack,
        name: &str,
        token: String,
    ) -> anyhow::Result<Self> {
        let mut desk = Self::connect(stack, name, token).await?;
        let codes = desk
            .client
            .subscribe(vec![filter(
                &format!("cc/v1/staff/{name}/assignments"),
                QoS::AtLeastOnce,
            )])
            .await?;
        anyhow::ensure!(
            codes == [SubscribeReasonCode::Success(QoS::AtLeastOnce)],
            "{codes:?}"
        );
        let ack = desk
            .submit(
                format!("cc/v1/staff/{name}/submit"),
                json!({"v": 1, "client_msg_id": "av", "type": "availability", "status": "available"}),
            )
            .await?;
        anyhow::ensure!(ack["status"] == "accepted", "{ack}");
        Ok(desk)
    }

    /// Publishes `payload` to `topic` at QoS 1 without waiting for an answer.
    pub async fn publish(&self, topic: String, payload: &Value) -> anyhow::Result<()> {
        self.client
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await?;
        Ok(())
    }

    /// Takes what arrives until `done` holds for what was seen.
    pub async fn until(
        &mut self,
        what: &str,
        done: impl Fn(&[(String, Value)]) -> bool,
    ) -> anyhow::Result<()> {
        while !done(&self.seen) {
            let publish = tokio::time::timeout(PATIENCE, self.client.next_publish())
                .await
                .map_err(|_| anyhow::anyhow!("not within {PATIENCE:?}: {what}"))??;
            let topic = String::from_utf8_lossy(&publish.topic).into_owned();
            let payload = serde_json::from_slice(&publish.payload).unwrap_or(Value::Null);
            self.seen.push((topic, payload));
        }
        Ok(())
    }

    /// The answer to `client_msg_id` among what arrived from `since` on (an index into
    /// [`Participant::seen`]), waiting for it: an id used again (in another session) is not
    /// taken for its earlier answer.
    pub async fn answer_since(
        &mut self,
        client_msg_id: &str,
        since: usize,
    ) -> anyhow::Result<Value> {
        let mine = |(topic, payload): &(String, Value)| {
            topic.ends_with("/ack") && payload["client_msg_id"] == client_msg_id
        };
        self.until(&format!("the answer to {client_msg_id}"), |seen| {
            seen.iter().skip(since).any(mine)
        })
        .await?;
        Ok(self
            .seen
            .iter()
            .skip(since)
            .find(|s| mine(s))
            .map(|(_, p)| p.clone())
            .unwrap_or_default())
    }

    /// The answer to `client_msg_id`, the first that arrived (waiting for it).
    pub async fn answer(&mut self, client_msg_id: &str) -> anyhow::Result<Value> {
        self.answer_since(client_msg_id, 0).await
    }

    /// Publishes `payload` to `topic` and waits for its answer.
    pub async fn submit(&mut self, topic: String, payload: Value) -> anyhow::Result<Value> {
        let cmid = payload["client_msg_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let since = self.seen.len();
        self.publish(topic, &payload).await?;
        self.answer_since(&cmid, since).await
    }

    /// Submits `action` to `session` as this participant and waits for the answer.
    pub async fn act(&mut self, session: &str, action: Value) -> anyhow::Result<Value> {
        let topic = format!("cc/v1/sessions/{session}/submit/{}", self.subject);
        self.submit(topic, action).await
    }

    /// [`Participant::act`], which must be accepted.
    pub async fn accepted(&mut self, session: &str, action: Value) -> anyhow::Result<Value> {
        let ack = self.act(session, action.clone()).await?;
        anyhow::ensure!(ack["status"] == "accepted", "{action}: {ack}");
        Ok(ack)
    }

    /// Opens a session (for `team`, if any) and returns its id.
    pub async fn open(&mut self, team: Option<&str>) -> anyhow::Result<String> {
        let mut request = json!({"v": 1, "client_msg_id": "open-1", "channel": "kiosk"});
        if let Some(team) = team {
            request["topic"] = json!(team);
        }
        let topic = format!("cc/v1/open/{}", self.subject);
        let ack = self.submit(topic, request).await?;
        ack["session_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no session: {ack}"))
    }

    /// Subscribes to `topics` of `session` once the gateway lets this participant (its
    /// membership reaches the gateway from the pipeline).
    pub async fn follow(&mut self, session: &str, topics: &[&str]) -> anyhow::Result<()> {
        let filters: Vec<_> = topics
            .iter()
            .map(|t| filter(&format!("cc/v1/sessions/{session}/{t}"), QoS::AtLeastOnce))
            .collect();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let codes = self.client.subscribe(filters.clone()).await?;
            if codes
                .iter()
                .all(|c| matches!(c, SubscribeReasonCode::Success(_)))
            {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} may not follow {session}: {codes:?}",
                self.subject
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes this participant's presence in `session`.
    pub async fn presence(&self, session: &str, status: &str) -> anyhow::Result<()> {
        let topic = format!("cc/v1/sessions/{session}/presence/{}", self.subject);
        self.publish(topic, &json!({"v": 1, "status": status}))
            .await
    }

    /// The stream entries received live on `topic_suffix` (`messages`, `notes`).
    pub fn entries(&self, topic_suffix: &str) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|(topic, _)| topic.ends_with(&format!("/{topic_suffix}")))
            .map(|(_, payload)| payload)
            .collect()
    }

    /// Everything received, as one text (to look for a string anywhere).
    pub fn everything(&self) -> String {
        self.seen
            .iter()
            .map(|(topic, payload)| format!("{topic} {payload}\n"))
            .collect()
    }
}

/// The `type` of an event entry, or its `kind`.
pub fn shape(entry: &Value) -> String {
    entry["event"]["type"]
        .as_str()
        .or_else(|| entry["kind"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Whether `seen` holds an assignment of `session`.
pub fn assigned(seen: &[(String, Value)], session: &str) -> bool {
    seen.iter()
        .any(|(t, p)| t.ends_with("/assignments") && p["session_id"] == session)
}
