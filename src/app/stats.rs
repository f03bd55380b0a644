//! What monitoring reads: `mailhop queue stats` (text, JSON, Prometheus),
//! `mailhop check --queue` (a Nagios/Icinga plugin), the counters file in
//! the spool (updated by queue runs and by sendmail's own attempts), and
//! the Postfix-style per-recipient log lines. The
//! numbers and formats are `monitor`'s and `log`'s; this is the files and
//! the output around them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::cli;
use crate::deliver::{Fate, Record};
use crate::exit::Exit;
use crate::log::{self, Program, Severity};
use crate::monitor::{self, Counters, PluginStatus, QueueStats, Thresholds};
use crate::queue;

use super::env::*;
use super::failure::*;
use super::queue_cmd::sees_all;
use super::stamp::unix_secs;

/// The runner's counters, in the spool's root; `COUNTERS_LOCK` serialises
/// the read-modify-write of concurrent runners.
const COUNTERS: &str = "stats.json";
const COUNTERS_LOCK: &str = "stats.lock";

/// The most bytes of the counters file read: it is a few hundred bytes per
/// account, and a larger one is not ours.
const COUNTERS_MAX: u64 = 1 << 20;

/// Like `log_line`, under the Postfix-style tag `TAG/PROGRAM`
/// (`mailhop/smtp`), which is what pflogsumm's `--syslog-name` and
/// Postfix log filters match.
pub(super) fn log_as(env: &Env, program: Program, severity: Severity, line: &str) {
    log_tagged(env, &program.tag(&env.tag), severity, line);
}

/// One Postfix smtp line per recipient verdict. `arrived`, when given, is
/// when the message arrived to the second's fraction (sendmail's own
/// attempt): the queue keeps arrival in whole seconds, which would make a
/// message delivered in 0.2 s look up to a second late.
pub(super) fn log_deliveries(
    env: &Env,
    deliveries: &[Record],
    arrived: Option<std::time::SystemTime>,
) {
    for d in deliveries {
        let delay = arrived.and_then(|t| t.elapsed().ok()).unwrap_or(d.delay);
        let host = d
            .account
            .as_deref()
            .and_then(|a| env.config.account_named(a))
            .map(|a| a.smtp.host.as_str());
        let status = match d.verdict.fate {
            Fate::Delivered => log::Status::Sent,
            Fate::Deferred(_) => log::Status::Deferred,
            Fate::Failed(_) => log::Status::Bounced,
        };
        let text = match status {
            log::Status::Sent => d.wire.reply.as_deref().or(d.verdict.reason.as_deref()),
            _ => d.verdict.reason.as_deref(),
        };
        let line = log::recipient_line(&log::RecipientLine {
            queue_id: &d.id,
            to: &d.verdict.address,
            host,
            peer: d.wire.peer,
            delay,
            delays: Some(log::Delays {
                setup: d.wire.setup,
                transfer: d.wire.transfer,
            }),
            status,
            text: text.unwrap_or("delivered"),
        });
        let severity = match status {
            log::Status::Bounced => Severity::Warning,
            _ => Severity::Info,
        };
        log_as(env, Program::Smtp, severity, &line);
    }
}

/// A message entered the system: Postfix's pickup and qmgr lines, by
/// which log tools count received messages, senders and sizes.
pub(super) fn log_received(env: &Env, queue_id: &str, sender: &str, size: u64, nrcpt: usize) {
    let id = if queue_id.is_empty() {
        "NOQUEUE"
    } else {
        queue_id
    };
    log_as(
        env,
        Program::Pickup,
        Severity::Info,
        &log::pickup_line(id, env.uid, sender),
    );
    log_as(
        env,
        Program::Qmgr,
        Severity::Info,
        &log::envelope_line(id, sender, size, nrcpt),
    );
}

/// After a queue run: its per-recipient log lines, and its numbers added
/// to the counters file. A counters file that cannot be written is said
/// once; it never fails the run.
pub(super) fn after_run(env: &Env, spool: &queue::Spool, report: &crate::deliver::Report) {
    log_deliveries(env, &report.deliveries, None);
    // No spool yet: nothing was ever queued, and there is nothing to count.
    if !spool.root().is_dir() {
        return;
    }
    let now = unix_secs(env.now);
    if let Err(e) = update_counters(spool, |c| c.record(now, &report.deliveries)) {
        let line = format!("cannot update the queue counters: {e}");
        log_line(env, Severity::Warning, &line);
        if env.verbose > 0 {
            errln!("mailhop: {line}");
        }
    }
}

/// After sendmail's own attempt: its outcomes added to the counters'
/// totals. Best effort: a spool this caller cannot write is no reason to
/// fail a message that was handled.
pub(super) fn count_sent(env: &Env, spool: Option<&queue::Spool>, deliveries: &[Record]) {
    let Some(spool) = spool.filter(|_| !deliveries.is_empty()) else {
        return;
    };
    if let Err(e) = update_counters(spool, |c| c.add(deliveries))
        && env.verbose > 0
    {
        errln!("mailhop: cannot update the queue counters: {e}");
    }
}

