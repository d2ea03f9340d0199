//! The tokens the API issues at sign-in and accepts as `Authorization: Bearer`: the same JWTs
//! the MQTT gateway accepts as a password, so a member of staff signs in once for both; and
//! the applicant tokens kiosks and phones obtain, which only the gateway accepts. The
//! keys belong to the gateway (`broker`); the serving process passes them in as [`Tokens`].
//!
//! Staff tokens carry an id (`jti`), so that one of them can be ended (`POST /v1/logout`)
//! while the person's other tokens go on working; applicant tokens carry one too, so that only
//! the latest of a subject's tokens is renewed (`POST /v1/applicant-tokens/renew`), and the
//! channel and team they were issued for, which the gateway hands to the chat pipeline with
//! the open request.

use std::time::{Duration, SystemTime};

use schemas::db::entities::agent::StaffRole;
use schemas::wire::Channel;

/// Mints, checks and ends the server's tokens.
pub trait Tokens: Send + Sync {
    /// A token for `subject` in `role` with the id `token_id`, valid for `ttl` from `now`.
    fn mint(
        &self,
        subject: &str,
        role: StaffRole,
        token_id: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, String>;
    /// A token for `subject` in the `applicant` role with the id `token_id`, for `channel`
    /// (and a kiosk's `team`), issued at `now` and valid for `ttl` from then (so that the
    /// caller knows its expiry to the second).
    fn mint_applicant(
        &self,
        subject: &str,
        token_id: &str,
        channel: Channel,
        team: Option<&str>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, String>;
    /// The claims of a token with a valid signature, issuer, audience, expiry and issue time
    /// that has not been ended.
    fn verify(&self, token: &str) -> Result<Verified, String>;
    /// Ends `subject`'s token `token_id`, which expires at `expires_at` (Unix seconds): from
    /// now on [`Tokens::verify`] and the gateway refuse it, and the gateway ends the MQTT
    /// connections made with it.
    fn end(&self, subject: &str, token_id: &str, expires_at: u64);
    /// A short keyed digest of `text`, the same for the same text on this server: what the
    /// record keeps instead of text it must not keep verbatim (an unknown sign-in name).
    fn pseudonym(&self, text: &str) -> String;
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
    /// The token's id (`jti`): staff tokens from sign-in have one.
    pub token_id: Option<String>,
}

/// A fresh token id: 128 random bits in hex.
pub(crate) fn new_token_id() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_ids_are_fresh_hex() {
        let (a, b) = (
            super::new_token_id().unwrap(),
            super::new_token_id().unwrap(),
        );
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
