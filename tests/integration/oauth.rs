//! OAuth 2.0 at the library level (`mailhop::oauth`) against
//! `tests/peers/tokenserver.py`, a fake Entra ID / Google served over HTTPS
//! with the test CA: the access-token cache, expiry (time is injected, never
//! slept), refresh-token rotation, one token request for 50 concurrent
//! callers, provider errors shown verbatim with advice, device-code and
//! PKCE loopback sign-in, and a client-credentials token used for AUTH
//! XOAUTH2 against aiosmtpd, including the refresh-and-retry after a 5.7.x
//! refusal.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use mailhop::credentials::Ids;
use mailhop::oauth::{self, Flow, OAuthError, Provider, Settings};
use mailhop::transport::{self, AuthMode, Dsn, Envelope, Kind, MinTls, Session, TlsMode};

use crate::certs::TestPki;
use crate::smtpd::{Mode, Smtpd, SmtpdOptions, peer_script, python};

/// This process's ids, as the app layer gives them to `oauth`: read when
/// called (a child of a test may run with other ids), the `mailhop` group
/// looked up by name.
fn ids() -> Ids {
    Ids {
        mailhop_gid: nix::unistd::Group::from_name("mailhop")
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw()),
        ..Ids::current()
    }
}

/// An arbitrary "now" (2030); tests move it forward instead of sleeping.
const NOW: u64 = 1_900_000_000;
pub(crate) const CLIENT_ID: &str = "test-client";
pub(crate) const CLIENT_SECRET: &str = "cl1ent-S3cret-value";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The fake identity provider. Exits when dropped (its stdin closes).
pub(crate) struct TokenServer {
    port: u16,
    log: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: PathBuf,
}

impl TokenServer {
    fn start(dir: &Path, pki: &TestPki, args: &[&str]) -> TokenServer {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join("tokenserver.log");
        let stderr_path = dir.join("tokenserver.stderr");
        let mut cmd = Command::new(python());
        cmd.arg(peer_script("tokenserver.py"))
            .arg("--cert")
            .arg(pki.path("server.pem"))
            .arg("--key")
            .arg(pki.path("server.key"))
            .arg("--log")
            .arg(&log)
            .arg("--client-id")
            .arg(CLIENT_ID)
            .arg("--client-secret")
            .arg(CLIENT_SECRET)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(TIMEOUT).unwrap_or_default();
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "tokenserver did not start ({line:?}): {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                )
            });
        TokenServer {
            port,
            log,
            child,
            stdin,
            stderr: stderr_path,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Every request the server logged, in order.
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The POSTs to the token endpoint.
    pub(crate) fn token_requests(&self) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["method"] == "POST" && r["path"].as_str().unwrap().ends_with("/token"))
            .collect()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory with the test PKI and a running token server.
pub(crate) struct Setup {
    pub dir: tempfile::TempDir,
    pub pki: TestPki,
    pub server: TokenServer,
}

pub(crate) fn setup(args: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(&dir.path().join("pki"));
    let server = TokenServer::start(&dir.path().join("srv"), &pki, args);
    Setup { dir, pki, server }
}