/// Reads, changes and atomically replaces the counters file, under its
/// lock (flock on a file of its own, opened for writing so NFS's
/// emulation can take it). In the shared spool every user's sendmail (and
/// the runner) takes the lock, so it is group-writable whatever the
/// creator's umask; the file itself is replaced, never written in place.
fn update_counters(
    spool: &queue::Spool,
    change: impl FnOnce(&mut Counters),
) -> std::io::Result<()> {
    let root = spool.root();
    let (lock_mode, file_mode) = if spool.is_shared() {
        (0o660, 0o640)
    } else {
        (0o600, 0o600)
    };
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(lock_mode)
        .open(root.join(COUNTERS_LOCK))?;
    // Only its owner (its creator) can change the mode; for everyone else
    // it is already right or not theirs to fix.
    if lock.metadata()?.permissions().mode() & 0o777 != lock_mode {
        let _ = lock.set_permissions(std::fs::Permissions::from_mode(lock_mode));
    }
    lock.lock()?;
    // A damaged file starts the counters again: Prometheus reads a counter
    // that went down as a reset, which is the truth.
    let mut counters = read_counters(root).unwrap_or_default();
    change(&mut counters);
    let text = serde_json::to_vec(&counters).map_err(std::io::Error::other)?;
    // Not fsynced: after a crash the counters may lose the last counts,
    // which Prometheus shows as it shows any lost scrape; every send
    // would pay for the fsync.
    // Its temporary file goes where the spool's sweeper removes debris.
    let tmp = Some(root.join("tmp")).filter(|d| d.is_dir());
    write_atomically(
        &root.join(COUNTERS),
        tmp.as_deref(),
        &text,
        file_mode,
        false,
    )
}

/// The counters file; none yet is all zeros.
fn read_counters(root: &Path) -> std::io::Result<Counters> {
    let f = match File::open(root.join(COUNTERS)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Counters::default()),
        Err(e) => return Err(e),
    };
    let mut text = Vec::new();
    f.take(COUNTERS_MAX).read_to_end(&mut text)?;
    serde_json::from_slice(&text).map_err(std::io::Error::other)
}

