use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cli::SendArgs;
use crate::config::{self, Config};
use crate::exit::{self, Exit};
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
    /// The process's ids once the configuration is chosen (the group may
    /// have been given up for it); `ids()` adds the `mailhop` group.
    pub(super) process_ids: crate::credentials::Ids,
    /// Base for the per-user queue: $XDG_STATE_HOME, or ~/.local/state
    /// from the password database when the environment is not ours.
    pub(super) state_dir: Option<PathBuf>,
    pub(super) verbose: u8,
    pub(super) tag: String,
    pub(super) log_file: Option<PathBuf>,
    pub(super) now: SystemTime,
}

/// Who runs us, from the kernel and the password database, gathered once.
#[derive(Debug, Clone)]
pub(super) struct Identity {
    /// The real uid: who is asking.
    pub(super) uid: u32,
    pub(super) euid: u32,
    pub(super) user: String,
    pub(super) gecos_name: Option<String>,
    /// From the password database, never $HOME: in a set-group-ID process
    /// the environment is the caller's.
    pub(super) home: Option<PathBuf>,
}

impl Identity {
    pub(super) fn current() -> Identity {
        let uid = nix::unistd::getuid();
        let pw = nix::unistd::User::from_uid(uid).ok().flatten();
        let gecos_name = pw.as_ref().and_then(|u| {
            let g = u.gecos.to_string_lossy();
            let first = g.split(',').next().unwrap_or("").trim().to_string();
            (!first.is_empty()).then_some(first)
        });
        Identity {
            uid: uid.as_raw(),
            euid: nix::unistd::geteuid().as_raw(),
            user: pw
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_else(|| format!("uid{}", uid.as_raw())),
            gecos_name,
            home: pw.map(|u| u.dir),
        }
    }
}

/// Whether this process still holds an identity it was not started with
/// (the set-group-ID `mailhop` install).
pub(super) fn elevated() -> bool {
    nix::unistd::getuid() != nix::unistd::geteuid()
        || nix::unistd::getgid() != nix::unistd::getegid()
}

/// The configuration this invocation reads: its path (for messages) and
/// text. `None`: no file, the built-in defaults.
struct ConfigText {
    path: PathBuf,
    text: String,
}

/// Chooses and reads the configuration. The choice between the user's file
/// and the system's is made from one open(2) of the user's file, made with
/// the caller's own group: there is no test of a path that a later open
/// could see differently (a swapped symlink), and the caller cannot make us
/// open, with the mailhop group, a file it could not open itself. When the
/// user's file is used, the group is given up for good before its first
/// byte is read, so nothing it names is opened with the group either.
fn read_config(
    args: &SendArgs,
    user_config_dir: Option<&Path>,
) -> Result<Option<ConfigText>, Failure> {
    let read = |path: &Path, file: io::Result<File>| {
        let mut text = String::new();
        file.and_then(|mut f| f.read_to_string(&mut text))
            .map(|_| ConfigText {
                path: path.to_path_buf(),
                text,
            })
            .map_err(|e| {
                Failure::new(
                    exit::from_io(e.kind()).max_config(),
                    format!(
                        "{}: cannot read the configuration file: {e}",
                        path.display()
                    ),
                )
            })
    };
    if let Some(path) = args.common.config.as_deref() {
        // -C is the caller's: the group was given up already.
        return read(path, File::open(path)).map(Some);
    }
    if let Some(dir) = user_config_dir {
        let path = dir.join("mailhop").join("config.toml");
        // Not there, or not the caller's to read (a link to a file of the
        // group's, a $HOME that is someone else's): not the user's file.
        match as_caller(|| File::open(&path)).and_then(|opened| opened) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::NotADirectory
                        | io::ErrorKind::PermissionDenied
                ) => {}
            opened => {
                give_up_group("your own configuration file", args.common.verbose)?;
                return read(&path, opened).map(Some);
            }
        }
    }
    let system = Path::new(config::SYSTEM_FILE);
    match File::open(system) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        opened => read(system, opened).map(Some),
    }
}

/// Gives up the elevated group for good, if it is still held, because of
/// `why` (something the caller chose).
fn give_up_group(why: &str, verbose: u8) -> Result<(), Failure> {
    if !elevated() {
        return Ok(());
    }
    drop_privileges().map_err(|e| {
        Failure::new(
            Exit::OsErr,
            format!("cannot drop the mailhop group for {why}: {e}"),
        )
    })?;
    if verbose > 0 {
        errln!(
            "mailhop: {why} given: running with your own rights and your own queue, \
             not the system's"
        );
    }
    Ok(())
}

