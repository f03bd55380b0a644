//! The SMTP server through the binary: `sendmail -bs` and `mailhop serve`
//! with real clients (Python's smtplib, curl, swaks, a raw socket), each
//! message reaching the test smarthost through the send pipeline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use crate::smtpd::{Smtpd, SmtpdOptions, python};
use crate::util::{BIN, World};

/// How long a test waits for the server before it fails.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A test whose tool is missing says so, and fails under CI.
fn missing(what: &str) -> bool {
    eprintln!("SKIPPED: {what}");
    assert!(std::env::var_os("CI").is_none(), "{what} (required in CI)");
    true
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A world that relays to a test smarthost, with scrubbing and the From
/// rewritten to the account's address.
fn relay_world(extra: &str) -> (World, Smtpd) {
    let pre = tempfile::tempdir().unwrap();
    let server = Smtpd::start(&SmtpdOptions::default(), &pre.path().join("spool"));
    std::mem::forget(pre);
    let w = World::new(&format!(
        "[[account]]\nname = \"relay\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         from = \"shop@example.com\"\ntimeout = 20\n{extra}",
        server.port
    ));
    (w, server)
}

/// `mailhop serve` in the background, stopped (SIGTERM) when dropped.
struct Serving {
    child: Child,
    addr: String,
    stderr: Receiver<String>,
}

impl Serving {
    fn start(w: &World, listen: &str) -> Serving {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", listen, "-C"])
            .arg(w.config())
            .env("XDG_CONFIG_HOME", w.path("xdg"))
            .env("XDG_STATE_HOME", w.path("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx.recv_timeout(TIMEOUT).unwrap_or_default();
        let addr = first
            .strip_prefix("mailhop: listening on ")
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("serve did not start: {first:?}"))
            .to_string();
        Serving {
            child,
            addr,
            stderr: rx,
        }
    }

    /// SIGTERM, then the exit status and the rest of stderr.
    fn stop(mut self) -> (i32, String) {
        terminate(&self.child);
        // A server that does not stop fails the test instead of hanging it.
        let pid = self.child.id();
        let (done, watchdog) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if watchdog.recv_timeout(TIMEOUT).is_err() {
                use nix::sys::signal::{Signal, kill};
                let _ = kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        });
        let status = self.child.wait().unwrap();
        let _ = done.send(());
        assert!(status.code().is_some(), "serve did not stop on SIGTERM");
        let rest: Vec<String> = self.stderr.try_iter().collect();
        (status.code().unwrap_or(-1), rest.join("\n"))
    }
}

fn terminate(child: &Child) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
}

impl Drop for Serving {
    fn drop(&mut self) {
        terminate(&self.child);
        let _ = self.child.wait();
    }
}

/// A raw SMTP client: one command, one (possibly multi-line) reply.
struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client {
            r: BufReader::new(s),
        }
    }

    /// The next reply: (code, all its text).
    fn reply(&mut self) -> (u16, String) {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).unwrap_or(0) == 0 {
                return (0, all);
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return (line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0), all);
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).unwrap();
    }

    fn cmd(&mut self, line: &str) -> u16 {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply().0
    }
}

const MSG: &str = "From: root (Cron Daemon)\r\nTo: b@example.net\r\nSubject: over smtp\r\n\
X-Cron-Env: <DB_PASSWORD=hunter2>\r\n\r\n.leading dot\r\nbody\r\n";

/// Checks what the smarthost got: rewritten From, scrubbed header, the
/// body byte-exact.
fn assert_relayed(got: &crate::smtpd::Received) {
    let text = String::from_utf8_lossy(&got.data);
    assert!(text.contains("From: "), "{text}");
    assert!(text.contains("shop@example.com"), "From rewritten: {text}");
    assert!(!text.contains("hunter2"), "scrubbed: {text}");
    assert!(
        text.contains("\r\n\r\n.leading dot\r\nbody\r\n"),
        "{text:?}"
    );
    assert_eq!(got.rcpt_tos, ["b@example.net"]);
}

const SMTPLIB: &str = r#"
import smtplib, socket, subprocess, sys
mode, target, msg = sys.argv[1], sys.argv[2], sys.stdin.read()
if mode == "bs":
    ours, theirs = socket.socketpair()
    cfg = target
    proc = subprocess.Popen([sys.argv[3], "-bs", "-C", cfg], stdin=theirs, stdout=theirs)
    theirs.close()
    s = smtplib.SMTP()
    s.sock = ours
    code, _ = s.getreply()
    assert code == 220, code
