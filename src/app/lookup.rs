use crate::aliases::{AliasError, Aliases};
use crate::config::{self};
use crate::exit::{self, Exit};
use crate::message::address::Mailbox;
use crate::message::prepare::{self, AccountRef, Directory, FromPolicy, RevAlias};

use super::env::*;
use super::failure::*;

/// Loads the aliases file (if configured) and the inline map.
pub(super) fn load_aliases(env: &Env) -> Result<(Aliases, Vec<String>), Failure> {
    let mut aliases = Aliases::default();
    for (name, targets) in &env.config.aliases.map {
        aliases.insert(name, targets.clone());
    }
    let mut warnings = Vec::new();
    if let Some(file) = &env.config.aliases.file {
        let text = std::fs::read(file).map_err(|e| {
            Failure::new(
                exit::from_io(e.kind()).max_config(),
                format!(
                    "{}: cannot read aliases file ([aliases] file in {}): {e}",
                    file.display(),
                    config_name(env)
                ),
            )
        })?;
        let parsed = Aliases::parse(&file.display().to_string(), &text)
            .map_err(|e| Failure::new(Exit::Config, e.to_string()))?;
        warnings = parsed.warnings;
        // Inline map entries win over the file.
        aliases.merge(parsed.aliases);
    }
    Ok((aliases, warnings))
}

/// The `Directory` the message module consults, over config and aliases.
pub(super) struct Lookup<'a> {
    pub(super) env: &'a Env,
    pub(super) aliases: &'a Aliases,
}

impl Lookup<'_> {
    pub(super) fn is_local(&self, domain: Option<&str>) -> bool {
        match domain {
            None => true,
            Some(d) => self.is_local_domain(d),
        }
    }

    /// Expansion of one local name, with trace lines for -bv.
    ///
    /// `[aliases] default` catches the names a caller used that no alias
    /// lists. It does not apply to alias targets: `root: admin` is the
    /// admin's explicit choice of the local user admin.
    pub(super) fn expand_local(
        &self,
        local: &str,
    ) -> Result<(Vec<String>, Vec<String>), AliasError> {
        let default = self.env.config.aliases.default.as_deref();
        match default {
            Some(d) if self.aliases.get(local).is_none() => {
                let e = self.aliases.expand(d)?;
                let mut trace = vec![format!("{local} -> {d} (no alias; [aliases] default)")];
                trace.extend(e.trace);
                Ok((e.addresses, trace))
            }
            _ => {
                let e = self.aliases.expand(local)?;
                Ok((e.addresses, e.trace))
            }
        }
    }

    pub(super) fn qualify(&self, a: &str) -> String {
        if a.contains('@') {
            a.to_string()
        } else {
            format!("{a}@{}", self.env.domain)
        }
    }
}

impl Directory for Lookup<'_> {
    fn revalias(&self, local_user: &str) -> Option<RevAlias> {
        self.env
            .config
            .rewrite
            .revaliases
            .get(local_user)
            .map(|r| RevAlias {
                from: r.from.clone(),
                account: r.account.clone(),
            })
    }

    fn account(&self, name: Option<&str>, sender: &str) -> Option<AccountRef> {
        let a = match name {
            Some(n) => self.env.config.account_named(n),
            None => self.env.config.account_for(sender),
        }?;
        Some(AccountRef {
            name: a.name.clone(),
            from: a.from.clone(),
        })
    }

    fn expand(&self, m: &Mailbox) -> Result<Vec<String>, String> {
        if !self.is_local(m.domain.as_deref()) {
            return Ok(vec![m.addr_spec()]);
        }
        let (addrs, _) = self
            .expand_local(&m.local_part)
            .map_err(|e| e.to_string())?;
        Ok(addrs.iter().map(|a| self.qualify(a)).collect())
    }

    fn is_local_domain(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.env.local_domains.contains(&d)
    }
}

/// What `prepare` needs to know of the invocation.
pub(super) fn prepare_context<'a>(
    env: &'a Env,
    date: &'a str,
    message_id: &'a str,
) -> prepare::Context<'a> {
    prepare::Context {
        user: &env.user,
        gecos_name: env.gecos_name.as_deref(),
        domain: &env.domain,
        date,
        message_id,
        from_policy: match env.config.rewrite.from_policy {
            config::FromPolicy::Account => FromPolicy::Account,
            config::FromPolicy::Keep => FromPolicy::Keep,
            config::FromPolicy::Qualify => FromPolicy::Qualify,
        },
        reply_to_original: env.config.rewrite.reply_to_original,
    }
}
