//! Golden end-to-end tests: each real caller's exact argv and the kind of
//! message it writes, through `/usr/sbin/sendmail` as it would invoke us.

use crate::util::{World, head};

/// Runs `argv` with `msg` and returns the one message each user got.
fn deliver(w: &World, argv: &[&str], msg: &str) -> crate::util::Run {
    let r = w.sendmail(argv, msg.as_bytes());
    assert_eq!(r.code, 0, "{argv:?}: {r:?}");
    r
}

#[test]
fn debian_cron() {
    let w = World::new("[aliases]\nmap = { root = \"admin\" }\n");
    // Debian cron 3.0pl1: no Date, no Message-ID.
    let msg = "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@vm> ls /nonexistent\n\
               MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n\
               Content-Transfer-Encoding: 8bit\nX-Cron-Env: <SHELL=/bin/sh>\n\n\
               ls: cannot access '/nonexistent': No such file or directory\n";
    deliver(
        &w,
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        msg,
    );
    let m = w.maildir("admin");
    assert_eq!(m.len(), 1);
    let h = head(&m[0]);
    assert!(h.contains("To: admin@host.example.com\n"), "{h}");
    assert!(
        h.contains("From: root@host.example.com (Cron Daemon)\n"),
        "{h}"
    );
    assert!(
        h.contains("\nDate: ") && h.contains("\nMessage-ID: "),
        "{h}"
    );
}

#[test]
fn cronie() {
    let w = World::new("");
    let msg =
        "From: root\nTo: root\nSubject: Cron <root@vm> true\nX-Cron-Env: <HOME=/root>\n\nout\n";
    deliver(
        &w,
        &[
            "-FCronDaemon",
            "-i",
            "-odi",
            "-oem",
            "-oi",
            "-t",
            "-f",
            "root",
        ],
        msg,
    );
    assert_eq!(
        w.maildir("root").len(),
        1,
        "-t and argv recipient root dedupe"
    );
}

#[test]
fn php_mail() {
    let w = World::new("");
    let msg =
        "To: alice\r\nSubject: order\r\nX-PHP-Originating-Script: 33:index.php\r\n\r\nthanks\n";
    deliver(&w, &["-t", "-i"], msg);
    deliver(&w, &["-t", "-i", "-f", "www@example.com"], msg);
    assert_eq!(w.maildir("alice").len(), 2);
}

#[test]
fn mutt() {
    let w = World::new("");
    let msg = "From: a@x.example\nTo: b\nSubject: hi\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\
               Message-ID: <m@x.example>\n\nbody\n";
    deliver(
        &w,
        &[
            "-oem",
            "-oi",
            "-B8BITMIME",
            "-f",
            "a@x.example",
            "-N",
            "failure,delay",
            "-R",
            "hdrs",
            "--",
            "b",
        ],
        msg,
    );
    assert_eq!(w.maildir("b").len(), 1);
}

#[test]
fn git_send_email() {
    let w = World::new("");
    let msg = "From: A <a@x.example>\nTo: b, c\nSubject: [PATCH] x\nX-Mailer: git-send-email 2.47\n\n---\n";
    deliver(&w, &["-f", "a@x.example", "-i", "b", "c"], msg);
    assert_eq!(w.maildir("b").len(), 1);
    assert_eq!(w.maildir("c").len(), 1);
}

#[test]
fn bsd_mailx() {
    let w = World::new("");
    deliver(&w, &["-i", "--", "root"], "To: root\nSubject: s\n\nb\n");
    assert!(head(&w.maildir("root")[0]).contains("To: root@host.example.com"));
}

#[test]
fn gnu_mailutils() {
    let w = World::new("");
    deliver(
        &w,
        &["-oi", "-f", "user@host.example.com", "-t"],
        "To: root\nSubject: s\n\nb\n",
    );
    assert_eq!(w.maildir("root").len(), 1);
}

#[test]
fn mdadm() {
    let w = World::new("");
    let msg = "From: mdadm monitoring <root>\nTo: root\nSubject: Fail event on /dev/md0:vm\n\n\
               This is an automatically generated mail message from mdadm\n";
    deliver(&w, &["-t"], msg);
    let h = head(&w.maildir("root")[0]);
    assert!(
        h.contains("From: mdadm monitoring <root@host.example.com>"),
        "{h}"
    );
}

#[test]
fn unattended_upgrades() {
    let w = World::new("");
    let msg = "Subject: unattended-upgrades result for vm: True\nTo: root\n\
               Auto-Submitted: auto-generated\nContent-Type: text/plain; charset=\"utf-8\"\n\nDone\n";
    deliver(&w, &["-oi", "-t"], msg);
    assert!(head(&w.maildir("root")[0]).contains("Auto-Submitted: auto-generated"));
}

#[test]
fn fail2ban() {
    let w = World::new("");
    let msg =
        "Subject: [Fail2Ban] sshd: banned 192.0.2.1\nFrom: fail2ban <fail2ban>\nTo: root\n\nHi\n";
    deliver(&w, &["-f", "fail2ban", "root"], msg);
    let h = head(&w.maildir("root")[0]);
    assert!(
        h.contains("From: fail2ban <fail2ban@host.example.com>"),
        "{h}"
    );
}

/// PHP's own mail() through `sendmail_path`, when php-cli is installed
/// (scripts/test installs it): PHP 8 writes CRLF headers and an LF body,
/// adds X-PHP-Originating-Script when asked, and reads our exit status.
#[test]
fn php_mail_function_through_sendmail_path() {
    let Ok(php) = which("php") else {
        crate::util::prerequisite_missing("php-cli is not installed (scripts/test installs it)");
        return;
    };
    let w = World::new("");
    let link = w.path("sendmail");
    std::os::unix::fs::symlink(crate::util::BIN, &link).unwrap();
    let path = format!("{} -C {} -t -i", link.display(), w.config().display());
    let script = r#"$ok = mail("alice", "Order 42", "Thanks for your order.\nLine two.", "From: shop <shop@host.example.com>\r\nX-Extra: yes");
exit($ok ? 0 : 1);"#;
    let out = std::process::Command::new(php)
        .args([
            "-n",
            "-d",
            &format!("sendmail_path={path}"),
            "-d",
            "mail.add_x_header=1",
            "-r",
            script,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let msgs = w.maildir("alice");
    assert_eq!(msgs.len(), 1);
    let h = head(&msgs[0]);
    assert!(h.contains("Subject: Order 42"), "{h}");
    assert!(h.contains("To: alice@host.example.com"), "{h}");
    // PHP added it (uid and script path); the privacy preset removes it.
    assert!(!h.contains("X-PHP-Originating-Script"), "{h}");
    assert_eq!(
        crate::util::body(&msgs[0]),
        b"Thanks for your order.\nLine two.\n"
    );
    assert!(!crate::util::text(&msgs[0]).contains('\r'));
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
