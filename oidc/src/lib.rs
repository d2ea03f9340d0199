//! The relying party's side of OpenID Connect, for staff who sign in with their court's
//! identity provider (Entra ID, Okta, Keycloak, ADFS): the provider's discovery document, the
//! authorization code flow with PKCE (S256), state and nonce, the code exchanged for tokens,
//! the ID token checked against the provider's JWKS (re-fetched when a token names a key it
//! does not hold, so that the provider may rotate its keys), its issuer, audience, expiry and
//! issue time within a bounded clock skew, and refresh, with which the server asks the provider
//! again whether a person still has an account.
//!
//! What a sign-in means for courtchat (which account, which role) is not decided here: this
//! crate hands back the provider's claims, checked, and the admin API maps them.
//!
//! Nothing here panics on what the network sends: every answer is bounded in size and time and
//! every failure is an [`OidcError`].

mod fetch;
mod id_token;
mod provider;
mod random;

pub use id_token::{IdClaims, IdTokenError};
pub use provider::{Authorization, Provider, ProviderSettings, TokenAuth, Tokens};
pub use random::random_token;

/// Why talking to the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached, or answered with something other than JSON.
    #[error("the identity provider is unreachable: {0}")]
    Unreachable(String),
    /// The discovery document or the JWKS is not what the specification says.
    #[error("the identity provider's {what} is unusable: {reason}")]
    Misconfigured { what: &'static str, reason: String },
    /// An endpoint refused the request (`invalid_grant`: the code or refresh token is no
    /// longer good, e.g. the account was disabled).
    #[error("the identity provider refused: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        error: String,
        description: Option<String>,
    },
    /// The ID token did not pass its checks.
    #[error("the ID token was refused: {0}")]
    IdToken(#[from] IdTokenError),
    /// This machine's random numbers failed.
    #[error("the system's random number generator failed")]
    Random,
}
