//! msmtp: an msmtprc.

use super::*;

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
                Some(a) if !a.has_own_lines && a.parents.len() == 1 => {
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
            .position(|a| a.settings.host.as_ref().is_some())
            .unwrap_or(0),
    };
    let Some(first_acc) = accounts.get(first) else {
        return Err(ImportError::whole(conf_name, "no account is defined"));
    };
    if text(&first_acc.settings.host).is_none() {
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
        if text(&a.settings.host).is_none() {
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

/// A setting's value and the line that set it (which may be in `defaults`
/// or an inherited account).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Set<T> {
    value: T,
    line: usize,
    /// Set on the account's own lines or inherited from a parent (msmtp's
    /// mask): only these are passed on to children, not the defaults.
    explicit: bool,
}

/// The value of an optional setting, for comparisons that ignore lines.
fn value<T>(s: &Option<Set<T>>) -> Option<&T> {
    s.as_ref().map(|s| &s.value)
}

/// A value set on `line` of the account (or `defaults`) being read.
fn own<T>(value: T, line: usize) -> Option<Set<T>> {
    Some(Set {
        value,
        line,
        explicit: true,
    })
}

/// The line a setting was set on, if it was.
fn line_of<T>(s: &Option<Set<T>>) -> Option<usize> {
    s.as_ref().map(|s| s.line)
}

/// A text setting that is set and not blank. msmtp trims only spaces and
/// tabs; a value of form feeds or other whitespace is still nothing, and
/// mailhop's configuration would refuse it (`host ""`).
fn text(s: &Option<Set<String>>) -> Option<&str> {
    s.as_ref()
        .map(|s| s.value.as_str())
        .filter(|v| !v.trim().is_empty())
}

/// A text setting that is set and not blank, with its line.
fn nonempty(s: &Option<Set<String>>) -> Option<&Set<String>> {
    s.as_ref().filter(|s| !s.value.trim().is_empty())
}

/// `timeout` (and the old `connect_timeout`): seconds, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeout {
    Off,
    Secs(u64),
}

/// `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Smtp,
    Lmtp,
}

/// `set_from_header` (and the old `add_missing_from_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FromHeader {
    On,
    Auto,
    Off,
}

impl FromHeader {
    fn name(self) -> &'static str {
        match self {
            FromHeader::On => "on",
            FromHeader::Auto => "auto",
            FromHeader::Off => "off",
        }
    }
}

/// `syslog`: off, or on with a facility (`on` and no argument mean
/// LOG_USER, which msmtp's default is).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Syslog {
    Off,
    On,
    Facility(String),
}

impl Syslog {
    fn parse(arg: &str) -> Option<Syslog> {
        let local = arg.len() == 10
            && arg.starts_with("LOG_LOCAL")
            && arg.ends_with(['0', '1', '2', '3', '4', '5', '6', '7']);
        match arg {
            "" | "on" => Some(Syslog::On),
            "off" => Some(Syslog::Off),
            "LOG_USER" | "LOG_MAIL" => Some(Syslog::Facility(arg.to_string())),
            _ if local => Some(Syslog::Facility(arg.to_string())),
            _ => None,
        }
    }

    fn name(&self) -> &str {
        match self {
            Syslog::Off => "off",
            Syslog::On => "on",
            Syslog::Facility(f) => f,
        }
    }
}

/// `auth`: on (any method), off, or one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    On,
    Off,
    Plain,
    Login,
    CramMd5,
    DigestMd5,
    ScramSha1,
    ScramSha256,
    Gssapi,
    External,
    Ntlm,
    Xoauth2,
    Oauthbearer,
}

impl Auth {
    const ALL: [Auth; 13] = [
        Auth::On,
        Auth::Off,
        Auth::Plain,
        Auth::Login,
        Auth::CramMd5,
        Auth::DigestMd5,
        Auth::ScramSha1,
        Auth::ScramSha256,
        Auth::Gssapi,
        Auth::External,
        Auth::Ntlm,
        Auth::Xoauth2,
        Auth::Oauthbearer,
    ];

