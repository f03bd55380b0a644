//! The server's DATA decoder (`smtpd::data::Decoder::feed`): what a client
//! sends after `354`. The first input byte picks the size limit and the
//! largest chunk, the second seeds how the rest is split into chunks (as
//! reads from a socket split it); the rest is the client's bytes.
//!
//! Invariants: no panic; the decoder agrees with a direct reading of RFC
//! 5321 4.1.1.4 / 4.5.2 (the message ends at the first `.` CRLF that starts
//! a line, where only CRLF ends a line; a dot starting a line is removed;
//! everything after the end marker is left for the next command); the
//! output never exceeds the input nor the limit, and is empty or ends in
//! CRLF once the end is seen; dot-stuffing the output again and decoding
//! gives it back; and none of this depends on how the bytes were split
//! into chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailhop::smtpd::data::Decoder;

const LIMITS: [u64; 8] = [0, 1, 2, 5, 16, 64, 1 << 20, u64::MAX];
const CHUNKS: [usize; 8] = [1, 2, 3, 4, 7, 16, 100, 4096];

/// What one decoding produced.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    out: Vec<u8>,
    used: usize,
    done: bool,
    too_big: bool,
    size: u64,
}

/// Decodes `input` the way the session does: chunk after chunk into a
/// cleared buffer whose contents are kept, until the end marker.
fn decode(input: &[u8], max: u64, mut next_len: impl FnMut() -> usize) -> Decoded {
    let mut d = Decoder::new(max);
    let mut out = Vec::new();
    let mut chunk_out = Vec::new();
    let mut used = 0;
    while used < input.len() && !d.is_done() {
        let len = next_len().clamp(1, input.len() - used);
        let chunk = &input[used..used + len];
        chunk_out.clear();
        let n = d.feed(chunk, &mut chunk_out);
        assert!(n <= len, "feed used more than it was given");
        assert!(
            n == len || d.is_done(),
            "feed stopped early without the end marker"
        );
        out.extend_from_slice(&chunk_out);
        used += n;
        // Not per chunk: a CR held back at a chunk's end comes out later.
        assert!(out.len() <= used, "output exceeds the input so far");
    }
    Decoded {
        out,
        used,
        done: d.is_done(),
        too_big: d.too_big(),
        size: d.size(),
    }
}

/// Where the message ends (just after its end marker), read straight from
/// the RFC: `.` CRLF at the start of the input or right after a CRLF.
fn end_marker(input: &[u8]) -> Option<usize> {
    (0..input.len())
        .find(|&i| input[i..].starts_with(b".\r\n") && (i == 0 || input[..i].ends_with(b"\r\n")))
        .map(|i| i + 3)
}

/// The message `body` (without its end marker) with the dot that starts
/// any line removed.
fn unstuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for (i, &b) in body.iter().enumerate() {
        let line_start = i == 0 || body[..i].ends_with(b"\r\n");
        if !(b == b'.' && line_start) {
            out.push(b);
        }
    }
    out
}

/// What a client sends for `message`: a dot doubled at every line start,
/// then the end marker (the message is empty or ends in CRLF).
fn stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    for (i, &b) in message.iter().enumerate() {
        if b == b'.' && (i == 0 || message[..i].ends_with(b"\r\n")) {
            out.push(b'.');
        }
        out.push(b);
    }
    out.extend_from_slice(b".\r\n");
    out
}

fuzz_target!(|data: &[u8]| {
    let [control, seed, input @ ..] = data else {
        return;
    };
    let max = LIMITS[usize::from(control & 7)];
    let largest = CHUNKS[usize::from((control >> 3) & 7)];
    let whole = decode(input, max, || usize::MAX);

    // The RFC's reading of the same bytes.
    let end = end_marker(input);
    assert_eq!(whole.done, end.is_some(), "end marker");
    assert_eq!(whole.used, end.unwrap_or(input.len()), "bytes used");
    let mut expected = match end {
        Some(e) => unstuff(&input[..e - 3]),
        None => unstuff(input),
    };
    if end.is_none() && input.ends_with(b"\r") {
        // A CR at the very end may start a CRLF: it is held back.
        expected.pop();
    }
    assert_eq!(whole.size, expected.len() as u64, "size counted");
    assert_eq!(whole.too_big, whole.size > max, "too_big");
    assert!(whole.out.len() as u64 <= max, "output past the limit");
    assert!(
        whole.out.len() <= whole.used,
        "output longer than its input"
    );
    if whole.too_big {
        assert!(
            expected.starts_with(&whole.out),
            "output is not a prefix of the message"
        );
    } else {
        assert_eq!(whole.out, expected, "message content");
    }
    if whole.done && !whole.too_big {
        assert!(
            whole.out.is_empty() || whole.out.ends_with(b"\r\n"),
            "finished message does not end in CRLF"
        );
        // Sent again by a client, it arrives unchanged.
        let again = stuff(&whole.out);
        let back = decode(&again, u64::MAX, || usize::MAX);
        assert!(
            back.done && back.used == again.len(),
            "re-stuffed end marker"
        );
        assert_eq!(back.out, whole.out, "re-stuffing round trip");
    }

    // How the bytes were split must not matter.
    let mut state = u32::from(*seed) | u32::from(*control) << 8 | 0x9e37_0000;
    let split = decode(input, max, || {
        // xorshift32: a cheap, deterministic sequence of chunk lengths.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as usize % largest + 1
    });
    assert_eq!(split, whole, "result depends on chunking");
});
