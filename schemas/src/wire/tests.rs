//! The payloads' JSON: committed schemas are current, examples round-trip, unknown fields are
//! tolerated and invalid values refused.

use super::*;

/// Regenerates (with `UPDATE_SCHEMAS=1`) or checks the committed JSON Schemas.
#[test]
fn committed_json_schemas_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
    let update = std::env::var("UPDATE_SCHEMAS").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, schema) in schemas() {
        let path = dir.join(format!("{name}.json"));
        let generated = serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n";
        if update {
            std::fs::write(&path, &generated).expect("schemas/json is writable");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(generated.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON Schemas (run `UPDATE_SCHEMAS=1 cargo test -p schemas`): {stale:?}"
    );
    // And no schema file is left over from a removed payload.
    let known: Vec<String> = schemas()
        .iter()
        .map(|(name, _)| format!("{name}.json"))
        .collect();
    for entry in std::fs::read_dir(&dir).expect("schemas/json exists") {
        let name = entry
            .expect("a directory entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            known.contains(&name),
            "schemas/json/{name} belongs to no payload"
        );
    }
}

#[test]
fn examples_parse_as_documented() {
    let rows: &[(&str, Action)] = &[
        (
            r#"{"v":1,"client_msg_id":"c1","type":"message","body":"Hello"}"#,
            Action::Message {
                body: "Hello".into(),
            },
        ),
        (
            r#"{"client_msg_id":"c2","type":"note","body":"check ID"}"#,
            Action::Note {
                body: "check ID".into(),
            },
        ),
        (
            r#"{"client_msg_id":"c3","type":"receipt","read_seq":7}"#,
            Action::Receipt {
                delivered_seq: None,
                read_seq: Some(7),
            },
        ),
        (
            r#"{"client_msg_id":"c4","type":"lock","op":"acquire"}"#,
            Action::Lock {
                op: LockOp::Acquire,
            },
        ),
        (
            r#"{"client_msg_id":"c5","type":"transfer","to_team":"renewals"}"#,
            Action::Transfer {
                to_agent: None,
                to_team: Some("renewals".into()),
            },
        ),
        (
            r#"{"client_msg_id":"c6","type":"resync","from_seq":3}"#,
            Action::Resync {
                from_seq: 3,
                to_seq: None,
            },
        ),
        (
            r#"{"client_msg_id":"c7","type":"survey","rating":5,"comment":"quick"}"#,
            Action::Survey {
                rating: 5,
                comment: Some("quick".into()),
            },
        ),
        // Unknown fields are ignored, so newer clients work with this server.
        (
            r#"{"client_msg_id":"c8","type":"message","body":"hi","emoji":"wave","future":{"x":1}}"#,
            Action::Message { body: "hi".into() },
        ),
    ];
    for (json, expected) in rows {
        let submission: Submission =
            serde_json::from_str(json).unwrap_or_else(|err| panic!("{json}: {err}"));
        assert_eq!(&submission.action, expected, "{json}");
        assert_eq!(submission.v, VERSION);
        // And what we write, we read back.
        let again: Submission =
            serde_json::from_str(&serde_json::to_string(&submission).unwrap()).unwrap();
        assert_eq!(again, submission);
    }
}

#[test]
fn invalid_payloads_are_refused() {
    let rows = [
        r#"{"client_msg_id":"c1","type":"message"}"#,
        r#"{"client_msg_id":"c1","type":"message","body":42}"#,
        r#"{"client_msg_id":"c1","type":"shout","body":"hi"}"#,
        r#"{"type":"message","body":"hi"}"#,
        r#"{"client_msg_id":"c1","type":"lock","op":"steal"}"#,
        r#"{"client_msg_id":"c1","type":"survey","rating":-1}"#,
        r#"not json"#,
    ];
    for json in rows {
        assert!(
            serde_json::from_str::<Submission>(json).is_err(),
            "{json} was accepted"
        );
    }
}

#[test]
fn acks_and_stream_entries_have_the_documented_shape() {
    let ack = Ack {
        v: VERSION,
        client_msg_id: "c1".into(),
        session_id: Some("s1".into()),
        outcome: Outcome::Rejected {
            reason: RejectReason::LockHeld,
            message: "agent-2 holds the reply lock".into(),
        },
    };
    let json = serde_json::to_value(&ack).unwrap();
    assert_eq!(json["status"], "rejected");
    assert_eq!(json["reason"], "lock_held");

    let entry = StreamEntry {
        v: VERSION,
        session_id: "s1".into(),
        seq: 5,
        prev_seq: 3,
        at: "2026-11-25T20:00:00Z".parse().unwrap(),
        sender: "system".into(),
        content: StreamContent::Event {
            event: SessionEvent::Closed {
                reason: None,
                survey_offered: true,
            },
        },
    };
    let json = serde_json::to_value(&entry).unwrap();
    assert_eq!(
        (json["kind"].as_str(), json["event"]["type"].as_str()),
        (Some("event"), Some("closed"))
    );
}

#[test]
fn an_events_name_is_its_wire_type() {
    let events = [
        SessionEvent::Opened {
            channel: Channel::Kiosk,
        },
        SessionEvent::Joined {
            subject: "agent-1".into(),
        },
        SessionEvent::Left {
            subject: "agent-1".into(),
        },
        SessionEvent::Transferred {
            from: None,
            to_agent: Some("agent-2".into()),
            to_team: None,
        },
        SessionEvent::Escalated { reason: None },
        SessionEvent::StatusChanged {
            status: SessionStatus::Active,
        },
        SessionEvent::Closed {
            reason: None,
            survey_offered: true,
        },
    ];
    for event in events {
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], event.name(), "{event:?}");
    }
}

/// Metrics label refusals by `as_str`, which must be the name clients read on the wire.
#[test]
fn a_reasons_label_is_its_wire_name() {
    for reason in RejectReason::all() {
        assert_eq!(
            serde_json::to_value(reason).unwrap(),
            serde_json::Value::from(reason.as_str())
        );
    }
}
