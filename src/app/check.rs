use std::io::{self, Write};

use crate::cli::{self};
use crate::config::{self};
use crate::exit::Exit;
use crate::transport;

use super::env::*;
use super::failure::*;
use super::lookup::*;
use super::queue_cmd::*;
use super::relay::*;

/// `mailhop check`: validates the configuration, then walks each account's
/// smarthost step by step (DNS, TCP, greeting and EHLO, TLS and the
/// certificate, login, optionally a test message), saying in words what
/// happened. The exit status is the worst step's.
pub(super) fn check(env: &Env, c: &cli::CheckArgs) -> Result<Exit, Failure> {
    if c.queue {
        return super::stats::check_queue(env, c);
    }
    let mut out = io::stdout().lock();
    let mut status = Exit::Ok;
    let _ = writeln!(out, "configuration: {} is valid", config_name(env));
    let _ = writeln!(
        out,
        "hostname: {} (qualifying domain {})",
        env.hostname, env.domain
    );
    match load_aliases(env) {
        Ok((a, warnings)) => {
            let _ = writeln!(out, "aliases: {} entries", a.len());
            for w in warnings {
                let _ = writeln!(out, "  warning: {w}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "aliases: FAILED: {}", e.message);
            status = Exit::Config;
        }
    }
    smtpd_lines(&env.config.smtpd, &mut out);
    let accounts: Vec<&config::Account> = match &c.account {
        Some(name) => vec![named_account(env, name)?],
        None => env.config.accounts.iter().collect(),
    };
    if accounts.is_empty() {
        let _ = writeln!(
            out,
            "accounts: none; remote mail cannot be sent, local mail is delivered by the [local] transport"
        );
    }
    for a in accounts {
        let step = check_account(env, a, c, &mut out);
        if step != Exit::Ok && (status == Exit::Ok || step == Exit::TempFail) {
            status = step;
        }
    }
    super::check_dns::warn(env, c, &mut out);
    Ok(status)
}

/// The SMTP listener's settings (`sendmail -bs`, `mailhop serve`), so an
/// administrator sees who may submit without reading the file.
fn smtpd_lines(s: &config::Smtpd, out: &mut dyn Write) {
    let allow = if s.allow.is_empty() {
        "loopback only".to_string()
    } else {
        let nets: Vec<String> = s.allow.iter().map(ToString::to_string).collect();
        format!("loopback and {}", nets.join(", "))
    };
    let tls = match &s.tls_cert_file {
        Some(cert) => format!("STARTTLS with {}", cert.display()),
        None => "no STARTTLS".to_string(),
    };
    let auth = match &s.password_file {
        Some(p) => format!("AUTH against {}", p.display()),
        None => "no AUTH".to_string(),
    };
    let _ = writeln!(
        out,
        "smtp server (-bs, serve): without AUTH from {allow}; {tls}; {auth}; \
         at most {} connections, {} recipients, {} bytes a message",
        s.max_connections, s.max_recipients, s.max_message_size
    );
}

/// Checks one account; returns its status. Each step is a function that
/// prints its lines and returns `Err` with the exit status when the
/// account cannot go further.
pub(super) fn check_account(
    env: &Env,
    a: &config::Account,
    c: &cli::CheckArgs,
    out: &mut dyn Write,
) -> Exit {
    let s = transport_settings(env, a);
    let mode = match s.tls {
        transport::TlsMode::StartTls => "STARTTLS",
        transport::TlsMode::Implicit => "implicit TLS",
        transport::TlsMode::None => "no TLS",
    };
    let _ = writeln!(
        out,
        "account {}: {} port {} ({mode}), sends as {}",
        a.name, s.host, s.port, a.from
    );
    let _ = writeln!(out, "  {}", a.failover_and_limits());
    let mut steps = || -> Result<Exit, Exit> {
        secret_source(env, a, &s, out)?;
        if c.offline {
            let _ = writeln!(out, "  (offline: no network checks)");
            return Ok(Exit::Ok);
        }
        resolve(&s, out)?;
        let mut session = connect(env, &s, out)?;
        login(env, a, &mut session, out)?;
        session.quit();
        Ok(match &c.send_test {
            Some(to) => send_test(env, a, to, out),
            None => Exit::Ok,
        })
    };
    steps().unwrap_or_else(|e| e)
}

/// The secret source, without revealing the secret. OAuth tokens are
/// checked at login, not here: obtaining one may mean a round trip to the
/// token endpoint, and --offline means none.
fn secret_source(
    env: &Env,
    a: &config::Account,
    s: &transport::Settings,
    out: &mut dyn Write,
) -> Result<(), Exit> {
    if let Some(o) = &a.oauth {
        return oauth_status(o, &env.ids(), out);
    }
    if s.username.is_none() || s.auth == transport::AuthMode::None {
        return Ok(());
    }
    match obtain_secret(env, a) {
        Ok(_) => {
            let _ = writeln!(out, "  credentials: available");
            Ok(())
        }
        Err(e) => {
            let _ = writeln!(out, "  credentials: FAILED: {e}");
            Err(Exit::Config)
        }
    }
}

fn oauth_status(
    o: &crate::oauth::Settings,
    ids: &crate::credentials::Ids,
    out: &mut dyn Write,
) -> Result<(), Exit> {
    let st = crate::oauth::status(o, ids);
    let expiry = match st.access_expires {
        Some(t) => format!("cached access token valid until {}", arrival_text(t)),
        None => "no cached access token".to_string(),
    };
    let refresh = match st.last_refresh {
        Some(t) => format!("last refreshed {}", arrival_text(t)),
        None => "never refreshed".to_string(),
    };
    let present = if st.has_refresh_token {
        "present"
    } else {
        "absent"
    };
    let scopes = if st.scopes.is_empty() {
        "-".to_string()
    } else {
        st.scopes.join(" ")
    };
    let _ = writeln!(
        out,
        "  oauth: refresh token {present}; {expiry}; {refresh}; scopes: {scopes}"
    );
    match &st.problem {
        Some(problem) => {
            let _ = writeln!(out, "  oauth: FAILED: {problem}");
            Err(Exit::Config)
        }
        None => Ok(()),
    }
}

fn resolve(s: &transport::Settings, out: &mut dyn Write) -> Result<(), Exit> {
    match std::net::ToSocketAddrs::to_socket_addrs(&(s.host.trim_matches(['[', ']']), s.port)) {
        Ok(addrs) => {
            let list: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            let _ = writeln!(out, "  DNS: {} resolves to {}", s.host, list.join(", "));
            Ok(())
        }
        Err(e) => {
            let _ = writeln!(out, "  DNS: FAILED: cannot resolve {}: {e}", s.host);
            Err(Exit::TempFail)
        }
    }
}

/// TCP, greeting, EHLO and TLS. The dialogue is kept, so that when the
/// connection fails (a certificate, say) the lines that did happen are
/// still shown.
fn connect(
    env: &Env,
    s: &transport::Settings,
    out: &mut dyn Write,
) -> Result<transport::Session, Exit> {
    let dialogue = Dialogue::default();
    let session = match transport::Session::connect(s, dialogue.transcript(env.verbose > 0)) {
        Ok(session) => session,
        Err(e) => {
            for line in dialogue.lines() {
                let _ = writeln!(out, "  {line}");
            }
            let _ = writeln!(out, "  connection: FAILED during {}: {}", e.stage, e.detail);
            return Err(exit_for(&e));
        }
    };
    let info = session.info();
    if let Some(peer) = info.peer {
        let _ = writeln!(out, "  TCP: connected to {peer}");
    }
    if let Some(g) = &info.greeting {
        let _ = writeln!(out, "  greeting: {g}");
    }
    let ext: Vec<String> = info
        .extensions
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k} {v}")
            }
        })
        .collect();
    let _ = writeln!(out, "  EHLO: {}", ext.join(", "));
    tls_lines(s, info, out);
    Ok(session)
}

