//! `mailhop check`'s warnings about what silently goes wrong (issue #13
//! §4): `root` and `postmaster` without an alias while a smarthost is
//! configured, an SPF record that does not authorise the smarthost, and a
//! DMARC policy that the mail will fail. Each says which record to publish
//! or which key to add. They are advice: they never change the exit
//! status, and a DNS failure is "could not check", never an error.

use std::io::Write;
use std::time::Duration;

use crate::cli::CheckArgs;
use crate::dns::{Resolver, Txt};

use super::env::Env;
use super::lookup::load_aliases;

/// Each DNS lookup's bound.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Smarthosts whose SPF include is documented by the provider: a From
/// domain sending through them needs it in its SPF record.
/// Microsoft: learn.microsoft.com/microsoft-365/security/office-365-security/email-authentication-spf-configure;
/// Google: support.google.com/a/answer/10685031; Fastmail:
/// fastmail.help/hc/en-us/articles/360060591153; Zoho:
/// zoho.com/mail/help/adminconsole/spf-configuration.html; mailbox.org:
/// kb.mailbox.org (own domains).
const SPF_INCLUDES: &[(&str, &str)] = &[
    ("smtp.office365.com", "spf.protection.outlook.com"),
    ("smtp-mail.outlook.com", "spf.protection.outlook.com"),
    ("smtp.gmail.com", "_spf.google.com"),
    ("smtp-relay.gmail.com", "_spf.google.com"),
    ("smtp.fastmail.com", "spf.messagingengine.com"),
    ("smtp.zoho.com", "zoho.com"),
    ("smtp.zoho.eu", "zoho.eu"),
    ("smtp.mailbox.org", "mailbox.org"),
];

