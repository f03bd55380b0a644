//! The big providers, recognised by the MX records of the address's
//! domain: a custom domain hosted at Microsoft 365 or Google Workspace has
//! no autoconfig of its own, but its MX gives the provider away.
//!
//! Sources (each provider's own page on mail client settings, read 2026):
//! - Microsoft 365: <https://learn.microsoft.com/exchange/mail-flow-best-practices/how-to-set-up-a-multifunction-device-or-application-to-send-email-using-microsoft-365-or-office-365>
//!   (smtp.office365.com:587 STARTTLS; MX `*.mail.protection.outlook.com`)
//! - Google: <https://support.google.com/a/answer/176600> (smtp.gmail.com:465
//!   SSL or 587 TLS) and <https://support.google.com/a/answer/174125> (MX
//!   `*.google.com`, older `*.googlemail.com`)
//! - Fastmail: <https://www.fastmail.help/hc/en-us/articles/1500000278342>
//!   (smtp.fastmail.com:465; MX `in1-smtp.messagingengine.com`)
//! - iCloud: <https://support.apple.com/102525> (smtp.mail.me.com:587
//!   STARTTLS; MX `mx01.mail.icloud.com`)
//! - Yahoo: <https://help.yahoo.com/kb/SLN4075.html> (smtp.mail.yahoo.com:465;
//!   MX `*.yahoodns.net`)
//! - GMX: <https://support.gmx.com/pop-imap/imap/outlook.html> and
//!   hilfe.gmx.net (mail.gmx.net / mail.gmx.com:465; MX `mx*.gmx.net`,
//!   `mx*.gmx.com`)
//! - web.de: <https://hilfe.web.de/pop-imap/imap/imap-serverdaten.html>
//!   (smtp.web.de:587 STARTTLS; MX `mx-ha*.web.de`)
//! - IONOS: <https://www.ionos.com/help/email/general-topics/settings-for-your-email-programs-imap-pop3/>
//!   (smtp.ionos.com / smtp.ionos.de:465; MX `mx*.ionos.*`, `mx*.kundenserver.de`)
//! - OVH: <https://help.ovhcloud.com/csm/en-email-general-settings> (MX Plan:
//!   ssl0.ovh.net:465; MX `mx*.mail.ovh.net`)
//! - Strato: <https://www.strato.de/faq/mail/> (smtp.strato.de:465; MX
//!   `smtpin.rzone.de`)
//! - Zoho: <https://www.zoho.com/mail/help/zoho-smtp.html> (smtp.zoho.com /
//!   smtp.zoho.eu:465; MX `mx*.zoho.com`, `mx*.zoho.eu`)
//! - mailbox.org: <https://kb.mailbox.org/en/private/e-mail-article/mail-client-settings>
//!   (smtp.mailbox.org:465; MX `mxext*.mailbox.org`)
//! - Proton: <https://proton.me/support/protonmail-bridge-clients> (Bridge on
//!   127.0.0.1:1025 STARTTLS with a self-signed certificate and a Bridge
//!   password; MX `mail.protonmail.ch`, `mailsec.protonmail.ch`)

use super::{Candidate, Login, OAuthProvider, Security, Source};

/// One provider: MX suffixes that identify it, and its submission server.
#[derive(Debug)]
pub struct Provider {
    pub name: &'static str,
    /// MX host names ending in one of these (a leading `.` is a suffix; a
    /// name without one must match exactly).
    pub mx: &'static [&'static str],
    pub host: &'static str,
    pub port: u16,
    pub security: Security,
    pub login: Login,
    pub note: Option<&'static str>,
}

const fn p(
    name: &'static str,
    mx: &'static [&'static str],
    host: &'static str,
    port: u16,
    security: Security,
) -> Provider {
    Provider {
        name,
        mx,
        host,
        port,
        security,
        login: Login::Password,
        note: None,
    }
}

