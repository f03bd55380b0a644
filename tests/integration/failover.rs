//! Failover accounts and per-account pacing through the real binary
//! (#14 §1 and §2): a primary whose port is closed hands the message to
//! its fallback, a permanent refusal does not, and 200 concurrent
//! `sendmail`s against a server that allows 3 connections (Office 365's
//! 432 for the fourth) all arrive exactly once, within the pace.

use std::collections::HashMap;
use std::sync::Arc;

use crate::smtpd::{Mode, Smtpd, SmtpdOptions};
use crate::util::{World, closed_port};

fn server(dir: &std::path::Path, max_connections: Option<u32>) -> Smtpd {
    Smtpd::start(
        &SmtpdOptions {
            mode: Mode::Plain,
            max_connections,
            ..SmtpdOptions::default()
        },
        dir,
    )
}

/// An `[[account]]` on 127.0.0.1 without TLS.
fn account(name: &str, port: u16, from: &str, extra: &str) -> String {
    format!(
        "[[account]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"{from}\"\ntimeout = 20\n{extra}\n"
    )
}

fn msg(subject: &str, to: &str) -> Vec<u8> {
    format!("Subject: {subject}\nTo: {to}\n\nbody of {subject}\n").into_bytes()
}

fn subject(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_closed_primary_fails_over_and_the_log_and_check_say_so() {
    let w0 = tempfile::tempdir().unwrap();
    let backup = server(&w0.path().join("backup"), None);
    let w = World::new(&format!(
        "{}{}",
        account(
            "main",
            closed_port(),
            "shop@example.com",
            "fallback = [\"backup\"]"
        ),
        account("backup", backup.port, "shop@example.com", "")
    ));
    let r = w.sendmail(&["-oi", "b@example.net"], &msg("fo1", "b@example.net"));
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{r:?}");
    let got = backup.wait_messages(1);
    assert_eq!(subject(&got[0].data), "fo1");
    assert_eq!(got[0].mail_from, "shop@example.com");
    assert!(w.queued().is_empty(), "nothing left: {}", w.mailq());
    let log = w.log();
    assert!(
        log.contains("account backup, fallback for main"),
        "the log line names the fallback: {log}"
    );
    let c = w.run("mailhop", &["check"], b"");
    assert!(
        c.stdout.contains("fallback backup; no message rate limit"),
        "{c:?}"
    );
}

#[test]
fn mailq_shows_what_a_fallback_delivered_and_a_permanent_refusal_does_not_fail_over() {
    let w0 = tempfile::tempdir().unwrap();
    let primary = server(&w0.path().join("primary"), None);
    let backup = server(&w0.path().join("backup"), None);
    // The backup's `senders` pattern covers the primary's from.
    let w = World::new(&format!(
        "{}{}",
        account(
            "main",
            primary.port,
            "shop@example.com",
            "fallback = [\"backup\"]"
        ),
        account(
            "backup",
            backup.port,
            "relay@example.org",
            "senders = [\"*@example.com\"]"
        )
    ));
    // 5xx at RCPT: the answer, not a reason to try the backup.
    let r = w.sendmail(&["-oi", "reject550@example.net"], &msg("perm", "x@y"));
    assert_ne!(r.code, 0, "{r:?}");
    assert!(backup.messages().is_empty(), "not failed over");
    // The primary's port closed: the backup takes the message, and the
    // recipient it defers (450) stays queued beside the one it delivered.
    let w2 = World::new(&format!(
        "{}{}",
        account(
            "main",
            closed_port(),
            "shop@example.com",
            "fallback = [\"backup\"]"
        ),
        account(
            "backup",
            backup.port,
            "relay@example.org",
            "senders = [\"*@example.com\"]"
        )
    ));
    let r = w2.sendmail(
        &["-oi", "ok@example.net", "temp450@example.net"],
        &msg("partial", "ok@example.net"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let got = backup.wait_messages(1);
    assert_eq!(got[0].rcpt_tos, vec!["ok@example.net"]);
    let q = w2.mailq();
    assert!(q.contains("ok@example.net (sent via backup)"), "{q}");
    assert!(q.contains("temp450@example.net"), "{q}");
    let r = w2.run("mailhop", &["queue", "list", "--json"], b"");
    let items: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let rcpts = &items[0]["recipients"];
    assert_eq!(rcpts[0]["address"], "ok@example.net", "{items}");
    assert_eq!(rcpts[0]["via"], "backup", "{items}");
    assert_eq!(rcpts[1]["via"], serde_json::Value::Null, "{items}");
}

#[test]
fn a_fallback_that_cannot_send_as_the_primary_is_a_configuration_error() {
    let w = World::new(&format!(
        "{}{}",
        account("main", 2525, "shop@example.com", "fallback = [\"other\"]"),
        account("other", 2526, "someone@example.org", "")
    ));
    let r = w.sendmail(&["-oi", "b@example.net"], &msg("x", "b@example.net"));
    assert_eq!(r.code, 78, "EX_CONFIG: {r:?}");
    assert!(
        r.stderr.contains("\"main\"") && r.stderr.contains("\"other\""),
        "names both accounts: {}",
        r.stderr
    );
}

/// The acceptance times of all messages, in order.
fn received_at(server: &Smtpd) -> Vec<f64> {
    let mut times: Vec<f64> = std::fs::read_dir(&server.spool)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "json").then_some(p)
        })
        .map(|p| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            v["received_at"].as_f64().unwrap()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

#[test]
fn two_hundred_concurrent_senders_stay_within_three_connections_and_the_pace() {
    const N: usize = 200;
    const LIMIT: usize = 80;
    const WINDOW: f64 = 6.0;
    // The server stamps a message a moment after its sender counted it,
    // and with 200 processes on the machine that moment can be long.
    const SLACK: f64 = 2.0;
    let w0 = tempfile::tempdir().unwrap();
    let o365 = server(&w0.path().join("o365"), Some(3));
    let w = Arc::new(World::new(&account(
        "o365",
        o365.port,
        "shop@example.com",
        &format!("max_connections = 3\nmax_per_minute = {LIMIT}\npace_window = \"{WINDOW}s\""),
    )));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let w = w.clone();
            std::thread::spawn(move || {
                w.sendmail(&["-oi", "b@example.net"], &msg(&format!("c{i}"), "b@x"))
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        // Sent, or queued by choice: 0 and silent either way.
        assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{r:?}");
    }
    // The runners the senders started deliver the rest.
    let got = o365.wait_messages(N);
    let transcript = o365.transcript();
    assert_eq!(
        transcript.matches("* refused 432").count(),
        0,
        "never a fourth connection"
    );
    let mut count: HashMap<String, usize> = HashMap::new();
    for m in &got {
        *count.entry(subject(&m.data)).or_default() += 1;
    }
    assert_eq!(count.len(), N, "every message arrived");
    assert!(count.values().all(|&c| c == 1), "once each: {count:?}");
    // Within the pace: no LIMIT + 1 messages inside one window, less the
    // slack; without pacing all 200 arrive within a few seconds.
    let times = received_at(&o365);
    for (a, b) in times.iter().zip(times.iter().skip(LIMIT)) {
        assert!(
            b - a >= WINDOW - SLACK,
            "{} messages within {:.2}s",
            LIMIT + 1,
            b - a
        );
    }
    // A runner removes an item after the server's 250, so the last
    // removal may still be under way when the last message has arrived:
    // wait for that event (bounded), not for a time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !w.queued().is_empty() && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(w.queued().is_empty(), "{}", w.mailq());
}
