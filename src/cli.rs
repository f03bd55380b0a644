//! Command-line parsing: turns argv into an [`Invocation`].
//!
//! Two stages, like ripgrep: first dispatch on the basename of argv[0]
//! (`sendmail`, `mailq`, `newaliases` or `mailhop`), then parse. The
//! sendmail(1) grammar is hand-written because clap cannot express it
//! (getopt clusters, `-q` taking only an attached value, `-o`/`-b` letter
//! families); [`SENDMAIL_FLAGS`] is the one table it parses from. The
//! `mailhop` front end is clap; its `send`, `mailq` and `newaliases`
//! subcommands hand their arguments, untouched, to the sendmail parser.
//!
//! Pure: no I/O, no environment, no printing, no exit. The caller prints
//! `SendArgs::warnings` and maps [`CliError`] to an exit status.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand};

/// How a sendmail flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// No value; the rest of the cluster holds more flags (`-ti`).
    None,
    /// A value: the rest of the cluster if non-empty (`-fuser@x`), else the
    /// next argument, whatever it looks like (`-f -x@y`).
    Value,
    /// The rest of the argument, possibly empty; never the next argument
    /// (`-q`, `-q30m`, `-d0.1`, `-oem`).
    AttachedOnly,
}

/// One flag the sendmail parser accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagSpec {
    /// The flag as written, e.g. `-f`, `-bm`, `-oi`, `-oem`.
    pub flag: &'static str,
    /// How it takes its value.
    pub arg: ArgKind,
    /// One line for the man page. For [`ArgKind::Value`] flags the part
    /// before any `;` names the value, and usage errors quote it.
    pub doc: &'static str,
}

const fn flag(flag: &'static str, arg: ArgKind, doc: &'static str) -> FlagSpec {
    FlagSpec { flag, arg, doc }
}

/// Every flag of the sendmail(1) interface, the single source of truth of
/// the parser. At each point of a cluster the longest matching flag wins,
/// so `-oem` beats `-o` and `-bm` is a flag of its own. The man page must
/// document every entry (checked by a test).
pub const SENDMAIL_FLAGS: &[FlagSpec] = &[
    flag(
        "-t",
        ArgKind::None,
        "read the recipients from the To, Cc and Bcc headers",
    ),
    flag(
        "-i",
        ArgKind::None,
        "a line holding a single dot does not end the message",
    ),
    flag(
        "-f",
        ArgKind::Value,
        "the envelope sender address; <> is the null sender",
    ),
    flag(
        "-r",
        ArgKind::Value,
        "the envelope sender address; an old synonym for -f",
    ),
    flag("-F", ArgKind::Value, "the sender's full name"),
    flag("-v", ArgKind::None, "verbose; repeat for more detail"),
    flag(
        "-N",
        ArgKind::Value,
        "the DSN NOTIFY list; never, or a comma-separated list of success, failure and delay",
    ),
    flag("-R", ArgKind::Value, "the DSN RET value; hdrs or full"),
    flag("-V", ArgKind::Value, "the DSN envelope identifier (ENVID)"),
    flag("-B", ArgKind::Value, "the body type; 7BIT or 8BITMIME"),
    flag("-C", ArgKind::Value, "the configuration file"),
    flag("-X", ArgKind::Value, "the log file"),
    flag("-L", ArgKind::Value, "the syslog tag"),
    flag(
        "-bm",
        ArgKind::None,
        "deliver the message (the default mode)",
    ),
    flag("-bp", ArgKind::None, "list the queue, like mailq"),
    flag("-bi", ArgKind::None, "rebuild the aliases, like newaliases"),
    flag(
        "-bv",
        ArgKind::None,
        "verify: print what each recipient expands to, send nothing",
    ),
    flag(
        "-bs",
        ArgKind::None,
        "speak SMTP on standard input and output (RFC 5321, server side)",
    ),
    flag("-bd", ArgKind::None, "refused: run as a daemon"),
    flag(
        "-bD",
        ArgKind::None,
        "refused: run as a daemon in the foreground",
    ),
    flag(
        "-bh",
        ArgKind::None,
        "refused: print the host status database",
    ),
    flag(
        "-bH",
        ArgKind::None,
        "refused: purge the host status database",
    ),
    flag("-bt", ArgKind::None, "refused: address test mode"),
    flag(
        "-bP",
        ArgKind::None,
        "refused: print the number of queued messages",
    ),
    flag("-ba", ArgKind::None, "refused: ARPANET protocol mode"),
    flag(
        "-q",
        ArgKind::AttachedOnly,
        "run the queue; an attached value (-q30m, -qIid, -qRsite, -qSsender) is kept as given",
    ),
    flag(
        "-oi",
        ArgKind::AttachedOnly,
        "same as -i; an attached boolean (-oitrue, -oifalse) may follow",
    ),
    flag("-oem", ArgKind::AttachedOnly, "report errors by mail"),
    flag(
        "-oep",
        ArgKind::AttachedOnly,
        "print errors on standard error",
    ),
    flag(
        "-oeq",
        ArgKind::AttachedOnly,
        "report errors only through the exit status",
    ),
    flag(
        "-oew",
        ArgKind::AttachedOnly,
        "write errors to the sender's terminal",
    ),
    flag(
        "-oee",
        ArgKind::AttachedOnly,
        "BerkNet-style error reporting",
    ),
    flag(
        "-odi",
        ArgKind::AttachedOnly,
        "deliver interactively, waiting for the smarthost",
    ),
    flag("-odb", ArgKind::AttachedOnly, "deliver in the background"),
    flag(
        "-odq",
        ArgKind::AttachedOnly,
        "queue only; the next queue run delivers",
    ),
    flag("-odf", ArgKind::AttachedOnly, "legacy synonym for -odi"),
    flag("-odd", ArgKind::AttachedOnly, "legacy synonym for -odq"),
    flag(
        "-o",
        ArgKind::AttachedOnly,
        "any other option letter and value (-oX...); accepted and ignored",
    ),
    flag(
        "-O",
        ArgKind::Value,
        "an option=value setting; accepted and ignored",
    ),
    flag(
        "-G",
        ArgKind::None,
        "gateway submission; accepted and ignored",
    ),
    flag(
        "-U",
        ArgKind::None,
        "initial user submission; accepted and ignored",
    ),
    flag(
        "-n",
        ArgKind::None,
        "do not expand aliases; accepted and ignored",
    ),
    flag("-m", ArgKind::None, "send to me too; accepted and ignored"),
    flag("-h", ArgKind::Value, "a hop count; accepted and ignored"),
    flag(
        "-A",
        ArgKind::Value,
        "c or m, the submit.cf choice; accepted and ignored",
    ),
    flag(
        "-d",
        ArgKind::AttachedOnly,
        "debug flags; accepted and ignored",
    ),
    flag(
        "-c",
        ArgKind::None,
        "hold expensive deliveries; accepted and ignored",
    ),
    flag("-x", ArgKind::None, "accepted and ignored"),
    flag(
        "-p",
        ArgKind::Value,
        "the protocol and host name; accepted and ignored",
    ),
];

/// Options shared by every invocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Common {
    /// `-C`: configuration file.
    pub config: Option<PathBuf>,
    /// `-v`, once per occurrence.
    pub verbose: u8,
    /// `-X`: log file.
    pub log_file: Option<PathBuf>,
    /// `-L`: syslog tag.
    pub syslog_tag: Option<String>,
}

/// DSN RET (`-R`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnRet {
    Hdrs,
    Full,
}

/// Body type (`-B`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
}

/// Error reporting mode (`-oe?`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorMode {
    Mail,
    Print,
    Quiet,
    Write,
    BerkNet,
}

/// Delivery mode (`-od?`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    Interactive,
    Background,
    Queue,
}

/// The `-b` mode that sendmail runs in; refused modes never get this far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `-bm`
    #[default]
    Deliver,
    /// `-bv`
    Verify,
    /// `-bp`, `mailq`
    ListQueue,
    /// `-bi`, `newaliases`
    NewAliases,
    /// `-bs`
    Smtp,
}

