//! Abandoned sessions: an open session (waiting or active) whose applicant has been gone for
//! `bridge.abandon_after_secs` is closed by the server, so that it stops holding an agent's
//! capacity and a kiosk's next visitor does not inherit it. Gone means offline, or not heard of
//! since the pipeline started watching (see `attendance`).
//!
//! The close is the ordinary one (`lifecycle::close`: the lock released, the `closed` event, the
//! participants keeping access for the survey and resync) by `system`, with the reason
//! `abandoned` as its note, after a `session.abandoned` audit entry saying since when the
//! applicant was gone; the queue then offers the agent the next session.

use std::time::Duration;

use chrono::{DateTime, Utc};
use schemas::db::entities::session;

use super::{Context, Effects, Subject, Verdict, lifecycle};
use crate::audit::AuditEntry;
use crate::pipeline::attendance::{Attendance, Seen};
use crate::pipeline::view::SessionView;

/// The reason the server closes an abandoned session with.
pub(crate) const ABANDONED: &str = "abandoned";

/// Whether an applicant last `seen` so has been gone for `after` at `now` (never, when `after`
/// is zero: the rule is off).
pub(crate) fn is_abandoned(seen: Seen, now: DateTime<Utc>, after: Duration) -> bool {
    match seen {
        _ if after.is_zero() => false,
        Seen::Present => false,
        Seen::GoneSince(since) => (now - since).to_std().is_ok_and(|gone| gone >= after),
    }
}

/// The open sessions whose applicant has been gone long enough at `now`, with since when, in
/// a stable order.
pub(crate) fn due(
    attendance: &Attendance,
    now: DateTime<Utc>,
    after: Duration,
) -> Vec<(String, DateTime<Utc>)> {
    let mut due: Vec<(String, DateTime<Utc>)> = attendance
        .sessions()
        .filter(|(_, _, seen)| is_abandoned(*seen, now, after))
        .filter_map(|(id, _, seen)| match seen {
            Seen::GoneSince(since) => Some((id.to_owned(), since)),
            Seen::Present => None,
        })
        .collect();
    due.sort();
    due
}

/// Closes `session_id`, whose applicant has been gone since `gone_since`, as the server.
/// Returns false (and records nothing) if it is closed already.
pub(crate) fn close(
    view: &mut SessionView,
    ctx: &mut Context<'_>,
    fx: &mut Effects,
    session_id: &str,
    gone_since: DateTime<Utc>,
) -> bool {
    if view.status == session::SessionStatus::Closed {
        return false;
    }
    let applicant = view
        .members
        .iter()
        .find(|(_, role)| **role == schemas::db::entities::participant::ParticipantRole::Applicant)
        .map(|(subject, _)| subject.clone());
    fx.audit.push(AuditEntry {
        actor: "system".to_owned(),
        action: "session.abandoned".to_owned(),
        session_id: Some(session_id.to_owned()),
        detail: serde_json::json!({
            "applicant": applicant,
            "gone_since": gone_since,
            "after_secs": ctx.config.abandon_after_secs,
        }),
    });
    // A server-made id: `#` never appears in a client's.
    let cmid = format!("#abandoned-{}", view.last_seq + 1);
    let s = Subject {
        session_id,
        sender: "system",
        cmid: &cmid,
        role: None,
        overseer: true,
    };
    let closed = lifecycle::close(view, ctx, fx, &s, Some(ABANDONED.to_owned()));
    matches!(closed, Verdict::Accepted { .. })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use schemas::db::entities::participant::ParticipantRole;
    use schemas::wire::{Action, LockOp, StreamContent};

    use super::*;
    use crate::pipeline::decide::testing::{Fixture, at, decide, views};

    #[test]
    fn an_applicant_gone_long_enough_has_abandoned_the_session() {
        let after = Duration::from_secs(600);
        // (last seen, now, after, abandoned?)
        let rows = [
            (Seen::Present, 10_000, after, false),
            (Seen::GoneSince(at(0)), 599, after, false),
            (Seen::GoneSince(at(0)), 600, after, true),
            (Seen::GoneSince(at(0)), 10_000, Duration::ZERO, false),
            // A clock that moved back says nothing.
            (Seen::GoneSince(at(50)), 0, after, false),
        ];
        for (seen, now, after, expected) in rows {
            assert_eq!(
                is_abandoned(seen, at(now), after),
                expected,
                "{seen:?} at {now}"
            );
        }
    }

    #[test]
    fn the_server_closes_an_abandoned_session_freeing_the_lock() {
        let staff = HashMap::new();
        let mut views = views(&[("ann", ParticipantRole::Agent)]);
        let acquire = Action::Lock {
            op: LockOp::Acquire,
        };
        decide(&mut views, &staff, "ann", "l", acquire, 0);
        let mut fixture = Fixture::new(staff);
        let mut ctx = fixture.at(700);
        let mut fx = Effects::default();
        let view = views.get_mut("s-1").unwrap();
        assert!(close(view, &mut ctx, &mut fx, "s-1", at(0)));
        assert_eq!(view.status, session::SessionStatus::Closed);
        assert!(view.lock.holder.is_none());
        let actions: Vec<&str> = fx.audit.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "session.abandoned",
                "lock.released",
                "note.accepted",
                "session.status_changed",
                "session.closed"
            ]
        );
        assert_eq!(fx.audit[0].detail["applicant"], "kiosk");
        assert_eq!(fx.closed, ["s-1"]);
        // The reason is a note from the server; the event says only that it closed.
        let notes: Vec<&String> = fx
            .outbox
            .entries
            .iter()
            .filter(|(topic, _)| topic.ends_with("/notes"))
            .map(|(topic, _)| topic)
            .collect();
        assert_eq!(notes.len(), 1);
        let closed: schemas::wire::StreamEntry =
            serde_json::from_slice(&fx.outbox.entries.last().unwrap().1).unwrap();
        assert!(matches!(
            closed.content,
            StreamContent::Event {
                event: schemas::wire::SessionEvent::Closed { reason: None, .. }
            }
        ));
        // Closed already: nothing more.
        let mut fx = Effects::default();
        assert!(!close(view, &mut ctx, &mut fx, "s-1", at(0)));
        assert!(fx.audit.is_empty());
    }
}
