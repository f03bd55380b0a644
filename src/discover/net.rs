//! The lookups of discovery: DNS through the stub resolver in `dns`, HTTPS
//! through ureq with rustls and
//! certificate verification. Every lookup is bounded in time and size, and
//! each step is reported as it ends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::RData;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use super::xml::{self, Parsed};
use super::{Address, Candidate, Step, host_name, providers, srv};

/// The largest autoconfig or autodiscover document read.
const MAX_BODY: u64 = 64 * 1024;
/// Redirects followed, each only to HTTPS under the address's domain.
const MAX_REDIRECTS: usize = 3;
/// Where the system keeps its trusted CAs (as src/oauth.rs).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// How to look things up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ask this DNS server (for every name, web servers' too) instead of
    /// the system's resolver.
    pub nameserver: Option<SocketAddr>,
    /// Trust these CAs too, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Connect to this port instead of 443 (tests).
    pub https_port: Option<u16>,
    /// Bound on each lookup, DNS or HTTPS, end to end.
    pub timeout: Duration,
    /// Run only this step.
    pub only: Option<Step>,
}

/// How one lookup ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Found(Vec<Candidate>),
    /// Answered, with nothing usable; the reason.
    Nothing(String),
    /// No answer (timeout, TLS, DNS failure); the reason.
    Failed(String),
}

/// One lookup and its outcome, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub step: Step,
    /// What was asked: a DNS name or a URL.
    pub asked: String,
    pub outcome: Outcome,
}

/// Runs the steps in order (or the one asked for), reporting each lookup
/// as it ends; returns every candidate found, in step order. Fails only
/// when the lookups cannot be set up at all.
pub fn discover(
    address: &Address,
    opts: &Options,
    report: &mut dyn FnMut(&Report),
) -> Result<Vec<Candidate>, String> {
    let dns = Arc::new(Dns::new(opts)?);
    let http = Http::new(opts, Arc::clone(&dns))?;
    let mut found = Vec::new();
    let mut emit = |r: Report| {
        if let Outcome::Found(c) = &r.outcome {
            found.extend(c.iter().cloned());
        }
        report(&r);
    };
    let wanted = |s: Step| opts.only.is_none_or(|o| o == s);
    if wanted(Step::Mx) {
        emit(dns.mx_step(address));
    }
    if wanted(Step::Srv) {
        for (service, security) in srv::SERVICES {
            emit(dns.srv_step(address, service, security));
        }
    }
    if wanted(Step::Autoconfig) {
        for url in autoconfig_urls(address, opts.https_port) {
            emit(http.step(Step::Autoconfig, &url, address));
        }
    }
    if wanted(Step::Autodiscover) {
        let url = format!(
            "https://autodiscover.{}{}/autodiscover/autodiscover.xml",
            address.domain,
            port_suffix(opts.https_port)
        );
        emit(http.step(Step::Autodiscover, &url, address));
    }
    Ok(found)
}

fn port_suffix(port: Option<u16>) -> String {
    port.map(|p| format!(":{p}")).unwrap_or_default()
}

/// Mozilla's two places, in Thunderbird's order.
pub fn autoconfig_urls(address: &Address, port: Option<u16>) -> [String; 2] {
    let d = &address.domain;
    let p = port_suffix(port);
    [
        format!(
            "https://autoconfig.{d}{p}/mail/config-v1.1.xml?emailaddress={}",
            percent_encode(&address.full())
        ),
        format!("https://{d}{p}/.well-known/autoconfig/mail/config-v1.1.xml"),
    ]
}

/// Everything but RFC 3986's unreserved characters is %-encoded.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The resolver discovery asks.
#[derive(Debug)]
struct Dns {
    resolver: crate::dns::Resolver,
    /// Whether web servers' names go through `resolver` too.
    for_http: bool,
}

impl Dns {
    fn new(opts: &Options) -> Result<Dns, String> {
        let resolver = crate::dns::Resolver::new(opts.nameserver, opts.timeout)
            .map_err(|e| format!("cannot set up the DNS resolver: {e}"))?
            .attempts(1)
            .within(opts.timeout);
        Ok(Dns {
            resolver,
            for_http: opts.nameserver.is_some(),
        })
    }

