//! `POST /v1/applicant-tokens/renew`: an applicant's conversation outlives one token. The page
//! presents its current applicant token before it expires and gets a new one for the same
//! subject, channel and team (so the same MQTT client id, the same session membership, the
//! same conversation), valid for `admin.applicant_token_ttl_secs` again.
//!
//! What bounds it: only the subject's latest token renews (its grant names it, and a renewal
//! moves the grant in a compare-and-set, so a token starts at most one chain and a copied
//! token that was already renewed is refused); a token from a kiosk renews only while that
//! kiosk is not revoked (a revoked kiosk's pages go offline when their token expires); no
//! token lasts past `admin.applicant_renewable_secs` after the subject's first; renewals are
//! limited per subject (`admin.applicant_renewals_per_subject` a minute), and requests that
//! present no valid applicant token spend their address's allowance, as refused kiosk
//! credentials do. Every renewal is on the audit chain with the session it goes on serving,
//! and so is every refusal for a revoked kiosk.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use schemas::db::entities::{applicant_grant, kiosk};
use sea_orm::EntityTrait;

use crate::applicant_grants::{self, Renewal};
use crate::applicant_tokens::{
    ApplicantChannel, ApplicantToken, Asked, asked, rfc3339, seconds, too_many,
};
use crate::{AdminState, Problem};

/// Why a renewal is refused once the token itself was found valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The subject has no grant (its tokens all expired, or the token is not one of ours).
    NoGrant,
    /// The token is not the subject's latest: it was renewed already.
    Superseded,
    /// The kiosk the subject's first token went to is revoked (or gone).
    KioskRevoked,
    /// The subject's first token is older than the renewable window.
    TooOld,
}

impl Refusal {
    fn problem(self) -> Problem {
        let (kind, title, detail) = match self {
            Self::NoGrant => (
                "renewal-refused",
                "this token cannot be renewed",
                "no renewable applicant identity is known for it; start a new conversation",
            ),
            Self::Superseded => (
                "token-superseded",
                "this token was renewed already",
                "only the latest token of an applicant renews; use the token that renewal returned",
            ),
            Self::KioskRevoked => (
                "kiosk-revoked",
                "the kiosk is not enrolled any more",
                "tokens of a revoked kiosk are not renewed; ask an admin to enrol the kiosk again",
            ),
            Self::TooOld => (
                "renewal-limit",
                "this conversation has reached its longest time",
                "admin.applicant_renewable_secs has passed since the first token; start a new conversation",
            ),
        };
        Problem::new(StatusCode::UNAUTHORIZED, kind, title).detail(detail)
    }
}

/// Whether `grant` lets the token `token_id` be renewed at `now` (Unix seconds), given whether
/// its kiosk (if any) is still enrolled; the new token's lifetime if so, `ttl` cut short at the
/// end of the renewable window.
pub fn judge(
    grant: Option<&applicant_grant::Model>,
    token_id: &str,
    kiosk_enrolled: bool,
    now: u64,
    ttl: Duration,
    renewable_for: Duration,
) -> Result<Duration, Refusal> {
    let grant = grant.ok_or(Refusal::NoGrant)?;
    if grant.token_id != token_id {
        return Err(Refusal::Superseded);
    }
    if grant.kiosk_id.is_some() && !kiosk_enrolled {
        return Err(Refusal::KioskRevoked);
    }
    let first = u64::try_from(grant.issued_at.timestamp()).unwrap_or(0);
    let window_ends = first.saturating_add(renewable_for.as_secs());
    let left = window_ends.saturating_sub(now);
    if left == 0 {
        return Err(Refusal::TooOld);
    }
    Ok(ttl.min(Duration::from_secs(left)))
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
        "applicant token refused",
    )
    .detail(detail)
}

