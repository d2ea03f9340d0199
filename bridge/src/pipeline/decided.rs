//! A batch decided and not yet stored: what the decider hands the committer, and what it
//! answers repetitions with meanwhile.

use std::collections::HashMap;

use chrono::Utc;
use schemas::wire::{self, OpenSession};

use super::decide::Effects;
use super::decide::lifecycle::OpenedBefore;
use super::load::{Answered, Key};

/// What a decided batch answers resubmissions and repeated opens with, until it is stored.
#[derive(Default)]
pub(crate) struct Pending {
    pub answers: HashMap<Key, Answered>,
    pub opens: HashMap<(String, String), OpenedRequest>,
}

/// An open request decided and not yet stored, for telling a repetition from a reuse of its id.
pub(crate) struct OpenedRequest {
    pub session_id: String,
    pub channel: wire::Channel,
    pub first_message: Option<String>,
}

impl OpenedRequest {
    pub(super) fn compared_with(&self, request: &OpenSession) -> OpenedBefore {
        OpenedBefore {
            session_id: self.session_id.clone(),
            same: self.channel == request.channel && self.first_message == request.first_message,
        }
    }
}

/// A resync decided in a batch: where its answer goes and what it asks for.
pub(crate) struct ResyncJob {
    pub position: usize,
    pub session_id: String,
    pub cmid: String,
    pub staff: bool,
    pub from_seq: u64,
    pub to_seq: u64,
    pub last_seq: u64,
    pub max_bytes: usize,
}

/// A batch decided and not yet stored.
pub(crate) struct Decided {
    pub fx: Effects,
    pub resyncs: Vec<ResyncJob>,
    pub now: chrono::DateTime<Utc>,
    pub pending: Pending,
    /// The sessions its submissions were about: their views must stay cached until it is
    /// stored (a view read back from the database before then would miss its changes).
    pub touched: std::collections::HashSet<String>,
}

impl Decided {
    /// A batch of effects decided without submissions (the lock sweep).
    pub fn effects(fx: Effects, now: chrono::DateTime<Utc>) -> Self {
        Self {
            fx,
            resyncs: Vec::new(),
            now,
            pending: Pending::default(),
            touched: Default::default(),
        }
    }
}