impl Setup {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write_private(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// Microsoft, app-only (client credentials) for tenant `contoso`.
    fn client_credentials(&self) -> Settings {
        let secret = self.write_private("secret", &format!("{CLIENT_SECRET}\n"));
        Settings {
            account: "app".into(),
            provider: Provider::Microsoft,
            flow: Flow::ClientCredentials,
            tenant: Some("contoso".into()),
            client_id: Some(CLIENT_ID.into()),
            client_secret_file: Some(secret),
            token_file: self.path("tokens/app.json"),
            token_url: Some(self.server.url("/contoso/oauth2/v2.0/token")),
            device_url: None,
            auth_url: None,
            scopes: None,
            ca_file: Some(self.pki.path("ca.pem")),
        }
    }

    /// Microsoft, delegated (refresh token), with `refresh` in the token
    /// file (none if empty).
    fn delegated(&self, refresh: &str) -> Settings {
        if !refresh.is_empty() {
            self.write_private("tokens/work.json", &format!("{refresh}\n"));
        }
        Settings {
            account: "work".into(),
            provider: Provider::Microsoft,
            flow: Flow::RefreshToken,
            tenant: None,
            client_id: Some(CLIENT_ID.into()),
            client_secret_file: None,
            token_file: self.path("tokens/work.json"),
            token_url: Some(self.server.url("/common/oauth2/v2.0/token")),
            device_url: Some(self.server.url("/common/oauth2/v2.0/devicecode")),
            auth_url: None,
            scopes: None,
            ca_file: Some(self.pki.path("ca.pem")),
        }
    }

    fn token_file_text(&self, s: &Settings) -> String {
        std::fs::read_to_string(&s.token_file).unwrap()
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

fn cache_path(s: &Settings) -> PathBuf {
    let mut p = s.token_file.clone().into_os_string();
    p.push(".access");
    PathBuf::from(p)
}

#[test]
fn cached_token_serves_many_calls_with_one_request() {
    let t = setup(&[]);
    let s = t.client_credentials();
    s.validate().unwrap();
    let first = oauth::access_token(&s, &ids(), NOW, false).unwrap();
    assert_eq!(first.expose(), "at-1");
    for i in 0..20 {
        let tok = oauth::access_token(&s, &ids(), NOW + i * 60, false).unwrap();
        assert_eq!(tok.expose(), "at-1");
    }
    let reqs = t.server.token_requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    let form = &reqs[0]["form"];
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "https://outlook.office365.com/.default");
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["client_secret"], CLIENT_SECRET);
    assert_eq!(mode(&cache_path(&s)), 0o600);
}

#[test]
fn token_is_refreshed_five_minutes_before_expiry() {
    let t = setup(&["--expires-in", "3600"]);
    let s = t.client_credentials();
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW, false)
            .unwrap()
            .expose(),
        "at-1"
    );
    // Still good for more than five minutes: cached.
    let tok = oauth::access_token(&s, &ids(), NOW + 3600 - 301, false).unwrap();
    assert_eq!(tok.expose(), "at-1");
    assert_eq!(t.server.token_requests().len(), 1);
    // Within five minutes of expiry: refreshed.
    let tok = oauth::access_token(&s, &ids(), NOW + 3600 - 299, false).unwrap();
    assert_eq!(tok.expose(), "at-2");
    assert_eq!(t.server.token_requests().len(), 2);
    let st = oauth::status(&s, &ids());
    assert_eq!(st.access_expires, Some(NOW + 3600 - 299 + 3600));
    assert_eq!(st.last_refresh, Some(NOW + 3600 - 299));
    assert!(!st.has_refresh_token);
}

#[test]
fn one_second_tokens_are_refreshed_when_time_moves() {
    let t = setup(&["--expires-in", "1"]);
    let s = t.client_credentials();
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW, false)
            .unwrap()
            .expose(),
        "at-1"
    );
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW, false)
            .unwrap()
            .expose(),
        "at-1"
    );
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW + 1, false)
            .unwrap()
            .expose(),
        "at-2"
    );
    assert_eq!(t.server.token_requests().len(), 2);
}

#[test]
fn force_refresh_and_invalidate_skip_the_cache() {
    let t = setup(&[]);
    let s = t.client_credentials();
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW, false)
            .unwrap()
            .expose(),
        "at-1"
    );
    oauth::invalidate(&s).unwrap();
    assert!(!cache_path(&s).exists());
    oauth::invalidate(&s).unwrap();
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW, false)
            .unwrap()
            .expose(),
        "at-2"
    );
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW, true).unwrap().expose(),
        "at-3"
    );
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW, false)
            .unwrap()
            .expose(),
        "at-3"
    );
    assert_eq!(t.server.token_requests().len(), 3);
}

