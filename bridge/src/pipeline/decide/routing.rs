//! The queue: staff saying whether they take sessions, and waiting sessions offered to them.
//!
//! An offer is recorded as the agent joining (their `joined` entry under a server-made id, the
//! session turning active, the membership for the gateway), the session's assigned agent, a
//! `session.routed` audit entry saying why this agent, and an [`Assignment`] on the agent's
//! assignments topic; the same notice goes to whoever a transfer or an assignment names.

use schemas::db::entities::participant::ParticipantRole;
use schemas::topics::Topic;
use schemas::wire::{self, Assignment, Availability, RejectReason};

use super::{Context, Effects, Verdict, membership, refuse};
use crate::audit::AuditEntry;
use crate::pipeline::roster::Roster;
use crate::pipeline::view::SessionView;

/// Who makes automatic offers, in the record.
pub(crate) const ROUTER: &str = "router";

/// A member of staff says whether they take new sessions.
pub(crate) fn availability(
    roster: &mut Roster,
    ctx: &Context<'_>,
    fx: &mut Effects,
    subject: &str,
    cmid: &str,
    status: Availability,
) -> Verdict {
    let available = status == Availability::Available;
    let Some(before) = roster.seat(subject).map(|seat| seat.available) else {
        return refuse(
            RejectReason::NotAllowed,
            "only registered, active agents and supervisors take sessions",
        );
    };
    if before == available {
        return Verdict::Accepted { seq: None };
    }
    roster.set_available(subject, available);
    fx.availability.push((subject.to_owned(), available));
    fx.audit.push(AuditEntry {
        actor: subject.to_owned(),
        action: "staff.availability".to_owned(),
        session_id: None,
        detail: serde_json::json!({
            "before": if before { "available" } else { "away" },
            "after": status,
            "client_msg_id": cmid,
            "at": ctx.now,
        }),
    });
    Verdict::Accepted { seq: None }
}

/// Gives the waiting session to `agent`, chosen by [`Roster::next_offer`]. Returns the `seq`
/// of the agent's `joined` entry.
pub(crate) fn offer(
    view: &mut SessionView,
    roster: &Roster,
    ctx: &Context<'_>,
    fx: &mut Effects,
    session_id: &str,
    agent: &str,
) -> u64 {
    // A server-made id: `#` never appears in a client's, so it cannot collide with one.
    let cmid = format!("#route-{}", view.last_seq + 1);
    let role = roster
        .seat(agent)
        .map_or(ParticipantRole::Agent, |seat| seat.role);
    let seq = membership::add(view, ctx, fx, session_id, agent, &cmid, role);
    view.assigned_agent = Some(agent.to_owned());
    fx.changed.insert(session_id.to_owned());
    let seat = roster.seat(agent);
    fx.audit.push(AuditEntry {
        actor: ROUTER.to_owned(),
        action: "session.routed".to_owned(),
        session_id: Some(session_id.to_owned()),
        detail: serde_json::json!({
            "agent": agent,
            "seq": seq,
            "team": view.team,
            // Why this agent: their load and capacity when the offer was made.
            "load": seat.map(|s| s.sessions.len()),
            "capacity": seat.map(|s| s.capacity),
        }),
    });
    notify(view, ctx, fx, session_id, agent, ROUTER, seq);
    seq
}

/// Tells `agent`'s dashboard that the session is theirs now (after the membership that lets
/// them in: the outbox publishes memberships first).
pub(crate) fn notify(
    view: &SessionView,
    ctx: &Context<'_>,
    fx: &mut Effects,
    session_id: &str,
    agent: &str,
    by: &str,
    seq: u64,
) {
    let notice = Assignment {
        v: wire::VERSION,
        session_id: session_id.to_owned(),
        agent: agent.to_owned(),
        channel: view.channel.parse().unwrap_or(wire::Channel::Kiosk),
        team: view.team.clone(),
        by: by.to_owned(),
        seq,
        at: ctx.now,
    };
    fx.outbox
        .entry(Topic::Assignments { subject: agent }.to_string(), &notice);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use schemas::db::entities::session::SessionStatus;

    use super::*;
    use crate::pipeline::decide::testing::{Fixture, views};
    use crate::pipeline::roster::Seat;

    #[test]
    fn an_offer_joins_the_agent_activates_the_session_and_tells_the_agent() {
        let mut views = views(&[]);
        let view = views.get_mut("s-1").unwrap();
        view.status = SessionStatus::Queued;
        let mut roster = Roster::default();
        roster.insert_seat(
            "ann".into(),
            Seat::new(ParticipantRole::Agent, None, 2, true),
        );
        let staff = HashMap::from([("ann".to_owned(), Some(ParticipantRole::Agent))]);
        let mut fixture = Fixture::new(staff);
        let ctx = fixture.at(0);
        let mut fx = Effects::default();
        let seq = offer(view, &roster, &ctx, &mut fx, "s-1", "ann");
        assert_eq!(seq, 2);
        assert_eq!(view.status, SessionStatus::Active);
        assert_eq!(view.assigned_agent.as_deref(), Some("ann"));
        assert!(view.members.contains_key("ann"));
        let actions: Vec<&str> = fx.audit.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(
            actions,
            ["session.joined", "session.status_changed", "session.routed"]
        );
        let (topic, payload) = fx.outbox.entries.last().unwrap();
        assert_eq!(topic, "cc/v1/staff/ann/assignments");
        let notice: Assignment = serde_json::from_slice(payload).unwrap();
        assert_eq!((notice.seq, notice.by.as_str()), (2, ROUTER));
        assert_eq!(fx.outbox.memberships.len(), 1);
    }

    #[test]
    fn availability_is_for_staff_with_a_seat_and_recorded_when_it_changes() {
        let mut roster = Roster::default();
        roster.insert_seat(
            "ann".into(),
            Seat::new(ParticipantRole::Agent, None, 2, false),
        );
        let mut fixture = Fixture::new(HashMap::new());
        let ctx = fixture.at(0);
        let mut fx = Effects::default();
        let on = Availability::Available;
        assert!(matches!(
            availability(&mut roster, &ctx, &mut fx, "eve", "a", on),
            Verdict::Refused(RejectReason::NotAllowed, _)
        ));
        assert_eq!(
            availability(&mut roster, &ctx, &mut fx, "ann", "a", on),
            Verdict::Accepted { seq: None }
        );
        // Saying it again changes and records nothing.
        availability(&mut roster, &ctx, &mut fx, "ann", "b", on);
        assert_eq!(fx.availability, [("ann".to_owned(), true)]);
        assert_eq!(fx.audit.len(), 1);
        assert!(roster.seat("ann").unwrap().available);
    }
}
