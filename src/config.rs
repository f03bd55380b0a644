//! TOML configuration: finding the file, parsing it, and validating it into
//! plain settings structs. Every error names the file, the line and the key,
//! and suggests the nearest valid key, because a typo in `/etc/mailhop.toml`
//! must not silently change where mail goes.
//!
//! Only this module knows the file format. Other modules receive the one
//! section they need (`Rewrite`, `AliasesSection`, `Local`, an `Account`),
//! never the whole `Config`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// The system-wide configuration file.
pub const SYSTEM_FILE: &str = "/etc/mailhop.toml";

/// Every key the file accepts, as `section.key` (`key` at top level). The
/// man page test checks each is documented in mailhop.toml(5), and a unit
/// test checks this list against what the parser really accepts.
pub const KEYS: &[&str] = &[
    "hostname",
    "log_file",
    "syslog",
    "dead_letter",
    "account",
    "account.name",
    "account.host",
    "account.from",
    "account.senders",
    "account.port",
    "account.tls",
    "account.tls_ca_file",
    "account.tls_fingerprint",
    "account.tls_min_version",
    "account.tls_cert_file",
    "account.tls_key_file",
    "account.auth",
    "account.user",
    "account.password_command",
    "account.password_file",
    "account.connect_timeout",
    "account.timeout",
    "account.data_timeout",
    "account.fallback",
    "account.max_per_minute",
    "account.max_connections",
    "account.pace_window",
    "account.oauth",
    "account.oauth.provider",
    "account.oauth.flow",
    "account.oauth.tenant",
    "account.oauth.client_id",
    "account.oauth.client_secret_file",
    "account.oauth.token_file",
    "account.oauth.token_url",
    "account.oauth.device_url",
    "account.oauth.auth_url",
    "account.oauth.scopes",
    "account.oauth.ca_file",
    "account.oauth.token_command",
    "rewrite",
    "rewrite.from_policy",
    "rewrite.domain",
    "rewrite.reply_to_original",
    "rewrite.revaliases",
    "aliases",
    "aliases.file",
    "aliases.map",
    "aliases.default",
    "local",
    "local.transport",
    "local.path",
    "local.capture",
    "local.max_recipients",
    "queue",
    "queue.mode",
    "queue.dir",
    "queue.max_age",
    "queue.bounce_to",
    "headers",
    "headers.scrub",
    "headers.remove",
    "headers.rule",
    "headers.rule.pattern",
    "headers.rule.action",
    "headers.rule.replace",
    "dkim",
    "dkim.domain",
    "dkim.selector",
    "dkim.key_file",
    "dkim.algorithm",
    "dkim.canonicalization",
    "dkim.headers",
    "dkim.oversign",
    "smtpd",
    "smtpd.allow",
    "smtpd.max_connections",
    "smtpd.max_recipients",
    "smtpd.max_message_size",
    "smtpd.idle_timeout",
    "smtpd.session_timeout",
    "smtpd.tls_cert_file",
    "smtpd.tls_key_file",
    "smtpd.password_file",
];

/// A validated configuration. `source` is `None` when no file exists and
/// the built-in defaults apply.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub source: Option<PathBuf>,
    pub hostname: Option<String>,
    pub log_file: Option<PathBuf>,
    pub syslog: bool,
    pub dead_letter: Option<PathBuf>,
    pub accounts: Vec<Account>,
    pub rewrite: Rewrite,
    pub aliases: AliasesSection,
    pub local: Local,
    pub queue: Queue,
    pub headers: crate::scrub::Settings,
    /// DKIM signers; the ones whose domain matches the From domain sign.
    pub dkim: Vec<crate::dkim::Settings>,
    /// The SMTP server (`-bs`, `mailhop serve`).
    pub smtpd: Smtpd,
}

/// `[smtpd]`: limits and access control of the SMTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtpd {
    /// Networks that may send without AUTH, besides loopback.
    pub allow: Vec<ipnet::IpNet>,
    /// Connections served at once by `mailhop serve`; more get 421.
    pub max_connections: usize,
    pub max_recipients: usize,
    /// Octets; announced with SIZE.
    pub max_message_size: u64,
    pub idle_timeout: Duration,
    pub session_timeout: Duration,
    /// STARTTLS certificate chain and key (PEM), both or neither.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// `user:hash` lines (argon2 or bcrypt); enables AUTH after STARTTLS.
    pub password_file: Option<PathBuf>,
}

impl Default for Smtpd {
    fn default() -> Self {
        Smtpd {
            allow: Vec::new(),
            max_connections: 20,
            max_recipients: crate::message::prepare::DEFAULT_MAX_RECIPIENTS,
            max_message_size: crate::smtpd::protocol::DEFAULT_MAX_SIZE,
            // Postfix's smtpd_timeout is 300s; the whole session is bounded
            // too, so a trickling client cannot hold a slot forever.
            idle_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(3600),
            tls_cert_file: None,
            tls_key_file: None,
            password_file: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueMode {
    /// Submit now; queue what fails temporarily.
    #[default]
    OnFailure,
    /// Queue and return at once; a runner delivers.
    Always,
    /// Synchronous, like msmtp: exit 75 on a temporary failure.
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub mode: QueueMode,
    /// `None`: /var/spool/mailhop for the system install, else the
    /// per-user state directory (the app layer decides).
    pub dir: Option<PathBuf>,
    pub max_age: Duration,
    pub bounce_to: Option<String>,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            mode: QueueMode::OnFailure,
            dir: None,
            max_age: Duration::from_secs(5 * 86_400),
            bounce_to: None,
        }
    }
}

/// One smarthost account.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    /// The address this account may send as.
    pub from: String,
    /// Envelope-sender patterns (`*@example.com`, `root`, `*`) selecting it.
    pub senders: Vec<String>,
    /// How to reach and log in to the smarthost. `helo_name` is left empty:
    /// the app layer fills in the hostname.
    pub smtp: crate::transport::Settings,
    pub password_command: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Token acquisition for `auth = "xoauth2"` (`[account.oauth]`).
    pub oauth: Option<crate::oauth::Settings>,
    /// Accounts tried in order when this one fails temporarily; each may
    /// send as this account's `from` (checked when the file is read).
    pub fallback: Vec<String>,
    /// How fast and how many at once this account may send.
    pub pacing: Pacing,
}

/// An account's sending limits, shared by every mailhop process on the
/// machine (the spool's pacing state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// At most this many messages per `window`; `None`: no limit.
    pub per_window: Option<u32>,
    /// The window `per_window` counts in: a minute, unless `pace_window`
    /// says otherwise (tests use a short one).
    pub window: Duration,
    /// At most this many connections at once; `None`: no limit.
    pub connections: Option<u32>,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            per_window: None,
            window: DEFAULT_PACE_WINDOW,
            connections: None,
        }
    }
}

/// The largest `max_per_minute` and `max_connections`.
pub const MAX_PACE_LIMIT: u32 = 10_000;

/// The window `max_per_minute` counts in unless `pace_window` is set.
pub const DEFAULT_PACE_WINDOW: Duration = Duration::from_secs(60);

/// The limits a provider enforces on one mailbox, as (messages per
/// minute, concurrent connections), by smarthost name. Office 365: 30
/// messages a minute; a fourth connection gets "432 4.3.2
/// STOREDRV.ClientSubmit; sender thread limit exceeded".
const PROVIDER_LIMITS: &[(&str, u32, u32)] = &[("smtp.office365.com", 30, 3)];

/// The provider's limits for `host`, if it is a known one.
pub fn provider_limits(host: &str) -> Option<(u32, u32)> {
    PROVIDER_LIMITS
        .iter()
        .find(|(h, _, _)| h.eq_ignore_ascii_case(host.trim_end_matches('.')))
        .map(|&(_, m, c)| (m, c))
}