/// Runs `f` with the caller's own effective ids, then takes the elevated
/// ones back: for files the caller names or owns (~/Maildir,
/// ~/dead.letter, the user's configuration), which must be opened with no
/// more rights than the caller has. Outside a set-id process it just runs
/// `f`. If the ids cannot be switched, `f` does not run and the error says
/// why.
pub(super) fn as_caller<T>(f: impl FnOnce() -> T) -> io::Result<T> {
    use nix::unistd::{getegid, geteuid, getgid, getuid, setegid, seteuid};
    let (egid, euid) = (getegid(), geteuid());
    if egid == getgid() && euid == getuid() {
        return Ok(f());
    }
    setegid(getgid()).map_err(io::Error::from)?;
    if let Err(e) = seteuid(getuid()) {
        let _ = setegid(egid);
        return Err(e.into());
    }
    let result = f();
    // Taking the ids back cannot fail for ids we were started with; should
    // it, we go on with the caller's, which is the safe direction.
    let _ = seteuid(euid);
    let _ = setegid(egid);
    Ok(result)
}

/// Runs `f` as `user` (effective uid and gid, and no supplementary group
/// but theirs), then becomes root again: for root's deliveries into a
/// user's home directory, which the user controls (a file in ~/Maildir/tmp
/// can be swapped for a symbolic link while it is written). As the user,
/// whatever is created is theirs without a chown, and a link can lead only
/// where the user could write anyway, as with Postfix's local(8). Only for
/// a process whose effective uid is root; if the ids cannot be switched,
/// `f` does not run.
pub(super) fn as_user<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> io::Result<T> {
    use nix::unistd::{Gid, Uid, getegid, geteuid, getgroups, setegid, seteuid, setgroups};
    let (egid, euid) = (getegid(), geteuid());
    if !euid.is_root() {
        return Err(io::Error::from(io::ErrorKind::PermissionDenied));
    }
    let groups = getgroups().map_err(io::Error::from)?;
    let restore = || {
        let _ = seteuid(euid);
        let _ = setegid(egid);
        let _ = setgroups(&groups);
    };
    let switched = setgroups(&[Gid::from_raw(gid)])
        .and_then(|()| setegid(Gid::from_raw(gid)))
        .and_then(|()| seteuid(Uid::from_raw(uid)));
    if let Err(e) = switched {
        restore();
        return Err(e.into());
    }
    let result = f();
    restore();
    Ok(result)
}

pub(super) fn gather_env(args: &SendArgs) -> Result<Env, Failure> {
    let id = Identity::current();
    // The setgid install: see SECURITY in mailhop(8). With the elevated
    // group the environment is the caller's, not ours: the user's config
    // directory comes from the password database.
    if elevated() {
        let why = if args.common.config.is_some() {
            Some("-C")
        } else if args.common.log_file.is_some() {
            Some("-X")
        } else if std::env::var_os("MAILHOP_PASSWORD").is_some() {
            Some("MAILHOP_PASSWORD")
        } else {
            None
        };
        if let Some(why) = why {
            give_up_group(why, args.common.verbose)?;
        }
    }
    let setid = elevated();
    let user_config_dir = if setid {
        id.home.as_ref().map(|h| h.join(".config"))
    } else {
        dirs::config_dir()
    };
    let config = match read_config(args, user_config_dir.as_deref())? {
        Some(c) => config::parse(&c.path, &c.text).map_err(|e| {
            Failure::new(
                Exit::Config,
                format!(
                    "{e}\n(see mailhop.toml(5); check the file with `mailhop check --offline -C {}`)",
                    c.path.display()
                ),
            )
        })?,
        None => Config::defaults(),
    };
    // Still elevated only with the system's configuration.
    let privileged = elevated();
    let process_ids = crate::credentials::Ids::current();
    let Identity {
        uid,
        euid,
        user,
        gecos_name,
        home,
    } = id;
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
        uid,
        privileged,
        // Looked up only when a secret or key file is checked: on a
        // machine without the group, NSS falls through to slow modules.
        mailhop_gid: std::cell::OnceCell::new(),
        process_ids,
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
    /// Whether the configuration is the system's file, shared by every
    /// user of the machine (not -C, not the user's own).
    pub(super) fn uses_system_config(&self) -> bool {
        self.config.source.as_deref() == Some(Path::new(config::SYSTEM_FILE))
    }

    /// The process's ids, for the code that checks secret files' owners
    /// and modes (oauth, credentials) rather than asking the kernel.
    pub(super) fn ids(&self) -> crate::credentials::Ids {
        crate::credentials::Ids {
            mailhop_gid: self.mailhop_gid(),
            ..self.process_ids
        }
    }

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
    log_tagged(env, &env.tag, severity, line);
}

/// A log line under `tag`, to syslog and the log file as configured. A
/// log file that cannot be written is said once per process, not once per
/// line: the caller's stderr is for what matters to it.
pub(super) fn log_tagged(env: &Env, tag: &str, severity: Severity, line: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SAID: AtomicBool = AtomicBool::new(false);
    if env.config.syslog {
        log::syslog(tag, severity, line);
    }
    if let Some(path) = &env.log_file {
        let ts = jiff::Timestamp::try_from(env.now)
            .map(|t| t.to_string())
            .unwrap_or_default();
        if let Err(e) = log::to_file(path, &ts, tag, line)
            && !SAID.swap(true, Ordering::Relaxed)
        {
            errln!("mailhop: cannot write log file {}: {e}", path.display());
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
