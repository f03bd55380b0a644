//! A second, real smarthost: Postfix with Dovecot SASL, set up the way many
//! company relays are (TLS required, AUTH through Dovecot, the login must
//! own the envelope sender, bare newlines refused, a size limit). Each test
//! starts a private instance through `tests/peers/postfix.py`: its own
//! config, queue and data directories and its own Dovecot, all in the
//! test's temporary directory, so the machine's MTA is never touched.
//! Postfix relays what it accepts to an aiosmtpd sink (`smtpd.rs`), where
//! the test reads it.
//!
//! Needs root and the Debian packages postfix and dovecot-core (installed
//! by `scripts/test`). Without them each test says so and passes, except
//! under `CI`, where it fails.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use crate::certs::TestPki;
use crate::smtpd::{Received, Smtpd, SmtpdOptions, peer_script, python};
use crate::util::{Run, World, text};

/// The Dovecot user; the only address it may send as (sender login map).
const USER: &str = "shop@example.com";
const PASS: &str = "Pf-s3cret-Pa55word";
/// Postfix's `message_size_limit` for the tests, in bytes.
const SIZE_LIMIT: usize = 200_000;
/// Refused at RCPT by the peer's `check_recipient_access` (550 5.1.1).
const REFUSED: &str = "refused@example.net";
/// How the peer scripts get `PASS` (not on argv, where `ps` shows it).
const PASSWORD_ENV: &str = "MAILHOP_TEST_POSTFIX_PASSWORD";
/// How long to wait for the peer's `READY` line.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Why this machine cannot run the Postfix peer, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // Postfix and Dovecot start as root and drop privileges themselves.
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if uid != Some(0) {
        return Some("not root (Postfix and Dovecot must start as root)".into());
    }
    for (bin, package) in [
        ("/usr/sbin/postfix", "postfix"),
        ("/usr/sbin/dovecot", "dovecot-core"),
    ] {
        if !Path::new(bin).exists() {
            return Some(format!(
                "{bin} missing (Debian: apt-get install {package}, or run scripts/test as root)"
            ));
        }
    }
    None
}

/// True when the tests can run; otherwise says why, and fails under `CI`.
fn available(test: &str) -> bool {
    let Some(why) = missing_prerequisite() else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test}: the Postfix peer cannot run: {why}");
    }
    eprintln!("{test}: SKIPPED: the Postfix peer cannot run: {why}");
    false
}

/// One running Postfix + Dovecot (the guardian script) and its sink.
struct PostfixPeer {
    port: u16,
    dir: std::path::PathBuf,
    sink: Smtpd,
    child: Child,
    /// Held open for the peer's lifetime: at its EOF (this is dropped, or
    /// the test process dies) the guardian stops Postfix and Dovecot.
    stdin: Option<ChildStdin>,
}

