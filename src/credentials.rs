//! Obtaining the secret (password or OAuth bearer token) for a smarthost
//! account from its configured source: a helper command
//! (`password_command`), a protected file (`password_file`), or the value
//! of the `MAILHOP_PASSWORD` environment variable as the app layer read it,
//! and, in builds with the `keyring` cargo feature, the desktop keyring
//! (Secret Service over D-Bus) as the last resort.
//!
//! The secret is held in a [`Secret`], which is zeroised on drop and never
//! shows its value in `Debug` output. Every buffer that may hold secret bytes
//! on the way there is zeroised too. Errors name the command (as configured)
//! or the file and say how to fix the problem, but never contain the
//! secret: a command's standard output is never shown, only an excerpt of
//! its standard error, which is where helpers put their diagnostics.
//!
//! A password file is opened without following a final symbolic link and
//! checked on the open descriptor (no race between check and read), because
//! in the setgid installation mailhop reads it with privileges the invoking
//! user may not have.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use zeroize::{Zeroize, Zeroizing};

/// The largest secret accepted, from a command's output or a file. Real
/// passwords and bearer tokens are far smaller; the bound keeps a runaway
/// helper (`yes`) from exhausting memory.
pub const MAX_SECRET_LEN: usize = 64 * 1024;

/// How much of a failing command's standard error the error message shows.
const STDERR_EXCERPT_CHARS: usize = 200;

/// How much standard error is kept to build that excerpt; the rest is read
/// and discarded so the helper never blocks on a full pipe.
const STDERR_KEEP_BYTES: usize = 4096;

/// How long to wait for a killed command to be reaped. SIGKILL makes this
/// immediate unless the process cannot be signalled (a setuid helper).
const KILL_GRACE: Duration = Duration::from_secs(5);

/// A secret string (password or token). Zeroised on drop; `Debug` prints
/// `Secret(***)`. There is deliberately no `Display` and no `Clone`: the
/// only way to the value is [`Secret::expose`], which is easy to audit.
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(Zeroizing::new(s))
    }

    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where a secret comes from. `Debug` is written by hand so that the
/// `Env` value is redacted.
#[derive(Clone, PartialEq, Eq)]
pub enum Source {
    /// `password_command`, run via `/bin/sh -c`, killed after `timeout`.
    Command { command: String, timeout: Duration },
    /// `password_file`: the secret is its first line.
    File(PathBuf),
    /// The value of `MAILHOP_PASSWORD`. The app layer passes it only when
    /// mailhop is not running setuid/setgid, where the environment belongs
    /// to an untrusted caller.
    Env(String),
    /// The desktop keyring (Secret Service), entry `service`/`account`.
    /// Tried last: it needs a D-Bus session, which cron and servers lack.
    #[cfg(feature = "keyring")]
    Keyring { service: String, account: String },
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Command { command, timeout } => f
                .debug_struct("Command")
                .field("command", command)
                .field("timeout", timeout)
                .finish(),
            Source::File(path) => f.debug_tuple("File").field(path).finish(),
            Source::Env(_) => f.write_str("Env(***)"),
            #[cfg(feature = "keyring")]
            Source::Keyring { service, account } => f
                .debug_struct("Keyring")
                .field("service", service)
                .field("account", account)
                .finish(),
        }
    }
}

/// The process's ids, read once by the caller (the app layer, when its
/// environment is gathered) and passed in: the library code takes them as
/// a parameter rather than asking the kernel, so what it decides follows
/// from what it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// The real uid: who is asking.
    pub uid: u32,
    pub euid: u32,
    /// The real gid.
    pub gid: u32,
    /// The effective gid: mailhop's own group in the setgid install.
    pub egid: u32,
    /// The `mailhop` group's gid, if the group exists.
    pub mailhop_gid: Option<u32>,
}

impl Ids {
    /// The ids of this process now, without the `mailhop` group: the
    /// caller adds it when it is needed (on a machine without the group,
    /// NSS falls through to slow modules). For the app layer, which builds
    /// the ids once, and for tests; not for the library code.
    pub fn current() -> Ids {
        Ids {
            uid: nix::unistd::getuid().as_raw(),
            euid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            egid: nix::unistd::getegid().as_raw(),
            mailhop_gid: None,
        }
    }

    /// Running set-group-ID: the environment is the caller's.
    pub fn setgid(&self) -> bool {
        self.egid != self.gid
    }

    /// Running set-user-ID or set-group-ID.
    pub fn setid(&self) -> bool {
        self.setgid() || self.euid != self.uid
    }
}

/// Who may own and read a password file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The gid of the `mailhop` group in the setgid installation: a file may
    /// be group-accessible only by exactly this group.
    pub allowed_group: Option<u32>,
    /// The effective uid mailhop runs as: the file must be owned by it or
    /// by root.
    pub euid: u32,
    /// A `password_command` runs with an empty environment and a fixed
    /// PATH: in the set-group-ID install the environment is the caller's,
    /// who must not choose which `cat` runs. (The shell gives up the
    /// elevated group itself, so the command runs with the caller's rights.)
    pub clean_env: bool,
}

/// What is wrong with the bytes a command printed or a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentProblem {
    Empty,
    NotUtf8,
    /// More than [`MAX_SECRET_LEN`] bytes.
    TooLarge,
}

