use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cli::{self, SendArgs};
use crate::config::{self, LocalTransport};
use crate::deliver::{self, Cause, Fate, Verdict};
use crate::exit::{self, Exit};
use crate::local::{self, Owner};
use crate::log::{self, Severity};
use crate::message::header::Header;
use crate::message::intake::{self, Intake};
use crate::message::prepare::{self, BodyPlan};
use crate::queue;

use super::env::*;
use super::failure::*;
use super::lookup::*;
use super::relay::*;
use super::stamp::*;

/// Where a body lives: a queue draft (so queueing it later is a rename,
/// not a copy) or, when there is no usable spool, an anonymous temp file.
#[derive(Debug)]
pub(super) enum Body {
    Draft(queue::Draft),
    Temp(File),
}

impl Body {
    pub(super) fn file(&mut self) -> &mut File {
        match self {
            Body::Draft(d) => &mut d.data,
            Body::Temp(f) => f,
        }
    }

    /// A new, empty body in the same place.
    pub(super) fn sibling(
        &self,
        spool: Option<&queue::Spool>,
        now: SystemTime,
    ) -> io::Result<Body> {
        match (self, spool) {
            (Body::Draft(_), Some(s)) => s
                .draft(now)
                .map(Body::Draft)
                .map_err(|e| io::Error::other(e.to_string())),
            _ => anonymous_file().map(Body::Temp),
        }
    }
}

/// A message after intake: the header block in memory, the body in the
/// spool.
pub(super) struct Spooled {
    pub(super) intake: Intake,
    pub(super) body: Body,
    /// Why the body is not in the spool, when it is not.
    pub(super) spool_error: Option<String>,
    /// Save the message as a dead letter when it is refused: the caller
    /// piped it in and keeps no copy. An SMTP client keeps its own.
    pub(super) keep_refused: bool,
}

impl Spooled {
    /// The message exactly as read (normalised line endings), for
    /// dead.letter.
    pub(super) fn original(&mut self) -> io::Result<impl Read + '_> {
        let body = self.body.file();
        body.seek(SeekFrom::Start(0))?;
        let sep: &[u8] = if self.intake.header.is_empty() {
            b""
        } else {
            b"\r\n"
        };
        Ok(io::Cursor::new([self.intake.header.as_slice(), sep].concat()).chain(body))
    }
}

/// Saves the message to the configured dead-letter directory, or
/// ~/dead.letter, or (if that is not writable) a fresh file in /var/tmp.
/// Returns where it went.
pub(super) fn save_dead_letter(
    env: &Env,
    spooled: &mut Spooled,
    sender: &str,
) -> Result<PathBuf, String> {
    let mut tries: Vec<String> = Vec::new();
    if let Some(dir) = &env.config.dead_letter {
        let mut msg = spooled.original().map_err(|e| e.to_string())?;
        match local::save_to_dir(dir, &mut msg, env.now) {
            Ok(p) => return Ok(p),
            Err(e) => tries.push(e.to_string()),
        }
    }
    // ~/dead.letter and /var/tmp are the caller's ground: written with the
    // caller's own ids, so a symlink there cannot reach the spool.
    if let Some(home) = &env.home {
        let path = home.join("dead.letter");
        let mut msg = spooled.original().map_err(|e| e.to_string())?;
        match as_caller(|| local::deliver_mbox(&path, sender, &mut msg, env.now, None)) {
            Ok(Ok(())) => return Ok(path),
            Ok(Err(e)) => tries.push(e.to_string()),
            Err(e) => tries.push(e.to_string()),
        }
    }
    let mut msg = spooled.original().map_err(|e| e.to_string())?;
    match as_caller(|| local::save_to_dir(Path::new("/var/tmp"), &mut msg, env.now)) {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => {
            tries.push(e.to_string());
            Err(tries.join("; "))
        }
        Err(e) => {
            tries.push(e.to_string());
            Err(tries.join("; "))
        }
    }
}

/// Refuses a message that was read: saves it, then returns the failure
/// with where it was saved.
pub(super) fn refuse(
    env: &Env,
    spooled: &mut Spooled,
    sender: &str,
    exit: Exit,
    message: String,
) -> Failure {
    refuse_logged(env, spooled, sender, exit, message, "")
}

/// `refuse`, with the message's log summary (msgid, from, …) when known,
/// so a refused message still gets exactly one log line.
pub(super) fn refuse_logged(
    env: &Env,
    spooled: &mut Spooled,
    sender: &str,
    exit: Exit,
    message: String,
    summary: &str,
) -> Failure {
    if !spooled.keep_refused {
        log_line(
            env,
            Severity::Err,
            format!("{summary} status=refused ({})", log::field(&message)).trim_start(),
        );
        return Failure::new(exit, message);
    }
    let saved = match save_dead_letter(env, spooled, sender) {
        Ok(p) => format!("the message was saved in {}", p.display()),
        Err(e) => format!("THE MESSAGE COULD NOT BE SAVED: {e}"),
    };
    let prefix = if summary.is_empty() {
        String::new()
    } else {
        format!("{summary} ")
    };
    log_line(
        env,
        Severity::Err,
        &format!("{prefix}status=refused ({}) {saved}", log::field(&message)),
    );
    Failure::new(exit, format!("{message}\n{saved}"))
}

/// An unlinked temporary file for a body that is not in the spool. Not in
/// $TMPDIR: a setgid process must not write where the caller says. In
/// /var/tmp rather than /tmp where it can, so a large message does not
/// fill a tmpfs.
fn anonymous_file() -> io::Result<File> {
    tempfile::tempfile_in("/var/tmp").or_else(|_| tempfile::tempfile_in("/tmp"))
}

