//! The RFC 5322 header block as an ordered list of raw fields.
//!
//! This module owns splitting a header block into fields, looking fields up
//! by name, editing the list (remove, insert, replace) and writing it back,
//! plus building new fields: folding long values and encoding display-name
//! phrases. A parsed field keeps its exact bytes (folding, odd spacing,
//! 8-bit data) so that everything nobody edits goes back out byte for byte;
//! mail is often signed, and we are a relay, not a rewriter.
//!
//! Everything here is a pure function over bytes: headers come from
//! arbitrary programs, so no input may make it panic.

use std::fmt;

const CRLF: &[u8] = b"\r\n";

/// RFC 5322 2.1.1: lines SHOULD stay within 78 characters, CRLF excluded.
const LINE_LIMIT: usize = 78;

/// Longest slice of input quoted in an error message, in characters.
const EXCERPT_CHARS: usize = 60;

/// Shows at most [`EXCERPT_CHARS`] characters of `bytes`, lossily decoded
/// and quoted, so error messages name the offending text without dumping
/// a megabyte of header or raw 8-bit bytes onto a terminal.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    // Decoding only a bounded prefix keeps huge inputs cheap; four bytes
    // per character is the most UTF-8 can use.
    let head = bytes.get(..EXCERPT_CHARS * 4).unwrap_or(bytes);
    let text = String::from_utf8_lossy(head);
    let mut chars = text.chars();
    let shown: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() || head.len() < bytes.len() {
        format!("{shown:?}...")
    } else {
        format!("{shown:?}")
    }
}

/// Why a header block could not be split into fields. Line numbers count
/// from 1 within the header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The block starts with a folded (whitespace-led) line, which has no
    /// field to continue.
    ContinuationFirst {
        /// Line number.
        line: usize,
        /// Quoted excerpt of the line.
        text: String,
    },
    /// A line that is neither a continuation nor contains a colon.
    MissingColon {
        /// Line number.
        line: usize,
        /// Quoted excerpt of the line.
        text: String,
    },
    /// A line with a colon, but what precedes it is not a field name
    /// (empty, or holding spaces, control or 8-bit characters).
    InvalidName {
        /// Line number.
        line: usize,
        /// Quoted excerpt of the line.
        text: String,
    },
    /// An empty line inside the block; the separator line must have been
    /// removed by the caller, so this is a framing bug or a broken input.
    EmptyLine {
        /// Line number.
        line: usize,
    },
    /// The last line does not end in CRLF.
    Unterminated {
        /// Line number.
        line: usize,
        /// Quoted excerpt of the line.
        text: String,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::ContinuationFirst { line, text } => write!(
                f,
                "line {line}: continuation line before any header field: {text}"
            ),
            HeaderError::MissingColon { line, text } => {
                write!(f, "line {line}: header field without a colon: {text}")
            }
            HeaderError::InvalidName { line, text } => {
                write!(f, "line {line}: invalid header field name: {text}")
            }
            HeaderError::EmptyLine { line } => {
                write!(f, "line {line}: empty line inside the header block")
            }
            HeaderError::Unterminated { line, text } => {
                write!(f, "line {line}: header line does not end in CRLF: {text}")
            }
        }
    }
}

impl std::error::Error for HeaderError {}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// RFC 5322 3.6.8 ftext: printable US-ASCII except the colon.
fn is_name_char(b: u8) -> bool {
    (33..=126).contains(&b) && b != b':'
}

/// For a line that starts a field, the end of the name and the index of
/// the colon. Whitespace between them is obs-syntax (RFC 5322 4.5) that
/// old software still writes, so it is accepted and left in place.
fn field_start(line: &[u8]) -> Option<(usize, usize)> {
    let name_end = line
        .iter()
        .position(|&b| !is_name_char(b))
        .unwrap_or(line.len());
    if name_end == 0 {
        return None;
    }
    let gap = line.get(name_end..)?.iter().position(|&b| !is_wsp(b))?;
    let colon = name_end + gap;
    (line.get(colon) == Some(&b':')).then_some((name_end, colon))
}

