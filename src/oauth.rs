//! OAuth 2.0 bearer tokens for AUTH XOAUTH2 (Microsoft 365, Gmail, or any
//! RFC 6749 provider).
//!
//! Flows:
//! - `client_credentials` (app-only Exchange Online): client id + secret
//!   file give an access token directly;
//! - `refresh_token` (delegated): a refresh token kept in `token_file`
//!   (mode 0600, rewritten atomically whenever the provider rotates it) is
//!   exchanged for access tokens; [`login`] obtains the first one
//!   interactively (device code for Microsoft, authorization code with PKCE
//!   and a loopback redirect for Google);
//! - `token_command`: an external helper prints the access token.
//!
//! Runtime: the access token is cached in `<token_file>.access` (0600) and
//! reused until five minutes before it expires, so sending a message costs a
//! file read rather than an HTTPS round trip. A refresh happens under an
//! exclusive `flock` on `<token_file>.lock`, and the cache is checked again
//! once the lock is held, so many concurrent invocations make one token
//! request between them: the others wait on the lock and find the fresh
//! cache. On a 5.7.x authentication failure the caller calls [`invalidate`]
//! and then [`access_token`] with `force_refresh`, once.
//!
//! HTTP: the `oauth2` crate builds the requests and parses the responses
//! (including error responses: `error`, `error_description` with the
//! AADSTS code); they travel over ureq 3 (rustls with ring, trusting the
//! system CA bundle plus `ca_file`) through the small [`HttpClient`]
//! adapter. oauth2's own `ureq` feature would drag in ureq 2 and turn
//! non-2xx replies into errors that lose the body.
//!
//! Secrets (client secret, refresh and access tokens) never appear in
//! errors, `Debug` output or [`Status`]; text from the provider is shown
//! with them redacted. What oauth2 and ureq copy internally (request
//! bodies, parsed responses) is not zeroised; everything this module keeps
//! is.

use std::borrow::Cow;
use std::cell::Cell;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::libc;
use oauth2::basic::{BasicClient, BasicTokenResponse};
use oauth2::url::{Host, Url};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    DeviceAuthorizationUrl, EndpointNotSet, EndpointSet, PkceCodeChallenge, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, StandardDeviceAuthorizationResponse,
    StandardErrorResponse, SyncHttpClient, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::credentials::{self, Ids, Secret};

/// An access token is used until this long before it expires.
pub const EXPIRY_MARGIN: u64 = 300;
/// Assumed lifetime when the provider sends no `expires_in`.
const DEFAULT_LIFETIME: u64 = 3600;
/// Whole-request timeout for one call to a token endpoint.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest response body read from an endpoint.
const MAX_BODY: u64 = 256 * 1024;
/// How long `login` waits for the browser to come back to the loopback
/// redirect.
const LOOPBACK_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the browser may take to send one request to the loopback
/// redirect, headers and all.
const REDIRECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `token_command` may run.
const TOKEN_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of an endpoint's text an error shows.
const EXCERPT_CHARS: usize = 600;

const MS_LOGIN: &str = "https://login.microsoftonline.com";
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const GOOGLE_AUTH_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";

/// Exchange Online, app-only (client credentials).
pub const MS_APP_SCOPE: &str = "https://outlook.office365.com/.default";
/// Exchange Online, delegated SMTP submission.
pub const MS_SMTP_SCOPE: &str = "https://outlook.office.com/SMTP.Send";
/// Gmail (IMAP/POP/SMTP): the only scope that covers XOAUTH2.
pub const GOOGLE_MAIL_SCOPE: &str = "https://mail.google.com/";

/// Where the system CA bundle lives on the common distributions (one file
/// is faster to load than scanning `/etc/ssl/certs`).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Microsoft Entra ID (Office 365 / Exchange Online).
    Microsoft,
    Google,
    /// Any RFC 6749 provider: `token_url` (and `device_url` or `auth_url`
    /// for `login`) must be given.
    Custom,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    ClientCredentials,
    RefreshToken,
    /// Run this `/bin/sh -c` command; its standard output is the access
    /// token. The helper does its own caching.
    TokenCommand(String),
}

/// One account's OAuth configuration. Holds no secret itself: only the
/// paths of the files that do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub account: String,
    pub provider: Provider,
    pub flow: Flow,
    /// Entra ID tenant (id or domain). Required for Microsoft client
    /// credentials; `common` for delegated sign-in when unset.
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    /// First line = client secret. Required for client credentials; for
    /// delegated flows only when the app registration has one (Google).
    pub client_secret_file: Option<PathBuf>,
    /// The refresh token. The access-token cache is `<token_file>.access`,
    /// the lock `<token_file>.lock`.
    pub token_file: PathBuf,
    pub token_url: Option<String>,
    pub device_url: Option<String>,
    pub auth_url: Option<String>,
    /// Overrides the provider's default scopes.
    pub scopes: Option<Vec<String>>,
    /// Extra trust anchors (PEM) for a private IdP or tests.
    pub ca_file: Option<PathBuf>,
}

/// What `mailhop check` shows. No secrets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Status {
    pub has_refresh_token: bool,
    /// When the cached access token expires (Unix seconds).
    pub access_expires: Option<u64>,
    /// The scopes granted to the cached token, else the configured ones.
    pub scopes: Vec<String>,
    /// When an access token was last obtained (or the refresh token last
    /// written).
    pub last_refresh: Option<u64>,
    /// Why the token file or the cache could not be read (wrong owner or
    /// mode, damaged, unreadable): not the same as no token at all.
    pub problem: Option<String>,
}

/// Why no token could be obtained. Never contains a secret.
#[derive(Debug)]
#[non_exhaustive]
pub enum OAuthError {
    /// The settings cannot work (missing key, http:// to a remote host).
    Config(String),
    /// `flow = "refresh_token"` but there is no refresh token yet.
    NotLoggedIn { account: String, path: PathBuf },
    /// A token, cache, lock or secret file is unsafe or unusable.
    File { path: PathBuf, problem: String },
    /// The endpoint answered with an OAuth error (`invalid_grant`, …).
    Endpoint {
        url: String,
        status: u16,
        error: String,
        /// The provider's explanation (AADSTS code and text), redacted.
        description: Option<String>,
        /// What to do about it.
        advice: Option<String>,
        transient: bool,
    },
    /// The endpoint could not be reached, or answered something that is
    /// not OAuth.
    Http {
        url: String,
        detail: String,
        transient: bool,
    },
    /// `token_command` failed.
    TokenCommand(String),
    /// Interactive sign-in failed (denied, expired, state mismatch, …).
    Login(String),
}

impl OAuthError {
    /// Worth retrying later (network trouble, 5xx, `temporarily_unavailable`):
    /// the message should stay queued (EX_TEMPFAIL).
    pub fn is_transient(&self) -> bool {
        match self {
            OAuthError::Endpoint { transient, .. } | OAuthError::Http { transient, .. } => {
                *transient
            }
            _ => false,
        }
    }

    /// The user must run `mailhop oauth login ACCOUNT`.
    pub fn needs_login(&self) -> bool {
        match self {
            OAuthError::NotLoggedIn { .. } => true,
            OAuthError::Endpoint { error, .. } => error == "invalid_grant",
            _ => false,
        }
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OAuthError::Config(msg) => write!(f, "{msg}"),
            OAuthError::NotLoggedIn { account, path } => write!(
                f,
                "account `{account}` has no OAuth refresh token yet ({} does not exist); \
                 run `mailhop oauth login {account}` to sign in",
                path.display()
            ),
            OAuthError::File { path, problem } => write!(f, "{}: {problem}", path.display()),
            OAuthError::Endpoint {
                url,
                status,
                error,
                description,
                advice,
                ..
            } => {
                write!(
                    f,
                    "token endpoint {url} refused the request (HTTP {status}): {error}"
                )?;
                if let Some(d) = description {
                    write!(f, ": {d}")?;
                }
                if let Some(a) = advice {
                    write!(f, "; {a}")?;
                }
                Ok(())
            }
            OAuthError::Http { url, detail, .. } => write!(f, "OAuth endpoint {url}: {detail}"),
            OAuthError::TokenCommand(msg) => write!(f, "{msg}"),
            OAuthError::Login(msg) => write!(f, "sign-in failed: {msg}"),
        }
    }
}

