//! What a committed batch publishes, in order: memberships (so the gateway lets participants
//! in before they hear of it), lock states (retained), stream entries and other session
//! updates, then the answers to the batch's submissions.

use schemas::topics::Topic;
use serde::Serialize;

use crate::pipeline::link::Link;

/// The answer to one submission of the batch.
pub(crate) struct Answer {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The submission it answers (its place in the batch).
    pub incoming: Option<usize>,
}

#[derive(Default)]
pub(crate) struct Outbox {
    pub memberships: Vec<schemas::wire::MembershipUpdate>,
    /// Lock states, published retained.
    pub locks: Vec<(String, Vec<u8>)>,
    pub entries: Vec<(String, Vec<u8>)>,
    pub answers: Vec<Answer>,
}

impl Outbox {
    pub fn entry(&mut self, topic: String, payload: &impl Serialize) {
        self.entries
            .push((topic, serde_json::to_vec(payload).unwrap_or_default()));
    }

    pub fn lock(&mut self, topic: String, payload: &impl Serialize) {
        self.locks
            .push((topic, serde_json::to_vec(payload).unwrap_or_default()));
    }

    /// Answers submission `incoming` of `subject` on their ack topic.
    pub fn answer(&mut self, incoming: Option<usize>, subject: &str, payload: &impl Serialize) {
        self.answers.push(Answer {
            topic: Topic::Ack { subject }.to_string(),
            payload: serde_json::to_vec(payload).unwrap_or_default(),
            incoming,
        });
    }

    pub fn extend(&mut self, other: Outbox) {
        self.memberships.extend(other.memberships);
        self.locks.extend(other.locks);
        self.entries.extend(other.entries);
        self.answers.extend(other.answers);
    }

    /// Publishes everything, except the answers that `keep` takes (answers to commands, which
    /// go back to their caller instead). A payload the gateway would refuse is not sent (it
    /// would cost the connection): everything the pipeline builds is bounded well below the
    /// limit, so this is logged as the defect it would be.
    pub async fn publish(
        self,
        link: &Link,
        limit: usize,
        mut keep: impl FnMut(&Answer) -> bool,
    ) -> Result<(), rumqttc::v5::ClientError> {
        let memberships = Topic::Memberships.to_string();
        let mut publishes: Vec<(String, Vec<u8>, bool)> = Vec::with_capacity(
            self.memberships.len() + self.locks.len() + self.entries.len() + self.answers.len(),
        );
        for update in &self.memberships {
            let payload = serde_json::to_vec(update).unwrap_or_default();
            publishes.push((memberships.clone(), payload, false));
        }
        // Lock state is retained, so that a dashboard that subscribes later sees the holder.
        publishes.extend(self.locks.into_iter().map(|(t, p)| (t, p, true)));
        publishes.extend(self.entries.into_iter().map(|(t, p)| (t, p, false)));
        for answer in self.answers {
            if !keep(&answer) {
                publishes.push((answer.topic, answer.payload, false));
            }
        }
        for (topic, payload, retain) in publishes {
            if !fits(limit, &topic, &payload) {
                tracing::error!(%topic, size = payload.len(), limit, "a publish larger than the gateway accepts was not sent");
                continue;
            }
            link.publish(topic, retain, payload).await?;
        }
        Ok(())
    }
}

/// Whether a QoS 1 PUBLISH of `payload` to `topic` (with room for its header, packet id and
/// properties) fits in a packet of `limit` bytes.
pub(crate) fn fits(limit: usize, topic: &str, payload: &[u8]) -> bool {
    const OVERHEAD: usize = 64;
    topic.len() + payload.len() + OVERHEAD <= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_fits_with_room_for_its_header() {
        assert!(fits(1000, "cc/v1/queue", &[0; 900]));
        assert!(!fits(1000, "cc/v1/queue", &[0; 930]));
    }
}
