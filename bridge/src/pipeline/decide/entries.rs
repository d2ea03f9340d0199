//! Messages and internal notes: the conversation's entries.

use schemas::wire::{LockMode, RejectReason, StreamContent};

use super::{Context, Effects, Subject, Verdict, is_staff, refuse};
use crate::pipeline::lock::LockError;
use crate::pipeline::view::SessionView;

/// A message every participant sees. In exclusive mode, staff write only under the reply lock,
/// and the entry's audit record carries the lock's epoch.
pub(crate) fn message(
    view: &mut SessionView,
    ctx: &mut Context<'_>,
    fx: &mut Effects,
    s: &Subject<'_>,
    body: String,
) -> Verdict {
    let mut epoch = None;
    if is_staff(s.role) && ctx.config.lock_mode == LockMode::Exclusive {
        match view.lock.may_reply(s.sender, ctx.now) {
            Ok(current) => epoch = Some(current),
            Err(LockError::Held { holder }) => {
                return refuse(
                    RejectReason::LockHeld,
                    format!("{holder} holds the reply lock"),
                );
            }
            Err(LockError::NotHeld) => {
                return refuse(
                    RejectReason::LockNotHeld,
                    "acquire the reply lock before replying",
                );
            }
        }
    }
    let content = StreamContent::Message { body };
    let seq = fx.append(
        view,
        ctx.now,
        s.session_id,
        s.sender,
        s.cmid,
        content,
        epoch,
    );
    Verdict::Accepted { seq: Some(seq) }
}

/// An internal note: staff only, never shown to the applicant.
pub(crate) fn note(
    view: &mut SessionView,
    ctx: &mut Context<'_>,
    fx: &mut Effects,
    s: &Subject<'_>,
    body: String,
) -> Verdict {
    if !is_staff(s.role) {
        return refuse(RejectReason::NotAllowed, "only staff write internal notes");
    }
    let content = StreamContent::Note { body };
    let seq = fx.append(view, ctx.now, s.session_id, s.sender, s.cmid, content, None);
    Verdict::Accepted { seq: Some(seq) }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use schemas::db::entities::participant::ParticipantRole;
    use schemas::wire::{Action, LockOp};

    use super::*;
    use crate::pipeline::decide::testing::{decide, views};

    fn message(body: &str) -> Action {
        Action::Message { body: body.into() }
    }

    #[test]
    fn entries_take_the_next_seq_and_name_their_predecessor_on_their_topic() {
        let mut views = views(&[("agent", ParticipantRole::Agent)]);
        let staff = HashMap::new();
        let (first, fx) = decide(&mut views, &staff, "kiosk", "m1", message("Hi"), 0);
        assert_eq!(first, Verdict::Accepted { seq: Some(2) });
        assert_eq!(fx.entries.len(), 1);
        assert_eq!(fx.outbox.entries.len(), 1);
        let note = Action::Note { body: "n".into() };
        let (noted, _) = decide(&mut views, &staff, "agent", "n1", note, 0);
        assert_eq!(noted, Verdict::Accepted { seq: Some(3) });
        let (second, fx) = decide(&mut views, &staff, "kiosk", "m2", message("Again"), 0);
        assert_eq!(second, Verdict::Accepted { seq: Some(4) });
        let entry: serde_json::Value = serde_json::from_slice(&fx.outbox.entries[0].1).unwrap();
        assert_eq!(entry["prev_seq"], 2, "the note is on another topic");
        let view = views.get("s-1").unwrap();
        assert_eq!((view.last_seq, view.last_note_seq), (4, 3));
    }

    #[test]
    fn who_may_write_what() {
        let staff = HashMap::new();
        let rows: &[(&str, Action, Option<RejectReason>)] = &[
            ("kiosk", message("Hi"), None),
            (
                "kiosk",
                Action::Note { body: "n".into() },
                Some(RejectReason::NotAllowed),
            ),
            ("stranger", message("Hi"), Some(RejectReason::NotAllowed)),
            ("agent", message("Hi"), Some(RejectReason::LockNotHeld)),
            ("agent", Action::Note { body: "n".into() }, None),
        ];
        for (sender, action, expected) in rows {
            let mut views = views(&[("agent", ParticipantRole::Agent)]);
            let (verdict, fx) = decide(&mut views, &staff, sender, "c", action.clone(), 0);
            let got = match verdict {
                Verdict::Refused(reason, _) => Some(reason),
                _ => None,
            };
            assert_eq!(got, *expected, "{sender}: {action:?}");
            assert_eq!(fx.entries.is_empty(), expected.is_some());
        }
    }

    #[test]
    fn a_reply_is_taken_only_from_the_live_lock_holder() {
        let staff = HashMap::new();
        let mut views = views(&[
            ("ann", ParticipantRole::Agent),
            ("bob", ParticipantRole::Agent),
        ]);
        let acquire = Action::Lock {
            op: LockOp::Acquire,
        };
        decide(&mut views, &staff, "ann", "l", acquire, 0);
        let (bob, _) = decide(&mut views, &staff, "bob", "b", message("Hi"), 1);
        assert!(matches!(bob, Verdict::Refused(RejectReason::LockHeld, _)));
        let (ann, fx) = decide(&mut views, &staff, "ann", "a", message("Hi"), 1);
        assert!(matches!(ann, Verdict::Accepted { .. }));
        assert_eq!(fx.audit[0].detail["lock_epoch"], 1);
        // After the lease (60 s by default) lapses, not even the holder answers.
        let (late, _) = decide(&mut views, &staff, "ann", "a2", message("Hi"), 61);
        assert!(matches!(
            late,
            Verdict::Refused(RejectReason::LockNotHeld, _)
        ));
    }
}