/// Reads stdin into a spool file. The header block stays in memory (at most
/// 1 MiB); the body never does.
pub(super) fn intake(
    source: &mut Source<'_>,
    ignore_dots: bool,
    spool: Option<&queue::Spool>,
    now: SystemTime,
) -> Result<Spooled, Failure> {
    let mut spool_error = None;
    let cannot = |e: io::Error| {
        Failure::new(
            Exit::TempFail,
            format!("cannot create a spool file in /var/tmp or /tmp: {e}"),
        )
    };
    let mut body = match spool.map(|s| s.draft(now)) {
        Some(Ok(d)) => Body::Draft(d),
        Some(Err(e)) => {
            spool_error = Some(e.to_string());
            Body::Temp(anonymous_file().map_err(cannot)?)
        }
        // No usable spool (or `mode = "never"`): an anonymous file. The
        // message can then not be queued, only sent or refused.
        None => Body::Temp(anonymous_file().map_err(cannot)?),
    };
    let intake =
        intake::read_message(&mut *source.input, ignore_dots, body.file()).map_err(|e| {
            Failure::new(
                Exit::TempFail,
                format!("{e}; nothing was delivered, try again"),
            )
        })?;
    Ok(Spooled {
        intake,
        body,
        spool_error,
        keep_refused: source.keep_refused,
    })
}

/// A message that was read but cannot be taken: the exit status and why.
/// The caller saves the message as a dead letter before it says so.
pub(super) struct Refusal {
    exit: Exit,
    message: String,
}

impl Refusal {
    fn new(exit: Exit, message: impl Into<String>) -> Refusal {
        Refusal {
            exit,
            message: message.into(),
        }
    }
}

impl From<Failure> for Refusal {
    fn from(f: Failure) -> Refusal {
        Refusal::new(f.exit, f.message)
    }
}

/// One message on its way through the send pipeline, from the moment it is
/// prepared: what intake read, what became of its header, and which body
/// goes out.
pub(super) struct Submission {
    /// The message as read, which is what a dead letter keeps.
    spooled: Spooled,
    /// The body as sent, when it had to be re-encoded.
    reencoded: Option<Body>,
    prepared: prepare::Prepared,
    /// Parallel to `prepared.recipients`: each one's DSN parameters.
    recipient_dsn: Vec<queue::RcptDsn>,
    /// The finished header block: rewritten, scrubbed and signed.
    header: Vec<u8>,
    eight_bit: bool,
    /// `msgid=… from=<…> nrcpt=… size=…` for the log line.
    summary: String,
}

impl Submission {
    /// The body as it goes out: the re-encoded one if there is one.
    fn body(&mut self) -> &mut Body {
        self.reencoded.as_mut().unwrap_or(&mut self.spooled.body)
    }

    /// The queue id of the body that goes out, when it is in the spool.
    fn draft_id(&self) -> Option<&str> {
        match self.reencoded.as_ref().unwrap_or(&self.spooled.body) {
            Body::Draft(d) => Some(&d.id),
            Body::Temp(_) => None,
        }
    }
}

/// What became of the recipients: the exit status and the log line are
/// derived from this, and nothing else.
#[derive(Default)]
pub(super) struct Results {
    /// `a@b (where)`.
    delivered: Vec<String>,
    failed: Vec<FailedRcpt>,
    queued: Option<Queued>,
    /// The smarthost took something: older queued mail may go now too.
    reached_smarthost: bool,
    /// Each remote recipient's verdict, for its Postfix-style log line.
    deliveries: Vec<deliver::Record>,
    /// A bounce for failed recipients is in the queue.
    bounce_queued: bool,
}

/// A recipient that failed, and why.
pub(super) struct FailedRcpt {
    address: String,
    exit: Exit,
    /// What the caller reads.
    why: String,
    /// The server's reply, when a server refused it (for a bounce).
    reply: Option<String>,
}

impl FailedRcpt {
    fn new(address: &str, exit: Exit, why: String) -> FailedRcpt {
        FailedRcpt {
            address: address.to_string(),
            exit,
            why,
            reply: None,
        }
    }
}

/// The part of a message left in the queue.
pub(super) struct Queued {
    id: String,
    recipients: Vec<String>,
    /// Why it waits; `None` when it was queued by choice (`mode = "always"`).
    reason: Option<String>,
    cause: Option<Cause>,
}

/// Where a message comes from, and who keeps it if it is refused.
pub(super) struct Source<'a> {
    /// The message: LF or CRLF lines; a lone dot ends it unless
    /// `ignore_dots` (sendmail's -i; an SMTP server hands over the
    /// un-stuffed DATA and sets it).
    pub(super) input: &'a mut dyn Read,
    /// The caller keeps no copy (a pipe): a refused message is saved as a
    /// dead letter. An SMTP client keeps its own and gets a reply instead.
    pub(super) keep_refused: bool,
    /// What cannot go now may wait in the queue. `mailhop check
    /// --send-test` wants the answer now instead.
    pub(super) may_queue: bool,
    /// Per-recipient DSN parameters (an SMTP client's NOTIFY and ORCPT),
    /// by position in `SendArgs::recipients`; empty for a pipe.
    pub(super) recipient_dsn: &'a [queue::RcptDsn],
    /// Starts a queue runner for what this message left queued:
    /// `spawn_runner` for a one-message process; the SMTP server's own,
    /// which keeps one runner at a time across its messages.
    pub(super) start_runner: fn(&SendArgs),
}

/// A message every recipient of which was delivered or durably queued.
pub(super) struct Accepted {
    /// Its queue id (also in its log lines), when it went through the
    /// spool.
    pub(super) queue_id: Option<String>,
}

/// `sendmail` in its default mode: the message on standard input.
pub(super) fn send(env: &Env, args: &SendArgs) -> Result<Exit, Failure> {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut source = Source {
        input: &mut input,
        keep_refused: true,
        may_queue: true,
        recipient_dsn: &[],
        start_runner: spawn_runner,
    };
    submit(env, args, &mut source).map(|_| Exit::Ok)
}

