//! The one log line per message: to syslog (facility mail, so journald and
//! /var/log/mail.log see it) and optionally to a file; for mail to a
//! smarthost, also Postfix's pickup, qmgr and per-recipient smtp lines,
//! which Postfix log tools read. Lines carry envelope
//! facts only; callers must never pass bodies or secrets, and `field`
//! escapes values so a hostile address cannot forge extra log lines.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// syslog severities we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Err = 3,
    Warning = 4,
    Info = 6,
}

/// LOG_MAIL facility (2) shifted into the priority field.
const FACILITY_MAIL: u8 = 2 << 3;

/// The most characters of one value `field` puts in a log line. Values
/// come from callers and the network (a 500 KB `To:` field, a server's
/// reply); a line is for finding a message, not for storing it.
pub const FIELD_MAX_CHARS: usize = 2048;

/// What marks a value that was cut short.
const ELLIPSIS: char = '…';

/// Makes a value safe for one log line: control characters (C0, DEL, C1)
/// and bidi overrides are escaped, so a header value containing CR/LF cannot start a new log
/// line, and the value is cut to [`FIELD_MAX_CHARS`] characters plus "…".
pub fn field(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(FIELD_MAX_CHARS + 8));
    let mut chars = value.chars();
    for c in chars.by_ref().take(FIELD_MAX_CHARS) {
        push_escaped(&mut out, c);
    }
    if chars.next().is_some() {
        out.push(ELLIPSIS);
    }
    out
}

/// Text for a terminal or any human-facing output: control characters,
/// and with them the ESC that starts every terminal escape sequence, are
/// escaped exactly as in the log file (`\u{1b}`, `\n`), so a hostile
/// subject or address cannot move the cursor, retitle the window or fake
/// lines. Borrowed when there is nothing to escape; not length-bounded.
pub fn printable(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 16);
    for c in value.chars() {
        push_escaped(&mut out, c);
    }
    std::borrow::Cow::Owned(out)
}

/// Whether `c` must not reach a log line or a terminal as itself: control
/// characters (C0, DEL, C1), and the bidirectional overrides and isolates
/// that make a terminal show text in another order than it is stored.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    if needs_escape(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// The program name as it goes before `[pid]:`. It comes from `-L`, so it
/// is escaped like a value and kept short (syslog's TAG is at most 32
/// characters by RFC 3164); a newline in it must not forge a line.
fn tag_text(tag: &str) -> String {
    const TAG_MAX_CHARS: usize = 32;
    let mut out = String::with_capacity(tag.len().min(TAG_MAX_CHARS * 2));
    for c in tag.chars().take(TAG_MAX_CHARS) {
        // Spaces and the `[`, `:` that end a tag would let `-L` shift the
        // fields log readers split on.
        if c.is_whitespace() || matches!(c, '[' | ']' | ':') {
            out.push('_');
        } else {
            push_escaped(&mut out, c);
        }
    }
    out
}

/// Sends one line to the local syslog socket. Logging must never make a
/// delivery fail, so errors (no syslog daemon in a container) are ignored.
pub fn syslog(tag: &str, severity: Severity, line: &str) {
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let msg = format!(
        "<{}>{}[{}]: {}",
        FACILITY_MAIL | severity as u8,
        tag_text(tag),
        std::process::id(),
        line
    );
    for path in ["/dev/log", "/var/run/syslog"] {
        if sock.send_to(msg.as_bytes(), path).is_ok() {
            return;
        }
    }
}

/// This machine's name as syslog daemons write it in a line: the first
/// label of the kernel's hostname (`-` if it has none).
fn syslog_host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let name = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let first = name.split('.').next().unwrap_or_default();
        let clean: String = first
            .chars()
            .take(64)
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect();
        if clean.is_empty() { "-".into() } else { clean }
    })
}

