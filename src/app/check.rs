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
use super::stamp::*;

/// `mailhop check`: validates the configuration, then walks each account's
/// smarthost step by step (DNS, TCP, greeting and EHLO, TLS and the
/// certificate, login, optionally a test message), saying in words what
/// happened. The exit status is the worst step's.
pub(super) fn check(env: &Env, c: &cli::CheckArgs) -> Result<Exit, Failure> {
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

/// Checks one account; returns its status.
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
    // The secret source, without revealing the secret.
    if let Some(o) = &a.oauth {
        let st = crate::oauth::status(o);
        let expiry = match st.access_expires {
            Some(t) => format!("cached access token valid until {}", arrival_text(t)),
            None => "no cached access token".to_string(),
        };
        let refresh = match st.last_refresh {
            Some(t) => format!("last refreshed {}", arrival_text(t)),
            None => "never refreshed".to_string(),
        };
        let _ = writeln!(
            out,
            "  oauth: refresh token {}; {expiry}; {refresh}; scopes: {}",
            if st.has_refresh_token {
                "present"
            } else {
                "absent"
            },
            if st.scopes.is_empty() {
                "-".to_string()
            } else {
                st.scopes.join(" ")
            }
        );
        if let Some(problem) = &st.problem {
            let _ = writeln!(out, "  oauth: FAILED: {problem}");
            return Exit::Config;
        }
    }
    // OAuth tokens are checked at login below, not here: obtaining one may
    // mean a round trip to the token endpoint, and --offline means none.
    let needs_secret =
        s.username.is_some() && s.auth != transport::AuthMode::None && a.oauth.is_none();
    if needs_secret {
        match obtain_secret(env, a) {
            Ok(_) => {
                let _ = writeln!(out, "  credentials: available");
            }
            Err(e) => {
                let _ = writeln!(out, "  credentials: FAILED: {e}");
                return Exit::Config;
            }
        }
    }
    if c.offline {
        let _ = writeln!(out, "  (offline: no network checks)");
        return Exit::Ok;
    }
    match std::net::ToSocketAddrs::to_socket_addrs(&(s.host.trim_matches(['[', ']']), s.port)) {
        Ok(addrs) => {
            let list: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            let _ = writeln!(out, "  DNS: {} resolves to {}", s.host, list.join(", "));
        }
        Err(e) => {
            let _ = writeln!(out, "  DNS: FAILED: cannot resolve {}: {e}", s.host);
            return Exit::TempFail;
        }
    }
    let transcript: transport::Transcript = if env.verbose > 0 {
        Some(Box::new(io::stderr()))
    } else {
        None
    };
    let mut session = match transport::Session::connect(&s, transcript) {
        Ok(session) => session,
        Err(e) => {
            let _ = writeln!(out, "  connection: FAILED during {}: {}", e.stage, e.detail);
            return exit_for(&e);
        }
    };
    let info = session.info().clone();
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
    match (&info.tls_version, &info.tls_cipher) {
        (Some(v), Some(cs)) => {
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
        _ => {
            let _ = writeln!(out, "  TLS: none (allowed only to loopback)");
        }
    }
    let mut secret = || obtain_secret_forced(env, a, false);
    if let Err(e) = session.authenticate(&mut secret) {
        let _ = writeln!(out, "  login: FAILED: {}", e.detail);
        return exit_for(&e);
    }
    match &session.info().authenticated_as {
        Some(u) => {
            let _ = writeln!(out, "  login: accepted as {u}");
        }
        None => {
            let _ = writeln!(out, "  login: not configured (no user)");
        }
    }
    if let Some(to) = &c.send_test {
        let msgid = message_id(env.now, &env.hostname);
        let text = format!(
            "From: mailhop <{from}>\r\nTo: <{to}>\r\nSubject: mailhop test from {host}\r\n\
             Date: {date}\r\nMessage-ID: {msgid}\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n\
             This is a test message sent by `mailhop check` on {host}\r\n\
             through account {name} ({smarthost}).\r\n",
            from = a.from,
            host = env.hostname,
            date = rfc5322_date(env.now),
            name = a.name,
            smarthost = s.host,
        );
        let rcpts = vec![to.clone()];
        let dsn = transport::Dsn::default();
        let envelope = transport::Envelope {
            sender: &a.from,
            recipients: &rcpts,
            size: text.len() as u64,
            eight_bit: false,
            dsn: &dsn,
        };
        let mut body = text.as_bytes();
        match session.send(&envelope, &mut body) {
            Ok(o) => {
                let reply = o.reply.map(|r| r.one_line()).unwrap_or_default();
                let _ = writeln!(out, "  test message: accepted for {to}: {reply}");
            }
            Err(e) => {
                let _ = writeln!(out, "  test message: FAILED: {}", e.detail);
                return exit_for(&e);
            }
        }
    }
    session.quit();
    Exit::Ok
}