/// Whether `line` (with or without its CRLF) begins a header field: field
/// name characters, optional whitespace, then a colon. An mbox `From `
/// envelope line is not a field, because a word follows the space.
pub fn is_field_start(line: &[u8]) -> bool {
    field_start(line).is_some()
}

/// Removes every CRLF that is followed by WSP (RFC 5322 2.2.3 unfolding);
/// other bytes, including stray CRs and LFs, are kept.
fn unfold(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        let folds = b == b'\r'
            && value.get(i + 1) == Some(&b'\n')
            && value.get(i + 2).is_some_and(|&c| is_wsp(c));
        if folds {
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

fn trim_wsp(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if !is_wsp(*first) {
            break;
        }
        bytes = rest;
    }
    while let [rest @ .., last] = bytes {
        if !is_wsp(*last) {
            break;
        }
        bytes = rest;
    }
    bytes
}

/// One header field, kept as the exact bytes it arrived as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The whole field: name, colon, value with folding, final CRLF.
    raw: Vec<u8>,
    /// End of the name (obs whitespace before the colon excluded).
    name_end: usize,
    /// Index of the colon.
    colon: usize,
}

impl Field {
    /// Builds `Name: value\r\n`. `value` is already folded, without the
    /// leading space or the trailing CRLF; making sure it holds no bare
    /// CR or LF is the caller's job. An empty value gives `Name:\r\n`, so
    /// no line ends in whitespace.
    pub fn new(name: &str, value: &[u8]) -> Field {
        let mut raw = Vec::with_capacity(name.len() + value.len() + 4);
        raw.extend_from_slice(name.as_bytes());
        raw.push(b':');
        if !value.is_empty() {
            raw.push(b' ');
            raw.extend_from_slice(value);
        }
        raw.extend_from_slice(CRLF);
        Field {
            raw,
            name_end: name.len(),
            colon: name.len(),
        }
    }

    /// The field name as written, without any whitespace before the colon.
    pub fn name(&self) -> &[u8] {
        self.raw.get(..self.name_end).unwrap_or_default()
    }

    /// Whether this field is called `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name.as_bytes())
    }

    /// The whole field exactly as it will be written.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The bytes after the colon, folding kept, final CRLF excluded.
    pub fn value(&self) -> &[u8] {
        let body = self.raw.get(self.colon + 1..).unwrap_or_default();
        body.strip_suffix(CRLF).unwrap_or(body)
    }

    /// The value unfolded (RFC 5322 2.2.3) with surrounding whitespace
    /// trimmed: what parsers of structured fields want to look at.
    pub fn unfolded_value(&self) -> Vec<u8> {
        trim_wsp(&unfold(self.value())).to_vec()
    }
}

/// A header block: the fields in their original order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    fields: Vec<Field>,
}

impl Header {
    /// Splits a header block into fields. Every line must end in CRLF and
    /// the empty separator line must not be included. Continuation lines
    /// (starting with SP or HTAB) belong to the field above them.
    pub fn parse(block: &[u8]) -> Result<Header, HeaderError> {
        let mut fields = Vec::new();
        // The field being gathered: where it starts in `block`, its name
        // end and colon, both relative to that start.
        let mut current: Option<(usize, usize, usize)> = None;
        let mut offset = 0;
        let mut line_no = 0;
        while let Some(rest) = block.get(offset..).filter(|r| !r.is_empty()) {
            line_no += 1;
            let Some(content_len) = rest.windows(2).position(|w| w == CRLF) else {
                return Err(HeaderError::Unterminated {
                    line: line_no,
                    text: excerpt(rest),
                });
            };
            let content = rest.get(..content_len).unwrap_or_default();
            match content.first() {
                None => return Err(HeaderError::EmptyLine { line: line_no }),
                Some(&b) if is_wsp(b) => {
                    if current.is_none() {
                        return Err(HeaderError::ContinuationFirst {
                            line: line_no,
                            text: excerpt(content),
                        });
                    }
                }
                Some(_) => {
                    let Some((name_end, colon)) = field_start(content) else {
                        let text = excerpt(content);
                        return Err(if content.contains(&b':') {
                            HeaderError::InvalidName {
                                line: line_no,
                                text,
                            }
                        } else {
                            HeaderError::MissingColon {
                                line: line_no,
                                text,
                            }
                        });
                    };
                    if let Some(field) = current.take() {
                        fields.push(Self::slice_field(block, field, offset));
                    }
                    current = Some((offset, name_end, colon));
                }
            }
            offset += content_len + CRLF.len();
        }
        if let Some(field) = current {
            fields.push(Self::slice_field(block, field, offset));
        }
        Ok(Header { fields })
    }