/// Everything the sendmail interface can ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendArgs {
    pub common: Common,
    /// `-t`
    pub extract_recipients: bool,
    /// `-i`, `-oi`
    pub ignore_dots: bool,
    /// `-f` / `-r`, raw; `Some("<>")` or `Some("")` is the null sender.
    pub sender: Option<String>,
    /// `-F`
    pub full_name: Option<String>,
    /// Operands, comma lists split, trimmed, empties dropped.
    pub recipients: Vec<String>,
    /// `-N`, validated, lowercased, items joined by `,`.
    pub dsn_notify: Option<String>,
    /// `-R`
    pub dsn_ret: Option<DsnRet>,
    /// `-V`
    pub envid: Option<String>,
    /// `-B`
    pub body_type: Option<BodyType>,
    /// `-oe?`
    pub error_mode: Option<ErrorMode>,
    /// `-od?`
    pub delivery_mode: Option<DeliveryMode>,
    /// One line each, already prefixed with `mailhop: `, for stderr.
    pub warnings: Vec<String>,
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// `-bm`: deliver a message read from stdin.
    Send(SendArgs),
    /// `-bv`: print the alias expansion of each recipient.
    Verify(SendArgs),
    /// `-bp`, `mailq`.
    ListQueue(SendArgs),
    /// `-bi`, `newaliases`.
    NewAliases(SendArgs),
    /// `-q[TIME]`; `interval` is the attached value, raw.
    RunQueue {
        args: SendArgs,
        interval: Option<String>,
    },
    /// `-bs`: an SMTP session on stdin and stdout; the args carry -C, -v,
    /// -X and -L.
    Smtp(SendArgs),
    /// `mailhop serve`: an SMTP listener.
    Serve(ServeArgs),
    /// `mailhop --version` / `-V`.
    Version,
    /// `mailhop check`: test the configuration and the smarthost.
    Check(CheckArgs),
    /// `mailhop queue …`: manage the queue.
    Queue(QueueArgs),
    /// `mailhop dkim …`: keys and DNS checks.
    Dkim(DkimAction),
    /// `mailhop completions SHELL`: print a shell completion script.
    Completions(Shell),
    /// `mailhop import ssmtp|msmtp`: convert another relay's configuration.
    Import(ImportFrom),
    /// `mailhop oauth …`: OAuth2 tokens for XOAUTH2.
    OAuth(OAuthAction),
    /// `mailhop password …`: the account's password in the desktop keyring.
    Password(PasswordAction),
    /// `mailhop setup`: discover the smarthost and write the configuration.
    Setup(Box<SetupArgs>),
}

/// `mailhop password` actions. They exist in every build (same man page and
/// completions); without the `keyring` cargo feature they exit 64.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum PasswordAction {
    /// Store an account's password in the keyring, read from standard input
    /// (one line; prompted for without echo on a terminal)
    Set {
        /// The [[account]] name
        account: String,
        /// Configuration file (default: the user's, else /etc/mailhop.toml)
        #[arg(short = 'C', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Remove an account's password from the keyring
    Delete {
        /// The [[account]] name
        account: String,
        /// Configuration file (default: the user's, else /etc/mailhop.toml)
        #[arg(short = 'C', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// `mailhop oauth` actions.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum OAuthAction {
    /// Obtain the first refresh token for an account interactively
    /// (Microsoft: device code; Google: browser with a loopback redirect)
    Login {
        /// The [[account]] name
        account: String,
        /// Configuration file (default: the user's, else /etc/mailhop.toml)
        #[arg(short = 'C', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// What `mailhop import` converts.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ImportFrom {
    /// Print a mailhop.toml equivalent to an ssmtp configuration
    Ssmtp {
        /// ssmtp.conf to read
        #[arg(long, value_name = "FILE", default_value = "/etc/ssmtp/ssmtp.conf")]
        conf: PathBuf,
        /// revaliases to read (skipped when it does not exist)
        #[arg(long, value_name = "FILE", default_value = "/etc/ssmtp/revaliases")]
        revaliases: PathBuf,
    },
    /// Print a mailhop.toml equivalent to an msmtp configuration
    Msmtp {
        /// msmtprc to read (default: ~/.msmtprc, else ~/.config/msmtp/config, else /etc/msmtprc)
        file: Option<PathBuf>,
    },
}

/// Shells `mailhop completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `mailhop dkim` actions.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum DkimAction {
    /// Create a signing key and print the DNS record to publish (like
    /// opendkim-genkey)
    Keygen {
        /// The domain the key signs for (d=)
        #[arg(long, value_name = "DOMAIN")]
        domain: String,
        /// The selector (s=), e.g. a date: 2026a
        #[arg(long, value_name = "SELECTOR")]
        selector: String,
        /// rsa-sha256 or ed25519-sha256
        #[arg(long, value_name = "ALGORITHM", default_value = "rsa-sha256")]
        algorithm: String,
        /// RSA key size (default 2048)
        #[arg(long, value_name = "BITS")]
        bits: Option<u32>,
        /// Where to write the private key (default: ./SELECTOR.private)
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check the published DNS records against the configured keys (like
    /// opendkim-testkey), plus SPF and DMARC
    Check {
        /// Configuration file (default: the user's, else /etc/mailhop.toml)
        #[arg(short = 'C', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Check only the entry for this domain
        #[arg(long, value_name = "DOMAIN", requires = "selector")]
        domain: Option<String>,
        /// Check only the entry with this selector
        #[arg(long, value_name = "SELECTOR")]
        selector: Option<String>,
        /// Ask this DNS server (IP:PORT) instead of the system's
        #[arg(long, value_name = "IP:PORT")]
        nameserver: Option<std::net::SocketAddr>,
    },
}

/// `mailhop queue`: options shared by its actions, and the action.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct QueueArgs {
    /// Configuration file (default: the user's, else /etc/mailhop.toml)
    #[arg(short = 'C', long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Show the SMTP dialogue while delivering (credentials never shown)
    #[arg(short = 'v', long = "verbose", global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub action: QueueAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum QueueAction {
    /// List queued messages (same as mailq and sendmail -bp)
    List {
        /// Print the listing as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a queued message
    Show {
        /// The queue id, as mailq shows it
        id: String,
        /// Print the envelope and delivery state instead of the message
        #[arg(long)]
        envelope: bool,
    },
    /// Deliver now, ignoring the retry schedule (all, or the ids given)
    Flush {
        /// Queue ids; none means every item
        ids: Vec<String>,
    },
    /// Delete queued messages
    Delete(Selection),
    /// Hold messages: they are not delivered until released
    Hold(Selection),
    /// Release held messages
    Release(Selection),
    /// Deliver every message that is due (same as sendmail -q)
    Run,
    /// Queue statistics for monitoring: items, held, deferred, failed, the
    /// oldest item's age, and the recipients the queue runs delivered, per
    /// account
    Stats(StatsArgs),
}

/// Options of `mailhop queue stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Args)]
pub struct StatsArgs {
    /// Print the statistics as JSON
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print them in the Prometheus text exposition format
    #[arg(long)]
    pub prometheus: bool,
    /// Write to FILE atomically (a temporary file renamed over it), e.g. in
    /// node_exporter's textfile collector directory
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Which items a hold/release/delete applies to.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Selection {
    /// Queue ids, as mailq shows them
    #[arg(required_unless_present = "all")]
    pub ids: Vec<String>,
    /// Every item (you may see)
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
}

/// Options of `mailhop serve`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ServeArgs {
    /// Configuration file (default: the user's, else /etc/mailhop.toml)
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address and port to listen on; loopback unless [smtpd] allow or AUTH
    /// is configured
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:25")]
    pub listen: std::net::SocketAddr,
    /// Log each transaction's delivery in detail on standard error
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
}

/// Options of `mailhop check`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Args)]
pub struct CheckArgs {
    /// Configuration file (default: the user's, else /etc/mailhop.toml)
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check only this account (default: every account)
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// After the checks, send a test message to this address
    #[arg(long = "send-test", value_name = "ADDRESS")]
    pub send_test: Option<String>,
    /// Validate the configuration only; no network
    #[arg(long)]
    pub offline: bool,
    /// Show the SMTP dialogue (credentials are never shown)
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Check the queue instead, as a Nagios/Icinga plugin: one status line
    /// with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
    #[arg(long, requires_all = ["warn", "crit"], conflicts_with_all = ["account", "send_test", "offline"])]
    pub queue: bool,
    /// With --queue: WARNING when the oldest message is this old (30m, 6h,
    /// 2d, or seconds)
    #[arg(long, value_name = "AGE", value_parser = parse_age, requires = "queue")]
    pub warn: Option<std::time::Duration>,
    /// With --queue: CRITICAL when the oldest message is this old
    #[arg(long, value_name = "AGE", value_parser = parse_age, requires = "queue")]
    pub crit: Option<std::time::Duration>,
    /// With --queue: WARNING when this many messages are queued
    #[arg(long = "warn-count", value_name = "N", requires = "queue")]
    pub warn_count: Option<u64>,
    /// With --queue: CRITICAL when this many messages are queued
    #[arg(long = "crit-count", value_name = "N", requires = "queue")]
    pub crit_count: Option<u64>,
    /// Ask this DNS server (IP:PORT) for the SPF and DMARC checks instead
    /// of the system's
    #[arg(long, value_name = "IP:PORT")]
    pub nameserver: Option<std::net::SocketAddr>,
}

/// An AGE argument: `30m`, `6h`, `2d` or seconds.
fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    crate::monitor::parse_age(text)
}

/// Options of `mailhop setup`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Args)]
pub struct SetupArgs {
    /// The address mail is sent as (asked for on a terminal when missing)
    #[arg(value_name = "ADDRESS")]
    pub address: Option<String>,
    /// Only find the submission server for ADDRESS and print each step;
    /// change nothing
    #[arg(long)]
    pub discover: bool,
    /// Answer every question with its default, for scripts; fail when
    /// something needed is not given
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Configuration file to write (default: /etc/mailhop.toml for root,
    /// else ~/.config/mailhop/config.toml)
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Show the changes, write nothing
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// The [[account]] to create or update (default: "smarthost")
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// The smarthost; no discovery
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Its port (default: 465 for implicit TLS, else 587)
    #[arg(long, value_name = "PORT", requires = "host")]
    pub port: Option<u16>,
    /// starttls or implicit (default: implicit on port 465, else starttls)
    #[arg(long, value_name = "MODE", requires = "host")]
    pub tls: Option<String>,
    /// The login name (default: what discovery found, else ADDRESS)
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Read the password from FILE's first line (- for standard input);
    /// it is stored in a private password file, never in the configuration
    #[arg(long = "password-file", value_name = "FILE", conflicts_with = "oauth")]
    pub password_file: Option<PathBuf>,
    /// Log in with OAuth2 (Microsoft 365, Google): writes [account.oauth];
    /// sign in afterwards with `mailhop oauth login`
    #[arg(long)]
    pub oauth: bool,
    /// The OAuth client (application) ID, with --oauth
    #[arg(long = "client-id", value_name = "ID", requires = "oauth")]
    pub client_id: Option<String>,
    /// The Microsoft tenant, with --oauth (default: common)
    #[arg(long, value_name = "TENANT", requires = "oauth")]
    pub tenant: Option<String>,
    /// Where NAME's mail goes, e.g. root=admin@example.com (repeatable)
    #[arg(long = "alias", value_name = "NAME=ADDRESS")]
    pub aliases: Vec<String>,
    /// Sign with DKIM: create a key with this selector (unless it exists),
    /// add a [[dkim]] entry, and print the DNS record to publish
    #[arg(long = "dkim-selector", value_name = "SELECTOR")]
    pub dkim_selector: Option<String>,
    /// Do not run `mailhop check` at the end
    #[arg(long = "no-check")]
    pub no_check: bool,
    /// Check the result without network (`mailhop check --offline`)
    #[arg(long)]
    pub offline: bool,
    /// After writing, send a test message to this address
    #[arg(long = "send-test", value_name = "ADDRESS", conflicts_with = "offline")]
    pub send_test: Option<String>,
    /// Discovery: ask this DNS server (IP:PORT), for every name, instead of
    /// the system's resolver
    #[arg(long, value_name = "IP:PORT")]
    pub nameserver: Option<std::net::SocketAddr>,
    /// Discovery: also trust the CAs in this PEM file for HTTPS
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Discovery: seconds each lookup may take
    #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub timeout: u64,
    /// Discovery: run only this step (mx, srv, autoconfig, autodiscover)
    #[arg(long, value_name = "STEP")]
    pub only: Option<String>,
    /// Discovery: the HTTPS port instead of 443 (for tests)
    #[arg(long = "https-port", value_name = "PORT", hide = true)]
    pub https_port: Option<u16>,
}

/// Why the command line was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// A bad sendmail command line: one line, EX_USAGE.
    Usage(String),
    /// clap's rendered text. `is_error == false` for help and version
    /// (stdout, exit 0); otherwise stderr and EX_USAGE.
    Clap { text: String, is_error: bool },
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(msg) => f.write_str(msg),
            CliError::Clap { text, .. } => f.write_str(text.trim_end()),
        }
    }
}

