//! DKIM signing of outgoing mail (RFC 6376, RSA-SHA256 and Ed25519-SHA256
//! per RFC 8463), plus the two operator commands around it: [`keygen`]
//! (what opendkim-genkey does) and [`check`] (what opendkim-testkey does).
//!
//! Signing is split between mail-auth and ring on purpose:
//! - the body hash is computed while the body streams through mail-auth's
//!   incremental `BodyHasher`, in fixed-size chunks, so a 50 MB body costs
//!   one 64 KiB buffer, not 50 MB. mail-auth also offers a whole streaming
//!   signer (`DkimSigner::sign_streaming`), but it reads the clock itself
//!   for `t=`, and tests need the time injected (`now_unix`);
//! - header canonicalisation and the `DKIM-Signature` field's layout also
//!   come from mail-auth (its verifier-tested code), fed with the field
//!   instances chosen here: which names go into `h=`, in which order, and
//!   one extra entry per oversigned name, so that a field of that name
//!   added after signing breaks the signature;
//! - the signature itself is computed with ring. ring refuses RSA moduli
//!   under 2048 bits, which RFC 8301 still allows (down to 1024), so those
//!   legacy keys are signed with the RustCrypto `rsa` crate, with a warning.
//!
//! Private keys are read like password files (see `credentials`): opened
//! without following a final symbolic link, checked on the descriptor, and
//! refused if other users could read them. Key bytes live in zeroised
//! buffers and never appear in `Debug` output or in error messages.
//!
//! [`check`] is the only function that uses the network: TXT lookups
//! through the stub resolver in `dns`.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::dkim::canonicalize::BodyHasher;
use mail_auth::dkim::{Canonicalization, Signature};
use nix::libc;
use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};

use crate::dns::{Resolver, Txt};
use zeroize::Zeroizing;

use crate::message::header::{Header, HeaderError};

/// The fields signed by default: RFC 6376 §5.4.1's recommended set, plus
/// Message-ID, MIME-Version, Content-Type and Content-Transfer-Encoding
/// (RFC 4871's list), because changing those changes what the recipient
/// sees or how replies thread. Only the ones present are signed.
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-Date",
    "Resent-From",
    "Resent-To",
    "Resent-Cc",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Oversigned by default: a second From added in transit is the classic
/// way to make a signed message display another sender.
pub const DEFAULT_OVERSIGN: &[&str] = &["From"];

/// The RSA modulus size [`keygen`] uses unless told otherwise.
pub const DEFAULT_RSA_BITS: u32 = 2048;

/// RFC 8301 §3.2: verifiers ignore shorter RSA keys.
const RSA_MIN_BITS: u32 = 1024;
/// RFC 8301 §3.2: signers SHOULD use at least this; also ring's minimum.
const RSA_RECOMMENDED_BITS: u32 = 2048;
/// RFC 8301 only requires verifiers to handle up to 4096 bits, and ring
/// signs with nothing larger.
const RSA_MAX_BITS: u32 = 4096;

/// Key files are a few KiB; the bound keeps a wrong path (a log file, a
/// device) from being read into memory whole.
const MAX_KEY_FILE: usize = 64 * 1024;

/// How much of the body is read and hashed at a time.
const BODY_CHUNK: usize = 64 * 1024;

/// RFC 1035 §3.3: one character-string in a TXT record.
const TXT_STRING_MAX: usize = 255;

/// Per-query DNS timeout for [`check`]; two attempts are made.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// DER prefix of a SHA-256 DigestInfo (RFC 8017 §9.2, note 1), for the
/// legacy RSA signer, which is given the hash rather than the message.
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// OID 1.2.840.113549.1.1.1 (rsaEncryption), DER contents.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// OID 1.3.101.112 (id-Ed25519, RFC 8410), DER contents.
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const DER_INTEGER: u8 = 0x02;
const DER_BIT_STRING: u8 = 0x03;
const DER_OCTET_STRING: u8 = 0x04;
const DER_NULL: u8 = 0x05;
const DER_OID: u8 = 0x06;
const DER_SEQUENCE: u8 = 0x30;

/// A DKIM signing algorithm (`a=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl Algorithm {
    /// The name used in `a=`, in the configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The key type (`k=`) of the DNS record.
    fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }

    fn describe_key(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "an RSA key",
            Algorithm::Ed25519Sha256 => "an Ed25519 key",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Algorithm, String> {
        match s.to_ascii_lowercase().as_str() {
            "rsa-sha256" => Ok(Algorithm::RsaSha256),
            "ed25519-sha256" => Ok(Algorithm::Ed25519Sha256),
            _ => Err(format!(
                "unknown DKIM algorithm `{s}`; use rsa-sha256 or ed25519-sha256"
            )),
        }
    }
}

/// A canonicalisation algorithm (one half of `c=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canon {
    Simple,
    Relaxed,
}

impl Canon {
    pub fn name(self) -> &'static str {
        match self {
            Canon::Simple => "simple",
            Canon::Relaxed => "relaxed",
        }
    }

    /// Parses `header/body` as in `c=` (`relaxed/simple`); a single name
    /// applies to the header with a simple body, as RFC 6376 §3.5 says.
    pub fn parse_pair(s: &str) -> Result<(Canon, Canon), String> {
        match s.split_once('/') {
            Some((header, body)) => Ok((header.parse()?, body.parse()?)),
            None => Ok((s.parse()?, Canon::Simple)),
        }
    }
}

impl fmt::Display for Canon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Canon {
    type Err = String;

    fn from_str(s: &str) -> Result<Canon, String> {
        match s.to_ascii_lowercase().as_str() {
            "simple" => Ok(Canon::Simple),
            "relaxed" => Ok(Canon::Relaxed),
            _ => Err(format!(
                "unknown DKIM canonicalization `{s}`; use relaxed or simple"
            )),
        }
    }
}

impl From<Canon> for Canonicalization {
    fn from(c: Canon) -> Canonicalization {
        match c {
            Canon::Simple => Canonicalization::Simple,
            Canon::Relaxed => Canonicalization::Relaxed,
        }
    }
}

/// One signing identity: which mail it applies to and how to sign it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `example.com`, matched exactly against the From domain, or
    /// `*.example.com`, matching every subdomain; see [`matches_domain`]
    /// and [`Settings::signing_domain`].
    pub domain: String,
    pub selector: String,
    pub key_file: PathBuf,
    pub algorithm: Algorithm,
    pub header_canon: Canon,
    pub body_canon: Canon,
    /// Field names to sign when present.
    pub headers: Vec<String>,
    /// Field names listed once more in `h=` than they occur.
    pub oversign: Vec<String>,
}

impl Settings {
    /// Settings with the defaults: relaxed/relaxed, [`DEFAULT_HEADERS`],
    /// [`DEFAULT_OVERSIGN`].
    pub fn new(
        domain: impl Into<String>,
        selector: impl Into<String>,
        key_file: impl Into<PathBuf>,
        algorithm: Algorithm,
    ) -> Settings {
        Settings {
            domain: domain.into(),
            selector: selector.into(),
            key_file: key_file.into(),
            algorithm,
            header_canon: Canon::Relaxed,
            body_canon: Canon::Relaxed,
            headers: DEFAULT_HEADERS.iter().map(|s| s.to_string()).collect(),
            oversign: DEFAULT_OVERSIGN.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The `d=` domain. For `*.example.com` it is `example.com`: one key
    /// published at `<selector>._domainkey.example.com` then serves every
    /// subdomain, and DMARC's default relaxed alignment accepts it
    /// (strict alignment, `adkim=s`, does not).
    pub fn signing_domain(&self) -> &str {
        self.domain.strip_prefix("*.").unwrap_or(&self.domain)
    }

    /// `<selector>._domainkey.<d>`, where the public key is published.
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.signing_domain())
    }

    fn is_pattern(&self) -> bool {
        self.domain.starts_with("*.")
    }

