//! The service queue: the chat pipeline's connection (the service role) is never disconnected
//! for a full delivery queue. Its backlog is every participant's submissions, so a publisher
//! whose message finds it full waits for room instead, holding what its own client sends next
//! (see `ConnectionPolicy::patient_queue`): the senders feel the backpressure, and nothing the
//! gateway accepted is dropped on the pipeline's way.

use crate::hooks::{ConnectionPolicy, Hook};
use crate::identity::{Identity, Role};
use crate::listener::Listener;

/// Makes the service role's delivery queues patient.
pub struct ServiceQueue;

impl Hook for ServiceQueue {
    fn on_connect(&self, identity: &Identity, _listener: Listener, policy: &mut ConnectionPolicy) {
        if identity.role == Role::Service {
            policy.patient_queue = true;
        }
    }
}
