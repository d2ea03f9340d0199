//! A session's status changed: the row, a `status_changed` entry on its stream and, for
//! sessions that wait (queued, escalated), a queue update for staff. Every decision that moves
//! a session's status records it here (its life, a member's arrival or departure).

use schemas::db::entities::session;
use schemas::topics::Topic;
use schemas::wire::{self, SessionEvent, StreamContent};

use super::{Context, Effects};
use crate::pipeline::view::SessionView;

/// Records a status change: the row, a `status_changed` entry and, for sessions that wait
/// (queued, escalated), a queue update for staff.
pub(crate) fn set_status(
    view: &mut SessionView,
    ctx: &Context<'_>,
    fx: &mut Effects,
    session_id: &str,
    actor: &str,
    cmid: &str,
    status: session::SessionStatus,
) {
    view.status = status;
    fx.changed.insert(session_id.to_owned());
    let wire_status = wire::SessionStatus::from(status);
    let changed = StreamContent::Event {
        event: SessionEvent::StatusChanged {
            status: wire_status,
        },
    };
    let status_id = format!("{cmid}#status");
    fx.append(view, ctx.now, session_id, actor, &status_id, changed, None);
    if matches!(
        status,
        session::SessionStatus::Queued | session::SessionStatus::Escalated
    ) {
        let update = wire::QueueUpdate {
            v: wire::VERSION,
            session_id: session_id.to_owned(),
            status: wire_status,
            channel: view.channel.parse().unwrap_or(wire::Channel::Kiosk),
            team: view.team.clone(),
            waiting_since: ctx.now,
        };
        fx.outbox.entry(Topic::Queue.to_string(), &update);
    }
}
