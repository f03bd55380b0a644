//! A small scripted SMTP server in the test process, for exact fault
//! sequences aiosmtpd cannot produce (bad greetings, garbage, STARTTLS
//! injection), and for comparing our DATA bytes with lettre's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::util::World;

#[derive(Debug, Clone)]
pub enum Step {
    /// Send these bytes (one write).
    Send(&'static [u8]),
    /// Read one line; it must start with this.
    Expect(&'static str),
    /// Read DATA content up to and including the terminator.
    Data,
    /// Tell the test this point was reached (`Scripted::events`).
    Notify,
}

pub struct Scripted {
    pub port: u16,
    pub handle: JoinHandle<Vec<u8>>,
    /// One message per `Notify` step reached.
    pub events: std::sync::mpsc::Receiver<()>,
}

/// Serves one connection by `steps`; returns everything the client sent
/// during `Data` steps.
pub fn serve(steps: Vec<Step>) -> Scripted {
    serve_many(vec![steps])
}

/// Serves one connection per script, in order (a server that fails the
/// first time and works the second).
pub fn serve_many(scripts: Vec<Vec<Step>>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, events) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut data = Vec::new();
        for steps in scripts {
            let (stream, _) = listener.accept().unwrap();
            data.extend(play(stream, steps, &tx));
        }
        data
    });
    Scripted {
        port,
        handle,
        events,
    }
}

fn play(stream: TcpStream, steps: Vec<Step>, events: &std::sync::mpsc::Sender<()>) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer: TcpStream = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut data = Vec::new();
    for step in steps {
        match step {
            Step::Send(b) => {
                if writer.write_all(b).is_err() {
                    break;
                }
            }
            Step::Expect(prefix) => {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                assert!(
                    line.starts_with(prefix),
                    "expected {prefix:?}, got {line:?}"
                );
            }
            Step::Notify => {
                let _ = events.send(());
            }
            Step::Data => loop {
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                    break;
                }
                data.extend_from_slice(&line);
                if line == b".\r\n" && (data.len() == 3 || data.ends_with(b"\r\n.\r\n")) {
                    break;
                }
            },
        }
    }
    // Drain until the client hangs up.
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    data
}

fn world(port: u16) -> World {
    World::new(&format!(
        "[[account]]\nname = \"s\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"a@example.com\"\ntimeout = 20\n[queue]\nmode = \"never\"\n"
    ))
}

const MSG: &[u8] = b"Subject: x\n\nbody\n";

#[test]
fn greeting_421_is_temporary() {
    let s = serve(vec![Step::Send(b"421 4.3.2 shutting down\r\n")]);
    let r = world(s.port).sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("421 4.3.2 shutting down"), "{}", r.stderr);
    s.handle.join().unwrap();
}

#[test]
fn garbage_reply_is_a_protocol_error() {
    let s = serve(vec![Step::Send(b"HELLO THERE\r\n")]);
    let r = world(s.port).sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("not an SMTP reply"), "{}", r.stderr);
    s.handle.join().unwrap();
}

#[test]
fn starttls_response_injection_is_refused() {
    let s = serve(vec![
        Step::Send(b"220 ready\r\n"),
        Step::Expect("EHLO"),
        Step::Send(b"250-x\r\n250 STARTTLS\r\n"),
        Step::Expect("STARTTLS"),
        // The 220 and an injected reply arrive together, in plaintext.
        Step::Send(b"220 go ahead\r\n250 injected\r\n"),
    ]);
    let w = World::new(&format!(
        "[[account]]\nname = \"s\"\nhost = \"127.0.0.1\"\nport = {}\nfrom = \"a@example.com\"\n[queue]\nmode = \"never\"\n",
        s.port
    ));
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("injection"), "{}", r.stderr);
    s.handle.join().unwrap();
}

