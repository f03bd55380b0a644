//! SMTP submission to a smarthost (RFC 5321, 6409, 3207, 8314, 4954):
//! connect, EHLO, STARTTLS or implicit TLS with rustls, AUTH, then MAIL,
//! one RCPT per recipient, and DATA streamed from the spool. Knows nothing
//! of the queue; the caller decides what a failure means for the message.
//!
//! Why not lettre's `SmtpConnection`: it cannot set TCP_NODELAY (it owns
//! the socket and exposes no fd), and it writes the DATA terminator as a
//! separate small write, so every message waits for the server's delayed
//! ACK (the ~40-80 ms stall msmtp users see). Its `ServerInfo` also drops
//! SIZE, DSN and PIPELINING from the EHLO reply, it cannot take a custom
//! certificate verifier (for `tls_fingerprint` and for diagnosing a failed
//! verification), and it appends an extra CRLF to messages that already end
//! in one. What it does for us (reply parsing, dot-stuffing, a TLS stream)
//! is small, so this module does it, and the tests check the bytes and the
//! reply parsing against lettre's.
//!
//! Secrets: AUTH payloads never reach the transcript, errors or logs; the
//! transcript shows `AUTH PLAIN ***` and DATA only as its size. Whatever
//! was sent as a credential is also cut out of every reply the server
//! sends back (`Echoes`), before anything stores or prints it.
//!
//! Time: every exchange (a command and its whole reply, the TLS handshake)
//! has a deadline, not just a per-read timeout, and a message transaction
//! has one scaled by the message size (`clock`, `transaction_budget`).
//!
//! Submodules: `reply` (parsing and classifying replies), `clock`
//! (deadlines on the socket), `cert` (describing a refused certificate).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};

use crate::credentials::Secret;

mod cert;
mod clock;
pub mod reply;

pub use cert::{CertProblem, TrustStore};
pub use reply::{RefusalClass, Reply};

pub(crate) use clock::{Limit, Timed};
use reply::{Answer, MAX_LINE, MAX_LINES, answer, parse_line};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plain connect, then STARTTLS, which is required (no fallback).
    #[default]
    StartTls,
    /// TLS from the first byte (port 465, RFC 8314).
    Implicit,
    /// No TLS at all; only allowed to loopback (the config checks).
    None,
}

impl TlsMode {
    /// The value of `tls` in mailhop.toml that selects this mode.
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::StartTls => "starttls",
            TlsMode::Implicit => "implicit",
            TlsMode::None => "none",
        }
    }

    /// The port used when the configuration names none.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::StartTls => 587,
            TlsMode::Implicit => 465,
            TlsMode::None => 25,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinTls {
    #[default]
    V12,
    V13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// PLAIN or LOGIN, whichever the server offers, if a username is set.
    #[default]
    Auto,
    Plain,
    Login,
    Xoauth2,
    None,
}

/// Everything needed to reach and log in to one smarthost.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the server certificate (DER). When set, it replaces CA
    /// verification: the pin is the trust decision.
    pub fingerprint: Option<[u8; 32]>,
    pub min_tls: MinTls,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub auth: AuthMode,
    pub username: Option<String>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// How long the server may take to accept the message after DATA ends.
    pub data_timeout: Duration,
    /// Our name in EHLO.
    pub helo_name: String,
    /// Ignore SSL_CERT_FILE / SSL_CERT_DIR and read the distribution's CA
    /// bundle: a setgid process must not let its caller choose whom to
    /// trust with the shared password.
    pub system_roots_only: bool,
}

/// Where distributions keep the system CA bundle.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// DSN parameters (RFC 3461), sent only when the server offers DSN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dsn {
    /// NOTIFY list, e.g. "failure,delay" or "never".
    pub notify: Option<String>,
    /// RET: true for FULL, false for HDRS.
    pub ret_full: Option<bool>,
    pub envid: Option<String>,
    /// Per recipient, by position in [`Envelope::recipients`]: its own
    /// NOTIFY and ORCPT. A recipient without an entry uses `notify`.
    pub recipients: Vec<RcptDsn>,
}

/// One recipient's DSN parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptDsn {
    pub notify: Option<String>,
    /// `type;address`, decoded (`rfc822;user@example.com`); sent xtext
    /// encoded.
    pub orcpt: Option<String>,
}

impl Dsn {
    /// The DSN parameters of the `i`th RCPT TO, with their leading space.
    fn rcpt_params(&self, i: usize) -> String {
        let own = self.recipients.get(i);
        let mut out = String::new();
        if let Some(n) = own.and_then(|r| r.notify.as_ref()).or(self.notify.as_ref()) {
            out.push_str(&format!(" NOTIFY={}", n.to_ascii_uppercase()));
        }
        // One that is not well formed cannot be sent.
        if let Some((kind, addr)) = own
            .and_then(|r| r.orcpt.as_deref())
            .and_then(crate::message::dsn::orcpt)
        {
            out.push_str(&format!(" ORCPT={kind};{}", xtext(addr)));
        }
        out
    }
}

/// One message's envelope as the transport needs it.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// Envelope sender; empty for `<>`.
    pub sender: &'a str,
    pub recipients: &'a [String],
    /// Exact size of the message in octets (for SIZE=).
    pub size: u64,
    /// The message has octets over 127 (for BODY=8BITMIME).
    pub eight_bit: bool,
    pub dsn: &'a Dsn,
}

/// Where in the dialogue something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Tls,
    Auth,
    Mail,
    Rcpt,
    Data,
    Message,
    Reset,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connecting",
            Stage::Greeting => "waiting for the greeting",
            Stage::Ehlo => "EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Tls => "the TLS handshake",
            Stage::Auth => "authentication",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Message => "sending the message",
            Stage::Reset => "RSET",
        })
    }
}

/// What went wrong, in classes the caller maps to exit codes and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The server answered with an error reply.
    Reply(Reply),
    /// Name resolution, connection refused or reset: try again later.
    Network,
    /// No reply within the configured time.
    Timeout,
    /// The certificate could not be verified, or the pin did not match;
    /// with the certificate's description when the server sent one.
    Certificate(Option<Box<CertProblem>>),
    /// Any other TLS failure (handshake, protocol version).
    Tls,
    /// The server does not offer STARTTLS, or no usable AUTH mechanism.
    Unsupported,
    /// Authentication was refused.
    AuthFailed(Option<Reply>),
    /// Credentials could not be obtained (password_command failed, …).
    Credentials,
    /// The configuration cannot work (unreadable CA file, …).
    Config,
    /// The server broke the protocol (garbage, oversized reply, a success
    /// code where SMTP allows none). Temporary: mailhop(8) says so, and
    /// it says nothing about the message.
    Protocol,
    /// Every recipient was refused; the per-recipient replies are in the
    /// outcome's `rejected`.
    AllRecipientsRejected(Vec<(String, Reply)>),
}

#[derive(Debug, Clone)]
pub struct Error {
    pub stage: Stage,
    pub kind: Kind,
    /// Human explanation: what happened and what to do.
    pub detail: String,
    /// The lower-level error this one explains (an I/O or TLS error), for
    /// `source()`.
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
    /// Recipients the server refused at RCPT before the transaction failed
    /// later (at DATA, say): their own reply is their fate, not this error.
    rejected: Vec<(String, Reply)>,
}

