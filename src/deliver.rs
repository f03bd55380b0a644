//! The queue runner: joins the spool (`queue`) and SMTP (`transport`)
//! through the `Relay` trait, so it can be tested with a fake smarthost.
//!
//! One run takes every due item, groups them by account and sends each
//! group over one authenticated connection in arrival order (RSET after
//! a transaction that did not complete). Per-recipient outcomes are kept: accepted recipients are
//! never sent again, only the refused ones bounce. Failed and expired
//! recipients get an RFC 3464 delivery status notification, queued like
//! any other message with the null sender; a bounce is never bounced, so a
//! bounce that cannot be delivered moves to `failed/`.
//!
//! An account's `fallback` accounts take a message its own account fails
//! temporarily, in the same attempt (`Routes`, shared by the runner and
//! the foreground `attempt_paced`). Its limits (`max_per_minute`,
//! `max_connections`) are counted in the spool's pace state by every
//! mailhop process together: the runner waits for its turn on its one
//! connection; the foreground leaves the message queued instead.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Pacing;
use crate::message::dsn;
use crate::queue::{self, Claimed, Meta, QueueError, RcptState, Recipient, Spool};
use crate::transport::{self, Envelope, Outcome};

/// An open, authenticated connection to one smarthost.
pub trait Connection {
    fn send(
        &mut self,
        envelope: &Envelope<'_>,
        message: &mut dyn Read,
    ) -> Result<Outcome, transport::Error>;
    fn reset(&mut self) -> Result<(), transport::Error>;
    fn close(self: Box<Self>);
    /// The smarthost's address, for the log's `relay=host[ip]:port`.
    fn peer(&self) -> Option<std::net::SocketAddr> {
        None
    }
}

/// What the runner needs from the outside world.
pub trait Relay {
    /// Connects and logs in to `account`'s smarthost.
    fn connect(&mut self, account: &str) -> Result<Box<dyn Connection>, transport::Error>;
    /// The account an item without one should now use (a smarthost was
    /// configured after it was queued), or `None` if there still is none.
    fn account_for(&self, sender: &str) -> Option<String>;
    /// The accounts to try, in order, when `account` fails temporarily.
    fn fallbacks(&self, _account: &str) -> Vec<String> {
        Vec::new()
    }
    /// How fast and how many at once `account` may send.
    fn pacing(&self, _account: &str) -> Pacing {
        Pacing::default()
    }
}

impl Connection for transport::Session {
    fn send(
        &mut self,
        envelope: &Envelope<'_>,
        message: &mut dyn Read,
    ) -> Result<Outcome, transport::Error> {
        transport::Session::send(self, envelope, message)
    }
    fn reset(&mut self) -> Result<(), transport::Error> {
        transport::Session::reset(self)
    }
    fn close(self: Box<Self>) {
        self.quit();
    }
    fn peer(&self) -> Option<std::net::SocketAddr> {
        self.info().peer
    }
}

/// Knobs of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub now: SystemTime,
    /// Ignore the backoff schedule (`mailhop queue flush`).
    pub force: bool,
    /// Only these items (flush ID…).
    pub only: Option<Vec<String>>,
    /// Give up on an item after this long.
    pub max_age: Duration,
    /// Where bounces go instead of the envelope sender.
    pub bounce_to: Option<String>,
    /// This host's name, for the bounce's Reporting-MTA and Message-ID.
    pub hostname: String,
    /// Only items queued by this uid (a non-root user's runner).
    pub uid: Option<u32>,
}

/// What happened in a run, for the exit status and the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub delivered: usize,
    pub deferred: usize,
    pub bounced: usize,
    pub failed: usize,
    pub skipped_busy: usize,
    /// Bounces this run queued; sent by a second pass of the same run.
    pub new_bounces: Vec<String>,
    /// One line per item that changed, for syslog.
    pub lines: Vec<String>,
    /// What `decide` concluded for each recipient tried, for the
    /// Postfix-style log lines and the counters of `queue stats`.
    pub deliveries: Vec<Record>,
}

/// One recipient's verdict in a run, with what its log line needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The queue id.
    pub id: String,
    pub account: Option<String>,
    /// From arrival in the queue to the verdict.
    pub delay: Duration,
    pub verdict: Verdict,
    pub wire: Wire,
}

/// How one attempt went on the wire, for Postfix's `relay=`, `delays=`
/// and the reply of a `status=sent` line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wire {
    /// The smarthost's address, when a connection was made.
    pub peer: Option<std::net::SocketAddr>,
    /// The server's reply to the message's data.
    pub reply: Option<String>,
    /// Connecting and logging in (or reusing the run's connection).
    pub setup: Duration,
    /// The transaction: MAIL to the reply after the data.
    pub transfer: Duration,
}