#[test]
fn rotated_refresh_token_is_persisted_atomically() {
    // The server revokes a refresh token once used, so the second refresh
    // only works if the rotated one was saved.
    let t = setup(&["--refresh-token", "rt-initial"]);
    let s = t.delegated("rt-initial");
    let inode_before = std::fs::metadata(&s.token_file).unwrap().ino();
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW, false)
            .unwrap()
            .expose(),
        "at-1"
    );
    let text = t.token_file_text(&s);
    assert!(text.contains("rt-1"), "{text}");
    assert!(!text.contains("rt-initial"), "{text}");
    assert_eq!(mode(&s.token_file), 0o600);
    assert_ne!(
        std::fs::metadata(&s.token_file).unwrap().ino(),
        inode_before
    );

    assert_eq!(
        oauth::access_token(&s, &ids(), NOW + 4000, false)
            .unwrap()
            .expose(),
        "at-2"
    );
    let text = t.token_file_text(&s);
    assert!(text.contains("rt-2"), "{text}");
    assert_eq!(mode(&s.token_file), 0o600);
    let used: Vec<String> = t
        .server
        .token_requests()
        .iter()
        .map(|r| r["form"]["refresh_token"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(used, ["rt-initial", "rt-1"]);
    let reqs = t.server.token_requests();
    assert_eq!(
        reqs[0]["form"]["scope"],
        "https://outlook.office.com/SMTP.Send offline_access"
    );
    // A public client sends no secret.
    assert!(reqs[0]["form"].get("client_secret").is_none(), "{reqs:#?}");
    // No stray temporary files are left beside the tokens.
    let mut names: Vec<String> = std::fs::read_dir(t.path("tokens"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["work.json", "work.json.access", "work.json.lock"]);

    let st = oauth::status(&s, &ids());
    assert!(st.has_refresh_token);
    assert_eq!(st.access_expires, Some(NOW + 4000 + 3600));
    assert_eq!(st.last_refresh, Some(NOW + 4000));
    assert_eq!(
        st.scopes,
        ["https://outlook.office.com/SMTP.Send", "offline_access"]
    );
    let dbg = format!("{st:?} {s:?}");
    assert!(!dbg.contains("rt-") && !dbg.contains("at-"), "{dbg}");
}

#[test]
fn fifty_concurrent_callers_make_one_token_request() {
    // The delay keeps the first request in flight while the others pile
    // up on the lock.
    let t = setup(&["--refresh-token", "rt-initial", "--delay-ms", "300"]);
    let s = t.delegated("rt-initial");
    let barrier = Barrier::new(50);
    let tokens: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    oauth::access_token(&s, &ids(), NOW, false)
                        .map(|t| t.expose().to_string())
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    assert!(tokens.iter().all(|t| t == "at-1"), "{tokens:?}");
    let reqs = t.server.token_requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert!(t.token_file_text(&s).contains("rt-1"));
}

/// Run by `fifty_processes_make_one_token_request` in child processes of
/// this test binary; does nothing when run by hand.
#[test]
#[ignore = "helper: run as a child process by fifty_processes_make_one_token_request"]
fn child_access_token() {
    let Some(token_file) = std::env::var_os("MAILHOP_OAUTH_CHILD_TOKEN_FILE") else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap();
    let s = Settings {
        account: "work".into(),
        provider: Provider::Microsoft,
        flow: Flow::RefreshToken,
        tenant: None,
        client_id: Some(CLIENT_ID.into()),
        client_secret_file: None,
        token_file: token_file.into(),
        token_url: Some(var("MAILHOP_OAUTH_CHILD_URL")),
        device_url: None,
        auth_url: None,
        scopes: None,
        ca_file: Some(var("MAILHOP_OAUTH_CHILD_CA").into()),
    };
    match oauth::access_token(&s, &ids(), NOW, false) {
        Ok(t) => println!("TOKEN {}", t.expose()),
        Err(e) => println!("ERROR {e}"),
    }
}

#[test]
fn fifty_processes_make_one_token_request() {
    let t = setup(&["--refresh-token", "rt-initial", "--delay-ms", "300"]);
    let s = t.delegated("rt-initial");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..50)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "oauth::child_access_token",
                    "--ignored",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("MAILHOP_OAUTH_CHILD_TOKEN_FILE", &s.token_file)
                .env("MAILHOP_OAUTH_CHILD_URL", s.token_url.as_ref().unwrap())
                .env("MAILHOP_OAUTH_CHILD_CA", t.pki.path("ca.pem"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let tokens: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap();
            // libtest prints the test name on the same line.
            out.lines()
                .find_map(|l| {
                    ["TOKEN ", "ERROR "]
                        .iter()
                        .find_map(|m| l.find(m).map(|i| l[i + m.len()..].trim()))
                })
                .unwrap_or_else(|| panic!("child printed no result: {out}"))
                .to_string()
        })
        .collect();
    assert!(tokens.iter().all(|t| t == "at-1"), "{tokens:?}");
    assert_eq!(t.server.token_requests().len(), 1);
    assert!(t.token_file_text(&s).contains("rt-1"));
}

#[test]
fn invalid_grant_shows_aadsts_text_and_login_advice() {
    let t = setup(&["--expired-refresh", "rt-expired-0xDEAD"]);
    let s = t.delegated("rt-expired-0xDEAD");
    let e = oauth::access_token(&s, &ids(), NOW, false).unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(
        matches!(e, OAuthError::Endpoint { status: 400, .. }),
        "{e:?}"
    );
    assert!(msg.contains("invalid_grant"), "{msg}");
    assert!(
        msg.contains("AADSTS70008: The provided authorization code or refresh token has expired"),
        "{msg}"
    );
    assert!(msg.contains("run `mailhop oauth login work`"), "{msg}");
    assert!(msg.contains("/common/oauth2/v2.0/token"), "{msg}");
    assert!(!msg.contains('\r') && !msg.contains('\n'), "{msg:?}");
    assert!(e.needs_login());
    assert!(!e.is_transient());
    for text in [msg, format!("{e:?}"), format!("{e:#?}")] {
        assert!(!text.contains("rt-expired-0xDEAD"), "{text}");
    }
    // Nothing was cached, the refresh token was kept for inspection.
    assert!(!cache_path(&s).exists());
    assert!(t.token_file_text(&s).contains("rt-expired-0xDEAD"));
}

#[test]
fn wrong_client_secret_is_explained_without_showing_it() {
    let t = setup(&[]);
    let mut s = t.client_credentials();
    s.client_secret_file = Some(t.write_private("wrong", "Wr0ng-secret-VALUE\n"));
    let e = oauth::access_token(&s, &ids(), NOW, false).unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("invalid_client"), "{msg}");
    assert!(msg.contains("AADSTS7000215"), "{msg}");
    assert!(msg.contains("client_secret_file"), "{msg}");
    assert!(!e.needs_login());
    for text in [msg, format!("{e:?}")] {
        assert!(!text.contains("Wr0ng-secret-VALUE"), "{text}");
        assert!(!text.contains(CLIENT_SECRET), "{text}");
    }
}

