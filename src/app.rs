//! The edge of the program: the only layer that touches stdin, the
//! environment, the clock, the hostname, the uid and the exit status. It
//! wires the pure modules together for each invocation and maps every
//! error to one sysexits code, with a message that says what went wrong,
//! where, and what to do.
//!
//! Its one rule: never exit 0 after dropping a message. Any message that is
//! refused after it was read is saved to dead.letter first.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::aliases::{AliasError, Aliases};
use crate::cli::{self, CliError, Invocation, SendArgs};
use crate::config::{self, Config, LocalTransport};
use crate::exit::{self, Exit};
use crate::local::{self, Owner};
use crate::log::{self, Severity};
use crate::message::address::Mailbox;
use crate::message::header::Header;
use crate::message::intake::{self, Intake};
use crate::message::prepare::{self, AccountRef, BodyPlan, Directory, FromPolicy, RevAlias};
use crate::queue;
use crate::transport;

/// Runs one invocation from its argv and returns the exit status.
pub fn run<I: IntoIterator<Item = OsString>>(argv: I) -> Exit {
    let invocation = match cli::parse(argv) {
        Ok(i) => i,
        Err(CliError::Clap { text, is_error }) => {
            if is_error {
                eprint!("{text}");
                return Exit::Usage;
            }
            print!("{text}");
            return Exit::Ok;
        }
        Err(e) => {
            eprintln!("mailhop: {e}");
            return Exit::Usage;
        }
    };
    match invocation {
        Invocation::Version => {
            print!("{}", cli::clap_command().render_version());
            // What this build can do; optional features list here as they
            // are added (cargo features), so bug reports say what ran.
            let mut features = String::from(
                "smtp (rustls, ring), queue, dkim (rsa-sha256, ed25519-sha256), scrub, \
                 maildir, mbox",
            );
            if cfg!(feature = "keyring") {
                features.push_str(", keyring");
            }
            println!("features: {features}");
            Exit::Ok
        }
        Invocation::Import(from) => import(&from),
        Invocation::OAuth(cli::OAuthAction::Login { account, config }) => {
            let args = SendArgs {
                common: cli::Common {
                    config,
                    ..cli::Common::default()
                },
                ..SendArgs::default()
            };
            with_env(&args, |env, _| oauth_login(env, &account))
        }
        Invocation::Password(action) => password_cmd(action),
        Invocation::Completions(shell) => {
            let mut cmd = cli::clap_command();
            let mut out = io::stdout().lock();
            let shell = match shell {
                cli::Shell::Bash => clap_complete::Shell::Bash,
                cli::Shell::Zsh => clap_complete::Shell::Zsh,
                cli::Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut cmd, "mailhop", &mut out);
            Exit::Ok
        }
        Invocation::Send(args) => with_env(&args, send),
        Invocation::Verify(args) => with_env(&args, verify),
        Invocation::NewAliases(args) => with_env(&args, newaliases),
        Invocation::ListQueue(args) => with_env(&args, |env, _| {
            queue_cmd(env, &cli::QueueAction::List { json: false })
        }),
        Invocation::Dkim(cli::DkimAction::Keygen {
            domain,
            selector,
            algorithm,
            bits,
            out,
        }) => {
            let alg = match algorithm.parse::<crate::dkim::Algorithm>() {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("mailhop: --algorithm: {e}");
                    return Exit::Usage;
                }
            };
            if alg == crate::dkim::Algorithm::Ed25519Sha256 && bits.is_some() {
                eprintln!("mailhop: --bits is for RSA keys; Ed25519 keys have a fixed size");
                return Exit::Usage;
            }
            let bits = bits.unwrap_or(crate::dkim::DEFAULT_RSA_BITS);
            let mut stdout = io::stdout().lock();
            match crate::dkim::keygen(&domain, &selector, alg, bits, out.as_deref(), &mut stdout) {
                Ok(()) => Exit::Ok,
                Err(e) => {
                    eprintln!("mailhop: {e}");
                    dkim_exit(&e)
                }
            }
        }
        Invocation::Dkim(cli::DkimAction::Check {
            config,
            domain,
            selector,
            nameserver,
        }) => {
            let args = SendArgs {
                common: cli::Common {
                    config,
                    ..cli::Common::default()
                },
                ..SendArgs::default()
            };
            with_env(&args, |env, _| {
                dkim_check(env, domain, selector, nameserver)
            })
        }
        Invocation::Queue(q) => {
            let args = SendArgs {
                common: cli::Common {
                    config: q.config.clone(),
                    verbose: u8::from(q.verbose),
                    ..cli::Common::default()
                },
                ..SendArgs::default()
            };
            with_env(&args, |env, _| queue_cmd(env, &q.action))
        }
        Invocation::Check(c) => {
            let args = SendArgs {
                common: cli::Common {
                    config: c.config.clone(),
                    verbose: u8::from(c.verbose),
                    ..cli::Common::default()
                },
                ..SendArgs::default()
            };
            with_env(&args, |env, _| check(env, &c))
        }
        Invocation::RunQueue { args, interval } => {
            // sendmail's -qIid, -qRrecipient and -qSsender select items by
            // substring and deliver them now; -q with a time would start a
            // daemon, which mailhop is not.
            let select = interval.as_deref().and_then(|i| {
                let (kind, value) = i.split_at_checked(1)?;
                matches!(kind, "I" | "R" | "S").then(|| (kind.to_string(), value.to_string()))
            });
            if select.is_none()
                && let Some(i) = interval.filter(|i| !i.is_empty())
            {
                eprintln!(
                    "mailhop: -q{i}: mailhop is not a daemon; running the queue once (schedule it with the timer or cron)"
                );
            }
            with_env(&args, |env, _| match select {
                Some((kind, value)) => queue_select_flush(env, &kind, &value),
                None => queue_cmd(env, &cli::QueueAction::Run),
            })
        }
    }
}

fn warn_all(args: &SendArgs) {
    for w in &args.warnings {
        eprintln!("{w}");
    }
}

/// An error on its way to the exit status: the message for stderr and the
/// sysexits code.
#[derive(Debug)]
struct Failure {
    exit: Exit,
    message: String,
}

impl Failure {
    fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
        }
    }
}

/// Facts about where and as whom we run, gathered once.
#[derive(Debug)]
struct Env {
    config: Config,
    hostname: String,
    /// Qualifying domain for bare names.
    domain: String,
    /// Domains that mean "this host".
    local_domains: Vec<String>,
    user: String,
    gecos_name: Option<String>,
    home: Option<PathBuf>,
    euid: u32,
    /// The real uid: who is asking.
    uid: u32,
    /// Running setuid or setgid: the environment is the caller's, not ours.
    privileged: bool,
    /// The `mailhop` group, if it exists (group-readable secrets).
    mailhop_gid: std::cell::OnceCell<Option<u32>>,
    /// Base for the per-user queue: $XDG_STATE_HOME, or ~/.local/state
    /// from the password database when the environment is not ours.
    state_dir: Option<PathBuf>,
    verbose: u8,
    tag: String,
    log_file: Option<PathBuf>,
    now: SystemTime,
}

fn with_env(args: &SendArgs, f: impl FnOnce(&Env, &SendArgs) -> Result<Exit, Failure>) -> Exit {
    warn_all(args);
    let result = gather_env(args).and_then(|env| f(&env, args));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailhop: {}", e.message);
            e.exit
        }
    }
}

fn gather_env(args: &SendArgs) -> Result<Env, Failure> {
    let uid = nix::unistd::getuid();
    let euid = nix::unistd::geteuid().as_raw();
    let pw = nix::unistd::User::from_uid(uid).ok().flatten();
    let user = pw
        .as_ref()
        .map(|u| u.name.clone())
        .unwrap_or_else(|| format!("uid{}", uid.as_raw()));
    let gecos_name = pw.as_ref().and_then(|u| {
        let g = u.gecos.to_string_lossy();
        let first = g.split(',').next().unwrap_or("").trim().to_string();
        (!first.is_empty()).then_some(first)
    });
    let home = pw.as_ref().map(|u| u.dir.clone());

    // The setgid install: see SECURITY in mailhop(8).
    let mut privileged = nix::unistd::getuid() != nix::unistd::geteuid()
        || nix::unistd::getgid() != nix::unistd::getegid();
    // With the elevated gid the environment is the caller's, not ours: the
    // user's config directory comes from the password database.
    let user_config_dir = if privileged {
        home.as_ref().map(|h| h.join(".config"))
    } else {
        dirs::config_dir()
    };
    if privileged {
        let user_config = user_config_dir
            .as_ref()
            .map(|d| d.join("mailhop").join("config.toml"))
            .is_some_and(|p| p.exists());
        let why = if args.common.config.is_some() {
            Some("-C")
        } else if args.common.log_file.is_some() {
            Some("-X")
        } else if user_config {
            Some("your own configuration file")
        } else if std::env::var_os("MAILHOP_PASSWORD").is_some() {
            Some("MAILHOP_PASSWORD")
        } else {
            None
        };
        if let Some(why) = why {
            drop_privileges().map_err(|e| {
                Failure::new(
                    Exit::OsErr,
                    format!("cannot drop the mailhop group for {why}: {e}"),
                )
            })?;
            privileged = false;
            if args.common.verbose > 0 {
                eprintln!(
                    "mailhop: {why} given: running with your own rights and your own queue, \
                     not the system's"
                );
            }
        }
    }

    let explicit = args.common.config.as_deref();
    let config = match config::locate(explicit, user_config_dir.as_deref()) {
        Some(path) => config::load(&path).map_err(|e| {
            Failure::new(
                Exit::Config,
                format!(
                    "{e}\n(see mailhop.toml(5); check the file with `mailhop check --offline -C {}`)",
                    path.display()
                ),
            )
        })?,
        None => Config::defaults(),
    };
    let state_dir = if privileged {
        home.as_ref().map(|h| h.join(".local").join("state"))
    } else {
        dirs::state_dir()
    };

    let hostname = match &config.hostname {
        Some(h) => h.clone(),
        None => system_hostname(),
    };
    let mut local_domains = vec![
        hostname.to_ascii_lowercase(),
        "localhost".to_string(),
        "localhost.localdomain".to_string(),
    ];
    if let Some((short, _)) = hostname.split_once('.') {
        local_domains.push(short.to_ascii_lowercase());
    }
    // An explicitly configured rewrite domain is where the organisation's
    // mail lives (remote); the default one is this machine's own mail name.
    let domain = match &config.rewrite.domain {
        Some(d) => d.clone(),
        None => {
            let d = mailname().unwrap_or_else(|| hostname.clone());
            if !local_domains.contains(&d) {
                local_domains.push(d.clone());
            }
            d
        }
    };

    Ok(Env {
        hostname,
        domain,
        local_domains,
        user,
        gecos_name,
        home,
        euid,
        uid: uid.as_raw(),
        privileged,
        // Looked up only when a secret or key file is checked: on a
        // machine without the group, NSS falls through to slow modules.
        mailhop_gid: std::cell::OnceCell::new(),
        state_dir,
        verbose: args.common.verbose,
        tag: args
            .common
            .syslog_tag
            .clone()
            .unwrap_or_else(|| "mailhop".to_string()),
        log_file: args
            .common
            .log_file
            .clone()
            .or_else(|| config.log_file.clone()),
        now: SystemTime::now(),
        config,
    })
}

