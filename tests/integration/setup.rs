//! `mailhop setup`: discovery against a real DNS server (dnsmasq serving
//! MX, SRV and A records) and a real HTTPS server (tests/peers/autoconfig.py
//! with a certificate from the test CA, trusted through --ca-file), and the
//! configuration `setup --yes` writes.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::certs::TestPki;
use crate::smtpd::{peer_script, python};
use crate::util::{BIN, Run};

/// dnsmasq on a free loopback port answering for `*.test` from its
/// command line only; killed when dropped.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port for dnsmasq");
}

/// A TXT query (RFC 1035 §4.1) for `name` with the given ID.
fn txt_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 16, 0, 1]);
    q
}

impl Dnsmasq {
    /// `records`: dnsmasq options such as `--mx-host=…`, `--srv-host=…`,
    /// `--host-record=…`.
    fn start(records: &[String]) -> Dnsmasq {
        let program = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("dnsmasq is not installed: apt-get install -y dnsmasq-base");
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(program)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--pid-file",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    &format!("--port={port}"),
                    // Names under .test are answered here or NXDOMAIN.
                    "--local=/test/",
                    "--txt-record=ready.test,ready",
                    "--log-facility=-",
                ])
                .args(records)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            if wait_ready(&mut child, addr) {
                return Dnsmasq { child, addr };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start");
    }
}

/// Real queries until one is answered (at most 100 of up to 100 ms).
fn wait_ready(child: &mut Child, addr: SocketAddr) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    for attempt in 0..100u16 {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if socket
            .send_to(&txt_query(attempt, "ready.test"), addr)
            .is_err()
        {
            continue;
        }
        let mut buf = [0u8; 512];
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            let answers = u16::from_be_bytes([buf[6], buf[7]]);
            if n > 12 && buf[..2] == attempt.to_be_bytes() && answers > 0 {
                return true;
            }
        }
    }
    false
}

/// The HTTPS peer, with a certificate for every test host signed by the
/// test CA; killed when dropped.
struct Https {
    child: Child,
    port: u16,
    _out: BufReader<ChildStdout>,
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WEB_HOSTS: &[&str] = &[
    "autoconfig.good.test",
    "good.test",
    "autoconfig.bad.test",
    "autoconfig.redir.test",
    "autoconfig.gone.test",
    "autoconfig.slow.test",
    "autodiscover.pox.test",
    "evil.test",
];

/// A server certificate for [`WEB_HOSTS`] from the test CA. The CA's
/// issuer is rebuilt from its key and its distinguished name, which is
/// all a signature and the issuer name need.
fn web_certificate(pki: &TestPki) -> (PathBuf, PathBuf) {
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.path("ca.key")).unwrap()).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mailhop test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let sans: Vec<String> = WEB_HOSTS.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "autoconfig.good.test");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca).unwrap();
    let (c, k) = (pki.path("web.pem"), pki.path("web.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

impl Https {
    fn start(pki: &TestPki) -> Https {
        let (cert, key) = web_certificate(pki);
        let mut child = Command::new(python())
            .arg(peer_script("autoconfig.py"))
            .args([&cert, &key])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("autoconfig.py did not start: {line:?}"));
        Https {
            child,
            port,
            _out: out,
        }
    }
}

/// Everything discovery talks to.
struct Net {
    dns: Dnsmasq,
    web: Https,
    pki: TestPki,
    _dir: tempfile::TempDir,
}

impl Net {
    fn start() -> Net {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::create(&dir.path().join("pki"));
        let web = Https::start(&pki);
        let mut records: Vec<String> = WEB_HOSTS
            .iter()
            .map(|h| format!("--host-record={h},127.0.0.1"))
            .collect();
        records.extend(
            [
                "--mx-host=o365.test,o365-test.mail.protection.outlook.com,10",
                "--mx-host=own.test,mx.own.test,10",
                // _submissions before _submission; within _submission
                // priority 5 before 10.
                "--srv-host=_submissions._tcp.srv.test,smtps.srv.test,465,0,0",
                "--srv-host=_submission._tcp.srv.test,late.srv.test,587,10,0",
                "--srv-host=_submission._tcp.srv.test,early.srv.test,587,5,0",
                // Target ".": not offered.
                "--srv-host=_submissions._tcp.none.test",
            ]
            .map(String::from),
        );
        Net {
            dns: Dnsmasq::start(&records),
            web,
            pki,
            _dir: dir,
        }
    }

    /// `mailhop setup --discover ADDRESS` through these servers.
    fn discover(&self, address: &str, extra: &[&str]) -> Run {
        let mut args = vec![
            "setup".to_string(),
            "--discover".into(),
            address.into(),
            "--nameserver".into(),
            self.dns.addr.to_string(),
            "--https-port".into(),
            self.web.port.to_string(),
            "--timeout".into(),
            "2".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        if !extra.contains(&"--no-ca") {
            args.extend([
                "--ca-file".into(),
                self.pki.path("ca.pem").display().to_string(),
            ]);
        } else {
            args.retain(|a| a != "--no-ca");
        }
        mailhop(&args, b"")
    }
}

fn mailhop(args: &[String], stdin: &[u8]) -> Run {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails before reading its input may exit before this
    // write: a broken pipe is its answer, not the test's error.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // Shown when a test fails.
    println!("{run:?}");
    run
}

/// The report line of one lookup: the line naming `asked`.
fn line<'a>(r: &'a Run, asked: &str) -> &'a str {
    r.stdout
        .lines()
        .find(|l| l.contains(asked))
        .unwrap_or_else(|| panic!("no line about {asked}:\n{}", r.stdout))
}

