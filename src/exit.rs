//! The one sysexits(3) table. Every module's error maps to one of these at
//! the edge (`app`); nothing else in the crate calls `std::process::exit`.

/// Exit status, as defined by `<sysexits.h>`, which is what callers of
/// sendmail (cron, PHP, mutt) interpret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success: every recipient was delivered, or the message was queued.
    Ok = 0,
    /// EX_USAGE: bad command line.
    Usage = 64,
    /// EX_DATAERR: the message itself is malformed (NUL bytes, huge header, bad address).
    DataErr = 65,
    /// EX_NOINPUT: empty input, or an input file that does not exist.
    NoInput = 66,
    /// EX_NOUSER: no such recipient (unknown local user, every RCPT rejected).
    NoUser = 67,
    /// EX_UNAVAILABLE: a permanent failure (5xx, no smarthost for a remote recipient).
    Unavailable = 69,
    /// EX_SOFTWARE: an internal error.
    Software = 70,
    /// EX_OSERR: the operating system failed us (fork, hostname).
    OsErr = 71,
    /// EX_CANTCREAT: a file that must be written cannot be created.
    CantCreat = 73,
    /// EX_IOERR: an I/O error on a file we had open.
    IoErr = 74,
    /// EX_TEMPFAIL: try again later; the message is not lost.
    TempFail = 75,
    /// EX_NOPERM: permission denied, including failed authentication.
    NoPerm = 77,
    /// EX_CONFIG: the configuration is wrong.
    Config = 78,
    /// Nagios/Icinga plugin WARNING; only `mailhop check --queue` uses it
    /// (and the next two), as monitoring plugins must.
    PluginWarning = 1,
    /// Nagios/Icinga plugin CRITICAL.
    PluginCritical = 2,
    /// Nagios/Icinga plugin UNKNOWN.
    PluginUnknown = 3,
}

impl Exit {
    /// The numeric process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The `<sysexits.h>` name, used in logs and the man page.
    pub fn name(self) -> &'static str {
        match self {
            Exit::Ok => "EX_OK",
            Exit::Usage => "EX_USAGE",
            Exit::DataErr => "EX_DATAERR",
            Exit::NoInput => "EX_NOINPUT",
            Exit::NoUser => "EX_NOUSER",
            Exit::Unavailable => "EX_UNAVAILABLE",
            Exit::Software => "EX_SOFTWARE",
            Exit::OsErr => "EX_OSERR",
            Exit::CantCreat => "EX_CANTCREAT",
            Exit::IoErr => "EX_IOERR",
            Exit::TempFail => "EX_TEMPFAIL",
            Exit::NoPerm => "EX_NOPERM",
            Exit::Config => "EX_CONFIG",
            Exit::PluginWarning => "WARNING",
            Exit::PluginCritical => "CRITICAL",
            Exit::PluginUnknown => "UNKNOWN",
        }
    }

    /// Every sysexits status, for the man page test and documentation
    /// (the plugin statuses are documented with `check --queue`).
    pub const ALL: [Exit; 13] = [
        Exit::Ok,
        Exit::Usage,
        Exit::DataErr,
        Exit::NoInput,
        Exit::NoUser,
        Exit::Unavailable,
        Exit::Software,
        Exit::OsErr,
        Exit::CantCreat,
        Exit::IoErr,
        Exit::TempFail,
        Exit::NoPerm,
        Exit::Config,
    ];
}

/// Maps an I/O error kind to the closest sysexits status.
pub fn from_io(kind: std::io::ErrorKind) -> Exit {
    use std::io::ErrorKind as K;
    match kind {
        K::PermissionDenied | K::ReadOnlyFilesystem => Exit::NoPerm,
        K::NotFound => Exit::CantCreat,
        K::StorageFull | K::QuotaExceeded | K::Interrupted | K::WouldBlock => Exit::TempFail,
        _ => Exit::IoErr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_sysexits_h() {
        assert_eq!(Exit::Usage.code(), 64);
        assert_eq!(Exit::DataErr.code(), 65);
        assert_eq!(Exit::NoInput.code(), 66);
        assert_eq!(Exit::NoUser.code(), 67);
        assert_eq!(Exit::Unavailable.code(), 69);
        assert_eq!(Exit::TempFail.code(), 75);
        assert_eq!(Exit::NoPerm.code(), 77);
        assert_eq!(Exit::Config.code(), 78);
    }
}