/// The table; the first match wins.
pub const PROVIDERS: &[Provider] = &[
    Provider {
        login: Login::OAuth(OAuthProvider::Microsoft),
        note: Some(
            "Microsoft 365 turns SMTP basic authentication off by default: use OAuth2 \
             (--oauth), or enable SMTP AUTH for the mailbox",
        ),
        ..p(
            "Microsoft 365",
            &[".mail.protection.outlook.com"],
            "smtp.office365.com",
            587,
            Security::StartTls,
        )
    },
    Provider {
        login: Login::OAuth(OAuthProvider::Google),
        note: Some("Google needs OAuth2 (--oauth) or an app password with 2-step verification"),
        ..p(
            "Google",
            &[".google.com", ".googlemail.com"],
            "smtp.gmail.com",
            465,
            Security::Implicit,
        )
    },
    p(
        "Fastmail",
        &[".messagingengine.com"],
        "smtp.fastmail.com",
        465,
        Security::Implicit,
    ),
    p(
        "iCloud",
        &[".mail.icloud.com"],
        "smtp.mail.me.com",
        587,
        Security::StartTls,
    ),
    p(
        "Yahoo",
        &[".yahoodns.net"],
        "smtp.mail.yahoo.com",
        465,
        Security::Implicit,
    ),
    p(
        "GMX",
        &[".gmx.net"],
        "mail.gmx.net",
        465,
        Security::Implicit,
    ),
    p(
        "GMX",
        &[".gmx.com"],
        "mail.gmx.com",
        465,
        Security::Implicit,
    ),
    p(
        "web.de",
        &[".web.de"],
        "smtp.web.de",
        587,
        Security::StartTls,
    ),
    p(
        "IONOS",
        &[".ionos.de", ".kundenserver.de"],
        "smtp.ionos.de",
        465,
        Security::Implicit,
    ),
    p(
        "IONOS",
        &[".ionos.com", ".ionos.co.uk", ".perfora.net"],
        "smtp.ionos.com",
        465,
        Security::Implicit,
    ),
    p(
        "OVH",
        &[".mail.ovh.net"],
        "ssl0.ovh.net",
        465,
        Security::Implicit,
    ),
    p(
        "Strato",
        &[".rzone.de"],
        "smtp.strato.de",
        465,
        Security::Implicit,
    ),
    p(
        "Zoho",
        &[".zoho.eu"],
        "smtp.zoho.eu",
        465,
        Security::Implicit,
    ),
    p(
        "Zoho",
        &[".zoho.com"],
        "smtp.zoho.com",
        465,
        Security::Implicit,
    ),
    p(
        "mailbox.org",
        &[".mailbox.org"],
        "smtp.mailbox.org",
        465,
        Security::Implicit,
    ),
    Provider {
        note: Some(
            "Proton needs Proton Mail Bridge running on this host; use the Bridge password and \
             pin its self-signed certificate with tls_fingerprint",
        ),
        ..p(
            "Proton (Bridge)",
            &[".protonmail.ch"],
            "127.0.0.1",
            1025,
            Security::StartTls,
        )
    },
];

impl Provider {
    fn matches(&self, mx: &str) -> bool {
        let mx = mx.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix('.') {
                Some(suffix) => mx.ends_with(pattern) || mx == suffix,
                None => mx == *pattern,
            })
    }

    /// The candidate this provider gives for an MX host.
    pub fn candidate(&self, mx: &str, username: Option<String>) -> Candidate {
        Candidate {
            host: self.host.to_string(),
            port: self.port,
            security: self.security,
            login: self.login,
            username,
            source: Source::Provider {
                name: self.name,
                mx: mx.trim_end_matches('.').to_string(),
            },
            note: self.note,
        }
    }
}

/// The provider of the first MX host (in the order given, which the caller
/// sorts by preference) that is in the table, and that host.
pub fn by_mx(mx_hosts: &[String]) -> Option<(&'static Provider, &str)> {
    mx_hosts.iter().find_map(|mx| {
        PROVIDERS
            .iter()
            .find(|p| p.matches(mx))
            .map(|p| (p, mx.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(mx: &[&str]) -> Option<&'static str> {
        let mx: Vec<String> = mx.iter().map(|s| s.to_string()).collect();
        by_mx(&mx).map(|(p, _)| p.name)
    }

    #[test]
    fn providers_by_mx() {
        assert_eq!(
            name(&["example-com.mail.protection.outlook.com."]),
            Some("Microsoft 365")
        );
        assert_eq!(name(&["ASPMX.L.GOOGLE.COM"]), Some("Google"));
        assert_eq!(name(&["gmail-smtp-in.l.google.com."]), Some("Google"));
        assert_eq!(name(&["aspmx2.googlemail.com"]), Some("Google"));
        assert_eq!(name(&["in1-smtp.messagingengine.com"]), Some("Fastmail"));
        assert_eq!(name(&["mx01.mail.icloud.com"]), Some("iCloud"));
        assert_eq!(name(&["mx-ha03.web.de"]), Some("web.de"));
        assert_eq!(name(&["mail.protonmail.ch"]), Some("Proton (Bridge)"));
        // Suffixes match at a label boundary only.
        assert_eq!(name(&["mx.notgoogle.com"]), None);
        assert_eq!(name(&["mx.example.org"]), None);
        // The first MX in the table decides.
        assert_eq!(
            name(&["mx.example.org", "alt1.aspmx.l.google.com"]),
            Some("Google")
        );
    }

    #[test]
    fn every_entry_is_well_formed() {
        for p in PROVIDERS {
            assert!(!p.mx.is_empty(), "{}", p.name);
            assert!(super::super::host_name(p.host).is_some(), "{}", p.name);
            assert_ne!(p.port, 0);
        }
    }
}