    fn mx_step(&self, address: &Address) -> Report {
        let outcome = match self.resolver.lookup(&address.domain, crate::dns::Type::MX) {
            Ok(answers) => {
                let mut mx: Vec<(u16, String)> = answers
                    .iter()
                    .filter_map(|data| match data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .filter_map(|(pref, host)| Some((pref, host_name(&host)?)))
                    .collect();
                mx.sort();
                let hosts: Vec<String> = mx.into_iter().map(|(_, h)| h).collect();
                match providers::by_mx(&hosts) {
                    Some((p, host)) => {
                        Outcome::Found(vec![p.candidate(host, Some(address.full()))])
                    }
                    None if hosts.is_empty() => Outcome::Nothing("no MX records".into()),
                    None => Outcome::Nothing(format!(
                        "MX {}: not a provider mailhop knows",
                        hosts.join(", ")
                    )),
                }
            }
            Err(e) => Outcome::Failed(format!("DNS lookup failed: {e}")),
        };
        Report {
            step: Step::Mx,
            asked: format!("MX {}", address.domain),
            outcome,
        }
    }

    fn srv_step(&self, address: &Address, service: &str, security: super::Security) -> Report {
        let name = format!("{service}.{}", address.domain);
        let outcome = match self.resolver.lookup(&name, crate::dns::Type::SRV) {
            Ok(answers) => {
                let records: Vec<srv::Record> = answers
                    .iter()
                    .filter_map(|data| match data {
                        RData::SRV(s) => Some(srv::Record {
                            priority: s.priority,
                            weight: s.weight,
                            port: s.port,
                            target: host_name(&s.target.to_ascii()).unwrap_or_default(),
                        }),
                        _ => None,
                    })
                    .collect();
                match srv::order(records, &mut random_draw) {
                    srv::Answer::Targets(t) => {
                        Outcome::Found(srv::candidates(&name, security, &t, address))
                    }
                    srv::Answer::NotOffered => {
                        Outcome::Nothing("target \".\": the service is not offered".into())
                    }
                    srv::Answer::None if answers.is_empty() => {
                        Outcome::Nothing("no SRV record".into())
                    }
                    srv::Answer::None => Outcome::Nothing("no usable SRV record".into()),
                }
            }
            Err(e) => Outcome::Failed(format!("DNS lookup failed: {e}")),
        };
        Report {
            step: Step::Srv,
            asked: format!("SRV {name}"),
            outcome,
        }
    }

    fn lookup_ip(&self, host: &str) -> Result<Vec<std::net::IpAddr>, String> {
        self.resolver.lookup_ip(host).map_err(|e| e.to_string())
    }
}

/// Uniform in `0..=n` from the system's random source (RFC 2782's draw).
fn random_draw(n: u32) -> u32 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0;
    }
    u32::from_le_bytes(bytes) % n.saturating_add(1).max(1)
}

/// ureq's name resolution: through our DNS server when one is given (so
/// tests can point names at a local server), else the system's.
#[derive(Debug)]
struct HttpResolver {
    dns: Arc<Dns>,
}

impl Resolver for HttpResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if !self.dns.for_http {
            return DefaultResolver::default().resolve(uri, config, timeout);
        }
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let port = uri.port_u16().unwrap_or(443);
        let ips = self
            .dns
            .lookup_ip(host)
            .map_err(|_| ureq::Error::HostNotFound)?;
        let mut out = self.empty();
        for ip in ips.into_iter().take(16) {
            out.push(SocketAddr::new(ip, port));
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

/// An HTTPS client that follows no redirect by itself.
#[derive(Debug)]
struct Http {
    agent: ureq::Agent,
    timeout: Duration,
}

/// One response, reduced to what discovery acts on.
enum Fetched {
    Body(String),
    Redirect(String),
    Status(u16),
}

impl Http {
    fn new(opts: &Options, dns: Arc<Dns>) -> Result<Http, String> {
        let mut roots = Vec::new();
        if let Some(bundle) = SYSTEM_BUNDLES
            .iter()
            .find(|p| std::path::Path::new(p).is_file())
        {
            let _ = load_pem(std::path::Path::new(bundle), &mut roots);
        }
        if let Some(ca) = &opts.ca_file {
            match load_pem(ca, &mut roots) {
                Ok(0) => return Err(format!("--ca-file {}: no PEM certificates", ca.display())),
                Ok(_) => {}
                Err(e) => return Err(format!("--ca-file {}: {e}", ca.display())),
            }
        }
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .https_only(true)
            .timeout_global(Some(opts.timeout))
            .user_agent(concat!("mailhop/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            HttpResolver { dns },
        );
        Ok(Http {
            agent,
            timeout: opts.timeout,
        })
    }

    fn fetch(&self, step: Step, url: &str, address: &Address) -> Result<Fetched, String> {
        let response = match step {
            Step::Autodiscover => self
                .agent
                .post(url)
                .header("Content-Type", "text/xml; charset=utf-8")
                .send(xml::autodiscover_request(address)),
            _ => self.agent.get(url).call(),
        }
        .map_err(|e| self.describe(e))?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .chars()
                .take(500)
                .collect();
            return Ok(Fetched::Redirect(location));
        }
        if status != 200 {
            return Ok(Fetched::Status(status));
        }
        let bytes = response
            .into_body()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| self.describe(e))?;
        String::from_utf8(bytes)
            .map(Fetched::Body)
            .map_err(|_| "the answer is not UTF-8".to_string())
    }

    /// One step: fetch, follow redirects under the domain, parse.
    fn step(&self, step: Step, first: &str, address: &Address) -> Report {
        let mut url = first.to_string();
        let mut hops = 0;
        let outcome = loop {
            let fetched = match self.fetch(step, &url, address) {
                Ok(f) => f,
                Err(e) => break Outcome::Failed(e),
            };
            match fetched {
                Fetched::Status(404) => break Outcome::Nothing("not found (HTTP 404)".into()),
                Fetched::Status(s) => break Outcome::Failed(format!("HTTP status {s}")),
                Fetched::Body(body) => break parse(step, &body, &url, address),
                Fetched::Redirect(to) => match redirect_target(&url, &to, address) {
                    Ok(next) if hops < MAX_REDIRECTS => {
                        hops += 1;
                        url = next;
                    }
                    Ok(_) => break Outcome::Failed("too many redirects".into()),
                    Err(why) => break Outcome::Nothing(why),
                },
            }
        };
        Report {
            step,
            asked: first.to_string(),
            outcome,
        }
    }

    fn describe(&self, e: ureq::Error) -> String {
        if matches!(e, ureq::Error::Timeout(_)) {
            return format!("no answer within {} s", self.timeout.as_secs_f32());
        }
        // The system resolver's failure comes as an I/O error.
        let lookup_failed = matches!(&e, ureq::Error::Io(io)
            if io.to_string().contains("failed to lookup address"));
        if matches!(e, ureq::Error::HostNotFound) || lookup_failed {
            return "the name does not resolve".into();
        }
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !detail.contains(&text) {
                detail.push_str(": ");
                detail.push_str(&text);
            }
            source = s.source();
        }
        detail.chars().take(300).collect()
    }
}