impl Env {
    /// The `mailhop` group's gid, if the group exists.
    fn mailhop_gid(&self) -> Option<u32> {
        *self.mailhop_gid.get_or_init(|| {
            nix::unistd::Group::from_name("mailhop")
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        })
    }
}

/// Gives up the setgid (and setuid) identity for good: real, effective and
/// saved ids all become the caller's, so nothing later can regain them.
fn drop_privileges() -> nix::Result<()> {
    let gid = nix::unistd::getgid();
    nix::unistd::setresgid(gid, gid, gid)?;
    let uid = nix::unistd::getuid();
    nix::unistd::setresuid(uid, uid, uid)
}

/// The system's fully qualified name: gethostname(), and if that is a
/// short name, the matching FQDN from /etc/hosts. No DNS: that would put a
/// network round trip (and a failure mode) on every message.
fn system_hostname() -> String {
    let short = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    if short.contains('.') {
        return short.to_ascii_lowercase();
    }
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        let prefix = format!("{short}.");
        for line in hosts.lines() {
            let line = line.split('#').next().unwrap_or("");
            let names: Vec<&str> = line.split_whitespace().skip(1).collect();
            if names.iter().any(|n| n.eq_ignore_ascii_case(&short))
                && let Some(fq) = names
                    .iter()
                    .find(|n| n.to_ascii_lowercase().starts_with(&prefix))
            {
                return fq.to_ascii_lowercase();
            }
        }
    }
    short.to_ascii_lowercase()
}

/// Debian's /etc/mailname: the domain this machine's mail comes from.
fn mailname() -> Option<String> {
    let s = std::fs::read_to_string("/etc/mailname").ok()?;
    let d = s
        .lines()
        .next()?
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!d.is_empty() && !d.contains(char::is_whitespace)).then_some(d)
}

/// Loads the aliases file (if configured) and the inline map.
fn load_aliases(env: &Env) -> Result<(Aliases, Vec<String>), Failure> {
    let mut aliases = Aliases::default();
    for (name, targets) in &env.config.aliases.map {
        aliases.insert(name, targets.clone());
    }
    let mut warnings = Vec::new();
    if let Some(file) = &env.config.aliases.file {
        let text = std::fs::read(file).map_err(|e| {
            Failure::new(
                exit::from_io(e.kind()).max_config(),
                format!(
                    "{}: cannot read aliases file ([aliases] file in {}): {e}",
                    file.display(),
                    config_name(env)
                ),
            )
        })?;
        let parsed = Aliases::parse(&file.display().to_string(), &text)
            .map_err(|e| Failure::new(Exit::Config, e.to_string()))?;
        warnings = parsed.warnings;
        // Inline map entries win over the file.
        aliases.merge(parsed.aliases);
    }
    Ok((aliases, warnings))
}

fn config_name(env: &Env) -> String {
    env.config.source.as_ref().map_or_else(
        || "the built-in defaults".to_string(),
        |p| p.display().to_string(),
    )
}

trait MaxConfig {
    fn max_config(self) -> Exit;
}

impl MaxConfig for Exit {
    /// A file the configuration names is missing: that is a config error.
    fn max_config(self) -> Exit {
        match self {
            Exit::CantCreat => Exit::Config,
            other => other,
        }
    }
}

/// The `Directory` the message module consults, over config and aliases.
struct Lookup<'a> {
    env: &'a Env,
    aliases: &'a Aliases,
}

impl Lookup<'_> {
    fn is_local(&self, domain: Option<&str>) -> bool {
        match domain {
            None => true,
            Some(d) => self.is_local_domain(d),
        }
    }

    /// Expansion of one local name, with trace lines for -bv.
    ///
    /// `[aliases] default` catches the names a caller used that no alias
    /// lists. It does not apply to alias targets: `root: admin` is the
    /// admin's explicit choice of the local user admin.
    fn expand_local(&self, local: &str) -> Result<(Vec<String>, Vec<String>), AliasError> {
        let default = self.env.config.aliases.default.as_deref();
        match default {
            Some(d) if self.aliases.get(local).is_none() => {
                let e = self.aliases.expand(d)?;
                let mut trace = vec![format!("{local} -> {d} (no alias; [aliases] default)")];
                trace.extend(e.trace);
                Ok((e.addresses, trace))
            }
            _ => {
                let e = self.aliases.expand(local)?;
                Ok((e.addresses, e.trace))
            }
        }
    }

    fn qualify(&self, a: &str) -> String {
        if a.contains('@') {
            a.to_string()
        } else {
            format!("{a}@{}", self.env.domain)
        }
    }
}

impl Directory for Lookup<'_> {
    fn revalias(&self, local_user: &str) -> Option<RevAlias> {
        self.env
            .config
            .rewrite
            .revaliases
            .get(local_user)
            .map(|r| RevAlias {
                from: r.from.clone(),
                account: r.account.clone(),
            })
    }

    fn account(&self, name: Option<&str>, sender: &str) -> Option<AccountRef> {
        let a = match name {
            Some(n) => self.env.config.account_named(n),
            None => self.env.config.account_for(sender),
        }?;
        Some(AccountRef {
            name: a.name.clone(),
            from: a.from.clone(),
        })
    }

    fn expand(&self, m: &Mailbox) -> Result<Vec<String>, String> {
        if !self.is_local(m.domain.as_deref()) {
            return Ok(vec![m.addr_spec()]);
        }
        let (addrs, _) = self
            .expand_local(&m.local_part)
            .map_err(|e| e.to_string())?;
        Ok(addrs.iter().map(|a| self.qualify(a)).collect())
    }

    fn is_local_domain(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.env.local_domains.contains(&d)
    }
}

/// The local time zone, read straight from its TZif file: `$TZ` (a zone
/// name or `:/path`) or `/etc/localtime`, else UTC. jiff's own
/// `TimeZone::system()` walks all of /usr/share/zoneinfo to learn the
/// zone's name, which we do not need, on every message.
fn local_timezone() -> jiff::tz::TimeZone {
    let path = match std::env::var("TZ") {
        Ok(tz) if !tz.is_empty() => {
            let tz = tz.trim_start_matches(':');
            if tz.starts_with('/') {
                PathBuf::from(tz)
            } else if tz.contains("..") {
                return jiff::tz::TimeZone::UTC;
            } else {
                Path::new("/usr/share/zoneinfo").join(tz)
            }
        }
        _ => PathBuf::from("/etc/localtime"),
    };
    std::fs::read(&path)
        .ok()
        .and_then(|data| jiff::tz::TimeZone::tzif("localtime", &data).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC)
}

/// RFC 5322 date-time in the local zone.
fn rfc5322_date(now: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let zoned = ts.to_zoned(local_timezone());
    zoned.strftime("%a, %d %b %Y %H:%M:%S %z").to_string()
}

/// A msg-id: time, pid and 64 random bits, so it is unique without state.
fn message_id(now: SystemTime, hostname: &str) -> String {
    let mut rnd = [0u8; 8];
    let _ = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut rnd));
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "<{secs}.{}.{:016x}@{hostname}>",
        std::process::id(),
        u64::from_be_bytes(rnd)
    )
}

/// Where a body lives: a queue draft (so queueing it later is a rename,
/// not a copy) or, when there is no usable spool, an anonymous temp file.
#[derive(Debug)]
enum Body {
    Draft(queue::Draft),
    Temp(File),
}

impl Body {
    fn file(&mut self) -> &mut File {
        match self {
            Body::Draft(d) => &mut d.data,
            Body::Temp(f) => f,
        }
    }

    /// A new, empty body in the same place.
    fn sibling(&self, spool: Option<&queue::Spool>, now: SystemTime) -> io::Result<Body> {
        match (self, spool) {
            (Body::Draft(_), Some(s)) => s
                .draft(now)
                .map(Body::Draft)
                .map_err(|e| io::Error::other(e.to_string())),
            _ => tempfile::tempfile_in("/var/tmp")
                .or_else(|_| tempfile::tempfile())
                .map(Body::Temp),
        }
    }
}

/// A message after intake: the header block in memory, the body in the
/// spool.
struct Spooled {
    intake: Intake,
    body: Body,
    /// Why the body is not in the spool, when it is not.
    spool_error: Option<String>,
}

impl Spooled {
    /// The message exactly as read (normalised line endings), for
    /// dead.letter.
    fn original(&mut self) -> io::Result<impl Read + '_> {
        let body = self.body.file();
        body.seek(SeekFrom::Start(0))?;
        let sep: &[u8] = if self.intake.header.is_empty() {
            b""
        } else {
            b"\r\n"
        };
        Ok(io::Cursor::new([self.intake.header.as_slice(), sep].concat()).chain(body))
    }
}

/// Saves the message to the configured dead-letter directory, or
/// ~/dead.letter, or (if that is not writable) a fresh file in /var/tmp.
/// Returns where it went.
fn save_dead_letter(env: &Env, spooled: &mut Spooled, sender: &str) -> Result<PathBuf, String> {
    let mut tries: Vec<String> = Vec::new();
    if let Some(dir) = &env.config.dead_letter {
        let mut msg = spooled.original().map_err(|e| e.to_string())?;
        match local::save_to_dir(dir, &mut msg, env.now) {
            Ok(p) => return Ok(p),
            Err(e) => tries.push(e.to_string()),
        }
    }
    if let Some(home) = &env.home {
        let path = home.join("dead.letter");
        let mut msg = spooled.original().map_err(|e| e.to_string())?;
        match local::deliver_mbox(&path, sender, &mut msg, env.now, None) {
            Ok(()) => return Ok(path),
            Err(e) => tries.push(e.to_string()),
        }
    }
    let mut msg = spooled.original().map_err(|e| e.to_string())?;
    match local::save_to_dir(Path::new("/var/tmp"), &mut msg, env.now) {
        Ok(p) => Ok(p),
        Err(e) => {
            tries.push(e.to_string());
            Err(tries.join("; "))
        }
    }
}

/// Refuses a message that was read: saves it, then returns the failure
/// with where it was saved.
fn refuse(env: &Env, spooled: &mut Spooled, sender: &str, exit: Exit, message: String) -> Failure {
    refuse_logged(env, spooled, sender, exit, message, "")
}

/// `refuse`, with the message's log summary (msgid, from, …) when known,
/// so a refused message still gets exactly one log line.
fn refuse_logged(
    env: &Env,
    spooled: &mut Spooled,
    sender: &str,
    exit: Exit,
    message: String,
    summary: &str,
) -> Failure {
    let saved = match save_dead_letter(env, spooled, sender) {
        Ok(p) => format!("the message was saved in {}", p.display()),
        Err(e) => format!("THE MESSAGE COULD NOT BE SAVED: {e}"),
    };
    let prefix = if summary.is_empty() {
        String::new()
    } else {
        format!("{summary} ")
    };
    log_line(
        env,
        Severity::Err,
        &format!("{prefix}status=refused ({}) {saved}", log::field(&message)),
    );
    Failure::new(exit, format!("{message}\nmailhop: {saved}"))
}