    /// Checks domain, selector and header names, so a typo is reported
    /// here rather than as a signature nobody can verify.
    pub fn validate(&self) -> Result<(), DkimError> {
        validate_domain(&self.domain)?;
        validate_selector(&self.selector)?;
        for name in self.headers.iter().chain(&self.oversign) {
            if name.is_empty() || !name.bytes().all(is_ftext) {
                return Err(DkimError::InvalidHeaderName {
                    domain: self.domain.clone(),
                    selector: self.selector.clone(),
                    name: name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Whether `domain` (the From domain) is covered by `pattern`: equal,
/// ignoring ASCII case and a trailing dot, or, for `*.example.com`, any
/// subdomain of example.com at any depth (not example.com itself, which
/// needs an entry of its own, as in opendkim's signing tables).
pub fn matches_domain(pattern: &str, domain: &str) -> bool {
    let norm = |s: &str| s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let (pattern, domain) = (norm(pattern), norm(domain));
    if domain.is_empty() || pattern.is_empty() {
        return false;
    }
    match pattern.strip_prefix("*.") {
        Some(base) => {
            !base.is_empty()
                && domain
                    .strip_suffix(base)
                    .and_then(|prefix| prefix.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty())
        }
        None => pattern == domain,
    }
}

/// RFC 5322 ftext: printable US-ASCII except the colon.
fn is_ftext(b: u8) -> bool {
    (33..=126).contains(&b) && b != b':'
}

/// Labels of letters, digits, hyphens and underscores, separated by dots.
fn label_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if !name.is_ascii() {
        return Some("it is not ASCII; write an internationalised domain in its xn-- form");
    }
    if name.ends_with('.') {
        return Some("remove the trailing dot");
    }
    if name.len() > 253 {
        return Some("it is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some("it has an empty label (two dots in a row, or a leading dot)");
        }
        if label.len() > 63 {
            return Some("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Some("only letters, digits, `-`, `_` and dots are allowed");
        }
    }
    None
}

fn validate_domain(domain: &str) -> Result<(), DkimError> {
    let base = domain.strip_prefix("*.").unwrap_or(domain);
    let problem = if base.contains('*') {
        Some("`*` is only allowed as `*.` at the start, as in *.example.com")
    } else {
        label_problem(base)
    };
    match problem {
        Some(reason) => Err(DkimError::InvalidDomain {
            domain: domain.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn validate_selector(selector: &str) -> Result<(), DkimError> {
    match label_problem(selector) {
        Some(reason) => Err(DkimError::InvalidSelector {
            selector: selector.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Why a key could not be loaded or generated, a message not signed, or a
/// check not run. Messages name the key file, domain or selector and say
/// what to do; none contains key material.
#[derive(Debug)]
pub enum DkimError {
    /// The key file could not be opened.
    KeyOpen { path: PathBuf, error: io::Error },
    /// The key file is a symbolic link.
    KeySymlink { path: PathBuf },
    /// The key file is a directory, FIFO, device...
    KeyNotRegular { path: PathBuf },
    /// The key file is owned by someone other than us or root.
    KeyOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    /// The key file is accessible by all users.
    KeyWorldAccessible {
        path: PathBuf,
        mode: u32,
        allowed_group: Option<u32>,
    },
    /// The key file is accessible by a group other than the allowed one.
    KeyGroupAccessible {
        path: PathBuf,
        mode: u32,
        gid: u32,
        allowed_group: Option<u32>,
    },
    /// Reading the open key file failed.
    KeyRead { path: PathBuf, error: io::Error },
    /// The key file is larger than any key file.
    KeyFileTooLarge { path: PathBuf },
    /// No PEM block in the file.
    KeyNotPem { path: PathBuf },
    /// A passphrase-protected key.
    KeyEncrypted { path: PathBuf },
    /// A PEM block of a kind DKIM cannot use (EC, OpenSSH, certificate...).
    KeyUnsupported { path: PathBuf, label: String },
    /// The DER inside the PEM block is not a valid key.
    KeyInvalid { path: PathBuf, reason: String },
    /// The key's type is not the configured algorithm's.
    KeyAlgorithm {
        path: PathBuf,
        found: Algorithm,
        configured: Algorithm,
    },
    /// An RSA key below RFC 8301's 1024-bit floor.
    KeyTooSmall { path: PathBuf, bits: u32 },
    /// An RSA key above 4096 bits.
    KeyTooBig { path: PathBuf, bits: u32 },
    InvalidDomain {
        domain: String,
        reason: &'static str,
    },
    InvalidSelector {
        selector: String,
        reason: &'static str,
    },
    /// A configured header or oversign entry is not a field name.
    InvalidHeaderName {
        domain: String,
        selector: String,
        name: String,
    },
    /// The header block handed to [`sign`] does not parse.
    Header {
        domain: String,
        selector: String,
        error: HeaderError,
    },
    /// The message has no From field, which DKIM requires to be signed.
    NoFrom { domain: String, selector: String },
    /// Reading the body failed.
    BodyRead {
        domain: String,
        selector: String,
        error: io::Error,
    },
    /// The signing operation itself failed.
    Sign { path: PathBuf, reason: String },
    /// [`keygen`] would overwrite a file.
    KeyExists { path: PathBuf },
    /// [`keygen`] could not write the key file.
    KeyWrite { path: PathBuf, error: io::Error },
    /// [`keygen`] was asked for an RSA size it does not generate.
    KeygenBits { bits: u32 },
    /// Key generation failed (no randomness, ...).
    Keygen { reason: String },
    /// Writing the report to the output failed.
    Output { error: io::Error },
    /// The DNS resolver could not be set up.
    Resolver { reason: String },
}

// One arm per error variant, each a sentence saying what went wrong and
// what to do: long, but flat, and splitting it would only scatter the
// wording of one error type.
impl fmt::Display for DkimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DkimError::KeyOpen { path, error } => {
                write!(f, "{}: cannot open DKIM key file: {error}", path.display())?;
                match error.kind() {
                    io::ErrorKind::NotFound => write!(
                        f,
                        "; check `key_file`, or create a key with `mailhop dkim keygen`"
                    ),
                    io::ErrorKind::PermissionDenied => write!(
                        f,
                        "; it must be readable by the user running mailhop (or by group \
                         mailhop in a setgid installation)"
                    ),
                    _ => Ok(()),
                }
            }
            DkimError::KeySymlink { path } => write!(
                f,
                "{}: DKIM key file is a symbolic link, and symbolic links are refused \
                 (one could point mailhop at another file); set `key_file` to the real file",
                path.display()
            ),
            DkimError::KeyNotRegular { path } => write!(
                f,
                "{}: DKIM key file is not a regular file; set `key_file` to the PEM file \
                 holding the private key",
                path.display()
            ),
            DkimError::KeyOwner { path, owner, euid } => write!(
                f,
                "{p}: DKIM key file is owned by uid {owner}, but must be owned by you \
                 (uid {euid}) or root so that nobody else can replace it; fix with: \
                 chown {euid} {p}",
                p = path.display()
            ),
            DkimError::KeyWorldAccessible {
                path,
                mode,
                allowed_group,
            } => {
                write!(
                    f,
                    "{}: DKIM private key is accessible by all users (mode {:04o}), so \
                     anyone could sign mail as your domain",
                    path.display(),
                    mode & 0o7777
                )?;
                crate::credentials::write_mode_fix(f, path, *allowed_group)
            }
            DkimError::KeyGroupAccessible {
                path,
                mode,
                gid,
                allowed_group,
            } => {
                write!(
                    f,
                    "{}: DKIM private key is accessible by group {gid} (mode {:04o})",
                    path.display(),
                    mode & 0o7777
                )?;
                crate::credentials::write_mode_fix(f, path, *allowed_group)
            }
            DkimError::KeyRead { path, error } => {
                write!(f, "{}: cannot read DKIM key file: {error}", path.display())
            }
            DkimError::KeyFileTooLarge { path } => write!(
                f,
                "{}: larger than {} KiB, so not a DKIM key file; check `key_file`",
                path.display(),
                MAX_KEY_FILE / 1024
            ),
            DkimError::KeyNotPem { path } => write!(
                f,
                "{}: no PEM private key found (a `-----BEGIN PRIVATE KEY-----` block); \
                 create one with `mailhop dkim keygen`, or convert yours with \
                 `openssl pkey -in OLD -out NEW`",
                path.display()
            ),
            DkimError::KeyEncrypted { path } => write!(
                f,
                "{p}: the DKIM key is protected by a passphrase, which mailhop cannot \
                 ask for; store it unencrypted (mode 0600): openssl pkey -in {p} -out NEW",
                p = path.display()
            ),
            DkimError::KeyUnsupported { path, label } => write!(
                f,
                "{}: holds a `{label}` PEM block, not an RSA or Ed25519 private key; \
                 DKIM uses rsa-sha256 or ed25519-sha256 keys: create one with \
                 `mailhop dkim keygen`",
                path.display()
            ),
            DkimError::KeyInvalid { path, reason } => write!(
                f,
                "{}: not a valid DKIM private key ({reason}); create a new one with \
                 `mailhop dkim keygen`",
                path.display()
            ),
            DkimError::KeyAlgorithm {
                path,
                found,
                configured,
            } => write!(
                f,
                "{}: holds {}, but the algorithm is {configured}; set `algorithm = \
                 \"{found}\"` or point `key_file` at {}",
                path.display(),
                found.describe_key(),
                configured.describe_key()
            ),
            DkimError::KeyTooSmall { path, bits } => write!(
                f,
                "{}: the RSA key has only {bits} bits, and receivers ignore signatures \
                 made with keys under {RSA_MIN_BITS} bits (RFC 8301); generate a new key \
                 with `mailhop dkim keygen` and publish it under a new selector",
                path.display()
            ),
            DkimError::KeyTooBig { path, bits } => write!(
                f,
                "{}: the RSA key has {bits} bits; receivers need only support up to \
                 {RSA_MAX_BITS} (RFC 8301), so use a 2048- or 3072-bit key (`mailhop dkim \
                 keygen --bits 2048`)",
                path.display()
            ),
            DkimError::InvalidDomain { domain, reason } => write!(
                f,
                "DKIM domain `{domain}` is not valid: {reason}; use a domain like \
                 example.com or a pattern like *.example.com"
            ),
            DkimError::InvalidSelector { selector, reason } => write!(
                f,
                "DKIM selector `{selector}` is not valid: {reason}; use a simple name \
                 like `mail` or `s2026`"
            ),
            DkimError::InvalidHeaderName {
                domain,
                selector,
                name,
            } => write!(
                f,
                "DKIM {domain} (selector {selector}): `{name}` in the header list is not \
                 a header field name; list names like `Subject`, without the colon"
            ),
            DkimError::Header {
                domain,
                selector,
                error,
            } => write!(
                f,
                "DKIM {domain} (selector {selector}): cannot sign a malformed header: {error}"
            ),
            DkimError::NoFrom { domain, selector } => write!(
                f,
                "DKIM {domain} (selector {selector}): the message has no From field, \
                 which DKIM signatures must cover"
            ),
            DkimError::BodyRead {
                domain,
                selector,
                error,
            } => write!(
                f,
                "DKIM {domain} (selector {selector}): cannot read the message body: {error}"
            ),
            DkimError::Sign { path, reason } => write!(
                f,
                "{}: signing with this DKIM key failed ({reason}); check the key with \
                 `openssl pkey -in {} -check -noout`",
                path.display(),
                path.display()
            ),
            DkimError::KeyExists { path } => write!(
                f,
                "{}: already exists and is not overwritten (it may be the key in use); \
                 remove it first or choose another file with --out",
                path.display()
            ),
            DkimError::KeyWrite { path, error } => write!(
                f,
                "{}: cannot write the new DKIM key: {error}",
                path.display()
            ),
            DkimError::KeygenBits { bits } => write!(
                f,
                "cannot generate a {bits}-bit RSA key: choose between \
                 {RSA_RECOMMENDED_BITS} and {RSA_MAX_BITS} bits (2048 is the usual \
                 choice; RFC 8301)"
            ),
            DkimError::Keygen { reason } => {
                write!(f, "cannot generate a DKIM key: {reason}")
            }
            DkimError::Output { error } => write!(f, "cannot write the output: {error}"),
            DkimError::Resolver { reason } => write!(
                f,
                "cannot set up DNS resolution: {reason}; check /etc/resolv.conf, or pass \
                 a server with --nameserver IP:PORT"
            ),
        }
    }
}

impl std::error::Error for DkimError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DkimError::KeyOpen { error, .. }
            | DkimError::KeyRead { error, .. }
            | DkimError::BodyRead { error, .. }
            | DkimError::KeyWrite { error, .. }
            | DkimError::Output { error } => Some(error),
            DkimError::Header { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A loaded private key. `Debug` shows only the file, type and size.
pub struct Key {
    path: PathBuf,
    inner: KeyInner,
}

enum KeyInner {
    Rsa {
        signer: RsaSigner,
        bits: u32,
        /// PKCS#1 RSAPublicKey DER.
        public: Vec<u8>,
    },
    Ed25519(Ed25519KeyPair),
}

enum RsaSigner {
    /// 2048 to 4096 bits.
    Ring(Box<RsaKeyPair>),
    /// 1024 to 2047 bits, which ring refuses.
    Legacy(Box<rsa::RsaPrivateKey>),
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("path", &self.path)
            .field("algorithm", &self.algorithm())
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

impl Key {
    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            KeyInner::Rsa { .. } => Algorithm::RsaSha256,
            KeyInner::Ed25519(_) => Algorithm::Ed25519Sha256,
        }
    }

    /// The RSA modulus size, or 256 for Ed25519.
    pub fn bits(&self) -> u32 {
        match self.inner {
            KeyInner::Rsa { bits, .. } => bits,
            KeyInner::Ed25519(_) => 256,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public key as `p=` carries it: SubjectPublicKeyInfo DER for RSA
    /// (RFC 6376 §3.6.1), the raw 32 bytes for Ed25519 (RFC 8463 §4.2).
    pub fn public_key(&self) -> Vec<u8> {
        match &self.inner {
            KeyInner::Rsa { public, .. } => rsa_spki(public),
            KeyInner::Ed25519(pair) => ring::signature::KeyPair::public_key(pair).as_ref().to_vec(),
        }
    }

    /// The TXT record value to publish: `v=DKIM1; k=rsa; p=...`.
    pub fn dns_record(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm().key_type(),
            BASE64.encode(self.public_key())
        )
    }

    /// Signs the canonicalised header data (RFC 6376 §3.7). Ed25519 signs
    /// its SHA-256 hash, as RFC 8463 §3 specifies.
    fn sign_data(&self, data: &[u8]) -> Result<Vec<u8>, DkimError> {
        let failed = |reason: String| DkimError::Sign {
            path: self.path.clone(),
            reason,
        };
        match &self.inner {
            KeyInner::Rsa {
                signer: RsaSigner::Ring(pair),
                ..
            } => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), data, &mut sig)
                    .map_err(|e| failed(e.to_string()))?;
                Ok(sig)
            }
            KeyInner::Rsa {
                signer: RsaSigner::Legacy(key),
                ..
            } => {
                let hash = digest::digest(&digest::SHA256, data);
                let padding = rsa::Pkcs1v15Sign {
                    hash_len: Some(hash.as_ref().len()),
                    prefix: SHA256_DIGEST_INFO.into(),
                };
                // sign_with_rng blinds the private-key operation.
                key.sign_with_rng(&mut rsa::rand_core::OsRng, padding, hash.as_ref())
                    .map_err(|e| failed(e.to_string()))
            }
            KeyInner::Ed25519(pair) => {
                let hash = digest::digest(&digest::SHA256, data);
                Ok(pair.sign(hash.as_ref()).as_ref().to_vec())
            }
        }
    }
}

/// Loads the private key at `path` for `algorithm`. The file must be a
/// regular file (not a symbolic link), owned by `euid` or root, and not
/// accessible by other users nor by any group but `allowed_group`.
/// Accepted: RSA as PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8 (`BEGIN
/// PRIVATE KEY`) PEM, Ed25519 as PKCS#8 PEM (what `openssl genpkey
/// -algorithm ed25519` writes). Returns warnings (a weak key) alongside.
pub fn load_key(
    path: &Path,
    algorithm: Algorithm,
    allowed_group: Option<u32>,
    euid: u32,
) -> Result<(Key, Vec<String>), DkimError> {
    let bytes = read_key_file(path, allowed_group, euid)?;
    parse_key(path, &bytes, algorithm)
}

fn read_key_file(
    path: &Path,
    allowed_group: Option<u32>,
    euid: u32,
) -> Result<Zeroizing<Vec<u8>>, DkimError> {
    use crate::credentials::{PrivateFileError as P, open_private};
    let p = || path.to_path_buf();
    let file = open_private(path, allowed_group, euid, false).map_err(|e| match e {
        P::Symlink => DkimError::KeySymlink { path: p() },
        P::Missing => DkimError::KeyOpen {
            path: p(),
            error: io::Error::from(io::ErrorKind::NotFound),
        },
        P::Open(error) => DkimError::KeyOpen { path: p(), error },
        P::NotRegular => DkimError::KeyNotRegular { path: p() },
        P::Read(error) => DkimError::KeyRead { path: p(), error },
        P::Owner { owner } => DkimError::KeyOwner {
            path: p(),
            owner,
            euid,
        },
        P::WorldAccessible { mode } => DkimError::KeyWorldAccessible {
            path: p(),
            mode,
            allowed_group,
        },
        P::GroupAccessible { mode, gid } => DkimError::KeyGroupAccessible {
            path: p(),
            mode,
            gid,
            allowed_group,
        },
    })?;
    let read_error = |error| DkimError::KeyRead {
        path: path.to_path_buf(),
        error,
    };
    let mut buf = Zeroizing::new(Vec::new());
    // One byte more than allowed tells "too large" from "exactly the limit".
    file.take(MAX_KEY_FILE as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(read_error)?;
    if buf.len() > MAX_KEY_FILE {
        return Err(DkimError::KeyFileTooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(buf)
}

/// Parses a PEM private key (see [`load_key`]) already in memory.
fn parse_key(
    path: &Path,
    pem: &[u8],
    algorithm: Algorithm,
) -> Result<(Key, Vec<String>), DkimError> {
    let invalid = |reason: &str| DkimError::KeyInvalid {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    let (label, der) = pem_decode(path, pem)?;
    // The key type, and for RSA the PKCS#1 RSAPrivateKey inside.
    let (found, pkcs1): (Algorithm, &[u8]) = match label.as_str() {
        "RSA PRIVATE KEY" => (Algorithm::RsaSha256, der.as_slice()),
        "PRIVATE KEY" => {
            let (oid, private) =
                pkcs8_parts(&der).ok_or_else(|| invalid("bad PKCS#8 structure"))?;
            if oid == OID_RSA {
                (Algorithm::RsaSha256, private)
            } else if oid == OID_ED25519 {
                (Algorithm::Ed25519Sha256, &[])
            } else {
                return Err(DkimError::KeyUnsupported {
                    path: path.to_path_buf(),
                    label: "PRIVATE KEY (neither RSA nor Ed25519)".into(),
                });
            }
        }
        "ENCRYPTED PRIVATE KEY" => {
            return Err(DkimError::KeyEncrypted {
                path: path.to_path_buf(),
            });
        }
        _ => {
            return Err(DkimError::KeyUnsupported {
                path: path.to_path_buf(),
                label,
            });
        }
    };
    if found != algorithm {
        return Err(DkimError::KeyAlgorithm {
            path: path.to_path_buf(),
            found,
            configured: algorithm,
        });
    }
    let mut warnings = Vec::new();
    let inner = match found {
        Algorithm::Ed25519Sha256 => {
            // "maybe_unchecked" accepts the PKCS#8 v1 form without the
            // public key that OpenSSL writes.
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                .map_err(|e| invalid(&e.to_string()))?;
            KeyInner::Ed25519(pair)
        }
        Algorithm::RsaSha256 => {
            let (n, e) = rsa_private_modulus(pkcs1)
                .ok_or_else(|| invalid("bad PKCS#1 RSAPrivateKey structure"))?;
            let bits = integer_bits(n);
            if bits < RSA_MIN_BITS {
                return Err(DkimError::KeyTooSmall {
                    path: path.to_path_buf(),
                    bits,
                });
            }
            if bits > RSA_MAX_BITS {
                return Err(DkimError::KeyTooBig {
                    path: path.to_path_buf(),
                    bits,
                });
            }
            let signer = if bits < RSA_RECOMMENDED_BITS {
                warnings.push(format!(
                    "{}: the DKIM key has only {bits} bits; RFC 8301 asks for at least \
                     {RSA_RECOMMENDED_BITS}, and some receivers distrust shorter keys: \
                     generate a new one with `mailhop dkim keygen` and publish it under a \
                     new selector",
                    path.display()
                ));
                use rsa::pkcs1::DecodeRsaPrivateKey as _;
                let key = rsa::RsaPrivateKey::from_pkcs1_der(pkcs1)
                    .map_err(|e| invalid(&e.to_string()))?;
                RsaSigner::Legacy(Box::new(key))
            } else {
                RsaSigner::Ring(Box::new(
                    RsaKeyPair::from_der(pkcs1).map_err(|e| invalid(&e.to_string()))?,
                ))
            };
            let public = der_tlv(
                DER_SEQUENCE,
                &[der_tlv(DER_INTEGER, n), der_tlv(DER_INTEGER, e)].concat(),
            );
            KeyInner::Rsa {
                signer,
                bits,
                public,
            }
        }
    };
    Ok((
        Key {
            path: path.to_path_buf(),
            inner,
        },
        warnings,
    ))
}

/// The label and decoded contents of the first PEM block.
fn pem_decode(path: &Path, pem: &[u8]) -> Result<(String, Zeroizing<Vec<u8>>), DkimError> {
    let not_pem = || DkimError::KeyNotPem {
        path: path.to_path_buf(),
    };
    let text = std::str::from_utf8(pem).map_err(|_| not_pem())?;
    let mut lines = text.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or_else(not_pem)?
        .to_owned();
    let end = format!("-----END {label}-----");
    let mut b64 = Zeroizing::new(String::new());
    let mut ended = false;
    for line in lines {
        if line == end {
            ended = true;
            break;
        }
        // RFC 1421 headers (Proc-Type: 4,ENCRYPTED) mark an old-style
        // encrypted key.
        if line.contains(':') {
            return Err(DkimError::KeyEncrypted {
                path: path.to_path_buf(),
            });
        }
        b64.push_str(line);
    }
    if !ended {
        return Err(DkimError::KeyInvalid {
            path: path.to_path_buf(),
            reason: format!("no `{end}` line"),
        });
    }
    let der = BASE64
        .decode(b64.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| DkimError::KeyInvalid {
            path: path.to_path_buf(),
            reason: "the PEM block is not valid base64".into(),
        })?;
    Ok((label, der))
}

/// Wraps `der` as PEM with 64-character lines.
fn pem_encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(BASE64.encode(der));
    let mut out = Zeroizing::new(format!("-----BEGIN {label}-----\n"));
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Splits one DER element off `input`: (tag, contents, rest). Only what
/// keys use: single-byte tags and definite lengths up to four bytes.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = rest.get(..n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest.get(n..)?)
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

fn der_expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = der_next(input)?;
    (t == tag).then_some((contents, rest))
}

fn der_tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(contents);
    out
}

/// PKCS#8 PrivateKeyInfo (RFC 5208) / OneAsymmetricKey (RFC 5958): the
/// algorithm OID and the privateKey octets.
fn pkcs8_parts(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (info, _) = der_expect(der, DER_SEQUENCE)?;
    let (_version, rest) = der_expect(info, DER_INTEGER)?;
    let (alg, rest) = der_expect(rest, DER_SEQUENCE)?;
    let (oid, _params) = der_expect(alg, DER_OID)?;
    let (private, _) = der_expect(rest, DER_OCTET_STRING)?;
    Some((oid, private))
}

/// PKCS#1 RSAPrivateKey (RFC 8017 A.1.2): the modulus and public exponent
/// INTEGER contents.
fn rsa_private_modulus(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (seq, _) = der_expect(der, DER_SEQUENCE)?;
    let (_version, rest) = der_expect(seq, DER_INTEGER)?;
    let (n, rest) = der_expect(rest, DER_INTEGER)?;
    let (e, _) = der_expect(rest, DER_INTEGER)?;
    Some((n, e))
}

/// The PKCS#1 RSAPublicKey inside a published `p=`, which is normally a
/// SubjectPublicKeyInfo but is sometimes the bare RSAPublicKey.
fn rsa_public_pkcs1(der: &[u8]) -> Option<&[u8]> {
    let (seq, _) = der_expect(der, DER_SEQUENCE)?;
    if let Some((alg, rest)) = der_expect(seq, DER_SEQUENCE) {
        let (oid, _) = der_expect(alg, DER_OID)?;
        if oid != OID_RSA {
            return None;
        }
        let (bits, _) = der_expect(rest, DER_BIT_STRING)?;
        // The first byte counts unused bits, always 0 here.
        let inner = bits.strip_prefix(&[0])?;
        der_expect(inner, DER_SEQUENCE)?;
        Some(inner)
    } else {
        der_expect(seq, DER_INTEGER)?;
        Some(der)
    }
}

/// RSAPublicKey DER to SubjectPublicKeyInfo DER (RFC 3279 §2.3.1).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    let alg = der_tlv(
        DER_SEQUENCE,
        &[der_tlv(DER_OID, OID_RSA), der_tlv(DER_NULL, &[])].concat(),
    );
    let bits = der_tlv(DER_BIT_STRING, &[&[0u8][..], pkcs1].concat());
    der_tlv(DER_SEQUENCE, &[alg, bits].concat())
}

/// Size in bits of a DER INTEGER's (positive) value.
fn integer_bits(contents: &[u8]) -> u32 {
    let skip = contents.iter().take_while(|&&b| b == 0).count();
    match contents.get(skip..) {
        Some([first, rest @ ..]) => rest.len() as u32 * 8 + (8 - first.leading_zeros()),
        _ => 0,
    }
}

/// The modulus size of a published RSA key (SPKI or PKCS#1 DER).
fn rsa_public_bits(der: &[u8]) -> Option<u32> {
    let pkcs1 = rsa_public_pkcs1(der)?;
    let (seq, _) = der_expect(pkcs1, DER_SEQUENCE)?;
    let (n, _) = der_expect(seq, DER_INTEGER)?;
    Some(integer_bits(n))
}

/// The body hash (`bh=`, raw bytes) of `body` under `canon`, read in
/// chunks so that memory does not grow with the body.
pub fn body_hash(canon: Canon, body: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut hasher = BodyHasher::new(
        digest::Context::new(&digest::SHA256),
        canon.into(),
        // 0: no l= limit, the whole body is hashed.
        0,
    );
    let mut buf = vec![0u8; BODY_CHUNK];
    loop {
        match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.write(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let (context, _len) = hasher.finish();
    Ok(context.finish().as_ref().to_vec())
}

/// The `h=` list and the field instances it covers, in signing order.
struct Plan<'a> {
    names: Vec<String>,
    /// (name, value after the colon including the final CRLF), as
    /// mail-auth's canonicalisation takes them.
    fields: Vec<(&'a [u8], &'a [u8])>,
}

/// RFC 6376 §5.4.2: each name appears once per instance signed, and the
/// instances are taken from the bottom of the header upwards. Names with
/// no instance are left out, except oversigned ones, which get one entry
/// more than they have instances: the verifier then hashes an empty
/// string for it, which a field added later (at the top, as is usual, or
/// anywhere) no longer matches.
fn plan<'a>(settings: &Settings, header: &'a Header) -> Plan<'a> {
    // RFC 6376 §5.4: From MUST be signed, whatever the configuration says.
    let from = (!settings
        .headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("From")))
    .then_some("From");
    let mut wanted: Vec<&str> = Vec::new();
    for name in from.into_iter().chain(
        settings
            .headers
            .iter()
            .chain(&settings.oversign)
            .map(String::as_str),
    ) {
        if !wanted.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            wanted.push(name);
        }
    }
    let mut plan = Plan {
        names: Vec::new(),
        fields: Vec::new(),
    };
    for name in wanted {
        let mut count = 0;
        for field in header.fields().iter().rev().filter(|f| f.is(name)) {
            let raw = field.raw();
            // The raw field always has its colon (the parser checked), and
            // the name before it may keep obsolete whitespace, which simple
            // canonicalisation must hash as it is.
            if let Some(colon) = raw.iter().position(|&b| b == b':') {
                plan.fields.push((
                    raw.get(..colon).unwrap_or_default(),
                    raw.get(colon + 1..).unwrap_or_default(),
                ));
                count += 1;
            }
        }
        if settings
            .oversign
            .iter()
            .any(|o| o.eq_ignore_ascii_case(name))
        {
            count += 1;
        }
        plan.names
            .extend(std::iter::repeat_n(name.to_owned(), count));
    }
    plan
}

/// Signs a message and returns one complete, folded `DKIM-Signature: ...`
/// field ending in CRLF, to be prepended to `header`. `header` is the
/// final header block (CRLF lines, no empty separator line); `body` the
/// final body with CRLF line ends, read in chunks; `now_unix` becomes `t=`.
pub fn sign(
    settings: &Settings,
    key: &Key,
    header: &[u8],
    body: &mut dyn Read,
    now_unix: u64,
) -> Result<Vec<u8>, DkimError> {
    settings.validate()?;
    if key.algorithm() != settings.algorithm {
        return Err(DkimError::KeyAlgorithm {
            path: key.path.clone(),
            found: key.algorithm(),
            configured: settings.algorithm,
        });
    }
    let header = Header::parse(header).map_err(|error| DkimError::Header {
        domain: settings.domain.clone(),
        selector: settings.selector.clone(),
        error,
    })?;
    if !header.contains("From") {
        return Err(DkimError::NoFrom {
            domain: settings.domain.clone(),
            selector: settings.selector.clone(),
        });
    }
    let plan = plan(settings, &header);
    let bh = body_hash(settings.body_canon, body).map_err(|error| DkimError::BodyRead {
        domain: settings.domain.clone(),
        selector: settings.selector.clone(),
        error,
    })?;

    let header_canon = Canonicalization::from(settings.header_canon);
    let mut signature = Signature {
        v: 1,
        a: match settings.algorithm {
            Algorithm::RsaSha256 => mail_auth::common::crypto::Algorithm::RsaSha256,
            Algorithm::Ed25519Sha256 => mail_auth::common::crypto::Algorithm::Ed25519Sha256,
        },
        d: settings.signing_domain().to_ascii_lowercase(),
        s: settings.selector.clone(),
        bh,
        h: plan.names,
        t: now_unix,
        ch: header_canon,
        cb: settings.body_canon.into(),
        ..Signature::default()
    };
    // RFC 6376 §3.7: the selected fields, then this DKIM-Signature field
    // with an empty b= and no final CRLF, both canonicalised.
    let mut data = Vec::with_capacity(4096);
    header_canon.canonicalize_headers(plan.fields.into_iter(), &mut data);
    signature.write(&mut data, false);
    signature.b = key.sign_data(&data)?;

    let mut field = Vec::with_capacity(1024);
    signature.write(&mut field, true);
    Ok(field)
}

/// Generates a key pair like opendkim-genkey: writes the private key PEM
/// (mode 0600, never over an existing file) to `out` or
/// `./<selector>.private`, and prints the DNS record to publish (zone-file
/// form and single value) and the `[[dkim]]` configuration to add.
pub fn keygen(
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
    bits: u32,
    out: Option<&Path>,
    stdout: &mut dyn Write,
) -> Result<(), DkimError> {
    validate_domain(domain)?;
    validate_selector(selector)?;
    let path = match out {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(format!("{selector}.private")),
    };
    let pem = generate_pem(algorithm, bits)?;
    // Parse what is about to be written, so the record printed is derived
    // exactly as signing will derive it.
    let (key, _) = parse_key(&path, pem.as_bytes(), algorithm)?;
    write_new_key(&path, pem.as_bytes())?;

    let settings = Settings::new(domain, selector, &path, algorithm);
    let name = settings.record_name();
    let value = key.dns_record();
    let shown = std::path::absolute(&path).unwrap_or(path.clone());
    let output = |error| DkimError::Output { error };
    let mut text = format!(
        "Wrote the private key ({}) to {} (mode 0600).\n\n\
         Publish this DNS TXT record (zone-file form):\n\n{}\n\n\
         or, for a DNS provider's web form, name `{name}` and this value:\n\n{value}\n\n\
         Then add to mailhop.toml:\n\n\
         {}\n\
         Once the record is published, verify it with `mailhop dkim check`.\n",
        key_description(&key),
        shown.display(),
        zone_record(&name, &value),
        dkim_table(domain, selector, &shown.to_string_lossy(), algorithm.name()),
    );
    if settings.is_pattern() {
        text.push_str(&format!(
            "\nMail from every subdomain of {} is signed with d={}, so the record goes \
             at {name}.\n",
            settings.signing_domain(),
            settings.signing_domain()
        ));
    }
    stdout.write_all(text.as_bytes()).map_err(output)?;
    stdout.flush().map_err(output)
}

fn generate_pem(algorithm: Algorithm, bits: u32) -> Result<Zeroizing<String>, DkimError> {
    match algorithm {
        Algorithm::Ed25519Sha256 => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|e| {
                DkimError::Keygen {
                    reason: e.to_string(),
                }
            })?;
            // ring writes PKCS#8 v2 with the public key in a form OpenSSL 3
            // rejects; v1 (what `openssl genpkey` writes) holds only the
            // seed, and ring derives the public key from it on loading.
            let (_, seed) = pkcs8_parts(pkcs8.as_ref()).ok_or_else(|| DkimError::Keygen {
                reason: "unexpected PKCS#8 layout from ring".into(),
            })?;
            let algorithm = der_tlv(DER_SEQUENCE, &der_tlv(DER_OID, OID_ED25519));
            let private = Zeroizing::new(der_tlv(DER_OCTET_STRING, seed));
            let contents =
                Zeroizing::new([&der_tlv(DER_INTEGER, &[0])[..], &algorithm, &private].concat());
            let v1 = Zeroizing::new(der_tlv(DER_SEQUENCE, &contents));
            Ok(pem_encode("PRIVATE KEY", &v1))
        }
        Algorithm::RsaSha256 => {
            if !(RSA_RECOMMENDED_BITS..=RSA_MAX_BITS).contains(&bits) {
                return Err(DkimError::KeygenBits { bits });
            }
            // ring cannot generate RSA keys; the RustCrypto crate can.
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits as usize).map_err(
                |e| DkimError::Keygen {
                    reason: e.to_string(),
                },
            )?;
            use rsa::pkcs8::EncodePrivateKey as _;
            key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(|e| DkimError::Keygen {
                    reason: e.to_string(),
                })
        }
    }
}

fn write_new_key(path: &Path, pem: &[u8]) -> Result<(), DkimError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|error| {
            if error.kind() == io::ErrorKind::AlreadyExists {
                DkimError::KeyExists {
                    path: path.to_path_buf(),
                }
            } else {
                DkimError::KeyWrite {
                    path: path.to_path_buf(),
                    error,
                }
            }
        })?;
    // A key half-written when the machine stops would be published and
    // then fail to sign: sync before reporting success.
    file.write_all(pem)
        .and_then(|()| file.sync_all())
        .map_err(|error| DkimError::KeyWrite {
            path: path.to_path_buf(),
            error,
        })
}

fn key_description(key: &Key) -> String {
    match key.algorithm() {
        Algorithm::RsaSha256 => format!("{}-bit RSA", key.bits()),
        Algorithm::Ed25519Sha256 => "Ed25519".to_owned(),
    }
}

/// `name. IN TXT ( "..." "..." )`, each string at most 255 bytes (RFC 1035
/// §3.3); receivers concatenate them (RFC 6376 §3.6.2.2).
fn zone_record(name: &str, value: &str) -> String {
    let (head, p) = match value.find("p=") {
        Some(i) => value.split_at(i),
        None => ("", value),
    };
    let mut strings: Vec<&str> = Vec::new();
    if !head.is_empty() {
        strings.push(head);
    }
    let mut rest = p;
    while !rest.is_empty() {
        // The value is ASCII, so any byte index is a char boundary.
        let (chunk, tail) = rest.split_at(rest.len().min(TXT_STRING_MAX));
        strings.push(chunk);
        rest = tail;
    }
    let quoted: Vec<String> = strings.iter().map(|s| format!("\"{s}\"")).collect();
    format!("{name}. IN TXT ( {} )", quoted.join("\n\t"))
}

/// The `[[dkim]]` table to paste into mailhop.toml, written by the TOML
/// library so any name or path is quoted correctly.
fn dkim_table(domain: &str, selector: &str, key_file: &str, algorithm: &str) -> String {
    let mut t = toml_edit::Table::new();
    for (k, v) in [
        ("domain", domain),
        ("selector", selector),
        ("key_file", key_file),
        ("algorithm", algorithm),
    ] {
        t.insert(k, toml_edit::value(v));
    }
    let mut list = toml_edit::ArrayOfTables::new();
    list.push(t);
    let mut doc = toml_edit::DocumentMut::new();
    doc.insert("dkim", toml_edit::Item::ArrayOfTables(list));
    doc.to_string()
}

/// The resolver for one `check` run. Once the server has not answered
/// (timed out, refused), later lookups fail at once with the same reason:
/// each would wait the full timeout again, a minute for a few entries, to
/// learn nothing new.
struct Dns {
    resolver: Resolver,
    unanswered: std::cell::RefCell<Option<String>>,
}

fn lookup_txt(dns: &Dns, name: &str) -> Txt {
    if let Some(reason) = dns.unanswered.borrow().as_ref() {
        return Txt::Failed(format!(
            "{reason} (not asked: the server did not answer before)"
        ));
    }
    let result = dns.resolver.txt(name);
    if let Err(e) = &result
        && e.is_unanswered()
    {
        *dns.unanswered.borrow_mut() = Some(e.to_string());
    }
    Txt::from(result)
}

/// `tag=value; ...` (RFC 6376 §3.2), names lowercased, whitespace removed
/// from values (base64 in p= may be folded).
fn parse_tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|part| {
            let (tag, value) = part.split_once('=')?;
            let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            Some((tag.trim().to_ascii_lowercase(), value))
        })
        .collect()
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(t, _)| t == name)
        .map(|(_, v)| v.as_str())
}

