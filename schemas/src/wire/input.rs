//! What the server accepts from clients, beyond what the types say: strict parsing of the
//! payloads clients submit, the shape of a client message id, and the characters free text may
//! hold. Each rule is a pure function, so the pipeline and its tests share one definition, and
//! `PROTOCOL.md` documents the same limits.

use super::{OpenSession, RejectReason, StaffSubmission, Submission};

/// Longest `client_msg_id`, in characters. The server derives ids of its own from it (a suffix
/// such as `#escalated` for the entries one action leaves), and the stored column holds 128.
pub const CLIENT_MSG_ID_MAX: usize = 64;

/// Longest identifier a client names in a payload (an agent in `to_agent`, a team, a topic).
pub const NAME_MAX: usize = 128;

/// Longest error text echoed back to a client: a parser's message may quote the input.
const MESSAGE_MAX: usize = 200;

/// Why a payload is refused before anything is decided.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not JSON, or a field has the wrong type or value.
    #[error("{0}")]
    Malformed(String),
    #[error(
        "client_msg_id must be 1 to {CLIENT_MSG_ID_MAX} characters of A-Z, a-z, 0-9, '-', '_', '.' and ':'"
    )]
    ClientMsgId,
    /// Free text holds a character the record does not keep (see [`check_text`]).
    #[error("{field} holds {what} (U+{code:04X}), which is not accepted")]
    Character {
        field: &'static str,
        what: &'static str,
        code: u32,
    },
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
}

impl InputError {
    /// The refusal a client gets for it.
    pub fn reason(&self) -> RejectReason {
        match self {
            InputError::Malformed(_) | InputError::ClientMsgId => RejectReason::Invalid,
            InputError::Character { .. } => RejectReason::ContentRefused,
            InputError::TooLong { .. } => RejectReason::TooLarge,
        }
    }
}

impl Submission {
    /// Parses a submission strictly: on top of the types, the action's `type` must be a string
    /// (serde would take `0` as the first variant) and the client message id well formed.
    pub fn from_json(payload: &[u8]) -> Result<Self, InputError> {
        let value = strict_value(payload)?;
        let submission: Submission = serde_json::from_value(value).map_err(malformed)?;
        check_client_msg_id(&submission.client_msg_id)?;
        Ok(submission)
    }
}

impl StaffSubmission {
    /// Parses a staff submission strictly (see [`Submission::from_json`]).
    pub fn from_json(payload: &[u8]) -> Result<Self, InputError> {
        let value = strict_value(payload)?;
        let submission: StaffSubmission = serde_json::from_value(value).map_err(malformed)?;
        check_client_msg_id(&submission.client_msg_id)?;
        Ok(submission)
    }
}

impl OpenSession {
    /// Parses an open request strictly (see [`Submission::from_json`]) and checks its text.
    pub fn from_json(payload: &[u8]) -> Result<Self, InputError> {
        let value = strict_value(payload)?;
        let open: OpenSession = serde_json::from_value(value).map_err(malformed)?;
        check_client_msg_id(&open.client_msg_id)?;
        if let Some(topic) = &open.topic {
            check_name("topic", topic)?;
        }
        Ok(open)
    }
}

/// The payload as JSON, refusing enum tags that are not strings anywhere in it. serde's
/// internally tagged enums accept a number as the variant's index (`{"type": 8}` is the ninth
/// action); the protocol names every variant, so only names are accepted. A key named twice
/// in one object is refused ([`parse_json`]).
fn strict_value(payload: &[u8]) -> Result<serde_json::Value, InputError> {
    let value = parse_json(payload).map_err(|err| InputError::Malformed(err.to_string()))?;
    let Some(object) = value.as_object() else {
        return Err(InputError::Malformed("expected a JSON object".to_owned()));
    };
    for tag in ["type", "kind", "status"] {
        if let Some(tag_value) = object.get(tag)
            && !tag_value.is_string()
        {
            return Err(InputError::Malformed(format!("`{tag}` must be a string")));
        }
    }
    Ok(value)
}

/// Why a text is not JSON the server takes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all (the parser's message, bounded).
    #[error("{0}")]
    Syntax(String),
    /// An object names a key twice: which one counts depends on the parser (serde keeps the
    /// last, others the first), so a reader and a writer could disagree on what was said.
    #[error("the key `{0}` appears twice in one object")]
    DuplicateKey(String),
}

/// Parses JSON text, refusing any object (at any depth) that names a key twice; the error
/// names the key by its path (`detail.reason`). The one rule for JSON from clients: the chat
/// pipeline's strict parsing and the admin API's request bodies both use it.
pub fn parse_json(text: &[u8]) -> Result<serde_json::Value, JsonError> {
    use serde::de::DeserializeSeed;
    let mut duplicate = None;
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let parsed = UniqueKeys {
        path: String::new(),
        duplicate: &mut duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, duplicate) {
        (_, Some(key)) => Err(JsonError::DuplicateKey(bounded(&key))),
        (Ok(value), None) => Ok(value),
        (Err(err), None) => Err(JsonError::Syntax(bounded(&err.to_string()))),
    }
}

