//! What a committed batch publishes, in order: memberships (so the gateway lets participants
//! in before they hear of it), lock states (retained), stream entries and other session
//! updates, then the answers to the batch's submissions.

use schemas::topics::Topic;
use schemas::wire;
use serde::Serialize;

use crate::pipeline::link::{Link, LinkLost};

/// What a submission is told: typed until the outbox writes it, so that the metrics and the
/// commands' callers read it as it was decided, never parsed back from bytes.
#[derive(Debug)]
pub(crate) enum Told {
    Ack(wire::Ack),
    /// A resync's page.
    Page(Box<wire::Resync>),
    /// A resync's page, read once the batch is stored (see `committer::store`).
    PageDue,
}

/// The answer to one submission of the batch.
pub(crate) struct Answer {
    pub topic: String,
    pub told: Told,
    /// The submission it answers (its place in the batch).
    pub incoming: Option<usize>,
}

impl Answer {
    /// Its payload, as published.
    fn payload(&self) -> Option<Vec<u8>> {
        match &self.told {
            Told::Ack(ack) => serde_json::to_vec(ack).ok(),
            Told::Page(page) => serde_json::to_vec(page).ok(),
            Told::PageDue => None,
        }
    }
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
    pub fn answer(&mut self, incoming: Option<usize>, subject: &str, ack: wire::Ack) {
        self.answers.push(Answer {
            topic: Topic::Ack { subject }.to_string(),
            told: Told::Ack(ack),
            incoming,
        });
    }

    /// Will answer resync `incoming` of `subject` with a page once the batch is stored; its
    /// place among the answers, for the page.
    pub fn page_due(&mut self, incoming: Option<usize>, subject: &str) -> usize {
        self.answers.push(Answer {
            topic: Topic::Ack { subject }.to_string(),
            told: Told::PageDue,
            incoming,
        });
        self.answers.len() - 1
    }

    pub fn extend(&mut self, other: Outbox) {
        self.memberships.extend(other.memberships);
        self.locks.extend(other.locks);
        self.entries.extend(other.entries);
        self.answers.extend(other.answers);
    }

    /// Publishes everything, except the answers that `keep` takes (answers to commands, which
    /// go back to their caller instead), which it returns. A payload the gateway would refuse
    /// is not sent (it would cost the connection): everything the pipeline builds is bounded
    /// well below the limit, so this is logged as the defect it would be.
    pub async fn publish(
        self,
        link: &Link,
        limit: usize,
        mut keep: impl FnMut(&Answer) -> bool,
    ) -> Result<Vec<Answer>, LinkLost> {
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
        let mut kept = Vec::new();
        for answer in self.answers {
            if keep(&answer) {
                kept.push(answer);
                continue;
            }
            match answer.payload() {
                Some(payload) => publishes.push((answer.topic, payload, false)),
                None => {
                    tracing::error!(topic = %answer.topic, "an answer without its page was not sent")
                }
            }
        }
        for (topic, payload, retain) in publishes {
            if !fits(limit, &topic, &payload) {
                tracing::error!(%topic, size = payload.len(), limit, "a publish larger than the gateway accepts was not sent");
                continue;
            }
            link.publish(topic, retain, payload).await?;
        }
        Ok(kept)
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
