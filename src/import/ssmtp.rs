//! ssmtp: `ssmtp.conf` and `revaliases`.

use super::*;

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
    auth_method: Option<Src<AuthMethod>>,
}

/// ssmtp's AuthMethod (case-insensitive); anything else means its default,
/// LOGIN or PLAIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthMethod {
    Login,
    CramMd5,
    Other,
}

impl AuthMethod {
    fn parse(v: &str) -> AuthMethod {
        if v.eq_ignore_ascii_case("login") {
            AuthMethod::Login
        } else if v.eq_ignore_ascii_case("cram-md5") {
            AuthMethod::CramMd5
        } else {
            AuthMethod::Other
        }
    }
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
    let hostname_fqdn = c
        .hostname
        .as_ref()
        .map(|h| h.value.trim_end_matches('.').to_ascii_lowercase())
        .filter(|h| is_domain(h) && h.contains('.'));
    let x = Ctx {
        c: &c,
        conf_name,
        label,
        rev_label,
        host,
        port: ssmtp_port,
        name,
        rewrite_domain,
        hostname_fqdn,
        keep,
    };
    let (mode, from) = main_account(&x, &hub, &revs, &mut out);
    top_hostname(&x, &from, &mut out);
    rewrite_policy(&x, &mut out);
    let extras = revalias_lines(&x, &revs, mode, &mut out);
    finish_extras(&x, extras, &mut out);
    root_alias(&x, &mut out);
    Ok(out.finish())
}

/// What every part of an ssmtp conversion needs.
struct Ctx<'a> {
    c: &'a SsmtpConf,
    /// ssmtp.conf as the caller named it, for the password file commands.
    conf_name: &'a str,
    /// The file names, for comments.
    label: String,
    rev_label: String,
    /// The mailhub.
    host: String,
    /// The port ssmtp connected to.
    port: u16,
    /// The main account's name.
    name: String,
    /// RewriteDomain, when it is a domain.
    rewrite_domain: Option<String>,
    /// Hostname, when it is a fully qualified domain name.
    hostname_fqdn: Option<String>,
    /// FromLineOverride=YES, mailhop's "keep".
    keep: bool,
}

/// The `[[account]]` for the mailhub: its TLS mode and sender address.
fn main_account(x: &Ctx, hub: &Src<String>, revs: &[RevLine], out: &mut Out) -> (TlsMode, String) {
    let c = x.c;
    let label = &x.label;
    let host = &x.host;
    let name = &x.name;
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
    acc.kv("name", name.as_str());
    acc.kv("host", host.as_str());
    let mode = tls_mode(x, &mut acc, out);
    acc.kv("tls", mode.name());
    match (&c.port, mode) {
        (Some(p), _) => acc.kv("port", i64::from(p.value)),
        (None, TlsMode::StartTls) => {
            acc.comment(
                "ssmtp's default port; 587 (the submission port) is better if the \
                 server offers it",
            );
            acc.kv("port", 25);
        }
        (None, TlsMode::Implicit) => acc.comment(
            "check this: no port in mailhub, so ssmtp connected to 25; mailhop \
             uses 465, the port for TLS from the first byte",
        ),
        (None, TlsMode::None) => {}
    }

    let from = sender(x, revs, &mut acc, out);
    auth(x, &mut acc, out);
    if mode != TlsMode::None {
        client_tls(x, &mut acc, out);
    }
    out.accounts.push(acc);
    (mode, from)
}