/// Why no secret could be obtained. Never contains the secret: commands
/// appear as configured, with at most an excerpt of their standard error.
#[derive(Debug)]
pub enum CredentialError {
    /// No source is configured.
    NotConfigured,
    /// `/bin/sh` could not be started.
    CommandSpawn { command: String, error: io::Error },
    /// The command did not finish in time and was killed.
    CommandTimeout { command: String, timeout: Duration },
    /// The command exited unsuccessfully or was killed by a signal.
    CommandFailed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    /// Reading the command's output or waiting for it failed.
    CommandIo { command: String, error: io::Error },
    /// The command succeeded but its output is unusable.
    CommandOutput {
        command: String,
        problem: ContentProblem,
        stderr: String,
    },
    /// The password file could not be opened.
    FileOpen { path: PathBuf, error: io::Error },
    /// The password file is a symbolic link.
    FileSymlink { path: PathBuf },
    /// The password file is a directory, FIFO, device, ...
    FileNotRegular { path: PathBuf },
    /// The password file is owned by someone other than us or root.
    FileOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    /// The password file is accessible by other users.
    FileWorldAccessible {
        path: PathBuf,
        mode: u32,
        allowed_group: Option<u32>,
    },
    /// The password file is accessible by a group other than the allowed one.
    FileGroupAccessible {
        path: PathBuf,
        mode: u32,
        gid: u32,
        allowed_group: Option<u32>,
    },
    /// Reading the open password file failed.
    FileRead { path: PathBuf, error: io::Error },
    /// The password file's content is unusable.
    FileContent {
        path: PathBuf,
        problem: ContentProblem,
    },
    /// `MAILHOP_PASSWORD` is set but empty.
    EnvEmpty,
    /// No usable Secret Service: no D-Bus session, no provider, or a
    /// locked collection. `detail` is the store's error (never a secret).
    #[cfg(feature = "keyring")]
    KeyringUnavailable { detail: String },
    /// The keyring has no password for the account.
    #[cfg(feature = "keyring")]
    KeyringNoEntry { service: String, account: String },
    /// The keyring did not answer in time (a prompt nobody answers).
    #[cfg(feature = "keyring")]
    KeyringTimeout { timeout: Duration },
    /// The stored password is unusable.
    #[cfg(feature = "keyring")]
    KeyringContent {
        account: String,
        problem: ContentProblem,
    },
    /// Any other keyring failure.
    #[cfg(feature = "keyring")]
    KeyringFailed { detail: String },
}

/// What every keyring error that is about the environment says.
#[cfg(feature = "keyring")]
const KEYRING_HINT: &str = "the keyring needs a desktop session (D-Bus Secret Service); for cron and servers use \
     password_file";

// One arm per error variant, each a sentence saying what went wrong and
// what to do: long, but flat, and splitting it would only scatter the
// wording of one error type.
impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialError::NotConfigured => write!(
                f,
                "no password configured for the account; set `password_command` or \
                 `password_file` for it in the configuration, or the MAILHOP_PASSWORD \
                 environment variable"
            ),
            CredentialError::CommandSpawn { command, error } => write!(
                f,
                "password_command `{command}`: cannot run /bin/sh: {error}"
            ),
            CredentialError::CommandTimeout { command, timeout } => write!(
                f,
                "password_command `{command}` did not finish within {timeout:?} and was \
                 killed; it runs with no input (stdin is /dev/null), so it must not prompt \
                 (unlock your keyring or start gpg-agent first), or raise its timeout"
            ),
            CredentialError::CommandFailed {
                command,
                status,
                stderr,
            } => {
                write!(f, "password_command `{command}` failed ({status})")?;
                write_stderr(f, stderr)?;
                write!(f, "; run it by hand to see why")
            }
            CredentialError::CommandIo { command, error } => write!(
                f,
                "password_command `{command}`: cannot read its output: {error}"
            ),
            CredentialError::CommandOutput {
                command,
                problem,
                stderr,
            } => {
                write!(f, "password_command `{command}` ")?;
                match problem {
                    ContentProblem::Empty => write!(f, "printed nothing on standard output")?,
                    ContentProblem::NotUtf8 => write!(f, "printed output that is not UTF-8")?,
                    ContentProblem::TooLarge => write!(
                        f,
                        "printed more than {} KiB and was stopped",
                        MAX_SECRET_LEN / 1024
                    )?,
                }
                write_stderr(f, stderr)?;
                write!(
                    f,
                    "; it must print only the password (one trailing newline is removed)"
                )
            }
            CredentialError::FileOpen { path, error } => {
                write!(f, "{}: cannot open password file: {error}", path.display())?;
                match error.kind() {
                    io::ErrorKind::NotFound => write!(f, "; check `password_file`"),
                    io::ErrorKind::PermissionDenied => write!(
                        f,
                        "; it must be readable by the user running mailhop (or by \
                         group mailhop in a setgid installation)"
                    ),
                    _ => Ok(()),
                }
            }
            CredentialError::FileSymlink { path } => write!(
                f,
                "{}: password file is a symbolic link, and symbolic links are refused \
                 (one could point mailhop at another file); set `password_file` to the \
                 real file",
                path.display()
            ),
            CredentialError::FileNotRegular { path } => write!(
                f,
                "{}: password file is not a regular file; set `password_file` to a \
                 plain file holding the password on its first line",
                path.display()
            ),
            CredentialError::FileOwner { path, owner, euid } => write!(
                f,
                "{p}: password file is owned by uid {owner}, but must be owned by you \
                 (uid {euid}) or root so that nobody else can change it; fix with: \
                 chown {euid} {p}",
                p = path.display()
            ),
            CredentialError::FileWorldAccessible {
                path,
                mode,
                allowed_group,
            } => {
                write!(
                    f,
                    "{}: password file is accessible by all users (mode {:04o})",
                    path.display(),
                    mode & 0o7777
                )?;
                write_mode_fix(f, path, *allowed_group)
            }
            CredentialError::FileGroupAccessible {
                path,
                mode,
                gid,
                allowed_group,
            } => {
                write!(
                    f,
                    "{}: password file is accessible by group {gid} (mode {:04o})",
                    path.display(),
                    mode & 0o7777
                )?;
                write_mode_fix(f, path, *allowed_group)
            }
            CredentialError::FileRead { path, error } => {
                write!(f, "{}: cannot read password file: {error}", path.display())
            }
            CredentialError::FileContent { path, problem } => {
                let p = path.display();
                match problem {
                    ContentProblem::Empty => write!(
                        f,
                        "{p}: password file is empty; put the password on its first line"
                    ),
                    ContentProblem::NotUtf8 => write!(
                        f,
                        "{p}: the first line of the password file is not UTF-8; save it \
                         as UTF-8"
                    ),
                    ContentProblem::TooLarge => write!(
                        f,
                        "{p}: password file is larger than {} KiB; it should hold only \
                         the password on its first line",
                        MAX_SECRET_LEN / 1024
                    ),
                }
            }
            CredentialError::EnvEmpty => write!(
                f,
                "MAILHOP_PASSWORD is set but empty; set it to the password, or unset it \
                 and configure `password_command` or `password_file`"
            ),
            #[cfg(feature = "keyring")]
            CredentialError::KeyringUnavailable { detail } => {
                write!(f, "cannot use the keyring: {detail}; {KEYRING_HINT}")
            }
            #[cfg(feature = "keyring")]
            CredentialError::KeyringNoEntry { service, account } => write!(
                f,
                "no password for account {account} in the keyring (service {service}); \
                 store one with `mailhop password set {account}`, or set \
                 `password_command` or `password_file` for the account"
            ),
            #[cfg(feature = "keyring")]
            CredentialError::KeyringTimeout { timeout } => write!(
                f,
                "the keyring did not answer within {timeout:?} (is it locked, waiting for \
                 a password prompt?); {KEYRING_HINT}"
            ),
            #[cfg(feature = "keyring")]
            CredentialError::KeyringContent { account, problem } => {
                write!(f, "the keyring's password for account {account} ")?;
                match problem {
                    ContentProblem::Empty => write!(f, "is empty")?,
                    ContentProblem::NotUtf8 => write!(f, "is not UTF-8")?,
                    ContentProblem::TooLarge => {
                        write!(f, "is larger than {} KiB", MAX_SECRET_LEN / 1024)?
                    }
                }
                write!(f, "; store it again with `mailhop password set {account}`")
            }
            #[cfg(feature = "keyring")]
            CredentialError::KeyringFailed { detail } => write!(f, "keyring: {detail}"),
        }
    }
}

