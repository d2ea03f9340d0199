//! What a checked ID token means for courtchat, as configured (`[admin.oidc]`): the username
//! (a claim, which must be a valid courtchat username), the display name, the role (the highest
//! that one of the person's groups gives; none: refused) and the team (the first configured
//! group the person is in; none: no team). A pure function of the claims and the configuration.

use schemas::db::entities::agent::StaffRole;

use crate::oidc_config::{OidcConfig, parse_role};
use crate::{people, staff_role};

/// Who the provider says signed in, in courtchat's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub username: String,
    pub display_name: String,
    pub role: StaffRole,
    pub team: Option<String>,
}

/// Why a person the provider signed in is not a member of courtchat's staff.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unmapped {
    #[error("the ID token has no {0} claim to be the username")]
    NoUsername(String),
    #[error("{0:?} cannot be a courtchat username")]
    BadUsername(String),
    #[error("none of {0}'s groups gives a courtchat role")]
    NoRole(String),
}

/// Maps the provider's claims by `config`.
pub fn map(claims: &oidc::IdClaims, config: &OidcConfig) -> Result<Mapped, Unmapped> {
    let username = claims
        .text(&config.username_claim)
        .ok_or_else(|| Unmapped::NoUsername(config.username_claim.clone()))?;
    if !people::valid_username(username) {
        return Err(Unmapped::BadUsername(
            username.chars().take(64).collect::<String>(),
        ));
    }
    let groups = claims.texts(&config.groups_claim);
    let role = config
        .roles
        .iter()
        .filter(|entry| groups.contains(&entry.group.as_str()))
        .filter_map(|entry| parse_role(&entry.role))
        .max_by_key(|role| staff_role::rank(*role))
        .ok_or_else(|| Unmapped::NoRole(username.to_owned()))?;
    let team = config
        .teams
        .iter()
        .find(|entry| groups.contains(&entry.group.as_str()))
        .map(|entry| entry.team.clone());
    let display_name = claims
        .text(&config.display_name_claim)
        .map(str::trim)
        .filter(|name| people::valid_display_name(name))
        .unwrap_or(username)
        .to_owned();
    Ok(Mapped {
        username: username.to_owned(),
        display_name,
        role,
        team,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::oidc_config::{GroupRole, GroupTeam};

    fn config() -> OidcConfig {
        let role = |group: &str, role: &str| GroupRole {
            group: group.to_owned(),
            role: role.to_owned(),
        };
        OidcConfig {
            roles: vec![
                role("cc-agents", "agent"),
                role("cc-admins", "admin"),
                role("cc-supervisors", "supervisor"),
            ],
            teams: vec![GroupTeam {
                group: "licensing-office".to_owned(),
                team: "licensing".to_owned(),
            }],
            ..OidcConfig::default()
        }
    }

    fn claims(value: serde_json::Value) -> oidc::IdClaims {
        oidc::IdClaims {
            subject: "s".to_owned(),
            expires_at: 0,
            session_id: None,
            claims: value.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn groups_give_the_highest_role_and_the_first_team() {
        let config = config();
        let mapped = |value| map(&claims(value), &config);
        // (claims, expected)
        let rows = [
            (
                json!({"preferred_username": "bob", "name": "Bob B", "groups": ["cc-agents", "licensing-office"]}),
                Ok(("bob", "Bob B", StaffRole::Agent, Some("licensing"))),
            ),
            (
                json!({"preferred_username": "ann", "groups": ["cc-agents", "cc-admins", "cc-supervisors"]}),
                Ok(("ann", "ann", StaffRole::Admin, None)),
            ),
            (
                json!({"preferred_username": "sue", "name": "  ", "groups": "cc-supervisors"}),
                Ok(("sue", "sue", StaffRole::Supervisor, None)),
            ),
            (
                json!({"preferred_username": "eve", "groups": ["visitors"]}),
                Err(Unmapped::NoRole("eve".to_owned())),
            ),
            (
                json!({"preferred_username": "eve"}),
                Err(Unmapped::NoRole("eve".to_owned())),
            ),
            (
                json!({"email": "x@example.org", "groups": ["cc-agents"]}),
                Err(Unmapped::NoUsername("preferred_username".to_owned())),
            ),
            (
                json!({"preferred_username": "a/b", "groups": ["cc-agents"]}),
                Err(Unmapped::BadUsername("a/b".to_owned())),
            ),
        ];
        for (value, expected) in rows {
            let expected = expected.map(|(username, display_name, role, team)| Mapped {
                username: username.to_owned(),
                display_name: display_name.to_owned(),
                role,
                team: team.map(str::to_owned),
            });
            assert_eq!(mapped(value.clone()), expected, "{value}");
        }
    }
}
