//! The `message/delivery-status` body part of a bounce (RFC 3464).
//!
//! RFC 3464 §2.1 makes that part a list of header-like field groups: it
//! must be 7bit, its Content-Type takes no charset, and long fields are
//! folded as header fields are. A generic MIME builder gets all three
//! wrong (quoted-printable soft breaks inside a `Diagnostic-Code` make
//! readers see a bogus field), so the part is written here, whole, and
//! handed to the builder as a raw part.
//!
//! Values come from the queue and from remote servers, so everything is
//! forced into printable US-ASCII here: addresses that are not become the
//! RFC 6533 `utf-8` address type with `\x{HEX}` escapes.

use std::fmt::Write as _;

/// The part's own header: no parameters, 7bit (RFC 3464 §2.1).
const PART_HEADER: &str =
    "Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: 7bit\r\n\r\n";

/// Lines are folded to this length where whitespace allows (RFC 5322
/// §2.1.1's 78), and never left longer than [`HARD_LIMIT`].
const SOFT_LIMIT: usize = 78;
const HARD_LIMIT: usize = 998;

/// The most characters of one value kept; a server's reply can be long,
/// a bounce does not need all of it.
const MAX_VALUE_CHARS: usize = 4000;

/// A decoded ORCPT value (RFC 3461 §4.2), `addr-type;address`, split:
/// the type an atom, the address printable ASCII. `None` for anything
/// else, which is then neither accepted, relayed nor written into a bounce.
pub fn orcpt(value: &str) -> Option<(&str, &str)> {
    let (kind, addr) = value.split_once(';')?;
    let atom = !kind.is_empty() && kind.bytes().all(super::header::is_atext);
    let printable = !addr.trim().is_empty() && addr.bytes().all(|b| (b' '..=b'~').contains(&b));
    (atom && printable).then_some((kind, addr))
}

/// One field group: the per-message fields, or one recipient's.
pub type Fields = Vec<(&'static str, String)>;

/// The whole MIME part, headers included: `per_message` fields, then a
/// blank line and each recipient's fields, every field folded.
pub fn part(per_message: &Fields, per_recipient: &[Fields]) -> Vec<u8> {
    let mut out = String::from(PART_HEADER);
    write_group(&mut out, per_message);
    for group in per_recipient {
        out.push_str("\r\n");
        write_group(&mut out, group);
    }
    out.into_bytes()
}

fn write_group(out: &mut String, fields: &Fields) {
    for (name, value) in fields {
        out.push_str(&fold_field(name, value));
    }
}

/// `Name: value` and CRLF, folded at whitespace (RFC 5322 §2.2.3) so no
/// line passes [`SOFT_LIMIT`] where a space allows, and a run of
/// [`HARD_LIMIT`] without one is broken with an inserted space: a DSN
/// field is text for people, and an over-long line would be refused.
/// The value is made [`printable_ascii`] first.
pub fn fold_field(name: &str, value: &str) -> String {
    let value = printable_ascii(value);
    let words = split_long_words(value.split(' ').filter(|w| !w.is_empty()));
    let mut out = String::with_capacity(name.len() + value.len() + 16);
    out.push_str(name);
    out.push(':');
    let mut line_len = out.len();
    for word in words {
        if line_len + 1 + word.len() > SOFT_LIMIT && line_len > name.len() + 1 {
            out.push_str("\r\n");
            line_len = 0;
        }
        out.push(' ');
        out.push_str(&word);
        line_len += 1 + word.len();
    }
    out.push_str("\r\n");
    out
}

/// Words no longer than the hard limit allows on a line of their own.
fn split_long_words<'a>(words: impl Iterator<Item = &'a str>) -> Vec<String> {
    // Room for the longest field name before the first word.
    const MAX_WORD: usize = HARD_LIMIT - 64;
    let mut out = Vec::new();
    for word in words {
        // ASCII by now, so byte chunks are character chunks.
        let mut rest = word;
        while rest.len() > MAX_WORD {
            let (head, tail) = rest.split_at(MAX_WORD);
            out.push(head.to_string());
            rest = tail;
        }
        out.push(rest.to_string());
    }
    out
}

/// Printable US-ASCII only: line breaks and tabs become spaces, other
/// controls and non-ASCII characters `\x{HEX}` (the RFC 6533 escape,
/// readable to people and unambiguous), and the value is capped.
fn printable_ascii(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_VALUE_CHARS));
    for c in value.chars().take(MAX_VALUE_CHARS) {
        match c {
            '\r' | '\n' | '\t' => out.push(' '),
            ' '..='~' => out.push(c),
            _ => {
                let _ = write!(out, "\\x{{{:X}}}", c as u32);
            }
        }
    }
    out
}

