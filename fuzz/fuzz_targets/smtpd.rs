//! The SMTP server side (`smtpd::session::run`, as `sendmail -bs` and
//! `mailhop serve` use it) fed an arbitrary client: the real session
//! driver, line reader, PIPELINING flushing, state machine, command parser
//! and DATA decoder, over an in-memory stream. After an accepted STARTTLS
//! the session is run again on the same stream, as `serve` does (minus the
//! TLS itself).
//!
//! Input: two control bytes, then what the client sends.
//! - byte 0: bits 0-2 access (0-5 trusted, 6 needs AUTH, 7 denied); bit 3
//!   STARTTLS available; bit 4 AUTH available; bit 5 shutdown requested;
//!   bits 6-7 the size limit (1 MiB, 0, 16, 200).
//! - byte 1: bits 0-1 the recipient limit (100, 1, 2, 3); bits 2-3 the
//!   error limit (20, 1, 3, 5); bits 4-7 the most bytes one read returns.
//!
//! The policy refuses recipients containing `x` (550) or `y` (451), knows
//! the password `secret` for any user, fails every fourth spool file, and
//! the delivery refuses senders containing `q` (451).
//!
//! Invariants: no panic; everything the server writes is a well-formed
//! reply (three digits, CRLF, printable ASCII, at most 512 octets a line,
//! multi-line replies agree on the code, an enhanced status agrees with
//! the code's class); one reply per command line, in order, and the
//! replies are what RFC 5321 and the settings call for (a model of the
//! session built from the input alone); recipients are accepted only
//! within a transaction, within the limit, and when the policy allows;
//! the envelope and message handed to delivery are exactly the accepted
//! sender and recipients and the un-stuffed DATA, never past the size
//! limit; STARTTLS and AUTH are offered and accepted only when they should
//! be, and bytes pipelined after STARTTLS are never taken as commands; the
//! error limit holds; no reply is held back when the server waits for
//! input at a line boundary (PIPELINING must not deadlock); the summary
//! counts what was accepted and refused.
#![no_main]

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use libfuzzer_sys::fuzz_target;
use mailhop::smtpd::command::{self, Command};
use mailhop::smtpd::data::Decoder;
use mailhop::smtpd::session::{self, MAX_LINE};
use mailhop::smtpd::{Access, Backend, End, Envelope, Policy, Reply, Server, Settings, Summary};

const MAX_SIZES: [u64; 4] = [1 << 20, 0, 16, 200];
const MAX_RECIPIENTS: [usize; 4] = [100, 1, 2, 3];
const MAX_ERRORS: [u32; 4] = [20, 1, 3, 5];
const READ_SIZES: [usize; 16] = [
    usize::MAX,
    1,
    2,
    3,
    5,
    7,
    16,
    64,
    100,
    500,
    1000,
    4095,
    4096,
    4097,
    16384,
    20000,
];

/// The client: hands out its input a few bytes per read, keeps what the
/// server writes, and notes where both stood at every read.
struct Client<'a> {
    input: &'a [u8],
    pos: usize,
    read_size: usize,
    output: Vec<u8>,
    /// (input bytes handed out, output bytes written) at each read.
    reads: Vec<(usize, usize)>,
}

impl Read for Client<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads.push((self.pos, self.output.len()));
        let n = self
            .read_size
            .min(buf.len())
            .min(self.input.len() - self.pos);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Client<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Delivery {
    sender: String,
    recipients: Vec<String>,
    message: Vec<u8>,
}

#[derive(Default)]
struct Fake {
    spools: usize,
    deliveries: Vec<Delivery>,
}

thread_local! {
    /// One anonymous temporary file per process, emptied for each message.
    static SPOOL: File = tempfile::tempfile().expect("a temporary file");
}

impl Policy for Fake {
    fn check_recipient(&mut self, _sender: &str, rcpt: &str) -> Result<(), Reply> {
        if rcpt.contains('x') {
            // Echoes the client's text, as real refusals do.
            Err(Reply::new(550, "5.1.1", format!("<{rcpt}>: no such user")))
        } else if rcpt.contains('y') {
            Err(Reply::new(451, "4.2.0", format!("<{rcpt}>: try later")))
        } else {
            Ok(())
        }
    }
    fn check_login(&mut self, user: &str, password: &[u8]) -> bool {
        assert!(!user.is_empty(), "login asked for an empty user");
        password == b"secret"
    }
}