impl std::error::Error for CliError {}

/// The `mailhop` front end. New subcommands go in [`Command`].
#[derive(Debug, Parser)]
#[command(
    name = "mailhop",
    version,
    about,
    disable_version_flag = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Print version
    // Our own flag rather than clap's so that it becomes
    // `Invocation::Version` instead of clap printing and exiting.
    #[arg(short = 'V', long = "version")]
    pub version: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The `mailhop` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a message read from standard input; takes the options of sendmail(1)
    // No help flag: `-h` is sendmail's hop count and must pass through.
    #[command(disable_help_flag = true)]
    Send(PassThrough),
    /// List the queue; same as sendmail -bp
    #[command(disable_help_flag = true)]
    Mailq(PassThrough),
    /// Check the aliases file (mailhop reads it directly; there is nothing to
    /// rebuild); same as sendmail -bi
    #[command(disable_help_flag = true)]
    Newaliases(PassThrough),
    /// Check the configuration, then each smarthost: DNS, connection, TLS,
    /// certificate, login, and optionally a test message
    Check(CheckArgs),
    /// Manage the queue: list, show, flush, delete, hold, release, run
    Queue(QueueArgs),
    /// Listen for SMTP (for applications that cannot run sendmail); each
    /// connection is served like sendmail -bs
    Serve(ServeArgs),
    /// DKIM: create a key (keygen), check the DNS records (check)
    #[command(subcommand)]
    Dkim(DkimAction),
    /// Convert an ssmtp or msmtp configuration into a mailhop.toml
    #[command(subcommand)]
    Import(ImportFrom),
    /// OAuth2 for XOAUTH2: obtain a refresh token (login)
    #[command(subcommand)]
    Oauth(OAuthAction),
    /// Store (set) or remove (delete) an account's password in the desktop
    /// keyring (Secret Service; builds with the keyring feature)
    #[command(subcommand)]
    Password(PasswordAction),
    /// Find the smarthost for an address (--discover) and write the
    /// configuration, guided on a terminal or with --yes for scripts
    Setup(Box<SetupArgs>),
    /// Print a shell completion script (bash, zsh or fish)
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// Arguments handed to the sendmail parser untouched.
#[derive(Debug, Args)]
pub struct PassThrough {
    /// sendmail(1) options and recipients
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,
}

/// The clap command of the `mailhop` front end, for help and for tests
/// that list its flags.
pub fn clap_command() -> clap::Command {
    Cli::command()
}

/// Parses a whole argv, argv[0] included, dispatching on its basename.
pub fn parse<I: IntoIterator<Item = OsString>>(argv: I) -> Result<Invocation, CliError> {
    let argv: Vec<OsString> = argv.into_iter().collect();
    let (argv0, rest) = match argv.split_first() {
        Some((first, rest)) => (first.as_os_str(), rest),
        None => (OsStr::new(""), &[][..]),
    };
    match personality(argv0) {
        Personality::Sendmail(mode) => parse_sendmail_at(rest, mode, 1),
        Personality::Mailhop => parse_mailhop(&argv),
    }
}

/// Parses sendmail(1) arguments, argv[0] excluded, starting in `default_mode`.
pub fn parse_sendmail(args: &[OsString], default_mode: Mode) -> Result<Invocation, CliError> {
    parse_sendmail_at(args, default_mode, 1)
}

enum Personality {
    Sendmail(Mode),
    Mailhop,
}

