//! Discovery: from an email address to the submission server that sends
//! its mail, the way mail clients find it (issue #13 §1). Four sources,
//! tried in this order, each reported with its result:
//!
//! 1. [`providers`]: a built-in table of the big providers, matched by the
//!    domain's MX records;
//! 2. [`srv`]: RFC 8314 / RFC 6186 SRV records, `_submissions._tcp`
//!    (implicit TLS) before `_submission._tcp` (STARTTLS);
//! 3. [`xml::autoconfig`]: Mozilla autoconfig over HTTPS;
//! 4. [`xml::autodiscover`]: Microsoft Autodiscover (POX) over HTTPS.
//!
//! The parsing is pure (this module and its children but [`net`]); [`net`]
//! does the lookups with bounded time and size. Nothing here writes
//! anything: `mailhop setup` (src/app/setup.rs) decides what to do with the
//! [`Candidate`]s.

pub mod net;
pub mod providers;
pub mod srv;
pub mod xml;

use std::fmt;

/// The longest host name we accept from the network (RFC 1035 §2.3.4).
const MAX_HOST: usize = 253;

/// How the connection to the submission server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (RFC 8314), usually port 465.
    Implicit,
    /// STARTTLS after EHLO, usually port 587.
    StartTls,
    /// No TLS: mailhop allows it only to a loopback address.
    Plain,
}

impl Security {
    /// The value of the `tls` key in mailhop.toml.
    pub fn config_value(self) -> &'static str {
        match self {
            Security::Implicit => "implicit",
            Security::StartTls => "starttls",
            Security::Plain => "none",
        }
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Security::Implicit => "implicit TLS",
            Security::StartTls => "STARTTLS",
            Security::Plain => "no TLS",
        })
    }
}

/// How the server wants the client to log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// A password (PLAIN or LOGIN over TLS).
    Password,
    /// An OAuth 2 access token (XOAUTH2); mailhop can obtain one for
    /// these providers.
    OAuth(OAuthProvider),
    /// No login.
    None,
    /// Something mailhop does not speak (NTLM, GSSAPI, client
    /// certificate, ...), kept so the report can say so.
    Unsupported,
}

/// The OAuth providers `mailhop oauth login` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthProvider {
    Microsoft,
    Google,
}

impl OAuthProvider {
    /// The value of `provider` in `[account.oauth]`.
    pub fn config_value(self) -> &'static str {
        match self {
            OAuthProvider::Microsoft => "microsoft",
            OAuthProvider::Google => "google",
        }
    }
}

/// Where a candidate came from, and so how far it can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in table, chosen by the domain's MX records.
    Provider { name: &'static str, mx: String },
    /// An SRV record; `implicit` for `_submissions`.
    Srv { name: String },
    /// A Mozilla autoconfig document.
    Autoconfig { url: String },
    /// A Microsoft Autodiscover answer.
    Autodiscover { url: String },
    /// Given by the person (`--host`): no discovery.
    Given,
}

impl Source {
    /// Plain DNS answers can be forged: their result is only a suggestion
    /// that a person confirms (issue #13 §1). HTTPS answers come from a
    /// verified server under the address's own domain.
    pub fn authenticated(&self) -> bool {
        matches!(
            self,
            Source::Autoconfig { .. } | Source::Autodiscover { .. } | Source::Given
        )
    }

    /// The step that found it; `None` when it was given.
    pub fn step(&self) -> Option<Step> {
        match self {
            Source::Provider { .. } => Some(Step::Mx),
            Source::Srv { .. } => Some(Step::Srv),
            Source::Autoconfig { .. } => Some(Step::Autoconfig),
            Source::Autodiscover { .. } => Some(Step::Autodiscover),
            Source::Given => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Provider { name, mx } => write!(f, "known provider {name} (MX {mx})"),
            Source::Srv { name } => write!(f, "SRV record {name}"),
            Source::Autoconfig { url } => write!(f, "autoconfig {url}"),
            Source::Autodiscover { url } => write!(f, "autodiscover {url}"),
            Source::Given => f.write_str("the command line"),
        }
    }
}

/// One way to reach the submission server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub login: Login,
    /// The login name, patterns already expanded; `None`: the address.
    pub username: Option<String>,
    pub source: Source,
    /// A remark for the person (e.g. Proton Bridge must be running).
    pub note: Option<&'static str>,
}

impl Candidate {
    /// One line for the report.
    pub fn summary(&self) -> String {
        let login = match self.login {
            Login::Password => "password".to_string(),
            Login::OAuth(p) => format!("OAuth2 ({}) recommended", p.config_value()),
            Login::None => "no login".to_string(),
            Login::Unsupported => "a login method mailhop does not support".to_string(),
        };
        let user = self
            .username
            .as_deref()
            .map(|u| format!(", user {u}"))
            .unwrap_or_default();
        format!(
            "{}:{} ({}), {login}{user}",
            self.host, self.port, self.security
        )
    }
}