    /// msmtp's spelling, in lower case.
    fn name(self) -> &'static str {
        match self {
            Auth::On => "on",
            Auth::Off => "off",
            Auth::Plain => "plain",
            Auth::Login => "login",
            Auth::CramMd5 => "cram-md5",
            Auth::DigestMd5 => "digest-md5",
            Auth::ScramSha1 => "scram-sha-1",
            Auth::ScramSha256 => "scram-sha-256",
            Auth::Gssapi => "gssapi",
            Auth::External => "external",
            Auth::Ntlm => "ntlm",
            Auth::Xoauth2 => "xoauth2",
            Auth::Oauthbearer => "oauthbearer",
        }
    }

    /// No argument means on; methods are case-insensitive, as in msmtp.
    fn parse(arg: &str) -> Option<Auth> {
        if arg.is_empty() {
            return Some(Auth::On);
        }
        let lower = arg.to_ascii_lowercase();
        Auth::ALL.into_iter().find(|a| a.name() == lower)
    }
}

/// Declares the settings of an msmtp account, one optional field per
/// command, with what inheritance needs to do to each of them.
macro_rules! msmtp_settings {
    ($( $field:ident : $ty:ty ),* $(,)?) => {
        /// An msmtp account's settings, by command.
        #[derive(Debug, Clone, Default)]
        struct Settings {
            $( $field: Option<Set<$ty>>, )*
            /// Commands the conversion does not know, by name; they are
            /// only reported.
            other: BTreeMap<String, Set<String>>,
        }

        impl Settings {
            /// What a new account starts from: these values, none of them
            /// passed on to its children.
            fn as_defaults(&self) -> Settings {
                let mut s = self.clone();
                $( if let Some(v) = &mut s.$field { v.explicit = false; } )*
                for v in s.other.values_mut() {
                    v.explicit = false;
                }
                s
            }

            /// Takes what `parent` set itself or inherited from its own
            /// parents.
            fn inherit(&mut self, parent: &Settings) {
                $(
                    if let Some(v) = parent.$field.as_ref().filter(|v| v.explicit) {
                        self.$field = Some(v.clone());
                    }
                )*
                for (k, v) in parent.other.iter().filter(|(_, v)| v.explicit) {
                    self.other.insert(k.clone(), v.clone());
                }
            }

            /// Whether the two would behave the same, wherever the values
            /// were set.
            fn same_values(&self, o: &Settings) -> bool {
                true $( && value(&self.$field) == value(&o.$field) )*
                    && self.other.len() == o.other.len()
                    && self
                        .other
                        .iter()
                        .all(|(k, v)| o.other.get(k).is_some_and(|w| w.value == v.value))
            }
        }
    };
}

msmtp_settings! {
    host: String,
    port: u16,
    timeout: Timeout,
    protocol: Protocol,
    domain: String,
    auto_from: bool,
    from: String,
    maildomain: String,
    auth: Auth,
    user: String,
    password: String,
    passwordeval: String,
    ntlmdomain: String,
    tls: bool,
    tls_starttls: bool,
    tls_key_file: String,
    tls_cert_file: String,
    tls_trust_file: String,
    tls_crl_file: String,
    tls_fingerprint: String,
    tls_certcheck: bool,
    tls_min_dh_prime_bits: String,
    tls_priorities: String,
    tls_host_override: String,
    tls_force_sslv3: bool,
    dsn_return: String,
    dsn_notify: String,
    set_from_header: FromHeader,
    set_date_header: String,
    set_msgid_header: String,
    remove_bcc_headers: bool,
    undisclosed_recipients: bool,
    logfile: String,
    logfile_time_format: String,
    syslog: Syslog,
    aliases: String,
    proxy_host: String,
    proxy_port: String,
    socket: String,
    source_ip: String,
    allow_from_override: bool,
    from_full_name: String,
    keepbcc: bool,
    eval: String,
}

impl Settings {
    /// The field of a command that takes `on`, `off` or nothing (on).
    fn flag_mut(&mut self, cmd: &str) -> Option<&mut Option<Set<bool>>> {
        Some(match cmd {
            "tls" => &mut self.tls,
            "tls_starttls" => &mut self.tls_starttls,
            "tls_certcheck" => &mut self.tls_certcheck,
            "auto_from" => &mut self.auto_from,
            "allow_from_override" => &mut self.allow_from_override,
            "remove_bcc_headers" => &mut self.remove_bcc_headers,
            "undisclosed_recipients" => &mut self.undisclosed_recipients,
            "keepbcc" => &mut self.keepbcc,
            "tls_force_sslv3" => &mut self.tls_force_sslv3,
            _ => return None,
        })
    }

