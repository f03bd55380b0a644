//! The durable queue through the real binary: a smarthost that is down
//! then up, 4xx at each stage then success, bounces, expiry, hold,
//! release and delete, kill -9 at each stage, many concurrent senders with
//! racing runners, and a full filesystem.

use std::io::Write;
use std::time::Duration;

use crate::scripted::{Step, serve, serve_many};
use crate::smtpd::{Mode, Smtpd, SmtpdOptions};
use crate::util::{World, closed_port, spawn_sendmail};

fn account(port: u16, extra: &str) -> String {
    format!(
        "[[account]]\nname = \"relay\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"shop@example.com\"\ntimeout = 20\n{extra}"
    )
}

fn msg(subject: &str) -> Vec<u8> {
    format!("Subject: {subject}\nTo: b@example.net\n\nbody of {subject}\n").into_bytes()
}

fn subject(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
        .to_string()
}

fn plain_server(port: Option<u16>, dir: &std::path::Path) -> Smtpd {
    Smtpd::start(
        &SmtpdOptions {
            mode: Mode::Plain,
            port,
            ..SmtpdOptions::default()
        },
        &dir.join("spool"),
    )
}

#[test]
fn smarthost_down_then_up_delivers_everything_in_arrival_order() {
    let port = closed_port();
    let w = World::new(&account(port, ""));
    for i in 0..5 {
        let r = w.sendmail(&["-oi", "b@example.net"], &msg(&format!("m{i}")));
        assert_eq!(r.code, 0, "queued, the caller's job is done: {r:?}");
    }
    let q = w.queued();
    assert_eq!(q.len(), 5);
    assert!(q.iter().all(|i| i["attempts"] == 1), "{q:?}");
    let q = w.mailq();
    assert!(
        q.contains("cannot connect") && q.contains("-- 1 Kbytes in 5 Requests."),
        "{q}"
    );
    // Not due yet: the timer's `queue run` does nothing; `sendmail -q`
    // (like Postfix's) attempts everything now.
    let server = plain_server(Some(port), w.dir.path());
    assert_eq!(w.run("mailhop", &["queue", "run"], b"").code, 0);
    assert_eq!(w.queued().len(), 5, "backoff respected");
    let r = w.sendmail(&["-q"], b"");
    assert_eq!(r.code, 0, "{r:?}");
    let got = server.wait_messages(5);
    let order: Vec<String> = got.iter().map(|m| subject(&m.data)).collect();
    assert_eq!(order, vec!["m0", "m1", "m2", "m3", "m4"]);
    assert!(w.queued().is_empty());
    assert!(w.mailq().contains("Mail queue is empty"));
}

#[test]
fn temporary_failure_at_each_stage_then_success() {
    let ok = |extra: Vec<Step>| {
        let mut s = vec![
            Step::Send(b"220 ready\r\n"),
            Step::Expect("EHLO"),
            Step::Send(b"250 x\r\n"),
            Step::Expect("MAIL"),
            Step::Send(b"250 ok\r\n"),
            Step::Expect("RCPT"),
            Step::Send(b"250 ok\r\n"),
            Step::Expect("DATA"),
            Step::Send(b"354 go\r\n"),
            Step::Data,
        ];
        s.extend(extra);
        s
    };
    let first_failures: Vec<(&str, Vec<Step>)> = vec![
        ("greeting", vec![Step::Send(b"421 4.3.2 not now\r\n")]),
        (
            "MAIL",
            vec![
                Step::Send(b"220 ready\r\n"),
                Step::Expect("EHLO"),
                Step::Send(b"250 x\r\n"),
                Step::Expect("MAIL"),
                Step::Send(b"451 4.3.0 try later\r\n"),
            ],
        ),
        (
            "RCPT",
            vec![
                Step::Send(b"220 ready\r\n"),
                Step::Expect("EHLO"),
                Step::Send(b"250 x\r\n"),
                Step::Expect("MAIL"),
                Step::Send(b"250 ok\r\n"),
                Step::Expect("RCPT"),
                Step::Send(b"450 4.2.0 mailbox busy\r\n"),
            ],
        ),
        (
            "DATA end",
            ok(vec![Step::Send(b"451 4.3.0 queue full\r\n")]),
        ),
    ];
    for (stage, failing) in first_failures {
        let server = serve_many(vec![
            failing,
            ok(vec![
                Step::Send(b"250 queued\r\n"),
                Step::Expect("QUIT"),
                Step::Send(b"221 bye\r\n"),
            ]),
        ]);
        let w = World::new(&account(server.port, ""));
        let r = w.sendmail(&["-oi", "b@example.net"], &msg(stage));
        assert_eq!(r.code, 0, "{stage}: {r:?}");
        let q = w.queued();
        assert_eq!(q.len(), 1, "{stage}: {q:?}");
        assert!(
            q[0]["last_error"].as_str().unwrap().contains(" 4."),
            "{stage}: {q:?}"
        );
        assert_eq!(w.run("mailhop", &["queue", "flush"], b"").code, 0);
        assert!(w.queued().is_empty(), "{stage}: delivered on the retry");
        let data = server.handle.join().unwrap();
        assert!(subject(&data).contains(stage), "{stage}");
    }
}

