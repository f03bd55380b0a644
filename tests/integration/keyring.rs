//! The keyring password source (cargo feature `keyring`), for real: a
//! private D-Bus session bus with gnome-keyring as its Secret Service,
//! `mailhop password set|delete`, and sends that log in with the stored
//! password (STARTTLS + AUTH PLAIN against aiosmtpd, test CA).
//!
//! Nothing here touches the developer's own session: every child gets the
//! private bus's address, and gnome-keyring keeps its keyrings in the
//! test's temporary directory. Needs `dbus-daemon` and
//! `gnome-keyring-daemon` (Debian: dbus, gnome-keyring); `scripts/test`
//! installs them when it may.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use crate::certs::TestPki;
use crate::smtpd::{Mode, Smtpd, SmtpdOptions};
use crate::util::{BIN, Run, World};

const USER: &str = "shop@example.com";
/// Ends in a space: only the newline after it may be trimmed.
const PASS: &str = "k3yring-Pa55 ";

const MSG: &[u8] = b"From: shop@example.com\r\nTo: b@example.net\r\nSubject: keyring\r\n\
Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <k1@example.com>\r\n\r\nbody\r\n";

/// A private session bus with gnome-keyring's Secret Service on it, its
/// login collection created and unlocked. Dropping it stops the bus, and
/// gnome-keyring exits with it.
struct SecretService {
    dir: tempfile::TempDir,
    address: String,
    bus: Child,
    /// Kept open: dbus-daemon printed its address there.
    _bus_stdout: BufReader<ChildStdout>,
}

impl SecretService {
    fn start() -> SecretService {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["home", "data", "run"] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir.path().join(sub))
                .unwrap();
        }
        let mut cmd = Command::new("dbus-daemon");
        cmd.args(["--session", "--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(dir.path().join("dbus.stderr")).unwrap());
        Self::private_env(&mut cmd, dir.path());
        let mut bus = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run dbus-daemon ({e}); install it (Debian: apt-get install dbus)")
        });
        // The address is printed once the bus listens: no waiting needed.
        let mut out = BufReader::new(bus.stdout.take().unwrap());
        let mut address = String::new();
        out.read_line(&mut address).unwrap();
        let address = address.trim().to_string();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed {address:?}"
        );
        let ss = SecretService {
            dir,
            address,
            bus,
            _bus_stdout: out,
        };

        // `--unlock` reads the login keyring's password from stdin and
        // creates that keyring (the default collection) unlocked.
        let mut cmd = Command::new("gnome-keyring-daemon");
        cmd.args(["--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // A file, not a pipe: the daemon keeps it open after the
            // command returns.
            .stderr(File::create(ss.dir.path().join("gnome-keyring.stderr")).unwrap());
        ss.env(&mut cmd);
        let mut gk = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run gnome-keyring-daemon ({e}); install it (Debian: apt-get install \
                 gnome-keyring)"
            )
        });
        gk.stdin
            .take()
            .unwrap()
            .write_all(b"login-keyring-password")
            .unwrap();
        let status = gk.wait().unwrap();
        assert!(status.success(), "gnome-keyring-daemon: {status}");

        // The command returns before the daemon owns its bus names.
        // `gdbus wait` watches for the name (subscribe, then check: no
        // race, no polling) and gives up after its timeout.
        let mut cmd = Command::new("gdbus");
        cmd.args([
            "wait",
            "--session",
            "--timeout",
            "30",
            "org.freedesktop.secrets",
        ]);
        ss.env(&mut cmd);
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run gdbus ({e}); install it (Debian: apt-get install libglib2.0-bin)")
        });
        assert!(
            out.status.success(),
            "org.freedesktop.secrets did not appear on the bus: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(ss.dir.path().join("gnome-keyring.stderr")).unwrap_or_default()
        );
        ss
    }

    /// HOME and XDG directories inside the test's directory, so that the
    /// keyrings and sockets are the test's own.
    fn private_env(cmd: &mut Command, dir: &Path) {
        cmd.env("HOME", dir.join("home"))
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("home"))
            .env("XDG_RUNTIME_DIR", dir.join("run"))
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
    }

    /// Points `cmd` at this bus (and only at it).
    fn env(&self, cmd: &mut Command) {
        Self::private_env(cmd, self.dir.path());
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address);
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// Runs the binary as `argv0` with `stdin`, on the bus `address`, with no
/// MAILHOP_PASSWORD (which would win over the keyring).
fn run(argv0: &str, args: &[&str], stdin: &[u8], bus: &BusEnv) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg0(argv0)
        .args(args)
        .env_remove("MAILHOP_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match bus {
        BusEnv::Private(ss) => ss.env(&mut cmd),
        BusEnv::Nowhere(dir) => {
            SecretService::private_env(&mut cmd, dir);
            cmd.env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}", dir.join("no-bus").display()),
            );
        }
    }
    let mut child = cmd.spawn().unwrap();
    // A command that fails before reading (an unknown account) may exit
    // before this write: a broken pipe is its answer, not the test's error.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

