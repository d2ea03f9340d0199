//! Commands: submissions from inside the process (the admin API), decided by the same single
//! writer as what arrives over MQTT, ordered together with it, with the same effects, audit
//! entries and acknowledgements. A command is what the actor would publish, so there is one
//! path to get right.

use std::sync::Arc;

use schemas::topics::{SessionTopic, Topic};
use schemas::wire::{Ack, OpenSession, Resync, StaffSubmission, Submission};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::pipeline::link::{Incoming, Origin};

/// How many commands may wait for the pipeline; callers wait beyond that.
const QUEUE: usize = 1024;

/// The queue between callers and the pipeline's workers, which outlives any one worker.
pub(crate) struct Intake {
    pub sender: mpsc::Sender<Incoming>,
    pub receiver: Arc<Mutex<mpsc::Receiver<Incoming>>>,
}

impl Intake {
    pub fn new() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Self {
            sender,
            receiver: Arc::new(Mutex::new(receiver)),
        }
    }
}

/// Submits actions to the pipeline from inside the process; cheap to clone.
#[derive(Clone)]
pub struct Commands {
    sender: mpsc::Sender<Incoming>,
}

/// The pipeline's answer to a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Ack(Ack),
    /// The answer to a resync.
    Page(Resync),
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The pipeline has stopped (the server is shutting down).
    #[error("the chat pipeline is not running")]
    Stopped,
    #[error("the submission could not be written: {0}")]
    Encode(#[from] serde_json::Error),
    /// A session id or subject that cannot be a topic segment (empty, or holding `/`, `+`,
    /// `#`): the pipeline would never see it, so it is refused here.
    #[error("not a session id or subject the protocol can name")]
    Unnamable,
}

impl Commands {
    pub(crate) fn new(intake: &Intake) -> Self {
        Self {
            sender: intake.sender.clone(),
        }
    }

    /// Submits `submission` to `session_id` as `actor`, as if `actor` had published it, and
    /// waits for the answer.
    pub async fn submit(
        &self,
        session_id: &str,
        actor: &str,
        submission: &Submission,
    ) -> Result<Reply, CommandError> {
        let topic = Topic::Session {
            session: session_id,
            kind: SessionTopic::Submit,
            subject: Some(actor),
        };
        self.send(topic.to_string(), serde_json::to_vec(submission)?)
            .await
    }

    /// Opens a session for `applicant`, as if the applicant had asked.
    pub async fn open(
        &self,
        applicant: &str,
        request: &OpenSession,
    ) -> Result<Reply, CommandError> {
        let topic = Topic::Open { subject: applicant };
        self.send(topic.to_string(), serde_json::to_vec(request)?)
            .await
    }

    /// Submits `submission` about `subject` themselves (availability), as if they had
    /// published it.
    pub async fn staff(
        &self,
        subject: &str,
        submission: &StaffSubmission,
    ) -> Result<Reply, CommandError> {
        let topic = Topic::StaffSubmit { subject };
        self.send(topic.to_string(), serde_json::to_vec(submission)?)
            .await
    }

    async fn send(&self, topic: String, payload: Vec<u8>) -> Result<Reply, CommandError> {
        if Topic::parse(&topic).is_none() {
            return Err(CommandError::Unnamable);
        }
        let (caller, answer) = oneshot::channel();
        let incoming = Incoming {
            topic,
            payload: payload.into(),
            origin: Origin::Command(caller),
            arrived: std::time::Instant::now(),
        };
        self.sender
            .send(incoming)
            .await
            .map_err(|_| CommandError::Stopped)?;
        answer.await.map_err(|_| CommandError::Stopped)
    }
}
