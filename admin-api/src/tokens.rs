//! The tokens the API issues at sign-in and accepts as `Authorization: Bearer`: the same JWTs
//! the MQTT gateway accepts as a password, so a member of staff signs in once for both; and
//! the applicant tokens kiosks and phones obtain, which only the gateway accepts. The
//! keys belong to the gateway (`broker`); the serving process passes them in as [`Tokens`].

use std::time::{Duration, SystemTime};

use schemas::db::entities::agent::StaffRole;

/// Mints and checks the server's tokens.
pub trait Tokens: Send + Sync {
    /// A token for `subject` in `role`, valid for `ttl` from now.
    fn mint(&self, subject: &str, role: StaffRole, ttl: Duration) -> Result<String, String>;
    /// A token for `subject` in the `applicant` role, issued at `now` and valid for `ttl` from
    /// then (so that the caller knows its expiry to the second).
    fn mint_applicant(
        &self,
        subject: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, String>;
    /// The claims of a token with a valid signature, issuer, audience and expiry.
    fn verify(&self, token: &str) -> Result<Verified, String>;
}

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub subject: String,
    /// The role as the token names it (`agent`, `supervisor`, `admin`, or a non-staff role).
    pub role: String,
    /// Unix seconds.
    pub issued_at: Option<u64>,
    pub expires_at: u64,
}