else:
    host, port = target.rsplit(":", 1)
    s = smtplib.SMTP(host, int(port), timeout=30)
s.ehlo("client.example")
assert s.has_extn("pipelining") and s.has_extn("8bitmime") and s.has_extn("dsn")
refused = s.sendmail("app@example.com", ["b@example.net"], msg,
                     rcpt_options=["NOTIFY=FAILURE"], mail_options=["RET=HDRS"])
print("refused", refused)
try:
    s.sendmail("app@example.com", ["b@example.net"], "Subject: second\r\n\r\nagain\r\n")
    print("second ok")
except smtplib.SMTPException as e:
    print("second failed", e)
s.quit()
if mode == "bs":
    print("exit", proc.wait())
"#;

fn smtplib(args: &[&str], msg: &str) -> String {
    let mut child = Command::new(python())
        .arg("-c")
        .arg(SMTPLIB)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(msg.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn bs_with_smtplib_two_messages_reach_the_smarthost() {
    let (w, server) = relay_world("");
    let cfg = w.config().display().to_string();
    let out = smtplib(&["bs", &cfg, BIN], MSG);
    assert!(out.contains("refused {}"), "{out}");
    assert!(out.contains("second ok"), "{out}");
    assert!(out.contains("exit 0"), "{out}");
    let got = server.wait_messages(2);
    assert_relayed(&got[0]);
    assert!(
        got[0].mail_options.iter().any(|o| o == "RET=HDRS"),
        "{got:?}"
    );
    assert_eq!(got[0].rcpt_options[0], ["NOTIFY=FAILURE"]);
    assert!(String::from_utf8_lossy(&got[1].data).contains("Subject: second"));
}

#[test]
fn serve_with_smtplib_and_curl() {
    let (w, server) = relay_world("");
    let s = Serving::start(&w, "127.0.0.1:0");
    let out = smtplib(&["tcp", &s.addr], MSG);
    assert!(out.contains("refused {}"), "{out}");
    server.wait_messages(2);
    if have("curl") || !missing("curl is not installed") {
        let msg = w.path("msg.eml");
        std::fs::write(&msg, MSG).unwrap();
        let r = Command::new("curl")
            .args(["-sS", &format!("smtp://{}", s.addr)])
            .args([
                "--mail-from",
                "app@example.com",
                "--mail-rcpt",
                "b@example.net",
            ])
            .arg("-T")
            .arg(&msg)
            .output()
            .unwrap();
        assert!(r.status.success(), "{r:?}");
        let got = server.wait_messages(3);
        assert_relayed(&got[2]);
    }
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn swaks_with_and_without_pipelining() {
    if !have("swaks") && missing("swaks is not installed") {
        return;
    }
    let (w, server) = relay_world("");
    let s = Serving::start(&w, "127.0.0.1:0");
    for (i, extra) in [&[][..], &["--pipeline"][..]].iter().enumerate() {
        let r = Command::new("swaks")
            .args(["--server", &s.addr])
            .args(["--from", "app@example.com", "--to", "b@example.net"])
            .args(["--data", MSG])
            .args(*extra)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&r.stdout);
        assert!(r.status.success(), "{out}");
        assert!(out.contains("250 2.0.0"), "{out}");
        let got = server.wait_messages(i + 1);
        assert_relayed(&got[i]);
    }
}

/// A transaction up to the end of DATA's header, on a raw connection.
fn start_data(c: &mut Client) {
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("EHLO client"), 250);
    assert_eq!(c.cmd("MAIL FROM:<app@example.com>"), 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.net>"), 250);
    assert_eq!(c.cmd("DATA"), 354);
}

#[test]
fn disconnect_mid_data_queues_and_sends_nothing() {
    let (w, server) = relay_world("");
    let s = Serving::start(&w, "127.0.0.1:0");
    let mut c = Client::connect(&s.addr);
    start_data(&mut c);
    c.send(b"Subject: half\r\n\r\nhalf a mess");
    drop(c);
    // The next session is served after the first ended: its message is
    // the only one that arrives.
    let mut c = Client::connect(&s.addr);
    start_data(&mut c);
    c.send(b"Subject: whole\r\n\r\nwhole\r\n.\r\n");
    assert_eq!(c.reply().0, 250);
    assert_eq!(c.cmd("QUIT"), 221);
    let got = server.wait_messages(1);
    assert_eq!(got.len(), 1);
    assert!(String::from_utf8_lossy(&got[0].data).contains("Subject: whole"));
    assert!(w.queued().is_empty());
    drop(s);
    assert_eq!(server.messages().len(), 1);
}

/// A world whose smarthost (plain SMTP on the returned port) is down until
/// a test starts one there.
fn world_with_relay_down() -> (World, u16) {
    let port = crate::util::closed_port();
    let w = World::new(&format!(
        "[[account]]\nname = \"relay\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"shop@example.com\"\nconnect_timeout = 5\n"
    ));
    (w, port)
}

#[test]
fn smarthost_down_queued_with_250_then_delivered_by_sendmail_q() {
    let (w, port) = world_with_relay_down();
    let s = Serving::start(&w, "127.0.0.1:0");
    let mut c = Client::connect(&s.addr);
    start_data(&mut c);
    // A raw client dot-stuffs, as every SMTP client must.
    c.send(MSG.replace("\r\n.", "\r\n..").as_bytes());
    c.send(b".\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 250, "{text}");
    assert_eq!(w.queued().len(), 1);
    let spool = w.path("spool");
    let server = Smtpd::start(
        &SmtpdOptions {
            port: Some(port),
            ..SmtpdOptions::default()
        },
        &spool,
    );
    let r = w.sendmail(&["-q"], b"");
    assert_eq!(r.code, 0, "{r:?}");
    let got = server.wait_messages(1);
    assert_relayed(&got[0]);
    assert!(w.queued().is_empty());
}

/// Each recipient's NOTIFY and ORCPT survive the queue: kept in the item
/// (`queue list --json` shows them) and sent per RCPT by the queue run.
#[test]
fn per_recipient_dsn_survives_the_queue() {
    let (w, port) = world_with_relay_down();
    let s = Serving::start(&w, "127.0.0.1:0");
    let (code, text) = transaction(
        &s.addr,
        "MAIL FROM:<app@example.com>",
        &[
            "RCPT TO:<b@example.net> NOTIFY=NEVER ORCPT=rfc822;B+2Bx@example.net",
            "RCPT TO:<c@example.net> NOTIFY=FAILURE,DELAY",
        ],
    );
    assert_eq!(code, 250, "{text}");
    let q = w.queued();
    assert_eq!(q.len(), 1, "{q:?}");
    let rcpts = &q[0]["recipients"];
    assert_eq!(rcpts[0]["notify"], "never", "{q:?}");
    assert_eq!(rcpts[0]["orcpt"], "rfc822;B+x@example.net", "{q:?}");
    assert_eq!(rcpts[1]["notify"], "failure,delay", "{q:?}");
    assert_eq!(rcpts[1]["orcpt"], serde_json::Value::Null, "{q:?}");
    let server = Smtpd::start(
        &SmtpdOptions {
            port: Some(port),
            ..SmtpdOptions::default()
        },
        &w.path("spool"),
    );
    assert_eq!(w.sendmail(&["-q"], b"").code, 0);
    let got = server.wait_messages(1);
    assert_eq!(got[0].rcpt_tos, ["b@example.net", "c@example.net"]);
    assert_eq!(
        got[0].rcpt_options,
        [
            vec![
                "NOTIFY=NEVER".to_string(),
                "ORCPT=rfc822;B+2Bx@example.net".to_string()
            ],
            vec!["NOTIFY=FAILURE,DELAY".to_string()],
        ]
    );
    s.stop();
}

#[test]
fn bad_input_gets_the_right_replies() {
    // No smarthost: an accepted message waits in the queue.
    let w = World::new("");
    let s = Serving::start(&w, "127.0.0.1:0");
    let mut c = Client::connect(&s.addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("EHLO client"), 250);
    // A 1 MB command line: refused, and the session goes on.
    let mut long = b"MAIL FROM:<".to_vec();
    long.extend(std::iter::repeat_n(b'a', 1 << 20));
    long.extend_from_slice(b">\r\n");
    c.send(&long);
    assert_eq!(c.reply().0, 500);
    assert_eq!(c.cmd("NOOP"), 250);
    // NUL bytes in a command.
    assert_eq!(c.cmd("MAIL FROM:<a\0b@example.com>"), 500);
    // 10,000 RCPTs, pipelined: 1,000 accepted, the rest 452.
    assert_eq!(c.cmd("MAIL FROM:<app@example.com>"), 250);
    let mut burst = Vec::new();
    for i in 0..10_000 {
        burst.extend_from_slice(format!("RCPT TO:<r{i}@example.net>\r\n").as_bytes());
    }
    c.send(&burst);
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..10_000 {
        *counts.entry(c.reply().0).or_insert(0) += 1;
    }
    assert_eq!(counts.get(&250), Some(&1000), "{counts:?}");
    assert_eq!(counts.get(&452), Some(&9000), "{counts:?}");
    assert_eq!(c.cmd("RSET"), 250);
    // Bare LF in DATA: accepted and normalised to CRLF.
    assert_eq!(c.cmd("MAIL FROM:<app@example.com>"), 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.net>"), 250);
    assert_eq!(c.cmd("DATA"), 354);
    c.send(b"Subject: bare\nX: y\n\nline one\nline two\r\n.\r\n");
    assert_eq!(c.reply().0, 250);
    // NUL bytes in DATA: refused with 554 5.6.0.
    assert_eq!(c.cmd("MAIL FROM:<app@example.com>"), 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.net>"), 250);
    assert_eq!(c.cmd("DATA"), 354);
    c.send(b"Subject: nul\r\n\r\nbin\0ary\r\n.\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 554, "{text}");
    assert!(text.contains("5.6.0") && text.contains("NUL"), "{text}");
    // Pipelined garbage after QUIT: 221, then the connection closes.
    c.send(b"QUIT\r\nMAIL FROM:<x@y>\r\n\0\0\0garbage\r\n");
    assert_eq!(c.reply().0, 221);
    let mut rest = Vec::new();
    let _ = c.r.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // One message queued (the bare-LF one), CRLF throughout.
    let q = w.queued();
    assert_eq!(q.len(), 1, "{q:?}");
    let id = q[0]["id"].as_str().unwrap();
    let shown = w.run("mailhop", &["queue", "show", id], b"");
    assert!(shown.stdout.contains("line one"), "{shown:?}");
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn sigterm_mid_data_acknowledges_nothing() {
    let (w, server) = relay_world("");
    let s = Serving::start(&w, "127.0.0.1:0");
    let mut c = Client::connect(&s.addr);
    start_data(&mut c);
    c.send(b"Subject: interrupted\r\n\r\nnot finished");
    // The server has read up to here once it answers a second session.
    let mut probe = Client::connect(&s.addr);
    assert_eq!(probe.reply().0, 220);
    assert_eq!(probe.cmd("NOOP"), 250);
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
    let (reply, text) = c.reply();
    assert_eq!(reply, 421, "{text}");
    assert_eq!(probe.reply().0, 421);
    assert!(w.queued().is_empty());
    assert!(server.messages().is_empty());
}

#[test]
fn connection_limit_gives_421() {
    let w = World::new("[smtpd]\nmax_connections = 1\n");
    let s = Serving::start(&w, "127.0.0.1:0");
    let mut first = Client::connect(&s.addr);
    assert_eq!(first.reply().0, 220);
    let mut second = Client::connect(&s.addr);
    let (code, text) = second.reply();
    assert_eq!(code, 421, "{text}");
    assert_eq!(first.cmd("QUIT"), 221);
}

/// A global address of this machine that is not loopback, if it has one.
fn non_loopback_ipv4() -> Option<String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
}

fn pki(w: &World) -> crate::certs::TestPki {
    let dir = w.path("pki");
    std::fs::create_dir_all(&dir).unwrap();
    crate::certs::TestPki::create(&dir)
}

#[test]
fn non_loopback_clients_need_allow_or_auth() {
    let Some(ip) = non_loopback_ipv4() else {
        missing("this machine has no non-loopback IPv4 address");
        return;
    };
    let listen = format!("{ip}:0");
    // No allow, no AUTH: serve refuses to listen there at all.
    let w = World::new("");
    let r = w.run("mailhop", &["serve", "--listen", &listen], b"");
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.stderr.contains("[smtpd] allow"), "{}", r.stderr);
    // Allowed elsewhere only: the client here gets 554 at once.
    let w = World::new("[smtpd]\nallow = [\"198.51.100.0/24\"]\n");
    let s = Serving::start(&w, &listen);
    let mut c = Client::connect(&s.addr);
    assert_eq!(c.reply().0, 554);
    drop(s);
    // Its network allowed: served.
    let w = World::new(&format!("[smtpd]\nallow = [\"{ip}/32\"]\n"));
    let s = Serving::start(&w, &listen);
    let mut c = Client::connect(&s.addr);
    start_data(&mut c);
    c.send(b"Subject: allowed\r\n\r\nhi\r\n.\r\n");
    assert_eq!(c.reply().0, 250);
    drop(s);
    // AUTH: 530 before login, then swaks with STARTTLS and AUTH.
    auth_over_starttls(&ip);
}

fn auth_over_starttls(ip: &str) {
    let pre = World::new("");
    let pki = pki(&pre);
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let pw = pre.path("smtpd.passwd");
    std::fs::write(&pw, format!("alice:{hash}\n")).unwrap();
    let (w, server) = relay_world(&format!(
        "[smtpd]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\npassword_file = \"{}\"\n",
        pki.path("server.pem").display(),
        pki.path("server.key").display(),
        pw.display()
    ));
    let s = Serving::start(&w, &format!("{ip}:0"));
    let mut c = Client::connect(&s.addr);
    assert_eq!(c.reply().0, 220);
    let (code, ehlo) = {
        c.send(b"EHLO client\r\n");
        c.reply()
    };
    assert_eq!(code, 250);
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(c.cmd("MAIL FROM:<app@example.com>"), 530);
    assert_eq!(c.cmd("AUTH PLAIN AGFsaWNlAHMzY3JldA=="), 538);
    if !have("swaks") && missing("swaks is not installed") {
        return;
    }
    let swaks = |pass: &str| {
        Command::new("swaks")
            .args(["--server", &s.addr, "--tls", "--auth", "PLAIN"])
            .args(["--auth-user", "alice", "--auth-password", pass])
            .args(["--from", "app@example.com", "--to", "b@example.net"])
            .args(["--data", MSG])
            .output()
            .unwrap()
    };
    let bad = swaks("wrong");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("535 5.7.8"));
    let good = swaks("s3cret");
    let out = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{out}");
    let got = server.wait_messages(1);
    assert_relayed(&got[0]);
    assert!(!s.stderr.try_iter().any(|l| l.contains("s3cret")));
}

/// `-bs` on plain pipes: a recipient the aliases refuse gets 550 at RCPT,
/// and the transaction goes on with the others.
#[test]
fn bs_refuses_an_alias_loop_at_rcpt() {
    let w = World::new("[aliases]\nmap = { loop1 = \"loop2\", loop2 = \"loop1\" }\n");
    let r = w.sendmail(
        &["-bs"],
        b"EHLO c\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<loop1>\r\n\
          RCPT TO:<b@example.net>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(r.code, 0, "{r:?}");
    let codes: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| &l[..3])
        .collect();
    assert_eq!(
        codes,
        ["220", "250", "250", "550", "250", "354", "250", "221"],
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("550 5.1.1") && r.stdout.contains("alias loop"));
    let q = w.queued();
    assert_eq!(q.len(), 1, "{q:?}");
}

/// The message a client hands over SMTP is signed, and the signature
/// verifies (dkimpy) on what the smarthost received.
#[test]
fn serve_signs_with_dkim() {
    let pre = tempfile::tempdir().unwrap();
    let key = pre.path().join("s1.key");
    let r = crate::util::run_raw(
        "mailhop",
        &[
            "dkim".into(),
            "keygen".into(),
            "--domain".into(),
            "example.com".into(),
            "--selector".into(),
            "s1".into(),
            "--out".into(),
            key.display().to_string(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let txt = r
        .stdout
        .lines()
        .find(|l| l.starts_with("v=DKIM1;"))
        .unwrap()
        .to_string();
    let (w, server) = relay_world(&format!(
        "[[dkim]]\ndomain = \"example.com\"\nselector = \"s1\"\nkey_file = \"{}\"\n",
        key.display()
    ));
    let s = Serving::start(&w, "127.0.0.1:0");
    let out = smtplib(&["tcp", &s.addr], MSG);
    assert!(out.contains("refused {}"), "{out}");
    let got = server.wait_messages(2);
    assert_relayed(&got[0]);
    let records = vec![("s1._domainkey.example.com.".to_string(), txt)];
    let ok = crate::dkim::verify(&got[0].data, &records).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.len(), 1, "{ok:?}");
}

/// A smarthost that takes one message and never answers its end of DATA;
/// reports on `tx` once it has the whole message. It lets go of its port
/// after the first connection, so a real server can take it over.
fn hanging_smarthost(tx: mpsc::Sender<()>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        drop(listener);
        let mut w = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        w.write_all(b"220 hang ESMTP\r\n").unwrap();
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" => b"250-hang\r\n250 8BITMIME\r\n",
                "DATA" => b"354 go\r\n",
                "QUIT" => b"221 bye\r\n",
                _ => b"250 ok\r\n",
            };
            line.clear();
            w.write_all(reply).unwrap();
            if verb == "DATA" {
                while r.read_line(&mut line).unwrap_or(0) > 0 && line != ".\r\n" {
                    line.clear();
                }
                let _ = tx.send(());
                // Hold the connection without a reply until the client dies.
                let mut rest = Vec::new();
                let _ = r.read_to_end(&mut rest);
                return;
            }
        }
    });
    port
}

/// kill -9 of the server after DATA, while the smarthost has not answered:
/// the client sees no 250, and the message (committed to the queue before
/// the attempt) is delivered once, by the next queue run.
#[test]
fn kill_9_before_the_250() {
    let (tx, rx) = mpsc::channel();
    let port = hanging_smarthost(tx);
    let w = World::new(&format!(
        "[[account]]\nname = \"relay\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"shop@example.com\"\ntimeout = 60\n"
    ));
    let s = Serving::start(&w, "127.0.0.1:0");
    let mut c = Client::connect(&s.addr);
    start_data(&mut c);
    c.send(b"Subject: killed\r\n\r\nonce\r\n.\r\n");
    rx.recv_timeout(TIMEOUT).unwrap();
    {
        use nix::sys::signal::{Signal, kill};
        kill(
            nix::unistd::Pid::from_raw(s.child.id() as i32),
            Signal::SIGKILL,
        )
        .unwrap();
    }
    let (code, text) = c.reply();
    assert_ne!(code, 250, "{text}");
    drop(s);
    assert_eq!(w.queued().len(), 1);
    let server = Smtpd::start(
        &SmtpdOptions {
            port: Some(port),
            ..SmtpdOptions::default()
        },
        &w.path("spool"),
    );
    assert_eq!(w.sendmail(&["-q"], b"").code, 0);
    let got = server.wait_messages(1);
    assert!(String::from_utf8_lossy(&got[0].data).contains("Subject: killed"));
    assert!(w.queued().is_empty());
    assert_eq!(w.sendmail(&["-q"], b"").code, 0);
    assert_eq!(server.messages().len(), 1);
}

/// One whole transaction of MSG on a new connection to `addr`: `mail` is
/// the MAIL FROM line, `rcpts` the RCPT TO lines (each must get 250).
/// Returns the reply to the end of DATA.
fn transaction(addr: &str, mail: &str, rcpts: &[&str]) -> (u16, String) {
    let mut c = Client::connect(addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("EHLO client"), 250);
    assert_eq!(c.cmd(mail), 250);
    for r in rcpts {
        assert_eq!(c.cmd(r), 250, "{r}");
    }
    assert_eq!(c.cmd("DATA"), 354);
    // Dot-stuffed, as every SMTP client must.
    c.send(format!("{}.\r\n", MSG.replace("\r\n.", "\r\n..")).as_bytes());
    let reply = c.reply();
    assert_eq!(c.cmd("QUIT"), 221);
    reply
}

/// DSN parameters are per RCPT in SMTP: one transaction with different
/// NOTIFY and ORCPT values is still one message to the smarthost, each
/// recipient keeping its own; the 250 names the queue id the log uses.
#[test]
fn one_transaction_keeps_each_recipients_dsn_and_replies_with_its_queue_id() {
    let (w, server) = relay_world("");
    let s = Serving::start(&w, "127.0.0.1:0");
    let (code, text) = transaction(
        &s.addr,
        "MAIL FROM:<app@example.com> RET=HDRS ENVID=e+2B1",
        &[
            "RCPT TO:<b@example.net> NOTIFY=NEVER ORCPT=rfc822;B+2Bx@example.net",
            "RCPT TO:<c@example.net> NOTIFY=SUCCESS,FAILURE",
        ],
    );
    assert_eq!(code, 250, "{text}");
    let id = text
        .trim_end()
        .rsplit_once("queued as ")
        .map(|(_, id)| id.to_string())
        .unwrap_or_else(|| panic!("no queue id in {text:?}"));
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{id}"
    );
    let got = server.wait_messages(1);
    assert_eq!(
        got[0].rcpt_tos,
        ["b@example.net", "c@example.net"],
        "one transaction"
    );
    assert_eq!(
        got[0].rcpt_options,
        [
            vec![
                "NOTIFY=NEVER".to_string(),
                "ORCPT=rfc822;B+2Bx@example.net".to_string()
            ],
            vec!["NOTIFY=SUCCESS,FAILURE".to_string()],
        ]
    );
    assert!(
        got[0].mail_options.iter().any(|o| o == "ENVID=e+2B1"),
        "{got:?}"
    );
    s.stop();
    let log = w.log();
    assert!(log.contains(&format!("{id}: to=<b@example.net>")), "{log}");
}

/// Once one recipient went, the client must hear 250 (or it sends them
/// all again): a recipient the smarthost refused gets a bounce instead,
/// carrying its ORCPT, unless its NOTIFY asked for none (Postfix's way).
#[test]
fn a_recipient_refused_beside_one_delivered_is_bounced_not_replied() {
    let (w, server) = relay_world("");
    let s = Serving::start(&w, "127.0.0.1:0");
    let (code, text) = transaction(
        &s.addr,
        "MAIL FROM:<app@example.com>",
        &[
            "RCPT TO:<b@example.net>",
            "RCPT TO:<reject550@example.net> ORCPT=rfc822;orig@example.net",
            "RCPT TO:<reject550-quiet@example.net> NOTIFY=NEVER",
        ],
    );
    assert_eq!(code, 250, "{text}");
    // The message to b@, then the bounce, sent by the runner the server
    // started, to the envelope sender.
    let got = server.wait_messages(2);
    assert_eq!(got[0].rcpt_tos, ["b@example.net"]);
    let bounce = &got[1];
    assert_eq!(bounce.mail_from, "");
    // To the envelope sender as rewritten for the account, as the runner
    // bounces (and the smarthost would).
    assert_eq!(bounce.rcpt_tos, ["shop@example.com"]);
    let dsn = String::from_utf8_lossy(&bounce.data);
    assert!(
        dsn.contains("Final-Recipient: rfc822; reject550@example.net"),
        "{dsn}"
    );
    assert!(
        dsn.contains("Original-Recipient: rfc822; orig@example.net"),
        "{dsn}"
    );
    assert!(dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(!dsn.contains("reject550-quiet"), "NOTIFY=NEVER: {dsn}");
    s.stop();
}

/// A smarthost in front of `upstream`: it takes the first connection and
/// says nothing on it until `release` (a runner stuck on its greeting),
/// and passes every later one through. Reports each first accept on
/// `accepted`. The port stays bound throughout, so no other test takes it.
struct Gate {
    port: u16,
    release: mpsc::Sender<()>,
    accepted: Receiver<()>,
}

impl Gate {
    fn start(upstream: u16) -> Gate {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (release, released) = mpsc::channel::<()>();
        let (tx, accepted) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let Ok((first, _)) = listener.accept() else {
                return;
            };
            let _ = tx.send(());
            std::thread::spawn(move || {
                let _ = released.recv();
                drop(first);
            });
            for conn in listener.incoming() {
                let Ok(down) = conn else { return };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let (mut d2, mut u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                let (mut d, mut u) = (down, up);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut d, &mut u);
                    let _ = u.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u2, &mut d2);
                    let _ = d2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Gate {
            port,
            release,
            accepted,
        }
    }
}

/// A world with queue mode "always" (its own queue) that relays to `port`.
fn always_world(port: u16) -> World {
    let w = World::new(&format!(
        "[[account]]\nname = \"relay\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"shop@example.com\"\ntimeout = 60\n"
    ));
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    w.write_config(&cfg.replace("[queue]\n", "[queue]\nmode = \"always\"\n"));
    w
}

/// The `mailhop queue run` processes started for this configuration.
fn runners_for(config: &std::path::Path) -> usize {
    let want = config.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.windows(2).any(|w| w == [&b"queue"[..], &b"run"[..]]) && args.contains(&want)
        })
        .count()
}

