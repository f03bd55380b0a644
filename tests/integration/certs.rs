//! A throwaway test PKI (rcgen, ring backend), written as PEM files:
//!
//! | file                          | what                                               |
//! |-------------------------------|----------------------------------------------------|
//! | `ca.pem` / `ca.key`           | the test CA (trust anchor)                         |
//! | `server.pem` / `server.key`   | leaf for `localhost` and IP 127.0.0.1, CA-signed   |
//! | `wrong.pem` / `wrong.key`     | leaf for `wrong.example` only, CA-signed           |
//! | `expired.pem` / `expired.key` | leaf for localhost/127.0.0.1, CA-signed, expired   |
//! | `self.pem` / `self.key`       | self-signed leaf for localhost/127.0.0.1 (no CA)   |
//! | `client.pem` / `client.key`   | client-auth leaf (CN `mailhop-test-client`), CA-signed |
//!
//! Leaf files hold the leaf certificate only, not the chain; keys are
//! PKCS#8 ECDSA P-256 (`-----BEGIN PRIVATE KEY-----`).

// Helpers for tests that are still being written.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug)]
pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    /// Generates every certificate and key into `dir` (created if missing).
    pub fn create(dir: &Path) -> TestPki {
        std::fs::create_dir_all(dir).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();

        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mailhop test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        write("ca.pem", &ca_cert.pem());
        write("ca.key", &ca_key.serialize_pem());
        let ca = Issuer::new(ca_params, ca_key);

        let leaves = [
            Leaf::server("server", &["localhost", "127.0.0.1"]),
            Leaf::server("wrong", &["wrong.example"]),
            Leaf {
                expired: true,
                ..Leaf::server("expired", &["localhost", "127.0.0.1"])
            },
            Leaf {
                ca_signed: false,
                ..Leaf::server("self", &["localhost", "127.0.0.1"])
            },
            Leaf {
                cn: "mailhop-test-client",
                eku: ExtendedKeyUsagePurpose::ClientAuth,
                ..Leaf::server("client", &[])
            },
        ];
        for leaf in leaves {
            let key = KeyPair::generate().unwrap();
            let sans: Vec<String> = leaf.sans.iter().map(|s| s.to_string()).collect();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, leaf.cn);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![leaf.eku];
            if leaf.expired {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2020, 1, 2);
            }
            let cert = if leaf.ca_signed {
                params.use_authority_key_identifier_extension = true;
                params.signed_by(&key, &ca).unwrap()
            } else {
                params.self_signed(&key).unwrap()
            };
            write(&format!("{}.pem", leaf.stem), &cert.pem());
            write(&format!("{}.key", leaf.stem), &key.serialize_pem());
        }
        TestPki {
            dir: dir.to_path_buf(),
        }
    }

    /// `<dir>/<name>`, e.g. `pki.path("server.pem")`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The DER of the first PEM block in `<dir>/<pem_name>`.
    pub fn der(&self, pem_name: &str) -> Vec<u8> {
        let text = std::fs::read_to_string(self.path(pem_name)).unwrap();
        let body: String = text
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN "))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END "))
            .collect();
        base64_decode(body.trim())
    }

    /// `"sha256:AB:CD:…"`: SHA-256 of the certificate's DER, uppercase hex.
    pub fn sha256_fingerprint(&self, pem_name: &str) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.der(pem_name));
        let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        format!("sha256:{}", hex.join(":"))
    }
}

/// One end-entity certificate to issue.
struct Leaf {
    stem: &'static str,
    sans: &'static [&'static str],
    cn: &'static str,
    eku: ExtendedKeyUsagePurpose,
    expired: bool,
    ca_signed: bool,
}

impl Leaf {
    /// A valid, CA-signed server certificate; CN = the first SAN.
    fn server(stem: &'static str, sans: &'static [&'static str]) -> Leaf {
        Leaf {
            stem,
            sans,
            cn: sans.first().copied().unwrap_or(stem),
            eku: ExtendedKeyUsagePurpose::ServerAuth,
            expired: false,
            ca_signed: true,
        }
    }
}

/// Standard base64 (with padding, whitespace ignored); test-only, panics on
/// bad input.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c:#x}"),
        }
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