impl Backend for Fake {
    fn spool(&mut self) -> io::Result<File> {
        self.spools += 1;
        if self.spools % 4 == 0 {
            return Err(io::Error::other("no space left (fuzz)"));
        }
        SPOOL.with(|f| {
            let mut f = f.try_clone()?;
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            Ok(f)
        })
    }
    fn deliver(&mut self, envelope: &Envelope, message: &mut File) -> Reply {
        let mut body = Vec::new();
        message.read_to_end(&mut body).expect("reading the spool");
        let sender = envelope.mail.address.clone();
        let refuse = sender.contains('q');
        self.deliveries.push(Delivery {
            sender,
            recipients: envelope
                .recipients
                .iter()
                .map(|r| r.address.clone())
                .collect(),
            message: body,
        });
        if refuse {
            Reply::new(451, "4.3.0", "queue refused (fuzz)")
        } else {
            Reply::new(250, "2.0.0", "Ok: queued")
        }
    }
}

/// One reply as it was written: its code, the text of each line, and
/// where it ends in the output.
#[derive(Debug)]
struct Wire {
    code: u16,
    texts: Vec<String>,
    end: usize,
}

/// Splits what the server wrote into replies, checking every line.
fn parse_replies(out: &[u8]) -> Vec<Wire> {
    let mut replies = Vec::new();
    let mut texts = Vec::new();
    let mut code = None;
    let mut at = 0;
    for line in out.split_inclusive(|&b| b == b'\n') {
        at += line.len();
        let Some(body) = line.strip_suffix(b"\r\n") else {
            panic!("reply line not ended by CRLF: {line:?}");
        };
        assert!(line.len() <= 512, "reply line longer than 512: {line:?}");
        assert!(
            body.iter().all(|b| (b' '..=b'~').contains(b)),
            "control or non-ASCII octet in a reply: {line:?}"
        );
        assert!(body.len() >= 4, "reply line too short: {line:?}");
        assert!(
            body[..3].iter().all(u8::is_ascii_digit) && (b'2'..=b'5').contains(&body[0]),
            "bad reply code: {line:?}"
        );
        let c = u16::from(body[0] - b'0') * 100
            + u16::from(body[1] - b'0') * 10
            + u16::from(body[2] - b'0');
        assert!(
            code.is_none_or(|prev| prev == c),
            "code changes inside a reply"
        );
        code = Some(c);
        let text = String::from_utf8(body[4..].to_vec()).expect("ASCII");
        if texts.is_empty() {
            check_status(c, &text);
        }
        texts.push(text);
        match body[3] {
            b'-' => {}
            b' ' => {
                replies.push(Wire {
                    code: c,
                    texts: std::mem::take(&mut texts),
                    end: at,
                });
                code = None;
            }
            _ => panic!("bad separator after the code: {line:?}"),
        }
    }
    assert!(texts.is_empty(), "multi-line reply not finished");
    replies
}

/// An enhanced status code (RFC 3463) is of the reply code's class.
fn check_status(code: u16, text: &str) {
    let word = text.split(' ').next().unwrap_or("");
    let parts: Vec<&str> = word.split('.').collect();
    let looks_enhanced = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if looks_enhanced {
        assert_eq!(
            parts[0],
            (code / 100).to_string(),
            "enhanced status of another class: {code} {text}"
        );
    }
}

/// What the model knows of one line of client input.
enum Input<'a> {
    Line {
        text: &'a [u8],
        too_long: bool,
    },
    /// EOF, clean or in the middle of a line.
    Eof,
}