#[test]
fn mx_of_a_known_provider() {
    let net = Net::start();
    let r = net.discover("jane@o365.test", &["--only", "mx"]);
    assert_eq!(r.code, 0);
    let l = line(&r, "MX o365.test");
    assert!(
        l.contains("found smtp.office365.com:587 (STARTTLS)") && l.contains("OAuth2"),
        "{l}"
    );
    assert!(r.stdout.contains("known provider Microsoft 365"));
    assert!(r.stdout.contains("plain DNS, which can be forged"));
    // Only the step asked for ran.
    assert!(!r.stdout.contains("SRV "), "{}", r.stdout);
    let r = net.discover("jane@own.test", &["--only", "mx"]);
    assert_eq!(r.code, 69);
    assert!(line(&r, "MX own.test").contains("mx.own.test: not a provider"));
}

#[test]
fn srv_records_in_rfc_order() {
    let net = Net::start();
    let r = net.discover("jane@srv.test", &["--only", "srv"]);
    assert_eq!(r.code, 0);
    let first = line(&r, "_submissions._tcp.srv.test");
    assert!(
        first.contains("found smtps.srv.test:465 (implicit TLS)"),
        "{first}"
    );
    let second = line(&r, "SRV _submission._tcp.srv.test");
    let (early, late) = (
        second.find("early.srv.test").unwrap(),
        second.find("late.srv.test").unwrap(),
    );
    assert!(early < late, "{second}");
    // The list offers implicit TLS first.
    let found = r.stdout.split("Found:").nth(1).unwrap();
    assert!(found.find("smtps.srv.test") < found.find("early.srv.test"));
    let r = net.discover("jane@none.test", &["--only", "srv"]);
    assert_eq!(r.code, 69);
    assert!(line(&r, "_submissions._tcp.none.test").contains("not offered"));
    assert!(line(&r, "SRV _submission._tcp.none.test").contains("nothing: no SRV record"));
}

#[test]
fn autoconfig_good_document() {
    let net = Net::start();
    let r = net.discover("jane@good.test", &["--only", "autoconfig"]);
    assert_eq!(r.code, 0);
    let l = line(&r, "https://autoconfig.good.test");
    assert!(l.contains("emailaddress=jane%40good.test"), "{l}");
    assert!(
        l.contains("found smtp.good.test:465 (implicit TLS), password, user jane;"),
        "{l}"
    );
    assert!(l.contains("smtp.good.test:587 (STARTTLS), password, user jane@good.test"));
    // The second URL was asked too, and 404 is "nothing".
    let l = line(&r, "https://good.test:");
    assert!(l.contains("nothing: not found (HTTP 404)"), "{l}");
    assert!(
        r.stdout
            .contains("verified HTTPS under the address's domain")
    );
}

