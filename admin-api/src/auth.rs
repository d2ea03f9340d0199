//! Who is calling: the `Authorization: Bearer` token, checked against the staff table on every
//! request, so that a disabled or demoted member of staff is refused at once, whatever their
//! token still says. A token issued in the future or ended by `POST /v1/logout` is refused
//! by [`crate::Tokens::verify`] before that.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use schemas::db::entities::agent::{self, StaffRole};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::{AdminState, Problem};

/// The signed-in member of staff making a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub username: String,
    pub role: StaffRole,
    /// The id of the token the request came with (`jti`), if it has one: what
    /// `POST /v1/logout` ends.
    pub token_id: Option<String>,
    /// When that token expires (Unix seconds).
    pub token_expires_at: u64,
}

impl Caller {
    /// Refuses (403) unless the caller holds one of `roles`.
    pub fn require(&self, roles: &[StaffRole]) -> Result<(), Problem> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(forbidden())
        }
    }
}

pub fn forbidden() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "not allowed for your role",
    )
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "sign-in required").detail(detail)
}

/// Whether a token for `token_role`, issued at `issued_at`, still speaks for `account`.
pub fn admits(account: &agent::Model, token_role: &str, issued_at: Option<u64>) -> bool {
    let issued_at = issued_at.unwrap_or(0);
    account.active
        && crate::staff_role::name(account.role) == token_role
        && issued_at >= account.tokens_not_before.max(0) as u64
}

impl FromRequestParts<AdminState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("send Authorization: Bearer <token from /v1/login>"))?;
        let claims = state
            .tokens
            .verify(token.trim())
            .map_err(|_| unauthorized("the token is invalid, expired or signed out"))?;
        let account = agent::Entity::find()
            .filter(agent::Column::Subject.eq(&claims.subject))
            .one(state.store.connection())
            .await
            .map_err(|err| crate::database_problem(&err))?;
        match account {
            Some(account) if admits(&account, &claims.role, claims.issued_at) => Ok(Caller {
                username: account.subject,
                role: account.role,
                token_id: claims.token_id,
                token_expires_at: claims.expires_at,
            }),
            _ => Err(unauthorized(
                "the token no longer speaks for an active member of staff; sign in again",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(role: StaffRole, active: bool, not_before: i64) -> agent::Model {
        agent::Model {
            id: 1,
            subject: "ann".to_owned(),
            display_name: "Ann".to_owned(),
            role,
            team: None,
            active,
            created_at: chrono::Utc::now(),
            password_hash: None,
            capacity: 3,
            tokens_not_before: not_before,
            available: false,
        }
    }

    #[test]
    fn a_token_speaks_for_an_active_account_of_its_role_issued_after_any_revocation() {
        assert!(admits(
            &account(StaffRole::Admin, true, 0),
            "admin",
            Some(10)
        ));
        assert!(
            !admits(&account(StaffRole::Admin, false, 0), "admin", Some(10)),
            "disabled"
        );
        assert!(
            !admits(&account(StaffRole::Agent, true, 0), "admin", Some(10)),
            "demoted"
        );
        assert!(
            !admits(&account(StaffRole::Admin, true, 11), "admin", Some(10)),
            "revoked"
        );
        assert!(admits(
            &account(StaffRole::Admin, true, 10),
            "admin",
            Some(10)
        ));
        assert!(
            !admits(&account(StaffRole::Admin, true, 5), "admin", None),
            "no iat"
        );
        assert!(!admits(
            &account(StaffRole::Agent, true, 0),
            "applicant",
            Some(10)
        ));
    }
}