    /// The field of a command whose argument is kept as it is.
    fn text_mut(&mut self, cmd: &str) -> Option<&mut Option<Set<String>>> {
        Some(match cmd {
            "host" => &mut self.host,
            "domain" => &mut self.domain,
            "from" => &mut self.from,
            "maildomain" => &mut self.maildomain,
            "user" => &mut self.user,
            "password" => &mut self.password,
            "passwordeval" => &mut self.passwordeval,
            "ntlmdomain" => &mut self.ntlmdomain,
            "tls_key_file" => &mut self.tls_key_file,
            "tls_cert_file" => &mut self.tls_cert_file,
            "tls_trust_file" => &mut self.tls_trust_file,
            "tls_crl_file" => &mut self.tls_crl_file,
            "tls_fingerprint" => &mut self.tls_fingerprint,
            "tls_min_dh_prime_bits" => &mut self.tls_min_dh_prime_bits,
            "tls_priorities" => &mut self.tls_priorities,
            "tls_host_override" => &mut self.tls_host_override,
            "dsn_return" => &mut self.dsn_return,
            "dsn_notify" => &mut self.dsn_notify,
            "set_date_header" => &mut self.set_date_header,
            "set_msgid_header" => &mut self.set_msgid_header,
            "logfile" => &mut self.logfile,
            "logfile_time_format" => &mut self.logfile_time_format,
            "aliases" => &mut self.aliases,
            "proxy_host" => &mut self.proxy_host,
            "proxy_port" => &mut self.proxy_port,
            "socket" => &mut self.socket,
            "source_ip" => &mut self.source_ip,
            "from_full_name" => &mut self.from_full_name,
            "eval" => &mut self.eval,
            _ => return None,
        })
    }

    /// Sets a command from line `line`, checking its argument as msmtp
    /// would and mapping the old spellings onto the current commands.
    fn apply(&mut self, cmd: &str, arg: &str, line: usize) -> Result<(), String> {
        let invalid = || format!("invalid argument \"{arg}\" for {cmd}; msmtp refuses it too");
        let on_off = || match arg {
            "" | "on" => Ok(true),
            "off" => Ok(false),
            _ => Err(invalid()),
        };
        if let Some(field) = self.flag_mut(cmd) {
            *field = own(on_off()?, line);
            return Ok(());
        }
        if let Some(field) = self.text_mut(cmd) {
            *field = own(arg.to_string(), line);
            return Ok(());
        }
        match cmd {
            "connect_timeout" | "timeout" => {
                self.timeout = own(
                    match (arg, parse_u64(arg)) {
                        ("off", _) => Timeout::Off,
                        (_, Some(t)) if t > 0 => Timeout::Secs(t),
                        _ => return Err(invalid()),
                    },
                    line,
                );
            }
            "port" => self.port = own(parse_port(arg).ok_or_else(invalid)?, line),
            "auth" => self.auth = own(Auth::parse(arg).ok_or_else(invalid)?, line),
            "protocol" => {
                self.protocol = own(
                    match arg {
                        "smtp" => Protocol::Smtp,
                        "lmtp" => Protocol::Lmtp,
                        _ => return Err(invalid()),
                    },
                    line,
                );
            }
            "set_from_header" => {
                self.set_from_header = own(
                    match arg {
                        "" | "on" => FromHeader::On,
                        "auto" => FromHeader::Auto,
                        "off" => FromHeader::Off,
                        _ => return Err(invalid()),
                    },
                    line,
                );
            }
            // The old spelling: on meant "add one if missing", which is auto.
            "add_missing_from_header" => {
                self.set_from_header = own(
                    if on_off()? {
                        FromHeader::Auto
                    } else {
                        FromHeader::Off
                    },
                    line,
                );
            }
            "add_missing_date_header" => {
                self.set_date_header = own(if on_off()? { "on" } else { "off" }.to_string(), line);
            }
            "syslog" => self.syslog = own(Syslog::parse(arg).ok_or_else(invalid)?, line),
            _ => {
                if let Some(v) = own(arg.to_string(), line) {
                    self.other.insert(cmd.to_string(), v);
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
struct MAccount {
    name: String,
    line: usize,
    parents: Vec<String>,
    settings: Settings,
    /// Whether any line of the account's own sets something.
    has_own_lines: bool,
}

/// One `account NAME [: PARENT, ...]` line.
fn account_line(arg: &str) -> Result<(String, Vec<String>), String> {
    let (name, parents) = match arg.split_once(':') {
        Some((name, list)) => (
            trim_arg(name),
            list.split(',').map(trim_arg).collect::<Vec<_>>(),
        ),
        None => (arg.to_string(), Vec::new()),
    };
    if name.is_empty() || parents.iter().any(String::is_empty) {
        return Err("missing account name".into());
    }
    if name.contains([':', ',']) {
        return Err("an account name must not contain ':' or ','".into());
    }
    Ok((name, parents))
}

/// Reads an msmtprc as msmtp does: `defaults`, `account NAME [: PARENT,
/// ...]`, one command and argument per line, `#` comments on lines of their
/// own, arguments optionally in double quotes. Accounts are resolved as they
/// are defined: a new one starts from the defaults so far, then takes what
/// its parents set.
fn parse_msmtp(conf: &str, conf_name: &str) -> Result<Vec<MAccount>, ImportError> {
    let mut defaults = Settings::default();
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
                let (name, parents) = account_line(&arg).map_err(err)?;
                if accounts.iter().any(|a| a.name == name) {
                    return Err(err(format!("account \"{name}\" is defined twice")));
                }
                let mut settings = defaults.as_defaults();
                for p in &parents {
                    let Some(parent) = accounts.iter().find(|a| &a.name == p) else {
                        return Err(err(format!(
                            "account \"{p}\" is not (yet) defined; msmtp refuses this too"
                        )));
                    };
                    settings.inherit(&parent.settings);
                }
                accounts.push(MAccount {
                    name,
                    line: n,
                    parents,
                    settings,
                    has_own_lines: false,
                });
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
                    settings: defaults.as_defaults(),
                    ..MAccount::default()
                });
                let t = Some(accounts.len() - 1);
                current = Some(t);
                t
            }
        };
        match target.and_then(|idx| accounts.get_mut(idx)) {
            None => defaults.apply(cmd, &arg, n).map_err(err)?,
            Some(a) => {
                a.settings.apply(cmd, &arg, n).map_err(err)?;
                a.has_own_lines = true;
            }
        }
    }
    Ok(accounts)
}

