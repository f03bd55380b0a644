//! Intake, fix-ups, local delivery and every refusal path, through the
//! real binary: exit code, message, and that nothing is lost.

use crate::util::{World, body, head, text};

const SIMPLE: &[u8] = b"Subject: hello\n\nIt works.\n";

#[test]
fn delivers_to_maildir_with_fixups() {
    let w = World::new("");
    let r = w.sendmail(&["root"], SIMPLE);
    assert_eq!(r.code, 0, "{r:?}");
    let msgs = w.maildir("root");
    assert_eq!(msgs.len(), 1);
    let h = head(&msgs[0]);
    assert!(h.starts_with("Subject: hello\n"), "{h}");
    assert!(h.contains("\nDate: "), "{h}");
    assert!(
        h.contains("\nMessage-ID: <") && h.contains("@host.example.com>"),
        "{h}"
    );
    assert!(h.contains("\nFrom: "), "{h}");
    assert!(h.contains("\nTo: undisclosed-recipients:;"), "{h}");
    assert_eq!(body(&msgs[0]), b"It works.\n");
    let log = w.log();
    assert!(
        log.contains("nrcpt=1") && log.contains("status=sent"),
        "{log}"
    );
}

#[test]
fn delivers_to_mbox() {
    let w = World::new(&format!(
        "[local]\ntransport = \"mbox\"\npath = \"{}/spool/%u\"\n",
        tempfile::tempdir().unwrap().keep().display()
    ));
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    let mbox_dir = cfg
        .lines()
        .find_map(|l| l.strip_prefix("path = \""))
        .unwrap()
        .trim_end_matches("/%u\"")
        .to_string();
    let msg = b"Subject: one\n\nFrom the start\n>From quoted\n";
    assert_eq!(w.sendmail(&["-f", "alice@example.org", "bob"], msg).code, 0);
    assert_eq!(w.sendmail(&["bob"], b"Subject: two\n\nsecond\n").code, 0);
    let mbox = std::fs::read_to_string(format!("{mbox_dir}/bob")).unwrap();
    assert!(mbox.starts_with("From alice@example.org "), "{mbox}");
    assert!(
        mbox.contains("\n>From the start\n>>From quoted\n\nFrom "),
        "{mbox}"
    );
    assert_eq!(
        mbox.matches("\nSubject: ").count() + usize::from(mbox.starts_with("Subject")),
        2
    );
    assert!(mbox.ends_with("second\n\n"), "{mbox}");
}

#[test]
fn dot_ends_input_unless_i() {
    let w = World::new("");
    let msg = b"Subject: dots\n\nline one\n.\nafter the dot\n";
    assert_eq!(w.sendmail(&["root"], msg).code, 0);
    assert_eq!(w.sendmail(&["-i", "root"], msg).code, 0);
    assert_eq!(w.sendmail(&["-oi", "root"], msg).code, 0);
    let msgs = w.maildir("root");
    assert_eq!(msgs.len(), 3);
    let bodies: Vec<Vec<u8>> = msgs.iter().map(|m| body(m)).collect();
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b.as_slice() == b"line one\n")
            .count(),
        1
    );
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b.as_slice() == b"line one\n.\nafter the dot\n")
            .count(),
        2
    );
}

#[test]
fn crlf_headers_with_lf_body_are_normalised() {
    // PHP 8 writes CRLF headers and an LF body.
    let w = World::new("");
    let r = w.sendmail(
        &["-t", "-i"],
        b"To: root\r\nSubject: php\r\n\r\nline\nline2\n",
    );
    assert_eq!(r.code, 0, "{r:?}");
    let m = &w.maildir("root")[0];
    assert!(!m.contains(&b'\r'), "{}", text(m));
    assert_eq!(body(m), b"line\nline2\n");
}

#[test]
fn t_takes_to_cc_bcc_and_removes_bcc() {
    let w = World::new("");
    let r = w.sendmail(
        &["-t", "carol"],
        b"To: alice\nCc: Bob <bob@host.example.com>\nBcc: secret\nSubject: x\n\nhi\n",
    );
    assert_eq!(r.code, 0, "{r:?}");
    for u in ["alice", "bob", "carol", "secret"] {
        let msgs = w.maildir(u);
        assert_eq!(msgs.len(), 1, "{u}");
        let h = head(&msgs[0]);
        assert!(!h.contains("Bcc") && !h.contains("secret"), "{h}");
        assert!(h.contains("To: alice@host.example.com\n"), "{h}");
        assert!(h.contains("Cc: Bob <bob@host.example.com>\n"), "{h}");
    }
}

