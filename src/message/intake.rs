//! Message intake: turns the raw bytes a local program hands to sendmail(1)
//! into a normalised message, in bounded memory.
//!
//! This module owns:
//! - line-ending normalisation (CRLF, bare LF and bare CR all become CRLF),
//! - the sendmail "lone dot ends the input" rule (unless `-i`/`-oi`),
//! - dropping a leading mbox `From ` envelope line,
//! - splitting the header block (kept in memory, capped at [`MAX_HEADER`])
//!   from the body (streamed straight to the caller's spool writer),
//! - body statistics used to choose a transfer encoding, and
//! - a streaming quoted-printable encoder for bodies that cannot be sent raw.
//!
//! Data problems (oversized header, NUL bytes, bad UTF-8, ...) are never
//! errors here: they are reported in [`Intake`] so the caller can still save
//! every byte to dead.letter before refusing the message. Only real I/O
//! failures become [`IntakeError`].

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};

/// Largest header block kept in memory, in octets (CRLFs included, the
/// separating empty line excluded).
pub const MAX_HEADER: usize = 1 << 20;

/// Read and write buffers are this size; the body is never held whole.
/// 128 KiB is glibc's default mmap threshold (M_MMAP_THRESHOLD): buffers
/// this large are mapped for intake and unmapped when it ends, so their
/// pages leave the process instead of staying resident in the heap for
/// the rest of the send (64 KiB ones did: 128 KiB of a STARTTLS send's
/// peak RSS). Larger reads and writes also mean fewer system calls.
const BUF_SIZE: usize = 128 * 1024;

/// A dropped `From ` line is only informational, so its stored copy is capped
/// to keep memory bounded even for a hostile multi-gigabyte first line.
const MAX_FROM_LINE: usize = MAX_HEADER;

/// Longest output line of quoted-printable text allowed by RFC 2045 §6.7
/// rule 5. We keep encoded text to one less so there is always room for the
/// `=` of a soft line break.
const QP_MAX_TEXT: usize = 75;

/// A real I/O failure. Which side failed matters to the caller: a read error
/// means the message is incomplete, a write error means the spool (or output)
/// is not trustworthy.
#[derive(Debug)]
pub enum IntakeError {
    /// Reading the input failed (stdin for [`read_message`], the spooled
    /// body for [`encode_quoted_printable`]).
    Read(io::Error),
    /// Writing the output failed (the body spool for [`read_message`], the
    /// encoded output for [`encode_quoted_printable`]).
    Write(io::Error),
}

impl fmt::Display for IntakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntakeError::Read(e) => write!(f, "error reading message input: {e}"),
            IntakeError::Write(e) => write!(f, "error writing message output: {e}"),
        }
    }
}

impl std::error::Error for IntakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IntakeError::Read(e) | IntakeError::Write(e) => Some(e),
        }
    }
}

/// Facts about the body bytes that were written to the body writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyStats {
    /// Octets written (normalised, CRLF included).
    pub bytes: u64,
    /// Lines written (every body line ends in CRLF).
    pub lines: u64,
    /// Any octet >= 0x80.
    pub eight_bit: bool,
    /// Longest line in octets, CRLF excluded.
    pub longest_line: usize,
    /// Any NUL octet.
    pub nul: bool,
    /// The whole body is valid UTF-8 (true for an empty body).
    pub valid_utf8: bool,
    /// The body ends in CRLF (always, unless the body is empty).
    pub ends_with_crlf: bool,
}

/// Everything learnt while reading one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intake {
    /// Header lines, each ending in CRLF; without the separating empty line.
    /// Empty when there was no header or when `header_too_large`.
    pub header: Vec<u8>,
    /// The header was ended by an empty line (which is consumed, not stored).
    pub had_separator: bool,
    /// The header grew past [`MAX_HEADER`]; all of it went to the body writer
    /// ahead of the rest of the input, so nothing is lost.
    pub header_too_large: bool,
    /// Any octet >= 0x80 in `header`.
    pub header_eight_bit: bool,
    /// A NUL octet in the header or the body.
    pub nul: bool,
    /// No message at all: zero input octets, or only the terminating dot.
    pub empty: bool,
    /// Input was ended by a lone `.` line; the rest was not read.
    pub dot_terminated: bool,
    /// The final line lacked a line ending and CRLF was appended.
    pub added_final_newline: bool,
    /// A leading mbox `From ` line, without its line ending, that was
    /// dropped (stored copy capped at 1 MiB).
    pub dropped_from_line: Option<Vec<u8>>,
    /// Statistics of the bytes written to the body writer.
    pub body: BodyStats,
    /// Raw input octets consumed, through the terminating dot line if any
    /// (the LF of a dot line's CR LF only if it arrived in the same read as
    /// the CR: we never block waiting for it).
    pub input_bytes: u64,
}

/// True when `line` starts a header field: a name of one or more octets in
/// 33..=126 other than `:`, optional SP/HT (obsolete syntax), then `:`.
pub fn is_field_start(line: &[u8]) -> bool {
    FieldScan::Start.feed(line) == Some(true)
}

/// Incremental recogniser for a field-name prefix, so that a line can be
/// judged before it is complete (needed when a header line is too long to
/// buffer whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldScan {
    Start,
    Name,
    Space,
}

impl FieldScan {
    /// `Some(true)`: the line is a field start; `Some(false)`: it cannot be;
    /// `None`: undecided so far.
    fn feed(&mut self, bytes: &[u8]) -> Option<bool> {
        for &b in bytes {
            match (*self, b) {
                (FieldScan::Start, b':') => return Some(false),
                (_, b':') => return Some(true),
                (FieldScan::Start | FieldScan::Name, 33..=126) => *self = FieldScan::Name,
                (FieldScan::Name | FieldScan::Space, b' ' | b'\t') => *self = FieldScan::Space,
                _ => return Some(false),
            }
        }
        None
    }
}

