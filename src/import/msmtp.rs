//! msmtp: an msmtprc.

use super::*;

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
    b.kv("name", name);
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
    b.kv("host", &host);
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
        (true, true) => TlsMode::StartTls,
        (true, false) => TlsMode::Implicit,
        (false, _) if is_loopback(&host) => {
            b.comment(
                "tls is off, to a server on this machine, the one place mailhop allows plain text",
            );
            TlsMode::None
        }
        (false, _) => {
            let m = if port == 465 {
                TlsMode::Implicit
            } else {
                TlsMode::StartTls
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
    b.kv("tls", mode.name());
    if port != mode.default_port() || explicit_port.is_some() {
        if explicit_port.is_none() {
            b.comment(
                "msmtp's default port; 587 (the submission port) is better if the server offers it",
            );
        }
        b.kv("port", i64::from(port));
    }
    if mode != TlsMode::None {
        msmtp_tls(a, name, &mut b, ctx, out);
    }

    // Sender address and the patterns that select the account.
    let (from, senders) = msmtp_from(a, name, &mut b, ctx, out);
    b.kv("from", &from);
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
        b.kv("timeout", i64::try_from(secs).unwrap_or(86_400));
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
                b.kv("tls_fingerprint", format!("sha256:{}", bytes.join(":")));
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
                    Some(p) => b.kv("tls_ca_file", &p),
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
                    b.kv("tls_cert_file", &c);
                    b.kv("tls_key_file", &k);
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
        b.kv("user", u);
    }
    let logs_in = match (method, user) {
        ("off", None) => false,
        ("off", Some(_)) => {
            b.comment(
                "msmtp logs in only with auth on, which this account does not set, so it \
                 never sent the user name and password; delete this line to log in",
            );
            b.kv("auth", "none");
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
            b.kv("auth", m);
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
            b.kv("auth", "xoauth2");
            true
        }
        ("external", Some(_)) => {
            b.comment(&format!(
                "{label}:{line}: auth external (the client certificate is the login); \
                 mailhop has no AUTH EXTERNAL, so it sends only the certificate"
            ));
            b.kv("auth", "none");
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
            b.kv("password_command", &e.value);
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
            out.top.kv("hostname", &v);
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
                    Some(p) => out.top.kv("log_file", &p),
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
        out.top.kv("syslog", on);
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
    out.rewrite
        .kv("from_policy", if account { "account" } else { "keep" });
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
            out.rewrite.kv("domain", &v);
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
        out.rewrite.kv("domain", d.to_ascii_lowercase());
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
            Some(p) => out.aliases.kv("file", &p),
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
pub(super) fn fingerprint_bytes(f: &str) -> Option<Vec<String>> {
    let hex: String = f.chars().filter(|c| *c != ':' && *c != ' ').collect();
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.chars().all(|c| c.is_ascii_hexdigit())
    {
        return None;
    }
    let chars: Vec<char> = hex.to_ascii_uppercase().chars().collect();
    Some(chars.chunks(2).map(|p| p.iter().collect()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::test_support::*;

    const MSMTPRC: &str = include_str!("../../tests/fixtures/import/msmtprc");

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
}