#[test]
fn permanent_refusal_of_one_recipient_bounces_it_and_delivers_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = plain_server(None, dir.path());
    // mode = always: queued at once, and the runner it starts delivers.
    let w = World::new(&account(server.port, "[queue]\nmode = \"always\"\n"));
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    w.write_config(&cfg.replace(
        "[queue]\nmode = \"always\"\n",
        &format!(
            "[queue]\nmode = \"always\"\ndir = \"{}\"\n",
            w.path("queue").display()
        ),
    ));
    let r = w.sendmail(
        &["-oi", "good@example.net", "reject550@example.net"],
        &msg("mixed"),
    );
    assert_eq!(r.code, 0, "{r:?}");
    // The original (to good@) and the bounce (to the sender, from <>).
    let got = server.wait_messages(2);
    let original = got.iter().find(|m| !m.mail_from.is_empty()).unwrap();
    assert_eq!(original.rcpt_tos, vec!["good@example.net"]);
    let bounce = got.iter().find(|m| m.mail_from.is_empty()).unwrap();
    assert_eq!(bounce.rcpt_tos, vec!["shop@example.com"]);
    let text = String::from_utf8_lossy(&bounce.data);
    assert!(text.contains("multipart/report"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; reject550@example.net"),
        "{text}"
    );
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(text.contains("Subject: mixed"), "{text}");
    assert!(
        !text.contains("good@example.net\r\nAction"),
        "only the failed one: {text}"
    );
}

#[test]
fn expired_message_is_bounced() {
    let port = closed_port();
    let w = World::new(&account(port, ""));
    assert_eq!(w.sendmail(&["-oi", "b@example.net"], &msg("old")).code, 0);
    // Age the item by six days: its arrival is in the metadata.
    let meta = std::fs::read_dir(w.path("queue/q"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "meta"))
        .unwrap();
    let text = std::fs::read(&meta).unwrap();
    let split = text.windows(2).position(|w| w == b"\n\n").unwrap();
    let head = String::from_utf8(text[..split].to_vec()).unwrap();
    let arrival: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("arrival: "))
        .unwrap()
        .parse()
        .unwrap();
    let aged = head.replace(
        &format!("arrival: {arrival}"),
        &format!("arrival: {}", arrival - 6 * 86_400),
    );
    let mut new = aged.into_bytes();
    new.extend_from_slice(&text[split..]);
    std::fs::write(&meta, new).unwrap();

    let server = plain_server(Some(port), w.dir.path());
    assert_eq!(w.sendmail(&["-q"], b"").code, 0);
    let got = server.wait_messages(1);
    assert!(got[0].mail_from.is_empty(), "a bounce, not the message");
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("could not be delivered for 6 days"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; b@example.net"),
        "{text}"
    );
    assert!(w.queued().is_empty());
}

