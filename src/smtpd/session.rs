//! The session driver: runs a [`Server`] over any byte stream (stdin and
//! stdout for `-bs`, a TCP connection, TLS), with a bounded line reader, a
//! spool file for DATA, pipelining-aware flushing, and deadlines.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::data::Decoder;
use super::protocol::{Envelope, Line, Policy, Server, Step};
use super::reply::Reply;

/// The longest command line we read: RFC 5321's 512, with room for long
/// DSN parameters and clients that overshoot. Longer lines are discarded
/// as they arrive and answered with 500; they never sit in memory.
pub const MAX_LINE: usize = 4096;

/// What the application does for a session.
pub trait Backend: Policy {
    /// A fresh, empty, anonymous spool file for one message's DATA.
    fn spool(&mut self) -> io::Result<File>;
    /// Takes one message (the un-stuffed DATA in `message`, at offset 0)
    /// and returns the reply: 250 only once it is delivered or durably
    /// queued.
    fn deliver(&mut self, envelope: &Envelope, message: &mut File) -> Reply;
}

/// Time limits for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Longest wait for the client's next bytes.
    pub idle: Duration,
    /// Longest whole session.
    pub session: Duration,
}

/// A stream whose reads wait at most the idle time, and never past the
/// session's end; either one gives `TimedOut`. Uses poll(2) on the file
/// descriptor, so it works for sockets and pipes alike.
#[derive(Debug)]
pub struct Timed<S> {
    inner: S,
    idle: Duration,
    end: Instant,
}

impl<S> Timed<S> {
    pub fn new(inner: S, d: Deadlines) -> Timed<S> {
        let now = Instant::now();
        Timed {
            inner,
            idle: d.idle,
            end: now.checked_add(d.session).unwrap_or(now),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Read + AsFd> Read for Timed<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let left = self
            .end
            .checked_duration_since(Instant::now())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "session time limit"))?;
        let wait = left.min(self.idle);
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.inner.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, timeout) {
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle time limit"));
                }
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
        }
        self.inner.read(buf)
    }
}

impl<S: Write> Write for Timed<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How a session ended.
#[derive(Debug)]
pub enum End<S> {
    /// QUIT, EOF, an error limit, a timeout or a write failure.
    Closed(Summary),
    /// STARTTLS was accepted: the caller wraps the stream in TLS, calls
    /// [`Server::tls_started`] and runs the session again.
    StartTls(S, Summary),
}

/// What happened in a session, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub accepted: u32,
    pub refused: u32,
    /// Why it ended other than by QUIT.
    pub abort: Option<String>,
}

/// Runs `server` over `stream` until the session ends. `stop` is set on
/// shutdown: the session then ends at its next read with a 421, and a
/// message whose DATA is not complete is not accepted.
pub fn run<S: Read + Write>(
    stream: S,
    server: &mut Server,
    backend: &mut dyn Backend,
    stop: Option<&Arc<AtomicBool>>,
    greet: bool,
) -> End<S> {
    let mut s = Session {
        reader: BufReader::with_capacity(16 * 1024, stream),
        out: Vec::new(),
        summary: Summary::default(),
        stop,
    };
    if greet {
        let g = server.greeting();
        if let Some(flow) = s.step(g, server, backend) {
            return s.finish(flow);
        }
    }
    let mut line = Vec::with_capacity(512);
    loop {
        let read = read_line(&mut s.reader, &mut line);
        let step = match read {
            Ok(Some(too_long)) => {
                let l = if too_long {
                    Line::TooLong
                } else {
                    Line::Text(&line)
                };
                server.line(l, backend)
            }
            Ok(None) => {
                let flow = s.close_at_eof("the client closed the connection");
                return s.finish(flow);
            }
            Err(e) => {
                let flow = s.close_on_error(&e);
                return s.finish(flow);
            }
        };
        if let Some(flow) = s.step(step, server, backend) {
            return s.finish(flow);
        }
    }
}

struct Session<'a, S> {
    reader: BufReader<S>,
    /// Replies not yet written: with PIPELINING they go out together when
    /// the client's input is used up.
    out: Vec<u8>,
    summary: Summary,
    stop: Option<&'a Arc<AtomicBool>>,
}

