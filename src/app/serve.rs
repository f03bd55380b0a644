//! `sendmail -bs` and `mailhop serve`: the SMTP server. Every message goes
//! through the same send pipeline as a piped one (`send::submit`), so it
//! gets the same rewriting, aliases, scrubbing, DKIM and queue; the reply
//! after DATA is that pipeline's outcome.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::cli::{self, SendArgs, ServeArgs};
use crate::config;
use crate::exit::Exit;
use crate::message::header::Header;
use crate::message::prepare::{self, PrepareError};
use crate::queue::RcptDsn;
use crate::smtpd::{self, Access, Deadlines, End, Envelope, Reply, Server, Settings, Timed};

use super::env::*;
use super::failure::*;
use super::lookup::*;
use super::send::{Source, submit};
use super::stamp::*;

mod auth;
mod tls;

/// What every connection of one server shares.
struct Shared {
    /// -C, -v, -X, -L: what each transaction's pipeline runs with.
    base: SendArgs,
    smtpd: config::Smtpd,
    hostname: String,
    tls: Option<Arc<rustls::ServerConfig>>,
    passwords: Option<auth::PasswordFile>,
}

impl Shared {
    fn load(base: SendArgs) -> Result<Shared, Failure> {
        let env = gather_env(&base)?;
        let smtpd = env.config.smtpd.clone();
        let tls = tls::server_config(&smtpd)?;
        let passwords = match &smtpd.password_file {
            Some(p) => Some(auth::PasswordFile::load(p)?),
            None => None,
        };
        Ok(Shared {
            base,
            hostname: env.hostname.clone(),
            smtpd,
            tls,
            passwords,
        })
    }

    /// Who a client at `peer` is: loopback and allowed networks are
    /// trusted; others must log in, or are turned away when AUTH is off.
    fn access(&self, peer: Option<IpAddr>) -> Access {
        let trusted = match peer {
            None => true,
            Some(ip) => {
                let ip = canonical(ip);
                ip.is_loopback() || self.smtpd.allow.iter().any(|n| n.contains(&ip))
            }
        };
        match (trusted, self.auth_available()) {
            (true, _) => Access::Trusted,
            (false, true) => Access::NeedsAuth,
            (false, false) => Access::Denied,
        }
    }

    fn auth_available(&self) -> bool {
        self.tls.is_some() && self.passwords.is_some()
    }

    fn settings(&self, access: Access) -> Settings {
        Settings {
            hostname: self.hostname.clone(),
            max_recipients: self.smtpd.max_recipients,
            max_size: self.smtpd.max_message_size,
            max_errors: 20,
            tls_available: self.tls.is_some(),
            auth_available: self.auth_available(),
            access,
        }
    }

    fn deadlines(&self) -> Deadlines {
        Deadlines {
            idle: self.smtpd.idle_timeout,
            session: self.smtpd.session_timeout,
        }
    }
}

/// `::ffff:127.0.0.1` is loopback too.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The application side of a session: recipient checks against the
/// aliases and address rules, logins, and the send pipeline.
struct App<'a> {
    shared: &'a Shared,
    /// For the RCPT checks; each message gets a fresh one (its clock).
    env: Env,
    /// The aliases, read at the first RCPT of the session (not at each:
    /// 1,000 RCPTs must not mean 1,000 reads of the aliases file).
    aliases: Option<crate::aliases::Aliases>,
}

impl smtpd::Policy for App<'_> {
    /// The recipient goes through `message::prepare`, the resolver a piped
    /// message's recipients go through, so what it refuses is refused at
    /// RCPT rather than after DATA.
    fn check_recipient(&mut self, sender: &str, rcpt: &str) -> Result<(), Reply> {
        if self.aliases.is_none() {
            let (aliases, _) = load_aliases(&self.env).map_err(|f| reply_for(&f))?;
            self.aliases = Some(aliases);
        }
        let Some(aliases) = &self.aliases else {
            return Err(Reply::new(451, "4.3.0", "aliases unavailable"));
        };
        let lookup = Lookup {
            env: &self.env,
            aliases,
        };
        let header = Header::parse(b"").map_err(|e| Reply::new(451, "4.3.0", e.to_string()))?;
        let (date, msgid) = (
            rfc5322_date(self.env.now),
            String::from("<check@localhost>"),
        );
        let ctx = prepare_context(&self.env, &date, &msgid);
        let recipients = [rcpt.to_string()];
        let req = prepare::Request {
            sender: Some(sender),
            full_name: None,
            extract_recipients: false,
            recipients: &recipients,
        };
        match prepare::prepare(header, &req, &ctx, &lookup) {
            Ok(_) | Err(PrepareError::BadSender { .. }) => Ok(()),
            Err(PrepareError::TooManyRecipients { max }) => Err(Reply::new(
                452,
                "4.5.3",
                format!("{rcpt} expands to more than {max} recipients"),
            )),
            Err(e) => Err(Reply::new(550, "5.1.1", e.to_string())),
        }
    }

    fn check_login(&mut self, user: &str, password: &[u8]) -> bool {
        self.shared
            .passwords
            .as_ref()
            .is_some_and(|p| p.verify(user, password))
    }
}