#[test]
fn missing_refresh_token_and_unsafe_files() {
    let t = setup(&[]);
    let s = t.delegated("");
    let e = oauth::access_token(&s, &ids(), NOW, false).unwrap_err();
    assert!(e.needs_login(), "{e:?}");
    assert!(e.to_string().contains("mailhop oauth login work"), "{e}");
    let st = oauth::status(&s, &ids());
    assert!(!st.has_refresh_token);
    assert_eq!(st.access_expires, None);

    let s = t.delegated("rt-readable");
    std::fs::set_permissions(&s.token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = oauth::access_token(&s, &ids(), NOW, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("chmod 600"), "{e}");
    assert!(!e.contains("rt-readable"), "{e}");
    assert!(t.server.token_requests().is_empty());
}

#[test]
fn untrusted_certificate_is_refused() {
    let t = setup(&[]);
    let mut s = t.client_credentials();
    s.ca_file = None;
    let e = oauth::access_token(&s, &ids(), NOW, false).unwrap_err();
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, OAuthError::Http { .. }), "{e:?}");
    assert!(!e.is_transient());
    assert!(msg.contains("certificate"), "{msg}");
    assert!(msg.contains("ca_file"), "{msg}");
    assert!(t.server.token_requests().is_empty());
}

#[test]
fn device_code_login_polls_and_writes_the_refresh_token() {
    let t = setup(&[
        "--interval",
        "1",
        "--device-script",
        "authorization_pending,slow_down,authorization_pending",
    ]);
    let s = t.delegated("");
    let sleeps = Mutex::new(Vec::new());
    let mut out = Vec::new();
    oauth::login_with_sleep(&s, &ids(), &mut out, NOW, &|d| {
        sleeps.lock().unwrap().push(d)
    })
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("ABCD-EFGH"), "{out}");
    assert!(out.contains(&t.server.url("/devicelogin")), "{out}");
    assert!(out.contains("Signed in"), "{out}");
    // The interval (1 s) is honoured, and slow_down adds 5 s for good.
    let sleeps = sleeps.into_inner().unwrap();
    assert_eq!(
        sleeps,
        [1, 6, 6].map(Duration::from_secs),
        "polling intervals"
    );
    let reqs = t.server.requests();
    let device = reqs
        .iter()
        .find(|r| r["path"].as_str().unwrap().ends_with("/devicecode"))
        .unwrap();
    assert_eq!(
        device["form"]["scope"],
        "https://outlook.office.com/SMTP.Send offline_access"
    );
    let polls = t.server.token_requests();
    assert_eq!(polls.len(), 4, "{polls:#?}");
    assert!(
        polls
            .iter()
            .all(|p| { p["form"]["grant_type"] == "urn:ietf:params:oauth:grant-type:device_code" })
    );
    // The device code is never shown.
    let device_code = polls[0]["form"]["device_code"].as_str().unwrap();
    assert!(!out.contains(device_code));

    let text = t.token_file_text(&s);
    assert!(text.contains("rt-1"), "{text}");
    assert_eq!(mode(&s.token_file), 0o600);
    // The access token that came with the sign-in is cached and used.
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW, false)
            .unwrap()
            .expose(),
        "at-1"
    );
    assert_eq!(t.server.token_requests().len(), 4);
    // And the refresh token works later.
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW + 7200, false)
            .unwrap()
            .expose(),
        "at-2"
    );
    assert!(oauth::status(&s, &ids()).has_refresh_token);
}

