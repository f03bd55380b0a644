//! Embedded local delivery: Maildir and mbox. This is what delivers mail on
//! a machine with no smarthost configured, and what a developer points PHP's
//! `sendmail_path` at to capture mail. It also writes `dead.letter`.
//!
//! Messages arrive CRLF-normalised (the wire form); files on disk use LF,
//! as every Unix mail reader expects. Both writers are careful about
//! durability: a delivery reported as done is on disk (fsync of the file
//! and, for Maildir, of the directory the name was linked into).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Who should own what we create (used when running as root and writing
/// into another user's home, so the user can read their own mail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug)]
pub enum LocalError {
    /// An I/O error on `path`; `what` says which step.
    Io {
        path: PathBuf,
        what: &'static str,
        error: io::Error,
    },
    /// The mbox stayed locked by another process.
    Locked { path: PathBuf },
}

impl LocalError {
    fn io(path: &Path, what: &'static str, error: io::Error) -> LocalError {
        LocalError::Io {
            path: path.to_path_buf(),
            what,
            error,
        }
    }

    pub fn kind(&self) -> io::ErrorKind {
        match self {
            LocalError::Io { error, .. } => error.kind(),
            LocalError::Locked { .. } => io::ErrorKind::WouldBlock,
        }
    }
}

impl fmt::Display for LocalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalError::Io { path, what, error } => {
                write!(f, "{}: cannot {what}: {error}", path.display())?;
                if error.kind() == io::ErrorKind::PermissionDenied {
                    write!(
                        f,
                        " (delivering into another user's mailbox needs root; \
                         or set [local] path to a directory you can write)"
                    )?;
                }
                Ok(())
            }
            LocalError::Locked { path } => write!(
                f,
                "{}: mailbox is locked by another process (lock file {}.lock); try again later",
                path.display(),
                path.display()
            ),
        }
    }
}

impl std::error::Error for LocalError {}

/// Converts CRLF to LF while copying, keeping bare CR (there are none after
/// intake normalisation, but a stray one must not be lost).
struct LfWriter<W: Write> {
    inner: W,
    pending_cr: bool,
    written: u64,
    last: Option<u8>,
}

impl<W: Write> LfWriter<W> {
    fn new(inner: W) -> Self {
        LfWriter {
            inner,
            pending_cr: false,
            written: 0,
            last: None,
        }
    }

    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        self.inner.write_all(data)?;
        self.written += data.len() as u64;
        if let Some(&b) = data.last() {
            self.last = Some(b);
        }
        Ok(())
    }

    /// Flushes a held CR; returns the writer, the bytes written and
    /// whether the output ended with a newline.
    fn finish(mut self) -> io::Result<(W, u64, bool)> {
        if self.pending_cr {
            self.put(b"\r")?;
        }
        let nl = self.last == Some(b'\n');
        Ok((self.inner, self.written, nl))
    }
}

impl<W: Write> Write for LfWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut start = 0;
        if self.pending_cr {
            self.pending_cr = false;
            if buf.first() != Some(&b'\n') {
                self.put(b"\r")?;
            }
        }
        let mut i = 0;
        while i < buf.len() {
            if buf[i] == b'\r' {
                match buf.get(i + 1) {
                    Some(b'\n') => {
                        self.put(&buf[start..i])?;
                        start = i + 1; // keep the LF
                    }
                    None => {
                        self.put(&buf[start..i])?;
                        self.pending_cr = true;
                        start = buf.len();
                    }
                    Some(_) => {}
                }
            }
            i += 1;
        }
        if start < buf.len() {
            self.put(&buf[start..])?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Expands a `[local] path` template for one recipient: `~` is the
/// recipient's home, `%u` the local name, `%%` a percent sign.
pub fn expand_path(template: &str, local_name: &str, home: Option<&Path>) -> Option<PathBuf> {
    // A local name becomes a path component: refuse anything that could
    // climb out of the directory the admin configured.
    if local_name.is_empty()
        || local_name.contains('/')
        || local_name == "."
        || local_name == ".."
        || local_name.contains('\0')
    {
        return None;
    }
    let mut out = String::new();
    let rest = if let Some(r) = template.strip_prefix('~') {
        out.push_str(home?.to_str()?);
        r
    } else {
        template
    };
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.peek() {
                Some('u') => {
                    chars.next();
                    out.push_str(local_name);
                }
                Some('%') => {
                    chars.next();
                    out.push('%');
                }
                _ => out.push('%'),
            }
        } else {
            out.push(c);
        }
    }
    Some(PathBuf::from(out))
}

