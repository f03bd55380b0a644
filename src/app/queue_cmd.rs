use std::io::{self, Write};

use crate::cli::{self};
use crate::exit::Exit;
use crate::log::{self, Severity};
use crate::queue;

use super::env::*;
use super::failure::*;
use super::relay::*;
use super::stamp::*;

/// Whether the invoking user may see and manage every item: root, and the
/// dedicated `mailhop` user the packaged runner runs as.
pub(super) fn sees_all(env: &Env) -> bool {
    env.uid == 0 || env.user == "mailhop"
}

/// `mailq`, `sendmail -q` and `mailhop queue …`.
pub(super) fn queue_cmd(env: &Env, action: &cli::QueueAction) -> Result<Exit, Failure> {
    use cli::QueueAction as A;
    let spool = spool_for(env).ok_or_else(|| {
        Failure::new(
            Exit::Config,
            "no queue directory: set [queue] dir, or HOME/XDG_STATE_HOME for the per-user queue",
        )
    })?;
    let mine = |m: &queue::Meta| sees_all(env) || m.uid == env.uid;
    match action {
        A::Stats(args) => super::stats::queue_stats(env, &spool, args),
        A::List { json } => list(&spool, *json, &mine),
        A::Show { id, envelope } => show(&spool, id, *envelope, &mine),
        A::Run | A::Flush { .. } => run(env, &spool, action),
        A::Delete(sel) | A::Hold(sel) | A::Release(sel) => manage(env, &spool, action, sel, &mine),
    }
}

/// `mailq`, `mailhop queue list [--json]`.
fn list(
    spool: &queue::Spool,
    json: bool,
    mine: &dyn Fn(&queue::Meta) -> bool,
) -> Result<Exit, Failure> {
    let (items, damaged) = spool.list()?;
    let items: Vec<queue::Meta> = items.into_iter().filter(|m| mine(m)).collect();
    let failed: Vec<queue::Meta> = spool
        .list_failed()
        .into_iter()
        .filter(|m| mine(m))
        .collect();
    for d in &damaged {
        errln!("mailhop: {d}");
    }
    if json {
        outln!("{}", queue_json(spool, &items, &failed));
    } else {
        out!("{}", mailq_text(spool, &items, &failed));
    }
    // Items that could not be read are not "an empty queue".
    if damaged.is_empty() {
        Ok(Exit::Ok)
    } else {
        errln!(
            "mailhop: {} queued item(s) could not be read (see above); the listing is incomplete",
            damaged.len()
        );
        Ok(Exit::IoErr)
    }
}

/// `mailhop queue show [--envelope] ID`.
fn show(
    spool: &queue::Spool,
    id: &str,
    envelope: bool,
    mine: &dyn Fn(&queue::Meta) -> bool,
) -> Result<Exit, Failure> {
    let (meta, area) = spool.find(id)?;
    if !mine(&meta) {
        return Err(queue_failure(queue::QueueError::NotFound(id.to_string())));
    }
    let mut out = io::stdout().lock();
    if envelope {
        let text = String::from_utf8_lossy(&meta.to_bytes()).into_owned();
        let _ = writeln!(out, "{}", text.split("\n\n").next().unwrap_or(""));
    } else {
        let mut data = spool.open_data(id, area)?;
        let _ = out.write_all(&meta.header);
        let _ = out.write_all(b"\r\n");
        let _ = io::copy(&mut data, &mut out);
    }
    Ok(Exit::Ok)
}

/// A queue run: `mailhop queue run` (what is due), `flush` and
/// `sendmail -q` (everything, or the named items).
fn run(env: &Env, spool: &queue::Spool, action: &cli::QueueAction) -> Result<Exit, Failure> {
    use cli::QueueAction as A;
    let (force, only) = match action {
        A::Flush { ids } if !ids.is_empty() => (true, Some(ids.clone())),
        A::Flush { .. } => (true, None),
        _ => (false, None),
    };
    if let Some(ids) = &only
        && let Some(bad) = ids.iter().find(|i| !queue::valid_id(i))
    {
        return Err(queue_failure(queue::QueueError::BadId(bad.clone())));
    }
    let opts = crate::deliver::RunOptions {
        force,
        only,
        uid: (!sees_all(env)).then_some(env.uid),
        ..run_options(env)
    };
    let mut relay = SmtpRelay { env };
    let report = crate::deliver::run(spool, &mut relay, &opts)?;
    super::stats::after_run(env, spool, &report);
    for line in &report.lines {
        log_line(env, Severity::Info, &format!("queue: {}", log::field(line)));
        if env.verbose > 0 {
            errln!("mailhop: {line}");
        }
    }
    Ok(Exit::Ok)
}

