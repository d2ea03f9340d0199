//! The decisions of a session's life: opening, transfer, escalation, closing, the survey.

use std::collections::HashMap;

use schemas::db::entities::participant::ParticipantRole;
use schemas::wire::{Action, LockOp};

use super::*;
use crate::pipeline::decide::testing::{decide, views};

fn event_types(fx: &Effects) -> Vec<String> {
    fx.audit.iter().map(|a| a.action.clone()).collect()
}

#[test]
fn a_transfer_to_an_agent_moves_session_and_lock_in_one_step() {
    let staff = HashMap::from([("bob".to_owned(), Some(ParticipantRole::Agent))]);
    let mut views = views(&[("ann", ParticipantRole::Agent)]);
    decide(
        &mut views,
        &staff,
        "ann",
        "l",
        Action::Lock {
            op: LockOp::Acquire,
        },
        0,
    );
    let transfer = Action::Transfer {
        to_agent: Some("bob".into()),
        to_team: None,
    };
    let (verdict, fx) = decide(&mut views, &staff, "ann", "t", transfer, 1);
    let Verdict::Accepted { seq: Some(seq) } = verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(
        event_types(&fx),
        [
            "session.joined",
            "lock.taken_over",
            "session.transferred",
            "session.left"
        ]
    );
    assert_eq!(fx.audit[2].detail["seq"], seq);
    let view = views.get("s-1").unwrap();
    assert_eq!(view.lock.holder.as_deref(), Some("bob"));
    assert_eq!(view.lock.epoch, 2);
    assert_eq!(view.assigned_agent.as_deref(), Some("bob"));
    assert!(!view.members.contains_key("ann"));
}

#[test]
fn a_supervisor_from_outside_assigns_by_moving_the_assigned_agent_out() {
    let staff = HashMap::from([
        ("bob".to_owned(), Some(ParticipantRole::Agent)),
        ("sue".to_owned(), Some(ParticipantRole::Supervisor)),
    ]);
    let mut views = views(&[("ann", ParticipantRole::Agent)]);
    views.get_mut("s-1").unwrap().assigned_agent = Some("ann".into());
    let to_bob = Action::Transfer {
        to_agent: Some("bob".into()),
        to_team: None,
    };
    let (verdict, fx) = decide(&mut views, &staff, "sue", "t", to_bob.clone(), 1);
    assert!(matches!(verdict, Verdict::Accepted { seq: Some(_) }));
    // The same entries as a transfer by ann herself, with sue named as who transferred.
    assert_eq!(
        event_types(&fx),
        [
            "session.joined",
            "lock.taken_over",
            "session.transferred",
            "session.left"
        ]
    );
    assert_eq!(fx.entries[1].sender, sea_orm::Set("sue".to_owned()));
    assert_eq!(fx.entries[2].sender, sea_orm::Set("ann".to_owned()));
    let view = views.get("s-1").unwrap();
    assert_eq!(view.assigned_agent.as_deref(), Some("bob"));
    assert!(!view.members.contains_key("ann") && !view.members.contains_key("sue"));
    let notice = fx
        .outbox
        .entries
        .iter()
        .find(|(t, _)| t.ends_with("/assignments"));
    assert_eq!(notice.unwrap().0, "cc/v1/staff/bob/assignments");
    // Assigning to the agent who has it already is refused; a non-overseer from outside
    // is not a participant at all.
    let (again, _) = decide(&mut views, &staff, "sue", "t2", to_bob.clone(), 2);
    assert!(matches!(again, Verdict::Refused(RejectReason::Invalid, _)));
    let (stranger, _) = decide(&mut views, &staff, "bob2", "t3", to_bob, 3);
    assert!(matches!(
        stranger,
        Verdict::Refused(RejectReason::NotAllowed, _)
    ));
    // A supervisor reads a session from outside, notes included; others may not.
    let resync = Action::Resync {
        from_seq: 1,
        to_seq: None,
    };
    let (read, _) = decide(&mut views, &staff, "sue", "r", resync.clone(), 4);
    assert!(
        matches!(read, Verdict::Resync { staff: true, .. }),
        "{read:?}"
    );
    let (refused, _) = decide(&mut views, &staff, "bob2", "r", resync, 4);
    assert!(matches!(
        refused,
        Verdict::Refused(RejectReason::NotAllowed, _)
    ));
}

#[test]
fn transfers_that_make_no_sense_are_refused() {
    let staff = HashMap::from([
        ("ann".to_owned(), Some(ParticipantRole::Agent)),
        ("eve".to_owned(), None),
    ]);
    let rows: &[(&str, Option<&str>, Option<&str>, RejectReason)] = &[
        ("kiosk", None, Some("renewals"), RejectReason::NotAllowed),
        ("ann", Some("eve"), None, RejectReason::NotAllowed),
        ("ann", Some("ann"), None, RejectReason::Invalid),
        ("ann", None, None, RejectReason::Invalid),
        ("ann", Some("ann"), Some("renewals"), RejectReason::Invalid),
    ];
    for (sender, agent, team, reason) in rows {
        let mut views = views(&[("ann", ParticipantRole::Agent)]);
        let transfer = Action::Transfer {
            to_agent: agent.map(str::to_owned),
            to_team: team.map(str::to_owned),
        };
        let (verdict, fx) = decide(&mut views, &staff, sender, "t", transfer, 0);
        assert!(
            matches!(&verdict, Verdict::Refused(r, _) if r == reason),
            "{sender} {agent:?} {team:?}: {verdict:?}"
        );
        assert!(fx.entries.is_empty());
    }
}

#[test]
fn closing_frees_the_lock_and_opens_the_survey_once() {
    let staff = HashMap::new();
    let mut views = views(&[("ann", ParticipantRole::Agent)]);
    decide(
        &mut views,
        &staff,
        "ann",
        "l",
        Action::Lock {
            op: LockOp::Acquire,
        },
        0,
    );
    let survey = Action::Survey {
        rating: 5,
        comment: None,
    };
    let (early, _) = decide(&mut views, &staff, "kiosk", "s", survey.clone(), 1);
    assert!(matches!(
        early,
        Verdict::Refused(RejectReason::NotAllowed, _)
    ));
    let (closed, fx) = decide(
        &mut views,
        &staff,
        "kiosk",
        "c",
        Action::Close { reason: None },
        2,
    );
    assert!(matches!(closed, Verdict::Accepted { seq: Some(_) }));
    assert_eq!(
        event_types(&fx),
        ["lock.released", "session.status_changed", "session.closed"]
    );
    assert_eq!(fx.closed, ["s-1"]);
    let (note, _) = decide(
        &mut views,
        &staff,
        "ann",
        "n",
        Action::Note { body: "x".into() },
        3,
    );
    assert!(matches!(
        note,
        Verdict::Refused(RejectReason::SessionClosed, _)
    ));
    views.get_mut("s-1").unwrap().survey_answered = Some(false);
    let (answered, fx) = decide(&mut views, &staff, "kiosk", "s", survey.clone(), 3);
    assert_eq!(answered, Verdict::Accepted { seq: None });
    assert_eq!(fx.surveys.len(), 1);
    assert!(fx.audit[0].detail["digest"].is_string());
    let (again, _) = decide(&mut views, &staff, "kiosk", "s2", survey, 4);
    assert!(
        matches!(again, Verdict::Refused(RejectReason::NotAllowed, m) if m.contains("already"))
    );
}
