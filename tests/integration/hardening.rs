//! Hostile and oversized input through the binary (issues #11 and #15):
//! recipient floods with `-t`, over-long addresses, huge fields echoed in
//! errors, addresses that do not survive rendering, forged log lines, and
//! bounces an independent RFC 3464 reader must understand.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::smtpd::{peer_script, python};
use crate::util::{BIN, Run, World, head};

/// `n` distinct remote addresses, short enough that 100,000 of them fit
/// the 1 MB header limit (830 KB, like the 979 KB message of #15.7).
fn many(n: usize) -> String {
    (0..n)
        .map(|i| format!("{i:x}@x"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where `prlimit` is, or `None` after saying so; a missing one fails
/// the test under CI rather than hiding it.
fn prlimit() -> Option<PathBuf> {
    let found = ["/usr/bin/prlimit", "/bin/prlimit"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        eprintln!(
            "SKIPPED: prlimit (util-linux) is not installed, so the memory bound is not tested"
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "prlimit is required in CI"
        );
    }
    found
}

/// Runs `sendmail -C config args` under a data-segment limit of `bytes`
/// (heap and private mappings): a run that needs more dies instead of
/// passing quietly.
fn sendmail_limited(w: &World, prlimit: &Path, bytes: u64, args: &[&str], stdin: &[u8]) -> Run {
    // argv[0] decides the mode, and prlimit passes the path as argv[0].
    let link = w.path("sendmail");
    if !link.exists() {
        std::os::unix::fs::symlink(BIN, &link).unwrap();
    }
    let mut child = Command::new(prlimit)
        .arg(format!("--data={bytes}"))
        .arg(&link)
        .arg("-C")
        .arg(w.config())
        .args(args)
        .env("XDG_CONFIG_HOME", w.path("xdg"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn hundred_thousand_recipients_with_t_are_refused_within_50_mb() {
    let Some(prlimit) = prlimit() else { return };
    let w = World::new("");
    let msg = format!(
        "From: a@x.org\nSubject: many\nTo: {}\n\nbody\n",
        many(100_000)
    );
    assert!(msg.len() > 800_000, "{}", msg.len());
    let r = sendmail_limited(&w, &prlimit, 50_000_000, &["-t", "-oi"], msg.as_bytes());
    assert_eq!(r.code, 65, "{r:?}");
    assert!(r.stderr.contains("too many recipients"), "{}", r.stderr);
    assert!(r.stderr.contains("at most 1000"), "{}", r.stderr);
    assert!(r.stderr.len() < 1000, "{} bytes of stderr", r.stderr.len());
    assert_eq!(w.dead(), vec![msg.into_bytes()], "kept as a dead letter");
    assert!(w.log().len() < 5000, "{}", w.log().len());
}

#[test]
fn eighty_thousand_bare_names_in_cc_make_no_local_copies() {
    let w = World::new("");
    let names: Vec<String> = (0..80_000).map(|i| format!("n{i}")).collect();
    let msg = format!("Subject: flood\nCc: {}\n\nbody\n", names.join(", "));
    let r = w.sendmail(&["-t", "-oi"], msg.as_bytes());
    assert_eq!(r.code, 65, "{r:?}");
    assert!(r.stderr.contains("too many recipients"), "{}", r.stderr);
    assert!(!w.path("mail").exists(), "no mailbox was written");
    assert_eq!(w.dead().len(), 1);
}

#[test]
fn a_thousand_recipients_are_still_delivered() {
    let w = World::new("");
    let names: Vec<String> = (0..1000).map(|i| format!("n{}", i % 3)).collect();
    // Many mentions, three distinct mailboxes: duplicates do not count.
    let msg = format!("Subject: ok\nTo: {}\n\nbody\n", names.join(", "));
    let r = w.sendmail(&["-t", "-oi"], msg.as_bytes());
    assert_eq!(r.code, 0, "{r:?}");
    for n in ["n0", "n1", "n2"] {
        assert_eq!(w.maildir(n).len(), 1, "{n}");
    }
}

#[test]
fn huge_unterminated_quote_is_not_echoed_whole() {
    let w = World::new("");
    let msg = format!("Subject: x\nTo: \"{}\n\nbody\n", "q".repeat(500_000));
    let r = w.sendmail(&["-t", "-oi"], msg.as_bytes());
    assert_eq!(r.code, 65, "{r:?}");
    assert!(
        r.stderr.contains("unterminated quoted string"),
        "{}",
        &r.stderr[..300.min(r.stderr.len())]
    );
    assert!(r.stderr.len() < 1000, "{} bytes of stderr", r.stderr.len());
    let log = w.log();
    assert!(log.contains("status=refused"), "{log}");
    assert!(log.len() < 3000, "{} bytes of log", log.len());
    assert_eq!(w.dead().len(), 1);
}

#[test]
fn over_long_addresses_are_refused_at_intake() {
    let long_local = format!("{}@example.org", "l".repeat(65));
    let long_domain = format!("a@{}.org", "d".repeat(252));
    for (args, stdin_to) in [
        (vec![long_local.as_str()], ""),
        (vec![long_domain.as_str()], ""),
        (vec!["-t"], long_local.as_str()),
        (vec!["-f", long_local.as_str(), "root"], ""),
    ] {
        let w = World::new("");
        let msg = format!("Subject: x\nTo: {stdin_to}\n\nbody\n");
        let mut all = vec!["-oi"];
        all.extend(args.iter().copied());
        let r = w.sendmail(&all, msg.as_bytes());
        assert_eq!(r.code, 65, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("RFC 5321 allows at most"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(w.dead().len(), 1, "{args:?}: kept");
    }
    // 64 octets is fine.
    let w = World::new("");
    let ok = "l".repeat(64);
    let r = w.sendmail(&["-oi", &ok], b"Subject: x\n\nbody\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(w.maildir(&ok).len(), 1);
}

#[test]
fn addresses_that_do_not_round_trip_are_refused() {
    let w = World::new("");
    let r = w.sendmail(
        &["-t", "-oi"],
        b"Subject: x\nTo: =?=?b?. =?=?b?;?=\n\nbody\n",
    );
    assert_eq!(r.code, 65, "{r:?}");
    assert!(r.stderr.contains("bad recipient"), "{}", r.stderr);
}

#[test]
fn log_tag_cannot_forge_lines() {
    let w = World::new("");
    let tag = "cron\nT0 mailhop[1]: status=sent forged";
    let r = w.sendmail(&["-oi", "-L", tag, "root"], b"Subject: x\n\nbody\n");
    assert_eq!(r.code, 0, "{r:?}");
    let log = w.log();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(!log.lines().any(|l| l.starts_with("T0 ")), "{log}");
}

#[test]
fn privacy_preset_removes_what_php_and_hosting_add() {
    let w = World::new("");
    let msg = "Subject: contact\n\
               X-Powered-By: PHP/8.1.2\n\
               X-PHP-Script: www.example.org/contact.php for 198.51.100.4\n\
               X-Source-Args: /usr/bin/php /home/alice/public_html/mail.php\n\
               X-Forwarded-For: 198.51.100.4\n\
               X-Kept: yes\n\n\
               body\n";
    let r = w.sendmail(&["-oi", "root"], msg.as_bytes());
    assert_eq!(r.code, 0, "{r:?}");
    let h = head(&w.maildir("root")[0]);
    for gone in [
        "X-Powered-By",
        "X-PHP-Script",
        "X-Source-Args",
        "X-Forwarded-For",
        "198.51.100.4",
    ] {
        assert!(!h.contains(gone), "{gone} left in:\n{h}");
    }
    assert!(h.contains("X-Kept: yes"), "{h}");
}

/// A bounce as the queue runner builds it, for two recipients, one with
/// a diagnostic far longer than a line and one with a UTF-8 address.
fn bounce(diagnostic: &str) -> Vec<u8> {
    use mailhop::queue::{Meta, RcptState, Recipient};
    let failed = vec![
        Recipient {
            address: "alice@example.org".into(),
            state: RcptState::Failed,
            last_error: Some(diagnostic.into()),
            via: None,
            dsn: Default::default(),
        },
        Recipient {
            address: "j\u{f6}rg@example.org".into(),
            state: RcptState::Failed,
            last_error: Some("550 5.1.1 <j\u{f6}rg@example.org>: no such user".into()),
            via: None,
            dsn: Default::default(),
        },
    ];
    let original = Meta {
        id: "0000000000000000000000ABCD".into(),
        arrival: 1_700_000_000,
        sender: "shop@example.com".into(),
        account: None,
        uid: 0,
        attempts: 1,
        next_attempt: 0,
        last_error: None,
        hold: false,
        eight_bit: false,
        dsn_notify: None,
        dsn_ret_full: None,
        dsn_envid: Some("order-4711".into()),
        recipients: failed.clone(),
        header: b"From: shop@example.com\r\nSubject: order\r\n".to_vec(),
    };
    let opts = mailhop::deliver::RunOptions {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_600),
        force: false,
        only: None,
        max_age: Duration::from_secs(86_400),
        bounce_to: None,
        hostname: "host.example.com".into(),
        uid: None,
    };
    mailhop::deliver::build_dsn(&original, &failed, "shop@example.com", &opts)
}

#[test]
fn bounce_status_part_reads_back_with_pythons_rfc3464_parser() {
    let words: Vec<String> = (0..60).map(|i| format!("reason{i}")).collect();
    let diagnostic = format!(
        "550 5.7.1 Message rejected: {} =3D \"quoted\" end-of-diagnostic",
        words.join(" ")
    );
    assert!(diagnostic.len() > 400);
    let msg = bounce(&diagnostic);
    let mut child = Command::new(python())
        .arg(peer_script("dsnparse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&msg).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = String::from_utf8_lossy(&msg);

    assert_eq!(v["top"], "multipart/report", "{text}");
    assert_eq!(v["defects"], serde_json::json!([]), "{text}");
    assert_eq!(v["content_type"], "message/delivery-status", "{text}");
    assert_eq!(v["params"], serde_json::json!({}), "no charset: {text}");
    assert_eq!(v["cte"], "7bit", "{text}");
    assert_eq!(v["per_message"]["Reporting-MTA"], "dns; host.example.com");
    assert_eq!(v["per_message"]["Original-Envelope-Id"], "order-4711");
    let rcpts = v["per_recipient"].as_array().unwrap();
    assert_eq!(rcpts.len(), 2, "{text}");
    assert_eq!(rcpts[0]["Final-Recipient"], "rfc822; alice@example.org");
    assert_eq!(rcpts[0]["Action"], "failed");
    assert_eq!(rcpts[0]["Status"], "5.7.1");
    assert_eq!(
        rcpts[0]["Diagnostic-Code"],
        format!("smtp; {diagnostic}").as_str(),
        "the long diagnostic survives whole: {text}"
    );
    assert_eq!(rcpts[1]["Final-Recipient"], "utf-8; j\\x{F6}rg@example.org");
    assert_eq!(rcpts[1]["Status"], "5.1.1");
    // The part itself is folded 7bit text, no soft line breaks.
    let start = text.find("Content-Type: message/delivery-status").unwrap();
    let part = &text[start..];
    let part = &part[..part.find("\r\n--").unwrap()];
    assert!(part.is_ascii(), "{part}");
    assert!(part.lines().all(|l| l.len() <= 78), "{part}");
    assert!(!part.contains("=\r\n"), "{part}");
}
