//! What keeps a running broker's state current besides its connections: acting on membership
//! and credential changes as they are made, and a periodic sweep.

use std::sync::Arc;
use std::time::Duration;

use crate::connection::Shared;

/// How often closed sessions are checked for having run out of access, when they can
/// (`mqtt.closed_session_access_secs`); the limit is in whole seconds, so a session is
/// forgotten at most this late.
const SWEEP: Duration = Duration::from_secs(1);

/// Sweeps between two forgettings of idle senders' allowances: often enough that memory follows
/// the recent senders, rarely enough that it costs nothing.
const IDLE_SENDERS_EVERY: u64 = 60;

/// Ties `shared`'s memberships and staff revocations to its connections, and starts the sweep.
/// Everything here holds the broker weakly: memberships and revocations may outlive it (in
/// tests, for one), and the sweep ends with it.
pub(crate) fn start(shared: &Arc<Shared>) {
    // A subject that leaves a session loses its live subscriptions to it at once.
    let weak = Arc::downgrade(shared);
    shared
        .memberships
        .on_leave(Arc::new(move |session, subject| {
            if let Some(shared) = weak.upgrade() {
                shared.clients.revoke(subject, session);
                shared.forget_presence(session, subject);
            }
        }));
    // A subject whose credentials are revoked loses its live connection at once.
    let weak = Arc::downgrade(shared);
    shared.staff_revocations.on_revoke(Arc::new(move |subject| {
        if let Some(shared) = weak.upgrade() {
            shared.clients.end(subject);
        }
    }));
    // A forgotten session's retained messages (its lock state) go with it.
    let weak = Arc::downgrade(shared);
    shared.memberships.on_forget(Arc::new(move |session| {
        if let Some(shared) = weak.upgrade() {
            shared.forget_session(session);
        }
    }));
    // Housekeeping, until the broker is gone: closed sessions whose time is up are forgotten
    // even when no later close pushes them out, senders whose typing allowance is whole again
    // are forgotten, and the counts of folded denials whose window is over are recorded.
    let weak = Arc::downgrade(shared);
    let timed = shared.memberships.closed_window().access.is_some();
    tokio::spawn(async move {
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for tick in 0_u64.. {
            let now = sweep.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            if timed {
                shared.memberships.forget_expired(now);
            }
            if tick % IDLE_SENDERS_EVERY == 0 {
                shared.signals.forget_idle();
                shared.subscribe_allowance.forget_idle();
            }
            shared.hooks.flush_due(now.into_std());
        }
    });
}
