use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::cli::{self, SendArgs};
use crate::config::{self, LocalTransport};
use crate::exit::{self, Exit};
use crate::local::{self, Owner};
use crate::log::{self, Severity};
use crate::message::header::Header;
use crate::message::intake::{self, Intake};
use crate::message::prepare::{self, BodyPlan};
use crate::queue;
use crate::transport;

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
            _ => tempfile::tempfile_in("/var/tmp")
                .or_else(|_| tempfile::tempfile())
                .map(Body::Temp),
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
    if let Some(home) = &env.home {
        let path = home.join("dead.letter");
        let mut msg = spooled.original().map_err(|e| e.to_string())?;
        match local::deliver_mbox(&path, sender, &mut msg, env.now, None) {
            Ok(()) => return Ok(path),
            Err(e) => tries.push(e.to_string()),
        }
    }
    let mut msg = spooled.original().map_err(|e| e.to_string())?;
    match local::save_to_dir(Path::new("/var/tmp"), &mut msg, env.now) {
        Ok(p) => Ok(p),
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
    Failure::new(exit, format!("{message}\nmailhop: {saved}"))
}

/// Reads stdin into a spool file. The header block stays in memory (at most
/// 1 MiB); the body never does.
pub(super) fn intake_stdin(
    ignore_dots: bool,
    spool: Option<&queue::Spool>,
    now: SystemTime,
) -> Result<Spooled, Failure> {
    let mut spool_error = None;
    let mut body = match spool.map(|s| s.draft(now)) {
        Some(Ok(d)) => Body::Draft(d),
        Some(Err(e)) => {
            spool_error = Some(e.to_string());
            Body::Temp(
                tempfile::tempfile_in("/var/tmp")
                    .or_else(|_| tempfile::tempfile())
                    .map_err(|e| {
                        Failure::new(Exit::TempFail, format!("cannot create a spool file: {e}"))
                    })?,
            )
        }
        // No usable spool (or `mode = "never"`): an anonymous file. The
        // message can then not be queued, only sent or refused.
        // Not $TMPDIR: a setgid process must not write where the caller
        // says. /var/tmp, not /tmp: a large message must not fill RAM.
        _ => Body::Temp(
            tempfile::tempfile_in("/var/tmp")
                .or_else(|_| tempfile::tempfile())
                .map_err(|e| {
                    Failure::new(
                        Exit::TempFail,
                        format!(
                            "cannot create a spool file in {}: {e}",
                            std::env::temp_dir().display()
                        ),
                    )
                })?,
        ),
    };
    let stdin = io::stdin().lock();
    let intake = intake::read_message(stdin, ignore_dots, body.file()).map_err(|e| {
        Failure::new(
            Exit::TempFail,
            format!("{e}; nothing was delivered, try again"),
        )
    })?;
    Ok(Spooled {
        intake,
        body,
        spool_error,
    })
}

