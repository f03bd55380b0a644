//! The durable spool: one item per message, a data file (the body, which
//! the transport streams) plus a metadata file (envelope, per-recipient
//! state, schedule, then the finished header block), as sendmail's df/qf
//! pair. Knows nothing of SMTP.
//!
//! Durability, in the order that makes a crash safe at any point:
//! 1. the body is written into `q/<id>.data` while the intake holds an
//!    exclusive lock on it, then fsynced;
//! 2. the metadata is written to `tmp/<id>.meta`, fsynced, and renamed
//!    (no-replace) to `q/<id>.meta`, and `q/` is fsynced. That rename is
//!    the commit: an item exists exactly when its `.meta` is in `q/`.
//!
//! A data file without metadata is an intake that died; the sweeper
//! removes it once nobody holds its lock. Updates replace the metadata by
//! the same tmp-fsync-rename-fsync dance. Removal deletes the metadata
//! first, so a crash mid-removal leaves an orphan, never a half item.
//!
//! Each item's data file carries its lock (flock, via `File::try_lock`):
//! two runners never deliver the same item at once. The data file is
//! never replaced, so the lock is stable while the metadata changes.
//!
//! `pace/` holds the per-account limits' shared state (`Pace`): send
//! times under a lock, and connection slots held as locks.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The lines of one recipient, in the order `to_bytes` writes them. A
/// later version's own per-recipient keys go after these: unknown to this
/// one, they are skipped; before them, they would break the order.
const RCPT_KEYS: [&str; 4] = ["rcpt", "via", "notify", "orcpt"];

/// Format version written in the first line of every metadata file.
const VERSION: u32 = 1;
const MAGIC: &str = "mailhop-queue";

/// Temporary files older than this, and unlocked, are debris of a crash.
const STALE_TMP: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub enum QueueError {
    /// An I/O error on `path` while doing `what`.
    Io {
        path: PathBuf,
        what: &'static str,
        error: io::Error,
    },
    /// No item with this id (or not one the caller may see).
    NotFound(String),
    /// An id that is not of our format (so never a path).
    BadId(String),
    /// A metadata file we cannot read.
    Corrupt { path: PathBuf, why: String },
    /// Another process holds the item.
    Busy(String),
}

impl QueueError {
    fn io(path: &Path, what: &'static str, error: io::Error) -> QueueError {
        QueueError::Io {
            path: path.to_path_buf(),
            what,
            error,
        }
    }

    /// The I/O error kind, for mapping to an exit status.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            QueueError::Io { error, .. } => Some(error.kind()),
            _ => None,
        }
    }
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Io { path, what, error } => {
                write!(f, "queue: cannot {what} {}: {error}", path.display())
            }
            QueueError::NotFound(id) => write!(f, "queue: no item {id} (see mailq)"),
            QueueError::BadId(id) => write!(f, "queue: \"{id}\" is not a queue id (see mailq)"),
            QueueError::Corrupt { path, why } => {
                write!(f, "queue: {} is damaged: {why}", path.display())
            }
            QueueError::Busy(id) => write!(f, "queue: item {id} is being delivered right now"),
        }
    }
}

impl std::error::Error for QueueError {}

/// Where one recipient stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptState {
    /// Not delivered yet; `last_error` says why, if tried.
    Pending,
    /// Accepted by the smarthost: never sent again.
    Done,
    /// Permanently refused (or expired); a bounce is still to be sent.
    Failed,
    /// Failed, and a bounce for it has been queued.
    Bounced,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    pub state: RcptState,
    /// The last reply or error for this recipient.
    pub last_error: Option<String>,
    /// The account that delivered it (a fallback when the item's own
    /// account failed); `None` until delivered.
    pub via: Option<String>,
    /// Its own DSN parameters (RFC 3461), as an SMTP client gave them.
    pub dsn: RcptDsn,
}

/// A recipient's DSN parameters. Kept per recipient because SMTP gives
/// them per RCPT: one transaction, one queue item, whatever they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptDsn {
    /// NOTIFY, e.g. `FAILURE,DELAY` or `NEVER`; `None` falls back to the
    /// item's `dsn_notify`.
    pub notify: Option<String>,
    /// ORCPT, decoded: `rfc822;user@example.com`.
    pub orcpt: Option<String>,
}

impl Recipient {
    /// A recipient not tried yet.
    pub fn pending(address: String) -> Recipient {
        Recipient {
            address,
            state: RcptState::Pending,
            last_error: None,
            via: None,
            dsn: RcptDsn::default(),
        }
    }

    /// NOTIFY for this recipient: its own, else the item's.
    pub fn notify<'a>(&'a self, meta: &'a Meta) -> Option<&'a str> {
        self.dsn.notify.as_deref().or(meta.dsn_notify.as_deref())
    }

    /// Whether the sender asked for a failure notice (RFC 3461 §4.1): yes
    /// unless NOTIFY was given without FAILURE (NEVER, or SUCCESS,DELAY).
    pub fn wants_failure_notice(&self, meta: &Meta) -> bool {
        self.notify(meta).is_none_or(|n| {
            n.split(',')
                .any(|k| k.trim().eq_ignore_ascii_case("failure"))
        })
    }
}

/// Everything about an item except its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub id: String,
    /// Arrival time, seconds since the epoch.
    pub arrival: u64,
    /// Envelope sender; empty for `<>` (bounces).
    pub sender: String,
    /// The account to send through; `None` while no smarthost is
    /// configured.
    pub account: Option<String>,
    /// Who queued it (management commands show users only their own).
    pub uid: u32,
    pub attempts: u32,
    /// Next attempt, seconds since the epoch.
    pub next_attempt: u64,
    pub last_error: Option<String>,
    pub hold: bool,
    pub eight_bit: bool,
    pub dsn_notify: Option<String>,
    pub dsn_ret_full: Option<bool>,
    pub dsn_envid: Option<String>,
    pub recipients: Vec<Recipient>,
    /// The finished header block (CRLF lines, no separator).
    pub header: Vec<u8>,
}

