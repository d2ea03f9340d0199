//! Which policy governs a session, and whether its content is due to go: pure functions of the
//! policies, the session and the time, so that the rule reads as a table of cases.
//!
//! The most specific scope wins: a policy for the session's team, else one for its channel,
//! else the `all` policy; a session no policy covers is kept forever. A session is due once it
//! has been closed for its policy's `keep_days`, unless it is under a legal hold (or already
//! purged, or not closed at all).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};

/// What a policy covers: every session, a team's or a channel's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    All,
    Team(String),
    Channel(String),
}

/// The longest team or channel name a scope may hold, in characters (the column holds 160
/// bytes with the prefix; session teams are at most 128).
pub const SCOPE_NAME_MAX: usize = 128;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "a scope is `all`, `team:<name>` (the name as a team is named: 1 to {SCOPE_NAME_MAX} \
     characters without control, bidirectional or invisible characters) or \
     `channel:kiosk|phone|web`"
)]
pub struct ScopeError;

impl FromStr for Scope {
    type Err = ScopeError;

    /// Only scopes that can cover a session: a misspelt channel (`channel:phnoe`) would be a
    /// policy that silently applies to nothing, so it is refused, and a team is named by the
    /// rule every stored name follows (`schemas::wire::check_name_characters`).
    fn from_str(text: &str) -> Result<Self, ScopeError> {
        if text == "all" {
            return Ok(Self::All);
        }
        let (kind, name) = text.split_once(':').ok_or(ScopeError)?;
        match kind {
            "team" => {
                let count = name.chars().count();
                let named = name.chars().any(|c| !c.is_whitespace())
                    && schemas::wire::check_name_characters("team", name).is_ok();
                if !(1..=SCOPE_NAME_MAX).contains(&count) || !named {
                    return Err(ScopeError);
                }
                Ok(Self::Team(name.to_owned()))
            }
            "channel" => name
                .parse::<schemas::wire::Channel>()
                .map(|channel| Self::Channel(channel.as_str().to_owned()))
                .map_err(|_| ScopeError),
            _ => Err(ScopeError),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Team(team) => write!(f, "team:{team}"),
            Self::Channel(channel) => write!(f, "channel:{channel}"),
        }
    }
}

impl Scope {
    /// How specific the scope is: a higher rank wins.
    fn rank(&self) -> u8 {
        match self {
            Self::All => 0,
            Self::Channel(_) => 1,
            Self::Team(_) => 2,
        }
    }

    fn covers(&self, team: Option<&str>, channel: &str) -> bool {
        match self {
            Self::All => true,
            Self::Team(name) => team == Some(name.as_str()),
            Self::Channel(name) => name == channel,
        }
    }
}

/// A retention policy, as the purge applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub name: String,
    pub scope: Scope,
    /// Days a closed session's content is kept (at least 1).
    pub keep_days: u32,
}

/// The policy that governs a session of `team` on `channel`: the most specific scope that
/// covers it. Two policies of one scope cannot be stored (a unique index); were they, the one
/// that keeps longer wins, since keeping is the side an error should fall on.
pub fn resolve<'a>(
    policies: &'a [RetentionPolicy],
    team: Option<&str>,
    channel: &str,
) -> Option<&'a RetentionPolicy> {
    policies
        .iter()
        .filter(|policy| policy.scope.covers(team, channel))
        .max_by_key(|policy| (policy.scope.rank(), policy.keep_days))
}

/// A closed session as the purge considers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub session_id: String,
    pub team: Option<String>,
    pub channel: String,
    /// None while the session is open.
    pub closed_at: Option<DateTime<Utc>>,
    pub held: bool,
    pub purged: bool,
}

/// What the purge does with one session at `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Its content goes, under this policy.
    Purge(&'a RetentionPolicy),
    /// It would go, but a legal hold keeps it.
    Held(&'a RetentionPolicy),
    /// Not due: open, already purged, not old enough, or no policy covers it.
    Keep,
}

/// Whether `candidate`'s content is due to go at `now` under `policies`.
pub fn verdict<'a>(
    policies: &'a [RetentionPolicy],
    candidate: &Candidate,
    now: DateTime<Utc>,
) -> Verdict<'a> {
    let Some(closed_at) = candidate.closed_at else {
        return Verdict::Keep;
    };
    if candidate.purged {
        return Verdict::Keep;
    }
    let Some(policy) = resolve(policies, candidate.team.as_deref(), &candidate.channel) else {
        return Verdict::Keep;
    };
    if closed_at + keep_for(policy) > now {
        Verdict::Keep
    } else if candidate.held {
        Verdict::Held(policy)
    } else {
        Verdict::Purge(policy)
    }
}

/// How long a policy keeps content after closing.
pub(crate) fn keep_for(policy: &RetentionPolicy) -> Duration {
    Duration::days(i64::from(policy.keep_days))
}

