//! SMTP submission through the real binary against aiosmtpd (a third-party
//! server) with a test CA: STARTTLS, implicit TLS, AUTH PLAIN/LOGIN/XOAUTH2,
//! certificate failures, per-recipient results, faults at each stage, and
//! byte-exact DATA.

use std::os::unix::fs::PermissionsExt;

use crate::certs::TestPki;
use crate::smtpd::{Mode, Smtpd, SmtpdOptions};
use crate::util::{Run, World, assert_queued_for_a_person};

const USER: &str = "shop@example.com";
const PASS: &str = "s3cret-Pa55word";

/// A world with a test PKI, a password file and a running server.
struct Setup {
    world: World,
    pki: TestPki,
    server: Smtpd,
}

fn pki_in(world: &World) -> TestPki {
    let dir = world.path("pki");
    std::fs::create_dir_all(&dir).unwrap();
    TestPki::create(&dir)
}

fn password_file(world: &World, mode: u32) -> std::path::PathBuf {
    let p = world.path("password");
    std::fs::write(&p, format!("{PASS}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// Starts a server in `mode` with the good certificate (unless `cert` names
/// another pair) and writes an account for it with `extra` account keys.
fn setup(mode: Mode, cert: &str, account_extra: &str, config_extra: &str) -> Setup {
    let pre = World::new("");
    let pki = pki_in(&pre);
    let opts = SmtpdOptions {
        users: vec![(USER.into(), PASS.into())],
        ..SmtpdOptions::tls(
            mode,
            &pki.path(&format!("{cert}.pem")),
            &pki.path(&format!("{cert}.key")),
        )
    };
    let server = Smtpd::start(&opts, &pre.path("spool"));
    let pw = password_file(&pre, 0o600);
    let tls = match mode {
        Mode::Implicit => "implicit",
        Mode::StartTls => "starttls",
        Mode::Plain => "none",
    };
    let account = format!(
        "[[account]]\nname = \"test\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"{tls}\"\n\
         from = \"{USER}\"\nuser = \"{USER}\"\npassword_file = \"{}\"\n\
         tls_ca_file = \"{}\"\ntimeout = 20\n{account_extra}\n{config_extra}",
        server.port,
        pw.display(),
        pki.path("ca.pem").display(),
    );
    let world = World::new(&account);
    // The World made its own directory; keep the pre-world alive through
    // the files it holds by moving them (the server only needs its spool).
    std::mem::forget(pre);
    Setup { world, pki, server }
}

fn send(s: &Setup, args: &[&str], msg: &[u8]) -> Run {
    s.world.sendmail(args, msg)
}

const MSG: &[u8] = b"From: Shop <shop@example.com>\r\nTo: b@example.net\r\nSubject: test\r\n\
Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <t1@example.com>\r\n\r\n\
.leading dot\r\nbody line\r\n..two dots\r\n.\r\nend\r\n";

#[test]
fn starttls_auth_plain_delivers_byte_exact() {
    let s = setup(Mode::StartTls, "server", "auth = \"plain\"", "");
    let r = send(&s, &["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 0, "{r:?}");
    let got = s.server.wait_messages(1);
    assert_eq!(got[0].data, MSG, "the server received exactly the message");
    assert_eq!(got[0].auth_user.as_deref(), Some(USER));
    assert!(got[0].tls);
    assert_eq!(got[0].mail_from, USER);
    assert_eq!(got[0].rcpt_tos, vec!["b@example.net"]);
    assert!(
        got[0].mail_options.iter().any(|o| o.starts_with("SIZE=")),
        "{:?}",
        got[0].mail_options
    );
}

#[test]
fn starttls_auth_login() {
    let s = setup(Mode::StartTls, "server", "auth = \"login\"", "");
    let r = send(&s, &["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        s.server.wait_messages(1)[0].auth_user.as_deref(),
        Some(USER)
    );
}

#[test]
fn implicit_tls_with_auto_auth() {
    let s = setup(Mode::Implicit, "server", "", "");
    let r = send(&s, &["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 0, "{r:?}");
    let got = s.server.wait_messages(1);
    assert!(got[0].tls);
    assert_eq!(got[0].auth_user.as_deref(), Some(USER));
}

#[test]
fn verbose_transcript_never_shows_secrets() {
    let s = setup(Mode::StartTls, "server", "auth = \"plain\"", "");
    let r = send(&s, &["-v", "-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("-> AUTH PLAIN ***"), "{}", r.stderr);
    assert!(r.stderr.contains("-> (message: "), "{}", r.stderr);
    assert!(r.stderr.contains("<- 235"), "{}", r.stderr);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASS}"));
    for secret in [PASS, b64.as_str()] {
        assert!(!r.stderr.contains(secret), "secret leaked: {}", r.stderr);
        assert!(!s.world.log().contains(secret));
    }
    assert!(!r.stderr.contains("body line"), "DATA content is not shown");
}

#[test]
fn xoauth2_static_token_and_refusal_with_json() {
    let pre = World::new("");
    let pki = pki_in(&pre);
    let opts = SmtpdOptions {
        xoauth2: Some((USER.into(), "good-token".into())),
        ..SmtpdOptions::tls(
            Mode::StartTls,
            &pki.path("server.pem"),
            &pki.path("server.key"),
        )
    };
    let server = Smtpd::start(&opts, &pre.path("spool"));
    for (token, refused) in [("good-token", false), ("expired-token", true)] {
        let w = World::new(&format!(
            "[[account]]\nname = \"o365\"\nhost = \"127.0.0.1\"\nport = {}\nfrom = \"{USER}\"\n\
             user = \"{USER}\"\nauth = \"xoauth2\"\npassword_command = \"echo {token}\"\n\
             tls_ca_file = \"{}\"\n",
            server.port,
            pki.path("ca.pem").display()
        ));
        let r = w.sendmail(&["-v", "-oi", "b@example.net"], MSG);
        assert_eq!(r.code, 0, "{token}: {r:?}");
        assert!(!r.stderr.contains(token), "token leaked: {}", r.stderr);
        if refused {
            // A refused token is the administrator's to fix: queued.
            assert_queued_for_a_person(&w, &r, "the OAuth token was refused");
            assert!(
                r.stderr.contains("\"status\":\"401\""),
                "decoded JSON shown: {}",
                r.stderr
            );
            assert!(r.stderr.contains("535"), "{}", r.stderr);
            assert!(
                r.stderr.contains("the OAuth token was refused"),
                "{}",
                r.stderr
            );
            assert!(!r.stderr.contains("user and password"), "{}", r.stderr);
        }
    }
    assert_eq!(server.wait_messages(1).len(), 1);
}

#[test]
fn untrusted_certificate_is_refused_with_diagnosis() {
    // No tls_ca_file: the system store does not know the test CA.
    let s = setup(Mode::StartTls, "server", "", "");
    let cfg = std::fs::read_to_string(s.world.config()).unwrap();
    let cfg: String = cfg
        .lines()
        .filter(|l| !l.starts_with("tls_ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    s.world.write_config(&cfg);
    let r = send(&s, &["-oi", "b@example.net"], MSG);
    // A certificate problem is a person's to fix: the message waits.
    assert_queued_for_a_person(&s.world, &r, "unknown issuer");
    assert!(r.stderr.contains("tls_ca_file"), "{}", r.stderr);
    assert!(
        !s.server.transcript().contains("C: AUTH"),
        "no credentials were sent"
    );
}

#[test]
fn wrong_name_and_expired_certificates_are_explained() {
    let s = setup(Mode::Implicit, "wrong", "", "");
    let r = send(&s, &["-oi", "b@example.net"], MSG);
    // Names what the certificate is for.
    assert_queued_for_a_person(&s.world, &r, "wrong.example");
    let s = setup(Mode::Implicit, "expired", "", "");
    let r = send(&s, &["-oi", "b@example.net"], MSG);
    assert_queued_for_a_person(&s.world, &r, "expired");
}

#[test]
fn pinned_certificate() {
    // A self-signed certificate: trusted through the pin alone.
    let pre = World::new("");
    let pki = pki_in(&pre);
    let good = pki.sha256_fingerprint("self.pem");
    let s = setup(
        Mode::Implicit,
        "self",
        &format!("tls_fingerprint = \"{good}\""),
        "",
    );
    let r = send(&s, &["-oi", "b@example.net"], MSG);
    // A pin from another PKI does not match.
    assert_queued_for_a_person(&s.world, &r, "tls_fingerprint");
    let right = s.pki.sha256_fingerprint("self.pem");
    let s2 = setup(
        Mode::Implicit,
        "self",
        &format!("tls_fingerprint = \"{right}\""),
        "",
    );
    // s2 has its own PKI; pin its own self-signed cert.
    let right2 = s2.pki.sha256_fingerprint("self.pem");
    let cfg = std::fs::read_to_string(s2.world.config())
        .unwrap()
        .replace(&right, &right2);
    s2.world.write_config(&cfg);
    let r = send(&s2, &["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 0, "{r:?}");
    s2.server.wait_messages(1);
}

#[test]
fn server_without_starttls_gets_no_credentials() {
    let pre = World::new("");
    let server = Smtpd::start(
        &SmtpdOptions {
            mode: Mode::Plain,
            offer_starttls: false,
            users: vec![(USER.into(), PASS.into())],
            ..SmtpdOptions::default()
        },
        &pre.path("spool"),
    );
    let pw = password_file(&pre, 0o600);
    let w = World::new(&format!(
        "[[account]]\nname = \"t\"\nhost = \"127.0.0.1\"\nport = {}\nfrom = \"{USER}\"\nuser = \"{USER}\"\n\
         password_file = \"{}\"\n",
        server.port,
        pw.display()
    ));
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_queued_for_a_person(&w, &r, "does not offer STARTTLS");
    let t = server.transcript();
    assert!(!t.contains("C: AUTH") && !t.contains("C: MAIL"), "{t}");
}

#[test]
fn one_of_three_recipients_rejected() {
    let s = setup(Mode::StartTls, "server", "", "");
    let r = send(
        &s,
        &[
            "-oi",
            "a@example.net",
            "reject550@example.net",
            "c@example.net",
        ],
        MSG,
    );
    assert_eq!(r.code, 67, "{r:?}");
    assert!(
        r.stderr.contains("reject550@example.net") && r.stderr.contains("550 5.1.1"),
        "{}",
        r.stderr
    );
    let got = s.server.wait_messages(1);
    assert_eq!(got[0].rcpt_tos, vec!["a@example.net", "c@example.net"]);
    assert!(
        s.world.log().contains("status=refused"),
        "{}",
        s.world.log()
    );
}

#[test]
fn faults_at_each_stage_map_to_exit_codes() {
    let s = setup(
        Mode::StartTls,
        "server",
        "",
        "[rewrite]\nfrom_policy = \"keep\"\ndomain = \"host.example.com\"\n[queue]\nmode = \"never\"\n",
    );
    let cases: [(&[&str], i32, &str); 7] = [
        (&["-f", "mailfail4@example.com", "b@example.net"], 75, "451"),
        (&["-f", "mailfail5@example.com", "b@example.net"], 69, "553"),
        (&["temp450@example.net"], 75, "450"),
        (&["reject550@example.net"], 67, "550"),
        (&["datafail4@example.net"], 75, "451"),
        (&["datafail5@example.net"], 69, "554"),
        (&["dropdata@example.net"], 75, "closed the connection"),
    ];
    for (args, code, text) in cases {
        let mut full = vec!["-oi"];
        full.extend_from_slice(args);
        let r = send(&s, &full, b"Subject: x\n\nbody\n");
        assert_eq!(r.code, code, "{args:?}: {r:?}");
        assert!(r.stderr.contains(text), "{args:?}: {}", r.stderr);
    }
    assert_eq!(s.world.dead().len(), 7, "every failed message was kept");
}

/// A 5xx to DATA fails the recipients the server took at RCPT, not one it
/// had already refused with a 4xx: that one still waits in the queue.
#[test]
fn a_5xx_to_data_leaves_a_4xx_rcpt_refusal_deferred() {
    let s = setup(
        Mode::StartTls,
        "server",
        "",
        "[rewrite]\nfrom_policy = \"keep\"\ndomain = \"host.example.com\"\n",
    );
    let r = send(
        &s,
        &["-oi", "datafail5@example.net", "temp450@example.net"],
        b"Subject: x\n\nbody\n",
    );
    assert_eq!(r.code, 69, "{r:?}");
    assert!(r.stderr.contains("datafail5@example.net"), "{}", r.stderr);
    assert!(!r.stderr.contains("temp450@example.net:"), "{}", r.stderr);
    assert!(r.stderr.contains("queued as"), "{}", r.stderr);
    let q = s.world.mailq();
    assert!(q.contains("temp450@example.net"), "{q}");
    assert!(q.contains("450"), "its own reply is its reason: {q}");
    assert!(!q.contains("datafail5@example.net"), "{q}");
}

#[test]
fn slow_server_times_out() {
    let s = setup(
        Mode::StartTls,
        "server",
        "data_timeout = 1",
        "[queue]\nmode = \"never\"\n",
    );
    let r = send(&s, &["-oi", "slowdata@example.net"], MSG);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("timed out"), "{}", r.stderr);
}

#[test]
fn connection_refused_is_queued_or_temporary() {
    // A port nobody listens on: bind, learn it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let account = format!(
        "[[account]]\nname = \"t\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"{USER}\"\n"
    );
    // Default mode: queued, the caller's job is done.
    let w = World::new(&account);
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 0, "{r:?}");
    let q = w.queued();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(
        q[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{q:?}"
    );
    assert_eq!(q[0]["attempts"], 1);
    assert!(w.dead().is_empty());
    // mode = "never": exit 75, nothing queued, the message saved.
    let w = World::new(&format!("{account}[queue]\nmode = \"never\"\n"));
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stderr.contains("cannot connect"), "{}", r.stderr);
    assert_eq!(w.dead().len(), 1);
    assert!(w.queued().is_empty());
}

#[test]
fn eight_bit_utf8_address_dsn_parameters() {
    let s = setup(Mode::StartTls, "server", "", "");
    let msg = "From: shop@example.com\r\nTo: jörg@example.net\r\nSubject: Grüße\r\n\
               Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <u@example.com>\r\n\
               MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
               Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n";
    let r = send(
        &s,
        &[
            "-oi",
            "-N",
            "failure,delay",
            "-R",
            "hdrs",
            "-V",
            "env+id=1",
            "jörg@example.net",
        ],
        msg.as_bytes(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let got = s.server.wait_messages(1);
    assert_eq!(got[0].data, msg.as_bytes());
    let opts = got[0].mail_options.join(" ");
    for want in [
        "BODY=8BITMIME",
        "SMTPUTF8",
        "RET=HDRS",
        "ENVID=env+2Bid+3D1",
    ] {
        assert!(opts.contains(want), "{want} missing from {opts}");
    }
    assert_eq!(got[0].rcpt_tos, vec!["jörg@example.net"]);
    assert!(
        got[0].rcpt_options[0]
            .join(" ")
            .contains("NOTIFY=FAILURE,DELAY"),
        "{:?}",
        got[0].rcpt_options
    );
}

#[test]
fn fifty_megabyte_message_is_streamed_byte_exact() {
    let s = setup(Mode::StartTls, "server", "", "");
    let mut msg = b"From: shop@example.com\r\nTo: b@example.net\r\nSubject: big\r\n\
Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <big@example.com>\r\n\r\n"
        .to_vec();
    let line = b".dotted line padding to make this a normal length line of text......\r\n";
    while msg.len() < 50 * 1024 * 1024 {
        msg.extend_from_slice(line);
    }
    let r = send(&s, &["-oi", "b@example.net"], &msg);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got = s.server.wait_messages(1);
    assert!(
        got[0].data == msg,
        "50 MB message differs ({} vs {} bytes)",
        got[0].data.len(),
        msg.len()
    );
}

#[test]
fn password_file_permissions_are_enforced() {
    let s = setup(Mode::StartTls, "server", "", "");
    std::fs::set_permissions(
        s.world.path("../").join("password"),
        std::fs::Permissions::from_mode(0o644),
    )
    .ok();
    // The setup's password file lives in the pre-world; point at a new one.
    let pw = password_file(&s.world, 0o644);
    let cfg = std::fs::read_to_string(s.world.config()).unwrap();
    let cfg: String = cfg
        .lines()
        .map(|l| {
            if l.starts_with("password_file") {
                format!("password_file = \"{}\"\n", pw.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    s.world.write_config(&cfg);
    let r = send(&s, &["-oi", "b@example.net"], MSG);
    // A credential source that fails: queued until it is fixed.
    assert_queued_for_a_person(&s.world, &r, "chmod 600");
    assert!(!r.stderr.contains(PASS));
}

#[test]
fn tls_none_is_refused_for_remote_hosts() {
    let w = World::new(
        "[[account]]\nname = \"t\"\nhost = \"smtp.example.com\"\ntls = \"none\"\nfrom = \"a@b.c\"\n",
    );
    let r = w.sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.stderr.contains("loopback"), "{}", r.stderr);
}

#[test]
fn check_walks_every_step_and_sends_a_test() {
    let s = setup(Mode::StartTls, "server", "", "");
    let cfg = s.world.config().display().to_string();
    let r = crate::util::run_raw(
        "mailhop",
        &[
            "check".into(),
            "-C".into(),
            cfg.clone(),
            "--send-test".into(),
            "b@example.net".into(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    for want in [
        "configuration: ",
        "account test: 127.0.0.1 port",
        "DNS: 127.0.0.1 resolves to 127.0.0.1",
        "greeting: 220",
        "EHLO: ",
        "certificate verified against tls_ca_file",
        "server certificate 0: sha256:",
        "login: accepted as shop@example.com",
        "test message: accepted for b@example.net",
    ] {
        assert!(r.stdout.contains(want), "{want:?} missing:\n{}", r.stdout);
    }
    assert!(!r.stdout.contains(PASS) && !r.stderr.contains(PASS));
    let got = s.server.wait_messages(1);
    assert_eq!(got[0].rcpt_tos, vec!["b@example.net"]);
    // The printed fingerprint is what tls_fingerprint takes.
    assert!(
        r.stdout.contains(&s.pki.sha256_fingerprint("server.pem")),
        "{}",
        r.stdout
    );

    // --offline does no network, but still checks the credential source.
    std::fs::write(s.world.path("password"), "x\n").ok();
    let r = crate::util::run_raw(
        "mailhop",
        &["check".into(), "-C".into(), cfg, "--offline".into()],
        b"",
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("credentials: available") && r.stdout.contains("offline"),
        "{}",
        r.stdout
    );
}

#[test]
fn check_reports_a_refused_login() {
    let s = setup(Mode::StartTls, "server", "", "");
    let pw = s.world.path("wrong-password");
    std::fs::write(&pw, "not-it\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = std::fs::read_to_string(s.world.config()).unwrap();
    let cfg: String = cfg
        .lines()
        .map(|l| {
            if l.starts_with("password_file") {
                format!("password_file = \"{}\"\n", pw.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    s.world.write_config(&cfg);
    let r = crate::util::run_raw(
        "mailhop",
        &[
            "check".into(),
            "-C".into(),
            s.world.config().display().to_string(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 77, "{r:?}");
    assert!(
        r.stdout.contains("login: FAILED") && r.stdout.contains("535"),
        "{}",
        r.stdout
    );
}

#[test]
fn client_certificate_is_presented_when_configured() {
    let pre = World::new("");
    let pki = pki_in(&pre);
    let opts = SmtpdOptions {
        client_ca: Some(pki.path("ca.pem")),
        ..SmtpdOptions::tls(
            Mode::Implicit,
            &pki.path("server.pem"),
            &pki.path("server.key"),
        )
    };
    let server = Smtpd::start(&opts, &pre.path("spool"));
    let account = |extra: &str| {
        World::new(&format!(
            "[[account]]\nname = \"t\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"implicit\"\n\
             from = \"{USER}\"\ntls_ca_file = \"{}\"\n{extra}[queue]\nmode = \"never\"\n",
            server.port,
            pki.path("ca.pem").display()
        ))
    };
    let without = account("");
    let r = without.sendmail(&["-oi", "b@example.net"], MSG);
    assert_ne!(r.code, 0, "the server demands a client certificate: {r:?}");
    assert!(r.stderr.contains("tls_cert_file"), "{}", r.stderr);
    let with = account(&format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        pki.path("client.pem").display(),
        pki.path("client.key").display()
    ));
    let r = with.sendmail(&["-oi", "b@example.net"], MSG);
    assert_eq!(r.code, 0, "{r:?}");
    server.wait_messages(1);
}