/// Whether a From domain aligns with d= (RFC 7489 §3.1.1). Relaxed: equal,
/// or one a subdomain of the other, which stands in for "same
/// organizational domain" without a public suffix list.
fn aligns(d: &str, from: &str, strict: bool) -> bool {
    let (d, from) = (d.to_ascii_lowercase(), from.to_ascii_lowercase());
    if strict {
        return d == from;
    }
    let under = |a: &str, b: &str| a == b || a.ends_with(&format!(".{b}"));
    under(&from, &d) || under(&d, &from)
}

/// What `check` found, worst last: the order is what combining entries
/// relies on (the worst one wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Every key is published and matches.
    Good,
    /// Nothing is known to be wrong, but a DNS lookup failed (timeout,
    /// SERVFAIL): try again later.
    Unknown,
    /// A key is missing, different, revoked or unreadable: fix it.
    Bad,
}

/// Checks each entry like opendkim-testkey: the published key against the
/// local one, and the domain's SPF and DMARC records. The verdict is the
/// worst entry's; SPF, DMARC and `t=y` findings are advice and do not
/// count. `nameserver` replaces /etc/resolv.conf.
pub fn check(
    entries: &[Settings],
    nameserver: Option<SocketAddr>,
    allowed_group: Option<u32>,
    euid: u32,
    out: &mut dyn Write,
) -> Result<Verdict, DkimError> {
    let output = |error| DkimError::Output { error };
    if entries.is_empty() {
        writeln!(
            out,
            "No [[dkim]] entries are configured; create a key with `mailhop dkim keygen`."
        )
        .map_err(output)?;
        return Ok(Verdict::Bad);
    }
    let dns = Dns {
        resolver: Resolver::new(nameserver, DNS_TIMEOUT)
            .map_err(|e| DkimError::Resolver {
                reason: e.to_string(),
            })?
            .attempts(2),
        unanswered: std::cell::RefCell::new(None),
    };
    let mut verdict = Verdict::Good;
    for (i, settings) in entries.iter().enumerate() {
        if i > 0 {
            writeln!(out).map_err(output)?;
        }
        let entry = check_entry(settings, &dns, allowed_group, euid, out).map_err(output)?;
        verdict = verdict.max(entry);
    }
    Ok(verdict)
}