impl Meta {
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients
            .iter()
            .filter(|r| r.state == RcptState::Pending)
    }

    /// Serialises to the versioned text format: `key: value` lines
    /// (values percent-escaped), a blank line, then the raw header block.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        out.push_str(&format!("{MAGIC} {VERSION}\n"));
        let mut kv = |k: &str, v: &str| out.push_str(&format!("{k}: {}\n", escape(v)));
        kv("id", &self.id);
        kv("arrival", &self.arrival.to_string());
        kv("sender", &self.sender);
        if let Some(a) = &self.account {
            kv("account", a);
        }
        kv("uid", &self.uid.to_string());
        kv("attempts", &self.attempts.to_string());
        kv("next-attempt", &self.next_attempt.to_string());
        if let Some(e) = &self.last_error {
            kv("last-error", e);
        }
        kv("hold", if self.hold { "1" } else { "0" });
        kv("eight-bit", if self.eight_bit { "1" } else { "0" });
        if let Some(n) = &self.dsn_notify {
            kv("dsn-notify", n);
        }
        if let Some(r) = self.dsn_ret_full {
            kv("dsn-ret", if r { "full" } else { "hdrs" });
        }
        if let Some(e) = &self.dsn_envid {
            kv("dsn-envid", e);
        }
        for r in &self.recipients {
            let state = match r.state {
                RcptState::Pending => "pending",
                RcptState::Done => "done",
                RcptState::Failed => "failed",
                RcptState::Bounced => "bounced",
            };
            let err = r.last_error.as_deref().map(escape).unwrap_or_default();
            out.push_str(&format!("rcpt: {state} {} {err}\n", escape(&r.address)));
            // A line of its own after its recipient rather than a fourth
            // field: a runner that predates it ignores the unknown key.
            if let Some(v) = &r.via {
                out.push_str(&format!("via: {}\n", escape(v)));
            }
            if let Some(n) = &r.dsn.notify {
                out.push_str(&format!("notify: {}\n", escape(n)));
            }
            if let Some(o) = &r.dsn.orcpt {
                out.push_str(&format!("orcpt: {}\n", escape(o)));
            }
        }
        out.push('\n');
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.header);
        bytes
    }

    /// Parses what `to_bytes` wrote. Unknown keys are ignored, so a newer
    /// version's extra fields do not stop an older runner.
    pub fn parse(data: &[u8]) -> Result<Meta, String> {
        let split = data
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or("no end of the metadata block")?;
        let text = std::str::from_utf8(&data[..split]).map_err(|_| "metadata is not UTF-8")?;
        let header = data[split + 2..].to_vec();
        let mut lines = text.lines();
        let first = lines.next().ok_or("empty")?;
        let version = parse_version(first)?;
        if version > VERSION {
            return Err(format!("written by a newer mailhop (format {version})"));
        }
        let mut m = Meta {
            id: String::new(),
            arrival: 0,
            sender: String::new(),
            account: None,
            uid: 0,
            attempts: 0,
            next_attempt: 0,
            last_error: None,
            hold: false,
            eight_bit: false,
            dsn_notify: None,
            dsn_ret_full: None,
            dsn_envid: None,
            recipients: Vec::new(),
            header,
        };
        let num = |v: &str, k: &str| v.parse::<u64>().map_err(|_| format!("bad {k}: {v}"));
        let mut seen_id = false;
        // `via:`, `notify:` and `orcpt:` belong to the `rcpt:` line above
        // them, in that order, each at most once: the rank of the last line
        // of the recipient being read (rcpt 0), `None` outside one.
        let mut in_rcpt: Option<u8> = None;
        for line in lines {
            // Every line `to_bytes` writes is `key: value`; anything else
            // is damage, not a newer version's addition.
            let (k, v) = line
                .split_once(": ")
                .ok_or_else(|| format!("not a key: value line: {}", line_excerpt(line)))?;
            let rank = RCPT_KEYS.iter().position(|r| *r == k).map(|r| r as u8);
            let previous = std::mem::replace(&mut in_rcpt, rank);
            if let Some(rank) = rank.filter(|r| *r > 0)
                && previous.is_none_or(|p| p >= rank)
            {
                return Err(format!("{k}: not after its rcpt: line, or out of order"));
            }
            match k {
                "id" => {
                    if std::mem::replace(&mut seen_id, true) {
                        return Err("more than one id".into());
                    }
                    m.id = unescape(v);
                    if !valid_id(&m.id) {
                        return Err(format!("not a queue id: {}", line_excerpt(&m.id)));
                    }
                }
                "arrival" => m.arrival = num(v, k)?,
                "sender" => m.sender = unescape(v),
                "account" => m.account = Some(unescape(v)),
                "uid" => m.uid = u32::try_from(num(v, k)?).map_err(|_| "bad uid")?,
                "attempts" => m.attempts = u32::try_from(num(v, k)?).unwrap_or(u32::MAX),
                "next-attempt" => m.next_attempt = num(v, k)?,
                "last-error" => m.last_error = Some(unescape(v)),
                "hold" => m.hold = flag(v, k)?,
                "eight-bit" => m.eight_bit = flag(v, k)?,
                "dsn-notify" => m.dsn_notify = Some(unescape(v)),
                "dsn-ret" => {
                    m.dsn_ret_full = Some(match v {
                        "full" => true,
                        "hdrs" => false,
                        _ => return Err(format!("bad dsn-ret: {}", line_excerpt(v))),
                    })
                }
                "dsn-envid" => m.dsn_envid = Some(unescape(v)),
                "rcpt" => {
                    let mut parts = v.splitn(3, ' ');
                    let state = match parts.next() {
                        Some("pending") => RcptState::Pending,
                        Some("done") => RcptState::Done,
                        Some("failed") => RcptState::Failed,
                        Some("bounced") => RcptState::Bounced,
                        other => return Err(format!("bad recipient state {other:?}")),
                    };
                    let address = unescape(parts.next().ok_or("recipient without address")?);
                    let err = parts.next().filter(|e| !e.is_empty()).map(unescape);
                    m.recipients.push(Recipient {
                        address,
                        state,
                        last_error: err,
                        via: None,
                        dsn: RcptDsn::default(),
                    });
                }
                "via" | "notify" | "orcpt" => {
                    let r = m.recipients.last_mut().ok_or("no recipient")?;
                    let field = match k {
                        "via" => &mut r.via,
                        "notify" => &mut r.dsn.notify,
                        _ => &mut r.dsn.orcpt,
                    };
                    *field = Some(unescape(v));
                }
                _ => {}
            }
        }
        if m.id.is_empty() {
            return Err("no id".into());
        }
        Ok(m)
    }
}

/// The format version from the first line, which must be exactly
/// `mailhop-queue N` with N a plain positive decimal number: a file that
/// only looks similar was not written by `to_bytes`.
fn parse_version(first: &str) -> Result<u32, String> {
    let not_ours = || "not a mailhop queue file".to_string();
    let digits = first
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or_else(not_ours)?;
    let canonical = !digits.is_empty()
        && digits.len() <= 9
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !canonical {
        return Err(format!("bad format version: {}", line_excerpt(digits)));
    }
    digits.parse().map_err(|_| not_ours())
}

/// `0` or `1`, as `to_bytes` writes booleans.
fn flag(v: &str, key: &str) -> Result<bool, String> {
    match v {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(format!("bad {key}: {}", line_excerpt(v))),
    }
}

