//! STARTTLS for the SMTP server: the certificate and key from `[smtpd]`.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::config;
use crate::exit::Exit;

use super::super::failure::Failure;

/// The TLS server configuration, when `[smtpd]` names a certificate.
pub(super) fn server_config(s: &config::Smtpd) -> Result<Option<Arc<ServerConfig>>, Failure> {
    let (Some(cert), Some(key)) = (&s.tls_cert_file, &s.tls_key_file) else {
        return Ok(None);
    };
    let fail = |what: &str, path: &std::path::Path, e: String| {
        Failure::new(
            Exit::Config,
            format!(
                "[smtpd] {what} {}: {e}; it must be a PEM file readable by this user",
                path.display()
            ),
        )
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail("tls_cert_file", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail("tls_cert_file", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(fail("tls_cert_file", cert, "no certificate in it".into()));
    }
    // The key's content never reaches an error message: only its path.
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| fail("tls_key_file", key, "no usable private key in it".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::new(Exit::Software, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            Failure::new(
                Exit::Config,
                format!("[smtpd] TLS certificate and key: {e}"),
            )
        })?;
    Ok(Some(Arc::new(config)))
}

/// The server side of the handshake over `stream` (whose reads are
/// bounded by the session's deadlines).
pub(super) fn accept<S: Read + Write>(
    config: Arc<ServerConfig>,
    mut stream: S,
) -> io::Result<StreamOwned<ServerConnection, S>> {
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut stream)?;
    }
    Ok(StreamOwned::new(conn, stream))
}
