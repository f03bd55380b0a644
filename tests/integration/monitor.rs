//! Monitoring through the real binary: the Postfix-style log read by the
//! real pflogsumm, `mailhop queue stats` (JSON and Prometheus), and
//! `mailhop check --queue` as a Nagios plugin.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::smtpd::{Mode, Smtpd, SmtpdOptions};
use crate::util::{World, closed_port};

fn account(port: u16) -> String {
    format!(
        "[[account]]\nname = \"relay\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"shop@example.com\"\ntimeout = 20\n"
    )
}

fn server(port: Option<u16>, w: &World) -> Smtpd {
    Smtpd::start(
        &SmtpdOptions {
            mode: Mode::Plain,
            port,
            ..SmtpdOptions::default()
        },
        &w.path("smtpd"),
    )
}

fn msg(subject: &str) -> Vec<u8> {
    format!("Subject: {subject}\n\nbody of {subject}\n").into_bytes()
}

/// pflogsumm, or `None` after saying why not (an error under CI).
fn pflogsumm() -> Option<&'static str> {
    let path = "/usr/sbin/pflogsumm";
    if std::path::Path::new(path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "pflogsumm is not installed (scripts/test installs it as root)"
    );
    eprintln!("SKIPPED: pflogsumm is not installed (apt-get install pflogsumm)");
    None
}

/// A number from pflogsumm's "Grand Totals", e.g. `delivered`.
fn total(report: &str, what: &str) -> u64 {
    report
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            let n = words.next()?.parse().ok()?;
            (words.next() == Some(what)).then_some(n)
        })
        .unwrap_or_else(|| panic!("no \"{what}\" total in:\n{report}"))
}

