//! The wire protocol: every JSON payload that crosses MQTT, as serde types.
//!
//! Each payload carries `"v": 1`. Unknown fields are ignored, so a newer client can talk to an
//! older server and the other way round; a known field with a wrong type or value is refused
//! with a reason (on the sender's ack topic, for submissions). The JSON Schemas in
//! `schemas/json/` are generated from these types by `cargo test -p schemas` (run it with
//! `UPDATE_SCHEMAS=1` after a change); a test fails when a committed schema is stale.
//! `PROTOCOL.md` says which topic carries which payload.
//!
//! These are wire types, not table rows: `schemas::db` has the rows, and every conversion
//! between the two is in `schemas::convert`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod input;

pub use input::{
    CLIENT_MSG_ID_MAX, InputError, JsonError, NAME_MAX, bounded, check_client_msg_id, check_name,
    check_name_characters, check_text, parse_json,
};

/// The protocol version these types describe.
pub const VERSION: u8 = 1;

/// The MQTT 5 user property the gateway sets on every submission and open request it hands to
/// the chat pipeline: when it received it, in milliseconds since the Unix epoch. The pipeline
/// counts a submission's wait from then, so that time spent queued in the gateway counts too
/// (see `bridge.max_queue_delay_ms`). Clients' own user properties never reach the pipeline.
pub const RECEIVED_AT_PROPERTY: &str = "courtchat-received-at";

/// The MQTT 5 user property the gateway sets on every open request it hands to the chat
/// pipeline whose applicant's token names a channel (`kiosk`, `phone`, `web`): the channel the
/// admin API issued the token for. The pipeline takes it over the request's own `channel`.
pub const CHANNEL_PROPERTY: &str = "courtchat-channel";

/// The MQTT 5 user property the gateway sets on an open request whose applicant's token names a
/// team (a kiosk's). When [`CHANNEL_PROPERTY`] is set the pipeline routes the session to this
/// team, or to none when it is absent, whatever the request's `topic` says.
pub const TEAM_PROPERTY: &str = "courtchat-team";

fn version() -> u8 {
    VERSION
}

/// Where an applicant writes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Kiosk,
    Phone,
    Web,
}

/// An applicant asks for a new session (`cc/v1/open/{subject}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OpenSession {
    #[serde(default = "version")]
    pub v: u8,
    /// The applicant's own id for this request; the acknowledgement echoes it, and a repeat
    /// with the same id returns the same session.
    pub client_msg_id: String,
    /// Where the applicant writes from. When the applicant's token names a channel (tokens from
    /// `POST /v1/applicant-tokens` do), the token's channel is the session's instead.
    pub channel: Channel,
    /// What the applicant needs help with, e.g. `license-renewal`; routes the session to a team.
    /// Ignored when the applicant's token names a channel: the session's team is then the
    /// token's (a kiosk's team), or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// An opening message, stored as the session's first message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_message: Option<String>,
}

/// What a participant submits to the pipeline (`cc/v1/sessions/{session}/submit/{subject}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Submission {
    #[serde(default = "version")]
    pub v: u8,
    /// The sender's own id for this submission, unique per sender and session. A resubmission
    /// with the same id never creates a duplicate; it returns the original acknowledgement.
    pub client_msg_id: String,
    #[serde(flatten)]
    pub action: Action,
}

