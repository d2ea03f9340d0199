//! `[admin.oidc]`: staff sign-in with the court's identity provider (OpenID Connect). Off until
//! `issuer` is set. What the provider's claims mean for courtchat is configuration: which claim
//! is the username, which groups make an agent, a supervisor or an admin, which make a team, and
//! whether a person the provider vouches for but courtchat does not know gets an account.

use std::num::NonZeroU32;

use schemas::db::entities::agent::StaffRole;
use serde::{Deserialize, Serialize};

/// A group that gives a role (the highest of a person's groups wins).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRole {
    pub group: String,
    /// `agent`, `supervisor` or `admin`.
    pub role: String,
}

/// A group that puts a person in a team (the first of these that matches wins).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupTeam {
    pub group: String,
    pub team: String,
}

/// How courtchat proves itself at the provider's token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuth {
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// The provider's issuer, exactly as its discovery document names it; empty: off.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Where the provider sends the browser back: this server's `/v1/oidc/callback` as browsers
    /// reach it (`https://chat.example.org/v1/oidc/callback` behind a proxy). Empty: built
    /// from the request's `Host` over plain HTTP, for a server reached directly.
    pub redirect_url: String,
    /// Scopes asked for besides `openid` (`groups` for some providers, `offline_access` for a
    /// refresh token where the provider asks for it).
    pub scopes: Vec<String>,
    pub token_endpoint_auth: TokenEndpointAuth,
    /// The ID token's claim that is the courtchat username.
    pub username_claim: String,
    /// The claim that is the display name of an account created at first sign-in.
    pub display_name_claim: String,
    /// The claim listing the person's groups.
    pub groups_claim: String,
    pub roles: Vec<GroupRole>,
    pub teams: Vec<GroupTeam>,
    /// Whether a person the provider signs in whom courtchat does not know gets an account
    /// (with the role and team their groups give); otherwise they are refused.
    pub create_unknown: bool,
    /// How far the provider's clock may be from ours, in seconds (at most 300).
    pub clock_skew_secs: u64,
    /// How long one request to the provider may take, in seconds.
    pub timeout_secs: u64,
    /// The longest a sign-in through the provider lasts, in seconds: its courtchat token
    /// expires then at the latest (and at `admin.token_ttl_secs`, if sooner).
    pub max_session_secs: u64,
    /// Seconds between two checks at the provider (a refresh) that a signed-in person still
    /// has an account there; one who does not loses every courtchat token. 0: no checks.
    pub recheck_secs: u64,
    /// Sign-in starts and callbacks per client address per minute.
    pub attempts_per_address: NonZeroU32,
    /// Whether signing out of the desk also ends the session at the provider, where it offers
    /// that (RP-initiated logout).
    pub end_provider_session: bool,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            redirect_url: String::new(),
            scopes: vec!["profile".to_owned()],
            token_endpoint_auth: TokenEndpointAuth::ClientSecretBasic,
            username_claim: "preferred_username".to_owned(),
            display_name_claim: "name".to_owned(),
            groups_claim: "groups".to_owned(),
            roles: Vec::new(),
            teams: Vec::new(),
            create_unknown: false,
            clock_skew_secs: 60,
            timeout_secs: 10,
            max_session_secs: 8 * 3600,
            recheck_secs: 300,
            attempts_per_address: NonZeroU32::new(30).expect("nonzero"),
            end_provider_session: true,
        }
    }
}

/// The role a configured name stands for.
pub fn parse_role(name: &str) -> Option<StaffRole> {
    match name {
        "agent" => Some(StaffRole::Agent),
        "supervisor" => Some(StaffRole::Supervisor),
        "admin" => Some(StaffRole::Admin),
        _ => None,
    }
}

impl OidcConfig {
    pub fn enabled(&self) -> bool {
        !self.issuer.is_empty()
    }