/// A damaged file's text, quoted and cut short for an error message.
fn line_excerpt(s: &str) -> String {
    const MAX: usize = 40;
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(MAX).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

/// Percent-escapes what would break the line format.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            ' ' => out.push_str("%20"),
            // Every octet of the character's UTF-8, so `unescape` gives the
            // same character back (C1 controls such as U+0085 are two octets).
            c if c.is_control() => {
                for b in c.encode_utf8(&mut [0; 4]).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Queue ids: arrival time in hex (so a listing sorts by arrival) and 64
/// random bits from the operating system (ring's `SystemRandom`, so ids
/// cannot be guessed). Only `[0-9A-F]`: always a safe file name. When the
/// kernel gives no random bits there is no id: zeros would be guessable.
pub fn new_id(now: SystemTime) -> io::Result<String> {
    use ring::rand::SecureRandom;
    let d = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let mut rnd = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut rnd)
        .map_err(|_| io::Error::other("the system's random number source failed"))?;
    Ok(format!(
        "{:09X}{:05X}{:016X}",
        d.as_secs(),
        d.subsec_micros(),
        u64::from_be_bytes(rnd)
    ))
}

/// Whether `id` has our format; anything else is refused before it can be
/// used in a path.
pub fn valid_id(id: &str) -> bool {
    (20..=40).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// The spool directory and its permissions policy.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    /// File mode for items: 0640 in the shared (setgid) spool so the
    /// runner's group can read them, 0600 in a per-user spool.
    mode: u32,
}

/// An item being written by the intake: its data file, locked.
#[derive(Debug)]
pub struct Draft {
    pub id: String,
    pub data: File,
    path: PathBuf,
    committed: bool,
}

impl Draft {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Draft {
    /// A draft that is dropped without being committed was not needed
    /// (delivered directly) or failed: its data goes.
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Where an item is: in the queue, or in `failed/` (a message with the
/// null sender that failed for good, so could not be bounced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Queue,
    Failed,
}

/// An item held for delivery: locked, with its metadata.
#[derive(Debug)]
pub struct Claimed {
    pub meta: Meta,
    pub data: File,
}

/// Opens an item's data file to lock it. Read-write when permitted: NFS
/// emulates flock with fcntl locks, and an exclusive one needs a
/// descriptor open for writing (a per-user queue in an NFS home). Read-only
/// otherwise, which local flock accepts: the runner of the shared spool
/// may only read other users' items.
fn open_for_lock(path: &Path) -> io::Result<File> {
    let open = |write: bool| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
    };
    match open(true) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => open(false),
        other => other,
    }
}

fn fsync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| QueueError::io(dir, "sync directory", e))
}

