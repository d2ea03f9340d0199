//! One configured provider: its discovery document and key set, fetched when first needed and
//! kept (so that a provider that is down at start does not stop courtchat from starting), and
//! its endpoints: the authorization request, the code and refresh grants, the end of session.
//!
//! The key set is fetched again when a token names a key it does not hold (the provider rotated
//! its keys), at most once every [`KEYS_REFETCH_AFTER`], so that tokens naming made-up keys
//! cannot make courtchat hammer the provider.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::fetch::{self, bounded};
use crate::id_token::{self, Expected, IdClaims, IdTokenError};
use crate::{OidcError, random};

/// How long a discovery document or key set is kept before it is fetched again.
const KEPT_FOR: Duration = Duration::from_secs(3600);
/// The soonest the key set is fetched again for a key it lacks.
const KEYS_REFETCH_AFTER: Duration = Duration::from_secs(1);

/// How the client proves itself at the token endpoint (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenAuth {
    /// HTTP Basic with the client id and secret (the default of most providers).
    ClientSecretBasic,
    /// The client id and secret in the form.
    ClientSecretPost,
}

/// A provider, as configured.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    /// The issuer exactly as the provider names itself (`https://login.example.org/realms/court`).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked for; `openid` is always asked for.
    pub scopes: Vec<String>,
    pub token_auth: TokenAuth,
    /// How far the provider's clock may be from ours (on `exp`, `iat`, `nbf`).
    pub clock_skew: Duration,
    /// How long one request to the provider may take.
    pub timeout: Duration,
}

/// The parts of the discovery document courtchat uses.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    end_session_endpoint: Option<String>,
}

struct Kept<T> {
    value: Arc<T>,
    at: Instant,
}

