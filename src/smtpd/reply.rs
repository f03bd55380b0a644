//! SMTP replies as the server sends them: a code, an enhanced status code
//! (RFC 3463) and text that is always one bounded, printable line.

use std::fmt;

/// The longest reply text we send. RFC 5321 allows 512 octets per reply
/// line; the code and the enhanced status take the rest.
pub const MAX_TEXT: usize = 400;

/// One server reply. Multi-line replies (EHLO) carry extra lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// `2.0.0`; empty for replies that carry none (220, 221 greeting lines
    /// keep one too, but 354 and 334 never do).
    pub status: &'static str,
    pub text: String,
    /// Further lines (EHLO keywords), sent before `text` as `250-…`.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status,
            text: sanitize(&text.into()),
            lines: Vec::new(),
        }
    }

    /// A 2xx or 3xx reply.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// The reply as it goes on the wire, CRLF-terminated.
    pub fn to_wire(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code;
        let sep = |s: &str| if s.is_empty() { "" } else { " " };
        // A multi-line reply: the first line carries the text, the others the
        // keywords (RFC 5321 4.2.1); all but the last use `-`.
        let mut all: Vec<&str> = Vec::with_capacity(self.lines.len() + 1);
        all.push(&self.text);
        all.extend(self.lines.iter().map(String::as_str));
        let last = all.len().saturating_sub(1);
        for (i, line) in all.iter().enumerate() {
            let dash = if i == last { ' ' } else { '-' };
            // Keyword lines carry no enhanced status (EHLO keywords are
            // parsed by clients word by word).
            if i == 0 {
                write!(
                    f,
                    "{code}{dash}{}{}{line}\r\n",
                    self.status,
                    sep(self.status)
                )?;
            } else {
                write!(f, "{code}{dash}{line}\r\n")?;
            }
        }
        Ok(())
    }
}

/// One line of printable ASCII, at most [`MAX_TEXT`] bytes: control
/// characters (CR, LF, NUL, escapes) and non-ASCII become `?`, newlines
/// become `; `. A reply line must never be split or smuggle a second one.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT));
    for c in text.trim().chars() {
        if out.len() >= MAX_TEXT {
            out.push_str("...");
            break;
        }
        match c {
            '\n' => out.push_str("; "),
            '\r' => {}
            ' '..='~' => out.push(c),
            '\t' => out.push(' '),
            _ => out.push('?'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_status() {
        let r = Reply::new(250, "2.1.0", "Ok");
        assert_eq!(r.to_string(), "250 2.1.0 Ok\r\n");
        assert!(r.is_positive());
    }

    #[test]
    fn no_status() {
        assert_eq!(
            Reply::new(354, "", "End data with <CR><LF>.<CR><LF>").to_string(),
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
    }

    #[test]
    fn multi_line() {
        let mut r = Reply::new(250, "", "mx.example greets you");
        r.lines = vec!["PIPELINING".into(), "SIZE 10".into()];
        assert_eq!(
            r.to_string(),
            "250-mx.example greets you\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
    }

    #[test]
    fn text_cannot_break_the_line() {
        let r = Reply::new(554, "5.0.0", "a\r\n250 2.0.0 fake\0\u{1b}[31m é");
        let wire = r.to_string();
        assert_eq!(wire.matches("\r\n").count(), 1);
        assert!(wire.is_ascii());
        assert!(!wire.contains('\0'));
        let long = Reply::new(554, "5.0.0", "x".repeat(10_000));
        assert!(long.to_string().len() < 512);
    }
}
