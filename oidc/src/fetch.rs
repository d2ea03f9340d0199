//! The provider's answers, read bounded: an answer larger than [`MAX_BODY`] or slower than the
//! client's timeout is an error, not a buffer that grows with whatever the network sends.

use serde::de::DeserializeOwned;

use crate::OidcError;

/// The largest answer read from a provider: discovery documents and key sets are a few KiB.
pub(crate) const MAX_BODY: usize = 256 * 1024;

/// The body of `response`, at most [`MAX_BODY`] bytes.
pub(crate) async fn body(mut response: reqwest::Response) -> Result<Vec<u8>, OidcError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| OidcError::Unreachable(err.to_string()))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(OidcError::Unreachable(format!(
                "the answer is larger than {MAX_BODY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What an endpoint says when it refuses (RFC 6749 §5.2).
#[derive(serde::Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Sends `request` and reads a JSON answer: a refusal in OAuth's error format becomes
/// [`OidcError::Refused`], anything else unusable [`OidcError::Unreachable`].
pub(crate) async fn json<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &'static str,
) -> Result<T, OidcError> {
    let response = request
        .send()
        .await
        .map_err(|err| OidcError::Unreachable(format!("{what}: {err}")))?;
    let status = response.status();
    let body = body(response).await?;
    if !status.is_success() {
        return Err(match serde_json::from_slice::<ErrorAnswer>(&body) {
            Ok(answer) => OidcError::Refused {
                error: bounded(&answer.error),
                description: answer.error_description.as_deref().map(bounded),
            },
            Err(_) => OidcError::Unreachable(format!("{what}: HTTP {status}")),
        });
    }
    serde_json::from_slice(&body).map_err(|err| OidcError::Misconfigured {
        what,
        reason: err.to_string(),
    })
}

/// At most 200 characters of text a provider sent, for logs and the record.
pub(crate) fn bounded(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}