impl Spool {
    pub fn new(root: &Path, shared: bool) -> Spool {
        Spool {
            root: root.to_path_buf(),
            mode: if shared { 0o640 } else { 0o600 },
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn q(&self) -> PathBuf {
        self.root.join("q")
    }
    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    fn failed(&self) -> PathBuf {
        self.root.join("failed")
    }
    fn data_path(&self, id: &str) -> PathBuf {
        self.q().join(format!("{id}.data"))
    }
    fn meta_path(&self, id: &str) -> PathBuf {
        self.q().join(format!("{id}.meta"))
    }
    fn file(&self, area: Area, id: &str, ext: &str) -> PathBuf {
        let dir = match area {
            Area::Queue => self.q(),
            Area::Failed => self.failed(),
        };
        dir.join(format!("{id}.{ext}"))
    }

    /// Creates the directories if needed (a per-user spool on first use;
    /// the system spool is made by the package).
    pub fn ensure(&self) -> Result<(), QueueError> {
        let dir_mode = if self.mode == 0o640 { 0o770 } else { 0o700 };
        for d in [self.root.clone(), self.q(), self.tmp(), self.failed()] {
            if !d.is_dir() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(dir_mode)
                    .create(&d)
                    .map_err(|e| QueueError::io(&d, "create spool directory", e))?;
                // The umask must not take the group's write bit: in the
                // shared spool every user's process writes here.
                fs::set_permissions(&d, fs::Permissions::from_mode(dir_mode))
                    .map_err(|e| QueueError::io(&d, "set the mode of", e))?;
            }
        }
        Ok(())
    }

    /// Starts an item: a new, locked data file for the intake to write the
    /// body into. Nothing is visible to runners until `commit`.
    pub fn draft(&self, now: SystemTime) -> Result<Draft, QueueError> {
        self.ensure()?;
        for _ in 0..8 {
            let id = new_id(now).map_err(|e| QueueError::io(&self.root, "make an id in", e))?;
            let path = self.data_path(&id);
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(self.mode)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(data) => {
                    // Held until the item is committed and the intake is
                    // done with it, so the sweeper never takes it for debris.
                    data.try_lock().map_err(|e| {
                        QueueError::io(&path, "lock", io::Error::other(e.to_string()))
                    })?;
                    return Ok(Draft {
                        id,
                        data,
                        path,
                        committed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(QueueError::io(&path, "create", e)),
            }
        }
        Err(QueueError::io(
            &self.q(),
            "create a unique item in",
            io::Error::other("id collision"),
        ))
    }

    /// Replaces a draft's data with a new file (the body re-encoded), under
    /// the same id. Returns the new draft; the old data is removed.
    pub fn redraft(&self, old: Draft, now: SystemTime) -> Result<Draft, QueueError> {
        let new = self.draft(now)?;
        drop(old);
        Ok(new)
    }

    /// Commits a draft: writes the metadata atomically. From here on the
    /// item exists and will be delivered, even if this process is killed.
    ///
    /// `durable` adds the fsyncs that make it survive a power loss too:
    /// needed before telling the caller "queued". A commit made only to
    /// cover a delivery attempt skips them (the page cache survives a dead
    /// process); `make_durable` adds them if the attempt then fails.
    pub fn commit(&self, draft: &mut Draft, meta: &Meta, durable: bool) -> Result<(), QueueError> {
        if durable {
            draft
                .data
                .sync_all()
                .map_err(|e| QueueError::io(&draft.path, "sync", e))?;
        }
        self.write_meta(meta, false, durable)?;
        draft.committed = true;
        Ok(())
    }

    /// Rewrites a committed draft's metadata and makes the item durable
    /// (data, metadata and directory fsynced): the caller is about to be
    /// told it is queued.
    pub fn make_durable(&self, draft: &Draft, meta: &Meta) -> Result<(), QueueError> {
        if !draft.committed || meta.id != draft.id {
            return Err(QueueError::NotFound(draft.id.clone()));
        }
        draft
            .data
            .sync_all()
            .map_err(|e| QueueError::io(&draft.path, "sync", e))?;
        self.write_meta(meta, true, true)
    }

    /// Removes a draft, committed or not: after a successful first attempt
    /// the item is done. Metadata first, as in `remove`, and no directory
    /// fsync, as in `remove`.
    /// The open data file stays readable (for dead.letter) until dropped.
    pub fn discard(&self, draft: &mut Draft) -> Result<(), QueueError> {
        if draft.committed {
            let meta = self.meta_path(&draft.id);
            match fs::remove_file(&meta) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(QueueError::io(&meta, "remove", e)),
            }
            draft.committed = false;
        }
        let _ = fs::remove_file(&draft.path);
        Ok(())
    }

    /// Writes `meta` via tmp + rename, with fsyncs of the file and the
    /// directory when `durable`. `replace` is false for a new item (rename
    /// that refuses to replace).
    fn write_meta(&self, meta: &Meta, replace: bool, durable: bool) -> Result<(), QueueError> {
        if !valid_id(&meta.id) {
            return Err(QueueError::BadId(meta.id.clone()));
        }
        let tmp = self
            .tmp()
            .join(format!("{}.meta.{}", meta.id, std::process::id()));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(self.mode)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&tmp)
                .map_err(|e| QueueError::io(&tmp, "create", e))?;
            f.write_all(&meta.to_bytes())
                .and_then(|()| if durable { f.sync_all() } else { Ok(()) })
                .map_err(|e| QueueError::io(&tmp, "write", e))?;
            let dest = self.meta_path(&meta.id);
            if replace {
                fs::rename(&tmp, &dest).map_err(|e| QueueError::io(&dest, "replace", e))?;
            } else {
                nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &tmp,
                    nix::fcntl::AT_FDCWD,
                    &dest,
                    nix::fcntl::RenameFlags::RENAME_NOREPLACE,
                )
                .map_err(|e| QueueError::io(&dest, "commit", io::Error::from(e)))?;
            }
            if durable {
                fsync_dir(&self.q())
            } else {
                Ok(())
            }
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Reads one queued item's metadata (no lock).
    pub fn read(&self, id: &str) -> Result<Meta, QueueError> {
        self.read_in(Area::Queue, id)
    }

    /// Finds an item in the queue or, failing that, in `failed/`.
    pub fn find(&self, id: &str) -> Result<(Meta, Area), QueueError> {
        match self.read_in(Area::Queue, id) {
            Err(QueueError::NotFound(_)) => {
                self.read_in(Area::Failed, id).map(|m| (m, Area::Failed))
            }
            other => other.map(|m| (m, Area::Queue)),
        }
    }

    fn read_in(&self, area: Area, id: &str) -> Result<Meta, QueueError> {
        if !valid_id(id) {
            return Err(QueueError::BadId(id.to_string()));
        }
        let path = self.file(area, id, "meta");
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(QueueError::NotFound(id.to_string()));
            }
            Err(e) => return Err(QueueError::io(&path, "read", e)),
        };
        Meta::parse(&data).map_err(|why| QueueError::Corrupt { path, why })
    }

    /// Every committed item, oldest first. Damaged ones are reported in
    /// the second list rather than stopping the listing.
    pub fn list(&self) -> Result<(Vec<Meta>, Vec<QueueError>), QueueError> {
        let dir = self.q();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(QueueError::io(&dir, "list", e)),
        };
        let mut items = Vec::new();
        let mut bad = Vec::new();
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".meta")) else {
                continue;
            };
            match self.read(id) {
                Ok(m) => items.push(m),
                // Delivered and removed between readdir and read.
                Err(QueueError::NotFound(_)) => {}
                Err(e) => bad.push(e),
            }
        }
        items.sort_by(|a, b| (a.arrival, &a.id).cmp(&(b.arrival, &b.id)));
        Ok((items, bad))
    }

    /// Whether anything is queued (a readdir, no parsing): the cheap check
    /// before starting an opportunistic runner.
    pub fn has_items(&self) -> bool {
        fs::read_dir(self.q()).is_ok_and(|mut rd| {
            rd.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".meta")))
        })
    }

    /// Takes the item's lock, or `Busy` if another process has it. The
    /// metadata is re-read under the lock: it may have changed (or the
    /// item gone) since it was listed.
    pub fn claim(&self, id: &str) -> Result<Claimed, QueueError> {
        if !valid_id(id) {
            return Err(QueueError::BadId(id.to_string()));
        }
        let path = self.data_path(id);
        let data = match open_for_lock(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(QueueError::NotFound(id.to_string()));
            }
            Err(e) => return Err(QueueError::io(&path, "open", e)),
        };
        match data.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(QueueError::Busy(id.to_string())),
            Err(fs::TryLockError::Error(e)) => return Err(QueueError::io(&path, "lock", e)),
        }
        let meta = self.read(id)?;
        Ok(Claimed { meta, data })
    }

    /// Saves changed metadata of a claimed item, durably.
    pub fn update(&self, claimed: &Claimed) -> Result<(), QueueError> {
        self.write_meta(&claimed.meta, true, true)
    }

    /// Removes a claimed item: metadata first, so a crash leaves only an
    /// orphan data file for the sweeper. The directory is not fsynced: if
    /// a machine crash undoes the removal, the item is delivered again (a
    /// duplicate, never a loss), and a sync per delivered message would
    /// cost the runner a fifth of its rate.
    pub fn remove(&self, claimed: Claimed) -> Result<(), QueueError> {
        let id = claimed.meta.id.clone();
        let meta = self.meta_path(&id);
        fs::remove_file(&meta).map_err(|e| QueueError::io(&meta, "remove", e))?;
        let data = self.data_path(&id);
        let _ = fs::remove_file(&data);
        drop(claimed);
        Ok(())
    }

    /// Moves a claimed item to `failed/` (its bounce could not be sent),
    /// with its final state: the recipients' last errors are what `mailq`
    /// and `queue show --envelope` show there.
    pub fn fail(&self, claimed: Claimed) -> Result<PathBuf, QueueError> {
        self.update(&claimed)?;
        let id = claimed.meta.id.clone();
        let dest = self.failed();
        fs::create_dir_all(&dest).map_err(|e| QueueError::io(&dest, "create", e))?;
        // Data first: the metadata's move is what takes it out of the queue.
        let data_to = dest.join(format!("{id}.data"));
        fs::rename(self.data_path(&id), &data_to)
            .map_err(|e| QueueError::io(&data_to, "move", e))?;
        let meta_to = dest.join(format!("{id}.meta"));
        fs::rename(self.meta_path(&id), &meta_to)
            .map_err(|e| QueueError::io(&meta_to, "move", e))?;
        fsync_dir(&dest)?;
        fsync_dir(&self.q())?;
        drop(claimed);
        Ok(meta_to)
    }

    /// Items in `failed/`, for mailq.
    pub fn list_failed(&self) -> Vec<Meta> {
        let mut out: Vec<Meta> = fs::read_dir(self.failed())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".meta"))
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|d| Meta::parse(&d).ok())
            .collect();
        out.sort_by_key(|m| m.arrival);
        out
    }

    /// Deletes an item from `failed/`: metadata first, as `remove` does.
    /// Nothing delivers from there, so no lock is needed; of two callers
    /// racing, one gets `NotFound`.
    pub fn remove_failed(&self, id: &str) -> Result<(), QueueError> {
        if !valid_id(id) {
            return Err(QueueError::BadId(id.to_string()));
        }
        let meta = self.file(Area::Failed, id, "meta");
        match fs::remove_file(&meta) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(QueueError::NotFound(id.to_string()));
            }
            Err(e) => return Err(QueueError::io(&meta, "remove", e)),
        }
        let data = self.file(Area::Failed, id, "data");
        match fs::remove_file(&data) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(QueueError::io(&data, "remove", e))
            }
            _ => Ok(()),
        }
    }

    /// Size of the item's message (header + separator + body), for mailq.
    pub fn size(&self, meta: &Meta, area: Area) -> u64 {
        let body = fs::metadata(self.file(area, &meta.id, "data"))
            .map(|m| m.len())
            .unwrap_or(0);
        meta.header.len() as u64 + 2 + body
    }

    /// Opens an item's body for reading (for `queue show`).
    pub fn open_data(&self, id: &str, area: Area) -> Result<File, QueueError> {
        if !valid_id(id) {
            return Err(QueueError::BadId(id.to_string()));
        }
        let path = self.file(area, id, "data");
        File::open(&path).map_err(|e| QueueError::io(&path, "open", e))
    }

    /// Removes the debris of crashed intakes and updates: data files
    /// without metadata and tmp files, older than an hour and unlocked.
    /// Also finishes a move to `failed/` that a crash interrupted between
    /// its two renames (data there, metadata still here), which would
    /// otherwise be listed but never claimable. Returns how many items were
    /// removed or moved.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let mut removed = 0;
        let old = |p: &Path| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP)
        };
        for entry in fs::read_dir(self.tmp()).into_iter().flatten().flatten() {
            let p = entry.path();
            if old(&p) && fs::remove_file(&p).is_ok() {
                removed += 1;
            }
        }
        for entry in fs::read_dir(self.q()).into_iter().flatten().flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".meta") {
                if valid_id(id) && self.finish_failing(id) {
                    removed += 1;
                }
                continue;
            }
            let Some(id) = name.strip_suffix(".data") else {
                continue;
            };
            if self.meta_path(id).exists() || !old(&p) {
                continue;
            }
            // Unlocked means its writer is gone.
            if let Ok(f) = File::open(&p)
                && f.try_lock().is_ok()
                && !self.meta_path(id).exists()
                && fs::remove_file(&p).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    /// Completes `fail` for an item whose data is already in `failed/`
    /// but whose metadata is still in the queue. The data file's lock
    /// tells whether a `fail` is still under way (it holds the lock).
    fn finish_failing(&self, id: &str) -> bool {
        if self.data_path(id).exists() {
            return false;
        }
        let data = self.file(Area::Failed, id, "data");
        let Ok(f) = File::open(&data) else {
            return false;
        };
        if f.try_lock().is_err() || self.data_path(id).exists() {
            return false;
        }
        let moved = fs::rename(self.meta_path(id), self.file(Area::Failed, id, "meta")).is_ok();
        if moved {
            let _ = fsync_dir(&self.failed());
            let _ = fsync_dir(&self.q());
        }
        moved
    }

    /// Whether the spool root is group-shared (the setgid install).
    pub fn is_shared(&self) -> bool {
        fs::metadata(&self.root).is_ok_and(|m| m.permissions().mode() & 0o070 != 0 && m.uid() == 0)
    }
}