fn personality(argv0: &OsStr) -> Personality {
    let base = Path::new(argv0)
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Distributions install alternatives such as `mailq.mailhop`.
    let is = |name: &str| {
        base == name
            || base
                .strip_prefix(name)
                .is_some_and(|tail| tail.starts_with('.'))
    };
    if is("mailq") {
        Personality::Sendmail(Mode::ListQueue)
    } else if is("newaliases") {
        Personality::Sendmail(Mode::NewAliases)
    } else if base.contains("sendmail") {
        Personality::Sendmail(Mode::Deliver)
    } else {
        Personality::Mailhop
    }
}

fn parse_mailhop(argv: &[OsString]) -> Result<Invocation, CliError> {
    // `mailhop -t -i`: msmtp users write `sendmail_path = "msmtp -t"`, and
    // the message is already on our stdin. A first argument that is a
    // sendmail option rather than a subcommand or mailhop's own -V, -h,
    // --version or --help makes this `mailhop send`: refusing would lose
    // the message.
    if let Some(first) = argv.get(1).and_then(|a| a.to_str())
        && first.starts_with('-')
        && first.len() > 1
        && !matches!(first, "-V" | "--version" | "-h" | "--help")
    {
        return parse_sendmail_at(argv.get(1..).unwrap_or_default(), Mode::Deliver, 1);
    }
    let cli = Cli::try_parse_from(argv).map_err(|e| CliError::Clap {
        text: e.render().to_string(),
        is_error: e.use_stderr(),
    })?;
    if cli.version {
        return Ok(Invocation::Version);
    }
    let (pass, mode) = match cli.command {
        Some(Command::Send(p)) => (p, Mode::Deliver),
        Some(Command::Mailq(p)) => (p, Mode::ListQueue),
        Some(Command::Newaliases(p)) => (p, Mode::NewAliases),
        Some(Command::Check(c)) => return Ok(Invocation::Check(c)),
        Some(Command::Queue(q)) => return Ok(Invocation::Queue(q)),
        Some(Command::Serve(a)) => return Ok(Invocation::Serve(a)),
        Some(Command::Dkim(d)) => return Ok(Invocation::Dkim(d)),
        Some(Command::Completions { shell }) => return Ok(Invocation::Completions(shell)),
        Some(Command::Import(i)) => return Ok(Invocation::Import(i)),
        Some(Command::Oauth(o)) => return Ok(Invocation::OAuth(o)),
        Some(Command::Password(p)) => return Ok(Invocation::Password(p)),
        Some(Command::Setup(s)) => return Ok(Invocation::Setup(s)),
        None => {
            // Only reachable once global options exist; keep clap's wording.
            let err = clap_command().error(
                clap::error::ErrorKind::MissingSubcommand,
                "a subcommand is required",
            );
            return Err(CliError::Clap {
                text: err.render().to_string(),
                is_error: true,
            });
        }
    };
    let (tail, first) = passthrough_tail(argv, pass.args.len());
    parse_sendmail_at(tail, mode, first)
}

/// The raw argv tail a pass-through subcommand received, and its position.
/// The trailing values are argv's last `n` elements, except that clap eats
/// a `--` right after the subcommand name, which sendmail must see (it
/// makes `mailhop send -- -t` mean the recipient `-t`).
fn passthrough_tail(argv: &[OsString], n: usize) -> (&[OsString], usize) {
    let mut first = argv.len().saturating_sub(n);
    if let Some(prev) = first.checked_sub(1)
        && argv.get(prev).is_some_and(|a| a == "--")
    {
        first = prev;
    }
    (argv.get(first..).unwrap_or_default(), first)
}

/// `first` is the argv position of `args[0]`, for error messages.
fn parse_sendmail_at(
    args: &[OsString],
    default_mode: Mode,
    first: usize,
) -> Result<Invocation, CliError> {
    let args = utf8_args(args, first)?;
    let mut st = State::new(default_mode);
    let mut iter = args.into_iter();
    let mut operands_only = false;
    while let Some(arg) = iter.next() {
        if operands_only || arg == "-" || !arg.starts_with('-') {
            st.operand(arg);
        } else if arg == "--" {
            operands_only = true;
        } else if arg.starts_with("--") {
            // sendmail has no long options; warn rather than lose the mail.
            st.args
                .warnings
                .push(format!("mailhop: ignoring unknown option {arg}"));
        } else {
            let cluster = arg.strip_prefix('-').unwrap_or(arg);
            parse_cluster(cluster, &mut iter, &mut st)?;
        }
    }
    st.finish()
}

fn utf8_args(args: &[OsString], first: usize) -> Result<Vec<&str>, CliError> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            a.to_str().ok_or_else(|| {
                CliError::Usage(format!(
                    "argument {} ({:?}) is not valid UTF-8; pass addresses and options as UTF-8",
                    first.saturating_add(i),
                    a.to_string_lossy()
                ))
            })
        })
        .collect()
}

/// The longest table flag that `cluster` (without its `-`) starts with.
fn lookup(cluster: &str) -> Option<&'static FlagSpec> {
    SENDMAIL_FLAGS
        .iter()
        .filter(|s| {
            s.flag
                .strip_prefix('-')
                .is_some_and(|key| !key.is_empty() && cluster.starts_with(key))
        })
        .max_by_key(|s| s.flag.len())
}

fn parse_cluster<'a>(
    cluster: &'a str,
    next: &mut impl Iterator<Item = &'a str>,
    st: &mut State,
) -> Result<(), CliError> {
    let mut rest = cluster;
    while let Some(c) = rest.chars().next() {
        let Some(spec) = lookup(rest) else {
            if c == 'b' {
                return Err(unknown_mode(rest));
            }
            st.args
                .warnings
                .push(format!("mailhop: ignoring unknown option -{c}"));
            rest = rest.get(c.len_utf8()..).unwrap_or("");
            continue;
        };
        // Table flags are ASCII, so this is a char boundary.
        let after = rest.get(spec.flag.len().saturating_sub(1)..).unwrap_or("");
        match spec.arg {
            ArgKind::None => {
                st.apply(spec, "")?;
                rest = after;
            }
            ArgKind::AttachedOnly => {
                st.apply(spec, after)?;
                rest = "";
            }
            ArgKind::Value => {
                let value = if after.is_empty() {
                    next.next().ok_or_else(|| missing_value(spec))?
                } else {
                    after
                };
                st.apply(spec, value)?;
                rest = "";
            }
        }
    }
    Ok(())
}

fn missing_value(spec: &FlagSpec) -> CliError {
    let what = spec.doc.split(';').next().unwrap_or(spec.doc);
    CliError::Usage(format!(
        "option {} requires an argument ({what})",
        spec.flag
    ))
}

fn unknown_mode(rest: &str) -> CliError {
    match rest.get(1..).and_then(|m| m.chars().next()) {
        None => CliError::Usage(
            "option -b requires a mode letter; mailhop supports -bm, -bp, -bi and -bv".into(),
        ),
        Some(m) => CliError::Usage(format!(
            "unknown mode -b{m}; mailhop supports -bm, -bp, -bi and -bv"
        )),
    }
}

fn refused_mode(spec: &FlagSpec) -> CliError {
    let what = spec.doc.strip_prefix("refused: ").unwrap_or(spec.doc);
    let msg = match spec.flag {
        "-bd" | "-bD" => format!(
            "{} ({what}) is not supported: mailhop is not a daemon; queued mail is delivered by \
             `sendmail -q`, run from cron or a systemd timer",
            spec.flag
        ),
        _ => format!(
            "{} ({what}) is not supported by mailhop; it only relays mail to a smarthost",
            spec.flag
        ),
    };
    CliError::Usage(msg)
}

/// sendmail's boolean option values: empty or starting with t/y is true.
fn sendmail_bool(value: &str) -> bool {
    value.is_empty() || value.starts_with(['t', 'T', 'y', 'Y'])
}

fn parse_notify(value: &str) -> Result<String, CliError> {
    let items: Vec<String> = value
        .split(',')
        .map(|i| i.trim().to_ascii_lowercase())
        .collect();
    let ok = match items.as_slice() {
        [only] if only == "never" => true,
        _ => items
            .iter()
            .all(|i| matches!(i.as_str(), "success" | "failure" | "delay")),
    };
    if ok {
        Ok(items.join(","))
    } else {
        Err(CliError::Usage(format!(
            "option -N takes never, or a comma-separated list of success, failure and delay; \
             got {value:?}"
        )))
    }
}