fn log_line(env: &Env, severity: Severity, line: &str) {
    if env.config.syslog {
        log::syslog(&env.tag, severity, line);
    }
    if let Some(path) = &env.log_file {
        let ts = jiff::Timestamp::try_from(env.now)
            .map(|t| t.to_string())
            .unwrap_or_default();
        if let Err(e) = log::to_file(path, &ts, &env.tag, line) {
            eprintln!("mailhop: cannot write log file {}: {e}", path.display());
        }
    }
}

/// Reads stdin into a spool file. The header block stays in memory (at most
/// 1 MiB); the body never does.
fn intake_stdin(
    ignore_dots: bool,
    spool: Option<&queue::Spool>,
    now: SystemTime,
) -> Result<Spooled, Failure> {
    let mut spool_error = None;
    let mut body = match spool.map(|s| s.draft(now)) {
        Some(Ok(d)) => Body::Draft(d),
        Some(Err(e)) => {
            spool_error = Some(e.to_string());
            Body::Temp(
                tempfile::tempfile_in("/var/tmp")
                    .or_else(|_| tempfile::tempfile())
                    .map_err(|e| {
                        Failure::new(Exit::TempFail, format!("cannot create a spool file: {e}"))
                    })?,
            )
        }
        // No usable spool (or `mode = "never"`): an anonymous file. The
        // message can then not be queued, only sent or refused.
        // Not $TMPDIR: a setgid process must not write where the caller
        // says. /var/tmp, not /tmp: a large message must not fill RAM.
        _ => Body::Temp(
            tempfile::tempfile_in("/var/tmp")
                .or_else(|_| tempfile::tempfile())
                .map_err(|e| {
                    Failure::new(
                        Exit::TempFail,
                        format!(
                            "cannot create a spool file in {}: {e}",
                            std::env::temp_dir().display()
                        ),
                    )
                })?,
        ),
    };
    let stdin = io::stdin().lock();
    let intake = intake::read_message(stdin, ignore_dots, body.file()).map_err(|e| {
        Failure::new(
            Exit::TempFail,
            format!("{e}; nothing was delivered, try again"),
        )
    })?;
    Ok(Spooled {
        intake,
        body,
        spool_error,
    })
}

/// `sendmail` in its default mode: read, prepare, deliver.
fn send(env: &Env, args: &SendArgs) -> Result<Exit, Failure> {
    let (aliases, alias_warnings) = load_aliases(env)?;
    if env.verbose > 0 {
        for w in &alias_warnings {
            eprintln!("mailhop: {w}");
        }
    }
    let spool = match env.config.queue.mode {
        config::QueueMode::Never => None,
        _ => spool_for(env),
    };
    let mut spooled = intake_stdin(args.ignore_dots, spool.as_ref(), env.now)?;
    let raw_sender = args.sender.clone().unwrap_or_else(|| env.user.clone());

    if spooled.intake.empty {
        return Err(Failure::new(
            Exit::NoInput,
            "no message on standard input; nothing was sent (pipe the message into sendmail)",
        ));
    }
    if spooled.intake.nul {
        return Err(refuse(
            env,
            &mut spooled,
            &raw_sender,
            Exit::DataErr,
            "the message contains NUL bytes, which mail cannot carry; encode binary data as a MIME attachment".into(),
        ));
    }
    if spooled.intake.header_too_large {
        return Err(refuse(
            env,
            &mut spooled,
            &raw_sender,
            Exit::DataErr,
            format!(
                "the header block is larger than {} bytes; that is not a mail message",
                intake::MAX_HEADER
            ),
        ));
    }
    let header = match Header::parse(&spooled.intake.header) {
        Ok(h) => h,
        Err(e) => {
            return Err(refuse(
                env,
                &mut spooled,
                &raw_sender,
                Exit::DataErr,
                format!("bad header: {e}"),
            ));
        }
    };

    let lookup = Lookup {
        env,
        aliases: &aliases,
    };
    let date = rfc5322_date(env.now);
    let msgid = message_id(env.now, &env.hostname);
    let ctx = prepare_context(env, &date, &msgid);
    let req = prepare::Request {
        sender: args.sender.as_deref(),
        full_name: args.full_name.as_deref(),
        extract_recipients: args.extract_recipients,
        recipients: &args.recipients,
    };
    let mut prepared = match prepare::prepare(header, &req, &ctx, &lookup) {
        Ok(p) => p,
        Err(e) => {
            let code = match e {
                prepare::PrepareError::NoRecipients { extract: false } => Exit::Usage,
                _ => Exit::DataErr,
            };
            return Err(refuse(env, &mut spooled, &raw_sender, code, e.to_string()));
        }
    };
    if env.verbose > 0 {
        for n in &prepared.notes {
            eprintln!("mailhop: {n}");
        }
    }

    // Scrubbing comes after rewriting and before signing.
    let scrubbed = crate::scrub::scrub(&mut prepared.header, &env.config.headers);
    if env.verbose > 0 {
        for w in &scrubbed.warnings {
            eprintln!("mailhop: {w}");
        }
        if scrubbed.removed + scrubbed.replaced > 0 {
            eprintln!(
                "mailhop: scrubbed the header: {} field(s) removed, {} rewritten",
                scrubbed.removed, scrubbed.replaced
            );
        }
    }

    // Body fix-ups.
    let stats = spooled.intake.body.clone();
    let plan = prepare::plan_body(&prepared.header, stats.longest_line);
    let mut reencoded: Option<Body> = None;
    match plan {
        BodyPlan::AsIs => {
            if stats.eight_bit
                && prepare::label_eight_bit(&mut prepared.header, stats.valid_utf8)
                && env.verbose > 0
            {
                eprintln!("mailhop: labelled the 8-bit body as text/plain; charset=utf-8");
            }
        }
        BodyPlan::QuotedPrintable => {
            match reencode_qp(&mut spooled.body, spool.as_ref(), env.now) {
                Ok(b) => reencoded = Some(b),
                Err(e) => {
                    let sender = prepared.sender.clone();
                    return Err(refuse(env, &mut spooled, &sender, e.exit, e.message));
                }
            }
            prepare::apply_quoted_printable(&mut prepared.header, stats.valid_utf8);
            if env.verbose > 0 {
                eprintln!(
                    "mailhop: re-encoded the body as quoted-printable (a line was {} octets, over the 998 limit)",
                    stats.longest_line
                );
            }
        }
        BodyPlan::Refuse(why) => {
            let sender = prepared.sender.clone();
            return Err(refuse(env, &mut spooled, &sender, Exit::DataErr, why));
        }
    }
    // The body as it will be sent, read through its own descriptor so the
    // original stays available for dead.letter.
    let mut body = match reencoded.as_mut() {
        Some(b) => b.file().try_clone(),
        None => spooled.body.file().try_clone(),
    }
    .map_err(|e| Failure::new(Exit::OsErr, e.to_string()))?;

    let mut header_block = Vec::new();
    prepared.header.write_to(&mut header_block);
    // Signing is the very last change to the message.
    if !env.config.dkim.is_empty() {
        header_block = match dkim_sign(
            env,
            prepared.from_address.as_deref(),
            &header_block,
            &mut body,
        ) {
            Ok(h) => h,
            Err(e) => {
                let sender = prepared.sender.clone();
                return Err(refuse(env, &mut spooled, &sender, e.exit, e.message));
            }
        };
    }
    let mut head = header_block.clone();
    head.extend_from_slice(b"\r\n");
    let size = head.len() as u64 + body.metadata().map(|m| m.len()).unwrap_or(0);
    let eight_bit = !head.is_ascii() || (stats.eight_bit && reencoded.is_none());
    let msgid_final = prepared
        .header
        .get("Message-ID")
        .map(|f| String::from_utf8_lossy(&f.unfolded_value()).into_owned())
        .unwrap_or_default();

    // Route: local recipients to the embedded delivery, the rest to the
    // smarthost (or the queue).
    let capture = env.config.local.capture;
    let (local_rcpts, remote_rcpts): (Vec<&String>, Vec<&String>) = prepared
        .recipients
        .iter()
        .partition(|r| capture || lookup.is_local(r.rsplit_once('@').map(|(_, d)| d)));

    let mut failures: Vec<(String, Exit, String)> = Vec::new();
    let mut delivered: Vec<String> = Vec::new();
    for r in &local_rcpts {
        match deliver_local(env, r, &prepared.sender, &head, &mut body) {
            Ok(where_) => delivered.push(format!("{r} ({where_})")),
            Err((code, msg)) => failures.push(((*r).clone(), code, msg)),
        }
    }
    let dsn = transport::Dsn {
        notify: args.dsn_notify.clone(),
        ret_full: args.dsn_ret.map(|r| r == cli::DsnRet::Full),
        envid: args.envid.clone(),
    };
    let mode = env.config.queue.mode;
    let remote_rcpts_count = remote_rcpts.len();
    let now_secs = env
        .now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // What is left in the queue at the end, and why.
    let mut to_queue: Vec<String> = Vec::new();
    let mut queue_reason: Option<String> = None;
    let mut queued_id: Option<String> = None;
    if !remote_rcpts.is_empty() {
        let remote: Vec<String> = remote_rcpts.iter().map(|r| (*r).clone()).collect();
        let account = prepared
            .account
            .as_deref()
            .and_then(|n| env.config.account_named(n));
        let no_smarthost = format!(
            "no smarthost is configured; add an [[account]] to {} (see mailhop.toml(5))",
            config_name(env)
        );
        let make_meta =
            |id: &str, rcpts: &[String], reason: Option<&str>, attempts: u32| queue::Meta {
                id: id.to_string(),
                arrival: now_secs,
                sender: prepared.sender.clone(),
                account: prepared.account.clone(),
                uid: env.uid,
                attempts,
                next_attempt: if attempts > 0 {
                    now_secs + queue::backoff(attempts).as_secs()
                } else {
                    now_secs
                },
                last_error: reason.map(str::to_string),
                hold: false,
                eight_bit,
                dsn_notify: dsn.notify.clone(),
                dsn_ret_full: dsn.ret_full,
                dsn_envid: dsn.envid.clone(),
                recipients: rcpts
                    .iter()
                    .map(|a| queue::Recipient {
                        address: a.clone(),
                        state: queue::RcptState::Pending,
                        last_error: reason.map(str::to_string),
                    })
                    .collect(),
                header: header_block.clone(),
            };

        // Commit to the queue before the first network byte: whatever
        // happens from here on (a crash, kill -9, a hung server), the
        // message is on disk and a runner will deliver it.
        let mut commit_error = None;
        if mode != config::QueueMode::Never
            && let Some(spool) = &spool
        {
            match queue_draft(&mut reencoded, &mut spooled.body) {
                Some(draft) => {
                    let reason = account.is_none().then_some(no_smarthost.as_str());
                    let meta = make_meta(&draft.id, &remote, reason, 0);
                    // Durable at once when the caller will be told
                    // "queued" without an attempt; a commit that only
                    // covers the attempt is made durable if it fails.
                    let durable = account.is_none() || mode == config::QueueMode::Always;
                    match spool.commit(draft, &meta, durable) {
                        Ok(()) => {
                            queued_id = Some(meta.id.clone());
                            to_queue = remote.clone();
                            queue_reason = reason.map(str::to_string);
                        }
                        Err(e) => commit_error = Some(e.to_string()),
                    }
                }
                None => {
                    commit_error = Some(
                        spooled
                            .spool_error
                            .clone()
                            .unwrap_or_else(|| "the message is not in the spool".to_string()),
                    )
                }
            }
        }
        let committed = queued_id.is_some();
        match account {
            None if committed => {}
            None => {
                let why = match &commit_error {
                    Some(e) => format!("{no_smarthost}; and the message could not be queued: {e}"),
                    None => no_smarthost.clone(),
                };
                for r in remote {
                    failures.push((r, Exit::Unavailable, why.clone()));
                }
            }
            Some(_) if committed && mode == config::QueueMode::Always => {}
            Some(account) => {
                let envelope = transport::Envelope {
                    sender: &prepared.sender,
                    recipients: &remote,
                    size,
                    eight_bit,
                    dsn: &dsn,
                };
                let mut still_pending: Vec<String> = Vec::new();
                let mut reason: Option<String> = None;
                match submit(env, account, &envelope, &head, &mut body) {
                    Ok(outcome) => {
                        for a in outcome.accepted {
                            delivered.push(format!("{a} (via {})", account.smtp.host));
                        }
                        for (r, reply) in outcome.rejected {
                            let msg =
                                format!("{} refused this recipient: {reply}", account.smtp.host);
                            if reply.is_transient() && committed {
                                reason = Some(msg);
                                still_pending.push(r);
                            } else {
                                let code = if reply.is_transient() {
                                    Exit::TempFail
                                } else {
                                    Exit::NoUser
                                };
                                failures.push((r, code, msg));
                            }
                        }
                    }
                    Err((code, msg)) if code == Exit::TempFail && committed => {
                        reason = Some(msg);
                        still_pending = remote;
                    }
                    Err((code, msg)) => {
                        let msg = match (&commit_error, code) {
                            (Some(e), Exit::TempFail) => {
                                format!("{msg}; and the message could not be queued: {e}")
                            }
                            _ => msg,
                        };
                        for r in remote {
                            failures.push((r, code, msg.clone()));
                        }
                    }
                }
                if let (Some(spool), Some(draft)) =
                    (&spool, queue_draft(&mut reencoded, &mut spooled.body))
                    && committed
                {
                    if still_pending.is_empty() {
                        // Delivered (or refused for good): the item is done.
                        // Between the server's 250 and this removal is the
                        // one window in which a crash causes a duplicate.
                        let _ = spool.discard(draft);
                        queued_id = None;
                        to_queue.clear();
                    } else {
                        let meta = make_meta(&draft.id, &still_pending, reason.as_deref(), 1);
                        if let Err(e) = spool.make_durable(draft, &meta) {
                            eprintln!("mailhop: {e}");
                        }
                        to_queue = still_pending;
                        queue_reason = reason;
                    }
                }
            }
        }
    }

    let summary = format!(
        "msgid={} from=<{}> nrcpt={} size={}",
        log::field(&msgid_final),
        log::field(&prepared.sender),
        prepared.recipients.len(),
        size
    );
    if env.verbose > 0 {
        for d in &delivered {
            eprintln!("mailhop: delivered to {d}");
        }
        if let Some(id) = &queued_id {
            eprintln!(
                "mailhop: queued as {id} for {}{}",
                to_queue.join(", "),
                queue_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
    }
    // Held for want of a smarthost: say so even without -v, or the caller
    // believes the mail went out.
    if queued_id.is_some() && prepared.account.is_none() {
        eprintln!(
            "mailhop: mail for {} is held in the queue: no smarthost is configured \
             (add an [[account]] to {}, then run `sendmail -q`)",
            to_queue.join(", "),
            config_name(env)
        );
    }
    if failures.is_empty() {
        let mut status = String::new();
        if !delivered.is_empty() {
            status.push_str(&format!(
                "status=sent ({})",
                log::field(&delivered.join(", "))
            ));
        }
        if let Some(id) = &queued_id {
            if !status.is_empty() {
                status.push(' ');
            }
            status.push_str(&format!(
                "status=queued (id {id}, {} recipient(s){})",
                to_queue.len(),
                queue_reason
                    .as_deref()
                    .map(|r| format!(": {}", log::field(r)))
                    .unwrap_or_default()
            ));
        }
        log_line(env, Severity::Info, &format!("{summary} {status}"));
        // Release our lock on the item before a runner looks at it.
        drop(body);
        drop(reencoded);
        drop(spooled);
        // A runner is started when it has work now: a message queued by
        // choice (mode "always"), or older items after the smarthost just
        // proved reachable. A failed attempt waits for its backoff.
        let queued_by_choice = queued_id.is_some() && queue_reason.is_none();
        let reachable_again = queued_id.is_none()
            && remote_rcpts_count > 0
            && spool.as_ref().is_some_and(queue::Spool::has_items);
        if !env.config.accounts.is_empty() && (queued_by_choice || reachable_again) {
            spawn_runner(args);
        }
        return Ok(Exit::Ok);
    }

    // Some or all failed: report each, keep the message, pick the exit code.
    let mut text = String::new();
    for (r, _, m) in &failures {
        text.push_str(&format!("{r}: {m}\n"));
    }
    if !delivered.is_empty() {
        text.push_str(&format!("delivered to: {}\n", delivered.join(", ")));
    }
    if let Some(id) = &queued_id {
        text.push_str(&format!("queued as {id} for: {}\n", to_queue.join(", ")));
    }
    let code = worst(failures.iter().map(|(_, c, _)| *c));
    let sender = prepared.sender.clone();
    let message = text.trim_end().replace('\n', "\nmailhop: ");
    Err(refuse_logged(
        env,
        &mut spooled,
        &sender,
        code,
        message,
        &summary,
    ))
}

/// The queue draft holding the body that will be sent, if it is in the
/// spool.
fn queue_draft<'a>(
    reencoded: &'a mut Option<Body>,
    original: &'a mut Body,
) -> Option<&'a mut queue::Draft> {
    match reencoded {
        Some(Body::Draft(d)) => Some(d),
        Some(Body::Temp(_)) => None,
        None => match original {
            Body::Draft(d) => Some(d),
            Body::Temp(_) => None,
        },
    }
}