#[test]
fn autoconfig_failures_are_reported_not_trusted() {
    let net = Net::start();
    let r = net.discover("jane@bad.test", &["--only", "autoconfig"]);
    assert_eq!(r.code, 69);
    assert!(line(&r, "autoconfig.bad.test").contains("failed: malformed XML"));

    let r = net.discover("jane@redir.test", &["--only", "autoconfig"]);
    assert_eq!(r.code, 69);
    let l = line(&r, "autoconfig.redir.test");
    assert!(
        l.contains("redirected to evil.test, which is not under redir.test: not followed"),
        "{l}"
    );

    let r = net.discover("jane@gone.test", &["--only", "autoconfig"]);
    assert_eq!(r.code, 69);
    assert!(line(&r, "autoconfig.gone.test").contains("nothing: not found (HTTP 404)"));

    // The server never answers: the lookup gives up after --timeout.
    let r = net.discover("jane@slow.test", &["--only", "autoconfig"]);
    assert_eq!(r.code, 69);
    assert!(
        line(&r, "autoconfig.slow.test").contains("failed: no answer within 2 s"),
        "{}",
        r.stdout
    );

    // A name that does not resolve.
    let r = net.discover("jane@nowhere.test", &["--only", "autoconfig"]);
    assert!(line(&r, "autoconfig.nowhere.test").contains("failed: the name does not resolve"));
}

#[test]
fn https_is_verified() {
    let net = Net::start();
    // Without the test CA the certificate does not verify: no candidate.
    let r = net.discover("jane@good.test", &["--only", "autoconfig", "--no-ca"]);
    assert_eq!(r.code, 69);
    let l = line(&r, "autoconfig.good.test");
    assert!(
        l.contains("failed:") && l.to_lowercase().contains("certificate"),
        "{l}"
    );
}

#[test]
fn autodiscover_pox() {
    let net = Net::start();
    let r = net.discover("jane@pox.test", &["--only", "autodiscover"]);
    assert_eq!(r.code, 0);
    let l = line(&r, "https://autodiscover.pox.test");
    assert!(
        l.contains("found mail.pox.test:587 (STARTTLS), password, user jane@pox.test"),
        "{l}"
    );
}

#[test]
fn all_steps_in_order() {
    let net = Net::start();
    let r = net.discover("jane@good.test", &[]);
    assert_eq!(r.code, 0);
    let steps: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.trim_start().split(':').next())
        .filter(|s| ["mx", "srv", "autoconfig", "autodiscover"].contains(s))
        .collect();
    assert_eq!(
        steps,
        [
            "mx",
            "srv",
            "srv",
            "autoconfig",
            "autoconfig",
            "autodiscover"
        ]
    );
    assert!(line(&r, "MX good.test").contains("nothing: no MX records"));
    assert!(line(&r, "autodiscover.good.test").contains("failed: the name does not resolve"));
}

// ---------------------------------------------------------------------------
// setup --yes

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn config(&self) -> String {
        self.path("mailhop.toml").display().to_string()
    }
}