/// Sessions closed after this time are not due under any of `policies` at `now`: the purge
/// scans only those closed before it. None when there is no policy (nothing is ever due).
pub(crate) fn earliest_cutoff(
    policies: &[RetentionPolicy],
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    policies.iter().map(|policy| now - keep_for(policy)).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, scope: &str, keep_days: u32) -> RetentionPolicy {
        RetentionPolicy {
            name: name.to_owned(),
            scope: scope.parse().unwrap(),
            keep_days,
        }
    }

    #[test]
    fn scopes_parse_and_print_back() {
        for (text, parsed) in [
            ("all", Some(Scope::All)),
            ("team:licensing", Some(Scope::Team("licensing".to_owned()))),
            ("channel:phone", Some(Scope::Channel("phone".to_owned()))),
            ("team:a:b", Some(Scope::Team("a:b".to_owned()))),
            ("team:", None),
            ("channel", None),
            ("ALL", None),
            ("kiosk:hall-b", None),
            ("team:bad\nname", None),
            ("team:bad\u{202E}name", None),
            ("team:zero\u{200B}width", None),
            ("team:   ", None),
            ("channel:kiosk", Some(Scope::Channel("kiosk".to_owned()))),
            ("channel:web", Some(Scope::Channel("web".to_owned()))),
            ("channel:phnoe", None),
            ("channel:Phone", None),
            ("channel:", None),
            ("", None),
        ] {
            assert_eq!(text.parse::<Scope>().ok(), parsed, "{text:?}");
            if let Some(scope) = parsed {
                assert_eq!(scope.to_string(), text);
            }
        }
        let long = format!("team:{}", "x".repeat(SCOPE_NAME_MAX + 1));
        assert!(long.parse::<Scope>().is_err());
    }

    #[test]
    fn the_most_specific_scope_wins() {
        let policies = [
            policy("default", "all", 30),
            policy("phones", "channel:phone", 7),
            policy("appeals", "team:appeals", 365),
        ];
        // (team, channel, the policy that applies)
        let rows: &[(Option<&str>, &str, Option<&str>)] = &[
            (None, "kiosk", Some("default")),
            (None, "phone", Some("phones")),
            (Some("appeals"), "phone", Some("appeals")),
            (Some("appeals"), "kiosk", Some("appeals")),
            (Some("licensing"), "phone", Some("phones")),
            (Some("licensing"), "kiosk", Some("default")),
        ];
        for (team, channel, expected) in rows {
            assert_eq!(
                resolve(&policies, *team, channel).map(|p| p.name.as_str()),
                *expected,
                "{team:?} {channel}"
            );
        }
        assert_eq!(resolve(&policies[1..], None, "kiosk"), None, "no default");
        assert_eq!(resolve(&[], Some("appeals"), "phone"), None);
        let twins = [policy("short", "all", 5), policy("long", "all", 50)];
        assert_eq!(
            resolve(&twins, None, "kiosk").map(|p| p.name.as_str()),
            Some("long"),
            "ties keep longer"
        );
    }

    #[test]
    fn a_session_goes_once_closed_for_its_policys_days_unless_held() {
        let policies = [
            policy("default", "all", 30),
            policy("appeals", "team:appeals", 365),
        ];
        let now: DateTime<Utc> = "2027-06-01T12:00:00Z".parse().unwrap();
        let days_ago = |days: i64| Some(now - Duration::days(days));
        let candidate = |team: Option<&str>, closed_at, held, purged| Candidate {
            session_id: "s".to_owned(),
            team: team.map(str::to_owned),
            channel: "kiosk".to_owned(),
            closed_at,
            held,
            purged,
        };
        // (the session, what happens to it)
        let rows = [
            (candidate(None, None, false, false), "keep: open"),
            (
                candidate(None, days_ago(29), false, false),
                "keep: too recent",
            ),
            (candidate(None, days_ago(30), false, false), "purge default"),
            (
                candidate(None, days_ago(400), false, false),
                "purge default",
            ),
            (candidate(None, days_ago(400), true, false), "held default"),
            (
                candidate(None, days_ago(400), false, true),
                "keep: already purged",
            ),
            (
                candidate(Some("appeals"), days_ago(100), false, false),
                "keep: team keeps longer",
            ),
            (
                candidate(Some("appeals"), days_ago(365), false, false),
                "purge appeals",
            ),
        ];
        for (candidate, expected) in rows {
            let got = match verdict(&policies, &candidate, now) {
                Verdict::Purge(policy) => format!("purge {}", policy.name),
                Verdict::Held(policy) => format!("held {}", policy.name),
                Verdict::Keep => "keep".to_owned(),
            };
            assert_eq!(
                got,
                expected.split(':').next().unwrap(),
                "{candidate:?} ({expected})"
            );
        }
        assert_eq!(
            verdict(&[], &candidate(None, days_ago(9999), false, false), now),
            Verdict::Keep,
            "no policy: kept forever"
        );
    }

    #[test]
    fn the_scan_stops_at_the_shortest_keep() {
        let now: DateTime<Utc> = "2027-06-01T00:00:00Z".parse().unwrap();
        let policies = [policy("a", "all", 30), policy("b", "channel:phone", 7)];
        assert_eq!(
            earliest_cutoff(&policies, now),
            Some(now - Duration::days(7))
        );
        assert_eq!(earliest_cutoff(&[], now), None);
    }
}