/// Errors compare by what they mean; their cause is only for `source()`.
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        (self.stage, &self.kind, &self.detail) == (other.stage, &other.kind, &other.detail)
    }
}

impl Eq for Error {}

impl Error {
    pub fn new(stage: Stage, kind: Kind, detail: impl Into<String>) -> Error {
        Error {
            stage,
            kind,
            detail: detail.into(),
            cause: None,
            rejected: Vec::new(),
        }
    }

    /// The recipients refused at RCPT before this error, with their replies.
    pub fn rejected(&self) -> &[(String, Reply)] {
        &self.rejected
    }

    /// The same error, with the lower-level one it explains as its source.
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// Worth trying again later: 4xx, network, timeout, protocol break.
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            Kind::Reply(r) => r.is_transient(),
            Kind::Network | Kind::Timeout | Kind::Protocol => true,
            Kind::AuthFailed(Some(r)) => r.is_transient(),
            // Any 4xx: some recipient may still be reached later.
            Kind::AllRecipientsRejected(list) => list.iter().any(|(_, r)| r.is_transient()),
            _ => false,
        }
    }

    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }

    /// The server refused the login (not: credentials unavailable).
    pub fn is_auth(&self) -> bool {
        matches!(self.kind, Kind::AuthFailed(_))
    }

    /// Any TLS failure, certificate problems included.
    pub fn is_tls(&self) -> bool {
        matches!(self.kind, Kind::Tls | Kind::Certificate(_))
    }

    /// The server's certificate was refused (verification or pin).
    pub fn is_certificate(&self) -> bool {
        matches!(self.kind, Kind::Certificate(_))
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::Timeout)
    }

    /// The server broke the protocol.
    pub fn is_protocol(&self) -> bool {
        matches!(self.kind, Kind::Protocol)
    }

    /// The connection could not be made or was lost.
    pub fn is_network(&self) -> bool {
        matches!(self.kind, Kind::Network)
    }

    /// The server's refusal, when the error is one.
    pub fn reply(&self) -> Option<&Reply> {
        match &self.kind {
            Kind::Reply(r) | Kind::AuthFailed(Some(r)) => Some(r),
            _ => None,
        }
    }

    /// What was wrong with the server's certificate, when that is the
    /// error and the server sent one.
    pub fn certificate(&self) -> Option<&CertProblem> {
        match &self.kind {
            Kind::Certificate(Some(p)) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.detail)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.certificate() {
            Some(p) => Some(p as &(dyn std::error::Error + 'static)),
            None => self
                .cause
                .as_deref()
                .map(|c| c as &(dyn std::error::Error + 'static)),
        }
    }
}

/// Advice for replies whose meaning is known, keyed on what providers send.
pub fn hint(reply: &Reply) -> Option<&'static str> {
    if reply.contains("SendAsDenied") || reply.contains("5.2.252") {
        return Some(
            "the smarthost only accepts mail from the signed-in mailbox: set [rewrite] from_policy = \"account\" \
             and the account's `from` to that mailbox, or grant Send As rights",
        );
    }
    if reply.contains("5.7.139") {
        return Some(
            "SMTP AUTH is disabled for this tenant or mailbox (Microsoft 365 security defaults); enable \
             authenticated SMTP for the mailbox, or use OAuth (auth = \"xoauth2\")",
        );
    }
    if reply.contains("5.7.30") {
        return Some(
            "basic authentication is switched off for client submission; use OAuth (auth = \"xoauth2\")",
        );
    }
    if reply.contains("5.7.9") && reply.code == 534 {
        return Some(
            "Gmail wants an app password (enable 2-Step Verification, then create one) or OAuth",
        );
    }
    if reply.contains("Too many login attempts") {
        return Some(
            "the provider throttles logins; let the queue send later rather than retrying now",
        );
    }
    None
}

// ---------------------------------------------------------------------------
// The stream: plain TCP or rustls over TCP, with our own read buffer (we
// must know it is empty when STARTTLS starts: CVE-2011-0411).

enum Conn {
    Plain(Timed),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Timed>>),
}

impl Conn {
    fn sock(&self) -> &Timed {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }
    fn sock_mut(&mut self) -> &mut Timed {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_mut(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Facts about the session, for `-v` and `mailhop check`.
#[derive(Debug, Clone, Default)]
pub struct Info {
    pub peer: Option<SocketAddr>,
    pub greeting: Option<Reply>,
    /// EHLO keywords (uppercase) with their parameters.
    pub extensions: Vec<(String, String)>,
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    /// Subject-ish description of each certificate in the chain (DER).
    pub peer_certificates: Vec<Vec<u8>>,
    pub authenticated_as: Option<String>,
}

impl Info {
    fn has(&self, keyword: &str) -> bool {
        self.extensions.iter().any(|(k, _)| k == keyword)
    }
    fn param(&self, keyword: &str) -> Option<&str> {
        self.extensions
            .iter()
            .find(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
    }
    /// AUTH mechanisms offered (both `AUTH X Y` and the old `AUTH=X Y`).
    pub fn auth_mechanisms(&self) -> Vec<String> {
        self.extensions
            .iter()
            .filter(|(k, _)| k == "AUTH" || k == "AUTH=")
            .flat_map(|(_, v)| v.split_whitespace().map(str::to_ascii_uppercase))
            .collect()
    }
}

/// Where `-v` output goes.
pub type Transcript = Option<Box<dyn Write>>;

/// Why a secret could not be obtained, and whether trying later may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError {
    pub message: String,
    pub transient: bool,
}

impl From<String> for SecretError {
    fn from(message: String) -> SecretError {
        SecretError {
            message,
            transient: false,
        }
    }
}

/// An open SMTP session, after EHLO (and TLS when configured).
pub struct Session {
    conn: Conn,
    buf: Vec<u8>,
    settings: Settings,
    info: Info,
    transcript: Transcript,
    /// While a message is being sent: no exchange runs past this.
    transaction: Option<Instant>,
    /// What we sent as credentials, to cut out of every reply.
    echoes: Echoes,
}

/// The credentials this session has sent, in every form the server saw or
/// could derive (base64 payloads, the decoded secret). A server that
/// repeats them in a reply (a 535 quoting the AUTH line) must not put
/// them into our errors, logs, transcript or queue files (issue #15.12).
#[derive(Default)]
struct Echoes(Vec<zeroize::Zeroizing<String>>);

impl Echoes {
    fn add(&mut self, s: &str) {
        if !s.is_empty() && !self.0.iter().any(|k| k.as_str() == s) {
            self.0.push(zeroize::Zeroizing::new(s.to_owned()));
        }
    }

    fn scrub(&self, text: &str) -> String {
        let needles: Vec<&str> = self.0.iter().map(|k| k.as_str()).collect();
        crate::credentials::redact_all(text, &needles)
    }
}

/// Slowest body transfer waited for: 1 KiB/s (8 kbit/s, below any working
/// link; a dead one is caught sooner by the per-write command_timeout).
const MIN_RATE: u64 = 1024;

/// How much of the message is read, stuffed and written at a time: one TLS
/// record's payload (RFC 8446 §5.1).
const DATA_CHUNK: usize = 16 * 1024;

/// The deadline for one whole transaction (MAIL to the final reply), so
/// that a server which answers every step just in time, or reads the body
/// one byte per timeout, cannot hold the connection without bound:
///
///   command_timeout × (recipients + 3)   MAIL, each RCPT, DATA, slack
/// + data_timeout                         the reply to the body
/// + size / MIN_RATE seconds              the body itself
///
/// `None` (no deadline) when either timeout is 0, meaning "wait for ever";
/// only `Settings` built in code can say that (the configuration requires
/// at least 1 s).
fn transaction_budget(s: &Settings, size: u64, recipients: usize) -> Option<Duration> {
    if s.command_timeout.is_zero() || s.data_timeout.is_zero() {
        return None;
    }
    let steps = u32::try_from(recipients.saturating_add(3)).unwrap_or(u32::MAX);
    Some(
        s.command_timeout
            .saturating_mul(steps)
            .saturating_add(s.data_timeout)
            .saturating_add(Duration::from_secs(size / MIN_RATE)),
    )
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("host", &self.settings.host)
            .field("info", &self.info)
            .finish()
    }
}

fn io_kind(stage: Stage, e: &io::Error, what: &str) -> Error {
    io_explained(stage, e, what).caused_by(io::Error::new(e.kind(), e.to_string()))
}

fn io_explained(stage: Stage, e: &io::Error, what: &str) -> Error {
    // Linux reports an expired SO_RCVTIMEO as EAGAIN (WouldBlock), not
    // TimedOut; both are timeouts.
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        return Error::new(stage, Kind::Timeout, format!("timed out {what} ({stage})"));
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return Error::new(
            stage,
            Kind::Network,
            format!("the server closed the connection during {stage}"),
        );
    }
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return tls_error(tls);
    }
    Error::new(
        stage,
        Kind::Network,
        format!("connection failed during {stage}: {e}"),
    )
}

/// Explains a rustls error in words: what the certificate problem is and
/// what to set.
fn tls_error(e: &rustls::Error) -> Error {
    tls_explained(e).caused_by(e.clone())
}

fn tls_explained(e: &rustls::Error) -> Error {
    use rustls::CertificateError as C;
    let cert = |detail: String| Error::new(Stage::Tls, Kind::Certificate(None), detail);
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => cert(
                "the server's certificate is not signed by a trusted authority (unknown issuer); \
                 if the smarthost uses a private CA, set tls_ca_file to its certificate, or pin the \
                 server with tls_fingerprint"
                    .into(),
            ),
            C::BadSignature => cert(
                "the server's certificate is not signed by a trusted authority: its issuer has the \
                 same name as a trusted CA, but a different key (another CA with the same name, or \
                 a re-issued CA); set tls_ca_file to the CA that signed it, or pin the server with \
                 tls_fingerprint"
                    .into(),
            ),
            C::NotValidForName => cert(
                "the server's certificate is not valid for the host name in `host`; connect by the \
                 name the certificate was issued for"
                    .into(),
            ),
            C::NotValidForNameContext { expected, presented } => cert(format!(
                "the server's certificate is not valid for \"{}\": it names {}; set `host` to one of those names",
                server_name_text(expected),
                if presented.is_empty() { "no names".to_string() } else { presented.join(", ") }
            )),
            C::Expired | C::ExpiredContext { .. } => cert(
                "the server's certificate has expired; the smarthost's administrator must renew it \
                 (check this machine's clock too)"
                    .into(),
            ),
            C::NotValidYet | C::NotValidYetContext { .. } => cert(
                "the server's certificate is not valid yet; check this machine's clock".into(),
            ),
            C::Revoked => cert("the server's certificate has been revoked".into()),
            C::ApplicationVerificationFailure => cert(
                "the server's certificate does not match tls_fingerprint; if the server's certificate \
                 was renewed, update tls_fingerprint (see `mailhop check`)"
                    .into(),
            ),
            other => cert(format!("the server's certificate was refused: {other:?}")),
        },
        rustls::Error::PeerIncompatible(p) => Error::new(
            Stage::Tls,
            Kind::Tls,
            format!("TLS handshake failed: the server does not support what mailhop requires ({p:?}); mailhop needs TLS 1.2 or later"),
        ),
        rustls::Error::AlertReceived(a) => Error::new(
            Stage::Tls,
            Kind::Tls,
            format!("TLS handshake failed: the server sent alert {a:?} (if the server wants a client certificate, set tls_cert_file and tls_key_file)"),
        ),
        other => Error::new(Stage::Tls, Kind::Tls, format!("TLS failed: {other}")),
    }
}