#[test]
fn aliases_rewrite_envelope_and_headers() {
    let w = World::new("[aliases]\nmap = { root = \"admin\", ops = [\"alice\", \"bob\"] }\n");
    let r = w.sendmail(&["-t"], b"To: root, ops\nSubject: x\n\nhi\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(w.maildir("root").is_empty());
    for u in ["admin", "alice", "bob"] {
        let msgs = w.maildir(u);
        assert_eq!(msgs.len(), 1, "{u}");
        let h = head(&msgs[0]);
        assert!(
            h.contains(
                "To: admin@host.example.com, alice@host.example.com, bob@host.example.com\n"
            ),
            "{h}"
        );
    }
}

#[test]
fn aliases_file_with_default_catch_all() {
    let w = World::new("");
    let aliases = w.path("aliases");
    std::fs::write(
        &aliases,
        "# comment\npostmaster: root\nroot: admin,\n  archive\nweird: |/bin/cat, admin\n",
    )
    .unwrap();
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    w.write_config(&format!(
        "{cfg}[aliases]\nfile = \"{}\"\ndefault = \"catchall\"\n",
        aliases.display()
    ));
    let r = w.sendmail(&["-v", "postmaster", "nobody-known", "weird"], SIMPLE);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("|/bin/cat"),
        "the ignored pipe target is reported: {r:?}"
    );
    assert_eq!(w.maildir("admin").len(), 1);
    assert_eq!(w.maildir("archive").len(), 1);
    assert_eq!(w.maildir("catchall").len(), 1);
    assert!(w.maildir("nobody-known").is_empty());
}

#[test]
fn alias_loop_is_refused_and_saved() {
    let w = World::new("[aliases]\nmap = { a = \"b\", b = \"a\" }\n");
    let r = w.sendmail(&["a"], SIMPLE);
    assert_eq!(r.code, 65, "{r:?}");
    assert!(r.stderr.contains("a -> b -> a"), "{}", r.stderr);
    assert_eq!(w.dead().len(), 1);
}

#[test]
fn bad_recipient_names_it_and_saves() {
    let w = World::new("");
    let r = w.sendmail(&["<broken@"], SIMPLE);
    assert_eq!(r.code, 65, "{r:?}");
    assert!(r.stderr.contains("<broken@"), "{}", r.stderr);
    assert!(r.stderr.contains("saved in"), "{}", r.stderr);
    let dead = w.dead();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0], SIMPLE);
}

#[test]
fn nul_bytes_are_refused_and_saved_whole() {
    let w = World::new("");
    let msg = b"Subject: nul\n\nbefore\0after\nmore\n";
    let r = w.sendmail(&["root"], msg);
    assert_eq!(r.code, 65, "{r:?}");
    assert!(r.stderr.contains("NUL"), "{}", r.stderr);
    assert_eq!(w.dead(), vec![msg.to_vec()]);
    assert!(w.maildir("root").is_empty());
}

#[test]
fn empty_input_exits_66() {
    let w = World::new("");
    let r = w.sendmail(&["root"], b"");
    assert_eq!(r.code, 66, "{r:?}");
    assert!(r.stderr.contains("no message"), "{}", r.stderr);
}

#[test]
fn huge_header_is_refused_and_saved() {
    let w = World::new("");
    let mut msg = Vec::new();
    while msg.len() <= 1 << 20 {
        msg.extend_from_slice(
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
        );
    }
    msg.extend_from_slice(b"\nbody\n");
    let r = w.sendmail(&["root"], &msg);
    assert_eq!(r.code, 65, "{r:?}");
    assert!(r.stderr.contains("header block is larger"), "{}", r.stderr);
    assert_eq!(w.dead(), vec![msg]);
}

#[test]
fn long_lines_are_reencoded_quoted_printable() {
    let w = World::new("");
    let long = "é".repeat(800) + " end";
    let msg = format!("Subject: long\n\n{long}\nshort\n");
    let r = w.sendmail(&["root"], msg.as_bytes());
    assert_eq!(r.code, 0, "{r:?}");
    let m = &w.maildir("root")[0];
    let h = head(m);
    assert!(
        h.contains("Content-Transfer-Encoding: quoted-printable"),
        "{h}"
    );
    assert!(h.contains("Content-Type: text/plain; charset=utf-8"), "{h}");
    assert!(h.contains("MIME-Version: 1.0"), "{h}");
    let b = body(m);
    assert!(b.split(|&c| c == b'\n').all(|l| l.len() <= 76));
    let crlf = String::from_utf8(b).unwrap().replace('\n', "\r\n");
    let decoded = quoted_printable::decode(crlf, quoted_printable::ParseMode::Strict).unwrap();
    assert_eq!(text(&decoded), format!("{long}\r\nshort\r\n"));
}