impl Record {
    /// Records each verdict of one attempt at `meta`.
    pub fn note(out: &mut Vec<Record>, meta: &Meta, wire: &Wire, verdicts: &[Verdict]) {
        let arrival = UNIX_EPOCH + Duration::from_secs(meta.arrival);
        let delay = SystemTime::now()
            .duration_since(arrival)
            .unwrap_or_default();
        out.extend(verdicts.iter().map(|verdict| Record {
            id: meta.id.clone(),
            account: meta.account.clone(),
            delay,
            verdict: verdict.clone(),
            wire: wire.clone(),
        }));
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs the queue, then again over what no pass has handled yet: the
/// bounces a pass queued (sent now rather than at the next timer tick),
/// items queued meanwhile, and items that were busy or left because every
/// connection slot was taken. That last look, after this runner gave its
/// slots back, is what makes leaving an item safe: whoever holds a slot
/// looks again when it lets go. Each item is handled once per run, and
/// the run ends after a pass that handled nothing.
pub fn run(spool: &Spool, relay: &mut dyn Relay, opts: &RunOptions) -> Result<Report, QueueError> {
    let pace = spool.pace();
    let mut seen = HashSet::new();
    let (mut report, _) = run_once(spool, relay, opts, &pace, &mut seen)?;
    // A second pass, even after one that handled nothing: what was busy
    // or left then may be free now that this runner has let go.
    loop {
        let bounces = std::mem::take(&mut report.new_bounces);
        // What arrived during the pass is due by the clock, not by the
        // run's start (tests run at a fixed time in the future).
        let pass = RunOptions {
            now: opts.now.max(SystemTime::now()),
            only: opts
                .only
                .as_ref()
                .map(|only| only.iter().chain(&bounces).cloned().collect()),
            ..opts.clone()
        };
        let (more, handled) = run_once(spool, relay, &pass, &pace, &mut seen)?;
        report.delivered += more.delivered;
        report.deferred += more.deferred;
        report.bounced += more.bounced;
        report.failed += more.failed;
        report.skipped_busy += more.skipped_busy;
        report.lines.extend(more.lines);
        report.deliveries.extend(more.deliveries);
        report.new_bounces = more.new_bounces;
        if handled == 0 {
            return Ok(report);
        }
    }
}

/// One pass over the due items not in `seen` (the handled ones); returns
/// the report and how many items it handled.
fn run_once(
    spool: &Spool,
    relay: &mut dyn Relay,
    opts: &RunOptions,
    pace: &queue::Pace,
    seen: &mut HashSet<String>,
) -> Result<(Report, usize), QueueError> {
    let now = secs(opts.now);
    spool.sweep(opts.now);
    let (items, damaged) = spool.list()?;
    let mut report = Report::default();
    for d in damaged {
        report.lines.push(format!("skipped: {d}"));
    }
    // Group due items by account, keeping arrival order within each.
    let mut groups: Vec<(Option<String>, Vec<Meta>)> = Vec::new();
    let before = seen.len();
    for m in items {
        if m.hold || opts.uid.is_some_and(|u| u != m.uid) || seen.contains(&m.id) {
            continue;
        }
        if let Some(only) = &opts.only
            && !only.contains(&m.id)
        {
            continue;
        }
        let expired = now.saturating_sub(m.arrival) > opts.max_age.as_secs();
        if !opts.force && m.next_attempt > now && !expired {
            continue;
        }
        let account = m.account.clone().or_else(|| relay.account_for(&m.sender));
        match groups.iter_mut().find(|(a, _)| *a == account) {
            Some((_, list)) => list.push(m),
            None => groups.push((account, vec![m])),
        }
    }
    for (account, metas) in groups {
        let group = Group {
            spool,
            account: account.as_deref(),
            pace: Some(pace),
        };
        run_group(relay, opts, group, metas, &mut report, seen)?;
    }
    let handled = seen.len() - before;
    Ok((report, handled))
}

/// A claim made ahead by the loader thread.
type Claim = Result<Claimed, QueueError>;

/// Sends one account's items. The file work around each transaction runs
/// beside it rather than between transactions, where it would add to every
/// message's time: a loader thread claims (locks and reads) the next item
/// while this one is being sent, and a remover thread deletes delivered
/// items while the next one is. The loader holds at most one claim ahead,
/// so a racing runner is kept off one extra item at most. Items wait for
/// the remover only after the server's final 250, the window in which a
/// crash may already duplicate (never lose) a message.
fn run_group(
    relay: &mut dyn Relay,
    opts: &RunOptions,
    group: Group<'_>,
    metas: Vec<Meta>,
    report: &mut Report,
    handled: &mut HashSet<String>,
) -> Result<(), QueueError> {
    let spool = group.spool;
    std::thread::scope(|scope| {
        // A rendezvous channel: the loader blocks in send() holding the
        // next claim until it is taken, and stops when the receiver is
        // dropped (the group ended, possibly early on an error).
        let (claim_tx, claims) = mpsc::sync_channel::<Claim>(0);
        scope.spawn(move || {
            for listed in metas {
                if claim_tx.send(spool.claim(&listed.id)).is_err() {
                    break;
                }
            }
        });
        let (retire_tx, retired) = mpsc::channel::<Claimed>();
        let remover = scope.spawn(move || {
            let mut first = Ok(());
            for claimed in retired {
                let removed = spool.remove(claimed);
                if first.is_ok() {
                    first = removed;
                }
            }
            first
        });
        let sent = send_group(relay, opts, group, claims, &retire_tx, report, handled);
        drop(retire_tx);
        let removed = match remover.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        sent.and(removed)
    })
}

fn send_group(
    relay: &mut dyn Relay,
    opts: &RunOptions,
    group: Group<'_>,
    claims: mpsc::Receiver<Claim>,
    retire: &mpsc::Sender<Claimed>,
    report: &mut Report,
    handled: &mut HashSet<String>,
) -> Result<(), QueueError> {
    let Group {
        spool,
        account,
        pace,
    } = group;
    let now = secs(opts.now);
    let mut routes = account.map(|a| Routes::new(relay, a, pace, AtLimit::Wait));
    for claim in claims {
        let mut claimed = match claim {
            Ok(c) => c,
            Err(QueueError::Busy(_)) => {
                report.skipped_busy += 1;
                continue;
            }
            Err(QueueError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        if claimed.meta.hold {
            continue;
        }
        if claimed.meta.account.is_none() {
            claimed.meta.account = account.map(str::to_string);
        }
        handled.insert(claimed.meta.id.clone());
        if claimed.meta.pending().next().is_none() {
            // Nothing left to send: only a bounce an earlier run could not
            // queue. `finish` makes it.
        } else if now.saturating_sub(claimed.meta.arrival) > opts.max_age.as_secs() {
            let why = expiry_reason(&claimed.meta, now);
            let v = decide(&mut claimed.meta, Event::Expired(&why));
            Record::note(&mut report.deliveries, &claimed.meta, &Wire::default(), &v);
        } else if let Some(routes) = routes.as_mut() {
            let meta = &mut claimed.meta;
            let noted = &mut report.deliveries;
            match routes.deliver(relay, meta, &mut claimed.data, &mut report.lines, noted) {
                Delivery::Paced => {
                    // Every connection slot is taken by other processes,
                    // each of which looks again when it lets go (see `run`).
                    handled.remove(&meta.id);
                    report.skipped_busy += 1;
                    report.lines.push(format!(
                        "{}: left for the process holding {}'s connections",
                        meta.id,
                        account.unwrap_or_default()
                    ));
                    break;
                }
                Delivery::Decided(verdicts) => {
                    if verdicts.iter().any(|v| v.fate == Fate::Delivered) {
                        report.delivered += 1;
                    }
                }
            }
        } else {
            let v = decide(&mut claimed.meta, Event::NoSmarthost);
            Record::note(&mut report.deliveries, &claimed.meta, &Wire::default(), &v);
            note_deferred(&claimed.meta, report);
        }
        finish(spool, claimed, opts, retire, report)?;
    }
    if let Some(r) = routes {
        r.close();
    }
    Ok(())
}

/// What a group works with besides the relay: the spool, its account (if
/// any) and the shared pacing state.
#[derive(Clone, Copy)]
struct Group<'a> {
    spool: &'a Spool,
    account: Option<&'a str>,
    pace: Option<&'a queue::Pace>,
}

/// What a delivery does when an account is at its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtLimit {
    /// Leave the message queued (a foreground send returns at once).
    Queue,
    /// Wait for the window to allow the next message (the runner).
    Wait,
}

/// One account a message may go through, and how it stands in this run.
struct Route {
    account: String,
    pacing: Pacing,
    conn: Option<Box<dyn Connection>>,
    /// The connection slot held while `conn` is open.
    slot: Option<queue::Slot>,
    /// Why the account is not used again in this run: connecting failed,
    /// or it asked us to slow down. Not hammering a server that is down
    /// or throttling us.
    out: Option<transport::Error>,
    /// The last transaction did not complete, so RSET before the next.
    dirty: bool,
    /// The pace's count of the message being sent, to date when it went.
    ticket: Option<queue::Ticket>,
}

/// A message's accounts: its own, then its fallbacks in order. The
/// foreground send uses one for one message, the runner one per group.
struct Routes<'a> {
    routes: Vec<Route>,
    pace: Option<&'a queue::Pace>,
    at_limit: AtLimit,
}

/// What became of one message.
#[derive(Debug)]
pub enum Delivery {
    /// The account is at its limits and the caller does not wait: the
    /// message is untouched.
    Paced,
    /// `decide`'s verdicts.
    Decided(Vec<Verdict>),
}

/// Whether a route can take a message now.
enum Ready {
    Go,
    Paced,
    Out,
}

impl<'a> Routes<'a> {
    fn new(
        relay: &dyn Relay,
        account: &str,
        pace: Option<&'a queue::Pace>,
        at_limit: AtLimit,
    ) -> Routes<'a> {
        let mut names = vec![account.to_string()];
        names.extend(relay.fallbacks(account));
        let routes = names
            .into_iter()
            .map(|account| Route {
                pacing: relay.pacing(&account),
                account,
                conn: None,
                slot: None,
                out: None,
                dirty: false,
                ticket: None,
            })
            .collect();
        Routes {
            routes,
            pace,
            at_limit,
        }
    }

    /// Sends one message through the first account that takes it. Only a
    /// failure that leaves every recipient deferred (`decide` says so)
    /// moves on to the next account; a permanent refusal is the answer.
    fn deliver(
        &mut self,
        relay: &mut dyn Relay,
        meta: &mut Meta,
        data: &mut File,
        lines: &mut Vec<String>,
        noted: &mut Vec<Record>,
    ) -> Delivery {
        let started = Instant::now();
        let mut first: Option<(transport::Error, Wire)> = None;
        for i in 0..self.routes.len() {
            match self.ready(i, relay) {
                Ready::Go => {}
                Ready::Paced if i == 0 => return Delivery::Paced,
                Ready::Paced => continue,
                Ready::Out => {
                    if first.is_none()
                        && let Some(e) = &self.routes[i].out
                    {
                        first = Some((e.clone(), Wire::default()));
                    }
                    continue;
                }
            }
            let route = &mut self.routes[i];
            let Some(conn) = route.conn.as_mut() else {
                continue;
            };
            let mut wire = Wire {
                peer: conn.peer(),
                setup: started.elapsed(),
                ..Wire::default()
            };
            let sending = Instant::now();
            let result = send_message(conn.as_mut(), meta, data);
            wire.transfer = sending.elapsed();
            route.dirty = result.is_err();
            route.went(self.pace);
            let e = match result {
                Ok(outcome) => {
                    wire.reply = outcome.reply.as_ref().map(|r| r.one_line());
                    let v = self.accepted(i, meta, &outcome, lines);
                    Record::note(noted, meta, &wire, &v);
                    return Delivery::Decided(v);
                }
                Err(e) => e,
            };
            route.after_error(&e);
            lines.push(format!("{}: {}: {}", meta.id, route.account, e.detail));
            if all_deferred(meta, &e) {
                first.get_or_insert((e, wire));
                continue;
            }
            let v = decide(meta, Event::Error(&e));
            Record::note(noted, meta, &wire, &v);
            return Delivery::Decided(v);
        }
        match first {
            Some((e, mut wire)) => {
                note_failed_over(meta, &e, &self.routes, lines);
                let v = decide(meta, Event::Error(&e));
                // A connection that failed took all the time there was.
                if wire.peer.is_none() {
                    wire.setup = started.elapsed();
                }
                Record::note(noted, meta, &wire, &v);
                Delivery::Decided(v)
            }
            None => Delivery::Paced,
        }
    }