/// Whether two accounts would behave the same: an `account default : x`
/// without settings of its own is then just a name for `x`.
fn values_equal(a: &MAccount, b: &MAccount) -> bool {
    a.settings.same_values(&b.settings)
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
    let host = msmtp_host(a, name, ctx, out);
    b.kv("host", &host);
    if msmtp_tls_mode(a, name, &host, &mut b, out) != TlsMode::None {
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

    if let Some(t) = a.settings.timeout.as_ref()
        && let Timeout::Secs(secs) = t.value
    {
        let secs = secs.clamp(1, 86_400);
        b.comment(&format!("{label}:{}: timeout", t.line));
        b.kv("timeout", i64::try_from(secs).unwrap_or(86_400));
    }
    b
}

/// The account's host, with warnings for what mailhop cannot do on the way
/// there (sockets, proxies, LMTP).
fn msmtp_host(a: &MAccount, name: &str, ctx: &MsmtpCtx, out: &mut Out) -> String {
    let label = &ctx.label;
    let raw_host = text(&a.settings.host).unwrap_or_default();
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
            a.settings.host.as_ref().map_or(0, |v| v.line)
        ));
    }
    for (key, setting) in [
        ("socket", &a.settings.socket),
        ("proxy_host", &a.settings.proxy_host),
        ("source_ip", &a.settings.source_ip),
    ] {
        if let Some(v) = nonempty(setting) {
            out.warn(&format!(
                "{label}:{}: {key} is not supported by mailhop; account \"{name}\" \
                 connects to {host} directly.",
                v.line
            ));
        }
    }
    if let Some(v) = a.settings.proxy_port.as_ref() {
        out.note(
            label,
            v.line,
            "proxy_port has no mailhop equivalent (no SOCKS proxy)",
        );
    }
    if let Some(v) = a
        .settings
        .protocol
        .as_ref()
        .filter(|v| v.value == Protocol::Lmtp)
    {
        out.warn(&format!(
            "{label}:{}: protocol lmtp is not supported: mailhop speaks SMTP to account \"{name}\".",
            v.line
        ));
    }
    host
}

