//! A real SMTP server for the transport tests: `tests/peers/smtpd.py`
//! (aiosmtpd) run from the Python test venv. See that script for the
//! fault-injection addresses (`reject550@…`, `datafail4@…`, `slowdata@…`…)
//! and the spool format.
//!
//! The server prints `READY <port>` once listening and `MESSAGE <n>` after
//! storing each accepted message; both are read from its stdout, so nothing
//! here sleeps or polls. Its stdin stays open for as long as the `Smtpd`
//! lives: the server exits when it closes, so it never outlives the test.

// Helpers for tests that are still being written.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long to wait for `READY` or for a message before failing the test.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No TLS at all; AUTH (if configured) is offered in the clear.
    Plain,
    /// STARTTLS offered and required before MAIL and AUTH (unless
    /// `offer_starttls` is false: then a plain server that still offers AUTH).
    StartTls,
    /// TLS from the first byte (submissions/465).
    Implicit,
}

#[derive(Debug, Clone)]
pub struct SmtpdOptions {
    pub mode: Mode,
    /// (certificate PEM, key PEM); required for `StartTls` and `Implicit`.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// (user, password) pairs accepted by AUTH PLAIN and LOGIN.
    pub users: Vec<(String, String)>,
    /// MAIL/RCPT/DATA without a successful AUTH get `530 5.7.0`.
    pub require_auth: bool,
    /// (user, bearer token) accepted by AUTH XOAUTH2.
    pub xoauth2: Option<(String, String)>,
    /// `StartTls` mode only: false = do not offer STARTTLS at all.
    pub offer_starttls: bool,
    /// Require a TLS client certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
    /// Listen on this port instead of a free one (a server coming back).
    pub port: Option<u16>,
    /// Greet a connection beyond this many at once with Office 365's
    /// `432 4.3.2 … sender thread limit exceeded` (transcript: `* refused 432`).
    pub max_connections: Option<u32>,
}

impl Default for SmtpdOptions {
    fn default() -> Self {
        SmtpdOptions {
            mode: Mode::Plain,
            cert: None,
            users: Vec::new(),
            require_auth: false,
            xoauth2: None,
            offer_starttls: true,
            client_ca: None,
            port: None,
            max_connections: None,
        }
    }
}

impl SmtpdOptions {
    /// A TLS server (`StartTls` or `Implicit`) presenting `cert`/`key`.
    pub fn tls(mode: Mode, cert: &Path, key: &Path) -> SmtpdOptions {
        SmtpdOptions {
            mode,
            cert: Some((cert.to_path_buf(), key.to_path_buf())),
            ..SmtpdOptions::default()
        }
    }
}

/// One accepted message as the server stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The DATA bytes after dot-unstuffing, CRLFs as sent, without the
    /// final `.` line (aiosmtpd's `envelope.original_content`).
    pub data: Vec<u8>,
    pub mail_from: String,
    /// MAIL parameters as sent (case preserved), e.g. `["BODY=8BITMIME", "RET=HDRS"]`.
    pub mail_options: Vec<String>,
    pub rcpt_tos: Vec<String>,
    /// RCPT parameters as sent, one list per entry of `rcpt_tos`.
    pub rcpt_options: Vec<Vec<String>>,
    /// The identity that authenticated the session, if any.
    pub auth_user: Option<String>,
    /// Whether the message came over TLS (STARTTLS or implicit).
    pub tls: bool,
}

#[derive(Debug)]
pub struct Smtpd {
    pub port: u16,
    pub spool: PathBuf,
    child: Child,
    /// Held open for the server's lifetime; the server exits at its EOF.
    stdin: Option<ChildStdin>,
    /// Lines of the server's stdout (after `READY`).
    lines: Mutex<Receiver<String>>,
    /// Highest `MESSAGE <n>` seen so far.
    seen: Mutex<usize>,
}

/// The Python that has aiosmtpd: `$MAILHOP_TEST_PYTHON`, else the venv that
/// `scripts/test` creates. A missing peer fails the test; it never skips.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MAILHOP_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    panic!("run scripts/test to create the Python test venv (or set MAILHOP_TEST_PYTHON)");
}

pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

