//! What monitoring tools read, computed from the queue's metadata alone:
//! queue statistics, the Prometheus text exposition (for node_exporter's
//! textfile collector), and the Nagios/Icinga plugin status line. Pure: no
//! files, no clock; the caller passes the metas, the counters and "now".

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::deliver::{Fate, Record};
use crate::queue::Meta;

/// The account label of items queued while no smarthost was configured.
pub const NO_ACCOUNT: &str = "(none)";

/// How many recipients went which way: a counter set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Accepted by the smarthost (Postfix's `status=sent`).
    pub sent: u64,
    /// Left in the queue for a later attempt (`status=deferred`).
    pub deferred: u64,
    /// Failed for good, and bounced to the sender (`status=bounced`).
    pub bounced: u64,
}

impl Tally {
    fn add(&mut self, fate: Fate) {
        let slot = match fate {
            Fate::Delivered => &mut self.sent,
            Fate::Deferred(_) => &mut self.deferred,
            Fate::Failed(_) => &mut self.bounced,
        };
        *slot = slot.saturating_add(1);
    }

    fn merge(&mut self, other: &Tally) {
        self.sent = self.sent.saturating_add(other.sent);
        self.deferred = self.deferred.saturating_add(other.deferred);
        self.bounced = self.bounced.saturating_add(other.bounced);
    }
}

/// The last queue run: when, and what it did per account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    /// Seconds since the epoch.
    pub at: u64,
    pub accounts: BTreeMap<String, Tally>,
}

/// The counters file: totals since it was made (monotonic, as Prometheus
/// counters must be), of sendmail's attempts and queue runs, and the last
/// queue run's own numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    #[serde(default)]
    pub totals: BTreeMap<String, Tally>,
    #[serde(default)]
    pub last_run: Option<LastRun>,
}

/// The most accounts a counters file keeps: names come from the
/// configuration, but the file is read back, so it stays bounded even if
/// it was tampered with.
const MAX_ACCOUNTS: usize = 1000;

/// Per-account tallies of some per-recipient outcomes.
fn tally(deliveries: &[Record]) -> BTreeMap<String, Tally> {
    let mut out: BTreeMap<String, Tally> = BTreeMap::new();
    for d in deliveries {
        let name = d.account.as_deref().unwrap_or(NO_ACCOUNT);
        if out.len() < MAX_ACCOUNTS || out.contains_key(name) {
            out.entry(name.to_string()).or_default().add(d.verdict.fate);
        }
    }
    out
}

impl Counters {
    /// Adds one queue run's per-recipient outcomes to the totals, and makes
    /// it the last run.
    pub fn record(&mut self, at: u64, deliveries: &[Record]) {
        let run = LastRun {
            at,
            accounts: tally(deliveries),
        };
        self.merge(&run.accounts);
        self.last_run = Some(run);
    }

    /// Adds outcomes of a send outside a queue run (sendmail's own
    /// attempt) to the totals only.
    pub fn add(&mut self, deliveries: &[Record]) {
        self.merge(&tally(deliveries));
    }

    fn merge(&mut self, accounts: &BTreeMap<String, Tally>) {
        for (name, t) in accounts {
            if self.totals.len() < MAX_ACCOUNTS || self.totals.contains_key(name) {
                self.totals.entry(name.clone()).or_default().merge(t);
            }
        }
    }
}

/// One account's share of the queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccountStats {
    /// Messages in the queue (held ones included).
    pub items: u64,
    pub held: u64,
    /// Messages tried at least once and still waiting.
    pub deferred: u64,
    /// The age of its oldest message that is not held, in seconds.
    pub oldest_seconds: u64,
    /// Recipients since the counters file was made, by sendmail and by
    /// queue runs.
    pub totals: Tally,
    /// Recipients in the last queue run.
    pub last_run: Tally,
}

/// The whole queue, and each account's part of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    pub items: u64,
    pub held: u64,
    pub deferred: u64,
    /// Messages in failed/: bounces that could not be delivered.
    pub failed: u64,
    /// Queue items whose metadata could not be read.
    pub damaged: u64,
    /// The age of the oldest message that is not held, in seconds: a held
    /// message waits because someone chose so, not because mail is stuck.
    pub oldest_seconds: u64,
    /// When the queue last ran (seconds since the epoch), if ever.
    pub last_run_at: Option<u64>,
    pub accounts: BTreeMap<String, AccountStats>,
}