fn tls_lines(s: &transport::Settings, info: &transport::Info, out: &mut dyn Write) {
    let (Some(v), Some(cs)) = (&info.tls_version, &info.tls_cipher) else {
        let _ = writeln!(out, "  TLS: none (allowed only to loopback)");
        return;
    };
    let trust = if s.fingerprint.is_some() {
        "the configured tls_fingerprint".to_string()
    } else if let Some(ca) = &s.ca_file {
        format!("tls_ca_file {}", ca.display())
    } else {
        "the system's trusted CAs".to_string()
    };
    let _ = writeln!(
        out,
        "  TLS: {v}, {cs}; certificate verified against {trust}"
    );
    for (i, der) in info.peer_certificates.iter().enumerate() {
        let fp = transport::format_fingerprint(&transport::ring_sha256(der));
        let role = if i == 0 { "server" } else { "chain" };
        let _ = writeln!(out, "    {role} certificate {i}: {fp}");
    }
}

fn login(
    env: &Env,
    a: &config::Account,
    session: &mut transport::Session,
    out: &mut dyn Write,
) -> Result<(), Exit> {
    let mut secret = || obtain_secret_forced(env, a, false);
    if let Err(e) = session.authenticate(&mut secret) {
        let _ = writeln!(out, "  login: FAILED: {}", e.detail);
        return Err(exit_for(&e));
    }
    match &session.info().authenticated_as {
        Some(u) => {
            let _ = writeln!(out, "  login: accepted as {u}");
        }
        None => {
            let _ = writeln!(out, "  login: not configured (no user)");
        }
    }
    Ok(())
}