impl std::error::Error for CredentialError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CredentialError::CommandSpawn { error, .. }
            | CredentialError::CommandIo { error, .. }
            | CredentialError::FileOpen { error, .. }
            | CredentialError::FileRead { error, .. } => Some(error),
            _ => None,
        }
    }
}

fn write_stderr(f: &mut fmt::Formatter<'_>, stderr: &str) -> fmt::Result {
    if stderr.is_empty() {
        write!(f, " with no error output")
    } else {
        write!(f, ": {stderr}")
    }
}

/// The advice after a private file that others can read: `chmod 600`, and
/// in the setgid install the group-shared alternative. Shared with the
/// DKIM key check, which gives the same advice.
pub(crate) fn write_mode_fix(
    f: &mut fmt::Formatter<'_>,
    path: &Path,
    group: Option<u32>,
) -> fmt::Result {
    let p = path.display();
    write!(f, "; fix with: chmod 600 {p}")?;
    if group.is_some() {
        // Only the setgid installation can use a group-readable file.
        write!(
            f,
            " (or, to share it with mailhop's group: chown root:mailhop {p} && chmod 640 {p})"
        )?;
    }
    Ok(())
}

/// Obtains the secret from the first source. The caller passes only the
/// configured sources, in precedence order (command, file, environment,
/// keyring).
/// A failing source is an error, not a reason to try the next one: falling
/// back silently would hide a broken `password_command` behind a stale file.
pub fn obtain(sources: &[Source], policy: &Policy) -> Result<Secret, CredentialError> {
    match sources.first() {
        None => Err(CredentialError::NotConfigured),
        Some(Source::Command { command, timeout }) => {
            run_command(command, *timeout, policy.clean_env)
        }
        Some(Source::File(path)) => read_file(path, policy),
        Some(Source::Env(value)) if value.is_empty() => Err(CredentialError::EnvEmpty),
        Some(Source::Env(value)) => Ok(Secret::new(value.clone())),
        #[cfg(feature = "keyring")]
        Some(Source::Keyring { service, account }) => {
            keyring_store::get(service, account, KEYRING_TIMEOUT)
        }
    }
}

/// How long a read from the keyring may take. A locked collection makes
/// the Secret Service show an unlock prompt; from cron nobody answers it,
/// and sendmail must not hang forever.
#[cfg(feature = "keyring")]
pub const KEYRING_TIMEOUT: Duration = Duration::from_secs(30);

/// The Secret Service items mailhop owns: service `mailhop`, user = the
/// account name (attributes `service` and `username`, so `secret-tool
/// lookup service mailhop username ACCOUNT` finds them too).
#[cfg(feature = "keyring")]
pub mod keyring_store {
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use ::keyring::{Entry, Error};
    use zeroize::{Zeroize, Zeroizing};

    use super::{ContentProblem, CredentialError, MAX_SECRET_LEN, Secret};

    /// The service name of every mailhop entry.
    pub const SERVICE: &str = "mailhop";

    /// The entry, or why the store cannot be used. `keyring` connects to
    /// the session bus once, when the first entry is made.
    fn entry(service: &str, account: &str) -> Result<Entry, CredentialError> {
        Entry::new(service, account).map_err(|e| match (e, Entry::store_status()) {
            (Error::NoDefaultStore, Err(init)) => CredentialError::KeyringUnavailable {
                detail: describe_ref(init),
            },
            (e, _) => convert(e, service, account),
        })
    }

    /// Reads the password, giving up after `timeout`.
    pub fn get(service: &str, account: &str, timeout: Duration) -> Result<Secret, CredentialError> {
        let (tx, rx) = mpsc::channel();
        let (svc, acct) = (service.to_owned(), account.to_owned());
        // A thread so that the wait is bounded: a blocked D-Bus call cannot
        // be cancelled, so on timeout the thread is abandoned (mailhop
        // exits soon after).
        thread::Builder::new()
            .name("keyring".into())
            .spawn(move || {
                let _ = tx.send(get_now(&svc, &acct));
            })
            .map_err(|e| CredentialError::KeyringFailed {
                detail: format!("cannot start a thread: {e}"),
            })?;
        rx.recv_timeout(timeout)
            .unwrap_or(Err(CredentialError::KeyringTimeout { timeout }))
    }