/// The discovery steps, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Mx,
    Srv,
    Autoconfig,
    Autodiscover,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::Mx, Step::Srv, Step::Autoconfig, Step::Autodiscover];

    pub fn name(self) -> &'static str {
        match self {
            Step::Mx => "mx",
            Step::Srv => "srv",
            Step::Autoconfig => "autoconfig",
            Step::Autodiscover => "autodiscover",
        }
    }
}

impl std::str::FromStr for Step {
    type Err = String;
    fn from_str(s: &str) -> Result<Step, String> {
        Step::ALL
            .into_iter()
            .find(|step| step.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown step {s:?}: mx, srv, autoconfig or autodiscover"))
    }
}

/// An address split at its last `@`, the domain lowercased. Only what
/// discovery needs: it goes into DNS names and URLs, so both halves are
/// checked here, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub local: String,
    pub domain: String,
}

impl Address {
    pub fn parse(s: &str) -> Result<Address, String> {
        let s = s.trim();
        let (local, domain) = s
            .rsplit_once('@')
            .ok_or_else(|| format!("{s:?} is not an address (no @)"))?;
        if local.is_empty() || local.len() > 64 || local.chars().any(|c| c.is_control()) {
            return Err(format!(
                "{s:?}: the part before @ is empty, too long or invalid"
            ));
        }
        let domain =
            host_name(domain).ok_or_else(|| format!("{s:?}: {domain:?} is not a domain name"))?;
        if !domain.contains('.') {
            return Err(format!("{s:?}: {domain:?} is not a fully qualified domain"));
        }
        Ok(Address {
            local: local.to_string(),
            domain,
        })
    }

    pub fn full(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    /// Expands a username pattern of autoconfig (`%EMAILADDRESS%`,
    /// `%EMAILLOCALPART%`, `%EMAILDOMAIN%`).
    pub fn expand(&self, pattern: &str) -> String {
        pattern
            .replace("%EMAILADDRESS%", &self.full())
            .replace("%EMAILLOCALPART%", &self.local)
            .replace("%EMAILDOMAIN%", &self.domain)
    }

    /// Whether `host` is the domain or a name under it.
    pub fn owns(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host == self.domain || host.ends_with(&format!(".{}", self.domain))
    }
}

/// Text from the network that a person will read or that goes into the
/// configuration (a login name): not empty, at most `max` bytes, and
/// without control characters or the bidirectional and zero-width
/// formatting characters that make shown text differ from what it is.
pub fn plain_text(s: &str, max: usize) -> bool {
    let hidden = |c: char| {
        c.is_control()
            || ('\u{200b}'..='\u{200f}').contains(&c)
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
            || c == '\u{feff}'
    };
    !s.is_empty() && s.len() <= max && !s.chars().any(hidden)
}

/// A host name from the network or a person, lowercased, without the
/// trailing dot: letters, digits, `-` and `.` only (or `_` for SRV owner
/// names), bounded; `None` if it is anything else.
pub fn host_name(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches('.');
    let ok = !s.is_empty()
        && s.len() <= MAX_HOST
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    ok.then(|| s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_patterns() {
        let a = Address::parse(" Jane.Doe@Example.COM ").unwrap();
        assert_eq!(a.domain, "example.com");
        assert_eq!(a.local, "Jane.Doe");
        assert_eq!(a.expand("%EMAILLOCALPART%"), "Jane.Doe");
        assert_eq!(a.expand("%EMAILADDRESS%"), "Jane.Doe@example.com");
        assert_eq!(a.expand("x-%EMAILDOMAIN%"), "x-example.com");
        assert!(a.owns("autoconfig.example.com."));
        assert!(a.owns("EXAMPLE.com"));
        assert!(!a.owns("evilexample.com"));
        assert!(!a.owns("example.com.evil.net"));
        for bad in [
            "nobody",
            "@example.com",
            "a@localhost",
            "a@exa mple.com",
            "a@-x.com",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_names_are_checked() {
        assert_eq!(
            host_name("SMTP.Example.com."),
            Some("smtp.example.com".into())
        );
        assert_eq!(host_name("a..b"), None);
        assert_eq!(host_name("a/b"), None);
        assert_eq!(host_name(&"a".repeat(300)), None);
        assert_eq!(host_name("."), None);
    }

    #[test]
    fn plain_text_refuses_hidden_characters() {
        assert!(plain_text("jane@example.com", 256));
        assert!(plain_text("jäne", 256));
        assert!(!plain_text("", 256));
        assert!(!plain_text("a\u{202e}moc.x", 256));
        assert!(!plain_text("a\nb", 256));
        assert!(!plain_text("abc", 2));
    }

    #[test]
    fn steps_parse() {
        assert_eq!("SRV".parse::<Step>(), Ok(Step::Srv));
        assert!("ldap".parse::<Step>().is_err());
    }
}