/// `tls` and `port`, from what msmtp did: its defaults are no TLS and
/// port 25 (465 for TLS from the first byte), mailhop's STARTTLS on 587.
/// Plain text becomes TLS, with a warning, except to this machine.
fn msmtp_tls_mode(a: &MAccount, name: &str, host: &str, b: &mut Block, out: &mut Out) -> TlsMode {
    let tls = value(&a.settings.tls).copied().unwrap_or(false);
    let starttls = value(&a.settings.tls_starttls).copied().unwrap_or(true);
    let explicit_port = value(&a.settings.port).copied();
    let port = explicit_port.unwrap_or(if tls && !starttls { 465 } else { 25 });
    let mode = match (tls, starttls) {
        (true, true) => TlsMode::StartTls,
        (true, false) => TlsMode::Implicit,
        (false, _) if is_loopback(host) => {
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
                if text(&a.settings.user).is_some()
                    && a.settings
                        .auth
                        .as_ref()
                        .is_some_and(|v| v.value != Auth::Off)
                {
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
    mode
}

fn msmtp_tls(a: &MAccount, name: &str, b: &mut Block, ctx: &MsmtpCtx, out: &mut Out) {
    let label = ctx.label.clone();
    msmtp_fingerprint(a, name, b, ctx, out);
    if let Some(t) = a.settings.tls_trust_file.as_ref() {
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
    if let Some(c) = a.settings.tls_certcheck.as_ref().filter(|c| !c.value) {
        out.warn(&format!(
            "{label}:{}: tls_certcheck off: msmtp accepted any certificate from {}; \
             mailhop always checks it. If the server's certificate is self-signed, pin \
             it with tls_fingerprint (its SHA-256 digest).",
            c.line,
            text(&a.settings.host).unwrap_or_default()
        ));
    }
    msmtp_client_cert(a, name, b, ctx, out);
    let s = &a.settings;
    for (key, line, why) in [
        (
            "tls_priorities",
            line_of(&s.tls_priorities),
            "mailhop uses TLS 1.2 or 1.3 with rustls's safe defaults; see tls_min_version",
        ),
        (
            "tls_min_dh_prime_bits",
            line_of(&s.tls_min_dh_prime_bits),
            "mailhop uses no finite-field Diffie-Hellman at all",
        ),
        (
            "tls_crl_file",
            line_of(&s.tls_crl_file),
            "mailhop does not read revocation lists",
        ),
        (
            "tls_force_sslv3",
            line_of(&s.tls_force_sslv3),
            "SSL 3 is never used",
        ),
    ] {
        if let Some(line) = line {
            out.note(
                &label,
                line,
                &format!("{key} has no mailhop equivalent: {why}"),
            );
        }
    }
    if let Some(v) = a
        .settings
        .tls_host_override
        .as_ref()
        .filter(|v| !v.value.is_empty())
    {
        out.warn(&format!(
            "{label}:{}: tls_host_override is not supported: mailhop checks the \
             certificate against host; set host to the name the certificate is issued \
             for, or pin it with tls_fingerprint.",
            v.line
        ));
    }
}

/// `tls_fingerprint`, kept when it is a SHA-256 digest.
fn msmtp_fingerprint(a: &MAccount, name: &str, b: &mut Block, ctx: &MsmtpCtx, out: &mut Out) {
    let label = &ctx.label;
    if let Some(src) = a
        .settings
        .tls_fingerprint
        .as_ref()
        .filter(|v| !v.value.is_empty())
    {
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
}

/// `tls_cert_file` and `tls_key_file`, which go together.
fn msmtp_client_cert(a: &MAccount, name: &str, b: &mut Block, ctx: &MsmtpCtx, out: &mut Out) {
    let label = &ctx.label;
    match (
        text(&a.settings.tls_cert_file),
        text(&a.settings.tls_key_file),
    ) {
        (Some(cert), Some(key)) => {
            let line = a.settings.tls_cert_file.as_ref().map_or(0, |v| v.line);
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
    let user = text(&a.settings.user).filter(|u| is_plain_address(u));
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
    match a.settings.from.as_ref() {
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
        None if value(&a.settings.auto_from).copied().unwrap_or(false) => (
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
    let user = text(&a.settings.user);
    if let Some(u) = user {
        b.kv("user", u);
    }
    let logs_in = msmtp_auth_method(a, name, b, ctx, out);
    if let Some(v) = a.settings.ntlmdomain.as_ref() {
        out.note(
            &label,
            v.line,
            "ntlmdomain has no mailhop equivalent (no NTLM)",
        );
    }

    msmtp_password(a, name, host, logs_in, b, ctx, out);
}

/// `auth` as mailhop's auth; whether the account logs in.
fn msmtp_auth_method(
    a: &MAccount,
    name: &str,
    b: &mut Block,
    ctx: &MsmtpCtx,
    out: &mut Out,
) -> bool {
    let label = &ctx.label;
    let user = text(&a.settings.user);
    let auth = a.settings.auth.as_ref();
    let method = auth.map_or(Auth::Off, |v| v.value);
    let line = auth.map_or(0, |v| v.line);
    match (method, user) {
        (Auth::Off, None) => false,
        (Auth::Off, Some(_)) => {
            b.comment(
                "msmtp logs in only with auth on, which this account does not set, so it \
                 never sent the user name and password; delete this line to log in",
            );
            b.kv("auth", "none");
            false
        }
        (_, None) => {
            out.note(
                label,
                line,
                "auth without user: mailhop logs in only with a user, so this account does not",
            );
            false
        }
        (Auth::On, Some(_)) => true,
        (m @ (Auth::Plain | Auth::Login | Auth::Xoauth2), Some(_)) => {
            b.comment(&format!("{label}:{line}: auth {}", m.name()));
            b.kv("auth", m.name());
            true
        }
        (Auth::Oauthbearer, Some(_)) => {
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
        (Auth::External, Some(_)) => {
            b.comment(&format!(
                "{label}:{line}: auth external (the client certificate is the login); \
                 mailhop has no AUTH EXTERNAL, so it sends only the certificate"
            ));
            b.kv("auth", "none");
            false
        }
        (Auth::Gssapi, Some(_)) => {
            out.warn(&format!(
                "{label}:{line}: GSSAPI (Kerberos) is not supported; account \"{name}\" \
                 logs in with PLAIN or LOGIN, which needs a password."
            ));
            true
        }
        (m, Some(_)) => {
            b.comment(&format!(
                "{label}:{line}: auth {} is not supported by mailhop; it uses PLAIN or \
                 LOGIN, which TLS protects",
                m.name()
            ));
            true
        }
    }
}

/// `passwordeval` or `password` as `password_command` or a password file
/// (never the password itself); a key ring hint when there is none.
fn msmtp_password(
    a: &MAccount,
    name: &str,
    host: &str,
    logs_in: bool,
    b: &mut Block,
    ctx: &MsmtpCtx,
    out: &mut Out,
) {
    let label = &ctx.label;
    let user = text(&a.settings.user);
    let eval = a
        .settings
        .passwordeval
        .as_ref()
        .filter(|v| !v.value.is_empty());
    let password = a.settings.password.as_ref().filter(|v| !v.value.is_empty());
    if let (Some(e), Some(p)) = (eval, password) {
        out.note(
            label,
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
    let Some(first) = order.first().and_then(|&i| accounts.get(i)) else {
        return;
    };
    for other in order.iter().skip(1).filter_map(|&i| accounts.get(i)) {
        let differ = global_differences(&first.settings, &other.settings);
        if !differ.is_empty() {
            out.warn(&format!(
                "In {}, account \"{}\" differs from the default account \"{}\" \
                 in {}; mailhop has these settings once for all accounts, and they are \
                 taken from the default account.",
                ctx.label,
                other.name,
                first.name,
                differ.join(", ")
            ));
        }
    }
    let s = &first.settings;
    global_hostname(s, ctx, out);
    global_logging(s, ctx, out);
    global_rewrite(s, ctx, out);
    global_aliases(s, ctx, out);
    for a in order.iter().filter_map(|&i| accounts.get(i)) {
        unsupported_notes(&a.settings, ctx, out);
    }
}

/// The per-account settings mailhop has once, which differ between `a`
/// and `b` and so cannot all be kept.
fn global_differences(a: &Settings, b: &Settings) -> Vec<&'static str> {
    [
        ("logfile", value(&a.logfile) != value(&b.logfile)),
        ("syslog", value(&a.syslog) != value(&b.syslog)),
        ("aliases", value(&a.aliases) != value(&b.aliases)),
        ("maildomain", value(&a.maildomain) != value(&b.maildomain)),
        ("domain", value(&a.domain) != value(&b.domain)),
        (
            "set_from_header",
            value(&a.set_from_header) != value(&b.set_from_header),
        ),
        (
            "allow_from_override",
            value(&a.allow_from_override) != value(&b.allow_from_override),
        ),
    ]
    .into_iter()
    .filter_map(|(k, differs)| differs.then_some(k))
    .collect()
}

/// `domain` (the EHLO name) as `hostname`, unless mailhop would then take
/// the mail domain for its own.
fn global_hostname(s: &Settings, ctx: &MsmtpCtx, out: &mut Out) {
    let label = &ctx.label;
    let Some(d) = &s.domain else {
        return;
    };
    let from_domain = text(&s.from)
        .and_then(domain_of)
        .map(str::to_ascii_lowercase);
    let maildomain = s
        .maildomain
        .as_ref()
        .filter(|m| is_domain(m.value.trim_end_matches('.')));
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

/// `logfile` and `syslog`.
fn global_logging(s: &Settings, ctx: &MsmtpCtx, out: &mut Out) {
    let label = &ctx.label;
    if let Some(l) = &s.logfile {
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
                    Some(p) => out.top.kv("log_file", p),
                    None => out.top.raw_comment(&format!("log_file = {}", toml_str(p))),
                }
            }
        }
    }
    if let Some(sl) = &s.syslog {
        let on = sl.value != Syslog::Off;
        let mail = sl.value == Syslog::Facility("LOG_MAIL".into());
        out.top.comment(&format!(
            "{label}:{}: syslog {}{}",
            sl.line,
            sl.value.name(),
            if on && !mail {
                " (mailhop logs to the mail facility)"
            } else {
                ""
            }
        ));
        out.top.kv("syslog", on);
    }
}

/// `[rewrite]`: the from policy from `set_from_header` and
/// `allow_from_override`, and the domain from `maildomain` or a `from` of
/// `%U@domain`.
fn global_rewrite(s: &Settings, ctx: &MsmtpCtx, out: &mut Out) {
    let label = &ctx.label;
    let sfh = s.set_from_header.as_ref();
    let afo = s.allow_from_override.as_ref();
    let account = sfh.is_some_and(|v| v.value == FromHeader::On) || afo.is_some_and(|v| !v.value);
    let settings = format!(
        "{} and {}",
        match sfh {
            Some(v) => format!("set_from_header {} (line {})", v.value.name(), v.line),
            None => "set_from_header auto (the default)".to_string(),
        },
        match afo {
            Some(v) => format!(
                "allow_from_override {} (line {})",
                if v.value { "on" } else { "off" },
                v.line
            ),
            None => "allow_from_override on (the default)".to_string(),
        }
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
    let pattern_domain = text(&s.from)
        .and_then(|f| f.strip_prefix("%U@"))
        .filter(|d| !d.contains('%') && is_domain(d));
    if let Some(m) = nonempty(&s.maildomain) {
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
}

/// `aliases` as `[aliases] file`.
fn global_aliases(s: &Settings, ctx: &MsmtpCtx, out: &mut Out) {
    let Some(al) = nonempty(&s.aliases) else {
        return;
    };
    let p = ctx.path(&al.value, out, al.line);
    out.aliases.comment(&format!(
        "{}:{}: aliases. msmtp rewrote only the envelope; mailhop rewrites \
         the To and Cc lines too. msmtp treats an alias named \"default\" as a \
         catch-all and mailhop does not: if the file has one, set default in \
         this table to its target instead.",
        ctx.label, al.line
    ));
    match p {
        Some(p) => out.aliases.kv("file", p),
        None => out
            .aliases
            .raw_comment(&format!("file = {}", toml_str(&al.value))),
    }
}

/// Notes for what mailhop always does, or takes per message, or cannot do,
/// and for commands it does not know.
fn unsupported_notes(s: &Settings, ctx: &MsmtpCtx, out: &mut Out) {
    let always_removes_bcc = "mailhop always removes Bcc lines";
    for (key, line, why) in [
        (
            "dsn_notify",
            line_of(&s.dsn_notify),
            "mailhop takes it per message, from sendmail's -N option",
        ),
        (
            "dsn_return",
            line_of(&s.dsn_return),
            "mailhop takes it per message, from sendmail's -R option",
        ),
        (
            "set_date_header",
            line_of(&s.set_date_header),
            "mailhop always adds a missing Date",
        ),
        (
            "set_msgid_header",
            line_of(&s.set_msgid_header),
            "mailhop always adds a missing Message-ID",
        ),
        (
            "remove_bcc_headers",
            line_of(&s.remove_bcc_headers),
            always_removes_bcc,
        ),
        ("keepbcc", line_of(&s.keepbcc), always_removes_bcc),
        (
            "undisclosed_recipients",
            line_of(&s.undisclosed_recipients),
            "mailhop does not rewrite To and Cc that way",
        ),
        (
            "logfile_time_format",
            line_of(&s.logfile_time_format),
            "mailhop's log lines carry RFC 3339 time stamps",
        ),
        (
            "from_full_name",
            line_of(&s.from_full_name),
            "mailhop uses -F or the user's full name from the password database",
        ),
        (
            "auto_from",
            line_of(&s.auto_from),
            "see from and [rewrite] above",
        ),
        (
            "eval",
            line_of(&s.eval),
            "its output is not known here, so the setting it produced is missing: add it by hand",
        ),
    ] {
        if let Some(line) = line {
            out.note(
                &ctx.label,
                line,
                &format!("{key} has no mailhop equivalent: {why}"),
            );
        }
    }
    for (k, v) in &s.other {
        out.note(
            &ctx.label,
            v.line,
            &format!("{k} has no mailhop equivalent: it is not an msmtp command mailhop knows"),
        );
    }
}

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

    /// Found by fuzz/fuzz_targets/import_msmtp.rs: a host of form feeds
    /// (msmtp trims only spaces and tabs) was written as `host = ""`, which
    /// the configuration refuses.
    #[test]
    fn blank_values_count_as_unset() {
        let e = from_msmtp("account default\nhost \u{c}\u{c}\nfrom a@b.c\n", "rc").unwrap_err();
        assert!(e.to_string().contains("has no host"), "{e}");
        let rc = "account a\nhost a.example\nfrom a@a.example\n\
                  account b\nhost \u{c}\nfrom \u{b}\n";
        let imp = from_msmtp(rc, "rc").unwrap();
        crate::config::parse(std::path::Path::new("x.toml"), &imp.toml).unwrap();
    }

    #[test]
    fn settings_are_typed_at_the_edge_and_old_spellings_map_onto_new() {
        let rc = "defaults\ntls\nport 465\n\
                  account a\nhost a.example\nauth LOGIN\nconnect_timeout 30\n\
                  add_missing_from_header on\nadd_missing_date_header off\n\
                  syslog LOG_LOCAL7\nprotocol lmtp\nfrobnicate 1\n";
        let accounts = parse_msmtp(rc, "rc").unwrap();
        let s = &accounts[0].settings;
        assert_eq!(value(&s.tls), Some(&true));
        assert_eq!(value(&s.port), Some(&465));
        assert_eq!(value(&s.auth), Some(&Auth::Login));
        assert_eq!(value(&s.timeout), Some(&Timeout::Secs(30)));
        assert_eq!(value(&s.set_from_header), Some(&FromHeader::Auto));
        assert_eq!(text(&s.set_date_header), Some("off"));
        assert_eq!(
            value(&s.syslog),
            Some(&Syslog::Facility("LOG_LOCAL7".into()))
        );
        assert_eq!(value(&s.protocol), Some(&Protocol::Lmtp));
        assert_eq!(s.other.get("frobnicate").map(|v| v.line), Some(12));
        // Defaults are not passed on to children (msmtp's mask); a
        // parent's own settings are, with the line they came from.
        assert_eq!(s.tls.as_ref().map(|v| v.explicit), Some(false));
        assert_eq!(s.auth.as_ref().map(|v| v.explicit), Some(true));
        for (line, want) in [
            ("timeout 0", "invalid argument \"0\" for timeout"),
            ("port 0", "invalid argument \"0\" for port"),
            ("auth magic", "invalid argument \"magic\" for auth"),
            ("protocol http", "invalid argument \"http\" for protocol"),
            (
                "syslog LOG_LOCAL8",
                "invalid argument \"LOG_LOCAL8\" for syslog",
            ),
            ("set_from_header maybe", "invalid argument \"maybe\""),
        ] {
            let e = parse_msmtp(&format!("account a\n{line}\n"), "rc").unwrap_err();
            assert_eq!(e.line, Some(2), "{line}");
            assert!(e.message.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn a_child_inherits_what_its_parent_set_not_the_defaults_it_saw() {
        let rc = "defaults\nport 2525\naccount base\nhost base.example\nuser u\n\
                  defaults\ntls on\naccount child : base\nfrom c@example.com\n\
                  account same : base\n";
        let accounts = parse_msmtp(rc, "rc").unwrap();
        let child = &accounts[1].settings;
        assert_eq!(text(&child.host), Some("base.example"));
        assert_eq!(child.host.as_ref().map(|v| v.line), Some(4));
        assert_eq!(value(&child.port), Some(&2525));
        assert_eq!(value(&child.tls), Some(&true));
        assert!(!values_equal(&accounts[0], &accounts[1]));
        assert!(!accounts[2].has_own_lines);
        // `same` differs from base only by the later defaults (tls on).
        assert!(!values_equal(&accounts[0], &accounts[2]));
        let mut base = accounts[0].clone();
        base.settings.tls = accounts[2].settings.tls.clone();
        assert!(values_equal(&base, &accounts[2]));
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
