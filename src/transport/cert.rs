//! Diagnosis of a refused server certificate (issue #11): which trust
//! store was used, and who the certificate the server sent says it is and
//! who issued it. The certificate is parsed only after verification has
//! failed, so the handshake's hot path pays nothing for this.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{format_fingerprint, ring_sha256};

/// Longest subject or issuer text kept (a hostile certificate can carry
/// names of any length).
const MAX_NAME: usize = 300;

/// What the server certificate was checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustStore {
    /// `tls_ca_file`.
    CaFile(PathBuf),
    /// The distribution's bundle, read directly (setgid runs).
    SystemBundle(PathBuf),
    /// The system store (rustls-native-certs: SSL_CERT_FILE, SSL_CERT_DIR
    /// or the platform default).
    System,
    /// `tls_fingerprint`: the pin replaces CA verification.
    Pin,
}

impl fmt::Display for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustStore::CaFile(p) => write!(f, "tls_ca_file {}", p.display()),
            TrustStore::SystemBundle(p) => write!(f, "the system store ({})", p.display()),
            TrustStore::System => f.write_str("the system store"),
            TrustStore::Pin => f.write_str("the configured tls_fingerprint"),
        }
    }
}

/// Why a server certificate was refused, with what a human needs to
/// decide whom to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertProblem {
    /// rustls's classification (`UnknownIssuer`, `Expired`, …).
    pub reason: String,
    pub trust: TrustStore,
    /// Subject and issuer of the end-entity certificate, RFC 4514-ish
    /// (`CN=mail.example.com, O=Example`); control characters removed.
    pub subject: String,
    pub issuer: String,
    /// SHA-256 of the end-entity certificate's DER.
    pub fingerprint: [u8; 32],
}

impl CertProblem {
    /// Describes `der`, the certificate the server sent. Names that cannot
    /// be parsed read "(unparsable)"; the fingerprint is always known.
    pub(crate) fn describe(reason: String, trust: TrustStore, der: &[u8]) -> CertProblem {
        let (subject, issuer) = match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => (
                clean(&cert.subject().to_string()),
                clean(&cert.issuer().to_string()),
            ),
            Err(_) => ("(unparsable)".to_string(), "(unparsable)".to_string()),
        };
        CertProblem {
            reason,
            trust,
            subject,
            issuer,
            fingerprint: ring_sha256(der),
        }
    }

    /// The fingerprint as `tls_fingerprint` takes it (`sha256:AB:CD:…`).
    pub fn fingerprint_text(&self) -> String {
        format_fingerprint(&self.fingerprint)
    }
}

impl fmt::Display for CertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server sent a certificate for \"{}\" issued by \"{}\" ({}), checked against {}",
            self.subject,
            self.issuer,
            self.fingerprint_text(),
            self.trust
        )
    }
}

impl std::error::Error for CertProblem {}

/// Control characters out, length bounded.
fn clean(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_NAME)
        .collect();
    if s.chars().count() > MAX_NAME {
        out.push('…');
    }
    out
}

/// Where the verifier leaves the end-entity certificate it refused, for
/// the error path to describe after the handshake has failed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rejected(Arc<Mutex<Option<Refused>>>);

/// A refused certificate (DER) and rustls's reason.
type Refused = (Vec<u8>, String);

impl Rejected {
    /// Keeps `der` and why it was refused.
    pub fn record(&self, der: &[u8], reason: String) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((der.to_vec(), reason));
        }
    }

    pub fn take(&self) -> Option<Refused> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_and_bounded() {
        assert_eq!(clean("CN=a\x1b[31m"), "CN=a [31m");
        let long = "x".repeat(1000);
        assert_eq!(clean(&long).chars().count(), MAX_NAME + 1);
    }

    #[test]
    fn garbage_is_described_without_panicking() {
        let p = CertProblem::describe("UnknownIssuer".into(), TrustStore::System, b"\x30\x03abc");
        assert_eq!(p.subject, "(unparsable)");
        assert_eq!(p.fingerprint, ring_sha256(b"\x30\x03abc"));
        let text = p.to_string();
        assert!(text.contains("checked against the system store"), "{text}");
        assert!(text.contains(&p.fingerprint_text()), "{text}");
    }

    #[test]
    fn trust_store_texts() {
        assert_eq!(
            TrustStore::CaFile("/etc/x.pem".into()).to_string(),
            "tls_ca_file /etc/x.pem"
        );
        assert!(
            TrustStore::SystemBundle("/etc/ssl/cert.pem".into())
                .to_string()
                .contains("system store")
        );
    }
}
