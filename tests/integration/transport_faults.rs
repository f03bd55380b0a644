//! Transport faults from issues #15 and #11, through the real binary:
//! a server that trickles its reply (deadline per reply), success codes
//! where SMTP allows none (protocol breaks are temporary), a server that
//! echoes the credentials it was sent (redacted everywhere), and a
//! certificate from a CA other than tls_ca_file (diagnosed).
//!
//! The scripted server here serves every connection with the same script
//! (the queue runner may reconnect), and can trickle bytes and echo lines,
//! which `scripted.rs` cannot.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::certs::TestPki;
use crate::smtpd::{Mode, Smtpd, SmtpdOptions};
use crate::util::{Run, World};

const USER: &str = "shop@example.com";
const PASS: &str = "Echo-Me-s3cret";
const MSG: &[u8] = b"Subject: x\n\nbody\n";

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Send these bytes (one write).
    Send(&'static [u8]),
    /// Send these bytes one at a time, `pause` apart; stop at the first
    /// failed write (the client gave up).
    Trickle(&'static [u8], Duration),
    /// Read one line; it must start with this.
    Expect(&'static str),
    /// Read one line and send `prefix`, the line, and `suffix`.
    Echo(&'static str, &'static str),
    /// Read DATA up to the terminator.
    Data,
}

/// Serves every connection by `steps` until the test ends; returns the
/// port.
fn serve(steps: Vec<Step>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let steps = steps.clone();
            std::thread::spawn(move || play(stream, &steps));
        }
    });
    port
}

fn play(stream: TcpStream, steps: &[Step]) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    for step in steps {
        let ok = match *step {
            Step::Send(b) => writer.write_all(b).is_ok(),
            Step::Trickle(b, pause) => b.iter().all(|byte| {
                // The pause is the fault under test, not a wait for an event.
                std::thread::sleep(pause);
                writer.write_all(&[*byte]).is_ok()
            }),
            Step::Expect(prefix) => {
                let mut line = String::new();
                let ok = reader.read_line(&mut line).unwrap_or(0) > 0;
                assert!(
                    !ok || line.starts_with(prefix),
                    "expected {prefix:?}, got {line:?}"
                );
                ok
            }
            Step::Echo(prefix, suffix) => {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0) > 0
                    && writer
                        .write_all(format!("{prefix}{}{suffix}", line.trim_end()).as_bytes())
                        .is_ok()
            }
            Step::Data => loop {
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                    break false;
                }
                if line == b".\r\n" {
                    break true;
                }
            },
        };
        if !ok {
            return;
        }
    }
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
}

/// An account on `port` without TLS (loopback), with a password file.
fn world(port: u16, account_extra: &str, queue_mode: &str) -> World {
    let w = World::new(&format!(
        "[[account]]\nname = \"s\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"{USER}\"\n{account_extra}\n[queue]\nmode = \"{queue_mode}\"\n"
    ));
    let pw = w.path("password");
    std::fs::write(&pw, format!("{PASS}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    w
}

fn auth_account(w_port: u16, mech: &str, queue_mode: &str) -> World {
    // The password file path is only known once the world exists.
    let w = world(w_port, "", queue_mode);
    let cfg = std::fs::read_to_string(w.config()).unwrap().replace(
        &format!("from = \"{USER}\"\n"),
        &format!(
            "from = \"{USER}\"\nuser = \"{USER}\"\nauth = \"{mech}\"\npassword_file = \"{}\"\n",
            w.path("password").display()
        ),
    );
    w.write_config(&cfg);
    w
}

const GREET: [Step; 3] = [
    Step::Send(b"220 ready\r\n"),
    Step::Expect("EHLO"),
    Step::Send(b"250-x\r\n250 AUTH PLAIN LOGIN\r\n"),
];

fn script(rest: &[Step]) -> Vec<Step> {
    GREET.iter().chain(rest).copied().collect()
}

/// Every file under `dir`, as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in rd.flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&b));
        }
    }
    out
}