fn check_entry(
    settings: &Settings,
    dns: &Dns,
    allowed_group: Option<u32>,
    euid: u32,
    out: &mut dyn Write,
) -> io::Result<Verdict> {
    let d = settings.signing_domain().to_ascii_lowercase();
    let name = settings.record_name();
    writeln!(
        out,
        "{} selector {} ({}, {})",
        settings.domain,
        settings.selector,
        settings.algorithm,
        settings.key_file.display()
    )?;
    if let Err(e) = settings.validate() {
        writeln!(out, "  FAIL: {e}")?;
        return Ok(Verdict::Bad);
    }
    if settings.is_pattern() {
        writeln!(
            out,
            "  pattern:    mail from subdomains of {d} is signed with d={d}; DMARC \
             records of particular subdomains cannot be checked without a concrete domain"
        )?;
    }

    let mut result = Verdict::Good;
    let key = match load_key(&settings.key_file, settings.algorithm, allowed_group, euid) {
        Ok((key, warnings)) => {
            writeln!(out, "  local key:  {}", key_description(&key))?;
            for w in warnings {
                writeln!(out, "  WARNING: {w}")?;
            }
            Some(key)
        }
        Err(e) => {
            writeln!(out, "  FAIL: {e}")?;
            result = Verdict::Bad;
            None
        }
    };

    match lookup_txt(dns, &name) {
        Txt::Failed(e) => {
            writeln!(
                out,
                "  DNS record: UNKNOWN: looking up {name} failed: {e}; try again later"
            )?;
            result = result.max(Verdict::Unknown);
        }
        Txt::None => {
            writeln!(out, "  DNS record: MISSING: no TXT record at {name}")?;
            if let Some(key) = &key {
                writeln!(
                    out,
                    "              publish:\n              {}",
                    zone_record(&name, &key.dns_record()).replace('\n', "\n              ")
                )?;
            }
            result = Verdict::Bad;
        }
        Txt::Found(records) => {
            let dkim: Vec<&String> = records
                .iter()
                .filter(|r| {
                    let tags = parse_tags(r);
                    tag(&tags, "v").is_none_or(|v| v == "DKIM1") && tag(&tags, "p").is_some()
                })
                .collect();
            match dkim.as_slice() {
                [] => {
                    writeln!(
                        out,
                        "  DNS record: MISSING: {name} has TXT records, but none is a DKIM \
                         key record (v=DKIM1; ...; p=...)"
                    )?;
                    result = Verdict::Bad;
                }
                [record] => {
                    if !compare_record(record, key.as_ref(), &name, out)? {
                        result = Verdict::Bad;
                    }
                }
                _ => {
                    writeln!(
                        out,
                        "  DNS record: FAIL: {name} has {} DKIM key records; receivers may \
                         pick any of them: keep exactly one",
                        dkim.len()
                    )?;
                    result = Verdict::Bad;
                }
            }
        }
    }

    check_spf(dns, &d, out)?;
    check_dmarc(settings, dns, &d, out)?;
    Ok(result)
}