/// Appends one timestamped line to `path` (created 0640). Returns the error
/// so `-X` misuse can be reported once, but delivery does not depend on it.
///
/// The line is laid out as a syslog daemon writes mail.log with RFC 3339
/// timestamps, `TIMESTAMP HOST TAG[PID]: TEXT`, so log tools made for
/// Postfix's mail.log (pflogsumm, fail2ban) read the file as they read
/// syslog.
pub fn to_file(path: &Path, timestamp: &str, tag: &str, line: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)?;
    // One write call per line, so concurrent processes appending to the
    // same file (O_APPEND) do not interleave within a line.
    let text = format!(
        "{timestamp} {} {}[{}]: {line}\n",
        syslog_host(),
        tag_text(tag),
        std::process::id()
    );
    f.write_all(text.as_bytes())
}

/// The program part of a Postfix-style tag: Postfix logs as
/// `postfix/smtp[pid]`, and log tools (pflogsumm's `--syslog-name`) expect
/// `NAME/PROGRAM`; this is the `PROGRAM` of each line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// A message entered the queue (Postfix's pickup: `uid=… from=<…>`).
    Pickup,
    /// The message's envelope (Postfix's qmgr: `from=<…>, size=…, nrcpt=…`).
    Qmgr,
    /// One recipient's delivery attempt (Postfix's smtp: `to=<…>, …`).
    Smtp,
}

impl Program {
    /// `mailhop` becomes `mailhop/smtp`. The base is cut so that the
    /// whole tag fits syslog's 32 characters with its program intact.
    pub fn tag(self, base: &str) -> String {
        let name = match self {
            Program::Pickup => "pickup",
            Program::Qmgr => "qmgr",
            Program::Smtp => "smtp",
        };
        let room = 32 - 1 - name.len();
        let base: String = tag_text(base).chars().take(room).collect();
        format!("{base}/{name}")
    }
}

/// A recipient's status in Postfix's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Sent,
    Deferred,
    Bounced,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Deferred => "deferred",
            Status::Bounced => "bounced",
        }
    }

    /// The DSN code when the text carries none.
    fn default_dsn(self) -> &'static str {
        match self {
            Status::Sent => "2.0.0",
            Status::Deferred => "4.0.0",
            Status::Bounced => "5.0.0",
        }
    }
}

/// One recipient's line, the facts of Postfix's smtp delivery line.
#[derive(Debug, Clone)]
pub struct RecipientLine<'a> {
    pub queue_id: &'a str,
    pub to: &'a str,
    /// The smarthost's name, if one was configured.
    pub host: Option<&'a str>,
    /// Its address, if a connection was made.
    pub peer: Option<std::net::SocketAddr>,
    /// From arrival to the verdict.
    pub delay: std::time::Duration,
    /// How `delay` divides up, when known.
    pub delays: Option<Delays>,
    pub status: Status,
    /// The server's reply, or why; what Postfix puts in parentheses.
    pub text: &'a str,
}

/// The parts of a delivery's time that mailhop measures. Postfix's
/// `delays=a/b/c/d` is time before the queue manager, in it, connection
/// setup and transmission; mailhop has no queue manager, so `a` is the
/// rest of `delay` (waiting in the queue) and `b` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delays {
    /// Connecting, TLS and login (or reusing a connection).
    pub setup: std::time::Duration,
    /// MAIL to the reply after the data.
    pub transfer: std::time::Duration,
}

/// `QUEUEID: to=<a@b>, relay=host[1.2.3.4]:587, delay=0.84,
/// delays=0.01/0/0.5/0.33, dsn=2.0.0, status=sent (250 2.0.0 OK …)`:
/// Postfix's smtp line, field for field, which is what pflogsumm, fail2ban
/// filters and Postfix dashboards parse.
pub fn recipient_line(r: &RecipientLine<'_>) -> String {
    let relay = match (r.host, r.peer) {
        (Some(h), Some(p)) => format!("{}[{}]:{}", field(h), p.ip(), p.port()),
        (None, Some(p)) => format!("{}[{}]:{}", p.ip(), p.ip(), p.port()),
        (Some(h), None) => field(h),
        (None, None) => "none".into(),
    };
    let delays = r
        .delays
        .map(|d| {
            let waited = r.delay.saturating_sub(d.setup).saturating_sub(d.transfer);
            format!(
                " delays={}/0/{}/{},",
                seconds(waited),
                seconds(d.setup),
                seconds(d.transfer)
            )
        })
        .unwrap_or_default();
    format!(
        "{}: to=<{}>, relay={relay}, delay={},{delays} dsn={}, status={} ({})",
        field(r.queue_id),
        angle_safe(r.to),
        seconds(r.delay),
        dsn_code(r.text, r.status),
        r.status.word(),
        field(r.text)
    )
}

