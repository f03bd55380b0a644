//! The setgid multi-user model, for real: a copy of the binary installed
//! setgid `mailhop`, a shared spool root:mailhop 0770, and two ordinary
//! users who must be able to queue mail but not list, read or delete each
//! other's. Needs root (to create the users and the group, and to write
//! /etc/mailhop.toml, which the setgid binary insists on); skipped
//! otherwise, and skipped if a real /etc/mailhop.toml exists (failed
//! instead of skipped when env `CI` is set).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

fn sh(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn id_of(user: &str) -> Option<(u32, u32)> {
    let u = nix::unistd::User::from_name(user).ok().flatten()?;
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

pub(crate) struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args` as `user` (real uid and gid; no supplementary
/// groups: std drops them when root sets a uid).
pub(crate) fn run_as(user: &str, program: &Path, argv0: &str, args: &[&str], stdin: &[u8]) -> Run {
    use std::io::Write;
    let (uid, gid) = id_of(user).unwrap();
    let mut child = Command::new(program)
        .arg0(argv0)
        .args(args)
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that reads no input may be gone before it is written.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Serializes the tests that write /etc/mailhop.toml: the setgid binary
/// reads no other configuration.
static SYSTEM_CONFIG: Mutex<()> = Mutex::new(());

/// A setgid install for a test: the group `mailhop`, the users mhtest-a
/// and mhtest-b, a copy of the binary setgid mailhop in a directory they
/// can reach, and /etc/mailhop.toml (removed again on drop).
pub(crate) struct SetgidInstall {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub gid: nix::unistd::Gid,
    // Dropped in this order: the file goes before the lock is released.
    _config: Cleanup,
    _serial: MutexGuard<'static, ()>,
}

/// Removes what the test put in /etc.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl SetgidInstall {
    /// `None` (after [`crate::util::prerequisite_missing`], which fails
    /// the test when CI is set) when not root, or when a real
    /// /etc/mailhop.toml exists.
    pub(crate) fn new() -> Option<SetgidInstall> {
        if nix::unistd::geteuid().as_raw() != 0 {
            crate::util::prerequisite_missing("not root: cannot create users or a setgid install");
            return None;
        }
        // A test that failed while holding the lock poisons it; the file
        // is gone all the same (Cleanup ran), so carry on.
        let serial = SYSTEM_CONFIG.lock().unwrap_or_else(|e| e.into_inner());
        let system_config = Path::new("/etc/mailhop.toml");
        if system_config.exists() {
            crate::util::prerequisite_missing(
                "/etc/mailhop.toml exists (a real install?); not touching it",
            );
            return None;
        }
        assert!(sh("groupadd", &["-f", "mailhop"]), "groupadd");
        for u in ["mhtest-a", "mhtest-b"] {
            if id_of(u).is_none() {
                assert!(
                    sh("useradd", &["-M", "-N", "-s", "/usr/sbin/nologin", u]),
                    "useradd {u}"
                );
            }
        }
        let gid = nix::unistd::Group::from_name("mailhop")
            .unwrap()
            .unwrap()
            .gid;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("mailhop");
        // Copied by another process: a write descriptor in this one could
        // be inherited by a child another test thread forks at that
        // moment, and executing the copy would then fail with ETXTBSY.
        assert!(sh("cp", &[crate::util::BIN, &bin.display().to_string()]));
        nix::unistd::chown(&bin, Some(nix::unistd::Uid::from_raw(0)), Some(gid)).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o2755)).unwrap();
        Some(SetgidInstall {
            dir,
            bin,
            gid,
            _config: Cleanup(system_config.to_path_buf()),
            _serial: serial,
        })
    }

    /// Writes /etc/mailhop.toml, root:mailhop 0640 as the package does.
    pub(crate) fn write_config(&self, text: &str) {
        self.group_file(Path::new("/etc/mailhop.toml"), text);
    }

    /// Writes a file root:mailhop 0640: readable through the binary only.
    pub(crate) fn group_file(&self, path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(self.gid)).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640)).unwrap();
    }

    /// A directory root:mailhop 0770 under the install's directory.
    pub(crate) fn group_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        nix::unistd::chown(&d, Some(nix::unistd::Uid::from_raw(0)), Some(self.gid)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o770)).unwrap();
        d
    }
}

#[test]
fn setgid_install_keeps_users_apart() {
    let Some(install) = SetgidInstall::new() else {
        return;
    };
    let (bin, gid) = (&install.bin, install.gid);
    let dir = &install.dir;
    // The spool: root:mailhop 0770.
    let spool = install.group_dir("spool");
    // No smarthost: remote mail is held in the shared queue.
    install.write_config(&format!(
        "hostname = \"host.example.com\"\nsyslog = false\n[queue]\ndir = \"{}\"\n",
        spool.display()
    ));

    for u in ["mhtest-a", "mhtest-b"] {
        let r = run_as(
            u,
            bin,
            "sendmail",
            &["-oi", "x@example.net"],
            format!("Subject: from {u}\n\nsecret of {u}\n").as_bytes(),
        );
        assert_eq!(r.code, 0, "{u}: {} {}", r.stdout, r.stderr);
    }
    // Each sees only their own item.
    let a = run_as("mhtest-a", bin, "mailq", &[], b"");
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert!(
        a.stdout.contains("mhtest-a@host.example.com"),
        "{}",
        a.stdout
    );
    assert!(
        !a.stdout.contains("mhtest-b"),
        "a sees b's item: {}",
        a.stdout
    );
    assert!(a.stdout.contains("in 1 Request."), "{}", a.stdout);
    // root sees both.
    let all = Command::new(bin)
        .arg0("mailhop")
        .args(["queue", "list", "--json"])
        .output()
        .unwrap();
    let items: Vec<serde_json::Value> = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    let b_id = items
        .iter()
        .find(|i| i["sender"].as_str().unwrap().starts_with("mhtest-b"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // a can neither show nor delete b's item through mailhop…
    let show = run_as("mhtest-a", bin, "mailhop", &["queue", "show", &b_id], b"");
    assert_ne!(show.code, 0);
    assert!(!show.stdout.contains("secret of mhtest-b"));
    let del = run_as("mhtest-a", bin, "mailhop", &["queue", "delete", &b_id], b"");
    assert_ne!(del.code, 0);
    let still: Vec<serde_json::Value> = serde_json::from_slice(
        &Command::new(bin)
            .arg0("mailhop")
            .args(["queue", "list", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(still.len(), 2, "b's item survived a's delete");
    // …nor read the spool directly (no mailhop group outside the binary).
    let cat = run_as(
        "mhtest-a",
        Path::new("/bin/cat"),
        "cat",
        &[&format!("{}/q/{b_id}.data", spool.display())],
        b"",
    );
    assert_ne!(
        cat.code, 0,
        "a read b's message from the spool: {}",
        cat.stdout
    );
    let ls = run_as(
        "mhtest-a",
        Path::new("/bin/ls"),
        "ls",
        &[&spool.display().to_string()],
        b"",
    );
    assert_ne!(ls.code, 0, "a listed the spool: {}", ls.stdout);
    // Items belong to the mailhop group and nobody else may read them.
    let meta = std::fs::metadata(spool.join("q").join(format!("{b_id}.data"))).unwrap();
    assert_eq!(meta.gid(), gid.as_raw());
    assert_eq!(meta.permissions().mode() & 0o007, 0, "no access for others");
    // -C makes the binary drop the mailhop group: it may then no longer
    // write the shared spool.
    // The refused message is kept as a dead letter in a directory of a's
    // (a has no home: it would otherwise land in /var/tmp).
    let dead = dir.path().join("dead-a");
    std::fs::create_dir(&dead).unwrap();
    let (a_uid, a_gid) = id_of("mhtest-a").unwrap();
    nix::unistd::chown(
        &dead,
        Some(nix::unistd::Uid::from_raw(a_uid)),
        Some(nix::unistd::Gid::from_raw(a_gid)),
    )
    .unwrap();
    let own = dir.path().join("own.toml");
    std::fs::write(
        &own,
        format!(
            "hostname = \"host.example.com\"\nsyslog = false\ndead_letter = \"{}\"\n\
             [queue]\ndir = \"{}\"\n",
            dead.display(),
            spool.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = run_as(
        "mhtest-a",
        bin,
        "sendmail",
        &["-C", &own.display().to_string(), "-oi", "x@example.net"],
        b"Subject: via -C\n\nx\n",
    );
    assert_ne!(
        r.code, 0,
        "with -C the shared spool is not writable any more: {}",
        r.stderr
    );
    let kept: Vec<_> = std::fs::read_dir(&dead).unwrap().collect();
    assert_eq!(kept.len(), 1, "the refused message is kept: {}", r.stderr);
}

/// The shared install's OAuth tokens: one user's sendmail obtains the
/// token and caches it, another's uses that cache, and after the cache is
/// gone the second refreshes it for both. The files belong to the mailhop
/// group, so neither user can read them except through the binary.
#[test]
fn setgid_install_shares_oauth_tokens_between_users() {
    use crate::oauth::{CLIENT_ID, CLIENT_SECRET, setup};
    use crate::smtpd::{Mode, Smtpd, SmtpdOptions};
    let Some(install) = SetgidInstall::new() else {
        return;
    };
    let t = setup(&[]);
    let base = install.dir.path();
    // What the users' processes must read sits where they can reach it.
    let ca = base.join("ca.pem");
    std::fs::copy(t.pki.path("ca.pem"), &ca).unwrap();
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret = base.join("client-secret");
    install.group_file(&secret, &format!("{CLIENT_SECRET}\n"));
    let spool = install.group_dir("spool");
    // mailhop creates tokens/ itself, group-shared.
    let tokens = install.group_dir("oauth").join("tokens");
    let token_file = tokens.join("app.json");
    let user = "app@contoso.example";
    let smtpd_for = |token: &str, dir: &str| {
        Smtpd::start(
            &SmtpdOptions {
                xoauth2: Some((user.into(), token.into())),
                require_auth: true,
                ..SmtpdOptions::tls(
                    Mode::StartTls,
                    &t.pki.path("server.pem"),
                    &t.pki.path("server.key"),
                )
            },
            &t.dir.path().join(dir),
        )
    };
    let configure = |port: u16| {
        install.write_config(&format!(
            "hostname = \"host.example.com\"\nsyslog = false\n[queue]\ndir = \"{}\"\n\
             [[account]]\nname = \"app\"\nhost = \"127.0.0.1\"\nport = {port}\nfrom = \"{user}\"\n\
             user = \"{user}\"\nauth = \"xoauth2\"\ntls_ca_file = \"{ca}\"\n\
             [account.oauth]\nprovider = \"microsoft\"\nflow = \"client_credentials\"\n\
             tenant = \"contoso\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"{}\"\n\
             token_file = \"{}\"\ntoken_url = \"{}\"\nca_file = \"{ca}\"\n",
            spool.display(),
            secret.display(),
            token_file.display(),
            t.server.url("/contoso/oauth2/v2.0/token"),
            ca = ca.display(),
        ));
    };
    let send = |u: &str, subject: &str| {
        let r = run_as(
            u,
            &install.bin,
            "sendmail",
            &["-oi", "b@example.net"],
            format!("Subject: {subject}\n\nx\n").as_bytes(),
        );
        assert_eq!(r.code, 0, "{u}: {} {}", r.stdout, r.stderr);
    };

    // The token server hands out at-1, at-2, ... in turn.
    let first = smtpd_for("at-1", "spool1");
    configure(first.port);
    send("mhtest-a", "from a");
    send("mhtest-b", "from b");
    assert_eq!(first.wait_messages(2).len(), 2);
    assert_eq!(
        t.server.token_requests().len(),
        1,
        "b used the token a obtained"
    );
    let cache = tokens.join("app.json.access");
    let shared_file = |p: &Path, mode: u32| {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!(m.gid(), install.gid.as_raw(), "{}", p.display());
        assert_eq!(m.permissions().mode() & 0o777, mode, "{}", p.display());
    };
    shared_file(&tokens, 0o770);
    shared_file(&cache, 0o640);
    shared_file(&tokens.join("app.json.lock"), 0o660);
    let cat = run_as(
        "mhtest-b",
        Path::new("/bin/cat"),
        "cat",
        &[&cache.display().to_string()],
        b"",
    );
    assert_ne!(cat.code, 0, "b read the token directly: {}", cat.stdout);
    assert!(!cat.stdout.contains("at-1"));

    // Without the cache b obtains a new token, and a then uses b's.
    std::fs::remove_file(&cache).unwrap();
    let second = smtpd_for("at-2", "spool2");
    configure(second.port);
    send("mhtest-b", "from b again");
    send("mhtest-a", "from a again");
    assert_eq!(second.wait_messages(2).len(), 2);
    assert_eq!(t.server.token_requests().len(), 2, "a used b's token");
    let (b_uid, _) = id_of("mhtest-b").unwrap();
    assert_eq!(
        std::fs::metadata(&cache).unwrap().uid(),
        b_uid,
        "b wrote it"
    );
    shared_file(&cache, 0o640);
}