/// The spool for this invocation: `[queue] dir`, else the system spool
/// when we may write it, else the per-user one. `None` if none is usable;
/// the message can then only be sent directly.
fn spool_for(env: &Env) -> Option<queue::Spool> {
    let shared = |p: &Path| {
        std::fs::metadata(p)
            .is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o070 != 0)
    };
    if let Some(dir) = &env.config.queue.dir {
        return Some(queue::Spool::new(dir, shared(dir)));
    }
    // Checked with the effective ids: in the setgid install it is the
    // mailhop group, not the caller, that may write the spool.
    let system = Path::new(SYSTEM_SPOOL);
    if nix::unistd::faccessat(
        nix::fcntl::AT_FDCWD,
        system,
        nix::unistd::AccessFlags::W_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
    .is_ok()
    {
        return Some(queue::Spool::new(system, true));
    }
    env.state_dir
        .as_ref()
        .map(|d| queue::Spool::new(&d.join("mailhop").join("queue"), false))
}

/// The system-wide spool of the packaged install.
pub const SYSTEM_SPOOL: &str = "/var/spool/mailhop";

/// Starts `mailhop queue run` in the background, detached, so the caller
/// (a PHP request, cron) does not wait for the smarthost.
fn spawn_runner(args: &SendArgs) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0("mailhop").args(["queue", "run"]);
    if let Some(c) = &args.common.config {
        cmd.arg("-C").arg(c);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let _ = cmd.spawn();
}

/// Submits one message to the account's smarthost. Errors come back as the
/// exit code and the message for the user.
fn submit(
    env: &Env,
    account: &config::Account,
    envelope: &transport::Envelope<'_>,
    head: &[u8],
    body: &mut File,
) -> Result<transport::Outcome, (Exit, String)> {
    let result = (|| {
        let mut session = connect_and_login(env, account)?;
        body.seek(SeekFrom::Start(0))
            .map_err(|e| transport::Error {
                stage: transport::Stage::Message,
                kind: transport::Kind::Config,
                detail: format!("cannot read the spooled message: {e}"),
            })?;
        let mut msg = io::Cursor::new(head).chain(&mut *body);
        let outcome = session.send(envelope, &mut msg)?;
        session.quit();
        Ok(outcome)
    })();
    result.map_err(|e: transport::Error| {
        (
            exit_for(&e),
            format!("{} (account {})", e.detail, account.name),
        )
    })
}

/// Connects and logs in. With OAuth, a 5.7.x refusal of the token drops
/// the cached access token, refreshes once and tries again on a new
/// connection; a second refusal is the answer.
fn connect_and_login(
    env: &Env,
    a: &config::Account,
) -> Result<transport::Session, transport::Error> {
    let settings = transport_settings(env, a);
    let transcript = || -> transport::Transcript {
        if env.verbose > 0 {
            Some(Box::new(io::stderr()))
        } else {
            None
        }
    };
    let mut session = transport::Session::connect(&settings, transcript())?;
    let mut secret = || obtain_secret_forced(env, a, false);
    match session.authenticate(&mut secret) {
        Ok(()) => Ok(session),
        Err(e) => {
            let token_refused = matches!(
                &e.kind,
                transport::Kind::AuthFailed(Some(r)) if r.enhanced().is_some_and(|c| c.starts_with("5.7."))
            );
            let Some(o) = a.oauth.as_ref().filter(|_| token_refused) else {
                return Err(e);
            };
            let _ = crate::oauth::invalidate(o);
            if env.verbose > 0 {
                eprintln!(
                    "mailhop: the server refused the cached token ({}); refreshing it once",
                    e.detail
                );
            }
            let mut session = transport::Session::connect(&settings, transcript())?;
            let mut fresh = || obtain_secret_forced(env, a, true);
            session.authenticate(&mut fresh)?;
            Ok(session)
        }
    }
}

/// The sysexits code for a submission failure (see EXIT STATUS).
pub fn exit_for(e: &transport::Error) -> Exit {
    use transport::Kind;
    if e.is_transient() {
        return Exit::TempFail;
    }
    match &e.kind {
        Kind::AuthFailed(_) => Exit::NoPerm,
        Kind::Config | Kind::Credentials => Exit::Config,
        Kind::AllRecipientsRejected(_) => Exit::NoUser,
        Kind::Protocol => Exit::TempFail,
        _ => Exit::Unavailable,
    }
}

fn transport_settings(env: &Env, a: &config::Account) -> transport::Settings {
    transport::Settings {
        helo_name: env.hostname.clone(),
        system_roots_only: env.privileged,
        ..a.smtp.clone()
    }
}

