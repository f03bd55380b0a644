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

/// Makes a value safe for one log line: control characters and non-ASCII
/// bytes are escaped, so a header value containing CR/LF cannot start a new
/// log line.
pub fn field(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
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
        tag,
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
    let text = format!("{timestamp} {tag}[{}]: {line}\n", std::process::id());
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_escapes_line_breaks() {
        assert_eq!(field("a\r\nb"), "a\\r\\nb");
        assert_eq!(field("Jörg <j@x>"), "Jörg <j@x>");
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
