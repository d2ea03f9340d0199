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
mod tests {
    use super::*;

    fn hs256() -> (tempfile::TempDir, TokenKeys) {
        let dir = tempfile::tempdir().unwrap();
        let config = AuthConfig {
            secret_file: dir.path().join("sub/secret"),
            ..AuthConfig::default()
        };
        let keys = TokenKeys::load(&config).unwrap();
        (dir, keys)
    }

    fn connect<'a>(client_id: &'a str, password: Option<&'a str>) -> ConnectInfo<'a> {
        ConnectInfo {
            client_id,
            username: None,
            password: password.map(str::as_bytes),
        }
    }

    #[test]
    fn the_secret_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuthConfig {
            secret_file: dir.path().join("data/token-secret"),
            ..AuthConfig::default()
        };
        let first = TokenKeys::load(&config).unwrap();
        let token = first
            .mint(
                "kiosk-1",
                Role::Applicant,
                Duration::from_secs(60),
                SystemTime::now(),
            )
            .unwrap();
        // A second load reads the same secret, so tokens stay valid across restarts.
        assert!(TokenKeys::load(&config).unwrap().verify(&token).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&config.secret_file)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn participant_roles_are_roles_of_the_same_name() {
        use schemas::db::entities::participant::ParticipantRole as Row;
        use schemas::wire::ParticipantRole as Wire;
        let table = [
            (Wire::Applicant, Row::Applicant, Role::Applicant),
            (Wire::Agent, Row::Agent, Role::Agent),
            (Wire::Supervisor, Row::Supervisor, Role::Supervisor),
        ];
        for (wire, row, role) in table {
            assert_eq!(Role::from(wire), role);
            assert_eq!(Role::from(row), role);
        }
    }

    #[test]
    fn jwt_decisions() {
        let (_dir, keys) = hs256();
        let now = SystemTime::now();
        let valid = keys
            .mint("kiosk-1", Role::Applicant, Duration::from_secs(60), now)
            .unwrap();
        let expired = keys
            .mint(
                "kiosk-1",
                Role::Applicant,
                Duration::ZERO,
                now - Duration::from_secs(120),
            )
            .unwrap();
        let (_other_dir, other_keys) = hs256();
        let foreign = other_keys
            .mint("kiosk-1", Role::Applicant, Duration::from_secs(60), now)
            .unwrap();
        let chain = AuthChain::new(vec![Box::new(JwtAuthenticator::new(keys))]);

        let accepted = chain
            .authenticate(&connect("kiosk-1", Some(&valid)))
            .unwrap();
        assert_eq!(
            (accepted.subject.as_str(), accepted.role, accepted.anonymous),
            ("kiosk-1", Role::Applicant, false)
        );

        type Expectation = fn(&Refusal) -> bool;
        let rows: &[(&str, Option<&str>, Expectation)] = &[
            ("kiosk-1", None, |r| matches!(r, Refusal::NotAuthorized(_))),
            ("kiosk-1", Some("not-a-jwt"), |r| {
                matches!(r, Refusal::BadCredentials(_))
            }),
            ("kiosk-1", Some(&expired), |r| {
                matches!(r, Refusal::BadCredentials(_))
            }),
            ("kiosk-1", Some(&foreign), |r| {
                matches!(r, Refusal::BadCredentials(_))
            }),
            ("kiosk-2", Some(&valid), |r| {
                matches!(r, Refusal::NotAuthorized(_))
            }),
        ];
        for (client_id, password, expected) in rows {
            let refusal = chain
                .authenticate(&connect(client_id, *password))
                .unwrap_err();
            assert!(expected(&refusal), "{client_id} {password:?}: {refusal:?}");
        }
    }

    #[test]
    fn minted_tokens_carry_their_issue_time() {
        let (_dir, keys) = hs256();
        let at = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
        let token = keys
            .mint("agent-1", Role::Agent, Duration::from_secs(60), at)
            .unwrap();
        // Verification checks `exp` against the real clock, so read the claims unverified.
        let mut lenient = Validation::new(Algorithm::HS256);
        lenient.insecure_disable_signature_validation();
        lenient.validate_exp = false;
        let claims =
            jsonwebtoken::decode::<Claims>(&token, &DecodingKey::from_secret(&[]), &lenient)
                .unwrap()
                .claims;
        assert_eq!(claims.iat, Some(4_000_000_000));
    }

