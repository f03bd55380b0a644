use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The local time zone, read straight from its TZif file: `$TZ` (a zone
/// name or `:/path`) or `/etc/localtime`, else UTC. jiff's own
/// `TimeZone::system()` walks all of /usr/share/zoneinfo to learn the
/// zone's name, which we do not need, on every message.
pub(super) fn local_timezone() -> jiff::tz::TimeZone {
    let path = match std::env::var("TZ") {
        Ok(tz) if !tz.is_empty() => {
            let tz = tz.trim_start_matches(':');
            if tz.starts_with('/') {
                PathBuf::from(tz)
            } else if tz.contains("..") {
                return jiff::tz::TimeZone::UTC;
            } else {
                Path::new("/usr/share/zoneinfo").join(tz)
            }
        }
        _ => PathBuf::from("/etc/localtime"),
    };
    std::fs::read(&path)
        .ok()
        .and_then(|data| jiff::tz::TimeZone::tzif("localtime", &data).ok())
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
    let mut rnd = [0u8; 8];
    let _ = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut rnd));
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "<{secs}.{}.{:016x}@{hostname}>",
        std::process::id(),
        u64::from_be_bytes(rnd)
    )
}