impl PostfixPeer {
    /// Starts the peer (on a port it picks) under `dir`, presenting the test
    /// PKI's `server` certificate, and waits for its `READY` line.
    fn start(dir: &Path, pki: &TestPki) -> PostfixPeer {
        std::fs::create_dir_all(dir).unwrap();
        let sink = Smtpd::start(&SmtpdOptions::default(), &dir.join("sink"));
        let mut child = Command::new(python())
            .arg(peer_script("postfix.py"))
            .args(["--dir", &dir.join("server").display().to_string()])
            .args(["--relay-port", &sink.port.to_string()])
            .args(["--cert", &pki.path("server.pem").display().to_string()])
            .args(["--key", &pki.path("server.key").display().to_string()])
            .args(["--user", USER])
            .env(PASSWORD_ENV, PASS)
            .args(["--size-limit", &SIZE_LIMIT.to_string()])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("guardian.stderr")).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let mut peer = PostfixPeer {
            port: 0,
            dir: dir.to_path_buf(),
            sink,
            child,
            stdin,
        };
        peer.port = peer.await_ready(stdout);
        peer
    }

    /// Reads the guardian's first stdout line, `READY <port>`, and returns
    /// the port; panics with the servers' logs on anything else.
    fn await_ready(&self, stdout: ChildStdout) -> u16 {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => format!("no READY within {TIMEOUT:?}"),
            Err(RecvTimeoutError::Disconnected) => "the guardian died".into(),
        };
        match line.trim().strip_prefix("READY ").map(str::parse) {
            Some(Ok(port)) => port,
            _ => panic!(
                "the Postfix peer did not start: {}\n{}",
                line.trim(),
                self.logs()
            ),
        }
    }

    /// Postfix's and Dovecot's logs and the guardian's stderr, for failures.
    fn logs(&self) -> String {
        let read = |rel: &str| std::fs::read_to_string(self.dir.join(rel)).unwrap_or_default();
        format!(
            "--- postfix.log ---\n{}\n--- dovecot.log ---\n{}\n--- guardian stderr ---\n{}",
            read("server/postfix.log"),
            read("server/dovecot.log"),
            read("guardian.stderr")
        )
    }

    /// Waits until Postfix's log (maillog_file) has a line containing
    /// `needle`, panicking with all the logs after `TIMEOUT`. Postfix
    /// writes it through postlogd, after the fact: polling is the only way
    /// to see it, and the bound keeps a missing line from hanging the test.
    fn expect_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        let path = self.dir.join("server/postfix.log");
        while !std::fs::read_to_string(&path)
            .unwrap_or_default()
            .contains(needle)
        {
            if std::time::Instant::now() > deadline {
                panic!("{needle:?} not in Postfix's log\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PostfixPeer {
    fn drop(&mut self) {
        // EOF on its stdin: the guardian stops both servers and exits.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A world whose one account submits to a fresh Postfix peer.
struct Setup {
    /// First, so the servers stop before the directory is removed.
    peer: PostfixPeer,
    world: World,
}

/// Starts a peer and writes a STARTTLS account for it that logs in as
/// `USER` with `password`. `tables` adds keys to the world's own tables,
/// e.g. `[("queue", "mode = \"always\"")]`.
fn setup(password: &str, tables: &[(&str, &str)]) -> Setup {
    let world = World::new("");
    // Dovecot's unprivileged auth process must reach its passwd-file and
    // base_dir inside: make the world traversable (not listable).
    std::fs::set_permissions(world.path(""), std::fs::Permissions::from_mode(0o711)).unwrap();
    let pki = TestPki::create(&world.path("pki"));
    let peer = PostfixPeer::start(&world.path("postfix"), &pki);
    let pw = world.path("password");
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cfg = std::fs::read_to_string(world.config()).unwrap();
    for (table, keys) in tables {
        let header = format!("[{table}]\n");
        assert!(cfg.contains(&header), "no [{table}] in {cfg}");
        cfg = cfg.replacen(&header, &format!("{header}{keys}\n"), 1);
    }
    cfg.push_str(&format!(
        "\n[[account]]\nname = \"postfix\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\n\
         from = \"{USER}\"\nuser = \"{USER}\"\npassword_file = \"{}\"\n\
         tls_ca_file = \"{}\"\ntimeout = 30\n",
        peer.port,
        pw.display(),
        pki.path("ca.pem").display(),
    ));
    world.write_config(&cfg);
    Setup { peer, world }
}

impl Setup {
    fn sendmail(&self, args: &[&str], msg: &[u8]) -> Run {
        self.world.sendmail(args, msg)
    }

    /// A failure message with everything the servers logged.
    fn context(&self, r: &Run) -> String {
        format!("{r:?}\n{}", self.peer.logs())
    }

    fn wait_messages(&self, n: usize) -> Vec<Received> {
        self.peer.sink.wait_messages(n)
    }
}

const MSG: &[u8] =
    b"From: Shop <shop@example.com>\r\nTo: b@example.net\r\nSubject: via postfix\r\n\
Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <pf1@example.com>\r\n\r\n\
.leading dot\r\nbody line\r\n";

#[test]
fn postfix_login_with_matching_sender_delivers() {
    if !available("postfix_login_with_matching_sender_delivers") {
        return;
    }
    let s = setup(PASS, &[]);
    let r = s.sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 0, "{}", s.context(&r));
    let got = s.wait_messages(1);
    assert_eq!(got[0].mail_from, USER);
    assert_eq!(got[0].rcpt_tos, vec!["b@example.net"]);
    let data = text(&got[0].data);
    assert!(data.contains("Subject: via postfix\r\n"), "{data}");
    assert!(data.contains("\r\n.leading dot\r\nbody line\r\n"), "{data}");
    // Postfix's own trace: TLS and SMTP AUTH (ESMTPSA) as the test user.
    assert!(data.contains("with ESMTPSA"), "{data}");
    assert!(
        data.contains(&format!("(Authenticated sender: {USER})")),
        "{data}"
    );
}

/// Every non-empty stderr line.
fn lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// True when the message is still somewhere: queued or saved.
fn kept(w: &World) -> bool {
    !w.queued().is_empty() || !w.dead().is_empty()
}

#[test]
fn postfix_refused_login_loses_nothing_and_leaks_nothing() {
    if !available("postfix_refused_login_loses_nothing_and_leaks_nothing") {
        return;
    }
    let s = setup("not-the-password", &[("queue", "mode = \"never\"")]);
    let r = s.sendmail(&["-v", "-oi", "b@example.net"], MSG);
    assert_ne!(r.code, 0, "{}", s.context(&r));
    assert!(r.stderr.contains("535 5.7.8"), "{}", s.context(&r));
    assert!(kept(&s.world), "{}", s.context(&r));
    use base64::Engine as _;
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0not-the-password"));
    for secret in ["not-the-password", b64.as_str()] {
        assert!(!r.stderr.contains(secret), "{}", r.stderr);
        assert!(!s.world.log().contains(secret), "{}", s.world.log());
    }
    s.peer.expect_log("SASL PLAIN authentication failed");
}

#[test]
fn postfix_refused_login_keeps_the_message_queued() {
    if !available("postfix_refused_login_keeps_the_message_queued") {
        return;
    }
    let s = setup("not-the-password", &[]);
    let r = s.sendmail(&["-oi", "b@example.net"], MSG);
    // The password may be fixed later: the message waits in the queue, the
    // caller's job is done, and the user is told once.
    assert_eq!(r.code, 0, "{}", s.context(&r));
    assert_eq!(lines(&r.stderr).len(), 1, "{}", s.context(&r));
    assert!(
        r.stderr.to_lowercase().contains("login"),
        "{}",
        s.context(&r)
    );
    let q = s.world.queued();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(
        q[0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("535"),
        "{q:?}"
    );
    assert!(s.world.dead().is_empty());
    for secret in ["not-the-password", PASS] {
        assert!(!r.stderr.contains(secret), "{}", r.stderr);
        assert!(!s.world.log().contains(secret));
    }
    s.peer.expect_log("SASL PLAIN authentication failed");
}

#[test]
fn postfix_send_as_refusal_is_reported_and_nothing_is_lost() {
    if !available("postfix_send_as_refusal_is_reported_and_nothing_is_lost") {
        return;
    }
    let s = setup(PASS, &[("rewrite", "from_policy = \"keep\"")]);
    let r = s.sendmail(&["-oi", "-f", "other@example.com", "b@example.net"], MSG);
    assert_ne!(r.code, 0, "{}", s.context(&r));
    assert!(r.stderr.contains("553"), "{}", s.context(&r));
    assert!(kept(&s.world), "{}", s.context(&r));
    s.peer
        .expect_log("Sender address rejected: not owned by user");
}

#[test]
fn postfix_send_as_refusal_advises_from_policy_account() {
    if !available("postfix_send_as_refusal_advises_from_policy_account") {
        return;
    }
    // The caller's sender is kept, and the login does not own it.
    let s = setup(PASS, &[("rewrite", "from_policy = \"keep\"")]);
    let r = s.sendmail(&["-oi", "-f", "other@example.com", "b@example.net"], MSG);
    s.peer
        .expect_log("Sender address rejected: not owned by user");
    assert!(kept(&s.world), "{}", s.context(&r));
    // Not "no such user" (67): the recipient is fine, the sender is not ours.
    assert_ne!(r.code, 67, "{}", s.context(&r));
    assert!(r.stderr.contains("553"), "{}", s.context(&r));
    assert!(
        r.stderr.contains("from_policy = \"account\""),
        "{}",
        s.context(&r)
    );
}

/// A message of exactly `size` bytes, with CRLF line endings and every
/// header mailhop would otherwise add, so it is sent as it is.
fn message_of_size(subject: &str, size: usize) -> Vec<u8> {
    let mut msg = format!(
        "From: shop@example.com\r\nTo: b@example.net\r\nSubject: {subject}\r\n\
         Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{subject}@example.com>\r\n\r\n"
    )
    .into_bytes();
    while msg.len() + 80 <= size {
        msg.extend_from_slice(&[b'x'; 78]);
        msg.extend_from_slice(b"\r\n");
    }
    let rest = size - msg.len();
    msg.extend(std::iter::repeat_n(b'y', rest.saturating_sub(2)));
    msg.extend_from_slice(b"\r\n");
    assert_eq!(msg.len(), size);
    msg
}

#[test]
fn postfix_message_over_the_announced_size_is_refused_before_mail() {
    if !available("postfix_message_over_the_announced_size_is_refused_before_mail") {
        return;
    }
    let s = setup(PASS, &[("queue", "mode = \"never\"")]);
    let r = s.sendmail(
        &["-v", "-oi", "b@example.net"],
        &message_of_size("big", SIZE_LIMIT + 1),
    );
    // Postfix announces `SIZE 200000` in its EHLO reply: mailhop refuses
    // before MAIL, so nothing is sent.
    assert_eq!(r.code, 69, "{}", s.context(&r));
    let want = format!(
        "the message is {} bytes, more than 127.0.0.1 accepts ({SIZE_LIMIT} bytes)",
        SIZE_LIMIT + 1
    );
    assert!(r.stderr.contains(&want), "{}", s.context(&r));
    // Postfix logs `sasl_username=` when it accepts a MAIL command.
    assert!(!r.stderr.contains("-> MAIL FROM"), "{}", s.context(&r));
    assert_eq!(s.world.dead().len(), 1, "the message is kept");
}

#[test]
fn postfix_message_over_the_limit_only_with_its_trace_headers_gets_552() {
    if !available("postfix_message_over_the_limit_only_with_its_trace_headers_gets_552") {
        return;
    }
    let s = setup(PASS, &[("queue", "mode = \"never\"")]);
    // Under the announced SIZE as sent, but Postfix counts its own
    // Received: header and envelope too, and refuses after DATA.
    let r = s.sendmail(
        &["-oi", "b@example.net"],
        &message_of_size("nearly", SIZE_LIMIT - 50),
    );
    assert_eq!(r.code, 69, "{}", s.context(&r));
    assert!(
        r.stderr
            .contains("refused the message: 552 5.3.4 Error: message file too big"),
        "{}",
        s.context(&r)
    );
    assert_eq!(s.world.dead().len(), 1, "the message is kept");
}

/// Sends `data` to the peer byte for byte (no line-ending repair) and
/// returns its `REPLY <code> <text>` line.
fn raw_send(peer: &PostfixPeer, data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new(python())
        .arg(peer_script("postfix_rawsend.py"))
        .args(["--port", &peer.port.to_string()])
        .args(["--user", USER])
        .env(PASSWORD_ENV, PASS)
        .args(["--rcpt", "b@example.net"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    text(&out.stdout)
}

#[test]
fn postfix_bare_lf_message_is_normalised_and_accepted() {
    if !available("postfix_bare_lf_message_is_normalised_and_accepted") {
        return;
    }
    let s = setup(PASS, &[]);
    let msg =
        b"From: shop@example.com\nTo: b@example.net\nSubject: bare lf\n\nline one\nline two\n";
    // The peer really refuses these bytes as they are...
    let reply = raw_send(&s.peer, msg);
    assert!(reply.starts_with("REPLY 550 "), "{reply}");
    assert!(reply.contains("bare <LF>"), "{reply}");
    // ...so mailhop must send them with CRLF line endings.
    let r = s.sendmail(&["-oi", "b@example.net"], msg);
    assert_eq!(r.code, 0, "{}", s.context(&r));
    let got = s.wait_messages(1);
    let data = text(&got[0].data);
    assert!(data.contains("Subject: bare lf\r\n"), "{data}");
    assert!(data.contains("\r\n\r\nline one\r\nline two\r\n"), "{data}");
}

#[test]
fn postfix_refused_recipient_is_bounced_by_the_queue_runner() {
    if !available("postfix_refused_recipient_is_bounced_by_the_queue_runner") {
        return;
    }
    let s = setup(PASS, &[("queue", "mode = \"always\"")]);
    let r = s.sendmail(&["-oi", "good@example.net", REFUSED], MSG);
    assert_eq!(r.code, 0, "queued: {}", s.context(&r));
    // sendmail may have started a runner already; this one (or that one)
    // delivers the original and queues and sends the bounce.
    let run = s.world.run("mailhop", &["queue", "run"], b"");
    assert_eq!(run.code, 0, "{}", s.context(&run));
    let got = s.wait_messages(2);
    let original = got.iter().find(|m| !m.mail_from.is_empty()).unwrap();
    assert_eq!(original.rcpt_tos, vec!["good@example.net"]);
    let bounce = got.iter().find(|m| m.mail_from.is_empty()).unwrap();
    assert_eq!(bounce.rcpt_tos, vec![USER]);
    let data = text(&bounce.data);
    assert!(data.contains("multipart/report"), "{data}");
    assert!(
        data.contains("report-type=\"delivery-status\"")
            || data.contains("report-type=delivery-status"),
        "{data}"
    );
    assert!(
        data.contains(&format!("Final-Recipient: rfc822; {REFUSED}")),
        "{data}"
    );
    assert!(data.contains("Action: failed"), "{data}");
    assert!(data.contains("Status: 5.1.1"), "{data}");
    assert!(
        data.contains("Diagnostic-Code: smtp; 550 5.1.1 <refused@example.net>"),
        "{data}"
    );
    assert!(data.contains("Subject: via postfix"), "{data}");
}