/// With mode "always" every message wants a runner; a server gets one at
/// a time (here: one stuck on a smarthost that never greets), and what
/// was queued meanwhile is delivered by the next, once it is gone.
#[test]
fn one_queue_runner_at_a_time_and_none_is_missed() {
    let server = Smtpd::start(
        &SmtpdOptions::default(),
        &tempfile::tempdir().unwrap().keep(),
    );
    let gate = Gate::start(server.port);
    let w = always_world(gate.port);
    let s = Serving::start(&w, "127.0.0.1:0");
    let mut c = Client::connect(&s.addr);
    assert_eq!(c.reply().0, 220);
    assert_eq!(c.cmd("EHLO client"), 250);
    for i in 0..5 {
        assert_eq!(c.cmd("MAIL FROM:<app@example.com>"), 250);
        assert_eq!(c.cmd(&format!("RCPT TO:<r{i}@example.net>")), 250);
        assert_eq!(c.cmd("DATA"), 354);
        c.send(format!("Subject: m{i}\r\n\r\nbody\r\n.\r\n").as_bytes());
        assert_eq!(c.reply().0, 250);
        if i == 0 {
            // The first runner is connected and waits for a greeting.
            gate.accepted.recv_timeout(TIMEOUT).unwrap();
        }
    }
    assert_eq!(
        runners_for(&w.config()),
        1,
        "one runner, not one per message"
    );
    // The gate lets go: the first runner gives up on its message, and the
    // next delivers the other four.
    gate.release.send(()).unwrap();
    let got = server.wait_messages(4);
    let mut to: Vec<String> = got.iter().flat_map(|m| m.rcpt_tos.clone()).collect();
    to.sort();
    assert_eq!(
        to,
        [
            "r1@example.net",
            "r2@example.net",
            "r3@example.net",
            "r4@example.net"
        ]
    );
    assert_eq!(c.cmd("QUIT"), 221);
    s.stop();
}