    fn slice_field(
        block: &[u8],
        (start, name_end, colon): (usize, usize, usize),
        end: usize,
    ) -> Field {
        Field {
            raw: block.get(start..end).unwrap_or_default().to_vec(),
            name_end,
            colon,
        }
    }

    /// All fields in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The first field called `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.is(name))
    }

    /// Every field called `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Field> {
        self.fields.iter().filter(move |f| f.is(name))
    }

    /// Whether any field is called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Removes every field called `name`; returns how many went.
    pub fn remove_all(&mut self, name: &str) -> usize {
        self.retain(|f| !f.is(name))
    }

    /// Keeps only the fields `keep` accepts; returns how many were removed.
    pub fn retain(&mut self, mut keep: impl FnMut(&Field) -> bool) -> usize {
        let before = self.fields.len();
        self.fields.retain(|f| keep(f));
        before - self.fields.len()
    }

    /// Appends a field at the end.
    pub fn push(&mut self, field: Field) {
        self.fields.push(field);
    }

    /// Inserts a field before position `index`; past the end it appends.
    pub fn insert(&mut self, index: usize, field: Field) {
        let index = index.min(self.fields.len());
        self.fields.insert(index, field);
    }

    /// Replaces the field at `index`; does nothing if there is none.
    pub fn replace_at(&mut self, index: usize, field: Field) {
        if let Some(slot) = self.fields.get_mut(index) {
            *slot = field;
        }
    }

    /// Position of the first field called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.is(name))
    }

    /// Appends the block (the fields' raw bytes, no separator line).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for field in &self.fields {
            out.extend_from_slice(field.raw());
        }
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Builds the field `Name: value\r\n`, folding so that lines stay within
/// 78 octets where possible.
///
/// Folds go before existing whitespace only: inserting whitespace would
/// change unstructured values such as Subject. A fold after a comma is
/// preferred when it does not leave the line shorter than half the limit,
/// so address lists break between addresses. Quoted strings are never
/// broken, and encoded words contain no whitespace, so they stay whole; a
/// word longer than the limit is left long rather than split. Any folding
/// already in `value` is undone first. An empty value gives `Name:\r\n`.
pub fn fold(name: &str, value: &[u8]) -> Vec<u8> {
    let value = unfold(value);
    let value = trim_wsp(&value);
    if value.is_empty() {
        return Field::new(name, value).raw;
    }
    let head = name.len() + 2;
    let mut line = Vec::with_capacity(head + value.len());
    line.extend_from_slice(name.as_bytes());
    line.extend_from_slice(b": ");
    line.extend_from_slice(value);

    let breaks = fold_points(value, head);
    let mut out = Vec::with_capacity(line.len() + line.len() / LINE_LIMIT * 3 + 2);
    let mut start = 0;
    let mut next = 0; // first candidate in `breaks` after `start`
    while line.len() - start > LINE_LIMIT {
        while breaks.get(next).is_some_and(|&(p, _)| p <= start) {
            next += 1;
        }
        let mut best = None;
        let mut best_comma = None;
        let mut i = next;
        while let Some(&(p, after_comma)) = breaks.get(i) {
            if p - start > LINE_LIMIT {
                break;
            }
            best = Some(p);
            if after_comma && p - start >= LINE_LIMIT / 2 {
                best_comma = Some(p);
            }
            i += 1;
        }
        // With nothing in reach, the over-long word stays whole and the
        // line breaks at the first chance after it.
        let cut = best_comma
            .or(best)
            .or_else(|| breaks.get(next).map(|&(p, _)| p));
        let Some(cut) = cut else { break };
        out.extend_from_slice(line.get(start..cut).unwrap_or_default());
        out.extend_from_slice(CRLF);
        start = cut;
    }
    out.extend_from_slice(line.get(start..).unwrap_or_default());
    out.extend_from_slice(CRLF);
    out
}

