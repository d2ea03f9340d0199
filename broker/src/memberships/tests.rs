//! Closed sessions kept within their window, then forgotten.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;

/// What a listener saw, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// Memberships that record who left ("session:subject") and which sessions were forgotten.
fn observed(window: ClosedSessions) -> (Memberships, Seen, Seen) {
    let memberships = Memberships::new(window);
    let left = Arc::new(Mutex::new(Vec::new()));
    let forgotten = Arc::new(Mutex::new(Vec::new()));
    {
        let left = Arc::clone(&left);
        memberships.on_leave(Arc::new(move |session, subject| {
            left.lock().unwrap().push(format!("{session}:{subject}"));
        }));
        let forgotten = Arc::clone(&forgotten);
        memberships.on_forget(Arc::new(move |session| {
            forgotten.lock().unwrap().push(session.to_owned());
        }));
    }
    (memberships, left, forgotten)
}

#[test]
fn closed_sessions_are_forgotten_beyond_the_window() {
    for kept in [1, 3, ClosedSessions::default().kept] {
        let (memberships, left, forgotten) = observed(ClosedSessions { kept, access: None });
        let now = Instant::now();
        for n in 0..=kept {
            let session = format!("s{n}");
            memberships.join(&session, "kiosk", Role::Applicant);
            memberships.join(&session, "agent", Role::Agent);
            memberships.close_at(&session, now);
            // A closed session stays readable for its survey and resync while in the window.
            assert!(memberships.is_member(&session, "kiosk"));
        }
        assert!(!memberships.is_member("s0", "kiosk") && !memberships.is_member("s0", "agent"));
        assert!(memberships.is_member("s1", "kiosk"));
        assert_eq!(memberships.sessions(), kept);
        assert_eq!(*forgotten.lock().unwrap(), vec!["s0".to_owned()]);
        let mut left = left.lock().unwrap().clone();
        left.sort();
        assert_eq!(left, vec!["s0:agent".to_owned(), "s0:kiosk".to_owned()]);
        // No time limit: nothing else is forgotten however long it waits.
        memberships.forget_expired(now + Duration::from_secs(365 * 24 * 3600));
        assert_eq!(memberships.sessions(), kept);
    }
}

#[test]
fn closed_sessions_are_forgotten_when_their_access_runs_out() {
    let access = Duration::from_secs(60);
    let (memberships, _left, forgotten) = observed(ClosedSessions {
        kept: 10,
        access: Some(access),
    });
    let start = Instant::now();
    for (n, closed_after) in [0, 10, 20].into_iter().enumerate() {
        let session = format!("s{n}");
        memberships.join(&session, "kiosk", Role::Applicant);
        memberships.close_at(&session, start + Duration::from_secs(closed_after));
    }
    // (seconds after start, sessions still open to their participants)
    let table: [(u64, &[&str]); 5] = [
        (59, &["s0", "s1", "s2"]),
        (60, &["s1", "s2"]),
        (69, &["s1", "s2"]),
        (75, &["s2"]),
        (80, &[]),
    ];
    for (after, kept) in table {
        memberships.forget_expired(start + Duration::from_secs(after));
        for session in ["s0", "s1", "s2"] {
            assert_eq!(
                memberships.is_member(session, "kiosk"),
                kept.contains(&session),
                "{session} at {after} s"
            );
        }
    }
    assert_eq!(*forgotten.lock().unwrap(), ["s0", "s1", "s2"]);
    // A close also forgets what has run out, whatever the count.
    memberships.join("s3", "kiosk", Role::Applicant);
    memberships.join("s4", "kiosk", Role::Applicant);
    memberships.close_at("s3", start + Duration::from_secs(100));
    memberships.close_at("s4", start + Duration::from_secs(200));
    assert!(!memberships.is_member("s3", "kiosk") && memberships.is_member("s4", "kiosk"));
}

#[test]
fn a_subjects_open_sessions_leave_out_closed_ones_and_those_it_left() {
    let memberships = Memberships::new(ClosedSessions {
        kept: 10,
        access: None,
    });
    for session in ["s1", "s2", "s3"] {
        memberships.join(session, "kiosk", Role::Applicant);
    }
    memberships.join("s1", "agent", Role::Agent);
    memberships.close("s2");
    memberships.leave("s3", "kiosk");
    assert_eq!(memberships.open_sessions_of("kiosk"), ["s1"]);
    assert_eq!(memberships.open_sessions_of("agent"), ["s1"]);
    assert!(memberships.open_sessions_of("stranger").is_empty());
    // A closed session still counts as one of its members' sessions for access.
    assert!(memberships.is_member("s2", "kiosk"));
}
