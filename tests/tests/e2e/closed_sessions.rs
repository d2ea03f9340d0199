//! The closed-session window is configuration (`mqtt.closed_sessions_kept`,
//! `mqtt.closed_session_access_secs`): through real clients, a closed session stays open to its
//! participants (for the survey and resync) while it is inside the window, and the gateway
//! refuses them once it has been forgotten.

use std::time::Duration;

use courtchat::Role;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode};
use schemas::wire::{Ack, Outcome};
use serde_json::json;
use testkit::mqtt::{PATIENCE, TestClientV5, filter};
use testkit::{TestDatabase, TestStack};

/// An applicant that opens and closes sessions and asks what it may still do in them.
struct Applicant {
    client: TestClientV5,
    subject: String,
    /// Resyncs asked for, to give each its own id.
    asked: usize,
}

impl Applicant {
    async fn connect(stack: &TestStack, subject: &str) -> anyhow::Result<Self> {
        let mut client =
            TestClientV5::connect(TestClientV5::tcp_options(stack, subject, Role::Applicant))
                .await?;
        let acks = filter(&format!("cc/v1/clients/{subject}/ack"), QoS::AtLeastOnce);
        anyhow::ensure!(
            client.subscribe(vec![acks]).await? == [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        );
        Ok(Self {
            client,
            subject: subject.to_owned(),
            asked: 0,
        })
    }

    /// Publishes `payload` on `topic` and returns the pipeline's acknowledgement.
    async fn ask(&mut self, topic: String, payload: serde_json::Value) -> anyhow::Result<Ack> {
        self.client
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await?;
        let publish = self.client.next_publish().await?;
        Ok(serde_json::from_slice(&publish.payload)?)
    }

    /// Opens a session and closes it again; returns its id.
    async fn open_and_close(&mut self, n: usize) -> anyhow::Result<String> {
        let open = json!({"client_msg_id": format!("open-{n}"), "channel": "kiosk"});
        let opened = self
            .ask(format!("cc/v1/open/{}", self.subject), open)
            .await?;
        let session = opened.session_id.expect("an opened session has an id");
        let close = json!({"client_msg_id": format!("close-{n}"), "type": "close"});
        let closed = self.ask(self.submit_topic(&session), close).await?;
        anyhow::ensure!(
            matches!(closed.outcome, Outcome::Accepted { .. }),
            "{closed:?}"
        );
        Ok(session)
    }

    fn submit_topic(&self, session: &str) -> String {
        format!("cc/v1/sessions/{session}/submit/{}", self.subject)
    }

    /// Whether the gateway still lets this applicant read `session` and ask it for a resync.
    async fn has_access(&mut self, session: &str) -> anyhow::Result<bool> {
        let stream = filter(
            &format!("cc/v1/sessions/{session}/messages"),
            QoS::AtLeastOnce,
        );
        let may_read = self.client.subscribe(vec![stream]).await?
            == [SubscribeReasonCode::Success(QoS::AtLeastOnce)];
        self.asked += 1;
        let cmid = format!("resync-{}", self.asked);
        let resync = json!({"client_msg_id": cmid, "type": "resync", "from_seq": 1});
        self.client
            .client
            .publish(
                self.submit_topic(session),
                QoS::AtLeastOnce,
                false,
                resync.to_string(),
            )
            .await?;
        let may_write = self.client.next_puback().await?.reason == PubAckReason::Success;
        anyhow::ensure!(
            may_read == may_write,
            "{session}: reading {may_read}, writing {may_write}"
        );
        if may_write {
            // The pipeline answers on the ack topic. The PUBACK comes first: the connection's
            // task writes it before it handles any delivery to the client.
            let reply = self.client.next_publish().await?;
            let reply: serde_json::Value = serde_json::from_slice(&reply.payload)?;
            anyhow::ensure!(reply["client_msg_id"] == cmid, "{reply}");
        }
        Ok(may_read)
    }
}

#[tokio::test]
async fn a_smaller_count_of_closed_sessions_kept_takes_effect() -> anyhow::Result<()> {
    const KEPT: usize = 2;
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.closed_sessions_kept = KEPT;
    })
    .await?;
    let mut kiosk = Applicant::connect(&stack, "kiosk-window").await?;
    let mut sessions = Vec::new();
    for n in 0..KEPT {
        sessions.push(kiosk.open_and_close(n).await?);
        assert!(
            kiosk.has_access(&sessions[n]).await?,
            "a closed session inside the window stays open to its applicant"
        );
    }
    // One more close pushes the first session out of the window.
    sessions.push(kiosk.open_and_close(KEPT).await?);
    assert!(
        !kiosk.has_access(&sessions[0]).await?,
        "the oldest closed session is forgotten"
    );
    for session in &sessions[1..] {
        assert!(kiosk.has_access(session).await?, "{session} is still kept");
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_closed_sessions_access_ends_after_the_configured_time() -> anyhow::Result<()> {
    const ACCESS: Duration = Duration::from_secs(3);
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        config.mqtt.closed_session_access_secs = ACCESS.as_secs();
    })
    .await?;
    let mut kiosk = Applicant::connect(&stack, "kiosk-timed").await?;
    // The gateway closes the session somewhere between these two instants; an answer that
    // arrives late on a loaded machine must not make the session look forgotten early.
    let before_close = tokio::time::Instant::now();
    let session = kiosk.open_and_close(0).await?;
    let closed_at = tokio::time::Instant::now();
    assert!(
        kiosk.has_access(&session).await?,
        "open to its applicant right after closing"
    );
    // Forgotten once its time is up, though no other session closes to push it out.
    while kiosk.has_access(&session).await? {
        assert!(
            closed_at.elapsed() < ACCESS + PATIENCE,
            "the session was never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        before_close.elapsed() >= ACCESS,
        "forgotten {:?} after the close was sent, before its time",
        before_close.elapsed()
    );
    stack.shutdown().await;
    Ok(())
}