/// `-bs` ends with its session: mail queued while its runner was busy is
/// handed to a runner of its own then, not left for the timer.
#[test]
fn bs_hands_queued_mail_to_a_runner_when_it_ends() {
    let server = Smtpd::start(
        &SmtpdOptions::default(),
        &tempfile::tempdir().unwrap().keep(),
    );
    let gate = Gate::start(server.port);
    let w = always_world(gate.port);
    let mut bs = Command::new(BIN)
        .args(["-bs", "-C"])
        .arg(w.config())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = bs.stdin.take().unwrap();
    let mut output = BufReader::new(bs.stdout.take().unwrap());
    let mut reply = || {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(output.read_line(&mut line).unwrap() > 0, "-bs ended early");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line[..3].parse::<u16>().unwrap();
            }
        }
    };
    assert_eq!(reply(), 220);
    input.write_all(b"EHLO client\r\n").unwrap();
    assert_eq!(reply(), 250);
    for i in 1..=2 {
        for (line, code) in [
            ("MAIL FROM:<app@example.com>".to_string(), 250),
            (format!("RCPT TO:<m{i}@example.net>"), 250),
            ("DATA".to_string(), 354),
            (format!("Subject: m{i}\r\n\r\nbody\r\n."), 250),
        ] {
            input.write_all(format!("{line}\r\n").as_bytes()).unwrap();
            assert_eq!(reply(), code, "{line}");
        }
        if i == 1 {
            // Its runner is connected and waits for a greeting.
            gate.accepted.recv_timeout(TIMEOUT).unwrap();
        }
    }
    input.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(reply(), 221);
    assert!(bs.wait().unwrap().success());
    // The first runner still waits for its greeting; the second message
    // went anyway.
    let got = server.wait_messages(1);
    assert_eq!(got[0].rcpt_tos, ["m2@example.net"]);
    gate.release.send(()).unwrap();
}