#[test]
fn long_lines_in_multipart_are_refused() {
    let w = World::new("");
    let msg = format!(
        "Content-Type: multipart/mixed; boundary=b\nMIME-Version: 1.0\n\n--b\n\n{}\n--b--\n",
        "x".repeat(2000)
    );
    let r = w.sendmail(&["root"], msg.as_bytes());
    assert_eq!(r.code, 65, "{r:?}");
    assert!(r.stderr.contains("multipart/mixed"), "{}", r.stderr);
    assert_eq!(w.dead().len(), 1);
}

#[test]
fn untouched_headers_pass_through_byte_exact() {
    let w = World::new("");
    let h = "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= and a very long subject that\n \tis folded\nX-Weird :  spaced\nX-8bit: Grüße aus Köln\nX-Dup: 1\nX-Dup: 2\nFrom: Some One <someone@example.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <fixed@example.org>\nTo: x@host.example.com\n";
    let msg = format!("{h}\nbody\n");
    let r = w.sendmail(&["-oi", "x"], msg.as_bytes());
    assert_eq!(r.code, 0, "{r:?}");
    // keep/qualify/account policies do not touch an already valid From
    // when no account is configured.
    assert_eq!(text(&w.maildir("x")[0]), msg);
}

#[test]
fn remote_recipient_without_smarthost_is_held_in_the_queue() {
    let w = World::new("");
    let r = w.sendmail(&["someone@example.net", "root"], SIMPLE);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        w.maildir("root").len(),
        1,
        "the local recipient gets it now"
    );
    assert!(
        r.stderr.contains("held in the queue: no smarthost"),
        "said even without -v: {}",
        r.stderr
    );
    let q = w.mailq();
    assert!(q.contains("someone@example.net"), "{q}");
    assert!(q.contains("no smarthost is configured"), "{q}");
    assert!(q.contains("-- 1 Kbytes in 1 Request."), "{q}");
    assert!(w.dead().is_empty());
}

#[test]
fn without_queue_remote_recipient_without_smarthost_is_refused() {
    let w = World::new("[queue]\nmode = \"never\"\n");
    let r = w.sendmail(&["someone@example.net", "root"], SIMPLE);
    assert_eq!(r.code, 69, "{r:?}");
    assert!(
        r.stderr.contains("no smarthost is configured"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("delivered to: root@host.example.com"),
        "{}",
        r.stderr
    );
    assert_eq!(w.dead().len(), 1, "and the message is kept");
}

#[test]
fn unknown_local_user_with_home_path_is_67() {
    let w = World::new("[local]\npath = \"~/Maildir\"\n");
    let r = w.sendmail(&["no-such-user-xyz"], SIMPLE);
    assert_eq!(r.code, 67, "{r:?}");
    assert!(
        r.stderr.contains("no local user \"no-such-user-xyz\""),
        "{}",
        r.stderr
    );
    assert_eq!(w.dead().len(), 1);
}

#[test]
fn capture_delivers_remote_recipients_locally() {
    let w = World::new(&format!(
        "[local]\ncapture = true\npath = \"{}/capture\"\n",
        tempfile::tempdir().unwrap().keep().display()
    ));
    let r = w.sendmail(
        &["-t"],
        b"To: customer@example.net\nSubject: order\n\nthanks\n",
    );
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn config_errors_exit_78_with_file_and_line() {
    let w = World::new("");
    w.write_config("hostname = \"h.example.com\"\n[rewrite]\nfrom_polcy = \"keep\"\n");
    let r = w.sendmail(&["root"], SIMPLE);
    assert_eq!(r.code, 78, "{r:?}");
    assert!(
        r.stderr
            .contains("mailhop.toml:3: unknown key `from_polcy`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("did you mean `from_policy`?"),
        "{}",
        r.stderr
    );
}

#[test]
fn missing_aliases_file_is_a_config_error() {
    let w = World::new("[aliases]\nfile = \"/nonexistent/aliases\"\n");
    let r = w.sendmail(&["root"], SIMPLE);
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.stderr.contains("/nonexistent/aliases"), "{}", r.stderr);
}

#[test]
fn verify_mode_prints_expansion() {
    let w = World::new("[aliases]\nmap = { root = [\"admin\", \"x@example.net\"] }\n");
    let r = w.sendmail(&["-bv", "root"], b"");
    assert_eq!(
        r.code, 69,
        "remote without smarthost is undeliverable: {r:?}"
    );
    assert!(
        r.stdout
            .contains("root -> admin@host.example.com: local delivery to Maildir"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("root -> x@example.net: undeliverable: no smarthost"),
        "{}",
        r.stdout
    );
}

#[test]
fn verify_mode_picks_the_account_as_a_real_message_would() {
    // The invoking user's revaliases entry names the second account; a
    // real message would go through it, so -bv must say so.
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name;
    let w = World::new(&format!(
        "[[account]]\nname = \"main\"\nhost = \"smtp.main.example\"\nfrom = \"shop@example.com\"\n\
         [[account]]\nname = \"ops\"\nhost = \"smtp.ops.example\"\nfrom = \"ops@example.org\"\n\
         [rewrite.revaliases]\n{user} = {{ from = \"ops@example.org\", account = \"ops\" }}\n"
    ));
    let r = w.sendmail(&["-bv", "x@example.net"], b"");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("x@example.net -> x@example.net: smarthost smtp.ops.example (account ops)"),
        "{}",
        r.stdout
    );
    // An explicit remote -f is the caller's choice: the revaliases entry
    // does not apply, and the first account takes it.
    let r = w.sendmail(&["-bv", "-f", "a@elsewhere.example", "x@example.net"], b"");
    assert!(r.stdout.contains("(account main)"), "{}", r.stdout);
    let r = w.sendmail(&["-bv", "-f", "bad address@", "x@example.net"], b"");
    assert_eq!(r.code, 65, "{r:?}");
}

#[test]
fn newaliases_validates() {
    let w = World::new("");
    let aliases = w.path("aliases");
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    w.write_config(&format!(
        "{cfg}[aliases]\nfile = \"{}\"\n",
        aliases.display()
    ));
    std::fs::write(&aliases, "root: admin\nadmin: a@x.org\n").unwrap();
    let r = w.run("newaliases", &[], b"");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("2 aliases"), "{}", r.stdout);
    std::fs::write(&aliases, "root: admin\nadmin root\n").unwrap();
    let r = w.sendmail(&["-bi"], b"");
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.stderr.contains(":2"), "names the line: {}", r.stderr);
    std::fs::write(&aliases, "a: b\nb: a\n").unwrap();
    let r = w.run("newaliases", &[], b"");
    assert_eq!(r.code, 78, "{r:?}");
}

