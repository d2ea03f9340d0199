//! `POST /v1/applicant-tokens`: an applicant identity without an admin. A kiosk presents its
//! credential (`Authorization: Bearer cck_…`); the public phone page presents nothing and is
//! limited per client address. Either way the answer is a short-lived token for a fresh,
//! random subject in the `applicant` role, which opens a session over MQTT as PROTOCOL.md says.
//! The token carries the channel (`kiosk` or `phone`) and the kiosk's team: the session gets
//! those, not what the applicant's open request claims.
//!
//! Every token issued is on the audit chain, with the kiosk or the address it went to: the
//! chain is the court's record of a conversation, and a session's applicant is only a random
//! subject until the record says where it came from. The per-address limit bounds how fast
//! anyone can grow the chain this way, as it bounds failed sign-ins, which are recorded too.
//!
//! Each token carries an id (`jti`), and the subject's grant (`applicant_grants`) keeps what
//! it was issued and which token is its latest, so that the page can renew it
//! (`applicant_renewal`) and a long conversation outlives one token.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use utoipa::ToSchema;

use schemas::db::entities::applicant_grant;

use crate::applicant_throttle::ApplicantThrottle;
use crate::kiosks::{self, KioskError, Presentation};
use crate::{AdminConfig, AdminState, Problem, applicant_grants, kiosk_credential};

/// The per-address default: enough for the phones behind one office's address to start a
/// conversation each within a minute, too few to script identities from it.
pub const DEFAULT_PER_ADDRESS: NonZeroU32 = NonZeroU32::new(10).expect("nonzero");
/// The per-kiosk default: a kiosk serves one person at a time, so sixty tokens in a minute mean
/// something is wrong with it.
pub const DEFAULT_PER_KIOSK: NonZeroU32 = NonZeroU32::new(60).expect("nonzero");

/// How applicant tokens are issued, from the `[admin]` configuration.
pub struct ApplicantSettings {
    pub(crate) throttle: ApplicantThrottle,
    pub(crate) token_ttl: Duration,
    /// Whether a request without a kiosk credential gets a token.
    public: bool,
    /// How long after its first token a subject's tokens may still be renewed.
    pub(crate) renewable_for: Duration,
}

impl ApplicantSettings {
    pub fn new(config: &AdminConfig) -> Self {
        Self {
            throttle: ApplicantThrottle::new(
                config.applicant_tokens_per_address,
                config.applicant_tokens_per_kiosk,
                config.applicant_renewals_per_subject,
            ),
            token_ttl: Duration::from_secs(config.applicant_token_ttl_secs),
            public: config.public_applicant_tokens,
            renewable_for: Duration::from_secs(config.applicant_renewable_secs),
        }
    }
}

/// Where the applicant writes from: the token's `channel` claim, which the session gets
/// whatever the open request says.
#[derive(Clone, Copy, Debug, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ApplicantChannel {
    Kiosk,
    Phone,
}

impl ApplicantChannel {
    /// The name a grant stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kiosk => "kiosk",
            Self::Phone => "phone",
        }
    }

    /// The channel a grant names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "kiosk" => Some(Self::Kiosk),
            "phone" => Some(Self::Phone),
            _ => None,
        }
    }
}

impl From<ApplicantChannel> for schemas::wire::Channel {
    fn from(channel: ApplicantChannel) -> Self {
        match channel {
            ApplicantChannel::Kiosk => schemas::wire::Channel::Kiosk,
            ApplicantChannel::Phone => schemas::wire::Channel::Phone,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ApplicantToken {
    /// A JWT: the MQTT password, with `subject` as the client id (and username).
    pub token: String,
    /// The applicant's fresh identity, e.g. `ap-3f0c…`: the client id and `{subject}` of the
    /// applicant's topics.
    #[schema(example = "ap-5d2c0e9b7a41f3086e1d2c4b")]
    pub subject: String,
    /// When the token stops working; the gateway ends the connection then (RFC 3339).
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The channel the token is for: the session's, whatever the open request says.
    pub channel: ApplicantChannel,
    /// The kiosk's team, which the token carries: the session's team, whatever the open
    /// request's `topic` says; absent for phones and kiosks without one (no team).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

/// How a request wants its token.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked<'a> {
    /// No `Authorization`: the public path.
    Public,
    /// `Authorization: Bearer <credential>`.
    Kiosk(&'a str),
    /// An `Authorization` that is not a bearer credential.
    Malformed,
}

/// Reads the request's `Authorization`.
pub fn asked(headers: &HeaderMap) -> Asked<'_> {
    match headers.get(header::AUTHORIZATION) {
        None => Asked::Public,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map_or(Asked::Malformed, |credential| {
                Asked::Kiosk(credential.trim())
            }),
    }
}

pub(crate) fn too_many(wait: Duration) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "too many applicant tokens",
    )
    .detail("wait before asking again")
    .retry_after(wait)
}

fn refused() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
        "kiosk credential refused",
    )
    .detail("unknown or revoked kiosk credential; ask an admin to enrol the kiosk again")
}

