//! Converting an ssmtp or msmtp configuration into a mailhop.toml.
//!
//! `mailhop import` reads the old files and hands their text here. This
//! module only turns text into text (no file access, no environment), so a
//! conversion can be shown to the administrator before anything is written,
//! and tested.
//!
//! The result is a complete, commented configuration that mailhop's parser
//! accepts. A value mailhop would refuse is written as a comment with the
//! reason instead, since a file that does not load helps nobody. A value
//! that had to be guessed is marked "check this".
//!
//! Passwords are never copied. ssmtp and msmtp keep them inside their
//! configuration files, which are often world-readable. mailhop reads them
//! from a protected password file instead. For each password the result
//! names that file and gives the shell commands that fill it straight from
//! the old file. That way the secret never passes through this program, the
//! terminal or the new configuration, and it cannot leak into the output,
//! the warnings or an error message.
//!
//! Where behaviour changes, `warnings` says so (it is also written at the top
//! of the file). Both peers could send mail in plain text, and ssmtp never
//! checks certificates. mailhop refuses both, so mail that "worked" before
//! may now fail, and the administrator should hear why from us first.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
// The same checks the configuration applies, so an imported file never
// fails to load for an address or domain that looked fine here.
use crate::config::{is_domain, is_plain_address};

/// A converted configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The complete, commented mailhop.toml.
    pub toml: String,
    /// Changes in behaviour and things to do, one sentence or two each. They
    /// are also written at the top of `toml`.
    pub warnings: Vec<String>,
    /// The password files that `toml` names. Each must be created (with
    /// `command_hint`) before the account can log in.
    pub password_files: Vec<PasswordFile>,
}

/// A password file to create from the old configuration. It never holds
/// the password itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordFile {
    /// The absolute path that `password_file` names in the output.
    pub path: String,
    /// The `[[account]]` it belongs to.
    pub account: String,
    /// Shell commands that create the file with safe ownership and mode and
    /// copy the password into it from the old configuration, without
    /// showing it on the terminal.
    pub command_hint: String,
}