/// Counts the queue. `now` is seconds since the epoch.
pub fn stats(
    queued: &[Meta],
    failed: usize,
    damaged: usize,
    counters: &Counters,
    now: u64,
) -> QueueStats {
    let mut s = QueueStats {
        failed: failed as u64,
        damaged: damaged as u64,
        last_run_at: counters.last_run.as_ref().map(|r| r.at),
        ..QueueStats::default()
    };
    for m in queued {
        let name = m.account.as_deref().unwrap_or(NO_ACCOUNT).to_string();
        let a = s.accounts.entry(name).or_default();
        let age = now.saturating_sub(m.arrival);
        s.items += 1;
        a.items += 1;
        if m.hold {
            s.held += 1;
            a.held += 1;
        } else {
            s.oldest_seconds = s.oldest_seconds.max(age);
            a.oldest_seconds = a.oldest_seconds.max(age);
        }
        if m.attempts > 0 {
            s.deferred += 1;
            a.deferred += 1;
        }
    }
    for (name, t) in &counters.totals {
        s.accounts.entry(name.clone()).or_default().totals = *t;
    }
    if let Some(run) = &counters.last_run {
        for (name, t) in &run.accounts {
            s.accounts.entry(name.clone()).or_default().last_run = *t;
        }
    }
    s
}

/// A Prometheus label value: backslash, double quote and newline escaped
/// (the text exposition format's only escapes).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One metric family: its HELP and TYPE lines, then one sample per
/// account.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    s: &QueueStats,
    value: impl Fn(&AccountStats) -> u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (account, a) in &s.accounts {
        let _ = writeln!(out, "{name}{{account=\"{}\"}} {}", label(account), value(a));
    }
}

/// A metric with one sample and no labels.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// The statistics in the Prometheus text exposition format (version
/// 0.0.4): `mailhop_…` names, counters ending in `_total`, ages in
/// `_seconds`, one `account` label.
pub fn prometheus(s: &QueueStats) -> String {
    let mut out = String::new();
    let gauge = "gauge";
    let counter = "counter";
    family(
        &mut out,
        "mailhop_queue_messages",
        gauge,
        "Messages in the queue.",
        s,
        |a| a.items,
    );
    family(
        &mut out,
        "mailhop_queue_held_messages",
        gauge,
        "Messages on hold.",
        s,
        |a| a.held,
    );
    family(
        &mut out,
        "mailhop_queue_deferred_messages",
        gauge,
        "Messages tried at least once and waiting for the next attempt.",
        s,
        |a| a.deferred,
    );
    family(
        &mut out,
        "mailhop_queue_oldest_message_age_seconds",
        gauge,
        "Age of the oldest message that is not held.",
        s,
        |a| a.oldest_seconds,
    );
    family(
        &mut out,
        "mailhop_recipients_sent_total",
        counter,
        "Recipients the smarthost accepted.",
        s,
        |a| a.totals.sent,
    );
    family(
        &mut out,
        "mailhop_recipients_deferred_total",
        counter,
        "Recipient attempts deferred.",
        s,
        |a| a.totals.deferred,
    );
    family(
        &mut out,
        "mailhop_recipients_bounced_total",
        counter,
        "Recipients that failed for good (bounced, or refused to the caller).",
        s,
        |a| a.totals.bounced,
    );
    family(
        &mut out,
        "mailhop_last_run_recipients_sent",
        gauge,
        "Recipients the last queue run delivered.",
        s,
        |a| a.last_run.sent,
    );
    family(
        &mut out,
        "mailhop_last_run_recipients_failed",
        gauge,
        "Recipients the last queue run deferred or bounced.",
        s,
        |a| a.last_run.deferred.saturating_add(a.last_run.bounced),
    );
    single(
        &mut out,
        "mailhop_queue_failed_messages",
        gauge,
        "Messages in failed/ (bounces that could not be delivered).",
        s.failed,
    );
    single(
        &mut out,
        "mailhop_queue_damaged_messages",
        gauge,
        "Queue items whose metadata cannot be read.",
        s.damaged,
    );
    if let Some(at) = s.last_run_at {
        single(
            &mut out,
            "mailhop_last_run_timestamp_seconds",
            gauge,
            "When the queue last ran, seconds since the epoch.",
            at,
        );
    }
    out
}

/// A Nagios/Icinga plugin status, whose number is the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PluginStatus {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl PluginStatus {
    pub fn word(self) -> &'static str {
        match self {
            PluginStatus::Ok => "OK",
            PluginStatus::Warning => "WARNING",
            PluginStatus::Critical => "CRITICAL",
            PluginStatus::Unknown => "UNKNOWN",
        }
    }
}

/// The thresholds of `mailhop check --queue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub warn_age: Duration,
    pub crit_age: Duration,
    pub warn_count: Option<u64>,
    pub crit_count: Option<u64>,
}

