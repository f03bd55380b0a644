//! Parsing one SMTP command line (RFC 5321 4.1, with the parameters of the
//! extensions we offer: SIZE, BODY, SMTPUTF8, DSN's RET, ENVID, NOTIFY and
//! ORCPT). Strings become enums here; nothing later looks at raw text.

use super::reply::Reply;

/// The longest path (RFC 5321 4.5.3.1.3: 256 octets).
pub const MAX_PATH: usize = 256;
/// The longest ENVID or ORCPT value (RFC 3461: 100 octets, xtext-encoded
/// up to three times that).
const MAX_DSN_VALUE: usize = 500;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail(MailFrom),
    Rcpt(RcptTo),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    /// `AUTH mechanism [initial-response]`.
    Auth {
        mechanism: Mechanism,
        initial: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// `MAIL FROM:<path> params`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailFrom {
    /// Empty for the null sender `<>`.
    pub address: String,
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// Decoded from xtext.
    pub envid: Option<String>,
}

/// `RCPT TO:<path> params`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptTo {
    pub address: String,
    /// `never`, or a comma list of `success`, `failure`, `delay`, lowercase.
    pub notify: Option<String>,
    /// `addr-type;address`, decoded from xtext.
    pub orcpt: Option<String>,
}

fn syntax(text: &str) -> Reply {
    Reply::new(501, "5.5.4", text)
}

fn bad_param(text: impl Into<String>) -> Reply {
    Reply::new(555, "5.5.4", text)
}

/// Parses one command line (without its CRLF).
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(Reply::new(500, "5.5.2", "Syntax error: not UTF-8"));
    };
    if line.contains(|c: char| c.is_control() && c != '\t') {
        return Err(Reply::new(500, "5.5.2", "Syntax error: control characters"));
    }
    let (verb, rest) = match line.split_once(' ') {
        Some((v, r)) => (v, r.trim()),
        None => (line.trim_end(), ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => domain_arg(rest).map(Command::Ehlo),
        "HELO" => domain_arg(rest).map(Command::Helo),
        "MAIL" => mail_from(rest).map(Command::Mail),
        "RCPT" => rcpt_to(rest).map(Command::Rcpt),
        "DATA" => no_arg(rest, Command::Data),
        "RSET" => no_arg(rest, Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_arg(rest, Command::Quit),
        "VRFY" if !rest.is_empty() => Ok(Command::Vrfy),
        "VRFY" => Err(syntax("Syntax: VRFY address")),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_arg(rest, Command::StartTls),
        "AUTH" => auth(rest),
        _ => Err(Reply::new(500, "5.5.2", "Error: command not recognized")),
    }
}

fn no_arg(rest: &str, c: Command) -> Result<Command, Reply> {
    if rest.is_empty() {
        Ok(c)
    } else {
        Err(syntax("Syntax error: no parameters allowed"))
    }
}

fn domain_arg(rest: &str) -> Result<String, Reply> {
    let name = rest.split_whitespace().next().unwrap_or("");
    if name.is_empty() || name.len() > 255 {
        return Err(syntax("Syntax: EHLO hostname"));
    }
    Ok(name.to_string())
}

fn auth(rest: &str) -> Result<Command, Reply> {
    let mut words = rest.split_whitespace();
    let mechanism = match words.next().map(str::to_ascii_uppercase).as_deref() {
        Some("PLAIN") => Mechanism::Plain,
        Some("LOGIN") => Mechanism::Login,
        Some(_) => {
            return Err(Reply::new(504, "5.5.4", "Unrecognized authentication type"));
        }
        None => return Err(syntax("Syntax: AUTH mechanism")),
    };
    let initial = words.next().map(str::to_string);
    if words.next().is_some() {
        return Err(syntax("Syntax: AUTH mechanism [initial-response]"));
    }
    Ok(Command::Auth { mechanism, initial })
}

/// Splits `FROM:<path> params` after the keyword: the path and the rest.
/// A space after the colon is tolerated (RFC 5321 forbids it; many
/// clients send it).
fn keyword_path<'a>(rest: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let after = rest.get(keyword.len()..)?.trim_start();
    if let Some(inner) = after.strip_prefix('<') {
        let end = path_end(inner)?;
        let path = inner.get(..end)?;
        let params = inner.get(end + 1..)?;
        // Parameters must be separated from the path by a space.
        if !params.is_empty() && !params.starts_with(' ') {
            return None;
        }
        return Some((path, params.trim()));
    }
    // No brackets: lenient, up to the first space.
    let (path, params) = after.split_once(' ').unwrap_or((after, ""));
    Some((path, params.trim()))
}