impl smtpd::Backend for App<'_> {
    fn spool(&mut self) -> io::Result<File> {
        tempfile::tempfile_in("/var/tmp").or_else(|_| tempfile::tempfile_in("/tmp"))
    }

    fn deliver(&mut self, envelope: &Envelope, message: &mut File) -> Reply {
        match deliver(&self.shared.base, envelope, message) {
            Ok(Some(id)) => Reply::new(250, "2.0.0", format!("Ok: queued as {id}")),
            Ok(None) => Reply::new(250, "2.0.0", "Ok: message accepted"),
            Err(f) => reply_for(&f),
        }
    }
}

/// One message through the send pipeline, as one submission whatever
/// its recipients' DSN parameters: the queue item keeps them per
/// recipient. Returns its queue id.
fn deliver(
    base: &SendArgs,
    envelope: &Envelope,
    message: &mut File,
) -> Result<Option<String>, Failure> {
    use std::io::{Seek, SeekFrom};
    let mail = &envelope.mail;
    let args = SendArgs {
        common: base.common.clone(),
        sender: Some(mail.address.clone()),
        recipients: envelope
            .recipients
            .iter()
            .map(|r| r.address.clone())
            .collect(),
        ignore_dots: true,
        dsn_ret: mail.ret.map(|r| match r {
            smtpd::command::Ret::Full => cli::DsnRet::Full,
            smtpd::command::Ret::Hdrs => cli::DsnRet::Hdrs,
        }),
        envid: mail.envid.clone(),
        ..SendArgs::default()
    };
    let dsn: Vec<RcptDsn> = envelope
        .recipients
        .iter()
        .map(|r| RcptDsn {
            notify: r.notify.clone(),
            orcpt: r.orcpt.clone(),
        })
        .collect();
    // A fresh environment per message: its clock stamps Date, and a
    // changed configuration applies to the next message.
    let env = gather_env(&args)?;
    message
        .seek(SeekFrom::Start(0))
        .map_err(|e| Failure::new(Exit::IoErr, format!("cannot read the spool file: {e}")))?;
    let mut source = Source {
        may_queue: true,
        input: message,
        keep_refused: false,
        recipient_dsn: &dsn,
        start_runner,
    };
    Ok(submit(&env, &args, &mut source)?.queue_id)
}

/// The queue runner this process started, if it still runs, and whether
/// mail was queued since it began: one runner at a time, whatever the
/// number of messages and connections, each delivering what the last left.
struct RunnerSlot {
    running: bool,
    again: bool,
}

static RUNNER: Mutex<RunnerSlot> = Mutex::new(RunnerSlot {
    running: false,
    again: false,
});

/// Starts a queue runner for a message just queued, unless one this
/// process started still runs; then another starts when it ends, for what
/// it may have missed. A long session or a busy listener thus never runs
/// a runner per message, and nothing waits for the timer.
fn start_runner(args: &SendArgs) {
    let mut slot = RUNNER.lock().unwrap_or_else(|e| e.into_inner());
    if slot.running {
        slot.again = true;
        return;
    }
    let Some(child) = runner_process(args) else {
        return;
    };
    slot.running = true;
    drop(slot);
    let args = args.clone();
    // Waits for the child (no zombie), and starts the next one if asked.
    let reaper = std::thread::Builder::new()
        .name("runner".into())
        .spawn(move || {
            let mut child = child;
            loop {
                let _ = child.wait();
                let mut slot = RUNNER.lock().unwrap_or_else(|e| e.into_inner());
                let next = if std::mem::take(&mut slot.again) {
                    runner_process(&args)
                } else {
                    None
                };
                match next {
                    Some(c) => child = c,
                    None => {
                        slot.running = false;
                        return;
                    }
                }
            }
        });
    if reaper.is_err() {
        RUNNER.lock().unwrap_or_else(|e| e.into_inner()).running = false;
    }
}

