//! Which stored row a discrepancy is about: a message by its place in its session's stream, or a
//! session's survey answer. Shared by the record check and the purged rows it excuses.

use std::fmt;

/// A row of the record the audit trail vouches for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RecordKey {
    Message { session_id: String, seq: i64 },
    Survey { session_id: String },
}

impl RecordKey {
    pub fn session_id(&self) -> &str {
        match self {
            Self::Message { session_id, .. } | Self::Survey { session_id } => session_id,
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Message { session_id, seq } => write!(f, "message {session_id}#{seq}"),
            Self::Survey { session_id } => write!(f, "the survey answer of session {session_id}"),
        }
    }
}
