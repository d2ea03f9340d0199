//! Who is connecting: JWT authentication at CONNECT.
//!
//! A client presents a JWT as its CONNECT password. The token names the subject (which must equal
//! the MQTT client id, so nobody can take over another client's id), a [`Role`] and an expiry.
//! Authenticators form a chain like the authorizers: each may accept, reject or abstain, and a
//! connection nobody accepted is refused. The keys and claims are in `keys`; what a token says
//! about an applicant reaches the chat pipeline through `chat::stamp`.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::identity::{Identity, Role, TokenDetails};
use crate::staff::StaffRevocations;

mod keys;

pub use keys::{Claims, KeyError, TokenAlgorithm, TokenKeys, load_or_create_secret};

/// What the CONNECT packet says about the client.
#[derive(Clone, Copy, Debug)]
pub struct ConnectInfo<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
}

/// Why a CONNECT is refused; each maps to a CONNACK code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Credentials were presented but are wrong, malformed or expired (v4 0x04, v5 0x86).
    #[error("bad credentials: {0}")]
    BadCredentials(String),
    /// No acceptable credentials, or they do not entitle this client id (v4 0x05, v5 0x87).
    #[error("not authorized: {0}")]
    NotAuthorized(String),
}

pub enum AuthOutcome {
    Accept(Identity),
    Reject(Refusal),
    /// This authenticator has no opinion; the next one decides.
    Abstain,
}

/// A step of the authentication chain.
pub trait Authenticator: Send + Sync {
    fn authenticate(&self, connect: &ConnectInfo<'_>) -> AuthOutcome;
}

/// Authenticators in order; a CONNECT that none accepts is refused as not authorized.
pub struct AuthChain {
    steps: Vec<Box<dyn Authenticator>>,
}

impl AuthChain {
    pub fn new(steps: Vec<Box<dyn Authenticator>>) -> Self {
        Self { steps }
    }

    /// The chain courtchat runs: JWT authentication with the configured keys, refusing what
    /// `revocations` revoked; then anonymous access, if enabled.
    pub fn standard(config: &AuthConfig, revocations: StaffRevocations) -> Result<Self, KeyError> {
        let mut steps: Vec<Box<dyn Authenticator>> = vec![Box::new(
            JwtAuthenticator::new(TokenKeys::load(config)?).with_revocations(revocations),
        )];
        if config.allow_anonymous {
            steps.push(Box::new(AnonymousAuthenticator {
                role: config.anonymous_role,
            }));
        }
        Ok(Self::new(steps))
    }

    pub fn authenticate(&self, connect: &ConnectInfo<'_>) -> Result<Identity, Refusal> {
        for step in &self.steps {
            match step.authenticate(connect) {
                AuthOutcome::Accept(identity) => return Ok(identity),
                AuthOutcome::Reject(refusal) => return Err(refusal),
                AuthOutcome::Abstain => {}
            }
        }
        Err(Refusal::NotAuthorized(
            "no credentials were accepted".to_owned(),
        ))
    }
}

/// The `[mqtt.auth]` section.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `HS256` (shared secret), `RS256` or `EdDSA` (key pair).
    pub algorithm: TokenAlgorithm,
    /// HS256 secret given inline. Prefer `secret_file`; this is redacted when printed.
    pub secret: String,
    /// HS256 secret file; created with 32 random bytes on first start if it does not exist.
    pub secret_file: PathBuf,
    /// RS256/EdDSA: PEM public key that verifies tokens.
    pub public_key_file: PathBuf,
    /// RS256/EdDSA: PEM private key, needed only to mint tokens (`courtchat token`).
    pub private_key_file: PathBuf,
    /// If set, tokens must carry this `iss`.
    pub issuer: String,
    /// If set, tokens must carry this `aud`.
    pub audience: String,
    /// Seconds of clock skew tolerated on `exp`.
    pub leeway: u64,
    /// Seconds a token's `iat` may lie in the future (the issuer's clock running ahead of
    /// ours); a token issued later than that is refused.
    pub iat_leeway: u64,
    /// Admit clients without a password.
    pub allow_anonymous: bool,
    /// The role anonymous clients get; only static ACL rules grant anything to them.
    pub anonymous_role: Role,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field(
                "secret",
                &if self.secret.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("secret_file", &self.secret_file)
            .field("public_key_file", &self.public_key_file)
            .field("private_key_file", &self.private_key_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("iat_leeway", &self.iat_leeway)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            algorithm: TokenAlgorithm::HS256,
            secret: String::new(),
            secret_file: PathBuf::from("data/token-secret"),
            public_key_file: PathBuf::new(),
            private_key_file: PathBuf::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway: 0,
            iat_leeway: 60,
            allow_anonymous: false,
            anonymous_role: Role::Anonymous,
        }
    }
}

