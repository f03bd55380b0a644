//! Shared harness for the integration tests: a scratch directory with a
//! config file, and a way to run the built binary under any argv[0] with
//! stdin, capturing exit status, stdout and stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_mailhop");

/// A throwaway world for one test: config, maildirs, dead letters and log
/// all live under `dir`, so nothing touches the real home or /var/mail.
pub struct World {
    pub dir: tempfile::TempDir,
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl World {
    /// A world whose config delivers every local name into
    /// `<dir>/mail/<name>/` (Maildir) and keeps dead letters in
    /// `<dir>/dead/`. `extra` is appended to the config.
    pub fn new(extra: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let w = World { dir };
        let local = if extra.contains("[local]") {
            String::new()
        } else {
            format!("[local]\npath = \"{}/mail/%u\"\n", w.path("").display())
        };
        // Pinned so results do not depend on the machine's /etc/mailname.
        let rewrite = if extra.contains("[rewrite]") {
            ""
        } else {
            "[rewrite]\ndomain = \"host.example.com\"\n"
        };
        // Every world has a queue of its own, also when `extra` has a
        // [queue] table without a dir: the default (~/.local/state) is
        // shared by all tests, and one test's items would be another's.
        let own_dir = format!("[queue]\ndir = \"{}\"\n", w.path("queue").display());
        let (extra, queue) = match extra.split_once("[queue]\n") {
            Some((_, table))
                if table
                    .split("\n[")
                    .next()
                    .is_some_and(|t| t.contains("dir =")) =>
            {
                (extra.to_string(), String::new())
            }
            Some(_) => (extra.replacen("[queue]\n", &own_dir, 1), String::new()),
            None => (extra.to_string(), own_dir),
        };
        w.write_config(&format!(
            "hostname = \"host.example.com\"\nsyslog = false\nlog_file = \"{}\"\ndead_letter = \"{}\"\n{local}\n{extra}\n{rewrite}{queue}",
            w.path("log").display(),
            w.path("dead").display(),
        ));
        w
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.path("mailhop.toml"), text).unwrap();
    }

    pub fn config(&self) -> PathBuf {
        self.path("mailhop.toml")
    }

    /// Runs `argv0 -C config args…` with `stdin`.
    pub fn run(&self, argv0: &str, args: &[&str], stdin: &[u8]) -> Run {
        let cfg = vec!["-C".to_string(), self.config().display().to_string()];
        let args = args.iter().map(|s| s.to_string());
        // `mailhop SUBCOMMAND … -C FILE`; sendmail takes it anywhere.
        let full: Vec<String> = if argv0 == "mailhop" {
            args.chain(cfg).collect()
        } else {
            cfg.into_iter().chain(args).collect()
        };
        run_raw(
            argv0,
            &full,
            stdin,
            &[
                ("XDG_CONFIG_HOME", self.path("xdg").as_path()),
                // State (stats, caches) stays in the world too.
                ("XDG_STATE_HOME", self.path("state").as_path()),
            ],
        )
    }

    /// `sendmail -C config args…`.
    pub fn sendmail(&self, args: &[&str], stdin: &[u8]) -> Run {
        self.run("sendmail", args, stdin)
    }

    /// Every message file delivered into the Maildir of `user`.
    pub fn maildir(&self, user: &str) -> Vec<Vec<u8>> {
        read_dir_files(&self.path(&format!("mail/{user}/new")))
    }

    /// Every file in the dead-letter directory.
    pub fn dead(&self) -> Vec<Vec<u8>> {
        read_dir_files(&self.path("dead"))
    }

    /// `mailq` output.
    pub fn mailq(&self) -> String {
        self.run("mailq", &[], b"").stdout
    }

    /// The ids of queued items (from `mailhop queue list --json`).
    pub fn queued(&self) -> Vec<serde_json::Value> {
        let r = self.run("mailhop", &["queue", "list", "--json"], b"");
        assert_eq!(r.code, 0, "{r:?}");
        serde_json::from_str::<Vec<serde_json::Value>>(&r.stdout).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap_or_default()
    }
}

/// A TCP port on 127.0.0.1 that nobody listens on: bound, learned, and
/// closed again (a connection to it is refused).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn read_dir_files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
    names.sort();
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Starts `sendmail -C config args…` without waiting: the test writes
/// stdin and decides when the process ends (kill -9 tests).
pub fn spawn_sendmail(w: &World, args: &[&str]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    Command::new(BIN)
        .arg0("sendmail")
        .arg("-C")
        .arg(w.config())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs the binary with the given argv[0] (through the `-a`-like trick of
/// `Command::arg0`), so multicall dispatch is exercised for real.
pub fn run_raw(argv0: &str, args: &[String], stdin: &[u8], env: &[(&str, &Path)]) -> Run {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    cmd.arg0(argv0)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Write from a thread: a refused message may close stdin early.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out: Output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The header part of a delivered (LF) message.
pub fn head(msg: &[u8]) -> String {
    let t = text(msg);
    t.split_once("\n\n")
        .map(|(h, _)| h.to_string())
        .unwrap_or(t)
}

pub fn body(msg: &[u8]) -> Vec<u8> {
    let pos = msg.windows(2).position(|w| w == b"\n\n").unwrap();
    msg[pos + 2..].to_vec()
}

/// Asserts the policy for a problem only a person can fix (a refused
/// login, a certificate, a credential source): the message is queued, the
/// caller gets 0 and exactly one stderr line that says so and why
/// (containing `why`), `mailq` shows the same reason, and nothing went to
/// dead.letter.
pub fn assert_queued_for_a_person(w: &World, r: &Run, why: &str) {
    assert_eq!(r.code, 0, "queued, not refused: {r:?}");
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("is queued as"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one line that says it is queued: {}",
        r.stderr
    );
    assert!(lines[0].contains(why), "says why ({why}): {}", r.stderr);
    assert!(
        lines[0].contains("sendmail -q"),
        "says what to do: {}",
        r.stderr
    );
    let q = w.queued();
    assert_eq!(q.len(), 1, "in the queue: {q:?}");
    assert!(w.mailq().contains(why), "mailq shows why: {}", w.mailq());
    assert!(w.dead().is_empty(), "no dead letter");
}

/// A test that cannot run here (no php, not root, …) calls this and then
/// returns: it says why on stderr, or, when env `CI` is set (non-empty),
/// fails, so CI never counts a test that did not run as passed.
pub fn prerequisite_missing(why: &str) {
    missing_under(std::env::var_os("CI").as_deref(), why);
}

/// [`prerequisite_missing`] with the value of `CI` passed in, so its tests
/// need not change the environment of a multi-threaded process.
fn missing_under(ci: Option<&std::ffi::OsStr>, why: &str) {
    let in_ci = ci.is_some_and(|v| !v.is_empty());
    assert!(!in_ci, "prerequisite missing and CI is set: {why}");
    eprintln!("prerequisite missing, test skipped: {why}");
}

#[test]
fn missing_prerequisite_is_a_note_outside_ci() {
    missing_under(None, "nothing");
    missing_under(Some(std::ffi::OsStr::new("")), "CI set but empty");
}

#[test]
#[should_panic(expected = "prerequisite missing and CI is set: php")]
fn missing_prerequisite_fails_in_ci() {
    missing_under(Some(std::ffi::OsStr::new("true")), "php");
}