/// The plugin's verdict on the queue and its one output line:
/// `MAILQ OK - 0 messages | messages=0;10;50;0 oldest=0s;3600;21600;0`.
/// Damaged items make it UNKNOWN (the numbers are incomplete); messages
/// in failed/ are at least a WARNING (they stay until someone looks).
pub fn nagios(s: &QueueStats, t: &Thresholds) -> (PluginStatus, String) {
    let over = |v: u64, limit: Option<u64>| limit.is_some_and(|l| v >= l);
    let age = s.oldest_seconds;
    let mut status = if age >= t.crit_age.as_secs() || over(s.items, t.crit_count) {
        PluginStatus::Critical
    } else if age >= t.warn_age.as_secs() || over(s.items, t.warn_count) || s.failed > 0 {
        PluginStatus::Warning
    } else {
        PluginStatus::Ok
    };
    if s.damaged > 0 {
        status = PluginStatus::Unknown;
    }
    let mut text = format!(
        "MAILQ {} - {} message{}",
        status.word(),
        s.items,
        if s.items == 1 { "" } else { "s" }
    );
    if s.items > 0 {
        let _ = write!(text, ", oldest {}", human_age(age));
    }
    if s.held > 0 {
        let _ = write!(text, ", {} held", s.held);
    }
    if s.failed > 0 {
        let _ = write!(text, ", {} in failed/", s.failed);
    }
    if s.damaged > 0 {
        let _ = write!(text, ", {} unreadable", s.damaged);
    }
    let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    let _ = write!(
        text,
        " | messages={};{};{};0 oldest={age}s;{};{};0 held={};;;0 failed={};;;0",
        s.items,
        opt(t.warn_count),
        opt(t.crit_count),
        t.warn_age.as_secs(),
        t.crit_age.as_secs(),
        s.held,
        s.failed,
    );
    (status, text)
}

