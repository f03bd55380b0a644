//! The setgid multi-user model, for real: a copy of the binary installed
//! setgid `mailhop`, a shared spool root:mailhop 0770, and two ordinary
//! users who must be able to queue mail but not list, read or delete each
//! other's. Needs root (to create the users and the group, and to write
//! /etc/mailhop.toml, which the setgid binary insists on); skipped
//! otherwise, and skipped if a real /etc/mailhop.toml exists.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `program args` as `user` (real uid and gid; no supplementary
/// groups: std drops them when root sets a uid).
fn run_as(user: &str, program: &Path, argv0: &str, args: &[&str], stdin: &[u8]) -> Run {
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
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Removes what the test put in /etc.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn setgid_install_keeps_users_apart() {
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("not root: cannot create users or a setgid install; skipping");
        return;
    }
    let system_config = Path::new("/etc/mailhop.toml");
    if system_config.exists() {
        eprintln!("/etc/mailhop.toml exists (a real install?); not touching it; skipping");
        return;
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

    // The install: binary setgid mailhop, spool root:mailhop 0770.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("mailhop");
    // Copied by another process: a write descriptor in this one could be
    // inherited by a child another test thread forks at that moment, and
    // executing the copy would then fail with ETXTBSY.
    assert!(sh("cp", &[crate::util::BIN, &bin.display().to_string()]));
    nix::unistd::chown(&bin, Some(nix::unistd::Uid::from_raw(0)), Some(gid)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o2755)).unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    nix::unistd::chown(&spool, Some(nix::unistd::Uid::from_raw(0)), Some(gid)).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o770)).unwrap();

    // No smarthost: remote mail is held in the shared queue.
    let _cleanup = Cleanup(system_config.to_path_buf());
    std::fs::write(
        system_config,
        format!(
            "hostname = \"host.example.com\"\nsyslog = false\n[queue]\ndir = \"{}\"\n",
            spool.display()
        ),
    )
    .unwrap();
    nix::unistd::chown(
        system_config,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(gid),
    )
    .unwrap();
    std::fs::set_permissions(system_config, std::fs::Permissions::from_mode(0o640)).unwrap();

    for u in ["mhtest-a", "mhtest-b"] {
        let r = run_as(
            u,
            &bin,
            "sendmail",
            &["-oi", "x@example.net"],
            format!("Subject: from {u}\n\nsecret of {u}\n").as_bytes(),
        );
        assert_eq!(r.code, 0, "{u}: {} {}", r.stdout, r.stderr);
    }
    // Each sees only their own item.
    let a = run_as("mhtest-a", &bin, "mailq", &[], b"");
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
    let all = Command::new(&bin)
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
    let show = run_as("mhtest-a", &bin, "mailhop", &["queue", "show", &b_id], b"");
    assert_ne!(show.code, 0);
    assert!(!show.stdout.contains("secret of mhtest-b"));
    let del = run_as(
        "mhtest-a",
        &bin,
        "mailhop",
        &["queue", "delete", &b_id],
        b"",
    );
    assert_ne!(del.code, 0);
    let still: Vec<serde_json::Value> = serde_json::from_slice(
        &Command::new(&bin)
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
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid.as_raw());
    assert_eq!(meta.permissions().mode() & 0o007, 0, "no access for others");
    // -C makes the binary drop the mailhop group: it may then no longer
    // write the shared spool.
    let own = dir.path().join("own.toml");
    std::fs::write(
        &own,
        format!(
            "hostname = \"host.example.com\"\nsyslog = false\n[queue]\ndir = \"{}\"\n",
            spool.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = run_as(
        "mhtest-a",
        &bin,
        "sendmail",
        &["-C", &own.display().to_string(), "-oi", "x@example.net"],
        b"Subject: via -C\n\nx\n",
    );
    assert_ne!(
        r.code, 0,
        "with -C the shared spool is not writable any more: {}",
        r.stderr
    );
}