/// `mailhop queue delete|hold|release`.
fn manage(
    env: &Env,
    spool: &queue::Spool,
    action: &cli::QueueAction,
    sel: &cli::Selection,
    mine: &dyn Fn(&queue::Meta) -> bool,
) -> Result<Exit, Failure> {
    use cli::QueueAction as A;
    let ids: Vec<String> = if sel.all {
        let queued = spool.list()?.0;
        // delete --all empties failed/ too; hold and release
        // concern only what the runner could deliver.
        let failed = match action {
            A::Delete(_) => spool.list_failed(),
            _ => Vec::new(),
        };
        queued
            .into_iter()
            .chain(failed)
            .filter(|m| mine(m))
            .map(|m| m.id)
            .collect()
    } else {
        sel.ids.clone()
    };
    let mut status = Exit::Ok;
    for id in ids {
        let result = manage_item(spool, &id, action, mine);
        match result {
            Ok(what) => {
                outln!("mailhop: {id}: {what}");
                log_line(
                    env,
                    Severity::Info,
                    &format!("queue: {id}: {what} by {}", log::field(&env.user)),
                );
            }
            Err(f) => {
                errln!("mailhop: {}", f.message);
                status = f.exit;
            }
        }
    }
    Ok(status)
}

/// One id of `queue delete|hold|release`: what was done, for the report.
pub(super) fn manage_item(
    spool: &queue::Spool,
    id: &str,
    action: &cli::QueueAction,
    mine: &dyn Fn(&queue::Meta) -> bool,
) -> Result<&'static str, Failure> {
    use cli::QueueAction as A;
    let not_found = || queue_failure(queue::QueueError::NotFound(id.to_string()));
    let mut c = match spool.claim(id) {
        Ok(c) => c,
        Err(queue::QueueError::NotFound(_)) => {
            // Not in the queue: it may be in failed/, where only delete
            // applies (nothing delivers from there).
            match spool.find(id) {
                Ok((m, queue::Area::Failed)) if mine(&m) => {}
                _ => return Err(not_found()),
            }
            return match action {
                A::Delete(_) => spool
                    .remove_failed(id)
                    .map(|()| "deleted from failed/")
                    .map_err(queue_failure),
                _ => Err(Failure::new(
                    Exit::Usage,
                    format!(
                        "{id} is in failed/ (a message with the null sender that could not be \
                         delivered): it can be shown or deleted, not held or released"
                    ),
                )),
            };
        }
        Err(e) => return Err(queue_failure(e)),
    };
    if !mine(&c.meta) {
        return Err(not_found());
    }
    let done = match action {
        A::Delete(_) => spool.remove(c).map(|()| "deleted"),
        A::Hold(_) => {
            c.meta.hold = true;
            spool.update(&c).map(|()| "held")
        }
        _ => {
            c.meta.hold = false;
            c.meta.next_attempt = 0;
            spool.update(&c).map(|()| "released")
        }
    };
    done.map_err(queue_failure)
}

pub(super) fn arrival_text(secs: u64) -> String {
    let ts = jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.to_zoned(local_timezone())
        .strftime("%a %b %e %H:%M:%S")
        .to_string()
}

/// The listing in Postfix's mailq layout: id (`!` when held), size,
/// arrival, sender; then each undelivered recipient under its last error.
pub(super) fn mailq_text(
    spool: &queue::Spool,
    items: &[queue::Meta],
    failed: &[queue::Meta],
) -> String {
    if items.is_empty() && failed.is_empty() {
        return "Mail queue is empty\n".to_string();
    }
    let mut out = format!(
        "{:<31} {:>8} {:<20}  {}\n",
        "-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------"
    );
    let mut total = 0u64;
    let mut n = 0;
    let indent = " ".repeat(63);
    let all = items
        .iter()
        .map(|m| (m, false))
        .chain(failed.iter().map(|m| (m, true)));
    for (m, in_failed) in all {
        let area = if in_failed {
            queue::Area::Failed
        } else {
            queue::Area::Queue
        };
        let size = spool.size(m, area);
        total += size;
        n += 1;
        let mark = if in_failed {
            "#"
        } else if m.hold {
            "!"
        } else {
            " "
        };
        let sender = if m.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &m.sender
        };
        out.push_str(&format!(
            "{:<30}{mark} {size:>8} {:<20}  {}\n",
            m.id,
            arrival_text(m.arrival),
            log::printable(sender)
        ));
        let mut last: Option<&str> = None;
        for r in m.recipients.iter().filter(|r| delivered_by_fallback(m, r)) {
            out.push_str(&format!(
                "{indent}{} (sent via {})\n",
                r.address,
                r.via.as_deref().unwrap_or_default()
            ));
        }
        for r in m
            .recipients
            .iter()
            .filter(|r| r.state != queue::RcptState::Done)
        {
            let err = r.last_error.as_deref().or(m.last_error.as_deref());
            if err != last
                && let Some(e) = err
            {
                out.push_str(&format!("{indent}({})\n", log::printable(e)));
            }
            last = err;
            let failed_mark = if matches!(
                r.state,
                queue::RcptState::Failed | queue::RcptState::Bounced
            ) {
                " (failed)"
            } else {
                ""
            };
            out.push_str(&format!(
                "{indent}{}{failed_mark}\n",
                log::printable(&r.address)
            ));
        }
        out.push('\n');
    }
    if !failed.is_empty() {
        out.push_str(
            "(# marks messages whose bounce could not be delivered; they are kept in failed/)\n",
        );
    }
    out.push_str(&format!(
        "-- {} Kbytes in {n} Request{}.\n",
        total.div_ceil(1024),
        if n == 1 { "" } else { "s" }
    ));
    out
}