#[test]
fn device_code_login_reports_a_declined_sign_in() {
    let t = setup(&["--device-script", "authorization_pending,access_denied"]);
    let s = t.delegated("");
    let mut out = Vec::new();
    let e = oauth::login_with_sleep(&s, &ids(), &mut out, NOW, &|_| {}).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("access_denied"), "{msg}");
    assert!(msg.contains("mailhop oauth login work"), "{msg}");
    assert!(!s.token_file.exists());
}

#[test]
fn login_is_refused_for_client_credentials() {
    let t = setup(&[]);
    let s = t.client_credentials();
    let e = oauth::login(&s, &ids(), &mut Vec::new(), NOW).unwrap_err();
    assert!(e.to_string().contains("client credentials"), "{e}");
}

/// `Write` that hands each chunk to the test thread.
struct ChanWriter(Sender<Vec<u8>>);

impl Write for ChanWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads `login`'s output until it shows the URL to open.
fn wait_for_url(rx: &Receiver<Vec<u8>>) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut text = String::new();
    loop {
        let chunk = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no URL printed; output so far: {text}"));
        text.push_str(&String::from_utf8(chunk).unwrap());
        if let Some(url) = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("https://"))
        {
            return url.to_string();
        }
    }
}

fn google(t: &Setup) -> Settings {
    let secret = t.write_private("google-secret", "GOCSPX-desktop-secret\n");
    Settings {
        account: "gmail".into(),
        provider: Provider::Google,
        flow: Flow::RefreshToken,
        tenant: None,
        client_id: Some(CLIENT_ID.into()),
        client_secret_file: Some(secret),
        token_file: t.path("tokens/gmail.json"),
        token_url: Some(t.server.url("/token")),
        device_url: None,
        auth_url: Some(t.server.url("/o/oauth2/v2/auth")),
        scopes: None,
        ca_file: Some(t.pki.path("ca.pem")),
    }
}