/// `sendmail` in its default mode: read, prepare, deliver.
pub(super) fn send(env: &Env, args: &SendArgs) -> Result<Exit, Failure> {
    let (aliases, alias_warnings) = load_aliases(env)?;
    if env.verbose > 0 {
        for w in &alias_warnings {
            eprintln!("mailhop: {w}");
        }
    }
    let spool = match env.config.queue.mode {
        config::QueueMode::Never => None,
        _ => spool_for(env),
    };
    let mut spooled = intake_stdin(args.ignore_dots, spool.as_ref(), env.now)?;
    let raw_sender = args.sender.clone().unwrap_or_else(|| env.user.clone());

    if spooled.intake.empty {
        return Err(Failure::new(
            Exit::NoInput,
            "no message on standard input; nothing was sent (pipe the message into sendmail)",
        ));
    }
    if spooled.intake.nul {
        return Err(refuse(
            env,
            &mut spooled,
            &raw_sender,
            Exit::DataErr,
            "the message contains NUL bytes, which mail cannot carry; encode binary data as a MIME attachment".into(),
        ));
    }
    if spooled.intake.header_too_large {
        return Err(refuse(
            env,
            &mut spooled,
            &raw_sender,
            Exit::DataErr,
            format!(
                "the header block is larger than {} bytes; that is not a mail message",
                intake::MAX_HEADER
            ),
        ));
    }
    let header = match Header::parse(&spooled.intake.header) {
        Ok(h) => h,
        Err(e) => {
            return Err(refuse(
                env,
                &mut spooled,
                &raw_sender,
                Exit::DataErr,
                format!("bad header: {e}"),
            ));
        }
    };

    let lookup = Lookup {
        env,
        aliases: &aliases,
    };
    let date = rfc5322_date(env.now);
    let msgid = message_id(env.now, &env.hostname);
    let ctx = prepare_context(env, &date, &msgid);
    let req = prepare::Request {
        sender: args.sender.as_deref(),
        full_name: args.full_name.as_deref(),
        extract_recipients: args.extract_recipients,
        recipients: &args.recipients,
    };
    let mut prepared = match prepare::prepare(header, &req, &ctx, &lookup) {
        Ok(p) => p,
        Err(e) => {
            let code = match e {
                prepare::PrepareError::NoRecipients { extract: false } => Exit::Usage,
                _ => Exit::DataErr,
            };
            return Err(refuse(env, &mut spooled, &raw_sender, code, e.to_string()));
        }
    };
    if env.verbose > 0 {
        for n in &prepared.notes {
            eprintln!("mailhop: {n}");
        }
    }

    // Scrubbing comes after rewriting and before signing.
    let scrubbed = crate::scrub::scrub(&mut prepared.header, &env.config.headers);
    if env.verbose > 0 {
        for w in &scrubbed.warnings {
            eprintln!("mailhop: {w}");
        }
        if scrubbed.removed + scrubbed.replaced > 0 {
            eprintln!(
                "mailhop: scrubbed the header: {} field(s) removed, {} rewritten",
                scrubbed.removed, scrubbed.replaced
            );
        }
    }

    // Body fix-ups.
    let stats = spooled.intake.body.clone();
    let plan = prepare::plan_body(&prepared.header, stats.longest_line);
    let mut reencoded: Option<Body> = None;
    match plan {
        BodyPlan::AsIs => {
            if stats.eight_bit
                && prepare::label_eight_bit(&mut prepared.header, stats.valid_utf8)
                && env.verbose > 0
            {
                eprintln!("mailhop: labelled the 8-bit body as text/plain; charset=utf-8");
            }
        }
        BodyPlan::QuotedPrintable => {
            match reencode_qp(&mut spooled.body, spool.as_ref(), env.now) {
                Ok(b) => reencoded = Some(b),
                Err(e) => {
                    let sender = prepared.sender.clone();
                    return Err(refuse(env, &mut spooled, &sender, e.exit, e.message));
                }
            }
            prepare::apply_quoted_printable(&mut prepared.header, stats.valid_utf8);
            if env.verbose > 0 {
                eprintln!(
                    "mailhop: re-encoded the body as quoted-printable (a line was {} octets, over the 998 limit)",
                    stats.longest_line
                );
            }
        }
        BodyPlan::Refuse(why) => {
            let sender = prepared.sender.clone();
            return Err(refuse(env, &mut spooled, &sender, Exit::DataErr, why));
        }
    }
    // The body as it will be sent, read through its own descriptor so the
    // original stays available for dead.letter.
    let mut body = match reencoded.as_mut() {
        Some(b) => b.file().try_clone(),
        None => spooled.body.file().try_clone(),
    }
    .map_err(|e| Failure::new(Exit::OsErr, e.to_string()))?;

    let mut header_block = Vec::new();
    prepared.header.write_to(&mut header_block);
    // Signing is the very last change to the message.
    if !env.config.dkim.is_empty() {
        header_block = match dkim_sign(
            env,
            prepared.from_address.as_deref(),
            &header_block,
            &mut body,
        ) {
            Ok(h) => h,
            Err(e) => {
                let sender = prepared.sender.clone();
                return Err(refuse(env, &mut spooled, &sender, e.exit, e.message));
            }
        };
    }
    let mut head = header_block.clone();
    head.extend_from_slice(b"\r\n");
    let size = head.len() as u64 + body.metadata().map(|m| m.len()).unwrap_or(0);
    let eight_bit = !head.is_ascii() || (stats.eight_bit && reencoded.is_none());
    let msgid_final = prepared
        .header
        .get("Message-ID")
        .map(|f| String::from_utf8_lossy(&f.unfolded_value()).into_owned())
        .unwrap_or_default();

    // Route: local recipients to the embedded delivery, the rest to the
    // smarthost (or the queue).
    let capture = env.config.local.capture;
    let (local_rcpts, remote_rcpts): (Vec<&String>, Vec<&String>) = prepared
        .recipients
        .iter()
        .partition(|r| capture || lookup.is_local(r.rsplit_once('@').map(|(_, d)| d)));

    let mut failures: Vec<(String, Exit, String)> = Vec::new();
    let mut delivered: Vec<String> = Vec::new();
    for r in &local_rcpts {
        match deliver_local(env, r, &prepared.sender, &head, &mut body) {
            Ok(where_) => delivered.push(format!("{r} ({where_})")),
            Err((code, msg)) => failures.push(((*r).clone(), code, msg)),
        }
    }
    let dsn = transport::Dsn {
        notify: args.dsn_notify.clone(),
        ret_full: args.dsn_ret.map(|r| r == cli::DsnRet::Full),
        envid: args.envid.clone(),
    };
    let mode = env.config.queue.mode;
    let remote_rcpts_count = remote_rcpts.len();
    let now_secs = env
        .now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // What is left in the queue at the end, and why.
    let mut to_queue: Vec<String> = Vec::new();
    let mut queue_reason: Option<String> = None;
    let mut queued_id: Option<String> = None;
    if !remote_rcpts.is_empty() {
        let remote: Vec<String> = remote_rcpts.iter().map(|r| (*r).clone()).collect();
        let account = prepared
            .account
            .as_deref()
            .and_then(|n| env.config.account_named(n));
        let no_smarthost = format!(
            "no smarthost is configured; add an [[account]] to {} (see mailhop.toml(5))",
            config_name(env)
        );
        let make_meta =
            |id: &str, rcpts: &[String], reason: Option<&str>, attempts: u32| queue::Meta {
                id: id.to_string(),
                arrival: now_secs,
                sender: prepared.sender.clone(),
                account: prepared.account.clone(),
                uid: env.uid,
                attempts,
                next_attempt: if attempts > 0 {
                    now_secs + queue::backoff(attempts).as_secs()
                } else {
                    now_secs
                },
                last_error: reason.map(str::to_string),
                hold: false,
                eight_bit,
                dsn_notify: dsn.notify.clone(),
                dsn_ret_full: dsn.ret_full,
                dsn_envid: dsn.envid.clone(),
                recipients: rcpts
                    .iter()
                    .map(|a| queue::Recipient {
                        address: a.clone(),
                        state: queue::RcptState::Pending,
                        last_error: reason.map(str::to_string),
                    })
                    .collect(),
                header: header_block.clone(),
            };

        // Commit to the queue before the first network byte: whatever
        // happens from here on (a crash, kill -9, a hung server), the
        // message is on disk and a runner will deliver it.
        let mut commit_error = None;
        if mode != config::QueueMode::Never
            && let Some(spool) = &spool
        {
            match queue_draft(&mut reencoded, &mut spooled.body) {
                Some(draft) => {
                    let reason = account.is_none().then_some(no_smarthost.as_str());
                    let meta = make_meta(&draft.id, &remote, reason, 0);
                    // Durable at once when the caller will be told
                    // "queued" without an attempt; a commit that only
                    // covers the attempt is made durable if it fails.
                    let durable = account.is_none() || mode == config::QueueMode::Always;
                    match spool.commit(draft, &meta, durable) {
                        Ok(()) => {
                            queued_id = Some(meta.id.clone());
                            to_queue = remote.clone();
                            queue_reason = reason.map(str::to_string);
                        }
                        Err(e) => commit_error = Some(e.to_string()),
                    }
                }
                None => {
                    commit_error = Some(
                        spooled
                            .spool_error
                            .clone()
                            .unwrap_or_else(|| "the message is not in the spool".to_string()),
                    )
                }
            }
        }
        let committed = queued_id.is_some();
        match account {
            None if committed => {}
            None => {
                let why = match &commit_error {
                    Some(e) => format!("{no_smarthost}; and the message could not be queued: {e}"),
                    None => no_smarthost.clone(),
                };
                for r in remote {
                    failures.push((r, Exit::Unavailable, why.clone()));
                }
            }
            Some(_) if committed && mode == config::QueueMode::Always => {}
            Some(account) => {
                let envelope = transport::Envelope {
                    sender: &prepared.sender,
                    recipients: &remote,
                    size,
                    eight_bit,
                    dsn: &dsn,
                };
                let mut still_pending: Vec<String> = Vec::new();
                let mut reason: Option<String> = None;
                match submit(env, account, &envelope, &head, &mut body) {
                    Ok(outcome) => {
                        for a in outcome.accepted {
                            delivered.push(format!("{a} (via {})", account.smtp.host));
                        }
                        for (r, reply) in outcome.rejected {
                            let msg =
                                format!("{} refused this recipient: {reply}", account.smtp.host);
                            if reply.is_transient() && committed {
                                reason = Some(msg);
                                still_pending.push(r);
                            } else {
                                let code = if reply.is_transient() {
                                    Exit::TempFail
                                } else {
                                    Exit::NoUser
                                };
                                failures.push((r, code, msg));
                            }
                        }
                    }
                    Err((code, msg)) if code == Exit::TempFail && committed => {
                        reason = Some(msg);
                        still_pending = remote;
                    }
                    Err((code, msg)) => {
                        let msg = match (&commit_error, code) {
                            (Some(e), Exit::TempFail) => {
                                format!("{msg}; and the message could not be queued: {e}")
                            }
                            _ => msg,
                        };
                        for r in remote {
                            failures.push((r, code, msg.clone()));
                        }
                    }
                }
                if let (Some(spool), Some(draft)) =
                    (&spool, queue_draft(&mut reencoded, &mut spooled.body))
                    && committed
                {
                    if still_pending.is_empty() {
                        // Delivered (or refused for good): the item is done.
                        // Between the server's 250 and this removal is the
                        // one window in which a crash causes a duplicate.
                        let _ = spool.discard(draft);
                        queued_id = None;
                        to_queue.clear();
                    } else {
                        let meta = make_meta(&draft.id, &still_pending, reason.as_deref(), 1);
                        if let Err(e) = spool.make_durable(draft, &meta) {
                            eprintln!("mailhop: {e}");
                        }
                        to_queue = still_pending;
                        queue_reason = reason;
                    }
                }
            }
        }
    }

    let summary = format!(
        "msgid={} from=<{}> nrcpt={} size={}",
        log::field(&msgid_final),
        log::field(&prepared.sender),
        prepared.recipients.len(),
        size
    );
    if env.verbose > 0 {
        for d in &delivered {
            eprintln!("mailhop: delivered to {d}");
        }
        if let Some(id) = &queued_id {
            eprintln!(
                "mailhop: queued as {id} for {}{}",
                to_queue.join(", "),
                queue_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
    }
    // Held for want of a smarthost: say so even without -v, or the caller
    // believes the mail went out.
    if queued_id.is_some() && prepared.account.is_none() {
        eprintln!(
            "mailhop: mail for {} is held in the queue: no smarthost is configured \
             (add an [[account]] to {}, then run `sendmail -q`)",
            to_queue.join(", "),
            config_name(env)
        );
    }
    if failures.is_empty() {
        let mut status = String::new();
        if !delivered.is_empty() {
            status.push_str(&format!(
                "status=sent ({})",
                log::field(&delivered.join(", "))
            ));
        }
        if let Some(id) = &queued_id {
            if !status.is_empty() {
                status.push(' ');
            }
            status.push_str(&format!(
                "status=queued (id {id}, {} recipient(s){})",
                to_queue.len(),
                queue_reason
                    .as_deref()
                    .map(|r| format!(": {}", log::field(r)))
                    .unwrap_or_default()
            ));
        }
        log_line(env, Severity::Info, &format!("{summary} {status}"));
        // Release our lock on the item before a runner looks at it.
        drop(body);
        drop(reencoded);
        drop(spooled);
        // A runner is started when it has work now: a message queued by
        // choice (mode "always"), or older items after the smarthost just
        // proved reachable. A failed attempt waits for its backoff.
        let queued_by_choice = queued_id.is_some() && queue_reason.is_none();
        let reachable_again = queued_id.is_none()
            && remote_rcpts_count > 0
            && spool.as_ref().is_some_and(queue::Spool::has_items);
        if !env.config.accounts.is_empty() && (queued_by_choice || reachable_again) {
            spawn_runner(args);
        }
        return Ok(Exit::Ok);
    }

    // Some or all failed: report each, keep the message, pick the exit code.
    let mut text = String::new();
    for (r, _, m) in &failures {
        text.push_str(&format!("{r}: {m}\n"));
    }
    if !delivered.is_empty() {
        text.push_str(&format!("delivered to: {}\n", delivered.join(", ")));
    }
    if let Some(id) = &queued_id {
        text.push_str(&format!("queued as {id} for: {}\n", to_queue.join(", ")));
    }
    let code = worst(failures.iter().map(|(_, c, _)| *c));
    let sender = prepared.sender.clone();
    let message = text.trim_end().replace('\n', "\nmailhop: ");
    Err(refuse_logged(
        env,
        &mut spooled,
        &sender,
        code,
        message,
        &summary,
    ))
}

/// The queue draft holding the body that will be sent, if it is in the
/// spool.
pub(super) fn queue_draft<'a>(
    reencoded: &'a mut Option<Body>,
    original: &'a mut Body,
) -> Option<&'a mut queue::Draft> {
    match reencoded {
        Some(Body::Draft(d)) => Some(d),
        Some(Body::Temp(_)) => None,
        None => match original {
            Body::Draft(d) => Some(d),
            Body::Temp(_) => None,
        },
    }
}

