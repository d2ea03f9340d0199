//! Token keys: verifying the server's JWTs (signature, expiry, issue time, issuer, audience)
//! and minting them, for one configured algorithm; the claims they carry; the secret files.
//!
//! A token may carry, besides who and what role, an id (`jti`: staff tokens from sign-in, so
//! that `POST /v1/logout` can end one of them) and, for applicants, the channel and team the
//! admin API issued it for ([`TokenDetails`]). The gateway trusts those two over anything the
//! applicant says when it opens a session (see `chat::stamp`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::hmac;
use schemas::wire::Channel;
use serde::{Deserialize, Serialize};

use super::AuthConfig;
use crate::identity::{Role, TokenDetails};

/// The longest token id accepted: what the record of ended tokens keeps.
const MAX_TOKEN_ID: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenAlgorithm {
    HS256,
    RS256,
    EdDSA,
}

impl From<TokenAlgorithm> for Algorithm {
    fn from(value: TokenAlgorithm) -> Self {
        match value {
            TokenAlgorithm::HS256 => Algorithm::HS256,
            TokenAlgorithm::RS256 => Algorithm::RS256,
            TokenAlgorithm::EdDSA => Algorithm::EdDSA,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("`{key}`: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{key}`: cannot create {path}: {source}")]
    Create {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// The claims courtchat reads from and writes into tokens.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The token's own id: staff tokens from sign-in carry one, which `POST /v1/logout` ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Applicant tokens: where the applicant writes from, as the admin API issued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// Applicant tokens from a kiosk with a team: that team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
}

impl Claims {
    /// What the token says beyond its subject, role and lifetime.
    pub fn details(&self) -> TokenDetails {
        TokenDetails {
            id: self.jti.clone(),
            channel: self.channel,
            team: self.team.clone(),
        }
    }
}

/// Verifies tokens (and, given a private key, mints them) for one configured algorithm.
pub struct TokenKeys {
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    /// Seconds a token's `iat` may lie ahead of this clock (another host's clock running fast).
    iat_leeway: u64,
    /// Keys [`TokenKeys::pseudonym`]; derived from the signing secret, never used to sign.
    pseudonyms: hmac::Key,
}

impl TokenKeys {
    /// Loads the keys `config` names. For HS256 without an inline secret, the secret file is
    /// created with a fresh random secret if it does not exist yet, so a new installation works
    /// without configuration and `courtchat token` signs with the same secret the server checks.
    pub fn load(config: &AuthConfig) -> Result<Self, KeyError> {
        let algorithm = Algorithm::from(config.algorithm);
        // `secret`: what only this server holds, from which the pseudonym key is derived.
        let (decoding, encoding, secret) = match config.algorithm {
            TokenAlgorithm::HS256 => {
                let secret = if config.secret.is_empty() {
                    hs256_secret_file(&config.secret_file)?
                } else {
                    config.secret.as_bytes().to_vec()
                };
                if secret.len() < 32 {
                    return Err(KeyError::Invalid {
                        key: "mqtt.auth.secret",
                        reason: "an HS256 secret needs at least 32 bytes".to_owned(),
                    });
                }
                (
                    DecodingKey::from_secret(&secret),
                    Some(EncodingKey::from_secret(&secret)),
                    Some(secret),
                )
            }
            TokenAlgorithm::RS256 | TokenAlgorithm::EdDSA => {
                let public = read(&config.public_key_file, "mqtt.auth.public_key_file")?;
                let invalid = |key, err: jsonwebtoken::errors::Error| KeyError::Invalid {
                    key,
                    reason: err.to_string(),
                };
                let decoding = match config.algorithm {
                    TokenAlgorithm::RS256 => DecodingKey::from_rsa_pem(&public),
                    _ => DecodingKey::from_ed_pem(&public),
                }
                .map_err(|err| invalid("mqtt.auth.public_key_file", err))?;
                let (encoding, private) = if config.private_key_file.as_os_str().is_empty() {
                    (None, None)
                } else {
                    let private = read(&config.private_key_file, "mqtt.auth.private_key_file")?;
                    let encoding = match config.algorithm {
                        TokenAlgorithm::RS256 => EncodingKey::from_rsa_pem(&private),
                        _ => EncodingKey::from_ed_pem(&private),
                    }
                    .map_err(|err| invalid("mqtt.auth.private_key_file", err))?;
                    (Some(encoding), Some(private))
                };
                (decoding, encoding, private)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let issuer = (!config.issuer.is_empty()).then(|| config.issuer.clone());
        let audience = (!config.audience.is_empty()).then(|| config.audience.clone());
        if let Some(issuer) = &issuer {
            validation.set_issuer(&[issuer]);
        }
        match &audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Ok(Self {
            algorithm,
            decoding,
            encoding,
            validation,
            issuer,
            audience,
            iat_leeway: config.iat_leeway,
            pseudonyms: pseudonym_key(secret.as_deref())?,
        })
    }

    /// Checks a token's signature, expiry, issue time, issuer and audience, and the shape of
    /// what it carries, and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        self.verify_at(token, SystemTime::now())
    }

    /// [`TokenKeys::verify`] with the issue time checked against `now` (the expiry is checked
    /// against the system clock).
    pub fn verify_at(&self, token: &str, now: SystemTime) -> Result<Claims, String> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| err.to_string())?;
        check_claims(&claims, unix_seconds(now), self.iat_leeway)?;
        Ok(claims)
    }

    /// Seconds of clock skew tolerated on `exp`.
    pub(crate) fn leeway(&self) -> u64 {
        self.validation.leeway
    }

    /// Mints a token for `subject` with `role`, valid for `ttl` from `now`.
    pub fn mint(
        &self,
        subject: &str,
        role: Role,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, KeyError> {
        self.mint_with(subject, role, ttl, now, TokenDetails::default())
    }

    /// Mints a token for `subject` with `role`, valid for `ttl` from `now`, that also carries
    /// `details` (an id; an applicant's channel and team).
    pub fn mint_with(
        &self,
        subject: &str,
        role: Role,
        ttl: Duration,
        now: SystemTime,
        details: TokenDetails,
    ) -> Result<String, KeyError> {
        let encoding = self.encoding.as_ref().ok_or_else(|| KeyError::Invalid {
            key: "mqtt.auth.private_key_file",
            reason: "minting tokens needs the private key".to_owned(),
        })?;
        let iat = unix_seconds(now);
        let claims = Claims {
            sub: subject.to_owned(),
            role,
            exp: iat + ttl.as_secs(),
            iat: Some(iat),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: details.id,
            channel: details.channel,
            team: details.team,
        };
        // What this server would refuse, it does not sign either.
        check_claims(&claims, iat, 0).map_err(KeyError::Sign)?;
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, encoding)
            .map_err(|err| KeyError::Sign(err.to_string()))
    }

    /// A short keyed digest of `text` (16 hex digits of HMAC-SHA-256 under a key derived from
    /// this server's signing secret): the same text always gives the same pseudonym, so a
    /// record can show that two attempts named the same thing without keeping what they
    /// named, and without the key nobody can test guesses against it.
    pub fn pseudonym(&self, text: &str) -> String {
        let tag = hmac::sign(&self.pseudonyms, text.as_bytes());
        tag.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// What verification checks beyond the signature and the registered claims: the token was not
/// issued in the future (more than `iat_leeway` seconds ahead of `now`), since a future `iat`
/// would outlive every revocation by issue time; an id the record of ended tokens can keep; a
/// team that is a name.
fn check_claims(claims: &Claims, now: u64, iat_leeway: u64) -> Result<(), String> {
    if let Some(iat) = claims.iat
        && iat > now.saturating_add(iat_leeway)
    {
        return Err(format!(
            "the token was issued in the future (iat {iat}, now {now}, {iat_leeway} s tolerated)"
        ));
    }
    if let Some(id) = &claims.jti
        && (id.is_empty() || id.len() > MAX_TOKEN_ID || !id.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(format!(
            "the token id (jti) must be 1 to {MAX_TOKEN_ID} visible ASCII characters"
        ));
    }
    if let Some(team) = &claims.team
        && (team.is_empty() || schemas::wire::check_name("team", team).is_err())
    {
        return Err("the token's team is not a name".to_owned());
    }
    Ok(())
}

/// The pseudonym key: HMAC-SHA-256 keyed by the signing secret over a label, so that it is
/// bound to this server yet never the signing key itself. A server that only verifies
/// (RS256/EdDSA without the private key) has no secret and draws a random key: its pseudonyms
/// match within one run only.
fn pseudonym_key(secret: Option<&[u8]>) -> Result<hmac::Key, KeyError> {
    const LABEL: &[u8] = b"courtchat pseudonym v1";
    let derived = match secret {
        Some(secret) => hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), LABEL)
            .as_ref()
            .to_vec(),
        None => {
            let mut random = vec![0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
                .map_err(|_| KeyError::Sign("the system random generator failed".to_owned()))?;
            random
        }
    };
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &derived))
}

fn read(path: &Path, key: &'static str) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

fn hs256_secret_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    load_or_create_secret(path, "mqtt.auth.secret_file")
}

/// Reads a secret file, creating it first with 32 random bytes, readable only by its owner, if
/// it does not exist; `key` is the configuration key that names the file, for errors.
pub fn load_or_create_secret(path: &Path, key: &'static str) -> Result<Vec<u8>, KeyError> {
    match std::fs::read(path) {
        Ok(secret) => Ok(secret),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let create = |source| KeyError::Create {
                key,
                path: path.to_owned(),
                source,
            };
            let mut secret = vec![0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
                .map_err(|_| create(std::io::Error::other("the system random generator failed")))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(create)?;
            }
            write_private(path, &secret).map_err(create)?;
            tracing::info!(path = %path.display(), key, "created a new secret");
            Ok(secret)
        }
        Err(source) => Err(KeyError::Read {
            key,
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a file only its owner can read; `create_new` so two processes never overwrite each
/// other's secret.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}
