//! Reasons given for staff and the limit on open sessions, decided without a database.

use std::collections::HashMap;

use schemas::db::entities::participant::ParticipantRole;
use schemas::wire::Action;

use super::*;
use crate::pipeline::decide::testing::{decide, views};

fn event_types(fx: &Effects) -> Vec<String> {
    fx.audit.iter().map(|a| a.action.clone()).collect()
}

#[test]
fn a_reason_is_a_note_before_the_event_and_the_event_carries_none() {
    let staff = HashMap::new();
    for (action, event) in [
        (
            Action::Escalate {
                reason: Some("fraud suspected".into()),
            },
            "session.escalated",
        ),
        (
            Action::Close {
                reason: Some("fraud suspected".into()),
            },
            "session.closed",
        ),
    ] {
        let mut views = views(&[("ann", ParticipantRole::Agent)]);
        let (verdict, fx) = decide(&mut views, &staff, "ann", "x", action, 0);
        let Verdict::Accepted { seq: Some(seq) } = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(
            event_types(&fx),
            ["note.accepted", "session.status_changed", event]
        );
        // The note holds the reason under `x#reason`, on notes; the acknowledged entry is
        // the event, on messages, without it.
        assert_eq!(fx.entries[0].client_msg_id, Set("x#reason".to_owned()));
        let (note_topic, note) = &fx.outbox.entries[0];
        assert!(note_topic.ends_with("/notes"), "{note_topic}");
        let note: wire::StreamEntry = serde_json::from_slice(note).unwrap();
        assert_eq!(
            note.content,
            StreamContent::Note {
                body: "fraud suspected".into()
            }
        );
        let published: Vec<&(String, Vec<u8>)> = fx
            .outbox
            .entries
            .iter()
            .filter(|(t, _)| t.ends_with("/messages"))
            .collect();
        let last: wire::StreamEntry = serde_json::from_slice(&published.last().unwrap().1).unwrap();
        assert_eq!(last.seq, seq);
        assert!(!String::from_utf8_lossy(&published.last().unwrap().1).contains("fraud"));
        // Each topic's chain: the event names the last public entry, not the note.
        assert_eq!(last.prev_seq, seq - 1);
        assert_eq!(note.prev_seq, 0);
    }
    // No reason (or a blank one): no note.
    let mut views = views(&[("ann", ParticipantRole::Agent)]);
    let blank = Action::Escalate {
        reason: Some("  ".into()),
    };
    let (_, fx) = decide(&mut views, &staff, "ann", "y", blank, 0);
    assert_eq!(
        event_types(&fx),
        ["session.status_changed", "session.escalated"]
    );
}

#[test]
fn an_applicant_opens_no_more_sessions_than_allowed() {
    use crate::pipeline::decide::testing::Fixture;
    let request = |cmid: &str| OpenSession {
        v: 1,
        client_msg_id: cmid.into(),
        channel: wire::Channel::Kiosk,
        topic: None,
        first_message: None,
    };
    // (the most allowed, sessions open already, accepted?)
    let rows = [(1, 0, true), (1, 1, false), (2, 1, true), (2, 2, false)];
    for (most, already, allowed) in rows {
        let mut fixture = Fixture::new(HashMap::new());
        fixture.config.max_open_sessions_per_applicant = most;
        for n in 0..already {
            fixture.attendance.insert_open(&format!("s-{n}"), "kiosk");
        }
        fixture.attendance.insert_open("s-other", "someone-else");
        let mut ctx = fixture.at(0);
        let (mut views, mut fx) = (Views::default(), Effects::default());
        let (verdict, _) = open(
            &mut views,
            &mut ctx,
            &mut fx,
            "kiosk",
            request("o"),
            None,
            "s-new".into(),
        );
        match verdict {
            Verdict::Accepted { .. } => assert!(allowed, "{most} {already}"),
            Verdict::Refused(RejectReason::NotAllowed, message) => {
                assert!(!allowed, "{most} {already}");
                assert!(message.contains("most allowed"), "{message}");
                assert!(fx.opened.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
    // Sessions opened earlier in the same batch count too.
    let mut fixture = Fixture::new(HashMap::new());
    let mut ctx = fixture.at(0);
    let (mut views, mut fx) = (Views::default(), Effects::default());
    let first = open(
        &mut views,
        &mut ctx,
        &mut fx,
        "kiosk",
        request("a"),
        None,
        "s-a".into(),
    );
    assert!(matches!(first.0, Verdict::Accepted { .. }));
    let second = open(
        &mut views,
        &mut ctx,
        &mut fx,
        "kiosk",
        request("b"),
        None,
        "s-b".into(),
    );
    assert!(matches!(
        second.0,
        Verdict::Refused(RejectReason::NotAllowed, _)
    ));
}