fn problem(error: KioskError) -> Problem {
    match error {
        KioskError::Database(ref db) => crate::database_problem(db),
        KioskError::Audit(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the audit record cannot be written",
        ),
        other => {
            tracing::error!(error = %other, "an applicant token could not be issued");
            Problem::internal()
        }
    }
}

pub(crate) fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

pub(crate) fn rfc3339(unix_seconds: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(unix_seconds as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Issues an applicant token to a kiosk (with its credential) or to the public phone page.
#[utoipa::path(
    post,
    path = "/v1/applicant-tokens",
    tag = "applicants",
    security((), ("kiosk" = [])),
    responses(
        (status = 200, description = "a token for a fresh applicant subject", body = ApplicantToken),
        (status = 401, description = "the kiosk credential is malformed, unknown or revoked, or none was sent and the public path is off", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many tokens for this address or kiosk; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the database or the audit record is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn issue(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<ApplicantToken>, Problem> {
    let settings = &state.applicants;
    let address = peer.ip();
    let kiosk = match asked(&headers) {
        Asked::Public if !settings.public => {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "kiosk-credential-required",
                "a kiosk credential is required",
            )
            .detail("this server issues applicant tokens to enrolled kiosks only"));
        }
        Asked::Public => {
            settings
                .throttle
                .take_for_address(address)
                .map_err(too_many)?;
            None
        }
        Asked::Kiosk(credential) => {
            let presentation = match kiosk_credential::parse(credential) {
                Some(presented) => kiosks::present(&state.store, &presented)
                    .await
                    .map_err(problem)?,
                None => Presentation::Unknown,
            };
            match presentation {
                Presentation::Valid(row) => {
                    settings
                        .throttle
                        .take_for_kiosk(&row.id)
                        .map_err(too_many)?;
                    Some(row)
                }
                refusal => {
                    // A refused credential spends its address's allowance, so that guessing
                    // runs no faster than the public path.
                    settings
                        .throttle
                        .take_for_address(address)
                        .map_err(too_many)?;
                    if let Presentation::Revoked(row) = refusal {
                        // The right secret of a revoked kiosk: the device is still out there.
                        tracing::warn!(kiosk = %row.id, %address, "a revoked kiosk asked for a token");
                        state
                            .record(
                                &row.id,
                                "applicant.token.refused",
                                serde_json::json!({
                                    "reason": "revoked",
                                    "address": address.to_string(),
                                }),
                            )
                            .await?;
                    } else {
                        tracing::warn!(%address, "an unknown kiosk credential was refused");
                    }
                    return Err(refused());
                }
            }
        }
        Asked::Malformed => {
            settings
                .throttle
                .take_for_address(address)
                .map_err(too_many)?;
            return Err(refused());
        }
    };

    let subject = kiosk_credential::applicant_subject().map_err(|err| problem(err.into()))?;
    let token_id = crate::tokens::new_token_id().map_err(|_| {
        tracing::error!("the system random generator failed");
        Problem::internal()
    })?;
    let now = SystemTime::now();
    let ttl = settings.token_ttl;
    let channel = if kiosk.is_some() {
        ApplicantChannel::Kiosk
    } else {
        ApplicantChannel::Phone
    };
    let team = kiosk.as_ref().and_then(|row| row.team.clone());
    // The channel and team are claims of the token: the gateway hands them to the chat
    // pipeline with the open request, whatever the applicant then says in it.
    let token = state
        .tokens
        .mint_applicant(
            &subject,
            &token_id,
            channel.into(),
            team.as_deref(),
            ttl,
            now,
        )
        .map_err(|err| {
            tracing::error!(error = %err, "an applicant token could not be minted");
            Problem::internal()
        })?;
    let expires_secs = seconds(now) + ttl.as_secs();
    let expires_at = rfc3339(expires_secs);
    let detail = serde_json::json!({
        "subject": subject,
        "channel": channel,
        "team": team,
        "address": address.to_string(),
        "expires_at": expires_at,
        "token": token_id,
    });
    let grant = applicant_grant::Model {
        subject: subject.clone(),
        channel: channel.as_str().to_owned(),
        kiosk_id: kiosk.as_ref().map(|row| row.id.clone()),
        team: team.clone(),
        token_id,
        expires_at: i64::try_from(expires_secs).unwrap_or(i64::MAX),
        issued_at: now.into(),
        renewed_at: None,
        renewals: 0,
    };
    // A kiosk's tokens are on the record under the kiosk; a phone's under its new subject.
    let entry = bridge::AuditEntry {
        actor: kiosk
            .as_ref()
            .map_or_else(|| subject.clone(), |row| row.id.clone()),
        action: "applicant.token.issued".to_owned(),
        session_id: None,
        detail,
    };
    applicant_grants::record_issue(&state.store, &state.audit, kiosk, grant, entry, now.into())
        .await?;
    Ok(Json(ApplicantToken {
        token,
        subject,
        expires_at,
        channel,
        team,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_authorization_header_says_which_path() {
        let mut headers = HeaderMap::new();
        assert_eq!(asked(&headers), Asked::Public);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer cck_x "),
        );
        assert_eq!(asked(&headers), Asked::Kiosk("cck_x"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert_eq!(asked(&headers), Asked::Malformed);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(""));
        assert_eq!(asked(&headers), Asked::Malformed);
    }
}
