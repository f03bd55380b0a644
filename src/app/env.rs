use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cli::SendArgs;
use crate::config::{self, Config};
use crate::exit::Exit;
use crate::log::{self, Severity};
use crate::queue;

use super::failure::*;

/// Facts about where and as whom we run, gathered once.
#[derive(Debug)]
pub(super) struct Env {
    pub(super) config: Config,
    pub(super) hostname: String,
    /// Qualifying domain for bare names.
    pub(super) domain: String,
    /// Domains that mean "this host".
    pub(super) local_domains: Vec<String>,
    pub(super) user: String,
    pub(super) gecos_name: Option<String>,
    pub(super) home: Option<PathBuf>,
    pub(super) euid: u32,
    /// The real uid: who is asking.
    pub(super) uid: u32,
    /// Running setuid or setgid: the environment is the caller's, not ours.
    pub(super) privileged: bool,
    /// The `mailhop` group, if it exists (group-readable secrets).
    pub(super) mailhop_gid: std::cell::OnceCell<Option<u32>>,
    /// Base for the per-user queue: $XDG_STATE_HOME, or ~/.local/state
    /// from the password database when the environment is not ours.
    pub(super) state_dir: Option<PathBuf>,
    pub(super) verbose: u8,
    pub(super) tag: String,
    pub(super) log_file: Option<PathBuf>,
    pub(super) now: SystemTime,
}

pub(super) fn gather_env(args: &SendArgs) -> Result<Env, Failure> {
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
    pub(super) fn mailhop_gid(&self) -> Option<u32> {
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
pub(super) fn drop_privileges() -> nix::Result<()> {
    let gid = nix::unistd::getgid();
    nix::unistd::setresgid(gid, gid, gid)?;
    let uid = nix::unistd::getuid();
    nix::unistd::setresuid(uid, uid, uid)
}

/// The system's fully qualified name: gethostname(), and if that is a
/// short name, the matching FQDN from /etc/hosts. No DNS: that would put a
/// network round trip (and a failure mode) on every message.
pub(super) fn system_hostname() -> String {
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
pub(super) fn mailname() -> Option<String> {
    let s = std::fs::read_to_string("/etc/mailname").ok()?;
    let d = s
        .lines()
        .next()?
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!d.is_empty() && !d.contains(char::is_whitespace)).then_some(d)
}

pub(super) fn config_name(env: &Env) -> String {
    env.config.source.as_ref().map_or_else(
        || "the built-in defaults".to_string(),
        |p| p.display().to_string(),
    )
}

pub(super) fn log_line(env: &Env, severity: Severity, line: &str) {
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

/// The spool for this invocation: `[queue] dir`, else the system spool
/// when we may write it, else the per-user one. `None` if none is usable;
/// the message can then only be sent directly.
pub(super) fn spool_for(env: &Env) -> Option<queue::Spool> {
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

/// The account a command names (`--account`, `oauth login`, `password`).
pub(super) fn named_account<'a>(env: &'a Env, name: &str) -> Result<&'a config::Account, Failure> {
    env.config.account_named(name).ok_or_else(|| {
        Failure::new(
            Exit::Config,
            format!("no [[account]] is named \"{name}\" in {}", config_name(env)),
        )
    })
}
