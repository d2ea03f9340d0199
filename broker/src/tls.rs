//! The TLS server configuration, loaded once at start from the configured PEM files.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct TlsError {
    pub key: &'static str,
    pub reason: String,
}

/// Builds the acceptor, or `None` when no certificate is configured.
pub(crate) fn acceptor(config: &TlsConfig) -> Result<Option<TlsAcceptor>, TlsError> {
    if !config.enabled() {
        return Ok(None);
    }
    let certs = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| TlsError {
            key: "mqtt.tls.cert_file",
            reason: format!("{}: {err}", config.cert_file.display()),
        })?;
    if certs.is_empty() {
        return Err(TlsError {
            key: "mqtt.tls.cert_file",
            reason: format!("{} holds no certificate", config.cert_file.display()),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file).map_err(|err| TlsError {
        key: "mqtt.tls.key_file",
        reason: format!("{}: {err}", config.key_file.display()),
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|err| TlsError {
            key: "mqtt.tls.key_file",
            reason: format!("the key does not fit the certificate: {err}"),
        })?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}