/// Why a configuration cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The file, as the caller named it.
    pub file: String,
    /// The line (from 1), when the problem is on one line.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ImportError {
    fn at(file: &str, line: usize, message: impl Into<String>) -> Self {
        ImportError {
            file: file.to_string(),
            line: Some(line),
            message: message.into(),
        }
    }

    fn whole(file: &str, message: impl Into<String>) -> Self {
        ImportError {
            file: file.to_string(),
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ImportError {}

/// Where password files go for a system-wide configuration.
const SYSTEM_DIR: &str = "/etc/mailhop";

/// A `from` that parses but cannot be delivered from (`.invalid` never
/// resolves), for accounts whose sender address cannot be derived. The
/// warning and the comment beside it say to replace it.
const PLACEHOLDER_FROM: &str = "change-me@example.invalid";

// ---------------------------------------------------------------------------
// ssmtp

/// A value from a configuration file and the line it came from.
#[derive(Debug, Clone)]
struct Src<T> {
    value: T,
    line: usize,
}

fn src<T>(value: T, line: usize) -> Src<T> {
    Src { value, line }
}

/// An `AuthPass` line. The value itself is never kept, only what the
/// conversion needs to know about it.
#[derive(Debug, Clone, Copy)]
struct PassLine {
    line: usize,
    empty: bool,
    /// It holds `#`, `=` or blanks, which ssmtp versions cut differently.
    ambiguous: bool,
}

#[derive(Debug, Default)]
struct SsmtpConf {
    mailhub: Option<Src<String>>,
    /// Set by `mailhub=host:port` or `RemotePort`, whichever comes last.
    port: Option<Src<u16>>,
    use_tls: Option<Src<bool>>,
    use_starttls: Option<Src<bool>>,
    root: Option<Src<String>>,
    hostname: Option<Src<String>>,
    rewrite_domain: Option<Src<String>>,
    from_override: Option<Src<bool>>,
    tls_ca_file: Option<Src<String>>,
    use_cert: Option<Src<bool>>,
    tls_cert: Option<Src<String>>,
    tls_key: Option<Src<String>>,
    auth_user: Option<Src<String>>,
    auth_pass: Option<PassLine>,
    auth_method: Option<Src<String>>,
}

/// One line of ssmtp's `revaliases`: `local:from[:mailhub[:port]]`.
#[derive(Debug, Clone)]
struct RevLine {
    line: usize,
    user: String,
    from: String,
    hub: Option<(String, Option<u16>)>,
}

/// Converts ssmtp's `ssmtp.conf` (and, if given, its `revaliases` as
/// `(text, name)`). `conf_name` is the path the configuration was read from:
/// errors name it, and the password file commands read it.
pub fn from_ssmtp(
    conf: &str,
    conf_name: &str,
    revaliases: Option<(&str, &str)>,
) -> Result<Imported, ImportError> {
    let label = base_name(conf_name);
    let mut out = Out::new(match revaliases {
        Some((_, name)) => format!("{conf_name} and {name}"),
        None => conf_name.to_string(),
    });
    let c = parse_ssmtp(conf, conf_name, &label, &mut out)?;
    let (revs, rev_label) = match revaliases {
        Some((text, name)) => (parse_revaliases(text, name)?, base_name(name)),
        None => (Vec::new(), String::new()),
    };

    let Some(hub) = c.mailhub.clone() else {
        return Err(ImportError::whole(
            conf_name,
            "no mailhub= line, so there is no smarthost to convert (ssmtp would \
             have sent mail to a host literally called \"mailhub\")",
        ));
    };
    let host = hub.value.clone();
    let ssmtp_port = c.port.as_ref().map_or(25, |p| p.value);
    let name = out.unique_name(&account_name_for_host(&host));

    out.warn(
        "ssmtp never verified the server's certificate, so it kept sending to \
         servers whose certificate had expired, did not match the host name or \
         was not issued by a trusted authority (or to an impostor); mailhop \
         always verifies it. Run `mailhop check` to see whether the server \
         passes; it may explain why mail used to \"work\".",
    );

    let rewrite_domain = c
        .rewrite_domain
        .as_ref()
        .map(|d| {
            // ssmtp accepts `user@domain` here and uses the domain.
            let v = d.value.rsplit('@').next().unwrap_or_default();
            v.trim_end_matches('.').to_ascii_lowercase()
        })
        .filter(|d| is_domain(d));
    let keep = c.from_override.as_ref().is_some_and(|f| f.value);

    // The main account.
    let mut acc = Block::default();
    acc.comment(&format!(
        "{label}:{}: mailhub={host}{}",
        hub.line,
        c.port
            .as_ref()
            .map_or(String::new(), |p| if p.line == hub.line {
                format!(":{}", p.value)
            } else {
                format!(" (port {} from line {})", p.value, p.line)
            })
    ));
    acc.kv("name", toml_str(&name));
    acc.kv("host", toml_str(&host));
    let starttls = c.use_starttls.as_ref().is_some_and(|s| s.value);
    let tls_flag = c.use_tls.as_ref().is_some_and(|s| s.value);
    let line_of = |s: &Option<Src<bool>>| s.as_ref().map_or(0, |s| s.line);
    let mode = if starttls {
        acc.comment(&format!(
            "{label}:{}: UseSTARTTLS=YES",
            line_of(&c.use_starttls)
        ));
        Tls::Starttls
    } else if tls_flag {
        acc.comment(&format!(
            "{label}:{}: UseTLS=YES (TLS from the first byte)",
            line_of(&c.use_tls)
        ));
        Tls::Implicit
    } else if is_loopback(&host) {
        acc.comment(&format!(
            "{label}: neither UseTLS nor UseSTARTTLS, to a server on this machine, \
             which is the one place mailhop allows plain text"
        ));
        Tls::None
    } else {
        let m = if ssmtp_port == 465 {
            Tls::Implicit
        } else {
            Tls::Starttls
        };
        out.warn(&format!(
            "ssmtp sent mail{} to {host} port {ssmtp_port} in plain text (no UseTLS \
             or UseSTARTTLS); mailhop refuses plain text except to this machine, so \
             account \"{name}\" uses tls = \"{}\", which the server must support.",
            if c.auth_user.is_some() {
                " and the password"
            } else {
                ""
            },
            m.name()
        ));
        acc.comment(&format!(
            "check this: ssmtp used no TLS at all; mailhop requires it except to \
             this machine ({label})"
        ));
        m
    };
    acc.kv("tls", toml_str(mode.name()));
    match (&c.port, mode) {
        (Some(p), _) => acc.kv("port", p.value.to_string()),
        (None, Tls::Starttls) => {
            acc.comment(
                "ssmtp's default port; 587 (the submission port) is better if the \
                 server offers it",
            );
            acc.kv("port", "25".to_string());
        }
        (None, Tls::Implicit) => acc.comment(
            "check this: no port in mailhub, so ssmtp connected to 25; mailhop \
             uses 465, the port for TLS from the first byte",
        ),
        (None, Tls::None) => {}
    }

    // The sender address mailhop requires of every account.
    let user = c
        .auth_user
        .as_ref()
        .filter(|u| !u.value.is_empty())
        .cloned();
    let root_rev = revs
        .iter()
        .rev()
        .find(|r| r.user == "root" && is_plain_address(&r.from));
    let hostname_fqdn = c
        .hostname
        .as_ref()
        .map(|h| h.value.trim_end_matches('.').to_ascii_lowercase())
        .filter(|h| is_domain(h) && h.contains('.'));
    let (from, why) = if let Some(u) = user.as_ref().filter(|u| is_plain_address(&u.value)) {
        (
            u.value.clone(),
            format!(
                "AuthUser ({label}:{}), the mailbox you log in as, which smarthosts \
                 such as Office 365 and Gmail require as the sender",
                u.line
            ),
        )
    } else if let Some(r) = root_rev {
        (
            r.from.clone(),
            format!(
                "the address root sent as ({rev_label}:{}), since AuthUser is not an address",
                r.line
            ),
        )
    } else if let Some(d) = rewrite_domain.as_ref().or(hostname_fqdn.as_ref()) {
        (
            format!("root@{d}"),
            "what ssmtp made of mail from root, since AuthUser is not an address".to_string(),
        )
    } else {
        match parent_domain(&host) {
            Some(d) => (
                format!("postmaster@{d}"),
                "a guess from the mailhub's domain: ssmtp.conf gives no address".to_string(),
            ),
            None => {
                out.warn(&format!(
                    "account \"{name}\" has no sender address: replace {PLACEHOLDER_FROM} \
                     with the address mail should come from."
                ));
                (
                    PLACEHOLDER_FROM.to_string(),
                    "a placeholder: ssmtp.conf gives no address to use".to_string(),
                )
            }
        }
    };
    acc.comment(&format!(
        "check this: the address this account sends as; this is {why}."
    ));
    acc.kv("from", toml_str(&from));

    if let Some(u) = &user {
        acc.comment(&format!("{label}:{}: AuthUser", u.line));
        acc.kv("user", toml_str(&u.value));
        if let Some(m) = &c.auth_method {
            let v = m.value.to_ascii_lowercase();
            if v == "login" {
                acc.comment(&format!("{label}:{}: AuthMethod=LOGIN", m.line));
                acc.kv("auth", toml_str("login"));
            } else if v == "cram-md5" {
                acc.comment(&format!(
                    "{label}:{}: AuthMethod=cram-md5 is not supported by mailhop; \
                     PLAIN or LOGIN is used, which TLS protects",
                    m.line
                ));
            } else {
                out.note(
                    &label,
                    m.line,
                    "AuthMethod=… is not a method mailhop knows; it uses PLAIN or LOGIN",
                );
            }
        }
        match c.auth_pass {
            Some(p) if !p.empty => {
                let path = format!("{SYSTEM_DIR}/{name}.password");
                let hint = format!(
                    "mkdir -p {SYSTEM_DIR} && install -m 0640 -o root -g mailhop /dev/null {p} && \
                     sed -n 's/^[[:blank:]]*AuthPass[[:blank:]]*=[[:blank:]]*//I;T;s/\\r$//;s/[[:blank:]]*$//;p;q' {conf} > {p}",
                    p = sh_quote(&path),
                    conf = sh_quote(conf_name),
                );
                if p.ambiguous {
                    out.warn(&format!(
                        "The AuthPass on {label}:{} holds '#', '=' or blanks, which \
                         ssmtp versions cut differently; the command for {path} copies \
                         all of it. If logging in fails, check that the file holds the \
                         password the server expects.",
                        p.line
                    ));
                }
                let why = format!(
                    "{label}:{}: AuthPass, not copied here. Create the file \
                     (readable by root and group mailhop) with:",
                    p.line
                );
                out.password_file(&mut acc, &why, &name, path, hint);
            }
            Some(p) => {
                out.warn(&format!(
                    "AuthPass on {label}:{} is empty: set password_file or \
                     password_command for account \"{name}\".",
                    p.line
                ));
            }
            None => out.warn(&format!(
                "{label} has AuthUser but no AuthPass, so ssmtp sent an empty \
                 password: set password_file or password_command for account \
                 \"{name}\"."
            )),
        }
    } else if let Some(p) = c.auth_pass {
        out.note(
            &label,
            p.line,
            "AuthPass without AuthUser: ssmtp never logged in, so the password is not carried over",
        );
    }

    if mode != Tls::None {
        if let Some(ca) = &c.tls_ca_file {
            acc.comment(&format!(
                "{label}:{}: TLS_CA_File; only these authorities are trusted for this account",
                ca.line
            ));
            acc.kv("tls_ca_file", toml_str(&ca.value));
        }
        if c.use_cert.as_ref().is_some_and(|u| u.value) {
            let cert = c
                .tls_cert
                .as_ref()
                .map_or("/etc/ssl/certs/ssmtp.pem", |t| t.value.as_str());
            let key = c.tls_key.as_ref().map_or(cert, |t| t.value.as_str());
            acc.comment(&format!(
                "{label}: UseTLSCert=YES. ssmtp reads the client certificate and its \
                 key from one PEM file (TLSCert); mailhop reads each from the file named \
                 here, which may be that same file. Keep it unreadable to others."
            ));
            acc.kv("tls_cert_file", toml_str(cert));
            acc.kv("tls_key_file", toml_str(key));
        } else if let Some(t) = &c.tls_cert {
            out.note(
                &label,
                t.line,
                "TLSCert is ignored because UseTLSCert is not YES (as ssmtp did)",
            );
        }
    }
    out.accounts.push(acc);

    // Top-level settings.
    if let Some(h) = &c.hostname {
        let v = h.value.trim_end_matches('.').to_ascii_lowercase();
        let clash = rewrite_domain.as_deref() == Some(v.as_str())
            || domain_of(&from).is_some_and(|d| d.eq_ignore_ascii_case(&v));
        if is_domain(&v) && v.contains('.') && !clash {
            out.top.comment(&format!(
                "{label}:{}: Hostname. It names this host in EHLO and Message-ID, and \
                 mail for it is delivered locally.",
                h.line
            ));
            out.top.kv("hostname", toml_str(&v));
        } else {
            let why = if clash {
                "it is the mail domain, and mailhop would deliver mail for its own host \
                 name locally instead of sending it"
            } else {
                "it is not a fully qualified domain name"
            };
            out.top.comment(&format!(
                "{label}:{}: Hostname={} is not used: {why}. mailhop finds the host \
                 name itself (gethostname and /etc/hosts).",
                h.line, h.value
            ));
        }
    }

    // Sender rewriting.
    match &c.from_override {
        Some(f) if f.value => {
            out.rewrite.comment(&format!(
                "{label}:{}: FromLineOverride=YES: the From line and -f of the caller \
                 were kept, as \"keep\" does.",
                f.line
            ));
            if host.to_ascii_lowercase().ends_with("office365.com") {
                out.rewrite.comment(
                    "check this: Office 365 refuses mail whose From is not the mailbox \
                     (554 5.2.252 SendAsDenied); \"account\" sends everything as the \
                     account's from instead.",
                );
            }
        }
        other => {
            out.rewrite.comment(&format!(
                "{}ssmtp rewrote the From line to user@RewriteDomain (or to the user's \
                 revaliases address). \"account\" sends every message as the account's \
                 from or the revaliases address, which is what a smarthost such as \
                 Office 365 accepts; \"qualify\" would be closer to ssmtp.",
                other
                    .as_ref()
                    .map_or(String::from("FromLineOverride is not set: "), |f| {
                        format!("{label}:{}: FromLineOverride=NO: ", f.line)
                    })
            ));
        }
    }
    out.rewrite.kv(
        "from_policy",
        toml_str(if keep { "keep" } else { "account" }),
    );
    if let Some(d) = &c.rewrite_domain {
        match &rewrite_domain {
            Some(v) => {
                out.rewrite.comment(&format!(
                    "{label}:{}: RewriteDomain: bare names such as root become name@{v}",
                    d.line
                ));
                out.rewrite.kv("domain", toml_str(v));
            }
            None => out.rewrite.comment(&format!(
                "{label}:{}: RewriteDomain={} is not a domain name and is left out",
                d.line, d.value
            )),
        }
    }

    // revaliases: per-user sending addresses, possibly through other hubs.
    // ssmtp uses the last line for a user.
    let qualify_domain = rewrite_domain.clone().or(hostname_fqdn);
    let mut latest: Vec<&RevLine> = Vec::new();
    for (i, r) in revs.iter().enumerate() {
        let same = |o: &&RevLine| o.user.eq_ignore_ascii_case(&r.user);
        match revs.iter().skip(i + 1).find(same) {
            Some(later) => out.note(
                &rev_label,
                r.line,
                &format!(
                    "overridden by line {} for the same user (ssmtp used the last)",
                    later.line
                ),
            ),
            None => latest.push(r),
        }
    }
    let mut extras: Vec<Extra> = Vec::new();
    let mut keep_warned = false;
    for r in latest {
        let from = if is_plain_address(&r.from) {
            r.from.clone()
        } else if !r.from.contains('@')
            && let Some(d) = &qualify_domain
            && is_plain_address(&format!("{}@{d}", r.from))
        {
            format!("{}@{d}", r.from)
        } else {
            out.note(
                &rev_label,
                r.line,
                &format!(
                    "the address \"{}\" for {} is not a mail address and is left out",
                    r.from, r.user
                ),
            );
            continue;
        };
        if keep && !keep_warned {
            keep_warned = true;
            out.warn(
                "With from_policy = \"keep\" (FromLineOverride=YES) mailhop ignores \
                 [rewrite.revaliases]; ssmtp used them only for mail without a From \
                 line. The senders lists of extra accounts still route those users.",
            );
        }
        let account = match &r.hub {
            Some((h, p)) => {
                let p = p.unwrap_or(ssmtp_port);
                if h.eq_ignore_ascii_case(&host) && p == ssmtp_port {
                    None
                } else {
                    let key = (h.to_ascii_lowercase(), p);
                    let idx = match extras.iter().position(|e| e.key == key) {
                        Some(i) => i,
                        None => {
                            let n = out.unique_name(&account_name_for_host(h));
                            out.warn(&format!(
                                "Account \"{n}\" ({rev_label}:{}) has no credentials yet: \
                                 fill in its user and password_file.",
                                r.line
                            ));
                            let block = extra_ssmtp_account(&n, h, p, mode, &from, r, &rev_label);
                            extras.push(Extra {
                                key,
                                name: n,
                                block,
                                senders: Vec::new(),
                                from: from.clone(),
                            });
                            extras.len() - 1
                        }
                    };
                    extras.get_mut(idx).map(|e| {
                        e.senders.push(r.user.clone());
                        e.senders.push(from.clone());
                        e.name.clone()
                    })
                }
            }
            None => None,
        };
        let via = r.hub.as_ref().map_or(String::new(), |(h, p)| match p {
            Some(p) => format!(" via {h}:{p}"),
            None => format!(" via {h}"),
        });
        out.revaliases.comment(&format!(
            "{rev_label}:{}: {} sends as {}{via}",
            r.line, r.user, r.from
        ));
        let value = match account {
            Some(a) => format!(
                "{{ from = {}, account = {} }}",
                toml_str(&from),
                toml_str(&a)
            ),
            None => toml_str(&from),
        };
        out.revaliases.kv(&r.user, value);
    }
    for mut e in extras {
        if keep {
            e.block.comment(
                "under \"keep\" revaliases are ignored, so these patterns send the \
                 mail of these users and addresses through this account",
            );
            e.senders.dedup();
            e.block.kv("senders", toml_array(&e.senders));
        }
        e.block
            .raw_comment(&format!("user = {}", toml_str(&e.from)));
        e.block.raw_comment(&format!(
            "password_file = {}",
            toml_str(&format!("{SYSTEM_DIR}/{}.password", e.name))
        ));
        out.accounts.push(e.block);
    }

    if let Some(r) = c.root.as_ref().filter(|r| !r.value.is_empty()) {
        {
            out.aliases_map.comment(&format!(
                "{label}:{}: root=. ssmtp sent mail for root and every other system \
                 account (user ID below 1000) here; mailhop maps only the names listed \
                 in this table, so add others (www-data, postmaster, ...) as needed.",
                r.line
            ));
            out.aliases_map.kv("root", toml_str(&r.value));
        }
    }
    Ok(out.finish())
}

/// A hub that only `revaliases` names, becoming an extra `[[account]]`.
#[derive(Debug)]
struct Extra {
    key: (String, u16),
    name: String,
    block: Block,
    senders: Vec<String>,
    from: String,
}

/// An `[[account]]` for a hub that only `revaliases` names. ssmtp used the
/// global TLS flags and credentials for it too, which rarely suits a second
/// provider, so the port decides the TLS mode and credentials are left for
/// the administrator.
fn extra_ssmtp_account(
    name: &str,
    host: &str,
    port: u16,
    main_mode: Tls,
    from: &str,
    r: &RevLine,
    rev_label: &str,
) -> Block {
    let mode = match port {
        465 => Tls::Implicit,
        587 => Tls::Starttls,
        _ if is_loopback(host) => Tls::None,
        _ if main_mode == Tls::None => Tls::Starttls,
        _ => main_mode,
    };
    let mut b = Block::default();
    b.comment(&format!(
        "{rev_label}:{}: a second smarthost, {host}:{port}, used for {}. ssmtp sent \
         it the same AuthUser and AuthPass as the first; if it really accepted them, \
         copy user and password_file from above, otherwise fill in its own.",
        r.line, r.user
    ));
    b.kv("name", toml_str(name));
    b.kv("host", toml_str(host));
    b.kv("port", port.to_string());
    b.comment(&format!(
        "check this: chosen by the port; ssmtp used the same TLS setting as for the \
         first account ({})",
        main_mode.name()
    ));
    b.kv("tls", toml_str(mode.name()));
    b.kv("from", toml_str(from));
    b
}

fn parse_ssmtp(
    conf: &str,
    conf_name: &str,
    label: &str,
    out: &mut Out,
) -> Result<SsmtpConf, ImportError> {
    let mut c = SsmtpConf::default();
    for (i, line) in conf.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let Some((k, raw)) = t.split_once('=') else {
            out.note(
                label,
                n,
                "ignored: not a KEY=value line (ssmtp ignored it too)",
            );
            continue;
        };
        let key = k.trim();
        let lower = key.to_ascii_lowercase();
        if lower == "authpass" {
            // The secret: only its shape is looked at, and nothing of it is
            // kept or echoed.
            let v = raw.trim();
            if c.auth_pass.is_some() {
                out.note(label, n, "a second AuthPass=…; ssmtp uses the first");
            } else {
                c.auth_pass = Some(PassLine {
                    line: n,
                    empty: v.is_empty(),
                    ambiguous: v.contains(['#', '=', ' ', '\t']),
                });
            }
            continue;
        }
        // ssmtp cuts the line at '#' and the value at the first blank.
        let v = raw.split('#').next().unwrap_or_default().trim();
        let v = v.split_whitespace().next().unwrap_or_default().to_string();
        let yes = v.eq_ignore_ascii_case("yes");
        match lower.as_str() {
            "mailhub" => {
                let (h, p) = match v.split_once(':') {
                    Some((h, p)) => (h.to_string(), Some(p)),
                    None => (v.clone(), None),
                };
                if h.is_empty() {
                    return Err(ImportError::at(conf_name, n, "mailhub names no host"));
                }
                if let Some(p) = p {
                    let port = parse_port(p).ok_or_else(|| {
                        ImportError::at(conf_name, n, format!("mailhub port \"{p}\" is not a port number"))
                    })?;
                    c.port = Some(src(port, n));
                }
                c.mailhub = Some(src(h, n));
            }
            "remoteport" => {
                let port = parse_port(&v).ok_or_else(|| {
                    ImportError::at(conf_name, n, format!("RemotePort \"{v}\" is not a port number"))
                })?;
                c.port = Some(src(port, n));
            }
            "usetls" => {
                // ssmtp: UseTLS=NO also turns STARTTLS off.
                if !yes && c.use_starttls.is_some() {
                    c.use_starttls = Some(src(false, n));
                }
                c.use_tls = Some(src(yes, n));
            }
            "usestarttls" => c.use_starttls = Some(src(yes, n)),
            "root" => c.root = Some(src(v, n)),
            "hostname" => c.hostname = Some(src(v, n)),
            "rewritedomain" => c.rewrite_domain = Some(src(v, n)),
            "fromlineoverride" => c.from_override = Some(src(yes, n)),
            "tls_ca_file" => c.tls_ca_file = Some(src(v, n)),
            "usetlscert" => c.use_cert = Some(src(yes, n)),
            "tlscert" => c.tls_cert = Some(src(v, n)),
            "tlskey" => c.tls_key = Some(src(v, n)),
            "authuser" => {
                if c.auth_user.is_some() {
                    out.note(label, n, "a second AuthUser=…; ssmtp uses the first");
                } else {
                    c.auth_user = Some(src(v, n));
                }
            }
            "authmethod" => {
                if c.auth_method.is_none() {
                    c.auth_method = Some(src(v, n));
                }
            }
            "tls_ca_dir" => out.note(
                label,
                n,
                "TLS_CA_Dir=… has no mailhop equivalent: mailhop trusts the system's \
                 certificate store, or the one file of tls_ca_file",
            ),
            "addheader" => out.note(
                label,
                n,
                "AddHeader=… has no mailhop equivalent: mailhop does not add fixed header fields",
            ),
            "debug" => out.note(
                label,
                n,
                "Debug=… has no mailhop equivalent: run mailhop with -v for a transcript \
                 (passwords are hidden)",
            ),
            "useoldauth" => out.note(
                label,
                n,
                "UseOldAUTH=… has no mailhop equivalent: mailhop speaks AUTH LOGIN the standard way",
            ),
            _ => out.note(
                label,
                n,
                &format!("{key}=… has no mailhop equivalent: it is not an ssmtp setting mailhop knows"),
            ),
        }
    }
    Ok(c)
}

/// ssmtp's revaliases: `local:from[:mailhub[:port]]`, `#` comments.
fn parse_revaliases(text: &str, name: &str) -> Result<Vec<RevLine>, ImportError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.split('#').next().unwrap_or_default();
        let Some((user, rest)) = t.split_once(':') else {
            continue;
        };
        let user = user.trim();
        let mut fields = rest.split([':', ' ', '\t', '\r']).filter(|f| !f.is_empty());
        let Some(from) = fields.next() else {
            continue;
        };
        if user.is_empty() {
            continue;
        }
        let hub = match fields.next() {
            Some(h) => {
                let port = match fields.next() {
                    Some(p) => Some(parse_port(p).ok_or_else(|| {
                        ImportError::at(name, n, format!("port \"{p}\" is not a port number"))
                    })?),
                    None => None,
                };
                Some((h.to_string(), port))
            }
            None => None,
        };
        out.push(RevLine {
            line: n,
            user: user.to_string(),
            from: from.to_string(),
            hub,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// msmtp

/// One setting of an msmtp account, with the line it was set on (which may
/// be in `defaults` or an inherited account).
#[derive(Debug, Clone, PartialEq, Eq)]
struct MVal {
    value: String,
    line: usize,
}

#[derive(Debug, Clone, Default)]
struct MAccount {
    name: String,
    line: usize,
    parents: Vec<String>,
    settings: BTreeMap<String, MVal>,
    /// Keys set on the account's own lines or inherited from a parent
    /// (msmtp's mask): only these are passed on to children.
    explicit: BTreeSet<String>,
    /// Keys set on the account's own lines.
    own: BTreeSet<String>,
}

impl MAccount {
    fn get(&self, key: &str) -> Option<&MVal> {
        self.settings.get(key)
    }

    /// The value of an on/off command, `default` when unset.
    fn flag(&self, key: &str, default: bool) -> bool {
        self.get(key).map_or(default, |v| v.value != "off")
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.get(key)
            .map(|v| v.value.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Commands that take `on`, `off` or nothing (meaning on).
const MSMTP_ON_OFF: &[&str] = &[
    "tls",
    "tls_starttls",
    "tls_certcheck",
    "auto_from",
    "allow_from_override",
    "remove_bcc_headers",
    "undisclosed_recipients",
    "keepbcc",
    "tls_force_sslv3",
];

const MSMTP_AUTH: &[&str] = &[
    "on",
    "off",
    "plain",
    "login",
    "cram-md5",
    "digest-md5",
    "scram-sha-1",
    "scram-sha-256",
    "gssapi",
    "external",
    "ntlm",
    "xoauth2",
    "oauthbearer",
];

/// Converts an msmtprc. `conf_name` is the path it was read from: errors
/// name it, the password file commands read it, and a file in a home
/// directory (`~/.msmtprc`, `~/.config/msmtp/config`) is taken to be one
/// user's, whose password files belong in that user's
/// `~/.config/mailhop`.
pub fn from_msmtp(conf: &str, conf_name: &str) -> Result<Imported, ImportError> {
    let label = base_name(conf_name);
    let home = home_of(conf_name);
    let accounts = parse_msmtp(conf, conf_name)?;
    let mut out = Out::new(conf_name.to_string());

    if accounts.is_empty() {
        return Err(ImportError::whole(conf_name, "no account is defined"));
    }
    // msmtp's default is the account called "default"; `account default :
    // gmail` only names another one, which then keeps its own name.
    let by_name = |n: &str| accounts.iter().position(|a| a.name == n);
    let mut alias: Option<&MAccount> = None;
    let first = match by_name("default") {
        Some(d) => {
            let acc = accounts.get(d);
            let parent = match acc {
                Some(a) if a.own.is_empty() && a.parents.len() == 1 => {
                    a.parents.first().and_then(|p| by_name(p))
                }
                _ => None,
            };
            match (parent, acc) {
                (Some(p), Some(a)) if accounts.get(p).is_some_and(|pa| values_equal(pa, a)) => {
                    alias = Some(a);
                    p
                }
                _ => d,
            }
        }
        None => accounts
            .iter()
            .position(|a| a.get("host").is_some())
            .unwrap_or(0),
    };
    let Some(first_acc) = accounts.get(first) else {
        return Err(ImportError::whole(conf_name, "no account is defined"));
    };
    if first_acc.text("host").is_none() {
        return Err(ImportError::at(
            conf_name,
            first_acc.line,
            format!(
                "the default account \"{}\" has no host, so msmtp could not send through it either",
                first_acc.name
            ),
        ));
    }

    out.top.comment(&format!(
        "{label}: the default account is \"{}\" (line {}){}; it is the first \
         [[account]] below, which mailhop uses when no other matches.",
        first_acc.name,
        first_acc.line,
        alias.map_or(String::new(), |a| format!(
            ", named by \"account default\" on line {}",
            a.line
        ))
    ));

    let mut order = vec![first];
    for (i, a) in accounts.iter().enumerate() {
        if i == first || alias.is_some_and(|x| x.line == a.line) {
            continue;
        }
        if a.text("host").is_none() {
            out.note(
                &label,
                a.line,
                &format!(
                    "account \"{}\" has no host; it only passes settings on to others",
                    a.name
                ),
            );
            continue;
        }
        order.push(i);
    }

    let ctx = MsmtpCtx {
        label: label.clone(),
        conf_name: conf_name.to_string(),
        home,
    };
    for (pos, a) in order.iter().filter_map(|&i| accounts.get(i)).enumerate() {
        let name = out.unique_name(&sanitize_name(&a.name));
        let block = msmtp_account(a, &name, pos == 0, &ctx, &mut out);
        out.accounts.push(block);
    }
    msmtp_globals(&accounts, &order, &ctx, &mut out);
    Ok(out.finish())
}

struct MsmtpCtx {
    label: String,
    conf_name: String,
    home: Option<String>,
}

impl MsmtpCtx {
    /// msmtp expands `~` in file names; mailhop does not, so it is done
    /// here when the home directory is known from the file's path. `None`
    /// (with a warning) when it is not: the caller writes the setting as a
    /// comment, since mailhop would take the `~` literally.
    fn path(&self, p: &str, out: &mut Out, line: usize) -> Option<String> {
        let rest = if p == "~" {
            Some("")
        } else {
            p.strip_prefix("~/")
        };
        match (rest, &self.home) {
            (Some(r), Some(h)) => Some(if r.is_empty() {
                h.clone()
            } else {
                format!("{h}/{r}")
            }),
            (Some(_), None) => {
                out.warn(&format!(
                    "{}:{line}: mailhop does not expand ~ in \"{p}\", so the setting \
                     is left commented out: write it with the absolute path.",
                    self.label
                ));
                None
            }
            (None, _) => Some(p.to_string()),
        }
    }
}

/// Reads an msmtprc as msmtp does: `defaults`, `account NAME [: PARENT,
/// ...]`, one command and argument per line, `#` comments on lines of their
/// own, arguments optionally in double quotes. Accounts are resolved as they
/// are defined: a new one starts from the defaults so far, then takes what
/// its parents set.
fn parse_msmtp(conf: &str, conf_name: &str) -> Result<Vec<MAccount>, ImportError> {
    let mut defaults: BTreeMap<String, MVal> = BTreeMap::new();
    let mut accounts: Vec<MAccount> = Vec::new();
    // None: the defaults section; Some(i): accounts[i].
    let mut current: Option<Option<usize>> = None;
    for (i, line) in conf.lines().enumerate() {
        let n = i + 1;
        let Some((cmd, arg)) = msmtp_split(line) else {
            continue;
        };
        let err = |m: String| ImportError::at(conf_name, n, m);
        match cmd {
            "defaults" => {
                if !arg.is_empty() {
                    return Err(err("defaults takes no argument".into()));
                }
                current = Some(None);
                continue;
            }
            "account" => {
                let (name, parents) = match arg.split_once(':') {
                    Some((name, list)) => (
                        trim_arg(name),
                        list.split(',').map(trim_arg).collect::<Vec<_>>(),
                    ),
                    None => (arg.clone(), Vec::new()),
                };
                if name.is_empty() || parents.iter().any(String::is_empty) {
                    return Err(err("missing account name".into()));
                }
                if name.contains([':', ',']) {
                    return Err(err("an account name must not contain ':' or ','".into()));
                }
                if accounts.iter().any(|a| a.name == name) {
                    return Err(err(format!("account \"{name}\" is defined twice")));
                }
                let mut acc = MAccount {
                    name: name.clone(),
                    line: n,
                    parents: parents.clone(),
                    settings: defaults.clone(),
                    ..MAccount::default()
                };
                for p in &parents {
                    let Some(parent) = accounts.iter().find(|a| &a.name == p) else {
                        return Err(err(format!(
                            "account \"{p}\" is not (yet) defined; msmtp refuses this too"
                        )));
                    };
                    for k in &parent.explicit {
                        if let Some(v) = parent.settings.get(k) {
                            acc.settings.insert(k.clone(), v.clone());
                            acc.explicit.insert(k.clone());
                        }
                    }
                }
                accounts.push(acc);
                current = Some(Some(accounts.len() - 1));
                continue;
            }
            _ => {}
        }
        // msmtp 1.2 compatibility: settings before any account or defaults
        // line form an account called "default".
        let target = match current {
            Some(t) => t,
            None => {
                accounts.push(MAccount {
                    name: "default".into(),
                    line: n,
                    settings: defaults.clone(),
                    ..MAccount::default()
                });
                let t = Some(accounts.len() - 1);
                current = Some(t);
                t
            }
        };
        let (key, value) = normalize_msmtp(cmd, &arg).map_err(err)?;
        let v = MVal { value, line: n };
        match target {
            None => {
                defaults.insert(key, v);
            }
            Some(idx) => {
                if let Some(a) = accounts.get_mut(idx) {
                    a.settings.insert(key.clone(), v);
                    a.explicit.insert(key.clone());
                    a.own.insert(key);
                }
            }
        }
    }
    Ok(accounts)
}

/// Checks a command's argument as msmtp would, and maps the old spellings
/// onto the current commands.
fn normalize_msmtp(cmd: &str, arg: &str) -> Result<(String, String), String> {
    let invalid = || format!("invalid argument \"{arg}\" for {cmd}; msmtp refuses it too");
    let on_off = |a: &str| match a {
        "" | "on" => Ok("on".to_string()),
        "off" => Ok("off".to_string()),
        _ => Err(invalid()),
    };
    Ok(match cmd {
        c if MSMTP_ON_OFF.contains(&c) => (c.to_string(), on_off(arg)?),
        "connect_timeout" | "timeout" => {
            if arg != "off" && parse_u64(arg).is_none_or(|t| t == 0) {
                return Err(invalid());
            }
            ("timeout".into(), arg.to_string())
        }
        "port" => {
            if parse_port(arg).is_none() {
                return Err(invalid());
            }
            ("port".into(), arg.to_string())
        }
        "auth" => {
            let a = if arg.is_empty() {
                "on".to_string()
            } else {
                arg.to_ascii_lowercase()
            };
            if !MSMTP_AUTH.contains(&a.as_str()) {
                return Err(invalid());
            }
            ("auth".into(), a)
        }
        "protocol" => {
            if arg != "smtp" && arg != "lmtp" {
                return Err(invalid());
            }
            ("protocol".into(), arg.to_string())
        }
        "set_from_header" => match arg {
            "" | "on" => ("set_from_header".into(), "on".into()),
            "auto" | "off" => ("set_from_header".into(), arg.to_string()),
            _ => return Err(invalid()),
        },
        // The old spelling: on meant "add one if missing", which is auto.
        "add_missing_from_header" => {
            let v = on_off(arg)?;
            (
                "set_from_header".into(),
                if v == "on" { "auto".into() } else { v },
            )
        }
        "add_missing_date_header" => ("set_date_header".into(), on_off(arg)?),
        "syslog" => {
            let ok = matches!(arg, "" | "on" | "off" | "LOG_USER" | "LOG_MAIL")
                || (arg.len() == 10
                    && arg.starts_with("LOG_LOCAL")
                    && arg.ends_with(['0', '1', '2', '3', '4', '5', '6', '7']));
            if !ok {
                return Err(invalid());
            }
            (
                "syslog".into(),
                if arg.is_empty() {
                    "on".into()
                } else {
                    arg.to_string()
                },
            )
        }
        _ => (cmd.to_string(), arg.to_string()),
    })
}

/// Whether two accounts would behave the same: an `account default : x`
/// without settings of its own is then just a name for `x`.
fn values_equal(a: &MAccount, b: &MAccount) -> bool {
    a.settings.len() == b.settings.len()
        && a.settings
            .iter()
            .all(|(k, v)| b.settings.get(k).is_some_and(|w| w.value == v.value))
}

/// One msmtp account as an `[[account]]` table.
fn msmtp_account(a: &MAccount, name: &str, is_first: bool, ctx: &MsmtpCtx, out: &mut Out) -> Block {
    let label = ctx.label.clone();
    let mut b = Block::default();
    b.comment(&format!(
        "{label}:{}: account {}{}",
        a.line,
        a.name,
        if a.parents.is_empty() {
            String::new()
        } else {
            format!(" : {}", a.parents.join(", "))
        }
    ));
    if sanitize_name(&a.name) != a.name || name != a.name {
        b.comment(&format!(
            "renamed from \"{}\": mailhop account names are letters, digits, '-', '_' and '.', and unique",
            a.name
        ));
    }
    b.kv("name", toml_str(name));
    let raw_host = a.text("host").unwrap_or_default();
    let host = raw_host
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if host != raw_host {
        // msmtp has no trailing comments: it took the whole rest of the line
        // as the host name, so this account cannot have worked.
        out.warn(&format!(
            "{label}:{}: the host of account \"{name}\" has more than one word \
             (msmtp allows no comment after a value); only \"{host}\" is used.",
            a.get("host").map_or(0, |v| v.line)
        ));
    }
    b.kv("host", toml_str(&host));
    for key in ["socket", "proxy_host", "source_ip"] {
        if let Some(v) = a.get(key).filter(|v| !v.value.is_empty()) {
            out.warn(&format!(
                "{label}:{}: {key} is not supported by mailhop; account \"{name}\" \
                 connects to {host} directly.",
                v.line
            ));
        }
    }
    if let Some(v) = a.get("proxy_port") {
        out.note(
            &label,
            v.line,
            "proxy_port has no mailhop equivalent (no SOCKS proxy)",
        );
    }
    if let Some(v) = a.get("protocol").filter(|v| v.value == "lmtp") {
        out.warn(&format!(
            "{label}:{}: protocol lmtp is not supported: mailhop speaks SMTP to account \"{name}\".",
            v.line
        ));
    }

    // TLS and port. msmtp's defaults are no TLS and port 25 (465 for TLS
    // from the first byte), mailhop's STARTTLS on 587: write what msmtp did.
    let tls = a.flag("tls", false);
    let starttls = a.flag("tls_starttls", true);
    let explicit_port = a.text("port").and_then(parse_port);
    let port = explicit_port.unwrap_or(if tls && !starttls { 465 } else { 25 });
    let mode = match (tls, starttls) {
        (true, true) => Tls::Starttls,
        (true, false) => Tls::Implicit,
        (false, _) if is_loopback(&host) => {
            b.comment(
                "tls is off, to a server on this machine, the one place mailhop allows plain text",
            );
            Tls::None
        }
        (false, _) => {
            let m = if port == 465 {
                Tls::Implicit
            } else {
                Tls::Starttls
            };
            out.warn(&format!(
                "msmtp sent mail{} to {host} port {port} in plain text (tls is off); \
                 mailhop refuses plain text except to this machine, so account \
                 \"{name}\" uses tls = \"{}\", which the server must support.",
                if a.text("user").is_some() && a.get("auth").is_some_and(|v| v.value != "off") {
                    " and the password"
                } else {
                    ""
                },
                m.name()
            ));
            b.comment("check this: msmtp used no TLS; mailhop requires it except to this machine");
            m
        }
    };
    b.kv("tls", toml_str(mode.name()));
    if port != mode.default_port() || explicit_port.is_some() {
        if explicit_port.is_none() {
            b.comment(
                "msmtp's default port; 587 (the submission port) is better if the server offers it",
            );
        }
        b.kv("port", port.to_string());
    }
    if mode != Tls::None {
        msmtp_tls(a, name, &mut b, ctx, out);
    }

    // Sender address and the patterns that select the account.
    let (from, senders) = msmtp_from(a, name, &mut b, ctx, out);
    b.kv("from", toml_str(&from));
    if !is_first && !senders.is_empty() {
        b.comment(
            "msmtp chose this account when -f (or --from) matched its from; these \
             patterns do the same",
        );
        b.kv("senders", toml_array(&senders));
    }

    msmtp_auth(a, name, &host, &mut b, ctx, out);

    if let Some(t) = a.get("timeout").filter(|t| t.value != "off") {
        let secs = parse_u64(&t.value).unwrap_or(60).clamp(1, 86_400);
        b.comment(&format!("{label}:{}: timeout", t.line));
        b.kv("timeout", secs.to_string());
    }
    b
}

fn msmtp_tls(a: &MAccount, name: &str, b: &mut Block, ctx: &MsmtpCtx, out: &mut Out) {
    let label = ctx.label.clone();
    if let Some(src) = a.get("tls_fingerprint").filter(|v| !v.value.is_empty()) {
        match fingerprint_bytes(&src.value) {
            Some(bytes) if bytes.len() == 32 => {
                b.comment(&format!(
                    "{label}:{}: tls_fingerprint (SHA-256); the pin replaces checking by \
                     certificate authorities, as in msmtp",
                    src.line
                ));
                b.kv(
                    "tls_fingerprint",
                    toml_str(&format!("sha256:{}", bytes.join(":"))),
                );
            }
            other => {
                let kind = match other.map(|b| b.len()) {
                    Some(20) => "a SHA-1",
                    Some(16) => "an MD5",
                    _ => "an unreadable",
                };
                out.warn(&format!(
                    "{label}:{}: tls_fingerprint is {kind} digest, which mailhop does not \
                     accept; account \"{name}\" checks the certificate against the \
                     certificate authorities instead. To keep a pin, add its SHA-256 digest \
                     (see tls_fingerprint in mailhop.toml(5)).",
                    src.line
                ));
            }
        }
    }
    if let Some(t) = a.get("tls_trust_file") {
        match t.value.as_str() {
            "system" => {}
            "" => b.comment(&format!(
                "{label}:{}: tls_trust_file is empty (no authorities); mailhop uses the \
                 system store unless tls_fingerprint is set",
                t.line
            )),
            p => {
                b.comment(&format!(
                    "{label}:{}: tls_trust_file; only these authorities are trusted for this account",
                    t.line
                ));
                match ctx.path(p, out, t.line) {
                    Some(p) => b.kv("tls_ca_file", toml_str(&p)),
                    None => b.raw_comment(&format!("tls_ca_file = {}", toml_str(p))),
                }
            }
        }
    }
    if let Some(c) = a.get("tls_certcheck").filter(|c| c.value == "off") {
        out.warn(&format!(
            "{label}:{}: tls_certcheck off: msmtp accepted any certificate from {}; \
             mailhop always checks it. If the server's certificate is self-signed, pin \
             it with tls_fingerprint (its SHA-256 digest).",
            c.line,
            a.text("host").unwrap_or_default()
        ));
    }
    match (a.text("tls_cert_file"), a.text("tls_key_file")) {
        (Some(cert), Some(key)) => {
            let line = a.get("tls_cert_file").map_or(0, |v| v.line);
            b.comment(&format!("{label}:{line}: client certificate"));
            match (ctx.path(cert, out, line), ctx.path(key, out, line)) {
                (Some(c), Some(k)) => {
                    b.kv("tls_cert_file", toml_str(&c));
                    b.kv("tls_key_file", toml_str(&k));
                }
                _ => {
                    // They go together: both or neither.
                    b.raw_comment(&format!("tls_cert_file = {}", toml_str(cert)));
                    b.raw_comment(&format!("tls_key_file = {}", toml_str(key)));
                }
            }
        }
        (None, None) => {}
        _ => out.warn(&format!(
            "account \"{name}\" names only one of tls_cert_file and tls_key_file, \
             which msmtp refuses too; it is left out."
        )),
    }
    for (key, why) in [
        (
            "tls_priorities",
            "mailhop uses TLS 1.2 or 1.3 with rustls's safe defaults; see tls_min_version",
        ),
        (
            "tls_min_dh_prime_bits",
            "mailhop uses no finite-field Diffie-Hellman at all",
        ),
        ("tls_crl_file", "mailhop does not read revocation lists"),
        ("tls_force_sslv3", "SSL 3 is never used"),
    ] {
        if let Some(v) = a.get(key) {
            out.note(
                &label,
                v.line,
                &format!("{key} has no mailhop equivalent: {why}"),
            );
        }
    }
    if let Some(v) = a.get("tls_host_override").filter(|v| !v.value.is_empty()) {
        out.warn(&format!(
            "{label}:{}: tls_host_override is not supported: mailhop checks the \
             certificate against host; set host to the name the certificate is issued \
             for, or pin it with tls_fingerprint.",
            v.line
        ));
    }
}

/// The account's `from` and the `senders` patterns that select it.
fn msmtp_from(
    a: &MAccount,
    name: &str,
    b: &mut Block,
    ctx: &MsmtpCtx,
    out: &mut Out,
) -> (String, Vec<String>) {
    let label = ctx.label.clone();
    let user = a.text("user").filter(|u| is_plain_address(u));
    let fallback = |out: &mut Out, b: &mut Block, why: &str| -> String {
        match user {
            Some(u) => {
                b.comment(&format!(
                    "check this: {why}; this is the login name, which is an address"
                ));
                u.to_string()
            }
            None => {
                out.warn(&format!(
                    "Account \"{name}\" has no usable sender address ({why}): replace \
                     {PLACEHOLDER_FROM} with the address its mail should come from."
                ));
                b.comment(&format!("FILL IN: {why}"));
                PLACEHOLDER_FROM.to_string()
            }
        }
    };
    match a.get("from") {
        Some(f) if f.value.contains(['*', '?', '[']) => {
            let why = format!("from on line {} is the pattern {}", f.line, f.value);
            let senders = if f.value.contains(['?', '[']) {
                out.warn(&format!(
                    "{label}:{}: mailhop's senders patterns know only '*', not '?' or \
                     '[...]': account \"{name}\" gets no senders list from this from.",
                    f.line
                ));
                Vec::new()
            } else if f.value.contains(char::is_whitespace) {
                Vec::new()
            } else {
                vec![f.value.clone()]
            };
            (fallback(out, b, &why), senders)
        }
        Some(f) if is_plain_address(&f.value) && !f.value.contains('%') => {
            b.comment(&format!("{label}:{}: from", f.line));
            (f.value.clone(), vec![f.value.clone()])
        }
        Some(f) if f.value.contains('%') => {
            let why = format!(
                "from on line {} is {}, which msmtp filled in with the user (%U) or host \
                 name (%H, %C, %M); mailhop's \"keep\" policy sends as the user at \
                 [rewrite] domain",
                f.line, f.value
            );
            (fallback(out, b, &why), Vec::new())
        }
        Some(f) => {
            let why = format!("from on line {} is not a mail address", f.line);
            (fallback(out, b, &why), Vec::new())
        }
        None if a.flag("auto_from", false) => (
            fallback(
                out,
                b,
                "msmtp made the sender from the user name and maildomain (auto_from)",
            ),
            Vec::new(),
        ),
        None => (
            fallback(
                out,
                b,
                "msmtp had no from for this account and needed -f on every call",
            ),
            Vec::new(),
        ),
    }
}

fn msmtp_auth(a: &MAccount, name: &str, host: &str, b: &mut Block, ctx: &MsmtpCtx, out: &mut Out) {
    let label = ctx.label.clone();
    let user = a.text("user");
    let auth = a.get("auth");
    let method = auth.map_or("off", |v| v.value.as_str());
    let line = auth.map_or(0, |v| v.line);
    if let Some(u) = user {
        b.kv("user", toml_str(u));
    }
    let logs_in = match (method, user) {
        ("off", None) => false,
        ("off", Some(_)) => {
            b.comment(
                "msmtp logs in only with auth on, which this account does not set, so it \
                 never sent the user name and password; delete this line to log in",
            );
            b.kv("auth", toml_str("none"));
            false
        }
        (_, None) => {
            out.note(
                &label,
                line,
                "auth without user: mailhop logs in only with a user, so this account does not",
            );
            false
        }
        ("on", Some(_)) => true,
        (m @ ("plain" | "login" | "xoauth2"), Some(_)) => {
            b.comment(&format!("{label}:{line}: auth {m}"));
            b.kv("auth", toml_str(m));
            true
        }
        ("oauthbearer", Some(_)) => {
            out.warn(&format!(
                "{label}:{line}: OAUTHBEARER is not supported; account \"{name}\" uses \
                 XOAUTH2 with the same token, which Gmail and Microsoft 365 accept."
            ));
            b.comment(&format!(
                "{label}:{line}: auth oauthbearer; mailhop speaks XOAUTH2 instead"
            ));
            b.kv("auth", toml_str("xoauth2"));
            true
        }
        ("external", Some(_)) => {
            b.comment(&format!(
                "{label}:{line}: auth external (the client certificate is the login); \
                 mailhop has no AUTH EXTERNAL, so it sends only the certificate"
            ));
            b.kv("auth", toml_str("none"));
            false
        }
        ("gssapi", Some(_)) => {
            out.warn(&format!(
                "{label}:{line}: GSSAPI (Kerberos) is not supported; account \"{name}\" \
                 logs in with PLAIN or LOGIN, which needs a password."
            ));
            true
        }
        (m, Some(_)) => {
            b.comment(&format!(
                "{label}:{line}: auth {m} is not supported by mailhop; it uses PLAIN or \
                 LOGIN, which TLS protects"
            ));
            true
        }
    };
    if let Some(v) = a.get("ntlmdomain") {
        out.note(
            &label,
            v.line,
            "ntlmdomain has no mailhop equivalent (no NTLM)",
        );
    }

    let eval = a.get("passwordeval").filter(|v| !v.value.is_empty());
    let password = a.get("password").filter(|v| !v.value.is_empty());
    if let (Some(e), Some(p)) = (eval, password) {
        out.note(
            &label,
            p.line,
            &format!(
                "password is not used: passwordeval on line {} wins, as in msmtp",
                e.line
            ),
        );
    }
    if let Some(e) = eval {
        let cmd = e.value.trim_start();
        if cmd.starts_with("echo ") || cmd.starts_with("printf ") {
            // The command holds the password itself, and mailhop shows
            // commands in error messages: run it once into a file instead.
            let extract = sed_line(e.line, "passwordeval", &ctx.conf_name);
            let path = password_file_path(ctx, name);
            let hint = password_hint(ctx, &path, &format!("sh -c \"$({extract})\""));
            out.warn(&format!(
                "{label}:{}: passwordeval prints the password itself; since mailhop \
                 shows commands in error messages, account \"{name}\" reads it from \
                 {path} instead.",
                e.line
            ));
            let why = format!(
                "{label}:{}: passwordeval (not copied here). Create the file with:",
                e.line
            );
            out.password_file(b, &why, name, path, hint);
        } else {
            b.comment(&format!(
                "{label}:{}: passwordeval. It must not prompt: mailhop runs it with no \
                 terminal and kills it after 30 seconds.",
                e.line
            ));
            b.kv("password_command", toml_str(&e.value));
        }
    } else if let Some(p) = password {
        let path = password_file_path(ctx, name);
        let hint = password_hint(ctx, &path, &sed_line(p.line, "password", &ctx.conf_name));
        let why = format!(
            "{label}:{}: password, not copied here. Create the file with:",
            p.line
        );
        out.password_file(b, &why, name, path, hint);
    } else if logs_in && let Some(u) = user {
        out.warn(&format!(
            "Account \"{name}\" has no password in {label}: msmtp found it in a key \
             ring or ~/.netrc, or asked for it. Set password_command (a key ring lookup \
             is suggested in the file) or password_file."
        ));
        b.comment(
            "msmtp looked the password up in the key ring under these attributes; \
             if it is stored there, this finds it:",
        );
        b.raw_comment(&format!(
            "password_command = {}",
            toml_str(&format!(
                "secret-tool lookup host {} service smtp user {}",
                sh_quote(host),
                sh_quote(u)
            ))
        ));
    }
}

/// The top-level, `[rewrite]` and `[aliases]` settings, which msmtp sets
/// per account and mailhop once: the default account's are used, and
/// differences are reported.
fn msmtp_globals(accounts: &[MAccount], order: &[usize], ctx: &MsmtpCtx, out: &mut Out) {
    let label = &ctx.label;
    let Some(first) = order.first().and_then(|&i| accounts.get(i)) else {
        return;
    };
    // Settings that differ between accounts cannot all be kept.
    let global = [
        "logfile",
        "syslog",
        "aliases",
        "maildomain",
        "domain",
        "set_from_header",
        "allow_from_override",
    ];
    for other in order.iter().skip(1).filter_map(|&i| accounts.get(i)) {
        let value = |a: &MAccount, k: &str| a.get(k).map(|v| v.value.clone());
        let differ: Vec<&str> = global
            .iter()
            .copied()
            .filter(|k| value(other, k) != value(first, k))
            .collect();
        if !differ.is_empty() {
            out.warn(&format!(
                "In {label}, account \"{}\" differs from the default account \"{}\" \
                 in {}; mailhop has these settings once for all accounts, and they are \
                 taken from the default account.",
                other.name,
                first.name,
                differ.join(", ")
            ));
        }
    }

    let from_domain = first
        .text("from")
        .and_then(domain_of)
        .map(str::to_ascii_lowercase);
    let maildomain = first
        .get("maildomain")
        .filter(|m| is_domain(m.value.trim_end_matches('.')));
    if let Some(d) = first.get("domain") {
        let v = d.value.trim_end_matches('.').to_ascii_lowercase();
        let clash = from_domain.as_deref() == Some(v.as_str())
            || maildomain.is_some_and(|m| m.value.eq_ignore_ascii_case(&v));
        if v.contains('%') || v == "localhost" || v.is_empty() {
            out.top.comment(&format!(
                "{label}:{}: domain {} (the EHLO name) is not carried over; mailhop \
                 uses this host's name",
                d.line, d.value
            ));
        } else if is_domain(&v) && v.contains('.') && !clash {
            out.top.comment(&format!(
                "{label}:{}: domain, msmtp's EHLO name. mailhop also uses it in \
                 Message-ID, and delivers mail for it locally.",
                d.line
            ));
            out.top.kv("hostname", toml_str(&v));
        } else {
            out.top.comment(&format!(
                "{label}:{}: domain {} (the EHLO name) is not used as hostname: {}",
                d.line,
                d.value,
                if clash {
                    "it is the mail domain, and mailhop would deliver mail for its own \
                     host name locally instead of sending it"
                } else {
                    "it is not a fully qualified domain name"
                }
            ));
        }
    }
    if let Some(l) = first.get("logfile") {
        match l.value.as_str() {
            "" => {}
            "-" => out.note(
                label,
                l.line,
                "logfile - (standard output) has no mailhop equivalent; mailhop logs to syslog",
            ),
            p => {
                out.top.comment(&format!("{label}:{}: logfile", l.line));
                match ctx.path(p, out, l.line) {
                    Some(p) => out.top.kv("log_file", toml_str(&p)),
                    None => out.top.raw_comment(&format!("log_file = {}", toml_str(p))),
                }
            }
        }
    }
    if let Some(s) = first.get("syslog") {
        let on = s.value != "off";
        out.top.comment(&format!(
            "{label}:{}: syslog {}{}",
            s.line,
            s.value,
            if on && s.value != "LOG_MAIL" {
                " (mailhop logs to the mail facility)"
            } else {
                ""
            }
        ));
        out.top.kv("syslog", on.to_string());
    }

    // Sender rewriting.
    let sfh = first.get("set_from_header");
    let afo = first.get("allow_from_override");
    let account = sfh.is_some_and(|v| v.value == "on") || afo.is_some_and(|v| v.value == "off");
    let cite = |v: Option<&MVal>, k: &str, dflt: &str| match v {
        Some(v) => format!("{k} {} (line {})", v.value, v.line),
        None => format!("{k} {dflt} (the default)"),
    };
    let settings = format!(
        "{} and {}",
        cite(sfh, "set_from_header", "auto"),
        cite(afo, "allow_from_override", "on")
    );
    if account {
        out.rewrite.comment(&format!(
            "{settings}: msmtp sent every message as the account's from (envelope and \
             From line); \"account\" does the same, adding a Reply-To with the original \
             author (see reply_to_original)."
        ));
    } else {
        out.rewrite.comment(&format!(
            "{settings}: msmtp kept the From line and -f of the caller, as \"keep\" \
             does. Without -f msmtp used the account's from as the envelope sender, \
             while \"keep\" uses the invoking user at [rewrite] domain. Smarthosts such \
             as Office 365 refuse a sender other than the mailbox: use \"account\" then."
        ));
    }
    out.rewrite.kv(
        "from_policy",
        toml_str(if account { "account" } else { "keep" }),
    );
    let pattern_domain = first
        .text("from")
        .and_then(|f| f.strip_prefix("%U@"))
        .filter(|d| !d.contains('%') && is_domain(d));
    if let Some(m) = first.get("maildomain").filter(|m| !m.value.is_empty()) {
        let v = m.value.trim_end_matches('.').to_ascii_lowercase();
        if is_domain(&v) {
            out.rewrite.comment(&format!(
                "{label}:{}: maildomain: bare names such as root become name@{v}",
                m.line
            ));
            out.rewrite.kv("domain", toml_str(&v));
        } else {
            out.rewrite.comment(&format!(
                "{label}:{}: maildomain {} is not a domain name and is left out",
                m.line, m.value
            ));
        }
    } else if let Some(d) = pattern_domain {
        out.rewrite.comment(&format!(
            "{label}: from %U@{d}: mail from a user goes out as user@{d}"
        ));
        out.rewrite.kv("domain", toml_str(&d.to_ascii_lowercase()));
    }

    if let Some(al) = first.get("aliases").filter(|a| !a.value.is_empty()) {
        let p = ctx.path(&al.value, out, al.line);
        out.aliases.comment(&format!(
            "{label}:{}: aliases. msmtp rewrote only the envelope; mailhop rewrites \
             the To and Cc lines too. msmtp treats an alias named \"default\" as a \
             catch-all and mailhop does not: if the file has one, set default in \
             this table to its target instead.",
            al.line
        ));
        match p {
            Some(p) => out.aliases.kv("file", toml_str(&p)),
            None => out
                .aliases
                .raw_comment(&format!("file = {}", toml_str(&al.value))),
        }
    }

    // What mailhop always does, or takes per message, or cannot do.
    for a in order.iter().filter_map(|&i| accounts.get(i)) {
        for (key, why) in [
            (
                "dsn_notify",
                "mailhop takes it per message, from sendmail's -N option",
            ),
            (
                "dsn_return",
                "mailhop takes it per message, from sendmail's -R option",
            ),
            ("set_date_header", "mailhop always adds a missing Date"),
            (
                "set_msgid_header",
                "mailhop always adds a missing Message-ID",
            ),
            ("remove_bcc_headers", "mailhop always removes Bcc lines"),
            ("keepbcc", "mailhop always removes Bcc lines"),
            (
                "undisclosed_recipients",
                "mailhop does not rewrite To and Cc that way",
            ),
            (
                "logfile_time_format",
                "mailhop's log lines carry RFC 3339 time stamps",
            ),
            (
                "from_full_name",
                "mailhop uses -F or the user's full name from the password database",
            ),
            ("auto_from", "see from and [rewrite] above"),
            (
                "eval",
                "its output is not known here, so the setting it produced is missing: add it by hand",
            ),
        ] {
            if let Some(v) = a.get(key) {
                out.note(
                    label,
                    v.line,
                    &format!("{key} has no mailhop equivalent: {why}"),
                );
            }
        }
        for (k, v) in &a.settings {
            if !MSMTP_KNOWN.contains(&k.as_str()) {
                out.note(
                    label,
                    v.line,
                    &format!(
                        "{k} has no mailhop equivalent: it is not an msmtp command mailhop knows"
                    ),
                );
            }
        }
    }
}

/// Every command the conversion looks at.
const MSMTP_KNOWN: &[&str] = &[
    "host",
    "port",
    "timeout",
    "protocol",
    "domain",
    "auto_from",
    "from",
    "maildomain",
    "auth",
    "user",
    "password",
    "passwordeval",
    "ntlmdomain",
    "tls",
    "tls_starttls",
    "tls_key_file",
    "tls_cert_file",
    "tls_trust_file",
    "tls_crl_file",
    "tls_fingerprint",
    "tls_certcheck",
    "tls_min_dh_prime_bits",
    "tls_priorities",
    "tls_host_override",
    "tls_force_sslv3",
    "dsn_return",
    "dsn_notify",
    "set_from_header",
    "set_date_header",
    "set_msgid_header",
    "remove_bcc_headers",
    "undisclosed_recipients",
    "logfile",
    "logfile_time_format",
    "syslog",
    "aliases",
    "proxy_host",
    "proxy_port",
    "socket",
    "source_ip",
    "allow_from_override",
    "from_full_name",
    "keepbcc",
    "eval",
];

/// Splits an msmtprc line into command and argument, or `None` for blank and
/// comment lines. As in msmtp, `#` starts a comment only at the start of a
/// line, and blanks are spaces and tabs.
fn msmtp_split(line: &str) -> Option<(&str, String)> {
    let t = line.trim_start_matches([' ', '\t']);
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let end = t.find([' ', '\t']).unwrap_or(t.len());
    let (cmd, rest) = t.split_at(end);
    Some((cmd, trim_arg(rest)))
}

/// msmtp's trim_string: blanks off both ends, then one pair of enclosing
/// double quotes (no escapes inside).
fn trim_arg(s: &str) -> String {
    let t = s.trim_matches([' ', '\t']);
    match t.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if t.len() >= 2 => inner.to_string(),
        _ => t.to_string(),
    }
}

/// A sed command that prints, from line `line` of `file`, the argument of
/// `cmd` exactly as msmtp reads it.
fn sed_line(line: usize, cmd: &str, file: &str) -> String {
    format!(
        "sed -n '{line}{{s/^[[:blank:]]*{cmd}[[:blank:]][[:blank:]]*//;T;s/\\r$//;s/[[:blank:]]*$//;s/^\"\\(.*\\)\"$/\\1/;p;q;}}' {}",
        sh_quote(file)
    )
}

/// `~/.config/mailhop/NAME.password` for a user's msmtprc, else under
/// /etc/mailhop.
fn password_file_path(ctx: &MsmtpCtx, account: &str) -> String {
    match &ctx.home {
        Some(h) => format!("{h}/.config/mailhop/{account}.password"),
        None => format!("{SYSTEM_DIR}/{account}.password"),
    }
}

/// Creates the file first, empty and with its final mode, so the password
/// is never in a file others can read, then fills it from `producer`.
fn password_hint(ctx: &MsmtpCtx, path: &str, producer: &str) -> String {
    let dir = path.rsplit_once('/').map_or(SYSTEM_DIR, |(d, _)| d);
    let install = match &ctx.home {
        // The user's own file: run as that user.
        Some(_) => "install -m 0600".to_string(),
        None => "install -m 0640 -o root -g mailhop".to_string(),
    };
    format!(
        "mkdir -p {d} && {install} /dev/null {p} && {producer} > {p}",
        d = sh_quote(dir),
        p = sh_quote(path)
    )
}

/// The home directory of a per-user msmtprc, from its path.
fn home_of(conf_name: &str) -> Option<String> {
    let home = conf_name
        .strip_suffix("/.msmtprc")
        .or_else(|| conf_name.strip_suffix("/.config/msmtp/config"))?;
    (home.starts_with('/') && !home.is_empty()).then(|| home.to_string())
}

/// The bytes of an msmtp fingerprint (`AB:CD:...`, colons or spaces, or
/// none), as two upper-case hex digits each.
fn fingerprint_bytes(f: &str) -> Option<Vec<String>> {
    let hex: String = f.chars().filter(|c| *c != ':' && *c != ' ').collect();
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.chars().all(|c| c.is_ascii_hexdigit())
    {
        return None;
    }
    let chars: Vec<char> = hex.to_ascii_uppercase().chars().collect();
    Some(chars.chunks(2).map(|p| p.iter().collect()).collect())
}

// ---------------------------------------------------------------------------
// Writing the TOML

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    Starttls,
    Implicit,
    None,
}

impl Tls {
    fn name(self) -> &'static str {
        match self {
            Tls::Starttls => "starttls",
            Tls::Implicit => "implicit",
            Tls::None => "none",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Tls::Starttls => 587,
            Tls::Implicit => 465,
            Tls::None => 25,
        }
    }
}

/// Lines of one table, comments included.
#[derive(Debug, Default)]
struct Block {
    lines: Vec<String>,
}

/// Comment text is wrapped to this width.
const WIDTH: usize = 76;

impl Block {
    fn comment(&mut self, text: &str) {
        for l in wrap(&clean(text), WIDTH) {
            self.lines.push(format!("# {l}").trim_end().to_string());
        }
    }

    /// A comment line that must not be wrapped, such as a command.
    fn raw_comment(&mut self, text: &str) {
        self.lines
            .push(format!("# {}", clean(text).replace('\n', " ")));
    }

    fn kv(&mut self, key: &str, value: String) {
        self.lines.push(format!("{} = {value}", toml_key(key)));
    }

    fn render(&self, header: &str, s: &mut String) {
        if self.lines.is_empty() {
            return;
        }
        if !header.is_empty() {
            s.push_str(header);
            s.push('\n');
        }
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push('\n');
    }
}

/// The converted file, assembled section by section (TOML wants the
/// top-level keys before any table).
#[derive(Debug)]
struct Out {
    source: String,
    warnings: Vec<String>,
    top: Block,
    accounts: Vec<Block>,
    rewrite: Block,
    revaliases: Block,
    aliases: Block,
    aliases_map: Block,
    /// (file, line) to remark, for settings without an equivalent.
    notes: BTreeMap<(String, usize), Vec<String>>,
    names: BTreeSet<String>,
    password_files: Vec<PasswordFile>,
}

impl Out {
    /// Points an account at a password file the admin must create (the
    /// secret is never copied): a comment saying why and how, the key,
    /// and an entry for the summary printed after the import.
    fn password_file(
        &mut self,
        b: &mut Block,
        why: &str,
        account: &str,
        path: String,
        hint: String,
    ) {
        b.comment(why);
        b.raw_comment(&format!("  {hint}"));
        b.kv("password_file", toml_str(&path));
        self.password_files.push(PasswordFile {
            path,
            account: account.to_string(),
            command_hint: hint,
        });
    }

    fn new(source: String) -> Self {
        Out {
            source,
            warnings: Vec::new(),
            top: Block::default(),
            accounts: Vec::new(),
            rewrite: Block::default(),
            revaliases: Block::default(),
            aliases: Block::default(),
            aliases_map: Block::default(),
            notes: BTreeMap::new(),
            names: BTreeSet::new(),
            password_files: Vec::new(),
        }
    }

    fn warn(&mut self, text: &str) {
        let text = clean(text);
        if !self.warnings.contains(&text) {
            self.warnings.push(text);
        }
    }

    fn note(&mut self, file: &str, line: usize, text: &str) {
        let list = self.notes.entry((file.to_string(), line)).or_default();
        if !list.iter().any(|t| t == text) {
            list.push(text.to_string());
        }
    }

    /// `base`, or `base-2`, `base-3`, ... when taken.
    fn unique_name(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 2;
        while self.names.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.names.insert(name.clone());
        name
    }

    fn finish(self) -> Imported {
        let mut s = String::new();
        let mut head = Block::default();
        head.comment(&format!(
            "mailhop configuration, converted by `mailhop import` from {}.",
            self.source
        ));
        head.lines.push("#".into());
        head.comment(
            "Review it, above all the lines marked \"check this\" or \"FILL IN\", \
             create the password files as shown beside them, then run `mailhop check \
             --offline` (and `mailhop check` to try the connection and the server's \
             certificate). See mailhop.toml(5).",
        );
        for w in &self.warnings {
            head.lines.push("#".into());
            let mut first = true;
            for l in wrap(&format!("WARNING: {w}"), WIDTH) {
                head.lines.push(if first {
                    format!("# {l}")
                } else {
                    format!("#   {l}")
                });
                first = false;
            }
        }
        head.render("", &mut s);
        self.top.render("", &mut s);
        for a in &self.accounts {
            a.render("[[account]]", &mut s);
        }
        self.rewrite.render("[rewrite]", &mut s);
        self.revaliases.render("[rewrite.revaliases]", &mut s);
        self.aliases.render("[aliases]", &mut s);
        self.aliases_map.render("[aliases.map]", &mut s);
        if !self.notes.is_empty() {
            let mut b = Block::default();
            b.comment("Settings mailhop has no equivalent for:");
            for ((file, line), texts) in &self.notes {
                for t in texts {
                    b.comment(&format!("{file}:{line}: {t}"));
                }
            }
            b.render("", &mut s);
        }
        while s.ends_with("\n\n") {
            s.pop();
        }
        Imported {
            toml: s,
            warnings: self.warnings,
            password_files: self.password_files,
        }
    }
}

/// Text fit for a TOML comment: no control characters (TOML forbids them
/// there), line breaks kept as paragraph breaks.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '\n' || !c.is_control() {
                c
            } else if c == '\t' {
                ' '
            } else {
                '?'
            }
        })
        .collect()
}