/// The message was queued for a later try, not bounced or dead-lettered.
fn assert_queued(w: &World, r: &Run) {
    assert_eq!(r.code, 0, "queued for later: {r:?}");
    let q = w.queued();
    assert_eq!(q.len(), 1, "{q:?} {r:?}");
    assert!(w.dead().is_empty(), "no dead letter: {r:?}");
}

/// #15.9: a greeting trickled one byte every 250 ms takes ~7 s in all; with
/// `timeout = 2` the whole reply must be refused at 2 s. (Before the fix
/// each byte reset the per-read timer and the send succeeded.)
#[test]
fn a_trickled_reply_times_out_as_a_whole() {
    let port = serve(vec![
        Step::Trickle(
            b"220 a-very-slow-greeting.example\r\n",
            Duration::from_millis(250),
        ),
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
    ]);
    let w = world(port, "timeout = 2", "never");
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("timed out"), "{}", r.stderr);
}

/// #15.9: the reply to the end of the message, trickled over ~8 s, is
/// bounded as a whole by data_timeout (2 s here).
#[test]
fn a_trickled_reply_to_the_message_times_out_as_a_whole() {
    let port = serve(vec![
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
        Step::Trickle(
            b"250 2.0.0 Ok: queued as 4F2D81A0B3\r\n",
            Duration::from_millis(250),
        ),
        Step::Expect("QUIT"),
        Step::Send(b"221 bye\r\n"),
    ]);
    let w = world(port, "timeout = 2\ndata_timeout = 2", "never");
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("timed out"), "{}", r.stderr);
}

/// #15.9: a server that agrees to STARTTLS and then trickles a TLS record
/// (~17 s in all) is cut off by the handshake's deadline (timeout = 2).
/// Before, each byte restarted the timer, and the record's garbage ended
/// as a permanent TLS error.
#[test]
fn a_trickled_tls_handshake_times_out_as_a_whole() {
    const RECORD: &[u8] = b"\x16\x03\x03\x00\x40\
        0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let port = serve(vec![
        Step::Send(b"220 ready\r\n"),
        Step::Expect("EHLO"),
        Step::Send(b"250-x\r\n250 STARTTLS\r\n"),
        Step::Expect("STARTTLS"),
        Step::Send(b"220 go ahead\r\n"),
        Step::Trickle(RECORD, Duration::from_millis(250)),
    ]);
    let w = World::new("");
    let pki = TestPki::create(&w.path("pki"));
    let w = World::new(&format!(
        "[[account]]\nname = \"s\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"starttls\"\n\
         from = \"{USER}\"\ntls_ca_file = \"{}\"\ntimeout = 2\n[queue]\nmode = \"never\"\n",
        pki.path("ca.pem").display()
    ));
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("timed out"), "{}", r.stderr);
}

/// #15.11: 250 to DATA (before any data) is a protocol break: temporary.
#[test]
fn a_250_to_data_is_temporary() {
    let port = serve(script(&[
        Step::Expect("MAIL"),
        Step::Send(b"250 ok\r\n"),
        Step::Expect("RCPT"),
        Step::Send(b"250 ok\r\n"),
        Step::Expect("DATA"),
        Step::Send(b"250 2.0.0 ok\r\n"),
    ]));
    let w = world(port, "", "never");
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("does not allow"), "{}", r.stderr);

    let w = world(port, "", "on-failure");
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_queued(&w, &r);
}

/// #15.11: 334 after the password (instead of 235 or 535).
#[test]
fn a_334_to_the_password_is_temporary() {
    let port = serve(script(&[
        Step::Expect("AUTH LOGIN"),
        Step::Send(b"334 VXNlcm5hbWU6\r\n"),
        Step::Expect(""),
        Step::Send(b"334 UGFzc3dvcmQ6\r\n"),
        Step::Expect(""),
        Step::Send(b"334 UGFzc3dvcmQ6\r\n"),
    ]));
    let w = auth_account(port, "login", "never");
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("does not allow"), "{}", r.stderr);

    let w = auth_account(port, "login", "on-failure");
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_queued(&w, &r);
}