/// Streaming UTF-8 validator. An incomplete sequence at the end of a chunk is
/// carried (at most 3 octets, plus the one that completes or breaks it).
#[derive(Debug)]
struct Utf8Stream {
    carry: [u8; 4],
    carry_len: usize,
    valid: bool,
}

impl Utf8Stream {
    fn new() -> Self {
        Utf8Stream {
            carry: [0; 4],
            carry_len: 0,
            valid: true,
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        // Finish a sequence split across chunks one octet at a time: it
        // resolves within at most 3 more octets.
        while self.valid && self.carry_len > 0 {
            let Some((&b, rest)) = data.split_first() else {
                return;
            };
            data = rest;
            let Some(slot) = self.carry.get_mut(self.carry_len) else {
                self.valid = false;
                return;
            };
            *slot = b;
            self.carry_len += 1;
            let pending = self.carry.get(..self.carry_len).unwrap_or_default();
            match std::str::from_utf8(pending) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_none() => {}
                Err(_) => self.valid = false,
            }
        }
        if !self.valid {
            return;
        }
        if let Err(e) = std::str::from_utf8(data) {
            if e.error_len().is_some() {
                self.valid = false;
                return;
            }
            // Only an incomplete (not invalid) sequence remains: 1..=3 octets.
            let tail = data.get(e.valid_up_to()..).unwrap_or_default();
            match self.carry.get_mut(..tail.len()) {
                Some(dst) => {
                    dst.copy_from_slice(tail);
                    self.carry_len = tail.len();
                }
                None => self.valid = false,
            }
        }
    }

    fn finish(&self) -> bool {
        self.valid && self.carry_len == 0
    }
}

/// Buffered writer over the caller's sink so that per-line writes do not turn
/// into one syscall each when the caller passes an unbuffered file.
#[derive(Debug)]
struct OutBuf<'w, W: Write> {
    out: &'w mut W,
    buf: Vec<u8>,
}

impl<'w, W: Write> OutBuf<'w, W> {
    fn new(out: &'w mut W) -> Self {
        OutBuf {
            out,
            buf: Vec::with_capacity(BUF_SIZE),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), IntakeError> {
        if self.buf.len() + bytes.len() > BUF_SIZE {
            self.flush_buf()?;
        }
        if bytes.len() >= BUF_SIZE {
            self.out.write_all(bytes).map_err(IntakeError::Write)
        } else {
            self.buf.extend_from_slice(bytes);
            Ok(())
        }
    }

    fn flush_buf(&mut self) -> Result<(), IntakeError> {
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf).map_err(IntakeError::Write)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), IntakeError> {
        self.flush_buf()?;
        self.out.flush().map_err(IntakeError::Write)
    }
}

