//! Who a connection is once authenticated: its [`Identity`] (subject, [`Role`], what its token
//! says), the vocabulary every later decision (authorization, revocation, hooks) is taken on.
//! It sits below `auth`, which produces identities, and `staff`, which revokes them, so
//! neither imports the other for it.

use std::fmt;
use std::time::SystemTime;

use schemas::wire::Channel;
use serde::{Deserialize, Serialize};

/// What a connected principal is allowed to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A license applicant at a kiosk or on a phone.
    Applicant,
    /// Help-desk staff answering sessions they have joined.
    Agent,
    /// Staff who may monitor and take over any session.
    Supervisor,
    /// Administrators; they work through the HTTP API, not in conversations.
    Admin,
    /// courtchat's own components, such as the bridge.
    Service,
    /// Unauthenticated clients, when anonymous access is enabled.
    Anonymous,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Applicant,
        Role::Agent,
        Role::Supervisor,
        Role::Admin,
        Role::Service,
        Role::Anonymous,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Applicant => "applicant",
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
            Role::Service => "service",
            Role::Anonymous => "anonymous",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?} (expected one of applicant, agent, supervisor, admin, service)"))
    }
}

/// A session participant's role, as the pipeline announces it (`cc/v1/memberships`).
impl From<schemas::wire::ParticipantRole> for Role {
    fn from(role: schemas::wire::ParticipantRole) -> Self {
        use schemas::wire::ParticipantRole;
        match role {
            ParticipantRole::Applicant => Role::Applicant,
            ParticipantRole::Agent => Role::Agent,
            ParticipantRole::Supervisor => Role::Supervisor,
        }
    }
}

/// A session participant's role, as stored (memberships loaded at start).
impl From<schemas::db::entities::participant::ParticipantRole> for Role {
    fn from(role: schemas::db::entities::participant::ParticipantRole) -> Self {
        Role::from(schemas::wire::ParticipantRole::from(role))
    }
}

/// An authenticated connection's principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    /// The CONNECT username, if any; informational, and `%u` in static ACL rules.
    pub username: Option<String>,
    pub role: Role,
    /// True for clients admitted without credentials; only static ACL rules grant them anything.
    pub anonymous: bool,
    /// When the credentials expire; the connection is closed then.
    pub expires_at: Option<SystemTime>,
    /// The token's `iat` (seconds since the Unix epoch), if it has one: what a staff
    /// revocation ([`crate::StaffRevocations`]) is compared with.
    pub issued_at: Option<u64>,
    /// The token's id, and for applicants the channel and team it was issued for.
    pub token: TokenDetails,
}

/// What a token says beyond its subject, role and lifetime: its id, and for applicants the
/// channel and team it was issued for. All optional: a token minted by `courtchat token`
/// carries none of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenDetails {
    /// The `jti` claim.
    pub id: Option<String>,
    /// The `channel` claim.
    pub channel: Option<Channel>,
    /// The `team` claim.
    pub team: Option<String>,
}
