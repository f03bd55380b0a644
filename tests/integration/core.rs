//! The delivery core: one outcome policy for the foreground send and the
//! queue runner. What needs a person (a refused login) waits in the queue;
//! only a refusal of the message or a recipient fails for the caller, with
//! the exit status its reply means.

use crate::scripted::{Step, data_script, serve, serve_many};
use crate::util::{World, assert_queued_for_a_person};

const MSG: &[u8] = b"Subject: core\n\nbody\n";

fn world(port: u16, mode: &str) -> World {
    let w = World::new(&format!(
        "[[account]]\nname = \"s\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"a@example.com\"\nuser = \"a@example.com\"\npassword_command = \"echo sesame\"\n\
         timeout = 20\n"
    ));
    // The world's own queue directory, in the given mode.
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    w.write_config(&cfg.replace("[queue]\n", &format!("[queue]\nmode = \"{mode}\"\n")));
    w
}

/// Greeting and EHLO offering AUTH, then the server's answer to AUTH.
fn login(answer: &'static [u8]) -> Vec<Step> {
    vec![
        Step::Send(b"220 ready\r\n"),
        Step::Expect("EHLO"),
        Step::Send(b"250-x\r\n250 AUTH PLAIN LOGIN\r\n"),
        Step::Expect("AUTH PLAIN"),
        Step::Send(answer),
    ]
}

/// A login that works, then a whole transaction.
fn accepted() -> Vec<Step> {
    let mut steps = login(b"235 2.7.0 ok\r\n");
    steps.extend(data_script().into_iter().skip(3));
    steps
}

#[test]
fn a_refused_login_keeps_the_message_and_it_is_delivered_once_later() {
    let replies: [(&'static [u8], &str); 2] = [
        (b"535 5.7.8 Authentication credentials invalid\r\n", "535 5.7.8"),
        (
            b"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.\r\n",
            "use OAuth",
        ),
    ];
    for (reply, why) in replies {
        let s = serve_many(vec![login(reply), accepted()]);
        let w = world(s.port, "on-failure");
        let r = w.sendmail(&["-oi", "b@example.net"], MSG);
        assert_queued_for_a_person(&w, &r, why);
        // Fixed on the server's side: `sendmail -q` sends it now, once.
        let r = w.sendmail(&["-q"], b"");
        assert_eq!(r.code, 0, "{r:?}");
        let data = String::from_utf8(s.handle.join().unwrap()).unwrap();
        assert_eq!(data.matches("Subject: core").count(), 1, "{data}");
        assert!(w.queued().is_empty(), "{:?}", w.queued());
        assert!(w.dead().is_empty());
    }
}

#[test]
fn a_refused_login_without_a_queue_is_a_temporary_failure() {
    let s = serve(login(b"535 5.7.8 Authentication credentials invalid\r\n"));
    let w = world(s.port, "never");
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("535 5.7.8"), "{}", r.stderr);
    assert_eq!(w.dead().len(), 1, "kept as a dead letter");
    s.handle.join().unwrap();
}

/// One RCPT refused with `reply`: the exit status the caller gets, and
/// what it read.
fn refused_at_rcpt(reply: &'static [u8]) -> (crate::util::Run, World) {
    let mut steps = login(b"235 2.7.0 ok\r\n");
    steps.extend([
        Step::Expect("MAIL FROM:<a@example.com>"),
        Step::Send(b"250 ok\r\n"),
        Step::Expect("RCPT"),
        Step::Send(reply),
    ]);
    let s = serve(steps);
    let w = world(s.port, "on-failure");
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    s.handle.join().unwrap();
    (r, w)
}

#[test]
fn a_sender_refused_at_rcpt_is_not_an_unknown_user() {
    // Postfix's reject_sender_login_mismatch.
    let (r, w) = refused_at_rcpt(
        b"553 5.7.1 <a@example.com>: Sender address rejected: not owned by user a@example.com\r\n",
    );
    assert_eq!(r.code, 77, "EX_NOPERM, not EX_NOUSER: {r:?}");
    assert!(r.stderr.contains("Sender address rejected"), "{}", r.stderr);
    assert!(
        r.stderr.contains("from_policy = \"account\""),
        "advice: {}",
        r.stderr
    );
    assert!(
        w.queued().is_empty(),
        "a permanent refusal leaves the queue"
    );
    assert_eq!(w.dead().len(), 1, "the caller's message is kept");
}