/// Before this process ends (and its waiting thread with it): mail queued
/// while the last runner ran gets a runner of its own, detached.
fn hand_over_runner(args: &SendArgs) {
    let mut slot = RUNNER.lock().unwrap_or_else(|e| e.into_inner());
    if std::mem::take(&mut slot.again) {
        super::send::spawn_runner(args);
    }
}

fn runner_process(args: &SendArgs) -> Option<std::process::Child> {
    super::send::runner_command(args)?.spawn().ok()
}

/// stdin and stdout as one stream; reads wait at most the idle time.
struct Stdio {
    input: Timed<File>,
    output: File,
}

impl Read for Stdio {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Stdio {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }
}

/// The IP address of the peer when stdin is a socket (systemd's
/// `Accept=yes`, inetd), so `-bs` applies the same access rules as
/// `mailhop serve`; `None` for a pipe or a terminal.
fn stdin_peer() -> Option<IpAddr> {
    use nix::sys::socket::{SockaddrStorage, getpeername};
    let stdin = io::stdin();
    let addr: SockaddrStorage = getpeername(stdin.as_fd().as_raw_fd()).ok()?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(
            std::net::SocketAddrV4::from(*v4).ip().to_owned(),
        ));
    }
    addr.as_sockaddr_in6()
        .map(|v6| IpAddr::V6(std::net::SocketAddrV6::from(*v6).ip().to_owned()))
}

/// `sendmail -bs`, from the dispatcher: warnings, then the session.
pub(super) fn smtp_cmd(args: &SendArgs) -> Exit {
    for w in &args.warnings {
        eprintln!("{w}");
    }
    exit_of(smtp_stdio(args))
}

/// `mailhop serve`, from the dispatcher.
pub(super) fn serve_cmd(args: &ServeArgs) -> Exit {
    exit_of(serve(args))
}

fn exit_of(r: Result<Exit, Failure>) -> Exit {
    r.unwrap_or_else(|e| {
        eprintln!("mailhop: {}", e.message);
        e.exit
    })
}

/// `sendmail -bs`: one SMTP session on stdin and stdout, as the invoking
/// user (the sender identity for the from policy, as for a piped message).
fn smtp_stdio(args: &SendArgs) -> Result<Exit, Failure> {
    let shared = Shared::load(args.clone())?;
    let dup = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned().map(File::from).map_err(|e| {
            Failure::new(
                Exit::OsErr,
                format!("cannot use standard input/output: {e}"),
            )
        })
    };
    let stdio = Stdio {
        input: Timed::new(dup(io::stdin().as_fd())?, shared.deadlines()),
        output: dup(io::stdout().as_fd())?,
    };
    let peer = stdin_peer();
    let summary = run_session(&shared, stdio, peer, None);
    hand_over_runner(args);
    let summary = summary?;
    if let Some(peer) = peer {
        eprintln!("mailhop: smtp from {peer}: {}", describe(&summary));
    }
    Ok(Exit::Ok)
}

fn describe(s: &smtpd::Summary) -> String {
    let mut d = format!("{} accepted, {} refused", s.accepted, s.refused);
    if let Some(a) = &s.abort {
        d.push_str(&format!(" ({})", crate::log::field(a)));
    }
    d
}

/// Runs a session to its end, upgrading to TLS when the client asks.
fn run_session<S: Read + Write>(
    shared: &Shared,
    mut stream: S,
    peer: Option<IpAddr>,
    stop: Option<&Arc<AtomicBool>>,
) -> Result<smtpd::Summary, Failure> {
    let access = shared.access(peer);
    let mut server = Server::new(shared.settings(access));
    let env = match gather_env(&shared.base) {
        Ok(env) => env,
        Err(f) => {
            // The configuration broke since the server started: the
            // client is told to come back, not left hanging.
            let reply = Reply::new(421, "4.3.5", "Configuration error, try again later");
            let _ = stream.write_all(&reply.to_wire());
            return Err(f);
        }
    };
    let mut app = App {
        shared,
        env,
        aliases: None,
    };
    match smtpd::session::run(stream, &mut server, &mut app, stop, true) {
        End::Closed(s) => Ok(s),
        End::StartTls(stream, before) => {
            let Some(config) = &shared.tls else {
                return Ok(before);
            };
            let mut after = match tls::accept(config.clone(), stream) {
                Ok(tls_stream) => {
                    server.tls_started();
                    match smtpd::session::run(tls_stream, &mut server, &mut app, stop, false) {
                        End::Closed(s) | End::StartTls(_, s) => s,
                    }
                }
                Err(e) => smtpd::Summary {
                    abort: Some(format!("TLS handshake failed: {e}")),
                    ..smtpd::Summary::default()
                },
            };
            after.accepted = after.accepted.saturating_add(before.accepted);
            after.refused = after.refused.saturating_add(before.refused);
            Ok(after)
        }
    }
}

