//! The two XML formats: Mozilla autoconfig (config-v1.1.xml) and Microsoft
//! Autodiscover POX. Parsed with roxmltree, which refuses DTDs (no entity
//! expansion); the caller bounds the size.

use roxmltree::{Document, Node};

use super::{Address, Candidate, Login, OAuthProvider, Security, Source, host_name, plain_text};

/// What a document gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Servers(Vec<Candidate>),
    /// Autodiscover's answer that the mailbox lives elsewhere: reported,
    /// never followed (the new address or URL is the server's word only).
    Redirect(String),
}

fn child<'a>(node: Node<'a, 'a>, name: &str) -> Option<Node<'a, 'a>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name().eq_ignore_ascii_case(name))
}

fn text<'a>(node: Node<'a, 'a>, name: &str) -> Option<&'a str> {
    child(node, name).and_then(|c| c.text()).map(str::trim)
}

fn descendants<'a>(doc: &'a Document<'a>, name: &'a str) -> impl Iterator<Item = Node<'a, 'a>> {
    doc.descendants()
        .filter(move |n| n.is_element() && n.tag_name().name().eq_ignore_ascii_case(name))
}

/// Mozilla autoconfig: every `outgoingServer type="smtp"`, in document
/// order (the order of preference). Entries mailhop cannot use are left
/// out; an entry with a bad host or port makes no candidate either.
pub fn autoconfig(xml: &str, url: &str, address: &Address) -> Result<Parsed, String> {
    let doc = Document::parse(xml).map_err(|e| format!("malformed XML: {e}"))?;
    if !doc
        .root_element()
        .tag_name()
        .name()
        .eq_ignore_ascii_case("clientConfig")
    {
        return Err(format!(
            "not an autoconfig document (root element <{}>)",
            doc.root_element().tag_name().name()
        ));
    }
    let out = descendants(&doc, "outgoingServer")
        .filter(|s| {
            s.attribute("type")
                .is_some_and(|t| t.eq_ignore_ascii_case("smtp"))
        })
        .filter_map(|s| autoconfig_entry(s, url, address))
        .collect();
    Ok(Parsed::Servers(out))
}

/// One `outgoingServer`; `None` when it lacks what mailhop needs.
fn autoconfig_entry(server: Node, url: &str, address: &Address) -> Option<Candidate> {
    let host = text(server, "hostname")
        .map(|h| address.expand(h))
        .and_then(|h| host_name(&h))?;
    let port = text(server, "port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)?;
    let security = match text(server, "socketType")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("SSL") => Security::Implicit,
        Some("STARTTLS") => Security::StartTls,
        Some("PLAIN") => Security::Plain,
        _ => return None,
    };
    // Several <authentication> elements: the first one mailhop speaks.
    let methods: Vec<Login> = server
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "authentication")
        .map(|c| autoconfig_login(c.text().unwrap_or("").trim(), &host))
        .collect();
    let login = methods
        .iter()
        .copied()
        .find(|m| *m != Login::Unsupported)
        .or(methods.first().copied())
        .unwrap_or(Login::Password);
    let username = text(server, "username")
        .map(|u| address.expand(u))
        .filter(|u| plain_text(u, 256));
    Some(Candidate {
        host,
        port,
        security,
        login,
        username,
        source: Source::Autoconfig {
            url: url.to_string(),
        },
        note: None,
    })
}

fn autoconfig_login(method: &str, host: &str) -> Login {
    match method.to_ascii_lowercase().as_str() {
        "password-cleartext" | "plain" | "password-encrypted" | "secure" => Login::Password,
        "oauth2" => oauth_for(host).map_or(Login::Unsupported, Login::OAuth),
        "none" => Login::None,
        _ => Login::Unsupported,
    }
}

/// The OAuth provider mailhop can sign in with for a server, if any.
fn oauth_for(host: &str) -> Option<OAuthProvider> {
    if host.ends_with("office365.com") || host.ends_with("outlook.com") {
        Some(OAuthProvider::Microsoft)
    } else if host.ends_with("gmail.com") || host.ends_with("googlemail.com") {
        Some(OAuthProvider::Google)
    } else {
        None
    }
}