/// Where the `>` closing a path is, outside a quoted string.
fn path_end(s: &str) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// A path's mailbox: a source route (`@a,@b:`) dropped, bounded, no
/// spaces outside quotes.
fn mailbox(path: &str) -> Result<String, Reply> {
    let path = match path.strip_prefix('@') {
        Some(routed) => routed.split_once(':').map_or("", |(_, m)| m),
        None => path,
    };
    if path.len() > MAX_PATH {
        return Err(Reply::new(501, "5.1.3", "Path too long"));
    }
    if path.contains(' ') && !path.starts_with('"') {
        return Err(Reply::new(501, "5.1.3", "Bad address syntax"));
    }
    Ok(path.to_string())
}

fn mail_from(rest: &str) -> Result<MailFrom, Reply> {
    let (path, params) =
        keyword_path(rest, "FROM:").ok_or_else(|| syntax("Syntax: MAIL FROM:<address>"))?;
    let mut m = MailFrom {
        address: mailbox(path)?,
        ..MailFrom::default()
    };
    let mut seen = Vec::new();
    for p in params.split_whitespace() {
        let (key, value) = p.split_once('=').unwrap_or((p, ""));
        once(&mut seen, key)?;
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", v) => {
                m.size = Some(v.parse().map_err(|_| bad_param("Bad SIZE parameter"))?);
            }
            ("BODY", v) if v.eq_ignore_ascii_case("7BIT") => m.body = Some(Body::SevenBit),
            ("BODY", v) if v.eq_ignore_ascii_case("8BITMIME") => {
                m.body = Some(Body::EightBitMime);
            }
            ("SMTPUTF8", "") => m.smtputf8 = true,
            ("RET", v) if v.eq_ignore_ascii_case("FULL") => m.ret = Some(Ret::Full),
            ("RET", v) if v.eq_ignore_ascii_case("HDRS") => m.ret = Some(Ret::Hdrs),
            ("ENVID", v) => m.envid = Some(xtext_decode(v)?),
            // RFC 4954 5: a client may pass on who authenticated; we do not
            // relay it.
            ("AUTH", _) => {}
            _ => return Err(bad_param(format!("Unsupported parameter {}", key_of(p)))),
        }
    }
    if !m.smtputf8 && !m.address.is_ascii() {
        return Err(Reply::new(
            553,
            "5.6.7",
            "Non-ASCII address requires SMTPUTF8",
        ));
    }
    Ok(m)
}

fn rcpt_to(rest: &str) -> Result<RcptTo, Reply> {
    let (path, params) =
        keyword_path(rest, "TO:").ok_or_else(|| syntax("Syntax: RCPT TO:<address>"))?;
    let mut r = RcptTo {
        address: mailbox(path)?,
        ..RcptTo::default()
    };
    if r.address.is_empty() {
        return Err(Reply::new(501, "5.1.3", "Empty recipient address"));
    }
    let mut seen = Vec::new();
    for p in params.split_whitespace() {
        let (key, value) = p.split_once('=').unwrap_or((p, ""));
        once(&mut seen, key)?;
        match key.to_ascii_uppercase().as_str() {
            "NOTIFY" => r.notify = Some(notify(value)?),
            "ORCPT" => r.orcpt = Some(orcpt(value)?),
            _ => return Err(bad_param(format!("Unsupported parameter {}", key_of(p)))),
        }
    }
    Ok(r)
}