/// Local recipients that share one mailbox, and that mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxGroup<'a> {
    pub path: PathBuf,
    /// In order of mention; all of them are delivered by one copy.
    pub recipients: Vec<&'a str>,
}

/// Local recipients grouped by the mailbox each resolves to (with
/// `resolve`, typically [`expand_path`] plus the user's home), in order of
/// first mention, plus those that do not resolve. One copy per group is
/// all a message needs: a `[local] path` without `%u` (a capture
/// mailbox) or aliases to one user must not write a copy per name, which
/// is how 80,000 names in `Cc:` once made 17,846 copies. Paths are
/// compared component-wise (`/a/./b/` is `/a/b`); symlinks are not
/// followed, so two names for one file still get one copy each.
pub fn group_by_mailbox<'a, E>(
    recipients: impl IntoIterator<Item = &'a str>,
    mut resolve: impl FnMut(&str) -> Result<PathBuf, E>,
) -> (Vec<MailboxGroup<'a>>, Vec<(&'a str, E)>) {
    let mut groups: Vec<MailboxGroup<'a>> = Vec::new();
    let mut index: std::collections::HashMap<PathBuf, usize> = std::collections::HashMap::new();
    let mut failed = Vec::new();
    for rcpt in recipients {
        match resolve(rcpt) {
            Ok(path) => {
                let path: PathBuf = path.components().collect();
                match index.get(&path) {
                    Some(&i) => groups[i].recipients.push(rcpt),
                    None => {
                        index.insert(path.clone(), groups.len());
                        groups.push(MailboxGroup {
                            path,
                            recipients: vec![rcpt],
                        });
                    }
                }
            }
            Err(e) => failed.push((rcpt, e)),
        }
    }
    (groups, failed)
}

fn chown(path: &Path, owner: Option<Owner>) -> io::Result<()> {
    if let Some(o) = owner {
        std::os::unix::fs::chown(path, Some(o.uid), Some(o.gid))?;
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents with mode 0700, owned by `owner`.
fn create_dirs(dir: &Path, owner: Option<Owner>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        create_dirs(parent, owner)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => chown(dir, owner),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

static DELIVERIES: AtomicU32 = AtomicU32::new(0);

/// The unique part of a Maildir file name, per the Maildir specification:
/// `seconds.M<usec>P<pid>Q<n>.<host>`, with `/` and `:` in the host name
/// escaped as the spec requires.
fn maildir_unique(now: SystemTime, hostname: &str) -> String {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let host = hostname.replace('/', "\\057").replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{}",
        d.as_secs(),
        d.subsec_micros(),
        std::process::id(),
        DELIVERIES.fetch_add(1, Ordering::Relaxed),
        host
    )
}

/// Delivers one message into the Maildir at `dir`: written to `tmp/`,
/// fsynced, then linked into `new/` and the directory fsynced. Returns the
/// final path.
pub fn deliver_maildir(
    dir: &Path,
    message: &mut dyn Read,
    hostname: &str,
    now: SystemTime,
    owner: Option<Owner>,
) -> Result<PathBuf, LocalError> {
    for sub in ["", "tmp", "new", "cur"] {
        let d = dir.join(sub);
        create_dirs(&d, owner).map_err(|e| LocalError::io(&d, "create Maildir directory", e))?;
    }
    let unique = maildir_unique(now, hostname);
    let tmp = dir.join("tmp").join(&unique);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| LocalError::io(&tmp, "create file", e))?;
    let result = (|| -> io::Result<u64> {
        let mut w = LfWriter::new(BufWriter::new(file));
        io::copy(message, &mut w)?;
        let (buf, size, _) = w.finish()?;
        let file = buf.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(size)
    })();
    let size = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(LocalError::io(&tmp, "write message", e));
        }
    };
    chown(&tmp, owner).map_err(|e| LocalError::io(&tmp, "set owner of", e))?;
    let new = dir.join("new").join(format!("{unique},S={size}"));
    // hard link then unlink, as the Maildir spec prescribes: link() never
    // replaces an existing file, so a name collision cannot lose a message.
    if let Err(e) = fs::hard_link(&tmp, &new) {
        let _ = fs::remove_file(&tmp);
        return Err(LocalError::io(&new, "link message into new/", e));
    }
    let _ = fs::remove_file(&tmp);
    let newdir = dir.join("new");
    fsync_dir(&newdir).map_err(|e| LocalError::io(&newdir, "sync directory", e))?;
    Ok(new)
}