/// Plays the browser: opens the URL at the fake provider, which signs in at
/// once and redirects to mailhop's loopback listener; returns that page.
fn play_browser(t: &Setup, url: &str) -> (u16, String) {
    let ca = std::fs::read(t.pki.path("ca.pem")).unwrap();
    let ca = ureq::tls::Certificate::from_pem(&ca).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .build();
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .tls_config(tls)
            .max_redirects(0)
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(TIMEOUT))
            .build(),
    );
    let resp = agent.get(url).call().unwrap();
    assert_eq!(resp.status(), 302, "the fake /authorize refused the URL");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("http://127.0.0.1:"), "{location}");
    let mut page = agent.get(&location).call().unwrap();
    let status = page.status().as_u16();
    (status, page.body_mut().read_to_string().unwrap())
}

#[test]
fn pkce_loopback_login_receives_the_code_and_exchanges_it() {
    let t = setup(&["--prefix", "g-"]);
    let s = google(&t);
    let (tx, rx) = mpsc::channel();
    let (url, result, page) = std::thread::scope(|scope| {
        let login = scope.spawn(|| oauth::login(&s, &ids(), &mut ChanWriter(tx), NOW));
        let url = wait_for_url(&rx);
        let page = play_browser(&t, &url);
        (url, login.join().unwrap(), page)
    });
    result.unwrap();
    assert_eq!(page.0, 200);
    assert!(page.1.contains("signed in"), "{}", page.1);

    let parsed = oauth2::url::Url::parse(&url).unwrap();
    let q: std::collections::HashMap<String, String> = parsed.query_pairs().into_owned().collect();
    assert_eq!(q["scope"], "https://mail.google.com/");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert!(q["redirect_uri"].starts_with("http://127.0.0.1:"), "{url}");
    assert!(q["state"].len() >= 16);

    // The server checked the PKCE verifier and the redirect URI.
    let reqs = t.server.token_requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert_eq!(reqs[0]["form"]["grant_type"], "authorization_code");
    assert_eq!(reqs[0]["outcome"], "ok", "{reqs:#?}");
    assert!(reqs[0]["form"]["code_verifier"].as_str().unwrap().len() >= 43);
    assert_eq!(reqs[0]["form"]["client_secret"], "GOCSPX-desktop-secret");

    let text = t.token_file_text(&s);
    assert!(text.contains("g-rt-1"), "{text}");
    assert_eq!(mode(&s.token_file), 0o600);
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW, false)
            .unwrap()
            .expose(),
        "g-at-1"
    );
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW + 3600, false)
            .unwrap()
            .expose(),
        "g-at-2"
    );
    let used = &t.server.token_requests()[1]["form"];
    assert_eq!(used["grant_type"], "refresh_token");
    assert_eq!(used["refresh_token"], "g-rt-1");
}

#[test]
fn pkce_loopback_login_reports_a_denied_consent() {
    let t = setup(&["--deny"]);
    let s = google(&t);
    let (tx, rx) = mpsc::channel();
    let result = std::thread::scope(|scope| {
        let login = scope.spawn(|| oauth::login(&s, &ids(), &mut ChanWriter(tx), NOW));
        let url = wait_for_url(&rx);
        let _ = play_browser(&t, &url);
        login.join().unwrap()
    });
    let msg = result.unwrap_err().to_string();
    assert!(msg.contains("access_denied"), "{msg}");
    assert!(!s.token_file.exists());
    assert!(t.server.token_requests().is_empty());
}