/// The session as the client's input alone says it must go.
struct Model<'a> {
    input: &'a [u8],
    settings: &'a Settings,
    stop: bool,
    /// Where the stream stood when the first session handed it back after
    /// STARTTLS.
    tls_boundary: Option<usize>,
    replies: std::vec::IntoIter<Wire>,
    deliveries: std::vec::IntoIter<Delivery>,
    pos: usize,
    greeted: bool,
    /// The sender and accepted recipients of the open transaction.
    tx: Option<(String, Vec<String>)>,
    tls: bool,
    user: bool,
    auth_pending: bool,
    errors: u32,
    spools: usize,
    accepted: u32,
    refused: u32,
    /// (end of the input that asked for a reply, end of that reply).
    due: Vec<(usize, usize)>,
}

impl<'a> Model<'a> {
    /// A line exactly as the session's reader splits it.
    fn next_line(&mut self) -> Input<'a> {
        let input = self.input;
        let rest = &input[self.pos..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            self.pos = self.input.len();
            return Input::Eof;
        };
        self.pos += lf + 1;
        let raw = &rest[..lf];
        let text = raw.strip_suffix(b"\r").unwrap_or(raw);
        let too_long = text.len() > MAX_LINE;
        Input::Line { text, too_long }
    }

    fn reply(&mut self, input_end: usize) -> Wire {
        let r = self
            .replies
            .next()
            .unwrap_or_else(|| panic!("no reply to the input ending at {input_end}"));
        self.due.push((input_end, r.end));
        r
    }

    /// EOF (or the connection lost) wherever it came: a 421 only when
    /// shutting down.
    fn eof(&mut self) {
        if self.stop {
            // Not owed before the read that found EOF: no entry in `due`.
            let r = self
                .replies
                .next()
                .expect("no 421 at EOF while shutting down");
            assert_eq!(r.code, 421, "shutdown at EOF");
        }
    }

    /// Runs the whole model; returns true if the session ended by a
    /// closing reply rather than EOF.
    fn run(&mut self) -> bool {
        let g = self.reply(0);
        if self.settings.access == Access::Denied {
            assert_eq!(g.code, 554, "denied client greeting");
            return true;
        }
        assert_eq!(g.code, 220, "greeting");
        loop {
            let (text, too_long) = match self.next_line() {
                Input::Eof => {
                    self.eof();
                    return false;
                }
                Input::Line { text, too_long } => (text, too_long),
            };
            let end = self.pos;
            let r = self.reply(end);
            // After a 334 the line is an AUTH response, whatever it says.
            let auth_response = std::mem::take(&mut self.auth_pending);
            let expected = if auth_response {
                None
            } else if too_long {
                Some(500)
            } else {
                match command::parse(text) {
                    Err(e) => Some(e.code),
                    Ok(c) => self.predict(&c),
                }
            };
            if r.code == 421 {
                assert!(
                    r.texts[0].contains("too many errors"),
                    "unexpected 421: {:?}",
                    r.texts
                );
                assert_eq!(self.errors + 1, self.settings.max_errors, "error limit");
                assert!(
                    expected.is_none_or(|e| e >= 500),
                    "hung up instead of {expected:?}"
                );
                return true;
            }
            if r.code >= 500 {
                self.errors += 1;
                assert!(self.errors < self.settings.max_errors, "error limit");
            }
            if let Some(e) = expected {
                assert_eq!(r.code, e, "reply to {:?}", String::from_utf8_lossy(text));
            }
            if auth_response {
                assert!(
                    matches!(r.code, 334 | 235 | 501 | 535),
                    "reply {} to an AUTH response",
                    r.code
                );
                self.auth_outcome(&r);
                continue;
            }
            if too_long {
                continue;
            }
            match self.after(text, &r) {
                Flow::Next => {}
                Flow::Closed => return true,
                Flow::Eof => return false,
            }
        }
    }

    /// A step of AUTH: another challenge, success, or a refusal.
    fn auth_outcome(&mut self, r: &Wire) {
        match r.code {
            334 => self.auth_pending = true,
            235 => {
                assert!(!self.user, "authenticated twice");
                self.user = true;
            }
            _ => {}
        }
    }

    /// The reply code a command must get (`None`: one of several, checked
    /// in `after`).
    fn predict(&self, c: &Command) -> Option<u16> {
        let s = self.settings;
        Some(match c {
            Command::Ehlo(_) | Command::Helo(_) => 250,
            Command::Mail(m) => {
                if !self.greeted || self.tx.is_some() {
                    503
                } else if s.access != Access::Trusted && !self.user {
                    530
                } else if m.size.is_some_and(|n| n > s.max_size) {
                    552
                } else {
                    250
                }
            }
            Command::Rcpt(r) => match &self.tx {
                None => 503,
                Some((_, rcpts)) if rcpts.len() >= s.max_recipients => 452,
                Some(_) if r.address.contains('x') => 550,
                Some(_) if r.address.contains('y') => 451,
                Some(_) => 250,
            },
            Command::Data => match &self.tx {
                None => 503,
                Some((_, rcpts)) if rcpts.is_empty() => 554,
                Some(_) => 354,
            },
            Command::Rset | Command::Noop => 250,
            Command::Quit => 221,
            Command::Vrfy => 252,
            Command::Expn => 502,
            Command::Help => 214,
            Command::StartTls if !s.tls_available => 502,
            Command::StartTls if self.tls => 503,
            Command::StartTls => 220,
            Command::Auth { .. } if !s.auth_available => 502,
            Command::Auth { .. } if !self.tls => 538,
            Command::Auth { .. } if !self.greeted || self.user || self.tx.is_some() => 503,
            Command::Auth { .. } => return None,
        })
    }

    /// The state after a reply (already checked against `predict`).
    fn after(&mut self, text: &[u8], r: &Wire) -> Flow {
        let s = self.settings;
        let Ok(c) = command::parse(text) else {
            return Flow::Next;
        };
        match c {
            Command::Ehlo(_) => {
                self.greeted = true;
                self.tx = None;
                let kw = &r.texts[1..];
                let has = |k: &str| kw.iter().any(|t| t == k);
                assert!(has("PIPELINING"), "PIPELINING not offered");
                assert!(has(&format!("SIZE {}", s.max_size)), "SIZE not offered");
                assert_eq!(has("STARTTLS"), s.tls_available && !self.tls, "STARTTLS");
                assert_eq!(
                    kw.iter().any(|t| t.starts_with("AUTH")),
                    s.auth_available && self.tls && !self.user,
                    "AUTH offered"
                );
            }
            Command::Helo(_) => {
                self.greeted = true;
                self.tx = None;
                assert_eq!(r.texts.len(), 1, "HELO reply is one line");
            }
            Command::Rset => self.tx = None,
            Command::Mail(m) if r.code == 250 => self.tx = Some((m.address, Vec::new())),
            Command::Rcpt(rc) if r.code == 250 => {
                let (_, rcpts) = self.tx.as_mut().expect("predicted");
                rcpts.push(rc.address);
            }
            Command::Data if r.code == 354 => return self.data(),
            Command::Quit => return Flow::Closed,
            Command::StartTls if r.code == 220 => {
                // The session hands the stream back; what the client
                // pipelined after STARTTLS was read in the clear and is
                // dropped, and it starts over.
                let boundary = self
                    .tls_boundary
                    .take()
                    .expect("STARTTLS accepted but the session did not end");
                assert!(boundary >= self.pos, "STARTTLS line not fully read");
                self.pos = boundary;
                self.tls = true;
                self.greeted = false;
                self.tx = None;
            }
            Command::Auth { .. } => {
                assert!(
                    matches!(r.code, 334 | 235 | 535 | 501..=504 | 530 | 538),
                    "AUTH reply {}",
                    r.code
                );
                self.auth_outcome(r);
            }
            _ => {}
        }
        Flow::Next
    }

    /// The message after a 354, and the reply to it.
    fn data(&mut self) -> Flow {
        let (sender, recipients) = self.tx.take().expect("354 without a transaction");
        assert!(!recipients.is_empty() && recipients.len() <= self.settings.max_recipients);
        self.spools += 1;
        let mut d = Decoder::new(self.settings.max_size);
        let mut message = Vec::new();
        let used = d.feed(&self.input[self.pos..], &mut message);
        if !d.is_done() {
            // The client went away mid-message: nothing is delivered.
            self.pos = self.input.len();
            self.refused += 1;
            self.eof();
            return Flow::Eof;
        }
        self.pos += used;
        let r = self.reply(self.pos);
        if d.too_big() {
            assert_eq!(r.code, 552, "oversized message");
        } else if self.spools % 4 == 0 {
            assert_eq!(r.code, 452, "spool failure");
        } else {
            let got = self.deliveries.next().expect("a message was not delivered");
            let want = Delivery {
                sender,
                recipients,
                message,
            };
            assert_eq!(got, want, "delivered envelope or message");
            assert!(got.message.len() as u64 <= self.settings.max_size);
            assert!(got.message.is_empty() || got.message.ends_with(b"\r\n"));
            let code = if got.sender.contains('q') { 451 } else { 250 };
            assert_eq!(r.code, code, "reply after DATA");
        }
        if r.code == 250 {
            self.accepted += 1;
        } else {
            self.refused += 1;
        }
        Flow::Next
    }
}