/// UseSTARTTLS and UseTLS as a TLS mode; plain text (which mailhop allows
/// only to this machine) becomes TLS, with a warning.
fn tls_mode(x: &Ctx, acc: &mut Block, out: &mut Out) -> TlsMode {
    let c = x.c;
    let label = &x.label;
    let host = &x.host;
    let ssmtp_port = x.port;
    let name = &x.name;
    let starttls = c.use_starttls.as_ref().is_some_and(|s| s.value);
    let tls_flag = c.use_tls.as_ref().is_some_and(|s| s.value);
    let line_of = |s: &Option<Src<bool>>| s.as_ref().map_or(0, |s| s.line);
    if starttls {
        acc.comment(&format!(
            "{label}:{}: UseSTARTTLS=YES",
            line_of(&c.use_starttls)
        ));
        TlsMode::StartTls
    } else if tls_flag {
        acc.comment(&format!(
            "{label}:{}: UseTLS=YES (TLS from the first byte)",
            line_of(&c.use_tls)
        ));
        TlsMode::Implicit
    } else if is_loopback(host) {
        acc.comment(&format!(
            "{label}: neither UseTLS nor UseSTARTTLS, to a server on this machine, \
             which is the one place mailhop allows plain text"
        ));
        TlsMode::None
    } else {
        let m = if ssmtp_port == 465 {
            TlsMode::Implicit
        } else {
            TlsMode::StartTls
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
    }
}

/// The sender address mailhop requires of every account.
fn sender(x: &Ctx, revs: &[RevLine], acc: &mut Block, out: &mut Out) -> String {
    let c = x.c;
    let label = &x.label;
    let rev_label = &x.rev_label;
    let host = &x.host;
    let name = &x.name;
    let rewrite_domain = &x.rewrite_domain;
    let hostname_fqdn = &x.hostname_fqdn;
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
        match parent_domain(host) {
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
    acc.kv("from", &from);
    from
}

/// AuthUser, AuthMethod and AuthPass (which is never copied).
fn auth(x: &Ctx, acc: &mut Block, out: &mut Out) {
    let c = x.c;
    let conf_name = x.conf_name;
    let label = &x.label;
    let name = &x.name;
    let user = c
        .auth_user
        .as_ref()
        .filter(|u| !u.value.is_empty())
        .cloned();
    if let Some(u) = &user {
        acc.comment(&format!("{label}:{}: AuthUser", u.line));
        acc.kv("user", &u.value);
        match c.auth_method {
            Some(Src {
                value: AuthMethod::Login,
                line,
            }) => {
                acc.comment(&format!("{label}:{line}: AuthMethod=LOGIN"));
                acc.kv("auth", "login");
            }
            Some(Src {
                value: AuthMethod::CramMd5,
                line,
            }) => acc.comment(&format!(
                "{label}:{line}: AuthMethod=cram-md5 is not supported by mailhop; \
                 PLAIN or LOGIN is used, which TLS protects"
            )),
            Some(Src {
                value: AuthMethod::Other,
                line,
            }) => out.note(
                label,
                line,
                "AuthMethod=… is not a method mailhop knows; it uses PLAIN or LOGIN",
            ),
            None => {}
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
                out.password_file(acc, &why, name, path, hint);
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
            label,
            p.line,
            "AuthPass without AuthUser: ssmtp never logged in, so the password is not carried over",
        );
    }
}

/// TLS_CA_File and the client certificate.
fn client_tls(x: &Ctx, acc: &mut Block, out: &mut Out) {
    let c = x.c;
    let label = &x.label;
    if let Some(ca) = &c.tls_ca_file {
        acc.comment(&format!(
            "{label}:{}: TLS_CA_File; only these authorities are trusted for this account",
            ca.line
        ));
        acc.kv("tls_ca_file", &ca.value);
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
        acc.kv("tls_cert_file", cert);
        acc.kv("tls_key_file", key);
    } else if let Some(t) = &c.tls_cert {
        out.note(
            label,
            t.line,
            "TLSCert is ignored because UseTLSCert is not YES (as ssmtp did)",
        );
    }
}

/// Hostname as `hostname`, unless mailhop would then take the mail domain
/// for its own.
fn top_hostname(x: &Ctx, from: &str, out: &mut Out) {
    let c = x.c;
    let label = &x.label;
    let rewrite_domain = &x.rewrite_domain;
    if let Some(h) = &c.hostname {
        let v = h.value.trim_end_matches('.').to_ascii_lowercase();
        let clash = rewrite_domain.as_deref() == Some(v.as_str())
            || domain_of(from).is_some_and(|d| d.eq_ignore_ascii_case(&v));
        if is_domain(&v) && v.contains('.') && !clash {
            out.top.comment(&format!(
                "{label}:{}: Hostname. It names this host in EHLO and Message-ID, and \
                 mail for it is delivered locally.",
                h.line
            ));
            out.top.kv("hostname", &v);
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
}

/// FromLineOverride and RewriteDomain as `[rewrite]`.
fn rewrite_policy(x: &Ctx, out: &mut Out) {
    let c = x.c;
    let label = &x.label;
    let host = &x.host;
    let keep = x.keep;
    let rewrite_domain = &x.rewrite_domain;
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
    out.rewrite
        .kv("from_policy", if keep { "keep" } else { "account" });
    if let Some(d) = &c.rewrite_domain {
        match &rewrite_domain {
            Some(v) => {
                out.rewrite.comment(&format!(
                    "{label}:{}: RewriteDomain: bare names such as root become name@{v}",
                    d.line
                ));
                out.rewrite.kv("domain", v);
            }
            None => out.rewrite.comment(&format!(
                "{label}:{}: RewriteDomain={} is not a domain name and is left out",
                d.line, d.value
            )),
        }
    }
}

/// The revaliases lines ssmtp used: the last one for each user (case
/// ignored); the others get a note.
fn latest_revaliases<'r>(x: &Ctx, revs: &'r [RevLine], out: &mut Out) -> Vec<&'r RevLine> {
    let mut latest: Vec<&RevLine> = Vec::new();
    for (i, r) in revs.iter().enumerate() {
        let same = |o: &&RevLine| o.user.eq_ignore_ascii_case(&r.user);
        match revs.iter().skip(i + 1).find(same) {
            Some(later) => out.note(
                &x.rev_label,
                r.line,
                &format!(
                    "overridden by line {} for the same user (ssmtp used the last)",
                    later.line
                ),
            ),
            None => latest.push(r),
        }
    }
    latest
}

/// The address of a revaliases line, a bare name qualified with
/// `qualify_domain`; `None` (with a note) when it is not an address.
fn revalias_from(
    x: &Ctx,
    r: &RevLine,
    qualify_domain: Option<&str>,
    out: &mut Out,
) -> Option<String> {
    if is_plain_address(&r.from) {
        return Some(r.from.clone());
    }
    if !r.from.contains('@')
        && let Some(d) = qualify_domain
        && is_plain_address(&format!("{}@{d}", r.from))
    {
        return Some(format!("{}@{d}", r.from));
    }
    out.note(
        &x.rev_label,
        r.line,
        &format!(
            "the address \"{}\" for {} is not a mail address and is left out",
            r.from, r.user
        ),
    );
    None
}

/// The extra account a line's own mailhub needs, created on first use
/// (with a warning that it has no credentials); `None` when the line names
/// no hub or the main one.
fn revalias_account(
    x: &Ctx,
    r: &RevLine,
    from: &str,
    mode: TlsMode,
    extras: &mut Vec<Extra>,
    out: &mut Out,
) -> Option<String> {
    let (h, p) = r.hub.as_ref()?;
    let p = p.unwrap_or(x.port);
    if h.eq_ignore_ascii_case(&x.host) && p == x.port {
        return None;
    }
    let key = (h.to_ascii_lowercase(), p);
    let idx = match extras.iter().position(|e| e.key == key) {
        Some(i) => i,
        None => {
            let n = out.unique_name(&account_name_for_host(h));
            out.warn(&format!(
                "Account \"{n}\" ({}:{}) has no credentials yet: \
                 fill in its user and password_file.",
                x.rev_label, r.line
            ));
            let block = extra_ssmtp_account(&n, h, p, mode, from, r, &x.rev_label);
            extras.push(Extra {
                key,
                name: n,
                block,
                senders: Vec::new(),
                from: from.to_string(),
            });
            extras.len() - 1
        }
    };
    extras.get_mut(idx).map(|e| {
        e.senders.push(r.user.clone());
        e.senders.push(from.to_string());
        e.name.clone()
    })
}

/// revaliases: per-user sending addresses, possibly through other hubs,
/// which become extra accounts (returned, to be finished last).
fn revalias_lines(x: &Ctx, revs: &[RevLine], mode: TlsMode, out: &mut Out) -> Vec<Extra> {
    let qualify_domain = x.rewrite_domain.clone().or(x.hostname_fqdn.clone());
    let mut extras: Vec<Extra> = Vec::new();
    let mut keep_warned = false;
    for r in latest_revaliases(x, revs, out) {
        let Some(from) = revalias_from(x, r, qualify_domain.as_deref(), out) else {
            continue;
        };
        if x.keep && !keep_warned {
            keep_warned = true;
            out.warn(
                "With from_policy = \"keep\" (FromLineOverride=YES) mailhop ignores \
                 [rewrite.revaliases]; ssmtp used them only for mail without a From \
                 line. The senders lists of extra accounts still route those users.",
            );
        }
        let account = revalias_account(x, r, &from, mode, &mut extras, out);
        let via = r.hub.as_ref().map_or(String::new(), |(h, p)| match p {
            Some(p) => format!(" via {h}:{p}"),
            None => format!(" via {h}"),
        });
        out.revaliases.comment(&format!(
            "{}:{}: {} sends as {}{via}",
            x.rev_label, r.line, r.user, r.from
        ));
        let value = match account {
            Some(a) => Value::InlineTable([("from", from), ("account", a)].into_iter().collect()),
            None => Value::from(from),
        };
        out.revaliases.kv(&r.user, value);
    }
    extras
}

/// The extra accounts, with what the administrator must fill in.
fn finish_extras(x: &Ctx, extras: Vec<Extra>, out: &mut Out) {
    let keep = x.keep;
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
}

/// root= as the alias of root.
fn root_alias(x: &Ctx, out: &mut Out) {
    let c = x.c;
    let label = &x.label;
    // `root=,` names nobody: the configuration refuses an alias without a
    // target, so it is left out like an empty root=.
    let names_someone = |v: &str| v.split(',').any(|t| !t.trim().is_empty());
    if let Some(r) = c.root.as_ref().filter(|r| names_someone(&r.value)) {
        {
            out.aliases_map.comment(&format!(
                "{label}:{}: root=. ssmtp sent mail for root and every other system \
                 account (user ID below 1000) here; mailhop maps only the names listed \
                 in this table, so add others (www-data, postmaster, ...) as needed.",
                r.line
            ));
            out.aliases_map.kv("root", &r.value);
        }
    }
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
    main_mode: TlsMode,
    from: &str,
    r: &RevLine,
    rev_label: &str,
) -> Block {
    let mode = match port {
        465 => TlsMode::Implicit,
        587 => TlsMode::StartTls,
        _ if is_loopback(host) => TlsMode::None,
        _ if main_mode == TlsMode::None => TlsMode::StartTls,
        _ => main_mode,
    };
    let mut b = Block::default();
    b.comment(&format!(
        "{rev_label}:{}: a second smarthost, {host}:{port}, used for {}. ssmtp sent \
         it the same AuthUser and AuthPass as the first; if it really accepted them, \
         copy user and password_file from above, otherwise fill in its own.",
        r.line, r.user
    ));
    b.kv("name", name);
    b.kv("host", host);
    b.kv("port", i64::from(port));
    b.comment(&format!(
        "check this: chosen by the port; ssmtp used the same TLS setting as for the \
         first account ({})",
        main_mode.name()
    ));
    b.kv("tls", mode.name());
    b.kv("from", from);
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
                let (h, p) = mailhub(&v).map_err(|m| ImportError::at(conf_name, n, m))?;
                if let Some(p) = p {
                    c.port = Some(src(p, n));
                }
                c.mailhub = Some(src(h, n));
            }
            "remoteport" => {
                let port = parse_port(&v).ok_or_else(|| {
                    ImportError::at(
                        conf_name,
                        n,
                        format!("RemotePort \"{v}\" is not a port number"),
                    )
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
                    c.auth_method = Some(src(AuthMethod::parse(&v), n));
                }
            }
            _ => out.note(label, n, &no_equivalent(key, &lower)),
        }
    }
    Ok(c)
}