/// The pacing state every mailhop process on the machine shares, in
/// `<spool>/pace/`: how many messages each account sent in its window
/// (`state`, rewritten under its lock), and which of its connection slots
/// are taken (`<account>.<n>`, each taken by holding its lock, so a
/// process that dies gives its slot back). The same flock as the items'
/// locks, so it works where they do (NFS included).
#[derive(Debug, Clone)]
pub struct Pace {
    dir: PathBuf,
    /// 0660 in the shared spool: every user's mailhop takes slots.
    mode: u32,
}

/// A connection slot, held until dropped.
#[derive(Debug)]
pub struct Slot {
    _lock: File,
}

/// How long a process waits for the state file's lock. Holders keep it
/// for one read and one write; a stopped process must not stop everyone.
const PACE_LOCK_WAIT: Duration = Duration::from_secs(2);

/// The state file's first line.
const PACE_MAGIC: &str = "mailhop-pace 1";

impl Spool {
    /// The shared pacing state of this spool.
    pub fn pace(&self) -> Pace {
        Pace {
            dir: self.root.join("pace"),
            mode: if self.mode == 0o640 { 0o660 } else { 0o600 },
        }
    }
}

impl Pace {
    fn open(&self, name: &str) -> Result<File, QueueError> {
        if !self.dir.is_dir() {
            let dir_mode = if self.mode == 0o660 { 0o770 } else { 0o700 };
            fs::DirBuilder::new()
                .mode(dir_mode)
                .create(&self.dir)
                .or_else(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .and_then(|()| fs::set_permissions(&self.dir, fs::Permissions::from_mode(dir_mode)))
                .map_err(|e| QueueError::io(&self.dir, "create", e))?;
        }
        let path = self.dir.join(name);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(self.mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| QueueError::io(&path, "open", e))?;
        // The umask must not take the group's bits in the shared spool;
        // only the creator (the owner) may change them.
        if let Ok(m) = f.metadata()
            && m.permissions().mode() & 0o777 != self.mode
            && m.uid() == nix::unistd::geteuid().as_raw()
        {
            let _ = f.set_permissions(fs::Permissions::from_mode(self.mode));
        }
        Ok(f)
    }

    /// Takes one of `account`'s `max` connection slots, or `None` when
    /// all are taken.
    pub fn connection(&self, account: &str, max: u32) -> Result<Option<Slot>, QueueError> {
        for n in 0..max {
            let f = self.open(&format!("{account}.{n}"))?;
            match f.try_lock() {
                Ok(()) => return Ok(Some(Slot { _lock: f })),
                Err(fs::TryLockError::WouldBlock) => continue,
                Err(fs::TryLockError::Error(e)) => {
                    return Err(QueueError::io(&self.dir.join(account), "lock", e));
                }
            }
        }
        Ok(None)
    }

    /// Counts one message for `account` if fewer than `limit` were sent in
    /// the `window` before now: `Turn::Go`. Otherwise nothing is counted
    /// and the answer is when the next one may go. `clock` is read once
    /// the lock is held: a time read before waiting for it would be stale.
    pub fn take(
        &self,
        account: &str,
        limit: u32,
        window: Duration,
        clock: &dyn Fn() -> SystemTime,
    ) -> Result<Turn, QueueError> {
        self.with_state(clock, |state, now_ms| {
            let from = now_ms.saturating_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
            let sent = state.0.entry(account.to_string()).or_default();
            // Times after `now` (a clock that stepped back) still count.
            sent.retain(|&t| t > from);
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            if sent.len() >= limit {
                let oldest = sent[sent.len() - limit];
                return Turn::Wait(UNIX_EPOCH + Duration::from_millis(oldest) + window);
            }
            sent.push(now_ms);
            sent.sort_unstable();
            Turn::Go(Ticket { at_ms: now_ms })
        })
    }

    /// The message `ticket` counted has been sent: it counts from now on,
    /// when the server has it. The provider counts a message when it
    /// arrives, which is later than when it was counted here; without
    /// this the next window could open while it was still on its way.
    pub fn sent(
        &self,
        account: &str,
        ticket: Ticket,
        clock: &dyn Fn() -> SystemTime,
    ) -> Result<(), QueueError> {
        self.with_state(clock, |state, now_ms| {
            if let Some(sent) = state.0.get_mut(account)
                && let Some(t) = sent.iter_mut().find(|t| **t == ticket.at_ms)
            {
                *t = now_ms.max(ticket.at_ms);
                sent.sort_unstable();
            }
        })
    }

    /// Runs `change` on the state under its lock and writes it back.
    fn with_state<T>(
        &self,
        clock: &dyn Fn() -> SystemTime,
        change: impl FnOnce(&mut PaceState, u64) -> T,
    ) -> Result<T, QueueError> {
        let mut f = self.open("state")?;
        lock_within(&f, PACE_LOCK_WAIT).map_err(|e| QueueError::io(&self.dir, "lock", e))?;
        let now_ms = millis(clock());
        let mut text = String::new();
        // A damaged file forgets recent sends (a few too many may go)
        // rather than stopping all mail.
        let _ = f.read_to_string(&mut text);
        let mut state = PaceState::parse(&text);
        let answer = change(&mut state, now_ms);
        state.0.retain(|_, v| !v.is_empty());
        let out = state.to_text();
        use std::io::Seek as _;
        f.set_len(0)
            .and_then(|()| f.seek(io::SeekFrom::Start(0)))
            .and_then(|_| f.write_all(out.as_bytes()))
            .map_err(|e| QueueError::io(&self.dir.join("state"), "write", e))?;
        Ok(answer)
    }
}

/// Whether a message may go now.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// It is counted; tell `Pace::sent` when it has gone.
    Go(Ticket),
    /// The window is full until then.
    Wait(SystemTime),
}