    /// The transaction on route `i` ran: records who delivered and why.
    fn accepted(
        &self,
        i: usize,
        meta: &mut Meta,
        outcome: &Outcome,
        lines: &mut Vec<String>,
    ) -> Vec<Verdict> {
        let account = &self.routes[i].account;
        let verdicts = decide(meta, Event::Sent(outcome));
        for r in meta.recipients.iter_mut().filter(|r| {
            r.state == RcptState::Done && r.via.is_none() && outcome.accepted.contains(&r.address)
        }) {
            r.via = Some(account.clone());
        }
        let via = if i == 0 {
            account.clone()
        } else {
            format!("{account} (fallback for {})", self.routes[0].account)
        };
        lines.push(format!(
            "{}: to {} via {via}: {}",
            meta.id,
            outcome.accepted.join(", "),
            outcome
                .reply
                .as_ref()
                .map(|r| r.one_line())
                .unwrap_or_default()
        ));
        verdicts
    }

    /// Makes route `i` ready for a message: a connection slot, the pace's
    /// leave, a connection (reset after an incomplete transaction). The
    /// pace is asked before connecting, so a send that must wait never
    /// opens a connection the provider would count.
    fn ready(&mut self, i: usize, relay: &mut dyn Relay) -> Ready {
        let pace = self.pace;
        let at_limit = self.at_limit;
        let route = &mut self.routes[i];
        if route.out.is_some() {
            return Ready::Out;
        }
        if route.dirty
            && let Some(c) = route.conn.as_mut()
            && c.reset().is_err()
        {
            route.conn = None;
            route.slot = None;
        }
        route.dirty = false;
        if route.conn.is_none() && !route.take_slot(pace) {
            return Ready::Paced;
        }
        if !route.take_turn(pace, at_limit) {
            // Not keeping a connection the foreground will not use.
            if let Some(c) = route.conn.take() {
                c.close();
            }
            route.slot = None;
            return Ready::Paced;
        }
        if route.conn.is_none() {
            match relay.connect(&route.account) {
                Ok(c) => route.conn = Some(c),
                Err(e) => {
                    route.slot = None;
                    route.out = Some(e);
                    return Ready::Out;
                }
            }
        }
        Ready::Go
    }

    fn close(self) {
        for r in self.routes {
            if let Some(c) = r.conn {
                c.close();
            }
        }
    }
}

impl Route {
    /// A connection slot, when the account limits connections: `false`
    /// when all are taken. A state that cannot be read limits nothing:
    /// mail must flow even then.
    fn take_slot(&mut self, pace: Option<&queue::Pace>) -> bool {
        let (Some(pace), Some(max)) = (pace, self.pacing.connections) else {
            return true;
        };
        match pace.connection(&self.account, max) {
            Ok(Some(slot)) => {
                self.slot = Some(slot);
                true
            }
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Counts the next message against the account's rate: waits for the
    /// window (`AtLimit::Wait`, for at most a window per turn) or gives up
    /// (`AtLimit::Queue`). `true` when the message may go.
    fn take_turn(&mut self, pace: Option<&queue::Pace>, at_limit: AtLimit) -> bool {
        let (Some(pace), Some(limit)) = (pace, self.pacing.per_window) else {
            return true;
        };
        loop {
            match pace.take(&self.account, limit, self.pacing.window, &SystemTime::now) {
                Ok(queue::Turn::Go(ticket)) => {
                    self.ticket = Some(ticket);
                    return true;
                }
                // A state that stays locked (its holder is stopped): the
                // count is unknown, so the foreground queues and the
                // runner asks again.
                Err(e) if e.io_kind() == Some(io::ErrorKind::TimedOut) => {
                    if at_limit == AtLimit::Queue {
                        return false;
                    }
                }
                Err(_) => return true,
                Ok(queue::Turn::Wait(_)) if at_limit == AtLimit::Queue => return false,
                Ok(queue::Turn::Wait(until)) => {
                    let now = SystemTime::now();
                    let wait = until.duration_since(now).unwrap_or_default();
                    std::thread::sleep(wait.clamp(Duration::from_millis(1), self.pacing.window));
                }
            }
        }
    }

    /// The message this route counted has gone (or failed): it counts
    /// from now, when the server has it.
    fn went(&mut self, pace: Option<&queue::Pace>) {
        if let (Some(pace), Some(ticket)) = (pace, self.ticket.take()) {
            let _ = pace.sent(&self.account, ticket, &SystemTime::now);
        }
    }

    /// After a failed transaction: a connection that broke is dropped
    /// (with its slot); an account that says "too many" or "rate" is left
    /// alone for the rest of the run.
    fn after_error(&mut self, e: &transport::Error) {
        use transport::Kind;
        // A connection that failed mid-message (the spool file could not be
        // read during DATA) is in an unknown state: an RSET would land
        // inside the DATA. It is given up like a broken one.
        let broken = matches!(e.kind, Kind::Network | Kind::Timeout | Kind::Protocol)
            || (e.stage == transport::Stage::Message && e.reply().is_none());
        let throttled = e.reply().is_some_and(|r| {
            r.is_transient() && r.refusal_class() == transport::RefusalClass::RateLimited
        });
        if broken || throttled {
            if let (Some(c), false) = (self.conn.take(), broken) {
                c.close();
            }
            self.slot = None;
            self.dirty = false;
        }
        if throttled {
            self.out = Some(e.clone());
        }
    }
}

/// Whether `e` leaves every pending recipient of `meta` deferred, as
/// `decide` reads it (tried on a copy): then another account may take the
/// message. A permanent refusal of anyone is not retried elsewhere.
fn all_deferred(meta: &Meta, e: &transport::Error) -> bool {
    let mut trial = meta.clone();
    decide(&mut trial, Event::Error(e))
        .iter()
        .all(|v| matches!(v.fate, Fate::Deferred(_)))
}

/// The log line for a message that no account took.
fn note_failed_over(meta: &Meta, e: &transport::Error, routes: &[Route], lines: &mut Vec<String>) {
    let tried: Vec<&str> = routes.iter().map(|r| r.account.as_str()).collect();
    let tried = match tried.len() {
        1 => String::new(),
        _ => format!(" (tried {})", tried.join(", ")),
    };
    lines.push(format!("{}: deferred: {}{tried}", meta.id, e.detail));
}

/// The text a recipient fails with when the message is older than
/// `max_age`.
fn expiry_reason(meta: &Meta, now: u64) -> String {
    let age = Duration::from_secs(now.saturating_sub(meta.arrival));
    format!(
        "4.4.7 could not be delivered for {} (max_age); last error: {}",
        human(age),
        meta.last_error.clone().unwrap_or_else(|| "none".into())
    )
}

fn note_deferred(meta: &Meta, report: &mut Report) {
    report.lines.push(format!(
        "{}: deferred: {}",
        meta.id,
        meta.last_error
            .as_deref()
            .unwrap_or("no smarthost is configured")
    ));
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86_400 {
        format!("{} days", s / 86_400)
    } else if s >= 3600 {
        format!("{} hours", s / 3600)
    } else {
        format!("{} minutes", s / 60)
    }
}

/// Sends one message (its pending recipients) over an open connection.
pub fn send_message(
    conn: &mut dyn Connection,
    meta: &Meta,
    data: &mut File,
) -> Result<Outcome, transport::Error> {
    let recipients: Vec<String> = meta.pending().map(|r| r.address.clone()).collect();
    let body_len = data.metadata().map(|m| m.len()).unwrap_or(0);
    let dsn = transport::Dsn {
        notify: meta.dsn_notify.clone(),
        ret_full: meta.dsn_ret_full,
        envid: meta.dsn_envid.clone(),
        recipients: meta
            .pending()
            .map(|r| transport::RcptDsn {
                notify: r.dsn.notify.clone(),
                orcpt: r.dsn.orcpt.clone(),
            })
            .collect(),
    };
    let envelope = Envelope {
        sender: &meta.sender,
        recipients: &recipients,
        size: meta.header.len() as u64 + 2 + body_len,
        eight_bit: meta.eight_bit,
        dsn: &dsn,
    };
    data.seek(SeekFrom::Start(0)).map_err(|e| {
        transport::Error::new(
            transport::Stage::Message,
            transport::Kind::Config,
            format!("cannot read the queued message: {e}"),
        )
    })?;
    let head = [meta.header.as_slice(), b"\r\n"].concat();
    let mut message = io::Cursor::new(head).chain(&*data);
    conn.send(&envelope, &mut message)
}

/// One attempt at one message on a connection of its own: the foreground
/// send's delivery, through the runner's own code (fallbacks included).
/// The decision is `decide`'s, exactly as in a queue run.
pub fn attempt(
    relay: &mut dyn Relay,
    account: &str,
    meta: &mut Meta,
    data: &mut File,
) -> Vec<Verdict> {
    match attempt_paced(relay, None, account, meta, data, &mut Vec::new()) {
        Delivery::Paced => Vec::new(),
        Delivery::Decided(v) => v,
    }
}

/// `attempt` within the accounts' limits as `pace` counts them: an
/// account at a limit leaves the message untouched (`Delivery::Paced`)
/// rather than waiting or tripping the provider. Each verdict is recorded
/// in `noted`, for the log lines.
pub fn attempt_paced(
    relay: &mut dyn Relay,
    pace: Option<&queue::Pace>,
    account: &str,
    meta: &mut Meta,
    data: &mut File,
    noted: &mut Vec<Record>,
) -> Delivery {
    let mut routes = Routes::new(relay, account, pace, AtLimit::Queue);
    let mut lines = Vec::new();
    let delivery = routes.deliver(relay, meta, data, &mut lines, noted);
    routes.close();
    delivery
}

/// Why a recipient waits or failed, in the terms that decide what happens
/// next and what the caller is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A 4xx reply, the network, a timeout, a server that broke the
    /// protocol: it passes by itself.
    Temporary,
    /// The login was refused, a password or token could not be had, TLS or
    /// the certificate failed, the server lacks STARTTLS or AUTH: a person
    /// must act, and the message waits for them (Postfix's
    /// `smtp_sasl_auth_soft_bounce`).
    NeedsAdmin,
    /// No smarthost is configured.
    NoSmarthost,
    /// The recipient does not exist (5.1.x at RCPT).
    UnknownUser,
    /// The sender may not send as this address (5.7.1 "Sender address
    /// rejected", 5.2.252 SendAsDenied).
    SenderRefused,
    /// Any other permanent refusal of the message or a recipient.
    Refused,
    /// Queued for longer than `max_age`.
    Expired,
}

/// A recipient's fate after one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    Deferred(Cause),
    Failed(Cause),
}