fn parse(step: Step, body: &str, url: &str, address: &Address) -> Outcome {
    let parsed = match step {
        Step::Autodiscover => xml::autodiscover(body, url, address),
        _ => xml::autoconfig(body, url, address),
    };
    match parsed {
        Ok(Parsed::Servers(c)) if c.is_empty() => {
            Outcome::Nothing("no SMTP server mailhop can use in the answer".into())
        }
        Ok(Parsed::Servers(c)) => Outcome::Found(c),
        Ok(Parsed::Redirect(to)) => Outcome::Nothing(format!("redirected {to}: not followed")),
        Err(e) => Outcome::Failed(e),
    }
}

/// Where a redirect from `current` to `location` goes, if it may be
/// followed: HTTPS, and a host under the address's own domain. Anything
/// else is never trusted silently (issue #13 §1): the reason is reported.
fn redirect_target(current: &str, location: &str, address: &Address) -> Result<String, String> {
    let next = if location.starts_with('/') {
        let base: ureq::http::Uri = current.parse().map_err(|_| "bad URL".to_string())?;
        let authority = base.authority().map(|a| a.as_str()).unwrap_or("");
        format!("https://{authority}{location}")
    } else {
        location.to_string()
    };
    let uri: ureq::http::Uri = next
        .parse()
        .map_err(|_| format!("redirected to an invalid URL {location:?}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "redirected to {next}, which is not HTTPS: not followed"
        ));
    }
    match uri.host() {
        Some(host) if address.owns(host) => Ok(next),
        Some(host) => Err(format!(
            "redirected to {host}, which is not under {}: not followed (check it yourself)",
            address.domain
        )),
        None => Err(format!("redirected to {next}: no host")),
    }
}

fn load_pem(
    path: &std::path::Path,
    out: &mut Vec<ureq::tls::Certificate<'static>>,
) -> std::io::Result<usize> {
    let data = std::fs::read(path)?;
    let mut n = 0;
    for item in ureq::tls::parse_pem(&data) {
        if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
            out.push(c);
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let a = Address::parse("j+x@example.com").unwrap();
        let [first, second] = autoconfig_urls(&a, None);
        assert_eq!(
            first,
            "https://autoconfig.example.com/mail/config-v1.1.xml?emailaddress=j%2Bx%40example.com"
        );
        assert_eq!(
            second,
            "https://example.com/.well-known/autoconfig/mail/config-v1.1.xml"
        );
        assert!(autoconfig_urls(&a, Some(8443))[1].starts_with("https://example.com:8443/"));
    }

    #[test]
    fn redirects_stay_under_the_domain() {
        let a = Address::parse("j@example.com").unwrap();
        let cur = "https://autoconfig.example.com:8443/mail/x.xml";
        assert_eq!(
            redirect_target(cur, "/other.xml", &a),
            Ok("https://autoconfig.example.com:8443/other.xml".into())
        );
        assert!(redirect_target(cur, "https://mail.example.com/a", &a).is_ok());
        let e = redirect_target(cur, "https://evil.example.net/a", &a).unwrap_err();
        assert!(
            e.contains("evil.example.net") && e.contains("not followed"),
            "{e}"
        );
        assert!(
            redirect_target(cur, "http://example.com/a", &a)
                .unwrap_err()
                .contains("not HTTPS")
        );
        assert!(redirect_target(cur, "https://example.com.evil.net/", &a).is_err());
    }

    #[test]
    fn draws_stay_in_range() {
        for n in [0, 1, 7, u32::MAX] {
            assert!(random_draw(n) <= n);
        }
    }
}