/// Seconds as Postfix writes them: two decimals, trailing zeros dropped
/// (`0.84`, `0.1`, `0`, `12`).
fn seconds(d: std::time::Duration) -> String {
    let text = format!("{:.2}", d.as_secs_f64());
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `QUEUEID: uid=1000 from=<s@x>`: Postfix's pickup line, by which log
/// tools count received messages.
pub fn pickup_line(queue_id: &str, uid: u32, sender: &str) -> String {
    format!(
        "{}: uid={uid} from=<{}>",
        field(queue_id),
        angle_safe(sender)
    )
}

/// `QUEUEID: from=<s@x>, size=1234, nrcpt=2 (queue active)`: Postfix's
/// qmgr line, which gives log tools the sender and size.
pub fn envelope_line(queue_id: &str, sender: &str, size: u64, nrcpt: usize) -> String {
    format!(
        "{}: from=<{}>, size={size}, nrcpt={nrcpt} (queue active)",
        field(queue_id),
        angle_safe(sender)
    )
}

/// An address between `<` and `>`: escaped like any field, and with the
/// characters that end the field in Postfix log parsers (`>` and `,`)
/// escaped too, so an address cannot add fields to its line.
fn angle_safe(address: &str) -> String {
    field(address).replace('>', "\\x3e").replace(',', "\\x2c")
}

/// The enhanced status code (RFC 3463) in a reply text (`250 2.0.0 OK`,
/// `5.1.1 unknown`) if its class agrees with the status, else the
/// status's default.
fn dsn_code(text: &str, status: Status) -> String {
    let class = status.default_dsn().as_bytes()[0];
    text.split_whitespace()
        .take(2)
        .find(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
                && w.as_bytes()[0] == class
        })
        .unwrap_or(status.default_dsn())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_escapes_line_breaks() {
        assert_eq!(field("a\r\nb"), "a\\r\\nb");
        assert_eq!(field("Jörg <j@x>"), "Jörg <j@x>");
        assert_eq!(
            field("\u{1b}]0;x\u{7}\u{7f}\u{9b}"),
            "\\u{1b}]0;x\\u{7}\\u{7f}\\u{9b}"
        );
    }

    #[test]
    fn field_is_bounded() {
        let huge = "a".repeat(500_000);
        let out = field(&huge);
        assert_eq!(out.chars().count(), FIELD_MAX_CHARS + 1);
        assert!(out.ends_with('…'));
        let exact = "b".repeat(FIELD_MAX_CHARS);
        assert_eq!(field(&exact), exact);
        // Escapes count once per source character, so the bound holds in
        // characters of input, and the output stays one line.
        let breaks = "\n".repeat(100_000);
        let out = field(&breaks);
        assert!(
            !out.contains('\n') && out.len() < FIELD_MAX_CHARS * 3,
            "{}",
            out.len()
        );
    }

    #[test]
    fn printable_escapes_terminal_controls_like_the_log() {
        assert!(matches!(
            printable("plain Jörg"),
            std::borrow::Cow::Borrowed(_)
        ));
        let hostile = "Subject \u{1b}[2J\u{1b}]0;owned\u{7}\r\nfake\u{9b}31m\u{7f}";
        let shown = printable(hostile);
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(shown, field(hostile));
        // Bidi overrides would reorder what the reader sees.
        assert_eq!(printable("a\u{202e}gpj.exe"), "a\\u{202e}gpj.exe");
        assert_eq!(field("a\u{2066}b"), "a\\u{2066}b");
        assert_eq!(
            shown,
            "Subject \\u{1b}[2J\\u{1b}]0;owned\\u{7}\\r\\nfake\\u{9b}31m\\u{7f}"
        );
    }

    #[test]
    fn tag_cannot_forge_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let tag = "cron\n2026-01-01 root[1]: status=sent [x]";
        to_file(&p, "T1", tag, "one").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let line = text.lines().next().unwrap();
        assert!(
            line.starts_with(&format!(
                "T1 {} cron_2026-01-01_root_1___status=[",
                syslog_host()
            )),
            "{line}"
        );
        assert_eq!(tag_text(&"x".repeat(100)).len(), 32);
        assert_eq!(tag_text("mailhop"), "mailhop");
    }

    #[test]
    fn recipient_lines_read_like_postfix() {
        let peer: std::net::SocketAddr = "1.2.3.4:587".parse().unwrap();
        let mut r = RecipientLine {
            queue_id: "ABC123",
            to: "a@b.example",
            host: Some("smtp.office365.com"),
            peer: Some(peer),
            delay: std::time::Duration::from_millis(840),
            delays: None,
            status: Status::Sent,
            text: "250 2.0.0 OK <x@y> [Hostname=Z]",
        };
        assert_eq!(
            recipient_line(&r),
            "ABC123: to=<a@b.example>, relay=smtp.office365.com[1.2.3.4]:587, delay=0.84, \
             dsn=2.0.0, status=sent (250 2.0.0 OK <x@y> [Hostname=Z])"
        );
        r.delays = Some(Delays {
            setup: std::time::Duration::from_millis(500),
            transfer: std::time::Duration::from_millis(330),
        });
        assert!(
            recipient_line(&r).contains(", delay=0.84, delays=0.01/0/0.5/0.33, dsn=2.0.0, "),
            "{}",
            recipient_line(&r)
        );
        r.delays = None;
        r.status = Status::Deferred;
        r.peer = None;
        r.text = "connection refused";
        assert_eq!(
            recipient_line(&r),
            "ABC123: to=<a@b.example>, relay=smtp.office365.com, delay=0.84, dsn=4.0.0, \
             status=deferred (connection refused)"
        );
        r.status = Status::Bounced;
        r.host = None;
        r.text = "550 5.1.1 <a@b> unknown\r\nforged: line";
        let line = recipient_line(&r);
        assert!(line.contains("relay=none, "), "{line}");
        assert!(
            line.contains("dsn=5.1.1, status=bounced (550 5.1.1"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
        // A 2xx code in a bounce's text is not its DSN.
        r.text = "2.0.0 odd";
        assert!(recipient_line(&r).contains("dsn=5.0.0"));
        // An address cannot end its field early or add fields.
        r.to = "x>, relay=evil, status=sent@y";
        let line = recipient_line(&r);
        assert!(
            line.starts_with("ABC123: to=<x\\x3e\\x2c relay=evil\\x2c status=sent@y>, relay=none,"),
            "{line}"
        );
        assert_eq!(line.matches(", status=").count(), 1, "{line}");
    }

    #[test]
    fn seconds_read_like_postfix() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(seconds(ms(0)), "0");
        assert_eq!(seconds(ms(100)), "0.1");
        assert_eq!(seconds(ms(12_000)), "12");
        assert_eq!(seconds(ms(100_004)), "100");
        assert_eq!(seconds(ms(2)), "0");
        assert_eq!(seconds(ms(5)), "0.01");
    }

    #[test]
    fn pickup_and_envelope_lines() {
        assert_eq!(pickup_line("Q1", 1000, "s@x"), "Q1: uid=1000 from=<s@x>");
        assert_eq!(pickup_line("Q1", 0, ""), "Q1: uid=0 from=<>");
        assert_eq!(
            envelope_line("Q1", "s@x", 1234, 2),
            "Q1: from=<s@x>, size=1234, nrcpt=2 (queue active)"
        );
        assert_eq!(Program::Smtp.tag("mailhop"), "mailhop/smtp");
        assert_eq!(tag_text(&Program::Qmgr.tag("mailhop")), "mailhop/qmgr");
        let long = Program::Pickup.tag(&"x\n".repeat(40));
        assert!(long.ends_with("/pickup") && long.len() == 32, "{long}");
        assert_eq!(tag_text(&long), long);
    }

    #[test]
    fn file_lines_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        to_file(&p, "T1", "mailhop", "one").unwrap();
        to_file(&p, "T2", "mailhop", "two").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let host = format!("T1 {} mailhop[", syslog_host());
        assert!(
            lines[0].starts_with(&host) && lines[0].ends_with("]: one"),
            "{}",
            lines[0]
        );
    }
}