#[test]
fn multiline_rejection_is_reported_whole() {
    let s = serve(vec![
        Step::Send(b"220 ready\r\n"),
        Step::Expect("EHLO"),
        Step::Send(b"250 x\r\n"),
        Step::Expect("MAIL FROM:<a@example.com>"),
        Step::Send(b"550-5.7.1 Policy\r\n550 5.7.1 see https://example.net/why\r\n"),
    ]);
    let r = world(s.port).sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 69, "{r:?}");
    assert!(
        r.stderr
            .contains("550 5.7.1 Policy / 5.7.1 see https://example.net/why"),
        "{}",
        r.stderr
    );
    s.handle.join().unwrap();
}

/// A whole successful transaction, QUIT included.
pub fn data_script() -> Vec<Step> {
    vec![
        Step::Send(b"220 ready\r\n"),
        Step::Expect("EHLO"),
        Step::Send(b"250 x\r\n"),
        Step::Expect("MAIL"),
        Step::Send(b"250 ok\r\n"),
        Step::Expect("RCPT"),
        Step::Send(b"250 ok\r\n"),
        Step::Expect("DATA"),
        Step::Send(b"354 go\r\n"),
        Step::Data,
        Step::Send(b"250 queued\r\n"),
        Step::Expect("QUIT"),
        Step::Send(b"221 bye\r\n"),
    ]
}

/// Our DATA bytes against lettre's `SmtpConnection` for the same message:
/// identical dot-stuffing; the only difference is lettre's known extra CRLF
/// before the terminator when the message already ends in CRLF.
#[test]
fn data_bytes_agree_with_lettre() {
    use mailhop::transport::{AuthMode, Dsn, Envelope, MinTls, Session, Settings, TlsMode};
    let messages: [&[u8]; 4] = [
        b"Subject: a\r\n\r\n.dot\r\n..two\r\nx.\r\n.\r\nend\r\n",
        b"Subject: b\r\n\r\nno final newline",
        b".\r\n",
        b"Subject: c\r\n\r\n\r\n.\r\n\r\n",
    ];
    for msg in messages {
        let ours = serve(data_script());
        let settings = Settings {
            host: "127.0.0.1".into(),
            port: ours.port,
            tls: TlsMode::None,
            ca_file: None,
            fingerprint: None,
            min_tls: MinTls::V12,
            client_cert: None,
            auth: AuthMode::None,
            username: None,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(10),
            data_timeout: Duration::from_secs(10),
            helo_name: "client.example".into(),
            system_roots_only: false,
        };
        let mut session = Session::connect(&settings, None).unwrap();
        let rcpts = vec!["b@example.net".to_string()];
        let dsn = Dsn::default();
        let env = Envelope {
            sender: "a@example.com",
            recipients: &rcpts,
            size: msg.len() as u64,
            eight_bit: false,
            dsn: &dsn,
        };
        let mut reader: &[u8] = msg;
        session.send(&env, &mut reader).unwrap();
        session.quit();
        let ours = ours.handle.join().unwrap();

        let theirs = serve(data_script());
        let mut conn = lettre::transport::smtp::client::SmtpConnection::connect(
            ("127.0.0.1", theirs.port),
            Some(Duration::from_secs(10)),
            &lettre::transport::smtp::extension::ClientId::Domain("client.example".into()),
            None,
            None,
        )
        .unwrap();
        let envelope = lettre::address::Envelope::new(
            Some("a@example.com".parse().unwrap()),
            vec!["b@example.net".parse().unwrap()],
        )
        .unwrap();
        conn.send(&envelope, msg).unwrap();
        conn.quit().unwrap();
        drop(conn);
        let theirs = theirs.handle.join().unwrap();

        if msg.ends_with(b"\r\n") {
            let mut expected = ours[..ours.len() - 3].to_vec();
            expected.extend_from_slice(b"\r\n.\r\n");
            assert_eq!(theirs, expected, "{:?}", String::from_utf8_lossy(msg));
        } else {
            assert_eq!(theirs, ours, "{:?}", String::from_utf8_lossy(msg));
        }
    }
}
