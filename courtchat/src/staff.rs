//! Staff sign-in and applicant tokens, wired: the admin API's tokens are the gateway's
//! (`broker::TokenKeys`), and so are its revocations (`broker::StaffRevocations`), so that a
//! token the admin API ended or revoked is refused by both at once.

use std::time::{Duration, SystemTime};

use schemas::db::entities::agent::StaffRole;

/// The gateway's token keys and revocations as the admin API uses them.
pub(crate) struct StaffTokens {
    pub(crate) keys: broker::TokenKeys,
    pub(crate) revocations: broker::StaffRevocations,
}

pub(crate) fn broker_role(role: StaffRole) -> broker::Role {
    match role {
        StaffRole::Agent => broker::Role::Agent,
        StaffRole::Supervisor => broker::Role::Supervisor,
        StaffRole::Admin => broker::Role::Admin,
    }
}

impl admin_api::Tokens for StaffTokens {
    fn mint(
        &self,
        subject: &str,
        role: StaffRole,
        token_id: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, String> {
        let details = broker::TokenDetails {
            id: Some(token_id.to_owned()),
            ..broker::TokenDetails::default()
        };
        self.keys
            .mint_with(subject, broker_role(role), ttl, now, details)
            .map_err(|err| err.to_string())
    }

    fn mint_applicant(
        &self,
        subject: &str,
        token_id: &str,
        channel: schemas::wire::Channel,
        team: Option<&str>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, String> {
        let details = broker::TokenDetails {
            id: Some(token_id.to_owned()),
            channel: Some(channel),
            team: team.map(str::to_owned),
        };
        self.keys
            .mint_with(subject, broker::Role::Applicant, ttl, now, details)
            .map_err(|err| err.to_string())
    }

    fn verify(&self, token: &str) -> Result<admin_api::Verified, String> {
        let claims = self.keys.verify(token)?;
        if self.revocations.ended(claims.jti.as_deref()) {
            return Err("the token was ended (signed out)".to_owned());
        }
        Ok(admin_api::Verified {
            subject: claims.sub,
            role: claims.role.as_str().to_owned(),
            issued_at: claims.iat,
            expires_at: claims.exp,
            token_id: claims.jti,
        })
    }

    fn end(&self, subject: &str, token_id: &str, expires_at: u64) {
        self.revocations.end_token(subject, token_id, expires_at);
    }

    fn pseudonym(&self, text: &str) -> String {
        self.keys.pseudonym(text)
    }
}

/// The gateway's revocations as the admin API uses them.
pub(crate) struct StaffGate(pub(crate) broker::StaffRevocations);

impl admin_api::people::Gate for StaffGate {
    fn revoke(&self, username: &str, not_before: u64) {
        self.0.revoke(username, not_before);
    }
}

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
