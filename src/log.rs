//! The one log line per message: to syslog (facility mail, so journald and
//! /var/log/mail.log see it) and optionally to a file. Lines carry envelope
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

/// Appends one timestamped line to `path` (created 0640). Returns the error
/// so `-X` misuse can be reported once, but delivery does not depend on it.
pub fn to_file(path: &Path, timestamp: &str, tag: &str, line: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)?;
    // One write call per line, so concurrent processes appending to the
    // same file (O_APPEND) do not interleave within a line.
    let text = format!(
        "{timestamp} {}[{}]: {line}\n",
        tag_text(tag),
        std::process::id()
    );
    f.write_all(text.as_bytes())
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
            line.starts_with("T1 cron_2026-01-01_root_1___status=["),
            "{line}"
        );
        assert_eq!(tag_text(&"x".repeat(100)).len(), 32);
        assert_eq!(tag_text("mailhop"), "mailhop");
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
        assert!(lines[0].starts_with("T1 mailhop[") && lines[0].ends_with("]: one"));
    }
}