/// A client-credentials token authenticates AUTH XOAUTH2 against aiosmtpd;
/// a refused (stale) token is replaced once after a 5.7.x reply.
#[test]
fn client_credentials_token_authenticates_xoauth2() {
    let t = setup(&["--prefix", "e2e-"]);
    let s = t.client_credentials();
    // The cache holds e2e-at-1; the mail server only accepts the next
    // token, as if the cached one had been revoked.
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW, false)
            .unwrap()
            .expose(),
        "e2e-at-1"
    );
    let user = "app@contoso.example";
    let opts = SmtpdOptions {
        xoauth2: Some((user.into(), "e2e-at-2".into())),
        require_auth: true,
        ..SmtpdOptions::tls(
            Mode::StartTls,
            &t.pki.path("server.pem"),
            &t.pki.path("server.key"),
        )
    };
    let smtpd = Smtpd::start(&opts, &t.path("spool"));
    let settings = transport::Settings {
        host: "127.0.0.1".into(),
        port: smtpd.port,
        tls: TlsMode::StartTls,
        ca_file: Some(t.pki.path("ca.pem")),
        fingerprint: None,
        min_tls: MinTls::V12,
        client_cert: None,
        auth: AuthMode::Xoauth2,
        username: Some(user.into()),
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(10),
        data_timeout: Duration::from_secs(10),
        helo_name: "client.example".into(),
        system_roots_only: false,
    };
    let sref = &s;
    let token_for = |force: bool| {
        move || {
            oauth::access_token(sref, &ids(), NOW, force)
                .map_err(|e| transport::SecretError::from(e.to_string()))
        }
    };

    let mut session = Session::connect(&settings, None).unwrap();
    let err = session.authenticate(&mut token_for(false)).unwrap_err();
    let Kind::AuthFailed(Some(reply)) = &err.kind else {
        panic!("{err:?}");
    };
    assert!(reply.enhanced().unwrap().starts_with("5.7."), "{reply}");
    assert!(!err.to_string().contains("e2e-at-1"), "{err}");
    session.quit();

    // What deliver does on 5.7.x: drop the cache, refresh once, retry.
    oauth::invalidate(&s).unwrap();
    let mut session = Session::connect(&settings, None).unwrap();
    session.authenticate(&mut token_for(true)).unwrap();
    let rcpts = vec!["someone@example.net".to_string()];
    let dsn = Dsn::default();
    let msg =
        b"From: app@contoso.example\r\nTo: someone@example.net\r\nSubject: oauth\r\n\r\nhello\r\n";
    let env = Envelope {
        sender: user,
        recipients: &rcpts,
        size: msg.len() as u64,
        eight_bit: false,
        dsn: &dsn,
    };
    session.send(&env, &mut &msg[..]).unwrap();
    session.quit();
    let got = smtpd.wait_messages(1);
    assert_eq!(got[0].auth_user.as_deref(), Some(user));
    assert!(got[0].tls);
    assert_eq!(t.server.token_requests().len(), 2, "{}", t.server.stderr());
    // The renewed token is cached for the next message.
    assert_eq!(
        oauth::access_token(&s, &ids(), NOW, false)
            .unwrap()
            .expose(),
        "e2e-at-2"
    );
}