/// The account's password or token, from the first configured source.
fn obtain_secret(env: &Env, a: &config::Account) -> Result<crate::credentials::Secret, String> {
    obtain_secret_forced(env, a, false).map_err(|e| e.message)
}

/// The account's secret: an OAuth access token when `[account.oauth]` is
/// set (refreshed first when `force`), else the password.
fn obtain_secret_forced(
    env: &Env,
    a: &config::Account,
    force: bool,
) -> Result<crate::credentials::Secret, transport::SecretError> {
    if let Some(o) = &a.oauth {
        let now = env
            .now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return crate::oauth::access_token(o, now, force).map_err(|e| transport::SecretError {
            message: format!("{e} (account {})", a.name),
            transient: e.is_transient(),
        });
    }
    obtain_password(env, a).map_err(transport::SecretError::from)
}

/// The account's password, from the first configured source.
fn obtain_password(env: &Env, a: &config::Account) -> Result<crate::credentials::Secret, String> {
    use crate::credentials::{self, Source};
    let mut sources = Vec::new();
    if let Some(cmd) = &a.password_command {
        sources.push(Source::Command {
            command: cmd.clone(),
            timeout: config::PASSWORD_COMMAND_TIMEOUT,
        });
    }
    if let Some(file) = &a.password_file {
        sources.push(Source::File(file.clone()));
    }
    // The environment is the caller's: a setuid/setgid process must not let
    // it choose the secret.
    if !env.privileged
        && let Ok(v) = std::env::var("MAILHOP_PASSWORD")
    {
        sources.push(Source::Env(v));
    }
    // The last resort. Not when privileged: the D-Bus address would come
    // from the caller's environment (zbus can even execute one).
    #[cfg(feature = "keyring")]
    if !env.privileged {
        sources.push(Source::Keyring {
            service: credentials::keyring_store::SERVICE.to_owned(),
            account: a.name.clone(),
        });
    }
    let policy = credentials::Policy {
        allowed_group: env.mailhop_gid(),
        euid: env.euid,
    };
    credentials::obtain(&sources, &policy).map_err(|e| format!("{e} (account {})", a.name))
}

/// The exit code for several failed recipients: a temporary failure wins
/// (the caller may retry), then the first permanent one.
fn worst(codes: impl Iterator<Item = Exit>) -> Exit {
    let codes: Vec<Exit> = codes.collect();
    if codes.contains(&Exit::TempFail) {
        Exit::TempFail
    } else {
        codes.first().copied().unwrap_or(Exit::Software)
    }
}

fn reencode_qp(
    body: &mut Body,
    spool: Option<&queue::Spool>,
    now: SystemTime,
) -> Result<Body, Failure> {
    let io_fail =
        |e: io::Error| Failure::new(Exit::TempFail, format!("cannot re-encode the body: {e}"));
    let mut out = body.sibling(spool, now).map_err(io_fail)?;
    let src = body.file();
    src.seek(SeekFrom::Start(0)).map_err(io_fail)?;
    intake::encode_quoted_printable(&mut *src, out.file())
        .map_err(|e| Failure::new(Exit::TempFail, format!("cannot re-encode the body: {e}")))?;
    Ok(out)
}

/// Delivers to one local recipient through the `[local]` transport.
fn deliver_local(
    env: &Env,
    rcpt: &str,
    sender: &str,
    head: &[u8],
    body: &mut File,
) -> Result<String, (Exit, String)> {
    let local_name = rcpt.rsplit_once('@').map_or(rcpt, |(l, _)| l);
    let settings = &env.config.local;
    let needs_home = settings.path.starts_with('~');
    let user = nix::unistd::User::from_name(local_name).ok().flatten();
    if needs_home && user.is_none() {
        return Err((
            Exit::NoUser,
            format!(
                "no local user \"{local_name}\" (looked up because [local] path is \"{}\"); \
                 add an alias for it, or set [aliases] default",
                settings.path
            ),
        ));
    }
    let home = user.as_ref().map(|u| u.dir.clone());
    let path =
        local::expand_path(&settings.path, local_name, home.as_deref()).ok_or_else(|| {
            (
                Exit::DataErr,
                format!("\"{local_name}\" cannot be used as a mailbox name"),
            )
        })?;
    // As root, files created in a user's mailbox belong to that user, so
    // they can read their own mail.
    let owner = match (&user, env.euid) {
        (Some(u), 0) if settings.path.starts_with('~') || settings.path.contains("%u") => {
            Some(Owner {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            })
        }
        _ => None,
    };
    body.seek(SeekFrom::Start(0))
        .map_err(|e| (Exit::IoErr, e.to_string()))?;
    let mut msg = io::Cursor::new(head).chain(&mut *body);
    let result = match settings.transport {
        LocalTransport::Maildir => {
            local::deliver_maildir(&path, &mut msg, &env.hostname, env.now, owner)
                .map(|p| p.display().to_string())
        }
        LocalTransport::Mbox => local::deliver_mbox(&path, sender, &mut msg, env.now, owner)
            .map(|()| path.display().to_string()),
    };
    result.map_err(|e| (exit::from_io(e.kind()), e.to_string()))
}

/// `sendmail -bv`: shows what each recipient expands to and where it would
/// go, without reading or sending a message.
/// What `prepare` needs to know of the invocation.
fn prepare_context<'a>(env: &'a Env, date: &'a str, message_id: &'a str) -> prepare::Context<'a> {
    prepare::Context {
        user: &env.user,
        gecos_name: env.gecos_name.as_deref(),
        domain: &env.domain,
        date,
        message_id,
        from_policy: match env.config.rewrite.from_policy {
            config::FromPolicy::Account => FromPolicy::Account,
            config::FromPolicy::Keep => FromPolicy::Keep,
            config::FromPolicy::Qualify => FromPolicy::Qualify,
        },
        reply_to_original: env.config.rewrite.reply_to_original,
    }
}

fn verify(env: &Env, args: &SendArgs) -> Result<Exit, Failure> {
    let (aliases, warnings) = load_aliases(env)?;
    for w in &warnings {
        eprintln!("mailhop: {w}");
    }
    let lookup = Lookup {
        env,
        aliases: &aliases,
    };
    if args.recipients.is_empty() {
        return Err(Failure::new(
            Exit::Usage,
            "-bv needs recipient addresses on the command line (it reads no message)",
        ));
    }
    // The account is chosen as for a real message: by the revaliases entry
    // of the sender or the invoking user, else by the sender.
    let account = prepare::account_for_sender(
        &prepare_context(env, "", ""),
        &lookup,
        args.sender.as_deref(),
    )
    .map_err(|e| Failure::new(Exit::DataErr, e.to_string()))?
    .and_then(|a| env.config.account_named(&a.name));
    let mut status = Exit::Ok;
    let mut out = io::stdout().lock();
    for r in &args.recipients {
        let items = match crate::message::address::parse_address_list(r.as_bytes()) {
            Ok(i) => i,
            Err(e) => {
                let _ = writeln!(out, "{r}: undeliverable: {e}");
                status = Exit::DataErr;
                continue;
            }
        };
        for item in items {
            let members = match item {
                crate::message::address::Address::Mailbox(m) => vec![m],
                crate::message::address::Address::Group { members, .. } => members,
            };
            for m in members {
                let finals = if lookup.is_local(m.domain.as_deref()) {
                    match lookup.expand_local(&m.local_part) {
                        Ok((a, trace)) => {
                            if env.verbose > 0 {
                                for t in trace {
                                    let _ = writeln!(out, "  {t}");
                                }
                            }
                            a.iter().map(|x| lookup.qualify(x)).collect()
                        }
                        Err(e) => {
                            let _ = writeln!(out, "{}: undeliverable: {e}", m.addr_spec());
                            status = Exit::DataErr;
                            continue;
                        }
                    }
                } else {
                    vec![m.addr_spec()]
                };
                for f in finals {
                    let domain = f.rsplit_once('@').map(|(_, d)| d);
                    let route = if env.config.local.capture || lookup.is_local(domain) {
                        let local_name = f.rsplit_once('@').map_or(f.as_str(), |(l, _)| l);
                        match verify_local_path(env, local_name) {
                            Ok(p) => format!("local delivery to {p}"),
                            Err(e) => {
                                status = Exit::NoUser;
                                format!("undeliverable: {e}")
                            }
                        }
                    } else {
                        match account {
                            Some(a) => format!("smarthost {} (account {})", a.smtp.host, a.name),
                            None => {
                                status = Exit::Unavailable;
                                "undeliverable: no smarthost configured".to_string()
                            }
                        }
                    };
                    let _ = writeln!(out, "{} -> {f}: {route}", m.addr_spec());
                }
            }
        }
    }
    Ok(status)
}

fn verify_local_path(env: &Env, local_name: &str) -> Result<String, String> {
    let settings = &env.config.local;
    let user = nix::unistd::User::from_name(local_name).ok().flatten();
    if settings.path.starts_with('~') && user.is_none() {
        return Err(format!("no local user \"{local_name}\""));
    }
    let home = user.map(|u| u.dir);
    local::expand_path(&settings.path, local_name, home.as_deref())
        .map(|p| {
            let kind = match settings.transport {
                LocalTransport::Maildir => "Maildir",
                LocalTransport::Mbox => "mbox",
            };
            format!("{kind} {}", p.display())
        })
        .ok_or_else(|| format!("\"{local_name}\" cannot be used as a mailbox name"))
}

/// `newaliases`: there is nothing to compile; validate the aliases file and
/// the inline map and report.
fn newaliases(env: &Env, _args: &SendArgs) -> Result<Exit, Failure> {
    let Some(file) = &env.config.aliases.file else {
        println!(
            "mailhop: no aliases file is configured ([aliases] file in {}); {} inline aliases",
            config_name(env),
            env.config.aliases.map.len()
        );
        return Ok(Exit::Ok);
    };
    let text = std::fs::read(file).map_err(|e| {
        Failure::new(
            exit::from_io(e.kind()).max_config(),
            format!("{}: cannot read aliases file: {e}", file.display()),
        )
    })?;
    let source = file.display().to_string();
    let warnings = crate::aliases::validate(&source, &text)
        .map_err(|e| Failure::new(Exit::Config, e.to_string()))?;
    for w in &warnings {
        eprintln!("mailhop: {w}");
    }
    let count = Aliases::parse(&source, &text)
        .map(|p| p.aliases.len())
        .unwrap_or(0);
    println!(
        "mailhop: {source}: {count} aliases, no errors (nothing to rebuild: mailhop reads the file directly)"
    );
    Ok(Exit::Ok)
}

