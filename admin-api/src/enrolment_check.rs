//! `GET /v1/kiosk-credential`: which kiosk a credential names, asked by the applicant page
//! before it turns a device into a kiosk. An enrolment link (`/kiosk/#enrol=<credential>`)
//! is only a URL: anyone can send one, and a phone that followed it silently would become a
//! kiosk of someone else's choosing (issue 21). So the page shows "Make this device the kiosk
//! <name> (<team>)?" with what this route answers, and enrols only on confirmation; a
//! credential that is malformed, unknown or revoked is 401, and the page stays a phone.
//!
//! Every check spends one request of the client address's allowance for applicant tokens
//! (the public path's limit, which refused credentials spend too), so that guessing
//! credentials here runs no faster than at `/v1/applicant-tokens`. Nothing is written to the
//! audit chain: a check changes nothing, and a flood of them must not grow the record.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::applicant_tokens::{Asked, asked};
use crate::kiosks::{self, Presentation};
use crate::{AdminState, Problem, kiosk_credential};

/// The kiosk a valid credential names, as the enrolment question shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct KioskIdentity {
    #[schema(example = "k-9f3a61c20b7d4e58")]
    pub id: String,
    #[schema(example = "Hall B, by the door")]
    pub name: String,
    /// The team its applicants' sessions go to; absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

fn refused() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
        "kiosk credential refused",
    )
    .detail(
        "the credential is malformed, unknown or revoked; ask an admin for a new enrolment link",
    )
}

fn too_many(wait: Duration) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "too many credential checks",
    )
    .detail("wait before asking again")
    .retry_after(wait)
}

/// Says which kiosk the presented credential names, if it is valid.
#[utoipa::path(
    get,
    path = "/v1/kiosk-credential",
    tag = "kiosks",
    operation_id = "check_kiosk_credential",
    security(("kiosk" = [])),
    responses(
        (status = 200, description = "the credential is valid: the kiosk it names", body = KioskIdentity),
        (status = 401, description = "no credential, or a malformed, unknown or revoked one", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "too many requests from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the database is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn check(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<KioskIdentity>, Problem> {
    let address = peer.ip();
    state
        .applicants
        .throttle
        .take_for_address(address)
        .map_err(too_many)?;
    let Asked::Kiosk(credential) = asked(&headers) else {
        return Err(refused());
    };
    let Some(presented) = kiosk_credential::parse(credential) else {
        return Err(refused());
    };
    let presentation =
        kiosks::present(&state.store, &presented)
            .await
            .map_err(|error| match error {
                kiosks::KioskError::Database(ref db) => crate::database_problem(db),
                other => {
                    tracing::error!(error = %other, "a kiosk credential could not be checked");
                    Problem::internal()
                }
            })?;
    match presentation {
        Presentation::Valid(row) => Ok(Json(KioskIdentity {
            id: row.id,
            name: row.name,
            team: row.team,
        })),
        Presentation::Revoked(row) => {
            // The right secret of a revoked kiosk: someone still has its enrolment link.
            tracing::warn!(kiosk = %row.id, %address, "a revoked kiosk's credential was checked");
            Err(refused())
        }
        Presentation::Unknown => Err(refused()),
    }
}