/// Reports on one published DKIM record; returns whether it matches.
fn compare_record(
    record: &str,
    key: Option<&Key>,
    name: &str,
    out: &mut dyn Write,
) -> io::Result<bool> {
    let tags = parse_tags(record);
    let k = tag(&tags, "k").unwrap_or("rsa").to_ascii_lowercase();
    let p = tag(&tags, "p").unwrap_or_default();
    let flags: Vec<String> = tag(&tags, "t")
        .unwrap_or_default()
        .split(':')
        .map(|f| f.trim().to_ascii_lowercase())
        .collect();
    if p.is_empty() {
        writeln!(
            out,
            "  DNS record: FAIL: the key at {name} is revoked (empty p=); publish the \
             current key or use another selector"
        )?;
        return Ok(false);
    }
    let Ok(published) = BASE64.decode(p) else {
        writeln!(
            out,
            "  DNS record: FAIL: the p= value at {name} is not valid base64"
        )?;
        return Ok(false);
    };
    let published_desc = match k.as_str() {
        "rsa" => match rsa_public_bits(&published) {
            Some(bits) => format!("{bits}-bit RSA"),
            None => "an unreadable RSA key".to_owned(),
        },
        "ed25519" if published.len() == 32 => "Ed25519".to_owned(),
        "ed25519" => "an unreadable Ed25519 key".to_owned(),
        other => format!("key type `{other}`"),
    };
    let matched = match key {
        None => {
            writeln!(
                out,
                "  DNS record: found at {name} ({published_desc}), not compared: the local \
                 key could not be loaded"
            )?;
            false
        }
        Some(key) => {
            let same = k == key.algorithm().key_type()
                && match &key.inner {
                    KeyInner::Rsa { public, .. } => {
                        rsa_public_pkcs1(&published).is_some_and(|p| p == public.as_slice())
                    }
                    KeyInner::Ed25519(_) => published == key.public_key(),
                };
            if same {
                writeln!(
                    out,
                    "  DNS record: OK: the key published at {name} matches the local key \
                     ({published_desc})"
                )?;
            } else {
                writeln!(
                    out,
                    "  DNS record: MISMATCH: the key published at {name} ({published_desc}) \
                     is not the local key ({}); receivers will fail every signature. \
                     Publish:\n              {}",
                    key_description(key),
                    key.dns_record()
                )?;
            }
            same
        }
    };
    if flags.iter().any(|f| f == "y") {
        writeln!(
            out,
            "  test mode:  t=y is set, so receivers treat failures as unsigned mail; \
             remove it once signatures verify"
        )?;
    }
    Ok(matched)
}