/// A message counted by `Pace::take`.
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket {
    at_ms: u64,
}

/// `f`'s exclusive lock, waiting at most `max`: a short poll, because
/// std has no timed flock and a blocking one could hang on a stopped
/// holder.
fn lock_within(f: &File, max: Duration) -> io::Result<()> {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::Error(e)) => return Err(e),
            Err(fs::TryLockError::WouldBlock) if start.elapsed() >= max => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the pacing state stayed locked",
                ));
            }
            Err(fs::TryLockError::WouldBlock) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The state file: `account t1 t2 …` per line, the send times in
/// milliseconds since the epoch, oldest first.
#[derive(Debug, Default, PartialEq, Eq)]
struct PaceState(std::collections::BTreeMap<String, Vec<u64>>);

impl PaceState {
    /// Reads what `to_text` wrote; what does not parse is left out. At
    /// most `MAX_PACE_TIMES` times per account are kept.
    fn parse(text: &str) -> PaceState {
        let mut state = PaceState::default();
        let mut lines = text.lines();
        if lines.next() != Some(PACE_MAGIC) {
            return state;
        }
        for line in lines {
            let mut words = line.split(' ');
            let Some(name) = words.next().filter(|n| !n.is_empty()) else {
                continue;
            };
            let mut times: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
            times.sort_unstable();
            let extra = times.len().saturating_sub(MAX_PACE_TIMES);
            times.drain(..extra);
            state.0.insert(name.to_string(), times);
        }
        state
    }

    fn to_text(&self) -> String {
        let mut out = format!("{PACE_MAGIC}\n");
        for (name, times) in &self.0 {
            out.push_str(name);
            for t in times {
                out.push_str(&format!(" {t}"));
            }
            out.push('\n');
        }
        out
    }
}

/// The most send times kept per account (`config::MAX_PACE_LIMIT`).
const MAX_PACE_TIMES: usize = 10_000;

