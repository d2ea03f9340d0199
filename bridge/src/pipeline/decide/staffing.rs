//! Who may take part in a session as staff, and what happens to the sessions of staff who no
//! longer may (disabled, demoted, moved to another team, or removed).
//!
//! The rule: a supervisor may take part in any session; an agent in a session of their own team,
//! or one that names no team. It limits joining (`membership::join`), and it is applied again to
//! the sessions of a member of staff whose stored role or team changed (or who is no longer
//! active staff): the pipeline's sweep re-reads staff every second (the admin API writes the
//! table), and whoever may no longer hold a session leaves it; a session left without staff goes
//! back to its team's queue, to be offered again (`departure::unseat`). A transfer names its target deliberately and
//! is not held to the team rule.

use schemas::db::entities::participant::ParticipantRole;

/// Whether staff of `role` in `team` may take part in a session of `session_team`.
pub(crate) fn may_take_part(
    role: ParticipantRole,
    team: Option<&str>,
    session_team: Option<&str>,
) -> bool {
    match role {
        ParticipantRole::Supervisor => true,
        ParticipantRole::Agent => session_team.is_none() || session_team == team,
        ParticipantRole::Applicant => false,
    }
}

/// Why a member of staff left their sessions without acting, for the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Their account was disabled.
    Disabled,
    /// Their role changed (to one that takes part in no session, or to agent).
    RoleChanged,
    /// Their team changed.
    TeamChanged,
    /// They are no longer in the staff table.
    Removed,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Disabled => "disabled",
            Cause::RoleChanged => "role_changed",
            Cause::TeamChanged => "team_changed",
            Cause::Removed => "removed",
        }
    }
}

/// Whether a member of staff who is now `now` (their role and team; `None`: no longer active
/// staff who take part in sessions) must leave a session of `session_team`.
pub(crate) fn must_leave(
    now: Option<(ParticipantRole, Option<&str>)>,
    session_team: Option<&str>,
) -> bool {
    match now {
        None => true,
        Some((role, team)) => !may_take_part(role, team, session_team),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_take_part_in_which_session() {
        use ParticipantRole::{Agent, Applicant, Supervisor};
        // (role, their team, the session's team, may take part?)
        let rows = [
            (Supervisor, None, Some("fines"), true),
            (Supervisor, Some("renewals"), Some("fines"), true),
            (Agent, Some("fines"), Some("fines"), true),
            (Agent, Some("renewals"), Some("fines"), false),
            (Agent, None, Some("fines"), false),
            (Agent, Some("renewals"), None, true),
            (Agent, None, None, true),
            (Applicant, None, None, false),
        ];
        for (role, team, session_team, allowed) in rows {
            assert_eq!(
                may_take_part(role, team, session_team),
                allowed,
                "{role:?} of {team:?} in {session_team:?}"
            );
            assert_eq!(must_leave(Some((role, team)), session_team), !allowed);
        }
        assert!(must_leave(None, None), "disabled staff leave every session");
    }
}