/// Prints the warnings for `env`'s configuration. Called once from
/// `check::check`, after the other checks.
pub(super) fn warn(env: &Env, c: &CheckArgs, out: &mut dyn Write) {
    if env.config.accounts.is_empty() || env.config.local.capture {
        return;
    }
    alias_warnings(env, out);
    if c.offline {
        return;
    }
    // Once per domain, within the timeout in all, as discovery asks.
    let dns = match Resolver::new(c.nameserver, DNS_TIMEOUT) {
        Ok(r) => r.attempts(1).within(DNS_TIMEOUT),
        Err(e) => {
            let _ = writeln!(out, "SPF and DMARC: could not check: {e}");
            return;
        }
    };
    let mut seen = Vec::new();
    for a in &env.config.accounts {
        let Some((_, domain)) = a.from.rsplit_once('@') else {
            continue;
        };
        let domain = domain.trim_end_matches('>').to_ascii_lowercase();
        if seen.contains(&(domain.clone(), a.smtp.host.clone())) {
            continue;
        }
        seen.push((domain.clone(), a.smtp.host.clone()));
        let signed = env
            .config
            .dkim
            .iter()
            .any(|d| crate::dkim::matches_domain(&d.domain, &domain));
        let spf_txt = Txt::from(dns.txt(&domain));
        // A domain whose lookup got no answer is not asked again: each
        // try would wait the whole timeout to learn the same.
        let dmarc_txt = match &spf_txt {
            Txt::Failed(e) => Txt::Failed(e.clone()),
            _ => Txt::from(dns.txt(&format!("_dmarc.{domain}"))),
        };
        let spf = spf_verdict(&spf_txt, &a.smtp.host);
        let dmarc = dmarc_policy(&dmarc_txt);
        for line in advice(&domain, &a.smtp.host, &spf, &dmarc, signed) {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// `root` and `postmaster` must reach a person: without an alias their
/// mail (cron, mdadm, smartd, bounces) stays in a local mailbox here.
fn alias_warnings(env: &Env, out: &mut dyn Write) {
    let Ok((aliases, _)) = load_aliases(env) else {
        return; // check already reported the aliases file
    };
    if env.config.aliases.default.is_some() {
        return;
    }
    let mut missing: Vec<&str> = Vec::new();
    for name in ["root", "postmaster"] {
        if aliases.get(name).is_none() {
            missing.push(name);
        }
    }
    for name in missing {
        let fix = if name == "postmaster" && aliases.get("root").is_some() {
            "postmaster = \"root\"".to_string()
        } else {
            format!("{name} = \"you@example.com\"")
        };
        let _ = writeln!(
            out,
            "warning: {name} has no alias: its mail (cron, system tools, bounces) is delivered \
             to a mailbox on this host, where nobody reads it, while other mail goes to the \
             smarthost; add `{fix}` under [aliases.map] (or run `mailhop setup --yes --alias \
             {name}=ADDRESS ...`)"
        );
    }
}

/// What the From domain's SPF record says about the smarthost.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spf {
    /// The provider's include (or a redirect to it) is there.
    Authorised,
    /// A record without the provider's include.
    Missing {
        include: &'static str,
    },
    /// No SPF record at all.
    NoRecord,
    /// The smarthost is not one whose include is known.
    Unknown,
    CouldNotCheck(String),
}

fn spf_verdict(txt: &Txt, smarthost: &str) -> Spf {
    let host = smarthost.trim_end_matches('.').to_ascii_lowercase();
    let include = SPF_INCLUDES
        .iter()
        .find(|(h, _)| *h == host)
        .map(|(_, i)| *i);
    let records = match txt {
        Txt::Failed(e) => return Spf::CouldNotCheck(e.clone()),
        Txt::None => return Spf::NoRecord,
        Txt::Found(r) => r,
    };
    let Some(spf) = records
        .iter()
        .find(|r| r.trim_start().to_ascii_lowercase().starts_with("v=spf1"))
    else {
        return Spf::NoRecord;
    };
    let Some(include) = include else {
        return Spf::Unknown;
    };
    let found = spf.split_whitespace().any(|term| {
        let term = term
            .trim_start_matches(['+', '~', '?'])
            .to_ascii_lowercase();
        term == format!("include:{include}") || term == format!("redirect={include}")
    });
    if found {
        Spf::Authorised
    } else {
        Spf::Missing { include }
    }
}

/// The DMARC policy (`p=`) of a `_dmarc` record, lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dmarc {
    Policy(String),
    NoRecord,
    CouldNotCheck(String),
}

fn dmarc_policy(txt: &Txt) -> Dmarc {
    let records = match txt {
        Txt::Failed(e) => return Dmarc::CouldNotCheck(e.clone()),
        Txt::None => return Dmarc::NoRecord,
        Txt::Found(r) => r,
    };
    let Some(record) = records
        .iter()
        .find(|r| r.trim_start().to_ascii_lowercase().starts_with("v=dmarc1"))
    else {
        return Dmarc::NoRecord;
    };
    let policy = record
        .split(';')
        .filter_map(|tag| tag.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("p"))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "none".into());
    Dmarc::Policy(policy)
}

/// The lines to print for one From domain and smarthost.
fn advice(domain: &str, host: &str, spf: &Spf, dmarc: &Dmarc, signed: bool) -> Vec<String> {
    let mut out = Vec::new();
    match spf {
        Spf::Authorised | Spf::Unknown => {}
        Spf::Missing { include } => out.push(format!(
            "warning: SPF: the record of {domain} does not authorise {host}: add \
             `include:{include}` to the TXT record of {domain} (before its `all`)"
        )),
        Spf::NoRecord => out.push(format!(
            "warning: SPF: {domain} publishes no SPF record; publish a TXT record at {domain} \
             such as `v=spf1 {}-all` that authorises {host}",
            match spf_include(host) {
                Some(i) => format!("include:{i} "),
                None => String::new(),
            }
        )),
        Spf::CouldNotCheck(e) => out.push(format!("SPF of {domain}: could not check: {e}")),
    }
    let strict = match dmarc {
        Dmarc::Policy(p) => p == "reject" || p == "quarantine",
        Dmarc::NoRecord => false,
        Dmarc::CouldNotCheck(e) => {
            out.push(format!("DMARC of {domain}: could not check: {e}"));
            false
        }
    };
    let spf_aligned = *spf == Spf::Authorised;
    if strict && !signed && !spf_aligned {
        let Dmarc::Policy(p) = dmarc else {
            return out;
        };
        out.push(format!(
            "warning: DMARC: {domain} asks receivers to {p} mail that is neither DKIM- nor \
             SPF-aligned, and mail through {host} may be neither: add a [[dkim]] entry for \
             {domain} (`mailhop dkim keygen --domain {domain} --selector SELECTOR`, then publish \
             the TXT record SELECTOR._domainkey.{domain} it prints), or authorise {host} in \
             the SPF record of {domain} (unless the provider signs for {domain} itself)"
        ));
    }
    out
}

