//! The DATA phase as a byte-stream decoder with no I/O: finds the end
//! marker, removes dot-stuffing and counts the size, one chunk at a time,
//! so a message of any size passes through a few bytes of state.
//!
//! Line ends: only CRLF ends a line for the end marker and for
//! dot-stuffing (RFC 5321 4.1.1.4), so `<LF>.<LF>` or `<LF>.<CR><LF>` never
//! end the message (the SMTP-smuggling family). A bare LF is kept as
//! content; the send pipeline's intake normalises it to CRLF, so a client
//! that sends bare LF lines is accepted rather than refused (friendlier for
//! a local submission port; Postfix's smtpd_forbid_bare_newline refuses).

/// Decoder state between chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    Start,
    /// The line began with a dot (removed unless this is the end).
    Dot,
    /// `.` then CR at the start of a line.
    DotCr,
    /// Inside a line.
    Mid,
    /// A CR inside a line (or after an empty line's start).
    Cr,
}

/// Decodes DATA. Output bytes are appended to a caller's buffer; once
/// more than `max` octets were produced, output stops (the message will be
/// refused) but the decoder still looks for the end marker.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    size: u64,
    max: u64,
    done: bool,
}

impl Decoder {
    pub fn new(max: u64) -> Decoder {
        Decoder {
            state: State::Start,
            size: 0,
            max,
            done: false,
        }
    }

    /// The end marker was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// More than `max` octets were sent.
    pub fn too_big(&self) -> bool {
        self.size > self.max
    }

    /// The decoded size so far (counting what was discarded).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Feeds one chunk; returns how many bytes of it belong to the message
    /// (everything after the end marker is the next command).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        for (i, &b) in input.iter().enumerate() {
            if self.done {
                return i;
            }
            self.byte(b, out);
        }
        input.len()
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.size <= self.max {
            out.extend_from_slice(bytes);
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        self.state = match (self.state, b) {
            (State::Start, b'.') => State::Dot,
            (State::Dot, b'\r') => State::DotCr,
            (State::DotCr, b'\n') => {
                self.done = true;
                State::Start
            }
            // A dot that was not the end: it was stuffing, drop it.
            (State::DotCr, _) => {
                self.emit(b"\r", out);
                return self.mid(b, out);
            }
            (State::Dot | State::Start | State::Mid, _) => return self.mid(b, out),
            (State::Cr, b'\n') => {
                self.emit(b"\r\n", out);
                State::Start
            }
            (State::Cr, _) => {
                self.emit(b"\r", out);
                return self.mid(b, out);
            }
        };
    }

    fn mid(&mut self, b: u8, out: &mut Vec<u8>) {
        if b == b'\r' {
            self.state = State::Cr;
        } else {
            self.emit(&[b], out);
            self.state = State::Mid;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Decodes `input` fed in chunks of `chunk` bytes.
    fn decode(input: &[u8], chunk: usize) -> (Vec<u8>, bool, usize) {
        let mut d = Decoder::new(1 << 20);
        let mut out = Vec::new();
        let mut used = 0;
        for c in input.chunks(chunk) {
            used += d.feed(c, &mut out);
            if d.is_done() {
                break;
            }
        }
        (out, d.is_done(), used)
    }

    fn all_chunkings(input: &[u8]) -> (Vec<u8>, bool, usize) {
        let first = decode(input, input.len().max(1));
        for n in 1..input.len().max(1) {
            assert_eq!(decode(input, n), first, "chunk size {n}");
        }
        first
    }

    #[test]
    fn end_marker_and_rest() {
        let (out, done, used) = all_chunkings(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n");
        assert!(done);
        assert_eq!(out, b"Subject: x\r\n\r\nhi\r\n");
        assert_eq!(used, 21);
    }

    #[test]
    fn empty_message() {
        let (out, done, used) = all_chunkings(b".\r\n");
        assert!(done);
        assert!(out.is_empty());
        assert_eq!(used, 3);
    }

    #[test]
    fn unstuffing() {
        let (out, done, _) = all_chunkings(b"..\r\n..x\r\n.y\r\n.\rz\r\n.\r\n");
        assert!(done);
        assert_eq!(out, b".\r\n.x\r\ny\r\n\rz\r\n");
    }

    #[test]
    fn bare_lf_never_ends_the_message() {
        let (out, done, _) = all_chunkings(b"a\n.\nb\n.\r\nc\r\n.\n");
        assert!(!done);
        assert_eq!(out, b"a\n.\nb\n.\r\nc\r\n\n");
        let (out, done, _) = all_chunkings(b"a\r\n.\n\r\n.\r\n");
        assert!(done);
        assert_eq!(out, b"a\r\n\n\r\n");
    }

    #[test]
    fn cr_runs_and_nul_pass_through() {
        let (out, done, _) = all_chunkings(b"a\r\r\nb\0\r\n.\r\n");
        assert!(done);
        assert_eq!(out, b"a\r\r\nb\0\r\n");
    }

    #[test]
    fn size_limit_stops_output_not_parsing() {
        let mut d = Decoder::new(4);
        let mut out = Vec::new();
        let used = d.feed(b"123456789\r\n.\r\nNOOP", &mut out);
        assert!(d.is_done());
        assert!(d.too_big());
        assert_eq!(used, 14);
        assert!(out.len() <= 4);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap exhaustive pass over short inputs of the interesting bytes.
        let alphabet = [b'.', b'\r', b'\n', b'x', 0];
        let mut buf = Vec::new();
        for n in 0..=6u32 {
            for i in 0..alphabet.len().pow(n) {
                buf.clear();
                let mut k = i;
                for _ in 0..n {
                    buf.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                let (out, _, used) = decode(&buf, 1);
                assert!(out.len() <= buf.len());
                assert!(used <= buf.len());
            }
        }
    }
}
