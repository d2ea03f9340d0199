//! Request extractors whose refusals are problem details with a stable type, not axum's plain
//! text: a body that is not JSON, or not the JSON a route takes, and a query string a route
//! does not take, are a 4xx that says why and names the field (`field`, and first in `detail`).
//!
//! JSON bodies follow the one rule for JSON from clients (`schemas::wire::parse_json`): an
//! object naming a key twice is refused, as the chat pipeline refuses it over MQTT. A body must
//! arrive within `admin.request_read_timeout_secs`, like the request's head.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use schemas::wire::JsonError;
use serde::de::DeserializeOwned;

use crate::{AdminState, Problem};

/// A JSON request body, refusing as problem details.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AdminState> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &AdminState) -> Result<Self, Self::Rejection> {
        if !json_content_type(request.headers()) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "the body must be JSON",
            )
            .detail("send Content-Type: application/json"));
        }
        let read = Bytes::from_request(request, state);
        let bytes = match tokio::time::timeout(state.http.read_timeout, read).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => return Err(Problem::invalid("the body could not be read")),
            Err(_) => {
                return Err(Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request-timeout",
                    "the body did not arrive in time",
                ));
            }
        };
        parse(&bytes).map(Self)
    }
}

/// `body` as the JSON of a `T`.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    let value = schemas::wire::parse_json(body).map_err(|error| match error {
        JsonError::DuplicateKey(key) => Problem::invalid_field(&key, "named twice in one object"),
        JsonError::Syntax(_) => Problem::invalid("the body is not valid JSON"),
    })?;
    value_as(value)
}

/// A JSON value a route already took (as `serde_json::Value`) as a `T`, refused as [`parse`]
/// refuses it.
pub(crate) fn value_as<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|error| refusal(&error))
}

/// `application/json`, or any `application/…+json`, with or without parameters.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// The problem for a value serde refused, naming the field: from the path where it failed, or,
/// for a field that is missing, unknown or repeated (found at the object itself), from serde's
/// message, whose wording serde fixes (`missing field `x``).
fn refusal<E: std::fmt::Display>(error: &serde_path_to_error::Error<E>) -> Problem {
    let inner = schemas::wire::bounded(&error.inner().to_string());
    let named = ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| inner.strip_prefix(prefix)?.split('`').next());
    let path = error.path().to_string();
    // An unknown field's path ends with it already; a missing one's is the object's.
    let field = match (path.as_str(), named) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => return Problem::invalid(inner),
        (path, Some(name)) if path.rsplit('.').next() != Some(name) => format!("{path}.{name}"),
        (path, _) => path.to_owned(),
    };
    Problem::invalid_field(&field, inner)
}

/// `axum::extract::Query`, refusing as problem details that name the field.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        query(parts.uri.query().unwrap_or_default()).map(Self)
    }
}

/// A query string as a `T`.
fn query<T: DeserializeOwned>(text: &str) -> Result<T, Problem> {
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(text.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| refusal(&error))
}

/// `axum::extract::Path`, refusing as problem details.
pub struct ApiPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection| Problem::invalid(rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        limit: Option<u32>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        days: u32,
    }

    fn field_of(problem: Problem) -> Option<String> {
        let json = serde_json::to_value(&problem).unwrap();
        json["field"].as_str().map(str::to_owned)
    }

    #[test]
    fn json_refusals_name_the_field() {
        // (body, the field the problem names)
        let rows: &[(&str, Option<&str>)] = &[
            (r#"{"name":"a"}"#, None),
            (r#"{"name":"a","name":"b"}"#, Some("name")),
            (r#"{"limit":1}"#, Some("name")),
            (r#"{"name":"a","limit":"x"}"#, Some("limit")),
            (r#"{"name":"a","colour":1}"#, Some("colour")),
            (r#"{"name":"a","inner":{"days":-1}}"#, Some("inner.days")),
            (r#"{"name":"a","inner":{}}"#, Some("inner.days")),
            (
                r#"{"name":"a","inner":{"days":1,"days":2}}"#,
                Some("inner.days"),
            ),
            ("{", None),
        ];
        for (body, field) in rows {
            match parse::<Body>(body.as_bytes()) {
                Ok(_) => assert_eq!(*field, None, "{body} was taken"),
                Err(problem) => assert_eq!(field_of(problem).as_deref(), *field, "{body}"),
            }
        }
        assert!(parse::<Body>(b"{").is_err());
    }

    #[test]
    fn query_refusals_name_the_field() {
        let rows: &[(&str, Option<&str>)] = &[
            ("name=a&limit=3", None),
            ("limit=3", Some("name")),
            ("name=a&limit=many", Some("limit")),
            ("name=a&colour=red", Some("colour")),
            ("name=a&name=b", Some("name")),
        ];
        for (text, field) in rows {
            match query::<Body>(text) {
                Ok(_) => assert_eq!(*field, None, "{text} was taken"),
                Err(problem) => assert_eq!(field_of(problem).as_deref(), *field, "{text}"),
            }
        }
    }

    #[test]
    fn json_content_types() {
        for (value, json) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/problem+json", true),
            ("text/json", false),
            ("text/plain", false),
            ("", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(json_content_type(&headers), json, "{value}");
        }
    }
}