/// The send pipeline, for a message from any source: intake, prepare,
/// scrub, sign, route, commit, attempt, report. Each stage is a function
/// below. `Ok` means every recipient was delivered or is durably queued;
/// an error says why not, with its exit status.
pub(super) fn submit(
    env: &Env,
    args: &SendArgs,
    source: &mut Source<'_>,
) -> Result<Accepted, Failure> {
    let (aliases, alias_warnings) = load_aliases(env)?;
    if env.verbose > 0 {
        for w in &alias_warnings {
            errln!("mailhop: {w}");
        }
    }
    let spool = match env.config.queue.mode {
        config::QueueMode::Never => None,
        _ if !source.may_queue => None,
        _ => spool_for(env),
    };
    let mut spooled = intake(source, args.ignore_dots, spool.as_ref(), env.now)?;
    let raw_sender = args.sender.clone().unwrap_or_else(|| env.user.clone());
    if spooled.intake.empty {
        return Err(Failure::new(
            Exit::NoInput,
            "no message on standard input; nothing was sent (pipe the message into sendmail)",
        ));
    }
    let lookup = Lookup {
        env,
        aliases: &aliases,
    };
    let prepared =
        match check_intake(&spooled).and_then(|()| prepare_message(env, args, &lookup, &spooled)) {
            Ok(p) => p,
            Err(r) => return Err(refuse(env, &mut spooled, &raw_sender, r.exit, r.message)),
        };
    let recipient_dsn = prepared
        .origins
        .iter()
        .map(|o| {
            o.and_then(|i| source.recipient_dsn.get(i))
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let mut sub = Submission {
        spooled,
        reencoded: None,
        recipient_dsn,
        prepared,
        header: Vec::new(),
        eight_bit: false,
        summary: String::new(),
    };
    if let Err(r) = finish_message(env, spool.as_ref(), &mut sub) {
        let sender = sub.prepared.sender.clone();
        return Err(refuse(env, &mut sub.spooled, &sender, r.exit, r.message));
    }
    let mut results = Results::default();
    let (local, remote) = route(env, &lookup, &sub.prepared.recipients);
    deliver_locals(env, &mut sub, &local, &mut results);
    if !remote.is_empty() {
        deliver_remote(env, args, spool.as_ref(), &mut sub, remote, &mut results);
    }
    let after = After {
        spool: spool.as_ref(),
        start_runner: source.start_runner,
    };
    report(env, args, &after, sub, results)
}

/// Intake's verdict on the raw bytes: what no rewriting can fix.
fn check_intake(spooled: &Spooled) -> Result<(), Refusal> {
    if spooled.intake.nul {
        return Err(Refusal::new(
            Exit::DataErr,
            "the message contains NUL bytes, which mail cannot carry; encode binary data as a MIME attachment",
        ));
    }
    if spooled.intake.header_too_large {
        return Err(Refusal::new(
            Exit::DataErr,
            format!(
                "the header block is larger than {} bytes; that is not a mail message",
                intake::MAX_HEADER
            ),
        ));
    }
    Ok(())
}

/// Parses the header and applies the envelope and header rewriting
/// (`message::prepare`): sender, From, aliases, qualification, Bcc.
fn prepare_message(
    env: &Env,
    args: &SendArgs,
    lookup: &Lookup<'_>,
    spooled: &Spooled,
) -> Result<prepare::Prepared, Refusal> {
    let header = Header::parse(&spooled.intake.header)
        .map_err(|e| Refusal::new(Exit::DataErr, format!("bad header: {e}")))?;
    let date = rfc5322_date(env.now);
    let msgid = message_id(env.now, &env.hostname);
    let ctx = prepare_context(env, &date, &msgid);
    let req = prepare::Request {
        sender: args.sender.as_deref(),
        full_name: args.full_name.as_deref(),
        extract_recipients: args.extract_recipients,
        recipients: &args.recipients,
    };
    let limits = prepare::Limits {
        max_recipients: env.config.local.max_recipients,
    };
    let prepared =
        prepare::prepare_with_limits(header, &req, &ctx, lookup, &limits).map_err(|e| {
            let code = match e {
                prepare::PrepareError::NoRecipients { extract: false } => Exit::Usage,
                _ => Exit::DataErr,
            };
            Refusal::new(code, e.to_string())
        })?;
    if env.verbose > 0 {
        for n in &prepared.notes {
            errln!("mailhop: {n}");
        }
    }
    Ok(prepared)
}

/// Scrub, body fix-ups and signing: the message becomes what goes out.
fn finish_message(
    env: &Env,
    spool: Option<&queue::Spool>,
    sub: &mut Submission,
) -> Result<(), Refusal> {
    // Scrubbing comes after rewriting and before signing.
    scrub_header(env, &mut sub.prepared);
    sub.reencoded = encode_body(env, spool, &mut sub.spooled, &mut sub.prepared)?;
    sign(env, sub)
}

fn scrub_header(env: &Env, prepared: &mut prepare::Prepared) {
    let scrubbed = crate::scrub::scrub(&mut prepared.header, &env.config.headers);
    if env.verbose == 0 {
        return;
    }
    for w in &scrubbed.warnings {
        errln!("mailhop: {w}");
    }
    if scrubbed.removed + scrubbed.replaced > 0 {
        errln!(
            "mailhop: scrubbed the header: {} field(s) removed, {} rewritten",
            scrubbed.removed,
            scrubbed.replaced
        );
    }
}

/// Body fix-ups: labels an 8-bit body, or re-encodes one whose lines are
/// too long as quoted-printable (into a new body beside the original).
fn encode_body(
    env: &Env,
    spool: Option<&queue::Spool>,
    spooled: &mut Spooled,
    prepared: &mut prepare::Prepared,
) -> Result<Option<Body>, Refusal> {
    let stats = spooled.intake.body.clone();
    match prepare::plan_body(&prepared.header, stats.longest_line) {
        BodyPlan::AsIs => {
            if stats.eight_bit
                && prepare::label_eight_bit(&mut prepared.header, stats.valid_utf8)
                && env.verbose > 0
            {
                errln!("mailhop: labelled the 8-bit body as text/plain; charset=utf-8");
            }
            Ok(None)
        }
        BodyPlan::QuotedPrintable => {
            let body = reencode_qp(&mut spooled.body, spool, env.now)?;
            prepare::apply_quoted_printable(&mut prepared.header, stats.valid_utf8);
            if env.verbose > 0 {
                errln!(
                    "mailhop: re-encoded the body as quoted-printable (a line was {} octets, over the 998 limit)",
                    stats.longest_line
                );
            }
            Ok(Some(body))
        }
        BodyPlan::Refuse(why) => Err(Refusal::new(Exit::DataErr, why)),
    }
}

/// Writes the header block and signs it; signing is the very last change
/// to the message. Sets the size, 8-bit flag and log summary.
fn sign(env: &Env, sub: &mut Submission) -> Result<(), Refusal> {
    let mut header = Vec::new();
    sub.prepared.header.write_to(&mut header);
    let from = sub.prepared.from_address.clone();
    let reencoded = sub.reencoded.is_some();
    let body = sub.body().file();
    if !env.config.dkim.is_empty() {
        header = dkim_sign(env, from.as_deref(), &header, body)?;
    }
    let body_len = body.metadata().map(|m| m.len()).unwrap_or(0);
    let size = header.len() as u64 + 2 + body_len;
    sub.eight_bit = !header.is_ascii() || (sub.spooled.intake.body.eight_bit && !reencoded);
    let msgid = sub
        .prepared
        .header
        .get("Message-ID")
        .map(|f| String::from_utf8_lossy(&f.unfolded_value()).into_owned())
        .unwrap_or_default();
    sub.summary = format!(
        "msgid={} from=<{}> nrcpt={} size={size}",
        log::field(&msgid),
        log::field(&sub.prepared.sender),
        sub.prepared.recipients.len(),
    );
    sub.header = header;
    Ok(())
}

/// Local recipients go to the embedded delivery, the rest to the smarthost
/// (or the queue).
fn route(env: &Env, lookup: &Lookup<'_>, recipients: &[String]) -> (Vec<String>, Vec<String>) {
    let capture = env.config.local.capture;
    recipients
        .iter()
        .cloned()
        .partition(|r| capture || lookup.is_local(r.rsplit_once('@').map(|(_, d)| d)))
}

fn deliver_locals(env: &Env, sub: &mut Submission, local: &[String], results: &mut Results) {
    if local.is_empty() {
        return;
    }
    let head = [sub.header.as_slice(), b"\r\n"].concat();
    let sender = sub.prepared.sender.clone();
    let body = sub.body().file();
    // One copy per mailbox, however many names lead there.
    let (groups, unresolved) = local::group_by_mailbox(local.iter().map(String::as_str), |r| {
        resolve_local(env, r).map(|m| m.path)
    });
    for (r, (code, msg)) in unresolved {
        results.failed.push(FailedRcpt::new(r, code, msg));
    }
    for group in groups {
        let written = group
            .recipients
            .first()
            .ok_or((Exit::Software, String::new()))
            .and_then(|first| resolve_local(env, first))
            .and_then(|mailbox| write_local(env, &mailbox, &sender, &head, body));
        for r in group.recipients {
            match &written {
                Ok(where_) => results.delivered.push(format!("{r} ({where_})")),
                Err((code, msg)) => results.failed.push(FailedRcpt::new(r, *code, msg.clone())),
            }
        }
    }
}

/// The queue item for the remote recipients, all pending.
fn new_meta(env: &Env, args: &SendArgs, sub: &Submission, remote: Vec<String>) -> queue::Meta {
    queue::Meta {
        id: sub.draft_id().unwrap_or_default().to_string(),
        arrival: unix_secs(env.now),
        sender: sub.prepared.sender.clone(),
        account: sub.prepared.account.clone(),
        uid: env.uid,
        attempts: 0,
        next_attempt: unix_secs(env.now),
        last_error: None,
        hold: false,
        eight_bit: sub.eight_bit,
        dsn_notify: args.dsn_notify.clone(),
        dsn_ret_full: args.dsn_ret.map(|r| r == cli::DsnRet::Full),
        dsn_envid: args.envid.clone(),
        recipients: remote
            .into_iter()
            .map(|address| recipient_for(sub, address))
            .collect(),
        header: sub.header.clone(),
    }
}

/// A pending queue recipient, with the DSN parameters its client gave.
fn recipient_for(sub: &Submission, address: String) -> queue::Recipient {
    let dsn = sub
        .prepared
        .recipients
        .iter()
        .position(|r| *r == address)
        .and_then(|i| sub.recipient_dsn.get(i))
        .cloned()
        .unwrap_or_default();
    queue::Recipient {
        dsn,
        ..queue::Recipient::pending(address)
    }
}

/// Commit, then one attempt through `deliver::attempt`, the runner's own
/// decision: whatever a recipient's fate, it is decided there.
fn deliver_remote(
    env: &Env,
    args: &SendArgs,
    spool: Option<&queue::Spool>,
    sub: &mut Submission,
    remote: Vec<String>,
    results: &mut Results,
) {
    let account = sub
        .prepared
        .account
        .as_deref()
        .and_then(|n| env.config.account_named(n));
    let mode = env.config.queue.mode;
    let mut meta = new_meta(env, args, sub, remote);
    if account.is_none() {
        deliver::decide(&mut meta, deliver::Event::NoSmarthost);
    }
    // Commit to the queue before the first network byte: whatever happens
    // from here on (a crash, kill -9, a hung server), the message is on
    // disk and a runner will deliver it. Durable at once when the caller
    // will be told "queued" without an attempt; a commit that only covers
    // the attempt is made durable if the attempt leaves something pending.
    let durable = account.is_none() || mode == config::QueueMode::Always;
    let committed = commit(spool, sub, &meta, durable);
    let verdicts = match account {
        Some(a) if !(committed.is_ok() && mode == config::QueueMode::Always) => {
            let mut relay = SmtpRelay { env };
            // The limits are counted only when the item is queued: a send
            // at a limit leaves it there ("queued by choice", exit 0).
            let pace = committed.is_ok().then(|| spool.map(queue::Spool::pace));
            let data = sub.body().file();
            match deliver::attempt_paced(
                &mut relay,
                pace.flatten().as_ref(),
                &a.name,
                &mut meta,
                data,
                &mut results.deliveries,
            ) {
                // Left for the runner, untouched: `settle` makes it durable.
                deliver::Delivery::Paced => Vec::new(),
                deliver::Delivery::Decided(v) => v,
            }
        }
        _ => Vec::new(),
    };
    for v in &verdicts {
        match v.fate {
            Fate::Delivered => {
                results.reached_smarthost = true;
                results.delivered.push(format!(
                    "{} (via {})",
                    v.address,
                    delivered_via(env, &meta, v)
                ));
            }
            Fate::Failed(cause) => {
                results.reached_smarthost = true;
                let why = caller_text(&meta, v, account);
                results.failed.push(FailedRcpt {
                    reply: v.reason.clone(),
                    ..FailedRcpt::new(&v.address, exit_for_fate(Fate::Failed(cause)), why)
                });
            }
            Fate::Deferred(_) => {}
        }
    }
    // Why what is left waits: a person's problem outranks a busy server.
    let waiting = if account.is_none() {
        Some(Cause::NoSmarthost)
    } else {
        let deferred = verdicts.iter().filter_map(|v| match v.fate {
            Fate::Deferred(c) => Some(c),
            _ => None,
        });
        deferred.max_by_key(|c| *c == Cause::NeedsAdmin)
    };
    match committed {
        Ok(()) => settle(env, spool, sub, meta, Settle { waiting, durable }, results),
        Err(e) => fail_pending(&meta, account, &e, results),
    }
}

/// The smarthost that took a recipient, and the account when it was a
/// fallback: `smtp.example.com`, `mail.backup.org (account backup, fallback
/// for main)`.
fn delivered_via(env: &Env, meta: &queue::Meta, v: &Verdict) -> String {
    let via = meta
        .recipients
        .iter()
        .find(|r| r.address == v.address)
        .and_then(|r| r.via.as_deref())
        .or(meta.account.as_deref())
        .unwrap_or_default();
    let host = env
        .config
        .account_named(via)
        .map_or("", |a| a.smtp.host.as_str());
    match meta.account.as_deref() {
        Some(own) if own != via => format!("{host} (account {via}, fallback for {own})"),
        _ => host.to_string(),
    }
}

/// Puts the remote recipients' item into the queue (not yet durable unless
/// asked). The error says why it could not be queued.
fn commit(
    spool: Option<&queue::Spool>,
    sub: &mut Submission,
    meta: &queue::Meta,
    durable: bool,
) -> Result<(), NotQueued> {
    if let Some(e) = &sub.spooled.spool_error {
        return Err(NotQueued::Failed(e.clone()));
    }
    let Some(spool) = spool else {
        return Err(NotQueued::NoQueue);
    };
    match sub.body() {
        Body::Draft(draft) => spool
            .commit(draft, meta, durable)
            .map_err(|e| NotQueued::Failed(e.to_string())),
        Body::Temp(_) => Err(NotQueued::Failed("the message is not in the spool".into())),
    }
}

/// Why a message is not in the queue.
pub(super) enum NotQueued {
    /// `mode = "never"`, or no spool can be used: by design.
    NoQueue,
    /// Queueing was tried and failed; the text says why.
    Failed(String),
}

/// After the attempt, for a committed item: what is still pending stays
/// (durably), the rest leaves the queue. Failed recipients were reported to
/// the caller, so they are not bounced later.
fn settle(
    env: &Env,
    spool: Option<&queue::Spool>,
    sub: &mut Submission,
    mut meta: queue::Meta,
    how: Settle,
    results: &mut Results,
) {
    let summary = sub.summary.clone();
    let (Some(spool), Body::Draft(draft)) = (spool, sub.body()) else {
        return;
    };
    // Recipients a fallback took stay listed, so `mailq` can show it.
    let own = meta.account.clone();
    meta.recipients.retain(|r| {
        r.state == queue::RcptState::Pending
            || (r.state == queue::RcptState::Done && r.via.is_some() && r.via != own)
    });
    if meta.pending().next().is_none() {
        // Delivered (or refused for good): the item is done. Between the
        // server's 250 and this removal is the one window in which a crash
        // causes a duplicate; a removal that fails makes one certain, so
        // say so.
        if let Err(e) = spool.discard(draft) {
            let line = format!(
                "{} status=sent but the queue item {} could not be removed: {e}; \
                 it will be sent again",
                summary, meta.id
            );
            log_line(env, Severity::Err, &line);
            errln!("mailhop: {line}");
        }
        return;
    }
    // Deferred by an attempt (not queued by choice or for want of a
    // smarthost): count it, and wait for the backoff.
    let attempted = matches!(how.waiting, Some(Cause::Temporary | Cause::NeedsAdmin));
    if attempted {
        deliver::reschedule(&mut meta, unix_secs(env.now));
    }
    // What waits must be on disk, as it now is, before the caller hears 0:
    // the commit before the attempt was not durable and lists every
    // recipient. If that fails, the stale item goes, and what was pending
    // fails for the caller, who keeps the message.
    if (attempted || !how.durable)
        && let Err(e) = spool.make_durable(draft, &meta)
    {
        let _ = spool.discard(draft);
        let account = meta
            .account
            .as_deref()
            .and_then(|n| env.config.account_named(n));
        fail_pending(&meta, account, &NotQueued::Failed(e.to_string()), results);
        return;
    }
    results.queued = Some(Queued {
        id: meta.id.clone(),
        recipients: meta.pending().map(|r| r.address.clone()).collect(),
        reason: meta
            .last_error
            .clone()
            .or_else(|| meta.recipients.iter().find_map(|r| r.last_error.clone())),
        cause: how.waiting,
    });
}

/// How a committed item stands after the attempt: why what is left waits,
/// and whether the commit was already durable.
struct Settle {
    waiting: Option<Cause>,
    durable: bool,
}

/// The message could not be queued: whatever `decide` left pending has
/// nowhere to wait, so it fails for the caller, who keeps the message.
fn fail_pending(
    meta: &queue::Meta,
    account: Option<&config::Account>,
    not_queued: &NotQueued,
    results: &mut Results,
) {
    let unqueued = match not_queued {
        NotQueued::NoQueue => String::new(),
        NotQueued::Failed(e) => format!("; and the message could not be queued: {e}"),
    };
    for r in meta.pending() {
        // The error's detail, with its advice, before the bare reply.
        let why = meta
            .last_error
            .clone()
            .or_else(|| r.last_error.clone())
            .unwrap_or_default();
        let (exit, why) = match account {
            None => (Exit::Unavailable, format!("{why}{unqueued}")),
            Some(a) => (
                Exit::TempFail,
                format!("{why} (account {}){unqueued}", a.name),
            ),
        };
        results.failed.push(FailedRcpt::new(&r.address, exit, why));
    }
}

/// What the caller is told about a recipient that failed.
fn caller_text(meta: &queue::Meta, v: &Verdict, account: Option<&config::Account>) -> String {
    let name = account.map_or("", |a| a.name.as_str());
    let host = account.map_or("", |a| a.smtp.host.as_str());
    let reason = v.reason.clone().unwrap_or_default();
    let mut text = match v.fate {
        // A refused RCPT: the reply is the reason.
        Fate::Failed(Cause::UnknownUser) => format!("{host} refused this recipient: {reason}"),
        // The whole transaction failed: the error's detail says more.
        _ => match &meta.last_error {
            Some(detail) => format!("{detail} (account {name})"),
            None => format!("{host} refused this recipient: {reason} (account {name})"),
        },
    };
    if v.fate == Fate::Failed(Cause::SenderRefused) && !text.contains("from_policy") {
        text.push_str(
            "; the smarthost does not let this login send as this sender: set [rewrite] \
             from_policy = \"account\" and the account's `from` to the mailbox it may send as",
        );
    }
    text
}

/// The exit status, the log line and what the caller reads, from the
/// results alone.
fn report(
    env: &Env,
    args: &SendArgs,
    after: &After<'_>,
    mut sub: Submission,
    mut results: Results,
) -> Result<Accepted, Failure> {
    let spool = after.spool;
    if !sub.spooled.keep_refused {
        bounce_the_failed(env, args, spool, &sub, &mut results);
    }
    // Postfix's lines are for mail that goes to a smarthost, now or later.
    if !results.deliveries.is_empty() || results.queued.is_some() {
        let body = sub.body().file().metadata().map(|m| m.len()).unwrap_or(0);
        let size = sub.header.len() as u64 + 2 + body;
        super::stats::log_received(
            env,
            sub.draft_id().unwrap_or_default(),
            &sub.prepared.sender,
            size,
            sub.prepared.recipients.len(),
        );
        super::stats::log_deliveries(env, &results.deliveries, Some(env.now));
        super::stats::count_sent(env, spool, &results.deliveries);
    }
    if env.verbose > 0 {
        for d in &results.delivered {
            errln!("mailhop: delivered to {d}");
        }
    }
    if let Some(q) = &results.queued {
        tell_queued(env, q);
    }
    if results.failed.is_empty() {
        log_line(
            env,
            Severity::Info,
            &format!("{} {}", sub.summary, status_text(&results)),
        );
        let queued_by_choice = results.queued.as_ref().is_some_and(|q| q.reason.is_none());
        let reachable_again = results.queued.is_none()
            && results.reached_smarthost
            && spool.is_some_and(queue::Spool::has_items);
        let queue_id = sub.draft_id().map(str::to_string);
        // Release our lock on the item before a runner looks at it.
        drop(sub);
        if !env.config.accounts.is_empty()
            && (queued_by_choice || reachable_again || results.bounce_queued)
        {
            (after.start_runner)(args);
        }
        return Ok(Accepted { queue_id });
    }
    // Some or all failed: report each, keep the message, pick the exit code.
    let mut text = String::new();
    for f in &results.failed {
        text.push_str(&format!("{}: {}\n", f.address, f.why));
    }
    if !results.delivered.is_empty() {
        text.push_str(&format!("delivered to: {}\n", results.delivered.join(", ")));
    }
    if let Some(q) = &results.queued {
        text.push_str(&format!(
            "queued as {} for: {}\n",
            q.id,
            q.recipients.join(", ")
        ));
    }
    let code = worst(results.failed.iter().map(|f| f.exit));
    let sender = sub.prepared.sender.clone();
    let message = text.trim_end().to_string();
    Err(refuse_logged(
        env,
        &mut sub.spooled,
        &sender,
        code,
        message,
        &sub.summary,
    ))
}

/// An SMTP client gets one reply for the whole message: once some
/// recipients were delivered or queued, it must be 250, or the client
/// sends them all again. So, as Postfix does, when every recipient that
/// failed failed for good (what would be a 5xx reply), they get a bounce
/// (unless their NOTIFY asks for none; never for the null sender) and
/// leave `failed`. A temporary failure among them (a locked mailbox, a
/// queue that cannot be written) keeps them all: the client hears 4xx and
/// tries again later, a duplicate for some rather than a loss for others.
/// Without a spool (`mode = "never"`) nothing can be bounced: the client
/// hears of them.
fn bounce_the_failed(
    env: &Env,
    args: &SendArgs,
    spool: Option<&queue::Spool>,
    sub: &Submission,
    results: &mut Results,
) {
    let Some(spool) = spool else { return };
    let permanent = |f: &FailedRcpt| reply_for(&Failure::new(f.exit, "")).code >= 500;
    if results.failed.is_empty()
        || (results.delivered.is_empty() && results.queued.is_none())
        || !results.failed.iter().all(permanent)
    {
        return;
    }
    let mut original = new_meta(env, args, sub, Vec::new());
    original.recipients = results
        .failed
        .iter()
        .map(|f| {
            let mut r = recipient_for(sub, f.address.clone());
            r.state = queue::RcptState::Failed;
            r.last_error = Some(f.reply.clone().unwrap_or_else(|| f.why.clone()));
            r
        })
        .collect();
    let bounce = if original.sender.is_empty() {
        Ok(None)
    } else {
        let opts = super::queue_cmd::run_options(env);
        deliver::queue_bounce(spool, &original, &original.recipients, &opts)
    };
    match bounce {
        Ok(id) => {
            log_bounced(env, sub, &original, id.as_deref());
            results.bounce_queued = id.is_some();
            results.failed.clear();
        }
        Err(e) => log_line(
            env,
            Severity::Err,
            &format!("{} the bounce could not be queued: {e}", sub.summary),
        ),
    }
}

/// The log line for recipients an SMTP client was not told about: who got
/// a bounce, and who none (their NOTIFY, or the null sender).
fn log_bounced(env: &Env, sub: &Submission, original: &queue::Meta, id: Option<&str>) {
    let (noticed, silent): (Vec<&queue::Recipient>, Vec<&queue::Recipient>) = original
        .recipients
        .iter()
        .partition(|r| id.is_some() && r.wants_failure_notice(original));
    let list = |rs: &[&queue::Recipient]| {
        log::field(
            &rs.iter()
                .map(|r| r.address.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
    };
    let mut status = Vec::new();
    if let Some(id) = id.filter(|_| !noticed.is_empty()) {
        status.push(format!(
            "status=bounced ({}: bounce queued as {id})",
            list(&noticed)
        ));
    }
    if !silent.is_empty() {
        status.push(format!(
            "status=bounced ({}: no bounce: the sender asked for none, or is <>)",
            list(&silent)
        ));
    }
    log_line(
        env,
        Severity::Info,
        &format!("{} {}", sub.summary, status.join(" ")),
    );
}

/// What `report` works with beside the message: the spool, and how to
/// start a runner for what waits there.
struct After<'a> {
    spool: Option<&'a queue::Spool>,
    start_runner: fn(&SendArgs),
}

/// What the log line says happened: `status=sent (…)`, `status=queued (…)`.
fn status_text(results: &Results) -> String {
    let mut status = Vec::new();
    if !results.delivered.is_empty() {
        status.push(format!(
            "status=sent ({})",
            log::field(&results.delivered.join(", "))
        ));
    }
    if let Some(q) = &results.queued {
        status.push(format!(
            "status=queued (id {}, {} recipient(s){})",
            q.id,
            q.recipients.len(),
            q.reason
                .as_deref()
                .map(|r| format!(": {}", log::field(r)))
                .unwrap_or_default()
        ));
    }
    status.join(" ")
}

/// Tells the caller about a queued message when a person must act (no
/// smarthost, a refused login, a certificate), once, on one line: cron
/// mails it. A message that merely waits for a busy server stays quiet.
fn tell_queued(env: &Env, q: &Queued) {
    let rcpts = log::printable(&q.recipients.join(", ")).into_owned();
    match q.cause {
        Some(Cause::NoSmarthost) => errln!(
            "mailhop: mail for {rcpts} is held in the queue: no smarthost is configured \
             (add an [[account]] to {}, then run `sendmail -q`)",
            config_name(env)
        ),
        Some(Cause::NeedsAdmin) => errln!(
            "mailhop: mail for {rcpts} is queued as {} and will be retried: {}; \
             once that is fixed, `sendmail -q` sends it (`mailq` shows it)",
            q.id,
            log::field(q.reason.as_deref().unwrap_or_default())
        ),
        _ if env.verbose > 0 => errln!(
            "mailhop: queued as {} for {rcpts}{}",
            q.id,
            q.reason
                .as_deref()
                .map(|r| format!(" ({})", log::field(r)))
                .unwrap_or_default()
        ),
        _ => {}
    }
}

/// Starts `mailhop queue run` in the background, detached, so the caller
/// (a PHP request, cron) does not wait for the smarthost.
pub(super) fn spawn_runner(args: &SendArgs) {
    if let Some(mut cmd) = runner_command(args) {
        let _ = cmd.spawn();
    }
}

/// `mailhop queue run` with this configuration, detached: no terminal,
/// its own process group.
pub(super) fn runner_command(args: &SendArgs) -> Option<std::process::Command> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().ok()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0("mailhop").args(["queue", "run"]);
    if let Some(c) = &args.common.config {
        cmd.arg("-C").arg(c);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    Some(cmd)
}

/// The exit code for several failed recipients: a temporary failure wins
/// (the caller may retry), then the first permanent one.
pub(super) fn worst(codes: impl Iterator<Item = Exit>) -> Exit {
    let codes: Vec<Exit> = codes.collect();
    if codes.contains(&Exit::TempFail) {
        Exit::TempFail
    } else {
        codes.first().copied().unwrap_or(Exit::Software)
    }
}

pub(super) fn reencode_qp(
    body: &mut Body,
    spool: Option<&queue::Spool>,
    now: SystemTime,
) -> Result<Body, Failure> {
    let io_fail =
        |e: io::Error| Failure::new(Exit::TempFail, format!("cannot re-encode the body: {e}"));
    let mut out = body.sibling(spool, now).map_err(io_fail)?;
    let src = body.file();
    src.seek(SeekFrom::Start(0)).map_err(io_fail)?;
    intake::encode_quoted_printable(&mut *src, out.file())
        .map_err(|e| Failure::new(Exit::TempFail, format!("cannot re-encode the body: {e}")))?;
    Ok(out)
}

/// Where a local recipient's mail goes, and who owns what is created.
struct LocalMailbox {
    path: PathBuf,
    owner: Option<Owner>,
}

/// Resolves a local recipient through `[local] path`.
fn resolve_local(env: &Env, rcpt: &str) -> Result<LocalMailbox, (Exit, String)> {
    let local_name = rcpt.rsplit_once('@').map_or(rcpt, |(l, _)| l);
    let settings = &env.config.local;
    let user = nix::unistd::User::from_name(local_name).ok().flatten();
    if settings.path.starts_with('~') && user.is_none() {
        return Err((
            Exit::NoUser,
            format!(
                "no local user \"{local_name}\" (looked up because [local] path is \"{}\"); \
                 add an alias for it, or set [aliases] default",
                settings.path
            ),
        ));
    }
    let home = user.as_ref().map(|u| u.dir.clone());
    let path =
        local::expand_path(&settings.path, local_name, home.as_deref()).ok_or_else(|| {
            (
                Exit::DataErr,
                format!("\"{local_name}\" cannot be used as a mailbox name"),
            )
        })?;
    // As root, files created in a user's mailbox belong to that user, so
    // they can read their own mail.
    let owner = match (&user, env.euid) {
        (Some(u), 0) if settings.path.starts_with('~') || settings.path.contains("%u") => {
            Some(Owner {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            })
        }
        _ => None,
    };
    Ok(LocalMailbox { path, owner })
}

/// Writes one copy into a local mailbox. A mailbox in a home directory is
/// the user's ground (a `~/Maildir` may be a symlink into the spool), so
/// it is written with the caller's own ids, never the mailhop group; a
/// path the system configuration names is written as configured.
fn write_local(
    env: &Env,
    mailbox: &LocalMailbox,
    sender: &str,
    head: &[u8],
    body: &mut File,
) -> Result<String, (Exit, String)> {
    body.seek(SeekFrom::Start(0))
        .map_err(|e| (Exit::IoErr, e.to_string()))?;
    let mut msg = io::Cursor::new(head).chain(&mut *body);
    let path = &mailbox.path;
    // Root writing into a user's home does so as that user: nothing is
    // chowned by path afterwards (a race a symbolic link would win).
    let in_home = env.config.local.path.starts_with('~');
    let owner = if in_home { None } else { mailbox.owner };
    let mut write = || {
        match env.config.local.transport {
            LocalTransport::Maildir => {
                local::deliver_maildir(path, &mut msg, &env.hostname, env.now, owner)
                    .map(|p| p.display().to_string())
            }
            LocalTransport::Mbox => local::deliver_mbox(path, sender, &mut msg, env.now, owner)
                .map(|()| path.display().to_string()),
        }
        .map_err(|e| (exit::from_io(e.kind()), e.to_string()))
    };
    match (in_home, mailbox.owner) {
        (true, Some(o)) => as_user(o.uid, o.gid, write).map_err(|e| {
            (
                Exit::OsErr,
                format!("cannot become the recipient to deliver: {e}"),
            )
        })?,
        (true, None) => as_caller(write)
            .map_err(|e| (Exit::OsErr, format!("cannot switch to your own ids: {e}")))?,
        (false, _) => write(),
    }
}

/// Signs the finished message with every `[[dkim]]` entry for the From
/// domain, prepending one DKIM-Signature field each (RSA and Ed25519 dual
/// signing is two entries). Returns the new header block.
pub(super) fn dkim_sign(
    env: &Env,
    from_address: Option<&str>,
    header: &[u8],
    body: &mut File,
) -> Result<Vec<u8>, Failure> {
    let Some(domain) = from_address
        .and_then(|a| a.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase())
    else {
        return Ok(header.to_vec());
    };
    let now = unix_secs(env.now);
    let mut signatures: Vec<u8> = Vec::new();
    for s in env
        .config
        .dkim
        .iter()
        .filter(|s| crate::dkim::matches_domain(&s.domain, &domain))
    {
        let fail = |e: crate::dkim::DkimError| {
            Failure::new(
                dkim_exit(&e),
                format!(
                    "DKIM signing for {domain} (selector {}) failed: {e}",
                    s.selector
                ),
            )
        };
        let (key, warnings) =
            crate::dkim::load_key(&s.key_file, s.algorithm, env.mailhop_gid(), env.euid)
                .map_err(fail)?;
        // Logged every time, on standard error only with -v: callers such
        // as cron mail whatever a command prints, so a warning there would
        // turn every message into two.
        for w in warnings {
            log_line(env, Severity::Warning, &format!("dkim: {}", log::field(&w)));
            if env.verbose > 0 {
                errln!("mailhop: {w}");
            }
        }
        body.seek(SeekFrom::Start(0))
            .map_err(|e| Failure::new(Exit::IoErr, format!("cannot read the spooled body: {e}")))?;
        let sig = crate::dkim::sign(s, &key, header, body, now).map_err(fail)?;
        if env.verbose > 0 {
            errln!(
                "mailhop: signed with DKIM d={} s={} a={}",
                s.signing_domain(),
                s.selector,
                s.algorithm.name()
            );
        }
        // Each new signature goes on top, as a chain of signers would add
        // them; verifiers do not care about the order.
        let mut next = sig;
        next.extend_from_slice(&signatures);
        signatures = next;
    }
    let mut out = signatures;
    out.extend_from_slice(header);
    Ok(out)
}