/// A `Final-Recipient` / `Original-Recipient` value: `rfc822; addr` for an
/// ASCII address, else RFC 6533 §3's `utf-8; ` with `\x{HEX}` for every
/// character outside the xtext-safe range.
pub fn recipient(address: &str) -> String {
    if address.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return format!("rfc822; {address}");
    }
    let mut out = String::from("utf-8; ");
    for c in address.chars() {
        match c {
            '!'..='~' if !matches!(c, '+' | '=' | '\\') => out.push(c),
            _ => {
                let _ = write!(out, "\\x{{{:X}}}", c as u32);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(part: &[u8]) -> Vec<String> {
        String::from_utf8(part.to_vec())
            .unwrap()
            .split("\r\n")
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn orcpt_is_an_atom_type_and_a_printable_address() {
        assert_eq!(orcpt("rfc822;a@b"), Some(("rfc822", "a@b")));
        assert_eq!(orcpt("utf-8;\"a b\"@c"), Some(("utf-8", "\"a b\"@c")));
        for bad in [
            "rfc822",
            ";a@b",
            "rfc(822);a@b",
            "rfc822;",
            "rfc822; ",
            "x;a\r\nB: c",
        ] {
            assert_eq!(orcpt(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn part_is_7bit_without_parameters_and_grouped() {
        let per_message: Fields = vec![("Reporting-MTA", "dns; host".into())];
        let rcpts = vec![
            vec![
                ("Final-Recipient", recipient("a@x")),
                ("Status", "5.1.1".into()),
            ],
            vec![
                ("Final-Recipient", recipient("b@x")),
                ("Status", "4.4.7".into()),
            ],
        ];
        let p = part(&per_message, &rcpts);
        assert!(p.is_ascii());
        assert_eq!(
            String::from_utf8(p).unwrap(),
            "Content-Type: message/delivery-status\r\n\
             Content-Transfer-Encoding: 7bit\r\n\r\n\
             Reporting-MTA: dns; host\r\n\r\n\
             Final-Recipient: rfc822; a@x\r\nStatus: 5.1.1\r\n\r\n\
             Final-Recipient: rfc822; b@x\r\nStatus: 4.4.7\r\n"
        );
    }

    #[test]
    fn long_values_fold_at_whitespace_and_unfold_to_the_same_text() {
        let words: Vec<String> = (0..200).map(|i| format!("word{i}")).collect();
        let value = format!("smtp; 550 5.7.1 {}", words.join(" "));
        let folded = fold_field("Diagnostic-Code", &value);
        let ls = lines(folded.as_bytes());
        assert!(ls.len() > 10, "{folded}");
        for (i, l) in ls.iter().enumerate() {
            assert!(l.len() <= SOFT_LIMIT, "{l}");
            // Continuation lines start with whitespace; no line is empty
            // except the end.
            if i > 0 && !l.is_empty() {
                assert!(l.starts_with(' '), "{l:?}");
            }
        }
        let unfolded = folded.trim_end().replace("\r\n", "");
        assert_eq!(unfolded, format!("Diagnostic-Code: {value}"));
    }

    #[test]
    fn hostile_values_stay_in_their_field() {
        let f = fold_field(
            "Diagnostic-Code",
            "smtp; 550 x\r\nStatus: 2.0.0\r\n\r\nFake: y",
        );
        assert_eq!(lines(f.as_bytes()).len(), 2, "{f}");
        assert!(f.starts_with("Diagnostic-Code: smtp; 550 x Status: 2.0.0 Fake: y\r\n"));
        let f = fold_field("Diagnostic-Code", "smtp; 550 J\u{f6}rg \u{1b}[2J");
        assert!(f.is_ascii() && !f.contains('\u{1b}'), "{f}");
        assert!(f.contains("J\\x{F6}rg \\x{1B}[2J"), "{f}");
        // A word with no whitespace at all is still cut under 998.
        let f = fold_field("Diagnostic-Code", &"x".repeat(5000));
        assert!(lines(f.as_bytes()).iter().all(|l| l.len() <= HARD_LIMIT));
        // And the value is capped.
        assert!(printable_ascii(&"y ".repeat(100_000)).len() <= MAX_VALUE_CHARS);
    }

    #[test]
    fn utf8_recipients_use_the_rfc6533_form() {
        assert_eq!(recipient("a@example.org"), "rfc822; a@example.org");
        assert_eq!(
            recipient("j\u{f6}rg+x@ex\u{e4}mple.org"),
            "utf-8; j\\x{F6}rg\\x{2B}x@ex\\x{E4}mple.org"
        );
        assert!(recipient("a b\r\n@x").is_ascii());
        assert!(!recipient("a b\r\n@x").contains('\n'));
    }
}