enum Flow {
    Next,
    Closed,
    Eof,
}

fn settings(c0: u8, c1: u8) -> Settings {
    Settings {
        max_recipients: MAX_RECIPIENTS[usize::from(c1 & 3)],
        max_size: MAX_SIZES[usize::from(c0 >> 6)],
        max_errors: MAX_ERRORS[usize::from((c1 >> 2) & 3)],
        tls_available: c0 & 8 != 0,
        auth_available: c0 & 16 != 0,
        access: match c0 & 7 {
            7 => Access::Denied,
            6 => Access::NeedsAuth,
            _ => Access::Trusted,
        },
        ..Settings::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let [c0, c1, input @ ..] = data else {
        return;
    };
    let settings = settings(*c0, *c1);
    let stop = Arc::new(AtomicBool::new(c0 & 32 != 0));
    let mut client = Client {
        input,
        pos: 0,
        read_size: READ_SIZES[usize::from(c1 >> 4)],
        output: Vec::new(),
        reads: Vec::new(),
    };
    let mut server = Server::new(settings.clone());
    let mut fake = Fake::default();

    // As `mailhop serve` runs a session, STARTTLS included.
    let mut tls_boundary = None;
    let summary = match session::run(&mut client, &mut server, &mut fake, Some(&stop), true) {
        End::Closed(s) => s,
        End::StartTls(c, before) => {
            tls_boundary = Some(c.pos);
            server.tls_started();
            let mut after = match session::run(c, &mut server, &mut fake, Some(&stop), false) {
                End::Closed(s) | End::StartTls(_, s) => s,
            };
            after.accepted += before.accepted;
            after.refused += before.refused;
            after
        }
    };

    let deliveries = std::mem::take(&mut fake.deliveries);
    let mut model = Model {
        input,
        settings: &settings,
        stop: c0 & 32 != 0,
        tls_boundary,
        replies: parse_replies(&client.output).into_iter(),
        deliveries: deliveries.into_iter(),
        pos: 0,
        greeted: false,
        tx: None,
        tls: false,
        user: false,
        auth_pending: false,
        errors: 0,
        spools: 0,
        accepted: 0,
        refused: 0,
        due: Vec::new(),
    };
    let closed = model.run();
    if let Some(extra) = model.replies.next() {
        panic!("reply {} {:?} to nothing", extra.code, extra.texts);
    }
    assert!(model.deliveries.next().is_none(), "an unexpected delivery");
    assert!(
        model.tls_boundary.is_none(),
        "STARTTLS ended a session silently"
    );
    assert_eq!(model.spools, fake.spools, "spool files asked for");
    assert_eq!(server.user().is_some(), model.user, "who authenticated");
    let want = Summary {
        accepted: model.accepted,
        refused: model.refused,
        abort: summary.abort.clone(),
    };
    assert_eq!(summary, want, "session summary");
    assert_eq!(summary.abort.is_none(), closed, "summary.abort");

    // PIPELINING: whenever the server waited for input that did not stop
    // mid-line, every reply owed for the input so far had been sent.
    for &(read_at, written) in &client.reads {
        if read_at == 0 || input[read_at - 1] == b'\n' {
            for &(input_end, reply_end) in &model.due {
                assert!(
                    input_end > read_at || reply_end <= written,
                    "reply to input ending at {input_end} held back while waiting at {read_at}"
                );
            }
        }
    }
});