/// Writes `data` to a temporary file (in `tmp_dir`, else beside `path`,
/// on the same file system) and renames it over `path`: a reader
/// (node_exporter) sees the old file or the new one, never half of one.
fn write_atomically(
    path: &Path,
    tmp_dir: Option<&Path>,
    data: &[u8],
    mode: u32,
    durable: bool,
) -> std::io::Result<()> {
    let dir = match (tmp_dir, path.parent()) {
        (Some(d), _) => d,
        (None, Some(d)) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".mailhop-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The queue's numbers as the invoking user may see them: root and the
/// mailhop user see every item, others their own. Damaged items are
/// counted, not fatal.
fn gather(env: &Env, spool: &queue::Spool) -> Result<QueueStats, Failure> {
    let mine = |m: &queue::Meta| sees_all(env) || m.uid == env.uid;
    let (items, damaged) = spool.list()?;
    let items: Vec<queue::Meta> = items.into_iter().filter(|m| mine(m)).collect();
    let failed = spool.list_failed().into_iter().filter(|m| mine(m)).count();
    let counters = match read_counters(spool.root()) {
        Ok(c) => c,
        Err(e) => {
            errln!("mailhop: cannot read the queue counters: {e}");
            Counters::default()
        }
    };
    Ok(monitor::stats(
        &items,
        failed,
        damaged.len(),
        &counters,
        unix_secs(env.now),
    ))
}

/// `mailhop queue stats [--json|--prometheus] [--output FILE]`.
pub(super) fn queue_stats(
    env: &Env,
    spool: &queue::Spool,
    args: &cli::StatsArgs,
) -> Result<Exit, Failure> {
    let stats = gather(env, spool)?;
    let text = if args.prometheus {
        monitor::prometheus(&stats)
    } else if args.json {
        let mut j = serde_json::to_string_pretty(&stats)
            .map_err(|e| Failure::new(Exit::Software, e.to_string()))?;
        j.push('\n');
        j
    } else {
        stats_text(&stats)
    };
    match &args.output {
        // World-readable: node_exporter runs as its own user. The path is
        // the caller's: written with the caller's ids, never the group's
        // (it could otherwise replace items in the spool).
        Some(path) => as_caller(|| write_atomically(path, None, text.as_bytes(), 0o644, true))
            .and_then(|written| written)
            .map_err(|e| {
                Failure::new(
                    crate::exit::from_io(e.kind()),
                    format!("cannot write {}: {e}", path.display()),
                )
            })?,
        None => out!("{text}"),
    }
    Ok(Exit::Ok)
}

/// The statistics for people.
fn stats_text(s: &QueueStats) -> String {
    let mut out = format!(
        "queue: {} message(s), {} held, {} deferred, {} in failed/",
        s.items, s.held, s.deferred, s.failed
    );
    if s.items > s.held {
        out.push_str(&format!(
            ", oldest {}",
            monitor::human_age(s.oldest_seconds)
        ));
    }
    if s.damaged > 0 {
        out.push_str(&format!(", {} unreadable", s.damaged));
    }
    out.push('\n');
    match s.last_run_at {
        Some(at) => out.push_str(&format!(
            "last queue run: {}\n",
            super::queue_cmd::arrival_text(at)
        )),
        None => out.push_str("last queue run: none recorded\n"),
    }
    for (name, a) in &s.accounts {
        out.push_str(&format!(
            "account {}: {} message(s), {} held, {} deferred; last run: {} sent, {} deferred, \
             {} bounced; in total: {} sent, {} deferred, {} bounced\n",
            log::printable(name),
            a.items,
            a.held,
            a.deferred,
            a.last_run.sent,
            a.last_run.deferred,
            a.last_run.bounced,
            a.totals.sent,
            a.totals.deferred,
            a.totals.bounced,
        ));
    }
    out
}

/// `mailhop check --queue --warn AGE --crit AGE`: one plugin line on
/// stdout, the plugin's exit status. Whatever keeps it from counting is
/// UNKNOWN (3), as the plugin guidelines ask.
pub(super) fn check_queue(env: &Env, c: &cli::CheckArgs) -> Result<Exit, Failure> {
    let (Some(warn_age), Some(crit_age)) = (c.warn, c.crit) else {
        return Ok(unknown("--queue needs --warn AGE and --crit AGE"));
    };
    let t = Thresholds {
        warn_age,
        crit_age,
        warn_count: c.warn_count,
        crit_count: c.crit_count,
    };
    if warn_age > crit_age || matches!((t.warn_count, t.crit_count), (Some(w), Some(c)) if w > c) {
        return Ok(unknown("a --warn threshold is above its --crit threshold"));
    }
    let Some(spool) = spool_for(env) else {
        return Ok(unknown("no queue directory ([queue] dir)"));
    };
    let stats = match gather(env, &spool) {
        Ok(s) => s,
        Err(f) => return Ok(unknown(&f.message)),
    };
    let (status, line) = monitor::nagios(&stats, &t);
    outln!("{line}");
    Ok(plugin_exit(status))
}

fn unknown(why: &str) -> Exit {
    outln!("MAILQ UNKNOWN - {}", log::field(why));
    plugin_exit(PluginStatus::Unknown)
}

fn plugin_exit(s: PluginStatus) -> Exit {
    match s {
        PluginStatus::Ok => Exit::Ok,
        PluginStatus::Warning => Exit::PluginWarning,
        PluginStatus::Critical => Exit::PluginCritical,
        PluginStatus::Unknown => Exit::PluginUnknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::{Cause, Verdict};
    use std::time::Duration;

    fn d(account: &str, fate: Fate) -> Record {
        Record {
            id: "Q".into(),
            account: Some(account.into()),
            delay: Duration::ZERO,
            verdict: Verdict {
                address: "r@y".into(),
                fate,
                reason: None,
            },
            wire: crate::deliver::Wire::default(),
        }
    }

    #[test]
    fn counters_survive_runs_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let spool = queue::Spool::new(root, true);
        assert_eq!(read_counters(root).unwrap(), Counters::default());
        update_counters(&spool, |c| c.record(1, &[d("a", Fate::Delivered)])).unwrap();
        update_counters(&spool, |c| {
            c.record(2, &[d("a", Fate::Deferred(Cause::Temporary))])
        })
        .unwrap();
        let c = read_counters(root).unwrap();
        assert_eq!((c.totals["a"].sent, c.totals["a"].deferred), (1, 1));
        assert_eq!(c.last_run.unwrap().at, 2);
        // Only the file and its lock: no temporary files left behind.
        let mut names: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec![COUNTERS, COUNTERS_LOCK]);
        // Group-writable lock in the shared spool, whatever the umask.
        let mode = |n: &str| {
            std::fs::metadata(root.join(n))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!((mode(COUNTERS_LOCK), mode(COUNTERS)), (0o660, 0o640));
        // A damaged file starts over rather than stopping the runner.
        std::fs::write(root.join(COUNTERS), b"{not json").unwrap();
        assert!(read_counters(root).is_err());
        spool.ensure().unwrap();
        update_counters(&spool, |c| c.record(3, &[d("b", Fate::Delivered)])).unwrap();
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        let c = read_counters(root).unwrap();
        assert_eq!(c.totals.keys().collect::<Vec<_>>(), vec!["b"]);
    }

    #[test]
    fn atomic_output_is_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mailhop.prom");
        write_atomically(&p, None, b"a 1\n", 0o644, true).unwrap();
        write_atomically(&p, None, b"a 2\n", 0o644, false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"a 2\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