/// `mailhop check`: validates the configuration, then walks each account's
/// smarthost step by step (DNS, TCP, greeting and EHLO, TLS and the
/// certificate, login, optionally a test message), saying in words what
/// happened. The exit status is the worst step's.
fn check(env: &Env, c: &cli::CheckArgs) -> Result<Exit, Failure> {
    let mut out = io::stdout().lock();
    let mut status = Exit::Ok;
    let _ = writeln!(out, "configuration: {} is valid", config_name(env));
    let _ = writeln!(
        out,
        "hostname: {} (qualifying domain {})",
        env.hostname, env.domain
    );
    match load_aliases(env) {
        Ok((a, warnings)) => {
            let _ = writeln!(out, "aliases: {} entries", a.len());
            for w in warnings {
                let _ = writeln!(out, "  warning: {w}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "aliases: FAILED: {}", e.message);
            status = Exit::Config;
        }
    }
    let accounts: Vec<&config::Account> = match &c.account {
        Some(name) => vec![named_account(env, name)?],
        None => env.config.accounts.iter().collect(),
    };
    if accounts.is_empty() {
        let _ = writeln!(
            out,
            "accounts: none; remote mail cannot be sent, local mail is delivered by the [local] transport"
        );
    }
    for a in accounts {
        let step = check_account(env, a, c, &mut out);
        if step != Exit::Ok && (status == Exit::Ok || step == Exit::TempFail) {
            status = step;
        }
    }
    Ok(status)
}

/// Checks one account; returns its status.
fn check_account(env: &Env, a: &config::Account, c: &cli::CheckArgs, out: &mut dyn Write) -> Exit {
    let s = transport_settings(env, a);
    let mode = match s.tls {
        transport::TlsMode::StartTls => "STARTTLS",
        transport::TlsMode::Implicit => "implicit TLS",
        transport::TlsMode::None => "no TLS",
    };
    let _ = writeln!(
        out,
        "account {}: {} port {} ({mode}), sends as {}",
        a.name, s.host, s.port, a.from
    );
    // The secret source, without revealing the secret.
    if let Some(o) = &a.oauth {
        let st = crate::oauth::status(o);
        let expiry = match st.access_expires {
            Some(t) => format!("cached access token valid until {}", arrival_text(t)),
            None => "no cached access token".to_string(),
        };
        let refresh = match st.last_refresh {
            Some(t) => format!("last refreshed {}", arrival_text(t)),
            None => "never refreshed".to_string(),
        };
        let _ = writeln!(
            out,
            "  oauth: refresh token {}; {expiry}; {refresh}; scopes: {}",
            if st.has_refresh_token {
                "present"
            } else {
                "absent"
            },
            if st.scopes.is_empty() {
                "-".to_string()
            } else {
                st.scopes.join(" ")
            }
        );
        if let Some(problem) = &st.problem {
            let _ = writeln!(out, "  oauth: FAILED: {problem}");
            return Exit::Config;
        }
    }
    // OAuth tokens are checked at login below, not here: obtaining one may
    // mean a round trip to the token endpoint, and --offline means none.
    let needs_secret =
        s.username.is_some() && s.auth != transport::AuthMode::None && a.oauth.is_none();
    if needs_secret {
        match obtain_secret(env, a) {
            Ok(_) => {
                let _ = writeln!(out, "  credentials: available");
            }
            Err(e) => {
                let _ = writeln!(out, "  credentials: FAILED: {e}");
                return Exit::Config;
            }
        }
    }
    if c.offline {
        let _ = writeln!(out, "  (offline: no network checks)");
        return Exit::Ok;
    }
    match std::net::ToSocketAddrs::to_socket_addrs(&(s.host.trim_matches(['[', ']']), s.port)) {
        Ok(addrs) => {
            let list: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            let _ = writeln!(out, "  DNS: {} resolves to {}", s.host, list.join(", "));
        }
        Err(e) => {
            let _ = writeln!(out, "  DNS: FAILED: cannot resolve {}: {e}", s.host);
            return Exit::TempFail;
        }
    }
    let transcript: transport::Transcript = if env.verbose > 0 {
        Some(Box::new(io::stderr()))
    } else {
        None
    };
    let mut session = match transport::Session::connect(&s, transcript) {
        Ok(session) => session,
        Err(e) => {
            let _ = writeln!(out, "  connection: FAILED during {}: {}", e.stage, e.detail);
            return exit_for(&e);
        }
    };
    let info = session.info().clone();
    if let Some(peer) = info.peer {
        let _ = writeln!(out, "  TCP: connected to {peer}");
    }
    if let Some(g) = &info.greeting {
        let _ = writeln!(out, "  greeting: {g}");
    }
    let ext: Vec<String> = info
        .extensions
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k} {v}")
            }
        })
        .collect();
    let _ = writeln!(out, "  EHLO: {}", ext.join(", "));
    match (&info.tls_version, &info.tls_cipher) {
        (Some(v), Some(cs)) => {
            let trust = if s.fingerprint.is_some() {
                "the configured tls_fingerprint".to_string()
            } else if let Some(ca) = &s.ca_file {
                format!("tls_ca_file {}", ca.display())
            } else {
                "the system's trusted CAs".to_string()
            };
            let _ = writeln!(
                out,
                "  TLS: {v}, {cs}; certificate verified against {trust}"
            );
            for (i, der) in info.peer_certificates.iter().enumerate() {
                let fp = transport::format_fingerprint(&transport::ring_sha256(der));
                let role = if i == 0 { "server" } else { "chain" };
                let _ = writeln!(out, "    {role} certificate {i}: {fp}");
            }
        }
        _ => {
            let _ = writeln!(out, "  TLS: none (allowed only to loopback)");
        }
    }
    let mut secret = || obtain_secret_forced(env, a, false);
    if let Err(e) = session.authenticate(&mut secret) {
        let _ = writeln!(out, "  login: FAILED: {}", e.detail);
        return exit_for(&e);
    }
    match &session.info().authenticated_as {
        Some(u) => {
            let _ = writeln!(out, "  login: accepted as {u}");
        }
        None => {
            let _ = writeln!(out, "  login: not configured (no user)");
        }
    }
    if let Some(to) = &c.send_test {
        let msgid = message_id(env.now, &env.hostname);
        let text = format!(
            "From: mailhop <{from}>\r\nTo: <{to}>\r\nSubject: mailhop test from {host}\r\n\
             Date: {date}\r\nMessage-ID: {msgid}\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n\
             This is a test message sent by `mailhop check` on {host}\r\n\
             through account {name} ({smarthost}).\r\n",
            from = a.from,
            host = env.hostname,
            date = rfc5322_date(env.now),
            name = a.name,
            smarthost = s.host,
        );
        let rcpts = vec![to.clone()];
        let dsn = transport::Dsn::default();
        let envelope = transport::Envelope {
            sender: &a.from,
            recipients: &rcpts,
            size: text.len() as u64,
            eight_bit: false,
            dsn: &dsn,
        };
        let mut body = text.as_bytes();
        match session.send(&envelope, &mut body) {
            Ok(o) => {
                let reply = o.reply.map(|r| r.one_line()).unwrap_or_default();
                let _ = writeln!(out, "  test message: accepted for {to}: {reply}");
            }
            Err(e) => {
                let _ = writeln!(out, "  test message: FAILED: {}", e.detail);
                return exit_for(&e);
            }
        }
    }
    session.quit();
    Exit::Ok
}

/// The runner's view of the smarthosts: connects and logs in per account.
struct SmtpRelay<'a> {
    env: &'a Env,
}

impl crate::deliver::Relay for SmtpRelay<'_> {
    fn connect(
        &mut self,
        account: &str,
    ) -> Result<Box<dyn crate::deliver::Connection>, transport::Error> {
        let a = self
            .env
            .config
            .account_named(account)
            .ok_or_else(|| transport::Error {
                stage: transport::Stage::Connect,
                kind: transport::Kind::Config,
                detail: format!(
                    "the message was queued for account \"{account}\", which is no longer in {}",
                    config_name(self.env)
                ),
            })?;
        Ok(Box::new(connect_and_login(self.env, a)?))
    }

    fn account_for(&self, sender: &str) -> Option<String> {
        self.env.config.account_for(sender).map(|a| a.name.clone())
    }
}

/// Whether the invoking user may see and manage every item: root, and the
/// dedicated `mailhop` user the packaged runner runs as.
fn sees_all(env: &Env) -> bool {
    env.uid == 0 || env.user == "mailhop"
}

fn queue_failure(e: queue::QueueError) -> Failure {
    let code = match &e {
        queue::QueueError::NotFound(_) | queue::QueueError::BadId(_) => Exit::Usage,
        queue::QueueError::Busy(_) => Exit::TempFail,
        queue::QueueError::Corrupt { .. } => Exit::DataErr,
        queue::QueueError::Io { error, .. } => exit::from_io(error.kind()),
    };
    Failure::new(code, e.to_string())
}

/// `mailq`, `sendmail -q` and `mailhop queue …`.
fn queue_cmd(env: &Env, action: &cli::QueueAction) -> Result<Exit, Failure> {
    use cli::QueueAction as A;
    let spool = spool_for(env).ok_or_else(|| {
        Failure::new(
            Exit::Config,
            "no queue directory: set [queue] dir, or HOME/XDG_STATE_HOME for the per-user queue",
        )
    })?;
    let mine = |m: &queue::Meta| sees_all(env) || m.uid == env.uid;
    match action {
        A::List { json } => {
            let (items, damaged) = spool.list().map_err(queue_failure)?;
            let items: Vec<queue::Meta> = items.into_iter().filter(|m| mine(m)).collect();
            let failed: Vec<queue::Meta> = spool
                .list_failed()
                .into_iter()
                .filter(|m| mine(m))
                .collect();
            for d in &damaged {
                eprintln!("mailhop: {d}");
            }
            if *json {
                println!("{}", queue_json(&spool, &items, &failed));
            } else {
                print!("{}", mailq_text(&spool, &items, &failed));
            }
            // Items that could not be read are not "an empty queue".
            if damaged.is_empty() {
                Ok(Exit::Ok)
            } else {
                eprintln!(
                    "mailhop: {} queued item(s) could not be read (see above); the listing is incomplete",
                    damaged.len()
                );
                Ok(Exit::IoErr)
            }
        }
        A::Show { id, envelope } => {
            let (meta, area) = spool.find(id).map_err(queue_failure)?;
            if !mine(&meta) {
                return Err(queue_failure(queue::QueueError::NotFound(id.clone())));
            }
            let mut out = io::stdout().lock();
            if *envelope {
                let text = String::from_utf8_lossy(&meta.to_bytes()).into_owned();
                let _ = writeln!(out, "{}", text.split("\n\n").next().unwrap_or(""));
            } else {
                let mut data = spool.open_data(id, area).map_err(queue_failure)?;
                let _ = out.write_all(&meta.header);
                let _ = out.write_all(b"\r\n");
                let _ = io::copy(&mut data, &mut out);
            }
            Ok(Exit::Ok)
        }
        A::Run | A::Flush { .. } => {
            let (force, only) = match action {
                A::Flush { ids } if !ids.is_empty() => (true, Some(ids.clone())),
                A::Flush { .. } => (true, None),
                _ => (false, None),
            };
            if let Some(ids) = &only
                && let Some(bad) = ids.iter().find(|i| !queue::valid_id(i))
            {
                return Err(queue_failure(queue::QueueError::BadId(bad.clone())));
            }
            let opts = crate::deliver::RunOptions {
                now: env.now,
                force,
                only,
                max_age: env.config.queue.max_age,
                bounce_to: env.config.queue.bounce_to.clone(),
                hostname: env.hostname.clone(),
                uid: (!sees_all(env)).then_some(env.uid),
            };
            let mut relay = SmtpRelay { env };
            let report = crate::deliver::run(&spool, &mut relay, &opts).map_err(queue_failure)?;
            for line in &report.lines {
                log_line(env, Severity::Info, &format!("queue: {}", log::field(line)));
                if env.verbose > 0 {
                    eprintln!("mailhop: {line}");
                }
            }
            Ok(Exit::Ok)
        }
        A::Delete(sel) | A::Hold(sel) | A::Release(sel) => {
            let ids: Vec<String> = if sel.all {
                let queued = spool.list().map_err(queue_failure)?.0;
                // delete --all empties failed/ too; hold and release
                // concern only what the runner could deliver.
                let failed = match action {
                    A::Delete(_) => spool.list_failed(),
                    _ => Vec::new(),
                };
                queued
                    .into_iter()
                    .chain(failed)
                    .filter(|m| mine(m))
                    .map(|m| m.id)
                    .collect()
            } else {
                sel.ids.clone()
            };
            let mut status = Exit::Ok;
            for id in ids {
                let result = manage_item(&spool, &id, action, &mine);
                match result {
                    Ok(what) => {
                        println!("mailhop: {id}: {what}");
                        log_line(
                            env,
                            Severity::Info,
                            &format!("queue: {id}: {what} by {}", log::field(&env.user)),
                        );
                    }
                    Err(f) => {
                        eprintln!("mailhop: {}", f.message);
                        status = f.exit;
                    }
                }
            }
            Ok(status)
        }
    }
}

