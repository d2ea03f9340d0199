//! The chat pipeline as the API reaches it: actions go in as the actor's own submissions
//! (`bridge::Commands`), decided by the same single writer as what arrives over MQTT, so they
//! leave the same entries, lock changes and audit entries. Its answer becomes the response, and
//! a refusal a problem.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use schemas::wire::{self, Ack, Outcome, RejectReason};

use crate::{AdminState, Problem};

/// The header a client sets to make a retried request safe: the same key is the same
/// submission, answered with its original outcome.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The in-process pipeline, or the problem of its absence.
pub(crate) fn commands(state: &AdminState) -> Result<&bridge::Commands, Problem> {
    state.commands.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "pipeline-elsewhere",
            "the chat pipeline runs in another process",
        )
        .detail(
            "this server's chat pipeline runs as its own process (bridge.in_process = false); \
             send the action over MQTT instead",
        )
    })
}

/// The submission's `client_msg_id`: the request's `Idempotency-Key`, or a fresh one.
pub(crate) fn client_msg_id(headers: &HeaderMap) -> Result<String, Problem> {
    match headers.get(IDEMPOTENCY_KEY) {
        Some(key) => {
            let key = key.to_str().unwrap_or_default();
            wire::check_client_msg_id(key).map_err(|_| {
                Problem::invalid(format!(
                    "{IDEMPOTENCY_KEY} must be 1 to {} characters of A-Z, a-z, 0-9, '-', '_', '.' and ':'",
                    wire::CLIENT_MSG_ID_MAX
                ))
            })?;
            Ok(key.to_owned())
        }
        None => Ok(fresh_id()),
    }
}

/// `http-` and 16 random hex characters.
fn fresh_id() -> String {
    use password_hash::rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; 8];
    OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("http-{hex}")
}

/// The pipeline's answer as a result: the entry's `seq`, if the action left one.
pub(crate) fn outcome(reply: Result<bridge::Reply, bridge::CommandError>) -> Result<Ack, Problem> {
    let ack = match reply {
        Ok(bridge::Reply::Ack(ack)) => ack,
        Ok(bridge::Reply::Page(_)) => return Err(Problem::internal()),
        Err(bridge::CommandError::Stopped) => {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "pipeline-not-ready",
                "the chat pipeline is not running",
            ));
        }
        Err(bridge::CommandError::Unnamable) => {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-session",
                "no such session",
            ));
        }
        Err(err @ bridge::CommandError::Encode(_)) => {
            tracing::error!(%err, "a submission to the pipeline could not be written");
            return Err(Problem::internal());
        }
    };
    match &ack.outcome {
        Outcome::Accepted { .. } => Ok(ack),
        Outcome::Rejected { reason, message } => Err(refusal(*reason, message)),
    }
}

/// A refusal of the pipeline as a problem: the reason is the problem's type, so that a client
/// matches on the same names over HTTP as over MQTT.
pub(crate) fn refusal(reason: RejectReason, message: &str) -> Problem {
    use RejectReason as R;
    let (status, title) = match reason {
        R::Invalid | R::UnsupportedVersion | R::TooLarge | R::ContentRefused => {
            (StatusCode::UNPROCESSABLE_ENTITY, "the action is not valid")
        }
        R::NotAllowed => (StatusCode::FORBIDDEN, "not allowed"),
        R::UnknownSession => (StatusCode::NOT_FOUND, "no such session"),
        R::LockHeld | R::LockNotHeld | R::SessionClosed | R::DuplicateId => (
            StatusCode::CONFLICT,
            "the session's state does not allow it",
        ),
        R::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "too many actions"),
        R::Unavailable | R::Busy => (StatusCode::SERVICE_UNAVAILABLE, "try again shortly"),
    };
    let slug = serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', "-")))
        .unwrap_or_else(|| "refused".to_owned());
    let problem = Problem::new(status, &slug, title).detail(message);
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            problem.retry_after(Duration::from_secs(1))
        }
        _ => problem,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use axum::response::IntoResponse;

    use super::*;

    #[test]
    fn refusals_keep_their_reason_as_the_problem_type() {
        let rows = [
            (RejectReason::NotAllowed, 403, "not-allowed"),
            (RejectReason::UnknownSession, 404, "unknown-session"),
            (RejectReason::SessionClosed, 409, "session-closed"),
            (RejectReason::Invalid, 422, "invalid"),
            (RejectReason::Busy, 503, "busy"),
        ];
        for (reason, status, slug) in rows {
            let problem = serde_json::to_value(refusal(reason, "why")).unwrap();
            assert_eq!(problem["status"], status, "{reason:?}");
            assert_eq!(problem["type"], format!("urn:courtchat:problem:{slug}"));
            assert_eq!(problem["detail"], "why");
        }
        let busy = refusal(RejectReason::Busy, "later").into_response();
        assert!(busy.headers().contains_key("retry-after"));
    }

    #[test]
    fn an_idempotency_key_is_a_client_msg_id_or_refused() {
        let mut headers = HeaderMap::new();
        let fresh = client_msg_id(&headers).unwrap();
        assert!(fresh.starts_with("http-") && fresh.len() == 21);
        assert_ne!(fresh, client_msg_id(&headers).unwrap());
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("close-42"));
        assert_eq!(client_msg_id(&headers).unwrap(), "close-42");
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("no spaces"));
        assert!(client_msg_id(&headers).is_err());
    }
}