fn parse_ret(value: &str) -> Result<DsnRet, CliError> {
    if value.eq_ignore_ascii_case("hdrs") {
        Ok(DsnRet::Hdrs)
    } else if value.eq_ignore_ascii_case("full") {
        Ok(DsnRet::Full)
    } else {
        Err(CliError::Usage(format!(
            "option -R takes hdrs or full; got {value:?}"
        )))
    }
}

fn parse_body(value: &str) -> Result<BodyType, CliError> {
    if value.eq_ignore_ascii_case("7bit") {
        Ok(BodyType::SevenBit)
    } else if value.eq_ignore_ascii_case("8bitmime") {
        Ok(BodyType::EightBitMime)
    } else {
        Err(CliError::Usage(format!(
            "option -B takes 7BIT or 8BITMIME; got {value:?}"
        )))
    }
}

/// Splits an operand on commas outside quotes, angle brackets and comments,
/// so `"Doe, John" <j@x>` stays one recipient.
fn split_recipients(operand: &str, out: &mut Vec<String>) {
    let mut push = |part: Option<&str>| {
        if let Some(p) = part.map(str::trim).filter(|p| !p.is_empty()) {
            out.push(p.to_owned());
        }
    };
    let (mut quoted, mut escaped) = (false, false);
    let (mut angle, mut paren) = (0u32, 0u32);
    let mut start = 0;
    for (i, c) in operand.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || paren > 0 => escaped = true,
            '"' if paren == 0 => quoted = !quoted,
            '(' if !quoted => paren = paren.saturating_add(1),
            ')' if !quoted => paren = paren.saturating_sub(1),
            '<' if !quoted && paren == 0 => angle = angle.saturating_add(1),
            '>' if !quoted && paren == 0 => angle = angle.saturating_sub(1),
            ',' if !quoted && paren == 0 && angle == 0 => {
                push(operand.get(start..i));
                start = i.saturating_add(1);
            }
            _ => {}
        }
    }
    push(operand.get(start..));
}

struct State {
    args: SendArgs,
    mode: Mode,
    /// `Some` once `-q` is seen; the inner value is the attached interval.
    queue_run: Option<Option<String>>,
}

impl State {
    fn new(mode: Mode) -> Self {
        State {
            args: SendArgs::default(),
            mode,
            queue_run: None,
        }
    }

    fn operand(&mut self, arg: &str) {
        split_recipients(arg, &mut self.args.recipients);
    }

    /// Applies one table flag; `value` is empty for [`ArgKind::None`].
    fn apply(&mut self, spec: &FlagSpec, value: &str) -> Result<(), CliError> {
        let a = &mut self.args;
        match spec.flag {
            "-t" => a.extract_recipients = true,
            "-i" => a.ignore_dots = true,
            "-oi" => a.ignore_dots = sendmail_bool(value),
            // Last one wins, as with Postfix; sendmail would refuse a second.
            "-f" | "-r" => a.sender = Some(value.to_owned()),
            "-F" => a.full_name = Some(value.to_owned()),
            "-v" => a.common.verbose = a.common.verbose.saturating_add(1),
            "-N" => a.dsn_notify = Some(parse_notify(value)?),
            "-R" => a.dsn_ret = Some(parse_ret(value)?),
            "-V" => a.envid = Some(value.to_owned()),
            "-B" => a.body_type = Some(parse_body(value)?),
            "-C" => a.common.config = Some(PathBuf::from(value)),
            "-X" => a.common.log_file = Some(PathBuf::from(value)),
            "-L" => a.common.syslog_tag = Some(value.to_owned()),
            "-bm" => self.mode = Mode::Deliver,
            "-bp" => self.mode = Mode::ListQueue,
            "-bi" => self.mode = Mode::NewAliases,
            "-bv" => self.mode = Mode::Verify,
            "-bs" => self.mode = Mode::Smtp,
            "-bd" | "-bD" | "-bh" | "-bH" | "-bt" | "-bP" | "-ba" => {
                return Err(refused_mode(spec));
            }
            "-q" => self.queue_run = Some(Some(value.to_owned()).filter(|v| !v.is_empty())),
            "-oem" => a.error_mode = Some(ErrorMode::Mail),
            "-oep" => a.error_mode = Some(ErrorMode::Print),
            "-oeq" => a.error_mode = Some(ErrorMode::Quiet),
            "-oew" => a.error_mode = Some(ErrorMode::Write),
            "-oee" => a.error_mode = Some(ErrorMode::BerkNet),
            "-odi" | "-odf" => a.delivery_mode = Some(DeliveryMode::Interactive),
            "-odb" => a.delivery_mode = Some(DeliveryMode::Background),
            "-odq" | "-odd" => a.delivery_mode = Some(DeliveryMode::Queue),
            "-o" if value.is_empty() => {
                return Err(CliError::Usage(
                    "option -o requires an attached option letter, e.g. -oi or -oem".into(),
                ));
            }
            // Everything else in the table is accepted and ignored.
            _ => {}
        }
        Ok(())
    }

    fn drop_operands(&mut self, why: &str) {
        if !self.args.recipients.is_empty() {
            let list = self.args.recipients.join(" ");
            self.args
                .warnings
                .push(format!("mailhop: ignoring arguments {why}: {list}"));
            self.args.recipients.clear();
        }
    }

    fn finish(mut self) -> Result<Invocation, CliError> {
        if let Some(interval) = self.queue_run.take() {
            match self.mode {
                Mode::Deliver => {
                    self.drop_operands("with -q");
                    return Ok(Invocation::RunQueue {
                        args: self.args,
                        interval,
                    });
                }
                // mailq -qR... filters the listing in sendmail; we list it all.
                Mode::ListQueue => self
                    .args
                    .warnings
                    .push("mailhop: ignoring -q when listing the queue".into()),
                Mode::Verify | Mode::NewAliases | Mode::Smtp => {
                    let m = match self.mode {
                        Mode::Verify => "-bv",
                        Mode::Smtp => "-bs",
                        _ => "-bi",
                    };
                    return Err(CliError::Usage(format!(
                        "-q cannot be combined with {m}; run them separately"
                    )));
                }
            }
        }
        let needs_recipients = matches!(self.mode, Mode::Deliver | Mode::Verify);
        if needs_recipients && self.args.recipients.is_empty() && !self.args.extract_recipients {
            return Err(CliError::Usage(
                "no recipients given; name them as arguments or use -t to read them from the \
                 headers"
                    .into(),
            ));
        }
        Ok(match self.mode {
            Mode::Deliver => Invocation::Send(self.args),
            Mode::Verify => Invocation::Verify(self.args),
            Mode::ListQueue => {
                self.drop_operands("when listing the queue");
                Invocation::ListQueue(self.args)
            }
            Mode::NewAliases => {
                self.drop_operands("when rebuilding the aliases");
                Invocation::NewAliases(self.args)
            }
            Mode::Smtp => {
                // The envelope comes from MAIL and RCPT, never from argv.
                self.drop_operands("with -bs (recipients come from RCPT TO)");
                Invocation::Smtp(self.args)
            }
        })
    }
}