/// Where `value` (placed at offset `head` in the line) may be folded:
/// the first byte of each whitespace run outside quoted strings that has
/// text after it, paired with whether the run follows a comma. The first
/// run is skipped so the value never starts on a line of its own.
fn fold_points(value: &[u8], head: usize) -> Vec<(usize, bool)> {
    let mut points = Vec::new();
    let mut in_quote = false;
    let mut escaped = false;
    let mut prev: Option<u8> = None;
    for (i, &b) in value.iter().enumerate() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quote = false;
            }
        } else if b == b'"' {
            in_quote = true;
        } else if is_wsp(b) {
            let run_start = prev.is_some_and(|p| !is_wsp(p));
            let text_follows = value
                .get(i..)
                .is_some_and(|rest| rest.iter().any(|&c| !is_wsp(c)));
            if run_start && text_follows {
                points.push((head + i, prev == Some(b',')));
            }
        }
        prev = Some(b);
    }
    points
}

/// RFC 5322 3.2.3 atext.
pub(crate) fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Encodes `text` as an RFC 5322 phrase for a display name: plain atoms
/// when it is words of atext separated by single spaces, a quoted string
/// when it holds other printable ASCII, RFC 2047 `=?UTF-8?B?...?=` encoded
/// words when it holds anything else. Text that merely looks like an
/// encoded word is quoted, since decoders leave quoted strings alone.
pub fn encode_phrase(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return b"\"\"".to_vec();
    }
    let printable = bytes.iter().all(|&b| b == b'\t' || (32..=126).contains(&b));
    if !printable {
        return encoded_words(text);
    }
    let plain = bytes
        .split(|&b| b == b' ')
        .all(|word| !word.is_empty() && word.iter().all(|&b| is_atext(b)));
    if plain && !text.contains("=?") {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'"');
    for &b in bytes {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

/// RFC 2047 B-encoded words, split on character boundaries. RFC 2047 2
/// caps a line holding encoded words at 76 characters; 39 bytes make 52
/// base64 characters, 64 with `=?UTF-8?B?` and `?=`, which leaves room for
/// a field name of up to ten characters on the first line.
fn encoded_words(text: &str) -> Vec<u8> {
    const CHUNK: usize = 39;
    let mut out = Vec::new();
    let mut chunk_start = 0;
    let push_word = |out: &mut Vec<u8>, chunk: &str| {
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(b"=?UTF-8?B?");
        base64_into(chunk.as_bytes(), out);
        out.extend_from_slice(b"?=");
    };
    for (i, c) in text.char_indices() {
        if i + c.len_utf8() - chunk_start > CHUNK {
            push_word(&mut out, text.get(chunk_start..i).unwrap_or_default());
            chunk_start = i;
        }
    }
    push_word(&mut out, text.get(chunk_start..).unwrap_or_default());
    out
}

/// Standard base64 with padding (RFC 4648 4).
fn base64_into(data: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |n: u32| ALPHABET.get((n & 63) as usize).copied().unwrap_or(b'=');
    for group in data.chunks(3) {
        let (a, b, c) = match *group {
            [a, b, c] => (a, Some(b), Some(c)),
            [a, b] => (a, Some(b), None),
            [a] => (a, None, None),
            _ => continue,
        };
        let n = u32::from(a) << 16 | u32::from(b.unwrap_or(0)) << 8 | u32::from(c.unwrap_or(0));
        out.push(sextet(n >> 18));
        out.push(sextet(n >> 12));
        out.push(if b.is_some() { sextet(n >> 6) } else { b'=' });
        out.push(if c.is_some() { sextet(n) } else { b'=' });
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;

    const BLOCK: &[u8] = b"Received: from a.example by b.example;\r\n\
        \tTue, 1 Jul 2025 10:00:00 +0000\r\n\
        Subject : obs spacing before colon\r\n\
        To: a@example.org,\r\n b@example.org\r\n\
        X-Dup: one\r\n\
        x-dup:two\r\n\
        Subject: J\xc3\xb6rg \xe2\x9c\x93 and raw 8-bit \xff\xfe\r\n\
        X-Empty:\r\n\
        X-Trailing:  spaced   \r\n";

    fn parsed() -> Header {
        Header::parse(BLOCK).unwrap()
    }

    #[test]
    fn round_trips_byte_exact() {
        let h = parsed();
        assert_eq!(h.len(), 8);
        let mut out = Vec::new();
        h.write_to(&mut out);
        assert_eq!(out, BLOCK);
    }

    #[test]
    fn empty_block_is_empty_header() {
        let h = Header::parse(b"").unwrap();
        assert!(h.is_empty());
        let mut out = Vec::new();
        h.write_to(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn field_parts() {
        let h = parsed();
        let received = &h.fields()[0];
        assert_eq!(received.name(), b"Received");
        assert_eq!(
            received.value(),
            b" from a.example by b.example;\r\n\tTue, 1 Jul 2025 10:00:00 +0000"
        );
        assert_eq!(
            received.unfolded_value(),
            b"from a.example by b.example;\tTue, 1 Jul 2025 10:00:00 +0000"
        );
        let obs = &h.fields()[1];
        assert_eq!(obs.name(), b"Subject");
        assert!(obs.is("SUBJECT"));
        assert_eq!(obs.value(), b" obs spacing before colon");
        assert_eq!(h.fields()[3].value(), b" one");
        assert_eq!(h.fields()[4].value(), b"two");
        assert_eq!(h.fields()[6].value(), b"");
        assert_eq!(h.fields()[6].unfolded_value(), b"");
        assert_eq!(h.fields()[7].unfolded_value(), b"spaced");
        assert_eq!(
            h.fields()[5].unfolded_value(),
            b"J\xc3\xb6rg \xe2\x9c\x93 and raw 8-bit \xff\xfe"
        );
    }

    #[test]
    fn lookups() {
        let h = parsed();
        assert!(h.contains("to"));
        assert!(!h.contains("Cc"));
        assert_eq!(h.get("x-DUP").unwrap().value(), b" one");
        let dups: Vec<_> = h.get_all("X-Dup").map(Field::value).collect();
        assert_eq!(dups, vec![&b" one"[..], &b"two"[..]]);
        assert_eq!(h.get_all("subject").count(), 2);
        assert_eq!(h.position("subject"), Some(1));
        assert_eq!(h.position("nope"), None);
        assert!(h.get("Subjec").is_none());
    }

    #[test]
    fn edits() {
        let mut h = parsed();
        assert_eq!(h.remove_all("x-dup"), 2);
        assert_eq!(h.remove_all("x-dup"), 0);
        assert_eq!(h.len(), 6);
        h.insert(0, Field::new("Return-Path", b"<a@b>"));
        h.insert(100, Field::new("X-Last", b"end"));
        h.replace_at(1, Field::new("Received", b"replaced"));
        h.replace_at(100, Field::new("X-Nowhere", b"x"));
        h.push(Field::new("X-Pushed", b""));
        assert_eq!(h.retain(|f| !f.is("x-empty")), 1);
        let mut out = Vec::new();
        h.write_to(&mut out);
        let expected: &[u8] = b"Return-Path: <a@b>\r\n\
            Received: replaced\r\n\
            Subject : obs spacing before colon\r\n\
            To: a@example.org,\r\n b@example.org\r\n\
            Subject: J\xc3\xb6rg \xe2\x9c\x93 and raw 8-bit \xff\xfe\r\n\
            X-Trailing:  spaced   \r\n\
            X-Last: end\r\n\
            X-Pushed:\r\n";
        assert_eq!(out, expected);
        // Fields built by `new` reparse to themselves.
        assert_eq!(Header::parse(&out).unwrap(), h);
    }

    #[test]
    fn new_field_parts() {
        let f = Field::new("X-Test", b"value here");
        assert_eq!(f.raw(), b"X-Test: value here\r\n");
        assert_eq!(f.name(), b"X-Test");
        assert_eq!(f.value(), b" value here");
        assert_eq!(f.unfolded_value(), b"value here");
    }

    #[test]
    fn malformed_blocks() {
        let e = Header::parse(b" folded first\r\nA: b\r\n").unwrap_err();
        assert!(matches!(e, HeaderError::ContinuationFirst { line: 1, .. }));
        assert_eq!(
            e.to_string(),
            "line 1: continuation line before any header field: \" folded first\""
        );

        let e = Header::parse(b"A: b\r\nB: c\r\nFoo bar\r\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3: header field without a colon: \"Foo bar\""
        );

        let e = Header::parse(b"Foo bar: baz\r\n").unwrap_err();
        assert!(matches!(e, HeaderError::InvalidName { line: 1, .. }));
        let e = Header::parse(b": no name\r\n").unwrap_err();
        assert!(matches!(e, HeaderError::InvalidName { line: 1, .. }));
        let e = Header::parse(b"N\xc3\xa4me: v\r\n").unwrap_err();
        assert!(matches!(e, HeaderError::InvalidName { line: 1, .. }));

        let e =
            Header::parse(b"From someone@example.org Tue Jul  1 10:00:00 2025\r\n").unwrap_err();
        assert!(matches!(e, HeaderError::InvalidName { line: 1, .. }));

        let e = Header::parse(b"A: b\r\n\r\nC: d\r\n").unwrap_err();
        assert_eq!(e, HeaderError::EmptyLine { line: 2 });

        let e = Header::parse(b"A: b\r\nC: d").unwrap_err();
        assert!(matches!(e, HeaderError::Unterminated { line: 2, .. }));
        let e = Header::parse(b"A: b\n").unwrap_err();
        assert!(matches!(e, HeaderError::Unterminated { line: 1, .. }));
    }

    #[test]
    fn error_excerpt_is_bounded() {
        let mut block = vec![b'x'; 500];
        block.extend_from_slice(b"\r\n");
        let msg = Header::parse(&block).unwrap_err().to_string();
        assert!(msg.len() < 120, "{msg}");
        assert!(msg.ends_with("...\"...") || msg.ends_with("\"..."), "{msg}");
        let msg = Header::parse(b"\xff\xfe bad\r\n").unwrap_err().to_string();
        assert!(msg.contains('\u{fffd}'), "{msg}");
    }

    #[test]
    fn field_start_detection() {
        assert!(is_field_start(b"Subject: x"));
        assert!(is_field_start(b"Subject: x\r\n"));
        assert!(is_field_start(b"Subject:"));
        assert!(is_field_start(b"Subject \t: x"));
        assert!(is_field_start(b"X-Weird!#$: x"));
        assert!(!is_field_start(b"From foo@example.org Tue Jul 1 2025"));
        assert!(!is_field_start(b"From "));
        assert!(!is_field_start(b" Subject: x"));
        assert!(!is_field_start(b": x"));
        assert!(!is_field_start(b"Subject"));
        assert!(!is_field_start(b"Subject   "));
        assert!(!is_field_start(b""));
        assert!(!is_field_start(b"Sub\xffject: x"));
    }

    fn lines(field: &[u8]) -> Vec<&[u8]> {
        assert!(field.ends_with(b"\r\n"));
        field[..field.len() - 2]
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .collect()
    }

    #[test]
    fn fold_short_value_is_one_line() {
        assert_eq!(fold("Subject", b"hello world"), b"Subject: hello world\r\n");
        assert_eq!(fold("X-Empty", b""), b"X-Empty:\r\n");
        assert_eq!(fold("X-Empty", b"   "), b"X-Empty:\r\n");
    }

    #[test]
    fn fold_keeps_lines_within_limit() {
        let addrs: Vec<String> = (0..30).map(|i| format!("user{i}@example.org")).collect();
        let value = addrs.join(", ");
        let field = fold("To", value.as_bytes());
        for line in lines(&field) {
            assert!(
                line.len() <= LINE_LIMIT,
                "{}",
                String::from_utf8_lossy(line)
            );
            assert!(!line.iter().all(|&b| is_wsp(b)));
        }
        // Unfolding gives back the value exactly.
        let f = Header::parse(&field).unwrap();
        assert_eq!(f.fields()[0].unfolded_value(), value.as_bytes());
        // Breaks land between addresses.
        for line in lines(&field).iter().skip(1) {
            assert!(line.starts_with(b" user"));
        }
    }

    #[test]
    fn fold_prefers_commas() {
        let value = b"Alpha Beta <alpha@example.org>, Gamma Delta Epsilon <gamma@example.org>, Zeta <z@example.org>";
        let field = fold("Cc", value);
        let ls = lines(&field);
        assert!(ls.len() >= 2);
        assert!(ls[0].ends_with(b","), "{}", String::from_utf8_lossy(&field));
        for line in &ls {
            assert!(line.len() <= LINE_LIMIT);
        }
    }

    #[test]
    fn fold_never_splits_quoted_or_long_words() {
        let quoted = format!("\"{}\" <q@example.org>", "word ".repeat(30).trim_end());
        let field = fold("From", quoted.as_bytes());
        assert_eq!(
            lines(&field)[0],
            format!("From: {}", quoted.split(" <").next().unwrap()).as_bytes()
        );

        let long = "x".repeat(120);
        let value = format!("short {long} tail");
        let field = fold("Subject", value.as_bytes());
        let ls = lines(&field);
        assert_eq!(
            ls,
            vec![
                &b"Subject: short"[..],
                format!(" {long}").as_bytes(),
                b" tail"
            ]
        );

        let ew = encode_phrase(&"ä".repeat(60));
        let field = fold("Subject", &ew);
        for line in lines(&field) {
            assert!(line.len() <= 76);
            let word = line.rsplit(|&b| b == b' ').next().unwrap();
            assert!(word.starts_with(b"=?UTF-8?B?") && word.ends_with(b"?="));
        }
    }

    #[test]
    fn fold_refolds_folded_input() {
        let field = fold("Subject", b"already\r\n folded");
        assert_eq!(field, b"Subject: already folded\r\n");
    }

    #[test]
    fn phrase_encoding() {
        assert_eq!(encode_phrase("Cron Daemon"), b"Cron Daemon");
        assert_eq!(encode_phrase("fail2ban"), b"fail2ban");
        assert_eq!(encode_phrase("Doe, John"), b"\"Doe, John\"");
        assert_eq!(encode_phrase("J. Smith"), b"\"J. Smith\"");
        assert_eq!(encode_phrase("a \"b\" \\c"), b"\"a \\\"b\\\" \\\\c\"");
        assert_eq!(encode_phrase(" padded"), b"\" padded\"");
        assert_eq!(encode_phrase("two  spaces"), b"\"two  spaces\"");
        assert_eq!(encode_phrase(""), b"\"\"");
        assert_eq!(encode_phrase("=?UTF-8?B?eA==?="), b"\"=?UTF-8?B?eA==?=\"");
        assert_eq!(encode_phrase("Jörg"), b"=?UTF-8?B?SsO2cmc=?=");
        assert_eq!(
            encode_phrase("line\nbreak"),
            b"=?UTF-8?B?bGluZQpicmVhaw==?="
        );
        let long = encode_phrase(&"é".repeat(30));
        for word in long.split(|&b| b == b' ') {
            assert!(word.len() <= 64);
            assert!(word.starts_with(b"=?UTF-8?B?") && word.ends_with(b"?="));
        }
        assert_eq!(long.split(|&b| b == b' ').count(), 2);
    }

    #[test]
    fn base64_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            base64_into(input.as_bytes(), &mut out);
            assert_eq!(out, expected.as_bytes());
        }
    }

    #[test]
    fn no_panic_on_prefixes_and_noise() {
        for end in 0..=BLOCK.len() {
            let _ = Header::parse(&BLOCK[..end]);
        }
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"ab: \t\r\n\xff\xc3";
        for _ in 0..2000 {
            let len = (state % 40) as usize;
            let mut input = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                input.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            if let Ok(h) = Header::parse(&input) {
                let mut out = Vec::new();
                h.write_to(&mut out);
                assert_eq!(out, input);
                for f in h.fields() {
                    let _ = (f.name(), f.value(), f.unfolded_value());
                }
            }
            let _ = fold("X", &input);
        }
    }
}
