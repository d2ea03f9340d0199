//! The digests: stable, and changed by every field they cover.

use super::*;
use chrono::TimeZone;

fn at() -> DateTimeUtc {
    chrono::Utc
        .with_ymd_and_hms(2026, 12, 1, 9, 30, 0)
        .unwrap()
        .checked_add_signed(chrono::Duration::microseconds(123_456))
        .unwrap()
}

fn message(at: &DateTimeUtc) -> MessageRecord<'_> {
    MessageRecord {
        session_id: "s-1",
        seq: 7,
        sender: "kiosk-1",
        kind: message::MessageKind::Text,
        body: "My hearing is on Monday.",
        client_msg_id: "m-7",
        created_at: at,
    }
}

#[test]
fn a_message_digest_is_stable() {
    // Stored in entries already written: this value must never change. It is SHA-256 over
    // "courtchat/message/v1", "s-1", "7", "kiosk-1", "text", the body, "m-7" and
    // "2026-12-01T09:30:00.123456Z", each after its length as eight big-endian bytes.
    let at = at();
    assert_eq!(
        message(&at).digest(),
        "b3152ddb78d6806958f85a84067084bb13057cb5597185869af0d9ca15691318"
    );
}

#[test]
fn every_field_of_a_message_is_covered() {
    let at = at();
    let later = at + chrono::Duration::microseconds(1);
    let original = message(&at);
    // (what changed, the changed record)
    let rows: Vec<(&str, MessageRecord)> = vec![
        (
            "session",
            MessageRecord {
                session_id: "s-2",
                ..original
            },
        ),
        ("seq", MessageRecord { seq: 8, ..original }),
        (
            "sender",
            MessageRecord {
                sender: "agent-1",
                ..original
            },
        ),
        (
            "kind",
            MessageRecord {
                kind: message::MessageKind::Note,
                ..original
            },
        ),
        (
            "body",
            MessageRecord {
                body: "My hearing is on Tuesday.",
                ..original
            },
        ),
        (
            "client id",
            MessageRecord {
                client_msg_id: "m-8",
                ..original
            },
        ),
        (
            "time",
            MessageRecord {
                created_at: &later,
                ..original
            },
        ),
        // Length prefixes: moving text from one field to the next changes the digest.
        (
            "boundary",
            MessageRecord {
                sender: "kiosk-1M",
                body: "y hearing is on Monday.",
                ..original
            },
        ),
    ];
    for (what, changed) in rows {
        assert_ne!(changed.digest(), original.digest(), "{what} is not covered");
    }
}

#[test]
fn every_field_of_a_survey_answer_is_covered() {
    let at = at();
    let later = at + chrono::Duration::microseconds(1);
    let original = SurveyRecord {
        session_id: "s-1",
        rating: 4,
        comment: Some("clear"),
        submitted_at: &at,
    };
    let rows: Vec<(&str, SurveyRecord)> = vec![
        (
            "session",
            SurveyRecord {
                session_id: "s-2",
                ..original
            },
        ),
        (
            "rating",
            SurveyRecord {
                rating: 5,
                ..original
            },
        ),
        (
            "comment",
            SurveyRecord {
                comment: Some("unclear"),
                ..original
            },
        ),
        (
            "no comment",
            SurveyRecord {
                comment: None,
                ..original
            },
        ),
        (
            "time",
            SurveyRecord {
                submitted_at: &later,
                ..original
            },
        ),
    ];
    for (what, changed) in rows {
        assert_ne!(changed.digest(), original.digest(), "{what} is not covered");
    }
    assert_ne!(
        SurveyRecord {
            comment: None,
            ..original
        }
        .digest(),
        SurveyRecord {
            comment: Some(""),
            ..original
        }
        .digest(),
        "no comment and an empty one are told apart"
    );
}

#[test]
fn a_row_read_back_has_the_digest_it_was_written_with() {
    let at = at();
    let row = message::Model {
        id: 42,
        session_id: "s-1".into(),
        seq: 7,
        client_msg_id: "m-7".into(),
        sender: "kiosk-1".into(),
        kind: message::MessageKind::Text,
        body: "My hearing is on Monday.".into(),
        created_at: at,
    };
    assert_eq!(MessageRecord::from(&row).digest(), message(&at).digest());
}