/// The kinds of submission.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// A message every participant sees. From an agent, only while holding the reply lock (in
    /// exclusive mode).
    Message { body: String },
    /// An internal note: staff only, never delivered to the applicant.
    Note { body: String },
    /// The sender's read horizon moved: everything up to these sequence numbers was delivered /
    /// read. Horizons only move forward.
    Receipt {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivered_seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        read_seq: Option<u64>,
    },
    /// Reply-lock operations.
    Lock { op: LockOp },
    /// An agent joins the session.
    Join,
    /// A participant leaves the session.
    Leave,
    /// Hand the session, with its reply lock, to another agent or team in one step. From a
    /// participant, the sender leaves; from a supervisor or admin who is not one (an
    /// assignment), the assigned agent, if any, leaves.
    Transfer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_agent: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_team: Option<String>,
    },
    /// Ask a supervisor to step in.
    Escalate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// End the session; the applicant is then offered the survey.
    Close {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Send me the stream entries with these sequence numbers (inclusive; `to_seq` defaults to
    /// the latest), on my ack topic.
    Resync {
        from_seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_seq: Option<u64>,
    },
    /// The applicant's post-chat satisfaction answer.
    Survey {
        /// 1 (poor) to 5 (excellent).
        #[schemars(range(min = 1, max = 5))]
        rating: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
}

/// What a member of staff submits about themselves rather than a session
/// (`cc/v1/staff/{subject}/submit`); answered on their ack topic like a [`Submission`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StaffSubmission {
    #[serde(default = "version")]
    pub v: u8,
    pub client_msg_id: String,
    #[serde(flatten)]
    pub action: StaffAction,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StaffAction {
    /// Whether the sender takes new sessions: waiting sessions are offered only to available
    /// staff with spare capacity.
    Availability { status: Availability },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Available,
    Away,
}

/// A session given to a member of staff (`cc/v1/staff/{subject}/assignments`), published once
/// they are its participant: subscribe to its topics and resync from 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Assignment {
    #[serde(default = "version")]
    pub v: u8,
    pub session_id: String,
    /// Who the session is given to (the topic's subject).
    pub agent: String,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Who gave it: `router` for the queue's automatic offer, else the supervisor, admin or
    /// agent who assigned or transferred it.
    pub by: String,
    /// The `seq` of the session's `joined` (or `transferred`) entry that records it.
    pub seq: u64,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LockOp {
    Acquire,
    Release,
    Renew,
    /// A supervisor takes the lock from its holder.
    Takeover,
}

/// The answer to every submission and session request, on the sender's ack topic
/// (`cc/v1/clients/{subject}/ack`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Ack {
    #[serde(default = "version")]
    pub v: u8,
    /// The submission this answers.
    pub client_msg_id: String,
    pub session_id: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Stored; `seq` is its place in the session's stream, when it has one.
    Accepted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// Refused; nothing was stored.
    Rejected {
        reason: RejectReason,
        /// For people: what went wrong, e.g. which agent holds the lock.
        message: String,
    },
}

/// Why a submission was refused.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    JsonSchema,
    strum::EnumIter,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RejectReason {
    /// Not valid JSON, or a field has the wrong type or value.
    Invalid,
    UnsupportedVersion,
    /// The sender may not do this in this session.
    NotAllowed,
    /// Another agent holds the reply lock (named in `message`).
    LockHeld,
    /// The lock this operation needs is not held by the sender or has expired.
    LockNotHeld,
    /// The body is longer than the configured limit, or empty.
    TooLarge,
    /// The content is not accepted (for example control characters).
    ContentRefused,
    /// The sender's rate limit is exhausted; retry later.
    RateLimited,
    /// The session is closed.
    SessionClosed,
    /// The session does not exist.
    UnknownSession,
    /// This `client_msg_id` was already used by the sender in this session for a different
    /// submission; nothing was stored. (The same submission again gets its original answer.)
    DuplicateId,
    /// The server could not store it now; nothing was stored. Resubmit with the same
    /// `client_msg_id` later.
    Unavailable,
    /// The server is taking more than it can store: this submission waited too long and was
    /// not decided; nothing was stored. Resubmit with the same `client_msg_id` after the delay
    /// the message names.
    Busy,
}

impl RejectReason {
    /// Every reason there is.
    pub fn all() -> impl Iterator<Item = Self> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    /// Its name on the wire (`lock_held`), as metrics label it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One entry of a session's canonical stream (`cc/v1/sessions/{session}/messages`; internal
/// notes on `.../notes`), published only after it is stored.
///
/// `seq` is the session's one total order: strictly increasing and gap-free over *all* entries,
/// notes included, so the record a court reads has no holes. Each topic shows only some entries,
/// so each entry also names `prev_seq`, the previous entry on the same topic: a client whose last
/// entry is not `prev_seq` has missed something and asks for a resync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StreamEntry {
    #[serde(default = "version")]
    pub v: u8,
    pub session_id: String,
    pub seq: u64,
    /// The `seq` of the previous entry on the same topic (0 before the first).
    pub prev_seq: u64,
    pub at: DateTime<Utc>,
    /// The participant it comes from, or `system`.
    pub sender: String,
    #[serde(flatten)]
    pub content: StreamContent,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamContent {
    Message { body: String },
    Note { body: String },
    Event { event: SessionEvent },
}

/// What happened to a session, as recorded in its stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionEvent {
    Opened {
        channel: Channel,
    },
    Joined {
        subject: String,
    },
    Left {
        subject: String,
    },
    Transferred {
        from: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_agent: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_team: Option<String>,
    },
    Escalated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    StatusChanged {
        status: SessionStatus,
    },
    /// The session ended; the applicant is offered the survey.
    Closed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        survey_offered: bool,
    },
}

