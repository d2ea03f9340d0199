//! Typing and presence: the only payloads a client writes that the gateway relays to other
//! clients itself, with no chat pipeline deciding them first. So the gateway checks them: on
//! `typing/` and `note-typing/` only `wire::Typing`, on `presence/` only `wire::Presence` with a
//! status the protocol names, at most `mqtt.signals.max_payload_bytes` bytes, at most
//! `mqtt.signals.rate_per_second` (with a burst of `mqtt.signals.rate_burst`) per sender. What
//! passes is relayed in its canonical form, the known fields only, so nothing else a client
//! wrote (a free-text status, an extra field a page might show) reaches anyone.

use std::time::Instant;

use bytes::Bytes;
use limits::{Allowance, Rate};
use schemas::topics::{SessionTopic, Topic};
use schemas::wire::{Presence, PresenceStatus, Typing, VERSION};
use serde::{Deserialize, Serialize};

/// The `[mqtt.signals]` section: how much typing and presence a sender may publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalsConfig {
    /// Largest typing or presence payload accepted, in bytes (the known payloads take 30).
    pub max_payload_bytes: usize,
    /// Typing and presence publishes one sender may make per second, sustained, over all its
    /// sessions.
    pub rate_per_second: u32,
    /// How many it may make at once.
    pub rate_burst: u32,
}

impl Default for SignalsConfig {
    /// Room for pages that repeat "typing" every two seconds in a dozen conversations at once,
    /// and far below what would load a desk.
    fn default() -> Self {
        Self {
            max_payload_bytes: 256,
            rate_per_second: 10,
            rate_burst: 30,
        }
    }
}

impl SignalsConfig {
    /// The per-sender rate these settings describe, or the key and why it is not one.
    pub fn rate(&self) -> Result<Rate, (&'static str, String)> {
        Rate::per_second(f64::from(self.rate_per_second), self.rate_burst).map_err(|err| {
            let key = match err {
                limits::RateError::NotPositive => "mqtt.signals.rate_per_second",
                limits::RateError::NoBurst => "mqtt.signals.rate_burst",
            };
            (key, err.to_string())
        })
    }
}

/// What kind of signal a topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SignalKind {
    /// `typing/` and `note-typing/`.
    Typing,
    Presence,
}

impl SignalKind {
    /// The kind of signal `topic` carries, if it carries one.
    pub(crate) fn of(topic: &str) -> Option<Self> {
        match Topic::parse(topic)? {
            Topic::Session {
                kind: SessionTopic::Typing | SessionTopic::NoteTyping,
                ..
            } => Some(SignalKind::Typing),
            Topic::Session {
                kind: SessionTopic::Presence,
                ..
            } => Some(SignalKind::Presence),
            _ => None,
        }
    }
}

/// Why a typing or presence publish was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalRefusal {
    /// Larger than `mqtt.signals.max_payload_bytes`.
    TooLarge,
    /// Not the payload the topic carries (MQTT 5: PUBACK 0x99).
    Invalid,
    /// The sender's allowance is spent (MQTT 5: PUBACK 0x97).
    RateLimited,
}

impl SignalRefusal {
    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalRefusal::TooLarge => "too_large",
            SignalRefusal::Invalid => "invalid",
            SignalRefusal::RateLimited => "rate_limited",
        }
    }
}