/// An mbox "From " line date: asctime format in UTC.
fn asctime(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let wday = ((days + 4).rem_euclid(7)) as usize; // 1970-01-01 was a Thursday
    const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        WD.get(wday).unwrap_or(&"Thu"),
        MO.get((m as usize).saturating_sub(1)).unwrap_or(&"Jan"),
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        y
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// mboxrd quoting: any line matching `^>*From ` gets one more `>`, so a
/// reader can undo it exactly. Works line by line over LF text.
struct MboxrdWriter<W: Write> {
    inner: W,
    at_line_start: bool,
    /// Bytes seen at the start of the current line while it could still
    /// turn out to be `>*From `.
    prefix: Vec<u8>,
}

impl<W: Write> MboxrdWriter<W> {
    fn new(inner: W) -> Self {
        MboxrdWriter {
            inner,
            at_line_start: true,
            prefix: Vec::new(),
        }
    }

    fn finish(mut self) -> io::Result<W> {
        if !self.prefix.is_empty() {
            let p = std::mem::take(&mut self.prefix);
            self.inner.write_all(&p)?;
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for MboxrdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if self.at_line_start {
                self.prefix.push(b);
                let gt = self.prefix.iter().take_while(|&&c| c == b'>').count();
                let tail = &self.prefix[gt..];
                if b"From ".starts_with(tail) {
                    if tail.len() == 5 {
                        self.inner.write_all(b">")?;
                        let p = std::mem::take(&mut self.prefix);
                        self.inner.write_all(&p)?;
                        self.at_line_start = false;
                    }
                    continue;
                }
                let p = std::mem::take(&mut self.prefix);
                self.inner.write_all(&p)?;
                self.at_line_start = b == b'\n';
            } else {
                self.inner.write_all(&[b])?;
                if b == b'\n' {
                    self.at_line_start = true;
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Holds a `path.lock` dot-lock file; removed on drop.
struct DotLock {
    path: PathBuf,
}

impl DotLock {
    fn acquire(mbox: &Path) -> Result<DotLock, LocalError> {
        let mut lock = mbox.as_os_str().to_owned();
        lock.push(".lock");
        let path = PathBuf::from(lock);
        // Retry for up to ~30 s: a mail reader holds the lock only briefly.
        // A lock older than 5 minutes is stale (its holder died).
        for attempt in 0..300u32 {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(DotLock { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(300));
                    if stale {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if attempt == 299 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(LocalError::io(&path, "create lock file", e)),
            }
        }
        Err(LocalError::Locked {
            path: mbox.to_path_buf(),
        })
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Appends one message to the mbox at `path` (mboxrd, LF), under both a
/// dot-lock and an fcntl lock as Debian's mail readers expect. On failure the
/// file is truncated back so a half-written message cannot corrupt it.
pub fn deliver_mbox(
    path: &Path,
    envelope_sender: &str,
    message: &mut dyn Read,
    now: SystemTime,
    owner: Option<Owner>,
) -> Result<(), LocalError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        create_dirs(parent, owner)
            .map_err(|e| LocalError::io(parent, "create mailbox directory", e))?;
    }
    let _dotlock = DotLock::acquire(path)?;
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| LocalError::io(path, "open mailbox", e))?;
    fcntl_lock(&file).map_err(|e| LocalError::io(path, "lock mailbox", e))?;
    let start = file
        .seek(SeekFrom::End(0))
        .map_err(|e| LocalError::io(path, "seek mailbox", e))?;
    if start == 0 {
        chown(path, owner).map_err(|e| LocalError::io(path, "set owner of", e))?;
    }
    let sender = if envelope_sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        envelope_sender
    };
    let result = (|| -> io::Result<()> {
        let mut out = BufWriter::new(&file);
        // A mailbox that does not end in a blank line would glue our
        // "From " line onto the previous message's last line.
        let sep = if start > 0 {
            trailing_separator(&file, start)?
        } else {
            ""
        };
        writeln!(out, "{sep}From {} {}", sender, asctime(now))?;
        let mut w = LfWriter::new(MboxrdWriter::new(&mut out));
        io::copy(message, &mut w)?;
        let (inner, _, ends_with_newline) = w.finish()?;
        inner.finish()?;
        // Every message ends with a blank line before the next "From ".
        if !ends_with_newline {
            out.write_all(b"\n")?;
        }
        out.write_all(b"\n")?;
        out.flush()?;
        drop(out);
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = file.set_len(start);
        let _ = file.sync_all();
        return Err(LocalError::io(path, "append to mailbox", e));
    }
    Ok(())
}

/// What to write before a new message so the mbox has "\n\n" between
/// messages, given the current end offset.
fn trailing_separator(mut file: &File, end: u64) -> io::Result<&'static str> {
    let mut tail = [0u8; 2];
    let n = end.min(2) as usize;
    file.seek(SeekFrom::Start(end - n as u64))?;
    file.read_exact(&mut tail[..n])?;
    file.seek(SeekFrom::End(0))?;
    Ok(match &tail[..n] {
        b"\n\n" => "",
        [.., b'\n'] => "\n",
        _ => "\n\n",
    })
}

/// A POSIX (fcntl) write lock over the whole file, waiting for it; released
/// when the file is closed. flock(2) would not interoperate with mutt and
/// procmail, which use fcntl on Debian.
fn fcntl_lock(file: &File) -> io::Result<()> {
    let lock = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as _,
        l_whence: nix::libc::SEEK_SET as _,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_SETLKW(&lock))
        .map(|_| ())
        .map_err(io::Error::from)
}

/// Saves a message the caller must not lose to a fresh file in `dir`
/// (`dead_letter` configured as a directory): a unique name, created
/// exclusively with mode 0600, fsynced. Returns the path.
pub fn save_to_dir(
    dir: &Path,
    message: &mut dyn Read,
    now: SystemTime,
) -> Result<PathBuf, LocalError> {
    create_dirs(dir, None).map_err(|e| LocalError::io(dir, "create directory", e))?;
    let d = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let name = format!(
        "dead.letter.{}.{}.{}",
        d.as_secs(),
        std::process::id(),
        DELIVERIES.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(name);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .map_err(|e| LocalError::io(&path, "create file", e))?;
    let result = (|| -> io::Result<()> {
        let mut w = LfWriter::new(BufWriter::new(file));
        io::copy(message, &mut w)?;
        let (buf, _, _) = w.finish()?;
        buf.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    result.map_err(|e| LocalError::io(&path, "write message", e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_sharing_a_mailbox_get_one_copy() {
        let capture = |_: &str| -> Result<PathBuf, String> { Ok(PathBuf::from("/srv/capture/")) };
        let rcpts = ["a@x", "b@x", "c@x"];
        let (groups, failed) = group_by_mailbox(rcpts.iter().copied(), capture);
        assert!(failed.is_empty());
        assert_eq!(
            groups,
            vec![MailboxGroup {
                path: PathBuf::from("/srv/capture"),
                recipients: vec!["a@x", "b@x", "c@x"],
            }]
        );

        let per_user = |r: &str| {
            let name = r.split('@').next().unwrap_or(r);
            expand_path("/var/mail/./%u", name, None).ok_or_else(|| format!("bad {r}"))
        };
        let rcpts = [
            "root@h",
            "alice@h",
            "root@localhost",
            "../x@h",
            "alice@other",
        ];
        let (groups, failed) = group_by_mailbox(rcpts.iter().copied(), per_user);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].path, PathBuf::from("/var/mail/root"));
        assert_eq!(groups[0].recipients, vec!["root@h", "root@localhost"]);
        assert_eq!(groups[1].recipients, vec!["alice@h", "alice@other"]);
        assert_eq!(failed, vec![("../x@h", "bad ../x@h".to_string())]);

        // Linear: a thousand names into one capture mailbox is one group.
        let names: Vec<String> = (0..1000).map(|i| format!("n{i}")).collect();
        let (groups, _) = group_by_mailbox(names.iter().map(String::as_str), capture);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].recipients.len(), 1000);
    }

    fn lf(data: &[u8]) -> Vec<u8> {
        let mut w = LfWriter::new(Vec::new());
        for chunk in data.chunks(3) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap().0
    }

    #[test]
    fn crlf_becomes_lf_across_chunk_boundaries() {
        assert_eq!(lf(b"a\r\nbb\r\nccc\r\n"), b"a\nbb\nccc\n");
        assert_eq!(lf(b"a\rb\r\n"), b"a\rb\n");
        assert_eq!(lf(b"ab\r"), b"ab\r");
    }

    fn mboxrd(data: &[u8]) -> Vec<u8> {
        let mut w = MboxrdWriter::new(Vec::new());
        for chunk in data.chunks(2) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn mboxrd_quotes_from_lines() {
        assert_eq!(
            mboxrd(b"From me\n>From you\nx From y\n>>From z\nFrom\nFro"),
            b">From me\n>>From you\nx From y\n>>>From z\nFrom\nFro".to_vec()
        );
    }

    #[test]
    fn expand_path_template() {
        let home = Path::new("/home/bob");
        assert_eq!(
            expand_path("~/Maildir", "bob", Some(home)),
            Some(PathBuf::from("/home/bob/Maildir"))
        );
        assert_eq!(
            expand_path("/var/mail/%u", "bob", None),
            Some(PathBuf::from("/var/mail/bob"))
        );
        assert_eq!(
            expand_path("/x/%%u", "bob", None),
            Some(PathBuf::from("/x/%u"))
        );
        assert_eq!(expand_path("~/M", "bob", None), None);
        assert_eq!(expand_path("/var/mail/%u", "../etc", None), None);
        assert_eq!(expand_path("/var/mail/%u", "..", None), None);
    }

    #[test]
    fn asctime_format() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(asctime(t), "Tue Nov 14 22:13:20 2023");
        assert_eq!(asctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
    }

    #[test]
    fn maildir_delivery_is_lf_and_in_new() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let mut msg: &[u8] = b"Subject: x\r\n\r\nbody\r\n";
        let p = deliver_maildir(&md, &mut msg, "host:a/b", SystemTime::now(), None).unwrap();
        assert!(p.starts_with(md.join("new")));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(name.contains("host\\072a\\057b,S=17"), "{name}");
        assert_eq!(fs::read(&p).unwrap(), b"Subject: x\n\nbody\n");
        assert!(md.join("cur").is_dir());
        assert_eq!(fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn mbox_appends_with_separators_and_quoting() {
        let dir = tempfile::tempdir().unwrap();
        let mb = dir.path().join("mail").join("bob");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut m1: &[u8] = b"Subject: 1\r\n\r\nFrom here\r\n";
        deliver_mbox(&mb, "a@x", &mut m1, t, None).unwrap();
        let mut m2: &[u8] = b"Subject: 2\r\n\r\nno newline";
        deliver_mbox(&mb, "", &mut m2, t, None).unwrap();
        let text = fs::read_to_string(&mb).unwrap();
        assert_eq!(
            text,
            "From a@x Tue Nov 14 22:13:20 2023\nSubject: 1\n\n>From here\n\n\
             From MAILER-DAEMON Tue Nov 14 22:13:20 2023\nSubject: 2\n\nno newline\n\n"
        );
        assert!(!dir.path().join("mail/bob.lock").exists());
    }

    #[test]
    fn mbox_lock_times_out_only_when_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let mb = dir.path().join("bob");
        // A stale lock (old mtime) is broken.
        let lock = dir.path().join("bob.lock");
        let f = File::create(&lock).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(600))
            .unwrap();
        let mut m: &[u8] = b"x\r\n";
        deliver_mbox(&mb, "a@x", &mut m, SystemTime::now(), None).unwrap();
        assert!(!lock.exists());
    }

    #[test]
    fn save_to_dir_writes_unique_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut a: &[u8] = b"A\r\n";
        let mut b: &[u8] = b"B\r\n";
        let pa = save_to_dir(dir.path(), &mut a, SystemTime::now()).unwrap();
        let pb = save_to_dir(dir.path(), &mut b, SystemTime::now()).unwrap();
        assert_ne!(pa, pb);
        assert_eq!(fs::read(pa).unwrap(), b"A\n");
    }
}
