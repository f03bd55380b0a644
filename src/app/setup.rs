//! `mailhop setup`: from an email address to a working configuration
//! (issue #13 §1–2). `--discover` only reports what discovery finds; the
//! rest asks what discovery could not answer (on a terminal) or takes it
//! from options (`--yes`, for Ansible and cloud-init), writes the
//! configuration through toml_edit (an existing file keeps everything but
//! the keys setup owns, comments included, and the change is shown as a
//! diff first), the password into a private file of its own, and ends by
//! running `mailhop check`.
//!
//! Setup is not a send-path command: it never uses the mailhop group, and
//! gives it up first if it was started with it.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, Value};

use crate::cli::SetupArgs;
use crate::config;
use crate::credentials::{self, Secret};
use crate::discover::net::{self, Outcome, Report};
use crate::discover::{Address, Candidate, Login, OAuthProvider, Security, Source, Step};
use crate::exit::Exit;

use super::env::drop_privileges;
use super::failure::Failure;
use super::password::read_new_password;

/// The account setup creates when none is named.
const DEFAULT_ACCOUNT: &str = "smarthost";
/// Where the system's password and token files go.
const SYSTEM_SECRETS_DIR: &str = "/etc/mailhop";
const SYSTEM_TOKEN_DIR: &str = "/var/lib/mailhop/oauth";

/// The first lines of a configuration file setup creates.
const NEW_FILE_HEADER: &str = "\
# mailhop.toml(5), written by `mailhop setup`.
#
# Edit freely: a later `mailhop setup` changes only the keys it owns (the
# [[account]] it is given and the [aliases.map] entries it is given) and
# keeps everything else, comments included. No secret is ever kept in this
# file: the password lives in the account's password_file.
# Check the file with `mailhop check --offline`.
";

pub(super) fn setup(args: &SetupArgs) -> Exit {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            errln!("mailhop: {}", e.message);
            e.exit
        }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::new(Exit::Usage, message)
}

fn run(args: &SetupArgs) -> Result<Exit, Failure> {
    let setid = nix::unistd::getegid() != nix::unistd::getgid()
        || nix::unistd::geteuid() != nix::unistd::getuid();
    if setid {
        drop_privileges().map_err(|e| {
            Failure::new(Exit::OsErr, format!("cannot drop the mailhop group: {e}"))
        })?;
    }
    let mut ui = Ui::new(args)?;
    let address = match &args.address {
        Some(a) => a.clone(),
        None => ui.ask("Your email address", None)?,
    };
    let address = Address::parse(&address).map_err(usage)?;
    if args.discover {
        let found = discover(args, &address)?;
        print_candidates(&found);
        return Ok(if found.is_empty() {
            Exit::Unavailable
        } else {
            Exit::Ok
        });
    }
    let plan = Plan::gather(args, address, &mut ui)?;
    plan.apply(args, &mut ui)
}

/// Every answer, before anything is written.
struct Plan {
    address: Address,
    server: Candidate,
    target: Target,
    account: String,
    login: LoginPlan,
    aliases: Vec<(String, String)>,
    dkim: Option<DkimPlan>,
}

impl Plan {
    fn gather(args: &SetupArgs, address: Address, ui: &mut Ui) -> Result<Plan, Failure> {
        let mut server = choose_server(args, &address, ui)?;
        if let Some(user) = &args.user {
            if !crate::discover::plain_text(user, 256) {
                return Err(usage(format!("--user {user:?} is empty or invalid")));
            }
            server.username = Some(user.clone());
        }
        let target = Target::new(args)?;
        let account = account_name(args)?;
        let login = choose_login(args, &server, &account, &target, ui)?;
        let aliases = choose_aliases(args, &address, ui)?;
        let dkim = choose_dkim(args, &address, &target, ui)?;
        Ok(Plan {
            address,
            server,
            target,
            account,
            login,
            aliases,
            dkim,
        })
    }

    /// The new text of the configuration file, validated.
    fn text(&self, old: Option<&str>) -> Result<String, Failure> {
        let edit = Edit {
            account: &self.account,
            address: &self.address,
            server: &self.server,
            login: &self.login,
            aliases: &self.aliases,
            dkim: self.dkim.as_ref(),
        };
        let path = &self.target.config;
        let new = match old {
            Some(text) => edit_config(text, &edit),
            None => new_config(&edit),
        }
        .map_err(|e| Failure::new(Exit::Config, format!("{}: {e}", path.display())))?;
        config::parse(path, &new).map_err(|e| {
            Failure::new(
                Exit::Software,
                format!("the configuration setup made is not valid, nothing written: {e}"),
            )
        })?;
        Ok(new)
    }