/// Reads one `Read` chunk, retrying on `Interrupted`. Returns 0 at EOF.
fn read_chunk<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<usize, IntakeError> {
    loop {
        match input.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(IntakeError::Read(e)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Body,
}

/// The line-level state machine behind [`read_message`]. The byte-level
/// normaliser feeds it line content (never containing CR or LF) and
/// end-of-line events.
#[derive(Debug)]
struct Machine<'w, W: Write> {
    out: OutBuf<'w, W>,
    ignore_dots: bool,
    phase: Phase,
    header: Vec<u8>,
    /// Header phase: index in `header` where the current line starts.
    line_start: usize,
    /// Content has arrived since the last end of line.
    line_open: bool,
    /// The current line is the first of the input (eligible as `From `).
    first_line: bool,
    /// The current line is the mbox `From ` line being dropped.
    in_from: bool,
    from_line: Option<Vec<u8>>,
    /// Body phase: a leading `.` held back until we know the line is not a
    /// lone dot.
    pending_dot: bool,
    /// Body phase: an over-long first line whose field status is still
    /// unknown (it went to the body because it was too long to buffer).
    pending_scan: Option<FieldScan>,
    body_line_len: usize,
    had_separator: bool,
    header_too_large: bool,
    dot_terminated: bool,
    /// LF at the start of the next chunk belongs to a CR already handled.
    skip_lf: bool,
    stats: BodyStats,
    utf8: Utf8Stream,
    last_written: Option<u8>,
}

impl<'w, W: Write> Machine<'w, W> {
    fn new(out: &'w mut W, ignore_dots: bool) -> Self {
        Machine {
            out: OutBuf::new(out),
            ignore_dots,
            phase: Phase::Header,
            header: Vec::new(),
            line_start: 0,
            line_open: false,
            first_line: true,
            in_from: false,
            from_line: None,
            pending_dot: false,
            pending_scan: None,
            body_line_len: 0,
            had_separator: false,
            header_too_large: false,
            dot_terminated: false,
            skip_lf: false,
            stats: BodyStats {
                bytes: 0,
                lines: 0,
                eight_bit: false,
                longest_line: 0,
                nul: false,
                valid_utf8: true,
                ends_with_crlf: false,
            },
            utf8: Utf8Stream::new(),
            last_written: None,
        }
    }

    /// Normalises one raw chunk. Returns the raw octets consumed, which is
    /// less than the chunk when a lone dot ended the input.
    fn feed(&mut self, chunk: &[u8]) -> Result<u64, IntakeError> {
        let mut rest = chunk;
        let mut consumed: u64 = 0;
        if self.skip_lf {
            self.skip_lf = false;
            if let Some((&b'\n', after)) = rest.split_first() {
                rest = after;
                consumed += 1;
            }
        }
        while !rest.is_empty() {
            let Some(pos) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
                self.content(rest)?;
                consumed += rest.len() as u64;
                break;
            };
            let (seg, tail) = rest.split_at_checked(pos).unwrap_or((rest, &[]));
            self.content(seg)?;
            let Some((&term, mut after)) = tail.split_first() else {
                break;
            };
            consumed += pos as u64 + 1;
            if term == b'\r' {
                // CR LF is one line ending; a CR at the chunk's end may have
                // its LF in the next chunk, so remember to swallow it.
                match after.split_first() {
                    Some((&b'\n', a)) => {
                        after = a;
                        consumed += 1;
                    }
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            rest = after;
            self.eol()?;
            if self.dot_terminated {
                break;
            }
        }
        Ok(consumed)
    }

    /// Line content (no CR/LF inside).
    fn content(&mut self, seg: &[u8]) -> Result<(), IntakeError> {
        if seg.is_empty() {
            return Ok(());
        }
        self.line_open = true;
        match self.phase {
            Phase::Body => self.body_content(seg),
            Phase::Header if self.in_from => {
                self.keep_from(seg);
                Ok(())
            }
            Phase::Header => {
                self.header.extend_from_slice(seg);
                if self.first_line {
                    let line = self.header.get(self.line_start..).unwrap_or_default();
                    if line.len() >= 5 {
                        self.first_line = false;
                        if line.starts_with(b"From ") {
                            let line = self.header.split_off(self.line_start);
                            self.in_from = true;
                            self.keep_from(&line);
                            return Ok(());
                        }
                    }
                }
                // +2 for the CRLF the line will end with.
                if self.header.len().saturating_add(2) > MAX_HEADER {
                    self.overflow()?;
                }
                Ok(())
            }
        }
    }

    fn keep_from(&mut self, seg: &[u8]) {
        let from = self.from_line.get_or_insert_with(Vec::new);
        let room = MAX_FROM_LINE.saturating_sub(from.len());
        from.extend_from_slice(seg.get(..room.min(seg.len())).unwrap_or_default());
    }

    /// The header buffer would exceed [`MAX_HEADER`] with the current,
    /// still incomplete line.
    fn overflow(&mut self) -> Result<(), IntakeError> {
        let partial = self.header.get(self.line_start..).unwrap_or_default();
        let mut scan = FieldScan::Start;
        let verdict = match partial.first() {
            Some(b' ' | b'\t') => Some(self.line_start > 0),
            _ => scan.feed(partial),
        };
        match verdict {
            Some(false) => {
                // Not a header line: the header legitimately ended before it.
                let line = self.header.split_off(self.line_start);
                self.phase = Phase::Body;
                self.body_content(&line)
            }
            None if self.line_start == 0 => {
                // A huge first line of name characters: it only becomes a
                // (too large) field if a colon follows. Nothing precedes it,
                // so streaming it now keeps the order right either way.
                let line = std::mem::take(&mut self.header);
                self.phase = Phase::Body;
                self.body_content(&line)?;
                self.pending_scan = Some(scan);
                Ok(())
            }
            _ => self.too_large(),
        }
    }

    /// Moves the whole buffered header (completed lines first, then the
    /// partial line) to the body so that the caller can save everything.
    fn too_large(&mut self) -> Result<(), IntakeError> {
        self.header_too_large = true;
        self.phase = Phase::Body;
        let buffered = std::mem::take(&mut self.header);
        let (done, partial) = buffered
            .split_at_checked(self.line_start)
            .unwrap_or((&buffered, &[]));
        for line in done.split_inclusive(|&b| b == b'\n') {
            self.body_content(line.strip_suffix(b"\r\n").unwrap_or(line))?;
            self.body_eol()?;
        }
        self.line_start = 0;
        self.body_content(partial)
    }

    fn eol(&mut self) -> Result<(), IntakeError> {
        let was_open = std::mem::replace(&mut self.line_open, false);
        match self.phase {
            Phase::Body => self.body_eol(),
            Phase::Header if self.in_from => {
                self.in_from = false;
                self.first_line = false;
                Ok(())
            }
            Phase::Header => {
                self.first_line = false;
                if !was_open {
                    self.had_separator = true;
                    self.phase = Phase::Body;
                    return Ok(());
                }
                let line = self.header.get(self.line_start..).unwrap_or_default();
                if !self.ignore_dots && line == b"." {
                    self.header.truncate(self.line_start);
                    self.dot_terminated = true;
                    return Ok(());
                }
                let is_header_line = match line.first() {
                    Some(b' ' | b'\t') => self.line_start > 0,
                    _ => is_field_start(line),
                };
                if is_header_line {
                    self.header.extend_from_slice(b"\r\n");
                    if self.header.len() > MAX_HEADER {
                        self.line_start = self.header.len();
                        return self.too_large();
                    }
                    self.line_start = self.header.len();
                    Ok(())
                } else {
                    let line = self.header.split_off(self.line_start);
                    self.phase = Phase::Body;
                    self.body_content(&line)?;
                    self.body_eol()
                }
            }
        }
    }

    fn body_content(&mut self, mut seg: &[u8]) -> Result<(), IntakeError> {
        if seg.is_empty() {
            return Ok(());
        }
        if let Some(scan) = self.pending_scan.as_mut() {
            match scan.feed(seg) {
                Some(true) => {
                    self.header_too_large = true;
                    self.pending_scan = None;
                }
                Some(false) => self.pending_scan = None,
                None => {}
            }
        }
        if !self.ignore_dots
            && self.body_line_len == 0
            && !self.pending_dot
            && let Some((&b'.', rest)) = seg.split_first()
        {
            self.pending_dot = true;
            seg = rest;
            if seg.is_empty() {
                return Ok(());
            }
        }
        if self.pending_dot {
            self.pending_dot = false;
            self.emit(b".")?;
            self.grow_line(1);
        }
        self.emit(seg)?;
        self.grow_line(seg.len());
        Ok(())
    }

    fn grow_line(&mut self, n: usize) {
        self.body_line_len = self.body_line_len.saturating_add(n);
        self.stats.longest_line = self.stats.longest_line.max(self.body_line_len);
    }

    fn body_eol(&mut self) -> Result<(), IntakeError> {
        self.pending_scan = None;
        if self.pending_dot {
            // The line was exactly ".".
            self.pending_dot = false;
            self.dot_terminated = true;
            return Ok(());
        }
        self.emit(b"\r\n")?;
        self.stats.lines += 1;
        self.body_line_len = 0;
        Ok(())
    }

    /// Every body octet passes through here, so the statistics describe
    /// exactly what the caller's writer received.
    fn emit(&mut self, bytes: &[u8]) -> Result<(), IntakeError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.out.write(bytes)?;
        self.stats.bytes += bytes.len() as u64;
        self.stats.eight_bit |= bytes.iter().any(|&b| b >= 0x80);
        self.stats.nul |= bytes.contains(&0);
        self.utf8.feed(bytes);
        self.last_written = bytes.last().copied().or(self.last_written);
        Ok(())
    }

    fn finish(mut self, input_bytes: u64) -> Result<Intake, IntakeError> {
        let mut added_final_newline = false;
        if !self.dot_terminated && self.line_open {
            let was_from = self.in_from;
            self.eol()?;
            added_final_newline = !self.dot_terminated && !was_from;
        }
        self.out.finish()?;
        self.stats.valid_utf8 = self.utf8.finish();
        self.stats.ends_with_crlf = self.last_written == Some(b'\n');
        let empty = self.header.is_empty()
            && self.stats.bytes == 0
            && !self.had_separator
            && !self.header_too_large
            && self.from_line.is_none();
        Ok(Intake {
            header_eight_bit: self.header.iter().any(|&b| b >= 0x80),
            nul: self.stats.nul || self.header.contains(&0),
            header: self.header,
            had_separator: self.had_separator,
            header_too_large: self.header_too_large,
            empty,
            dot_terminated: self.dot_terminated,
            added_final_newline,
            dropped_from_line: self.from_line,
            body: self.stats,
            input_bytes,
        })
    }
}

/// Reads a message from `input` (sendmail's standard input), writes the
/// normalised body to `body` and returns the header and what was learnt.
///
/// With `ignore_dots == false` a line that is exactly `.` ends the input and
/// nothing after it is read. An empty first line counts as the header/body
/// separator (the header is then empty and `had_separator` is true).
pub fn read_message<R: Read, W: Write>(
    mut input: R,
    ignore_dots: bool,
    body: &mut W,
) -> Result<Intake, IntakeError> {
    let mut machine = Machine::new(body, ignore_dots);
    let mut buf = vec![0u8; BUF_SIZE];
    let mut input_bytes: u64 = 0;
    loop {
        let n = read_chunk(&mut input, &mut buf)?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        input_bytes += machine.feed(chunk)?;
        if machine.dot_terminated {
            break;
        }
    }
    machine.finish(input_bytes)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Streaming quoted-printable encoder state.
///
/// Hand-written rather than using the `quoted_printable` crate because that
/// crate encodes a whole in-memory slice; a body that needs QP is usually one
/// with a huge line (say a 50 MB single line), and we must encode it from the
/// spool in constant memory. Decisions that depend on what follows (is this
/// SP/HT trailing? is this CR part of CRLF?) are handled with at most two
/// octets of look-behind instead of buffering a line.
#[derive(Debug)]
struct QpEncoder<'w, W: Write> {
    out: OutBuf<'w, W>,
    written: u64,
    /// Current output line length.
    col: usize,
    /// A SP/HT whose form depends on whether a line break follows.
    ws: Option<u8>,
    /// A CR that is a hard line break only if LF follows (after `ws`).
    cr: bool,
}

impl<'w, W: Write> QpEncoder<'w, W> {
    fn put_raw(&mut self, bytes: &[u8]) -> Result<(), IntakeError> {
        self.out.write(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Makes room for a token of `len` octets on the current line.
    fn room(&mut self, len: usize) -> Result<(), IntakeError> {
        if self.col + len > QP_MAX_TEXT {
            self.put_raw(b"=\r\n")?;
            self.col = 0;
        }
        Ok(())
    }

    fn put_encoded(&mut self, b: u8) -> Result<(), IntakeError> {
        self.room(3)?;
        let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
        let lo = HEX.get(usize::from(b & 0x0f)).copied().unwrap_or(b'0');
        self.put_raw(&[b'=', hi, lo])?;
        self.col += 3;
        Ok(())
    }

    fn put_literal(&mut self, b: u8) -> Result<(), IntakeError> {
        self.room(1)?;
        // An 'F' starting a line is encoded so "From " can never appear at a
        // line start and be mangled by an mbox writer downstream.
        if self.col == 0 && b == b'F' {
            return self.put_encoded(b);
        }
        self.put_raw(&[b])?;
        self.col += 1;
        Ok(())
    }

    /// Emits the held SP/HT: encoded when it would be trailing white space.
    fn flush_ws(&mut self, trailing: bool) -> Result<(), IntakeError> {
        match self.ws.take() {
            Some(w) if trailing => self.put_encoded(w),
            Some(w) => self.put_literal(w),
            None => Ok(()),
        }
    }

    fn byte(&mut self, b: u8) -> Result<(), IntakeError> {
        if self.cr {
            self.cr = false;
            if b == b'\n' {
                self.flush_ws(true)?;
                self.put_raw(b"\r\n")?;
                self.col = 0;
                return Ok(());
            }
            // A bare CR is data, not a line break.
            self.flush_ws(false)?;
            self.put_encoded(b'\r')?;
        }
        match b {
            b'\r' => self.cr = true,
            b' ' | b'\t' => {
                self.flush_ws(false)?;
                self.ws = Some(b);
            }
            33..=60 | 62..=126 => {
                self.flush_ws(false)?;
                self.put_literal(b)?;
            }
            _ => {
                self.flush_ws(false)?;
                self.put_encoded(b)?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<u64, IntakeError> {
        if self.cr {
            self.cr = false;
            self.flush_ws(false)?;
            self.put_encoded(b'\r')?;
        }
        // White space at the very end of the input is trailing too.
        self.flush_ws(true)?;
        self.out.finish()?;
        Ok(self.written)
    }
}

/// Encodes a CRLF-normalised body as quoted-printable (RFC 2045 §6.7) from
/// `body` to `out`, in constant memory. CRLF pairs become hard line breaks;
/// bare CR or LF (not expected after normalisation) are encoded as data, so
/// decoding always gives back the input. Returns the octets written.
pub fn encode_quoted_printable<R: Read, W: Write>(
    mut body: R,
    out: &mut W,
) -> Result<u64, IntakeError> {
    let mut enc = QpEncoder {
        out: OutBuf::new(out),
        written: 0,
        col: 0,
        ws: None,
        cr: false,
    };
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = read_chunk(&mut body, &mut buf)?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        for &b in chunk {
            enc.byte(b)?;
        }
    }
    enc.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;

    /// Reader that yields the input in chunks of the given sizes (cycled).
    struct Chunked<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        i: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let want = self.sizes[self.i % self.sizes.len()].max(1);
            self.i += 1;
            let n = want.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Tiny deterministic PRNG so tests need no extra dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn run(input: &[u8], ignore_dots: bool) -> (Intake, Vec<u8>) {
        let mut out = Vec::new();
        let i = read_message(input, ignore_dots, &mut out).unwrap();
        (i, out)
    }

    fn run_chunked(input: &[u8], ignore_dots: bool, sizes: Vec<usize>) -> (Intake, Vec<u8>) {
        let mut out = Vec::new();
        let r = Chunked {
            data: input,
            sizes,
            i: 0,
        };
        let i = read_message(r, ignore_dots, &mut out).unwrap();
        (i, out)
    }

    /// Same result for whole-buffer, byte-at-a-time and random chunking.
    fn run_all_ways(input: &[u8], ignore_dots: bool) -> (Intake, Vec<u8>) {
        let whole = run(input, ignore_dots);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ input.len() as u64);
        for k in 0..6 {
            let sizes = if k == 0 {
                vec![1]
            } else {
                (0..17).map(|_| 1 + rng.below(9)).collect()
            };
            let mut other = run_chunked(input, ignore_dots, sizes);
            // The LF of a CR LF dot line is only counted when it was already
            // read together with the CR; everything else must be identical.
            if whole.0.dot_terminated && other.0.input_bytes + 1 == whole.0.input_bytes {
                other.0.input_bytes += 1;
            }
            assert_eq!(whole, other, "chunking {k} differs");
        }
        whole
    }

    #[test]
    fn normalises_line_endings() {
        for input in [
            &b"Subject: x\r\n\r\na\r\nb\r\n"[..],
            b"Subject: x\n\na\nb\n",
            b"Subject: x\r\ra\rb\r",
            b"Subject: x\r\n\na\rb\r\n",
        ] {
            let (i, out) = run_all_ways(input, false);
            assert_eq!(i.header, b"Subject: x\r\n");
            assert!(i.had_separator);
            assert_eq!(out, b"a\r\nb\r\n");
            assert_eq!(i.body.lines, 2);
            assert!(i.body.ends_with_crlf);
            assert!(!i.added_final_newline);
        }
    }

    #[test]
    fn cr_lf_split_across_buffers_is_one_line_ending() {
        let input = b"A: b\r\n\r\nline1\r\nline2\r\n";
        for split in 1..input.len() {
            let (i, out) = run_chunked(input, false, vec![split, 100]);
            assert_eq!(out, b"line1\r\nline2\r\n", "split at {split}");
            assert_eq!(i.input_bytes, input.len() as u64);
        }
        // Double CR stays two line endings even when split.
        let (_, out) = run_chunked(b"\r\na\r\rb", false, vec![1]);
        assert_eq!(out, b"a\r\n\r\nb\r\n");
    }

    #[test]
    fn final_line_without_newline() {
        let (i, out) = run_all_ways(b"A: b\n\nbody", false);
        assert!(i.added_final_newline);
        assert_eq!(out, b"body\r\n");
        let (i, _) = run_all_ways(b"A: b\n\nbody\n", false);
        assert!(!i.added_final_newline);
    }

    #[test]
    fn dot_rule() {
        let input = b"A: b\n\nx\n.\nafter\n";
        let (i, out) = run_all_ways(input, false);
        assert!(i.dot_terminated);
        assert_eq!(out, b"x\r\n");
        assert_eq!(i.input_bytes, 10);

        let (i, out) = run_all_ways(input, true);
        assert!(!i.dot_terminated);
        assert_eq!(out, b"x\r\n.\r\nafter\r\n");

        // Lines merely starting with a dot are data.
        let (i, out) = run_all_ways(b"\n.x\n..\n. \n", false);
        assert!(!i.dot_terminated);
        assert_eq!(out, b".x\r\n..\r\n. \r\n");

        // CRLF dot line, and dot in the header phase.
        let (i, out) = run_all_ways(b"A: b\r\n.\r\nC: d\r\n", false);
        assert!(i.dot_terminated);
        assert_eq!(i.header, b"A: b\r\n");
        assert!(out.is_empty());
        assert_eq!(i.input_bytes, 9);
    }

    #[test]
    fn dot_as_last_line_without_newline() {
        let (i, out) = run_all_ways(b"A: b\n\nx\n.", false);
        assert!(i.dot_terminated);
        assert!(!i.added_final_newline);
        assert_eq!(out, b"x\r\n");
        let (i, out) = run_all_ways(b"A: b\n\nx\n.", true);
        assert!(!i.dot_terminated);
        assert!(i.added_final_newline);
        assert_eq!(out, b"x\r\n.\r\n");
    }

    #[test]
    fn drops_from_line() {
        let (i, out) = run_all_ways(b"From a@b Mon Jan 1\nSubject: s\n\nbody\n", false);
        assert_eq!(
            i.dropped_from_line.as_deref(),
            Some(&b"From a@b Mon Jan 1"[..])
        );
        assert_eq!(i.header, b"Subject: s\r\n");
        assert_eq!(out, b"body\r\n");
        // Only on the first line, and "From:" is a field.
        let (i, _) = run_all_ways(b"From: a\nX: y\n", false);
        assert!(i.dropped_from_line.is_none());
        assert_eq!(i.header, b"From: a\r\nX: y\r\n");
        let (i, out) = run_all_ways(b"A: b\n\nFrom me\n", false);
        assert!(i.dropped_from_line.is_none());
        assert_eq!(out, b"From me\r\n");
        // From line alone is not an "empty" message.
        let (i, _) = run_all_ways(b"From x", false);
        assert!(!i.empty);
        assert!(!i.added_final_newline);
        assert!(i.header.is_empty());
    }

    #[test]
    fn header_with_and_without_separator() {
        let (i, out) = run_all_ways(b"A: 1\n  cont\n\tcont2\nB : 2\n\nbody\n", false);
        assert!(i.had_separator);
        assert_eq!(i.header, b"A: 1\r\n  cont\r\n\tcont2\r\nB : 2\r\n");
        assert_eq!(out, b"body\r\n");

        let (i, out) = run_all_ways(b"A: 1\nnot a header\nmore\n", false);
        assert!(!i.had_separator);
        assert_eq!(i.header, b"A: 1\r\n");
        assert_eq!(out, b"not a header\r\nmore\r\n");
    }

    #[test]
    fn body_only_input() {
        let (i, out) = run_all_ways(b"hello world\n second\n", false);
        assert!(i.header.is_empty());
        assert!(!i.had_separator);
        assert_eq!(out, b"hello world\r\n second\r\n");
        // A continuation-looking first line is body.
        let (i, out) = run_all_ways(b" A: b\n", false);
        assert!(i.header.is_empty());
        assert_eq!(out, b" A: b\r\n");
        // Leading empty line is the separator.
        let (i, out) = run_all_ways(b"\nA: b\n", false);
        assert!(i.had_separator);
        assert!(i.header.is_empty());
        assert_eq!(out, b"A: b\r\n");
        assert!(!i.empty);
    }

    #[test]
    fn header_only_input() {
        let (i, out) = run_all_ways(b"Subject: x\nTo: y", false);
        assert_eq!(i.header, b"Subject: x\r\nTo: y\r\n");
        assert!(!i.had_separator);
        assert!(out.is_empty());
        assert_eq!(i.body.bytes, 0);
        assert!(!i.body.ends_with_crlf);
        assert!(i.added_final_newline);
        assert!(!i.empty);
    }

    #[test]
    fn field_start_recognition() {
        assert!(is_field_start(b"Subject: x"));
        assert!(is_field_start(b"X-A:"));
        assert!(is_field_start(b"Subject \t: x"));
        assert!(!is_field_start(b": x"));
        assert!(!is_field_start(b" Subject: x"));
        assert!(!is_field_start(b"Sub ject: x"));
        assert!(!is_field_start(b"Subject"));
        assert!(!is_field_start(b""));
        assert!(!is_field_start(b"Sub\x80: x"));
    }

    /// A header of exactly `total` octets made of one long field.
    fn header_of(total: usize) -> Vec<u8> {
        let mut h = b"X: ".to_vec();
        h.resize(total - 2, b'a');
        h.extend_from_slice(b"\r\n");
        h
    }

    #[test]
    fn header_at_exactly_limit() {
        let mut input = b"A: b\r\n".to_vec();
        input.extend(header_of(MAX_HEADER - 6));
        input.extend_from_slice(b"\r\nbody\r\n");
        let (i, out) = run(&input, false);
        assert!(!i.header_too_large);
        assert_eq!(i.header.len(), MAX_HEADER);
        assert!(i.had_separator);
        assert_eq!(out, b"body\r\n");
        let (i2, out2) = run_chunked(&input, false, vec![7, 1, 4093]);
        assert_eq!((i, out), (i2, out2));
    }

    #[test]
    fn header_over_limit_goes_to_body() {
        for extra in [1usize, 2, 100, 200_000] {
            let mut input = b"A: b\r\n".to_vec();
            input.extend(header_of(MAX_HEADER - 6 + extra));
            input.extend_from_slice(b"B: c\r\n\r\nbody\r\n.\r\nignored");
            let (i, out) = run(&input, false);
            assert!(i.header_too_large, "extra {extra}");
            assert!(i.header.is_empty());
            assert!(i.dot_terminated);
            assert!(!i.had_separator);
            let kept = &input[..input.len() - b".\r\nignored".len()];
            assert_eq!(out, kept);
            assert_eq!(i.body.bytes, kept.len() as u64);
            assert_eq!(i.body.lines, 5);
            assert_eq!(i.body.longest_line, MAX_HEADER - 8 + extra);
            let (i2, out2) = run_chunked(&input, false, vec![65_537, 3]);
            assert_eq!((i, out), (i2, out2));
        }
    }

    #[test]
    fn huge_first_line_without_colon_is_body() {
        let mut input = vec![b'a'; 3 * MAX_HEADER];
        input.extend_from_slice(b"\nsecond\n");
        let (i, out) = run(&input, false);
        assert!(!i.header_too_large);
        assert!(i.header.is_empty());
        assert_eq!(out.len(), input.len() + 2);
        assert_eq!(i.body.longest_line, 3 * MAX_HEADER);

        // ... but with a colon it is a field, and far too large.
        let mut input = vec![b'a'; 2 * MAX_HEADER];
        input.extend_from_slice(b": v\n\nbody\n");
        let (i, out) = run(&input, false);
        assert!(i.header_too_large);
        assert_eq!(out.len(), input.len() + 3);

        // A huge non-header line after real fields ends the header.
        let mut input = b"A: b\n".to_vec();
        input.extend(vec![b'x'; 10]);
        input.push(b' ');
        input.extend(vec![b'y'; 2 * MAX_HEADER]);
        input.push(b'\n');
        let (i, out) = run(&input, false);
        assert!(!i.header_too_large);
        assert_eq!(i.header, b"A: b\r\n");
        assert_eq!(out.len(), 2 * MAX_HEADER + 11 + 2);
    }

    #[test]
    fn nul_and_eight_bit() {
        let (i, _) = run_all_ways(b"A: \x00\n\nplain\n", false);
        assert!(i.nul);
        assert!(!i.body.nul);
        let (i, _) = run_all_ways(b"A: b\n\npl\x00ain\n", false);
        assert!(i.nul);
        assert!(i.body.nul);
        let (i, _) = run_all_ways(b"A: \xc3\xa9\n\nplain\n", false);
        assert!(i.header_eight_bit);
        assert!(!i.body.eight_bit);
        assert!(!i.nul);
        let (i, _) = run_all_ways(b"A: b\n\n\xc3\xa9\n", false);
        assert!(!i.header_eight_bit);
        assert!(i.body.eight_bit);
        assert!(i.body.valid_utf8);
    }

    #[test]
    fn utf8_validity_across_chunks() {
        let good = "A: b\n\nh\u{e9}llo \u{20ac} \u{1f600} \u{10ffff}\n".as_bytes();
        let (i, _) = run_all_ways(good, false);
        assert!(i.body.valid_utf8);
        for bad in [
            &b"\n\xc3\n"[..],             // truncated, then newline
            b"\n\xe2\x82",                // truncated at EOF (newline appended)
            b"\n\xff\n",                  // never valid
            b"\n\xed\xa0\x80\n",          // surrogate
            b"\n\xf0\x9f\x98\n",          // 4-byte truncated
            b"\nok \xc3\xa9 \x80 tail\n", // stray continuation
        ] {
            let (i, _) = run_all_ways(bad, false);
            assert!(!i.body.valid_utf8, "{bad:?}");
        }
        let (i, _) = run_all_ways(b"", false);
        assert!(i.body.valid_utf8);
    }

    #[test]
    fn empty_input() {
        let (i, out) = run_all_ways(b"", false);
        assert!(i.empty);
        assert!(out.is_empty());
        assert_eq!(i.input_bytes, 0);
        let (i, _) = run_all_ways(b".\n", false);
        assert!(i.empty);
        assert!(i.dot_terminated);
        let (i, _) = run_all_ways(b".", false);
        assert!(i.empty);
        let (i, out) = run_all_ways(b".\n", true);
        assert!(!i.empty);
        assert_eq!(out, b".\r\n");
    }

    #[test]
    fn longest_line_and_counts() {
        let (i, _) = run_all_ways(b"A: b\n\nab\nabcdef\n\nabc", false);
        assert_eq!(i.body.longest_line, 6);
        assert_eq!(i.body.lines, 4);
        assert_eq!(i.body.bytes, 2 + 2 + 6 + 2 + 2 + 3 + 2);
        assert_eq!(i.input_bytes, 20);
    }

    #[test]
    fn random_inputs_never_panic_and_are_chunking_independent() {
        let mut rng = Rng(42);
        let alphabet = b"ab :.\r\n\t\x00\x80\xc3\xa9F";
        for _ in 0..300 {
            let len = rng.below(80);
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            for dots in [false, true] {
                let (i, out) = run_all_ways(&input, dots);
                assert_eq!(i.body.bytes, out.len() as u64);
                assert!(out.is_empty() || out.ends_with(b"\r\n"));
                assert!(!out.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'));
            }
        }
    }

    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("boom"))
        }
    }
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("boom"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::other("boom"))
        }
    }

    #[test]
    fn io_errors_say_which_side() {
        let e = read_message(Failing, false, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, IntakeError::Read(_)));
        assert!(e.to_string().contains("reading"));
        let e = read_message(&b"A: b\n\nx\n"[..], false, &mut Failing).unwrap_err();
        assert!(matches!(e, IntakeError::Write(_)));
        let e = encode_quoted_printable(&b"x"[..], &mut Failing).unwrap_err();
        assert!(matches!(e, IntakeError::Write(_)));
    }

    // ---- quoted-printable ----

    fn qp(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let n = encode_quoted_printable(input, &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        out
    }

    fn check_qp(input: &[u8]) {
        let enc = qp(input);
        for line in enc.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(line.len() <= 76, "line too long: {}", line.len());
            assert!(!line.ends_with(b" ") && !line.ends_with(b"\t"));
            assert!(!line.starts_with(b"From "));
            assert!(line.iter().all(|&b| (32..=126).contains(&b) || b == b'\t'));
        }
        assert!(!enc.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'));
        let dec = quoted_printable::decode(&enc, quoted_printable::ParseMode::Strict).unwrap();
        assert_eq!(dec, input, "input {input:?} encoded {enc:?}");
    }

    #[test]
    fn qp_simple_cases() {
        assert_eq!(qp(b"hello\r\n"), b"hello\r\n");
        assert_eq!(qp(b"a=b\r\n"), b"a=3Db\r\n");
        assert_eq!(qp(b"trail \r\n"), b"trail=20\r\n");
        assert_eq!(qp(b"trail\t"), b"trail=09");
        assert_eq!(qp(b"a b\r\n"), b"a b\r\n");
        assert_eq!(qp(b"From me\r\n"), b"=46rom me\r\n");
        assert_eq!(qp(b"\xc3\xa9\x00"), b"=C3=A9=00");
        assert_eq!(qp(b"a\rb\nc"), b"a=0Db=0Ac");
        assert_eq!(qp(b" \r"), b" =0D");
        assert_eq!(qp(b""), b"");
        for input in [
            &b"hello\r\n"[..],
            b"a=b",
            b"trail \r\n\r\n",
            b"x \t \r\n \r\n\t",
            b".\r\n..\r\nFrom x\r\n",
            b"\r\n\r\n",
        ] {
            check_qp(input);
        }
    }

    #[test]
    fn qp_long_lines_and_soft_breaks() {
        let long = vec![b'a'; 1000];
        let enc = qp(&long);
        assert!(enc.split(|&b| b == b'\n').all(|l| l.len() <= 77));
        check_qp(&long);
        // Triplets must never be split by a soft break, at any offset.
        for pad in 0..80 {
            let mut v = vec![b'x'; pad];
            v.extend(std::iter::repeat_n(b'=', 200));
            v.extend_from_slice(b" \r\n");
            check_qp(&v);
            let enc = qp(&v);
            for line in enc.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let body = line.strip_suffix(b"=").unwrap_or(line);
                // Every '=' in the text part starts a complete triplet.
                let mut k = 0;
                while k < body.len() {
                    if body[k] == b'=' {
                        assert!(k + 2 < body.len(), "split triplet in {line:?}");
                        k += 3;
                    } else {
                        k += 1;
                    }
                }
            }
        }
        let mut spaces = vec![b' '; 300];
        spaces.extend_from_slice(b"\r\n");
        spaces.extend(vec![b'F'; 300]);
        check_qp(&spaces);
    }

    #[test]
    fn qp_random_round_trip() {
        let mut rng = Rng(7);
        for round in 0..400 {
            let len = rng.below(if round % 10 == 0 { 5000 } else { 300 });
            let input: Vec<u8> = match round % 3 {
                0 => (0..len).map(|_| rng.next() as u8).collect(),
                1 => {
                    let a = b" \t=\r\nFrom.a\xff";
                    (0..len).map(|_| a[rng.below(a.len())]).collect()
                }
                _ => {
                    let mut v = Vec::new();
                    while v.len() < len {
                        let n = rng.below(200);
                        v.extend((0..n).map(|_| b"ab =\t"[rng.below(5)]));
                        v.extend_from_slice(b"\r\n");
                    }
                    v
                }
            };
            check_qp(&input);
            // Chunking of the input must not matter.
            let mut out = Vec::new();
            let r = Chunked {
                data: &input,
                sizes: vec![1, 2, 3, 5, 8],
                i: 0,
            };
            encode_quoted_printable(r, &mut out).unwrap();
            assert_eq!(out, qp(&input));
        }
    }

    /// A reader producing `n` octets of one long line without holding them.
    struct Repeat {
        left: u64,
    }
    impl Read for Repeat {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = (buf.len() as u64).min(self.left) as usize;
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = if k % 7 == 0 { b'=' } else { b'q' };
            }
            self.left -= n as u64;
            Ok(n)
        }
    }

    /// Counts output and checks line lengths without storing it.
    struct LineCheck {
        col: usize,
        max: usize,
        total: u64,
    }
    impl Write for LineCheck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            for &b in buf {
                if b == b'\n' {
                    self.col = 0;
                } else if b != b'\r' {
                    self.col += 1;
                    self.max = self.max.max(self.col);
                }
            }
            self.total += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn qp_fifty_megabyte_single_line_streams() {
        let mut sink = LineCheck {
            col: 0,
            max: 0,
            total: 0,
        };
        let n = encode_quoted_printable(Repeat { left: 50_000_000 }, &mut sink).unwrap();
        assert_eq!(n, sink.total);
        assert!(sink.max <= 76);
        assert!(n > 50_000_000);
    }

    #[test]
    fn read_message_fifty_megabyte_line() {
        let mut sink = LineCheck {
            col: 0,
            max: 0,
            total: 0,
        };
        let input = Repeat { left: 50_000_000 };
        let i = read_message(input, false, &mut sink).unwrap();
        assert!(i.header.is_empty());
        assert!(!i.header_too_large);
        assert_eq!(i.body.longest_line, 50_000_000);
        assert_eq!(sink.total, 50_000_002);
        assert!(i.added_final_newline);
    }
}
