//! Staff sign-in and applicant tokens, wired: the admin API's tokens are the gateway's
//! (`broker::TokenKeys`).

use std::time::{Duration, SystemTime};

use schemas::db::entities::agent::StaffRole;

/// The gateway's token keys as the admin API uses them.
pub(crate) struct StaffTokens(pub(crate) broker::TokenKeys);

pub(crate) fn broker_role(role: StaffRole) -> broker::Role {
    match role {
        StaffRole::Agent => broker::Role::Agent,
        StaffRole::Supervisor => broker::Role::Supervisor,
        StaffRole::Admin => broker::Role::Admin,
    }
}

impl admin_api::Tokens for StaffTokens {
    fn mint(&self, subject: &str, role: StaffRole, ttl: Duration) -> Result<String, String> {
        self.0
            .mint(subject, broker_role(role), ttl, SystemTime::now())
            .map_err(|err| err.to_string())
    }

    fn mint_applicant(
        &self,
        subject: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, String> {
        self.0
            .mint(subject, broker::Role::Applicant, ttl, now)
            .map_err(|err| err.to_string())
    }

    fn verify(&self, token: &str) -> Result<admin_api::Verified, String> {
        self.0.verify(token).map(|claims| admin_api::Verified {
            subject: claims.sub,
            role: claims.role.as_str().to_owned(),
            issued_at: claims.iat,
            expires_at: claims.exp,
        })
    }
}

/// The gateway's revocations as the admin API uses them.
pub(crate) struct StaffGate(pub(crate) broker::StaffRevocations);

impl admin_api::people::Gate for StaffGate {
    fn revoke(&self, username: &str, not_before: u64) {
        self.0.revoke(username, not_before);
    }
}
