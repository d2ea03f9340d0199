//! Conversions between the wire types ([`crate::wire`]) and the table rows
//! ([`crate::db::entities`]): each written once, here, so that the two vocabularies cannot drift
//! apart in the places that need both (the pipeline writes rows from submissions and publishes
//! rows as stream entries; the gateway loads memberships from rows).
//!
//! | from | to | how |
//! |---|---|---|
//! | `participant::ParticipantRole` | `wire::ParticipantRole` | `From`, both ways |
//! | `agent::StaffRole` | `participant::ParticipantRole` | `TryFrom`; an admin is no participant ([`NotAParticipant`]) |
//! | `session::SessionStatus` | `wire::SessionStatus` | `From`, both ways |
//! | `wire::Channel` | the `sessions.channel` text | [`Channel::as_str`] / `Display`, and `FromStr` ([`UnknownChannel`]) |
//! | `wire::StreamContent` | a `messages` row's kind and body | [`StreamContent::to_stored`] / [`StreamContent::from_stored`] |
//!
//! Every enum is matched exhaustively, so a variant added on one side and not the other stops
//! the build here instead of being mapped through a JSON round trip that fails at run time.

use std::fmt;
use std::str::FromStr;

use crate::db::entities::{agent, message, participant, session};
use crate::wire::{self, Channel, StreamContent};

impl From<participant::ParticipantRole> for wire::ParticipantRole {
    fn from(role: participant::ParticipantRole) -> Self {
        match role {
            participant::ParticipantRole::Applicant => Self::Applicant,
            participant::ParticipantRole::Agent => Self::Agent,
            participant::ParticipantRole::Supervisor => Self::Supervisor,
        }
    }
}

impl From<wire::ParticipantRole> for participant::ParticipantRole {
    fn from(role: wire::ParticipantRole) -> Self {
        match role {
            wire::ParticipantRole::Applicant => Self::Applicant,
            wire::ParticipantRole::Agent => Self::Agent,
            wire::ParticipantRole::Supervisor => Self::Supervisor,
        }
    }
}

/// A member of staff whose role takes no part in conversations (an admin works through the HTTP
/// API), so has no role in a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a member of staff with the {0:?} role takes no part in sessions")]
pub struct NotAParticipant(pub agent::StaffRole);

impl TryFrom<agent::StaffRole> for participant::ParticipantRole {
    type Error = NotAParticipant;

    fn try_from(role: agent::StaffRole) -> Result<Self, Self::Error> {
        match role {
            agent::StaffRole::Agent => Ok(Self::Agent),
            agent::StaffRole::Supervisor => Ok(Self::Supervisor),
            agent::StaffRole::Admin => Err(NotAParticipant(role)),
        }
    }
}

impl From<session::SessionStatus> for wire::SessionStatus {
    fn from(status: session::SessionStatus) -> Self {
        match status {
            session::SessionStatus::Queued => Self::Queued,
            session::SessionStatus::Active => Self::Active,
            session::SessionStatus::Escalated => Self::Escalated,
            session::SessionStatus::Closed => Self::Closed,
        }
    }
}

impl From<wire::SessionStatus> for session::SessionStatus {
    fn from(status: wire::SessionStatus) -> Self {
        match status {
            wire::SessionStatus::Queued => Self::Queued,
            wire::SessionStatus::Active => Self::Active,
            wire::SessionStatus::Escalated => Self::Escalated,
            wire::SessionStatus::Closed => Self::Closed,
        }
    }
}

impl Channel {
    /// The name on the wire, which is also what the `sessions.channel` column stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Kiosk => "kiosk",
            Channel::Phone => "phone",
            Channel::Web => "web",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `sessions.channel` value that names no [`Channel`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a channel (kiosk, phone or web)")]
pub struct UnknownChannel(pub String);

impl FromStr for Channel {
    type Err = UnknownChannel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Channel::Kiosk, Channel::Phone, Channel::Web]
            .into_iter()
            .find(|channel| channel.as_str() == s)
            .ok_or_else(|| UnknownChannel(s.to_owned()))
    }
}

impl StreamContent {
    /// How this entry is stored in `messages`: its kind, and its body (an event's body is the
    /// event as JSON, as it is published).
    pub fn to_stored(&self) -> (message::MessageKind, String) {
        match self {
            StreamContent::Message { body } => (message::MessageKind::Text, body.clone()),
            StreamContent::Note { body } => (message::MessageKind::Note, body.clone()),
            StreamContent::Event { event } => (
                message::MessageKind::Event,
                // Serializing fails only for maps with non-string keys or for a `Serialize` impl
                // that reports an error; `SessionEvent` is derived over strings, options,
                // booleans and a unit enum, so this cannot fail.
                serde_json::to_string(event).expect("a SessionEvent always serializes"),
            ),
        }
    }

    /// The entry a stored row holds: the inverse of [`StreamContent::to_stored`]. `None` for an
    /// event whose body is not a session event (a row written by something other than the
    /// pipeline).
    pub fn from_stored(kind: message::MessageKind, body: &str) -> Option<Self> {
        match kind {
            message::MessageKind::Text => Some(StreamContent::Message {
                body: body.to_owned(),
            }),
            message::MessageKind::Note => Some(StreamContent::Note {
                body: body.to_owned(),
            }),
            message::MessageKind::Event => serde_json::from_str(body)
                .ok()
                .map(|event| StreamContent::Event { event }),
        }
    }
}

#[cfg(test)]
mod tests;