pub use crate::transport::{AuthMode, MinTls, TlsMode};

/// How long password_command may take.
pub const PASSWORD_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FromPolicy {
    /// Envelope sender and From address become the account's `from`.
    #[default]
    Account,
    /// The caller's From and `-f` are respected (only qualified).
    Keep,
    /// Unqualified addresses are qualified, revaliases apply.
    Qualify,
}

/// One `revaliases` entry: local user to sender address, optionally an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevAlias {
    pub from: String,
    pub account: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rewrite {
    pub from_policy: FromPolicy,
    /// Qualifying domain; `None` means "use /etc/mailname, else hostname",
    /// which the app layer resolves because it touches files.
    pub domain: Option<String>,
    pub reply_to_original: bool,
    pub revaliases: BTreeMap<String, RevAlias>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AliasesSection {
    /// An aliases(5) file. `None`: no file (the default; /etc/aliases is
    /// only read when named, so a stale file cannot surprise anyone).
    pub file: Option<PathBuf>,
    /// Inline aliases; they win over the file.
    pub map: Vec<(String, Vec<String>)>,
    /// Catch-all for local names that no alias lists.
    pub default: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalTransport {
    #[default]
    Maildir,
    Mbox,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub transport: LocalTransport,
    /// Path template: `~` is the recipient's home, `%u` its local name.
    pub path: String,
    /// Deliver every recipient locally, remote ones included (developer
    /// capture of what an application sends).
    pub capture: bool,
    /// Most recipients one message may have (after alias expansion), like
    /// Postfix's `smtpd_recipient_limit`: a bound on what one message can
    /// make mailhop write.
    pub max_recipients: usize,
}

impl Default for Local {
    fn default() -> Self {
        Local {
            transport: LocalTransport::Maildir,
            path: "~/Maildir".to_string(),
            capture: false,
            max_recipients: crate::message::prepare::DEFAULT_MAX_RECIPIENTS,
        }
    }
}

/// A configuration error. Displayed as `file:line: what; what to do`.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Syntax, unknown key, wrong type or invalid value.
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                write!(f, "{}: cannot read configuration: {error}", path.display())
            }
            ConfigError::Invalid {
                path,
                line: Some(line),
                message,
            } => write!(f, "{}:{line}: {message}", path.display()),
            ConfigError::Invalid {
                path,
                line: None,
                message,
            } => write!(f, "{}: {message}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    parse(path, &text)
}

/// Parses and validates configuration text; `path` is only used in errors.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: explain(text, &e),
    })?;
    validate(path, text, raw)
}

// ---------------------------------------------------------------------------
// The file format, as serde sees it. Spanned values are the ones validation
// may reject, so the error can point at their line.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hostname: Option<Spanned<String>>,
    log_file: Option<PathBuf>,
    #[serde(default = "yes")]
    syslog: bool,
    dead_letter: Option<PathBuf>,
    #[serde(default)]
    account: Vec<RawAccount>,
    #[serde(default)]
    rewrite: RawRewrite,
    #[serde(default)]
    aliases: RawAliases,
    #[serde(default)]
    local: RawLocal,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    headers: RawHeaders,
    #[serde(default)]
    dkim: Vec<Spanned<RawDkim>>,
    #[serde(default)]
    smtpd: RawSmtpd,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSmtpd {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    max_recipients: Option<Spanned<i64>>,
    max_message_size: Option<Spanned<i64>>,
    idle_timeout: Option<Spanned<String>>,
    session_timeout: Option<Spanned<String>>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    password_file: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDkim {
    domain: String,
    selector: String,
    key_file: PathBuf,
    #[serde(default)]
    algorithm: RawAlgorithm,
    canonicalization: Option<String>,
    headers: Option<Vec<String>>,
    oversign: Option<Vec<String>>,
}

/// `algorithm` of `[[dkim]]`, in any case (RFC 6376 and DNS tools print
/// these names in upper case too, and mailhop.toml(5) allows it).
#[derive(Default, Clone, Copy)]
enum RawAlgorithm {
    #[default]
    RsaSha256,
    Ed25519Sha256,
}

impl<'de> Deserialize<'de> for RawAlgorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const NAMES: &[&str] = &["rsa-sha256", "ed25519-sha256"];
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "rsa-sha256" => Ok(RawAlgorithm::RsaSha256),
            "ed25519-sha256" => Ok(RawAlgorithm::Ed25519Sha256),
            _ => Err(serde::de::Error::unknown_variant(&s, NAMES)),
        }
    }
}

