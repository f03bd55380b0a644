//! `mailhop password set|delete ACCOUNT`: the account's password in the
//! desktop keyring (cargo feature `keyring`).

use super::failure::Failure;
use crate::cli;
use crate::exit::Exit;
#[cfg(feature = "keyring")]
use {
    super::env::{Env, named_account},
    super::with_env,
    crate::cli::SendArgs,
};

/// `mailhop password set|delete ACCOUNT`: the account's password in the
/// desktop keyring. The subcommand exists in every build (one man page,
/// one set of completions); without the `keyring` feature it explains.
#[cfg(not(feature = "keyring"))]
pub(super) fn password_cmd(_action: cli::PasswordAction) -> Exit {
    errln!(
        "mailhop: this build has no keyring support (it was built without the `keyring` \
         cargo feature); set `password_command` or `password_file` for the account instead"
    );
    Exit::Usage
}

#[cfg(feature = "keyring")]
pub(super) fn password_cmd(action: cli::PasswordAction) -> Exit {
    let (account, config, set) = match action {
        cli::PasswordAction::Set { account, config } => (account, config, true),
        cli::PasswordAction::Delete { account, config } => (account, config, false),
    };
    let args = SendArgs {
        common: cli::Common {
            config,
            ..cli::Common::default()
        },
        ..SendArgs::default()
    };
    with_env(&args, |env, _| password_keyring(env, &account, set))
}

#[cfg(feature = "keyring")]
pub(super) fn password_keyring(env: &Env, account: &str, set: bool) -> Result<Exit, Failure> {
    use crate::credentials::{CredentialError, keyring_store};
    let a = named_account(env, account)?;
    if env.privileged || env.uses_system_config() {
        // Sends with the system configuration run setgid and never read
        // the keyring (see obtain_password), so storing would only mislead.
        return Err(Failure::new(
            Exit::NoPerm,
            "a setgid mailhop with the system configuration does not use the keyring \
             (its D-Bus session would be the caller's); use password_file, or your own \
             configuration (-C FILE or ~/.config/mailhop/config.toml)",
        ));
    }
    let shadowed = if a.oauth.is_some() {
        Some("[account.oauth]")
    } else if a.password_command.is_some() {
        Some("password_command")
    } else if a.password_file.is_some() {
        Some("password_file")
    } else {
        None
    };
    if let Some(key) = shadowed {
        errln!("mailhop: note: account {account} has {key}, which is used instead of the keyring");
    }
    let fail = |e: CredentialError| {
        let exit = match e {
            CredentialError::KeyringNoEntry { .. } => Exit::NoInput,
            CredentialError::KeyringUnavailable { .. } | CredentialError::KeyringTimeout { .. } => {
                Exit::Unavailable
            }
            _ => Exit::Software,
        };
        Failure::new(exit, e.to_string())
    };
    let service = keyring_store::SERVICE;
    if set {
        let secret = read_new_password(account)?;
        keyring_store::set(service, account, &secret).map_err(fail)?;
        errln!("mailhop: stored the password for account {account} in the keyring");
    } else {
        keyring_store::delete(service, account).map_err(fail)?;
        errln!("mailhop: removed the password for account {account} from the keyring");
    }
    Ok(Exit::Ok)
}

/// Reads one line from standard input (one trailing newline removed); on
/// a terminal, prompts on stderr with echo off. Also `mailhop setup`'s.
pub(super) fn read_new_password(account: &str) -> Result<crate::credentials::Secret, Failure> {
    use nix::sys::termios::{self, LocalFlags, SetArg};
    use std::fs::File;
    use std::io::{self, Read};
    use std::os::fd::AsFd;
    use zeroize::Zeroizing;

    let stdin = io::stdin();
    let fd = stdin.as_fd();
    let io_fail =
        |e: io::Error| Failure::new(Exit::IoErr, format!("cannot read the password: {e}"));
    // On a terminal: echo off (newline still echoed), restored on every path.
    let saved = if nix::unistd::isatty(fd).unwrap_or(false) {
        let saved = termios::tcgetattr(fd).map_err(|e| io_fail(e.into()))?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        // Echo off before the prompt: what is typed once the prompt shows
        // is neither echoed nor discarded by the flush.
        termios::tcsetattr(fd, SetArg::TCSAFLUSH, &quiet).map_err(|e| io_fail(e.into()))?;
        err!("Password for account {account}: ");
        Some(saved)
    } else {
        None
    };
    // Unbuffered, byte by byte, into one zeroised buffer: no copy of the
    // password stays behind in a reader's buffer.
    let mut file = File::from(fd.try_clone_to_owned().map_err(io_fail)?);
    let max = crate::credentials::MAX_SECRET_LEN;
    let mut bytes = Zeroizing::new(Vec::with_capacity(max + 1));
    let mut byte = [0u8; 1];
    let too_long = || {
        Failure::new(
            Exit::DataErr,
            format!(
                "the password must be one line of at most {} KiB",
                max / 1024
            ),
        )
    };
    let result = loop {
        match file.read(&mut byte) {
            Ok(0) => break Ok(()),
            Ok(_) if byte[0] == b'\n' => break Ok(()),
            Ok(_) if bytes.len() >= max => break Err(too_long()),
            Ok(_) => bytes.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(io_fail(e)),
        }
    };
    byte.fill(0);
    if let Some(saved) = &saved {
        let _ = termios::tcsetattr(fd, SetArg::TCSANOW, saved);
    }
    result?;
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(Failure::new(
            Exit::DataErr,
            "no password given (standard input was empty)",
        ));
    }
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(s) => Ok(crate::credentials::Secret::new(s)),
        Err(e) => {
            zeroize::Zeroize::zeroize(&mut e.into_bytes());
            Err(Failure::new(Exit::DataErr, "the password is not UTF-8"))
        }
    }
}