/// One id of `queue delete|hold|release`: what was done, for the report.
fn manage_item(
    spool: &queue::Spool,
    id: &str,
    action: &cli::QueueAction,
    mine: &dyn Fn(&queue::Meta) -> bool,
) -> Result<&'static str, Failure> {
    use cli::QueueAction as A;
    let not_found = || queue_failure(queue::QueueError::NotFound(id.to_string()));
    let mut c = match spool.claim(id) {
        Ok(c) => c,
        Err(queue::QueueError::NotFound(_)) => {
            // Not in the queue: it may be in failed/, where only delete
            // applies (nothing delivers from there).
            match spool.find(id) {
                Ok((m, queue::Area::Failed)) if mine(&m) => {}
                _ => return Err(not_found()),
            }
            return match action {
                A::Delete(_) => spool
                    .remove_failed(id)
                    .map(|()| "deleted from failed/")
                    .map_err(queue_failure),
                _ => Err(Failure::new(
                    Exit::Usage,
                    format!(
                        "{id} is in failed/ (a message with the null sender that could not be \
                         delivered): it can be shown or deleted, not held or released"
                    ),
                )),
            };
        }
        Err(e) => return Err(queue_failure(e)),
    };
    if !mine(&c.meta) {
        return Err(not_found());
    }
    let done = match action {
        A::Delete(_) => spool.remove(c).map(|()| "deleted"),
        A::Hold(_) => {
            c.meta.hold = true;
            spool.update(&c).map(|()| "held")
        }
        _ => {
            c.meta.hold = false;
            c.meta.next_attempt = 0;
            spool.update(&c).map(|()| "released")
        }
    };
    done.map_err(queue_failure)
}

fn arrival_text(secs: u64) -> String {
    let ts = jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.to_zoned(local_timezone())
        .strftime("%a %b %e %H:%M:%S")
        .to_string()
}

/// The listing in Postfix's mailq layout: id (`!` when held), size,
/// arrival, sender; then each undelivered recipient under its last error.
fn mailq_text(spool: &queue::Spool, items: &[queue::Meta], failed: &[queue::Meta]) -> String {
    if items.is_empty() && failed.is_empty() {
        return "Mail queue is empty\n".to_string();
    }
    let mut out = format!(
        "{:<31} {:>8} {:<20}  {}\n",
        "-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------"
    );
    let mut total = 0u64;
    let mut n = 0;
    let indent = " ".repeat(63);
    let all = items
        .iter()
        .map(|m| (m, false))
        .chain(failed.iter().map(|m| (m, true)));
    for (m, in_failed) in all {
        let area = if in_failed {
            queue::Area::Failed
        } else {
            queue::Area::Queue
        };
        let size = spool.size(m, area);
        total += size;
        n += 1;
        let mark = if in_failed {
            "#"
        } else if m.hold {
            "!"
        } else {
            " "
        };
        let sender = if m.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &m.sender
        };
        out.push_str(&format!(
            "{:<30}{mark} {size:>8} {:<20}  {sender}\n",
            m.id,
            arrival_text(m.arrival)
        ));
        let mut last: Option<&str> = None;
        for r in m
            .recipients
            .iter()
            .filter(|r| r.state != queue::RcptState::Done)
        {
            let err = r.last_error.as_deref().or(m.last_error.as_deref());
            if err != last
                && let Some(e) = err
            {
                out.push_str(&format!("{indent}({})\n", e.replace(['\r', '\n'], " ")));
            }
            last = err;
            let failed_mark = if matches!(
                r.state,
                queue::RcptState::Failed | queue::RcptState::Bounced
            ) {
                " (failed)"
            } else {
                ""
            };
            out.push_str(&format!("{indent}{}{failed_mark}\n", r.address));
        }
        out.push('\n');
    }
    if !failed.is_empty() {
        out.push_str(
            "(# marks messages whose bounce could not be delivered; they are kept in failed/)\n",
        );
    }
    out.push_str(&format!(
        "-- {} Kbytes in {n} Request{}.\n",
        total.div_ceil(1024),
        if n == 1 { "" } else { "s" }
    ));
    out
}

fn queue_json(spool: &queue::Spool, items: &[queue::Meta], failed: &[queue::Meta]) -> String {
    let one = |m: &queue::Meta, area: queue::Area| {
        let rcpts: Vec<serde_json::Value> = m
            .recipients
            .iter()
            .map(|r| {
                serde_json::json!({
                    "address": r.address,
                    "state": match r.state {
                        queue::RcptState::Pending => "pending",
                        queue::RcptState::Done => "done",
                        queue::RcptState::Failed => "failed",
                        queue::RcptState::Bounced => "bounced",
                    },
                    "last_error": r.last_error,
                })
            })
            .collect();
        serde_json::json!({
            "id": m.id,
            "area": match area {
                queue::Area::Queue => "queue",
                queue::Area::Failed => "failed",
            },
            "size": spool.size(m, area),
            "arrival": m.arrival,
            "sender": m.sender,
            "account": m.account,
            "hold": m.hold,
            "attempts": m.attempts,
            "next_attempt": m.next_attempt,
            "last_error": m.last_error,
            "recipients": rcpts,
        })
    };
    let all: Vec<serde_json::Value> = items
        .iter()
        .map(|m| one(m, queue::Area::Queue))
        .chain(failed.iter().map(|m| one(m, queue::Area::Failed)))
        .collect();
    serde_json::Value::Array(all).to_string()
}

fn dkim_exit(e: &crate::dkim::DkimError) -> Exit {
    use crate::dkim::DkimError as D;
    match e {
        D::InvalidDomain { .. }
        | D::InvalidSelector { .. }
        | D::InvalidHeaderName { .. }
        | D::KeygenBits { .. } => Exit::Usage,
        D::KeyExists { .. } | D::KeyWrite { .. } => Exit::CantCreat,
        D::KeyOpen { error, .. } | D::KeyRead { error, .. }
            if error.kind() == io::ErrorKind::PermissionDenied =>
        {
            Exit::NoPerm
        }
        D::KeyOwner { .. }
        | D::KeyWorldAccessible { .. }
        | D::KeyGroupAccessible { .. }
        | D::KeySymlink { .. } => Exit::NoPerm,
        D::Resolver { .. } => Exit::TempFail,
        D::Output { .. } => Exit::IoErr,
        _ => Exit::Config,
    }
}

/// `mailhop dkim check`: the configured entries (or one), against DNS.
fn dkim_check(
    env: &Env,
    domain: Option<String>,
    selector: Option<String>,
    nameserver: Option<std::net::SocketAddr>,
) -> Result<Exit, Failure> {
    let entries: Vec<crate::dkim::Settings> = env
        .config
        .dkim
        .iter()
        .filter(|s| {
            domain
                .as_deref()
                .is_none_or(|d| s.domain.eq_ignore_ascii_case(d))
        })
        .filter(|s| {
            selector
                .as_deref()
                .is_none_or(|x| s.selector.eq_ignore_ascii_case(x))
        })
        .cloned()
        .collect();
    if entries.is_empty() && (domain.is_some() || selector.is_some()) {
        return Err(Failure::new(
            Exit::Config,
            format!(
                "no [[dkim]] entry in {} matches {}{}",
                config_name(env),
                domain
                    .as_deref()
                    .map(|d| format!("--domain {d} "))
                    .unwrap_or_default(),
                selector
                    .as_deref()
                    .map(|s| format!("--selector {s}"))
                    .unwrap_or_default()
            ),
        ));
    }
    let mut out = io::stdout().lock();
    match crate::dkim::check(&entries, nameserver, env.mailhop_gid(), env.euid, &mut out) {
        Ok(crate::dkim::Verdict::Good) => Ok(Exit::Ok),
        Ok(crate::dkim::Verdict::Unknown) => Ok(Exit::TempFail),
        Ok(crate::dkim::Verdict::Bad) => Ok(Exit::Unavailable),
        Err(e) => Err(Failure::new(dkim_exit(&e), e.to_string())),
    }
}

/// Signs the finished message with every `[[dkim]]` entry for the From
/// domain, prepending one DKIM-Signature field each (RSA and Ed25519 dual
/// signing is two entries). Returns the new header block.
fn dkim_sign(
    env: &Env,
    from_address: Option<&str>,
    header: &[u8],
    body: &mut File,
) -> Result<Vec<u8>, Failure> {
    let Some(domain) = from_address
        .and_then(|a| a.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase())
    else {
        return Ok(header.to_vec());
    };
    let now = env
        .now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut signatures: Vec<u8> = Vec::new();
    for s in env
        .config
        .dkim
        .iter()
        .filter(|s| crate::dkim::matches_domain(&s.domain, &domain))
    {
        let fail = |e: crate::dkim::DkimError| {
            Failure::new(
                dkim_exit(&e),
                format!(
                    "DKIM signing for {domain} (selector {}) failed: {e}",
                    s.selector
                ),
            )
        };
        let (key, warnings) =
            crate::dkim::load_key(&s.key_file, s.algorithm, env.mailhop_gid(), env.euid)
                .map_err(fail)?;
        // Logged every time, on standard error only with -v: callers such
        // as cron mail whatever a command prints, so a warning there would
        // turn every message into two.
        for w in warnings {
            log_line(env, Severity::Warning, &format!("dkim: {}", log::field(&w)));
            if env.verbose > 0 {
                eprintln!("mailhop: {w}");
            }
        }
        body.seek(SeekFrom::Start(0))
            .map_err(|e| Failure::new(Exit::IoErr, format!("cannot read the spooled body: {e}")))?;
        let sig = crate::dkim::sign(s, &key, header, body, now).map_err(fail)?;
        if env.verbose > 0 {
            eprintln!(
                "mailhop: signed with DKIM d={} s={} a={}",
                s.signing_domain(),
                s.selector,
                s.algorithm.name()
            );
        }
        // Each new signature goes on top, as a chain of signers would add
        // them; verifiers do not care about the order.
        let mut next = sig;
        next.extend_from_slice(&signatures);
        signatures = next;
    }
    let mut out = signatures;
    out.extend_from_slice(header);
    Ok(out)
}