#[test]
fn pflogsumm_counts_sent_deferred_and_bounced_from_the_log() {
    let Some(pflogsumm) = pflogsumm() else {
        return;
    };
    let port = closed_port();
    let w = World::new(&account(port));
    let _server = server(Some(port), &w);
    // Two recipients delivered at once.
    let r = w.sendmail(&["-oi", "a@example.net", "b@example.net"], &msg("one"));
    assert_eq!(r.code, 0, "{r:?}");
    // One delivered, one refused for good: the caller is told (EX_NOUSER).
    let r = w.sendmail(
        &["-oi", "c@example.net", "reject550@example.net"],
        &msg("two"),
    );
    assert_ne!(r.code, 0, "{r:?}");
    // Refused for now: queued, then deferred again by a forced run.
    let r = w.sendmail(&["-oi", "temp450@example.net"], &msg("three"));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(w.sendmail(&["-q"], b"").code, 0);
    assert_eq!(w.queued().len(), 1);

    let log = w.log();
    let relay = format!("relay=127.0.0.1[127.0.0.1]:{port}, ");
    let sent: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" mailhop/smtp[") && l.contains("status=sent"))
        .collect();
    assert_eq!(sent.len(), 3, "{log}");
    assert!(
        sent.iter()
            .all(|l| l.contains(&relay) && l.contains("/0/") && l.contains(", dsn=2.")),
        "{log}"
    );
    assert!(
        log.contains("to=<reject550@example.net>, ")
            && log.contains("dsn=5.1.1, status=bounced (550 5.1.1"),
        "{log}"
    );

    let out = Command::new("perl")
        .args([pflogsumm, "--syslog-name", "mailhop", "--problems-first"])
        .arg(w.path("log"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(total(&report, "received"), 3, "{report}\n{log}");
    assert_eq!(total(&report, "delivered"), 3, "{report}\n{log}");
    assert_eq!(total(&report, "deferred"), 1, "{report}\n{log}");
    let words: Vec<&str> = report.split_whitespace().collect();
    assert!(
        words.windows(2).any(|w| w == ["(2", "deferrals)"]),
        "{report}"
    );
    assert_eq!(total(&report, "bounced"), 1, "{report}\n{log}");
    assert_eq!(total(&report, "senders"), 1, "{report}\n{log}");
}

fn check(w: &World, args: &[&str]) -> (i32, String) {
    let r = w.run("mailhop", &[&["check", "--queue"], args].concat(), b"");
    assert_eq!(r.stdout.lines().count(), 1, "one plugin line: {r:?}");
    (r.code, r.stdout.trim_end().to_string())
}

#[test]
fn check_queue_speaks_the_nagios_plugin_conventions() {
    let port = closed_port();
    let w = World::new(&account(port));
    let (code, line) = check(&w, &["--warn", "1h", "--crit", "6h"]);
    assert_eq!(
        (code, line.as_str()),
        (
            0,
            "MAILQ OK - 0 messages | messages=0;;;0 oldest=0s;3600;21600;0 held=0;;;0 failed=0;;;0"
        )
    );
    for i in 0..2 {
        assert_eq!(
            w.sendmail(&["-oi", "b@example.net"], &msg(&format!("m{i}")))
                .code,
            0
        );
    }
    let (code, line) = check(&w, &["--warn", "30m", "--crit", "2d", "--crit-count", "5"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.starts_with("MAILQ OK - 2 messages, oldest "), "{line}");
    assert!(line.contains("| messages=2;;5;0 oldest="), "{line}");
    // Thresholds of zero: the just-queued messages are already "old".
    let (code, line) = check(&w, &["--warn", "0", "--crit", "1d"]);
    assert_eq!(code, 1, "{line}");
    assert!(line.starts_with("MAILQ WARNING - 2 messages"), "{line}");
    let (code, line) = check(&w, &["--warn", "0", "--crit", "0s"]);
    assert_eq!(code, 2, "{line}");
    assert!(line.starts_with("MAILQ CRITICAL - "), "{line}");
    let (code, line) = check(&w, &["--warn", "1h", "--crit", "1d", "--warn-count", "2"]);
    assert_eq!(code, 1, "{line}");
    let (code, line) = check(&w, &["--warn", "2d", "--crit", "1d"]);
    assert_eq!(code, 3, "{line}");
    assert!(line.starts_with("MAILQ UNKNOWN - "), "{line}");
}

#[test]
fn queue_stats_counts_the_queue_and_the_runs() {
    let port = closed_port();
    let w = World::new(&account(port));
    for i in 0..3 {
        assert_eq!(
            w.sendmail(&["-oi", "b@example.net"], &msg(&format!("m{i}")))
                .code,
            0
        );
    }
    let ids: Vec<String> = w
        .queued()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(w.run("mailhop", &["queue", "hold", &ids[0]], b"").code, 0);
    let stats = |w: &World| {
        let r = w.run("mailhop", &["queue", "stats", "--json"], b"");
        assert_eq!(r.code, 0, "{r:?}");
        serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()
    };
    let s = stats(&w);
    assert_eq!(
        (&s["items"], &s["held"], &s["deferred"], &s["failed"]),
        (&3.into(), &1.into(), &3.into(), &0.into()),
        "{s}"
    );
    assert_eq!(s["accounts"]["relay"]["items"], 3, "{s}");
    // sendmail's own attempts count in the totals; no queue run yet.
    assert_eq!(s["accounts"]["relay"]["totals"]["deferred"], 3, "{s}");
    assert_eq!(s["last_run_at"], serde_json::Value::Null, "{s}");

    // The smarthost is back: a run delivers the two that are not held.
    let smtpd = server(Some(port), &w);
    assert_eq!(w.sendmail(&["-q"], b"").code, 0);
    assert_eq!(smtpd.wait_messages(2).len(), 2);
    let s = stats(&w);
    assert_eq!((&s["items"], &s["held"]), (&1.into(), &1.into()), "{s}");
    let relay = &s["accounts"]["relay"];
    assert_eq!(relay["last_run"]["sent"], 2, "{s}");
    assert_eq!(relay["totals"]["sent"], 2, "{s}");
    assert!(s["last_run_at"].is_u64(), "{s}");

    // Released and run again: the totals add up, the last run is its own.
    assert_eq!(
        w.run("mailhop", &["queue", "release", &ids[0]], b"").code,
        0
    );
    assert_eq!(w.sendmail(&["-q"], b"").code, 0);
    let prom = w.path("textfile/mailhop.prom");
    std::fs::create_dir(w.path("textfile")).unwrap();
    let r = w.run(
        "mailhop",
        &[
            "queue",
            "stats",
            "--prometheus",
            "--output",
            prom.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r:?}");
    let text = std::fs::read_to_string(&prom).unwrap();
    for want in [
        "mailhop_queue_messages{account=\"relay\"} 0\n",
        "mailhop_recipients_sent_total{account=\"relay\"} 3\n",
        "mailhop_last_run_recipients_sent{account=\"relay\"} 1\n",
        "# TYPE mailhop_recipients_sent_total counter\n",
        "mailhop_queue_failed_messages 0\n",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "node_exporter must read it");
    assert_eq!(
        std::fs::read_dir(w.path("textfile")).unwrap().count(),
        1,
        "no temporary file left"
    );
    // The plain text names the account and the totals.
    let r = w.run("mailhop", &["queue", "stats"], b"");
    assert!(r.stdout.contains("account relay: 0 message(s)"), "{r:?}");
    assert!(r.stdout.contains("in total: 3 sent"), "{r:?}");
}
