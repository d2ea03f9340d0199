//! Each conversion as a table of `(row value, wire value)` pairs, checked both ways, with the
//! stored text compared to the wire name so that the two spellings cannot drift apart.

use sea_orm::{ActiveEnum, Iterable};

use super::*;
use crate::wire::SessionEvent;

/// The name serde gives a unit variant on the wire.
fn wire_name(value: impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn participant_roles_convert_both_ways() {
    use participant::ParticipantRole as Row;
    use wire::ParticipantRole as Wire;
    let table = [
        (Row::Applicant, Wire::Applicant),
        (Row::Agent, Wire::Agent),
        (Row::Supervisor, Wire::Supervisor),
    ];
    assert_eq!(
        table.len(),
        Row::iter().count(),
        "every stored role is in the table"
    );
    for (row, wire) in table {
        assert_eq!(Wire::from(row), wire);
        assert_eq!(Row::from(wire), row);
        assert_eq!(
            row.to_value(),
            wire_name(wire),
            "{row:?} is stored as its wire name"
        );
    }
}

#[test]
fn staff_roles_become_participant_roles_except_admins() {
    use agent::StaffRole as Staff;
    use participant::ParticipantRole as Row;
    let table = [
        (Staff::Agent, Ok(Row::Agent)),
        (Staff::Supervisor, Ok(Row::Supervisor)),
        (Staff::Admin, Err(NotAParticipant(Staff::Admin))),
    ];
    assert_eq!(
        table.len(),
        Staff::iter().count(),
        "every staff role is in the table"
    );
    for (staff, expected) in table {
        assert_eq!(Row::try_from(staff), expected, "{staff:?}");
    }
}

#[test]
fn session_statuses_convert_both_ways() {
    use session::SessionStatus as Row;
    use wire::SessionStatus as Wire;
    let table = [
        (Row::Queued, Wire::Queued),
        (Row::Active, Wire::Active),
        (Row::Escalated, Wire::Escalated),
        (Row::Closed, Wire::Closed),
    ];
    assert_eq!(
        table.len(),
        Row::iter().count(),
        "every stored status is in the table"
    );
    for (row, wire) in table {
        assert_eq!(Wire::from(row), wire);
        assert_eq!(Row::from(wire), row);
        assert_eq!(
            row.to_value(),
            wire_name(wire),
            "{row:?} is stored as its wire name"
        );
    }
}

#[test]
fn channels_are_stored_as_their_wire_names() {
    let table = [
        (Channel::Kiosk, "kiosk"),
        (Channel::Phone, "phone"),
        (Channel::Web, "web"),
    ];
    for (channel, stored) in table {
        assert_eq!(channel.as_str(), stored);
        assert_eq!(channel.to_string(), stored);
        assert_eq!(wire_name(channel), stored, "the column holds the wire name");
        assert_eq!(stored.parse::<Channel>(), Ok(channel));
    }
    for unknown in ["", "Kiosk", "tablet", " kiosk"] {
        assert_eq!(
            unknown.parse::<Channel>(),
            Err(UnknownChannel(unknown.to_owned())),
            "{unknown:?}"
        );
    }
}

#[test]
fn stream_content_is_stored_as_kind_and_body() {
    use message::MessageKind as Kind;
    let joined = SessionEvent::Joined {
        subject: "agent-1".to_owned(),
    };
    let table = [
        (
            StreamContent::Message {
                body: "Hello".to_owned(),
            },
            (Kind::Text, "Hello".to_owned()),
        ),
        (
            StreamContent::Note {
                body: "check the fee".to_owned(),
            },
            (Kind::Note, "check the fee".to_owned()),
        ),
        (
            StreamContent::Event {
                event: joined.clone(),
            },
            (
                Kind::Event,
                r#"{"type":"joined","subject":"agent-1"}"#.to_owned(),
            ),
        ),
    ];
    for (content, stored) in table {
        assert_eq!(content.to_stored(), stored, "{content:?}");
        assert_eq!(
            StreamContent::from_stored(stored.0, &stored.1),
            Some(content)
        );
    }
    // An event row whose body is not a session event has no stream entry.
    assert_eq!(StreamContent::from_stored(Kind::Event, "joined"), None);
    assert_eq!(
        StreamContent::from_stored(Kind::Event, r#"{"type":"wed"}"#),
        None
    );
}
