//! The reply lock: acquire, renew, release, a supervisor's takeover, and expiry.

use std::time::Duration;

use schemas::db::entities::participant::ParticipantRole;
use schemas::topics::{SessionTopic, Topic};
use schemas::wire::{self, LockMode, LockOp, RejectReason};

use super::{Context, Effects, Subject, Verdict, is_staff, refuse};
use crate::audit::AuditEntry;
use crate::pipeline::lock::{LockChange, LockError, LockRequest, ReplyLock};
use crate::pipeline::outbox::Outbox;
use crate::pipeline::view::SessionView;

/// A lock operation from a participant.
pub(crate) fn request(
    view: &mut SessionView,
    ctx: &mut Context<'_>,
    fx: &mut Effects,
    s: &Subject<'_>,
    op: LockOp,
) -> Verdict {
    if !is_staff(s.role) {
        return refuse(RejectReason::NotAllowed, "only staff use the reply lock");
    }
    let request = match op {
        LockOp::Acquire => LockRequest::Acquire(s.sender),
        LockOp::Release => LockRequest::Release(s.sender),
        LockOp::Renew => LockRequest::Renew(s.sender),
        LockOp::Takeover if s.role == Some(ParticipantRole::Supervisor) => {
            LockRequest::Takeover(s.sender)
        }
        LockOp::Takeover => {
            return refuse(
                RejectReason::NotAllowed,
                "only a supervisor takes the lock over",
            );
        }
    };
    let lease = Duration::from_secs(ctx.config.lock_lease_secs);
    let mut lock = view.lock.clone();
    match lock.apply(request, ctx.now, lease) {
        Ok(change) => {
            store(view, ctx, fx, s.session_id, s.sender, lock, &change);
            Verdict::Accepted { seq: None }
        }
        Err(LockError::Held { holder }) => refuse(
            RejectReason::LockHeld,
            format!("{holder} holds the reply lock"),
        ),
        Err(LockError::NotHeld) => {
            refuse(RejectReason::LockNotHeld, "you do not hold the reply lock")
        }
    }
}

/// Frees the lock if its lease has lapsed at `now`; true if it did.
pub(crate) fn expire(
    view: &mut SessionView,
    ctx: &Context<'_>,
    fx: &mut Effects,
    session_id: &str,
) -> bool {
    let mut lock = view.lock.clone();
    match lock.apply(LockRequest::Expire, ctx.now, Duration::ZERO) {
        Ok(change @ LockChange::Expired { .. }) => {
            store(view, ctx, fx, session_id, "system", lock, &change);
            true
        }
        _ => false,
    }
}

/// Lets go of the lock if `subject` holds it (leaving, closing).
pub(crate) fn release_by(
    view: &mut SessionView,
    ctx: &Context<'_>,
    fx: &mut Effects,
    session_id: &str,
    actor: &str,
    holder: &str,
) {
    let mut lock = view.lock.clone();
    if let Ok(change @ LockChange::Released { .. }) =
        lock.apply(LockRequest::Release(holder), ctx.now, Duration::ZERO)
    {
        store(view, ctx, fx, session_id, actor, lock, &change);
    }
}

/// Gives the lock to `to` under a new epoch, whoever held it (a transfer).
pub(crate) fn hand_to(
    view: &mut SessionView,
    ctx: &Context<'_>,
    fx: &mut Effects,
    session_id: &str,
    actor: &str,
    to: &str,
) {
    let lease = Duration::from_secs(ctx.config.lock_lease_secs);
    let mut lock = view.lock.clone();
    if let Ok(change) = lock.apply(LockRequest::Takeover(to), ctx.now, lease) {
        store(view, ctx, fx, session_id, actor, lock, &change);
    }
}

/// Records a lock change: the view and the session row, its audit entry, and the retained lock
/// state for dashboards.
fn store(
    view: &mut SessionView,
    ctx: &Context<'_>,
    fx: &mut Effects,
    session_id: &str,
    actor: &str,
    lock: ReplyLock,
    change: &LockChange,
) {
    let action = match change {
        LockChange::Acquired { .. } => "lock.acquired",
        LockChange::Renewed { .. } => "lock.renewed",
        LockChange::Released { .. } => "lock.released",
        LockChange::TakenOver { .. } => "lock.taken_over",
        LockChange::Expired { .. } => "lock.expired",
        LockChange::Unchanged => return,
    };
    fx.changed.insert(session_id.to_owned());
    fx.audit.push(AuditEntry {
        actor: actor.to_owned(),
        action: action.to_owned(),
        session_id: Some(session_id.to_owned()),
        detail: serde_json::json!({ "holder": lock.holder, "epoch": lock.epoch }),
    });
    announce(&mut fx.outbox, session_id, &lock, ctx.config.lock_mode);
    view.lock = lock;
}