/// Through the binary: `sendmail` with `[account.oauth]` (client
/// credentials). The cached token has been revoked, so the first login is
/// refused with a 5.7.x reply: mailhop refreshes once and delivers. The
/// next message reuses the new cached token without a token request, and
/// no token ever appears in the -v output.
#[test]
fn sendmail_with_oauth_refreshes_once_and_caches() {
    let t = setup(&["--prefix", "bin-"]);
    let s = t.client_credentials();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Warm the cache with bin-at-1, which the mail server will refuse.
    assert_eq!(
        oauth::access_token(&s, &ids(), now, false)
            .unwrap()
            .expose(),
        "bin-at-1"
    );
    let user = "app@contoso.example";
    let smtpd = Smtpd::start(
        &SmtpdOptions {
            xoauth2: Some((user.into(), "bin-at-2".into())),
            require_auth: true,
            ..SmtpdOptions::tls(
                Mode::StartTls,
                &t.pki.path("server.pem"),
                &t.pki.path("server.key"),
            )
        },
        &t.path("spool"),
    );
    let w = crate::util::World::new(&format!(
        "[[account]]\nname = \"app\"\nhost = \"127.0.0.1\"\nport = {}\nfrom = \"{user}\"\nuser = \"{user}\"\n\
         auth = \"xoauth2\"\ntls_ca_file = \"{}\"\n\
         [account.oauth]\nprovider = \"microsoft\"\nflow = \"client_credentials\"\ntenant = \"contoso\"\n\
         client_id = \"{}\"\nclient_secret_file = \"{}\"\ntoken_file = \"{}\"\ntoken_url = \"{}\"\nca_file = \"{}\"\n",
        smtpd.port,
        t.pki.path("ca.pem").display(),
        s.client_id.as_deref().unwrap(),
        s.client_secret_file.as_ref().unwrap().display(),
        s.token_file.display(),
        s.token_url.as_deref().unwrap(),
        t.pki.path("ca.pem").display(),
    ));
    let r = w.sendmail(&["-v", "-oi", "b@example.net"], b"Subject: one\n\nx\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("refreshing it once"), "{}", r.stderr);
    assert!(
        r.stderr.contains("\"status\":\"401\""),
        "the decoded JSON is shown: {}",
        r.stderr
    );
    for secret in ["bin-at-1", "bin-at-2", CLIENT_SECRET] {
        assert!(!r.stderr.contains(secret), "{secret} leaked: {}", r.stderr);
    }
    assert_eq!(
        t.server.token_requests().len(),
        2,
        "the warm-up and one refresh"
    );
    let r = w.sendmail(&["-oi", "b@example.net"], b"Subject: two\n\nx\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        t.server.token_requests().len(),
        2,
        "the second message used the cache"
    );
    assert_eq!(smtpd.wait_messages(2).len(), 2);
    // mailhop check shows the OAuth state, never the token.
    let check = || {
        crate::util::run_raw(
            "mailhop",
            &[
                "check".into(),
                "--offline".into(),
                "-C".into(),
                w.config().display().to_string(),
            ],
            b"",
            &[],
        )
    };
    let c = check();
    assert_eq!(c.code, 0, "{c:?}");
    assert!(
        c.stdout.contains("oauth: ") && c.stdout.contains("cached access token valid until"),
        "{}",
        c.stdout
    );
    assert!(!c.stdout.contains("bin-at-"), "{}", c.stdout);
    // A cache others may read is refused; check says so (78) rather than
    // reporting "no cached access token" as if all were well.
    std::fs::set_permissions(cache_path(&s), std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = check();
    assert_eq!(c.code, 78, "{c:?}");
    assert!(
        c.stdout.contains("oauth: FAILED") && c.stdout.contains("chmod"),
        "{}",
        c.stdout
    );
    assert!(!c.stdout.contains("bin-at-"), "{}", c.stdout);
}

/// `mailhop oauth login` on a flow that has no interactive login is a
/// configuration mistake (78), and says why.
#[test]
fn oauth_login_for_client_credentials_is_a_config_error() {
    let t = setup(&[]);
    let s = t.client_credentials();
    let w = crate::util::World::new(&format!(
        "[[account]]\nname = \"app\"\nhost = \"127.0.0.1\"\nport = 1\ntls = \"none\"\nfrom = \"a@b.example\"\n\
         user = \"a@b.example\"\nauth = \"xoauth2\"\n\
         [account.oauth]\nprovider = \"microsoft\"\nflow = \"client_credentials\"\ntenant = \"contoso\"\n\
         client_id = \"{}\"\nclient_secret_file = \"{}\"\ntoken_file = \"{}\"\ntoken_url = \"{}\"\n",
        s.client_id.as_deref().unwrap(),
        s.client_secret_file.as_ref().unwrap().display(),
        s.token_file.display(),
        s.token_url.as_deref().unwrap(),
    ));
    let r = crate::util::run_raw(
        "mailhop",
        &[
            "oauth".into(),
            "login".into(),
            "app".into(),
            "-C".into(),
            w.config().display().to_string(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 78, "{r:?}");
    assert!(!r.stderr.is_empty(), "{r:?}");
}