/// Open connections, so shutdown can end their reads.
type Registry = Arc<Mutex<BTreeMap<u64, TcpStream>>>;

/// `mailhop serve --listen ADDR:PORT`.
fn serve(args: &ServeArgs) -> Result<Exit, Failure> {
    let base = SendArgs {
        common: cli::Common {
            config: args.config.clone(),
            verbose: u8::from(args.verbose),
            ..cli::Common::default()
        },
        ..SendArgs::default()
    };
    let shared = Arc::new(Shared::load(base)?);
    check_listen(&shared, args.listen)?;
    let listener = TcpListener::bind(args.listen).map_err(|e| {
        Failure::new(
            crate::exit::from_io(e.kind()),
            format!("cannot listen on {}: {e}", args.listen),
        )
    })?;
    let (wake_rx, wake_tx) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| Failure::new(Exit::OsErr, format!("cannot create a socket pair: {e}")))?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let tx = wake_tx
            .try_clone()
            .map_err(|e| Failure::new(Exit::OsErr, e.to_string()))?;
        signal_hook::low_level::pipe::register(sig, tx)
            .map_err(|e| Failure::new(Exit::OsErr, format!("cannot handle signals: {e}")))?;
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| Failure::new(Exit::OsErr, format!("cannot listen: {e}")))?;
    let local = listener.local_addr().unwrap_or(args.listen);
    eprintln!(
        "mailhop: listening on {local} (at most {} connections)",
        shared.smtpd.max_connections
    );
    let stop = Arc::new(AtomicBool::new(false));
    let registry: Registry = Arc::default();
    let mut workers = accept_loop(&shared, &listener, &wake_rx, &stop, &registry);
    drop(listener);
    // Shutdown: no new connections; end every session's read. A message
    // whose DATA is incomplete is not acknowledged; one being delivered
    // finishes (its reply is the truth either way).
    stop.store(true, Ordering::SeqCst);
    if let Ok(conns) = registry.lock() {
        for c in conns.values() {
            let _ = c.shutdown(std::net::Shutdown::Read);
        }
    }
    eprintln!(
        "mailhop: shutting down; waiting for {} session(s)",
        workers.len()
    );
    for w in workers.drain(..) {
        let _ = w.join();
    }
    hand_over_runner(&shared.base);
    eprintln!("mailhop: stopped");
    Ok(Exit::Ok)
}

/// Never an open relay: a listener outside loopback needs `[smtpd] allow`
/// networks or AUTH.
fn check_listen(shared: &Shared, addr: SocketAddr) -> Result<(), Failure> {
    if canonical(addr.ip()).is_loopback()
        || !shared.smtpd.allow.is_empty()
        || shared.auth_available()
    {
        return Ok(());
    }
    Err(Failure::new(
        Exit::Config,
        format!(
            "refusing to listen on {addr}: outside loopback, [smtpd] allow must list the \
             networks that may send, or AUTH must be set up (tls_cert_file, tls_key_file and \
             password_file); see mailhop.toml(5)"
        ),
    ))
}

