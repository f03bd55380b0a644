//! The edge of the program: the only layer that touches stdin, the
//! environment, the clock, the hostname, the uid and the exit status. It
//! wires the pure modules together for each invocation; `failure` maps
//! every error to one sysexits code, with a message that says what went
//! wrong, where, and what to do.
//!
//! Its one rule: never exit 0 after dropping a message. Any message that is
//! refused after it was read is saved to dead.letter first.
//!
//! One file per concern: `env` (who and where we run), `send` (the send
//! pipeline), `relay` (logging in to a smarthost), `queue_cmd` (mailq and
//! the runner), `check`, `verify` (-bv, newaliases), `admin` (import, dkim,
//! oauth, password), `lookup` (aliases and accounts for `message`),
//! `stamp` (Date and Message-ID), `failure` (errors to exit codes).

mod admin;
mod check;
mod env;
mod failure;
mod lookup;
mod password;
mod queue_cmd;
mod relay;
mod send;
mod serve;
mod stamp;
mod verify;

use std::ffi::OsString;
use std::io;

use crate::cli::{self, CliError, Invocation, SendArgs};
use crate::exit::Exit;

pub use env::SYSTEM_SPOOL;
pub use failure::exit_for;

use admin::{dkim_check, import, oauth_login};
use env::{Env, gather_env};
use failure::{Failure, dkim_exit};
use password::password_cmd;
use queue_cmd::{queue_cmd, queue_select_flush};
use send::send;
use verify::{newaliases, verify};

/// Runs one invocation from its argv and returns the exit status.
pub fn run<I: IntoIterator<Item = OsString>>(argv: I) -> Exit {
    let invocation = match cli::parse(argv) {
        Ok(i) => i,
        Err(CliError::Clap { text, is_error }) => {
            if is_error {
                eprint!("{text}");
                return Exit::Usage;
            }
            print!("{text}");
            return Exit::Ok;
        }
        Err(e) => {
            eprintln!("mailhop: {e}");
            return Exit::Usage;
        }
    };
    match invocation {
        Invocation::Version => {
            print!("{}", cli::clap_command().render_version());
            // What this build can do; optional features list here as they
            // are added (cargo features), so bug reports say what ran.
            let mut features = String::from(
                "smtp (rustls, ring), queue, dkim (rsa-sha256, ed25519-sha256), scrub, \
                 maildir, mbox",
            );
            if cfg!(feature = "keyring") {
                features.push_str(", keyring");
            }
            println!("features: {features}");
            Exit::Ok
        }
        Invocation::Import(from) => import(&from),
        Invocation::OAuth(cli::OAuthAction::Login { account, config }) => {
            let args = SendArgs {
                common: cli::Common {
                    config,
                    ..cli::Common::default()
                },
                ..SendArgs::default()
            };
            with_env(&args, |env, _| oauth_login(env, &account))
        }
        Invocation::Password(action) => password_cmd(action),
        Invocation::Completions(shell) => {
            let mut cmd = cli::clap_command();
            let mut out = io::stdout().lock();
            let shell = match shell {
                cli::Shell::Bash => clap_complete::Shell::Bash,
                cli::Shell::Zsh => clap_complete::Shell::Zsh,
                cli::Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut cmd, "mailhop", &mut out);
            Exit::Ok
        }
        Invocation::Send(args) => with_env(&args, send),
        Invocation::Smtp(args) => serve::smtp_cmd(&args),
        Invocation::Serve(a) => serve::serve_cmd(&a),
        Invocation::Verify(args) => with_env(&args, verify),
        Invocation::NewAliases(args) => with_env(&args, newaliases),
        Invocation::ListQueue(args) => with_env(&args, |env, _| {
            queue_cmd(env, &cli::QueueAction::List { json: false })
        }),
        Invocation::Dkim(cli::DkimAction::Keygen {
            domain,
            selector,
            algorithm,
            bits,
            out,
        }) => {
            let alg = match algorithm.parse::<crate::dkim::Algorithm>() {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("mailhop: --algorithm: {e}");
                    return Exit::Usage;
                }
            };
            if alg == crate::dkim::Algorithm::Ed25519Sha256 && bits.is_some() {
                eprintln!("mailhop: --bits is for RSA keys; Ed25519 keys have a fixed size");
                return Exit::Usage;
            }
            let bits = bits.unwrap_or(crate::dkim::DEFAULT_RSA_BITS);
            let mut stdout = io::stdout().lock();
            match crate::dkim::keygen(&domain, &selector, alg, bits, out.as_deref(), &mut stdout) {
                Ok(()) => Exit::Ok,
                Err(e) => {
                    eprintln!("mailhop: {e}");
                    dkim_exit(&e)
                }
            }
        }
        Invocation::Dkim(cli::DkimAction::Check {
            config,
            domain,
            selector,
            nameserver,
        }) => {
            let args = SendArgs {
                common: cli::Common {
                    config,
                    ..cli::Common::default()
                },
                ..SendArgs::default()
            };
            with_env(&args, |env, _| {
                dkim_check(env, domain, selector, nameserver)
            })
        }
        Invocation::Queue(q) => {
            let args = SendArgs {
                common: cli::Common {
                    config: q.config.clone(),
                    verbose: u8::from(q.verbose),
                    ..cli::Common::default()
                },
                ..SendArgs::default()
            };
            with_env(&args, |env, _| queue_cmd(env, &q.action))
        }
        Invocation::Check(c) => {
            let args = SendArgs {
                common: cli::Common {
                    config: c.config.clone(),
                    verbose: u8::from(c.verbose),
                    ..cli::Common::default()
                },
                ..SendArgs::default()
            };
            with_env(&args, |env, _| check::check(env, &c))
        }
        Invocation::RunQueue { args, interval } => {
            // `sendmail -q` attempts every queued message now, whatever its
            // retry time, as Postfix's (`postqueue -f`), sendmail's and
            // dma's do: it is what an administrator types after fixing the
            // smarthost. Timers use `mailhop queue run` (only what is due).
            // sendmail's -qIid, -qRrecipient and -qSsender select items by
            // substring and deliver them now; -q with a time would start a
            // daemon, which mailhop is not.
            let select = interval.as_deref().and_then(|i| {
                let (kind, value) = i.split_at_checked(1)?;
                matches!(kind, "I" | "R" | "S").then(|| (kind.to_string(), value.to_string()))
            });
            if select.is_none()
                && let Some(i) = interval.filter(|i| !i.is_empty())
            {
                eprintln!(
                    "mailhop: -q{i}: mailhop is not a daemon; flushing the queue once (schedule `mailhop queue run` with the timer or cron)"
                );
            }
            with_env(&args, |env, _| match select {
                Some((kind, value)) => queue_select_flush(env, &kind, &value),
                None => queue_cmd(env, &cli::QueueAction::Flush { ids: Vec::new() }),
            })
        }
    }
}

fn warn_all(args: &SendArgs) {
    for w in &args.warnings {
        eprintln!("{w}");
    }
}

fn with_env(args: &SendArgs, f: impl FnOnce(&Env, &SendArgs) -> Result<Exit, Failure>) -> Exit {
    warn_all(args);
    let result = gather_env(args).and_then(|env| f(&env, args));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailhop: {}", e.message);
            e.exit
        }
    }
}