/// A parameter may be given once per command (RFC 3461 §4, RFC 5321
/// §4.1.2 in practice): a second one is refused, not taken over the first.
fn once(seen: &mut Vec<String>, key: &str) -> Result<(), Reply> {
    let key = key.to_ascii_uppercase();
    if seen.contains(&key) {
        return Err(bad_param(format!("Duplicate parameter {}", key_of(&key))));
    }
    seen.push(key);
    Ok(())
}

/// A parameter's keyword for an error message: bounded, so a 1 MB
/// parameter does not become a 1 MB reply.
fn key_of(p: &str) -> String {
    p.split('=').next().unwrap_or("").chars().take(20).collect()
}

fn notify(value: &str) -> Result<String, Reply> {
    let items: Vec<String> = value.split(',').map(str::to_ascii_lowercase).collect();
    let ok = match items.as_slice() {
        [only] if only == "never" => true,
        _ => items.iter().enumerate().all(|(n, i)| {
            matches!(i.as_str(), "success" | "failure" | "delay") && !items[..n].contains(i)
        }),
    };
    if ok {
        Ok(items.join(","))
    } else {
        Err(bad_param("Bad NOTIFY parameter"))
    }
}

/// `addr-type ";" xtext` (RFC 3461 §4.2): the type an atom, the whole
/// value at most 500 characters.
fn orcpt(value: &str) -> Result<String, Reply> {
    let bad = || bad_param("Bad ORCPT parameter");
    let (kind, addr) = value.split_once(';').ok_or_else(bad)?;
    if value.len() > MAX_DSN_VALUE {
        return Err(bad());
    }
    let decoded = format!("{kind};{}", xtext_decode(addr)?);
    crate::message::dsn::orcpt(&decoded).ok_or_else(bad)?;
    Ok(decoded)
}