    /// Shows the diff, writes on confirmation, then signs in and checks.
    fn apply(&self, args: &SetupArgs, ui: &mut Ui) -> Result<Exit, Failure> {
        let path = &self.target.config;
        let old = read_existing(path)?;
        let new = self.text(old.as_deref())?;
        show_diff(path, old.as_deref().unwrap_or(""), &new);
        if args.dry_run {
            outln!("--dry-run: nothing written");
            return Ok(Exit::Ok);
        }
        let new_secret = matches!(
            self.login,
            LoginPlan::Password {
                secret: Some(_),
                ..
            }
        );
        let new_key = self.dkim.as_ref().is_some_and(|d| !d.key_file.exists());
        if old.as_deref() == Some(new.as_str()) && !new_secret && !new_key {
            outln!("{}: already up to date", path.display());
        } else {
            if !ui.confirm(&format!("Write {}?", path.display()), true)? {
                outln!("nothing written");
                return Ok(Exit::Ok);
            }
            if let Some(d) = &self.dkim {
                make_dkim_key(d, &self.address, &self.target)?;
            }
            write_all(&self.target, &self.login, old.is_some(), &new)?;
        }
        after_write(args, &self.account, &self.target, &self.login, ui)
    }
}

// ---------------------------------------------------------------------------
// Questions

/// Asks on the terminal, or takes the default under `--yes`.
struct Ui {
    interactive: bool,
}

impl Ui {
    fn new(args: &SetupArgs) -> Result<Ui, Failure> {
        let terminal = io::stdin().is_terminal() && io::stderr().is_terminal();
        if !args.yes && !args.discover && !args.dry_run && !terminal {
            return Err(usage(
                "standard input is not a terminal: give the answers as options and add --yes \
                 (see mailhop(8), SETUP)",
            ));
        }
        Ok(Ui {
            interactive: !args.yes && terminal,
        })
    }

    /// One line of text; `default` when the answer is empty. Without a
    /// terminal the default is the answer, and no default is an error.
    fn ask(&mut self, question: &str, default: Option<&str>) -> Result<String, Failure> {
        if !self.interactive {
            return default.map(str::to_string).ok_or_else(|| {
                usage(format!(
                    "{question}: no answer given (and no terminal to ask)"
                ))
            });
        }
        loop {
            match default {
                Some(d) if !d.is_empty() => err!("{question} [{d}]: "),
                _ => err!("{question}: "),
            }
            let answer = self.line(question)?;
            match (answer.is_empty(), default) {
                (false, _) => return Ok(answer),
                (true, Some(d)) => return Ok(d.to_string()),
                (true, None) => continue,
            }
        }
    }

    fn confirm(&mut self, question: &str, default: bool) -> Result<bool, Failure> {
        if !self.interactive {
            return Ok(default);
        }
        let hint = if default { "Y/n" } else { "y/N" };
        loop {
            err!("{question} ({hint}) ");
            let answer = self.line(question)?;
            match answer.to_ascii_lowercase().as_str() {
                "" => return Ok(default),
                "y" | "yes" => return Ok(true),
                "n" | "no" => return Ok(false),
                _ => errln!("Please answer y or n."),
            }
        }
    }

    /// One line from the terminal, trimmed; end of input is an error.
    fn line(&mut self, question: &str) -> Result<String, Failure> {
        let _ = io::stderr().flush();
        let mut line = String::new();
        let n = io::stdin()
            .lock()
            .take(4096)
            .read_line(&mut line)
            .map_err(|e| Failure::new(Exit::IoErr, format!("cannot read the answer: {e}")))?;
        if n == 0 {
            return Err(usage(format!("{question}: no answer (end of input)")));
        }
        Ok(line.trim().to_string())
    }
}

// ---------------------------------------------------------------------------
// The server

fn discover(args: &SetupArgs, address: &Address) -> Result<Vec<Candidate>, Failure> {
    let only = args
        .only
        .as_deref()
        .map(str::parse::<Step>)
        .transpose()
        .map_err(|e| usage(format!("--only: {e}")))?;
    let opts = net::Options {
        nameserver: args.nameserver,
        ca_file: args.ca_file.clone(),
        https_port: args.https_port,
        timeout: Duration::from_secs(args.timeout),
        only,
    };
    outln!("Looking for the submission server of {}:", address.full());
    let mut print = |r: &Report| {
        outln!(
            "  {}: {}: {}",
            r.step.name(),
            r.asked,
            outcome_text(&r.outcome)
        );
        let _ = io::stdout().flush();
    };
    let found =
        net::discover(address, &opts, &mut print).map_err(|e| Failure::new(Exit::TempFail, e))?;
    Ok(dedup(found))
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Found(c) => {
            let list: Vec<String> = c.iter().map(Candidate::summary).collect();
            format!("found {}", list.join("; "))
        }
        Outcome::Nothing(why) => format!("nothing: {why}"),
        Outcome::Failed(why) => format!("failed: {why}"),
    }
}

/// The same server found by several steps is offered once, from the
/// first step that found it.
fn dedup(found: Vec<Candidate>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    for c in found {
        if !out
            .iter()
            .any(|o| o.host == c.host && o.port == c.port && o.security == c.security)
        {
            out.push(c);
        }
    }
    out
}