impl SessionEvent {
    /// The event's `type` on the wire (`opened`, `joined`, `status_changed`, ...), which also
    /// names its audit entry (`session.joined`).
    pub fn name(&self) -> &'static str {
        match self {
            SessionEvent::Opened { .. } => "opened",
            SessionEvent::Joined { .. } => "joined",
            SessionEvent::Left { .. } => "left",
            SessionEvent::Transferred { .. } => "transferred",
            SessionEvent::Escalated { .. } => "escalated",
            SessionEvent::StatusChanged { .. } => "status_changed",
            SessionEvent::Closed { .. } => "closed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Queued,
    Active,
    Escalated,
    Closed,
}

/// The answer to a resync request, on the requester's ack topic: the entries asked for that the
/// requester may read, in order, one bounded page at a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Resync {
    #[serde(default = "version")]
    pub v: u8,
    /// The resync request this answers.
    pub client_msg_id: String,
    pub session_id: String,
    pub entries: Vec<StreamEntry>,
    /// The session's latest sequence number when the reply was made.
    pub last_seq: u64,
    /// Present when the page is full and the range asked for goes on: ask again with this as
    /// `from_seq` (and the same `to_seq`) for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_from_seq: Option<u64>,
}

/// A session's reply lock (`cc/v1/sessions/{session}/lock`, retained).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LockState {
    #[serde(default = "version")]
    pub v: u8,
    pub session_id: String,
    /// The agent who may reply; none when the lock is free.
    pub holder: Option<String>,
    /// Incremented at every acquisition: a reply carries the epoch it was written under.
    pub epoch: u64,
    pub expires_at: Option<DateTime<Utc>>,
    pub mode: LockMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    /// Only the holder's replies are accepted.
    Exclusive,
    /// Any joined agent may reply; the lock only signals who is answering.
    Advisory,
}

/// A typing indicator (`.../typing/{subject}`, `.../note-typing/{subject}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Typing {
    #[serde(default = "version")]
    pub v: u8,
    pub typing: bool,
}

/// A participant's presence (`.../presence/{subject}`; `offline` is usually its will).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Presence {
    #[serde(default = "version")]
    pub v: u8,
    pub status: PresenceStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Away,
    Offline,
}

/// A change in the queue of sessions waiting for an agent (`cc/v1/queue`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QueueUpdate {
    #[serde(default = "version")]
    pub v: u8,
    pub session_id: String,
    pub status: SessionStatus,
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    pub waiting_since: DateTime<Utc>,
}

/// A participant's read horizon (`cc/v1/sessions/{session}/receipts`), after every receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReceiptState {
    #[serde(default = "version")]
    pub v: u8,
    pub session_id: String,
    pub subject: String,
    /// Everything up to this sequence number reached the participant's device.
    pub delivered_seq: u64,
    /// Everything up to this sequence number was shown to the participant.
    pub read_seq: u64,
}

/// A change of session membership (`cc/v1/memberships`), published by the chat pipeline and
/// applied by the gateway's authorizer, which also revokes the live subscriptions of whoever left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MembershipUpdate {
    #[serde(default = "version")]
    pub v: u8,
    pub session_id: String,
    pub subject: String,
    pub role: ParticipantRole,
    pub op: MembershipOp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantRole {
    Applicant,
    Agent,
    Supervisor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MembershipOp {
    Join,
    Leave,
    /// The session closed (`subject` closed it). Its participants keep their access for the
    /// survey and resync while it is among the gateway's most recently closed sessions; then
    /// every membership of the session is dropped, so that the gateway's memory follows the
    /// open sessions, not every session there ever was.
    Close,
}

/// Every payload with its schema file name, for generating and checking `schemas/json/`.
pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("open-session", schemars::schema_for!(OpenSession)),
        ("submission", schemars::schema_for!(Submission)),
        ("staff-submission", schemars::schema_for!(StaffSubmission)),
        ("assignment", schemars::schema_for!(Assignment)),
        ("ack", schemars::schema_for!(Ack)),
        ("stream-entry", schemars::schema_for!(StreamEntry)),
        ("resync", schemars::schema_for!(Resync)),
        ("lock-state", schemars::schema_for!(LockState)),
        ("typing", schemars::schema_for!(Typing)),
        ("presence", schemars::schema_for!(Presence)),
        ("queue-update", schemars::schema_for!(QueueUpdate)),
        ("membership-update", schemars::schema_for!(MembershipUpdate)),
        ("receipt-state", schemars::schema_for!(ReceiptState)),
    ]
}

#[cfg(test)]
mod tests;
