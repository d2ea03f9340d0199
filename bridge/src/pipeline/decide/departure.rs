//! What a departure of staff does to a session: a member of staff who leaves on their own
//! (`leave`) or is taken out because they may no longer take part (`unseat`, the sweep's, for
//! staff disabled, demoted or moved) is no longer its assigned agent, and a session left
//! without staff goes back to its team's queue, so that the applicant is never left in an
//! active conversation with nobody to answer.

use schemas::db::entities::{participant, session};
use schemas::wire::RejectReason;

use super::staffing::Cause;
use super::{Context, Effects, Subject, Verdict, is_staff, membership, refuse, status};
use crate::audit::AuditEntry;
use crate::pipeline::view::SessionView;

/// A member of staff leaves (the applicant closes the session instead); the last one to leave
/// returns the session to its team's queue.
pub(crate) fn leave(
    view: &mut SessionView,
    ctx: &mut Context<'_>,
    fx: &mut Effects,
    s: &Subject<'_>,
) -> Verdict {
    if s.role == Some(participant::ParticipantRole::Applicant) {
        return refuse(
            RejectReason::NotAllowed,
            "the applicant closes the session instead of leaving it",
        );
    }
    let seq = membership::remove(view, ctx, fx, s.session_id, s.sender, s.cmid);
    after_departure(view, ctx, fx, s.session_id, s.sender, s.cmid);
    Verdict::Accepted { seq: Some(seq) }
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
        status::set_status(view, ctx, fx, session_id, "system", cmid, queued);
    }
    requeued
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use schemas::db::entities::participant::ParticipantRole;
    use schemas::db::entities::session::SessionStatus;
    use schemas::wire::{Action, LockOp};

    use super::*;
    use crate::pipeline::decide::testing::{Fixture, decide, views};

    #[test]
    fn leaving_lets_go_of_the_lock() {
        let staff = HashMap::new();
        let mut views = views(&[("ann", ParticipantRole::Agent)]);
        let acquire = Action::Lock {
            op: LockOp::Acquire,
        };
        decide(&mut views, &staff, "ann", "l", acquire, 0);
        let (left, fx) = decide(&mut views, &staff, "ann", "x", Action::Leave, 1);
        assert_eq!(left, Verdict::Accepted { seq: Some(2) });
        let actions: Vec<&str> = fx.audit.iter().map(|a| a.action.as_str()).collect();
        // The last of its staff gone, the session waits for the next agent again.
        assert_eq!(
            actions,
            ["lock.released", "session.left", "session.status_changed"]
        );
        let view = views.get("s-1").unwrap();
        assert!(view.lock.holder.is_none());
        assert!(!view.members.contains_key("ann"));
        assert_eq!(view.status, session::SessionStatus::Queued);
        assert_eq!(view.assigned_agent, None);
        let (kiosk, _) = decide(&mut views, &staff, "kiosk", "x", Action::Leave, 1);
        assert!(matches!(
            kiosk,
            Verdict::Refused(RejectReason::NotAllowed, _)
        ));
    }

    #[test]
    fn a_session_keeps_its_state_while_other_staff_remain() {
        let staff = HashMap::new();
        let mut views = views(&[
            ("ann", ParticipantRole::Agent),
            ("bob", ParticipantRole::Agent),
        ]);
        let status = views.get("s-1").unwrap().status;
        views.get_mut("s-1").unwrap().assigned_agent = Some("ann".into());
        let (_, fx) = decide(&mut views, &staff, "ann", "x", Action::Leave, 1);
        let actions: Vec<&str> = fx.audit.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(actions, ["session.left"]);
        let view = views.get("s-1").unwrap();
        assert_eq!(view.status, status);
        assert_eq!(view.assigned_agent, None, "ann is no longer its agent");
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