/// Accepts until a signal arrives; returns the live workers.
fn accept_loop(
    shared: &Arc<Shared>,
    listener: &TcpListener,
    wake: &std::os::unix::net::UnixStream,
    stop: &Arc<AtomicBool>,
    registry: &Registry,
) -> Vec<JoinHandle<()>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let active = Arc::new(AtomicUsize::new(0));
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id: u64 = 0;
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            // A signal: its byte is in the wake pipe by the next poll.
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("mailhop: poll: {e}");
                return workers;
            }
        }
        let woke = fds[1].revents().is_some_and(|r| !r.is_empty());
        if woke {
            return workers;
        }
        // Non-blocking: a client that went away between poll and accept
        // must not leave us deaf to signals.
        let (conn, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                eprintln!("mailhop: accept: {e}");
                continue;
            }
        };
        workers.retain(|w| !w.is_finished());
        if active.load(Ordering::SeqCst) >= shared.smtpd.max_connections {
            turn_away(conn, peer, &shared.hostname);
            continue;
        }
        next_id = next_id.wrapping_add(1);
        let ctx = Worker {
            shared: shared.clone(),
            stop: stop.clone(),
            registry: registry.clone(),
            active: active.clone(),
            id: next_id,
        };
        active.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("smtp-{next_id}"))
            .spawn(move || ctx.serve(conn, peer));
        match spawned {
            Ok(h) => workers.push(h),
            Err(e) => {
                active.fetch_sub(1, Ordering::SeqCst);
                eprintln!("mailhop: cannot start a thread for {peer}: {e}");
            }
        }
    }
}

/// 421 to a client over the connection limit.
fn turn_away(mut conn: TcpStream, peer: SocketAddr, hostname: &str) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_write_timeout(Some(std::time::Duration::from_secs(5)));
    let reply = Reply::new(
        421,
        "4.3.2",
        format!("{hostname} Too many connections, try again later"),
    );
    let _ = conn.write_all(&reply.to_wire());
    eprintln!(
        "mailhop: smtp from {}: refused, too many connections",
        peer.ip()
    );
}

/// One connection's thread.
struct Worker {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    registry: Registry,
    active: Arc<AtomicUsize>,
    id: u64,
}

impl Worker {
    fn serve(self, conn: TcpStream, peer: SocketAddr) {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_write_timeout(Some(self.shared.smtpd.idle_timeout));
        let _ = conn.set_nodelay(true);
        if let (Ok(c), Ok(mut reg)) = (conn.try_clone(), self.registry.lock()) {
            reg.insert(self.id, c);
        }
        // A signal that came between accept and registration.
        if self.stop.load(Ordering::SeqCst) {
            let _ = conn.shutdown(std::net::Shutdown::Read);
        }
        let stream = Timed::new(conn, self.shared.deadlines());
        let result = run_session(&self.shared, stream, Some(peer.ip()), Some(&self.stop));
        match result {
            Ok(s) => eprintln!("mailhop: smtp from {}: {}", peer.ip(), describe(&s)),
            Err(f) => eprintln!("mailhop: smtp from {}: {}", peer.ip(), f.message),
        }
        if let Ok(mut reg) = self.registry.lock() {
            reg.remove(&self.id);
        }
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn shared(allow: &[&str], auth: bool) -> Shared {
        Shared {
            base: SendArgs::default(),
            smtpd: config::Smtpd {
                allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
                ..config::Smtpd::default()
            },
            hostname: "h".into(),
            tls: None,
            passwords: auth.then(|| auth::PasswordFile::parse("").unwrap()),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn access_from_the_peer_address() {
        let s = shared(&["172.17.0.0/16"], false);
        assert_eq!(s.access(None), Access::Trusted);
        assert_eq!(s.access(ip("127.0.0.1")), Access::Trusted);
        assert_eq!(s.access(ip("::1")), Access::Trusted);
        assert_eq!(s.access(ip("::ffff:127.0.0.1")), Access::Trusted);
        assert_eq!(s.access(ip("172.17.3.4")), Access::Trusted);
        assert_eq!(s.access(ip("::ffff:172.17.3.4")), Access::Trusted);
        assert_eq!(s.access(ip("172.18.0.1")), Access::Denied);
        assert_eq!(s.access(ip("2001:db8::1")), Access::Denied);
        // A password file alone is not AUTH: it needs TLS too.
        let s = shared(&[], true);
        assert_eq!(s.access(ip("10.0.0.1")), Access::Denied);
    }

    #[test]
    fn listening_outside_loopback_needs_allow_or_auth() {
        let lo: SocketAddr = "127.0.0.1:25".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:25".parse().unwrap();
        assert!(check_listen(&shared(&[], false), lo).is_ok());
        assert_eq!(
            check_listen(&shared(&[], false), any).unwrap_err().exit,
            Exit::Config
        );
        assert!(check_listen(&shared(&["10.0.0.0/8"], false), any).is_ok());
    }
}