impl Smtpd {
    /// Starts a server on a free port of 127.0.0.1 that spools into `spool`
    /// (created if missing), and waits until it accepts connections.
    pub fn start(opts: &SmtpdOptions, spool: &Path) -> Smtpd {
        std::fs::create_dir_all(spool).unwrap();
        let mut cmd = Command::new(python());
        cmd.arg(peer_script("smtpd.py"))
            .arg("--port")
            .arg(opts.port.unwrap_or(0).to_string())
            .arg("--mode")
            .arg(match opts.mode {
                Mode::Plain => "plain",
                Mode::StartTls => "starttls",
                Mode::Implicit => "implicit",
            })
            .arg("--spool")
            .arg(spool);
        if let Some((cert, key)) = &opts.cert {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some(ca) = &opts.client_ca {
            cmd.arg("--client-ca").arg(ca);
        }
        if !opts.users.is_empty() {
            let users: Vec<String> = opts.users.iter().map(|(u, p)| format!("{u}:{p}")).collect();
            cmd.arg("--auth-users").arg(users.join(","));
        }
        if opts.require_auth {
            cmd.arg("--require-auth");
        }
        if let Some((user, token)) = &opts.xoauth2 {
            cmd.arg("--xoauth2-user").arg(user);
            cmd.arg("--xoauth2-token").arg(token);
        }
        if !opts.offer_starttls {
            cmd.arg("--no-starttls-offer");
        }
        if let Some(n) = opts.max_connections {
            cmd.arg("--max-connections").arg(n.to_string());
        }
        let stderr = File::create(spool.join("smtpd.stderr")).unwrap();
        cmd.env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut smtpd = Smtpd {
            port: 0,
            spool: spool.to_path_buf(),
            child,
            stdin,
            lines: Mutex::new(rx),
            seen: Mutex::new(0),
        };
        let line = smtpd.next_line(Instant::now() + TIMEOUT, "READY");
        smtpd.port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| smtpd.fail(&format!("expected READY <port>, got {line:?}")));
        smtpd
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every complete message received so far, in order of acceptance.
    pub fn messages(&self) -> Vec<Received> {
        let mut numbers: Vec<usize> = std::fs::read_dir(&self.spool)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().ok()?;
                name.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        numbers.into_iter().map(|n| self.read_message(n)).collect()
    }

    /// Waits until at least `n` messages have been accepted (panicking after
    /// 30 s or if the server dies), then returns all of them.
    pub fn wait_messages(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let seen = *self.seen.lock().unwrap();
            if seen >= n {
                break;
            }
            let line = self.next_line(deadline, &format!("{n} message(s), have {seen}"));
            if let Some(k) = line.strip_prefix("MESSAGE ") {
                let k: usize = k.trim().parse().unwrap();
                let mut s = self.seen.lock().unwrap();
                *s = (*s).max(k);
            }
        }
        let msgs = self.messages();
        assert!(
            msgs.len() >= n,
            "spool has {} messages, expected {n}",
            msgs.len()
        );
        msgs
    }

    /// Every line the clients sent (`C: …`, AUTH secrets included) and
    /// every reply (`S: …`), plus `* connect tls=yes|no`, `* starttls done`,
    /// `* disconnect` markers.
    pub fn transcript(&self) -> String {
        std::fs::read_to_string(self.spool.join("transcript.log")).unwrap_or_default()
    }

    /// What the server wrote to stderr (Python tracebacks, warnings).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.spool.join("smtpd.stderr")).unwrap_or_default()
    }

    fn read_message(&self, n: usize) -> Received {
        let json = std::fs::read_to_string(self.spool.join(format!("{n}.json"))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        Received {
            data: std::fs::read(self.spool.join(format!("{n}.eml"))).unwrap(),
            mail_from: v["mail_from"].as_str().unwrap().to_string(),
            mail_options: strings(&v["mail_options"]),
            rcpt_tos: strings(&v["rcpt_tos"]),
            rcpt_options: v["rcpt_options"]
                .as_array()
                .unwrap()
                .iter()
                .map(strings)
                .collect(),
            auth_user: v["auth_user"].as_str().map(str::to_string),
            tls: v["tls"].as_bool().unwrap(),
        }
    }

    /// The next stdout line, or a panic naming `what` was awaited.
    fn next_line(&self, deadline: Instant, what: &str) -> String {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let rx = self.lines.lock().unwrap();
        match rx.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                drop(rx);
                self.fail(&format!("timed out after {TIMEOUT:?} waiting for {what}"))
            }
            Err(RecvTimeoutError::Disconnected) => {
                drop(rx);
                self.fail(&format!("smtpd exited while waiting for {what}"))
            }
        }
    }

    fn fail(&self, why: &str) -> ! {
        panic!(
            "smtpd: {why}\n--- smtpd stderr ---\n{}\n--- transcript ---\n{}",
            self.stderr(),
            self.transcript()
        );
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