fn check_spf(dns: &Dns, domain: &str, out: &mut dyn Write) -> io::Result<()> {
    let is_spf = |r: &&String| {
        let lower = r.to_ascii_lowercase();
        lower == "v=spf1" || lower.starts_with("v=spf1 ")
    };
    match lookup_txt(dns, domain) {
        Txt::Failed(e) => writeln!(out, "  SPF:        lookup failed: {e}"),
        Txt::None => writeln!(
            out,
            "  SPF:        none at {domain}; consider publishing one (v=spf1 ... -all)"
        ),
        Txt::Found(records) => {
            let spf: Vec<&String> = records.iter().filter(is_spf).collect();
            match spf.as_slice() {
                [] => writeln!(
                    out,
                    "  SPF:        none at {domain}; consider publishing one (v=spf1 ... -all)"
                ),
                [one] => writeln!(out, "  SPF:        {one}"),
                _ => writeln!(
                    out,
                    "  SPF:        {} records at {domain}, which receivers treat as an \
                     error (RFC 7208 §4.5): merge them into one",
                    spf.len()
                ),
            }
        }
    }
}

fn check_dmarc(settings: &Settings, dns: &Dns, d: &str, out: &mut dyn Write) -> io::Result<()> {
    // The From domain's own record, else the nearest parent's (a stand-in
    // for the organizational domain; never a top-level domain).
    let mut domain = d.to_owned();
    let found = loop {
        let name = format!("_dmarc.{domain}");
        match lookup_txt(dns, &name) {
            Txt::Failed(e) => {
                return writeln!(out, "  DMARC:      lookup of {name} failed: {e}");
            }
            Txt::Found(records) => {
                let dmarc: Vec<String> = records
                    .into_iter()
                    .filter(|r| {
                        let tags = parse_tags(r);
                        tag(&tags, "v").is_some_and(|v| v.eq_ignore_ascii_case("DMARC1"))
                    })
                    .collect();
                if let Some(record) = dmarc.into_iter().next() {
                    break Some((name, record));
                }
            }
            Txt::None => {}
        }
        match domain.split_once('.') {
            Some((_, parent)) if parent.contains('.') => domain = parent.to_owned(),
            _ => break None,
        }
    };
    let Some((name, record)) = found else {
        return writeln!(
            out,
            "  DMARC:      none for {d}; consider publishing one at _dmarc.{d} (start with \
             v=DMARC1; p=none; rua=mailto:...)"
        );
    };
    let tags = parse_tags(&record);
    let own = name == format!("_dmarc.{d}");
    // Subdomains without their own record get sp= (RFC 7489 §6.3); a
    // pattern entry signs for subdomains.
    let for_subdomains = settings.is_pattern() || !own;
    let policy = if for_subdomains {
        tag(&tags, "sp").or(tag(&tags, "p"))
    } else {
        tag(&tags, "p")
    }
    .unwrap_or("none");
    let strict = tag(&tags, "adkim").is_some_and(|a| a.eq_ignore_ascii_case("s"));
    let mode = if strict { "strict" } else { "relaxed" };
    writeln!(out, "  DMARC:      p={policy} (from {name})")?;
    if settings.is_pattern() {
        let example = format!("sub.{d}");
        if aligns(d, &example, strict) {
            writeln!(
                out,
                "  alignment:  yes: d={d} aligns with From addresses at its subdomains \
                 ({mode} alignment)"
            )
        } else {
            writeln!(
                out,
                "  alignment:  NO: adkim=s requires d= to equal the From domain, so mail \
                 from subdomains signed with d={d} fails DMARC; use an entry per subdomain"
            )
        }
    } else if aligns(d, d, strict) {
        writeln!(
            out,
            "  alignment:  yes: d={d} aligns with From domain {d} ({mode} alignment)"
        )
    } else {
        writeln!(
            out,
            "  alignment:  NO: d={d} does not align with From domain {d}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    fn openssl(args: &[&str]) {
        let status = Command::new("openssl")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args:?}");
    }

    /// An Ed25519 key generated by ring, PEM-encoded, mode 0600.
    fn ed_key_file(dir: &Path, name: &str) -> PathBuf {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let path = dir.join(name);
        fs::write(&path, pem_encode("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn euid() -> u32 {
        crate::credentials::Ids::current().euid
    }

    fn load(path: &Path, algorithm: Algorithm) -> Result<(Key, Vec<String>), DkimError> {
        load_key(path, algorithm, None, euid())
    }

    const MESSAGE_HEADER: &[u8] = b"From: Alice <alice@example.com>\r\n\
To: bob@example.org\r\n\
Subject: hello\r\n\
Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n";

    #[test]
    fn domain_matching() {
        assert!(matches_domain("example.com", "example.com"));
        assert!(matches_domain("Example.COM", "example.com."));
        assert!(!matches_domain("example.com", "sub.example.com"));
        assert!(matches_domain("*.example.com", "sub.example.com"));
        assert!(matches_domain("*.example.com", "a.b.Example.com"));
        assert!(!matches_domain("*.example.com", "example.com"));
        assert!(!matches_domain("*.example.com", "badexample.com"));
        assert!(!matches_domain("*.example.com", ".example.com"));
        assert!(!matches_domain("", ""));
        assert!(!matches_domain("*.", "x"));
    }

    #[test]
    fn names_parse() {
        assert_eq!("rsa-sha256".parse(), Ok(Algorithm::RsaSha256));
        assert_eq!("ED25519-SHA256".parse(), Ok(Algorithm::Ed25519Sha256));
        assert!(
            "rsa-sha1"
                .parse::<Algorithm>()
                .unwrap_err()
                .contains("rsa-sha256")
        );
        assert_eq!(
            Canon::parse_pair("relaxed/simple"),
            Ok((Canon::Relaxed, Canon::Simple))
        );
        assert_eq!(
            Canon::parse_pair("relaxed"),
            Ok((Canon::Relaxed, Canon::Simple))
        );
        assert!(Canon::parse_pair("loose/simple").is_err());
    }

    #[test]
    fn settings_validation() {
        let ok = Settings::new("*.example.com", "s1", "k", Algorithm::RsaSha256);
        assert!(ok.validate().is_ok());
        assert_eq!(ok.signing_domain(), "example.com");
        assert_eq!(ok.record_name(), "s1._domainkey.example.com");
        for bad in [
            "",
            "exa mple.com",
            "a..b",
            "a.*.b",
            "ex\u{e4}mple.com",
            "example.com.",
        ] {
            let e = Settings::new(bad, "s1", "k", Algorithm::RsaSha256)
                .validate()
                .unwrap_err();
            assert!(matches!(e, DkimError::InvalidDomain { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("is not valid"), "{e}");
        }
        let e = Settings::new("example.com", "s/1", "k", Algorithm::RsaSha256)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("selector `s/1`"), "{e}");
        let mut s = Settings::new("example.com", "s1", "k", Algorithm::RsaSha256);
        s.headers.push("Subject:".into());
        assert!(matches!(
            s.validate(),
            Err(DkimError::InvalidHeaderName { .. })
        ));
    }

    #[test]
    fn empty_body_hashes_match_rfc() {
        // RFC 6376 §3.4.3/3.4.4: an empty body is CRLF under simple and
        // empty under relaxed.
        let simple = body_hash(Canon::Simple, &mut &b""[..]).unwrap();
        let relaxed = body_hash(Canon::Relaxed, &mut &b""[..]).unwrap();
        assert_eq!(
            BASE64.encode(simple),
            "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY="
        );
        assert_eq!(
            BASE64.encode(relaxed),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        // Trailing empty lines do not count.
        let padded = body_hash(Canon::Simple, &mut &b"\r\n\r\n\r\n"[..]).unwrap();
        assert_eq!(
            BASE64.encode(padded),
            "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY="
        );
    }

    /// Hands out at most `n` bytes per read, to cross every boundary.
    struct Trickle<'a> {
        data: &'a [u8],
        n: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.n.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn body_hash_does_not_depend_on_chunking() {
        let body: &[u8] = b"Hello  \t world \r\n\r\n  indented\t\r\nx \r\n\r\n\r\n \r\n\r\n";
        for canon in [Canon::Simple, Canon::Relaxed] {
            // mail-auth's whole-buffer canonicaliser, as its signer uses it.
            let whole = {
                let mut ctx = digest::Context::new(&digest::SHA256);
                let c = Canonicalization::from(canon);
                mail_auth::common::headers::Writable::write(c.canonical_body(body, 0), &mut ctx);
                ctx.finish().as_ref().to_vec()
            };
            for n in [1, 2, 3, 7, 64] {
                let got = body_hash(canon, &mut Trickle { data: body, n }).unwrap();
                assert_eq!(got, whole, "{canon} in chunks of {n}");
            }
        }
    }

    #[test]
    fn plan_signs_bottom_up_and_oversigns() {
        let block = b"Received: x\r\nFrom: a@example.com\r\nTo: one@x\r\nTo: two@x\r\n\
Subject: s\r\n";
        let header = Header::parse(block).unwrap();
        let mut settings = Settings::new("example.com", "s", "k", Algorithm::RsaSha256);
        settings.headers = vec!["To".into(), "Subject".into(), "Cc".into()];
        settings.oversign = vec!["From".into(), "Reply-To".into()];
        let p = plan(&settings, &header);
        // From is forced in first; Cc is absent and not oversigned, so
        // left out; Reply-To is absent but oversigned, so listed once.
        assert_eq!(p.names, ["From", "From", "To", "To", "Subject", "Reply-To"]);
        let values: Vec<&[u8]> = p.fields.iter().map(|(_, v)| *v).collect();
        assert_eq!(
            values,
            [
                &b" a@example.com\r\n"[..],
                b" two@x\r\n",
                b" one@x\r\n",
                b" s\r\n"
            ]
        );
    }

    #[test]
    fn ed25519_signature_shape_and_determinism() {
        let dir = tempfile::tempdir().unwrap();
        let path = ed_key_file(dir.path(), "ed.pem");
        let (key, warnings) = load(&path, Algorithm::Ed25519Sha256).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(key.bits(), 256);
        let settings = Settings::new("example.com", "ed", &path, Algorithm::Ed25519Sha256);
        let a = sign(
            &settings,
            &key,
            MESSAGE_HEADER,
            &mut &b"hi\r\n"[..],
            1_700_000_000,
        )
        .unwrap();
        let b = sign(
            &settings,
            &key,
            MESSAGE_HEADER,
            &mut &b"hi\r\n"[..],
            1_700_000_000,
        )
        .unwrap();
        assert_eq!(a, b, "Ed25519 signing is deterministic");
        let text = String::from_utf8(a).unwrap();
        assert!(text.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; s=ed; d=example.com;"));
        assert!(text.ends_with(";\r\n"), "{text:?}");
        assert!(text.contains("t=1700000000"), "{text}");
        assert!(text.contains("c=relaxed/relaxed"), "{text}");
        // Folded: no line longer than 78 characters, every continuation
        // line starts with whitespace.
        for (i, line) in text.trim_end().split("\r\n").enumerate() {
            assert!(line.len() <= 78, "{line}");
            assert!(i == 0 || line.starts_with('\t'), "{line:?}");
        }
        let c = sign(
            &settings,
            &key,
            MESSAGE_HEADER,
            &mut &b"hi\r\n"[..],
            1_700_000_001,
        )
        .unwrap();
        assert_ne!(text.as_bytes(), &c[..]);
    }

    #[test]
    fn sign_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = ed_key_file(dir.path(), "ed.pem");
        let (key, _) = load(&path, Algorithm::Ed25519Sha256).unwrap();
        let settings = Settings::new("example.com", "ed", &path, Algorithm::Ed25519Sha256);
        let e = sign(&settings, &key, b"To: x@y\r\n", &mut &b""[..], 1).unwrap_err();
        assert!(matches!(e, DkimError::NoFrom { .. }), "{e}");
        let e = sign(&settings, &key, b"From x\r\n", &mut &b""[..], 1).unwrap_err();
        assert!(e.to_string().contains("malformed header"), "{e}");
        let rsa = Settings::new("example.com", "ed", &path, Algorithm::RsaSha256);
        let e = sign(&rsa, &key, MESSAGE_HEADER, &mut &b""[..], 1).unwrap_err();
        assert!(matches!(e, DkimError::KeyAlgorithm { .. }), "{e}");
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let e = sign(&settings, &key, MESSAGE_HEADER, &mut Broken, 1).unwrap_err();
        assert!(e.to_string().contains("disk on fire"), "{e}");
    }

    #[test]
    fn key_debug_and_errors_hold_no_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let path = ed_key_file(dir.path(), "ed.pem");
        let pem = fs::read_to_string(&path).unwrap();
        let b64_line = pem.lines().nth(1).unwrap();
        let (key, _) = load(&path, Algorithm::Ed25519Sha256).unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains("Ed25519Sha256"), "{debug}");
        assert!(!debug.contains(&b64_line[..20]), "{debug}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&path, Algorithm::Ed25519Sha256)
            .unwrap_err()
            .to_string();
        assert!(!e.contains(&b64_line[..20]), "{e}");
    }

    #[test]
    fn permission_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = ed_key_file(dir.path(), "ed.pem");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
        let e = load(&path, Algorithm::Ed25519Sha256).unwrap_err();
        assert!(matches!(e, DkimError::KeyWorldAccessible { .. }), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("chmod 600 {}", path.display()))
        );

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let e = load(&path, Algorithm::Ed25519Sha256).unwrap_err();
        assert!(matches!(e, DkimError::KeyGroupAccessible { .. }), "{e}");
        let gid = fs::metadata(&path).unwrap().gid();
        assert!(load_key(&path, Algorithm::Ed25519Sha256, Some(gid), euid()).is_ok());
        let e = load_key(&path, Algorithm::Ed25519Sha256, Some(gid + 1), euid()).unwrap_err();
        assert!(e.to_string().contains("chown root:mailhop"), "{e}");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = load(&link, Algorithm::Ed25519Sha256).unwrap_err();
        assert!(matches!(e, DkimError::KeySymlink { .. }), "{e}");

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = load(&fifo, Algorithm::Ed25519Sha256).unwrap_err();
        assert!(matches!(e, DkimError::KeyNotRegular { .. }), "{e}");

        let e = load(&dir.path().join("missing"), Algorithm::Ed25519Sha256).unwrap_err();
        assert!(e.to_string().contains("mailhop dkim keygen"), "{e}");

        let owner = fs::metadata(&path).unwrap().uid();
        let e = load_key(&path, Algorithm::Ed25519Sha256, None, owner + 1);
        if owner != 0 {
            assert!(matches!(e, Err(DkimError::KeyOwner { .. })), "{e:?}");
        } else {
            // Root-owned files are accepted whoever we are.
            assert!(e.is_ok());
        }
    }

    #[test]
    fn pem_problems_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &[u8]| {
            let p = dir.path().join(name);
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        let cases: &[(&str, &[u8], &str)] = &[
            ("empty", b"", "no PEM private key"),
            ("binary", b"\x30\x82\x01\x00", "no PEM private key"),
            (
                "enc8",
                b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "passphrase",
            ),
            (
                "enc1",
                b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "passphrase",
            ),
            (
                "ec",
                b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
                "`EC PRIVATE KEY`",
            ),
            (
                "trunc",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n",
                "no `-----END PRIVATE KEY-----` line",
            ),
            (
                "b64",
                b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
                "not valid base64",
            ),
            (
                "der",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "bad PKCS#8",
            ),
        ];
        for (name, text, expect) in cases {
            let p = write(name, text);
            let e = load(&p, Algorithm::RsaSha256).unwrap_err().to_string();
            assert!(e.contains(expect), "{name}: {e}");
            assert!(e.starts_with(&p.display().to_string()), "{name}: {e}");
        }
        let big = write("big", &vec![b'A'; MAX_KEY_FILE + 1]);
        let e = load(&big, Algorithm::RsaSha256).unwrap_err();
        assert!(matches!(e, DkimError::KeyFileTooLarge { .. }), "{e}");
    }

    #[test]
    fn rsa_keys_from_openssl_in_both_encodings() {
        let dir = tempfile::tempdir().unwrap();
        let d = |n: &str| dir.path().join(n).display().to_string();
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &d("p8.pem"),
        ]);
        openssl(&[
            "rsa",
            "-in",
            &d("p8.pem"),
            "-traditional",
            "-out",
            &d("p1.pem"),
        ]);
        openssl(&[
            "pkey",
            "-in",
            &d("p8.pem"),
            "-pubout",
            "-outform",
            "DER",
            "-out",
            &d("pub.der"),
        ]);
        let spki = fs::read(d("pub.der")).unwrap();
        for name in ["p8.pem", "p1.pem"] {
            let p = dir.path().join(name);
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
            let (key, warnings) = load(&p, Algorithm::RsaSha256).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!(key.bits(), 2048);
            // Our SubjectPublicKeyInfo is byte for byte OpenSSL's.
            assert_eq!(key.public_key(), spki, "{name}");
            assert_eq!(rsa_public_bits(&spki), Some(2048));
            let e = load(&p, Algorithm::Ed25519Sha256).unwrap_err().to_string();
            assert!(
                e.contains("holds an RSA key, but the algorithm is ed25519-sha256"),
                "{e}"
            );
        }
        assert!(
            fs::read_to_string(d("p1.pem"))
                .unwrap()
                .starts_with("-----BEGIN RSA PRIVATE KEY-----")
        );
    }

    #[test]
    fn rsa_key_sizes() {
        let dir = tempfile::tempdir().unwrap();
        for (bits, outcome) in [("512", "refused"), ("1024", "warned"), ("4096", "ok")] {
            let p = dir.path().join(format!("{bits}.pem"));
            let ps = p.display().to_string();
            openssl(&["genrsa", "-out", &ps, bits]);
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
            let settings = Settings::new("example.com", "s", &p, Algorithm::RsaSha256);
            match (outcome, load(&p, Algorithm::RsaSha256)) {
                ("refused", Err(e)) => {
                    assert!(matches!(e, DkimError::KeyTooSmall { bits: 512, .. }), "{e}");
                    assert!(e.to_string().contains("512 bits"), "{e}");
                }
                ("warned", Ok((key, warnings))) => {
                    assert_eq!(key.bits(), 1024);
                    assert_eq!(warnings.len(), 1);
                    assert!(warnings[0].contains("only 1024 bits"), "{warnings:?}");
                    let sig = sign(&settings, &key, MESSAGE_HEADER, &mut &b"x\r\n"[..], 5).unwrap();
                    assert!(sig.starts_with(b"DKIM-Signature: v=1; a=rsa-sha256;"));
                }
                ("ok", Ok((key, warnings))) => {
                    assert_eq!(key.bits(), 4096);
                    assert!(warnings.is_empty());
                    assert!(sign(&settings, &key, MESSAGE_HEADER, &mut &b""[..], 5).is_ok());
                }
                (o, r) => panic!("{bits}: expected {o}, got {r:?}"),
            }
        }
    }

    #[test]
    fn openssl_ed25519_key_loads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ed.pem");
        let ps = p.display().to_string();
        openssl(&["genpkey", "-algorithm", "ed25519", "-out", &ps]);
        openssl(&[
            "pkey",
            "-in",
            &ps,
            "-pubout",
            "-outform",
            "DER",
            "-out",
            &format!("{ps}.pub"),
        ]);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let (key, _) = load(&p, Algorithm::Ed25519Sha256).unwrap();
        let spki = fs::read(format!("{ps}.pub")).unwrap();
        // The raw key is the SPKI's last 32 bytes.
        assert_eq!(key.public_key(), spki[spki.len() - 32..]);
        assert!(key.dns_record().starts_with("v=DKIM1; k=ed25519; p="));
        let e = load(&p, Algorithm::RsaSha256).unwrap_err().to_string();
        assert!(e.contains("holds an Ed25519 key"), "{e}");
    }

    #[test]
    fn keygen_ed25519_writes_0600_and_prints_everything() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("mail.private");
        let mut text = Vec::new();
        keygen(
            "example.com",
            "mail",
            Algorithm::Ed25519Sha256,
            0,
            Some(&out),
            &mut text,
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        let mode = fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (key, _) = load(&out, Algorithm::Ed25519Sha256).unwrap();
        assert!(
            text.contains("mail._domainkey.example.com. IN TXT ( \"v=DKIM1; k=ed25519; \""),
            "{text}"
        );
        assert!(text.contains(&key.dns_record()), "{text}");
        assert!(
            text.contains("[[dkim]]\ndomain = \"example.com\"\nselector = \"mail\""),
            "{text}"
        );
        assert!(
            text.contains(&format!("key_file = \"{}\"", out.display())),
            "{text}"
        );
        assert!(text.contains("algorithm = \"ed25519-sha256\""), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        // Never over an existing file.
        let e = keygen(
            "example.com",
            "mail",
            Algorithm::Ed25519Sha256,
            0,
            Some(&out),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(e, DkimError::KeyExists { .. }), "{e}");
        assert!(load(&out, Algorithm::Ed25519Sha256).is_ok());
        let e = keygen(
            "example.com",
            "mail",
            Algorithm::RsaSha256,
            1024,
            None,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(e, DkimError::KeygenBits { bits: 1024 }), "{e}");
    }

    #[test]
    fn zone_record_strings_fit_in_255_bytes() {
        let value = format!("v=DKIM1; k=rsa; p={}", "A".repeat(600));
        let zone = zone_record("s._domainkey.example.com", &value);
        assert!(zone.starts_with("s._domainkey.example.com. IN TXT ( \"v=DKIM1; k=rsa; \""));
        let strings: Vec<&str> = zone.split('"').skip(1).step_by(2).collect();
        assert!(strings.iter().all(|s| s.len() <= 255), "{strings:?}");
        assert_eq!(strings.concat(), value);
    }

    #[test]
    fn der_helpers() {
        assert_eq!(integer_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(integer_bits(&[0x01]), 1);
        assert_eq!(integer_bits(&[]), 0);
        let long = vec![7u8; 300];
        let tlv = der_tlv(DER_OCTET_STRING, &long);
        assert_eq!(&tlv[..4], &[DER_OCTET_STRING, 0x82, 0x01, 0x2c]);
        assert_eq!(der_next(&tlv), Some((DER_OCTET_STRING, &long[..], &[][..])));
        assert_eq!(der_next(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der_next(&[0x30, 0x05, 1]), None);
    }

    #[test]
    fn tags_and_alignment() {
        let tags = parse_tags("v=DKIM1; k=rsa; t=y:s;\tp=MII B\r\n AQAB ");
        assert_eq!(tag(&tags, "p"), Some("MIIBAQAB"));
        assert_eq!(tag(&tags, "t"), Some("y:s"));
        assert!(aligns("example.com", "example.com", true));
        assert!(aligns("example.com", "sub.example.com", false));
        assert!(!aligns("example.com", "sub.example.com", true));
        assert!(!aligns("example.com", "badexample.com", false));
        let snippet = dkim_table("example.com", "s\"1", "/k\\ey", "ed25519-sha256");
        assert!(
            snippet.starts_with("[[dkim]]\ndomain = \"example.com\"\n"),
            "{snippet}"
        );
        let parsed: toml::Table = toml::from_str(&snippet).unwrap_or_default();
        let d = parsed.get("dkim").and_then(|d| d.get(0));
        assert_eq!(
            d.and_then(|d| d.get("selector")).and_then(|v| v.as_str()),
            Some("s\"1")
        );
        assert_eq!(
            d.and_then(|d| d.get("key_file")).and_then(|v| v.as_str()),
            Some("/k\\ey")
        );
    }
}
