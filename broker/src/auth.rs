//! Who is connecting: JWT authentication at CONNECT.
//!
//! A client presents a JWT as its CONNECT password. The token names the subject (which must equal
//! the MQTT client id, so nobody can take over another client's id), a [`Role`] and an expiry.
//! Authenticators form a chain like the authorizers: each may accept, reject or abstain, and a
//! connection nobody accepted is refused.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::staff::StaffRevocations;

/// What a connected principal is allowed to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A license applicant at a kiosk or on a phone.
    Applicant,
    /// Help-desk staff answering sessions they have joined.
    Agent,
    /// Staff who may monitor and take over any session.
    Supervisor,
    /// Administrators; they work through the HTTP API, not in conversations.
    Admin,
    /// courtchat's own components, such as the bridge.
    Service,
    /// Unauthenticated clients, when anonymous access is enabled.
    Anonymous,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Applicant,
        Role::Agent,
        Role::Supervisor,
        Role::Admin,
        Role::Service,
        Role::Anonymous,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Applicant => "applicant",
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
            Role::Service => "service",
            Role::Anonymous => "anonymous",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?} (expected one of applicant, agent, supervisor, admin, service)"))
    }
}

/// A session participant's role, as the pipeline announces it (`cc/v1/memberships`).
impl From<schemas::wire::ParticipantRole> for Role {
    fn from(role: schemas::wire::ParticipantRole) -> Self {
        use schemas::wire::ParticipantRole;
        match role {
            ParticipantRole::Applicant => Role::Applicant,
            ParticipantRole::Agent => Role::Agent,
            ParticipantRole::Supervisor => Role::Supervisor,
        }
    }
}

/// A session participant's role, as stored (memberships loaded at start).
impl From<schemas::db::entities::participant::ParticipantRole> for Role {
    fn from(role: schemas::db::entities::participant::ParticipantRole) -> Self {
        Role::from(schemas::wire::ParticipantRole::from(role))
    }
}

/// An authenticated connection's principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    /// The CONNECT username, if any; informational, and `%u` in static ACL rules.
    pub username: Option<String>,
    pub role: Role,
    /// True for clients admitted without credentials; only static ACL rules grant them anything.
    pub anonymous: bool,
    /// When the credentials expire; the connection is closed then.
    pub expires_at: Option<SystemTime>,
    /// The token's `iat` (seconds since the Unix epoch), if it has one: what a staff
    /// revocation ([`crate::StaffRevocations`]) is compared with.
    pub issued_at: Option<u64>,
}

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
            allow_anonymous: false,
            anonymous_role: Role::Anonymous,
        }
    }
}

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
}

/// Verifies tokens (and, given a private key, mints them) for one configured algorithm.
pub struct TokenKeys {
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
}

impl TokenKeys {
    /// Loads the keys `config` names. For HS256 without an inline secret, the secret file is
    /// created with a fresh random secret if it does not exist yet, so a new installation works
    /// without configuration and `courtchat token` signs with the same secret the server checks.
    pub fn load(config: &AuthConfig) -> Result<Self, KeyError> {
        let algorithm = Algorithm::from(config.algorithm);
        let (decoding, encoding) = match config.algorithm {
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
                let encoding = if config.private_key_file.as_os_str().is_empty() {
                    None
                } else {
                    let private = read(&config.private_key_file, "mqtt.auth.private_key_file")?;
                    Some(
                        match config.algorithm {
                            TokenAlgorithm::RS256 => EncodingKey::from_rsa_pem(&private),
                            _ => EncodingKey::from_ed_pem(&private),
                        }
                        .map_err(|err| invalid("mqtt.auth.private_key_file", err))?,
                    )
                };
                (decoding, encoding)
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
        })
    }

    /// Checks a token's signature, expiry, issuer and audience, and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| err.to_string())
    }

    /// Mints a token for `subject` with `role`, valid for `ttl` from `now`.
    pub fn mint(
        &self,
        subject: &str,
        role: Role,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, KeyError> {
        let encoding = self.encoding.as_ref().ok_or_else(|| KeyError::Invalid {
            key: "mqtt.auth.private_key_file",
            reason: "minting tokens needs the private key".to_owned(),
        })?;
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            role,
            exp: iat + ttl.as_secs(),
            iat: Some(iat),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, encoding)
            .map_err(|err| KeyError::Sign(err.to_string()))
    }
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
        AuthOutcome::Accept(Identity {
            subject: claims.sub,
            username: connect.username.map(str::to_owned),
            role: claims.role,
            anonymous: false,
            expires_at: Some(
                UNIX_EPOCH + Duration::from_secs(claims.exp + self.keys.validation.leeway),
            ),
            issued_at: claims.iat,
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
        })
    }
}

#[cfg(test)]
mod tests;