/// The canonical form of a typing or presence payload: the known fields only, or why it is not
/// one. Strict where a lenient parser would let a client choose what others see: the object's
/// `status` must be a string (serde would also take `{"online": null}`), `v` must be the
/// protocol's version, a field may appear once.
pub(crate) fn canonical(
    kind: SignalKind,
    payload: &[u8],
    max_bytes: usize,
) -> Result<Bytes, SignalRefusal> {
    if payload.len() > max_bytes {
        return Err(SignalRefusal::TooLarge);
    }
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|_| SignalRefusal::Invalid)?;
    let object = value.as_object().ok_or(SignalRefusal::Invalid)?;
    if object
        .get("status")
        .is_some_and(|status| !status.is_string())
    {
        return Err(SignalRefusal::Invalid);
    }
    // serde_json::Value keeps the last of two equal keys; the typed parse below sees both.
    let encoded = match kind {
        SignalKind::Typing => {
            let typing: Typing =
                serde_json::from_slice(payload).map_err(|_| SignalRefusal::Invalid)?;
            (typing.v == VERSION).then(|| serde_json::to_vec(&typing))
        }
        SignalKind::Presence => {
            let presence: Presence =
                serde_json::from_slice(payload).map_err(|_| SignalRefusal::Invalid)?;
            (presence.v == VERSION).then(|| serde_json::to_vec(&presence))
        }
    };
    match encoded {
        Some(Ok(bytes)) => Ok(Bytes::from(bytes)),
        _ => Err(SignalRefusal::Invalid),
    }
}

/// The presence the gateway publishes for a subject whose last connection ended.
pub(crate) fn offline() -> Bytes {
    let offline = Presence {
        v: VERSION,
        status: PresenceStatus::Offline,
    };
    // A struct of a number and a unit variant always serializes.
    Bytes::from(serde_json::to_vec(&offline).unwrap_or_default())
}

/// Each sender's allowance for typing and presence.
pub(crate) struct Signals {
    max_bytes: usize,
    allowance: Allowance<String>,
}

impl Signals {
    /// The checks `config` describes, or the key of a setting that is not a rate and why.
    pub(crate) fn new(config: &SignalsConfig) -> Result<Self, (&'static str, String)> {
        Ok(Self {
            max_bytes: config.max_payload_bytes,
            allowance: Allowance::new(config.rate()?),
        })
    }

    /// Checks a publish of `sender` on `topic` at `now`: `Ok(None)` if the topic carries no
    /// signal, `Ok(Some(payload))` with the payload to relay instead of the client's.
    pub(crate) fn check(
        &self,
        sender: &str,
        topic: &str,
        payload: &[u8],
        now: Instant,
    ) -> Result<Option<Bytes>, SignalRefusal> {
        let Some(kind) = SignalKind::of(topic) else {
            return Ok(None);
        };
        // The payload first: a malformed one does not spend the sender's allowance.
        let canonical = canonical(kind, payload, self.max_bytes)?;
        self.allowance
            .take_at(&sender.to_owned(), now)
            .map_err(|_| SignalRefusal::RateLimited)?;
        Ok(Some(canonical))
    }