/// RFC 3461 4: `+XX` escapes; the result is printable ASCII.
pub fn xtext_decode(s: &str) -> Result<String, Reply> {
    if s.len() > MAX_DSN_VALUE {
        return Err(bad_param("DSN parameter too long"));
    }
    let bad = || bad_param("Bad xtext in a DSN parameter");
    let mut out = String::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        let c = if b == b'+' {
            let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
            let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
            u8::from_str_radix(hex, 16).map_err(|_| bad())?
        } else {
            b
        };
        if !(b'!'..=b'~').contains(&c) && c != b' ' {
            return Err(bad());
        }
        out.push(char::from(c));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse(line.as_bytes()).unwrap()
    }

    fn code(line: &[u8]) -> u16 {
        parse(line).unwrap_err().code
    }

    #[test]
    fn verbs_any_case() {
        assert_eq!(
            ok("ehlo client.example"),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(ok("HELO x"), Command::Helo("x".into()));
        assert_eq!(ok("data"), Command::Data);
        assert_eq!(ok("NOOP anything"), Command::Noop);
        assert_eq!(ok("QUIT"), Command::Quit);
        assert_eq!(ok("VRFY root"), Command::Vrfy);
        assert_eq!(ok("STARTTLS"), Command::StartTls);
        assert_eq!(ok("RSET"), Command::Rset);
    }

    #[test]
    fn errors() {
        assert_eq!(code(b"EHLO"), 501);
        assert_eq!(code(b"BOGUS"), 500);
        assert_eq!(code(b""), 500);
        assert_eq!(code(b"DATA now"), 501);
        assert_eq!(code(b"MAIL FROM"), 501);
        assert_eq!(code(b"MAIL TO:<a@b>"), 501);
        assert_eq!(code(b"RCPT TO:<>"), 501);
        assert_eq!(code(b"RCPT TO:<a@b"), 501);
        assert_eq!(code(b"MAIL FROM:<a\0b>"), 500);
        assert_eq!(code(b"\xff\xfe"), 500);
        assert_eq!(code(b"AUTH CRAM-MD5"), 504);
        assert_eq!(code(b"VRFY"), 501);
    }

    #[test]
    fn mail_params() {
        let Command::Mail(m) =
            ok("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=id+2Bx SMTPUTF8")
        else {
            panic!()
        };
        assert_eq!(m.address, "a@b.example");
        assert_eq!(m.size, Some(1000));
        assert_eq!(m.body, Some(Body::EightBitMime));
        assert_eq!(m.ret, Some(Ret::Hdrs));
        assert_eq!(m.envid.as_deref(), Some("id+x"));
        assert!(m.smtputf8);
        assert_eq!(code(b"MAIL FROM:<a@b> SIZE=x"), 555);
        assert_eq!(code(b"MAIL FROM:<a@b> BODY=BINARYMIME"), 555);
        assert_eq!(code(b"MAIL FROM:<a@b> FOO=1"), 555);
        assert_eq!(code(b"MAIL FROM:<a@b> ENVID=+4"), 555);
        assert_eq!(code("MAIL FROM:<ü@b>".as_bytes()), 553);
    }

    #[test]
    fn null_sender_and_lenient_forms() {
        let Command::Mail(m) = ok("MAIL FROM:<>") else {
            panic!()
        };
        assert_eq!(m.address, "");
        let Command::Mail(m) = ok("mail from: <x@y>") else {
            panic!()
        };
        assert_eq!(m.address, "x@y");
        let Command::Mail(m) = ok("MAIL FROM:x@y") else {
            panic!()
        };
        assert_eq!(m.address, "x@y");
        let Command::Rcpt(r) = ok("RCPT TO:<@relay.example:u@x>") else {
            panic!()
        };
        assert_eq!(r.address, "u@x");
        let Command::Rcpt(r) = ok(r#"RCPT TO:<"a>b"@x>"#) else {
            panic!()
        };
        assert_eq!(r.address, r#""a>b"@x"#);
        assert_eq!(code(b"MAIL FROM:<a@b>SIZE=1"), 501);
    }

    #[test]
    fn rcpt_params() {
        let Command::Rcpt(r) = ok("RCPT TO:<u@x> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;u+40x") else {
            panic!()
        };
        assert_eq!(r.notify.as_deref(), Some("success,delay"));
        assert_eq!(r.orcpt.as_deref(), Some("rfc822;u@x"));
        assert_eq!(code(b"RCPT TO:<u@x> NOTIFY=NEVER,SUCCESS"), 555);
        assert_eq!(code(b"RCPT TO:<u@x> ORCPT=bad"), 555);
        // The type an atom, the whole value bounded (RFC 3461 §4.2).
        assert_eq!(code(b"RCPT TO:<u@x> ORCPT=rfc(822);u@x"), 555);
        let long = format!("RCPT TO:<u@x> ORCPT={};u@x", "a".repeat(3000));
        assert_eq!(code(long.as_bytes()), 555);
        // Each parameter once, each NOTIFY keyword once.
        assert_eq!(code(b"RCPT TO:<u@x> NOTIFY=NEVER notify=FAILURE"), 555);
        assert_eq!(code(b"RCPT TO:<u@x> NOTIFY=FAILURE,failure"), 555);
        assert_eq!(code(b"MAIL FROM:<u@x> RET=FULL RET=HDRS"), 555);
        let long = format!("RCPT TO:<{}@x>", "a".repeat(300));
        assert_eq!(code(long.as_bytes()), 501);
    }

    #[test]
    fn auth() {
        assert_eq!(
            ok("AUTH PLAIN AGEAYg=="),
            Command::Auth {
                mechanism: Mechanism::Plain,
                initial: Some("AGEAYg==".into())
            }
        );
        assert_eq!(
            ok("auth login"),
            Command::Auth {
                mechanism: Mechanism::Login,
                initial: None
            }
        );
    }

    #[test]
    fn never_panics_on_prefixes() {
        let samples = [
            "MAIL FROM:<a@b> SIZE=1 BODY=7BIT RET=FULL ENVID=x+41",
            "RCPT TO:<\"q\\\"x\"@y> NOTIFY=FAILURE ORCPT=rfc822;a+2B",
            "AUTH PLAIN abc",
        ];
        for s in samples {
            for i in 0..=s.len() {
                let _ = parse(s.as_bytes().get(..i).unwrap_or_default());
            }
        }
    }
}