/// `sendmail -qIid`, `-qRrecipient`, `-qSsender`: delivers now the items
/// whose id, a recipient or the sender contains `value` (case-insensitive).
fn queue_select_flush(env: &Env, kind: &str, value: &str) -> Result<Exit, Failure> {
    let spool = spool_for(env).ok_or_else(|| Failure::new(Exit::Config, "no queue directory"))?;
    let needle = value.to_ascii_lowercase();
    let (items, _) = spool.list().map_err(queue_failure)?;
    let ids: Vec<String> = items
        .into_iter()
        .filter(|m| sees_all(env) || m.uid == env.uid)
        .filter(|m| match kind {
            "I" => m.id.to_ascii_lowercase().contains(&needle),
            "R" => m
                .recipients
                .iter()
                .any(|r| r.address.to_ascii_lowercase().contains(&needle)),
            _ => m.sender.to_ascii_lowercase().contains(&needle),
        })
        .map(|m| m.id)
        .collect();
    if ids.is_empty() {
        return Ok(Exit::Ok);
    }
    queue_cmd(env, &cli::QueueAction::Flush { ids })
}

/// `mailhop import ssmtp|msmtp`: prints the converted configuration on
/// stdout; warnings and the commands that create password files go to
/// stderr, so `mailhop import ssmtp > /etc/mailhop.toml` does the right
/// thing. Secrets are never printed.
fn import(from: &cli::ImportFrom) -> Exit {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| {
            eprintln!("mailhop: cannot read {}: {e}", p.display());
            exit::from_io(e.kind()).max_config()
        })
    };
    let result = match from {
        cli::ImportFrom::Ssmtp { conf, revaliases } => {
            let text = match read(conf) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let rev = std::fs::read_to_string(revaliases).ok();
            let rev_name = revaliases.display().to_string();
            crate::import::from_ssmtp(
                &text,
                &conf.display().to_string(),
                rev.as_deref().map(|r| (r, rev_name.as_str())),
            )
        }
        cli::ImportFrom::Msmtp { file } => {
            let path = match file {
                Some(f) => f.clone(),
                None => {
                    let home = nix::unistd::User::from_uid(nix::unistd::getuid())
                        .ok()
                        .flatten()
                        .map(|u| u.dir);
                    let candidates: Vec<PathBuf> = home
                        .iter()
                        .flat_map(|h| [h.join(".msmtprc"), h.join(".config/msmtp/config")])
                        .chain([PathBuf::from("/etc/msmtprc")])
                        .collect();
                    match candidates.into_iter().find(|p| p.exists()) {
                        Some(p) => p,
                        None => {
                            eprintln!(
                                "mailhop: no msmtp configuration found; name the file: mailhop import msmtp FILE"
                            );
                            return Exit::NoInput;
                        }
                    }
                }
            };
            let text = match read(&path) {
                Ok(t) => t,
                Err(code) => return code,
            };
            crate::import::from_msmtp(&text, &path.display().to_string())
        }
    };
    match result {
        Ok(imported) => {
            print!("{}", imported.toml);
            for w in &imported.warnings {
                eprintln!("mailhop: warning: {w}");
            }
            for p in &imported.password_files {
                eprintln!(
                    "mailhop: account {}: create its password file {} with:\n    {}",
                    p.account, p.path, p.command_hint
                );
            }
            eprintln!(
                "mailhop: then check the result with `mailhop check --offline -C FILE`, and the smarthost with `mailhop check -C FILE`"
            );
            Exit::Ok
        }
        Err(e) => {
            eprintln!("mailhop: {e}");
            Exit::DataErr
        }
    }
}

/// The account a command names (`--account`, `oauth login`, `password`).
fn named_account<'a>(env: &'a Env, name: &str) -> Result<&'a config::Account, Failure> {
    env.config.account_named(name).ok_or_else(|| {
        Failure::new(
            Exit::Config,
            format!("no [[account]] is named \"{name}\" in {}", config_name(env)),
        )
    })
}

/// `mailhop oauth login ACCOUNT`: obtains the first refresh token
/// interactively (device code for Microsoft, a browser and a loopback
/// redirect with PKCE for Google) and stores it in the token file.
fn oauth_login(env: &Env, account: &str) -> Result<Exit, Failure> {
    let a = named_account(env, account)?;
    let o = a.oauth.as_ref().ok_or_else(|| {
        Failure::new(
            Exit::Config,
            format!(
                "account \"{account}\" has no [account.oauth] section; see OAUTH in mailhop.toml(5)"
            ),
        )
    })?;
    let now = env
        .now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut out = io::stdout().lock();
    match crate::oauth::login(o, &mut out, now) {
        Ok(()) => Ok(Exit::Ok),
        Err(e) => {
            // A flow without a login (client credentials, token_command)
            // is a configuration matter; a refused sign-in is a permission
            // one; an unreachable endpoint is worth retrying.
            let code = if e.is_transient() {
                Exit::TempFail
            } else if matches!(e, crate::oauth::OAuthError::Config(_)) {
                Exit::Config
            } else {
                Exit::NoPerm
            };
            Err(Failure::new(code, e.to_string()))
        }
    }
}

/// `mailhop password set|delete ACCOUNT`: the account's password in the
/// desktop keyring. The subcommand exists in every build (one man page,
/// one set of completions); without the `keyring` feature it explains.
#[cfg(not(feature = "keyring"))]
fn password_cmd(_action: cli::PasswordAction) -> Exit {
    eprintln!(
        "mailhop: this build has no keyring support (it was built without the `keyring` \
         cargo feature); set `password_command` or `password_file` for the account instead"
    );
    Exit::Usage
}

#[cfg(feature = "keyring")]
fn password_cmd(action: cli::PasswordAction) -> Exit {
    let (account, config, set) = match action {
        cli::PasswordAction::Set { account, config } => (account, config, true),
        cli::PasswordAction::Delete { account, config } => (account, config, false),
    };
    let args = SendArgs {
        common: cli::Common {
            config,
            ..cli::Common::default()
        },
        ..SendArgs::default()
    };
    with_env(&args, |env, _| password_keyring(env, &account, set))
}

#[cfg(feature = "keyring")]
fn password_keyring(env: &Env, account: &str, set: bool) -> Result<Exit, Failure> {
    use crate::credentials::{CredentialError, keyring_store};
    let a = named_account(env, account)?;
    if env.privileged {
        // Sends with this configuration never read the keyring (see
        // obtain_password), so storing would only mislead.
        return Err(Failure::new(
            Exit::NoPerm,
            "a setgid mailhop with the system configuration does not use the keyring \
             (its D-Bus session would be the caller's); use password_file, or your own \
             configuration (-C FILE or ~/.config/mailhop/config.toml)",
        ));
    }
    let shadowed = if a.oauth.is_some() {
        Some("[account.oauth]")
    } else if a.password_command.is_some() {
        Some("password_command")
    } else if a.password_file.is_some() {
        Some("password_file")
    } else {
        None
    };
    if let Some(key) = shadowed {
        eprintln!(
            "mailhop: note: account {account} has {key}, which is used instead of the keyring"
        );
    }
    let fail = |e: CredentialError| {
        let exit = match e {
            CredentialError::KeyringNoEntry { .. } => Exit::NoInput,
            CredentialError::KeyringUnavailable { .. } | CredentialError::KeyringTimeout { .. } => {
                Exit::Unavailable
            }
            _ => Exit::Software,
        };
        Failure::new(exit, e.to_string())
    };
    let service = keyring_store::SERVICE;
    if set {
        let secret = read_new_password(account)?;
        keyring_store::set(service, account, &secret).map_err(fail)?;
        eprintln!("mailhop: stored the password for account {account} in the keyring");
    } else {
        keyring_store::delete(service, account).map_err(fail)?;
        eprintln!("mailhop: removed the password for account {account} from the keyring");
    }
    Ok(Exit::Ok)
}

/// Reads one line from standard input (one trailing newline removed); on
/// a terminal, prompts on stderr with echo off.
#[cfg(feature = "keyring")]
fn read_new_password(account: &str) -> Result<crate::credentials::Secret, Failure> {
    use nix::sys::termios::{self, LocalFlags, SetArg};
    use std::os::fd::AsFd;
    use zeroize::Zeroizing;

    let stdin = io::stdin();
    let fd = stdin.as_fd();
    let io_fail =
        |e: io::Error| Failure::new(Exit::IoErr, format!("cannot read the password: {e}"));
    // On a terminal: echo off (newline still echoed), restored on every path.
    let saved = if nix::unistd::isatty(fd).unwrap_or(false) {
        let saved = termios::tcgetattr(fd).map_err(|e| io_fail(e.into()))?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        eprint!("Password for account {account}: ");
        termios::tcsetattr(fd, SetArg::TCSAFLUSH, &quiet).map_err(|e| io_fail(e.into()))?;
        Some(saved)
    } else {
        None
    };
    // Unbuffered, byte by byte, into one zeroised buffer: no copy of the
    // password stays behind in a reader's buffer.
    let mut file = File::from(fd.try_clone_to_owned().map_err(io_fail)?);
    let max = crate::credentials::MAX_SECRET_LEN;
    let mut bytes = Zeroizing::new(Vec::with_capacity(max + 1));
    let mut byte = [0u8; 1];
    let too_long = || {
        Failure::new(
            Exit::DataErr,
            format!(
                "the password must be one line of at most {} KiB",
                max / 1024
            ),
        )
    };
    let result = loop {
        match file.read(&mut byte) {
            Ok(0) => break Ok(()),
            Ok(_) if byte[0] == b'\n' => break Ok(()),
            Ok(_) if bytes.len() >= max => break Err(too_long()),
            Ok(_) => bytes.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(io_fail(e)),
        }
    };
    byte.fill(0);
    if let Some(saved) = &saved {
        let _ = termios::tcsetattr(fd, SetArg::TCSANOW, saved);
    }
    result?;
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(Failure::new(
            Exit::DataErr,
            "no password given (standard input was empty)",
        ));
    }
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(s) => Ok(crate::credentials::Secret::new(s)),
        Err(e) => {
            zeroize::Zeroize::zeroize(&mut e.into_bytes());
            Err(Failure::new(Exit::DataErr, "the password is not UTF-8"))
        }
    }
}