    #[test]
    fn revoked_tokens_are_refused() {
        let (_dir, keys) = hs256();
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mint = |subject, at| {
            keys.mint(subject, Role::Agent, Duration::from_secs(3600), at)
                .unwrap()
        };
        let old = mint("agent-1", now - Duration::from_secs(10));
        let fresh = mint("agent-1", now);
        let other = mint("agent-2", now - Duration::from_secs(10));
        let revocations = StaffRevocations::new();
        revocations.revoke("agent-1", secs);
        let chain = AuthChain::new(vec![Box::new(
            JwtAuthenticator::new(keys).with_revocations(revocations),
        )]);
        assert!(matches!(
            chain.authenticate(&connect("agent-1", Some(&old))),
            Err(Refusal::NotAuthorized(_))
        ));
        let accepted = chain
            .authenticate(&connect("agent-1", Some(&fresh)))
            .unwrap();
        assert_eq!(accepted.issued_at, Some(secs));
        assert!(
            chain
                .authenticate(&connect("agent-2", Some(&other)))
                .is_ok()
        );
    }

    #[test]
    fn anonymous_clients_are_marked() {
        let (_dir, keys) = hs256();
        let chain = AuthChain::new(vec![
            Box::new(JwtAuthenticator::new(keys)),
            Box::new(AnonymousAuthenticator {
                role: Role::Anonymous,
            }),
        ]);
        let identity = chain.authenticate(&connect("guest", None)).unwrap();
        assert!(identity.anonymous);
        // A wrong token is still refused: anonymous access is for clients without credentials.
        assert!(chain.authenticate(&connect("guest", Some("bad"))).is_err());
    }

    /// Standard base64 for PEM armour; test-only, to write key files generated at test time.
    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                out.push(if i <= chunk.len() {
                    ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char
                } else {
                    '='
                });
            }
        }
        out
    }

    fn pem(label: &str, der: &[u8]) -> String {
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            base64(der)
        )
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn eddsa_key_pairs_sign_and_verify() {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        // SubjectPublicKeyInfo for Ed25519: the algorithm identifier, then the raw key.
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());

        let dir = tempfile::tempdir().unwrap();
        let (public, private) = (
            dir.path().join("public.pem"),
            dir.path().join("private.pem"),
        );
        std::fs::write(&public, pem("PUBLIC KEY", &spki)).unwrap();
        std::fs::write(&private, pem("PRIVATE KEY", pkcs8.as_ref())).unwrap();
        let config = AuthConfig {
            algorithm: TokenAlgorithm::EdDSA,
            public_key_file: public.clone(),
            private_key_file: private,
            issuer: "courtchat-test".to_owned(),
            ..AuthConfig::default()
        };
        let keys = TokenKeys::load(&config).unwrap();
        let token = keys
            .mint(
                "agent-1",
                Role::Agent,
                Duration::from_secs(60),
                SystemTime::now(),
            )
            .unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("agent-1", Role::Agent));

        // A verifier with only the public key accepts the token but cannot mint.
        let verifier = TokenKeys::load(&AuthConfig {
            private_key_file: PathBuf::new(),
            ..config.clone()
        })
        .unwrap();
        assert!(verifier.verify(&token).is_ok());
        assert!(
            verifier
                .mint("x", Role::Agent, Duration::from_secs(1), SystemTime::now())
                .is_err()
        );
        // The issuer is enforced.
        let strict = TokenKeys::load(&AuthConfig {
            issuer: "someone-else".to_owned(),
            ..config
        })
        .unwrap();
        assert!(strict.verify(&token).is_err());
        // An HS256 token is not accepted by an EdDSA verifier.
        let (_dir, hs) = hs256();
        let hs_token = hs
            .mint(
                "agent-1",
                Role::Agent,
                Duration::from_secs(60),
                SystemTime::now(),
            )
            .unwrap();
        assert!(verifier.verify(&hs_token).is_err());
    }
}