impl From<RawAlgorithm> for crate::dkim::Algorithm {
    fn from(a: RawAlgorithm) -> Self {
        match a {
            RawAlgorithm::RsaSha256 => crate::dkim::Algorithm::RsaSha256,
            RawAlgorithm::Ed25519Sha256 => crate::dkim::Algorithm::Ed25519Sha256,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    #[serde(default)]
    mode: QueueMode,
    dir: Option<PathBuf>,
    max_age: Option<Spanned<String>>,
    bounce_to: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHeaders {
    scrub: Option<Spanned<String>>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    pattern: String,
    action: Option<RawAction>,
    replace: Option<String>,
}

/// `action` of `[[headers.rule]]`; the other action is `replace`, a key of
/// its own because it carries the template.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawAction {
    Remove,
}

impl From<RawAction> for crate::scrub::Action {
    fn from(a: RawAction) -> Self {
        match a {
            RawAction::Remove => crate::scrub::Action::Remove,
        }
    }
}

/// `90`, `90s`, `30m`, `12h`, `5d`.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult).map(Duration::from_secs)
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: Spanned<String>,
    host: Spanned<String>,
    from: Spanned<String>,
    #[serde(default)]
    senders: Vec<Spanned<String>>,
    port: Option<Spanned<u16>>,
    #[serde(default)]
    tls: RawTls,
    tls_ca_file: Option<PathBuf>,
    tls_fingerprint: Option<Spanned<String>>,
    #[serde(default)]
    tls_min_version: RawMinTls,
    tls_cert_file: Option<Spanned<PathBuf>>,
    tls_key_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    auth: RawAuth,
    user: Option<String>,
    password_command: Option<String>,
    password_file: Option<PathBuf>,
    connect_timeout: Option<Spanned<u64>>,
    timeout: Option<Spanned<u64>>,
    data_timeout: Option<Spanned<u64>>,
    oauth: Option<Spanned<RawOAuth>>,
    #[serde(default)]
    fallback: Vec<Spanned<String>>,
    max_per_minute: Option<Spanned<u32>>,
    max_connections: Option<Spanned<u32>>,
    pace_window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth {
    provider: Option<RawProvider>,
    flow: Option<RawFlow>,
    tenant: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    token_url: Option<String>,
    device_url: Option<String>,
    auth_url: Option<String>,
    scopes: Option<Vec<String>>,
    ca_file: Option<PathBuf>,
    token_command: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawProvider {
    Microsoft,
    Google,
    Custom,
}

impl From<RawProvider> for crate::oauth::Provider {
    fn from(p: RawProvider) -> Self {
        match p {
            RawProvider::Microsoft => crate::oauth::Provider::Microsoft,
            RawProvider::Google => crate::oauth::Provider::Google,
            RawProvider::Custom => crate::oauth::Provider::Custom,
        }
    }
}

/// The flows mailhop runs itself; `token_command` is the third, a key of
/// its own because it carries the command.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawFlow {
    RefreshToken,
    ClientCredentials,
}

impl RawFlow {
    fn name(self) -> &'static str {
        match self {
            RawFlow::RefreshToken => "refresh_token",
            RawFlow::ClientCredentials => "client_credentials",
        }
    }
}

impl From<RawFlow> for crate::oauth::Flow {
    fn from(f: RawFlow) -> Self {
        match f {
            RawFlow::RefreshToken => crate::oauth::Flow::RefreshToken,
            RawFlow::ClientCredentials => crate::oauth::Flow::ClientCredentials,
        }
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawTls {
    #[default]
    Starttls,
    Implicit,
    None,
}

impl From<RawTls> for TlsMode {
    fn from(t: RawTls) -> Self {
        match t {
            RawTls::Starttls => TlsMode::StartTls,
            RawTls::Implicit => TlsMode::Implicit,
            RawTls::None => TlsMode::None,
        }
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
enum RawMinTls {
    #[default]
    #[serde(rename = "1.2")]
    V12,
    #[serde(rename = "1.3")]
    V13,
}

impl From<RawMinTls> for MinTls {
    fn from(m: RawMinTls) -> Self {
        match m {
            RawMinTls::V12 => MinTls::V12,
            RawMinTls::V13 => MinTls::V13,
        }
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawAuth {
    #[default]
    Auto,
    Plain,
    Login,
    Xoauth2,
    None,
}

impl From<RawAuth> for AuthMode {
    fn from(a: RawAuth) -> Self {
        match a {
            RawAuth::Auto => AuthMode::Auto,
            RawAuth::Plain => AuthMode::Plain,
            RawAuth::Login => AuthMode::Login,
            RawAuth::Xoauth2 => AuthMode::Xoauth2,
            RawAuth::None => AuthMode::None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewrite {
    #[serde(default)]
    from_policy: FromPolicy,
    domain: Option<Spanned<String>>,
    #[serde(default = "yes")]
    reply_to_original: bool,
    #[serde(default)]
    revaliases: BTreeMap<String, Spanned<RawRevAlias>>,
}

impl Default for RawRewrite {
    fn default() -> Self {
        RawRewrite {
            from_policy: FromPolicy::default(),
            domain: None,
            reply_to_original: true,
            revaliases: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRevAlias {
    Address(String),
    Full(RawRevAliasFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevAliasFull {
    from: String,
    account: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAliases {
    file: Option<PathBuf>,
    #[serde(default)]
    map: BTreeMap<String, Spanned<OneOrMany>>,
    default: Option<Spanned<String>>,
}

/// An alias target list may be written `"a@x, b@y"` or `["a@x", "b@y"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocal {
    #[serde(default)]
    transport: LocalTransport,
    path: Option<Spanned<String>>,
    #[serde(default)]
    capture: bool,
    max_recipients: Option<Spanned<i64>>,
}

impl Default for RawLocal {
    fn default() -> Self {
        RawLocal {
            transport: LocalTransport::Maildir,
            path: None,
            capture: false,
            max_recipients: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Validation: one function per section, each turning its raw section into
// the settings its module uses.

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Checker<'_> {
    fn err<T>(&self, span: std::ops::Range<usize>, message: String) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: Some(line_of(self.text, span.start)),
            message,
        })
    }

    /// A qualified mailbox address, as accounts and revaliases need.
    fn address(&self, key: &str, value: &Spanned<String>) -> Result<String, ConfigError> {
        let v = value.get_ref().trim();
        if !is_plain_address(v) {
            return self.err(
                value.span(),
                format!("{key}: \"{v}\" is not a mail address; write it as user@example.com"),
            );
        }
        Ok(v.to_string())
    }

    fn domain(&self, key: &str, value: &Spanned<String>) -> Result<String, ConfigError> {
        let v = value.get_ref().trim().trim_end_matches('.');
        if !is_domain(v) {
            return self.err(
                value.span(),
                format!("{key}: \"{v}\" is not a valid domain name (letters, digits, '-' and '.')"),
            );
        }
        Ok(v.to_ascii_lowercase())
    }

    fn opt_domain(
        &self,
        key: &str,
        value: &Option<Spanned<String>>,
    ) -> Result<Option<String>, ConfigError> {
        value.as_ref().map(|v| self.domain(key, v)).transpose()
    }
}

fn validate(path: &Path, text: &str, raw: RawConfig) -> Result<Config, ConfigError> {
    let c = Checker { path, text };
    let hostname = c.opt_domain("hostname", &raw.hostname)?;
    let mut accounts: Vec<Account> = Vec::new();
    for a in &raw.account {
        let account = c.account(a, &accounts)?;
        accounts.push(account);
    }
    // After all accounts are read: a fallback may be defined further down.
    for (a, raw_account) in accounts.iter().zip(&raw.account) {
        c.fallbacks(a, &raw_account.fallback, &accounts)?;
    }
    Ok(Config {
        source: Some(path.to_path_buf()),
        hostname,
        log_file: raw.log_file,
        syslog: raw.syslog,
        dead_letter: raw.dead_letter,
        rewrite: c.rewrite(raw.rewrite, &accounts)?,
        accounts,
        aliases: c.aliases(raw.aliases)?,
        local: c.local(raw.local)?,
        queue: c.queue(raw.queue)?,
        headers: c.headers(raw.headers)?,
        dkim: c.dkim(&raw.dkim)?,
        smtpd: c.smtpd(raw.smtpd)?,
    })
}

/// An account's name, host, sender address and sender patterns, checked.
struct Identity {
    name: String,
    host: String,
    from: String,
    senders: Vec<String>,
}

impl Checker<'_> {
    /// One `[[account]]`; `before` are the accounts above it.
    fn account(&self, a: &RawAccount, before: &[Account]) -> Result<Account, ConfigError> {
        let id = self.account_identity(a, before)?;
        let smtp = self.account_smtp(a, &id)?;
        let oauth = match &a.oauth {
            Some(o) => Some(self.account_oauth(o, &id.name, smtp.auth)?),
            None => None,
        };
        let pacing = self.pacing(a, &id)?;
        Ok(Account {
            name: id.name,
            from: id.from,
            senders: id.senders,
            smtp,
            password_command: a.password_command.clone(),
            password_file: a.password_file.clone(),
            oauth,
            fallback: a
                .fallback
                .iter()
                .map(|f| f.get_ref().trim().to_string())
                .collect(),
            pacing,
        })
    }

    /// `max_per_minute`, `max_connections` and `pace_window`; a known
    /// provider's limits where the first two are not set. 0 means "no
    /// limit", to lift a provider default.
    fn pacing(&self, a: &RawAccount, id: &Identity) -> Result<Pacing, ConfigError> {
        let provider = provider_limits(&id.host);
        // The shared state keeps one timestamp per message in the window,
        // so the limit also bounds that file.
        for (key, v) in [
            ("max_per_minute", &a.max_per_minute),
            ("max_connections", &a.max_connections),
        ] {
            if let Some(n) = v
                && *n.get_ref() > MAX_PACE_LIMIT
            {
                return self.err(
                    n.span(),
                    format!(
                        "[[account]] \"{}\": {key} is at most {MAX_PACE_LIMIT} (0: no limit)",
                        id.name
                    ),
                );
            }
        }
        let limit = |v: &Option<Spanned<u32>>, default: Option<u32>| match v {
            Some(n) if *n.get_ref() == 0 => None,
            Some(n) => Some(*n.get_ref()),
            None => default,
        };
        let window = match &a.pace_window {
            None => DEFAULT_PACE_WINDOW,
            Some(w) => match parse_duration(w.get_ref()) {
                Some(d) if !d.is_zero() && d <= Duration::from_secs(86_400) => d,
                _ => {
                    return self.err(
                        w.span(),
                        format!(
                            "[[account]] \"{}\": pace_window \"{}\" is not a duration from 1s \
                             to 1d (like \"60s\", \"5m\")",
                            id.name,
                            w.get_ref()
                        ),
                    );
                }
            },
        };
        Ok(Pacing {
            per_window: limit(&a.max_per_minute, provider.map(|p| p.0)),
            window,
            connections: limit(&a.max_connections, provider.map(|p| p.1)),
        })
    }

    /// Checks `a`'s fallbacks: each names another account, once, and may
    /// send as `a`'s `from` (its own `from`, or a `senders` pattern that
    /// matches it): a fallback must never turn a delay into SendAsDenied.
    fn fallbacks(
        &self,
        a: &Account,
        raw: &[Spanned<String>],
        all: &[Account],
    ) -> Result<(), ConfigError> {
        for (i, f) in raw.iter().enumerate() {
            let name = f.get_ref().trim();
            let here = format!("[[account]] \"{}\": fallback \"{name}\"", a.name);
            if name == a.name {
                return self.err(f.span(), format!("{here} is this account itself"));
            }
            if raw[..i].iter().any(|o| o.get_ref().trim() == name) {
                return self.err(f.span(), format!("{here} is listed twice"));
            }
            let Some(fb) = all.iter().find(|x| x.name == name) else {
                return self.err(f.span(), format!("{here} is not an [[account]] name"));
            };
            if !fb.may_send_as(&a.from) {
                return self.err(
                    f.span(),
                    format!(
                        "{here} cannot send as \"{}\" (account \"{}\"'s from): give account \
                         \"{name}\" the same from, or a senders pattern that matches it",
                        a.from, a.name
                    ),
                );
            }
        }
        Ok(())
    }

    fn account_identity(
        &self,
        a: &RawAccount,
        before: &[Account],
    ) -> Result<Identity, ConfigError> {
        let name = a.name.get_ref().trim().to_string();
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            return self.err(
                a.name.span(),
                format!("[[account]] name \"{name}\": use letters, digits, '-', '_' or '.'"),
            );
        }
        if before.iter().any(|x| x.name == name) {
            return self.err(
                a.name.span(),
                format!("[[account]] name \"{name}\" is used twice; account names must be unique"),
            );
        }
        let host = a.host.get_ref().trim().to_string();
        if host.is_empty() || host.contains(char::is_whitespace) {
            return self.err(
                a.host.span(),
                format!("[[account]] \"{name}\": host \"{host}\" is not a host name"),
            );
        }
        let from = self.address(&format!("[[account]] \"{name}\": from"), &a.from)?;
        let mut senders = Vec::new();
        for s in &a.senders {
            let v = s.get_ref().trim();
            if v.is_empty() || v.contains(char::is_whitespace) {
                return self.err(
                    s.span(),
                    format!(
                        "[[account]] \"{name}\": sender pattern \"{v}\" is empty or has spaces"
                    ),
                );
            }
            senders.push(v.to_ascii_lowercase());
        }
        Ok(Identity {
            name,
            host,
            from,
            senders,
        })
    }

    /// How to reach and log in to the account's smarthost.
    fn account_smtp(
        &self,
        a: &RawAccount,
        id: &Identity,
    ) -> Result<crate::transport::Settings, ConfigError> {
        let name = &id.name;
        let host = &id.host;
        let tls = TlsMode::from(a.tls);
        if tls == TlsMode::None && !crate::transport::is_loopback(host) {
            return self.err(
                a.host.span(),
                format!(
                    "[[account]] \"{name}\": tls = \"none\" is only allowed to a loopback address \
                     (127.0.0.1, ::1, localhost), and \"{host}\" is not one; use \"starttls\" or \"implicit\""
                ),
            );
        }
        let port = match &a.port {
            Some(p) if *p.get_ref() == 0 => {
                return self.err(
                    p.span(),
                    format!("[[account]] \"{name}\": port 0 is not a port"),
                );
            }
            Some(p) => *p.get_ref(),
            None => tls.default_port(),
        };
        let auth = AuthMode::from(a.auth);
        if matches!(auth, AuthMode::Plain | AuthMode::Login | AuthMode::Xoauth2) && a.user.is_none()
        {
            return self.err(
                a.name.span(),
                format!("[[account]] \"{name}\": auth needs a user; set user = \"…\""),
            );
        }
        Ok(crate::transport::Settings {
            connect_timeout: self.seconds(name, &a.connect_timeout, 30, "connect_timeout")?,
            command_timeout: self.seconds(name, &a.timeout, 60, "timeout")?,
            data_timeout: self.seconds(name, &a.data_timeout, 600, "data_timeout")?,
            host: host.clone(),
            port,
            tls,
            ca_file: a.tls_ca_file.clone(),
            fingerprint: self.fingerprint(name, &a.tls_fingerprint)?,
            min_tls: MinTls::from(a.tls_min_version),
            client_cert: self.client_cert(name, a)?,
            auth,
            username: a.user.clone(),
            helo_name: String::new(),
            system_roots_only: false,
        })
    }

    /// A timeout in seconds, `default` when unset.
    fn seconds(
        &self,
        account: &str,
        v: &Option<Spanned<u64>>,
        default: u64,
        key: &str,
    ) -> Result<Duration, ConfigError> {
        match v {
            Some(s) if *s.get_ref() == 0 || *s.get_ref() > 86_400 => self.err(
                s.span(),
                format!("[[account]] \"{account}\": {key} is in seconds, from 1 to 86400"),
            ),
            Some(s) => Ok(Duration::from_secs(*s.get_ref())),
            None => Ok(Duration::from_secs(default)),
        }
    }

    fn fingerprint(
        &self,
        account: &str,
        f: &Option<Spanned<String>>,
    ) -> Result<Option<[u8; 32]>, ConfigError> {
        let Some(f) = f else {
            return Ok(None);
        };
        match crate::transport::parse_fingerprint(f.get_ref()) {
            Some(fp) => Ok(Some(fp)),
            None => self.err(
                f.span(),
                format!(
                    "[[account]] \"{account}\": tls_fingerprint must be \"sha256:\" and 32 hex bytes, \
                     as `mailhop check` prints it"
                ),
            ),
        }
    }

    fn client_cert(
        &self,
        account: &str,
        a: &RawAccount,
    ) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        match (&a.tls_cert_file, &a.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some((cert.get_ref().clone(), key.get_ref().clone()))),
            (None, None) => Ok(None),
            (Some(s), None) | (None, Some(s)) => self.err(
                s.span(),
                format!(
                    "[[account]] \"{account}\": tls_cert_file and tls_key_file go together; set both"
                ),
            ),
        }
    }

    /// `[account.oauth]`.
    fn account_oauth(
        &self,
        o: &Spanned<RawOAuth>,
        name: &str,
        auth: AuthMode,
    ) -> Result<crate::oauth::Settings, ConfigError> {
        let r = o.get_ref();
        let here = format!("[account.oauth] of \"{name}\"");
        if auth != AuthMode::Xoauth2 {
            return self.err(
                o.span(),
                format!(
                    "{here}: OAuth tokens are used with auth = \"xoauth2\"; set it in the account"
                ),
            );
        }
        // With token_command the command is the whole flow: it needs no
        // provider, and a flow beside it would be ignored, so saying both
        // is refused rather than silently half-used.
        let provider = match (r.provider, &r.token_command) {
            (Some(p), _) => p.into(),
            (None, Some(_)) => crate::oauth::Provider::Custom,
            (None, None) => {
                return self.err(
                    o.span(),
                    format!(
                        "{here}: provider is missing: set it to microsoft, google or custom \
                         (or give token_command)"
                    ),
                );
            }
        };
        let flow = match (r.flow, &r.token_command) {
            (Some(f), Some(_)) => {
                return self.err(
                    o.span(),
                    format!(
                        "{here}: flow = \"{}\" and token_command are alternatives: the \
                         command supplies every token, so remove one of them",
                        f.name()
                    ),
                );
            }
            (None, Some(cmd)) => crate::oauth::Flow::TokenCommand(cmd.clone()),
            (Some(f), None) => f.into(),
            (None, None) => crate::oauth::Flow::RefreshToken,
        };
        let s = crate::oauth::Settings {
            account: name.to_string(),
            provider,
            flow,
            tenant: r.tenant.clone(),
            client_id: r.client_id.clone(),
            client_secret_file: r.client_secret_file.clone(),
            token_file: r.token_file.clone().unwrap_or_default(),
            token_url: r.token_url.clone(),
            device_url: r.device_url.clone(),
            auth_url: r.auth_url.clone(),
            scopes: r.scopes.clone(),
            ca_file: r.ca_file.clone(),
        };
        if let Err(e) = s.validate() {
            return self.err(o.span(), format!("{here}: {e}"));
        }
        Ok(s)
    }

    /// `[rewrite]`; revaliases may name only `accounts`.
    fn rewrite(&self, raw: RawRewrite, accounts: &[Account]) -> Result<Rewrite, ConfigError> {
        let domain = self.opt_domain("[rewrite] domain", &raw.domain)?;
        let mut revaliases = BTreeMap::new();
        for (user, entry) in &raw.revaliases {
            let span = entry.span();
            let (from, account) = match entry.get_ref() {
                RawRevAlias::Address(a) => (a.clone(), None),
                RawRevAlias::Full(f) => (f.from.clone(), f.account.clone()),
            };
            let from = self.address(
                &format!("[rewrite] revaliases.{user}"),
                &Spanned::new(span.clone(), from),
            )?;
            if let Some(acc) = &account
                && !accounts.iter().any(|a| &a.name == acc)
            {
                let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
                return self.err(
                    span,
                    format!(
                        "[rewrite] revaliases.{user}: no [[account]] is named \"{acc}\" (defined: {})",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                );
            }
            revaliases.insert(user.to_ascii_lowercase(), RevAlias { from, account });
        }
        Ok(Rewrite {
            from_policy: raw.from_policy,
            domain,
            reply_to_original: raw.reply_to_original,
            revaliases,
        })
    }

    /// `[aliases]`.
    fn aliases(&self, raw: RawAliases) -> Result<AliasesSection, ConfigError> {
        let mut map = Vec::new();
        for (name, targets) in &raw.map {
            let list: Vec<String> = match targets.get_ref() {
                OneOrMany::One(s) => s.split(',').map(|t| t.trim().to_string()).collect(),
                OneOrMany::Many(v) => v.iter().map(|t| t.trim().to_string()).collect(),
            };
            let list: Vec<String> = list.into_iter().filter(|t| !t.is_empty()).collect();
            if list.is_empty() {
                return self.err(
                    targets.span(),
                    format!("[aliases] map.{name}: no target address; give at least one"),
                );
            }
            if let Some(bad) = list.iter().find(|t| t.contains(char::is_whitespace)) {
                return self.err(
                    targets.span(),
                    format!(
                        "[aliases] map.{name}: \"{bad}\" is not an address (it contains spaces)"
                    ),
                );
            }
            map.push((name.to_ascii_lowercase(), list));
        }
        let default = match &raw.default {
            Some(d) => {
                let v = d.get_ref().trim();
                if v.is_empty() || v.contains(char::is_whitespace) {
                    return self.err(
                        d.span(),
                        format!("[aliases] default: \"{v}\" is not an address"),
                    );
                }
                Some(v.to_string())
            }
            None => None,
        };
        Ok(AliasesSection {
            file: raw.file,
            map,
            default,
        })
    }

    /// `[local]`.
    fn local(&self, raw: RawLocal) -> Result<Local, ConfigError> {
        let path = match &raw.path {
            Some(p) => {
                let v = p.get_ref().trim();
                if !(v.starts_with('/') || v.starts_with("~/") || v == "~") {
                    return self.err(
                        p.span(),
                        format!(
                            "[local] path \"{v}\" must be absolute or start with ~/ (the recipient's home)"
                        ),
                    );
                }
                v.to_string()
            }
            // mbox's conventional home is the system spool; Maildir's the
            // recipient's home.
            None => match raw.transport {
                LocalTransport::Mbox => "/var/mail/%u".to_string(),
                LocalTransport::Maildir => Local::default().path,
            },
        };
        let max_recipients = match &raw.max_recipients {
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(v) if v >= 1 => v,
                _ => {
                    return self.err(
                        n.span(),
                        format!(
                            "[local] max_recipients must be at least 1 (it is {}); the default is {}",
                            n.get_ref(),
                            crate::message::prepare::DEFAULT_MAX_RECIPIENTS
                        ),
                    );
                }
            },
            None => crate::message::prepare::DEFAULT_MAX_RECIPIENTS,
        };
        Ok(Local {
            transport: raw.transport,
            path,
            capture: raw.capture,
            max_recipients,
        })
    }

    /// `[queue]`.
    fn queue(&self, raw: RawQueue) -> Result<Queue, ConfigError> {
        let max_age = match &raw.max_age {
            Some(v) => match parse_duration(v.get_ref()) {
                Some(d) if d >= Duration::from_secs(60) => d,
                _ => {
                    return self.err(
                        v.span(),
                        format!(
                            "[queue] max_age \"{}\" is not a duration of at least a minute; write e.g. \"5d\", \"12h\" or \"90m\"",
                            v.get_ref()
                        ),
                    );
                }
            },
            None => Queue::default().max_age,
        };
        let bounce_to = match &raw.bounce_to {
            Some(b) => Some(self.address("[queue] bounce_to", b)?),
            None => None,
        };
        Ok(Queue {
            mode: raw.mode,
            dir: raw.dir,
            max_age,
            bounce_to,
        })
    }

    /// `[smtpd]`.
    fn smtpd(&self, raw: RawSmtpd) -> Result<Smtpd, ConfigError> {
        let d = Smtpd::default();
        let mut allow = Vec::new();
        for a in &raw.allow {
            let v = a.get_ref().trim();
            let net = v
                .parse::<ipnet::IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match net {
                Ok(n) => allow.push(n.trunc()),
                Err(_) => {
                    return self.err(
                        a.span(),
                        format!(
                            "[smtpd] allow: \"{v}\" is not a network; write e.g. \"172.17.0.0/16\" or \"fd00::/8\""
                        ),
                    );
                }
            }
        }
        if raw.tls_cert_file.is_some() != raw.tls_key_file.is_some() {
            return Err(ConfigError::Invalid {
                path: self.path.to_path_buf(),
                line: None,
                message: "[smtpd] tls_cert_file and tls_key_file go together; set both or neither"
                    .into(),
            });
        }
        if let Some(p) = &raw.password_file
            && raw.tls_cert_file.is_none()
        {
            return self.err(
                p.span(),
                "[smtpd] password_file: AUTH is only offered over STARTTLS; set tls_cert_file and tls_key_file too".into(),
            );
        }
        Ok(Smtpd {
            allow,
            max_connections: self
                .count("[smtpd] max_connections", &raw.max_connections, 10_000)?
                .unwrap_or(d.max_connections),
            max_recipients: self
                .count("[smtpd] max_recipients", &raw.max_recipients, 100_000)?
                .unwrap_or(d.max_recipients),
            max_message_size: self
                .count("[smtpd] max_message_size", &raw.max_message_size, 1 << 40)?
                .map_or(d.max_message_size, |n| n as u64),
            idle_timeout: self
                .timeout("[smtpd] idle_timeout", &raw.idle_timeout)?
                .unwrap_or(d.idle_timeout),
            session_timeout: self
                .timeout("[smtpd] session_timeout", &raw.session_timeout)?
                .unwrap_or(d.session_timeout),
            tls_cert_file: raw.tls_cert_file,
            tls_key_file: raw.tls_key_file,
            password_file: raw.password_file.map(Spanned::into_inner),
        })
    }

    /// A positive whole number no larger than `max`.
    fn count(
        &self,
        key: &str,
        v: &Option<Spanned<i64>>,
        max: i64,
    ) -> Result<Option<usize>, ConfigError> {
        match v {
            None => Ok(None),
            Some(n) if (1..=max).contains(n.get_ref()) => Ok(usize::try_from(*n.get_ref()).ok()),
            Some(n) => self.err(
                n.span(),
                format!(
                    "{key} = {}: write a whole number from 1 to {max}",
                    n.get_ref()
                ),
            ),
        }
    }

    fn timeout(
        &self,
        key: &str,
        v: &Option<Spanned<String>>,
    ) -> Result<Option<Duration>, ConfigError> {
        match v {
            None => Ok(None),
            Some(s) => match parse_duration(s.get_ref()) {
                Some(d) if d >= Duration::from_secs(1) => Ok(Some(d)),
                _ => self.err(
                    s.span(),
                    format!(
                        "{key} \"{}\" is not a duration; write e.g. \"300s\", \"5m\" or \"1h\"",
                        s.get_ref()
                    ),
                ),
            },
        }
    }

    /// `[headers]` and its `[[headers.rule]]`s.
    fn headers(&self, raw: RawHeaders) -> Result<crate::scrub::Settings, ConfigError> {
        let preset = match &raw.scrub {
            Some(v) => match crate::scrub::Preset::from_name(v.get_ref()) {
                Some(p) => p,
                None => {
                    return self.err(
                        v.span(),
                        format!(
                            "[headers] scrub = \"{}\" is not a preset; use one of: {}",
                            v.get_ref(),
                            crate::scrub::Preset::NAMES.join(", ")
                        ),
                    );
                }
            },
            None => crate::scrub::Preset::default(),
        };
        let mut rules = Vec::new();
        for (i, r) in raw.rule.iter().enumerate() {
            let rule = r.get_ref();
            let action = match (rule.action, &rule.replace) {
                (Some(a), None) => a.into(),
                (None, Some(rep)) => crate::scrub::Action::Replace(rep.clone()),
                _ => {
                    return self.err(
                        r.span(),
                        format!(
                            "[[headers.rule]] #{}: give either action = \"remove\" or replace = \"…\"",
                            i + 1
                        ),
                    );
                }
            };
            match crate::scrub::Rule::new(i + 1, &rule.pattern, action) {
                Ok(rule) => rules.push(rule),
                Err(e) => return self.err(r.span(), e.to_string()),
            }
        }
        crate::scrub::Settings::new(preset, raw.remove, rules).map_err(|e| ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: self.text.find("[headers]").map(|o| line_of(self.text, o)),
            message: e.to_string(),
        })
    }

    /// The `[[dkim]]` tables.
    fn dkim(&self, raw: &[Spanned<RawDkim>]) -> Result<Vec<crate::dkim::Settings>, ConfigError> {
        let mut dkim = Vec::new();
        for (i, d) in raw.iter().enumerate() {
            let r = d.get_ref();
            let n = i + 1;
            if !r.key_file.is_absolute() {
                return self.err(
                    d.span(),
                    format!(
                        "[[dkim]] #{n}: key_file \"{}\" must be an absolute path (mailhop runs from any directory)",
                        r.key_file.display()
                    ),
                );
            }
            let mut s = crate::dkim::Settings::new(
                r.domain.trim().to_ascii_lowercase(),
                r.selector.trim(),
                r.key_file.clone(),
                r.algorithm.into(),
            );
            if let Some(canon) = &r.canonicalization {
                match crate::dkim::Canon::parse_pair(canon) {
                    Ok((h, b)) => {
                        s.header_canon = h;
                        s.body_canon = b;
                    }
                    Err(e) => {
                        return self.err(d.span(), format!("[[dkim]] #{n}: canonicalization: {e}"));
                    }
                }
            }
            if let Some(h) = &r.headers {
                s.headers = h.clone();
            }
            if let Some(o) = &r.oversign {
                s.oversign = o.clone();
            }
            if let Err(e) = s.validate() {
                return self.err(d.span(), format!("[[dkim]] #{n}: {e}"));
            }
            dkim.push(s);
        }
        Ok(dkim)
    }
}

impl Config {
    /// Built-in defaults, used when no configuration file exists.
    pub fn defaults() -> Config {
        Config {
            syslog: true,
            rewrite: Rewrite {
                reply_to_original: true,
                ..Rewrite::default()
            },
            ..Config::default()
        }
    }

    /// The account to use for an envelope sender: the first whose `senders`
    /// patterns match, else the first account (the default), else none.
    /// A pattern with an `@` matches the whole address; one without
    /// (`root`, `www-*`) matches the local part, so local users can be
    /// named as the admin thinks of them.
    pub fn account_for(&self, sender: &str) -> Option<&Account> {
        let sender = sender.to_ascii_lowercase();
        let local = sender.rsplit_once('@').map_or(sender.as_str(), |(l, _)| l);
        self.accounts
            .iter()
            .find(|a| {
                a.senders.iter().any(|p| {
                    if p.contains('@') {
                        pattern_matches(p, &sender)
                    } else {
                        pattern_matches(p, local)
                    }
                })
            })
            .or_else(|| self.accounts.first())
    }

    pub fn account_named(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }
}

impl Account {
    /// One line for `mailhop check`: the fallbacks and the limits.
    pub fn failover_and_limits(&self) -> String {
        let fallbacks = match self.fallback.as_slice() {
            [] => "no fallback".to_string(),
            list => format!("fallback {}", list.join(", then ")),
        };
        let p = &self.pacing;
        let window = p.window.as_secs();
        let rate = match p.per_window {
            Some(n) if window == 60 => format!("{n} messages per minute"),
            Some(n) => format!("{n} messages per {window}s"),
            None => "no message rate limit".to_string(),
        };
        let conns = match p.connections {
            Some(n) => format!("{n} connection(s) at once"),
            None => "no connection limit".to_string(),
        };
        format!("{fallbacks}; {rate}, {conns}")
    }

    /// Whether this account may send as `address`: it is its `from`, or
    /// one of its `senders` patterns matches it (as `account_for` reads
    /// them). A catch-all `*` matches everything.
    pub fn may_send_as(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        if self.from.eq_ignore_ascii_case(&address) {
            return true;
        }
        let local = address
            .rsplit_once('@')
            .map_or(address.as_str(), |(l, _)| l);
        self.senders.iter().any(|p| {
            if p.contains('@') {
                pattern_matches(p, &address)
            } else {
                pattern_matches(p, local)
            }
        })
    }
}

/// `*` matches any run of characters; everything else is literal and
/// case-insensitive (the caller lowercases both sides).
pub fn pattern_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// A plain `local@domain` with nothing else (no display name): what the
/// config accepts for sender addresses.
pub(crate) fn is_plain_address(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !local.contains(|c: char| c.is_whitespace() || "<>(),;:\\".contains(c))
                && is_domain(domain)
        }
        None => false,
    }
}

pub(crate) fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        })
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .get(..end)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

/// The `[section]` that contains `offset`, for error messages.
fn section_at(text: &str, offset: usize) -> Option<String> {
    let head = text.get(..offset.min(text.len()))?;
    head.lines().rev().find_map(|l| {
        let t = l.trim();
        (t.starts_with('[') && t.ends_with(']')).then(|| t.to_string())
    })
}

/// Turns a toml/serde error into a message that says what to do: for an
/// unknown key or value, the nearest valid one.
fn explain(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    let section = e
        .span()
        .and_then(|s| section_at(text, s.start))
        .map(|s| format!(" in {s}"))
        .unwrap_or_default();
    for (prefix, what) in [("unknown field `", "key"), ("unknown variant `", "value")] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let (bad, tail) = rest.split_once('`').unwrap_or((rest, ""));
            let candidates: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            let hint = nearest(bad, &candidates)
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_default();
            let valid = if candidates.is_empty() {
                String::new()
            } else {
                format!(" (valid: {})", candidates.join(", "))
            };
            return format!("unknown {what} `{bad}`{section}{hint}{valid}");
        }
    }
    if msg.starts_with("data did not match any variant") {
        return format!(
            "invalid value{section}: expected an address string or a table {{ from = \"…\", account = \"…\" }}"
        );
    }
    format!("{msg}{section}")
}

/// The candidate with the smallest edit distance, if it is close enough to
/// be a plausible typo.
fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("/etc/mailhop.toml"), text)
    }