fn setup_yes(d: &Dir, extra: &[&str], stdin: &[u8]) -> Run {
    let mut args: Vec<String> = ["setup", "--yes", "-C", &d.config(), "jane@example.com"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    mailhop(&args, stdin)
}

#[test]
fn setup_yes_writes_a_config_check_accepts() {
    let d = Dir::new();
    let r = setup_yes(
        &d,
        &[
            "--host",
            "smtp.example.com",
            "--port",
            "465",
            "--password-file",
            "-",
            "--alias",
            "root=admin@example.com",
            "--offline",
        ],
        b"s3cret-Pa55\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The diff was shown, then check --offline ran on the result.
    assert!(
        r.stdout.contains("+host = \"smtp.example.com\""),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("account smarthost: smtp.example.com port 465 (implicit TLS)")
    );
    assert!(r.stdout.contains("credentials: available"));
    let text = std::fs::read_to_string(d.config()).unwrap();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!r.stdout.contains("s3cret") && !r.stderr.contains("s3cret"));
    assert!(text.contains("root = \"admin@example.com\""));
    // The password file: the password alone, private.
    let pw = d.path("smarthost.password");
    assert_eq!(std::fs::read_to_string(&pw).unwrap(), "s3cret-Pa55\n");
    let meta = std::fs::metadata(&pw).unwrap();
    let group = nix::unistd::Group::from_name("mailhop").unwrap();
    let euid = nix::unistd::geteuid();
    match group {
        Some(g) if euid.is_root() => {
            assert_eq!(meta.mode() & 0o777, 0o640);
            assert_eq!(meta.gid(), g.gid.as_raw());
            assert_eq!(meta.uid(), 0);
        }
        _ => assert_eq!(meta.mode() & 0o777, 0o600),
    }
    // And the check on its own accepts it too.
    let check = mailhop(
        &["check".into(), "--offline".into(), "-C".into(), d.config()],
        b"",
    );
    assert_eq!(check.code, 0, "{}", check.stderr);
    // Run again without a password (dpkg-reconfigure): the file stays.
    let again = setup_yes(
        &d,
        &["--host", "smtp.example.com", "--port", "465", "--offline"],
        b"",
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("keeping the password in"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("already up to date"),
        "{}",
        again.stdout
    );
    assert_eq!(std::fs::read_to_string(&pw).unwrap(), "s3cret-Pa55\n");
}

#[test]
fn setup_keeps_an_existing_file_byte_for_byte() {
    let d = Dir::new();
    let before = "\
# Hand-written; keep this comment.
hostname = \"host.example.com\"   # and this one
syslog = false

[[account]]
name = \"old\"   # another relay
host = \"relay.example.net\"
from = \"x@example.net\"
auth = \"none\"

[local]
# Maildir, as always.
transport = \"maildir\"
";
    std::fs::write(d.config(), before).unwrap();
    std::fs::set_permissions(d.config(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = [
        "--host",
        "smtp.example.com",
        "--password-file",
        "-",
        "--alias",
        "root=admin@example.com",
        "--offline",
    ];
    let r = setup_yes(&d, &args, b"pw\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let after = std::fs::read_to_string(d.config()).unwrap();
    // Every line of the old file is still there, byte for byte and in
    // order; the new account goes after the other one, the alias at the end.
    let mut old_lines = before.lines().peekable();
    for l in after.lines() {
        if old_lines.peek() == Some(&l) {
            old_lines.next();
        }
    }
    assert_eq!(old_lines.next(), None, "{after}");
    assert!(after.starts_with(&before[..before.find("[local]").unwrap()]));
    assert!(
        after.ends_with("[aliases.map]\nroot = \"admin@example.com\"\n"),
        "{after}"
    );
    assert!(after.contains("name = \"smarthost\""));
    // The diff shows additions only.
    assert!(
        !r.stdout
            .lines()
            .any(|l| l.starts_with("-") && !l.starts_with("---"))
    );
    // The file kept its mode.
    let mode = std::fs::metadata(d.config()).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // Run again: nothing changes.
    let r = setup_yes(&d, &args, b"pw\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(d.config()).unwrap(), after);
    assert!(!r.stdout.contains("+++"), "{}", r.stdout);
}

#[test]
fn setup_refuses_what_it_cannot_do() {
    let d = Dir::new();
    // No terminal and no --yes.
    let r = mailhop(
        &[
            "setup".into(),
            "-C".into(),
            d.config(),
            "jane@example.com".into(),
        ],
        b"",
    );
    assert_eq!(r.code, 64);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    // A password is needed but none given.
    let r = setup_yes(&d, &["--host", "smtp.example.com", "--offline"], b"");
    assert_eq!(r.code, 64);
    assert!(r.stderr.contains("--password-file"), "{}", r.stderr);
    // OAuth only where mailhop can sign in.
    let r = setup_yes(
        &d,
        &["--host", "smtp.example.com", "--oauth", "--client-id", "x"],
        b"",
    );
    assert_eq!(r.code, 64);
    assert!(
        r.stderr.contains("Microsoft 365 and Google only"),
        "{}",
        r.stderr
    );
    assert!(!d.path("mailhop.toml").exists());
}

#[test]
fn setup_oauth_writes_the_oauth_table() {
    let d = Dir::new();
    let r = setup_yes(
        &d,
        &[
            "--host",
            "smtp.office365.com",
            "--oauth",
            "--client-id",
            "3f1c5b7e-0d2a-4c9b-8e61-2a4f7d9c0b13",
            "--tenant",
            "example.com",
        ],
        b"",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("mailhop oauth login smarthost -C"),
        "{}",
        r.stdout
    );
    let text = std::fs::read_to_string(d.config()).unwrap();
    assert!(text.contains("auth = \"xoauth2\""));
    assert!(
        text.contains("[account.oauth]\nprovider = \"microsoft\""),
        "{text}"
    );
    let check = mailhop(
        &["check".into(), "--offline".into(), "-C".into(), d.config()],
        b"",
    );
    assert!(
        check.stdout.contains("oauth: refresh token absent"),
        "{check:?}"
    );
}

#[test]
fn setup_yes_uses_discovery() {
    let net = Net::start();
    let d = Dir::new();
    let args: Vec<String> = [
        "setup",
        "--yes",
        "-C",
        &d.config(),
        "jane@good.test",
        "--nameserver",
        &net.dns.addr.to_string(),
        "--https-port",
        &net.web.port.to_string(),
        "--ca-file",
        &net.pki.path("ca.pem").display().to_string(),
        "--only",
        "autoconfig",
        "--password-file",
        "-",
        "--offline",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = mailhop(&args, b"pw\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = std::fs::read_to_string(d.config()).unwrap();
    assert!(
        text.contains("host = \"smtp.good.test\"\nport = 465\ntls = \"implicit\""),
        "{text}"
    );
    assert!(text.contains("user = \"jane\""), "{text}");
    assert!(text.contains(
        "# Written by `mailhop setup`; the server came from autoconfig https://autoconfig.good.test"
    ));
}

// ---------------------------------------------------------------------------
// Interactive, on a real terminal

/// `mailhop` on the slave side of a pseudo-terminal; the test reads the
/// screen from the master side and types into it.
struct Terminal {
    child: Child,
    master: std::fs::File,
    screen: std::sync::mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Terminal {
    fn spawn(args: &[String]) -> Terminal {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        let pty = nix::pty::openpty(None, None).unwrap();
        // The child must hold only the slave: with the master too, the
        // screen would never reach end of file.
        fcntl(&pty.master, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
        let slave = std::fs::File::from(pty.slave);
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            // EIO once the child and its terminal are gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Terminal {
            child,
            master,
            screen: rx,
            seen: String::new(),
        }
    }

    /// Reads the screen until `text` shows; the 60 s bound only keeps a
    /// broken build from hanging the suite.
    fn expect(&mut self, text: &str) {
        while !self.seen.contains(text) {
            match self.screen.recv_timeout(Duration::from_secs(60)) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("{text:?} never showed; the screen:\n{}", self.seen),
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        use std::io::Write;
        self.master
            .write_all(format!("{line}\r").as_bytes())
            .unwrap();
    }

    /// Everything until the program ends, and its exit status.
    fn finish(mut self) -> (String, i32) {
        while let Ok(chunk) = self.screen.recv_timeout(Duration::from_secs(60)) {
            self.seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        (self.seen, code)
    }
}

#[test]
fn interactive_setup_on_a_terminal() {
    let d = Dir::new();
    let mut t = Terminal::spawn(&[
        "setup".into(),
        "-C".into(),
        d.config(),
        "--host".into(),
        "smtp.example.com".into(),
        "--offline".into(),
    ]);
    t.expect("Your email address: ");
    t.type_line("jane@example.com");
    t.expect("Password for account smarthost: ");
    t.type_line("typed-s3cret");
    t.expect("Where should root's mail go [jane@example.com]: ");
    t.type_line("");
    t.expect("Sign outgoing mail with DKIM for example.com (y/N) ");
    t.type_line("");
    t.expect(&format!("Write {}? (Y/n) ", d.config()));
    t.type_line("y");
    let (screen, code) = t.finish();
    println!("{screen}");
    assert_eq!(code, 0);
    // The password was not echoed, and is only in its file.
    assert!(!screen.contains("typed-s3cret"), "{screen}");
    assert_eq!(
        std::fs::read_to_string(d.path("smarthost.password")).unwrap(),
        "typed-s3cret\n"
    );
    // The diff came before the question, the check after the write.
    let diff = screen.find("+root = \"jane@example.com\"").unwrap();
    let write = screen.find("Write ").unwrap();
    let check = screen.find("credentials: available").unwrap();
    assert!(diff < write && write < check, "{screen}");
    let text = std::fs::read_to_string(d.config()).unwrap();
    assert!(
        text.contains("[aliases.map]\nroot = \"jane@example.com\""),
        "{text}"
    );
}

#[test]
fn interactive_setup_can_be_declined() {
    let d = Dir::new();
    let mut t = Terminal::spawn(&[
        "setup".into(),
        "-C".into(),
        d.config(),
        "jane@example.com".into(),
        "--host".into(),
        "smtp.example.com".into(),
        "--alias".into(),
        "root=ops@example.com".into(),
        "--password-file".into(),
        "/dev/null".into(),
    ]);
    // An empty password file is refused before anything is asked.
    let (screen, code) = {
        t.expect("mailhop:");
        t.finish()
    };
    assert_eq!(code, 66, "{screen}");
    assert!(screen.contains("the first line is empty"), "{screen}");

    let mut t = Terminal::spawn(&[
        "setup".into(),
        "-C".into(),
        d.config(),
        "jane@example.com".into(),
        "--host".into(),
        "smtp.example.com".into(),
        "--alias".into(),
        "root=ops@example.com".into(),
    ]);
    t.expect("Password for account smarthost: ");
    t.type_line("pw");
    t.expect("(y/N) ");
    t.type_line("n");
    t.expect("? (Y/n) ");
    t.type_line("n");
    let (screen, code) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("nothing written"), "{screen}");
    assert!(!d.path("mailhop.toml").exists());
    assert!(!d.path("smarthost.password").exists());
}

// ---------------------------------------------------------------------------
// mailhop check's warnings (#13 §4)

fn check_world(extra: &str) -> (Dir, String) {
    let d = Dir::new();
    // A closed port: the checked account fails fast, the warnings follow.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        "hostname = \"host.example.com\"\nsyslog = false\n\n\
         [[account]]\nname = \"local\"\nhost = \"127.0.0.1\"\nport = {closed}\ntls = \"none\"\n\
         from = \"x@plain.test\"\nauth = \"none\"\n\n\
         [[account]]\nname = \"o365\"\nhost = \"smtp.office365.com\"\nfrom = \"shop@o365.test\"\n\
         auth = \"none\"\n\n\
         [[account]]\nname = \"fine\"\nhost = \"smtp.office365.com\"\nfrom = \"a@fine.test\"\n\
         auth = \"none\"\n\n\
         {extra}\n[queue]\ndir = \"{}\"\n",
        d.path("queue").display()
    );
    std::fs::write(d.config(), &text).unwrap();
    let config = d.config();
    (d, config)
}

#[test]
fn check_warns_about_aliases_spf_and_dmarc() {
    // A dead upstream for fail.test: its lookups fail (SERVFAIL).
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let dns = Dnsmasq::start(&[
        "--txt-record=o365.test,v=spf1 include:_spf.google.com -all".into(),
        "--txt-record=_dmarc.o365.test,v=DMARC1; p=reject".into(),
        "--txt-record=fine.test,v=spf1 include:spf.protection.outlook.com -all".into(),
        "--txt-record=_dmarc.fine.test,v=DMARC1; p=reject".into(),
        format!("--server=/fail.test/127.0.0.1#{dead_port}"),
    ]);
    let broken = "[[account]]\nname = \"broken\"\nhost = \"smtp.office365.com\"\n\
                  from = \"a@fail.test\"\nauth = \"none\"\n";
    let (_d, config) = check_world(broken);
    let run = |offline: bool| {
        let mut args: Vec<String> = ["check", "-C", &config, "--account", "local"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if offline {
            args.push("--offline".into());
        } else {
            args.extend(["--nameserver".into(), dns.addr.to_string()]);
        }
        mailhop(&args, b"")
    };
    let r = run(false);
    // The warnings are advice: the status is the connection's.
    assert_eq!(r.code, 75, "{r:?}");
    let out = &r.stdout;
    assert!(out.contains("warning: root has no alias"), "{out}");
    assert!(out.contains("warning: postmaster has no alias"), "{out}");
    assert!(
        out.contains(
            "warning: SPF: the record of o365.test does not authorise smtp.office365.com: \
             add `include:spf.protection.outlook.com`"
        ),
        "{out}"
    );
    assert!(
        out.contains("warning: DMARC: o365.test asks receivers to reject"),
        "{out}"
    );
    assert!(!out.contains("of fine.test"), "{out}");
    assert!(!out.contains("DMARC: fine.test"), "{out}");
    assert!(out.contains("SPF of fail.test: could not check"), "{out}");
    assert!(!out.contains("SPF: fail.test"), "{out}");
    // Offline: only the alias warnings, no DNS.
    let r = run(true);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("warning: root has no alias"));
    assert!(!r.stdout.contains("SPF"), "{}", r.stdout);

    // With the aliases and a DKIM key for o365.test: only SPF remains.
    let (_d, config) = check_world("");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[aliases.map]\nroot = \"ops@example.com\"\npostmaster = \"root\"\n");
    std::fs::write(&config, text).unwrap();
    let r = mailhop(
        &[
            "check".into(),
            "-C".into(),
            config,
            "--account".into(),
            "local".into(),
            "--nameserver".into(),
            dns.addr.to_string(),
        ],
        b"",
    );
    assert!(!r.stdout.contains("has no alias"), "{}", r.stdout);
    assert!(r.stdout.contains("warning: SPF: the record of o365.test"));
}

#[test]
fn setup_dkim_creates_the_key_and_the_entry() {
    let d = Dir::new();
    let args = [
        "--host",
        "smtp.example.com",
        "--password-file",
        "-",
        "--dkim-selector",
        "s2026",
        "--offline",
    ];
    let r = setup_yes(&d, &args, b"pw\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("s2026._domainkey.example.com"),
        "{}",
        r.stdout
    );
    let key = d.path("dkim/example.com.s2026.key");
    let text = std::fs::read_to_string(d.config()).unwrap();
    assert!(
        text.contains(&format!(
            "[[dkim]]\ndomain = \"example.com\"\nselector = \"s2026\"\nkey_file = \"{}\"",
            key.display()
        )),
        "{text}"
    );
    let before = std::fs::read(&key).unwrap();
    assert!(String::from_utf8_lossy(&before).contains("PRIVATE KEY"));
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o007, 0);
    // Again: the key is kept, not replaced, and the file is unchanged.
    let r = setup_yes(&d, &args, b"pw\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("keeping the DKIM key"), "{}", r.stdout);
    assert_eq!(std::fs::read(&key).unwrap(), before);
    assert_eq!(std::fs::read_to_string(d.config()).unwrap(), text);
}

#[test]
fn interactive_setup_ends_with_a_test_message() {
    use crate::smtpd::{Smtpd, SmtpdOptions};
    let d = Dir::new();
    let smtpd = Smtpd::start(
        &SmtpdOptions {
            users: vec![("jane@example.com".into(), "typed-pw".into())],
            require_auth: true,
            ..SmtpdOptions::default()
        },
        &d.path("spool"),
    );
    let port = smtpd.addr().rsplit(':').next().unwrap().to_string();
    let mut t = Terminal::spawn(&[
        "setup".into(),
        "-C".into(),
        d.config(),
        "jane@example.com".into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port,
        "--tls".into(),
        "none".into(),
    ]);
    t.expect("Password for account smarthost: ");
    t.type_line("typed-pw");
    t.expect("Where should root's mail go [jane@example.com]: ");
    t.type_line("");
    t.expect("(y/N) ");
    t.type_line("");
    t.expect("? (Y/n) ");
    t.type_line("");
    t.expect("Send a test message to (empty: none): ");
    t.type_line("ops@example.net");
    let (screen, code) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains("login: accepted as jane@example.com"),
        "{screen}"
    );
    assert!(
        screen.contains("test message: accepted for ops@example.net"),
        "{screen}"
    );
    let got = smtpd.wait_messages(1);
    assert_eq!(got[0].rcpt_tos, ["ops@example.net"]);
    assert_eq!(got[0].auth_user.as_deref(), Some("jane@example.com"));
}

#[test]
fn setup_dry_run_shows_the_diff_and_writes_nothing() {
    let d = Dir::new();
    let r = mailhop(
        &[
            "setup".into(),
            "--dry-run".into(),
            "-C".into(),
            d.config(),
            "jane@example.com".into(),
            "--host".into(),
            "smtp.example.com".into(),
            "--password-file".into(),
            "-".into(),
        ],
        b"pw\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("+++ ") && r.stdout.contains("+host = \"smtp.example.com\""));
    assert!(r.stdout.contains("--dry-run: nothing written"));
    assert!(!d.path("mailhop.toml").exists());
    assert!(!d.path("smarthost.password").exists());
}