#[test]
fn hold_release_and_delete() {
    let port = closed_port();
    let w = World::new(&account(port, ""));
    for s in ["keep", "held", "gone"] {
        assert_eq!(w.sendmail(&["-oi", "b@example.net"], &msg(s)).code, 0);
    }
    let q = w.queued();
    let ids: Vec<String> = q
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let r = w.run("mailhop", &["queue", "hold", &ids[1]], b"");
    assert_eq!(r.code, 0, "{r:?}");
    let r = w.run("mailhop", &["queue", "delete", &ids[2]], b"");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        w.mailq().contains(&format!("{}!", ids[1])),
        "held is marked: {}",
        w.mailq()
    );
    let shown = w.run("mailhop", &["queue", "show", &ids[1]], b"");
    assert!(shown.stdout.contains("Subject: held"), "{shown:?}");
    let env = w.run("mailhop", &["queue", "show", "--envelope", &ids[1]], b"");
    assert!(
        env.stdout.contains("hold: 1") && env.stdout.contains("b@example.net"),
        "{env:?}"
    );
    assert_eq!(
        w.run("mailhop", &["queue", "show", "../../etc/passwd"], b"")
            .code,
        64
    );

    let server = plain_server(Some(port), w.dir.path());
    assert_eq!(w.run("mailhop", &["queue", "flush"], b"").code, 0);
    let got = server.wait_messages(1);
    assert_eq!(subject(&got[0].data), "keep");
    assert_eq!(w.queued().len(), 1, "the held one stays");
    assert_eq!(
        w.run("mailhop", &["queue", "release", "--all"], b"").code,
        0
    );
    assert_eq!(
        w.sendmail(&["-q"], b"").code,
        0,
        "released items are due at once"
    );
    let got = server.wait_messages(2);
    assert_eq!(subject(&got[1].data), "held");
    assert!(w.queued().is_empty());
    let got = server.messages();
    assert!(
        got.iter().all(|m| subject(&m.data) != "gone"),
        "deleted is never sent"
    );
}

#[test]
fn failed_items_are_listed_shown_and_deleted_but_not_held() {
    // A message with the null sender that is refused for good cannot be
    // bounced: it moves to failed/.
    let port = closed_port();
    let w = World::new(&account(port, ""));
    let r = w.sendmail(&["-oi", "-f", "<>", "reject550@example.net"], &msg("dead"));
    assert_eq!(r.code, 0, "queued while the server is down: {r:?}");
    let server = plain_server(Some(port), w.dir.path());
    assert_eq!(w.run("mailhop", &["queue", "flush"], b"").code, 0);
    assert!(server.messages().is_empty(), "refused, never delivered");

    let q = w.queued();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["area"], "failed", "{q:?}");
    let id = q[0]["id"].as_str().unwrap().to_string();
    assert!(w.mailq().contains(&format!("{id}#")), "{}", w.mailq());

    let shown = w.run("mailhop", &["queue", "show", &id], b"");
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(shown.stdout.contains("Subject: dead"), "{shown:?}");
    assert!(shown.stdout.contains("body of dead"), "{shown:?}");
    assert_eq!(
        q[0]["size"].as_u64().unwrap(),
        shown.stdout.len() as u64,
        "the size counts the body kept in failed/"
    );
    let env = w.run("mailhop", &["queue", "show", "--envelope", &id], b"");
    assert!(
        env.stdout.contains("rcpt: failed reject550@example.net"),
        "{env:?}"
    );

    for verb in ["hold", "release"] {
        let r = w.run("mailhop", &["queue", verb, &id], b"");
        assert_eq!(r.code, 64, "{verb}: {r:?}");
        assert!(r.stderr.contains("is in failed/"), "{verb}: {r:?}");
    }
    let r = w.run("mailhop", &["queue", "delete", "--all"], b"");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("deleted from failed/"), "{r:?}");
    assert_eq!(w.mailq(), "Mail queue is empty\n");
    assert!(
        std::fs::read_dir(w.path("queue/failed"))
            .unwrap()
            .next()
            .is_none(),
        "both files are gone"
    );
    let r = w.run("mailhop", &["queue", "delete", &id], b"");
    assert_eq!(r.code, 64, "gone now: {r:?}");
}