    fn get_now(service: &str, account: &str) -> Result<Secret, CredentialError> {
        let bytes = entry(service, account)?
            .get_secret()
            .map_err(|e| convert(e, service, account))?;
        let mut bytes = Zeroizing::new(bytes);
        let content = |problem| CredentialError::KeyringContent {
            account: account.to_owned(),
            problem,
        };
        if bytes.len() > MAX_SECRET_LEN {
            return Err(content(ContentProblem::TooLarge));
        }
        if bytes.is_empty() {
            return Err(content(ContentProblem::Empty));
        }
        match String::from_utf8(std::mem::take(&mut *bytes)) {
            Ok(s) => Ok(Secret::new(s)),
            Err(e) => {
                e.into_bytes().zeroize();
                Err(content(ContentProblem::NotUtf8))
            }
        }
    }

    /// Stores (or replaces) the password.
    pub fn set(service: &str, account: &str, secret: &Secret) -> Result<(), CredentialError> {
        entry(service, account)?
            .set_password(secret.expose())
            .map_err(|e| convert(e, service, account))
    }

    /// Removes the password; `KeyringNoEntry` when there is none.
    pub fn delete(service: &str, account: &str) -> Result<(), CredentialError> {
        entry(service, account)?
            .delete_credential()
            .map_err(|e| convert(e, service, account))
    }

    /// Maps a store error without ever keeping the secret bytes some
    /// variants carry (they are zeroised here).
    pub(super) fn convert(e: Error, service: &str, account: &str) -> CredentialError {
        match e {
            Error::NoEntry => CredentialError::KeyringNoEntry {
                service: service.to_owned(),
                account: account.to_owned(),
            },
            Error::BadEncoding(mut bytes) => {
                bytes.zeroize();
                CredentialError::KeyringContent {
                    account: account.to_owned(),
                    problem: ContentProblem::NotUtf8,
                }
            }
            Error::BadDataFormat(mut bytes, _) => {
                bytes.zeroize();
                CredentialError::KeyringFailed {
                    detail: "the stored secret is malformed".to_owned(),
                }
            }
            Error::PlatformFailure(_) | Error::NoStorageAccess(_) | Error::NoDefaultStore => {
                CredentialError::KeyringUnavailable {
                    detail: describe_ref(&e),
                }
            }
            Error::Ambiguous(items) => CredentialError::KeyringFailed {
                detail: format!(
                    "{} entries match service {service} and user {account}; remove the \
                     extra ones (e.g. with seahorse or `secret-tool clear service {service} \
                     username {account}`) and store the password again",
                    items.len()
                ),
            },
            other => CredentialError::KeyringFailed {
                detail: describe_ref(&other),
            },
        }
    }

    /// One line naming the cause. Only variants without secret data reach
    /// here; the platform error is the D-Bus or Secret Service one.
    fn describe_ref(e: &Error) -> String {
        let text = match e {
            Error::PlatformFailure(inner) => inner.to_string(),
            Error::NoStorageAccess(inner) => format!(
                "no access to the default collection (it is locked or missing, or the \
                 unlock prompt was dismissed): {inner}"
            ),
            Error::NoDefaultStore => "no credential store".to_owned(),
            Error::Invalid(what, why) => format!("invalid {what}: {why}"),
            Error::TooLong(what, limit) => format!("{what} is longer than {limit}"),
            Error::NotSupportedByStore(why) => why.clone(),
            Error::BadStoreFormat(why) => why.clone(),
            Error::NoEntry => "no entry".to_owned(),
            _ => "unexpected error".to_owned(),
        };
        let one_line: Vec<&str> = text.split_whitespace().collect();
        one_line.join(" ")
    }
}

/// Replaces every occurrence of the secret in `text` with `***`, for
/// showing server replies and transcripts (defence in depth: a server
/// echoing the password must not put it in a log).
pub fn redact(text: &str, secret: &Secret) -> String {
    let s = secret.expose();
    if s.is_empty() {
        text.to_owned()
    } else {
        text.replace(s, "***")
    }
}

/// `text` with every needle replaced by `***`, longest first (so a secret
/// inside a longer payload does not break the payload's match).
pub fn redact_all(text: &str, needles: &[&str]) -> String {
    let mut sorted: Vec<&str> = needles.iter().copied().filter(|n| !n.is_empty()).collect();
    sorted.sort_by_key(|n| std::cmp::Reverse(n.len()));
    sorted
        .iter()
        .fold(text.to_owned(), |acc, n| acc.replace(n, "***"))
}

/// Reads at most `MAX_SECRET_LEN` bytes into a buffer allocated once at
/// full size, so no reallocation leaves an unzeroised copy behind.
/// `Ok(None)` means there was more.
fn read_bounded(mut reader: impl Read) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_SECRET_LEN + 1]);
    let mut len = 0;
    while let Some(rest) = buf.get_mut(len..).filter(|r| !r.is_empty()) {
        match reader.read(rest) {
            Ok(0) => {
                buf.truncate(len);
                return Ok(Some(buf));
            }
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Turns the final bytes into a `Secret` without copying them.
fn into_secret(mut bytes: Zeroizing<Vec<u8>>) -> Result<Secret, ContentProblem> {
    if bytes.is_empty() {
        return Err(ContentProblem::Empty);
    }
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(s) => Ok(Secret::new(s)),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(ContentProblem::NotUtf8)
        }
    }
}

/// What the helper threads of `run_command` report.
enum Event {
    Stdout(io::Result<Option<Zeroizing<Vec<u8>>>>),
    Stderr(String),
    Exited(io::Result<ExitStatus>),
}