/// The POX request for `address` (MS-OXDSCLI §2.2.3).
pub fn autodiscover_request(address: &Address) -> String {
    let escaped = address
        .full()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n\
         <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\">\
         <Request><EMailAddress>{escaped}</EMailAddress>\
         <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>\
         </Request></Autodiscover>\r\n"
    )
}

/// Microsoft Autodiscover (POX): the `Protocol` entries whose `Type` is
/// SMTP; or a redirect (`Action` redirectAddr / redirectUrl).
pub fn autodiscover(xml: &str, url: &str, address: &Address) -> Result<Parsed, String> {
    let doc = Document::parse(xml).map_err(|e| format!("malformed XML: {e}"))?;
    if !doc
        .root_element()
        .tag_name()
        .name()
        .eq_ignore_ascii_case("Autodiscover")
    {
        return Err(format!(
            "not an Autodiscover answer (root element <{}>)",
            doc.root_element().tag_name().name()
        ));
    }
    if let Some(error) = descendants(&doc, "Error").next() {
        let message = text(error, "Message").unwrap_or("no message");
        return Err(format!(
            "the server answered with an error: {}",
            bounded(message)
        ));
    }
    for account in descendants(&doc, "Account") {
        match text(account, "Action")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("redirectaddr") => {
                let to = text(account, "RedirectAddr").unwrap_or("");
                return Ok(Parsed::Redirect(format!("to the address {}", bounded(to))));
            }
            Some("redirecturl") => {
                let to = text(account, "RedirectUrl").unwrap_or("");
                return Ok(Parsed::Redirect(format!("to {}", bounded(to))));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for protocol in descendants(&doc, "Protocol") {
        if !text(protocol, "Type").is_some_and(|t| t.eq_ignore_ascii_case("SMTP")) {
            continue;
        }
        if let Some(c) = autodiscover_entry(protocol, url, address) {
            out.push(c);
        }
    }
    Ok(Parsed::Servers(out))
}

fn autodiscover_entry(protocol: Node, url: &str, address: &Address) -> Option<Candidate> {
    let host = text(protocol, "Server").and_then(host_name)?;
    let port = text(protocol, "Port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)?;
    let on = |name: &str| text(protocol, name).map(|v| v.eq_ignore_ascii_case("on"));
    // <Encryption> (None, SSL, TLS, Auto) overrides <SSL> when present.
    let security = match text(protocol, "Encryption")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("ssl") => Security::Implicit,
        Some("tls") => Security::StartTls,
        Some("none") => Security::Plain,
        _ => match (on("SSL"), port) {
            (Some(false), _) => Security::Plain,
            (_, 465) => Security::Implicit,
            _ => Security::StartTls,
        },
    };
    let login = match on("AuthRequired") {
        Some(false) => Login::None,
        _ if on("SPA") == Some(true) => Login::Unsupported,
        _ => Login::Password,
    };
    let username = text(protocol, "LoginName")
        .filter(|u| plain_text(u, 256))
        .map(str::to_string)
        .or_else(|| Some(address.full()));
    Some(Candidate {
        host,
        port,
        security,
        login,
        username,
        source: Source::Autodiscover {
            url: url.to_string(),
        },
        note: None,
    })
}

/// A server-supplied string for a report: one line, printable, short.
fn bounded(s: &str) -> String {
    s.chars()
        .map(|c| {
            if plain_text(c.encode_utf8(&mut [0; 4]), 4) {
                c
            } else {
                ' '
            }
        })
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> Address {
        Address::parse("jane@example.com").unwrap()
    }

    const AUTOCONFIG: &str = r#"<?xml version="1.0"?>
<clientConfig version="1.1">
  <emailProvider id="example.com">
    <domain>example.com</domain>
    <incomingServer type="imap"><hostname>imap.example.com</hostname><port>993</port>
      <socketType>SSL</socketType></incomingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.%EMAILDOMAIN%</hostname>
      <port>465</port>
      <socketType>SSL</socketType>
      <authentication>NTLM</authentication>
      <authentication>password-cleartext</authentication>
      <username>%EMAILLOCALPART%</username>
    </outgoingServer>
    <outgoingServer type="smtp">
      <hostname>smtp.example.com</hostname><port>587</port>
      <socketType>STARTTLS</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
    <outgoingServer type="smtp">
      <hostname>bad host</hostname><port>25</port><socketType>plain</socketType>
    </outgoingServer>
  </emailProvider>
</clientConfig>"#;

    #[test]
    fn autoconfig_outgoing_servers() {
        let Parsed::Servers(c) = autoconfig(AUTOCONFIG, "https://x", &addr()).unwrap() else {
            panic!()
        };
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].host, "smtp.example.com");
        assert_eq!((c[0].port, c[0].security), (465, Security::Implicit));
        assert_eq!(c[0].login, Login::Password);
        assert_eq!(c[0].username.as_deref(), Some("jane"));
        assert_eq!((c[1].port, c[1].security), (587, Security::StartTls));
        assert_eq!(c[1].username.as_deref(), Some("jane@example.com"));
    }

    #[test]
    fn autoconfig_refuses_bad_documents() {
        let a = addr();
        assert!(
            autoconfig("<clientConfig>", "u", &a)
                .unwrap_err()
                .contains("malformed")
        );
        assert!(
            autoconfig("<html/>", "u", &a)
                .unwrap_err()
                .contains("<html>")
        );
        let dtd = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><clientConfig>&a;</clientConfig>"#;
        assert!(autoconfig(dtd, "u", &a).is_err());
        assert_eq!(
            autoconfig("<clientConfig/>", "u", &a),
            Ok(Parsed::Servers(Vec::new()))
        );
    }

    #[test]
    fn autoconfig_oauth_only_for_known_providers() {
        let xml = r#"<clientConfig><emailProvider><outgoingServer type="smtp">
            <hostname>smtp.office365.com</hostname><port>587</port><socketType>STARTTLS</socketType>
            <authentication>OAuth2</authentication><authentication>password-cleartext</authentication>
            </outgoingServer></emailProvider></clientConfig>"#;
        let Parsed::Servers(c) = autoconfig(xml, "u", &addr()).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].login, Login::OAuth(OAuthProvider::Microsoft));
    }

    const POX: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">
    <Account><AccountType>email</AccountType><Action>settings</Action>
      <Protocol><Type>IMAP</Type><Server>imap.example.com</Server><Port>993</Port></Protocol>
      <Protocol><Type>SMTP</Type><Server>mail.example.com</Server><Port>587</Port>
        <LoginName>jdoe</LoginName><SSL>on</SSL><Encryption>TLS</Encryption>
        <SPA>off</SPA><AuthRequired>on</AuthRequired></Protocol>
    </Account>
  </Response>