fn server_name_text(n: &ServerName<'_>) -> String {
    match n {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
        _ => "the server".to_string(),
    }
}

/// The verifier: CA verification (rustls webpki), or, with a pin, the pin
/// alone. Signatures are verified either way, so the peer must hold the
/// pinned certificate's key.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    pin: Option<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// Keeps a refused end-entity certificate for the error message.
    rejected: cert::Rejected,
}

impl Verifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Some(pin) = self.pin {
            let digest = ring_sha256(end_entity.as_ref());
            return if digest == pin {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            };
        }
        match &self.webpki {
            Some(v) => rustls::client::danger::ServerCertVerifier::verify_server_cert(
                v.as_ref(),
                end_entity,
                intermediates,
                server_name,
                ocsp,
                now,
            ),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }
}

impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let result = self.check(end_entity, intermediates, server_name, ocsp, now);
        if let Err(e) = &result {
            let reason = match e {
                rustls::Error::InvalidCertificate(c) => format!("{c:?}"),
                other => other.to_string(),
            };
            self.rejected.record(end_entity.as_ref(), reason);
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// SHA-256, from ring (already linked for rustls's crypto provider).
pub fn ring_sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Formats a fingerprint as `sha256:AB:CD:…`, the form tls_fingerprint takes.
pub fn format_fingerprint(fp: &[u8; 32]) -> String {
    let hex: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
    format!("sha256:{}", hex.join(":"))
}

/// Parses `sha256:AB:CD:…` (colons optional, any case).
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: String = s
        .trim()
        .strip_prefix("sha256:")
        .or_else(|| s.trim().strip_prefix("SHA256:"))?
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The client configuration and what a failed verification is explained
/// with.
struct TlsSetup {
    config: Arc<rustls::ClientConfig>,
    trust: TrustStore,
    rejected: cert::Rejected,
}

fn tls_config(s: &Settings) -> Result<TlsSetup, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config_err = |detail: String| Error::new(Stage::Tls, Kind::Config, detail);
    let mut trust = TrustStore::Pin;
    let webpki = if s.fingerprint.is_some() {
        None
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &s.ca_file {
            // The fast path: one bundle, no directory scan.
            Some(path) => {
                trust = TrustStore::CaFile(path.clone());
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| config_err(format!("tls_ca_file {}: {e}", path.display())))?;
                for c in certs {
                    let c =
                        c.map_err(|e| config_err(format!("tls_ca_file {}: {e}", path.display())))?;
                    roots
                        .add(c)
                        .map_err(|e| config_err(format!("tls_ca_file {}: {e}", path.display())))?;
                }
            }
            None if s.system_roots_only => {
                trust = TrustStore::System;
                if let Some(bundle) = SYSTEM_BUNDLES
                    .iter()
                    .map(std::path::Path::new)
                    .find(|p| p.exists())
                {
                    trust = TrustStore::SystemBundle(bundle.to_path_buf());
                    let certs = CertificateDer::pem_file_iter(bundle)
                        .map_err(|e| config_err(format!("{}: {e}", bundle.display())))?;
                    roots.add_parsable_certificates(certs.flatten());
                }
            }
            None => {
                trust = TrustStore::System;
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        if roots.is_empty() {
            return Err(config_err(
                "no trusted CA certificates were found (install ca-certificates, or set tls_ca_file)".into(),
            ));
        }
        Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| config_err(format!("cannot build the certificate verifier: {e}")))?,
        )
    };
    let rejected = cert::Rejected::default();
    let versions: &[&rustls::SupportedProtocolVersion] = match s.min_tls {
        MinTls::V12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinTls::V13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| config_err(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            webpki,
            pin: s.fingerprint,
            provider,
            rejected: rejected.clone(),
        }));
    let config = match &s.client_cert {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| config_err(format!("tls_cert_file {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| config_err(format!("tls_key_file {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_err(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsSetup {
        config: Arc::new(config),
        trust,
        rejected,
    })
}

/// xtext (RFC 3461 §4) for ENVID and ORCPT values.
pub fn xtext(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Whether `host` is a loopback address or `localhost`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The per-recipient result of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: Vec<String>,
    pub rejected: Vec<(String, Reply)>,
    /// The reply to the end of DATA.
    pub reply: Option<Reply>,
}

impl Session {
    /// Connects, reads the greeting, says EHLO and brings up TLS as
    /// configured. No credentials are sent here.
    pub fn connect(settings: &Settings, transcript: Transcript) -> Result<Session, Error> {
        let tls = match settings.tls {
            TlsMode::None => None,
            _ => Some(tls_config(settings)?),
        };
        let tcp = tcp_connect(&settings.host, settings.port, settings.connect_timeout)?;
        let peer = tcp.peer_addr().ok();
        // Before anything is read, including an implicit-TLS handshake: a
        // silent or trickling server must time out, not hang the caller.
        let handshake_limit = Limit::within(settings.command_timeout, None);
        let conn = match (settings.tls, &tls) {
            (TlsMode::Implicit, Some(cfg)) => Conn::Tls(Box::new(handshake(
                cfg,
                &settings.host,
                Timed::new(tcp),
                handshake_limit,
            )?)),
            _ => Conn::Plain(Timed::new(tcp)),
        };
        let mut s = Session {
            conn,
            buf: Vec::new(),
            settings: settings.clone(),
            info: Info {
                peer,
                ..Info::default()
            },
            transcript,
            transaction: None,
            echoes: Echoes::default(),
        };
        s.start_clock(settings.command_timeout);
        let greeting = s
            .read_reply(Stage::Greeting)
            .map_err(|e| s.explain_tls_close(e))?;
        if !greeting.is_positive() {
            return Err(Error::new(
                Stage::Greeting,
                Kind::Reply(greeting.clone()),
                format!("{} refused the connection: {greeting}", settings.host),
            ));
        }
        s.info.greeting = Some(greeting);
        s.ehlo()?;
        if settings.tls == TlsMode::StartTls {
            if !s.info.has("STARTTLS") {
                return Err(Error::new(
                    Stage::StartTls,
                    Kind::Unsupported,
                    format!(
                        "{} does not offer STARTTLS, so mailhop will not continue (no credentials or mail \
                         were sent); use tls = \"implicit\" if the server expects TLS from the start",
                        settings.host
                    ),
                ));
            }
            let r = s.command("STARTTLS", Stage::StartTls)?;
            s.expect(&r, Stage::StartTls, &[220], "STARTTLS")?;
            if r.code != 220 {
                return Err(Error::new(
                    Stage::StartTls,
                    Kind::Reply(r.clone()),
                    format!("{} refused STARTTLS: {r}", settings.host),
                ));
            }
            // Anything the server sent after its 220 arrived in plaintext and
            // must not be taken as if it came over TLS (CVE-2011-0411).
            if !s.buf.is_empty() {
                return Err(Error::new(
                    Stage::StartTls,
                    Kind::Protocol,
                    "the server sent data after agreeing to STARTTLS (possible injection attack); aborted",
                ));
            }
            // Swap a clone of the socket in while the original moves into
            // the TLS stream; the clone is dropped right after.
            let placeholder = s
                .conn
                .sock()
                .try_clone()
                .map_err(|e| io_kind(Stage::StartTls, &e, "starting TLS"))?;
            let Conn::Plain(tcp) = std::mem::replace(&mut s.conn, Conn::Plain(placeholder)) else {
                return Err(Error::new(
                    Stage::StartTls,
                    Kind::Protocol,
                    "TLS is already active",
                ));
            };
            let cfg = tls
                .as_ref()
                .ok_or_else(|| Error::new(Stage::StartTls, Kind::Config, "no TLS configuration"))?;
            let limit = Limit::within(settings.command_timeout, None);
            s.conn = Conn::Tls(Box::new(handshake(cfg, &settings.host, tcp, limit)?));
            s.ehlo().map_err(|e| s.explain_tls_close(e))?;
        }
        if let Conn::Tls(t) = &s.conn {
            let c = &t.conn;
            s.info.tls_version = c.protocol_version().map(|v| format!("{v:?}"));
            s.info.tls_cipher = c
                .negotiated_cipher_suite()
                .map(|cs| format!("{:?}", cs.suite()));
            s.info.peer_certificates = c
                .peer_certificates()
                .map(|certs| certs.iter().map(|c| c.as_ref().to_vec()).collect())
                .unwrap_or_default();
            let (v, cph) = (
                s.info.tls_version.clone().unwrap_or_default(),
                s.info.tls_cipher.clone().unwrap_or_default(),
            );
            s.note(&format!("TLS established: {v}, {cph}"));
        }
        Ok(s)
    }

    pub fn info(&self) -> &Info {
        &self.info
    }

    /// With TLS 1.3 a server that wants a client certificate refuses it
    /// only after the handshake, so the client sees the connection close
    /// before the first reply. Say what that usually means.
    fn explain_tls_close(&self, mut e: Error) -> Error {
        if e.kind == Kind::Network
            && matches!(self.conn, Conn::Tls(_))
            && self.settings.client_cert.is_none()
        {
            e.detail.push_str(
                " right after the TLS handshake; if the server requires a client certificate, \
                 set tls_cert_file and tls_key_file",
            );
        }
        e
    }

    fn note(&mut self, text: &str) {
        if let Some(t) = self.transcript.as_mut() {
            let _ = writeln!(t, "mailhop: {text}");
        }
    }

    /// From now on, the next exchange (a command and its whole reply) may
    /// take `budget`, and never runs past the transaction's deadline.
    fn start_clock(&mut self, budget: Duration) {
        let limit = Limit::within(budget, self.transaction);
        self.conn.sock_mut().set_limit(limit);
    }

    /// Checks a reply against the success codes `wanted` for `what`: a
    /// success code SMTP does not allow there is a protocol error (so
    /// temporary); a refusal is left to the caller.
    fn expect(&self, r: &Reply, stage: Stage, wanted: &[u16], what: &str) -> Result<(), Error> {
        match answer(r.code, wanted) {
            Answer::Violation => Err(self.violation(r, stage, what)),
            Answer::Expected | Answer::Refused => Ok(()),
        }
    }

    /// As `expect`, for steps where any 2xx is success (MAIL, RCPT, the
    /// end of DATA): a 3xx there is the violation.
    fn expect_2xx(&self, r: &Reply, stage: Stage, what: &str) -> Result<(), Error> {
        if (300..400).contains(&r.code) {
            return Err(self.violation(r, stage, what));
        }
        Ok(())
    }

    fn violation(&self, r: &Reply, stage: Stage, what: &str) -> Error {
        Error::new(
            stage,
            Kind::Protocol,
            format!(
                "{} answered {what} with \"{r}\", which SMTP does not allow there \
                 (a broken server or something in between); treated as temporary",
                self.settings.host
            ),
        )
    }

    fn ehlo(&mut self) -> Result<(), Error> {
        let r = self.command(&format!("EHLO {}", self.settings.helo_name), Stage::Ehlo)?;
        if !r.is_positive() {
            return Err(Error::new(
                Stage::Ehlo,
                Kind::Reply(r.clone()),
                format!(
                    "{} refused EHLO {}: {r}",
                    self.settings.host, self.settings.helo_name
                ),
            ));
        }
        self.info.extensions = r
            .lines
            .iter()
            .skip(1)
            .map(|l| {
                let (k, v) = l
                    .split_once([' ', '='])
                    .map_or((l.as_str(), ""), |(k, v)| (k, v));
                let k =
                    if l.as_bytes().get(k.len()) == Some(&b'=') && k.eq_ignore_ascii_case("AUTH") {
                        "AUTH=".to_string()
                    } else {
                        k.to_ascii_uppercase()
                    };
                (k, v.trim().to_string())
            })
            .collect();
        Ok(())
    }

    fn send_line(&mut self, line: &str, shown: &str, stage: Stage) -> Result<(), Error> {
        if let Some(t) = self.transcript.as_mut() {
            let _ = writeln!(t, "-> {shown}");
        }
        let mut data = Vec::with_capacity(line.len() + 2);
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(b"\r\n");
        self.conn
            .write_all(&data)
            .and_then(|()| self.conn.flush())
            .map_err(|e| io_kind(stage, &e, "sending a command"))
    }

    /// One command and its reply, together bounded by command_timeout.
    fn command(&mut self, line: &str, stage: Stage) -> Result<Reply, Error> {
        self.start_clock(self.settings.command_timeout);
        self.send_line(line, line, stage)?;
        self.read_reply(stage)
    }

    /// Reads one (possibly multi-line) reply.
    fn read_reply(&mut self, stage: Stage) -> Result<Reply, Error> {
        let mut lines = Vec::new();
        let mut code = None;
        loop {
            let line = self.read_line(stage)?;
            let Some((c, last, text)) = parse_line(&line) else {
                let shown = self.echoes.scrub(&String::from_utf8_lossy(&line));
                let shown: String = shown.chars().take(80).collect();
                return Err(Error::new(
                    stage,
                    Kind::Protocol,
                    format!(
                        "the server sent something that is not an SMTP reply during {stage}: {shown:?}"
                    ),
                ));
            };
            let text = self.echoes.scrub(&text);
            if code.is_some_and(|prev| prev != c) {
                return Err(Error::new(
                    stage,
                    Kind::Protocol,
                    "reply lines with different codes",
                ));
            }
            code = Some(c);
            if let Some(t) = self.transcript.as_mut() {
                let _ = writeln!(
                    t,
                    "<- {c}{}{}",
                    if last { ' ' } else { '-' },
                    text.replace(|ch: char| ch.is_control(), " ")
                );
            }
            lines.push(text);
            if last {
                return Ok(Reply { code: c, lines });
            }
            if lines.len() > MAX_LINES {
                return Err(Error::new(
                    stage,
                    Kind::Protocol,
                    "the server's reply is too long",
                ));
            }
        }
    }

    fn read_line(&mut self, stage: Stage) -> Result<Vec<u8>, Error> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(pos + 1);
                return Ok(std::mem::replace(&mut self.buf, rest));
            }
            if self.buf.len() > MAX_LINE {
                return Err(Error::new(
                    stage,
                    Kind::Protocol,
                    "the server sent an over-long reply line",
                ));
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .conn
                .read(&mut chunk)
                .map_err(|e| io_kind(stage, &e, "waiting for the server"))?;
            if n == 0 {
                return Err(Error::new(
                    stage,
                    Kind::Network,
                    format!("the server closed the connection during {stage}"),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Logs in, if the settings ask for it. `secret` is only called when a
    /// credential is really needed, so a slow password_command is not run
    /// for a server that needs none.
    pub fn authenticate(
        &mut self,
        secret: &mut dyn FnMut() -> Result<Secret, SecretError>,
    ) -> Result<(), Error> {
        let mode = self.settings.auth;
        let Some(user) = self.settings.username.clone() else {
            return match mode {
                AuthMode::Auto | AuthMode::None => Ok(()),
                _ => Err(Error::new(
                    Stage::Auth,
                    Kind::Config,
                    "auth is set but the account has no `user`; set user = \"…\"",
                )),
            };
        };
        if mode == AuthMode::None {
            return Ok(());
        }
        // Credentials only over TLS, or to loopback with tls = "none".
        let encrypted = matches!(self.conn, Conn::Tls(_));
        if !encrypted && !is_loopback(&self.settings.host) {
            return Err(Error::new(
                Stage::Auth,
                Kind::Config,
                "refusing to send credentials over an unencrypted connection",
            ));
        }
        let offered = self.info.auth_mechanisms();
        let mech = match mode {
            AuthMode::Plain => "PLAIN",
            AuthMode::Login => "LOGIN",
            AuthMode::Xoauth2 => "XOAUTH2",
            _ => {
                if offered.iter().any(|m| m == "PLAIN") {
                    "PLAIN"
                } else if offered.iter().any(|m| m == "LOGIN") {
                    "LOGIN"
                } else {
                    return Err(Error::new(
                        Stage::Auth,
                        Kind::Unsupported,
                        format!(
                            "{} offers no password mechanism mailhop supports (offered: {}); set auth = \"xoauth2\" for OAuth, or auth = \"none\"",
                            self.settings.host,
                            if offered.is_empty() {
                                "none".to_string()
                            } else {
                                offered.join(" ")
                            }
                        ),
                    ));
                }
            }
        };
        if !offered.iter().any(|m| m == mech) {
            return Err(Error::new(
                Stage::Auth,
                Kind::Unsupported,
                format!(
                    "{} does not offer AUTH {mech} (offered: {})",
                    self.settings.host,
                    if offered.is_empty() {
                        "none".to_string()
                    } else {
                        offered.join(" ")
                    }
                ),
            ));
        }
        let secret = secret().map_err(|e| {
            // A token endpoint that is down is worth retrying later; a
            // password file with the wrong mode is not.
            let kind = if e.transient {
                Kind::Network
            } else {
                Kind::Credentials
            };
            Error::new(Stage::Auth, kind, e.message)
        })?;
        // A server that echoes what it was sent must not make the secret
        // appear in our error text.
        self.echoes.add(secret.expose());
        let reply = self.auth_exchange(mech, &user, &secret).map_err(|mut e| {
            e.detail = self.echoes.scrub(&e.detail);
            e
        })?;
        self.expect(&reply, Stage::Auth, &[235], &format!("AUTH {mech}"))?;
        if reply.code != 235 {
            return Err(auth_failed(&self.settings.host, mech, reply));
        }
        self.info.authenticated_as = Some(user);
        Ok(())
    }

    /// The AUTH dialogue for one mechanism; returns the final reply.
    fn auth_exchange(&mut self, mech: &str, user: &str, secret: &Secret) -> Result<Reply, Error> {
        let reply = match mech {
            "PLAIN" => {
                let payload =
                    zeroize::Zeroizing::new(B64.encode(format!("\0{user}\0{}", secret.expose())));
                self.echoes.add(&payload);
                self.secret_step(
                    &format!("AUTH PLAIN {}", payload.as_str()),
                    "AUTH PLAIN ***",
                )?
            }
            "LOGIN" => {
                let r = self.command("AUTH LOGIN", Stage::Auth)?;
                self.expect(&r, Stage::Auth, &[334], "AUTH LOGIN")?;
                if r.code != 334 {
                    return Err(auth_failed(&self.settings.host, mech, r));
                }
                let r = self.secret_step(&B64.encode(user), "*** (user name)")?;
                self.expect(&r, Stage::Auth, &[334], "the user name")?;
                if r.code != 334 {
                    return Err(auth_failed(&self.settings.host, mech, r));
                }
                let payload = zeroize::Zeroizing::new(B64.encode(secret.expose()));
                self.echoes.add(&payload);
                self.secret_step(payload.as_str(), "*** (password)")?
            }
            _ => {
                let raw = zeroize::Zeroizing::new(format!(
                    "user={user}\x01auth=Bearer {}\x01\x01",
                    secret.expose()
                ));
                let payload = zeroize::Zeroizing::new(B64.encode(raw.as_bytes()));
                self.echoes.add(&raw);
                self.echoes.add(&payload);
                let r = self.secret_step(
                    &format!("AUTH XOAUTH2 {}", payload.as_str()),
                    "AUTH XOAUTH2 ***",
                )?;
                if r.code == 334 {
                    // The server explains the refusal in a base64 JSON
                    // challenge and wants an empty line before its 535.
                    let json = r
                        .lines
                        .first()
                        .and_then(|l| B64.decode(l.trim()).ok())
                        .map(|b| self.echoes.scrub(&String::from_utf8_lossy(&b)))
                        .unwrap_or_default();
                    let fin =
                        self.secret_step("", "(empty line, as XOAUTH2 requires after an error)")?;
                    self.expect(&fin, Stage::Auth, &[], "the XOAUTH2 error challenge")?;
                    let mut e = auth_failed(&self.settings.host, mech, fin);
                    if !json.is_empty() {
                        e.detail.push_str(&format!("; the server said: {json}"));
                    }
                    return Err(e);
                }
                r
            }
        };
        Ok(reply)
    }

    /// One AUTH step whose line is (or carries) a secret: the transcript
    /// shows `shown` instead; the step and its reply are bounded by
    /// command_timeout.
    fn secret_step(&mut self, line: &str, shown: &str) -> Result<Reply, Error> {
        self.start_clock(self.settings.command_timeout);
        self.send_line(line, shown, Stage::Auth)?;
        self.read_reply(Stage::Auth)
    }

    /// Sends one message: MAIL, one RCPT per recipient, DATA. A refused
    /// recipient does not stop the others. The whole transaction has a
    /// deadline scaled by the message size (`transaction_budget`).
    pub fn send(&mut self, env: &Envelope<'_>, message: &mut dyn Read) -> Result<Outcome, Error> {
        self.transaction = transaction_budget(&self.settings, env.size, env.recipients.len())
            .and_then(|b| Instant::now().checked_add(b));
        let result = self.transact(env, message);
        self.transaction = None;
        result
    }

    fn transact(&mut self, env: &Envelope<'_>, message: &mut dyn Read) -> Result<Outcome, Error> {
        let smtputf8 = !env.sender.is_ascii() || env.recipients.iter().any(|r| !r.is_ascii());
        if smtputf8 && !self.info.has("SMTPUTF8") {
            return Err(Error::new(
                Stage::Mail,
                Kind::Unsupported,
                format!(
                    "an address is not ASCII and {} does not offer SMTPUTF8, so the message cannot be sent there",
                    self.settings.host
                ),
            ));
        }
        let mut mail = format!("MAIL FROM:<{}>", env.sender);
        if let Some(limit) = self.info.param("SIZE") {
            if let Ok(max) = limit.trim().parse::<u64>()
                && max > 0
                && env.size > max
            {
                return Err(Error::new(
                    Stage::Mail,
                    Kind::Reply(Reply {
                        code: 552,
                        lines: vec![format!(
                            "5.3.4 message size {} exceeds the server's limit {max}",
                            env.size
                        )],
                    }),
                    format!(
                        "the message is {} bytes, more than {} accepts ({max} bytes)",
                        env.size, self.settings.host
                    ),
                ));
            }
            mail.push_str(&format!(" SIZE={}", env.size));
        }
        if env.eight_bit && self.info.has("8BITMIME") {
            mail.push_str(" BODY=8BITMIME");
        }
        if smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        let dsn = self.info.has("DSN");
        if dsn {
            if let Some(full) = env.dsn.ret_full {
                mail.push_str(if full { " RET=FULL" } else { " RET=HDRS" });
            }
            if let Some(id) = &env.dsn.envid {
                mail.push_str(&format!(" ENVID={}", xtext(id)));
            }
        }
        let r = self.command(&mail, Stage::Mail)?;
        self.expect_2xx(&r, Stage::Mail, "MAIL FROM")?;
        if !r.is_positive() {
            let hint = hint(&r).map(|h| format!("; {h}")).unwrap_or_default();
            return Err(Error::new(
                Stage::Mail,
                Kind::Reply(r.clone()),
                format!(
                    "{} refused the sender <{}>: {r}{hint}",
                    self.settings.host, env.sender
                ),
            ));
        }
        let mut outcome = Outcome::default();
        for (i, rcpt) in env.recipients.iter().enumerate() {
            let mut cmd = format!("RCPT TO:<{rcpt}>");
            if dsn {
                cmd.push_str(&env.dsn.rcpt_params(i));
            }
            let r = self.command(&cmd, Stage::Rcpt)?;
            self.expect_2xx(&r, Stage::Rcpt, "RCPT TO")?;
            if r.is_positive() {
                outcome.accepted.push(rcpt.clone());
            } else {
                outcome.rejected.push((rcpt.clone(), r));
            }
        }
        if outcome.accepted.is_empty() {
            let _ = self.reset();
            let list = outcome.rejected.clone();
            let text: Vec<String> = list.iter().map(|(a, r)| format!("<{a}>: {r}")).collect();
            return Err(Error::new(
                Stage::Rcpt,
                Kind::AllRecipientsRejected(list),
                format!(
                    "{} refused every recipient: {}",
                    self.settings.host,
                    text.join("; ")
                ),
            ));
        }
        match self.data_phase(message) {
            Ok(r) => {
                outcome.reply = Some(r);
                Ok(outcome)
            }
            Err(mut e) => {
                e.rejected = outcome.rejected;
                Err(e)
            }
        }
    }

    /// DATA, the message and its end: the server's final reply.
    fn data_phase(&mut self, message: &mut dyn Read) -> Result<Reply, Error> {
        let r = self.command("DATA", Stage::Data)?;
        self.expect(&r, Stage::Data, &[354], "DATA")?;
        if r.code != 354 {
            let hint = hint(&r).map(|h| format!("; {h}")).unwrap_or_default();
            return Err(Error::new(
                Stage::Data,
                Kind::Reply(r.clone()),
                format!("{} refused DATA: {r}{hint}", self.settings.host),
            ));
        }
        let size = self.write_data(message)?;
        if let Some(t) = self.transcript.as_mut() {
            let _ = writeln!(t, "-> (message: {size} bytes)\n-> .");
        }
        self.start_clock(self.settings.data_timeout);
        let r = self.read_reply(Stage::Message)?;
        self.expect_2xx(&r, Stage::Message, "the end of the message")?;
        if !r.is_positive() {
            let hint = hint(&r).map(|h| format!("; {h}")).unwrap_or_default();
            return Err(Error::new(
                Stage::Message,
                Kind::Reply(r.clone()),
                format!("{} refused the message: {r}{hint}", self.settings.host),
            ));
        }
        Ok(r)
    }

    /// Streams the message with dot-stuffing and the terminator. Each
    /// stuffed chunk is held until the next read shows whether it is the
    /// last, so the terminator goes out with the tail of the message, never
    /// alone. Returns the message size.
    fn write_data(&mut self, message: &mut dyn Read) -> Result<u64, Error> {
        // The body may take as long as the transaction allows, but each
        // write must make progress within command_timeout.
        let idle = Some(self.settings.command_timeout).filter(|d| !d.is_zero());
        self.conn.sock_mut().set_limit(Limit {
            deadline: self.transaction,
            idle,
        });
        let mut stuffer = DotStuffer::new();
        // One TLS record's worth at a time: larger chunks only grow this
        // buffer and rustls's queue of encrypted records (peak RSS), while
        // the writes stay far fewer than the network's round trips.
        let mut chunk = vec![0u8; DATA_CHUNK];
        let mut pending = Vec::with_capacity(DATA_CHUNK + DATA_CHUNK / 8);
        let mut total = 0u64;
        loop {
            let n = match message.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::new(
                        Stage::Message,
                        Kind::Config,
                        format!("cannot read the spooled message: {e}"),
                    ));
                }
            };
            self.conn
                .write_all(&pending)
                .map_err(|e| io_kind(Stage::Message, &e, "sending the message"))?;
            pending.clear();
            total += n as u64;
            stuffer.encode(&chunk[..n], &mut pending);
        }
        pending.extend_from_slice(stuffer.terminator());
        self.conn
            .write_all(&pending)
            .and_then(|()| self.conn.flush())
            .map_err(|e| io_kind(Stage::Message, &e, "sending the message"))?;
        Ok(total)
    }

    /// RSET, to send the next message on the same connection.
    pub fn reset(&mut self) -> Result<(), Error> {
        let r = self.command("RSET", Stage::Reset)?;
        if r.is_positive() {
            Ok(())
        } else {
            Err(Error::new(
                Stage::Reset,
                Kind::Reply(r.clone()),
                format!("RSET failed: {r}"),
            ))
        }
    }

    /// Says QUIT and closes; errors do not matter any more.
    pub fn quit(mut self) {
        if self.command("QUIT", Stage::Reset).is_ok()
            && let Conn::Tls(t) = &mut self.conn
        {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
    }
}

fn auth_failed(host: &str, mech: &str, r: Reply) -> Error {
    // The provider advice (5.7.139, 5.7.30: "use OAuth") is about password
    // logins; a refused token needs other words.
    let hint = if mech == "XOAUTH2" {
        if r.code == 535 || r.code == 534 {
            "; the OAuth token was refused: check that the account's user is the mailbox the \
             token was issued for and that the app has the SMTP permission (mailhop check \
             shows the token's state)"
                .to_string()
        } else {
            String::new()
        }
    } else {
        hint(&r).map(|h| format!("; {h}")).unwrap_or_else(|| {
            if r.code == 535 || r.code == 534 {
                "; check the account's user and password".to_string()
            } else {
                String::new()
            }
        })
    };
    Error::new(
        Stage::Auth,
        Kind::AuthFailed(Some(r.clone())),
        format!("{host} refused the login: {r}{hint}"),
    )
}

fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, Error> {
    let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (host_for_lookup, port)
        .to_socket_addrs()
        .map_err(|e| {
            Error::new(
                Stage::Connect,
                Kind::Network,
                format!(
                    "cannot resolve {host}: {e} (a temporary DNS failure is reported as temporary)"
                ),
            )
        })?
        .collect();
    let mut last = None;
    for addr in &addrs {
        let attempt = if timeout.is_zero() {
            TcpStream::connect(addr)
        } else {
            TcpStream::connect_timeout(addr, timeout)
        };
        match attempt {
            Ok(s) => {
                // Commands and replies are small: don't let Nagle hold them.
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        Some((addr, e))
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Error::new(
                Stage::Connect,
                Kind::Timeout,
                format!(
                    "connecting to {host} ({addr}) timed out after {} s",
                    timeout.as_secs()
                ),
            )
        }
        Some((addr, e)) => Error::new(
            Stage::Connect,
            Kind::Network,
            format!("cannot connect to {host} port {port} ({addr}): {e}"),
        ),
        None => Error::new(
            Stage::Connect,
            Kind::Network,
            format!("{host} has no address"),
        ),
    })
}

/// The TLS handshake, bounded by `limit` as a whole. A refused
/// certificate is described (subject, issuer, fingerprint, trust store).
fn handshake(
    tls: &TlsSetup,
    host: &str,
    mut tcp: Timed,
    limit: Limit,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, Timed>, Error> {
    tcp.set_limit(limit);
    handshake_io(&tls.config, host, tcp).map_err(|mut e| {
        if let Kind::Certificate(slot) = &mut e.kind
            && let Some((der, reason)) = tls.rejected.take()
        {
            let problem = CertProblem::describe(reason, tls.trust.clone(), &der);
            e.detail = format!("{}; {problem}", e.detail);
            *slot = Some(Box::new(problem));
        }
        e
    })
}

fn handshake_io(
    cfg: &Arc<rustls::ClientConfig>,
    host: &str,
    mut tcp: Timed,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, Timed>, Error> {
    let name = ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|_| {
        Error::new(
            Stage::Tls,
            Kind::Config,
            format!("\"{host}\" is not a valid TLS server name"),
        )
    })?;
    let mut conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| tls_error(&e))?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Err(tls_error(tls));
            }
            return Err(io_kind(Stage::Tls, &e, "during the TLS handshake"));
        }
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// Dot-stuffing (RFC 5321 §4.5.2) across chunk boundaries, for input that
/// is already CRLF-normalised.
#[derive(Debug)]
struct DotStuffer {
    at_line_start: bool,
    /// The last two bytes seen, to know whether the message ended in CRLF.
    tail: [u8; 2],
    empty: bool,
}

impl DotStuffer {
    fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            tail: [0, 0],
            empty: true,
        }
    }

    fn encode(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for &b in data {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            self.at_line_start = b == b'\n';
            self.tail = [self.tail[1], b];
            self.empty = false;
        }
    }

    /// `.CRLF` after a message ending in CRLF, else CRLF first.
    fn terminator(&self) -> &'static [u8] {
        if self.empty || self.tail == *b"\r\n" {
            b".\r\n"
        } else {
            b"\r\n.\r\n"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_and_tls_errors_keep_their_source() {
        use std::error::Error as _;
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let e = io_kind(Stage::Connect, &refused, "connecting");
        let source = e.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(
            source.map(io::Error::kind),
            Some(io::ErrorKind::ConnectionRefused)
        );
        let tls = tls_error(&rustls::Error::DecryptError);
        assert!(
            tls.source()
                .and_then(|s| s.downcast_ref::<rustls::Error>())
                .is_some()
        );
        // Equality is about meaning, not the cause.
        assert_eq!(e.clone(), e);
    }

    fn stuff(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            s.encode(c, &mut out);
        }
        out.extend_from_slice(s.terminator());
        out
    }

    #[test]
    fn dot_stuffing_matches_rfc_and_chunking() {
        let msg = b".leading\r\nmiddle . dot\r\n.\r\n..two\r\nend\r\n";
        let want = b"..leading\r\nmiddle . dot\r\n..\r\n...two\r\nend\r\n.\r\n".to_vec();
        for chunk in [1, 2, 3, 7, 100] {
            assert_eq!(stuff(msg, chunk), want, "chunk {chunk}");
        }
        assert_eq!(stuff(b"no newline", 3), b"no newline\r\n.\r\n".to_vec());
        assert_eq!(stuff(b"", 3), b".\r\n".to_vec());
    }

    #[test]
    fn reply_classification_and_enhanced() {
        let r = Reply {
            code: 554,
            lines: vec!["5.2.252 SendAsDenied; a@b not allowed to send as c@d".into()],
        };
        assert!(r.is_permanent() && !r.is_transient());
        assert_eq!(r.enhanced(), Some("5.2.252"));
        assert!(hint(&r).unwrap().contains("from_policy"));
        let r = Reply {
            code: 451,
            lines: vec!["4.3.0 try\x1b[31m later".into()],
        };
        assert!(r.is_transient());
        assert_eq!(r.one_line(), "451 4.3.0 try [31m later");
    }

    fn settings(command: u64, data: u64) -> Settings {
        Settings {
            host: "h".into(),
            port: 25,
            tls: TlsMode::None,
            ca_file: None,
            fingerprint: None,
            min_tls: MinTls::V12,
            client_cert: None,
            auth: AuthMode::None,
            username: None,
            connect_timeout: Duration::from_secs(command),
            command_timeout: Duration::from_secs(command),
            data_timeout: Duration::from_secs(data),
            helo_name: "c".into(),
            system_roots_only: false,
        }
    }

    #[test]
    fn transaction_budget_scales_with_size_and_recipients() {
        let s = settings(10, 60);
        // 10 × (1 + 3) + 60 + 0
        assert_eq!(
            transaction_budget(&s, 100, 1),
            Some(Duration::from_secs(100))
        );
        // + 10 MiB at 1 KiB/s, + 9 more recipients
        assert_eq!(
            transaction_budget(&s, 10 * 1024 * 1024, 10),
            Some(Duration::from_secs(10 * 13 + 60 + 10 * 1024))
        );
        assert_eq!(transaction_budget(&settings(0, 60), 1, 1), None);
        assert_eq!(transaction_budget(&settings(10, 0), 1, 1), None);
        // Absurd inputs saturate instead of panicking.
        let big = transaction_budget(&settings(u64::MAX, u64::MAX), u64::MAX, usize::MAX);
        assert_eq!(big, Some(Duration::MAX));
    }

    #[test]
    fn predicates_follow_the_kind() {
        let e = |kind| Error::new(Stage::Data, kind, "x");
        assert!(e(Kind::Protocol).is_transient() && e(Kind::Protocol).is_protocol());
        assert!(e(Kind::Timeout).is_transient() && e(Kind::Timeout).is_timeout());
        assert!(e(Kind::Network).is_network());
        let cert = e(Kind::Certificate(None));
        assert!(cert.is_tls() && cert.is_certificate() && cert.is_permanent());
        assert!(cert.certificate().is_none());
        assert!(e(Kind::Tls).is_tls() && !e(Kind::Tls).is_certificate());
        let refused = Reply {
            code: 535,
            lines: vec!["5.7.8 no".into()],
        };
        let auth = e(Kind::AuthFailed(Some(refused.clone())));
        assert!(auth.is_auth() && auth.is_permanent());
        assert_eq!(auth.reply(), Some(&refused));
        let problem = CertProblem::describe("UnknownIssuer".into(), TrustStore::System, b"x");
        let cert = e(Kind::Certificate(Some(Box::new(problem.clone()))));
        assert_eq!(cert.certificate(), Some(&problem));
        let source = std::error::Error::source(&cert).map(ToString::to_string);
        assert_eq!(source, Some(problem.to_string()));
    }

    #[test]
    fn echoes_are_scrubbed_in_every_form() {
        let mut echoes = Echoes::default();
        let payload = B64.encode("\0alice\0hunter2");
        echoes.add("hunter2");
        echoes.add(&payload);
        echoes.add("");
        let text = format!("535 5.7.8 bad: {payload} / alice:hunter2");
        assert_eq!(echoes.scrub(&text), "535 5.7.8 bad: *** / alice:***");
    }

    #[test]
    fn fingerprints_round_trip() {
        let fp = ring_sha256(b"abc");
        assert_eq!(
            format_fingerprint(&fp),
            "sha256:BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
        assert_eq!(parse_fingerprint(&format_fingerprint(&fp)), Some(fp));
        assert_eq!(
            parse_fingerprint(
                &format_fingerprint(&fp)
                    .to_lowercase()
                    .replace("sha256", "SHA256")
            ),
            Some(fp)
        );
        assert_eq!(parse_fingerprint("sha256:AB"), None);
        assert_eq!(parse_fingerprint("md5:AB"), None);
    }

    #[test]
    fn rcpt_dsn_params_per_recipient() {
        let dsn = Dsn {
            notify: Some("failure,delay".into()),
            recipients: vec![
                RcptDsn {
                    notify: Some("never".into()),
                    orcpt: Some("rfc822;Root+x@host".into()),
                },
                RcptDsn {
                    notify: None,
                    orcpt: Some("bad type;x".into()),
                },
            ],
            ..Dsn::default()
        };
        assert_eq!(
            dsn.rcpt_params(0),
            " NOTIFY=NEVER ORCPT=rfc822;Root+2Bx@host"
        );
        assert_eq!(dsn.rcpt_params(1), " NOTIFY=FAILURE,DELAY");
        assert_eq!(dsn.rcpt_params(2), " NOTIFY=FAILURE,DELAY");
        assert_eq!(Dsn::default().rcpt_params(0), "");
    }

    #[test]
    fn xtext_and_loopback() {
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert!(is_loopback("127.0.0.1") && is_loopback("::1") && is_loopback("localhost"));
        assert!(!is_loopback("smtp.example.com") && !is_loopback("10.0.0.1"));
    }

    /// Our reply parser agrees with lettre's on every well-formed reply.
    #[test]
    fn reply_parsing_agrees_with_lettre() {
        for text in [
            "250 OK\r\n",
            "250-mx.example.com\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "550 5.1.1 <a@b>: Recipient address rejected\r\n",
            "334 eyJzdGF0dXMiOiI0MDEifQ==\r\n",
        ] {
            let theirs: lettre::transport::smtp::response::Response = text.parse().unwrap();
            let mut code = 0;
            let mut lines = Vec::new();
            for l in text.split_inclusive("\r\n") {
                let (c, _, t) = parse_line(l.as_bytes()).unwrap();
                code = c;
                lines.push(t);
            }
            assert_eq!(code.to_string(), theirs.code().to_string());
            let theirs_lines: Vec<String> = theirs.message().map(str::to_string).collect();
            assert_eq!(lines, theirs_lines, "{text:?}");
        }
    }
}