fn run_command(
    command: &str,
    timeout: Duration,
    clean_env: bool,
) -> Result<Secret, CredentialError> {
    let io_error = |error: io::Error| CredentialError::CommandIo {
        command: command.to_owned(),
        error,
    };
    let mut sh = Command::new("/bin/sh");
    if clean_env {
        sh.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    }
    let mut child = sh
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills the helpers it started
        // too (they would otherwise keep the pipes open).
        .process_group(0)
        .spawn()
        .map_err(|error| CredentialError::CommandSpawn {
            command: command.to_owned(),
            error,
        })?;
    let pgid = i32::try_from(child.id()).ok().map(Pid::from_raw);

    let (tx, rx) = mpsc::channel();
    if let Err(error) = start_threads(&mut child, &tx) {
        // The threads that did start end when the killed group closes
        // the pipes.
        kill_group(pgid);
        let _ = child.wait();
        return Err(io_error(error));
    }
    // The child moves into a waiter thread so that the wait is bounded by
    // `recv_timeout` below rather than by the child.
    let waiter_tx = tx.clone();
    let waiter = thread::Builder::new()
        .name("password-command-wait".into())
        .spawn(move || {
            let _ = waiter_tx.send(Event::Exited(child.wait()));
        });
    if let Err(error) = waiter {
        // The child was dropped with the closure; kill it. It stays a
        // zombie until mailhop exits, which is soon.
        kill_group(pgid);
        return Err(io_error(error));
    }
    // Only the threads hold senders now, so `Disconnected` means one died.
    drop(tx);

    let deadline = Instant::now().checked_add(timeout);
    let mut output = None;
    let mut stderr = None;
    let mut status = None;
    while output.is_none() || stderr.is_none() || status.is_none() {
        let event = match deadline {
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match event {
            Ok(Event::Stdout(Ok(Some(bytes)))) => output = Some(bytes),
            Ok(Event::Stdout(Ok(None))) => {
                kill_and_reap(pgid, &rx, status.is_some());
                return Err(CredentialError::CommandOutput {
                    command: command.to_owned(),
                    problem: ContentProblem::TooLarge,
                    stderr: stderr.unwrap_or_default(),
                });
            }
            Ok(Event::Stdout(Err(error))) | Ok(Event::Exited(Err(error))) => {
                kill_and_reap(pgid, &rx, status.is_some());
                return Err(io_error(error));
            }
            Ok(Event::Stderr(text)) => stderr = Some(text),
            Ok(Event::Exited(Ok(s))) => status = Some(s),
            Err(RecvTimeoutError::Timeout) => {
                kill_and_reap(pgid, &rx, status.is_some());
                return Err(CredentialError::CommandTimeout {
                    command: command.to_owned(),
                    timeout,
                });
            }
            Err(RecvTimeoutError::Disconnected) => {
                kill_and_reap(pgid, &rx, status.is_some());
                return Err(io_error(io::Error::other(
                    "a reader thread stopped unexpectedly",
                )));
            }
        }
    }
    let (Some(mut bytes), Some(stderr), Some(status)) = (output, stderr, status) else {
        return Err(io_error(io::Error::other("incomplete result")));
    };
    if !status.success() {
        return Err(CredentialError::CommandFailed {
            command: command.to_owned(),
            status,
            stderr,
        });
    }
    // Exactly one line ending goes: a password may end in spaces, and a
    // helper printing "secret\n\n" means "secret\n" (msmtp semantics).
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    into_secret(bytes).map_err(|problem| CredentialError::CommandOutput {
        command: command.to_owned(),
        problem,
        stderr,
    })
}

/// Starts the threads draining the child's stdout and stderr; both must be
/// read concurrently or a helper filling one pipe would block forever.
fn start_threads(child: &mut Child, tx: &Sender<Event>) -> io::Result<()> {
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(io::Error::other("output pipes were not set up"));
    };
    let out_tx = tx.clone();
    thread::Builder::new()
        .name("password-command-stdout".into())
        .spawn(move || {
            let _ = out_tx.send(Event::Stdout(read_bounded(stdout)));
        })?;
    let err_tx = tx.clone();
    thread::Builder::new()
        .name("password-command-stderr".into())
        .spawn(move || {
            let _ = err_tx.send(Event::Stderr(read_stderr(stderr)));
        })?;
    Ok(())
}

/// Reads standard error to the end, keeping the start for the excerpt.
fn read_stderr(mut reader: impl Read) -> String {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                let room = STDERR_KEEP_BYTES.saturating_sub(kept.len());
                kept.extend(chunk.iter().take(n.min(room)));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    stderr_excerpt(&kept)
}

/// One line of at most `STDERR_EXCERPT_CHARS` characters, with control
/// characters removed so a helper cannot inject terminal escapes.
fn stderr_excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let one_line = words.join(" ");
    let mut excerpt: String = one_line.chars().take(STDERR_EXCERPT_CHARS).collect();
    if excerpt.len() < one_line.len() {
        excerpt.push('…');
    }
    excerpt
}

fn kill_group(pgid: Option<Pid>) {
    if let Some(pgid) = pgid {
        // ESRCH (all gone already) and EPERM (a setuid helper) are not
        // actionable here.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

/// Kills the command's process group and, unless it was already reaped,
/// waits (bounded) for the waiter thread to reap it, so no zombie or
/// stray helper outlives the call.
fn kill_and_reap(pgid: Option<Pid>, rx: &Receiver<Event>, reaped: bool) {
    kill_group(pgid);
    if reaped {
        return;
    }
    let deadline = Instant::now() + KILL_GRACE;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Event::Exited(_)) | Err(_) => return,
            // Late output is dropped (and zeroised).
            Ok(_) => {}
        }
    }
}

/// Why a file that holds a secret (password file, DKIM key, OAuth token
/// file) was refused. Each caller turns it into its own error with its
/// own words; the checks themselves live only here.
#[derive(Debug)]
pub enum PrivateFileError {
    /// The path does not exist.
    Missing,
    /// The final component is a symbolic link.
    Symlink,
    Open(io::Error),
    NotRegular,
    Read(io::Error),
    /// Owned by neither the effective user nor root.
    Owner {
        owner: u32,
    },
    /// Others may access it.
    WorldAccessible {
        mode: u32,
    },
    /// Its group may access it, and that group is not the allowed one.
    GroupAccessible {
        mode: u32,
        gid: u32,
    },
}

