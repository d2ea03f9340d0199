//! Who may take part in a session as staff, and what happens to the sessions of staff who no
//! longer may (disabled, demoted, moved to another team, or removed).
//!
//! The rule: a supervisor may take part in any session; an agent in a session of their own team,
//! or one that names no team. It limits joining (`membership::join`), and it is applied again to
//! the sessions of a member of staff whose stored role or team changed (or who is no longer
//! active staff): the pipeline's sweep re-reads staff every second (the admin API writes the
//! table), and whoever may no longer hold a session leaves it; a session left without staff goes
//! back to its team's queue, to be offered again. A transfer names its target deliberately and
//! is not held to the team rule.

use schemas::db::entities::{participant::ParticipantRole, session};

use super::{Context, Effects, is_staff, lifecycle, membership};
use crate::audit::AuditEntry;
use crate::pipeline::view::SessionView;

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

/// Takes `subject` out of the session for `cause`: their `left` entry (under a server-made
/// id), the lock if they held it, the membership for the gateway; the session, if no staff
/// remain in it, back in its team's queue; and a `session.staff_removed` audit entry naming the
/// cause. Returns whether the session was queued again.
pub(crate) fn unseat(
    view: &mut SessionView,
    ctx: &Context<'_>,
    fx: &mut Effects,
    session_id: &str,
    subject: &str,
    cause: Cause,
) -> bool {
    // A server-made id: `#` never appears in a client's.
    let cmid = format!("#unseat-{}", view.last_seq + 1);
    let seq = membership::remove(view, ctx, fx, session_id, subject, &cmid);
    let requeued = after_departure(view, ctx, fx, session_id, subject, &cmid);
    fx.audit.push(AuditEntry {
        actor: "system".to_owned(),
        action: "session.staff_removed".to_owned(),
        session_id: Some(session_id.to_owned()),
        detail: serde_json::json!({
            "subject": subject,
            "cause": cause.as_str(),
            "seq": seq,
            "requeued": requeued,
            "team": view.team,
        }),
    });
    requeued
}

/// After `subject` left the session (on their own or taken out): they are no longer its
/// assigned agent, and a session left without staff goes back to its team's queue, so that
/// the applicant is never left in an active conversation with nobody to answer. Returns
/// whether it was queued again.
pub(crate) fn after_departure(
    view: &mut SessionView,
    ctx: &Context<'_>,
    fx: &mut Effects,
    session_id: &str,
    subject: &str,
    cmid: &str,
) -> bool {
    if view.assigned_agent.as_deref() == Some(subject) {
        view.assigned_agent = None;
        fx.changed.insert(session_id.to_owned());
    }
    let staff_remain = view.members.values().any(|role| is_staff(Some(*role)));
    let requeued = !staff_remain
        && matches!(
            view.status,
            session::SessionStatus::Active | session::SessionStatus::Escalated
        );
    if requeued {
        view.assigned_agent = None;
        let queued = session::SessionStatus::Queued;
        lifecycle::set_status(view, ctx, fx, session_id, "system", cmid, queued);
    }
    requeued
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use schemas::db::entities::session::SessionStatus;
    use schemas::wire::{Action, LockOp};

    use super::*;
    use crate::pipeline::decide::testing::{Fixture, decide, views};

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

    #[test]
    fn an_unseated_agent_leaves_lets_go_of_the_lock_and_the_session_waits_again() {
        let staff = HashMap::new();
        let mut views = views(&[("ann", ParticipantRole::Agent)]);
        views.get_mut("s-1").unwrap().assigned_agent = Some("ann".into());
        let acquire = Action::Lock {
            op: LockOp::Acquire,
        };
        decide(&mut views, &staff, "ann", "l", acquire, 0);
        let mut fixture = Fixture::new(staff);
        let ctx = fixture.at(1);
        let mut fx = Effects::default();
        let view = views.get_mut("s-1").unwrap();
        assert!(unseat(view, &ctx, &mut fx, "s-1", "ann", Cause::Disabled));
        assert_eq!(view.status, SessionStatus::Queued);
        assert!(view.assigned_agent.is_none() && view.lock.holder.is_none());
        assert!(!view.members.contains_key("ann"));
        let actions: Vec<&str> = fx.audit.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "lock.released",
                "session.left",
                "session.status_changed",
                "session.staff_removed"
            ]
        );
        assert_eq!(fx.audit[3].detail["cause"], "disabled");
        assert_eq!(fx.audit[3].detail["requeued"], true);
        assert!(
            fx.outbox.entries.iter().any(|(t, _)| t == "cc/v1/queue"),
            "staff see it waiting"
        );
    }

    #[test]
    fn a_session_with_other_staff_in_it_does_not_wait_again() {
        let mut views = views(&[
            ("ann", ParticipantRole::Agent),
            ("sue", ParticipantRole::Supervisor),
        ]);
        let mut fixture = Fixture::new(HashMap::new());
        let ctx = fixture.at(1);
        let mut fx = Effects::default();
        let view = views.get_mut("s-1").unwrap();
        assert!(!unseat(
            view,
            &ctx,
            &mut fx,
            "s-1",
            "ann",
            Cause::TeamChanged
        ));
        assert_eq!(view.status, SessionStatus::Active);
        assert_eq!(fx.audit.last().unwrap().detail["cause"], "team_changed");
    }
}