impl<S: Read + Write> Session<'_, S> {
    fn finish(mut self, flow: Flow) -> End<S> {
        // Replies held back for pipelining still go out.
        let _ = self.flush();
        match flow {
            Flow::Closed(summary) => End::Closed(summary),
            Flow::StartTls => End::StartTls(self.reader.into_inner(), self.summary),
        }
    }

    /// Handles one step; `Some` when the session is over.
    fn step(&mut self, step: Step, server: &mut Server, backend: &mut dyn Backend) -> Option<Flow> {
        match step {
            Step::Reply(r) => {
                self.out.extend_from_slice(&r.to_wire());
                self.flush_if_idle().err().map(|e| self.close_on_error(&e))
            }
            Step::Close(r) => {
                self.out.extend_from_slice(&r.to_wire());
                let _ = self.flush();
                Some(Flow::Closed(std::mem::take(&mut self.summary)))
            }
            Step::StartTls(r) => {
                self.out.extend_from_slice(&r.to_wire());
                if let Err(e) = self.flush() {
                    return Some(self.close_on_error(&e));
                }
                // Anything the client pipelined after STARTTLS was sent in
                // the clear and must not be taken as a command under TLS
                // (CVE-2011-0411): it is dropped with the buffer.
                Some(Flow::StartTls)
            }
            Step::Data(r) => {
                self.out.extend_from_slice(&r.to_wire());
                if let Err(e) = self.flush() {
                    server.data_done();
                    return Some(self.close_on_error(&e));
                }
                self.data(server, backend)
            }
        }
    }

    /// Reads DATA into a spool file, then hands it to the backend.
    fn data(&mut self, server: &mut Server, backend: &mut dyn Backend) -> Option<Flow> {
        let max = server.settings().max_size;
        let read = self.read_data(max, backend);
        // The transaction ends here whatever happened.
        let envelope = server.data_done();
        let reply = match (read, envelope) {
            (Err(e), _) => return Some(self.data_aborted(&e)),
            (Ok(DataRead::TooBig), _) => Reply::new(
                552,
                "5.3.4",
                format!("Message size exceeds fixed limit of {max} octets"),
            ),
            (Ok(DataRead::SpoolFailed(e)), _) => Reply::new(
                452,
                "4.3.1",
                format!("Insufficient system storage: cannot spool the message: {e}"),
            ),
            (Ok(DataRead::Message(mut file)), Some(env)) => match file.seek(SeekFrom::Start(0)) {
                Ok(_) => backend.deliver(&env, &mut file),
                Err(e) => Reply::new(451, "4.3.0", format!("Cannot read the spool file: {e}")),
            },
            (Ok(DataRead::Message(_)), None) => {
                Reply::new(451, "4.3.0", "Internal error: no transaction")
            }
        };
        if reply.code == 250 {
            self.summary.accepted = self.summary.accepted.saturating_add(1);
        } else {
            self.summary.refused = self.summary.refused.saturating_add(1);
        }
        self.step(Step::Reply(reply), server, backend)
    }

    fn read_data(&mut self, max: u64, backend: &mut dyn Backend) -> io::Result<DataRead> {
        let mut decoder = Decoder::new(max);
        let mut spool = match backend.spool() {
            Ok(f) => Ok(BufWriter::with_capacity(64 * 1024, f)),
            Err(e) => Err(e.to_string()),
        };
        let mut chunk = Vec::with_capacity(16 * 1024);
        while !decoder.is_done() {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during DATA",
                ));
            }
            chunk.clear();
            let used = decoder.feed(buf, &mut chunk);
            self.reader.consume(used);
            if let Ok(w) = &mut spool
                && !decoder.too_big()
                && let Err(e) = w.write_all(&chunk)
            {
                spool = Err(e.to_string());
            }
        }
        if decoder.too_big() {
            return Ok(DataRead::TooBig);
        }
        let file = spool.and_then(|w| w.into_inner().map_err(|e| e.error().to_string()));
        Ok(match file {
            Ok(f) => DataRead::Message(f),
            Err(e) => DataRead::SpoolFailed(e),
        })
    }

    /// The connection failed in DATA: the message is dropped unacknowledged
    /// (the client still has it).
    fn data_aborted(&mut self, e: &io::Error) -> Flow {
        self.summary.refused = self.summary.refused.saturating_add(1);
        self.close_on_error(e)
    }

    fn stopping(&self) -> bool {
        self.stop.is_some_and(|s| s.load(Ordering::SeqCst))
    }

    fn close_at_eof(&mut self, why: &str) -> Flow {
        if self.stopping() {
            self.out.extend_from_slice(
                &Reply::new(421, "4.3.2", "Service shutting down, closing connection").to_wire(),
            );
            let _ = self.flush();
            self.summary.abort = Some("shutdown".into());
        } else {
            self.summary.abort = Some(why.into());
        }
        Flow::Closed(std::mem::take(&mut self.summary))
    }

    fn close_on_error(&mut self, e: &io::Error) -> Flow {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                self.out.extend_from_slice(
                    &Reply::new(421, "4.4.2", "Timeout exceeded, closing connection").to_wire(),
                );
                let _ = self.flush();
                self.summary.abort = Some(e.to_string());
                Flow::Closed(std::mem::take(&mut self.summary))
            }
            io::ErrorKind::UnexpectedEof => self.close_at_eof(&e.to_string()),
            _ => {
                self.summary.abort = Some(e.to_string());
                Flow::Closed(std::mem::take(&mut self.summary))
            }
        }
    }

    /// With PIPELINING, replies are held while more commands wait in the
    /// input buffer, and sent together (RFC 2920 3.2).
    fn flush_if_idle(&mut self) -> io::Result<()> {
        if self.reader.buffer().is_empty() || self.out.len() > 64 * 1024 {
            self.flush()
        } else {
            Ok(())
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let w = self.reader.get_mut();
        w.write_all(&self.out)?;
        self.out.clear();
        w.flush()
    }
}

/// Why a session stops reading commands.
enum Flow {
    Closed(Summary),
    StartTls,
}

enum DataRead {
    Message(File),
    TooBig,
    SpoolFailed(String),
}

/// Reads one line into `line` (without CRLF or LF). `Ok(None)` at EOF;
/// `Ok(Some(true))` when the line, without its CRLF or LF, was longer than
/// [`MAX_LINE`] (the rest was read and dropped).
fn read_line<R: BufRead>(r: &mut R, line: &mut Vec<u8>) -> io::Result<Option<bool>> {
    line.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return if any {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection mid-command",
                ))
            } else {
                Ok(None)
            };
        }
        any = true;
        let (part, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i)),
            None => (buf, None),
        };
        // Room for one octet over the limit: the CR of a CRLF, which is not
        // part of the line, so a line is as long with CRLF as with bare LF.
        if line.len().saturating_add(part.len()) <= MAX_LINE + 1 {
            line.extend_from_slice(part);
        } else {
            too_long = true;
        }
        let used = found.map_or(buf.len(), |i| i + 1);
        r.consume(used);
        if found.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(too_long || line.len() > MAX_LINE));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests;
