use std::io::{self, Write};

use crate::aliases::Aliases;
use crate::cli::SendArgs;
use crate::config::LocalTransport;
use crate::exit::{self, Exit};
use crate::local::{self};
use crate::message::prepare::{self};

use super::env::*;
use super::failure::*;
use super::lookup::*;

/// `sendmail -bv`: shows what each recipient expands to and where it would
/// go, without reading or sending a message.
pub(super) fn verify(env: &Env, args: &SendArgs) -> Result<Exit, Failure> {
    let (aliases, warnings) = load_aliases(env)?;
    for w in &warnings {
        errln!("mailhop: {w}");
    }
    let lookup = Lookup {
        env,
        aliases: &aliases,
    };
    if args.recipients.is_empty() {
        return Err(Failure::new(
            Exit::Usage,
            "-bv needs recipient addresses on the command line (it reads no message)",
        ));
    }
    // The account is chosen as for a real message: by the revaliases entry
    // of the sender or the invoking user, else by the sender.
    let account = prepare::account_for_sender(
        &prepare_context(env, "", ""),
        &lookup,
        args.sender.as_deref(),
    )
    .map_err(|e| Failure::new(Exit::DataErr, e.to_string()))?
    .and_then(|a| env.config.account_named(&a.name));
    let mut status = Exit::Ok;
    let mut out = io::stdout().lock();
    for r in &args.recipients {
        let items = match crate::message::address::parse_address_list(r.as_bytes()) {
            Ok(i) => i,
            Err(e) => {
                let _ = writeln!(out, "{r}: undeliverable: {e}");
                status = Exit::DataErr;
                continue;
            }
        };
        for item in items {
            let members = match item {
                crate::message::address::Address::Mailbox(m) => vec![m],
                crate::message::address::Address::Group { members, .. } => members,
            };
            for m in members {
                let finals = if lookup.is_local(m.domain.as_deref()) {
                    match lookup.expand_local(&m.local_part) {
                        Ok((a, trace)) => {
                            if env.verbose > 0 {
                                for t in trace {
                                    let _ = writeln!(out, "  {t}");
                                }
                            }
                            a.iter().map(|x| lookup.qualify(x)).collect()
                        }
                        Err(e) => {
                            let _ = writeln!(out, "{}: undeliverable: {e}", m.addr_spec());
                            status = Exit::DataErr;
                            continue;
                        }
                    }
                } else {
                    vec![m.addr_spec()]
                };
                for f in finals {
                    let domain = f.rsplit_once('@').map(|(_, d)| d);
                    let route = if env.config.local.capture || lookup.is_local(domain) {
                        let local_name = f.rsplit_once('@').map_or(f.as_str(), |(l, _)| l);
                        match verify_local_path(env, local_name) {
                            Ok(p) => format!("local delivery to {p}"),
                            Err(e) => {
                                status = Exit::NoUser;
                                format!("undeliverable: {e}")
                            }
                        }
                    } else {
                        match account {
                            Some(a) => format!("smarthost {} (account {})", a.smtp.host, a.name),
                            None => {
                                status = Exit::Unavailable;
                                "undeliverable: no smarthost configured".to_string()
                            }
                        }
                    };
                    let _ = writeln!(out, "{} -> {f}: {route}", m.addr_spec());
                }
            }
        }
    }
    Ok(status)
}

pub(super) fn verify_local_path(env: &Env, local_name: &str) -> Result<String, String> {
    let settings = &env.config.local;
    let user = nix::unistd::User::from_name(local_name).ok().flatten();
    if settings.path.starts_with('~') && user.is_none() {
        return Err(format!("no local user \"{local_name}\""));
    }
    let home = user.map(|u| u.dir);
    local::expand_path(&settings.path, local_name, home.as_deref())
        .map(|p| {
            let kind = match settings.transport {
                LocalTransport::Maildir => "Maildir",
                LocalTransport::Mbox => "mbox",
            };
            format!("{kind} {}", p.display())
        })
        .ok_or_else(|| format!("\"{local_name}\" cannot be used as a mailbox name"))
}

/// `newaliases`: there is nothing to compile; validate the aliases file and
/// the inline map and report.
pub(super) fn newaliases(env: &Env, _args: &SendArgs) -> Result<Exit, Failure> {
    let Some(file) = &env.config.aliases.file else {
        outln!(
            "mailhop: no aliases file is configured ([aliases] file in {}); {} inline aliases",
            config_name(env),
            env.config.aliases.map.len()
        );
        return Ok(Exit::Ok);
    };
    let text = std::fs::read(file).map_err(|e| {
        Failure::new(
            exit::from_io(e.kind()).max_config(),
            format!("{}: cannot read aliases file: {e}", file.display()),
        )
    })?;
    let source = file.display().to_string();
    let warnings = crate::aliases::validate(&source, &text)
        .map_err(|e| Failure::new(Exit::Config, e.to_string()))?;
    for w in &warnings {
        errln!("mailhop: {w}");
    }
    let count = Aliases::parse(&source, &text)
        .map(|p| p.aliases.len())
        .unwrap_or(0);
    outln!(
        "mailhop: {source}: {count} aliases, no errors (nothing to rebuild: mailhop reads the file directly)"
    );
    Ok(Exit::Ok)
}