/// A sign-in to start: send the browser to `url`; keep `state`, `nonce` and `verifier` for the
/// callback.
#[derive(Debug)]
pub struct Authorization {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

/// What the token endpoint answered.
#[derive(Debug, Deserialize)]
pub struct Tokens {
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// The relying party of one provider.
pub struct Provider {
    settings: ProviderSettings,
    http: reqwest::Client,
    discovery: Mutex<Option<Kept<Discovery>>>,
    keys: Mutex<Option<Kept<JwkSet>>>,
}

impl Provider {
    pub fn new(settings: ProviderSettings) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|err| OidcError::Misconfigured {
                what: "HTTP client",
                reason: err.to_string(),
            })?;
        Ok(Self {
            settings,
            http,
            discovery: Mutex::new(None),
            keys: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    /// The discovery document, fetched if not kept or kept too long.
    async fn discovery(&self) -> Result<Arc<Discovery>, OidcError> {
        let mut kept = self.discovery.lock().await;
        if let Some(kept) = kept.as_ref()
            && kept.at.elapsed() < KEPT_FOR
        {
            return Ok(kept.value.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let document: Discovery = fetch::json(self.http.get(url), "discovery document").await?;
        // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
        if document.issuer != self.settings.issuer {
            return Err(OidcError::Misconfigured {
                what: "discovery document",
                reason: format!(
                    "it names the issuer {:?}, not {:?}",
                    bounded(&document.issuer),
                    self.settings.issuer
                ),
            });
        }
        let value = Arc::new(document);
        *kept = Some(Kept {
            value: value.clone(),
            at: Instant::now(),
        });
        Ok(value)
    }

    /// The key set; fetched again when `stale` says the kept one lacks a key (at most once
    /// every [`KEYS_REFETCH_AFTER`]) or it was kept too long.
    async fn keys(&self, stale: bool) -> Result<Arc<JwkSet>, OidcError> {
        let discovery = self.discovery().await?;
        let mut kept = self.keys.lock().await;
        if let Some(kept) = kept.as_ref() {
            let age = kept.at.elapsed();
            if age < KEPT_FOR && (!stale || age < KEYS_REFETCH_AFTER) {
                return Ok(kept.value.clone());
            }
        }
        let keys: JwkSet = fetch::json(self.http.get(&discovery.jwks_uri), "key set").await?;
        let value = Arc::new(keys);
        *kept = Some(Kept {
            value: value.clone(),
            at: Instant::now(),
        });
        Ok(value)
    }

    /// A new authorization request (code flow, PKCE S256) returning to `redirect_uri`.
    pub async fn authorize(&self, redirect_uri: &str) -> Result<Authorization, OidcError> {
        let discovery = self.discovery().await?;
        let (state, nonce, verifier) = (
            random::random_token()?,
            random::random_token()?,
            random::random_token()?,
        );
        let mut url = url::Url::parse(&discovery.authorization_endpoint).map_err(|err| {
            OidcError::Misconfigured {
                what: "discovery document",
                reason: format!("authorization_endpoint: {err}"),
            }
        })?;
        let mut scopes = vec!["openid".to_owned()];
        scopes.extend(
            self.settings
                .scopes
                .iter()
                .filter(|scope| scope.as_str() != "openid")
                .cloned(),
        );
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &random::challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(Authorization {
            url: url.into(),
            state,
            nonce,
            verifier,
        })
    }

    /// A request to the token endpoint with `form`, authenticated as the client.
    async fn token_request(&self, mut form: Vec<(&str, &str)>) -> Result<Tokens, OidcError> {
        let discovery = self.discovery().await?;
        let settings = &self.settings;
        let mut request = self.http.post(&discovery.token_endpoint);
        match settings.token_auth {
            // RFC 6749 §2.3.1: the id and secret are form-encoded before Basic encoding.
            TokenAuth::ClientSecretBasic => {
                let encode = |text: &str| {
                    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
                };
                request = request.basic_auth(
                    encode(&settings.client_id),
                    Some(encode(&settings.client_secret)),
                );
            }
            TokenAuth::ClientSecretPost => {
                form.push(("client_id", &settings.client_id));
                form.push(("client_secret", &settings.client_secret));
            }
        }
        fetch::json(request.form(&form), "token endpoint").await
    }

    /// Exchanges an authorization `code` (with its PKCE `verifier`) for tokens.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<Tokens, OidcError> {
        self.token_request(vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// Uses a refresh token: the provider answers only while the person still has an account
    /// and a session there (`invalid_grant` otherwise).
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, OidcError> {
        self.token_request(vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// Checks an ID token: with `nonce` for a sign-in's, without for a refresh's. `now` is Unix
    /// seconds, for its issue time.
    pub async fn verify(
        &self,
        token: &str,
        nonce: Option<&str>,
        now: u64,
    ) -> Result<IdClaims, OidcError> {
        let (algorithm, kid) = id_token::header(token)?;
        let mut keys = self.keys(false).await?;
        if id_token::key(&keys, kid.as_deref()).is_none() {
            // A key we do not hold: the provider may have rotated; ask once more.
            keys = self.keys(true).await?;
        }
        let jwk = id_token::key(&keys, kid.as_deref()).ok_or(IdTokenError::UnknownKey)?;
        let expected = Expected {
            issuer: &self.settings.issuer,
            client_id: &self.settings.client_id,
            nonce,
            skew: self.settings.clock_skew,
            now,
        };
        Ok(id_token::verify(token, algorithm, jwk, &expected)?)
    }

    /// Where to send the browser to end its session at the provider too (RP-Initiated Logout),
    /// if the provider offers it: `id_token_hint` names the session, and the provider sends the
    /// browser back to `post_logout_redirect_uri`.
    pub async fn end_session_url(
        &self,
        id_token_hint: &str,
        post_logout_redirect_uri: &str,
    ) -> Result<Option<String>, OidcError> {
        let discovery = self.discovery().await?;
        let Some(endpoint) = discovery.end_session_endpoint.as_deref() else {
            return Ok(None);
        };
        let mut url = url::Url::parse(endpoint).map_err(|err| OidcError::Misconfigured {
            what: "discovery document",
            reason: format!("end_session_endpoint: {err}"),
        })?;
        url.query_pairs_mut()
            .append_pair("id_token_hint", id_token_hint)
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
        Ok(Some(url.into()))
    }
}
