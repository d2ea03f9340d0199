//! The audit trail's wiring: where its key comes from, and how the gateway's denials reach it.
//!
//! `bridge` owns the trail and knows nothing of the gateway, and `broker` knows nothing of the
//! trail; this module, in the crate that composes both, joins them. The key is read here (inline,
//! or from `audit.key_file`, created on first start with the same secret-file rules as the token
//! key), and [`DenialHook`] is the broker hook that turns each of the gateway's denial records
//! into an entry for [`bridge::AuditRecorder`].

use std::sync::Arc;

/// Why the audit trail could not be opened or checked.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// `audit.key_file` could not be read or created.
    #[error(transparent)]
    KeyFile(#[from] broker::KeyError),
    #[error(transparent)]
    Trail(#[from] bridge::AuditError),
}

/// The audit key `config` names: the inline `key`, or else the contents of `key_file`, created
/// with 32 random bytes (readable only by its owner) if it does not exist.
pub fn audit_key(config: &bridge::AuditConfig) -> Result<bridge::AuditKey, AuditError> {
    let secret = if config.key.is_empty() {
        broker::load_or_create_secret(&config.key_file, "audit.key_file")?
    } else {
        config.key.as_bytes().to_vec()
    };
    Ok(bridge::AuditKey::from_secret(&secret)?)
}

/// The audit trail in `store`, chained with the key `config` names.
pub(crate) async fn open_trail(
    store: &store::Store,
    config: &bridge::AuditConfig,
) -> Result<bridge::AuditTrail, AuditError> {
    Ok(bridge::AuditTrail::open(store, audit_key(config)?).await?)
}

/// The gateway's hook that records its refusals and denials on the audit trail: each record
/// the gateway makes of them (the first of an address's or subject's window whole, then the
/// count of the rest) becomes one entry, its text already bounded by the gateway.
pub(crate) struct DenialHook(pub Arc<bridge::AuditRecorder>);

impl broker::Hook for DenialHook {
    fn on_denial_record(&self, record: &broker::DenialRecord) {
        match record {
            broker::DenialRecord::Single(denial) => self.0.denial(denial_entry(denial)),
            broker::DenialRecord::Folded(folded) => {
                self.0.folded(folded_entry(folded), folded.count)
            }
        }
    }
}

/// The entry of one denial: `mqtt.connect.denied`, `mqtt.publish.denied` or
/// `mqtt.subscribe.denied`, by the client id offered or the subject, on the session the topic
/// names (so that a session's audit view includes attempts on it). A field the gateway cut
/// keeps its original length beside it (`…_len`).
fn denial_entry(denial: &broker::Denial) -> bridge::AuditEntry {
    let mut detail = serde_json::Map::new();
    detail.insert("address".to_owned(), denial.peer.to_string().into());
    if let Some(target) = &denial.target {
        let name = target_name(denial.kind);
        bounded_field(&mut detail, name, target);
    }
    bounded_field(&mut detail, "reason", &denial.reason);
    if denial.actor.truncated() {
        detail.insert("actor_len".to_owned(), denial.actor.len.into());
    }
    bridge::AuditEntry {
        actor: denial.actor.text.clone(),
        action: format!("mqtt.{}.denied", denial.kind.as_str()),
        session_id: denial
            .target
            .as_ref()
            .and_then(|target| session_of(&target.text)),
        detail: detail.into(),
    }
}

/// The entry that counts the denials a window folded (`mqtt.connect.denied.folded`, ...), by
/// the address or subject they came from, with the last of them as an example.
fn folded_entry(folded: &broker::FoldedDenials) -> bridge::AuditEntry {
    let last = denial_entry(&folded.last);
    bridge::AuditEntry {
        actor: folded.by.to_string(),
        action: format!("mqtt.{}.denied.folded", folded.kind.as_str()),
        session_id: None,
        detail: serde_json::json!({
            "count": folded.count,
            "first_at": chrono::DateTime::<chrono::Utc>::from(folded.first_at).to_rfc3339(),
            "last_at": chrono::DateTime::<chrono::Utc>::from(folded.last_at).to_rfc3339(),
            "last": { "actor": last.actor, "detail": last.detail },
        }),
    }
}

fn target_name(kind: broker::DenialKind) -> &'static str {
    match kind {
        broker::DenialKind::Subscribe => "filter",
        broker::DenialKind::Connect | broker::DenialKind::Publish => "topic",
    }
}

fn bounded_field(
    detail: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    value: &broker::Bounded,
) {
    detail.insert(name.to_owned(), value.text.clone().into());
    if value.truncated() {
        detail.insert(format!("{name}_len"), value.len.into());
    }
}

/// The session a topic or filter names.
fn session_of(topic: &str) -> Option<String> {
    match schemas::topics::Topic::parse(topic) {
        Some(schemas::topics::Topic::Session { session, .. }) => Some(session.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_inline_or_read_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys/audit-key");
        let from_file = bridge::AuditConfig {
            key: String::new(),
            key_file: file.clone(),
            ..Default::default()
        };
        audit_key(&from_file).expect("created on first use");
        let created = std::fs::read(&file).unwrap();
        assert_eq!(created.len(), 32);
        audit_key(&from_file).expect("read when it exists");
        assert_eq!(std::fs::read(&file).unwrap(), created, "never overwritten");

        let inline = bridge::AuditConfig {
            key: "an-inline-audit-key-of-32-bytes-or-more".to_owned(),
            key_file: dir.path().join("unused"),
            ..Default::default()
        };
        audit_key(&inline).expect("an inline key");
        assert!(
            !dir.path().join("unused").exists(),
            "an inline key reads no file"
        );

        let short = bridge::AuditConfig {
            key: "short".to_owned(),
            ..inline
        };
        assert!(matches!(
            audit_key(&short),
            Err(AuditError::Trail(bridge::AuditError::ShortKey))
        ));
    }
}