#[cfg(test)]
// A failed match in a test should fail loudly with the value it saw.
#[allow(clippy::panic)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn sm(args: &[&str]) -> Result<Invocation, CliError> {
        parse(os(&[&["/usr/sbin/sendmail"], args].concat()))
    }

    fn send(args: &[&str]) -> SendArgs {
        match sm(args) {
            Ok(Invocation::Send(a)) => a,
            other => panic!("expected Send for {args:?}, got {other:?}"),
        }
    }

    fn usage(args: &[&str]) -> String {
        match sm(args) {
            Err(CliError::Usage(m)) => m,
            other => panic!("expected usage error for {args:?}, got {other:?}"),
        }
    }

    fn rcpts(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    // ---- golden: real callers ----

    #[test]
    fn check_queue_and_queue_stats_parse() {
        let inv = parse(os(&[
            "mailhop", "check", "--queue", "--warn", "30m", "--crit", "2d",
        ]))
        .unwrap();
        let Invocation::Check(c) = inv else {
            panic!("{inv:?}")
        };
        assert!(c.queue);
        assert_eq!(c.warn, Some(std::time::Duration::from_secs(1800)));
        assert_eq!(c.crit, Some(std::time::Duration::from_secs(172_800)));
        assert!(parse(os(&["mailhop", "check", "--queue", "--warn", "6h"])).is_err());
        assert!(parse(os(&["mailhop", "check", "--warn", "6h", "--crit", "7h"])).is_err());
        assert!(
            parse(os(&[
                "mailhop", "check", "--queue", "--warn", "6x", "--crit", "7h"
            ]))
            .is_err()
        );
        let inv = parse(os(&[
            "mailhop",
            "queue",
            "stats",
            "--prometheus",
            "--output",
            "/var/lib/prometheus/node-exporter/mailhop.prom",
        ]))
        .unwrap();
        let Invocation::Queue(q) = inv else {
            panic!("{inv:?}")
        };
        assert_eq!(
            q.action,
            QueueAction::Stats(StatsArgs {
                json: false,
                prometheus: true,
                output: Some(PathBuf::from(
                    "/var/lib/prometheus/node-exporter/mailhop.prom"
                )),
            })
        );
        assert!(parse(os(&["mailhop", "queue", "stats", "--json", "--prometheus"])).is_err());
    }

    #[test]
    fn mailhop_check_parses() {
        let inv = parse(os(&[
            "mailhop",
            "check",
            "-C",
            "/x.toml",
            "--account",
            "o365",
            "--send-test",
            "a@b.c",
            "-v",
        ]))
        .unwrap();
        assert_eq!(
            inv,
            Invocation::Check(CheckArgs {
                config: Some(PathBuf::from("/x.toml")),
                account: Some("o365".into()),
                send_test: Some("a@b.c".into()),
                offline: false,
                verbose: true,
                ..CheckArgs::default()
            })
        );
        assert!(
            matches!(parse(os(&["mailhop", "check", "--offline"])), Ok(Invocation::Check(c)) if c.offline)
        );
    }

    #[test]
    fn mailhop_password_parses() {
        assert_eq!(
            parse(os(&["mailhop", "password", "set", "work", "-C", "/x.toml"])).unwrap(),
            Invocation::Password(PasswordAction::Set {
                account: "work".into(),
                config: Some(PathBuf::from("/x.toml")),
            })
        );
        assert_eq!(
            parse(os(&["mailhop", "password", "delete", "work"])).unwrap(),
            Invocation::Password(PasswordAction::Delete {
                account: "work".into(),
                config: None,
            })
        );
        // The account is required.
        assert!(parse(os(&["mailhop", "password", "set"])).is_err());
    }

    #[test]
    fn debian_cron() {
        let got = sm(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]);
        let want = SendArgs {
            full_name: Some("CronDaemon".into()),
            ignore_dots: true,
            body_type: Some(BodyType::EightBitMime),
            error_mode: Some(ErrorMode::Mail),
            recipients: rcpts(&["root"]),
            ..SendArgs::default()
        };
        assert_eq!(got, Ok(Invocation::Send(want)));
    }

    #[test]
    fn cronie() {
        let got = sm(&[
            "-FCronDaemon",
            "-i",
            "-odi",
            "-oem",
            "-oi",
            "-t",
            "-f",
            "root",
        ]);
        let want = SendArgs {
            full_name: Some("CronDaemon".into()),
            ignore_dots: true,
            delivery_mode: Some(DeliveryMode::Interactive),
            error_mode: Some(ErrorMode::Mail),
            extract_recipients: true,
            sender: Some("root".into()),
            ..SendArgs::default()
        };
        assert_eq!(got, Ok(Invocation::Send(want)));
    }

    #[test]
    fn php() {
        let base = SendArgs {
            extract_recipients: true,
            ignore_dots: true,
            ..SendArgs::default()
        };
        assert_eq!(sm(&["-t", "-i"]), Ok(Invocation::Send(base.clone())));
        let with_from = SendArgs {
            sender: Some("www@example.com".into()),
            ..base
        };
        assert_eq!(
            sm(&["-t", "-i", "-f", "www@example.com"]),
            Ok(Invocation::Send(with_from))
        );
    }

    #[test]
    fn mutt() {
        let got = sm(&[
            "-oem",
            "-oi",
            "-B8BITMIME",
            "-f",
            "a@x",
            "-N",
            "failure,delay",
            "-R",
            "hdrs",
            "--",
            "b@y",
        ]);
        let want = SendArgs {
            error_mode: Some(ErrorMode::Mail),
            ignore_dots: true,
            body_type: Some(BodyType::EightBitMime),
            sender: Some("a@x".into()),
            dsn_notify: Some("failure,delay".into()),
            dsn_ret: Some(DsnRet::Hdrs),
            recipients: rcpts(&["b@y"]),
            ..SendArgs::default()
        };
        assert_eq!(got, Ok(Invocation::Send(want)));
    }

    #[test]
    fn git_send_email() {
        let want = SendArgs {
            sender: Some("a@x".into()),
            ignore_dots: true,
            recipients: rcpts(&["b@y", "c@z"]),
            ..SendArgs::default()
        };
        assert_eq!(
            sm(&["-f", "a@x", "-i", "b@y", "c@z"]),
            Ok(Invocation::Send(want))
        );
    }

    #[test]
    fn bsd_mailx() {
        let want = SendArgs {
            ignore_dots: true,
            recipients: rcpts(&["root"]),
            ..SendArgs::default()
        };
        assert_eq!(sm(&["-i", "--", "root"]), Ok(Invocation::Send(want)));
    }

    #[test]
    fn gnu_mailutils() {
        let want = SendArgs {
            ignore_dots: true,
            sender: Some("user@host".into()),
            extract_recipients: true,
            ..SendArgs::default()
        };
        assert_eq!(
            sm(&["-oi", "-f", "user@host", "-t"]),
            Ok(Invocation::Send(want))
        );
    }

    #[test]
    fn mdadm() {
        let want = SendArgs {
            extract_recipients: true,
            ..SendArgs::default()
        };
        assert_eq!(sm(&["-t"]), Ok(Invocation::Send(want)));
    }

    #[test]
    fn unattended_upgrades() {
        let want = SendArgs {
            ignore_dots: true,
            extract_recipients: true,
            ..SendArgs::default()
        };
        assert_eq!(sm(&["-oi", "-t"]), Ok(Invocation::Send(want)));
    }

    #[test]
    fn fail2ban() {
        let want = SendArgs {
            sender: Some("fail2ban".into()),
            recipients: rcpts(&["root"]),
            ..SendArgs::default()
        };
        assert_eq!(sm(&["-f", "fail2ban", "root"]), Ok(Invocation::Send(want)));
    }

    // ---- getopt behaviour ----

    #[test]
    fn clusters_split_into_flags() {
        let a = send(&["-ti"]);
        assert!(a.extract_recipients && a.ignore_dots);
        let a = send(&["-tvvi"]);
        assert_eq!(a.common.verbose, 2);
        assert!(a.extract_recipients && a.ignore_dots);
    }

    #[test]
    fn cluster_value_takes_rest_or_next() {
        assert_eq!(send(&["-tfuser@x"]).sender.as_deref(), Some("user@x"));
        assert_eq!(send(&["-tf", "user@x"]).sender.as_deref(), Some("user@x"));
        let a = send(&["-itFJo Bloggs"]);
        assert_eq!(a.full_name.as_deref(), Some("Jo Bloggs"));
    }

    #[test]
    fn detached_value_may_start_with_dash() {
        assert_eq!(send(&["-f", "-x@y", "-t"]).sender.as_deref(), Some("-x@y"));
        assert_eq!(send(&["-t", "-f", "--"]).sender.as_deref(), Some("--"));
    }

    #[test]
    fn null_sender_kept_as_given() {
        assert_eq!(send(&["-f", "<>", "-t"]).sender.as_deref(), Some("<>"));
        assert_eq!(send(&["-f", "", "-t"]).sender.as_deref(), Some(""));
        assert_eq!(send(&["-r", "a@x", "-t"]).sender.as_deref(), Some("a@x"));
    }

    #[test]
    fn options_permute_until_double_dash() {
        let a = send(&["root", "-t", "admin", "-i"]);
        assert_eq!(a.recipients, rcpts(&["root", "admin"]));
        assert!(a.extract_recipients && a.ignore_dots);
        let a = send(&["--", "-t", "-", "x"]);
        assert_eq!(a.recipients, rcpts(&["-t", "-", "x"]));
        assert!(!a.extract_recipients);
        assert_eq!(send(&["-", "-t"]).recipients, rcpts(&["-"]));
    }

    #[test]
    fn missing_value_names_the_flag() {
        assert_eq!(
            usage(&["-t", "-f"]),
            "option -f requires an argument (the envelope sender address)"
        );
        assert!(usage(&["-tN"]).starts_with("option -N requires an argument"));
        assert!(usage(&["-t", "-C"]).contains("-C"));
    }

    #[test]
    fn value_flags_are_stored() {
        let a = send(&[
            "-t",
            "-V",
            "env-1",
            "-C",
            "/etc/m.toml",
            "-X",
            "/tmp/log",
            "-L",
            "tag",
            "-v",
        ]);
        assert_eq!(a.envid.as_deref(), Some("env-1"));
        assert_eq!(a.common.config, Some(PathBuf::from("/etc/m.toml")));
        assert_eq!(a.common.log_file, Some(PathBuf::from("/tmp/log")));
        assert_eq!(a.common.syslog_tag.as_deref(), Some("tag"));
        assert_eq!(a.common.verbose, 1);
        let many = format!("-{}", "v".repeat(300));
        assert_eq!(send(&["-t", &many]).common.verbose, u8::MAX);
    }

    #[test]
    fn dsn_and_body_validation() {
        assert_eq!(
            send(&["-t", "-N", "Never"]).dsn_notify.as_deref(),
            Some("never")
        );
        assert_eq!(
            send(&["-t", "-N", "SUCCESS, Delay"]).dsn_notify.as_deref(),
            Some("success,delay")
        );
        for bad in ["never,failure", "sometimes", "", "failure,,delay"] {
            assert!(
                usage(&["-t", "-N", bad]).starts_with("option -N takes"),
                "{bad}"
            );
        }
        assert_eq!(send(&["-t", "-R", "FULL"]).dsn_ret, Some(DsnRet::Full));
        assert!(usage(&["-t", "-R", "body"]).starts_with("option -R takes"));
        assert_eq!(
            send(&["-t", "-B", "7bit"]).body_type,
            Some(BodyType::SevenBit)
        );
        assert!(usage(&["-t", "-B", "binarymime"]).starts_with("option -B takes"));
    }

    #[test]
    fn o_options() {
        assert!(!send(&["-t", "-i", "-oifalse"]).ignore_dots);
        assert!(send(&["-t", "-oitrue"]).ignore_dots);
        let modes = [
            ("-oem", ErrorMode::Mail),
            ("-oep", ErrorMode::Print),
            ("-oeq", ErrorMode::Quiet),
            ("-oew", ErrorMode::Write),
            ("-oee", ErrorMode::BerkNet),
        ];
        for (f, m) in modes {
            assert_eq!(send(&["-t", f]).error_mode, Some(m), "{f}");
        }
        let modes = [
            ("-odi", DeliveryMode::Interactive),
            ("-odf", DeliveryMode::Interactive),
            ("-odb", DeliveryMode::Background),
            ("-odq", DeliveryMode::Queue),
            ("-odd", DeliveryMode::Queue),
        ];
        for (f, m) in modes {
            assert_eq!(send(&["-t", f]).delivery_mode, Some(m), "{f}");
        }
        // Other -o letters swallow the whole argument, silently.
        let a = send(&["-t", "-oQ/var/spool/x", "-oL9", "-oex"]);
        assert_eq!(a, send(&["-t"]));
        assert!(usage(&["-t", "-o", "i"]).contains("-o requires"));
    }

    #[test]
    fn ignored_flags_leave_no_trace() {
        let a = send(&[
            "-t",
            "-Ofoo=bar",
            "-O",
            "x=y",
            "-G",
            "-U",
            "-n",
            "-m",
            "-h",
            "5",
            "-Ac",
            "-A",
            "m",
            "-d0.1",
            "-d",
            "-c",
            "-x",
            "-p",
            "smtp:host",
            "-Um",
        ]);
        assert_eq!(a, send(&["-t"]));
    }

    #[test]
    fn every_table_flag_is_known_to_the_parser() {
        for spec in SENDMAIL_FLAGS {
            let mut argv = vec!["-t"];
            let value = match spec.flag {
                "-N" => "never",
                "-R" => "hdrs",
                "-B" => "7BIT",
                "-o" => "Xfoo",
                _ => "v",
            };
            let joined;
            match spec.arg {
                ArgKind::Value => argv.extend([spec.flag, value]),
                ArgKind::AttachedOnly if spec.flag == "-o" => {
                    joined = format!("-o{value}");
                    argv.push(&joined);
                }
                _ => argv.push(spec.flag),
            }
            match sm(&argv) {
                Ok(inv) => {
                    let warnings = match inv {
                        Invocation::Send(a)
                        | Invocation::Verify(a)
                        | Invocation::ListQueue(a)
                        | Invocation::NewAliases(a)
                        | Invocation::RunQueue { args: a, .. } => a.warnings,
                        Invocation::Version
                        | Invocation::Check(_)
                        | Invocation::Queue(_)
                        | Invocation::Dkim(_)
                        | Invocation::Completions(_)
                        | Invocation::Import(_)
                        | Invocation::OAuth(_)
                        | Invocation::Password(_)
                        | Invocation::Setup(_) => vec![],
                        // -bs drops the operand the loop adds, on purpose.
                        Invocation::Smtp(_) | Invocation::Serve(_) => vec![],
                    };
                    assert!(warnings.is_empty(), "{}: {warnings:?}", spec.flag);
                }
                Err(CliError::Usage(m)) => {
                    assert!(spec.doc.starts_with("refused: "), "{}: {m}", spec.flag)
                }
                Err(e) => panic!("{}: {e:?}", spec.flag),
            }
        }
    }

    #[test]
    fn table_flags_are_unique_and_well_formed() {
        for (i, s) in SENDMAIL_FLAGS.iter().enumerate() {
            assert!(s.flag.starts_with('-') && s.flag.len() >= 2 && s.flag.is_ascii());
            assert!(!s.doc.is_empty());
            assert!(
                SENDMAIL_FLAGS.iter().skip(i + 1).all(|o| o.flag != s.flag),
                "{} twice",
                s.flag
            );
        }
    }

    #[test]
    fn unknown_flag_warns_and_continues_cluster() {
        let a = send(&["-Zt", "root"]);
        assert!(a.extract_recipients);
        assert_eq!(a.warnings, vec!["mailhop: ignoring unknown option -Z"]);
        let a = send(&["-t", "--long-thing"]);
        assert_eq!(
            a.warnings,
            vec!["mailhop: ignoring unknown option --long-thing"]
        );
        let a = send(&["-t\u{e9}"]);
        assert_eq!(a.warnings, vec!["mailhop: ignoring unknown option -\u{e9}"]);
    }

    // ---- modes ----

    #[test]
    fn modes_last_wins() {
        assert!(matches!(sm(&["-bv", "root"]), Ok(Invocation::Verify(_))));
        assert!(matches!(sm(&["-bp"]), Ok(Invocation::ListQueue(_))));
        assert!(matches!(sm(&["-bi"]), Ok(Invocation::NewAliases(_))));
        assert!(matches!(
            sm(&["-bp", "-bm", "root"]),
            Ok(Invocation::Send(_))
        ));
        assert!(matches!(sm(&["-bv", "-bp"]), Ok(Invocation::ListQueue(_))));
        assert!(matches!(sm(&["-tbv"]), Ok(Invocation::Verify(_))));
    }

    #[test]
    fn refused_modes() {
        assert!(matches!(sm(&["-bs"]), Ok(Invocation::Smtp(_))));
        match sm(&["-bs", "-C", "/c.toml", "root"]) {
            Ok(Invocation::Smtp(a)) => {
                assert!(a.recipients.is_empty());
                assert_eq!(a.common.config.as_deref(), Some(Path::new("/c.toml")));
                assert_eq!(a.warnings.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(usage(&["-bs", "-q"]).contains("-bs"));
        for f in ["-bd", "-bD"] {
            let m = usage(&[f]);
            assert!(m.contains(f) && m.contains("not a daemon"), "{m}");
            assert!(m.contains("sendmail -q"), "{m}");
        }
        for f in ["-bh", "-bH", "-bt", "-bP", "-ba"] {
            let m = usage(&[f]);
            assert!(m.starts_with(f) && m.contains("not supported"), "{m}");
        }
        for m in [usage(&["-bx"]), usage(&["-tbZ"])] {
            assert!(m.starts_with("unknown mode -b"), "{m}");
        }
        assert!(usage(&["-b"]).contains("requires a mode letter"));
        assert!(!usage(&["-bd"]).contains('\n'));
    }

    #[test]
    fn serve_subcommand() {
        match parse(os(&[
            "mailhop",
            "serve",
            "--listen",
            "127.0.0.1:2525",
            "-C",
            "/c",
        ])) {
            Ok(Invocation::Serve(a)) => {
                assert_eq!(a.listen.to_string(), "127.0.0.1:2525");
                assert_eq!(a.config.as_deref(), Some(Path::new("/c")));
            }
            other => panic!("{other:?}"),
        }
        match parse(os(&["mailhop", "serve"])) {
            Ok(Invocation::Serve(a)) => assert_eq!(a.listen.to_string(), "127.0.0.1:25"),
            other => panic!("{other:?}"),
        }
        assert!(parse(os(&["mailhop", "serve", "--listen", "nonsense"])).is_err());
    }

    #[test]
    fn queue_run_value_only_when_attached() {
        assert_eq!(
            sm(&["-q"]),
            Ok(Invocation::RunQueue {
                args: SendArgs::default(),
                interval: None
            })
        );
        assert_eq!(
            sm(&["-q30m"]),
            Ok(Invocation::RunQueue {
                args: SendArgs::default(),
                interval: Some("30m".into())
            })
        );
        for v in ["Iid", "Rsite", "Ssender"] {
            match sm(&[&format!("-q{v}")]) {
                Ok(Invocation::RunQueue { interval, .. }) => {
                    assert_eq!(interval.as_deref(), Some(v))
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            sm(&["-q", "root"]),
            Ok(Invocation::RunQueue {
                args: SendArgs {
                    warnings: vec!["mailhop: ignoring arguments with -q: root".into()],
                    ..SendArgs::default()
                },
                interval: None
            })
        );
        assert!(usage(&["-q", "-bi"]).contains("-q cannot be combined with -bi"));
        match sm(&["-bp", "-q"]) {
            Ok(Invocation::ListQueue(a)) => assert_eq!(a.warnings.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_recipients_is_a_usage_error() {
        assert!(usage(&[]).starts_with("no recipients"));
        assert!(usage(&["-i", ","]).starts_with("no recipients"));
        assert!(usage(&["-bv"]).starts_with("no recipients"));
    }

    // ---- recipients ----

    #[test]
    fn comma_lists_respect_quotes_brackets_comments() {
        let a = send(&[
            "a@x, b@y,,",
            "\"Doe, John\" <j@x>",
            "<c@z,d@w>",
            "e@v (Smith, E.)",
            "\"q\\\", r\" <q@x>, s@x",
        ]);
        assert_eq!(
            a.recipients,
            rcpts(&[
                "a@x",
                "b@y",
                "\"Doe, John\" <j@x>",
                "<c@z,d@w>",
                "e@v (Smith, E.)",
                "\"q\\\", r\" <q@x>",
                "s@x",
            ])
        );
        // Unbalanced input must not panic and stays whole.
        assert_eq!(send(&["\"a, b"]).recipients, rcpts(&["\"a, b"]));
        assert_eq!(send(&["é,ü@x"]).recipients, rcpts(&["é", "ü@x"]));
    }

    // ---- dispatch ----

    #[test]
    fn argv0_dispatch() {
        let mq = parse(os(&["mailq"]));
        assert_eq!(mq, Ok(Invocation::ListQueue(SendArgs::default())));
        assert_eq!(
            parse(os(&["/usr/bin/mailq.mailhop", "-v"])),
            parse(os(&["mailq", "-v"]))
        );
        assert_eq!(
            parse(os(&["/usr/bin/newaliases"])),
            Ok(Invocation::NewAliases(SendArgs::default()))
        );
        let want = Ok(Invocation::Send(SendArgs {
            extract_recipients: true,
            ..SendArgs::default()
        }));
        for argv0 in [
            "/usr/lib/sendmail",
            "sendmail",
            "/usr/sbin/sendmail.mailhop",
        ] {
            assert_eq!(parse(os(&[argv0, "-t"])), want, "{argv0}");
        }
        assert_eq!(parse_sendmail(&os(&["-t"]), Mode::Deliver), want);
        assert_eq!(
            parse_sendmail(&os(&["-v"]), Mode::ListQueue),
            parse(os(&["mailq", "-v"]))
        );
    }

    #[test]
    fn mailhop_send_equals_sendmail() {
        assert_eq!(
            parse(os(&["mailhop", "send", "-t", "-i"])),
            sm(&["-t", "-i"])
        );
        // `--`, `-h` and `-V` belong to sendmail here, not to clap.
        let argv = ["-h", "3", "-V", "id", "--", "-x@y"];
        assert_eq!(
            parse(os(&[&["/usr/bin/mailhop", "send"], &argv[..]].concat())),
            sm(&argv)
        );
        for argv in [
            &["root", "--", "-t"][..],
            &["--", "-t"],
            &["--", "--", "x"],
            &["-t", "--"],
        ] {
            assert_eq!(
                parse(os(&[&["mailhop", "send"], argv].concat())),
                sm(argv),
                "{argv:?}"
            );
        }
        assert_eq!(parse(os(&["mailhop", "mailq"])), parse(os(&["mailq"])));
        assert_eq!(
            parse(os(&["mailhop", "newaliases", "-v"])),
            parse(os(&["newaliases", "-v"]))
        );
    }

    #[test]
    fn mailhop_version_and_help() {
        assert_eq!(
            parse(os(&["mailhop", "--version"])),
            Ok(Invocation::Version)
        );
        assert_eq!(parse(os(&["mailhop", "-V"])), Ok(Invocation::Version));
        match parse(os(&["mailhop", "--help"])) {
            Err(CliError::Clap { text, is_error }) => {
                assert!(!is_error);
                assert!(text.contains("send") && text.contains("Usage"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        for argv in [&["mailhop", "bogus"][..], &["mailhop"], &[]] {
            match parse(os(argv)) {
                Err(CliError::Clap { is_error, .. }) => assert!(is_error, "{argv:?}"),
                other => panic!("{argv:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn clap_command_is_valid() {
        let cmd = clap_command();
        cmd.clone().debug_assert();
        let version = cmd.get_arguments().find(|a| a.get_id() == "version");
        assert_eq!(version.and_then(|a| a.get_short()), Some('V'));
        assert_eq!(version.and_then(|a| a.get_long()), Some("version"));
        // Pass-through subcommands must own every flag, `-h` included.
        for name in ["send", "mailq", "newaliases"] {
            let sub = cmd.find_subcommand(name);
            assert!(sub.is_some(), "{name}");
            let flags = sub.into_iter().flat_map(|s| s.get_arguments());
            assert!(
                flags.filter(|a| !a.is_positional()).count() == 0,
                "{name} has flags of its own"
            );
        }
    }

    #[test]
    fn non_utf8_argument_is_a_usage_error() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'r', 0xff]);
        let argv = vec![
            OsString::from("sendmail"),
            OsString::from("-t"),
            bad.clone(),
        ];
        match parse(argv) {
            Err(CliError::Usage(m)) => assert!(m.starts_with("argument 2 "), "{m}"),
            other => panic!("{other:?}"),
        }
        let argv = vec![
            OsString::from("mailhop"),
            OsString::from("send"),
            OsString::from("-t"),
            bad,
        ];
        match parse(argv) {
            Err(CliError::Usage(m)) => assert!(m.starts_with("argument 3 "), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_display_as_one_line() {
        let e = CliError::Usage("bad".into());
        assert_eq!(e.to_string(), "bad");
        let e = CliError::Clap {
            text: "help\n".into(),
            is_error: false,
        };
        assert_eq!(e.to_string(), "help");
    }
}
