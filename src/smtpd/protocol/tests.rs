use super::*;

/// A policy that refuses `nobody@…` and knows one login.
struct Mock {
    checked: Vec<String>,
}

impl Policy for Mock {
    fn check_recipient(&mut self, _sender: &str, rcpt: &str) -> Result<(), Reply> {
        self.checked.push(rcpt.to_string());
        if rcpt.starts_with("nobody@") {
            Err(Reply::new(550, "5.1.1", "unknown user"))
        } else {
            Ok(())
        }
    }
    fn check_login(&mut self, user: &str, password: &[u8]) -> bool {
        user == "alice" && password == b"secret"
    }
}

fn mock() -> Mock {
    Mock {
        checked: Vec::new(),
    }
}

fn server(access: Access) -> Server {
    Server::new(Settings {
        hostname: "mx.test".into(),
        max_recipients: 3,
        max_size: 1000,
        max_errors: 20,
        tls_available: true,
        auth_available: true,
        access,
    })
}

/// Sends a line and returns the step.
fn send(s: &mut Server, p: &mut Mock, line: &str) -> Step {
    s.line(Line::Text(line.as_bytes()), p)
}

fn code(step: &Step) -> u16 {
    match step {
        Step::Reply(r) | Step::Data(r) | Step::StartTls(r) | Step::Close(r) => r.code,
    }
}

