//! RFC 9457 problem details, the one error shape of the HTTP API. Each kind of error has a
//! stable `type` (`urn:courtchat:problem:<slug>`) that clients can match on; `title` is for
//! people and `detail` says what was wrong with this request.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A problem details object.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, stable across versions.
    #[serde(rename = "type")]
    #[schema(example = "urn:courtchat:problem:invalid-request")]
    kind: String,
    title: &'static str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// The request's field the problem is about, by its path (`display_name`, `detail.reason`),
    /// when it is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    /// For a refusal that lifts with time: seconds until it does (also `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

impl Problem {
    /// A problem of kind `slug` (lowercase, hyphenated) with `status` and a short `title`.
    pub fn new(status: StatusCode, slug: &str, title: &'static str) -> Self {
        Self {
            kind: format!("urn:courtchat:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: None,
            field: None,
            retry_after: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The problem is about the request's field `name`.
    pub fn field(mut self, name: impl Into<String>) -> Self {
        self.field = Some(name.into());
        self
    }

    /// 400 about the field `name`: the detail says what is wrong with it, naming it first. A
    /// name is the client's own text (an unknown key), so it is cut to a bounded length.
    pub fn invalid_field(name: &str, what: impl std::fmt::Display) -> Self {
        let name = schemas::wire::bounded(name);
        let what = schemas::wire::bounded(&what.to_string());
        Self::invalid(format!("{name}: {what}")).field(name)
    }

    /// The request may be made again after `wait`.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        // Whole seconds, rounded up: a client that waits as told is not refused again.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// 400: the request itself is malformed or a value is out of bounds.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "invalid request",
        )
        .detail(detail)
    }

    /// 500, without detail (which would leak internals); the cause goes to the log.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut response = (status, axum::Json(&self)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_named_by_the_client_is_bounded() {
        let long = "k".repeat(100_000);
        let problem = serde_json::to_value(Problem::invalid_field(&long, "unknown field")).unwrap();
        assert!(problem["field"].as_str().unwrap().len() < 300, "{problem}");
        assert!(problem["detail"].as_str().unwrap().len() < 600, "{problem}");
    }

    #[test]
    fn a_problem_names_its_type_and_sets_retry_after() {
        let response = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "too many")
            .retry_after(Duration::from_millis(1500))
            .into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
