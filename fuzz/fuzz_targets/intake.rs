//! Message intake (`message::intake::read_message`): what a local program
//! pipes to sendmail. The first input byte picks `-i` and how the input is
//! split into reads; the rest is the message.
//!
//! Invariants: no panic; the body written is CRLF-normalised and matches
//! the statistics reported; the result does not depend on how the input
//! was split into reads; quoted-printable encoding of the body decodes back
//! to it.
#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use mailhop::message::intake::{Intake, encode_quoted_printable, read_message};

/// Yields `data` at most `step` bytes per read, like a pipe.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        buf[..n].copy_from_slice(head);
        self.data = tail;
        Ok(n)
    }
}

fn run(data: &[u8], step: usize, ignore_dots: bool) -> (Intake, Vec<u8>) {
    let mut body = Vec::new();
    let intake = read_message(Trickle { data, step }, ignore_dots, &mut body)
        .expect("reading from memory cannot fail");
    (intake, body)
}

/// Every CR is followed by LF and every LF preceded by CR.
fn crlf_normalised(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && bytes[i - 1] == b'\r',
        _ => true,
    })
}

fn check_body(intake: &Intake, body: &[u8]) {
    let stats = &intake.body;
    assert_eq!(stats.bytes, body.len() as u64, "body byte count");
    assert!(crlf_normalised(body), "body not CRLF-normalised");
    assert_eq!(stats.ends_with_crlf, body.ends_with(b"\r\n"));
    let lines = body.windows(2).filter(|w| w == b"\r\n").count() as u64;
    assert_eq!(stats.lines, lines, "body line count");
    assert_eq!(stats.eight_bit, body.iter().any(|&b| b >= 0x80));
    assert_eq!(stats.nul, body.contains(&0));
    assert_eq!(stats.valid_utf8, std::str::from_utf8(body).is_ok());
    let longest = body
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
        .max()
        .unwrap_or(0);
    assert_eq!(stats.longest_line, longest, "longest body line");
}

fn check_header(intake: &Intake) {
    let header = &intake.header;
    assert!(header.len() <= mailhop::message::intake::MAX_HEADER);
    assert!(crlf_normalised(header), "header not CRLF-normalised");
    assert!(header.is_empty() || header.ends_with(b"\r\n"));
    assert!(
        !header.windows(4).any(|w| w == b"\r\n\r\n"),
        "empty line in header"
    );
    assert_eq!(intake.header_eight_bit, header.iter().any(|&b| b >= 0x80));
}

/// Quoted-printable decoding (RFC 2045 §6.7) of what our encoder writes,
/// strictly: any malformed escape or overlong line fails the target.
fn qp_decode(encoded: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded.len());
    for line in encoded.split_inclusive(|&b| b == b'\n') {
        let (text, hard_break) = match line.strip_suffix(b"\r\n") {
            Some(t) => (t, true),
            None => (line, false),
        };
        assert!(text.len() <= 76, "quoted-printable line longer than 76");
        assert!(crlf_normalised(line), "bare CR or LF in quoted-printable");
        let (text, soft) = match text.strip_suffix(b"=") {
            Some(t) => (t, true),
            None => (text, false),
        };
        assert!(
            !matches!(text.last(), Some(b' ' | b'\t')) || soft,
            "unprotected trailing whitespace"
        );
        let mut i = 0;
        while i < text.len() {
            if text[i] == b'=' {
                let hex = std::str::from_utf8(&text[i + 1..i + 3]).expect("hex escape");
                out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                i += 3;
            } else {
                assert!(
                    text[i] == b'\t' || (32..127).contains(&text[i]),
                    "raw octet"
                );
                out.push(text[i]);
                i += 1;
            }
        }
        if hard_break && !soft {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, message)) = data.split_first() else {
        return;
    };
    let ignore_dots = control & 1 == 1;
    let step = usize::from(control >> 1) + 1;
    let (whole, whole_body) = run(message, usize::MAX, ignore_dots);
    check_header(&whole);
    check_body(&whole, &whole_body);
    assert!(whole.input_bytes <= message.len() as u64);
    assert!(!(whole.dot_terminated && ignore_dots));
    // How a pipe splits the input must not change the message. Only
    // input_bytes may differ (the LF after a dot line's CR is not waited for).
    let (mut split, split_body) = run(message, step, ignore_dots);
    split.input_bytes = whole.input_bytes;
    assert_eq!(split, whole, "result depends on read sizes (step {step})");
    assert_eq!(split_body, whole_body, "body depends on read sizes");

    let mut encoded = Vec::new();
    let written = encode_quoted_printable(&whole_body[..], &mut encoded).expect("in memory");
    assert_eq!(written, encoded.len() as u64);
    assert_eq!(
        qp_decode(&encoded),
        whole_body,
        "quoted-printable round trip"
    );
});