/// Runs `sendmail` with `message`, lets `event` happen, kills it with
/// SIGKILL, and returns when it is dead.
fn kill_at(w: &World, message: &[u8], wait: impl FnOnce()) {
    let mut child = spawn_sendmail(w, &["-oi", "b@example.net"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(message).unwrap();
    drop(stdin);
    wait();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
}

fn success_script() -> Vec<Step> {
    crate::scripted::data_script()
}

/// The draft data files in the spool's `q/`: an intake under way (or
/// one that died) has one, with no `.meta` beside it.
fn drafts(w: &World) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(w.path("queue/q"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    found.sort();
    found
}

/// Polls (bounded) until the intake has written body bytes into its draft:
/// proof that it is reading stdin and writing the spool.
fn wait_for_draft_bytes(w: &World, child: &mut std::process::Child) -> std::path::PathBuf {
    for _ in 0..3000 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("sendmail ended during intake: {status}");
        }
        if let Some(d) = drafts(w)
            .into_iter()
            .find(|d| std::fs::metadata(d).is_ok_and(|m| m.len() > 0))
        {
            return d;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no draft with body bytes in queue/q: {:?}", drafts(w));
}

/// Kill -9 provably in the middle of the intake: the header and part of a
/// body larger than the pipe buffer are written, the test sees the body's
/// first bytes in the draft file, and kills while it still holds the pipe
/// open (so the intake is blocked reading the rest, not finished). Nothing
/// was committed, so nothing is queued or sent; the draft is debris that
/// the runner's sweeper removes once it is old.
#[test]
fn kill_during_intake_leaves_nothing_claimed() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let server = plain_server(None, dir.path());
    let w = World::new(&account(server.port, ""));
    let mut message = b"Subject: cut\nTo: b@example.net\n\n".to_vec();
    for i in 0..8192 {
        message.extend_from_slice(format!("line {i:06} of a body that never ends\n").as_bytes());
    }
    let mut child = spawn_sendmail(&w, &["-oi", "b@example.net"]);
    let mut stdin = child.stdin.take().unwrap();
    // About 200 KB of the 340 KB: more than a pipe holds, and more than the
    // intake buffers before writing to its draft.
    stdin.write_all(&message[..message.len() * 3 / 5]).unwrap();
    let draft = wait_for_draft_bytes(&w, &mut child);
    assert!(!draft.with_extension("meta").exists(), "not committed yet");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed while reading: {status}");
    drop(stdin);

    assert!(
        w.queued().is_empty(),
        "a message that was never accepted is not queued"
    );
    let r = w.run("mailhop", &["queue", "flush"], b"");
    assert_eq!(r.code, 0, "and a runner has nothing to do: {r:?}");
    assert_eq!(
        drafts(&w),
        vec![draft.clone()],
        "fresh debris is left alone"
    );
    // An hour later the sweeper takes it: its writer is dead (unlocked).
    let old = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&draft)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(w.sendmail(&["-q"], b"").code, 0);
    assert!(drafts(&w).is_empty(), "the sweeper removed {draft:?}");
    assert!(w.queued().is_empty());
    assert!(server.messages().is_empty(), "nothing was ever sent");
}

#[test]
fn kill_after_spooling_before_submission_then_runner_delivers() {
    // The server accepts the connection and says nothing: the client has
    // committed the message and is waiting for the greeting.
    let server = serve_many(vec![vec![Step::Notify], success_script()]);
    let w = World::new(&account(server.port, ""));
    kill_at(&w, &msg("after-spool"), || server.events.recv().unwrap());
    assert_eq!(
        w.queued().len(),
        1,
        "committed before the first network byte"
    );
    assert_eq!(w.run("mailhop", &["queue", "flush"], b"").code, 0);
    assert!(w.queued().is_empty());
    let data = server.handle.join().unwrap();
    assert_eq!(subject(&data), "after-spool");
}

#[test]
fn kill_during_data_then_runner_delivers() {
    let mut first = success_script();
    // Stop after DATA's 354: the client is streaming the message.
    first.truncate(9);
    first.push(Step::Notify);
    let server = serve_many(vec![first, success_script()]);
    let w = World::new(&account(server.port, ""));
    kill_at(&w, &msg("during-data"), || server.events.recv().unwrap());
    assert_eq!(w.queued().len(), 1);
    assert_eq!(w.run("mailhop", &["queue", "flush"], b"").code, 0);
    assert!(w.queued().is_empty());
    let data = server.handle.join().unwrap();
    assert_eq!(subject(&data), "during-data");
}

#[test]
fn kill_after_the_final_250_loses_nothing() {
    // After the server's 250 the client removes the item. A kill in the
    // window between the two leaves it queued and the runner sends it again
    // (the one documented duplicate window); either way nothing is lost.
    let mut first = success_script();
    first.truncate(11);
    first.push(Step::Notify);
    let server = serve(first);
    let w = World::new(&account(server.port, ""));
    kill_at(&w, &msg("after-250"), || server.events.recv().unwrap());
    let left = w.queued();
    assert!(left.len() <= 1);
    if left.len() == 1 {
        let again = plain_server(None, w.dir.path());
        let cfg = std::fs::read_to_string(w.config()).unwrap();
        w.write_config(&cfg.replace(
            &format!("port = {}", server.port),
            &format!("port = {}", again.port),
        ));
        assert_eq!(w.run("mailhop", &["queue", "flush"], b"").code, 0);
        assert_eq!(subject(&again.wait_messages(1)[0].data), "after-250");
    }
    assert!(w.queued().is_empty());
    let data = server.handle.join().unwrap();
    assert_eq!(subject(&data), "after-250", "the first server got it whole");
}

#[test]
fn concurrent_senders_and_racing_runners_deliver_each_message_once() {
    const N: usize = 200;
    let port = closed_port();
    let w = std::sync::Arc::new(World::new(&account(port, "")));
    // 200 invocations at once while the smarthost is down: all queued.
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let w = w.clone();
            std::thread::spawn(move || {
                w.sendmail(&["-oi", "b@example.net"], &msg(&format!("c{i}")))
                    .code
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 0);
    }
    assert_eq!(w.queued().len(), N);
    let server = plain_server(Some(port), w.dir.path());
    // Two runners race over the same queue.
    let runners: Vec<_> = (0..2)
        .map(|_| {
            let w = w.clone();
            std::thread::spawn(move || w.run("mailhop", &["queue", "flush"], b"").code)
        })
        .collect();
    for r in runners {
        assert_eq!(r.join().unwrap(), 0);
    }
    // Whatever one runner skipped as busy, a last run picks up.
    assert_eq!(w.run("mailhop", &["queue", "flush"], b"").code, 0);
    let got = server.wait_messages(N);
    let mut subjects: Vec<String> = got.iter().map(|m| subject(&m.data)).collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), N, "every message exactly once");
    assert_eq!(server.messages().len(), N, "and no duplicates");
    assert!(w.queued().is_empty());
}