#[test]
fn mailq_and_q_work() {
    let w = World::new("");
    let r = w.run("mailq", &[], b"");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Mail queue is empty"));
    assert_eq!(w.sendmail(&["-bp"], b"").stdout, r.stdout);
    assert_eq!(w.sendmail(&["-q"], b"").code, 0);
}

#[test]
fn refused_modes_and_unknown_flags() {
    let w = World::new("");
    let r = w.sendmail(&["-bh"], b"");
    assert_eq!(r.code, 64, "{r:?}");
    assert!(r.stderr.contains("-bh"), "{}", r.stderr);
    assert_eq!(w.sendmail(&["-bd"], b"").code, 64);
    let r = w.sendmail(&["-Z", "root"], SIMPLE);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("ignoring unknown option -Z"),
        "{}",
        r.stderr
    );
    let r = w.sendmail(&["-f"], b"");
    assert_eq!(r.code, 64, "{r:?}");
    let r = w.sendmail(&[], SIMPLE);
    assert_eq!(r.code, 64, "no recipients: {r:?}");
}

#[test]
fn from_policy_account_rewrites_from_but_keeps_name() {
    // An account exists, so From is rewritten; the message then fails at the
    // (not yet available) smarthost and must be kept, never dropped.
    // A smarthost that refuses connections, and no queue: the failure is
    // reported and the message kept.
    let port = crate::util::closed_port();
    let w = World::new(&format!(
        "[[account]]\nname = \"o365\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"shop@example.com\"\n[queue]\nmode = \"never\"\n"
    ));
    let r = w.sendmail(
        &["-v", "-t"],
        b"From: root (Cron Daemon)\nTo: root, ext@example.net\n\nx\n",
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("rewritten to \"Cron Daemon <shop@example.com>\""),
        "{}",
        r.stderr
    );
    let local = w.maildir("root");
    assert_eq!(local.len(), 1);
    assert!(head(&local[0]).contains("From: Cron Daemon <shop@example.com>"));
    assert_eq!(w.dead().len(), 1);
}

#[test]
fn version_and_help() {
    let r = crate::util::run_raw("mailhop", &["--version".into()], b"", &[]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.starts_with("mailhop "), "{}", r.stdout);
    let r = crate::util::run_raw("mailhop", &["--help".into()], b"", &[]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("send"), "{}", r.stdout);
}