    fn err(text: &str) -> String {
        match p(text) {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => e.to_string(),
        }
    }

    const EXAMPLE: &str = r#"
hostname = "host.example.com"

[[account]]
name = "office365"
host = "smtp.office365.com"
from = "shop@example.com"
senders = ["*@example.com"]

[[account]]
name = "other"
host = "mail.example.org"
from = "john@example.com"

[rewrite]
from_policy = "account"
domain = "example.com"
reply_to_original = true
revaliases = { root = "shop@example.com", john = { from = "john@example.com", account = "other" } }

[aliases]
file = "/etc/aliases"
map = { root = "admin@example.net", ops = ["a@x.org", "b@x.org"] }
default = "admin@example.net"

[local]
transport = "maildir"
path = "~/Maildir"
"#;

    #[test]
    fn the_documented_example_parses() {
        let c = p(EXAMPLE).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("host.example.com"));
        assert_eq!(c.accounts.len(), 2);
        assert_eq!(c.accounts[0].senders, vec!["*@example.com"]);
        assert_eq!(c.rewrite.from_policy, FromPolicy::Account);
        assert_eq!(c.rewrite.domain.as_deref(), Some("example.com"));
        assert_eq!(
            c.rewrite.revaliases["john"],
            RevAlias {
                from: "john@example.com".into(),
                account: Some("other".into())
            }
        );
        assert_eq!(c.rewrite.revaliases["root"].account, None);
        assert_eq!(
            c.aliases.map[1],
            ("root".into(), vec!["admin@example.net".into()])
        );
        assert_eq!(c.aliases.map[0].1, vec!["a@x.org", "b@x.org"]);
        assert_eq!(c.local.transport, LocalTransport::Maildir);
        assert!(c.syslog);
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = p("").unwrap();
        assert_eq!(c.rewrite.from_policy, FromPolicy::Account);
        assert!(c.rewrite.reply_to_original);
        assert_eq!(c.local, Local::default());
        assert!(c.accounts.is_empty());
    }

    #[test]
    fn unknown_key_names_line_section_and_suggestion() {
        let e = err("hostname = \"a.b\"\n[rewrite]\ndomian = \"x.org\"\n");
        assert!(
            e.starts_with("/etc/mailhop.toml:3: unknown key `domian` in [rewrite]"),
            "{e}"
        );
        assert!(e.contains("did you mean `domain`?"), "{e}");
    }

    #[test]
    fn unknown_top_level_key() {
        let e = err("hostnme = \"a.b\"\n");
        assert!(
            e.contains(":1: unknown key `hostnme`; did you mean `hostname`?"),
            "{e}"
        );
    }

    #[test]
    fn bad_enum_value_suggests() {
        let e = err("[rewrite]\nfrom_policy = \"acount\"\n");
        assert!(
            e.contains(":2: unknown value `acount` in [rewrite]; did you mean `account`?"),
            "{e}"
        );
        let e = err("[local]\ntransport = \"mdir\"\n");
        assert!(e.contains("unknown value `mdir`"), "{e}");
    }

    #[test]
    fn provider_flow_action_and_algorithm_are_parsed_as_enums() {
        let account = "[[account]]\nname = \"a\"\nhost = \"h\"\nfrom = \"a@b.c\"\n\
                       user = \"a@b.c\"\nauth = \"xoauth2\"\n[account.oauth]\n";
        let e = err(&format!("{account}provider = \"microsft\"\n"));
        assert!(
            e.contains(
                ":8: unknown value `microsft` in [account.oauth]; did you mean `microsoft`?"
            ),
            "{e}"
        );
        assert!(e.contains("(valid: microsoft, google, custom)"), "{e}");
        let e = err(&format!(
            "{account}provider = \"google\"\nflow = \"refresh-token\"\n"
        ));
        assert!(
            e.contains(":9: unknown value `refresh-token` in [account.oauth]; did you mean `refresh_token`?"),
            "{e}"
        );
        let c = p(&format!(
            "{account}provider = \"microsoft\"\nflow = \"client_credentials\"\n\
             tenant = \"t\"\nclient_id = \"c\"\nclient_secret_file = \"/s\"\n\
             token_file = \"/t\"\n"
        ))
        .unwrap();
        let o = c.accounts[0].oauth.as_ref().unwrap();
        assert_eq!(o.provider, crate::oauth::Provider::Microsoft);
        assert!(matches!(o.flow, crate::oauth::Flow::ClientCredentials));

        let e = err("[[headers.rule]]\npattern = \"^X-A:\"\naction = \"remov\"\n");
        assert!(
            e.contains(":3: unknown value `remov` in [[headers.rule]]; did you mean `remove`?"),
            "{e}"
        );
        let dkim = "[[dkim]]\ndomain = \"example.com\"\nselector = \"s\"\nkey_file = \"/k\"\n";
        let e = err(&format!("{dkim}algorithm = \"ed25519\"\n"));
        assert!(e.contains(":5: unknown value `ed25519` in [[dkim]]"), "{e}");
        assert!(e.contains("valid: rsa-sha256, ed25519-sha256"), "{e}");
        for (text, want) in [
            ("", crate::dkim::Algorithm::RsaSha256),
            (
                "algorithm = \"ED25519-SHA256\"\n",
                crate::dkim::Algorithm::Ed25519Sha256,
            ),
            (
                "algorithm = \"ed25519-sha256\"\n",
                crate::dkim::Algorithm::Ed25519Sha256,
            ),
        ] {
            let c = p(&format!("{dkim}{text}")).unwrap();
            assert_eq!(c.dkim[0].algorithm, want, "{text}");
        }
    }

    #[test]
    fn wrong_type_and_syntax_errors_have_lines() {
        assert!(err("\n\nhostname = 3\n").contains(":3: invalid type"));
        assert!(err("[x\n").contains(":1:"));
    }

    #[test]
    fn invalid_values_are_rejected_with_lines() {
        let e = err("[[account]]\nname = \"a\"\nhost = \"h\"\nfrom = \"not an address\"\n");
        assert!(e.contains(":4: [[account]] \"a\": from"), "{e}");
        let e = err("[rewrite]\ndomain = \"bad domain\"\n");
        assert!(e.contains(":2: [rewrite] domain"), "{e}");
        let e = err("[local]\npath = \"Maildir\"\n");
        assert!(e.contains(":2: [local] path"), "{e}");
        let e =
            err("[rewrite]\nrevaliases = { root = { from = \"a@b.c\", account = \"nope\" } }\n");
        assert!(e.contains("no [[account]] is named \"nope\""), "{e}");
        let e = err(
            "[[account]]\nname = \"a\"\nhost = \"h\"\nfrom = \"a@b.c\"\n[[account]]\nname = \"a\"\nhost = \"h\"\nfrom = \"a@b.c\"\n",
        );
        assert!(e.contains(":6:") && e.contains("used twice"), "{e}");
        let e = err("[aliases]\nmap = { root = \"\" }\n");
        assert!(e.contains("map.root: no target"), "{e}");
    }

    #[test]
    fn account_selection() {
        let c = p(EXAMPLE).unwrap();
        assert_eq!(
            c.account_for("cron@example.com").map(|a| a.name.as_str()),
            Some("office365")
        );
        assert_eq!(
            c.account_for("x@other.org").map(|a| a.name.as_str()),
            Some("office365")
        );
        assert!(p("").unwrap().account_for("x@y").is_none());
        let c = p("[[account]]\nname = \"a\"\nhost = \"h\"\nfrom = \"a@b.c\"\n\
                   [[account]]\nname = \"b\"\nhost = \"h\"\nfrom = \"b@b.c\"\nsenders = [\"www-*\"]\n")
        .unwrap();
        assert_eq!(
            c.account_for("www-data@host.example")
                .map(|a| a.name.as_str()),
            Some("b")
        );
        assert_eq!(
            c.account_for("root@host.example").map(|a| a.name.as_str()),
            Some("a")
        );
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("*@example.com", "a@example.com"));
        assert!(!pattern_matches("*@example.com", "a@example.org"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("root", "root"));
        assert!(pattern_matches("a*b*c", "axxbyyc"));
        assert!(!pattern_matches("a*b*c", "axxbyy"));
    }

    #[test]
    fn token_command_needs_no_provider_and_excludes_flow() {
        let account = "[[account]]\nname = \"a\"\nhost = \"h\"\nfrom = \"a@b.c\"\n\
                       user = \"a@b.c\"\nauth = \"xoauth2\"\n[account.oauth]\n";
        let c = p(&format!("{account}token_command = \"get-token\"\n")).unwrap();
        let oauth = c.accounts[0].oauth.as_ref().unwrap();
        assert!(matches!(&oauth.flow, crate::oauth::Flow::TokenCommand(cmd) if cmd == "get-token"));
        let e = err(&format!(
            "{account}provider = \"microsoft\"\nflow = \"client_credentials\"\n\
             token_command = \"get-token\"\n"
        ));
        assert!(e.contains("are alternatives"), "{e}");
        assert!(
            e.contains("mailhop.toml:7"),
            "points at [account.oauth]: {e}"
        );
        let e = err(&format!("{account}client_id = \"x\"\n"));
        assert!(e.contains("provider is missing"), "{e}");
    }

    /// The keys serde accepts in `section`, read back from its "unknown
    /// field" error, which lists them all.
    fn accepted(section: &str) -> Vec<String> {
        let text = match section {
            "" => "zzz_unknown = 1\n".to_string(),
            "account" | "headers.rule" | "dkim" => format!("[[{section}]]\nzzz_unknown = 1\n"),
            "account.oauth" => "[[account]]\nname = \"a\"\nhost = \"h\"\nfrom = \"a@b.c\"\n\
                                [account.oauth]\nzzz_unknown = 1\n"
                .to_string(),
            s => format!("[{s}]\nzzz_unknown = 1\n"),
        };
        let e = err(&text);
        let list = e.split("(valid: ").nth(1).unwrap().trim_end_matches(')');
        list.split(", ")
            .map(|k| {
                if section.is_empty() {
                    k.to_string()
                } else {
                    format!("{section}.{k}")
                }
            })
            .collect()
    }

    #[test]
    fn keys_list_matches_the_parser() {
        let mut all = Vec::new();
        for section in [
            "",
            "account",
            "rewrite",
            "aliases",
            "local",
            "queue",
            "headers",
            "headers.rule",
            "dkim",
            "account.oauth",
            "smtpd",
        ] {
            all.extend(accepted(section));
        }
        all.sort();
        let mut keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
        keys.sort();
        assert_eq!(all, keys);
    }

    const TWO: &str = "[[account]]\nname = \"main\"\nhost = \"smtp.office365.com\"\n\
                       from = \"shop@example.com\"\nfallback = [\"backup\"]\n\
                       [[account]]\nname = \"backup\"\nhost = \"mail.example.org\"\n";

    #[test]
    fn fallbacks_must_send_as_the_primary() {
        let same = format!("{TWO}from = \"shop@example.com\"\n");
        let c = p(&same).unwrap();
        assert_eq!(c.accounts[0].fallback, vec!["backup"]);
        let pattern = format!("{TWO}from = \"relay@example.org\"\nsenders = [\"*@example.com\"]\n");
        assert!(p(&pattern).is_ok());
        let other = format!("{TWO}from = \"relay@example.org\"\n");
        let e = err(&other);
        assert!(
            e.contains("\"main\"") && e.contains("\"backup\"") && e.contains("shop@example.com"),
            "{e}"
        );
        assert!(e.contains(":5:"), "points at the fallback line: {e}");
        let missing = same.replace("fallback = [\"backup\"]", "fallback = [\"nope\"]");
        assert!(err(&missing).contains("not an [[account]]"));
        let itself = same.replace("fallback = [\"backup\"]", "fallback = [\"main\"]");
        assert!(err(&itself).contains("itself"));
        let twice = same.replace("[\"backup\"]", "[\"backup\", \"backup\"]");
        assert!(err(&twice).contains("twice"));
    }

    #[test]
    fn pacing_defaults_for_known_providers_and_overrides() {
        let c = p(&format!("{TWO}from = \"shop@example.com\"\n")).unwrap();
        assert_eq!(
            c.accounts[0].pacing,
            Pacing {
                per_window: Some(30),
                window: Duration::from_secs(60),
                connections: Some(3)
            }
        );
        assert_eq!(c.accounts[1].pacing, Pacing::default());
        assert_eq!(
            c.accounts[0].failover_and_limits(),
            "fallback backup; 30 messages per minute, 3 connection(s) at once"
        );
        assert_eq!(
            c.accounts[1].failover_and_limits(),
            "no fallback; no message rate limit, no connection limit"
        );
        let set = format!(
            "{TWO}from = \"shop@example.com\"\nmax_per_minute = 5\nmax_connections = 0\npace_window = \"2s\"\n"
        );
        let c = p(&set).unwrap();
        assert_eq!(
            c.accounts[1].pacing,
            Pacing {
                per_window: Some(5),
                window: Duration::from_secs(2),
                connections: None
            }
        );
        assert!(err(&set.replace("\"2s\"", "\"0s\"")).contains("pace_window"));
        let e = err(&set.replace("= 5", "= -1"));
        assert!(e.contains(":10:") && e.contains("u32"), "{e}");
    }

    #[test]
    fn levenshtein_basics() {
        assert_eq!(levenshtein("domian", "domain"), 2);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(nearest("zzzzzz", &["hostname", "rewrite"]), None);
    }

    #[test]
    fn smtpd_section() {
        let c = p("").unwrap();
        assert_eq!(c.smtpd, Smtpd::default());
        let c = p(r#"
[smtpd]
allow = ["172.17.0.0/16", "10.1.2.3", "fd00::1/8"]
max_connections = 5
max_recipients = 50
max_message_size = 1000000
idle_timeout = "30s"
session_timeout = "10m"
tls_cert_file = "/etc/ssl/c.pem"
tls_key_file = "/etc/ssl/k.pem"
password_file = "/etc/mailhop/smtpd.passwd"
"#)
        .unwrap();
        let s = c.smtpd;
        assert_eq!(
            s.allow.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            ["172.17.0.0/16", "10.1.2.3/32", "fd00::/8"]
        );
        assert_eq!(s.max_connections, 5);
        assert_eq!(s.max_recipients, 50);
        assert_eq!(s.max_message_size, 1_000_000);
        assert_eq!(s.idle_timeout, Duration::from_secs(30));
        assert_eq!(s.session_timeout, Duration::from_secs(600));
        assert!(s.password_file.is_some());
    }

    #[test]
    fn smtpd_errors() {
        assert!(err("[smtpd]\nallow = [\"nonsense\"]").contains("not a network"));
        assert!(err("[smtpd]\nmax_connections = 0").contains("whole number"));
        assert!(err("[smtpd]\nidle_timeout = \"soon\"").contains("not a duration"));
        assert!(err("[smtpd]\ntls_cert_file = \"/c\"").contains("go together"));
        assert!(err("[smtpd]\npassword_file = \"/p\"").contains("STARTTLS"));
        assert!(err("[smtpd]\nallow_from = []").contains("allow"));
    }
}