impl std::error::Error for OAuthError {}

fn config_err(msg: impl Into<String>) -> OAuthError {
    OAuthError::Config(msg.into())
}

fn file_err(path: &Path, problem: impl Into<String>) -> OAuthError {
    OAuthError::File {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

// ---------------------------------------------------------------------------
// Settings

/// The endpoints of one account, after defaults and overrides.
#[derive(Debug)]
struct Endpoints {
    token: String,
    device: Option<String>,
    auth: Option<String>,
}

impl Settings {
    /// Checks the keys each flow and provider need, and that every endpoint
    /// is HTTPS (plain HTTP only to loopback).
    pub fn validate(&self) -> Result<(), OAuthError> {
        let acct = &self.account;
        if let Flow::TokenCommand(cmd) = &self.flow {
            if cmd.trim().is_empty() {
                return Err(config_err(format!(
                    "account `{acct}`: token_command is empty; set it to a command that prints \
                     the access token"
                )));
            }
            return Ok(());
        }
        if self
            .client_id
            .as_deref()
            .is_none_or(|c| c.trim().is_empty())
        {
            return Err(config_err(format!(
                "account `{acct}`: [account.oauth] needs client_id (the application id of the \
                 app registration)"
            )));
        }
        if self.token_file.as_os_str().is_empty() || self.token_file.file_name().is_none() {
            return Err(config_err(format!(
                "account `{acct}`: [account.oauth] needs token_file (where mailhop keeps the \
                 tokens)"
            )));
        }
        if let Some(t) = &self.tenant
            && (t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'))
        {
            return Err(config_err(format!(
                "account `{acct}`: tenant = \"{t}\" is not a tenant id or domain"
            )));
        }
        if let Some(scopes) = &self.scopes
            && (scopes.is_empty()
                || scopes.iter().any(|s| {
                    s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control())
                }))
        {
            return Err(config_err(format!(
                "account `{acct}`: scopes must be a non-empty list of scope strings without spaces"
            )));
        }
        match (self.provider, &self.flow) {
            (Provider::Google, Flow::ClientCredentials) => {
                return Err(config_err(format!(
                    "account `{acct}`: Google has no client-credentials access to Gmail; use \
                     flow = \"refresh_token\" and `mailhop oauth login {acct}`"
                )));
            }
            (Provider::Microsoft, Flow::ClientCredentials) if self.token_url.is_none() => {
                match self.tenant.as_deref() {
                    None => {
                        return Err(config_err(format!(
                            "account `{acct}`: client_credentials needs tenant (the directory \
                             (tenant) id or domain of the app registration)"
                        )));
                    }
                    Some(t)
                        if ["common", "organizations", "consumers"]
                            .iter()
                            .any(|m| t.eq_ignore_ascii_case(m)) =>
                    {
                        return Err(config_err(format!(
                            "account `{acct}`: client_credentials needs a specific tenant, not \
                             `{t}`"
                        )));
                    }
                    Some(_) => {}
                }
            }
            (Provider::Custom, _) if self.token_url.is_none() => {
                return Err(config_err(format!(
                    "account `{acct}`: provider = \"custom\" needs token_url"
                )));
            }
            _ => {}
        }
        if self.flow == Flow::ClientCredentials && self.client_secret_file.is_none() {
            return Err(config_err(format!(
                "account `{acct}`: client_credentials needs client_secret_file (a 0600 file \
                 holding the client secret)"
            )));
        }
        for (key, url) in [
            ("token_url", &self.token_url),
            ("device_url", &self.device_url),
            ("auth_url", &self.auth_url),
        ] {
            if let Some(url) = url {
                check_url(acct, key, url)?;
            }
        }
        Ok(())
    }

    fn endpoints(&self) -> Endpoints {
        let tenant = self.tenant.as_deref().unwrap_or("common");
        let (token, device, auth) = match self.provider {
            Provider::Microsoft => (
                Some(format!("{MS_LOGIN}/{tenant}/oauth2/v2.0/token")),
                Some(format!("{MS_LOGIN}/{tenant}/oauth2/v2.0/devicecode")),
                Some(format!("{MS_LOGIN}/{tenant}/oauth2/v2.0/authorize")),
            ),
            Provider::Google => (
                Some(GOOGLE_TOKEN_URL.to_string()),
                None,
                Some(GOOGLE_AUTH_URL.to_string()),
            ),
            Provider::Custom => (None, None, None),
        };
        Endpoints {
            token: self.token_url.clone().or(token).unwrap_or_default(),
            device: self.device_url.clone().or(device),
            auth: self.auth_url.clone().or(auth),
        }
    }

    fn scope_list(&self) -> Vec<String> {
        if let Some(s) = &self.scopes {
            return s.clone();
        }
        let v: &[&str] = match (self.provider, &self.flow) {
            (Provider::Microsoft, Flow::ClientCredentials) => &[MS_APP_SCOPE],
            (Provider::Microsoft, _) => &[MS_SMTP_SCOPE, "offline_access"],
            (Provider::Google, _) => &[GOOGLE_MAIL_SCOPE],
            (Provider::Custom, _) => &[],
        };
        v.iter().map(|s| s.to_string()).collect()
    }

    fn cache_path(&self) -> PathBuf {
        sibling(&self.token_file, ".access")
    }

    fn lock_path(&self) -> PathBuf {
        sibling(&self.token_file, ".lock")
    }
}

/// `<path><suffix>`, e.g. `work.token.access`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

fn check_url(account: &str, key: &str, url: &str) -> Result<Url, OAuthError> {
    let parsed = Url::parse(url).map_err(|e| {
        config_err(format!(
            "account `{account}`: {key} = \"{url}\" is not a URL ({e})"
        ))
    })?;
    let ok = match parsed.scheme() {
        "https" => parsed.host().is_some(),
        "http" => parsed.host().as_ref().is_some_and(is_loopback_host),
        _ => false,
    };
    if !ok {
        return Err(config_err(format!(
            "account `{account}`: {key} = \"{url}\" must be an https:// URL (plain http:// is \
             allowed only to 127.0.0.1, ::1 or localhost)"
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(config_err(format!(
            "account `{account}`: {key} must not contain a user name or password"
        )));
    }
    Ok(parsed)
}

// ---------------------------------------------------------------------------
// Public operations

/// The access token to send: from the cache while it is valid for more
/// than [`EXPIRY_MARGIN`] seconds after `now`, otherwise refreshed under
/// the lock. `force_refresh` skips the cache (after a 5.7.x refusal).
pub fn access_token(
    s: &Settings,
    ids: &Ids,
    now: u64,
    force_refresh: bool,
) -> Result<Secret, OAuthError> {
    s.validate()?;
    if let Flow::TokenCommand(cmd) = &s.flow {
        return run_token_command(cmd, ids);
    }
    if !force_refresh && let Some(token) = cached_token(s, ids, now)? {
        return Ok(token);
    }
    let _lock = lock(s, ids)?;
    // Whoever held the lock before us may have refreshed already.
    if !force_refresh && let Some(token) = cached_token(s, ids, now)? {
        return Ok(token);
    }
    refresh_locked(s, ids, now)
}

/// Drops the cached access token (after the server refused it).
pub fn invalidate(s: &Settings) -> Result<(), OAuthError> {
    if let Flow::TokenCommand(_) = s.flow {
        return Ok(());
    }
    let path = s.cache_path();
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(file_err(
            &path,
            format!("cannot remove the cached access token: {e}"),
        )),
    }
}

/// A file's content, or why it could not be read.
fn readable<T>(r: Result<Option<T>, OAuthError>) -> (Option<T>, Option<String>) {
    match r {
        Ok(t) => (t, None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// What `mailhop check` shows: never a secret.
pub fn status(s: &Settings, ids: &Ids) -> Status {
    if let Flow::TokenCommand(_) = s.flow {
        return Status::default();
    }
    let (stored, stored_problem) = match s.flow {
        Flow::RefreshToken => readable(read_stored(&s.token_file, ids)),
        _ => (None, None),
    };
    let (cache, cache_problem) = readable(read_cache(s, ids));
    let problem = stored_problem.or(cache_problem);
    let scopes = cache
        .as_ref()
        .and_then(|c| c.scope.clone())
        .or_else(|| stored.as_ref().and_then(|t| t.scope.clone()))
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_else(|| s.scope_list());
    Status {
        has_refresh_token: stored.as_ref().is_some_and(|t| !t.refresh_token.is_empty()),
        access_expires: cache.as_ref().map(|c| c.expires_at),
        scopes,
        last_refresh: cache
            .as_ref()
            .map(|c| c.obtained)
            .or_else(|| stored.as_ref().and_then(|t| t.updated)),
        problem,
    }
}

/// Interactive sign-in for `flow = "refresh_token"`: the device-code flow
/// (Microsoft, or custom with `device_url`) or an authorization code with
/// PKCE and a loopback redirect (Google, or custom with `auth_url`). Writes
/// the refresh token file (and caches the access token that came with it).
pub fn login(s: &Settings, ids: &Ids, out: &mut dyn Write, now: u64) -> Result<(), OAuthError> {
    login_with_sleep(s, ids, out, now, &|d| std::thread::sleep(d))
}

/// [`login`] with the device-flow polling delay injected (tests pass a
/// function that records the intervals instead of sleeping).
pub fn login_with_sleep(
    s: &Settings,
    ids: &Ids,
    out: &mut dyn Write,
    now: u64,
    sleep: &dyn Fn(Duration),
) -> Result<(), OAuthError> {
    s.validate()?;
    let acct = &s.account;
    match &s.flow {
        Flow::RefreshToken => {}
        Flow::ClientCredentials => {
            return Err(config_err(format!(
                "account `{acct}` uses client credentials, which need no sign-in (the client \
                 secret is the credential); `mailhop check` tests it"
            )));
        }
        Flow::TokenCommand(_) => {
            return Err(config_err(format!(
                "account `{acct}` gets its tokens from token_command; sign in with that helper"
            )));
        }
    }
    let ep = s.endpoints();
    let use_device = match s.provider {
        Provider::Microsoft => true,
        Provider::Google => false,
        Provider::Custom => s.device_url.is_some(),
    };
    let response = if use_device {
        let device = ep.device.clone().unwrap_or_default();
        device_login(s, ids, &ep, &device, out, now, sleep)?
    } else {
        let Some(auth) = ep.auth.clone() else {
            return Err(config_err(format!(
                "account `{acct}`: provider = \"custom\" needs device_url (device-code sign-in) \
                 or auth_url (browser sign-in) for `mailhop oauth login`"
            )));
        };
        loopback_login(s, ids, &ep, &auth, out)?
    };
    if response.refresh_token().is_none() {
        return Err(OAuthError::Login(format!(
            "the provider returned no refresh token, so mailhop could not send later; {}",
            match s.provider {
                Provider::Microsoft => "include the offline_access scope",
                Provider::Google =>
                    "revoke mailhop's access in the Google account and sign in again",
                Provider::Custom => "ask for offline access (e.g. the offline_access scope)",
            }
        )));
    }
    {
        let _lock = lock(s, ids)?;
        store_response(s, ids, now, &response)?;
    }
    let _ = writeln!(
        out,
        "Signed in. The refresh token is saved in {}.",
        s.token_file.display()
    );
    let _ = out.flush();
    Ok(())
}

// ---------------------------------------------------------------------------
// Refresh

/// Obtains a new access token from the endpoint. The caller holds the lock.
fn refresh_locked(s: &Settings, ids: &Ids, now: u64) -> Result<Secret, OAuthError> {
    let ep = s.endpoints();
    let client_secret = read_client_secret(s, ids)?;
    let http = HttpClient::new(s, ids)?;
    let client = base_client(s, &ep, client_secret.as_ref())?;
    let mut redact: Vec<&str> = client_secret.iter().map(Secret::expose).collect();
    let scopes = s.scope_list();
    let response = match s.flow {
        Flow::ClientCredentials => client
            .exchange_client_credentials()
            .add_scopes(scopes.into_iter().map(Scope::new))
            .request(&http)
            .map_err(|e| endpoint_error(s, &ep.token, &http, e, &redact))?,
        _ => {
            let Some(stored) = read_stored(&s.token_file, ids)? else {
                return Err(OAuthError::NotLoggedIn {
                    account: s.account.clone(),
                    path: s.token_file.clone(),
                });
            };
            if stored.refresh_token.is_empty() {
                return Err(OAuthError::NotLoggedIn {
                    account: s.account.clone(),
                    path: s.token_file.clone(),
                });
            }
            let refresh = RefreshToken::new(stored.refresh_token.clone());
            redact.push(&stored.refresh_token);
            client
                .exchange_refresh_token(&refresh)
                .add_scopes(scopes.into_iter().map(Scope::new))
                .request(&http)
                .map_err(|e| endpoint_error(s, &ep.token, &http, e, &redact))?
        }
    };
    store_response(s, ids, now, &response)
}

type TokenClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

fn base_client(
    s: &Settings,
    ep: &Endpoints,
    client_secret: Option<&Secret>,
) -> Result<TokenClient, OAuthError> {
    check_url(&s.account, "token_url", &ep.token)?;
    let token_url = TokenUrl::new(ep.token.clone())
        .map_err(|e| config_err(format!("token_url {}: {e}", ep.token)))?;
    let mut client = BasicClient::new(ClientId::new(s.client_id.clone().unwrap_or_default()))
        .set_token_uri(token_url)
        // Both providers accept client_secret in the form; public clients
        // send no secret at all (Entra ID refuses one: AADSTS700025).
        .set_auth_type(AuthType::RequestBody);
    if let Some(secret) = client_secret {
        client = client.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
    }
    Ok(client)
}

/// Writes the rotated refresh token (if any) and the access-token cache;
/// returns the access token. The caller holds the lock.
fn store_response(
    s: &Settings,
    ids: &Ids,
    now: u64,
    r: &BasicTokenResponse,
) -> Result<Secret, OAuthError> {
    let access = r.access_token().secret();
    if access.is_empty() {
        return Err(OAuthError::Http {
            url: s.endpoints().token,
            detail: "the token endpoint returned an empty access_token".into(),
            transient: false,
        });
    }
    let granted = r
        .scopes()
        .map(|v| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "));
    if let Some(new_refresh) = r.refresh_token()
        && s.flow == Flow::RefreshToken
    {
        let old = read_stored(&s.token_file, ids).ok().flatten();
        let changed = old
            .as_ref()
            .is_none_or(|o| o.refresh_token != *new_refresh.secret());
        if changed {
            let mut stored = Stored {
                refresh_token: new_refresh.secret().clone(),
                updated: Some(now),
                scope: granted
                    .clone()
                    .or_else(|| old.as_ref().and_then(|o| o.scope.clone())),
            };
            let json = Zeroizing::new(serde_json::to_vec(&stored).unwrap_or_default());
            stored.refresh_token.zeroize();
            write_atomic(&s.token_file, &json, ids)?;
        }
    }
    let lifetime = r
        .expires_in()
        .map(|d| d.as_secs())
        .unwrap_or(DEFAULT_LIFETIME);
    let cache = Cached {
        access_token: access.clone(),
        expires_at: now.saturating_add(lifetime),
        obtained: now,
        scope: granted.or_else(|| {
            let l = s.scope_list();
            (!l.is_empty()).then(|| l.join(" "))
        }),
    };
    let json = Zeroizing::new(serde_json::to_vec(&cache).unwrap_or_default());
    write_atomic(&s.cache_path(), &json, ids)?;
    Ok(cache.into_secret())
}

/// The cached access token if it is still good at `now`.
fn cached_token(s: &Settings, ids: &Ids, now: u64) -> Result<Option<Secret>, OAuthError> {
    let Some(cache) = read_cache(s, ids)? else {
        return Ok(None);
    };
    let lifetime = cache.expires_at.saturating_sub(cache.obtained);
    // A short-lived token is still used for the first half of its life.
    let margin = EXPIRY_MARGIN.min(lifetime / 2);
    let fresh = now.saturating_add(margin) < cache.expires_at
        // The clock went backwards: do not trust the recorded expiry.
        && cache.obtained <= now.saturating_add(60)
        && !cache.access_token.is_empty();
    Ok(fresh.then(|| cache.into_secret()))
}

fn read_cache(s: &Settings, ids: &Ids) -> Result<Option<Cached>, OAuthError> {
    let path = s.cache_path();
    let Some(bytes) = read_private(&path, "access-token cache", ids)? else {
        return Ok(None);
    };
    // A damaged cache is just a miss: the refresh rewrites it.
    Ok(serde_json::from_slice::<Cached>(&bytes).ok())
}

/// The refresh-token file: JSON as mailhop writes it, or (for a token
/// obtained elsewhere) the token alone on the first line.
fn read_stored(path: &Path, ids: &Ids) -> Result<Option<Stored>, OAuthError> {
    let Some(bytes) = read_private(path, "token file", ids)? else {
        return Ok(None);
    };
    let text =
        std::str::from_utf8(&bytes).map_err(|_| file_err(path, "token file is not UTF-8"))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        serde_json::from_str::<Stored>(trimmed)
            .map(Some)
            .map_err(|e| {
                file_err(
                    path,
                    format!(
                        "token file is damaged ({}); run `mailhop oauth login` again",
                        e.classify_name()
                    ),
                )
            })
    } else {
        let line = trimmed.lines().next().unwrap_or("").trim();
        Ok(Some(Stored {
            refresh_token: line.to_string(),
            updated: None,
            scope: None,
        }))
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        // Never the message: it may quote the content.
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "unexpected fields",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

fn read_client_secret(s: &Settings, ids: &Ids) -> Result<Option<Secret>, OAuthError> {
    let Some(path) = &s.client_secret_file else {
        return Ok(None);
    };
    let Some(bytes) = read_private(path, "client secret file", ids)? else {
        return Err(file_err(
            path,
            "client secret file does not exist; check client_secret_file",
        ));
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| file_err(path, "client secret file is not UTF-8"))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(file_err(
            path,
            "client secret file is empty; put the client secret (its value, not its id) on \
             the first line",
        ));
    }
    Ok(Some(Secret::new(line.to_string())))
}

fn run_token_command(cmd: &str, ids: &Ids) -> Result<Secret, OAuthError> {
    let policy = credentials::Policy {
        allowed_group: None,
        euid: ids.euid,
        clean_env: ids.setgid(),
    };
    let source = credentials::Source::Command {
        command: cmd.to_string(),
        timeout: TOKEN_COMMAND_TIMEOUT,
    };
    credentials::obtain(&[source], &policy).map_err(|e| {
        // credentials words its messages for password_command.
        OAuthError::TokenCommand(
            e.to_string()
                .replace("password_command", "token_command")
                .replace("only the password", "only the access token"),
        )
    })
}

// ---------------------------------------------------------------------------
// Files

#[derive(Serialize, Deserialize)]
struct Cached {
    access_token: String,
    expires_at: u64,
    obtained: u64,
    #[serde(default)]
    scope: Option<String>,
}

impl Cached {
    fn into_secret(mut self) -> Secret {
        Secret::new(std::mem::take(&mut self.access_token))
    }
}

impl Drop for Cached {
    fn drop(&mut self) {
        self.access_token.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    refresh_token: String,
    #[serde(default)]
    updated: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

impl Drop for Stored {
    fn drop(&mut self) {
        self.refresh_token.zeroize();
    }
}

/// The group that may share our files: mailhop's own in the setgid
/// installation.
fn allowed_group(ids: &Ids) -> Option<u32> {
    if ids.setgid() {
        return Some(ids.egid);
    }
    // The packaged runner runs as the mailhop user with the mailhop group
    // as its own: a member too, though not set-group-ID.
    ids.mailhop_gid.filter(|&g| g == ids.egid)
}

/// Reads a file that holds a secret, with the same checks as
/// `password_file` (credentials.rs): no symlink, a regular file, owned by
/// us or root, no access for others (nor for a group, except mailhop's in
/// the setgid installation). Checked on the open descriptor. `Ok(None)`
/// when it does not exist.
fn read_private(
    path: &Path,
    what: &str,
    ids: &Ids,
) -> Result<Option<Zeroizing<Vec<u8>>>, OAuthError> {
    use credentials::PrivateFileError as P;
    let euid = ids.euid;
    // In the shared (setgid) install another user of the group may have
    // written the file last: its group, not its owner, vouches for it.
    let file = match credentials::open_private(path, allowed_group(ids), euid, shared(ids)) {
        Ok(f) => f,
        Err(P::Missing) => return Ok(None),
        Err(e) => {
            let why = match e {
                P::Missing => format!("{what} does not exist"),
                P::Symlink => format!(
                    "{what} is a symbolic link, and symbolic links are refused; use the real file"
                ),
                P::Open(e) => format!("cannot open {what}: {e}"),
                P::Read(e) => format!("cannot read {what}: {e}"),
                P::NotRegular => format!("{what} is not a regular file"),
                P::Owner { owner } => format!(
                    "{what} is owned by uid {owner}, but must be owned by you (uid {euid}) or root; \
                     fix with: chown {euid} {}",
                    path.display()
                ),
                P::WorldAccessible { mode } | P::GroupAccessible { mode, .. } => format!(
                    "{what} is accessible by other users (mode {:04o}); fix with: chmod 600 {}",
                    mode & 0o7777,
                    path.display()
                ),
            };
            return Err(file_err(path, why));
        }
    };
    let limit = credentials::MAX_SECRET_LEN as u64;
    let mut buf = Zeroizing::new(Vec::with_capacity(credentials::MAX_SECRET_LEN + 1));
    (&file)
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| file_err(path, format!("cannot read {what}: {e}")))?;
    if buf.len() as u64 > limit {
        return Err(file_err(
            path,
            format!("{what} is larger than {} KiB", limit / 1024),
        ));
    }
    Ok(Some(buf))
}

/// Whether we run in the shared install: with the mailhop group as our
/// effective group (the setgid binary, or the runner). Token files are then
/// shared by the group, since cron (root), PHP (www-data) and the runner
/// all send through the same account and must see one token.
fn shared(ids: &Ids) -> bool {
    allowed_group(ids).is_some_and(|g| ids.egid == g)
}

/// File and directory modes: group-shared in the shared install, private
/// otherwise.
fn file_mode(ids: &Ids) -> u32 {
    if shared(ids) { 0o640 } else { 0o600 }
}

/// Creates `dir` (and its parents) if missing: 0770 in the shared install,
/// else 0700; set explicitly so the umask cannot take the group's bits.
fn ensure_dir(dir: &Path, ids: &Ids) -> Result<(), OAuthError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mode = if shared(ids) { 0o770 } else { 0o700 };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(mode)))
        .map_err(|e| file_err(dir, format!("cannot create the token directory: {e}")))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes` atomically: a 0600 temporary file in the
/// same directory, fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8], ids: &Ids) -> Result<(), OAuthError> {
    let dir = parent_dir(path);
    ensure_dir(dir, ids)?;
    let err = |e: io::Error| file_err(path, format!("cannot write: {e}"));
    let mut tmp = tempfile::Builder::new()
        .prefix(".mailhop-oauth-")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(file_mode(ids)))
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Takes the account's refresh lock: an exclusive `flock` on its own open
/// file description, so threads of one process exclude each other too.
/// Released when the returned file is dropped.
fn lock(s: &Settings, ids: &Ids) -> Result<File, OAuthError> {
    let path = s.lock_path();
    ensure_dir(parent_dir(&path), ids)?;
    let flags = libc::O_NOFOLLOW | libc::O_NOCTTY;
    let open_err = |e: io::Error| file_err(&path, format!("cannot open the token lock file: {e}"));
    // Read-write when permitted (NFS emulates flock with fcntl locks, and
    // an exclusive one needs a writable descriptor); else read-only, which
    // local flock accepts: another member of the group can then take a
    // lock file it did not create, whatever its write bits.
    let existing = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(&path)
    {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(&path),
        other => other,
    };
    let file = match existing {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mode = if shared(ids) { 0o660 } else { 0o600 };
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(mode)
                .custom_flags(flags)
                .open(&path)
                .map_err(open_err)?;
            // Set explicitly: the umask would take the group's bits.
            // Failing is harmless (a racing creator owns it).
            let _ = f.set_permissions(fs::Permissions::from_mode(mode));
            f
        }
        Err(e) => return Err(open_err(e)),
    };
    file.lock()
        .map_err(|e| file_err(&path, format!("cannot lock: {e}")))?;
    Ok(file)
}

// ---------------------------------------------------------------------------
// HTTP: ureq 3 behind oauth2's SyncHttpClient

/// Why a request got no HTTP response.
#[derive(Debug)]
struct HttpError {
    detail: String,
    transient: bool,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for HttpError {}

impl From<ureq::Error> for HttpError {
    fn from(e: ureq::Error) -> Self {
        let transient = matches!(
            e,
            ureq::Error::Io(_)
                | ureq::Error::Timeout(_)
                | ureq::Error::HostNotFound
                | ureq::Error::ConnectionFailed
                | ureq::Error::BodyStalled
                | ureq::Error::Protocol(_)
        );
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
        let tls = matches!(e, ureq::Error::Rustls(_) | ureq::Error::Tls(_))
            || detail.contains("certificate");
        // A certificate that does not verify is a configuration problem,
        // not something that goes away by retrying (as in transport.rs).
        let transient = transient && !tls;
        if tls {
            detail.push_str(
                " (the endpoint's certificate could not be verified against the system CA \
                 bundle; for a private CA set ca_file)",
            );
        }
        HttpError { detail, transient }
    }
}

/// The adapter: sends oauth2's requests with ureq, keeps error bodies (no
/// status is an error here), follows no redirects, bounds time and size.
/// Remembers the last status so errors can show it.
#[derive(Debug)]
struct HttpClient {
    agent: ureq::Agent,
    last_status: Cell<u16>,
}

impl HttpClient {
    fn new(s: &Settings, ids: &Ids) -> Result<HttpClient, OAuthError> {
        HttpClient::with_timeout(s, ids, HTTP_TIMEOUT)
    }

    /// `timeout` bounds each call end to end (DNS, connect, TLS, headers
    /// and body): ureq's per-read timeouts alone would let an endpoint
    /// that trickles its answer hold us for ever (issue #15.9).
    fn with_timeout(s: &Settings, ids: &Ids, timeout: Duration) -> Result<HttpClient, OAuthError> {
        let mut roots = Vec::new();
        if let Some(bundle) = SYSTEM_BUNDLES.iter().find(|p| Path::new(p).is_file()) {
            // An unreadable system bundle is not fatal: ca_file may do.
            let _ = load_pem(Path::new(bundle), &mut roots);
        }
        if let Some(ca) = &s.ca_file {
            let n = load_pem(ca, &mut roots)
                .map_err(|e| config_err(format!("ca_file {}: {e}", ca.display())))?;
            if n == 0 {
                return Err(config_err(format!(
                    "ca_file {}: no PEM certificates in it",
                    ca.display()
                )));
            }
        }
        let setid = ids.setid();
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .user_agent(concat!("mailhop/", env!("CARGO_PKG_VERSION")))
            // A setgid mailhop must not let its caller route the request.
            .proxy(if setid {
                None
            } else {
                ureq::Proxy::try_from_env()
            })
            .tls_config(tls)
            .build();
        Ok(HttpClient {
            agent: ureq::Agent::new_with_config(config),
            last_status: Cell::new(0),
        })
    }
}

fn load_pem(path: &Path, out: &mut Vec<ureq::tls::Certificate<'static>>) -> io::Result<usize> {
    let data = fs::read(path)?;
    let mut n = 0;
    for item in ureq::tls::parse_pem(&data) {
        if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
            out.push(c);
            n += 1;
        }
    }
    Ok(n)
}

impl SyncHttpClient for HttpClient {
    type Error = HttpError;

    fn call(&self, request: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, HttpError> {
        self.last_status.set(0);
        let response = self.agent.run(request)?;
        let (parts, mut body) = response.into_parts();
        let bytes = body.with_config().limit(MAX_BODY).read_to_vec()?;
        self.last_status.set(parts.status.as_u16());
        Ok(oauth2::http::Response::from_parts(parts, bytes))
    }
}

/// One line of provider text: control characters removed (AADSTS texts
/// carry CRLF-separated trace ids), whitespace collapsed, secrets redacted,
/// bounded.
fn clean_text(text: &str, secrets: &[&str]) -> String {
    let mut t: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for s in secrets {
        if !s.is_empty() {
            t = t.replace(s, "***");
        }
    }
    if t.chars().count() > EXCERPT_CHARS {
        t = t.chars().take(EXCERPT_CHARS).collect::<String>() + "…";
    }
    t
}

/// What to do about an OAuth error code.
fn advice(s: &Settings, error: &str, description: &str) -> Option<String> {
    let acct = &s.account;
    let login = format!("run `mailhop oauth login {acct}` to sign in again");
    let aad = |code: &str| description.contains(&format!("AADSTS{code}:"));
    let a = if aad("7000222") {
        "the client secret has expired: create a new one for the app registration and put it in \
         client_secret_file"
            .to_string()
    } else if aad("7000215") {
        "the client secret is wrong (use the secret's value, not its id): check client_secret_file"
            .to_string()
    } else if aad("700016") {
        "no such application in this tenant: check client_id and tenant".to_string()
    } else if aad("90002") {
        "no such tenant: check tenant".to_string()
    } else if aad("7000218") {
        "the app registration is confidential: enable \"Allow public client flows\" for it, or set \
         client_secret_file"
            .to_string()
    } else if aad("65001") {
        "the application lacks consent for the scope: an administrator must grant consent \
         (SMTP.Send, or SMTP.SendAsApp for client credentials)"
            .to_string()
    } else {
        match error {
            "invalid_grant" => match s.flow {
                Flow::RefreshToken => format!(
                    "the refresh token is expired or revoked (or was issued for other scopes): \
                     {login}"
                ),
                _ => "the grant was refused: check the app registration".to_string(),
            },
            "invalid_client" | "unauthorized_client" => {
                "check client_id, tenant and client_secret_file, and that the app registration \
                 allows this flow"
                    .to_string()
            }
            "invalid_scope" => {
                "the scopes are not valid for this application: check `scopes` and the app's API \
                 permissions"
                    .to_string()
            }
            "access_denied" => format!("the sign-in was declined; {login}"),
            "expired_token" => format!("the sign-in code expired before it was used; {login}"),
            "temporarily_unavailable" | "server_error" => {
                "the provider has a problem; mailhop will retry later".to_string()
            }
            _ => return None,
        }
    };
    Some(a)
}

fn endpoint_error<T: oauth2::ErrorResponseType + fmt::Display>(
    s: &Settings,
    url: &str,
    http: &HttpClient,
    e: RequestTokenError<HttpError, StandardErrorResponse<T>>,
    secrets: &[&str],
) -> OAuthError {
    let status = http.last_status.get();
    let status_transient = status == 429 || status >= 500;
    match e {
        RequestTokenError::ServerResponse(r) => {
            let error = clean_text(&r.error().to_string(), secrets);
            let description = r
                .error_description()
                .map(|d| clean_text(d, secrets))
                .filter(|d| !d.is_empty());
            let advice = advice(s, &error, description.as_deref().unwrap_or(""));
            let transient = status_transient
                || matches!(error.as_str(), "temporarily_unavailable" | "server_error");
            OAuthError::Endpoint {
                url: url.to_string(),
                status,
                error,
                description,
                advice,
                transient,
            }
        }
        RequestTokenError::Request(h) => OAuthError::Http {
            url: url.to_string(),
            detail: clean_text(&h.detail, secrets),
            transient: h.transient,
        },
        RequestTokenError::Parse(err, body) => {
            // A 200 body holds tokens: never show it.
            let detail = if status == 200 {
                format!(
                    "the token endpoint's reply is not a usable token response (at {})",
                    err.path()
                )
            } else {
                format!(
                    "HTTP {status} with a reply that is not an OAuth error: {}",
                    clean_text(&String::from_utf8_lossy(&body), secrets)
                )
            };
            OAuthError::Http {
                url: url.to_string(),
                detail,
                transient: status_transient,
            }
        }
        RequestTokenError::Other(msg) => OAuthError::Http {
            url: url.to_string(),
            detail: format!("HTTP {status}: {}", clean_text(&msg, secrets)),
            transient: status_transient,
        },
    }
}

// ---------------------------------------------------------------------------
// Interactive sign-in

fn device_login(
    s: &Settings,
    ids: &Ids,
    ep: &Endpoints,
    device_url: &str,
    out: &mut dyn Write,
    now: u64,
    sleep: &dyn Fn(Duration),
) -> Result<BasicTokenResponse, OAuthError> {
    check_url(&s.account, "device_url", device_url)?;
    let client_secret = read_client_secret(s, ids)?;
    let redact: Vec<&str> = client_secret.iter().map(Secret::expose).collect();
    let http = HttpClient::new(s, ids)?;
    let client = base_client(s, ep, client_secret.as_ref())?.set_device_authorization_url(
        DeviceAuthorizationUrl::new(device_url.to_string())
            .map_err(|e| config_err(format!("device_url {device_url}: {e}")))?,
    );
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(s.scope_list().into_iter().map(Scope::new))
        .request(&http)
        .map_err(|e| endpoint_error(s, device_url, &http, e, &redact))?;
    let uri = details.verification_uri().as_str();
    let code = details.user_code().secret();
    let w = |out: &mut dyn Write, text: String| {
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| OAuthError::Login(format!("cannot write the instructions: {e}")))
    };
    w(
        out,
        format!(
            "To sign in account `{}`, open\n\n    {uri}\n\nin a browser (on any device) and \
             enter the code\n\n    {code}\n\n",
            s.account
        ),
    )?;
    if let Some(complete) = details.verification_uri_complete() {
        w(out, format!("(or open {})\n", complete.secret()))?;
    }
    w(
        out,
        format!(
            "Waiting for the sign-in (the code is valid for {} minutes)…\n",
            details.expires_in().as_secs().div_ceil(60)
        ),
    )?;
    // Virtual time: `now` plus what the sleep function was asked to wait.
    let elapsed = Arc::new(AtomicU64::new(0));
    let clock = Arc::clone(&elapsed);
    let time_fn = move || {
        let t = now.saturating_add(clock.load(Ordering::Relaxed));
        chrono::DateTime::from_timestamp(i64::try_from(t).unwrap_or(i64::MAX), 0)
            .unwrap_or_default()
    };
    let sleep_fn = |d: Duration| {
        sleep(d);
        elapsed.fetch_add(d.as_secs().max(1), Ordering::Relaxed);
    };
    client
        .exchange_device_access_token(&details)
        .set_time_fn(time_fn)
        .set_max_backoff_interval(Duration::from_secs(60))
        .request(&http, sleep_fn, None)
        .map_err(|e| endpoint_error(s, &ep.token, &http, e, &redact))
}

fn loopback_login(
    s: &Settings,
    ids: &Ids,
    ep: &Endpoints,
    auth_url: &str,
    out: &mut dyn Write,
) -> Result<BasicTokenResponse, OAuthError> {
    check_url(&s.account, "auth_url", auth_url)?;
    let client_secret = read_client_secret(s, ids)?;
    let redact: Vec<&str> = client_secret.iter().map(Secret::expose).collect();
    let http = HttpClient::new(s, ids)?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| OAuthError::Login(format!("cannot listen on 127.0.0.1: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| OAuthError::Login(format!("cannot listen on 127.0.0.1: {e}")))?
        .port();
    let redirect = RedirectUrl::new(format!("http://127.0.0.1:{port}/"))
        .map_err(|e| OAuthError::Login(e.to_string()))?;
    let client = base_client(s, ep, client_secret.as_ref())?
        .set_auth_uri(
            AuthUrl::new(auth_url.to_string())
                .map_err(|e| config_err(format!("auth_url {auth_url}: {e}")))?,
        )
        .set_redirect_uri(redirect.clone());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(s.scope_list().into_iter().map(Scope::new))
        .set_pkce_challenge(challenge);
    if s.provider == Provider::Google {
        // Without these Google returns no refresh token.
        request = request
            .add_extra_param("access_type", "offline")
            .add_extra_param("prompt", "consent");
    }
    let (url, state) = request.url();
    out.write_all(
        format!(
            "To sign in account `{}`, open this URL in a browser on this machine:\n\n    {url}\n\n\
             The browser comes back to http://127.0.0.1:{port}/ when you are done (from another \
             machine, forward the port first: ssh -L {port}:127.0.0.1:{port} THIS-HOST).\n\
             Waiting for the sign-in…\n",
            s.account
        )
        .as_bytes(),
    )
    .and_then(|()| out.flush())
    .map_err(|e| OAuthError::Login(format!("cannot write the instructions: {e}")))?;

    let code = wait_for_code(&listener, state.secret(), LOOPBACK_TIMEOUT)?;
    client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(verifier)
        .set_redirect_uri(Cow::Borrowed(&redirect))
        .request(&http)
        .map_err(|e| endpoint_error(s, &ep.token, &http, e, &redact))
}

/// Serves the loopback redirect until it brings a code (or an error) with
/// our `state`; other requests (favicon, probes) get a 404 or 400.
fn wait_for_code(
    listener: &TcpListener,
    state: &str,
    timeout: Duration,
) -> Result<Zeroizing<String>, OAuthError> {
    listener
        .set_nonblocking(true)
        .map_err(|e| OAuthError::Login(format!("loopback listener: {e}")))?;
    let deadline = Instant::now() + timeout;
    loop {
        let stream = match listener.accept() {
            Ok((stream, peer)) => {
                if !matches!(peer.ip(), IpAddr::V4(ip) if ip.is_loopback()) {
                    continue;
                }
                stream
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(OAuthError::Login(format!(
                        "no answer from the browser within {} minutes; run the login again",
                        timeout.as_secs() / 60
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(OAuthError::Login(format!("loopback listener: {e}"))),
        };
        match handle_redirect(stream, state, REDIRECT_TIMEOUT) {
            Ok(Some(code)) => return Ok(code),
            Ok(None) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One request to the loopback redirect. `Ok(None)`: not ours, keep
/// waiting.
fn handle_redirect(
    stream: TcpStream,
    state: &str,
    timeout: Duration,
) -> Result<Option<Zeroizing<String>>, OAuthError> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(timeout));
    // The whole request within `timeout`, not each read: a local process
    // trickling bytes must not hold the login open.
    let Ok(clone) = stream.try_clone() else {
        return Ok(None);
    };
    let mut timed = crate::transport::Timed::new(clone);
    timed.set_limit(crate::transport::Limit::within(timeout, None));
    let mut reader = BufReader::new(timed.take(16 * 1024));
    let mut line = Zeroizing::new(String::new());
    if reader.read_line(&mut line).is_err() {
        return Ok(None);
    }
    // Drain the headers so the browser sees a clean reply.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header.trim_end() != "" {
        header.clear();
    }
    let mut writer = &stream;
    let mut parts = line.split_whitespace();
    let (Some("GET"), Some(target)) = (parts.next(), parts.next()) else {
        respond(
            &mut writer,
            "405 Method Not Allowed",
            "mailhop: only GET is served here.",
        );
        return Ok(None);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/" {
        respond(&mut writer, "404 Not Found", "mailhop: not found.");
        return Ok(None);
    }
    let mut code = None;
    let mut got_state = None;
    let mut error = None;
    let mut error_description = None;
    for (k, v) in oauth2::url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "code" => code = Some(Zeroizing::new(v.into_owned())),
            "state" => got_state = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => error_description = Some(v.into_owned()),
            _ => {}
        }
    }
    if code.is_none() && error.is_none() {
        respond(
            &mut writer,
            "400 Bad Request",
            "mailhop: this address only receives the sign-in result.",
        );
        return Ok(None);
    }
    if got_state.as_deref() != Some(state) {
        respond(
            &mut writer,
            "400 Bad Request",
            "mailhop: the sign-in answer does not belong to this login (state mismatch). Run the \
             login again.",
        );
        return Err(OAuthError::Login(
            "the browser came back with a different state (an old or forged sign-in); run the \
             login again"
                .into(),
        ));
    }
    if let Some(error) = error {
        respond(
            &mut writer,
            "200 OK",
            "mailhop: the sign-in failed; see the terminal. You can close this window.",
        );
        let mut msg = format!("the provider answered {}", clean_text(&error, &[]));
        if let Some(d) = error_description {
            msg.push_str(&format!(": {}", clean_text(&d, &[])));
        }
        return Err(OAuthError::Login(msg));
    }
    respond(
        &mut writer,
        "200 OK",
        "mailhop: signed in. You can close this window and return to the terminal.",
    );
    Ok(code)
}

fn respond(w: &mut dyn Write, status: &str, text: &str) {
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>mailhop</title></head>\
         <body><p>{text}</p></body></html>\n"
    );
    let _ = write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = w.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// This process's ids, the `mailhop` group looked up as the app
    /// layer does.
    fn ids() -> Ids {
        Ids {
            mailhop_gid: nix::unistd::Group::from_name("mailhop")
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw()),
            ..Ids::current()
        }
    }

    /// Writes `bytes` one at a time, `pause` apart, until the peer goes
    /// away. The pause is the fault under test (#15.9), not a wait.
    fn trickle(mut stream: TcpStream, bytes: &[u8], pause: Duration) {
        for b in bytes {
            std::thread::sleep(pause);
            if stream.write_all(&[*b]).is_err() {
                return;
            }
        }
    }

    /// A token endpoint that trickles a complete, valid answer over ~8 s
    /// must be cut off by the whole-call timeout (1 s here).
    #[test]
    fn a_trickling_token_endpoint_times_out_as_a_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut head = [0u8; 4096];
            let _ = (&stream).read(&mut head);
            let body = b"{\"access_token\":\"t\",\"token_type\":\"Bearer\"}";
            let mut answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            answer.extend_from_slice(body);
            trickle(stream, &answer, Duration::from_millis(100));
        });
        let dir = tempfile::tempdir().unwrap();
        let http = HttpClient::with_timeout(&settings(dir.path()), &ids(), Duration::from_secs(1))
            .unwrap();
        let request = oauth2::http::Request::builder()
            .method("POST")
            .uri(format!("http://127.0.0.1:{port}/token"))
            .body(b"grant_type=x".to_vec())
            .unwrap();
        let e = http.call(request).unwrap_err();
        assert!(e.transient, "{e:?}");
        server.join().unwrap();
    }

    /// A local client trickling its request line to the loopback redirect
    /// is dropped when the whole-request timeout ends.
    #[test]
    fn a_trickling_redirect_request_is_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let stream = TcpStream::connect(addr).unwrap();
            trickle(
                stream,
                b"GET /?code=c&state=s HTTP/1.1\r\nHost: x\r\n\r\n",
                Duration::from_millis(100),
            );
        });
        let (stream, _) = listener.accept().unwrap();
        let got = handle_redirect(stream, "s", Duration::from_secs(1)).unwrap();
        assert!(got.is_none(), "the request never completed in time");
        client.join().unwrap();
    }

    fn settings(dir: &Path) -> Settings {
        Settings {
            account: "work".into(),
            provider: Provider::Microsoft,
            flow: Flow::RefreshToken,
            tenant: None,
            client_id: Some("cid".into()),
            client_secret_file: None,
            token_file: dir.join("work.token"),
            token_url: None,
            device_url: None,
            auth_url: None,
            scopes: None,
            ca_file: None,
        }
    }

    #[test]
    fn validate_requires_keys_and_https() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        s.validate().unwrap();
        let e = Settings {
            client_id: None,
            ..s.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("client_id"), "{e}");
        let cc = Settings {
            flow: Flow::ClientCredentials,
            ..s.clone()
        };
        assert!(cc.validate().unwrap_err().to_string().contains("tenant"));
        let cc = Settings {
            tenant: Some("common".into()),
            client_secret_file: Some("/x".into()),
            ..cc
        };
        assert!(
            cc.validate()
                .unwrap_err()
                .to_string()
                .contains("specific tenant")
        );
        let cc = Settings {
            tenant: Some("contoso.onmicrosoft.com".into()),
            ..cc
        };
        cc.validate().unwrap();
        let no_secret = Settings {
            client_secret_file: None,
            ..cc.clone()
        };
        assert!(
            no_secret
                .validate()
                .unwrap_err()
                .to_string()
                .contains("client_secret_file")
        );
        for bad in [
            "http://idp.example/token",
            "ftp://127.0.0.1/x",
            "https://user:pw@idp.example/t",
            "not a url",
        ] {
            let e = Settings {
                token_url: Some(bad.into()),
                ..s.clone()
            }
            .validate()
            .unwrap_err();
            assert!(e.to_string().contains("token_url"), "{bad}: {e}");
            assert!(!e.to_string().contains(":pw@") || bad.contains("pw"), "{e}");
        }
        for good in [
            "https://idp.example/token",
            "http://127.0.0.1:8080/token",
            "http://[::1]:1/t",
            "http://localhost/t",
        ] {
            Settings {
                token_url: Some(good.into()),
                ..s.clone()
            }
            .validate()
            .unwrap();
        }
        let custom = Settings {
            provider: Provider::Custom,
            ..s.clone()
        };
        assert!(
            custom
                .validate()
                .unwrap_err()
                .to_string()
                .contains("token_url")
        );
        let google_cc = Settings {
            provider: Provider::Google,
            flow: Flow::ClientCredentials,
            client_secret_file: Some("/x".into()),
            ..s.clone()
        };
        assert!(google_cc.validate().is_err());
        let tenant = Settings {
            tenant: Some("a/../b".into()),
            ..s.clone()
        };
        assert!(tenant.validate().is_err());
        let cmd = Settings {
            flow: Flow::TokenCommand("echo tok".into()),
            client_id: None,
            ..s
        };
        cmd.validate().unwrap();
    }

    #[test]
    fn default_endpoints_and_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let ep = s.endpoints();
        assert_eq!(
            ep.token,
            "https://login.microsoftonline.com/common/oauth2/v2.0/token"
        );
        assert!(
            ep.device
                .unwrap()
                .ends_with("/common/oauth2/v2.0/devicecode")
        );
        assert_eq!(s.scope_list(), [MS_SMTP_SCOPE, "offline_access"]);
        let cc = Settings {
            flow: Flow::ClientCredentials,
            tenant: Some("contoso".into()),
            ..s.clone()
        };
        assert_eq!(cc.scope_list(), [MS_APP_SCOPE]);
        assert!(cc.endpoints().token.contains("/contoso/"));
        let g = Settings {
            provider: Provider::Google,
            ..s.clone()
        };
        assert_eq!(g.scope_list(), [GOOGLE_MAIL_SCOPE]);
        assert_eq!(g.endpoints().token, GOOGLE_TOKEN_URL);
        let o = Settings {
            token_url: Some("http://127.0.0.1:1/t".into()),
            scopes: Some(vec!["a".into()]),
            ..s.clone()
        };
        assert_eq!(o.endpoints().token, "http://127.0.0.1:1/t");
        assert_eq!(o.scope_list(), ["a"]);
        assert_eq!(s.cache_path(), dir.path().join("work.token.access"));
        assert_eq!(s.lock_path(), dir.path().join("work.token.lock"));
    }

    #[test]
    fn cache_is_used_until_margin_before_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let cache = Cached {
            access_token: "tok".into(),
            expires_at: 10_000 + 3600,
            obtained: 10_000,
            scope: None,
        };
        write_atomic(
            &s.cache_path(),
            &serde_json::to_vec(&cache).unwrap(),
            &ids(),
        )
        .unwrap();
        let mode = fs::metadata(s.cache_path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            cached_token(&s, &ids(), 10_000).unwrap().unwrap().expose(),
            "tok"
        );
        assert!(
            cached_token(&s, &ids(), 10_000 + 3600 - 301)
                .unwrap()
                .is_some()
        );
        assert!(
            cached_token(&s, &ids(), 10_000 + 3600 - 300)
                .unwrap()
                .is_none()
        );
        // The clock went backwards by more than a minute.
        assert!(cached_token(&s, &ids(), 9_000).unwrap().is_none());
        let st = status(&s, &ids());
        assert_eq!(st.access_expires, Some(13_600));
        assert_eq!(st.last_refresh, Some(10_000));
        assert!(!st.has_refresh_token);
        assert!(!format!("{st:?}").contains("tok\""));
        invalidate(&s).unwrap();
        assert!(cached_token(&s, &ids(), 10_000).unwrap().is_none());
        invalidate(&s).unwrap();
    }

    #[test]
    fn short_lived_tokens_use_half_their_life() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let cache = Cached {
            access_token: "tok".into(),
            expires_at: 100 + 120,
            obtained: 100,
            scope: None,
        };
        write_atomic(
            &s.cache_path(),
            &serde_json::to_vec(&cache).unwrap(),
            &ids(),
        )
        .unwrap();
        assert!(cached_token(&s, &ids(), 159).unwrap().is_some());
        assert!(cached_token(&s, &ids(), 160).unwrap().is_none());
    }

    #[test]
    fn token_file_plain_or_json_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        fs::write(&p, "rt-plain\nsecond\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_stored(&p, &ids()).unwrap().unwrap().refresh_token,
            "rt-plain"
        );
        fs::write(&p, r#"{"refresh_token":"rt-json","updated":5}"#).unwrap();
        let st = read_stored(&p, &ids()).unwrap().unwrap();
        assert_eq!(st.refresh_token, "rt-json");
        assert_eq!(st.updated, Some(5));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_stored(&p, &ids()).err().unwrap().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert!(!e.contains("rt-json"), "{e}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(
            read_stored(&link, &ids())
                .err()
                .unwrap()
                .to_string()
                .contains("symbolic link")
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, "{\"refresh_token\": \"rt-secret\", ").unwrap();
        let e = read_stored(&p, &ids()).err().unwrap().to_string();
        assert!(!e.contains("rt-secret"), "{e}");
        assert!(
            read_stored(&dir.path().join("missing"), &ids())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn not_logged_in_says_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings {
            token_url: Some("http://127.0.0.1:9/token".into()),
            ..settings(dir.path())
        };
        let e = access_token(&s, &ids(), 1000, false).unwrap_err();
        assert!(e.needs_login());
        assert!(e.to_string().contains("mailhop oauth login work"), "{e}");
    }

    #[test]
    fn token_command_output_is_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings {
            flow: Flow::TokenCommand("echo at-from-helper".into()),
            ..settings(dir.path())
        };
        assert_eq!(
            access_token(&s, &ids(), 0, false).unwrap().expose(),
            "at-from-helper"
        );
        let bad = Settings {
            flow: Flow::TokenCommand("printf leaked; exit 2".into()),
            ..settings(dir.path())
        };
        let e = access_token(&bad, &ids(), 0, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("token_command"), "{e}");
        assert!(!e.contains("password"), "{e}");
        assert_eq!(status(&s, &ids()), Status::default());
    }

    /// The sharing decision follows the ids it is given, not the kernel's.
    #[test]
    fn the_group_that_may_share_token_files_follows_the_ids() {
        let plain = Ids {
            uid: 1000,
            euid: 1000,
            gid: 1000,
            egid: 1000,
            mailhop_gid: Some(120),
        };
        assert_eq!(allowed_group(&plain), None);
        assert!(!shared(&plain));
        assert_eq!(file_mode(&plain), 0o600);
        // The setgid binary: its effective group, whatever its name.
        let setgid = Ids { egid: 121, ..plain };
        assert_eq!(allowed_group(&setgid), Some(121));
        assert!(shared(&setgid));
        assert_eq!(file_mode(&setgid), 0o640);
        // The runner: the mailhop group is its own.
        let runner = Ids {
            gid: 120,
            egid: 120,
            ..plain
        };
        assert_eq!(allowed_group(&runner), Some(120));
        assert!(shared(&runner));
        let no_group = Ids {
            mailhop_gid: None,
            ..runner
        };
        assert_eq!(allowed_group(&no_group), None);
    }

    /// Given set-group-ID ids, the files are written for the group and
    /// read back as the group's, whatever ids the test itself runs with.
    #[test]
    fn shared_ids_write_group_readable_token_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let now = Ids::current();
        let setgid = Ids {
            gid: now.egid.wrapping_add(1),
            ..now
        };
        let cache = Cached {
            access_token: "tok".into(),
            expires_at: 10_000 + 3600,
            obtained: 10_000,
            scope: None,
        };
        let json = serde_json::to_vec(&cache).unwrap();
        write_atomic(&s.cache_path(), &json, &setgid).unwrap();
        let mode = fs::metadata(s.cache_path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(cached_token(&s, &setgid, 10_000).unwrap().is_some());
        // Not shared: the same file is refused as others' to read.
        let e = cached_token(&s, &now, 10_000).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn advice_for_known_errors() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        assert!(
            advice(&s, "invalid_grant", "AADSTS70008: expired")
                .unwrap()
                .contains("mailhop oauth login work")
        );
        assert!(
            advice(
                &s,
                "invalid_client",
                "AADSTS7000222: The provided client secret keys are expired."
            )
            .unwrap()
            .contains("expired")
        );
        assert!(advice(&s, "weird", "").is_none());
        assert_eq!(
            clean_text("AADSTS1: x\r\nTrace ID: 1\r\n secret-rt", &["secret-rt"]),
            "AADSTS1: x Trace ID: 1 ***"
        );
    }
}