</Autodiscover>"#;

    #[test]
    fn autodiscover_smtp_entry() {
        let Parsed::Servers(c) = autodiscover(POX, "u", &addr()).unwrap() else {
            panic!()
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].host, "mail.example.com");
        assert_eq!((c[0].port, c[0].security), (587, Security::StartTls));
        assert_eq!(c[0].username.as_deref(), Some("jdoe"));
        let implicit = POX
            .replace("<Encryption>TLS</Encryption>", "")
            .replace("587", "465");
        let Parsed::Servers(c) = autodiscover(&implicit, "u", &addr()).unwrap() else {
            panic!()
        };
        assert_eq!(c[0].security, Security::Implicit);
    }

    #[test]
    fn autodiscover_redirects_and_errors() {
        let redirect = r#"<Autodiscover><Response><Account><Action>redirectAddr</Action>
            <RedirectAddr>jane@other.example</RedirectAddr></Account></Response></Autodiscover>"#;
        assert_eq!(
            autodiscover(redirect, "u", &addr()),
            Ok(Parsed::Redirect("to the address jane@other.example".into()))
        );
        let error = r#"<Autodiscover><Response><Error><ErrorCode>500</ErrorCode>
            <Message>The e-mail address cannot be found.</Message></Error></Response></Autodiscover>"#;
        assert!(
            autodiscover(error, "u", &addr())
                .unwrap_err()
                .contains("cannot be found")
        );
        assert!(autodiscover("<Autodiscover><", "u", &addr()).is_err());
    }

    #[test]
    fn request_escapes_the_address() {
        let a = Address::parse("a<b>&c@example.com").unwrap();
        let r = autodiscover_request(&a);
        assert!(r.contains("<EMailAddress>a&lt;b&gt;&amp;c@example.com</EMailAddress>"));
        assert!(Document::parse(&r).is_ok());
    }
}