fn print_candidates(found: &[Candidate]) {
    if found.is_empty() {
        outln!("No submission server found. Give it with `mailhop setup --host HOST --port PORT`.");
        return;
    }
    outln!("Found:");
    for (i, c) in found.iter().enumerate() {
        outln!("  {}. {}", i.saturating_add(1), c.summary());
        let trust = if c.source.authenticated() {
            "verified HTTPS under the address's domain"
        } else {
            "plain DNS, which can be forged: a suggestion, confirm it"
        };
        outln!("     from {} ({trust})", c.source);
        if let Some(note) = c.note {
            outln!("     note: {note}");
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A server mailhop can use: a login it speaks, and TLS unless loopback.
fn usable(c: &Candidate) -> bool {
    c.login != Login::Unsupported && (c.security != Security::Plain || is_loopback(&c.host))
}

fn given_server(args: &SetupArgs, host: &str, address: &Address) -> Result<Candidate, Failure> {
    let host = crate::discover::host_name(host)
        .or_else(|| is_loopback(host).then(|| host.to_string()))
        .ok_or_else(|| usage(format!("--host {host:?} is not a host name")))?;
    let security = match args.tls.as_deref() {
        Some("starttls") => Security::StartTls,
        Some("implicit") => Security::Implicit,
        Some("none") if is_loopback(&host) => Security::Plain,
        Some(other) => {
            return Err(usage(format!(
                "--tls {other:?}: starttls or implicit (none only for a loopback host)"
            )));
        }
        None if args.port == Some(465) => Security::Implicit,
        None => Security::StartTls,
    };
    let port = args.port.unwrap_or(match security {
        Security::Implicit => 465,
        Security::StartTls => 587,
        Security::Plain => 25,
    });
    let login = if args.oauth {
        oauth_provider_for(&host).map_or(Login::Password, Login::OAuth)
    } else {
        Login::Password
    };
    Ok(Candidate {
        host,
        port,
        security,
        login,
        username: Some(address.full()),
        source: Source::Given,
        note: None,
    })
}

fn choose_server(args: &SetupArgs, address: &Address, ui: &mut Ui) -> Result<Candidate, Failure> {
    if let Some(host) = &args.host {
        return given_server(args, host, address);
    }
    let found = discover(args, address)?;
    print_candidates(&found);
    let usable: Vec<Candidate> = found.into_iter().filter(usable).collect();
    if usable.is_empty() {
        return Err(Failure::new(
            Exit::Unavailable,
            format!(
                "no submission server mailhop can use was found for {}; give it with --host \
                 (and --port, --tls)",
                address.domain
            ),
        ));
    }
    let pick = if ui.interactive {
        let answer = ui.ask("Use which server (number)", Some("1"))?;
        answer
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|n| *n < usable.len())
            .ok_or_else(|| usage(format!("{answer:?} is not one of the servers listed")))?
    } else {
        0
    };
    let chosen = usable
        .into_iter()
        .nth(pick)
        .ok_or_else(|| usage("no server"))?;
    outln!("Using {} ({}).", chosen.summary(), chosen.source);
    if !chosen.source.authenticated() && !ui.interactive {
        outln!("  (a suggestion from plain DNS, accepted because of --yes)");
    }
    Ok(chosen)
}

// ---------------------------------------------------------------------------
// Where things are written

/// The configuration file and where its secrets go.
#[derive(Debug)]
struct Target {
    config: PathBuf,
    /// Written by root: secrets are root:mailhop 0640 (the group of the
    /// setgid install), else the user's own, 0600.
    system: bool,
    secrets_dir: PathBuf,
    token_dir: PathBuf,
}

impl Target {
    fn new(args: &SetupArgs) -> Result<Target, Failure> {
        let system = nix::unistd::geteuid().is_root();
        let config = match (&args.config, system) {
            (Some(p), _) => p.clone(),
            (None, true) => PathBuf::from(config::SYSTEM_FILE),
            (None, false) => dirs::config_dir()
                .map(|d| d.join("mailhop").join("config.toml"))
                .ok_or_else(|| usage("no home directory: give the file with -C"))?,
        };
        let is_system_file = config == Path::new(config::SYSTEM_FILE);
        let beside = config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let (secrets_dir, token_dir) = if is_system_file {
            (
                PathBuf::from(SYSTEM_SECRETS_DIR),
                PathBuf::from(SYSTEM_TOKEN_DIR),
            )
        } else {
            (beside.clone(), beside)
        };
        Ok(Target {
            config,
            system,
            secrets_dir,
            token_dir,
        })
    }

    /// The mailhop group, for files the setgid install must read.
    fn group(&self) -> Option<nix::unistd::Gid> {
        if !self.system {
            return None;
        }
        nix::unistd::Group::from_name("mailhop")
            .ok()
            .flatten()
            .map(|g| g.gid)
    }
}

fn account_name(args: &SetupArgs) -> Result<String, Failure> {
    let name = args.account.as_deref().unwrap_or(DEFAULT_ACCOUNT);
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(usage(format!(
            "--account {name:?}: letters, digits, - _ and . only"
        )));
    }
    Ok(name.to_string())
}

// ---------------------------------------------------------------------------
// The login

/// How the account logs in, and what setup writes for it.
enum LoginPlan {
    /// `secret: None` keeps the password file already there.
    Password {
        secret: Option<Secret>,
        file: PathBuf,
    },
    OAuth(OAuthKeys),
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OAuthKeys {
    provider: OAuthProvider,
    client_id: String,
    tenant: Option<String>,
    token_file: PathBuf,
}

fn oauth_provider_for(host: &str) -> Option<OAuthProvider> {
    match host {
        "smtp.office365.com" | "smtp-mail.outlook.com" => Some(OAuthProvider::Microsoft),
        "smtp.gmail.com" => Some(OAuthProvider::Google),
        _ => None,
    }
}

/// An identifier that goes into the file: printable, no quotes to break.
fn plain_id(what: &str, s: &str) -> Result<String, Failure> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(usage(format!(
            "{what} {s:?}: letters, digits, - _ and . only"
        )))
    }
}