/// Opens a file that holds a secret and checks it on the open descriptor
/// (what is checked is what is read): not a symbolic link, a regular file,
/// owned by `euid` or root, no access for others, group access only for
/// `allowed_group` (the mailhop group of the setgid install). With
/// `group_vouches`, a file of `allowed_group` is accepted whoever owns it
/// (OAuth token files, rewritten by whichever group member refreshed).
pub fn open_private(
    path: &Path,
    allowed_group: Option<u32>,
    euid: u32,
    group_vouches: bool,
) -> Result<std::fs::File, PrivateFileError> {
    let file = OpenOptions::new()
        .read(true)
        // O_NOFOLLOW refuses a symlink as the final component. O_NONBLOCK
        // keeps a FIFO from hanging the open (the type check below then
        // refuses it); it does not affect reading a regular file. O_NOCTTY
        // keeps a terminal from becoming our controlling terminal.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|error| {
            let is_link = path
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink());
            if error.raw_os_error() == Some(libc::ELOOP) && is_link {
                PrivateFileError::Symlink
            } else if error.kind() == io::ErrorKind::NotFound {
                PrivateFileError::Missing
            } else {
                PrivateFileError::Open(error)
            }
        })?;
    let meta = file.metadata().map_err(PrivateFileError::Read)?;
    if !meta.file_type().is_file() {
        return Err(PrivateFileError::NotRegular);
    }
    let (owner, gid, mode) = (meta.uid(), meta.gid(), meta.mode());
    let group_ok = allowed_group == Some(gid);
    if owner != euid && owner != 0 && !(group_vouches && group_ok) {
        return Err(PrivateFileError::Owner { owner });
    }
    if mode & 0o007 != 0 {
        return Err(PrivateFileError::WorldAccessible { mode });
    }
    if mode & 0o070 != 0 && !group_ok {
        return Err(PrivateFileError::GroupAccessible { mode, gid });
    }
    Ok(file)
}