/// What `decide` concluded for one recipient, and why in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub address: String,
    pub fate: Fate,
    /// The server's reply or our explanation; `None` when delivered.
    pub reason: Option<String>,
}

/// What happened to a message's pending recipients.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The transaction ran: some recipients accepted, some refused.
    Sent(&'a Outcome),
    /// It could not be sent: connect, TLS, login, MAIL, DATA, …
    Error(&'a transport::Error),
    /// There is no smarthost to send to.
    NoSmarthost,
    /// The message is older than `max_age`; the text says so.
    Expired(&'a str),
}

/// The one place that decides a recipient's fate: delivered, deferred with
/// a reason, or failed. The foreground send, the queue runner and the SMTP
/// server all come here; it updates the pending recipients of `meta` and
/// returns what it decided for each.
pub fn decide(meta: &mut Meta, event: Event<'_>) -> Vec<Verdict> {
    if let Event::Error(e) = event {
        meta.last_error = Some(e.detail.clone());
    }
    let mut verdicts = Vec::new();
    for r in meta
        .recipients
        .iter_mut()
        .filter(|r| r.state == RcptState::Pending)
    {
        let (fate, reason) = fate_of(&r.address, event);
        match fate {
            Fate::Delivered => r.state = RcptState::Done,
            Fate::Failed(_) => r.state = RcptState::Failed,
            Fate::Deferred(_) => {}
        }
        r.last_error.clone_from(&reason);
        verdicts.push(Verdict {
            address: r.address.clone(),
            fate,
            reason,
        });
    }
    verdicts
}

fn fate_of(address: &str, event: Event<'_>) -> (Fate, Option<String>) {
    match event {
        Event::Sent(outcome) => {
            if outcome.accepted.iter().any(|a| a == address) {
                return (Fate::Delivered, None);
            }
            match outcome.rejected.iter().find(|(a, _)| a == address) {
                Some((_, reply)) => (rcpt_fate(reply), Some(reply.one_line())),
                // Neither accepted nor refused: the server never answered
                // for it. Try again.
                None => (
                    Fate::Deferred(Cause::Temporary),
                    Some("the server did not answer for this recipient".into()),
                ),
            }
        }
        Event::Error(e) => {
            // Refused at RCPT: its own reply decides, even when the
            // transaction then failed for the others (a 4xx RCPT stays
            // deferred under a 5xx to DATA).
            let list = match &e.kind {
                transport::Kind::AllRecipientsRejected(list) => list.as_slice(),
                _ => e.rejected(),
            };
            if let Some((_, reply)) = list.iter().find(|(a, _)| a == address) {
                return (rcpt_fate(reply), Some(reply.one_line()));
            }
            // The reply itself ("554 5.6.0 …") where there is one, so a
            // bounce can carry its status code.
            let text = match &e.kind {
                transport::Kind::Reply(r) => r.one_line(),
                _ => e.detail.clone(),
            };
            (error_fate(e), Some(text))
        }
        Event::NoSmarthost => (
            Fate::Deferred(Cause::NoSmarthost),
            Some("no smarthost is configured ([[account]] in the configuration)".into()),
        ),
        Event::Expired(why) => (Fate::Failed(Cause::Expired), Some(why.to_string())),
    }
}

/// A reply to RCPT: 4xx and sending quotas wait; 5.1.x is an unknown
/// user; a refusal of the sender is the sender's problem, not the
/// recipient's (`transport::Reply::refusal_class` reads the reply).
fn rcpt_fate(reply: &transport::Reply) -> Fate {
    use transport::RefusalClass as R;
    if reply.is_transient() {
        return Fate::Deferred(Cause::Temporary);
    }
    match reply.refusal_class() {
        R::RateLimited => Fate::Deferred(Cause::Temporary),
        R::SenderPolicy => Fate::Failed(Cause::SenderRefused),
        R::UnknownUser => Fate::Failed(Cause::UnknownUser),
        // A bare 550 from a server without enhanced codes: sendmail's
        // reading, no such user.
        R::Other if reply.enhanced().is_none() => Fate::Failed(Cause::UnknownUser),
        R::Other => Fate::Failed(Cause::Refused),
    }
}

/// An error that stopped the whole transaction. Only a permanent refusal
/// of the message itself (5xx to MAIL or DATA, a message this server can
/// never take) fails it; everything else waits, including a refused login
/// and a certificate that does not verify: those are the administrator's
/// to fix, and the message must survive until they have.
fn error_fate(e: &transport::Error) -> Fate {
    use transport::{Kind, Stage};
    if e.is_transient() || matches!(e.kind, Kind::Network | Kind::Timeout | Kind::Protocol) {
        return Fate::Deferred(Cause::Temporary);
    }
    let about_message = matches!(e.stage, Stage::Mail | Stage::Data | Stage::Message)
        && matches!(e.kind, Kind::Reply(_) | Kind::Unsupported);
    if !about_message {
        return Fate::Deferred(Cause::NeedsAdmin);
    }
    match e.reply().map(transport::Reply::refusal_class) {
        Some(transport::RefusalClass::SenderPolicy) => Fate::Failed(Cause::SenderRefused),
        Some(transport::RefusalClass::RateLimited) => Fate::Deferred(Cause::Temporary),
        _ => Fate::Failed(Cause::Refused),
    }
}

/// Counts an attempt that left recipients pending and sets the next one.
pub fn reschedule(meta: &mut Meta, now: u64) {
    meta.attempts = meta.attempts.saturating_add(1);
    meta.next_attempt = now + queue::backoff(meta.attempts).as_secs();
}

/// After an attempt: remove the item if nothing is pending, bounce what
/// failed, and reschedule what is left.
fn finish(
    spool: &Spool,
    mut claimed: Claimed,
    opts: &RunOptions,
    retire: &mpsc::Sender<Claimed>,
    report: &mut Report,
) -> Result<(), QueueError> {
    let now = secs(opts.now);
    let failed: Vec<Recipient> = claimed
        .meta
        .recipients
        .iter()
        .filter(|r| r.state == RcptState::Failed)
        .cloned()
        .collect();
    if !failed.is_empty() {
        if claimed.meta.sender.is_empty() {
            // A bounce that failed: never bounce a bounce. Once nothing is
            // pending, the item goes to failed/ for a person to see; until
            // then its deferred recipients are retried.
            if claimed.meta.pending().next().is_none() {
                let id = claimed.meta.id.clone();
                let path = spool.fail(claimed)?;
                report.failed += 1;
                report.lines.push(format!(
                    "{id}: bounce could not be delivered; moved to {}",
                    path.display()
                ));
                return Ok(());
            }
        } else if !bounce_failed(spool, &mut claimed.meta, &failed, opts, report) {
            // The failed recipients stay failed (not bounced), and the
            // item stays: a later run makes the bounce. What this run did
            // to the item is saved, and the run goes on.
            reschedule(&mut claimed.meta, now);
            return spool.update(&claimed);
        }
    }
    if claimed.meta.pending().next().is_none() {
        // The remover thread deletes it; should that thread be gone (it
        // never stops before the sender is dropped), remove it here.
        if let Err(mpsc::SendError(claimed)) = retire.send(claimed) {
            return spool.remove(claimed);
        }
        return Ok(());
    }
    reschedule(&mut claimed.meta, now);
    report.deferred += 1;
    spool.update(&claimed)
}

/// The Original-Recipient field (RFC 3464 §2.3.1) for an ORCPT: its own
/// address type and address, as the client gave them. Anything else in a
/// queue file is written again from the address, so it cannot break the
/// field.
fn original_recipient(orcpt: &str) -> Option<String> {
    if let Some((kind, addr)) = dsn::orcpt(orcpt) {
        return Some(format!("{kind}; {}", addr.trim()));
    }
    let (_, addr) = orcpt.split_once(';')?;
    Some(dsn::recipient(addr.trim()))
}

/// Bounces `failed` (those whose NOTIFY asks for it) and marks them all
/// settled. False when the bounce could not be queued: they stay failed.
fn bounce_failed(
    spool: &Spool,
    meta: &mut Meta,
    failed: &[Recipient],
    opts: &RunOptions,
    report: &mut Report,
) -> bool {
    let bounce = match queue_bounce(spool, meta, failed, opts) {
        Ok(id) => id,
        Err(e) => {
            report.lines.push(format!(
                "{}: the bounce could not be queued ({e}); kept for a later run",
                meta.id
            ));
            return false;
        }
    };
    // Per recipient: one that fails on a later attempt gets a bounce of
    // its own.
    for r in meta
        .recipients
        .iter_mut()
        .filter(|r| r.state == RcptState::Failed)
    {
        r.state = RcptState::Bounced;
    }
    let (noticed, silent): (Vec<&Recipient>, Vec<&Recipient>) =
        failed.iter().partition(|r| r.wants_failure_notice(meta));
    let list = |rs: &[&Recipient]| {
        rs.iter()
            .map(|r| r.address.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(bounce) = bounce {
        report.new_bounces.push(bounce);
        report.bounced += 1;
        report.lines.push(format!(
            "{}: bounced to <{}> for {}",
            meta.id,
            opts.bounce_to.as_deref().unwrap_or(&meta.sender),
            list(&noticed)
        ));
    }
    if !silent.is_empty() {
        report.lines.push(format!(
            "{}: failed for {}; no bounce: the sender asked for none (NOTIFY)",
            meta.id,
            list(&silent)
        ));
    }
    true
}

/// Queues an RFC 3464 delivery status notification for those of `failed`
/// whose sender asked for one (NOTIFY); `None` when none did.
pub fn queue_bounce(
    spool: &Spool,
    original: &Meta,
    failed: &[Recipient],
    opts: &RunOptions,
) -> Result<Option<String>, QueueError> {
    let failed: Vec<Recipient> = failed
        .iter()
        .filter(|r| r.wants_failure_notice(original))
        .cloned()
        .collect();
    if failed.is_empty() {
        return Ok(None);
    }
    let to = opts
        .bounce_to
        .clone()
        .unwrap_or_else(|| original.sender.clone());
    let msg = build_dsn(original, &failed, &to, opts);
    let split = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(msg.len());
    let header = msg.get(..split + 2).unwrap_or(&msg).to_vec();
    let body = msg.get(split + 4..).unwrap_or_default();
    let mut draft = spool.draft(opts.now)?;
    use std::io::Write as _;
    draft.data.write_all(body).map_err(|e| QueueError::Io {
        path: draft.path().to_path_buf(),
        what: "write",
        error: e,
    })?;
    let meta = Meta {
        id: draft.id.clone(),
        arrival: secs(opts.now),
        sender: String::new(),
        account: original.account.clone(),
        uid: original.uid,
        attempts: 0,
        next_attempt: 0,
        last_error: None,
        hold: false,
        eight_bit: !msg.is_ascii(),
        dsn_notify: None,
        dsn_ret_full: None,
        dsn_envid: None,
        recipients: vec![Recipient::pending(to)],
        header,
    };
    spool.commit(&mut draft, &meta, true)?;
    Ok(Some(meta.id))
}

/// Builds the DSN: a human-readable part, message/delivery-status, and the
/// original headers (text/rfc822-headers), as RFC 3464 and 6522 describe.
pub fn build_dsn(original: &Meta, failed: &[Recipient], to: &str, opts: &RunOptions) -> Vec<u8> {
    use mail_builder::MessageBuilder;
    use mail_builder::headers::content_type::ContentType;
    use mail_builder::mime::{BodyPart, MimePart};

    let now = secs(opts.now);
    let mut human = format!(
        "This is the mail system at host {}.\r\n\r\n\
         I'm sorry to have to inform you that your message could not\r\n\
         be delivered to one or more recipients.\r\n\r\n",
        opts.hostname
    );
    for r in failed {
        human.push_str(&format!(
            "<{}>: {}\r\n",
            r.address,
            r.last_error.as_deref().unwrap_or("failed")
        ));
    }
    // RFC 3464 §2.1: the status part is 7bit header-style fields, folded
    // like header fields; `dsn::part` writes it whole, as a raw part.
    let mut per_message: dsn::Fields = vec![
        ("Reporting-MTA", format!("dns; {}", opts.hostname)),
        ("X-Mailhop-Queue-ID", original.id.clone()),
        ("Arrival-Date", rfc2822(original.arrival)),
    ];
    if let Some(envid) = &original.dsn_envid {
        per_message.push(("Original-Envelope-Id", envid.clone()));
    }
    let mut per_recipient = Vec::with_capacity(failed.len());
    for r in failed {
        let err = r.last_error.clone().unwrap_or_default();
        // The enhanced status code (RFC 3463) of the reply, or of our own
        // reason (4.4.7 for an expired message); 5.0.0 when there is none.
        let code = err
            .split_whitespace()
            .take(2)
            .find(|c| {
                let parts: Vec<&str> = c.split('.').collect();
                parts.len() == 3
                    && (parts[0] == "4" || parts[0] == "5")
                    && parts
                        .iter()
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            })
            .unwrap_or("5.0.0")
            .to_string();
        let mut fields: dsn::Fields = Vec::new();
        // RFC 3464 §2.3.1: the ORCPT the client gave, as given.
        if let Some(orcpt) = r.dsn.orcpt.as_deref().and_then(original_recipient) {
            fields.push(("Original-Recipient", orcpt));
        }
        fields.extend([
            ("Final-Recipient", dsn::recipient(&r.address)),
            ("Action", "failed".into()),
            ("Status", code),
        ]);
        if err.len() >= 3 && err.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
            fields.push(("Diagnostic-Code", format!("smtp; {err}")));
        }
        fields.push(("Last-Attempt-Date", rfc2822(now)));
        per_recipient.push(fields);
    }
    let status = dsn::part(&per_message, &per_recipient);
    let headers = String::from_utf8_lossy(&original.header).into_owned();
    let parts = vec![
        MimePart::new("text/plain", BodyPart::Text(human.into())),
        MimePart::raw(BodyPart::Binary(status.into())),
        MimePart::new(
            ContentType::new("text/rfc822-headers"),
            BodyPart::Text(headers.into()),
        ),
    ];
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        BodyPart::Multipart(parts),
    );
    let msgid = format!("{}.bounce.{}@{}", now, original.id, opts.hostname);
    let daemon = format!("MAILER-DAEMON@{}", opts.hostname);
    MessageBuilder::new()
        .from(("Mail Delivery System", daemon.as_str()))
        .to(to.to_string())
        .subject("Undelivered Mail Returned to Sender")
        .message_id(msgid)
        .date(now)
        .header(
            "Auto-Submitted",
            mail_builder::headers::text::Text::new("auto-replied"),
        )
        .body(report)
        .write_to_vec()
        .unwrap_or_default()
}

fn rfc2822(secs: u64) -> String {
    let ts = jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Kind, Reply, Stage};
    use std::cell::RefCell;
    use std::io::Write;
    use std::rc::Rc;

    /// (sender, accepted recipients, message) per message the fake got.
    type Got = Rc<RefCell<Vec<(String, Vec<String>, Vec<u8>)>>>;

    /// A fake smarthost: replies by recipient name, records what it got.
    #[derive(Default)]
    struct Fake {
        down: bool,
        connects: usize,
        got: Got,
        /// Accounts that refuse connections (all when `down`).
        down_accounts: Vec<&'static str>,
        /// Accounts that answer MAIL with a throttling 432.
        throttled: Vec<&'static str>,
        /// The fallbacks of "acct".
        fallbacks: Vec<String>,
        pacing: Pacing,
        /// The account of each transaction, in order.
        sends: Rc<RefCell<Vec<String>>>,
    }

    struct FakeConn {
        got: Got,
        account: String,
        throttled: bool,
        sends: Rc<RefCell<Vec<String>>>,
    }

    impl Connection for FakeConn {
        fn send(
            &mut self,
            env: &Envelope<'_>,
            msg: &mut dyn Read,
        ) -> Result<Outcome, transport::Error> {
            let mut data = Vec::new();
            msg.read_to_end(&mut data).unwrap();
            self.sends.borrow_mut().push(self.account.clone());
            if self.throttled {
                return Err(transport::Error::new(
                    Stage::Mail,
                    Kind::Reply(Reply {
                        code: 432,
                        lines: vec![
                            "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded".into(),
                        ],
                    }),
                    "432 4.3.2 throttled",
                ));
            }
            let mut o = Outcome::default();
            for r in env.recipients {
                if r.starts_with("bad") {
                    o.rejected.push((
                        r.clone(),
                        Reply {
                            code: 550,
                            lines: vec!["5.1.1 unknown".into()],
                        },
                    ));
                } else if r.starts_with("later") {
                    o.rejected.push((
                        r.clone(),
                        Reply {
                            code: 450,
                            lines: vec!["4.2.0 later".into()],
                        },
                    ));
                } else {
                    o.accepted.push(r.clone());
                }
            }
            if o.accepted.is_empty() {
                return Err(transport::Error::new(
                    Stage::Rcpt,
                    Kind::AllRecipientsRejected(o.rejected),
                    "all refused",
                ));
            }
            self.got
                .borrow_mut()
                .push((env.sender.to_string(), o.accepted.clone(), data));
            o.reply = Some(Reply {
                code: 250,
                lines: vec!["ok".into()],
            });
            Ok(o)
        }
        fn reset(&mut self) -> Result<(), transport::Error> {
            Ok(())
        }
        fn close(self: Box<Self>) {}
    }

    impl Relay for Fake {
        fn connect(&mut self, account: &str) -> Result<Box<dyn Connection>, transport::Error> {
            self.connects += 1;
            if self.down || self.down_accounts.contains(&account) {
                return Err(transport::Error::new(
                    Stage::Connect,
                    Kind::Network,
                    "connection refused",
                ));
            }
            Ok(Box::new(FakeConn {
                got: self.got.clone(),
                account: account.to_string(),
                throttled: self.throttled.contains(&account),
                sends: self.sends.clone(),
            }))
        }
        fn account_for(&self, _sender: &str) -> Option<String> {
            Some("acct".into())
        }
        fn fallbacks(&self, account: &str) -> Vec<String> {
            match account {
                "acct" => self.fallbacks.clone(),
                _ => Vec::new(),
            }
        }
        fn pacing(&self, _account: &str) -> Pacing {
            self.pacing
        }
    }

    fn enqueue(spool: &Spool, now: SystemTime, sender: &str, rcpts: &[&str]) -> String {
        enqueue_with(spool, now, sender, rcpts, |_| {})
    }

    fn enqueue_with(
        spool: &Spool,
        now: SystemTime,
        sender: &str,
        rcpts: &[&str],
        edit: impl FnOnce(&mut Meta),
    ) -> String {
        let mut d = spool.draft(now).unwrap();
        d.data.write_all(b"body\r\n").unwrap();
        let meta = Meta {
            id: d.id.clone(),
            arrival: secs(now),
            sender: sender.into(),
            account: Some("acct".into()),
            uid: 0,
            attempts: 0,
            next_attempt: 0,
            last_error: None,
            hold: false,
            eight_bit: false,
            dsn_notify: None,
            dsn_ret_full: None,
            dsn_envid: None,
            recipients: rcpts
                .iter()
                .map(|a| Recipient::pending(a.to_string()))
                .collect(),
            header: b"Subject: t\r\n".to_vec(),
        };
        let mut meta = meta;
        edit(&mut meta);
        spool.commit(&mut d, &meta, true).unwrap();
        d.id.clone()
    }

    fn opts(now: SystemTime) -> RunOptions {
        RunOptions {
            now,
            force: false,
            only: None,
            max_age: Duration::from_secs(5 * 86_400),
            bounce_to: None,
            hostname: "host.example.com".into(),
            uid: None,
        }
    }

    #[test]
    fn delivers_all_over_one_connection_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for i in 0..5 {
            enqueue(
                &spool,
                t0 + Duration::from_secs(i),
                "s@x",
                &[&format!("r{i}@y")],
            );
        }
        let mut relay = Fake::default();
        let rep = run(&spool, &mut relay, &opts(t0 + Duration::from_secs(10))).unwrap();
        assert_eq!(rep.delivered, 5);
        assert_eq!(relay.connects, 1);
        let got: Vec<String> = relay
            .got
            .borrow()
            .iter()
            .map(|(_, r, _)| r[0].clone())
            .collect();
        assert_eq!(got, vec!["r0@y", "r1@y", "r2@y", "r3@y", "r4@y"]);
        assert_eq!(relay.got.borrow()[0].2, b"Subject: t\r\n\r\nbody\r\n");
        assert!(spool.list().unwrap().0.is_empty());
    }

    #[test]
    fn down_then_up_defers_then_delivers() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        enqueue(&spool, t0, "s@x", &["a@y"]);
        enqueue(&spool, t0, "s@x", &["b@y"]);
        let mut relay = Fake {
            down: true,
            ..Fake::default()
        };
        let rep = run(&spool, &mut relay, &opts(t0)).unwrap();
        assert_eq!(
            (rep.deferred, relay.connects),
            (2, 1),
            "one connect attempt for the group"
        );
        let items = spool.list().unwrap().0;
        assert!(
            items
                .iter()
                .all(|m| m.attempts == 1 && m.next_attempt == secs(t0) + 60)
        );
        // Not due yet: nothing happens.
        relay.down = false;
        let rep = run(&spool, &mut relay, &opts(t0 + Duration::from_secs(30))).unwrap();
        assert_eq!(rep.delivered, 0);
        let rep = run(&spool, &mut relay, &opts(t0 + Duration::from_secs(61))).unwrap();
        assert_eq!(rep.delivered, 2);
    }

    #[test]
    fn notify_decides_who_is_bounced_and_orcpt_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let rcpts = ["bad-never@y", "bad-orcpt@y", "bad-delay@y", "good@y"];
        enqueue_with(&spool, t0, "sender@x", &rcpts, |m| {
            m.dsn_notify = Some("failure".into());
            m.recipients[0].dsn.notify = Some("NEVER".into());
            m.recipients[1].dsn.orcpt = Some("rfc822;Orig@z".into());
            m.recipients[2].dsn.notify = Some("SUCCESS,DELAY".into());
        });
        let mut relay = Fake::default();
        let rep = run(&spool, &mut relay, &opts(t0)).unwrap();
        assert_eq!((rep.delivered, rep.bounced), (2, 1), "{rep:?}");
        let got = relay.got.borrow().clone();
        // RCPT carried each recipient's own parameters.
        let dsns: Vec<&(String, Vec<String>, Vec<u8>)> =
            got.iter().filter(|(s, _, _)| s.is_empty()).collect();
        assert_eq!(dsns.len(), 1);
        let text = String::from_utf8_lossy(&dsns[0].2);
        assert!(
            text.contains("Final-Recipient: rfc822; bad-orcpt@y"),
            "{text}"
        );
        assert!(
            text.contains("Original-Recipient: rfc822; Orig@z"),
            "{text}"
        );
        assert!(!text.contains("bad-never@y"), "{text}");
        assert!(!text.contains("bad-delay@y"), "{text}");
        assert!(
            rep.lines
                .iter()
                .any(|l| l.contains("no bounce") && l.contains("bad-never@y, bad-delay@y")),
            "{rep:?}"
        );
        // Every failed recipient is settled; none is bounced later.
        let items = spool.list().unwrap().0;
        assert!(
            items.iter().all(|m| m.sender.is_empty()
                || m.recipients.iter().all(|r| r.state != RcptState::Failed))
        );
    }

    #[test]
    fn original_recipient_keeps_the_orcpt_address_type() {
        assert_eq!(
            original_recipient("utf-8;J\\x{F6}rg@y").as_deref(),
            Some("utf-8; J\\x{F6}rg@y")
        );
        assert_eq!(
            original_recipient("rfc822;a@b").as_deref(),
            Some("rfc822; a@b")
        );
        // Damage in a queue file cannot reach the bounce's header.
        assert_eq!(
            original_recipient("x\r\nBcc: e;a@b\r\nX: y").as_deref(),
            Some(r"utf-8; a@b\x{D}\x{A}X:\x{20}y")
        );
        assert_eq!(original_recipient("no type"), None);
    }

    /// A null-sender item (a bounce, `-f "<>"`, SMTP `MAIL FROM:<>`) with
    /// one recipient refused for good and one deferred: the deferred one
    /// stays in the queue; the item goes to failed/ once nothing waits.
    #[test]
    fn a_null_sender_item_keeps_its_deferred_recipients() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        enqueue(&spool, t0, "", &["bad@y", "later@y"]);
        let mut relay = Fake::default();
        let rep = run(&spool, &mut relay, &opts(t0)).unwrap();
        assert_eq!(
            (rep.bounced, rep.failed, rep.deferred),
            (0, 0, 1),
            "{rep:?}"
        );
        let items = spool.list().unwrap().0;
        assert_eq!(items.len(), 1);
        assert!(items[0].pending().any(|r| r.address == "later@y"));
        // later@y expires: nothing waits, and the item goes to failed/.
        let mut o = opts(t0 + Duration::from_secs(61));
        o.max_age = Duration::from_secs(60);
        let rep = run(&spool, &mut relay, &o).unwrap();
        assert_eq!(rep.failed, 1, "{rep:?}");
        assert!(spool.list().unwrap().0.is_empty());
    }

    #[test]
    fn one_refused_recipient_bounces_the_other_is_delivered_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        enqueue(&spool, t0, "sender@x", &["good@y", "bad@y", "later@y"]);
        let mut relay = Fake::default();
        let rep = run(&spool, &mut relay, &opts(t0)).unwrap();
        // The original to good@y, and the bounce in the same run.
        assert_eq!((rep.delivered, rep.bounced), (2, 1), "{rep:?}");
        let got = relay.got.borrow().clone();
        let dsn = got.iter().find(|(s, _, _)| s.is_empty()).unwrap();
        assert_eq!(dsn.1, vec!["sender@x"]);
        let text = String::from_utf8_lossy(&dsn.2);
        assert!(text.contains("multipart/report"), "{text}");
        assert!(text.contains("delivery-status"), "{text}");
        assert!(text.contains("Final-Recipient: rfc822; bad@y"), "{text}");
        assert!(text.contains("Status: 5.1.1"), "{text}");
        assert!(
            text.contains("Subject: t"),
            "original headers included: {text}"
        );
        assert!(
            !text.contains("later@y"),
            "a 4xx recipient is not bounced: {text}"
        );
        // The original keeps only the temporarily refused recipient.
        let items = spool.list().unwrap().0;
        assert_eq!(items.len(), 1);
        let states: Vec<(&str, &RcptState)> = items[0]
            .recipients
            .iter()
            .map(|r| (r.address.as_str(), &r.state))
            .collect();
        assert_eq!(
            states,
            vec![
                ("good@y", &RcptState::Done),
                ("bad@y", &RcptState::Bounced),
                ("later@y", &RcptState::Pending)
            ]
        );
        // Next run: only "later" is retried; good is never resent, bad never
        // bounced twice.
        relay.got.borrow_mut().clear();
        let rep = run(&spool, &mut relay, &opts(t0 + Duration::from_secs(61))).unwrap();
        assert_eq!(rep.bounced, 0);
        assert!(
            relay.got.borrow().is_empty(),
            "later@y is refused again, nothing else sent"
        );
        assert_eq!(spool.list().unwrap().0[0].attempts, 2);
    }

    #[test]
    fn each_recipient_verdict_is_recorded_for_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let id = enqueue(&spool, t0, "sender@x", &["good@y", "bad@y", "later@y"]);
        let mut relay = Fake::default();
        let rep = run(&spool, &mut relay, &opts(t0)).unwrap();
        let mine: Vec<(&str, Fate, Option<&str>)> = rep
            .deliveries
            .iter()
            .filter(|d| d.id == id)
            .map(|d| {
                (
                    d.verdict.address.as_str(),
                    d.verdict.fate,
                    d.wire.reply.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            mine,
            vec![
                ("good@y", Fate::Delivered, Some("250 ok")),
                ("bad@y", Fate::Failed(Cause::UnknownUser), Some("250 ok")),
                ("later@y", Fate::Deferred(Cause::Temporary), Some("250 ok")),
            ]
        );
        // The bounce the run sent is recorded too, with its account.
        assert_eq!(rep.deliveries.len(), 4, "{:?}", rep.deliveries);
        assert!(
            rep.deliveries
                .iter()
                .all(|d| d.account.as_deref() == Some("acct"))
        );
        // A group whose connection failed: deferred, no peer.
        enqueue(&spool, t0, "s@x", &["c@y"]);
        relay.down = true;
        let mut o = opts(t0 + Duration::from_secs(61));
        o.force = true;
        let rep = run(&spool, &mut relay, &o).unwrap();
        assert!(
            rep.deliveries
                .iter()
                .all(|d| matches!(d.verdict.fate, Fate::Deferred(_)) && d.wire.peer.is_none()),
            "{:?}",
            rep.deliveries
        );
        assert_eq!(rep.deliveries.len(), 2, "later@y and c@y");
    }

    #[test]
    fn expiry_bounces_and_a_failed_bounce_moves_to_failed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        enqueue(&spool, t0, "s@x", &["a@y"]);
        enqueue(&spool, t0, "", &["bad-bounce@y"]);
        let mut relay = Fake {
            down: true,
            ..Fake::default()
        };
        let late = t0 + Duration::from_secs(6 * 86_400);
        let rep = run(&spool, &mut relay, &opts(late)).unwrap();
        assert_eq!(rep.bounced, 1, "{rep:?}");
        assert_eq!(rep.failed, 1, "an expired bounce is not bounced: {rep:?}");
        assert_eq!(spool.list_failed().len(), 1);
        let left = spool.list().unwrap().0;
        assert_eq!(left.len(), 1, "only the new bounce remains");
        assert!(left[0].sender.is_empty());
    }

    #[test]
    fn held_items_are_skipped_and_force_ignores_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let id = enqueue(&spool, t0, "s@x", &["a@y"]);
        let mut c = spool.claim(&id).unwrap();
        c.meta.hold = true;
        c.meta.next_attempt = secs(t0) + 3600;
        spool.update(&c).unwrap();
        drop(c);
        let mut relay = Fake::default();
        let mut o = opts(t0);
        o.force = true;
        assert_eq!(run(&spool, &mut relay, &o).unwrap().delivered, 0, "held");
        let mut c = spool.claim(&id).unwrap();
        c.meta.hold = false;
        spool.update(&c).unwrap();
        drop(c);
        assert_eq!(
            run(&spool, &mut relay, &opts(t0)).unwrap().delivered,
            0,
            "not due"
        );
        assert_eq!(
            run(&spool, &mut relay, &o).unwrap().delivered,
            1,
            "flush ignores backoff"
        );
    }

    #[test]
    fn a_recipient_failing_later_gets_its_own_bounce() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        enqueue(&spool, t0, "sender@x", &["bad1@y", "later@y"]);
        let mut relay = Fake::default();
        let rep = run(&spool, &mut relay, &opts(t0)).unwrap();
        assert_eq!(rep.bounced, 1);
        // later@y keeps failing with 4xx until it expires: then it too is
        // bounced, in a second DSN.
        relay.got.borrow_mut().clear();
        let rep = run(
            &spool,
            &mut relay,
            &opts(t0 + Duration::from_secs(6 * 86_400)),
        )
        .unwrap();
        assert_eq!(rep.bounced, 1, "{rep:?}");
        let got = relay.got.borrow();
        let dsn = got.iter().find(|(s, _, _)| s.is_empty()).unwrap();
        let text = String::from_utf8_lossy(&dsn.2);
        assert!(text.contains("Final-Recipient: rfc822; later@y"), "{text}");
        assert!(text.contains("Status: 4.4.7"), "{text}");
        assert!(
            !text.contains("bad1@y\r\nAction"),
            "bad1 was bounced already: {text}"
        );
        assert!(spool.list().unwrap().0.is_empty());
    }

    fn with_backup() -> Fake {
        Fake {
            fallbacks: vec!["backup".into()],
            ..Fake::default()
        }
    }

    #[test]
    fn a_primary_that_is_down_fails_over_and_the_item_records_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        enqueue(&spool, t0, "s@x", &["good@y", "later@y"]);
        enqueue(&spool, t0, "s@x", &["b@y"]);
        let mut relay = Fake {
            down_accounts: vec!["acct"],
            ..with_backup()
        };
        let rep = run(&spool, &mut relay, &opts(t0)).unwrap();
        assert_eq!(rep.delivered, 2, "{rep:?}");
        assert_eq!(relay.connects, 2, "one failed connect, one to the fallback");
        assert_eq!(*relay.sends.borrow(), vec!["backup", "backup"]);
        assert!(
            rep.lines
                .iter()
                .any(|l| l.contains("via backup (fallback for acct)")),
            "{:?}",
            rep.lines
        );
        let left = spool.list().unwrap().0;
        assert_eq!(left.len(), 1, "later@y waits");
        let good = &left[0].recipients[0];
        assert_eq!(
            (good.state.clone(), good.via.as_deref()),
            (RcptState::Done, Some("backup"))
        );
        assert_eq!(
            left[0].account.as_deref(),
            Some("acct"),
            "still the item's account"
        );
    }

    #[test]
    fn a_permanent_refusal_does_not_fail_over() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let id = enqueue(&spool, t0, "s@x", &["bad@y"]);
        let mut relay = with_backup();
        let mut claimed = spool.claim(&id).unwrap();
        let v = attempt(&mut relay, "acct", &mut claimed.meta, &mut claimed.data);
        assert_eq!(v[0].fate, Fate::Failed(Cause::UnknownUser));
        assert_eq!(*relay.sends.borrow(), vec!["acct"], "not tried on backup");
    }

    #[test]
    fn a_temporary_refusal_fails_over_in_the_foreground_too() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let id = enqueue(&spool, t0, "s@x", &["a@y"]);
        let mut relay = Fake {
            throttled: vec!["acct"],
            ..with_backup()
        };
        let mut claimed = spool.claim(&id).unwrap();
        let v = attempt(&mut relay, "acct", &mut claimed.meta, &mut claimed.data);
        assert_eq!(v[0].fate, Fate::Delivered);
        assert_eq!(*relay.sends.borrow(), vec!["acct", "backup"]);
        assert_eq!(claimed.meta.recipients[0].via.as_deref(), Some("backup"));
    }

    #[test]
    fn a_throttling_account_is_left_alone_for_the_rest_of_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for i in 0..4 {
            enqueue(&spool, t0, "s@x", &[&format!("r{i}@y")]);
        }
        let mut relay = Fake {
            throttled: vec!["acct"],
            ..Fake::default()
        };
        let rep = run(&spool, &mut relay, &opts(t0)).unwrap();
        assert_eq!(rep.deferred, 4, "{rep:?}");
        assert_eq!(relay.sends.borrow().len(), 1, "one try, not four");
        assert!(
            spool
                .list()
                .unwrap()
                .0
                .iter()
                .all(|m| m.last_error.as_deref().is_some_and(|e| e.contains("432"))),
            "each item says why"
        );
    }

    #[test]
    fn at_the_connection_limit_the_foreground_leaves_the_message_and_the_runner_leaves_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let id = enqueue(&spool, t0, "s@x", &["a@y"]);
        let mut relay = Fake {
            pacing: Pacing {
                connections: Some(1),
                ..Pacing::default()
            },
            ..Fake::default()
        };
        let pace = spool.pace();
        let held = pace.connection("acct", 1).unwrap().unwrap();
        let mut claimed = spool.claim(&id).unwrap();
        let before = claimed.meta.clone();
        let d = attempt_paced(
            &mut relay,
            Some(&pace),
            "acct",
            &mut claimed.meta,
            &mut claimed.data,
            &mut Vec::new(),
        );
        assert!(matches!(d, Delivery::Paced), "{d:?}");
        assert_eq!(claimed.meta, before, "untouched");
        assert_eq!(relay.connects, 0, "no connection opened");
        drop(claimed);
        let rep = run(&spool, &mut relay, &opts(t0)).unwrap();
        // Left in the first pass, and again in the last look.
        assert_eq!((rep.delivered, rep.skipped_busy, rep.deferred), (0, 2, 0));
        assert_eq!(spool.read(&id).unwrap().attempts, 0, "not counted as a try");
        drop(held);
        let rep = run(&spool, &mut relay, &opts(t0)).unwrap();
        assert_eq!(rep.delivered, 1);
    }

    #[test]
    fn the_runner_waits_for_the_window_on_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), false);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for i in 0..3 {
            enqueue(&spool, t0, "s@x", &[&format!("r{i}@y")]);
        }
        let mut relay = Fake {
            pacing: Pacing {
                per_window: Some(1),
                window: Duration::from_millis(50),
                connections: Some(1),
            },
            ..Fake::default()
        };
        let rep = run(&spool, &mut relay, &opts(t0)).unwrap();
        assert_eq!((rep.delivered, relay.connects), (3, 1), "{rep:?}");
    }
}