fn choose_login(
    args: &SetupArgs,
    server: &Candidate,
    account: &str,
    target: &Target,
    ui: &mut Ui,
) -> Result<LoginPlan, Failure> {
    let offered = match server.login {
        Login::OAuth(p) => Some(p),
        _ => oauth_provider_for(&server.host),
    };
    let oauth = args.oauth
        || (args.password_file.is_none()
            && offered.is_some()
            && ui.interactive
            && ui.confirm("Sign in with OAuth2 instead of a password", true)?);
    if oauth {
        let provider = offered.ok_or_else(|| {
            usage(format!(
                "--oauth: mailhop signs in with OAuth2 to Microsoft 365 and Google only, not {}",
                server.host
            ))
        })?;
        return oauth_plan(args, provider, account, target, ui).map(LoginPlan::OAuth);
    }
    let file = target.secrets_dir.join(format!("{account}.password"));
    if let Some(source) = &args.password_file {
        let secret = read_password_source(source, account)?;
        return Ok(LoginPlan::Password {
            secret: Some(secret),
            file,
        });
    }
    if server.login == Login::None {
        return Ok(LoginPlan::None);
    }
    // Run again (dpkg-reconfigure, a playbook) without a password: the
    // one written last time stays.
    if !ui.interactive && file.is_file() {
        outln!("keeping the password in {}", file.display());
        return Ok(LoginPlan::Password { secret: None, file });
    }
    if !ui.interactive {
        return Err(usage(
            "the server wants a password: give --password-file FILE (- for standard input), \
             or --oauth",
        ));
    }
    let secret = read_new_password(account)?;
    Ok(LoginPlan::Password {
        secret: Some(secret),
        file,
    })
}

/// The `[account.oauth]` keys: the client ID is the one thing setup
/// cannot find out.
fn oauth_plan(
    args: &SetupArgs,
    provider: OAuthProvider,
    account: &str,
    target: &Target,
    ui: &mut Ui,
) -> Result<OAuthKeys, Failure> {
    let client_id = match &args.client_id {
        Some(id) => id.clone(),
        None => ui.ask("OAuth client (application) ID", None).map_err(|_| {
            usage("--oauth needs --client-id: the ID of your app registration or OAuth client")
        })?,
    };
    Ok(OAuthKeys {
        provider,
        client_id: plain_id("--client-id", &client_id)?,
        tenant: args
            .tenant
            .as_deref()
            .map(|t| plain_id("--tenant", t))
            .transpose()?,
        token_file: target.token_dir.join(format!("{account}.token")),
    })
}

/// The first line of `source`, or of standard input for `-`.
fn read_password_source(source: &Path, account: &str) -> Result<Secret, Failure> {
    if source == Path::new("-") {
        return read_new_password(account);
    }
    let fail = |e: &dyn std::fmt::Display| {
        Failure::new(
            Exit::NoInput,
            format!("--password-file {}: {e}", source.display()),
        )
    };
    let file = std::fs::File::open(source).map_err(|e| fail(&e))?;
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.take(credentials::MAX_SECRET_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(&e))?;
    if bytes.len() > credentials::MAX_SECRET_LEN {
        return Err(fail(&"longer than 64 KiB"));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| fail(&"not UTF-8"))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(fail(&"the first line is empty"));
    }
    Ok(Secret::new(line.to_string()))
}