fn c(s: &mut Server, p: &mut Mock, line: &str) -> u16 {
    code(&send(s, p, line))
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn a_whole_transaction() {
    let (mut s, mut p) = (server(Access::Trusted), mock());
    assert_eq!(code(&s.greeting()), 220);
    let ehlo = send(&mut s, &mut p, "EHLO client");
    let Step::Reply(r) = &ehlo else { panic!() };
    let wire = r.to_string();
    for kw in [
        "PIPELINING",
        "SIZE 1000",
        "8BITMIME",
        "SMTPUTF8",
        "DSN",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    ] {
        assert!(wire.contains(kw), "{kw} in {wire}");
    }
    // No AUTH before TLS.
    assert!(!wire.contains("AUTH"));
    assert_eq!(c(&mut s, &mut p, "MAIL FROM:<a@x> SIZE=10 RET=FULL"), 250);
    assert_eq!(c(&mut s, &mut p, "RCPT TO:<b@y> NOTIFY=FAILURE"), 250);
    assert_eq!(c(&mut s, &mut p, "RCPT TO:<nobody@y>"), 550);
    assert!(matches!(send(&mut s, &mut p, "DATA"), Step::Data(_)));
    let env = s.data_done().unwrap();
    assert_eq!(env.mail.address, "a@x");
    assert_eq!(env.mail.ret, Some(command::Ret::Full));
    assert_eq!(env.recipients.len(), 1);
    assert_eq!(env.recipients[0].notify.as_deref(), Some("failure"));
    // A second transaction in the same session.
    assert_eq!(c(&mut s, &mut p, "MAIL FROM:<>"), 250);
    assert_eq!(c(&mut s, &mut p, "RCPT TO:<c@y>"), 250);
    assert!(matches!(send(&mut s, &mut p, "DATA"), Step::Data(_)));
    assert_eq!(s.data_done().unwrap().mail.address, "");
    assert!(matches!(send(&mut s, &mut p, "QUIT"), Step::Close(r) if r.code == 221));
}

#[test]
fn sequence_errors() {
    let (mut s, mut p) = (server(Access::Trusted), mock());
    assert_eq!(c(&mut s, &mut p, "MAIL FROM:<a@x>"), 503);
    assert_eq!(c(&mut s, &mut p, "HELO c"), 250);
    assert_eq!(c(&mut s, &mut p, "RCPT TO:<b@y>"), 503);
    assert_eq!(c(&mut s, &mut p, "DATA"), 503);
    assert_eq!(c(&mut s, &mut p, "MAIL FROM:<a@x>"), 250);
    assert_eq!(c(&mut s, &mut p, "MAIL FROM:<a@x>"), 503);
}

#[test]
fn data_without_recipients_and_rset() {
    let (mut s, mut p) = (server(Access::Trusted), mock());
    c(&mut s, &mut p, "EHLO c");
    c(&mut s, &mut p, "MAIL FROM:<a@x>");
    assert_eq!(c(&mut s, &mut p, "RCPT TO:<nobody@x>"), 550);
    assert_eq!(c(&mut s, &mut p, "DATA"), 554);
    assert_eq!(c(&mut s, &mut p, "RSET"), 250);
    assert_eq!(c(&mut s, &mut p, "RCPT TO:<b@x>"), 503);
    assert!(s.data_done().is_none());
}

#[test]
fn recipient_limit_is_452() {
    let (mut s, mut p) = (server(Access::Trusted), mock());
    c(&mut s, &mut p, "EHLO c");
    c(&mut s, &mut p, "MAIL FROM:<a@x>");
    for i in 0..3 {
        assert_eq!(c(&mut s, &mut p, &format!("RCPT TO:<r{i}@x>")), 250);
    }
    for i in 0..100 {
        assert_eq!(c(&mut s, &mut p, &format!("RCPT TO:<more{i}@x>")), 452);
    }
    // The policy was not asked about the ones over the limit.
    assert_eq!(p.checked.len(), 3);
    assert!(matches!(send(&mut s, &mut p, "DATA"), Step::Data(_)));
    assert_eq!(s.data_done().unwrap().recipients.len(), 3);
}

#[test]
fn size_announced_and_enforced() {
    let (mut s, mut p) = (server(Access::Trusted), mock());
    c(&mut s, &mut p, "EHLO c");
    assert_eq!(c(&mut s, &mut p, "MAIL FROM:<a@x> SIZE=1001"), 552);
    assert_eq!(c(&mut s, &mut p, "MAIL FROM:<a@x> SIZE=1000"), 250);
}

#[test]
fn vrfy_noop_help_expn() {
    let (mut s, mut p) = (server(Access::Trusted), mock());
    assert_eq!(c(&mut s, &mut p, "VRFY root"), 252);
    assert_eq!(c(&mut s, &mut p, "NOOP"), 250);
    assert_eq!(c(&mut s, &mut p, "HELP"), 214);
    assert_eq!(c(&mut s, &mut p, "EXPN list"), 502);
}

#[test]
fn too_many_errors_hangs_up() {
    let (mut s, mut p) = (server(Access::Trusted), mock());
    for _ in 0..19 {
        assert_eq!(c(&mut s, &mut p, "\0garbage"), 500);
    }
    assert!(matches!(send(&mut s, &mut p, "BOGUS"), Step::Close(r) if r.code == 421));
}

#[test]
fn long_line() {
    let (mut s, mut p) = (server(Access::Trusted), mock());
    assert_eq!(code(&s.line(Line::TooLong, &mut p)), 500);
}

#[test]
fn denied_client_gets_554_at_greeting() {
    let s = server(Access::Denied);
    assert!(matches!(s.greeting(), Step::Close(r) if r.code == 554));
}

#[test]
fn untrusted_client_needs_auth_over_tls() {
    let (mut s, mut p) = (server(Access::NeedsAuth), mock());
    c(&mut s, &mut p, "EHLO c");
    assert_eq!(c(&mut s, &mut p, "MAIL FROM:<a@x>"), 530);
    assert_eq!(
        c(
            &mut s,
            &mut p,
            &format!("AUTH PLAIN {}", b64(b"\0alice\0secret"))
        ),
        538
    );
    assert!(matches!(
        send(&mut s, &mut p, "STARTTLS"),
        Step::StartTls(_)
    ));
    s.tls_started();
    // After TLS the client starts over.
    assert_eq!(c(&mut s, &mut p, "MAIL FROM:<a@x>"), 503);
    let Step::Reply(r) = send(&mut s, &mut p, "EHLO c") else {
        panic!()
    };
    assert!(r.to_string().contains("AUTH PLAIN LOGIN"));
    assert!(!r.to_string().contains("STARTTLS"));
    assert_eq!(c(&mut s, &mut p, "STARTTLS"), 503);
    assert_eq!(
        c(
            &mut s,
            &mut p,
            &format!("AUTH PLAIN {}", b64(b"\0alice\0wrong"))
        ),
        535
    );
    assert_eq!(
        c(
            &mut s,
            &mut p,
            &format!("AUTH PLAIN {}", b64(b"bob\0alice\0secret"))
        ),
        535
    );
    assert_eq!(
        c(
            &mut s,
            &mut p,
            &format!("AUTH PLAIN {}", b64(b"\0alice\0secret"))
        ),
        235
    );
    assert_eq!(s.user(), Some("alice"));
    assert_eq!(c(&mut s, &mut p, "AUTH PLAIN x"), 503);
    assert_eq!(c(&mut s, &mut p, "MAIL FROM:<a@x>"), 250);
}

fn tls_ready() -> (Server, Mock) {
    let (mut s, mut p) = (server(Access::NeedsAuth), mock());
    s.tls_started();
    c(&mut s, &mut p, "EHLO c");
    (s, p)
}

#[test]
fn auth_login_dialogue() {
    let (mut s, mut p) = tls_ready();
    assert!(
        matches!(send(&mut s, &mut p, "AUTH LOGIN"), Step::Reply(r) if r.code == 334 && r.text == "VXNlcm5hbWU6")
    );
    assert_eq!(c(&mut s, &mut p, &b64(b"alice")), 334);
    assert_eq!(c(&mut s, &mut p, &b64(b"secret")), 235);
}

#[test]
fn auth_plain_without_initial_response_and_cancel() {
    let (mut s, mut p) = tls_ready();
    assert_eq!(c(&mut s, &mut p, "AUTH PLAIN"), 334);
    assert_eq!(c(&mut s, &mut p, "*"), 501);
    assert_eq!(c(&mut s, &mut p, "AUTH PLAIN"), 334);
    assert_eq!(c(&mut s, &mut p, "!!notbase64"), 501);
    assert_eq!(c(&mut s, &mut p, "AUTH PLAIN"), 334);
    assert_eq!(c(&mut s, &mut p, &b64(b"\0alice\0secret")), 235);
}

#[test]
fn auth_not_offered_without_a_password_file() {
    let mut s = Server::new(Settings::default());
    let mut p = mock();
    c(&mut s, &mut p, "EHLO c");
    assert_eq!(c(&mut s, &mut p, "AUTH PLAIN AGEAYg=="), 502);
    assert_eq!(c(&mut s, &mut p, "STARTTLS"), 502);
}

/// Every command, in every order up to a small depth, from every access
/// level: no panic, and every reply is one well-formed line (or EHLO's).
#[test]
fn exhaustive_sequences_never_panic() {
    let commands: Vec<Line<'static>> = [
        "EHLO c",
        "HELO c",
        "MAIL FROM:<a@x>",
        "MAIL FROM:<>",
        "RCPT TO:<b@y>",
        "RCPT TO:<nobody@y>",
        "DATA",
        "RSET",
        "NOOP",
        "QUIT",
        "VRFY x",
        "STARTTLS",
        "AUTH PLAIN AGFsaWNlAHNlY3JldA==",
        "AUTH LOGIN",
        "YWxpY2U=",
        "*",
        "\u{0}",
    ]
    .iter()
    .map(|s| Line::Text(s.as_bytes()))
    .chain([Line::TooLong])
    .collect();
    let n = commands.len();
    for access in [Access::Trusted, Access::NeedsAuth, Access::Denied] {
        for i in 0..n.pow(3) {
            let (mut s, mut p) = (server(access), mock());
            let mut k = i;
            for _ in 0..3 {
                let step = s.line(commands[k % n], &mut p);
                k /= n;
                match step {
                    Step::Data(_) => {
                        s.data_done();
                    }
                    Step::StartTls(_) => s.tls_started(),
                    Step::Close(_) => break,
                    Step::Reply(r) => assert!((200..600).contains(&r.code)),
                }
            }
        }
    }
}
