use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The local time zone, read straight from its TZif file: `$TZ` (a zone
/// name or `:/path`) or `/etc/localtime`, else UTC. jiff's own
/// `TimeZone::system()` walks all of /usr/share/zoneinfo to learn the
/// zone's name, which we do not need, on every message. With the
/// set-group-ID group held, `$TZ` is the caller's: only a zone name under
/// /usr/share/zoneinfo is taken from it, never a path, and the file read
/// is bounded (a TZif file is a few KiB; /dev/zero is not one).
pub(super) fn local_timezone() -> jiff::tz::TimeZone {
    const MAX_TZIF: u64 = 256 * 1024;
    let path = match std::env::var("TZ") {
        Ok(tz) if !tz.is_empty() => {
            let tz = tz.trim_start_matches(':');
            if tz.contains("..") || (tz.starts_with('/') && super::env::elevated()) {
                return jiff::tz::TimeZone::UTC;
            } else if tz.starts_with('/') {
                PathBuf::from(tz)
            } else {
                Path::new("/usr/share/zoneinfo").join(tz)
            }
        }
        _ => PathBuf::from("/etc/localtime"),
    };
    let mut data = Vec::new();
    let read = std::fs::File::open(&path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_TZIF), &mut data));
    read.ok()
        .and_then(|_| jiff::tz::TimeZone::tzif("localtime", &data).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC)
}

/// RFC 5322 date-time in the local zone.
pub(super) fn rfc5322_date(now: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let zoned = ts.to_zoned(local_timezone());
    zoned.strftime("%a, %d %b %Y %H:%M:%S %z").to_string()
}

/// A msg-id: time, pid and 64 random bits, so it is unique without state.
pub(super) fn message_id(now: SystemTime, hostname: &str) -> String {
    let secs = unix_secs(now);
    let rnd = random_u64();
    format!("<{secs}.{}.{:016x}@{hostname}>", std::process::id(), rnd)
}

/// Seconds since the epoch (0 for a clock before 1970).
pub(super) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 64 random bits from the operating system (ring's `SystemRandom`,
/// getrandom(2)). Message-IDs must not be guessable; should the kernel ever
/// refuse, the pid and the clock's nanoseconds stand in rather than zeros.
fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut rnd = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut rnd).is_ok() {
        return u64::from_be_bytes(rnd);
    }
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (u64::from(std::process::id()) << 32) ^ u64::from(nanos)
}