/// #15.11: 250 to a bare AUTH LOGIN (instead of a 334 challenge).
#[test]
fn a_250_to_a_bare_auth_is_temporary() {
    let port = serve(script(&[
        Step::Expect("AUTH LOGIN"),
        Step::Send(b"250 2.0.0 whatever\r\n"),
    ]));
    let w = auth_account(port, "login", "never");
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 75, "{r:?}");

    let w = auth_account(port, "login", "on-failure");
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_queued(&w, &r);
}

/// #15.12: a server that quotes the AUTH PLAIN line (base64 payload) and
/// the password in its refusal. Neither may reach stderr (with -v), the
/// log file, the queue (454 queues the message, with its last error) or a
/// dead letter.
#[test]
fn echoed_credentials_are_redacted_everywhere() {
    let payload = base64_plain(USER, PASS);
    for code in ["454 4.7.0", "535 5.7.8"] {
        let reply: &'static str =
            Box::leak(format!(" rejected; you said {PASS} for {USER}:{PASS}\r\n").into_boxed_str());
        let prefix: &'static str = Box::leak(format!("{code} ").into_boxed_str());
        let port = serve(script(&[Step::Echo(prefix, reply)]));
        let w = auth_account(port, "plain", "on-failure");
        let r = w.sendmail(&["-v", "-oi", "b@example.net"], MSG);
        let everything = format!(
            "{}\n{}\n{}\n{}\n{}",
            r.stderr,
            r.stdout,
            w.log(),
            all_text(&w.path("queue")),
            all_text(&w.path("dead"))
        );
        assert!(
            everything.contains("rejected; you said"),
            "the refusal itself is reported ({code}): {everything}"
        );
        assert!(!everything.contains(PASS), "{code}: {everything}");
        assert!(!everything.contains(&payload), "{code}: {everything}");
    }
}

fn base64_plain(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

/// #11: the server's certificate comes from another CA than tls_ca_file.
/// The error names the trust store, the certificate's subject and issuer,
/// and its fingerprint, in `mailhop check` and in a send.
#[test]
fn certificate_from_another_ca_is_diagnosed() {
    let w = World::new("");
    let ours = TestPki::create(&w.path("ours"));
    let theirs = TestPki::create(&w.path("theirs"));
    let server = Smtpd::start(
        &SmtpdOptions::tls(
            Mode::StartTls,
            &theirs.path("server.pem"),
            &theirs.path("server.key"),
        ),
        &w.path("spool"),
    );
    let ca = ours.path("ca.pem");
    let w = World::new(&format!(
        "[[account]]\nname = \"t\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\n\
         from = \"{USER}\"\ntls_ca_file = \"{}\"\ntimeout = 20\n[queue]\nmode = \"never\"\n",
        server.port,
        ca.display()
    ));
    let fp = theirs.sha256_fingerprint("server.pem");
    let want = [
        format!("tls_ca_file {}", ca.display()),
        "CN=localhost".to_string(),
        "CN=mailhop test CA".to_string(),
        fp.clone(),
    ];

    let cfg = w.config().display().to_string();
    let check = crate::util::run_raw("mailhop", &["check".into(), "-C".into(), cfg], b"", &[]);
    assert_ne!(check.code, 0, "{check:?}");
    for text in &want {
        assert!(check.stdout.contains(text.as_str()), "{text}: {check:?}");
    }
    // Both test CAs are called "mailhop test CA", so the name matches a
    // trusted CA and only the signature tells them apart: say so.
    assert!(check.stdout.contains("same name"), "{check:?}");
    // The dialogue up to the failure is shown, not dropped: the greeting,
    // EHLO and STARTTLS happened.
    for line in ["<- 220", "-> EHLO", "-> STARTTLS"] {
        assert!(check.stdout.contains(line), "{line}: {check:?}");
    }

    // Under mode "never" a certificate problem cannot wait in the queue: a
    // temporary failure, the message kept as a dead letter.
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 75, "{r:?}");
    assert_eq!(w.dead().len(), 1);
    for text in &want {
        assert!(r.stderr.contains(text.as_str()), "{text}: {}", r.stderr);
    }
    assert!(
        !check
            .stdout
            .contains(&ours.sha256_fingerprint("server.pem")),
        "the fingerprint is the one the server sent"
    );
}
