//! SMTP reply lines (`transport::reply::parse_line`) and what is derived
//! from a reply (`Reply::enhanced`, `one_line`, `refusal_class`,
//! `transport::hint`). The input is what a server sends: lines ending in
//! LF. Lines are gathered into replies the way the client does (same code,
//! `-` continues, a space ends).
//!
//! Invariants: no panic; a parsed line written back in wire form parses to
//! the same values; `one_line` never contains a control character (a
//! hostile server must not forge terminal output); an enhanced status code
//! is three dot-separated numbers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailhop::transport::reply::parse_line;
use mailhop::transport::{Reply, hint};

fn check_line(line: &[u8]) -> Option<(u16, bool, String)> {
    let parsed = parse_line(line)?;
    let (code, last, text) = &parsed;
    assert!((200..600).contains(code));
    let wire = format!("{code}{}{text}\r\n", if *last { ' ' } else { '-' });
    assert_eq!(
        parse_line(wire.as_bytes()).as_ref(),
        Some(&parsed),
        "line round trip"
    );
    Some(parsed)
}

fn check_reply(reply: &Reply) {
    let one = reply.one_line();
    assert!(
        !one.chars().any(char::is_control),
        "control character in {one:?}"
    );
    assert!(one.starts_with(&reply.code.to_string()));
    if let Some(enhanced) = reply.enhanced() {
        let parts: Vec<&str> = enhanced.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(
            parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        );
    }
    let _ = reply.refusal_class();
    let _ = hint(reply);
    assert_eq!(reply.to_string(), one);
}

fuzz_target!(|data: &[u8]| {
    let mut lines: Vec<String> = Vec::new();
    let mut code = None;
    for line in data.split_inclusive(|&b| b == b'\n') {
        let Some((c, last, text)) = check_line(line) else {
            lines.clear();
            code = None;
            continue;
        };
        if code.is_some_and(|prev| prev != c) {
            lines.clear();
        }
        code = Some(c);
        lines.push(text);
        if last {
            check_reply(&Reply {
                code: c,
                lines: std::mem::take(&mut lines),
            });
            code = None;
        }
    }
});
