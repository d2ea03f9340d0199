//! Sign-in with the court's identity provider, as it runs: the provider (`oidc::Provider`), the
//! sign-ins under way (state → nonce, PKCE verifier, where the provider returns, and the digest
//! of the browser cookie that started it), and the hand-offs of finished sign-ins to the desk.
//!
//! Both live in memory, bounded and short-lived: a sign-in under way lasts [`PENDING_FOR`] and
//! is used once; a hand-off lasts [`HANDOFF_FOR`] and is used once. A restart forgets them,
//! which costs a person at most one more click. The courtchat token itself never travels in a
//! URL: the callback redirects the browser to the desk with a one-time hand-off code in the
//! fragment (never sent to a server), which the desk exchanges with `POST /v1/oidc/session`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use limits::Allowance;

use crate::oidc_config::{OidcConfig, TokenEndpointAuth};

/// How long a sign-in may take at the provider.
pub const PENDING_FOR: Duration = Duration::from_secs(600);
/// How long the desk has to collect a finished sign-in.
pub const HANDOFF_FOR: Duration = Duration::from_secs(60);
/// The most sign-ins under way (and hand-offs waiting) at once: beyond them, new ones wait.
const MAX_KEPT: usize = 10_000;

/// A sign-in started at `/v1/oidc/login`, waiting for the provider's callback.
pub struct Pending {
    pub nonce: String,
    pub verifier: String,
    pub redirect_uri: String,
    /// SHA-256 of the cookie set on the browser that started it.
    pub browser: String,
    at: Instant,
}

/// A finished sign-in, waiting for the desk.
#[derive(Clone, Debug)]
pub struct Handoff {
    pub token: String,
    pub expires_at: String,
    pub username: String,
    pub end_session_url: Option<String>,
    at: Instant,
}

/// The server's sign-in through its identity provider.
pub struct OidcSignIn {
    pub(crate) provider: oidc::Provider,
    pub(crate) config: OidcConfig,
    pub(crate) attempts: Allowance<IpAddr>,
    pending: Mutex<HashMap<String, Pending>>,
    handoffs: Mutex<HashMap<String, Handoff>>,
}

/// What a sign-in cannot be started or finished for, in memory.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

fn keep<T>(
    map: &Mutex<HashMap<String, T>>,
    key: String,
    value: T,
    fresh: impl Fn(&T) -> bool,
) -> Result<(), Full> {
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if map.len() >= MAX_KEPT {
        map.retain(|_, value| fresh(value));
        if map.len() >= MAX_KEPT {
            return Err(Full);
        }
    }
    map.insert(key, value);
    Ok(())
}

fn take<T>(map: &Mutex<HashMap<String, T>>, key: &str, fresh: impl Fn(&T) -> bool) -> Option<T> {
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    map.remove(key).filter(|value| fresh(value))
}

impl OidcSignIn {
    /// The sign-in `config` describes, or `None` when it is off.
    pub fn new(config: &OidcConfig) -> Result<Option<Self>, oidc::OidcError> {
        if !config.enabled() {
            return Ok(None);
        }
        let provider = oidc::Provider::new(oidc::ProviderSettings {
            issuer: config.issuer.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scopes: config.scopes.clone(),
            token_auth: match config.token_endpoint_auth {
                TokenEndpointAuth::ClientSecretBasic => oidc::TokenAuth::ClientSecretBasic,
                TokenEndpointAuth::ClientSecretPost => oidc::TokenAuth::ClientSecretPost,
            },
            clock_skew: Duration::from_secs(config.clock_skew_secs),
            timeout: Duration::from_secs(config.timeout_secs),
        })?;
        Ok(Some(Self {
            provider,
            config: config.clone(),
            attempts: Allowance::per_minute(config.attempts_per_address),
            pending: Mutex::new(HashMap::new()),
            handoffs: Mutex::new(HashMap::new()),
        }))
    }

    /// Keeps a sign-in under way, by its `state`.
    pub fn started(
        &self,
        state: String,
        nonce: String,
        verifier: String,
        redirect_uri: String,
        browser: String,
    ) -> Result<(), Full> {
        let pending = Pending {
            nonce,
            verifier,
            redirect_uri,
            browser,
            at: Instant::now(),
        };
        keep(&self.pending, state, pending, |p| {
            p.at.elapsed() < PENDING_FOR
        })
    }

    /// The sign-in under way with `state`, once: a second callback with it finds nothing.
    pub fn returned(&self, state: &str) -> Option<Pending> {
        take(&self.pending, state, |p| p.at.elapsed() < PENDING_FOR)
    }

    /// Keeps a finished sign-in for the desk under a fresh one-time code, which it returns.
    pub fn hand_off(
        &self,
        token: String,
        expires_at: String,
        username: String,
        end_session_url: Option<String>,
    ) -> Result<String, HandOffError> {
        let code = oidc::random_token().map_err(|_| HandOffError::Random)?;
        let handoff = Handoff {
            token,
            expires_at,
            username,
            end_session_url,
            at: Instant::now(),
        };
        keep(&self.handoffs, code.clone(), handoff, |h| {
            h.at.elapsed() < HANDOFF_FOR
        })
        .map_err(|Full| HandOffError::Full)?;
        Ok(code)
    }

    /// The finished sign-in under `code`, once.
    pub fn collect(&self, code: &str) -> Option<Handoff> {
        take(&self.handoffs, code, |h| h.at.elapsed() < HANDOFF_FOR)
    }

    /// Forgets the allowances of addresses idle long enough to be full again.
    pub fn forget_idle(&self) {
        self.attempts.forget_idle();
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum HandOffError {
    Full,
    Random,
}

/// Lowercase hex of the SHA-256 of `text`.
pub fn digest(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc_config::GroupRole;

    fn sign_in() -> OidcSignIn {
        OidcSignIn::new(&OidcConfig {
            issuer: "http://127.0.0.1:1".to_owned(),
            client_id: "courtchat".to_owned(),
            roles: vec![GroupRole {
                group: "g".to_owned(),
                role: "agent".to_owned(),
            }],
            ..OidcConfig::default()
        })
        .unwrap()
        .expect("enabled")
    }

    #[test]
    fn a_sign_in_and_its_hand_off_are_each_used_once() {
        let signin = sign_in();
        signin
            .started("s".into(), "n".into(), "v".into(), "r".into(), "b".into())
            .unwrap();
        assert!(signin.returned("other").is_none());
        let pending = signin.returned("s").expect("kept");
        assert_eq!(
            (pending.nonce.as_str(), pending.verifier.as_str()),
            ("n", "v")
        );
        assert!(signin.returned("s").is_none(), "once");
        let code = signin
            .hand_off("t".into(), "e".into(), "ann".into(), None)
            .unwrap();
        assert_eq!(code.len(), 43);
        assert_eq!(signin.collect(&code).expect("kept").token, "t");
        assert!(signin.collect(&code).is_none(), "once");
        assert!(
            OidcSignIn::new(&OidcConfig::default()).unwrap().is_none(),
            "off"
        );
    }
}