#[test]
fn full_filesystem_fails_cleanly() {
    if nix::unistd::geteuid().as_raw() != 0 {
        crate::util::prerequisite_missing("not root: cannot mount a tiny tmpfs");
        return;
    }
    let w = World::new(&account(closed_port(), ""));
    let dir = w.path("tiny");
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        crate::util::prerequisite_missing("mount is not permitted here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(dir.clone());
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    w.write_config(&cfg.replace(
        &format!("dir = \"{}\"", w.path("queue").display()),
        &format!("dir = \"{}\"", dir.join("queue").display()),
    ));
    let big = msg(&"y".repeat(200_000));
    let r = w.sendmail(&["-oi", "b@example.net"], &big);
    assert_eq!(r.code, 75, "{r:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("queue/q")).unwrap().collect();
    assert!(leftovers.is_empty(), "no partial item left: {leftovers:?}");
    assert!(w.queued().is_empty(), "nothing claimed");
    let _ = Duration::ZERO;
}

#[test]
fn q_with_r_s_i_selects_items_like_sendmail() {
    let port = closed_port();
    let w = World::new(&account(
        port,
        "[rewrite]\nfrom_policy = \"keep\"\ndomain = \"host.example.com\"\n",
    ));
    let one = w.sendmail(
        &["-oi", "-f", "alice@example.org", "first@one.example"],
        &msg("one"),
    );
    assert_eq!(one.code, 0, "{one:?}");
    assert_eq!(
        w.sendmail(
            &["-oi", "-f", "bob@example.org", "second@two.example"],
            &msg("two")
        )
        .code,
        0
    );
    assert_eq!(
        w.sendmail(
            &["-oi", "-f", "carol@example.org", "third@three.example"],
            &msg("three")
        )
        .code,
        0
    );
    let server = plain_server(Some(port), w.dir.path());
    assert_eq!(w.sendmail(&["-qRtwo.example"], b"").code, 0);
    assert_eq!(subject(&server.wait_messages(1)[0].data), "two");
    assert_eq!(w.sendmail(&["-qScarol"], b"").code, 0);
    assert_eq!(subject(&server.wait_messages(2)[1].data), "three");
    let id = w.queued()[0]["id"].as_str().unwrap().to_string();
    assert_eq!(w.sendmail(&[&format!("-qI{}", &id[..20])], b"").code, 0);
    assert_eq!(subject(&server.wait_messages(3)[2].data), "one");
    assert!(w.queued().is_empty());
}