/// A JSON value whose objects name each key once; `path` is where it sits, and the first key
/// found twice is left in `duplicate`.
struct UniqueKeys<'a> {
    path: String,
    duplicate: &'a mut Option<String>,
}

impl UniqueKeys<'_> {
    fn at(&mut self, step: &str) -> UniqueKeys<'_> {
        let path = if self.path.is_empty() {
            step.to_owned()
        } else {
            format!("{}.{step}", self.path)
        };
        UniqueKeys {
            path,
            duplicate: self.duplicate,
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = serde_json::Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys<'_> {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        mut self,
        mut seq: A,
    ) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.at(&items.len().to_string()))? {
            items.push(item);
        }
        Ok(items.into())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        mut self,
        mut map: A,
    ) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let path = self.at(&key).path;
                *self.duplicate = Some(path);
                return Err(serde::de::Error::custom("a key appears twice"));
            }
            let value = map.next_value_seed(self.at(&key))?;
            object.insert(key, value);
        }
        Ok(object.into())
    }
}

fn malformed(err: serde_json::Error) -> InputError {
    InputError::Malformed(bounded(&err.to_string()))
}

/// At most [`MESSAGE_MAX`] bytes of `text`, cut at a character boundary.
pub fn bounded(text: &str) -> String {
    if text.len() <= MESSAGE_MAX {
        return text.to_owned();
    }
    let mut end = MESSAGE_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A client message id: 1 to [`CLIENT_MSG_ID_MAX`] characters of `A-Z a-z 0-9 - _ . :`. The
/// server's own derived ids use `#`, so they never collide with a client's.
pub fn check_client_msg_id(id: &str) -> Result<(), InputError> {
    let well_formed = !id.is_empty()
        && id.len() <= CLIENT_MSG_ID_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if well_formed {
        Ok(())
    } else {
        Err(InputError::ClientMsgId)
    }
}

/// An identifier a client names (an agent, a team, a topic): at most [`NAME_MAX`] bytes of
/// [`check_name_characters`].
pub fn check_name(field: &'static str, name: &str) -> Result<(), InputError> {
    if name.len() > NAME_MAX {
        return Err(InputError::TooLong {
            field,
            max: NAME_MAX,
        });
    }
    check_name_characters(field, name)
}

/// The characters every stored name may hold (usernames' own rule is narrower): those of
/// [`check_text`], without newline or tab either, since a name is one line. Staff display
/// names, teams, kiosk names and the names a client gives follow it, so that no name displays
/// differently from what it holds.
pub fn check_name_characters(field: &'static str, name: &str) -> Result<(), InputError> {
    if let Some(c) = name.chars().find(|c| matches!(c, '\n' | '\t')) {
        return Err(InputError::Character {
            field,
            what: "a control character",
            code: u32::from(c),
        });
    }
    check_text(field, name)
}

/// Free text the record keeps (bodies, notes, reasons, comments). Refused: control characters
/// other than newline and tab (C0, DEL, C1), bidirectional controls (which make a stored text
/// display differently from what it holds: U+061C, U+200E, U+200F, U+202A–U+202E,
/// U+2066–U+2069) and invisible characters that hide or join text (U+200B, U+2028, U+2029,
/// U+2060–U+2064, U+FEFF, U+FFF9–U+FFFB). Zero-width (non-)joiners (U+200C, U+200D) are kept:
/// scripts and emoji sequences need them.
pub fn check_text(field: &'static str, text: &str) -> Result<(), InputError> {
    for c in text.chars() {
        let what = match c {
            '\n' | '\t' => continue,
            c if c.is_control() => "a control character",
            '\u{061C}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}' => "a bidirectional control",
            '\u{200B}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{2060}'..='\u{2064}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}' => "an invisible character",
            _ => continue,
        };
        return Err(InputError::Character {
            field,
            what,
            code: u32::from(c),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Action;

    #[test]
    fn enum_tags_are_names_not_numbers() {
        let rows: &[(&str, Option<RejectReason>)] = &[
            (r#"{"client_msg_id":"a","type":"message","body":"x"}"#, None),
            (
                r#"{"client_msg_id":"a","type":0,"body":"x"}"#,
                Some(RejectReason::Invalid),
            ),
            (
                r#"{"client_msg_id":"a","type":8}"#,
                Some(RejectReason::Invalid),
            ),
            (
                r#"{"client_msg_id":"a","type":true}"#,
                Some(RejectReason::Invalid),
            ),
            (
                r#"{"client_msg_id":"a","type":"lock","op":0}"#,
                Some(RejectReason::Invalid),
            ),
            (
                r#"{"client_msg_id":"a","type":"lock","op":"acquire"}"#,
                None,
            ),
            (r#"[1,2]"#, Some(RejectReason::Invalid)),
            (
                r#"{"client_msg_id":"a","type":"close","kind":1}"#,
                Some(RejectReason::Invalid),
            ),
        ];
        for (payload, expected) in rows {
            let got = Submission::from_json(payload.as_bytes())
                .err()
                .map(|e| e.reason());
            assert_eq!(got, *expected, "{payload}");
        }
        let open = r#"{"client_msg_id":"o","channel":0}"#;
        assert!(OpenSession::from_json(open.as_bytes()).is_err());
        let open = r#"{"client_msg_id":"o","channel":"kiosk"}"#;
        assert!(OpenSession::from_json(open.as_bytes()).is_ok());
    }

    #[test]
    fn client_msg_ids() {
        let long = "x".repeat(CLIENT_MSG_ID_MAX);
        let too_long = "x".repeat(CLIENT_MSG_ID_MAX + 1);
        let rows: &[(&str, bool)] = &[
            ("m-1", true),
            ("9f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", true),
            ("r2:page.3_x", true),
            (&long, true),
            ("", false),
            (&too_long, false),
            ("with space", false),
            ("hash#1", false),
            ("é", false),
            ("nul\u{0}", false),
        ];
        for (id, ok) in rows {
            assert_eq!(check_client_msg_id(id).is_ok(), *ok, "{id:?}");
        }
    }

    #[test]
    fn text_characters() {
        let rows: &[(&str, bool)] = &[
            ("Hello, world", true),
            ("line one\nline two\ttab", true),
            ("Grüße — ¿qué tal? 你好 مرحبا", true),
            ("family 👨\u{200D}👩\u{200D}👧", true),
            ("nul \u{0}", false),
            ("bell \u{7}", false),
            ("del \u{7F}", false),
            ("c1 \u{85}", false),
            ("override \u{202E}txt.exe", false),
            ("isolate \u{2066}x\u{2069}", false),
            ("mark \u{200F}", false),
            ("zero width \u{200B}space", false),
            ("bom \u{FEFF}", false),
            ("separator \u{2028}", false),
        ];
        for (text, ok) in rows {
            assert_eq!(check_text("body", text).is_ok(), *ok, "{text:?}");
        }
        for (text, ok) in rows {
            let one_line = !text.contains(['\n', '\t']);
            assert_eq!(
                check_name_characters("name", text).is_ok(),
                *ok && one_line,
                "{text:?}"
            );
        }
        let refusal = check_text("body", "a\u{202E}b").unwrap_err();
        assert_eq!(refusal.reason(), RejectReason::ContentRefused);
        assert_eq!(
            refusal.to_string(),
            "body holds a bidirectional control (U+202E), which is not accepted"
        );
    }

    #[test]
    fn a_key_named_twice_is_refused_at_any_depth() {
        let rows: &[(&str, Result<(), &str>)] = &[
            (r#"{"body":"a","kind":"b"}"#, Ok(())),
            (r#"{"body":"a","body":"b"}"#, Err("body")),
            (r#"{"a":{"x":1,"y":{"x":2}}}"#, Ok(())),
            (r#"{"a":{"x":1,"x":2}}"#, Err("a.x")),
            (r#"{"a":[{"k":1},{"k":1,"k":2}]}"#, Err("a.1.k")),
            (r#"[{"k":1},{"k":2}]"#, Ok(())),
            (r#"{"a":1} x"#, Err("")),
            (r#"{"a":1"#, Err("")),
            (r#"1.5"#, Ok(())),
        ];
        for (text, expected) in rows {
            let got = parse_json(text.as_bytes());
            match (expected, &got) {
                (Ok(()), Ok(value)) => {
                    let plain: serde_json::Value = serde_json::from_str(text).unwrap();
                    assert_eq!(value, &plain, "{text}");
                }
                (Err(""), Err(JsonError::Syntax(_))) => {}
                (Err(key), Err(JsonError::DuplicateKey(found))) => {
                    assert_eq!(found, key, "{text}")
                }
                _ => panic!("{text}: {got:?}"),
            }
        }
        // The chat pipeline refuses it as `invalid`, naming the key.
        let twice = br#"{"client_msg_id":"a","type":"message","body":"x","body":"y"}"#;
        let refusal = Submission::from_json(twice).unwrap_err();
        assert_eq!(refusal.reason(), RejectReason::Invalid);
        assert!(refusal.to_string().contains("`body`"), "{refusal}");
        assert!(
            OpenSession::from_json(br#"{"client_msg_id":"o","channel":"kiosk","channel":"web"}"#)
                .is_err()
        );
        assert!(StaffSubmission::from_json(br#"{"client_msg_id":"o","client_msg_id":"p","type":"availability","status":"available"}"#).is_err());
    }

    #[test]
    fn parser_messages_are_bounded() {
        let huge = "z".repeat(10_000);
        let payload = format!(r#"{{"client_msg_id":"a","type":"{huge}"}}"#);
        let err = Submission::from_json(payload.as_bytes()).unwrap_err();
        assert!(err.to_string().len() <= MESSAGE_MAX + 4, "{err}");
        let ok = Submission::from_json(br#"{"client_msg_id":"a","type":"join"}"#).unwrap();
        assert_eq!(ok.action, Action::Join);
    }
}
