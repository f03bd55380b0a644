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

// Standard output and error may be closed or a pipe whose reader left
// (`mailq | head -2`): writing to them must never panic, and never affect
// delivery. These replace print!/eprintln! throughout `app`; a failed write
// is dropped, like the output of any Unix tool whose reader has gone.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod admin;
mod check;
mod check_dns;
mod env;
mod failure;
mod lookup;
mod password;
mod queue_cmd;
mod relay;
mod send;
mod serve;
mod setup;
mod stamp;
mod stats;
mod verify;

use std::ffi::OsString;
use std::io;

use crate::cli::{self, CliError, Invocation, SendArgs};
use crate::exit::Exit;

pub use env::SYSTEM_SPOOL;
pub use failure::exit_for;

use admin::{dkim_check, dkim_keygen, import, oauth_login};
use env::{Env, gather_env};
use failure::Failure;
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
                err!("{text}");
                return Exit::Usage;
            }
            out!("{text}");
            return Exit::Ok;
        }
        Err(e) => {
            errln!("mailhop: {e}");
            return Exit::Usage;
        }
    };
    // The set-group-ID install: only sending, -bv and the queue commands
    // use the mailhop group (for the spool and the files the system
    // configuration names). Every other command gives it up for good
    // before it touches a file (see SECURITY in mailhop(8)).
    if !needs_group(&invocation)
        && env::elevated()
        && let Err(e) = env::drop_privileges()
    {
        errln!("mailhop: cannot drop the mailhop group: {e}");
        return Exit::OsErr;
    }
    dispatch(invocation)
}

/// Runs one parsed command.
fn dispatch(invocation: Invocation) -> Exit {
    match invocation {
        Invocation::Version => version(),
        Invocation::Import(from) => import(&from),
        Invocation::OAuth(cli::OAuthAction::Login { account, config }) => {
            with_env(&args_with(config, false), |env, _| {
                oauth_login(env, &account)
            })
        }
        Invocation::Password(action) => password_cmd(action),
        Invocation::Setup(s) => setup::setup(&s),
        Invocation::Completions(shell) => completions(shell),
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
        }) => dkim_keygen(&domain, &selector, &algorithm, bits, out.as_deref()),
        Invocation::Dkim(cli::DkimAction::Check {
            config,
            domain,
            selector,
            nameserver,
        }) => with_env(&args_with(config, false), |env, _| {
            dkim_check(env, domain, selector, nameserver)
        }),
        Invocation::Queue(q) => with_env(&args_with(q.config.clone(), q.verbose), |env, _| {
            queue_cmd(env, &q.action)
        }),
        Invocation::Check(c) => with_env(&args_with(c.config.clone(), c.verbose), |env, _| {
            check::check(env, &c)
        }),
        Invocation::RunQueue { args, interval } => run_queue(&args, interval),
    }
}

/// The arguments of a `mailhop` subcommand that only names a
/// configuration file and may be verbose.
fn args_with(config: Option<std::path::PathBuf>, verbose: bool) -> SendArgs {
    SendArgs {
        common: cli::Common {
            config,
            verbose: u8::from(verbose),
            ..cli::Common::default()
        },
        ..SendArgs::default()
    }
}

fn version() -> Exit {
    out!("{}", cli::clap_command().render_version());
    // What this build can do; optional features list here as they are
    // added (cargo features), so bug reports say what ran.
    let mut features = String::from(
        "smtp (rustls, ring), queue, dkim (rsa-sha256, ed25519-sha256), scrub, maildir, mbox",
    );
    if cfg!(feature = "keyring") {
        features.push_str(", keyring");
    }
    outln!("features: {features}");
    Exit::Ok
}

fn completions(shell: cli::Shell) -> Exit {
    let mut cmd = cli::clap_command();
    let shell = match shell {
        cli::Shell::Bash => clap_complete::Shell::Bash,
        cli::Shell::Zsh => clap_complete::Shell::Zsh,
        cli::Shell::Fish => clap_complete::Shell::Fish,
    };
    // Into memory first: clap_complete panics on a closed pipe.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "mailhop", &mut script);
    let _ = io::Write::write_all(&mut io::stdout(), &script);
    Exit::Ok
}

/// `sendmail -q[…]`. It attempts every queued message now, whatever its
/// retry time, as Postfix's (`postqueue -f`), sendmail's and dma's do: it
/// is what an administrator types after fixing the smarthost. Timers use
/// `mailhop queue run` (only what is due). sendmail's -qIid, -qRrecipient
/// and -qSsender select items by substring and deliver them now; -q with a
/// time would start a daemon, which mailhop is not.
fn run_queue(args: &SendArgs, interval: Option<String>) -> Exit {
    let select = interval.as_deref().and_then(|i| {
        let (kind, value) = i.split_at_checked(1)?;
        matches!(kind, "I" | "R" | "S").then(|| (kind.to_string(), value.to_string()))
    });
    if select.is_none()
        && let Some(i) = interval.filter(|i| !i.is_empty())
    {
        errln!(
            "mailhop: -q{i}: mailhop is not a daemon; flushing the queue once (schedule `mailhop queue run` with the timer or cron)"
        );
    }
    with_env(args, |env, _| match select {
        Some((kind, value)) => queue_select_flush(env, &kind, &value),
        None => queue_cmd(env, &cli::QueueAction::Flush { ids: Vec::new() }),
    })
}

/// The commands that may keep the set-group-ID group: the ones that read
/// the system configuration to send (sendmail, -bs, `mailhop serve`, -bv)
/// or work on the shared spool (mailq, -q, `mailhop queue`).
fn needs_group(invocation: &Invocation) -> bool {
    matches!(
        invocation,
        Invocation::Send(_)
            | Invocation::Smtp(_)
            | Invocation::Serve(_)
            | Invocation::Verify(_)
            | Invocation::ListQueue(_)
            | Invocation::Queue(_)
            | Invocation::RunQueue { .. }
    )
}

fn warn_all(args: &SendArgs) {
    for w in &args.warnings {
        errln!("{w}");
    }
}

fn with_env(args: &SendArgs, f: impl FnOnce(&Env, &SendArgs) -> Result<Exit, Failure>) -> Exit {
    warn_all(args);
    let result = gather_env(args).and_then(|env| f(&env, args));
    match result {
        Ok(code) => code,
        Err(e) => {
            // Line by line, control characters escaped: a message may quote
            // an address or a server's reply.
            for line in e.message.lines() {
                errln!("mailhop: {}", crate::log::printable(line));
            }
            e.exit
        }
    }
}