fn read_file(path: &Path, policy: &Policy) -> Result<Secret, CredentialError> {
    let p = || path.to_path_buf();
    let file =
        open_private(path, policy.allowed_group, policy.euid, false).map_err(|e| match e {
            PrivateFileError::Symlink => CredentialError::FileSymlink { path: p() },
            PrivateFileError::Missing => CredentialError::FileOpen {
                path: p(),
                error: io::Error::from(io::ErrorKind::NotFound),
            },
            PrivateFileError::Open(error) => CredentialError::FileOpen { path: p(), error },
            PrivateFileError::NotRegular => CredentialError::FileNotRegular { path: p() },
            PrivateFileError::Read(error) => CredentialError::FileRead { path: p(), error },
            PrivateFileError::Owner { owner } => CredentialError::FileOwner {
                path: p(),
                owner,
                euid: policy.euid,
            },
            PrivateFileError::WorldAccessible { mode } => CredentialError::FileWorldAccessible {
                path: p(),
                mode,
                allowed_group: policy.allowed_group,
            },
            PrivateFileError::GroupAccessible { mode, gid } => {
                CredentialError::FileGroupAccessible {
                    path: p(),
                    mode,
                    gid,
                    allowed_group: policy.allowed_group,
                }
            }
        })?;
    let read_error = |error| CredentialError::FileRead {
        path: path.to_path_buf(),
        error,
    };
    let content_error = |problem| CredentialError::FileContent {
        path: path.to_path_buf(),
        problem,
    };
    let Some(mut bytes) = read_bounded(&file).map_err(read_error)? else {
        return Err(content_error(ContentProblem::TooLarge));
    };
    // The first line is the secret; later lines are free for comments.
    if let Some(end) = bytes.iter().position(|&b| b == b'\n') {
        bytes.truncate(end);
    }
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    into_secret(bytes).map_err(content_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;

    fn policy() -> Policy {
        Policy {
            allowed_group: None,
            euid: Ids::current().euid,
            clean_env: false,
        }
    }

    #[test]
    fn set_id_follows_the_ids() {
        let plain = Ids {
            uid: 1000,
            euid: 1000,
            gid: 1000,
            egid: 1000,
            mailhop_gid: None,
        };
        assert!(!plain.setgid() && !plain.setid());
        let setgid = Ids { egid: 120, ..plain };
        assert!(setgid.setgid() && setgid.setid());
        let setuid = Ids { euid: 0, ..plain };
        assert!(!setuid.setgid() && setuid.setid());
    }

    fn cmd(command: &str, timeout: Duration) -> Source {
        Source::Command {
            command: command.to_owned(),
            timeout,
        }
    }

    fn run(command: &str) -> Result<Secret, CredentialError> {
        obtain(&[cmd(command, Duration::from_secs(20))], &policy())
    }

    fn write_file(dir: &tempfile::TempDir, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let path = dir.path().join(name);
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
        path
    }

    fn from_file(path: &Path, policy: &Policy) -> Result<Secret, CredentialError> {
        obtain(&[Source::File(path.to_path_buf())], policy)
    }

    /// Gone, or a zombie waiting for init (which is not ours to reap).
    fn process_gone(pid: i32) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    #[test]
    fn redact_all_takes_longest_first() {
        let payload = "AGFsaWNlAGh1bnRlcjI=";
        let text = format!("535 bad {payload} (hunter2)");
        let out = redact_all(&text, &["hunter2", payload, ""]);
        assert_eq!(out, "535 bad *** (***)");
        assert_eq!(redact_all("x", &[]), "x");
    }

    #[test]
    fn debug_output_is_redacted() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!(!format!("{secret:#?}").contains("hunter2"));
        let env = Source::Env("hunter2".into());
        assert!(!format!("{env:?}").contains("hunter2"));
        assert!(!format!("{:#?}", [env]).contains("hunter2"));
        assert!(format!("{:?}", Source::File("/x".into())).contains("/x"));
    }

    #[cfg(feature = "keyring")]
    #[test]
    fn keyring_source_and_errors_leak_nothing() {
        let source = Source::Keyring {
            service: "mailhop".into(),
            account: "work".into(),
        };
        // Only the entry's name: there is no secret in a source to show.
        assert_eq!(
            format!("{source:?}"),
            r#"Keyring { service: "mailhop", account: "work" }"#
        );
        assert!(!format!("{:#?}", [source]).contains("***"));
        // Store errors that carry the secret's bytes lose them here.
        for e in [
            ::keyring::Error::BadEncoding(b"hunt\xffer2".to_vec()),
            ::keyring::Error::BadDataFormat(b"hunter2".to_vec(), Box::new(io::Error::other("bad"))),
        ] {
            let e = keyring_store::convert(e, "mailhop", "work");
            for shown in [format!("{e}"), format!("{e:?}")] {
                assert!(!shown.contains("hunt"), "{shown}");
                assert!(!shown.contains("104, 117, 110, 116"), "{shown}");
            }
        }
        let e = keyring_store::convert(::keyring::Error::NoEntry, "mailhop", "work");
        assert!(matches!(e, CredentialError::KeyringNoEntry { .. }), "{e:?}");
        assert!(e.to_string().contains("mailhop password set work"), "{e}");
    }

    #[test]
    fn no_sources_says_what_to_set() {
        let msg = obtain(&[], &policy()).unwrap_err().to_string();
        assert!(msg.contains("password_command"), "{msg}");
        assert!(msg.contains("password_file"), "{msg}");
        assert!(msg.contains("MAILHOP_PASSWORD"), "{msg}");
    }

    #[test]
    fn env_value_is_used_and_empty_refused() {
        let s = obtain(&[Source::Env(" pw ".into())], &policy()).unwrap();
        assert_eq!(s.expose(), " pw ");
        let e = obtain(&[Source::Env(String::new())], &policy()).unwrap_err();
        assert!(matches!(e, CredentialError::EnvEmpty));
    }

    #[test]
    fn first_source_wins_without_fallback() {
        let s = obtain(
            &[Source::Env("first".into()), Source::Env("second".into())],
            &policy(),
        )
        .unwrap();
        assert_eq!(s.expose(), "first");
        let s = obtain(
            &[
                cmd("echo fromcmd", Duration::from_secs(20)),
                Source::Env("e".into()),
            ],
            &policy(),
        )
        .unwrap();
        assert_eq!(s.expose(), "fromcmd");
        // A broken first source is reported, not skipped.
        let e = obtain(
            &[
                Source::File("/nonexistent/mailhop-pw".into()),
                Source::Env("e".into()),
            ],
            &policy(),
        )
        .unwrap_err();
        assert!(matches!(e, CredentialError::FileOpen { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/mailhop-pw"));
    }

    #[test]
    fn command_trims_exactly_one_newline() {
        assert_eq!(run(r"printf 'pa ss\n\n'").unwrap().expose(), "pa ss\n");
        assert_eq!(run(r"printf 'pw  \r\n'").unwrap().expose(), "pw  ");
        assert_eq!(run(r"printf 'pw  '").unwrap().expose(), "pw  ");
        assert_eq!(run("echo tok; echo diag >&2").unwrap().expose(), "tok");
    }

    #[test]
    fn command_failure_shows_status_and_stderr_not_stdout() {
        // The command text must not contain what it prints, as commands
        // are shown.
        let e = run("printf 's3cr%s' 3t-out; echo 'helper: no key' >&2; exit 3").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, CredentialError::CommandFailed { .. }));
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("helper: no key"), "{msg}");
        assert!(msg.contains("exit 3"), "names the command: {msg}");
        assert!(!msg.contains("s3cr3t-out"), "{msg}");
        assert!(!format!("{e:?}").contains("s3cr3t-out"));
    }

    #[test]
    fn command_stderr_excerpt_is_bounded_and_clean() {
        let e = run(r"printf '\033[31mred\n' >&2; head -c 5000 /dev/zero | tr '\0' e >&2; exit 1")
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\u{1b}'), "{e}");
        assert!(e.contains('…'), "{e}");
        assert!(!e.contains(&"e".repeat(STDERR_EXCERPT_CHARS)), "{e}");
    }

    #[test]
    fn command_empty_and_bad_output_refused() {
        for (command, problem) in [
            ("true", ContentProblem::Empty),
            (r"printf '\n'", ContentProblem::Empty),
            ("cat", ContentProblem::Empty), // stdin is /dev/null
            (r"printf '\377\n'", ContentProblem::NotUtf8),
        ] {
            match run(command) {
                Err(CredentialError::CommandOutput { problem: p, .. }) => {
                    assert_eq!(p, problem, "{command}")
                }
                other => panic!("{command}: {other:?}"),
            }
        }
    }

    #[test]
    fn command_output_size_is_bounded() {
        let at_limit = format!("head -c {MAX_SECRET_LEN} /dev/zero | tr '\\0' a");
        assert_eq!(run(&at_limit).unwrap().expose().len(), MAX_SECRET_LEN);
        // `yes` never ends: the limit must stop it, not the timeout.
        let e = run("yes").unwrap_err();
        assert!(
            matches!(
                e,
                CredentialError::CommandOutput {
                    problem: ContentProblem::TooLarge,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("64 KiB"), "{e}");
    }

    #[test]
    fn command_timeout_is_reported() {
        let source = cmd("sleep 30", Duration::from_millis(200));
        let e = obtain(&[source], &policy()).unwrap_err();
        assert!(matches!(e, CredentialError::CommandTimeout { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("sleep 30"), "{msg}");
        assert!(msg.contains("200ms"), "{msg}");
    }

    #[test]
    fn command_timeout_kills_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let sh_pid = dir.path().join("sh.pid");
        let bg_pid = dir.path().join("bg.pid");
        let command = format!(
            "echo $$ > {}; sleep 30 & echo $! > {}; wait",
            sh_pid.display(),
            bg_pid.display()
        );
        let e = obtain(&[cmd(&command, Duration::from_secs(1))], &policy()).unwrap_err();
        assert!(matches!(e, CredentialError::CommandTimeout { .. }), "{e:?}");
        let read_pid = |p: &Path| {
            fs::read_to_string(p)
                .unwrap()
                .trim()
                .parse::<i32>()
                .unwrap()
        };
        // Our direct child was reaped, not left a zombie.
        let sh = read_pid(&sh_pid);
        assert_eq!(
            nix::sys::signal::kill(Pid::from_raw(sh), None),
            Err(nix::errno::Errno::ESRCH)
        );
        // Its background helper was killed with it.
        let bg = read_pid(&bg_pid);
        let start = Instant::now();
        while !process_gone(bg) && start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(process_gone(bg), "background process {bg} survived");
    }

    #[test]
    fn command_spawn_failure_is_not_a_panic() {
        // A missing program is the shell's failure (exit 127), reported
        // with the shell's diagnostic.
        let e = run("/nonexistent/helper").unwrap_err().to_string();
        assert!(e.contains("127"), "{e}");
        assert!(e.contains("/nonexistent/helper"), "{e}");
    }

    #[test]
    fn file_0600_is_read_first_line_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_file(&dir, "pw", b"pa ss \r\nsecond line\n", 0o600);
        assert_eq!(from_file(&p, &policy()).unwrap().expose(), "pa ss ");
        let p = write_file(&dir, "pw2", b"nonewline", 0o400);
        assert_eq!(from_file(&p, &policy()).unwrap().expose(), "nonewline");
    }

    #[test]
    fn file_world_readable_refused_with_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_file(&dir, "pw", b"secretvalue\n", 0o644);
        let e = from_file(&p, &policy()).unwrap_err();
        assert!(matches!(e, CredentialError::FileWorldAccessible { .. }));
        let msg = e.to_string();
        assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
        assert!(msg.contains("0644"), "{msg}");
        assert!(!msg.contains("secretvalue"), "{msg}");
        let with_group = Policy {
            allowed_group: Some(4242),
            ..policy()
        };
        let msg = from_file(&p, &with_group).unwrap_err().to_string();
        assert!(msg.contains("chown root:mailhop"), "{msg}");
        assert!(msg.contains("chmod 640"), "{msg}");
    }

    #[test]
    fn file_group_readable_needs_the_allowed_group() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_file(&dir, "pw", b"pw\n", 0o640);
        let gid = fs::metadata(&p).unwrap().gid();
        let ok = Policy {
            allowed_group: Some(gid),
            ..policy()
        };
        assert_eq!(from_file(&p, &ok).unwrap().expose(), "pw");
        let e = from_file(&p, &policy()).unwrap_err();
        assert!(
            matches!(e, CredentialError::FileGroupAccessible { .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
        let other = Policy {
            allowed_group: Some(gid.wrapping_add(1)),
            ..policy()
        };
        assert!(from_file(&p, &other).is_err());
    }

    #[test]
    fn file_symlink_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = write_file(&dir, "real", b"pw\n", 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = from_file(&link, &policy()).unwrap_err();
        assert!(matches!(e, CredentialError::FileSymlink { .. }), "{e:?}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn file_not_regular_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = from_file(&fifo, &policy()).unwrap_err();
        assert!(matches!(e, CredentialError::FileNotRegular { .. }), "{e:?}");
        let e = from_file(dir.path(), &policy()).unwrap_err();
        assert!(matches!(e, CredentialError::FileNotRegular { .. }), "{e:?}");
    }

    #[test]
    fn file_owner_must_be_us_or_root() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_file(&dir, "pw", b"pw\n", 0o600);
        let owner = fs::metadata(&p).unwrap().uid();
        if owner == 0 {
            // Root-owned files are accepted whoever we are.
            let someone = Policy {
                euid: 1000,
                ..policy()
            };
            assert!(from_file(&p, &someone).is_ok());
            std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
            let e = from_file(&p, &policy()).unwrap_err();
            assert!(
                matches!(e, CredentialError::FileOwner { owner: 65534, .. }),
                "{e:?}"
            );
            assert!(e.to_string().contains("chown 0"), "{e}");
        } else {
            let other = Policy {
                euid: owner.wrapping_add(1),
                ..policy()
            };
            let e = from_file(&p, &other).unwrap_err();
            assert!(matches!(e, CredentialError::FileOwner { .. }), "{e:?}");
        }
    }

    #[test]
    fn file_content_problems() {
        let dir = tempfile::tempdir().unwrap();
        for (name, content, problem) in [
            ("empty", &b""[..], ContentProblem::Empty),
            ("blank", &b"\r\nsecond\n"[..], ContentProblem::Empty),
            ("latin1", &b"caf\xe9\n"[..], ContentProblem::NotUtf8),
        ] {
            let p = write_file(&dir, name, content, 0o600);
            match from_file(&p, &policy()) {
                Err(CredentialError::FileContent { problem: got, .. }) => {
                    assert_eq!(got, problem, "{name}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        let big = vec![b'a'; MAX_SECRET_LEN + 1];
        let p = write_file(&dir, "big", &big, 0o600);
        let e = from_file(&p, &policy()).unwrap_err();
        assert!(e.to_string().contains("larger than 64 KiB"), "{e}");
    }

    #[test]
    fn missing_file_names_path_and_key() {
        let e = from_file(Path::new("/nonexistent/pw"), &policy())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/pw: "), "{e}");
        assert!(e.contains("password_file"), "{e}");
    }

    #[test]
    fn redact_replaces_every_occurrence() {
        let s = Secret::new("hunter2".into());
        assert_eq!(
            redact("535 auth failed for hunter2 (hunter2)", &s),
            "535 auth failed for *** (***)"
        );
        assert_eq!(redact("nothing here", &s), "nothing here");
        assert_eq!(redact("text", &Secret::new(String::new())), "text");
    }
}