fn choose_aliases(
    args: &SetupArgs,
    address: &Address,
    ui: &mut Ui,
) -> Result<Vec<(String, String)>, Failure> {
    let mut out = Vec::new();
    for a in &args.aliases {
        let (name, to) = a
            .split_once('=')
            .ok_or_else(|| usage(format!("--alias {a:?}: NAME=ADDRESS")))?;
        let name = plain_id("--alias", name.trim())?;
        let to = to.trim();
        if !crate::discover::plain_text(to, 998) {
            return Err(usage(format!(
                "--alias {a:?}: the address is empty or invalid"
            )));
        }
        out.push((name, to.to_string()));
    }
    if ui.interactive && !out.iter().any(|(n, _)| n == "root") {
        let to = ui.ask("Where should root's mail go", Some(&address.full()))?;
        out.push(("root".to_string(), to));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The configuration file

/// What setup writes into the file.
struct Edit<'a> {
    account: &'a str,
    address: &'a Address,
    server: &'a Candidate,
    login: &'a LoginPlan,
    aliases: &'a [(String, String)],
    dkim: Option<&'a DkimPlan>,
}

/// A DKIM key for the address's domain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DkimPlan {
    selector: String,
    key_file: PathBuf,
}

fn choose_dkim(
    args: &SetupArgs,
    address: &Address,
    target: &Target,
    ui: &mut Ui,
) -> Result<Option<DkimPlan>, Failure> {
    let selector = match &args.dkim_selector {
        Some(s) => s.clone(),
        None if ui.interactive
            && ui.confirm(
                &format!("Sign outgoing mail with DKIM for {}", address.domain),
                false,
            )? =>
        {
            ui.ask("DKIM selector", Some("mailhop"))?
        }
        None => return Ok(None),
    };
    let selector = plain_id("--dkim-selector", &selector)?;
    let key_file = target
        .secrets_dir
        .join("dkim")
        .join(format!("{}.{selector}.key", address.domain));
    Ok(Some(DkimPlan { selector, key_file }))
}

/// Creates the key (never over an existing one) and prints the record.
fn make_dkim_key(d: &DkimPlan, address: &Address, target: &Target) -> Result<(), Failure> {
    let fail = |e: &dyn std::fmt::Display| Failure::new(Exit::CantCreat, format!("DKIM: {e}"));
    if d.key_file.exists() {
        outln!(
            "keeping the DKIM key {}; `mailhop dkim check` shows whether its record is published",
            d.key_file.display()
        );
        return Ok(());
    }
    if let Some(dir) = d.key_file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    }
    let mut out = io::stdout().lock();
    crate::dkim::keygen(
        &address.domain,
        &d.selector,
        crate::dkim::Algorithm::RsaSha256,
        crate::dkim::DEFAULT_RSA_BITS,
        Some(&d.key_file),
        &mut out,
    )
    .map_err(|e| fail(&e))?;
    // The set-group-ID install signs with the group's rights.
    if let Some(gid) = target.group() {
        let file = std::fs::File::open(&d.key_file).map_err(|e| fail(&e))?;
        nix::unistd::fchown(&file, None, Some(gid)).map_err(|e| fail(&e))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o640))
            .map_err(|e| fail(&e))?;
    }
    Ok(())
}

/// Sets `key` unless it already has this value, keeping the comments
/// around the old value; an unchanged key stays byte for byte.
fn set(table: &mut Table, key: &str, value: impl Into<Value>) {
    let mut value: Value = value.into();
    if let Some(old) = table.get(key).and_then(Item::as_value) {
        let bare = |v: &Value| v.clone().decorated("", "").to_string();
        if bare(old) == bare(&value) {
            return;
        }
        *value.decor_mut() = old.decor().clone();
    }
    table.insert(key, Item::Value(value));
}

/// Applies `e` to the text of a configuration file. Only the keys setup
/// owns are touched: in the `[[account]]` named `e.account` (created at
/// the end if missing) and the `[aliases.map]` entries given.
fn edit_config(text: &str, e: &Edit) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    let accounts = doc
        .entry("account")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or("`account` is not written as [[account]] tables")?;
    let index = accounts
        .iter()
        .position(|t| t.get("name").and_then(Item::as_str) == Some(e.account));
    let index = match index {
        Some(i) => i,
        None => {
            let mut t = Table::new();
            t.decor_mut().set_prefix(format!(
                "\n# Written by `mailhop setup`; the server came from {}.\n",
                source_words(&e.server.source)
            ));
            set(&mut t, "name", e.account);
            accounts.push(t);
            accounts.len().saturating_sub(1)
        }
    };
    let table = accounts
        .get_mut(index)
        .ok_or("the [[account]] table vanished")?;
    account_keys(table, e);
    alias_keys(&mut doc, e.aliases)?;
    if let Some(d) = e.dkim {
        dkim_keys(&mut doc, &e.address.domain, d)?;
    }
    Ok(doc.to_string())
}

/// A new file: the header comment, then what [`edit_config`] writes. (A
/// document of comments only would keep them after the tables.)
fn new_config(e: &Edit) -> Result<String, String> {
    Ok(format!("{NEW_FILE_HEADER}{}", edit_config("", e)?))
}

fn source_words(s: &Source) -> String {
    match s {
        Source::Given => "the command line".to_string(),
        other => other.to_string(),
    }
}

