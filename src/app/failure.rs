use std::io::{self};

use crate::deliver::{Cause, Fate};
use crate::exit::{self, Exit};
use crate::queue;
use crate::transport;

/// An error on its way to the exit status: the message for stderr and the
/// sysexits code.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) exit: Exit,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
        }
    }
}

pub(super) trait MaxConfig {
    fn max_config(self) -> Exit;
}

impl MaxConfig for Exit {
    /// A file the configuration names is missing: that is a config error.
    fn max_config(self) -> Exit {
        match self {
            Exit::CantCreat => Exit::Config,
            other => other,
        }
    }
}

/// The sysexits code for a submission failure (see EXIT STATUS).
pub fn exit_for(e: &transport::Error) -> Exit {
    use transport::Kind;
    if e.is_transient() {
        return Exit::TempFail;
    }
    match &e.kind {
        Kind::AuthFailed(_) => Exit::NoPerm,
        Kind::Config | Kind::Credentials => Exit::Config,
        Kind::AllRecipientsRejected(_) => Exit::NoUser,
        Kind::Protocol => Exit::TempFail,
        _ => Exit::Unavailable,
    }
}

impl From<queue::QueueError> for Failure {
    fn from(e: queue::QueueError) -> Failure {
        queue_failure(e)
    }
}

impl From<crate::dkim::DkimError> for Failure {
    fn from(e: crate::dkim::DkimError) -> Failure {
        Failure::new(dkim_exit(&e), e.to_string())
    }
}

impl From<crate::oauth::OAuthError> for Failure {
    /// A flow without a login (client credentials, token_command) is a
    /// configuration matter; a refused sign-in is a permission one; an
    /// unreachable endpoint is worth retrying.
    fn from(e: crate::oauth::OAuthError) -> Failure {
        let code = if e.is_transient() {
            Exit::TempFail
        } else if matches!(e, crate::oauth::OAuthError::Config(_)) {
            Exit::Config
        } else {
            Exit::NoPerm
        };
        Failure::new(code, e.to_string())
    }
}

impl From<transport::Error> for Failure {
    fn from(e: transport::Error) -> Failure {
        Failure::new(exit_for(&e), e.detail)
    }
}

pub(super) fn queue_failure(e: queue::QueueError) -> Failure {
    let code = match &e {
        queue::QueueError::NotFound(_) | queue::QueueError::BadId(_) => Exit::Usage,
        queue::QueueError::Busy(_) => Exit::TempFail,
        queue::QueueError::Corrupt { .. } => Exit::DataErr,
        queue::QueueError::Io { error, .. } => exit::from_io(error.kind()),
    };
    Failure::new(code, e.to_string())
}

pub(super) fn dkim_exit(e: &crate::dkim::DkimError) -> Exit {
    use crate::dkim::DkimError as D;
    match e {
        D::InvalidDomain { .. }
        | D::InvalidSelector { .. }
        | D::InvalidHeaderName { .. }
        | D::KeygenBits { .. } => Exit::Usage,
        D::KeyExists { .. } | D::KeyWrite { .. } => Exit::CantCreat,
        D::KeyOpen { error, .. } | D::KeyRead { error, .. }
            if error.kind() == io::ErrorKind::PermissionDenied =>
        {
            Exit::NoPerm
        }
        D::KeyOwner { .. }
        | D::KeyWorldAccessible { .. }
        | D::KeyGroupAccessible { .. }
        | D::KeySymlink { .. } => Exit::NoPerm,
        D::Resolver { .. } => Exit::TempFail,
        D::Output { .. } => Exit::IoErr,
        _ => Exit::Config,
    }
}

/// The exit status for one recipient's fate in the foreground (see EXIT
/// STATUS in mailhop(8)). A deferred recipient reaches this only when the
/// message could not be queued; in the queue it is not a failure.
pub(super) fn exit_for_fate(fate: Fate) -> Exit {
    match fate {
        Fate::Delivered => Exit::Ok,
        Fate::Deferred(Cause::NoSmarthost) => Exit::Unavailable,
        Fate::Deferred(_) => Exit::TempFail,
        Fate::Failed(Cause::UnknownUser) => Exit::NoUser,
        Fate::Failed(Cause::SenderRefused) => Exit::NoPerm,
        Fate::Failed(_) => Exit::Unavailable,
    }
}

/// The SMTP reply at the end of DATA for a message the send pipeline did
/// not take (see SMTP SERVER in mailhop(8)): the same decision as the exit
/// status, told to an SMTP client. A temporary failure is 451, so the
/// client keeps the message and retries; everything else is a 5xx with
/// the reason. The text is made one bounded printable line by `Reply`.
pub(super) fn reply_for(failure: &Failure) -> crate::smtpd::Reply {
    use crate::smtpd::Reply;
    // A message's lines (the reason, where it was saved) become one.
    let text = failure.message.replace('\n', "; ");
    match failure.exit {
        Exit::TempFail | Exit::IoErr | Exit::OsErr | Exit::CantCreat => {
            Reply::new(451, "4.3.0", text)
        }
        Exit::DataErr | Exit::NoInput => Reply::new(554, "5.6.0", text),
        Exit::NoUser => Reply::new(550, "5.1.1", text),
        Exit::NoPerm => Reply::new(550, "5.7.1", text),
        // A configuration error is the administrator's to fix; the client
        // should keep the message meanwhile.
        // The Nagios statuses belong to `check --queue`; never a send's.
        Exit::Config
        | Exit::Software
        | Exit::PluginWarning
        | Exit::PluginCritical
        | Exit::PluginUnknown => Reply::new(451, "4.3.5", text),
        Exit::Ok | Exit::Usage | Exit::Unavailable => Reply::new(554, "5.0.0", text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exit_maps_to_a_reply() {
        for exit in Exit::ALL {
            let r = reply_for(&Failure::new(exit, "why\nmore"));
            assert!(r.code >= 400, "{exit:?}");
            assert_eq!(r.status.as_bytes()[0], r.code.to_string().as_bytes()[0]);
            assert_eq!(r.text, "why; more");
        }
        assert_eq!(reply_for(&Failure::new(Exit::TempFail, "x")).code, 451);
        assert_eq!(reply_for(&Failure::new(Exit::DataErr, "x")).code, 554);
        assert_eq!(reply_for(&Failure::new(Exit::NoUser, "x")).code, 550);
        assert_eq!(reply_for(&Failure::new(Exit::NoPerm, "x")).status, "5.7.1");
        assert_eq!(reply_for(&Failure::new(Exit::Unavailable, "x")).code, 554);
    }
}