/// `host[:port]` of a mailhub= line.
fn mailhub(v: &str) -> Result<(String, Option<u16>), String> {
    let (h, p) = match v.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (v, None),
    };
    if h.is_empty() {
        return Err("mailhub names no host".into());
    }
    let port = match p {
        Some(p) => Some(
            parse_port(p).ok_or_else(|| format!("mailhub port \"{p}\" is not a port number"))?,
        ),
        None => None,
    };
    Ok((h.to_string(), port))
}

/// The note for an ssmtp.conf key mailhop has no equivalent for; `lower`
/// is `key` in lower case.
fn no_equivalent(key: &str, lower: &str) -> String {
    match lower {
        "tls_ca_dir" => "TLS_CA_Dir=… has no mailhop equivalent: mailhop trusts the system's \
                         certificate store, or the one file of tls_ca_file"
            .into(),
        "addheader" => {
            "AddHeader=… has no mailhop equivalent: mailhop does not add fixed header fields".into()
        }
        "debug" => "Debug=… has no mailhop equivalent: run mailhop with -v for a transcript \
                    (passwords are hidden)"
            .into(),
        "useoldauth" => {
            "UseOldAUTH=… has no mailhop equivalent: mailhop speaks AUTH LOGIN the standard way"
                .into()
        }
        _ => format!("{key}=… has no mailhop equivalent: it is not an ssmtp setting mailhop knows"),
    }
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
        // Any whitespace separates, as in ssmtp.conf values: a vertical tab
        // left inside a host name makes a file mailhop refuses to load.
        let mut fields = rest
            .split(|c: char| c == ':' || c.is_whitespace())
            .filter(|f| !f.is_empty());
        let Some(from) = fields.next() else {
            continue;
        };
        // No login name has whitespace in it, so ssmtp never matched such a
        // line, and mailhop refuses it as a sender pattern.
        if user.is_empty() || user.contains(char::is_whitespace) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::test_support::*;

    const O365: &str = include_str!("../../tests/fixtures/import/ssmtp-office365.conf");
    const O365_REV: &str = include_str!("../../tests/fixtures/import/revaliases-office365");
    const GMAIL: &str = include_str!("../../tests/fixtures/import/ssmtp-gmail.conf");

    /// Found by fuzz/fuzz_targets/import_ssmtp.rs: a vertical tab inside a
    /// revaliases mailhub stayed in the host name, and the imported file
    /// did not load ("host ... is not a host name").
    #[test]
    fn revaliases_fields_split_at_any_whitespace() {
        let conf = "mailhub=smtp.example.com:587\nUseSTARTTLS=YES\n";
        let import = |rev: &str| from_ssmtp(conf, "ssmtp.conf", Some((rev, "revaliases")));
        for ws in ['\u{b}', '\u{c}', '\u{85}', '\u{2003}'] {
            let odd = import(&format!("root:a@example.com:hub.example.org{ws}:465\n"));
            assert_eq!(odd, import("root:a@example.com:hub.example.org :465\n"));
            let odd = import(&format!("root:a@example.com:hub{ws}example.org\n"));
            assert_eq!(odd, import("root:a@example.com:hub example.org\n"));
        }
        let imp = import("root:a@example.com:hub.example.org\u{b}:465\n").unwrap();
        crate::config::parse(std::path::Path::new("x.toml"), &imp.toml).unwrap();
    }

    /// Found by fuzz/fuzz_targets/import_ssmtp.rs: a revaliases user with
    /// spaces became a sender pattern the configuration refuses.
    #[test]
    fn revaliases_user_with_spaces_is_skipped() {
        let conf = "mailhub=smtp.example.com:587\nUseSTARTTLS=YES\n";
        let rev = "S - All:web@example.com:smtp.gmail.com:465\nwww-data:w@example.com\n";
        let imp = from_ssmtp(conf, "ssmtp.conf", Some((rev, "revaliases"))).unwrap();
        assert!(!imp.toml.contains("S - All"), "{}", imp.toml);
        assert!(imp.toml.contains("www-data"), "{}", imp.toml);
        crate::config::parse(std::path::Path::new("x.toml"), &imp.toml).unwrap();
    }

    /// Found by fuzz/fuzz_targets/import_ssmtp.rs: `root=,` became an alias
    /// with no target, which the configuration refuses.
    #[test]
    fn root_of_only_commas_is_no_alias() {
        let imp = from_ssmtp("mailhub=mail.example.org\nroot=,\n", "ssmtp.conf", None).unwrap();
        crate::config::parse(std::path::Path::new("x.toml"), &imp.toml).unwrap();
        let imp = from_ssmtp(
            "mailhub=mail.example.org\nroot=,a@b.c\n",
            "ssmtp.conf",
            None,
        )
        .unwrap();
        assert!(imp.toml.contains("root = \",a@b.c\""), "{}", imp.toml);
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
}