fn account_keys(t: &mut Table, e: &Edit) {
    let s = e.server;
    set(t, "host", s.host.as_str());
    set(t, "port", i64::from(s.port));
    set(t, "tls", s.security.config_value());
    set(t, "from", e.address.full());
    let user = s.username.clone().unwrap_or_else(|| e.address.full());
    match e.login {
        LoginPlan::Password { file, .. } => {
            set(t, "user", user);
            if t.get("auth").and_then(Item::as_str) != Some("auto") && t.contains_key("auth") {
                set(t, "auth", "auto");
            }
            // password_command comes first: it would shadow the file.
            t.remove("password_command");
            set(t, "password_file", file.display().to_string());
            t.remove("oauth");
        }
        LoginPlan::OAuth(o) => {
            set(t, "user", user);
            set(t, "auth", "xoauth2");
            t.remove("password_command");
            t.remove("password_file");
            oauth_keys(t, o);
        }
        LoginPlan::None => {
            t.remove("user");
            t.remove("password_command");
            t.remove("password_file");
            t.remove("oauth");
            set(t, "auth", "none");
        }
    }
}

fn oauth_keys(t: &mut Table, o: &OAuthKeys) {
    let oauth = t
        .entry("oauth")
        .or_insert(Item::Table(Table::new()))
        .as_table_mut();
    let Some(oauth) = oauth else {
        // An inline `oauth = {...}` is replaced by a table of its own.
        t.insert("oauth", Item::Table(Table::new()));
        return oauth_keys(t, o);
    };
    set(oauth, "provider", o.provider.config_value());
    set(oauth, "client_id", o.client_id.as_str());
    match &o.tenant {
        Some(tenant) => set(oauth, "tenant", tenant.as_str()),
        None => {
            oauth.remove("tenant");
        }
    }
    set(oauth, "token_file", o.token_file.display().to_string());
}

/// The `[[dkim]]` entry for the domain and selector, created at the end
/// of the entries if missing.
fn dkim_keys(doc: &mut DocumentMut, domain: &str, d: &DkimPlan) -> Result<(), String> {
    let entries = doc
        .entry("dkim")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or("`dkim` is not written as [[dkim]] tables")?;
    let index = entries.iter().position(|t| {
        t.get("domain").and_then(Item::as_str) == Some(domain)
            && t.get("selector").and_then(Item::as_str) == Some(d.selector.as_str())
    });
    let index = match index {
        Some(i) => i,
        None => {
            let mut t = Table::new();
            t.decor_mut()
                .set_prefix("\n# Written by `mailhop setup`: publish the record it printed.\n");
            set(&mut t, "domain", domain);
            set(&mut t, "selector", d.selector.as_str());
            entries.push(t);
            entries.len().saturating_sub(1)
        }
    };
    let t = entries
        .get_mut(index)
        .ok_or("the [[dkim]] table vanished")?;
    set(t, "key_file", d.key_file.display().to_string());
    Ok(())
}

fn alias_keys(doc: &mut DocumentMut, aliases: &[(String, String)]) -> Result<(), String> {
    if aliases.is_empty() {
        return Ok(());
    }
    let section = doc.entry("aliases").or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        Item::Table(t)
    });
    let section = section
        .as_table_like_mut()
        .ok_or("`aliases` is not a table")?;
    let map = section.entry("map").or_insert(Item::Table(Table::new()));
    let map = map
        .as_table_like_mut()
        .ok_or("`aliases.map` is not a table")?;
    for (name, to) in aliases {
        let value = Value::from(to.as_str());
        let same = map
            .get(name)
            .and_then(Item::as_str)
            .is_some_and(|old| old == to);
        if !same {
            map.insert(name, Item::Value(value));
        }
    }
    Ok(())
}