/// Greedy word wrap; a word longer than `width` gets a line of its own.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                out.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push(line);
    }
    out
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_array(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|i| toml_str(i)).collect();
    format!("[{}]", parts.join(", "))
}

/// A key, bare when TOML allows it.
fn toml_key(k: &str) -> String {
    if is_key_safe(k) {
        k.to_string()
    } else {
        toml_str(k)
    }
}

fn is_key_safe(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A word for a POSIX shell: as it is when it is safe, else single-quoted.
fn sh_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

// ---------------------------------------------------------------------------
// Names and addresses (mirroring what config.rs accepts)

/// `smtp.office365.com` is "office365", `smtp.gmail.com` "gmail", otherwise
/// the first label that says more than "smtp" or "mail".
fn account_name_for_host(host: &str) -> String {
    let h = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if is_loopback(&h) {
        return "local".into();
    }
    if h.parse::<IpAddr>().is_ok() {
        return "relay".into();
    }
    for (suffix, name) in [
        ("office365.com", "office365"),
        ("outlook.com", "outlook"),
        ("gmail.com", "gmail"),
        ("googlemail.com", "gmail"),
        ("amazonaws.com", "ses"),
    ] {
        if h == suffix || h.ends_with(&format!(".{suffix}")) {
            return name.into();
        }
    }
    const GENERIC: &[&str] = &[
        "smtp",
        "smtps",
        "mail",
        "email",
        "submission",
        "relay",
        "out",
        "outgoing",
        "mx",
        "send",
        "auth",
        "mailout",
    ];
    let labels: Vec<&str> = h.split('.').filter(|l| !l.is_empty()).collect();
    let candidates = match labels.split_last() {
        Some((_, rest)) if !rest.is_empty() => rest,
        _ => labels.as_slice(),
    };
    candidates
        .iter()
        .find(|l| !l.split('-').all(|p| GENERIC.contains(&p)))
        .or(candidates.first())
        .map_or_else(|| "smarthost".to_string(), |l| sanitize_name(l))
}

/// mailhop's account name charset: letters, digits, `-`, `_`, `.`.
fn sanitize_name(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let t = mapped.trim_matches('-');
    if t.is_empty() {
        "account".into()
    } else {
        t.to_string()
    }
}

/// As transport::is_loopback: `localhost`, 127.0.0.0/8 and `::1`.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `example.com` for `smtp.example.com`, when the host has a parent domain
/// worth guessing an address in.
fn parent_domain(host: &str) -> Option<String> {
    if host.parse::<IpAddr>().is_ok() || is_loopback(host) {
        return None;
    }
    let (_, parent) = host.split_once('.')?;
    (parent.contains('.') && is_domain(parent)).then(|| parent.to_ascii_lowercase())
}

fn domain_of(address: &str) -> Option<&str> {
    address.rsplit_once('@').map(|(_, d)| d)
}

fn parse_port(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

fn parse_u64(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

fn base_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const O365: &str = include_str!("../tests/fixtures/import/ssmtp-office365.conf");
    const O365_REV: &str = include_str!("../tests/fixtures/import/revaliases-office365");
    const GMAIL: &str = include_str!("../tests/fixtures/import/ssmtp-gmail.conf");
    const MSMTPRC: &str = include_str!("../tests/fixtures/import/msmtprc");

    fn table(text: &str) -> toml::Table {
        toml::from_str::<toml::Table>(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// The file with wrapped comments joined, so tests can look for a
    /// sentence wherever the wrapping broke it.
    fn flat(toml: &str) -> String {
        toml.replace("\n#   ", " ").replace("\n# ", " ")
    }

    fn s<'a>(t: &'a toml::Table, k: &str) -> Option<&'a str> {
        t.get(k).and_then(toml::Value::as_str)
    }

    fn accounts(t: &toml::Table) -> Vec<toml::Table> {
        t.get("account")
            .and_then(toml::Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
            .unwrap_or_default()
    }

    fn section<'a>(t: &'a toml::Table, k: &str) -> &'a toml::Table {
        t.get(k).and_then(toml::Value::as_table).unwrap()
    }

    /// What mailhop's config parser checks, repeated here (the module has
    /// no access to it), plus: no secret anywhere in what is returned.
    fn check(imp: &Imported, secrets: &[&str]) -> toml::Table {
        let t = table(&imp.toml);
        for secret in secrets {
            let everywhere = [imp.toml.clone(), imp.warnings.join("\n")]
                .into_iter()
                .chain(imp.password_files.iter().map(|p| format!("{p:?}")));
            for text in everywhere {
                assert!(
                    !text.contains(secret),
                    "secret {secret:?} leaked into:\n{text}"
                );
            }
        }
        let known = [
            "name",
            "host",
            "from",
            "senders",
            "port",
            "tls",
            "tls_ca_file",
            "tls_fingerprint",
            "tls_min_version",
            "tls_cert_file",
            "tls_key_file",
            "auth",
            "user",
            "password_command",
            "password_file",
            "connect_timeout",
            "timeout",
            "data_timeout",
        ];
        let mut names = BTreeSet::new();
        for a in accounts(&t) {
            for k in a.keys() {
                assert!(known.contains(&k.as_str()), "unknown key {k}");
            }
            let name = s(&a, "name").unwrap();
            assert!(!name.is_empty() && name == sanitize_name(name), "{name}");
            assert!(names.insert(name.to_string()), "{name} twice");
            let host = s(&a, "host").unwrap();
            assert!(!host.is_empty() && !host.contains(char::is_whitespace));
            assert!(is_plain_address(s(&a, "from").unwrap()));
            match s(&a, "tls") {
                Some("none") => assert!(is_loopback(host)),
                Some("starttls" | "implicit") | None => {}
                Some(other) => panic!("tls {other}"),
            }
            if matches!(s(&a, "auth"), Some("plain" | "login" | "xoauth2")) {
                assert!(a.contains_key("user"));
            }
            assert_eq!(
                a.contains_key("tls_cert_file"),
                a.contains_key("tls_key_file")
            );
            if let Some(f) = s(&a, "tls_fingerprint") {
                assert_eq!(
                    fingerprint_bytes(f.trim_start_matches("sha256:"))
                        .unwrap()
                        .len(),
                    32
                );
            }
            if let Some(p) = a.get("port") {
                assert!((1..=65535).contains(&p.as_integer().unwrap()));
            }
        }
        if let Some(r) = t.get("rewrite").and_then(toml::Value::as_table) {
            if let Some(d) = s(r, "domain") {
                assert!(is_domain(d));
            }
            if let Some(revs) = r.get("revaliases").and_then(toml::Value::as_table) {
                for v in revs.values() {
                    match v {
                        toml::Value::String(a) => assert!(is_plain_address(a)),
                        toml::Value::Table(e) => {
                            assert!(is_plain_address(s(e, "from").unwrap()));
                            assert!(names.contains(s(e, "account").unwrap()));
                        }
                        other => panic!("{other:?}"),
                    }
                }
            }
        }
        if let Some(h) = s(&t, "hostname") {
            assert!(is_domain(h));
        }
        for p in &imp.password_files {
            assert!(p.path.starts_with('/') && names.contains(&p.account));
            assert!(flat(&imp.toml).contains(&toml_str(&p.path)));
        }
        t
    }

    /// Runs the part of a hint that prints the password (the last
    /// command, without the redirection) and returns what it prints.
    fn run_extraction(hint: &str) -> Option<String> {
        let last = hint.rsplit(" && ").next()?;
        let (cmd, _) = last.rsplit_once(" > ")?;
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn temp_file(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("mailhop-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn ssmtp_office365_with_revaliases() {
        let imp = from_ssmtp(
            O365,
            "/etc/ssmtp/ssmtp.conf",
            Some((O365_REV, "/etc/ssmtp/revaliases")),
        )
        .unwrap();
        let t = check(&imp, &["Sh0p-Secr3t-Pa55"]);
        assert_eq!(s(&t, "hostname"), Some("host.domain.com"));
        let accs = accounts(&t);
        assert_eq!(accs.len(), 2, "{}", imp.toml);
        let o = &accs[0];
        assert_eq!(s(o, "name"), Some("office365"));
        assert_eq!(s(o, "host"), Some("smtp.office365.com"));
        assert_eq!(o["port"].as_integer(), Some(587));
        assert_eq!(s(o, "tls"), Some("starttls"));
        assert_eq!(s(o, "from"), Some("shop@domain.com"));
        assert_eq!(s(o, "user"), Some("shop@domain.com"));
        assert_eq!(s(o, "auth"), Some("login"));
        assert_eq!(
            s(o, "password_file"),
            Some("/etc/mailhop/office365.password")
        );
        let g = &accs[1];
        assert_eq!(s(g, "name"), Some("gmail"));
        assert_eq!(s(g, "host"), Some("smtp.gmail.com"));
        assert_eq!(g["port"].as_integer(), Some(465));
        assert_eq!(s(g, "tls"), Some("implicit"));
        assert_eq!(s(g, "from"), Some("web@domain.com"));
        assert!(!g.contains_key("user") && !g.contains_key("password_file"));
        // keep: revaliases do not apply, so the users route by pattern.
        let senders: Vec<&str> = g["senders"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(toml::Value::as_str)
            .collect();
        assert_eq!(senders, ["www-data", "web@domain.com"]);

        let rw = section(&t, "rewrite");
        assert_eq!(s(rw, "from_policy"), Some("keep"));
        assert_eq!(s(rw, "domain"), Some("domain.com"));
        let rev = section(rw, "revaliases");
        assert_eq!(s(rev, "root"), Some("shop@domain.com"));
        let www = rev["www-data"].as_table().unwrap();
        assert_eq!(s(www, "from"), Some("web@domain.com"));
        assert_eq!(s(www, "account"), Some("gmail"));
        let map = section(section(&t, "aliases"), "map");
        assert_eq!(s(map, "root"), Some("postmaster@domain.com"));

        assert_eq!(imp.password_files.len(), 1);
        let pf = &imp.password_files[0];
        assert_eq!(pf.account, "office365");
        assert_eq!(
            pf.command_hint,
            "mkdir -p /etc/mailhop && install -m 0640 -o root -g mailhop /dev/null \
             /etc/mailhop/office365.password && sed -n \
             's/^[[:blank:]]*AuthPass[[:blank:]]*=[[:blank:]]*//I;T;s/\\r$//;s/[[:blank:]]*$//;p;q' \
             /etc/ssmtp/ssmtp.conf > /etc/mailhop/office365.password"
        );
        let w = imp.warnings.join("\n");
        assert!(w.contains("never verified the server's certificate"), "{w}");
        assert!(w.contains("`mailhop check`"), "{w}");
        assert!(
            w.contains("\"gmail\"") && w.contains("no credentials"),
            "{w}"
        );
        assert!(w.contains("ignores [rewrite.revaliases]"), "{w}");
        // Warnings are repeated at the top of the file.
        assert!(flat(&imp.toml).contains("# WARNING: ssmtp never verified"));
        assert!(flat(&imp.toml).contains("SendAsDenied"));
        assert!(flat(&imp.toml).contains("ssmtp.conf:10: mailhub=smtp.office365.com"));
    }

    #[test]
    fn ssmtp_gmail_implicit_tls() {
        let imp = from_ssmtp(GMAIL, "/etc/ssmtp/ssmtp.conf", None).unwrap();
        let t = check(&imp, &["abcdefghijklmnop"]);
        let accs = accounts(&t);
        assert_eq!(accs.len(), 1);
        let g = &accs[0];
        assert_eq!(s(g, "name"), Some("gmail"));
        assert_eq!(s(g, "tls"), Some("implicit"));
        assert_eq!(g["port"].as_integer(), Some(465));
        assert_eq!(s(g, "from"), Some("john@gmail.com"));
        assert!(!g.contains_key("auth"));
        // hostname=localhost is not a host name mailhop should use.
        assert!(!t.contains_key("hostname"));
        assert!(
            flat(&imp.toml).contains("# hostname")
                || flat(&imp.toml).contains("Hostname=localhost")
        );
        let rw = section(&t, "rewrite");
        assert_eq!(s(rw, "from_policy"), Some("account"));
        assert_eq!(s(rw, "domain"), Some("gmail.com"));
        assert!(flat(&imp.toml).contains("ssmtp.conf:10: Debug=… has no mailhop equivalent"));
        assert_eq!(imp.password_files[0].path, "/etc/mailhop/gmail.password");
    }

    #[test]
    fn ssmtp_plain_text_becomes_starttls_with_a_warning() {
        let conf =
            "mailhub=mail.example.org\nAuthUser=joe\nAuthPass=pw\nRewriteDomain=example.org\n";
        let imp = from_ssmtp(conf, "ssmtp.conf", None).unwrap();
        let t = check(&imp, &[]);
        let a = &accounts(&t)[0];
        assert_eq!(s(a, "name"), Some("example"));
        assert_eq!(s(a, "tls"), Some("starttls"));
        assert_eq!(a["port"].as_integer(), Some(25));
        // AuthUser is no address: root at the rewrite domain, to be checked.
        assert_eq!(s(a, "from"), Some("root@example.org"));
        let w = imp.warnings.join("\n");
        assert!(
            w.contains("in plain text") && w.contains("the password"),
            "{w}"
        );

        let imp = from_ssmtp("mailhub=127.0.0.1:2525\n", "ssmtp.conf", None).unwrap();
        let t = check(&imp, &[]);
        let a = &accounts(&t)[0];
        assert_eq!(s(a, "tls"), Some("none"));
        assert_eq!(s(a, "name"), Some("local"));
        assert!(!imp.warnings.join("\n").contains("plain text"));
    }

    #[test]
    fn ssmtp_certificates_cram_md5_and_unknown_keys() {
        let conf = "mailhub=relay.corp.example.com:587\nUseSTARTTLS=yes\n\
                    TLS_CA_File=/etc/ssl/corp.pem\nTLS_CA_Dir=/etc/ssl/certs\n\
                    UseTLSCert=YES\nTLSCert=/etc/ssl/private/web1.pem\n\
                    AuthUser=web1@corp.example.com\nAuthPass=x\nAuthMethod=cram-md5\n\
                    AuthPas=typo-secret\nAddHeader=X-Foo: bar\n";
        let imp = from_ssmtp(conf, "/etc/ssmtp/ssmtp.conf", None).unwrap();
        let t = check(&imp, &["typo-secret"]);
        let a = &accounts(&t)[0];
        assert_eq!(s(a, "name"), Some("corp"));
        assert_eq!(s(a, "tls_ca_file"), Some("/etc/ssl/corp.pem"));
        assert_eq!(s(a, "tls_cert_file"), Some("/etc/ssl/private/web1.pem"));
        assert_eq!(s(a, "tls_key_file"), Some("/etc/ssl/private/web1.pem"));
        assert!(!a.contains_key("auth"));
        assert!(flat(&imp.toml).contains("cram-md5 is not supported"));
        assert!(flat(&imp.toml).contains("ssmtp.conf:4: TLS_CA_Dir=… has no mailhop equivalent"));
        assert!(flat(&imp.toml).contains("ssmtp.conf:10: AuthPas=… has no mailhop equivalent"));
        assert!(flat(&imp.toml).contains("one PEM file"));
    }

    #[test]
    fn ssmtp_hostile_password_is_never_copied_and_the_hint_extracts_it() {
        let secret = "p\"a'ss#w\\o=rd$(x)";
        let conf = format!(
            "mailhub=smtp.office365.com:587\nUseSTARTTLS=YES\n#AuthPass=0ld-pw\n\
             AuthUser=shop@domain.com\n  authpass = {secret}  \r\nAuthPass=Sec0nd-pw\n"
        );
        let path = temp_file("ssmtp.conf", &conf);
        let imp = from_ssmtp(&conf, &path, None).unwrap();
        check(&imp, &[secret, "p\"a'ss", "w\\o=rd", "Sec0nd-pw", "0ld-pw"]);
        assert!(imp.warnings.join("\n").contains("'#', '=' or blanks"));
        let hint = &imp.password_files[0].command_hint;
        assert_eq!(
            run_extraction(hint).as_deref(),
            Some(format!("{secret}\n").as_str())
        );
    }

    #[test]
    fn ssmtp_errors_name_the_file_and_line() {
        let e = from_ssmtp("AuthUser=x\n", "/etc/ssmtp/ssmtp.conf", None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/etc/ssmtp/ssmtp.conf: no mailhub"),
            "{e}"
        );
        let e = from_ssmtp("\nmailhub=a.b.c:99999\n", "ssmtp.conf", None).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(
            e.to_string().starts_with("ssmtp.conf:2: mailhub port"),
            "{e}"
        );
        let e = from_ssmtp(
            "mailhub=a.b.c\n",
            "ssmtp.conf",
            Some(("root:a@b.c:h:x\n", "revaliases")),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "revaliases:1: port \"x\" is not a port number"
        );
    }

    #[test]
    fn ssmtp_revaliases_last_line_wins_and_bare_names_are_qualified() {
        let rev = "root:a@domain.com\nroot:b@domain.com\nbackup:backup\nwww.data:w@domain.com:smtp.office365.com:587\n";
        let conf = "mailhub=smtp.office365.com:587\nUseSTARTTLS=YES\nRewriteDomain=domain.com\nAuthUser=shop@domain.com\nAuthPass=x\n";
        let imp = from_ssmtp(conf, "ssmtp.conf", Some((rev, "revaliases"))).unwrap();
        let t = check(&imp, &[]);
        let rev = section(section(&t, "rewrite"), "revaliases");
        assert_eq!(s(rev, "root"), Some("b@domain.com"));
        assert_eq!(s(rev, "backup"), Some("backup@domain.com"));
        assert_eq!(s(rev, "www.data"), Some("w@domain.com"));
        assert!(flat(&imp.toml).contains("revaliases:1: overridden by line 2"));
        assert_eq!(accounts(&t).len(), 1);
    }

    #[test]
    fn msmtp_defaults_inheritance_and_default_account() {
        let imp = from_msmtp(MSMTPRC, "/etc/msmtprc").unwrap();
        let t = check(&imp, &["0ff1ce", "#365", "pw'"]);
        assert_eq!(s(&t, "log_file"), Some("/var/log/msmtp.log"));
        let accs = accounts(&t);
        let names: Vec<&str> = accs.iter().filter_map(|a| s(a, "name")).collect();
        assert_eq!(names, ["gmail", "gmail-alias", "office365"]);
        let g = &accs[0];
        assert_eq!(s(g, "host"), Some("smtp.gmail.com"));
        assert_eq!(g["port"].as_integer(), Some(587));
        assert_eq!(s(g, "tls"), Some("starttls"));
        assert_eq!(
            s(g, "tls_ca_file"),
            Some("/etc/ssl/certs/ca-certificates.crt")
        );
        assert_eq!(s(g, "password_command"), Some("pass show mail/gmail"));
        assert_eq!(s(g, "user"), Some("john@gmail.com"));
        assert!(!g.contains_key("senders") && !g.contains_key("auth"));
        let ga = &accs[1];
        assert_eq!(s(ga, "from"), Some("johnny@gmail.com"));
        assert_eq!(s(ga, "host"), Some("smtp.gmail.com"));
        assert_eq!(s(ga, "password_command"), Some("pass show mail/gmail"));
        assert_eq!(
            ga["senders"].as_array().unwrap()[0].as_str(),
            Some("johnny@gmail.com")
        );
        let o = &accs[2];
        assert_eq!(
            s(o, "password_file"),
            Some("/etc/mailhop/office365.password")
        );
        assert_eq!(
            o["senders"].as_array().unwrap()[0].as_str(),
            Some("shop@domain.com")
        );
        assert_eq!(s(section(&t, "aliases"), "file"), Some("/etc/aliases"));
        assert_eq!(s(section(&t, "rewrite"), "from_policy"), Some("keep"));
        assert!(flat(&imp.toml).contains("msmtprc:28: dsn_notify has no mailhop equivalent"));
        assert!(flat(&imp.toml).contains("named by \"account default\" on line 31"));
        assert_eq!(imp.password_files.len(), 1);
        let hint = &imp.password_files[0].command_hint;
        assert!(
            hint.starts_with(
                "mkdir -p /etc/mailhop && install -m 0640 -o root -g mailhop /dev/null \
             /etc/mailhop/office365.password && sed -n '27{"
            ),
            "{hint}"
        );
        // The fixture, read where it lies, gives back msmtp's password.
        let path = temp_file("msmtprc", MSMTPRC);
        let imp = from_msmtp(MSMTPRC, &path).unwrap();
        let out = run_extraction(&imp.password_files[0].command_hint);
        // msmtp strips the enclosing quotes but knows no escapes inside.
        assert_eq!(out.as_deref(), Some("0ff1ce #365 \\\"pw'\n"));
    }

    #[test]
    fn msmtp_user_file_goes_to_the_users_config_dir() {
        let rc = "account work\nhost mail.example.com\nport 465\ntls on\ntls_starttls off\n\
                  from me@example.com\nauth plain\nuser me\npassword secret\n\
                  logfile ~/.msmtp.log\n";
        let imp = from_msmtp(rc, "/home/me/.msmtprc").unwrap();
        let t = check(&imp, &["secret"]);
        assert_eq!(s(&t, "log_file"), Some("/home/me/.msmtp.log"));
        let a = &accounts(&t)[0];
        assert_eq!(s(a, "tls"), Some("implicit"));
        assert_eq!(s(a, "auth"), Some("plain"));
        assert_eq!(
            s(a, "password_file"),
            Some("/home/me/.config/mailhop/work.password")
        );
        assert!(imp.password_files[0].command_hint.starts_with(
            "mkdir -p /home/me/.config/mailhop && install -m 0600 /dev/null /home/me/.config/mailhop/work.password && sed -n '9{"
        ));
        // No "default" account: the first one is the default.
        assert_eq!(s(a, "name"), Some("work"));
    }

    #[test]
    fn msmtp_security_settings() {
        let fp = "01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:ab:cd:ef";
        let rc = format!(
            "account a\nhost 10.1.2.3\ntls on\ntls_fingerprint {fp}\nfrom a@example.com\n\
             auth oauthbearer\nuser a@example.com\npasswordeval get-token\n\
             account b\nhost smtp.example.net\ntls on\ntls_certcheck off\n\
             tls_fingerprint 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33\n\
             tls_priorities NORMAL\nfrom b@example.net\n\
             account c\nhost smtp.example.org\nfrom c@example.org\nuser c\npassword x\n"
        );
        let imp = from_msmtp(&rc, "/etc/msmtprc").unwrap();
        let t = check(&imp, &[]);
        let accs = accounts(&t);
        assert_eq!(
            s(&accs[0], "tls_fingerprint").map(str::to_string),
            Some(format!("sha256:{}", fp.to_ascii_uppercase()))
        );
        assert_eq!(s(&accs[0], "auth"), Some("xoauth2"));
        assert_eq!(s(&accs[0], "name"), Some("a"));
        assert!(!accs[1].contains_key("tls_fingerprint"));
        // msmtp never logged in without auth on.
        assert_eq!(s(&accs[2], "auth"), Some("none"));
        assert_eq!(s(&accs[2], "tls"), Some("starttls"));
        assert_eq!(accs[2]["port"].as_integer(), Some(25));
        let w = imp.warnings.join("\n");
        assert!(w.contains("OAUTHBEARER is not supported"), "{w}");
        assert!(w.contains("tls_certcheck off"), "{w}");
        assert!(w.contains("a SHA-1 digest"), "{w}");
        assert!(w.contains("in plain text"), "{w}");
        assert!(flat(&imp.toml).contains("tls_priorities has no mailhop equivalent"));
    }

    #[test]
    fn msmtp_from_policy_and_missing_from() {
        let rc = "account default\nhost localhost\nset_from_header on\nsyslog LOG_MAIL\n\
                  domain web1.example.com\nmaildomain example.com\nauto_from on\n";
        let imp = from_msmtp(rc, "/etc/msmtprc").unwrap();
        let t = check(&imp, &[]);
        assert_eq!(s(section(&t, "rewrite"), "from_policy"), Some("account"));
        assert_eq!(s(section(&t, "rewrite"), "domain"), Some("example.com"));
        assert_eq!(s(&t, "hostname"), Some("web1.example.com"));
        assert_eq!(t["syslog"].as_bool(), Some(true));
        let a = &accounts(&t)[0];
        assert_eq!(s(a, "tls"), Some("none"));
        assert_eq!(s(a, "from"), Some(PLACEHOLDER_FROM));
        assert!(imp.warnings.join("\n").contains(PLACEHOLDER_FROM));
        assert!(flat(&imp.toml).contains("FILL IN: msmtp made the sender"));

        let rc = "account x\nhost smtp.gmail.com\ntls on\nallow_from_override off\n\
                  from %U@example.com\nuser joe@gmail.com\nauth on\n";
        let imp = from_msmtp(rc, "/etc/msmtprc").unwrap();
        let t = check(&imp, &[]);
        assert_eq!(s(section(&t, "rewrite"), "from_policy"), Some("account"));
        assert_eq!(s(section(&t, "rewrite"), "domain"), Some("example.com"));
        let a = &accounts(&t)[0];
        assert_eq!(s(a, "from"), Some("joe@gmail.com"));
        // No password anywhere: the key ring lookup msmtp did is offered.
        assert!(flat(&imp.toml).contains(
            "password_command = \"secret-tool lookup host smtp.gmail.com service smtp user joe@gmail.com\""
        ));
    }

    #[test]
    fn msmtp_inline_passwordeval_and_hostile_password() {
        let secret = "hun\"ter'2#x";
        let rc = format!(
            "defaults\ntls on\nauth on\n\naccount my mail\nhost smtp.example.com\n\
             from me@example.com\nuser me@example.com\npasswordeval \"echo 'hunter2'\"\n\
             account other : my mail\nfrom you@example.com\npassword   \"{secret}\"  \n"
        );
        let path = temp_file("msmtprc-hostile", &rc);
        let imp = from_msmtp(&rc, &path).unwrap();
        let t = check(&imp, &["hunter2", secret, "ter'2"]);
        let accs = accounts(&t);
        assert_eq!(s(&accs[0], "name"), Some("my-mail"));
        assert!(flat(&imp.toml).contains("renamed from \"my mail\""));
        // Both accounts inherit the echo: passwordeval wins over password.
        assert!(accs.iter().all(|a| !a.contains_key("password_command")));
        let outs: Vec<Option<String>> = imp
            .password_files
            .iter()
            .map(|p| run_extraction(&p.command_hint))
            .collect();
        assert_eq!(
            outs,
            [Some("hunter2\n".to_string()), Some("hunter2\n".to_string())]
        );
        assert!(flat(&imp.toml).contains("password is not used: passwordeval on line 9 wins"));

        let rc = format!(
            "account a\nhost h.example.com\ntls on\nfrom a@example.com\nauth on\nuser u\npassword \"{secret}\"\n"
        );
        let path = temp_file("msmtprc-hostile2", &rc);
        let imp = from_msmtp(&rc, &path).unwrap();
        check(&imp, &[secret, "ter'2"]);
        let out = run_extraction(&imp.password_files[0].command_hint);
        assert_eq!(out, Some(format!("{secret}\n")));
    }

    #[test]
    fn msmtp_errors_name_the_file_and_line() {
        let e = from_msmtp("account a : b\nhost x\n", "/etc/msmtprc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/msmtprc:1: account \"b\" is not (yet) defined; msmtp refuses this too"
        );
        let e = from_msmtp("account a\nhost x\ntls maybe\n", "rc").unwrap_err();
        assert_eq!(e.line, Some(3));
        let e = from_msmtp("# nothing\n", "rc").unwrap_err();
        assert_eq!(e.to_string(), "rc: no account is defined");
        let e = from_msmtp("account default\nfrom a@b.c\n", "rc").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("rc:1: the default account \"default\" has no host"),
            "{e}"
        );
        let e = from_msmtp("account a\naccount a\n", "rc").unwrap_err();
        assert!(e.to_string().contains("defined twice"), "{e}");
    }

    #[test]
    fn msmtp_lines_before_any_account_form_the_default() {
        let rc = "host smtp.example.com\ntls on\nfrom a@example.com # me\n";
        let imp = from_msmtp(rc, "rc").unwrap();
        let t = check(&imp, &[]);
        let a = &accounts(&t)[0];
        assert_eq!(s(a, "name"), Some("default"));
        // "a@example.com # me" is msmtp's from (no trailing comments): not
        // an address, so a placeholder and a warning.
        assert_eq!(s(a, "from"), Some(PLACEHOLDER_FROM));
    }

    #[test]
    fn names_for_hosts() {
        for (host, name) in [
            ("smtp.office365.com", "office365"),
            ("smtp.gmail.com", "gmail"),
            ("smtp-relay.gmail.com", "gmail"),
            ("smtp-mail.outlook.com", "outlook"),
            ("mail.example.com", "example"),
            ("smtp.mail.example.co", "example"),
            ("relay", "relay"),
            ("smtp.com", "smtp"),
            ("127.0.0.1", "local"),
            ("[::1]", "local"),
            ("192.0.2.7", "relay"),
            ("email-smtp.eu-west-1.amazonaws.com", "ses"),
        ] {
            assert_eq!(account_name_for_host(host), name, "{host}");
        }
        assert_eq!(sanitize_name("my mail!"), "my-mail");
        assert_eq!(sanitize_name("!!"), "account");
    }

    #[test]
    fn toml_and_shell_quoting() {
        assert_eq!(toml_str("a\"b\\c\u{1}"), "\"a\\\"b\\\\c\\u0001\"");
        assert_eq!(toml_key("www-data"), "www-data");
        assert_eq!(toml_key("john.doe"), "\"john.doe\"");
        assert_eq!(sh_quote("/etc/ssmtp/ssmtp.conf"), "/etc/ssmtp/ssmtp.conf");
        assert_eq!(sh_quote("/tmp/it's here"), "'/tmp/it'\\''s here'");
        let t = table(&format!(
            "x = {}\n# {}\n",
            toml_str("\u{7f}\t\n"),
            clean("a\u{7}b")
        ));
        assert_eq!(t["x"].as_str(), Some("\u{7f}\t\n"));
        assert_eq!(ImportError::at("f", 3, "bad").to_string(), "f:3: bad");
    }
}