/// Accepts a valid token whose subject equals the client id, unless the subject's tokens of
/// that age have been revoked.
pub struct JwtAuthenticator {
    keys: TokenKeys,
    revocations: StaffRevocations,
}

impl JwtAuthenticator {
    /// An authenticator that refuses no subject's tokens beyond their own claims.
    pub fn new(keys: TokenKeys) -> Self {
        Self {
            keys,
            revocations: StaffRevocations::default(),
        }
    }

    /// Also refuses the tokens `revocations` has revoked (the broker's own, see
    /// [`crate::Broker::staff_revocations`]).
    pub fn with_revocations(self, revocations: StaffRevocations) -> Self {
        Self {
            revocations,
            ..self
        }
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate(&self, connect: &ConnectInfo<'_>) -> AuthOutcome {
        let Some(password) = connect.password else {
            return AuthOutcome::Abstain;
        };
        let Ok(token) = std::str::from_utf8(password) else {
            return AuthOutcome::Reject(Refusal::BadCredentials(
                "the password is not a token".to_owned(),
            ));
        };
        let claims = match self.keys.verify(token) {
            Ok(claims) => claims,
            Err(reason) => return AuthOutcome::Reject(Refusal::BadCredentials(reason)),
        };
        if claims.role == Role::Anonymous {
            return AuthOutcome::Reject(Refusal::NotAuthorized(
                "tokens cannot carry the anonymous role".to_owned(),
            ));
        }
        // An empty client id takes the subject; any other must equal it.
        if !connect.client_id.is_empty() && claims.sub != connect.client_id {
            return AuthOutcome::Reject(Refusal::NotAuthorized(
                "the client id must equal the token's subject".to_owned(),
            ));
        }
        if self.revocations.refuses(&claims.sub, claims.iat) {
            return AuthOutcome::Reject(Refusal::NotAuthorized(
                "the subject's credentials were revoked".to_owned(),
            ));
        }
        if self.revocations.ended(claims.jti.as_deref()) {
            return AuthOutcome::Reject(Refusal::NotAuthorized(
                "the token was ended (signed out)".to_owned(),
            ));
        }
        let token = claims.details();
        AuthOutcome::Accept(Identity {
            subject: claims.sub,
            username: connect.username.map(str::to_owned),
            role: claims.role,
            anonymous: false,
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(claims.exp + self.keys.leeway())),
            issued_at: claims.iat,
            token,
        })
    }
}

/// Admits clients that present no password, when enabled.
pub struct AnonymousAuthenticator {
    pub role: Role,
}

impl Authenticator for AnonymousAuthenticator {
    fn authenticate(&self, connect: &ConnectInfo<'_>) -> AuthOutcome {
        if connect.password.is_some() {
            return AuthOutcome::Abstain;
        }
        AuthOutcome::Accept(Identity {
            subject: connect.client_id.to_owned(),
            username: connect.username.map(str::to_owned),
            role: self.role,
            anonymous: true,
            expires_at: None,
            issued_at: None,
            token: TokenDetails::default(),
        })
    }
}

#[cfg(test)]
mod tests;
