//! The one typed configuration of a courtchat process.
//!
//! Layers, each overriding the one before: the defaults compiled into the binary (the `Default`
//! impls of each section), an optional TOML file, then `COURTCHAT_*` environment variables with
//! `__` between nested keys (`COURTCHAT_MQTT__TCP__LISTEN=0.0.0.0:1883`). Unknown keys and
//! invalid values are refused with an error naming the key. There is no global: a test may hold
//! two configurations, and two servers, in one process.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Environment variables under this prefix belong to the test suite (for example
/// `COURTCHAT_TEST_POSTGRES_URL`) and are not configuration.
const TEST_ENV_PREFIX: &str = "COURTCHAT_TEST_";
const ENV_PREFIX: &str = "COURTCHAT";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// MQTT listeners and limits.
    pub mqtt: broker::BrokerConfig,
    /// The HTTP admin and health API.
    pub admin: admin_api::AdminConfig,
    /// Where conversations are stored.
    pub database: store::DatabaseConfig,
    /// The key of the tamper-evident audit trail.
    pub audit: bridge::AuditConfig,
    /// The chat pipeline.
    pub bridge: bridge::BridgeConfig,
    /// The purge of closed sessions' content past their retention policy.
    pub retention: bridge::RetentionConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `courtchat=debug,broker=debug`. `RUST_LOG`, when set,
    /// takes precedence.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {message}")]
    File { path: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid value for `{key}`: {reason}")]
    Value { key: &'static str, reason: String },
}

impl Config {
    /// Builds the effective configuration from the defaults, `file` and the `env` pairs
    /// (pass `std::env::vars()` in a binary, a fixed list in a test).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let defaults = config::Config::try_from(&Config::default())
            .map_err(|err| ConfigError::Invalid(err.to_string()))?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::File {
                    path: path.display().to_string(),
                    message: "not found".to_owned(),
                });
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(key, _)| key.starts_with("COURTCHAT_") && !key.starts_with(TEST_ENV_PREFIX))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let layered = builder.build().map_err(|err| describe(err, file))?;
        let config: Config = layered
            .try_deserialize()
            .map_err(|err| describe(err, file))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Value {
            key,
            reason: reason.to_owned(),
        };
        store::Backend::of(&self.database.url)
            .map_err(|err| invalid("database.url", &err.to_string()))?;
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if !self.mqtt.websocket.path.starts_with('/') {
            return Err(invalid("mqtt.websocket.path", "must start with '/'"));
        }
        if self.mqtt.max_connections == 0 {
            return Err(invalid("mqtt.max_connections", "must be at least 1"));
        }
        // Below this not even a CONNECT with a short client id and a token fits.
        if self.mqtt.max_packet_size < 1024 {
            return Err(invalid(
                "mqtt.max_packet_size",
                "must be at least 1024 bytes",
            ));
        }
        if self.mqtt.max_client_id_len == 0 || self.mqtt.max_client_id_len > 128 {
            return Err(invalid(
                "mqtt.max_client_id_len",
                "must be between 1 and 128",
            ));
        }
        if self.bridge.max_body_bytes == 0 || self.bridge.max_body_bytes > self.mqtt.max_packet_size
        {
            return Err(invalid(
                "bridge.max_body_bytes",
                "must be between 1 and mqtt.max_packet_size",
            ));
        }
        if !(self.bridge.rate_per_second > 0.0 && self.bridge.rate_burst >= 1.0) {
            return Err(invalid(
                "bridge.rate_per_second",
                "the rate must be positive and the burst at least 1",
            ));
        }
        for (key, per_second, burst) in [
            (
                "bridge.receipt_rate_per_second",
                self.bridge.receipt_rate_per_second,
                self.bridge.receipt_rate_burst,
            ),
            (
                "bridge.resync_rate_per_second",
                self.bridge.resync_rate_per_second,
                self.bridge.resync_rate_burst,
            ),
        ] {
            if !(per_second > 0.0 && per_second <= 1e9 && burst >= 1.0) {
                return Err(invalid(
                    key,
                    "the rate must be positive and the burst at least 1",
                ));
            }
        }
        if self.bridge.resync_bytes_per_second == 0 {
            return Err(invalid(
                "bridge.resync_bytes_per_second",
                "must be at least 1",
            ));
        }
        // A budget smaller than a page would refuse every full page for good.
        if self.bridge.resync_bytes_burst < self.bridge.resync_page_bytes as u64
            || self.bridge.resync_bytes_burst > u64::from(u32::MAX)
        {
            return Err(invalid(
                "bridge.resync_bytes_burst",
                "must be between bridge.resync_page_bytes and 4294967295",
            ));
        }
        if self.bridge.max_open_sessions_per_applicant == 0 {
            return Err(invalid(
                "bridge.max_open_sessions_per_applicant",
                "must be at least 1",
            ));
        }
        if self.bridge.lock_lease_secs == 0 {
            return Err(invalid("bridge.lock_lease_secs", "must be at least 1"));
        }
        if self.retention.batch_sessions == 0 {
            return Err(invalid("retention.batch_sessions", "must be at least 1"));
        }
        if self.bridge.batch_max == 0 {
            return Err(invalid("bridge.batch_max", "must be at least 1"));
        }
        // Applicant tokens are handed to anyone who asks (within the limits): they are meant
        // to run out, and a day is already long for a kiosk's conversation.
        if !(1..=86_400).contains(&self.admin.applicant_token_ttl_secs) {
            return Err(invalid(
                "admin.applicant_token_ttl_secs",
                "must be between 1 and 86400 seconds",
            ));
        }
        // Renewal keeps an applicant identity alive: a week bounds how long one can be, and
        // so what a copied token could be stretched to.
        if self.admin.applicant_renewable_secs > 7 * 86_400 {
            return Err(invalid(
                "admin.applicant_renewable_secs",
                "must be at most 604800 seconds (a week); 0 turns renewal off",
            ));
        }
        // The kiosk page's timers: zero would clear a conversation as it starts, and a
        // browser's timer cannot wait much beyond 24 days (a day is plenty).
        for (key, secs) in [
            ("admin.kiosk_idle_secs", self.admin.kiosk_idle_secs),
            (
                "admin.kiosk_idle_warning_secs",
                self.admin.kiosk_idle_warning_secs,
            ),
        ] {
            if !(1..=86_400).contains(&secs) {
                return Err(invalid(key, "must be between 1 and 86400 seconds"));
            }
        }
        // The pages hand it to MQTT.js as is; anything but a WebSocket URL would fail in every
        // browser, long after the operator could have been told.
        if let Some(url) = &self.admin.mqtt_websocket_url
            && !(url.starts_with("ws://") || url.starts_with("wss://"))
        {
            return Err(invalid(
                "admin.mqtt_websocket_url",
                "must be a ws:// or wss:// URL",
            ));
        }
        // Zero would close every connection before its first request could arrive.
        let read_max = admin_api::AdminConfig::READ_TIMEOUT_MAX_SECS;
        if !(1..=read_max).contains(&self.admin.request_read_timeout_secs) {
            return Err(invalid(
                "admin.request_read_timeout_secs",
                &format!("must be between 1 and {read_max} seconds"),
            ));
        }
        let connections_max = admin_api::AdminConfig::MAX_CONNECTIONS_MAX;
        if !(1..=connections_max).contains(&self.admin.max_connections) {
            return Err(invalid(
                "admin.max_connections",
                &format!("must be between 1 and {connections_max}"),
            ));
        }
        // A token from further ahead than this is no clock skew, and would outlive revocations.
        if self.mqtt.auth.iat_leeway > 3600 {
            return Err(invalid(
                "mqtt.auth.iat_leeway",
                "must be at most 3600 seconds",
            ));
        }
        if self.mqtt.connect_timeout.is_zero() {
            return Err(invalid("mqtt.connect_timeout", "must be at least 1 second"));
        }
        // Zero would forget a session as it closes, before its applicant can answer the survey.
        if self.mqtt.closed_sessions_kept == 0 {
            return Err(invalid("mqtt.closed_sessions_kept", "must be at least 1"));
        }
        if self.mqtt.pipeline_queue_wait_secs == 0 {
            return Err(invalid(
                "mqtt.pipeline_queue_wait_secs",
                "must be at least 1 second",
            ));
        }
        let tls = &self.mqtt.tls;
        if tls.enabled() && tls.key_file.as_os_str().is_empty() {
            return Err(invalid(
                "mqtt.tls.key_file",
                "is required when mqtt.tls.cert_file is set",
            ));
        }
        for rule in &self.mqtt.acl.rules {
            rule.validate()
                .map_err(|reason| invalid("mqtt.acl.rules", &reason))?;
        }
        self.mqtt
            .check()
            .map_err(|(key, reason)| invalid(key, &reason))?;
        self.admin
            .oidc
            .check()
            .map_err(|(key, reason)| invalid(key, &reason))?;
        if !self.admin.password_sign_in && !self.admin.oidc.enabled() {
            return Err(invalid(
                "admin.password_sign_in",
                "staff need a way to sign in: keep it, or configure admin.oidc",
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.filter)
            .map_err(|err| invalid("log.filter", &err.to_string()))?;
        Ok(())
    }

    /// A copy that is safe to print: passwords in URLs are replaced.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        copy.database.url = redact_url(&copy.database.url);
        if !copy.mqtt.auth.secret.is_empty() {
            copy.mqtt.auth.secret = "REDACTED".to_owned();
        }
        if !copy.audit.key.is_empty() {
            copy.audit.key = "REDACTED".to_owned();
        }
        if !copy.admin.oidc.client_secret.is_empty() {
            copy.admin.oidc.client_secret = "REDACTED".to_owned();
        }
        copy
    }

    /// The configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        // Serializing plain structs of strings, numbers and tables cannot fail.
        toml::to_string_pretty(&self.redacted())
            .unwrap_or_else(|err| format!("# cannot render configuration: {err}\n"))
    }
}

fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        _ => raw.to_owned(),
    }
}

/// The config crate reports unknown fields without the section they were found in
/// ("unknown field `lisen`, expected `listen`"); that is clear enough with the file named.
fn describe(err: config::ConfigError, file: Option<&Path>) -> ConfigError {
    match (err, file) {
        (config::ConfigError::FileParse { uri, cause }, _) => ConfigError::File {
            path: uri.unwrap_or_default(),
            message: cause.to_string(),
        },
        (other, Some(path)) => ConfigError::File {
            path: path.display().to_string(),
            message: other.to_string(),
        },
        (other, None) => ConfigError::Invalid(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_without_file_or_env() {
        assert_eq!(Config::load(None, env(&[])).unwrap(), Config::default());
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let config = Config::load(
            None,
            env(&[
                ("COURTCHAT_MQTT__TCP__LISTEN", "0.0.0.0:11883"),
                ("COURTCHAT_DATABASE__MAX_CONNECTIONS", "3"),
                ("COURTCHAT_LOG__FILTER", "debug"),
                // Belongs to the test suite, not to the configuration.
                ("COURTCHAT_TEST_POSTGRES_URL", "postgres://127.0.0.1/test"),
                // Not ours at all.
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.mqtt.tcp.listen.port(), 11883);
        assert_eq!(config.database.max_connections, 3);
        assert_eq!(config.log.filter, "debug");
    }

    #[test]
    fn errors_name_the_key() {
        let rows: &[(&str, &str, &str)] = &[
            (
                "COURTCHAT_MQTT__TCP__LISTEN",
                "not-an-address",
                "mqtt.tcp.listen",
            ),
            ("COURTCHAT_MQTT__TCP__LISTN", "0.0.0.0:1", "listn"),
            ("COURTCHAT_DATABSE__URL", "sqlite://x.db", "databse"),
            (
                "COURTCHAT_DATABASE__URL",
                "mysql://localhost/x",
                "database.url",
            ),
            (
                "COURTCHAT_MQTT__WEBSOCKET__PATH",
                "mqtt",
                "mqtt.websocket.path",
            ),
            (
                "COURTCHAT_MQTT__MAX_PACKET_SIZE",
                "12",
                "mqtt.max_packet_size",
            ),
            ("COURTCHAT_ADMIN__LISTEN", "127.0.0.1:99999", "admin.listen"),
            (
                "COURTCHAT_ADMIN__APPLICANT_TOKEN_TTL_SECS",
                "0",
                "admin.applicant_token_ttl_secs",
            ),
            (
                "COURTCHAT_ADMIN__APPLICANT_TOKENS_PER_ADDRESS",
                "0",
                "applicant_tokens_per_address",
            ),
            (
                "COURTCHAT_ADMIN__KIOSK_IDLE_SECS",
                "0",
                "admin.kiosk_idle_secs",
            ),
            (
                "COURTCHAT_ADMIN__KIOSK_IDLE_WARNING_SECS",
                "86401",
                "admin.kiosk_idle_warning_secs",
            ),
            (
                "COURTCHAT_MQTT__AUTH__IAT_LEEWAY",
                "3601",
                "mqtt.auth.iat_leeway",
            ),
            (
                "COURTCHAT_ADMIN__LOGIN_ATTEMPTS_PER_ACCOUNT_AND_ADDRESS",
                "0",
                "login_attempts_per_account_and_address",
            ),
            (
                "COURTCHAT_ADMIN__MQTT_WEBSOCKET_URL",
                "https://chat.example.org/mqtt",
                "admin.mqtt_websocket_url",
            ),
            (
                "COURTCHAT_ADMIN__REQUEST_READ_TIMEOUT_SECS",
                "0",
                "admin.request_read_timeout_secs",
            ),
            (
                "COURTCHAT_ADMIN__MAX_CONNECTIONS",
                "0",
                "admin.max_connections",
            ),
            (
                "COURTCHAT_ADMIN__REQUESTS_PER_SUBJECT",
                "0",
                "requests_per_subject",
            ),
            ("COURTCHAT_LOG__FILTER", "=[", "log.filter"),
            (
                "COURTCHAT_MQTT__CLOSED_SESSIONS_KEPT",
                "0",
                "mqtt.closed_sessions_kept",
            ),
            (
                "COURTCHAT_MQTT__CLOSED_SESSION_ACCESS_SECS",
                "-1",
                "mqtt.closed_session_access_secs",
            ),
            (
                "COURTCHAT_MQTT__PIPELINE_QUEUE_WAIT_SECS",
                "0",
                "mqtt.pipeline_queue_wait_secs",
            ),
            (
                "COURTCHAT_MQTT__DENIALS__FOLD_WINDOW_SECS",
                "0",
                "mqtt.denials.fold_window_secs",
            ),
            (
                "COURTCHAT_MQTT__DENIALS__MAX_FIELD_BYTES",
                "4",
                "mqtt.denials.max_field_bytes",
            ),
            (
                "COURTCHAT_MQTT__DENIALS__MAX_TRACKED",
                "0",
                "mqtt.denials.max_tracked",
            ),
            (
                "COURTCHAT_MQTT__SIGNALS__RATE_PER_SECOND",
                "0",
                "mqtt.signals.rate_per_second",
            ),
            (
                "COURTCHAT_MQTT__SIGNALS__RATE_BURST",
                "0",
                "mqtt.signals.rate_burst",
            ),
            (
                "COURTCHAT_MQTT__SIGNALS__MAX_PAYLOAD_BYTES",
                "10",
                "mqtt.signals.max_payload_bytes",
            ),
            (
                "COURTCHAT_MQTT__TLS__CERT_FILE",
                "/etc/cc/cert.pem",
                "mqtt.tls.key_file",
            ),
            (
                "COURTCHAT_BRIDGE__RESYNC_RATE_PER_SECOND",
                "0",
                "bridge.resync_rate_per_second",
            ),
            (
                "COURTCHAT_BRIDGE__RECEIPT_RATE_BURST",
                "0.5",
                "bridge.receipt_rate_per_second",
            ),
            (
                "COURTCHAT_BRIDGE__RESYNC_BYTES_BURST",
                "1024",
                "bridge.resync_bytes_burst",
            ),
            (
                "COURTCHAT_BRIDGE__MAX_OPEN_SESSIONS_PER_APPLICANT",
                "0",
                "bridge.max_open_sessions_per_applicant",
            ),
        ];
        for (key, value, named) in rows {
            let err = Config::load(None, env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(named),
                "{key}={value}: {err:?} does not name {named}"
            );
        }
    }

    #[test]
    fn static_rules_are_validated_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        std::fs::write(
            &file,
            "[[mqtt.acl.rules]]\nrole = \"agent\"\nclient = \"x\"\naccess = \"read\"\ntopic = \"a/#\"\neffect = \"allow\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("mqtt.acl.rules") && err.contains("exactly one"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn redaction_hides_database_passwords() {
        let mut config = Config::default();
        config.database.url = "postgres://courtchat:s3cret@db.internal:5432/courtchat".to_owned();
        config.mqtt.auth.secret = "an-inline-token-secret-of-32-bytes-or-more".to_owned();
        let printed = config.to_redacted_toml();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(!printed.contains("an-inline-token-secret"), "{printed}");
        assert!(
            printed.contains("postgres://courtchat:REDACTED@db.internal:5432/courtchat"),
            "{printed}"
        );
    }
}
