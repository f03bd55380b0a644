use super::stamp::unix_secs;
use std::io::{self};

use crate::config::{self};
use crate::transport;

use super::env::*;

/// Connects and logs in. With OAuth, a 5.7.x refusal of the token drops
/// the cached access token, refreshes once and tries again on a new
/// connection; a second refusal is the answer.
pub(super) fn connect_and_login(
    env: &Env,
    a: &config::Account,
) -> Result<transport::Session, transport::Error> {
    let settings = transport_settings(env, a);
    let transcript = || -> transport::Transcript {
        if env.verbose > 0 {
            Some(Box::new(io::stderr()))
        } else {
            None
        }
    };
    let mut session = transport::Session::connect(&settings, transcript())?;
    let mut secret = || obtain_secret_forced(env, a, false);
    match session.authenticate(&mut secret) {
        Ok(()) => Ok(session),
        Err(e) => {
            let token_refused = matches!(
                &e.kind,
                transport::Kind::AuthFailed(Some(r)) if r.enhanced().is_some_and(|c| c.starts_with("5.7."))
            );
            let Some(o) = a.oauth.as_ref().filter(|_| token_refused) else {
                return Err(e);
            };
            let _ = crate::oauth::invalidate(o);
            if env.verbose > 0 {
                errln!(
                    "mailhop: the server refused the cached token ({}); refreshing it once",
                    e.detail
                );
            }
            let mut session = transport::Session::connect(&settings, transcript())?;
            let mut fresh = || obtain_secret_forced(env, a, true);
            session.authenticate(&mut fresh)?;
            Ok(session)
        }
    }
}

pub(super) fn transport_settings(env: &Env, a: &config::Account) -> transport::Settings {
    transport::Settings {
        helo_name: env.hostname.clone(),
        system_roots_only: env.privileged,
        ..a.smtp.clone()
    }
}

/// The account's password or token, from the first configured source.
pub(super) fn obtain_secret(
    env: &Env,
    a: &config::Account,
) -> Result<crate::credentials::Secret, String> {
    obtain_secret_forced(env, a, false).map_err(|e| e.message)
}

/// The account's secret: an OAuth access token when `[account.oauth]` is
/// set (refreshed first when `force`), else the password.
pub(super) fn obtain_secret_forced(
    env: &Env,
    a: &config::Account,
    force: bool,
) -> Result<crate::credentials::Secret, transport::SecretError> {
    if let Some(o) = &a.oauth {
        let now = unix_secs(env.now);
        return crate::oauth::access_token(o, &env.ids(), now, force).map_err(|e| {
            transport::SecretError {
                message: format!("{e} (account {})", a.name),
                transient: e.is_transient(),
            }
        });
    }
    obtain_password(env, a).map_err(transport::SecretError::from)
}

/// The account's password, from the first configured source.
pub(super) fn obtain_password(
    env: &Env,
    a: &config::Account,
) -> Result<crate::credentials::Secret, String> {
    use crate::credentials::{self, Source};
    let mut sources = Vec::new();
    if let Some(cmd) = &a.password_command {
        sources.push(Source::Command {
            command: cmd.clone(),
            timeout: config::PASSWORD_COMMAND_TIMEOUT,
        });
    }
    if let Some(file) = &a.password_file {
        sources.push(Source::File(file.clone()));
    }
    // The environment is the caller's: a setuid/setgid process must not let
    // it choose the secret.
    if !env.privileged
        && let Ok(v) = std::env::var("MAILHOP_PASSWORD")
    {
        sources.push(Source::Env(v));
    }
    // The last resort. Not when privileged: the D-Bus address would come
    // from the caller's environment (zbus can even execute one).
    #[cfg(feature = "keyring")]
    if !env.privileged {
        sources.push(Source::Keyring {
            service: credentials::keyring_store::SERVICE.to_owned(),
            account: a.name.clone(),
        });
    }
    let policy = credentials::Policy {
        allowed_group: env.mailhop_gid(),
        euid: env.euid,
        clean_env: env.privileged,
    };
    credentials::obtain(&sources, &policy).map_err(|e| format!("{e} (account {})", a.name))
}

/// The runner's view of the smarthosts: connects and logs in per account.
pub(super) struct SmtpRelay<'a> {
    pub(super) env: &'a Env,
}

impl crate::deliver::Relay for SmtpRelay<'_> {
    fn connect(
        &mut self,
        account: &str,
    ) -> Result<Box<dyn crate::deliver::Connection>, transport::Error> {
        let a = self.env.config.account_named(account).ok_or_else(|| {
            transport::Error::new(
                transport::Stage::Connect,
                transport::Kind::Config,
                format!(
                    "the message was queued for account \"{account}\", which is no longer in {}",
                    config_name(self.env)
                ),
            )
        })?;
        Ok(Box::new(connect_and_login(self.env, a)?))
    }

    fn account_for(&self, sender: &str) -> Option<String> {
        self.env.config.account_for(sender).map(|a| a.name.clone())
    }

    fn fallbacks(&self, account: &str) -> Vec<String> {
        self.env
            .config
            .account_named(account)
            .map(|a| a.fallback.clone())
            .unwrap_or_default()
    }

    fn pacing(&self, account: &str) -> config::Pacing {
        self.env
            .config
            .account_named(account)
            .map(|a| a.pacing)
            .unwrap_or_default()
    }
}