#[test]
fn an_unknown_user_is_ex_nouser() {
    let (r, w) =
        refused_at_rcpt(b"550 5.1.1 <b@example.net>: Recipient address rejected: User unknown\r\n");
    assert_eq!(r.code, 67, "{r:?}");
    assert!(r.stderr.contains("User unknown"), "{}", r.stderr);
    assert!(w.queued().is_empty());
}

#[test]
fn mailhop_with_sendmail_options_sends() {
    // `sendmail_path = "/usr/bin/mailhop -t -i"`, as msmtp users write it.
    let w = World::new("");
    let msg = b"To: someone\nSubject: via mailhop -t\n\n.\nhello\n";
    let r = w.run("mailhop", &["-t", "-i"], msg);
    assert_eq!(r.code, 0, "{r:?}");
    let got = w.maildir("someone");
    assert_eq!(got.len(), 1, "delivered like `mailhop send -t -i`");
    assert!(
        String::from_utf8_lossy(&got[0]).contains("hello"),
        "-i: the lone dot did not end it"
    );
}

/// Writing to a closed stdout or stderr never affects delivery, and never
/// aborts (issue #15.10).
#[test]
fn closed_stdout_and_stderr_are_harmless() {
    use std::process::{Command, Stdio};
    let w = World::new("");
    // Several queued items, so mailq has more to print than a pipe's
    // reader that has gone will take.
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    w.write_config(&cfg.replace("[queue]\n", "[queue]\nmode = \"always\"\n"));
    for i in 0..30 {
        let r = w.sendmail(
            &["-oi", "b@example.net"],
            format!("Subject: {i}\n\nx\n").as_bytes(),
        );
        assert_eq!(r.code, 0, "{r:?}");
    }
    // mailq into a pipe whose reader is gone: a quiet exit, not SIGABRT.
    let mut child = Command::new(crate::util::BIN)
        .arg0_compat("mailq")
        .args(["-C", w.config().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.code().is_some(),
        "killed by a signal: {:?}",
        out.status
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // sendmail -v with stderr closed still delivers.
    let mut child = Command::new(crate::util::BIN)
        .arg0_compat("sendmail")
        .args(["-C", w.config().to_str().unwrap(), "-v", "-oi", "someone"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    drop(child.stderr.take());
    std::io::Write::write_all(&mut stdin, b"Subject: quiet\n\nx\n").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(w.maildir("someone").len(), 1, "delivered");
}

/// `Command::arg0` under a name that does not clash with the tests'
/// imports.
trait Arg0 {
    fn arg0_compat(&mut self, name: &str) -> &mut Self;
}

impl Arg0 for std::process::Command {
    fn arg0_compat(&mut self, name: &str) -> &mut Self {
        std::os::unix::process::CommandExt::arg0(self, name)
    }
}

/// Terminal escapes cannot reach the queue through an address, so mailq
/// cannot print them to whoever runs it (issue #15.6); what is printed is
/// escaped anyway.
#[test]
fn escape_sequences_in_addresses_are_refused() {
    let w = World::new("");
    for args in [
        ["-f", "\"\u{1b}]0;pwned\u{7}\"@example.com", "b@example.net"],
        ["-f", "a@example.com", "\"\u{1b}[2J\"@example.net"],
    ] {
        let mut argv = vec!["-oi"];
        argv.extend(args);
        let r = w.sendmail(&argv, b"Subject: x\n\nx\n");
        assert_eq!(r.code, 65, "{r:?}");
        assert!(
            !r.stderr.contains('\u{1b}'),
            "escaped in the error: {:?}",
            r.stderr
        );
    }
    assert!(w.queued().is_empty());
    assert!(!w.mailq().contains('\u{1b}'));
}

/// `mailhop check` reports who may submit to the SMTP server.
#[test]
fn check_reports_the_listener_settings() {
    let w = World::new("[smtpd]\nallow = [\"172.17.0.0/16\"]\nmax_connections = 7\n");
    let r = w.run("mailhop", &["check", "--offline"], b"");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(
            "smtp server (-bs, serve): without AUTH from loopback and 172.17.0.0/16; no STARTTLS; no AUTH; at most 7 connections"
        ),
        "{}",
        r.stdout
    );
}