enum BusEnv<'a> {
    Private(&'a SecretService),
    /// A session bus address where nothing listens (cron, a server).
    Nowhere(&'a Path),
}

/// A world whose account `test` logs in as USER with no password source
/// configured, against a STARTTLS server that knows USER/PASS.
fn setup() -> (World, Smtpd, TestPki) {
    let pre = World::new("");
    let pki_dir = pre.path("pki");
    let pki = TestPki::create(&pki_dir);
    let opts = SmtpdOptions {
        users: vec![(USER.into(), PASS.into())],
        require_auth: true,
        ..SmtpdOptions::tls(
            Mode::StartTls,
            &pki.path("server.pem"),
            &pki.path("server.key"),
        )
    };
    let server = Smtpd::start(&opts, &pre.path("spool"));
    let world = World::new(&format!(
        "[[account]]\nname = \"test\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\n\
         auth = \"plain\"\nfrom = \"{USER}\"\nuser = \"{USER}\"\ntls_ca_file = \"{}\"\n\
         timeout = 20\n[queue]\nmode = \"never\"\n",
        server.port,
        pki.path("ca.pem").display(),
    ));
    // The server's spool and the PKI live in the pre-world's directory.
    std::mem::forget(pre);
    (world, server, pki)
}

fn cfg(w: &World) -> String {
    w.config().display().to_string()
}

fn sendmail(w: &World, bus: &BusEnv) -> Run {
    run(
        "sendmail",
        &["-C", &cfg(w), "-oi", "b@example.net"],
        MSG,
        bus,
    )
}

#[test]
fn keyring_password_set_send_delete() {
    let ss = SecretService::start();
    let bus = BusEnv::Private(&ss);
    let (w, server, _pki) = setup();

    // Nothing stored yet: the send fails on the credentials, naming the
    // keyring and how to fill it. (With a queue the message would wait
    // there; these worlds have none, so it is a temporary failure.)
    let r = sendmail(&w, &bus);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("mailhop password set test"), "{r:?}");

    // Unknown accounts are a configuration error.
    let r = run(
        "mailhop",
        &["password", "set", "nosuch", "-C", &cfg(&w)],
        b"x\n",
        &bus,
    );
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.stderr.contains("nosuch"), "{r:?}");

    // One line on stdin; only its newline is removed. A second line is
    // not part of the password.
    let stdin = format!("{PASS}\nsecond line\n");
    let r = run(
        "mailhop",
        &["password", "set", "test", "-C", &cfg(&w)],
        stdin.as_bytes(),
        &bus,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains(PASS.trim()), "{r:?}");

    let r = sendmail(&w, &bus);
    assert_eq!(r.code, 0, "{r:?}");
    let got = server.wait_messages(1);
    assert_eq!(got[0].auth_user.as_deref(), Some(USER));
    assert!(got[0].tls);

    let r = run(
        "mailhop",
        &["password", "delete", "test", "-C", &cfg(&w)],
        b"",
        &bus,
    );
    assert_eq!(r.code, 0, "{r:?}");

    let r = sendmail(&w, &bus);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("keyring"), "{r:?}");
    assert!(r.stderr.contains("account test"), "{r:?}");
    assert!(!r.stderr.contains(PASS.trim()), "{r:?}");
    assert_eq!(server.messages().len(), 1, "nothing more was delivered");

    // Deleting again: nothing to delete.
    let r = run(
        "mailhop",
        &["password", "delete", "test", "-C", &cfg(&w)],
        b"",
        &bus,
    );
    assert_eq!(r.code, 66, "{r:?}");
    assert!(r.stderr.contains("no password for account test"), "{r:?}");
}

#[test]
fn keyring_an_empty_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let w = World::new(
        "[[account]]\nname = \"test\"\nhost = \"127.0.0.1\"\nfrom = \"a@example.com\"\n\
         user = \"a@example.com\"\n",
    );
    // Refused before the keyring is contacted.
    let r = run(
        "mailhop",
        &["password", "set", "test", "-C", &cfg(&w)],
        b"\n",
        &BusEnv::Nowhere(dir.path()),
    );
    assert_eq!(r.code, 65, "{r:?}");
}

#[test]
fn keyring_without_a_session_says_to_use_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let bus = BusEnv::Nowhere(dir.path());
    // A real server, so that the send gets as far as AUTH.
    let (w, server, _pki) = setup();
    let hint = "the keyring needs a desktop session (D-Bus Secret Service); for cron and \
                servers use password_file";
    let r = run(
        "mailhop",
        &["password", "set", "test", "-C", &cfg(&w)],
        b"pw\n",
        &bus,
    );
    assert_eq!(r.code, 69, "{r:?}");
    assert!(r.stderr.contains(hint), "{r:?}");
    let r = sendmail(&w, &bus);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains(hint), "{r:?}");
    assert!(server.messages().is_empty());
}

#[test]
fn keyring_is_in_the_version_features() {
    let out = Command::new(BIN)
        .arg0("mailhop")
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let features = text.lines().find(|l| l.starts_with("features:")).unwrap();
    assert!(features.ends_with(", keyring"), "{features}");
}