/// The retry schedule: 1 min, 5 min, 15 min, 1 h, then every 4 h.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(match attempts {
        0 | 1 => 60,
        2 => 300,
        3 => 900,
        4 => 3600,
        _ => 4 * 3600,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn meta(id: &str) -> Meta {
        Meta {
            id: id.into(),
            arrival: 1_700_000_000,
            sender: "a b@x".into(),
            account: Some("o365".into()),
            uid: 33,
            attempts: 2,
            next_attempt: 1_700_000_300,
            last_error: Some("451 4.3.0 try\nlater 100%".into()),
            hold: true,
            eight_bit: true,
            dsn_notify: Some("failure,delay".into()),
            dsn_ret_full: Some(false),
            dsn_envid: Some("env 1".into()),
            recipients: vec![
                Recipient::pending("b@y".into()),
                Recipient {
                    address: "c@y".into(),
                    state: RcptState::Failed,
                    last_error: Some("550 5.1.1 no such user".into()),
                    via: None,
                    dsn: RcptDsn {
                        notify: Some("NEVER".into()),
                        orcpt: Some("rfc822;C@y".into()),
                    },
                },
                Recipient {
                    address: "d@y".into(),
                    state: RcptState::Done,
                    last_error: None,
                    via: Some("back up".into()),
                    dsn: RcptDsn::default(),
                },
            ],
            header: b"Subject: x\r\nX-8: \xe4\r\n".to_vec(),
        }
    }

    /// The round trip fuzz/fuzz_targets/queue_record.rs checks: a C1 control
    /// character (U+0085, say in a server's reply) was written as one octet and
    /// came back as U+FFFD.
    #[test]
    fn control_characters_round_trip() {
        let mut m = meta(&new_id(SystemTime::now()).unwrap());
        m.last_error = Some("a\u{85}b\u{9f}\u{7f}\u{1}\t%".into());
        m.recipients[0].address = "x\u{85}@y".into();
        m.recipients[1].last_error = Some("\u{80} \u{9b}".into());
        let back = Meta::parse(&m.to_bytes()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn meta_round_trips_and_tolerates_unknown_keys() {
        let id = new_id(SystemTime::now()).unwrap();
        let m = meta(&id);
        let bytes = m.to_bytes();
        assert_eq!(Meta::parse(&bytes).unwrap(), m);
        let text =
            String::from_utf8_lossy(&bytes).replacen("\n\n", "\nfuture-key: whatever\n\n", 1);
        let mut with_unknown = text.into_bytes();
        // keep the 8-bit header intact
        let split = with_unknown.windows(2).position(|w| w == b"\n\n").unwrap();
        with_unknown.truncate(split + 2);
        with_unknown.extend_from_slice(&m.header);
        assert_eq!(Meta::parse(&with_unknown).unwrap(), m);
        assert!(
            Meta::parse(b"mailhop-queue 99\nid: x\n\n")
                .unwrap_err()
                .contains("newer")
        );
        assert!(Meta::parse(b"garbage").is_err());
    }

    #[test]
    fn meta_parse_is_strict_about_version_and_id() {
        let id = new_id(SystemTime::now()).unwrap();
        let good = meta(&id).to_bytes();
        assert!(Meta::parse(&good).is_ok());
        let with_first = |first: &str| {
            let text = String::from_utf8_lossy(&good).into_owned();
            let rest = text.split_once('\n').unwrap().1;
            format!("{first}\n{rest}").into_bytes()
        };
        for bad in [
            "mailhop-queue",
            "mailhop-queue ",
            "mailhop-queue1",
            "mailhop-queue  1",
            "mailhop-queue +1",
            "mailhop-queue 01",
            "mailhop-queue 0",
            "mailhop-queue 1 ",
            "mailhop-queue 1x",
            "mailhop-queue -1",
            "mailhop-queuex 1",
            " mailhop-queue 1",
            "mailhop-queue 99999999999999999999",
        ] {
            let e = Meta::parse(&with_first(bad)).unwrap_err();
            assert!(!e.contains("newer"), "{bad:?}: {e}");
        }
        let text = String::from_utf8_lossy(&good).into_owned();
        for (from, to) in [
            (format!("id: {id}\n"), "id: x\n".to_string()),
            (format!("id: {id}\n"), "id: ../../etc/passwd\n".to_string()),
            (
                format!("id: {id}\n"),
                format!("id: {}\n", id.to_lowercase()),
            ),
            (format!("id: {id}\n"), format!("id: {id}\nid: {id}\n")),
            (format!("id: {id}\n"), String::new()),
            ("hold: 1\n".to_string(), "hold: yes\n".to_string()),
            (
                "dsn-ret: hdrs\n".to_string(),
                "dsn-ret: headers\n".to_string(),
            ),
            (
                "hold: 1\n".to_string(),
                "hold: 1\nno separator\n".to_string(),
            ),
            // via: only right after its recipient, once.
            ("hold: 1\n".to_string(), "hold: 1\nvia: x\n".to_string()),
            (
                "via: back%20up\n".to_string(),
                "via: back%20up\nvia: x\n".to_string(),
            ),
            ("rcpt: pending b@y \n".to_string(), "via: x\n".to_string()),
            // notify: and orcpt: likewise, and in to_bytes' order.
            (
                "notify: NEVER\norcpt: rfc822;C@y\n".to_string(),
                "orcpt: rfc822;C@y\nnotify: NEVER\n".to_string(),
            ),
            (
                "notify: NEVER\n".to_string(),
                "notify: NEVER\nnotify: NEVER\n".to_string(),
            ),
            ("hold: 1\n".to_string(), "hold: 1\norcpt: x\n".to_string()),
        ] {
            assert!(text.contains(&from), "{from}");
            let damaged = text.replacen(&from, &to, 1);
            assert!(Meta::parse(damaged.as_bytes()).is_err(), "{damaged}");
        }
    }

    #[test]
    fn meta_round_trips_exactly() {
        // Whatever parses serialises back to the same bytes, so a record
        // is never silently rewritten into something else on update.
        let id = new_id(SystemTime::now()).unwrap();
        let mut m = meta(&id);
        for sender in ["", "a b%c\r\n@x", "j\u{f6}rg@ex\u{e4}mple.org"] {
            m.sender = sender.into();
            m.dsn_ret_full = None;
            m.account = None;
            let bytes = m.to_bytes();
            let parsed = Meta::parse(&bytes).unwrap();
            assert_eq!(parsed, m);
            assert_eq!(parsed.to_bytes(), bytes);
        }
    }

    #[test]
    fn ids_are_safe_and_ordered() {
        let a = new_id(UNIX_EPOCH + Duration::from_secs(1_700_000_000)).unwrap();
        let b = new_id(UNIX_EPOCH + Duration::from_secs(1_700_000_001)).unwrap();
        assert!(valid_id(&a) && valid_id(&b));
        assert!(a < b);
        assert!(!valid_id("../../etc/passwd") && !valid_id("") && !valid_id("abc"));
    }

    #[test]
    fn draft_commit_claim_update_remove() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let now = SystemTime::now();
        let mut d = spool.draft(now).unwrap();
        d.data.write_all(b"body\r\n").unwrap();
        // Not visible before commit.
        assert!(spool.list().unwrap().0.is_empty());
        // Locked while drafting.
        assert!(matches!(
            spool.claim(&d.id),
            Err(QueueError::Busy(_) | QueueError::NotFound(_))
        ));
        let mut m = meta(&d.id);
        m.hold = false;
        spool.commit(&mut d, &m, true).unwrap();
        assert!(
            matches!(spool.claim(&d.id), Err(QueueError::Busy(_))),
            "the intake still holds it"
        );
        let id = d.id.clone();
        drop(d);
        let (items, bad) = spool.list().unwrap();
        assert_eq!(items.len(), 1);
        assert!(bad.is_empty());
        let mut c = spool.claim(&id).unwrap();
        assert!(matches!(spool.claim(&id), Err(QueueError::Busy(_))));
        c.meta.attempts = 5;
        spool.update(&c).unwrap();
        assert_eq!(spool.read(&id).unwrap().attempts, 5);
        assert_eq!(
            spool.size(&c.meta, Area::Queue),
            c.meta.header.len() as u64 + 2 + 6
        );
        spool.remove(c).unwrap();
        assert!(spool.list().unwrap().0.is_empty());
        assert!(!spool.has_items());
    }

    #[test]
    fn dropped_draft_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let d = spool.draft(SystemTime::now()).unwrap();
        let p = d.path().to_path_buf();
        assert!(p.exists());
        drop(d);
        assert!(!p.exists());
    }

    #[test]
    fn sweep_removes_only_old_unlocked_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        spool.ensure().unwrap();
        let orphan = dir
            .path()
            .join("q")
            .join(format!("{}.data", new_id(SystemTime::now()).unwrap()));
        fs::write(&orphan, b"x").unwrap();
        let live = spool.draft(SystemTime::now()).unwrap();
        let later = SystemTime::now() + Duration::from_secs(7200);
        assert_eq!(spool.sweep(SystemTime::now()), 0, "nothing is old yet");
        assert_eq!(
            spool.sweep(later),
            1,
            "the orphan goes, the locked draft stays"
        );
        assert!(!orphan.exists() && live.path().exists());
    }

    /// A private spool in a temporary directory holding one committed item.
    fn one_item() -> (tempfile::TempDir, Spool, String) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let mut d = spool.draft(SystemTime::now()).unwrap();
        let m = meta(&d.id);
        spool.commit(&mut d, &m, true).unwrap();
        let id = d.id.clone();
        (dir, spool, id)
    }

    #[test]
    fn fail_moves_to_failed_area() {
        let (_dir, spool, id) = one_item();
        let mut c = spool.claim(&id).unwrap();
        c.meta.last_error = Some("550 5.1.1 no such user".into());
        spool.fail(c).unwrap();
        assert!(spool.list().unwrap().0.is_empty());
        assert_eq!(spool.list_failed().len(), 1);
        let (found, area) = spool.find(&id).unwrap();
        assert_eq!((found.id.as_str(), area), (id.as_str(), Area::Failed));
        assert_eq!(
            found.last_error.as_deref(),
            Some("550 5.1.1 no such user"),
            "the final state moves with it"
        );
        assert!(matches!(spool.claim(&id), Err(QueueError::NotFound(_))));
        let mut body = String::new();
        spool
            .open_data(&id, Area::Failed)
            .unwrap()
            .read_to_string(&mut body)
            .unwrap();
        assert_eq!(
            spool.size(&found, Area::Failed),
            found.header.len() as u64 + 2 + body.len() as u64
        );
        spool.remove_failed(&id).unwrap();
        assert!(spool.list_failed().is_empty());
        assert!(matches!(spool.find(&id), Err(QueueError::NotFound(_))));
        assert!(matches!(
            spool.remove_failed(&id),
            Err(QueueError::NotFound(_))
        ));
    }

    #[test]
    fn sweep_finishes_a_move_to_failed_that_a_crash_interrupted() {
        let (_dir, spool, id) = one_item();
        // fail() renamed the data, then died before renaming the metadata.
        let c = spool.claim(&id).unwrap();
        fs::rename(spool.data_path(&id), spool.file(Area::Failed, &id, "data")).unwrap();
        assert_eq!(spool.sweep(SystemTime::now()), 0, "still locked: under way");
        drop(c);
        assert!(matches!(spool.claim(&id), Err(QueueError::NotFound(_))));
        assert_eq!(spool.sweep(SystemTime::now()), 1);
        assert!(spool.list().unwrap().0.is_empty());
        let (m, area) = spool.find(&id).unwrap();
        assert_eq!((m.id.as_str(), area), (id.as_str(), Area::Failed));
        assert_eq!(spool.sweep(SystemTime::now()), 0, "nothing left to do");
    }

    #[test]
    fn a_record_without_via_lines_still_reads() {
        // As version 1 wrote it before recipients had a delivering account.
        let old = b"mailhop-queue 1\nid: 0000000000000000000000ABCD\narrival: 1\nsender: s@x\n\
                    uid: 0\nattempts: 0\nnext-attempt: 0\nhold: 0\neight-bit: 0\n\
                    rcpt: done a@y \nrcpt: pending b@y 451%204.3.0\n\nSubject: x\r\n";
        let m = Meta::parse(old).unwrap();
        assert!(m.recipients.iter().all(|r| r.via.is_none()));
        assert_eq!(m.to_bytes(), old.to_vec(), "and is written back unchanged");
    }

    #[test]
    fn pace_counts_within_the_window_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let w = Duration::from_secs(10);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let go = |t: Result<Turn, QueueError>| matches!(t.unwrap(), Turn::Go(_));
        // Two handles, as two processes would have.
        let (a, b) = (spool.pace(), spool.pace());
        assert!(go(a.take("o365", 2, w, &|| at(0))));
        assert!(go(b.take("o365", 2, w, &|| at(1000))));
        assert_eq!(
            a.take("o365", 2, w, &|| at(2000)).unwrap(),
            Turn::Wait(at(10_000)),
            "full until the first send leaves the window"
        );
        assert!(go(b.take("other", 2, w, &|| at(2000))), "per account");
        assert!(go(b.take("o365", 2, w, &|| at(10_000))));
        assert_eq!(
            a.take("o365", 2, w, &|| at(10_001)).unwrap(),
            Turn::Wait(at(11_000))
        );
        // A damaged state file is forgotten, not fatal.
        fs::write(dir.path().join("pace").join("state"), b"\xff\x00junk").unwrap();
        assert!(go(a.take("o365", 1, w, &|| at(10_002))));
        assert_eq!(
            a.take("o365", 1, w, &|| at(10_003)).unwrap(),
            Turn::Wait(at(20_002))
        );
    }

    #[test]
    fn a_sent_message_counts_from_when_it_went() {
        let dir = tempfile::tempdir().unwrap();
        let pace = Spool::new(dir.path(), false).pace();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let w = Duration::from_secs(10);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let Turn::Go(ticket) = pace.take("o365", 1, w, &|| at(0)).unwrap() else {
            panic!("the first may go");
        };
        // Counted at 0, on the server at 700.
        pace.sent("o365", ticket, &|| at(700)).unwrap();
        assert_eq!(
            pace.take("o365", 1, w, &|| at(10_000)).unwrap(),
            Turn::Wait(at(10_700))
        );
    }

    #[test]
    fn connection_slots_are_held_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let pace = spool.pace();
        let s1 = pace.connection("o365", 2).unwrap().unwrap();
        let s2 = spool.pace().connection("o365", 2).unwrap().unwrap();
        assert!(pace.connection("o365", 2).unwrap().is_none(), "both taken");
        assert!(
            pace.connection("gmail", 2).unwrap().is_some(),
            "per account"
        );
        drop(s1);
        assert!(pace.connection("o365", 2).unwrap().is_some(), "given back");
        drop(s2);
    }

    #[test]
    fn backoff_schedule() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(300));
        assert_eq!(backoff(3), Duration::from_secs(900));
        assert_eq!(backoff(4), Duration::from_secs(3600));
        assert_eq!(backoff(9), Duration::from_secs(14_400));
    }
}