fn spf_include(host: &str) -> Option<&'static str> {
    SPF_INCLUDES
        .iter()
        .find(|(h, _)| h.eq_ignore_ascii_case(host))
        .map(|(_, i)| *i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(r: &str) -> Txt {
        Txt::Found(vec!["google-site-verification=x".into(), r.into()])
    }

    #[test]
    fn spf_needs_the_providers_include() {
        let o365 = "smtp.office365.com";
        assert_eq!(
            spf_verdict(
                &found("v=spf1 include:spf.protection.outlook.com -all"),
                o365
            ),
            Spf::Authorised
        );
        assert_eq!(
            spf_verdict(&found("v=spf1 redirect=spf.protection.outlook.com"), o365),
            Spf::Authorised
        );
        assert_eq!(
            spf_verdict(&found("v=spf1 include:_spf.google.com ~all"), o365),
            Spf::Missing {
                include: "spf.protection.outlook.com"
            }
        );
        assert_eq!(spf_verdict(&Txt::None, o365), Spf::NoRecord);
        assert_eq!(spf_verdict(&found("nothing"), o365), Spf::NoRecord);
        assert_eq!(
            spf_verdict(&found("v=spf1 mx -all"), "smtp.example.net"),
            Spf::Unknown
        );
        assert_eq!(
            spf_verdict(&Txt::Failed("timeout".into()), o365),
            Spf::CouldNotCheck("timeout".into())
        );
    }

    #[test]
    fn dmarc_policies() {
        assert_eq!(
            dmarc_policy(&found("v=DMARC1; p=Reject; rua=mailto:x@y")),
            Dmarc::Policy("reject".into())
        );
        assert_eq!(
            dmarc_policy(&found("v=DMARC1; rua=mailto:x@y")),
            Dmarc::Policy("none".into())
        );
        assert_eq!(dmarc_policy(&Txt::None), Dmarc::NoRecord);
    }

    #[test]
    fn advice_names_the_record() {
        let missing = Spf::Missing {
            include: "spf.protection.outlook.com",
        };
        let reject = Dmarc::Policy("reject".into());
        let lines = advice(
            "example.com",
            "smtp.office365.com",
            &missing,
            &reject,
            false,
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("add `include:spf.protection.outlook.com`"));
        assert!(lines[1].contains("DMARC") && lines[1].contains("_domainkey.example.com"));
        // DKIM for the domain aligns: no DMARC warning.
        let lines = advice("example.com", "smtp.office365.com", &missing, &reject, true);
        assert_eq!(lines.len(), 1);
        // SPF alignment does too.
        let lines = advice("example.com", "h", &Spf::Authorised, &reject, false);
        assert!(lines.is_empty());
        // A failed lookup is "could not check", never a warning.
        let failed = Dmarc::CouldNotCheck("SERVFAIL".into());
        let lines = advice(
            "example.com",
            "h",
            &Spf::CouldNotCheck("x".into()),
            &failed,
            false,
        );
        assert!(
            lines.iter().all(|l| l.contains("could not check")),
            "{lines:?}"
        );
    }
}
