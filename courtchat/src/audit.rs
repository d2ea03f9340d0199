//! The audit trail's wiring: where its key comes from, and how the gateway's denials reach it.
//!
//! `bridge` owns the trail and knows nothing of the gateway, and `broker` knows nothing of the
//! trail; this module, in the crate that composes both, joins them. The key is read here (inline,
//! or from `audit.key_file`, created on first start with the same secret-file rules as the token
//! key), and [`DenialHook`] is the broker hook that hands each denial to
//! [`bridge::AuditRecorder`].

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

/// The gateway's hook that records its refusals and denials on the audit trail.
pub(crate) struct DenialHook(pub Arc<bridge::AuditRecorder>);

impl broker::Hook for DenialHook {
    fn on_denied(&self, denial: &broker::Denial) {
        match denial {
            broker::Denial::Connect { client_id, reason } => {
                self.0.refused_connect(client_id, reason)
            }
            broker::Denial::Publish {
                subject,
                topic,
                reason,
            } => self.0.denied_publish(subject, topic, reason),
            broker::Denial::Subscribe {
                subject,
                filter,
                reason,
            } => self.0.denied_subscribe(subject, filter, reason),
        }
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