/// `--send-test`: a test message through the very pipeline real mail
/// takes (rewriting, scrubbing, DKIM signing, the account's selection),
/// so that it proves DKIM and DMARC at the receiver. It is not queued and
/// not kept as a dead letter: the answer is wanted now.
fn send_test(env: &Env, a: &config::Account, to: &str, out: &mut dyn Write) -> Exit {
    let text = format!(
        "From: mailhop <{from}>\r\nTo: <{to}>\r\nSubject: mailhop test from {host}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         This is a test message sent by `mailhop check` on {host}\r\n\
         through account {name} ({smarthost}).\r\n",
        from = a.from,
        host = env.hostname,
        name = a.name,
        smarthost = a.smtp.host,
    );
    let args = cli::SendArgs {
        sender: Some(a.from.clone()),
        recipients: vec![to.to_string()],
        ignore_dots: true,
        ..cli::SendArgs::default()
    };
    let mut input = text.as_bytes();
    let mut source = super::send::Source {
        input: &mut input,
        keep_refused: false,
        may_queue: false,
        recipient_dsn: &[],
        start_runner: super::send::spawn_runner,
    };
    match super::send::submit(env, &args, &mut source) {
        Ok(_) => {
            let _ = writeln!(out, "  test message: accepted for {to}");
            Exit::Ok
        }
        Err(f) => {
            let _ = writeln!(out, "  test message: FAILED: {}", f.message);
            f.exit
        }
    }
}

/// The SMTP dialogue of a check, kept in memory (and shown on standard
/// error with -v as it happens). Credentials never reach it: the
/// transport writes `AUTH PLAIN ***`.
#[derive(Default, Clone)]
struct Dialogue(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

struct DialogueWriter {
    buffer: Dialogue,
    echo: bool,
}

impl Write for DialogueWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // At most 64 KiB kept: a check's dialogue before the login is a few
        // lines; a server that sends more is not worth remembering.
        let mut kept = self.buffer.0.borrow_mut();
        let room = (64 * 1024usize).saturating_sub(kept.len());
        kept.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
        if self.echo {
            let _ = io::stderr().write_all(bytes);
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Dialogue {
    fn transcript(&self, echo: bool) -> transport::Transcript {
        Some(Box::new(DialogueWriter {
            buffer: self.clone(),
            echo,
        }))
    }

    /// The dialogue's lines, control characters escaped.
    fn lines(&self) -> Vec<String> {
        let kept = self.0.borrow();
        String::from_utf8_lossy(&kept)
            .lines()
            .map(|l| crate::log::printable(l).into_owned())
            .collect()
    }
}