    /// Checks the section; the error names the key (under `admin.oidc.`) and what is wrong.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled() {
            return Ok(());
        }
        let loopback = |url: &url::Url| {
            matches!(
                url.host_str(),
                Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
            )
        };
        match url::Url::parse(&self.issuer) {
            Ok(url) if url.scheme() == "https" || (url.scheme() == "http" && loopback(&url)) => {}
            _ => {
                return Err((
                    "admin.oidc.issuer",
                    "must be an https:// URL (http:// only on loopback)".to_owned(),
                ));
            }
        }
        if self.client_id.is_empty() || self.client_id.len() > 256 {
            return Err(("admin.oidc.client_id", "must be 1 to 256 bytes".to_owned()));
        }
        if self.client_secret.len() > 1024 {
            return Err((
                "admin.oidc.client_secret",
                "must be at most 1024 bytes".to_owned(),
            ));
        }
        if !self.redirect_url.is_empty()
            && !url::Url::parse(&self.redirect_url).is_ok_and(|url| {
                matches!(url.scheme(), "https" | "http")
                    && url.path().ends_with("/v1/oidc/callback")
            })
        {
            return Err((
                "admin.oidc.redirect_url",
                "must be an http(s) URL ending in /v1/oidc/callback".to_owned(),
            ));
        }
        for (key, claim) in [
            ("admin.oidc.username_claim", &self.username_claim),
            ("admin.oidc.display_name_claim", &self.display_name_claim),
            ("admin.oidc.groups_claim", &self.groups_claim),
        ] {
            if claim.is_empty() || claim.len() > 128 {
                return Err((key, "must be a claim name of 1 to 128 bytes".to_owned()));
            }
        }
        if let Some(bad) = self
            .roles
            .iter()
            .find(|entry| parse_role(&entry.role).is_none())
        {
            return Err((
                "admin.oidc.roles",
                format!("{:?} is not agent, supervisor or admin", bad.role),
            ));
        }
        if self.roles.is_empty() {
            return Err((
                "admin.oidc.roles",
                "name at least one group that gives a role".to_owned(),
            ));
        }
        if let Some(bad) = self
            .teams
            .iter()
            .find(|entry| !crate::people::valid_team(&entry.team))
        {
            return Err((
                "admin.oidc.teams",
                format!("{:?} is not a team name", bad.team),
            ));
        }
        if self.clock_skew_secs > 300 {
            return Err((
                "admin.oidc.clock_skew_secs",
                "must be at most 300 seconds".to_owned(),
            ));
        }
        if !(1..=120).contains(&self.timeout_secs) {
            return Err((
                "admin.oidc.timeout_secs",
                "must be between 1 and 120 seconds".to_owned(),
            ));
        }
        if !(60..=7 * 86_400).contains(&self.max_session_secs) {
            return Err((
                "admin.oidc.max_session_secs",
                "must be between 60 and 604800 seconds".to_owned(),
            ));
        }
        if self.recheck_secs > 86_400 {
            return Err((
                "admin.oidc.recheck_secs",
                "must be at most 86400 seconds (0: no checks)".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> OidcConfig {
        OidcConfig {
            issuer: "https://login.example.org/realms/court".to_owned(),
            client_id: "courtchat".to_owned(),
            roles: vec![GroupRole {
                group: "desk".to_owned(),
                role: "agent".to_owned(),
            }],
            ..OidcConfig::default()
        }
    }

    /// A change to a valid configuration.
    type Change = Box<dyn Fn(&mut OidcConfig)>;

    #[test]
    fn off_by_default_and_each_bad_value_names_its_key() {
        assert!(!OidcConfig::default().enabled());
        assert_eq!(OidcConfig::default().check(), Ok(()));
        assert_eq!(enabled().check(), Ok(()));
        // (change, key)
        let rows: Vec<(Change, &str)> = vec![
            (
                Box::new(|c| c.issuer = "http://idp.example.org".into()),
                "admin.oidc.issuer",
            ),
            (
                Box::new(|c| c.issuer = "not a url".into()),
                "admin.oidc.issuer",
            ),
            (Box::new(|c| c.client_id.clear()), "admin.oidc.client_id"),
            (
                Box::new(|c| c.redirect_url = "https://x/elsewhere".into()),
                "admin.oidc.redirect_url",
            ),
            (
                Box::new(|c| c.roles[0].role = "root".into()),
                "admin.oidc.roles",
            ),
            (Box::new(|c| c.roles.clear()), "admin.oidc.roles"),
            (
                Box::new(|c| {
                    c.teams = vec![GroupTeam {
                        group: "g".into(),
                        team: " ".into(),
                    }]
                }),
                "admin.oidc.teams",
            ),
            (
                Box::new(|c| c.clock_skew_secs = 301),
                "admin.oidc.clock_skew_secs",
            ),
            (
                Box::new(|c| c.max_session_secs = 10),
                "admin.oidc.max_session_secs",
            ),
            (
                Box::new(|c| c.groups_claim.clear()),
                "admin.oidc.groups_claim",
            ),
        ];
        for (change, key) in rows {
            let mut config = enabled();
            change(&mut config);
            assert_eq!(config.check().map_err(|(k, _)| k), Err(key));
        }
        let mut local = enabled();
        local.issuer = "http://127.0.0.1:9000".into();
        assert_eq!(local.check(), Ok(()), "plain HTTP on loopback, for tests");
    }
}
