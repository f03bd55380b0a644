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