/// Renews the applicant token this request is made with.
#[utoipa::path(
    post,
    path = "/v1/applicant-tokens/renew",
    tag = "applicants",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a new token for the same subject, channel and team", body = ApplicantToken),
        (status = 401, description = "no valid applicant token; or the token was renewed already (`token-superseded`), its kiosk is revoked (`kiosk-revoked`), the renewable window is over (`renewal-limit`) or no identity is known for it (`renewal-refused`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many renewals for this subject, or refused requests from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the database or the audit record is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn renew(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<ApplicantToken>, Problem> {
    let settings = &state.applicants;
    let address = peer.ip();
    // Anything but a valid applicant token with an id costs the address, as a refused kiosk
    // credential does, so that guessing runs no faster than the public path.
    let refuse = |detail: &str| -> Problem {
        match settings.throttle.take_for_address(address) {
            Ok(()) => unauthorized(detail),
            Err(wait) => too_many(wait),
        }
    };
    let Asked::Kiosk(token) = asked(&headers) else {
        return Err(refuse("send Authorization: Bearer <the applicant token>"));
    };
    let claims = state
        .tokens
        .verify(token)
        .map_err(|_| refuse("the token is invalid or expired; start a new conversation"))?;
    let (true, Some(token_id)) = (claims.role == "applicant", claims.token_id) else {
        return Err(refuse(
            "only an applicant token from /v1/applicant-tokens renews",
        ));
    };
    let subject = claims.subject;
    settings
        .throttle
        .take_for_subject(&subject)
        .map_err(|wait| {
            tracing::warn!(%subject, %address, "applicant token renewals over the limit");
            too_many(wait)
        })?;

    let grant = applicant_grants::find(&state.store, &subject)
        .await
        .map_err(|err| crate::database_problem(&err))?;
    let kiosk_id = grant.as_ref().and_then(|grant| grant.kiosk_id.clone());
    let kiosk_enrolled = match &kiosk_id {
        Some(id) => kiosk::Entity::find_by_id(id.as_str())
            .one(state.store.connection())
            .await
            .map_err(|err| crate::database_problem(&err))?
            .is_some_and(|row| row.revoked_at.is_none()),
        None => true,
    };
    let now = SystemTime::now();
    let lifetime = match judge(
        grant.as_ref(),
        &token_id,
        kiosk_enrolled,
        seconds(now),
        settings.token_ttl,
        settings.renewable_for,
    ) {
        Ok(lifetime) => lifetime,
        Err(refusal) => {
            if let (Refusal::KioskRevoked, Some(kiosk_id)) = (refusal, &kiosk_id) {
                tracing::warn!(kiosk = %kiosk_id, %subject, "a revoked kiosk's page asked to renew");
                state
                    .record(
                        kiosk_id,
                        "applicant.token.refused",
                        serde_json::json!({
                            "reason": "revoked",
                            "subject": subject,
                            "token": token_id,
                            "address": address.to_string(),
                        }),
                    )
                    .await?;
            }
            return Err(refusal.problem());
        }
    };
    // `judge` found a grant.
    let Some(grant) = grant else {
        return Err(Refusal::NoGrant.problem());
    };
    let channel = ApplicantChannel::parse(&grant.channel).ok_or_else(|| {
        tracing::error!(%subject, channel = %grant.channel, "a grant names an unknown channel");
        Problem::internal()
    })?;

    let new_id = crate::tokens::new_token_id().map_err(|_| {
        tracing::error!("the system random generator failed");
        Problem::internal()
    })?;
    let token = state
        .tokens
        .mint_applicant(
            &subject,
            &new_id,
            channel.into(),
            grant.team.as_deref(),
            lifetime,
            now,
        )
        .map_err(|err| {
            tracing::error!(error = %err, "an applicant token could not be minted");
            Problem::internal()
        })?;
    let expires_secs = seconds(now) + lifetime.as_secs();
    let expires_at = rfc3339(expires_secs);
    let session_id = applicant_grants::open_session(&state.store, &subject)
        .await
        .map_err(|err| crate::database_problem(&err))?;
    let entry = bridge::AuditEntry {
        actor: subject.clone(),
        action: "applicant.token.renewed".to_owned(),
        session_id,
        detail: serde_json::json!({
            "previous": token_id,
            "token": new_id,
            "kiosk": grant.kiosk_id,
            "channel": channel,
            "team": grant.team,
            "renewals": grant.renewals.saturating_add(1),
            "address": address.to_string(),
            "expires_at": expires_at,
        }),
    };
    let renewal = Renewal {
        subject: &subject,
        previous: &token_id,
        token_id: &new_id,
        expires_at: i64::try_from(expires_secs).unwrap_or(i64::MAX),
        now: now.into(),
    };
    if !applicant_grants::record_renewal(&state.store, &state.audit, renewal, entry).await? {
        return Err(Refusal::Superseded.problem());
    }
    Ok(Json(ApplicantToken {
        token,
        subject,
        expires_at,
        channel,
        team: grant.team,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// (grant, token presented, kiosk enrolled, now, expected)
    type Row<'a> = (
        Option<&'a applicant_grant::Model>,
        &'a str,
        bool,
        u64,
        Result<Duration, Refusal>,
    );

    fn grant(kiosk: bool) -> applicant_grant::Model {
        applicant_grant::Model {
            subject: "ap-1".to_owned(),
            channel: "kiosk".to_owned(),
            kiosk_id: kiosk.then(|| "k-1".to_owned()),
            team: None,
            token_id: "t2".to_owned(),
            expires_at: 0,
            issued_at: chrono::DateTime::from_timestamp(1_000, 0).unwrap(),
            renewed_at: None,
            renewals: 1,
        }
    }

    #[test]
    fn only_the_latest_token_of_a_live_grant_renews_within_its_window() {
        let (kiosk, phone) = (grant(true), grant(false));
        let window = Duration::from_secs(4 * 3600);
        let end = 1_000 + window.as_secs();
        let rows: &[Row<'_>] = &[
            (Some(&kiosk), "t2", true, 2_000, Ok(HOUR)),
            (Some(&phone), "t2", false, 2_000, Ok(HOUR)),
            (None, "t2", true, 2_000, Err(Refusal::NoGrant)),
            (Some(&kiosk), "t1", true, 2_000, Err(Refusal::Superseded)),
            (Some(&kiosk), "t2", false, 2_000, Err(Refusal::KioskRevoked)),
            (
                Some(&kiosk),
                "t2",
                true,
                end - 60,
                Ok(Duration::from_secs(60)),
            ),
            (Some(&kiosk), "t2", true, end, Err(Refusal::TooOld)),
            (Some(&phone), "t2", true, end + 1, Err(Refusal::TooOld)),
        ];
        for (grant, token, enrolled, now, expected) in rows {
            assert_eq!(
                &judge(*grant, token, *enrolled, *now, HOUR, window),
                expected,
                "{token} enrolled={enrolled} now={now}"
            );
        }
    }
}