/// A recipient of a partly delivered item that a fallback account took.
fn delivered_by_fallback(m: &queue::Meta, r: &queue::Recipient) -> bool {
    r.state == queue::RcptState::Done && r.via.is_some() && r.via != m.account
}

pub(super) fn queue_json(
    spool: &queue::Spool,
    items: &[queue::Meta],
    failed: &[queue::Meta],
) -> String {
    let one = |m: &queue::Meta, area: queue::Area| {
        let rcpts: Vec<serde_json::Value> = m
            .recipients
            .iter()
            .map(|r| {
                serde_json::json!({
                    "address": r.address,
                    "state": match r.state {
                        queue::RcptState::Pending => "pending",
                        queue::RcptState::Done => "done",
                        queue::RcptState::Failed => "failed",
                        queue::RcptState::Bounced => "bounced",
                    },
                    "last_error": r.last_error,
                    "via": r.via,
                    "notify": r.dsn.notify,
                    "orcpt": r.dsn.orcpt,
                })
            })
            .collect();
        serde_json::json!({
            "id": m.id,
            "area": match area {
                queue::Area::Queue => "queue",
                queue::Area::Failed => "failed",
            },
            "size": spool.size(m, area),
            "arrival": m.arrival,
            "sender": m.sender,
            "account": m.account,
            "hold": m.hold,
            "attempts": m.attempts,
            "next_attempt": m.next_attempt,
            "last_error": m.last_error,
            "recipients": rcpts,
        })
    };
    let all: Vec<serde_json::Value> = items
        .iter()
        .map(|m| one(m, queue::Area::Queue))
        .chain(failed.iter().map(|m| one(m, queue::Area::Failed)))
        .collect();
    serde_json::Value::Array(all).to_string()
}

/// A run's options from the configuration: every item, on schedule, for
/// every user. Bounces the send path makes use them too.
pub(super) fn run_options(env: &Env) -> crate::deliver::RunOptions {
    crate::deliver::RunOptions {
        now: env.now,
        force: false,
        only: None,
        max_age: env.config.queue.max_age,
        bounce_to: env.config.queue.bounce_to.clone(),
        hostname: env.hostname.clone(),
        uid: None,
    }
}

/// `sendmail -qIid`, `-qRrecipient`, `-qSsender`: delivers now the items
/// whose id, a recipient or the sender contains `value` (case-insensitive).
pub(super) fn queue_select_flush(env: &Env, kind: &str, value: &str) -> Result<Exit, Failure> {
    let spool = spool_for(env).ok_or_else(|| Failure::new(Exit::Config, "no queue directory"))?;
    let needle = value.to_ascii_lowercase();
    let (items, _) = spool.list()?;
    let ids: Vec<String> = items
        .into_iter()
        .filter(|m| sees_all(env) || m.uid == env.uid)
        .filter(|m| match kind {
            "I" => m.id.to_ascii_lowercase().contains(&needle),
            "R" => m
                .recipients
                .iter()
                .any(|r| r.address.to_ascii_lowercase().contains(&needle)),
            _ => m.sender.to_ascii_lowercase().contains(&needle),
        })
        .map(|m| m.id)
        .collect();
    if ids.is_empty() {
        return Ok(Exit::Ok);
    }
    queue_cmd(env, &cli::QueueAction::Flush { ids })
}
