//! Checking an ID token (OpenID Connect Core §3.1.3.7): signed with an asymmetric algorithm by a
//! key of the provider's JWKS, issued by the configured issuer for this client (and, with more
//! than one audience, authorized for it: `azp`), not expired and not issued in the future beyond
//! the allowed clock skew, and carrying the nonce of the sign-in it answers.

use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

/// Why an ID token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("it is not a well-formed ID token: {0}")]
    Malformed(String),
    #[error("it is signed with {0}, which is not accepted (only asymmetric algorithms)")]
    Algorithm(String),
    #[error("it names a key the provider does not publish")]
    UnknownKey,
    #[error("its signature does not verify")]
    Signature,
    #[error("it has expired")]
    Expired,
    #[error("it was issued in the future (beyond the allowed clock skew)")]
    IssuedInFuture,
    #[error("it is from another issuer")]
    WrongIssuer,
    #[error("it is for another client (audience)")]
    WrongAudience,
    #[error("it was not authorized for this client (azp)")]
    WrongParty,
    #[error("its nonce is not this sign-in's")]
    Nonce,
}

/// What a valid ID token says.
#[derive(Clone, Debug, PartialEq)]
pub struct IdClaims {
    /// `sub`: the person, as the provider knows them.
    pub subject: String,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// `sid`: the provider's session, if it says.
    pub session_id: Option<String>,
    /// Every claim, for the mapping to accounts, roles and teams.
    pub claims: Map<String, Value>,
}

impl IdClaims {
    /// The claim `name` as text, if it is text.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// The claim `name` as a list of text (a single text counts as a list of one).
    pub fn texts(&self, name: &str) -> Vec<&str> {
        match self.claims.get(name) {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// What the token must say.
pub(crate) struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The sign-in's nonce; `None` for a token from a refresh, which need not carry one.
    pub nonce: Option<&'a str>,
    pub skew: Duration,
    /// Unix seconds.
    pub now: u64,
}

const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The token's algorithm and key id, read from its header (nothing is trusted yet).
pub(crate) fn header(token: &str) -> Result<(Algorithm, Option<String>), IdTokenError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|err| IdTokenError::Malformed(err.to_string()))?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(IdTokenError::Algorithm(format!("{:?}", header.alg)));
    }
    Ok((header.alg, header.kid))
}

/// The key of `keys` that signed a token with `kid` (or the one signing key when the token names
/// none), if the set has it.
pub(crate) fn key<'a>(keys: &'a JwkSet, kid: Option<&str>) -> Option<&'a Jwk> {
    let signing = |jwk: &&Jwk| {
        !matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        )
    };
    match kid {
        Some(kid) => keys
            .keys
            .iter()
            .filter(signing)
            .find(|jwk| jwk.common.key_id.as_deref() == Some(kid)),
        None => {
            let mut candidates = keys.keys.iter().filter(signing);
            match (candidates.next(), candidates.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        }
    }
}

/// Checks `token`, signed with `algorithm` by `jwk`, against `expected`.
pub(crate) fn verify(
    token: &str,
    algorithm: Algorithm,
    jwk: &Jwk,
    expected: &Expected<'_>,
) -> Result<IdClaims, IdTokenError> {
    if let Some(declared) = jwk.common.key_algorithm
        && format!("{declared:?}") != format!("{algorithm:?}")
    {
        return Err(IdTokenError::Algorithm(format!(
            "{algorithm:?} with a key for {declared:?}"
        )));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|err| IdTokenError::Malformed(err.to_string()))?;
    let mut validation = Validation::new(algorithm);
    validation.leeway = expected.skew.as_secs();
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|err| match err.kind() {
            ErrorKind::ExpiredSignature => IdTokenError::Expired,
            ErrorKind::ImmatureSignature => IdTokenError::IssuedInFuture,
            ErrorKind::InvalidIssuer => IdTokenError::WrongIssuer,
            ErrorKind::InvalidAudience => IdTokenError::WrongAudience,
            ErrorKind::InvalidSignature => IdTokenError::Signature,
            _ => IdTokenError::Malformed(err.to_string()),
        })?
        .claims;
    let number = |name: &str| claims.get(name).and_then(Value::as_u64);
    let issued_at = number("iat").ok_or_else(|| IdTokenError::Malformed("iat".to_owned()))?;
    if issued_at > expected.now.saturating_add(expected.skew.as_secs()) {
        return Err(IdTokenError::IssuedInFuture);
    }
    if let Some(Value::Array(audiences)) = claims.get("aud")
        && audiences.len() > 1
        && claims.get("azp").and_then(Value::as_str) != Some(expected.client_id)
    {
        return Err(IdTokenError::WrongParty);
    }
    if let Some(nonce) = expected.nonce
        && claims.get("nonce").and_then(Value::as_str) != Some(nonce)
    {
        return Err(IdTokenError::Nonce);
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|sub| !sub.is_empty() && sub.len() <= 255)
        .ok_or_else(|| IdTokenError::Malformed("sub".to_owned()))?
        .to_owned();
    Ok(IdClaims {
        subject,
        expires_at: number("exp").unwrap_or(0),
        session_id: claims.get("sid").and_then(Value::as_str).map(str::to_owned),
        claims,
    })
}