/// Publishes `lock` as the session's lock state, retained for dashboards that subscribe later
/// (also at start, from the sessions table: the gateway keeps retained state in memory only).
pub(crate) fn announce(outbox: &mut Outbox, session_id: &str, lock: &ReplyLock, mode: LockMode) {
    let state = wire::LockState {
        v: wire::VERSION,
        session_id: session_id.to_owned(),
        holder: lock.holder.clone(),
        epoch: lock.epoch,
        expires_at: lock.expires_at,
        mode,
    };
    let topic = Topic::Session {
        session: session_id,
        kind: SessionTopic::Lock,
        subject: None,
    };
    outbox.lock(topic.to_string(), &state);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use schemas::wire::Action;

    use super::*;
    use crate::pipeline::decide::testing::{Fixture, decide, views};

    fn lock(op: LockOp) -> Action {
        Action::Lock { op }
    }

    /// A lease runs on the batch's clock: no sleeping, the test names the time.
    #[test]
    fn a_lease_lapses_on_the_clock_and_is_expired_by_the_sweep() {
        let staff = HashMap::new();
        let mut views = views(&[
            ("ann", ParticipantRole::Agent),
            ("bob", ParticipantRole::Agent),
        ]);
        let (held, fx) = decide(&mut views, &staff, "ann", "l", lock(LockOp::Acquire), 0);
        assert_eq!(held, Verdict::Accepted { seq: None });
        assert_eq!(fx.audit[0].action, "lock.acquired");
        assert_eq!(fx.outbox.locks.len(), 1);
        let (busy, _) = decide(&mut views, &staff, "bob", "l", lock(LockOp::Acquire), 59);
        assert!(matches!(busy, Verdict::Refused(RejectReason::LockHeld, m) if m.contains("ann")));

        let mut fixture = Fixture::new(staff.clone());
        let mut sweep = |views: &mut crate::pipeline::view::Views, seconds| {
            let ctx = fixture.at(seconds);
            let mut fx = Effects::default();
            let expired = expire(views.get_mut("s-1").unwrap(), &ctx, &mut fx, "s-1");
            (expired, fx)
        };
        let (early, _) = sweep(&mut views, 59);
        assert!(!early, "the lease still runs at 59 s");
        let (late, fx) = sweep(&mut views, 60);
        assert!(late, "and lapses at 60 s");
        assert_eq!(fx.audit[0].action, "lock.expired");
        assert_eq!(fx.audit[0].actor, "system");
        assert!(views.get("s-1").unwrap().lock.holder.is_none());

        let (bob, _) = decide(&mut views, &staff, "bob", "l2", lock(LockOp::Acquire), 61);
        assert_eq!(bob, Verdict::Accepted { seq: None });
        assert_eq!(views.get("s-1").unwrap().lock.epoch, 2, "a new epoch");
    }

    #[test]
    fn only_a_supervisor_takes_over_and_only_staff_use_the_lock() {
        let staff = HashMap::new();
        let rows: &[(&str, LockOp, Option<RejectReason>)] = &[
            ("kiosk", LockOp::Acquire, Some(RejectReason::NotAllowed)),
            ("bob", LockOp::Takeover, Some(RejectReason::NotAllowed)),
            ("bob", LockOp::Release, Some(RejectReason::LockNotHeld)),
            ("sue", LockOp::Takeover, None),
        ];
        for (sender, op, expected) in rows {
            let mut views = views(&[
                ("ann", ParticipantRole::Agent),
                ("bob", ParticipantRole::Agent),
                ("sue", ParticipantRole::Supervisor),
            ]);
            decide(&mut views, &staff, "ann", "l", lock(LockOp::Acquire), 0);
            let (verdict, _) = decide(&mut views, &staff, sender, "x", lock(*op), 1);
            let got = match verdict {
                Verdict::Refused(reason, _) => Some(reason),
                _ => None,
            };
            assert_eq!(got, *expected, "{sender} {op:?}");
        }
    }
}
