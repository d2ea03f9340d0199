//! Joining a session, and what any arrival or departure records (`add`, `remove`); a
//! departure's consequences for the session are `departure`'s.

use chrono::{DateTime, Utc};
use schemas::db::entities::{participant, session};
use schemas::wire::{MembershipOp, RejectReason, SessionEvent, StreamContent};

use super::{
    Context, Effects, ParticipantChange, Subject, Verdict, lock, refuse, staffing, status,
};
use crate::pipeline::view::SessionView;

/// A member of staff asks to join. Only registered, active staff may, and an agent only a
/// session of their own team or of none (`staffing::may_take_part`); a member joining again
/// changes nothing.
pub(crate) fn join(
    view: &mut SessionView,
    ctx: &mut Context<'_>,
    fx: &mut Effects,
    s: &Subject<'_>,
) -> Verdict {
    if s.role.is_some() {
        return Verdict::Accepted { seq: None };
    }
    let Some(role) = ctx.staff_role(s.sender) else {
        return refuse(
            RejectReason::NotAllowed,
            "only registered, active staff may join a session",
        );
    };
    if !staffing::may_take_part(role, ctx.staff_team(s.sender), view.team.as_deref()) {
        let team = view.team.as_deref().unwrap_or_default();
        return refuse(
            RejectReason::NotAllowed,
            format!("this session is for team {team}: only its agents and supervisors may join"),
        );
    }
    let seq = add(view, ctx, fx, s.session_id, s.sender, s.cmid, role);
    // An agent who takes a session nobody has is its agent, as if it had been offered to them.
    if view.assigned_agent.is_none() && role == participant::ParticipantRole::Agent {
        view.assigned_agent = Some(s.sender.to_owned());
        fx.changed.insert(s.session_id.to_owned());
    }
    Verdict::Accepted { seq: Some(seq) }
}

/// Makes `subject` a participant: their row, the `joined` entry (returned), an active status
/// for a session that was waiting, and the membership for the gateway.
pub(crate) fn add(
    view: &mut SessionView,
    ctx: &Context<'_>,
    fx: &mut Effects,
    session_id: &str,
    subject: &str,
    cmid: &str,
    role: participant::ParticipantRole,
) -> u64 {
    let now: DateTime<Utc> = ctx.now;
    fx.participants.push(ParticipantChange::Joined {
        session_id: session_id.to_owned(),
        subject: subject.to_owned(),
        role,
        at: now,
    });
    view.members.insert(subject.to_owned(), role);
    let joined = StreamContent::Event {
        event: SessionEvent::Joined {
            subject: subject.to_owned(),
        },
    };
    let seq = fx.append(view, now, session_id, subject, cmid, joined, None);
    if view.status == session::SessionStatus::Queued {
        let status = session::SessionStatus::Active;
        status::set_status(view, ctx, fx, session_id, "system", cmid, status);
    }
    fx.membership(session_id, subject, role, MembershipOp::Join);
    seq
}

/// Ends `subject`'s participation: their row, the lock if they held it, the `left` entry
/// (returned) and the membership for the gateway, which revokes their subscriptions.
pub(crate) fn remove(
    view: &mut SessionView,
    ctx: &Context<'_>,
    fx: &mut Effects,
    session_id: &str,
    subject: &str,
    cmid: &str,
) -> u64 {
    fx.participants.push(ParticipantChange::Left {
        session_id: session_id.to_owned(),
        subject: subject.to_owned(),
        at: ctx.now,
    });
    let role = view
        .members
        .remove(subject)
        .unwrap_or(participant::ParticipantRole::Agent);
    // Whoever leaves lets go of the reply lock.
    lock::release_by(view, ctx, fx, session_id, subject, subject);
    let left = StreamContent::Event {
        event: SessionEvent::Left {
            subject: subject.to_owned(),
        },
    };
    let seq = fx.append(view, ctx.now, session_id, subject, cmid, left, None);
    fx.membership(session_id, subject, role, MembershipOp::Leave);
    seq
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use schemas::db::entities::participant::ParticipantRole;
    use schemas::wire::Action;

    use super::*;
    use crate::pipeline::decide::testing::{decide, views};

    #[test]
    fn registered_staff_join_and_the_session_becomes_active() {
        let mut views = views(&[]);
        let staff = HashMap::from([
            ("ann".to_owned(), Some(ParticipantRole::Agent)),
            ("eve".to_owned(), None),
        ]);
        let (eve, _) = decide(&mut views, &staff, "eve", "j", Action::Join, 0);
        assert!(matches!(eve, Verdict::Refused(RejectReason::NotAllowed, _)));
        let (ann, fx) = decide(&mut views, &staff, "ann", "j", Action::Join, 0);
        assert_eq!(ann, Verdict::Accepted { seq: Some(2) });
        // joined, then the status change it caused.
        assert_eq!(fx.entries.len(), 2);
        assert_eq!(fx.outbox.memberships.len(), 1);
        assert_eq!(fx.outbox.entries.len(), 2, "joined, status_changed");
        let view = views.get("s-1").unwrap();
        assert_eq!(view.status, session::SessionStatus::Active);
        assert_eq!(view.members.get("ann"), Some(&ParticipantRole::Agent));
        let (again, fx) = decide(&mut views, &staff, "ann", "j2", Action::Join, 0);
        assert_eq!(again, Verdict::Accepted { seq: None });
        assert!(fx.entries.is_empty());
    }

    #[test]
    fn an_agent_joins_only_a_session_of_their_team_or_of_none() {
        use crate::pipeline::decide::testing::Fixture;
        // (joiner, their role, their team, the session's team, allowed?)
        let rows = [
            (
                "ann",
                ParticipantRole::Agent,
                Some("fines"),
                Some("fines"),
                true,
            ),
            (
                "bob",
                ParticipantRole::Agent,
                Some("renewals"),
                Some("fines"),
                false,
            ),
            ("cat", ParticipantRole::Agent, None, Some("fines"), false),
            ("dan", ParticipantRole::Agent, Some("renewals"), None, true),
            (
                "sue",
                ParticipantRole::Supervisor,
                Some("renewals"),
                Some("fines"),
                true,
            ),
        ];
        for (joiner, role, team, session_team, allowed) in rows {
            let mut views = views(&[]);
            views.get_mut("s-1").unwrap().team = session_team.map(str::to_owned);
            let mut fixture = Fixture::new(HashMap::from([(joiner.to_owned(), Some(role))]));
            if let Some(team) = team {
                fixture.teams.insert(joiner.to_owned(), team.to_owned());
            }
            let mut ctx = fixture.at(0);
            let mut fx = Effects::default();
            let s = Subject {
                session_id: "s-1",
                sender: joiner,
                cmid: "j",
                role: None,
                overseer: false,
            };
            let verdict = join(views.get_mut("s-1").unwrap(), &mut ctx, &mut fx, &s);
            match verdict {
                Verdict::Accepted { seq: Some(_) } => assert!(allowed, "{joiner} joined"),
                Verdict::Refused(RejectReason::NotAllowed, message) => {
                    assert!(!allowed, "{joiner}: {message}");
                    assert!(message.contains("team fines"), "{message}");
                    assert!(fx.entries.is_empty());
                }
                other => panic!("{joiner}: {other:?}"),
            }
        }
    }
}