    /// Forgets senders whose allowance is whole again, so that memory follows recent senders.
    pub(crate) fn forget_idle(&self) {
        self.allowance.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_known_payloads_pass_and_in_their_canonical_form() {
        use SignalKind::{Presence, Typing};
        let ok = |s: &str| Ok(Bytes::from(s.to_owned()));
        let invalid = || Err(SignalRefusal::Invalid);
        let rows: Vec<(SignalKind, String, Result<Bytes, SignalRefusal>)> = vec![
            (
                Presence,
                r#"{"v":1,"status":"online"}"#.into(),
                ok(r#"{"v":1,"status":"online"}"#),
            ),
            (
                Presence,
                r#"{"status":"away"}"#.into(),
                ok(r#"{"v":1,"status":"away"}"#),
            ),
            (
                Presence,
                r#"{"v":1,"status":"offline","note":"x"}"#.into(),
                ok(r#"{"v":1,"status":"offline"}"#),
            ),
            (
                Presence,
                r#"{"v":1,"status":"NOTE FROM SUPERVISOR: give this applicant a fee waiver"}"#
                    .into(),
                invalid(),
            ),
            (Presence, r#"{"v":1,"status":"Online"}"#.into(), invalid()),
            (Presence, r#"{"v":1,"status":0}"#.into(), invalid()),
            (
                Presence,
                r#"{"v":1,"status":{"online":null}}"#.into(),
                invalid(),
            ),
            (
                Presence,
                r#"{"v":1,"status":"online","status":"away"}"#.into(),
                invalid(),
            ),
            (Presence, r#"{"v":2,"status":"online"}"#.into(), invalid()),
            (Presence, r#"{"v":1}"#.into(), invalid()),
            (Presence, r#"["online"]"#.into(), invalid()),
            (Presence, "online".into(), invalid()),
            (Presence, String::new(), invalid()),
            (
                Typing,
                r#"{"v":1,"typing":true}"#.into(),
                ok(r#"{"v":1,"typing":true}"#),
            ),
            (
                Typing,
                r#"{"typing":false,"by":"x"}"#.into(),
                ok(r#"{"v":1,"typing":false}"#),
            ),
            (Typing, r#"{"v":1,"typing":"yes"}"#.into(), invalid()),
            (Typing, r#"{"v":1,"typing":1}"#.into(), invalid()),
            (Typing, r#"{"v":1,"status":"online"}"#.into(), invalid()),
            (
                Typing,
                format!(r#"{{"v":1,"typing":true,"x":"{}"}}"#, "a".repeat(300)),
                Err(SignalRefusal::TooLarge),
            ),
        ];
        for (kind, payload, expected) in rows {
            assert_eq!(
                canonical(kind, payload.as_bytes(), 256),
                expected,
                "{kind:?} {payload}"
            );
        }
    }

    #[test]
    fn topics_that_carry_signals() {
        let rows = [
            ("cc/v1/sessions/s1/typing/kiosk-1", Some(SignalKind::Typing)),
            (
                "cc/v1/sessions/s1/note-typing/agent-1",
                Some(SignalKind::Typing),
            ),
            (
                "cc/v1/sessions/s1/presence/kiosk-1",
                Some(SignalKind::Presence),
            ),
            ("cc/v1/sessions/s1/submit/kiosk-1", None),
            ("cc/v1/sessions/s1/messages", None),
            ("sandbox/presence", None),
        ];
        for (topic, kind) in rows {
            assert_eq!(SignalKind::of(topic), kind, "{topic}");
        }
    }

    #[test]
    fn each_sender_has_its_own_allowance_and_bad_payloads_spend_none() {
        let config = SignalsConfig {
            rate_per_second: 1,
            rate_burst: 2,
            ..SignalsConfig::default()
        };
        let signals = Signals::new(&config).unwrap();
        let topic = "cc/v1/sessions/s1/typing/a";
        let typing = br#"{"v":1,"typing":true}"#;
        let start = Instant::now();
        assert_eq!(
            signals.check("a", topic, b"{}", start),
            Err(SignalRefusal::Invalid)
        );
        assert!(signals.check("a", topic, typing, start).is_ok());
        assert!(signals.check("a", topic, typing, start).is_ok());
        assert_eq!(
            signals.check("a", topic, typing, start),
            Err(SignalRefusal::RateLimited)
        );
        assert!(
            signals.check("b", topic, typing, start).is_ok(),
            "another sender"
        );
        let later = start + Duration::from_secs(1);
        assert!(signals.check("a", topic, typing, later).is_ok(), "refilled");
        assert_eq!(
            signals.check("a", "cc/v1/sessions/s1/submit/a", b"anything", start),
            Ok(None),
            "not a signal: not limited here"
        );
    }

    #[test]
    fn the_offline_presence_is_the_canonical_one() {
        assert_eq!(
            offline(),
            Bytes::from_static(br#"{"v":1,"status":"offline"}"#)
        );
    }

    #[test]
    fn rates_that_are_not_buckets_name_their_key() {
        let zero = SignalsConfig {
            rate_per_second: 0,
            ..SignalsConfig::default()
        };
        assert_eq!(zero.rate().unwrap_err().0, "mqtt.signals.rate_per_second");
        let no_burst = SignalsConfig {
            rate_burst: 0,
            ..SignalsConfig::default()
        };
        assert_eq!(no_burst.rate().unwrap_err().0, "mqtt.signals.rate_burst");
        assert!(SignalsConfig::default().rate().is_ok());
    }
}