fn read_existing(path: &Path) -> Result<Option<String>, Failure> {
    match path.symlink_metadata() {
        Ok(m) if m.file_type().is_symlink() => Err(Failure::new(
            Exit::CantCreat,
            format!(
                "{} is a symbolic link: give the real file with -C",
                path.display()
            ),
        )),
        Ok(_) => std::fs::read_to_string(path).map(Some).map_err(|e| {
            Failure::new(
                Exit::NoInput,
                format!("cannot read {}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::new(
            Exit::NoInput,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

fn show_diff(path: &Path, old: &str, new: &str) {
    if old == new {
        return;
    }
    let name = path.display().to_string();
    let diff = similar::TextDiff::from_lines(old, new);
    let old_name = if old.is_empty() {
        "/dev/null".to_string()
    } else {
        name.clone()
    };
    out!(
        "{}",
        diff.unified_diff()
            .context_radius(2)
            .header(&old_name, &name)
    );
    let _ = io::stdout().flush();
}

// ---------------------------------------------------------------------------
// Writing

/// Writes `bytes` to `path` through a temporary file in the same directory
/// (atomic rename), with the given mode, and group when `group` is set.
fn write_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(Option<nix::unistd::Uid>, Option<nix::unistd::Gid>)>,
) -> Result<(), Failure> {
    let fail = |e: &dyn std::fmt::Display| {
        Failure::new(
            Exit::CantCreat,
            format!("cannot write {}: {e}", path.display()),
        )
    };
    if path
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        return Err(fail(&"it is a symbolic link"));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    // Created 0600 by tempfile: never readable by others, not even briefly.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail(&e))?;
    tmp.write_all(bytes).map_err(|e| fail(&e))?;
    tmp.as_file().sync_all().map_err(|e| fail(&e))?;
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(tmp.as_file(), uid, gid).map_err(|e| fail(&e))?;
    }
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail(&e))?;
    tmp.persist(path).map_err(|e| fail(&e.error))?;
    Ok(())
}

fn write_all(target: &Target, login: &LoginPlan, exists: bool, new: &str) -> Result<(), Failure> {
    let group = target.group();
    let (mode, owner) = if group.is_some() {
        (0o640, Some((None, group)))
    } else {
        (0o600, None)
    };
    // The password first: the configuration never names a missing file.
    if let LoginPlan::Password {
        secret: Some(secret),
        file,
    } = login
    {
        let mut bytes = zeroize::Zeroizing::new(secret.expose().as_bytes().to_vec());
        bytes.push(b'\n');
        write_file(file, &bytes, mode, owner)?;
        let euid = nix::unistd::geteuid().as_raw();
        credentials::open_private(file, group.map(|g| g.as_raw()), euid, false).map_err(|e| {
            Failure::new(
                Exit::Software,
                format!("{} was written but is refused: {e:?}", file.display()),
            )
        })?;
        outln!("wrote the password to {} (mode {mode:o})", file.display());
    }
    // An existing file keeps its mode and owner; a new one is private.
    let (mode, owner) = match std::fs::metadata(&target.config) {
        Ok(m) if exists => (
            m.mode() & 0o7777,
            Some((
                Some(nix::unistd::Uid::from_raw(m.uid())),
                Some(nix::unistd::Gid::from_raw(m.gid())),
            )),
        ),
        _ => (mode, owner),
    };
    // Only root may give a file away; others keep their own.
    let owner = owner.filter(|_| nix::unistd::geteuid().is_root());
    write_file(&target.config, new.as_bytes(), mode, owner)?;
    outln!("wrote {}", target.config.display());
    Ok(())
}

// ---------------------------------------------------------------------------
// After writing

fn after_write(
    args: &SetupArgs,
    account: &str,
    target: &Target,
    login: &LoginPlan,
    ui: &mut Ui,
) -> Result<Exit, Failure> {
    let config = target.config.display().to_string();
    // The token directory is left to `oauth login`, which gives it the
    // mode the shared install needs.
    if matches!(login, LoginPlan::OAuth(_)) {
        let sign_in = ui.interactive && ui.confirm("Sign in now (mailhop oauth login)", true)?;
        if !sign_in {
            outln!("Next, sign in once: mailhop oauth login {account} -C {config}");
            return Ok(Exit::Ok);
        }
        let code = run_self(&["oauth", "login", account, "-C", &config])?;
        if code != Exit::Ok {
            return Ok(code);
        }
    }
    if args.no_check {
        return Ok(Exit::Ok);
    }
    let send_test = match &args.send_test {
        Some(to) => Some(to.clone()),
        None if ui.interactive && !args.offline => {
            let to = ui.ask("Send a test message to (empty: none)", Some(""))?;
            (!to.is_empty()).then_some(to)
        }
        None => None,
    };
    let mut check = vec!["check", "-C", config.as_str()];
    if args.offline {
        check.push("--offline");
    }
    if let Some(to) = &send_test {
        check.extend(["--send-test", to.as_str()]);
    }
    outln!("Checking: mailhop {}", check.join(" "));
    let code = run_self(&check)?;
    if code == Exit::Ok && send_test.is_none() && !args.offline {
        outln!("To send a test message: mailhop check -C {config} --send-test ADDRESS");
    }
    Ok(code)
}

/// Runs this same program with `args`, on our terminal.
fn run_self(args: &[&str]) -> Result<Exit, Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(Exit::OsErr, format!("cannot find mailhop itself: {e}")))?;
    let status = std::process::Command::new(exe)
        .args(args)
        .status()
        .map_err(|e| Failure::new(Exit::OsErr, format!("cannot run mailhop: {e}")))?;
    Ok(match status.code() {
        Some(0) => Exit::Ok,
        Some(75) => Exit::TempFail,
        Some(77) => Exit::NoPerm,
        Some(78) => Exit::Config,
        Some(69) => Exit::Unavailable,
        _ => Exit::Software,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(login: Login) -> Candidate {
        Candidate {
            host: "smtp.example.com".into(),
            port: 465,
            security: Security::Implicit,
            login,
            username: Some("jane@example.com".into()),
            source: Source::Given,
            note: None,
        }
    }

    fn apply(text: &str, login: &LoginPlan, aliases: &[(String, String)]) -> String {
        let address = Address::parse("jane@example.com").unwrap();
        let s = server(Login::Password);
        let e = Edit {
            account: "smarthost",
            address: &address,
            server: &s,
            login,
            aliases,
            dkim: None,
        };
        edit_config(text, &e).unwrap()
    }

    fn password() -> LoginPlan {
        LoginPlan::Password {
            secret: Some(Secret::new("hunter2".into())),
            file: PathBuf::from("/etc/mailhop/smarthost.password"),
        }
    }

    const EXISTING: &str = "\
# My hand-written file.
hostname = \"host.example.com\"   # keep me

[[account]]
name = \"other\"        # the old relay
host = \"relay.example.net\"
from = \"x@example.net\"

[[account]]
# the one setup owns
name = \"smarthost\"
host = \"old.example.com\" # was wrong
port = 587
from = \"jane@example.com\"
password_command = \"pass show mail\"

[local]
# delivery
transport = \"maildir\"
";

    #[test]
    fn a_new_file_is_valid_and_has_no_secret() {
        let aliases = vec![("root".to_string(), "jane@example.com".to_string())];
        let address = Address::parse("jane@example.com").unwrap();
        let s = server(Login::Password);
        let login = password();
        let e = Edit {
            account: "smarthost",
            address: &address,
            server: &s,
            login: &login,
            aliases: &aliases,
            dkim: None,
        };
        let text = new_config(&e).unwrap();
        assert!(text.starts_with(NEW_FILE_HEADER), "{text}");
        assert!(!text.contains("hunter2"));
        assert!(text.contains("password_file = \"/etc/mailhop/smarthost.password\""));
        assert!(
            text.contains("[aliases.map]\nroot = \"jane@example.com\""),
            "{text}"
        );
        let c = config::parse(Path::new("x"), &text).unwrap();
        assert_eq!(c.accounts.len(), 1);
        assert_eq!(c.accounts[0].smtp.host, "smtp.example.com");
    }

    #[test]
    fn an_existing_file_keeps_everything_else() {
        let text = apply(EXISTING, &password(), &[]);
        // Untouched parts, byte for byte.
        assert!(
            text.starts_with(
                "# My hand-written file.\nhostname = \"host.example.com\"   # keep me\n\n\
             [[account]]\nname = \"other\"        # the old relay\nhost = \"relay.example.net\"\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("[local]\n# delivery\ntransport = \"maildir\"\n"),
            "{text}"
        );
        assert!(text.contains("# the one setup owns\nname = \"smarthost\"\n"));
        // The owned keys changed, the comment after the value stayed.
        assert!(
            text.contains("host = \"smtp.example.com\" # was wrong\n"),
            "{text}"
        );
        assert!(text.contains("port = 465\n"));
        assert!(!text.contains("password_command"));
        assert!(config::parse(Path::new("x"), &text).is_ok());
        // Setup run twice changes nothing the second time.
        assert_eq!(apply(&text, &password(), &[]), text);
    }

    #[test]
    fn oauth_replaces_the_password_keys() {
        let o = LoginPlan::OAuth(OAuthKeys {
            provider: OAuthProvider::Microsoft,
            client_id: "3f1c5b7e-0d2a".into(),
            tenant: Some("example.com".into()),
            token_file: PathBuf::from("/var/lib/mailhop/oauth/smarthost.token"),
        });
        let text = apply(&apply(EXISTING, &password(), &[]), &o, &[]);
        assert!(!text.contains("password_file"), "{text}");
        assert!(text.contains("auth = \"xoauth2\""));
        assert!(
            text.contains("[account.oauth]\nprovider = \"microsoft\""),
            "{text}"
        );
        assert!(config::parse(Path::new("x"), &text).is_ok(), "{text}");
        let back = apply(&text, &password(), &[]);
        assert!(!back.contains("[account.oauth]") && back.contains("auth = \"auto\""));
    }

    #[test]
    fn aliases_edit_only_their_names() {
        let existing = "[aliases]\nfile = \"/etc/aliases\"\n\n[aliases.map]\n# ops team\nops = \"a@x.org\"\nroot = \"old@x.org\" # old\n";
        let aliases = vec![("root".to_string(), "new@x.org".to_string())];
        let text = apply(existing, &LoginPlan::None, &aliases);
        assert!(text.contains("# ops team\nops = \"a@x.org\"\n"), "{text}");
        assert!(text.contains("root = \"new@x.org\""), "{text}");
    }

    #[test]
    fn names_are_checked() {
        assert!(plain_id("--client-id", "abc-1.2_x").is_ok());
        assert!(plain_id("--client-id", "a\"b").is_err());
        assert!(plain_id("--client-id", "").is_err());
        assert!(usable(&server(Login::Password)));
        assert!(!usable(&server(Login::Unsupported)));
        let mut plain = server(Login::Password);
        plain.security = Security::Plain;
        assert!(!usable(&plain));
        plain.host = "127.0.0.1".into();
        assert!(usable(&plain));
    }
}