/// A temporary failure beside a recipient that went (here a local
/// mailbox that cannot be created) is not bounced as failed for good, nor
/// dropped under a 250: the client hears 4xx and keeps the message.
#[test]
fn a_temporary_failure_beside_a_delivery_is_a_4xx_not_a_bounce() {
    let (w, server) = relay_world("");
    std::fs::write(w.path("file"), b"").unwrap();
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    w.write_config(&cfg.replace("/mail/%u", "/file/%u"));
    let s = Serving::start(&w, "127.0.0.1:0");
    let (code, text) = transaction(
        &s.addr,
        "MAIL FROM:<app@example.com>",
        &[
            "RCPT TO:<b@example.net>",
            "RCPT TO:<alice@host.example.com> NOTIFY=NEVER",
        ],
    );
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("alice@host.example.com"), "{text}");
    s.stop();
    assert_eq!(server.wait_messages(1).len(), 1);
    assert!(!w.log().contains("status=bounced"), "{}", w.log());
    assert!(w.queued().is_empty());
}

/// Without a queue (`mode = "never"`) nothing can be bounced: a recipient
/// refused beside one delivered is the reply, as mailhop(8) says.
#[test]
fn mode_never_replies_the_failure_beside_a_delivery() {
    let (w, server) = relay_world("");
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    w.write_config(&cfg.replace("[queue]\n", "[queue]\nmode = \"never\"\n"));
    let s = Serving::start(&w, "127.0.0.1:0");
    let (code, text) = transaction(
        &s.addr,
        "MAIL FROM:<app@example.com>",
        &["RCPT TO:<b@example.net>", "RCPT TO:<reject550@example.net>"],
    );
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("delivered to: b@example.net"), "{text}");
    s.stop();
    assert_eq!(server.wait_messages(1)[0].rcpt_tos, ["b@example.net"]);
}
