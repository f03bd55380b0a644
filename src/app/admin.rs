use super::stamp::unix_secs;
use std::io;
use std::path::{Path, PathBuf};

use crate::cli::{self};
use crate::exit::{self, Exit};

use super::env::*;
use super::failure::*;

/// `mailhop dkim check`: the configured entries (or one), against DNS.
pub(super) fn dkim_check(
    env: &Env,
    domain: Option<String>,
    selector: Option<String>,
    nameserver: Option<std::net::SocketAddr>,
) -> Result<Exit, Failure> {
    let entries: Vec<crate::dkim::Settings> = env
        .config
        .dkim
        .iter()
        .filter(|s| {
            domain
                .as_deref()
                .is_none_or(|d| s.domain.eq_ignore_ascii_case(d))
        })
        .filter(|s| {
            selector
                .as_deref()
                .is_none_or(|x| s.selector.eq_ignore_ascii_case(x))
        })
        .cloned()
        .collect();
    if entries.is_empty() && (domain.is_some() || selector.is_some()) {
        return Err(Failure::new(
            Exit::Config,
            format!(
                "no [[dkim]] entry in {} matches {}{}",
                config_name(env),
                domain
                    .as_deref()
                    .map(|d| format!("--domain {d} "))
                    .unwrap_or_default(),
                selector
                    .as_deref()
                    .map(|s| format!("--selector {s}"))
                    .unwrap_or_default()
            ),
        ));
    }
    let mut out = io::stdout().lock();
    match crate::dkim::check(&entries, nameserver, env.mailhop_gid(), env.euid, &mut out) {
        Ok(crate::dkim::Verdict::Good) => Ok(Exit::Ok),
        Ok(crate::dkim::Verdict::Unknown) => Ok(Exit::TempFail),
        Ok(crate::dkim::Verdict::Bad) => Ok(Exit::Unavailable),
        Err(e) => Err(e.into()),
    }
}

/// `mailhop import ssmtp|msmtp`: prints the converted configuration on
/// stdout; warnings and the commands that create password files go to
/// stderr, so `mailhop import ssmtp > /etc/mailhop.toml` does the right
/// thing. Secrets are never printed.
pub(super) fn import(from: &cli::ImportFrom) -> Exit {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| {
            errln!("mailhop: cannot read {}: {e}", p.display());
            exit::from_io(e.kind()).max_config()
        })
    };
    let result = match from {
        cli::ImportFrom::Ssmtp { conf, revaliases } => {
            let text = match read(conf) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let rev = std::fs::read_to_string(revaliases).ok();
            let rev_name = revaliases.display().to_string();
            crate::import::from_ssmtp(
                &text,
                &conf.display().to_string(),
                rev.as_deref().map(|r| (r, rev_name.as_str())),
            )
        }
        cli::ImportFrom::Msmtp { file } => {
            let path = match file {
                Some(f) => f.clone(),
                None => {
                    let home = nix::unistd::User::from_uid(nix::unistd::getuid())
                        .ok()
                        .flatten()
                        .map(|u| u.dir);
                    let candidates: Vec<PathBuf> = home
                        .iter()
                        .flat_map(|h| [h.join(".msmtprc"), h.join(".config/msmtp/config")])
                        .chain([PathBuf::from("/etc/msmtprc")])
                        .collect();
                    match candidates.into_iter().find(|p| p.exists()) {
                        Some(p) => p,
                        None => {
                            errln!(
                                "mailhop: no msmtp configuration found; name the file: mailhop import msmtp FILE"
                            );
                            return Exit::NoInput;
                        }
                    }
                }
            };
            let text = match read(&path) {
                Ok(t) => t,
                Err(code) => return code,
            };
            crate::import::from_msmtp(&text, &path.display().to_string())
        }
    };
    match result {
        Ok(imported) => {
            out!("{}", imported.toml);
            for w in &imported.warnings {
                errln!("mailhop: warning: {w}");
            }
            for p in &imported.password_files {
                errln!(
                    "mailhop: account {}: create its password file {} with:\n    {}",
                    p.account,
                    p.path,
                    p.command_hint
                );
            }
            errln!(
                "mailhop: then check the result with `mailhop check --offline -C FILE`, and the smarthost with `mailhop check -C FILE`"
            );
            Exit::Ok
        }
        Err(e) => {
            errln!("mailhop: {e}");
            Exit::DataErr
        }
    }
}

/// `mailhop oauth login ACCOUNT`: obtains the first refresh token
/// interactively (device code for Microsoft, a browser and a loopback
/// redirect with PKCE for Google) and stores it in the token file.
pub(super) fn oauth_login(env: &Env, account: &str) -> Result<Exit, Failure> {
    // The system file's token is every user's: a user who signed in would
    // have every other user's mail sent as them.
    if env.uses_system_config() && env.uid != 0 {
        return Err(Failure::new(
            Exit::NoPerm,
            format!(
                "the accounts of {} are shared by every user; sign in for them as root \
                 (sudo mailhop oauth login {account}), or use your own configuration \
                 (-C FILE or ~/.config/mailhop/config.toml)",
                crate::config::SYSTEM_FILE
            ),
        ));
    }
    let a = named_account(env, account)?;
    let o = a.oauth.as_ref().ok_or_else(|| {
        Failure::new(
            Exit::Config,
            format!(
                "account \"{account}\" has no [account.oauth] section; see OAUTH in mailhop.toml(5)"
            ),
        )
    })?;
    let now = unix_secs(env.now);
    let mut out = io::stdout().lock();
    crate::oauth::login(o, &env.ids(), &mut out, now)?;
    Ok(Exit::Ok)
}

/// `mailhop dkim keygen`: a new key in `out` (created, never replaced),
/// and the DNS record to publish on standard output.
pub(super) fn dkim_keygen(
    domain: &str,
    selector: &str,
    algorithm: &str,
    bits: Option<u32>,
    out: Option<&Path>,
) -> Exit {
    let alg = match algorithm.parse::<crate::dkim::Algorithm>() {
        Ok(a) => a,
        Err(e) => {
            errln!("mailhop: --algorithm: {e}");
            return Exit::Usage;
        }
    };
    if alg == crate::dkim::Algorithm::Ed25519Sha256 && bits.is_some() {
        errln!("mailhop: --bits is for RSA keys; Ed25519 keys have a fixed size");
        return Exit::Usage;
    }
    let bits = bits.unwrap_or(crate::dkim::DEFAULT_RSA_BITS);
    let mut stdout = io::stdout().lock();
    match crate::dkim::keygen(domain, selector, alg, bits, out, &mut stdout) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            errln!("mailhop: {e}");
            dkim_exit(&e)
        }
    }
}
