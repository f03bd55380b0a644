use std::io::Cursor;

use super::*;
use crate::smtpd::protocol::Settings;

/// The client's whole input at once, and everything the server wrote.
struct Duplex {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Sink {
    messages: Vec<(Envelope, Vec<u8>)>,
    reply: Option<Reply>,
}

impl Policy for Sink {
    fn check_recipient(&mut self, _s: &str, rcpt: &str) -> Result<(), Reply> {
        if rcpt.starts_with("nobody") {
            Err(Reply::new(550, "5.1.1", "no such user"))
        } else {
            Ok(())
        }
    }
    fn check_login(&mut self, _u: &str, _p: &[u8]) -> bool {
        false
    }
}

impl Backend for Sink {
    fn spool(&mut self) -> io::Result<File> {
        tempfile::tempfile()
    }
    fn deliver(&mut self, envelope: &Envelope, message: &mut File) -> Reply {
        let mut body = Vec::new();
        message.read_to_end(&mut body).unwrap();
        self.messages.push((envelope.clone(), body));
        self.reply
            .clone()
            .unwrap_or_else(|| Reply::new(250, "2.0.0", "Ok: queued"))
    }
}

fn session(input: &[u8], settings: Settings) -> (String, Sink, Summary) {
    let mut sink = Sink::default();
    let (out, summary) = session_with(input, settings, &mut sink);
    (out, sink, summary)
}

fn session_with(input: &[u8], settings: Settings, sink: &mut Sink) -> (String, Summary) {
    let duplex = Duplex {
        input: Cursor::new(input.to_vec()),
        output: Vec::new(),
    };
    let mut server = Server::new(settings);
    match run(duplex, &mut server, sink, None, true) {
        End::Closed(summary) => {
            // The duplex was consumed; the tests read replies from a
            // second run that keeps it, below.
            (String::new(), summary)
        }
        End::StartTls(d, summary) => (String::from_utf8_lossy(&d.output).into_owned(), summary),
    }
}

/// Runs a session and returns what the server wrote.
fn replies(input: &[u8], sink: &mut Sink) -> (String, Summary) {
    replies_with(input, Settings::default(), sink)
}

fn replies_with(input: &[u8], settings: Settings, sink: &mut Sink) -> (String, Summary) {
    let out = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let duplex = Shared {
        input: Cursor::new(input.to_vec()),
        output: out.clone(),
    };
    let mut server = Server::new(settings);
    let summary = match run(duplex, &mut server, sink, None, true) {
        End::Closed(s) | End::StartTls(_, s) => s,
    };
    let text = String::from_utf8_lossy(&out.borrow()).into_owned();
    (text, summary)
}

struct Shared {
    input: Cursor<Vec<u8>>,
    output: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
}

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn codes(out: &str) -> Vec<u16> {
    out.lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .filter_map(|l| l.get(..3)?.parse().ok())
        .collect()
}

#[test]
fn pipelined_transaction() {
    let mut sink = Sink::default();
    let (out, summary) = replies(
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<nobody@y>\r\nDATA\r\n\
          Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n",
        &mut sink,
    );
    assert_eq!(codes(&out), [220, 250, 250, 250, 550, 354, 250, 221]);
    assert_eq!(summary.accepted, 1);
    assert_eq!(sink.messages.len(), 1);
    let (env, body) = &sink.messages[0];
    assert_eq!(env.recipients.len(), 1);
    assert_eq!(body, b"Subject: hi\r\n\r\n.dot\r\nbody\r\n");
}

#[test]
fn refusal_reaches_the_client() {
    let mut sink = Sink {
        reply: Some(Reply::new(451, "4.3.0", "smarthost said no")),
        ..Sink::default()
    };
    let (out, summary) = replies(
        b"HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
        &mut sink,
    );
    assert_eq!(codes(&out), [220, 250, 250, 250, 354, 451, 221]);
    assert!(out.contains("451 4.3.0 smarthost said no"));
    assert_eq!(summary.refused, 1);
}

#[test]
fn disconnect_mid_data_delivers_nothing() {
    let mut sink = Sink::default();
    let (out, summary) = replies(
        b"HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhalf a message\r\n",
        &mut sink,
    );
    assert_eq!(codes(&out), [220, 250, 250, 250, 354]);
    assert!(sink.messages.is_empty());
    assert!(summary.abort.is_some());
}

#[test]
fn oversized_message_is_552_and_not_delivered() {
    let mut sink = Sink::default();
    let settings = Settings {
        max_size: 10,
        ..Settings::default()
    };
    let (out, _) = replies_with(
        b"HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n0123456789abcdef\r\n.\r\nNOOP\r\n",
        settings,
        &mut sink,
    );
    assert_eq!(codes(&out), [220, 250, 250, 250, 354, 552, 250]);
    assert!(sink.messages.is_empty());
}

#[test]
fn long_command_line_is_500_and_skipped() {
    let mut sink = Sink::default();
    let mut input = b"HELO c\r\nMAIL FROM:<".to_vec();
    input.extend(std::iter::repeat_n(b'a', 1 << 20));
    input.extend_from_slice(b">\r\nNOOP\r\nQUIT\r\n");
    let (out, _) = replies(&input, &mut sink);
    assert_eq!(codes(&out), [220, 250, 500, 250, 221]);
}

#[test]
fn the_line_limit_does_not_count_the_cr() {
    for (len, ending, code) in [
        (MAX_LINE, &b"\r\n"[..], 250),
        (MAX_LINE, b"\n", 250),
        (MAX_LINE + 1, b"\r\n", 500),
        (MAX_LINE + 1, b"\n", 500),
    ] {
        let mut sink = Sink::default();
        let mut input = b"NOOP ".to_vec();
        input.resize(len, b'x');
        input.extend_from_slice(ending);
        input.extend_from_slice(b"QUIT\r\n");
        let (out, _) = replies(&input, &mut sink);
        assert_eq!(codes(&out), [220, code, 221], "{len} octets and {ending:?}");
    }
}

#[test]
fn garbage_after_quit_is_ignored() {
    let mut sink = Sink::default();
    let (out, _) = replies(b"QUIT\r\nMAIL FROM:<a@b>\r\n\0\0\0\r\n", &mut sink);
    assert_eq!(codes(&out), [220, 221]);
}

#[test]
fn eof_mid_command() {
    let mut sink = Sink::default();
    let (out, summary) = replies(b"HELO c\r\nNOO", &mut sink);
    assert_eq!(codes(&out), [220, 250]);
    assert!(summary.abort.is_some());
}

#[test]
fn starttls_hands_back_the_stream_and_drops_pipelined_input() {
    let settings = Settings {
        tls_available: true,
        ..Settings::default()
    };
    let mut sink = Sink::default();
    let (out, _) = session_with(
        b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<injected@x>\r\n",
        settings,
        &mut sink,
    );
    assert_eq!(codes(&out), [220, 250, 220]);
    assert!(!out.contains("injected"));
}

#[test]
fn denied_client() {
    let settings = Settings {
        access: crate::smtpd::protocol::Access::Denied,
        ..Settings::default()
    };
    let (_, sink, _) = session(b"EHLO c\r\n", settings.clone());
    assert!(sink.messages.is_empty());
    let mut sink = Sink::default();
    let (out, _) = replies_with(b"EHLO c\r\n", settings, &mut sink);
    assert_eq!(codes(&out), [554]);
}

#[test]
fn read_line_bounds() {
    let mut r = BufReader::with_capacity(7, Cursor::new(b"abc\r\ndef\nxyz".to_vec()));
    let mut line = Vec::new();
    assert_eq!(read_line(&mut r, &mut line).unwrap(), Some(false));
    assert_eq!(line, b"abc");
    assert_eq!(read_line(&mut r, &mut line).unwrap(), Some(false));
    assert_eq!(line, b"def");
    assert!(read_line(&mut r, &mut line).is_err());
    assert_eq!(read_line(&mut r, &mut line).unwrap(), None);
}

#[test]
fn timed_reader_times_out_on_a_silent_pipe() {
    let (reader, _writer) = io::pipe().unwrap();
    let mut t = Timed::new(
        reader,
        Deadlines {
            idle: Duration::from_millis(1),
            session: Duration::from_secs(60),
        },
    );
    let mut buf = [0u8; 4];
    assert_eq!(
        t.read(&mut buf).unwrap_err().kind(),
        io::ErrorKind::TimedOut
    );
}

/// Random streams of SMTP fragments and junk through a whole session: it
/// always ends (EOF, QUIT or the error limit) and never panics.
#[test]
fn random_sessions_end_without_panic() {
    const PIECES: &[&[u8]] = &[
        b"EHLO c\r\n",
        b"MAIL FROM:<a@x>\r\n",
        b"MAIL FROM:<> SIZE=99999999999\r\n",
        b"RCPT TO:<b@y>\r\n",
        b"RCPT TO:<nobody@y> NOTIFY=NEVER\r\n",
        b"DATA\r\n",
        b"\r\n.\r\n",
        b".",
        b"\r",
        b"\n",
        b"\0",
        b"\xff",
        b"RSET\r\n",
        b"AUTH PLAIN\r\n",
        b"STARTTLS\r\n",
        b"QUIT\r\n",
        b"x",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..2000 {
        let mut input = Vec::new();
        for _ in 0..40 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            input.extend_from_slice(PIECES[(seed >> 33) as usize % PIECES.len()]);
        }
        let settings = Settings {
            max_size: 64,
            max_recipients: 2,
            ..Settings::default()
        };
        let mut sink = Sink::default();
        let (out, _) = replies_with(&input, settings, &mut sink);
        assert!(out.starts_with("220 "), "{out}");
        for line in out.lines() {
            assert!(line.len() < 512 && line.is_ascii(), "{line:?}");
        }
    }
}