/// Starts `mailhop queue run` in the background, detached, so the caller
/// (a PHP request, cron) does not wait for the smarthost.
pub(super) fn spawn_runner(args: &SendArgs) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0("mailhop").args(["queue", "run"]);
    if let Some(c) = &args.common.config {
        cmd.arg("-C").arg(c);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let _ = cmd.spawn();
}

/// Submits one message to the account's smarthost. Errors come back as the
/// exit code and the message for the user.
pub(super) fn submit(
    env: &Env,
    account: &config::Account,
    envelope: &transport::Envelope<'_>,
    head: &[u8],
    body: &mut File,
) -> Result<transport::Outcome, (Exit, String)> {
    let result = (|| {
        let mut session = connect_and_login(env, account)?;
        body.seek(SeekFrom::Start(0))
            .map_err(|e| transport::Error {
                stage: transport::Stage::Message,
                kind: transport::Kind::Config,
                detail: format!("cannot read the spooled message: {e}"),
            })?;
        let mut msg = io::Cursor::new(head).chain(&mut *body);
        let outcome = session.send(envelope, &mut msg)?;
        session.quit();
        Ok(outcome)
    })();
    result.map_err(|e: transport::Error| {
        (
            exit_for(&e),
            format!("{} (account {})", e.detail, account.name),
        )
    })
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

/// Delivers to one local recipient through the `[local]` transport.
pub(super) fn deliver_local(
    env: &Env,
    rcpt: &str,
    sender: &str,
    head: &[u8],
    body: &mut File,
) -> Result<String, (Exit, String)> {
    let local_name = rcpt.rsplit_once('@').map_or(rcpt, |(l, _)| l);
    let settings = &env.config.local;
    let needs_home = settings.path.starts_with('~');
    let user = nix::unistd::User::from_name(local_name).ok().flatten();
    if needs_home && user.is_none() {
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
    body.seek(SeekFrom::Start(0))
        .map_err(|e| (Exit::IoErr, e.to_string()))?;
    let mut msg = io::Cursor::new(head).chain(&mut *body);
    let result = match settings.transport {
        LocalTransport::Maildir => {
            local::deliver_maildir(&path, &mut msg, &env.hostname, env.now, owner)
                .map(|p| p.display().to_string())
        }
        LocalTransport::Mbox => local::deliver_mbox(&path, sender, &mut msg, env.now, owner)
            .map(|()| path.display().to_string()),
    };
    result.map_err(|e| (exit::from_io(e.kind()), e.to_string()))
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
    let now = env
        .now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
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
                eprintln!("mailhop: {w}");
            }
        }
        body.seek(SeekFrom::Start(0))
            .map_err(|e| Failure::new(Exit::IoErr, format!("cannot read the spooled body: {e}")))?;
        let sig = crate::dkim::sign(s, &key, header, body, now).map_err(fail)?;
        if env.verbose > 0 {
            eprintln!(
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