/// An age for people: `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn human_age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// Parses an age as operators write it: `30m`, `6h`, `2d`, `90s` or bare
/// seconds (`3600`). At most ten years, so arithmetic on it cannot
/// overflow.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    const MAX: u64 = 10 * 365 * 86_400;
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "\"{text}\" is not an age: use seconds, or a number with s, m, h, d or w (30m, 6h, 2d)"
            ));
        }
    };
    let n: u64 = digits.parse().map_err(|_| {
        format!("\"{text}\" is not an age: it must start with a number (30m, 6h, 2d)")
    })?;
    n.checked_mul(unit_secs)
        .filter(|s| *s <= MAX)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("\"{text}\" is more than ten years"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::{Cause, Verdict};
    use crate::queue::{RcptState, Recipient};

    fn meta(account: Option<&str>, arrival: u64, attempts: u32, hold: bool) -> Meta {
        Meta {
            id: "0000000000000000000000000000A".into(),
            arrival,
            sender: "s@x".into(),
            account: account.map(str::to_string),
            uid: 0,
            attempts,
            next_attempt: 0,
            last_error: None,
            hold,
            eight_bit: false,
            dsn_notify: None,
            dsn_ret_full: None,
            dsn_envid: None,
            recipients: vec![Recipient {
                address: "r@y".into(),
                state: RcptState::Pending,
                last_error: None,
                via: None,
                dsn: Default::default(),
            }],
            header: Vec::new(),
        }
    }

    fn delivery(account: Option<&str>, fate: Fate) -> Record {
        Record {
            id: "X".into(),
            account: account.map(str::to_string),
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
    fn counts_items_held_deferred_and_the_oldest_unheld() {
        let now = 10_000;
        let q = vec![
            meta(Some("o365"), now - 100, 0, false),
            meta(Some("o365"), now - 5000, 3, false),
            // Held and older: not what "stuck" means.
            meta(Some("o365"), now - 9000, 1, true),
            meta(None, now - 10, 0, false),
        ];
        let s = stats(&q, 2, 0, &Counters::default(), now);
        assert_eq!((s.items, s.held, s.deferred, s.failed), (4, 1, 2, 2));
        assert_eq!(s.oldest_seconds, 5000);
        let o = &s.accounts["o365"];
        assert_eq!(
            (o.items, o.held, o.deferred, o.oldest_seconds),
            (3, 1, 2, 5000)
        );
        assert_eq!(s.accounts[NO_ACCOUNT].items, 1);
        assert_eq!(s.last_run_at, None);
    }

    #[test]
    fn counters_add_up_and_keep_the_last_run() {
        let mut c = Counters::default();
        c.record(
            100,
            &[
                delivery(Some("a"), Fate::Delivered),
                delivery(Some("a"), Fate::Deferred(Cause::Temporary)),
                delivery(Some("b"), Fate::Failed(Cause::UnknownUser)),
            ],
        );
        c.record(200, &[delivery(Some("a"), Fate::Delivered)]);
        // sendmail's own attempts count in the totals, not as a run.
        c.add(&[delivery(Some("c"), Fate::Delivered)]);
        assert_eq!(c.totals["c"].sent, 1);
        assert_eq!(
            c.totals["a"],
            Tally {
                sent: 2,
                deferred: 1,
                bounced: 0
            }
        );
        assert_eq!(c.totals["b"].bounced, 1);
        let last = c.last_run.clone().unwrap();
        assert_eq!(last.at, 200);
        assert_eq!(last.accounts["a"].sent, 1);
        assert!(!last.accounts.contains_key("b"));
        // Round trip through the file format.
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Counters>(&text).unwrap(), c);
        let s = stats(&[], 0, 0, &c, 300);
        assert_eq!(s.accounts["a"].totals.sent, 2);
        assert_eq!(s.accounts["b"].last_run, Tally::default());
        assert_eq!(s.last_run_at, Some(200));
    }

    #[test]
    fn prometheus_text_is_well_formed() {
        let mut c = Counters::default();
        c.record(1234, &[delivery(Some("we\"ird\\\n"), Fate::Delivered)]);
        let q = vec![meta(Some("o365"), 0, 1, false)];
        let text = prometheus(&stats(&q, 1, 0, &c, 60));
        assert!(
            text.contains("mailhop_queue_messages{account=\"o365\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mailhop_queue_oldest_message_age_seconds{account=\"o365\"} 60\n"),
            "{text}"
        );
        assert!(
            text.contains("mailhop_recipients_sent_total{account=\"we\\\"ird\\\\\\n\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("mailhop_queue_failed_messages 1\n"), "{text}");
        assert!(
            text.contains("mailhop_last_run_timestamp_seconds 1234\n"),
            "{text}"
        );
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(name.starts_with("mailhop_"), "{line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            } else if !line.starts_with("# HELP ") {
                let value = line.rsplit_once(' ').unwrap().1;
                assert!(value.parse::<u64>().is_ok(), "{line}");
            }
        }
    }

    fn t(warn: u64, crit: u64) -> Thresholds {
        Thresholds {
            warn_age: Duration::from_secs(warn),
            crit_age: Duration::from_secs(crit),
            warn_count: None,
            crit_count: None,
        }
    }

    #[test]
    fn nagios_status_and_perfdata() {
        let empty = stats(&[], 0, 0, &Counters::default(), 0);
        let (st, line) = nagios(&empty, &t(3600, 21_600));
        assert_eq!(st, PluginStatus::Ok);
        assert_eq!(
            line,
            "MAILQ OK - 0 messages | messages=0;;;0 oldest=0s;3600;21600;0 held=0;;;0 failed=0;;;0"
        );
        let q = vec![meta(Some("a"), 0, 1, false)];
        let at = |now| {
            nagios(
                &stats(&q, 0, 0, &Counters::default(), now),
                &t(3600, 21_600),
            )
        };
        assert_eq!(at(3599).0, PluginStatus::Ok);
        assert_eq!(at(3600).0, PluginStatus::Warning);
        let (st, line) = at(21_600);
        assert_eq!(st, PluginStatus::Critical);
        assert!(
            line.starts_with("MAILQ CRITICAL - 1 message, oldest 6h 0m |"),
            "{line}"
        );
        let counted = Thresholds {
            warn_count: Some(1),
            crit_count: Some(5),
            ..t(3600, 7200)
        };
        let (st, line) = nagios(&stats(&q, 0, 0, &Counters::default(), 0), &counted);
        assert_eq!(st, PluginStatus::Warning);
        assert!(
            line.contains("| messages=1;1;5;0 oldest=0s;3600;7200;0"),
            "{line}"
        );
        // failed/ is a warning; damaged items make the numbers unknown.
        assert_eq!(
            nagios(&stats(&[], 1, 0, &Counters::default(), 0), &t(1, 2)).0,
            PluginStatus::Warning
        );
        assert_eq!(
            nagios(&stats(&q, 0, 1, &Counters::default(), 9), &t(1, 2)).0,
            PluginStatus::Unknown
        );
    }

    #[test]
    fn ages_parse_like_operators_write_them() {
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_age("6h"), Ok(Duration::from_secs(21_600)));
        assert_eq!(parse_age("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("3600"), Ok(Duration::from_secs(3600)));
        for bad in [
            "",
            "h",
            "6x",
            "-1h",
            "1.5h",
            "6 h",
            "99999999999999999999d",
            "5000w",
        ] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(3 * 3600 + 300), "3h 5m");
        assert_eq!(human_age(2 * 86_400 + 4 * 3600), "2d 4h");
    }
}
