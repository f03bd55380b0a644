//! Deadlines on a blocking socket.
//!
//! `SO_RCVTIMEO`/`SO_SNDTIMEO` bound one system call, not a reply: a server
//! that trickles one byte every few seconds never trips them and can hold
//! a connection for ever (issue #15.9). `Timed` re-arms the socket timeout
//! before every read and write with the time left until an absolute
//! deadline, so the whole reply (or the whole message body) is bounded,
//! however the server paces its bytes. It sits under rustls too, so TLS
//! records and the handshake are bounded the same way.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What the current exchange may take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limit {
    /// Every I/O call fails with `TimedOut` from this instant on.
    pub deadline: Option<Instant>,
    /// The longest one read or write may block without progress (detects a
    /// dead peer long before a generous deadline would).
    pub idle: Option<Duration>,
}

impl Limit {
    /// No limit at all (a zero timeout in the configuration means "wait").
    pub const NONE: Limit = Limit {
        deadline: None,
        idle: None,
    };

    /// `budget` from now, and never past `cap`. A zero budget means no
    /// deadline of its own; a budget too large for the clock is none too.
    pub fn within(budget: Duration, cap: Option<Instant>) -> Limit {
        let own = (!budget.is_zero())
            .then(|| Instant::now().checked_add(budget))
            .flatten();
        Limit {
            deadline: earliest(own, cap),
            idle: None,
        }
    }

    /// The socket timeout for the next call, or `TimedOut` when the
    /// deadline has passed.
    fn next_timeout(&self, now: Instant) -> io::Result<Option<Duration>> {
        let left = match self.deadline {
            None => None,
            Some(d) => {
                let left = d.saturating_duration_since(now);
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the deadline for this exchange has passed",
                    ));
                }
                Some(left)
            }
        };
        Ok(match (left, self.idle.filter(|d| !d.is_zero())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}

/// The earlier of two optional instants (`None` is "never").
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A TCP stream whose every read and write honours `limit`.
#[derive(Debug)]
pub(crate) struct Timed {
    tcp: TcpStream,
    limit: Limit,
}

impl Timed {
    pub fn new(tcp: TcpStream) -> Timed {
        Timed {
            tcp,
            limit: Limit::NONE,
        }
    }

    pub fn set_limit(&mut self, limit: Limit) {
        self.limit = limit;
    }

    pub fn try_clone(&self) -> io::Result<Timed> {
        Ok(Timed {
            tcp: self.tcp.try_clone()?,
            limit: self.limit,
        })
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = self.limit.next_timeout(Instant::now())?;
        self.tcp.set_read_timeout(t)?;
        self.tcp.read(buf)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = self.limit.next_timeout(Instant::now())?;
        self.tcp.set_write_timeout(t)?;
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn next_timeout_is_the_smaller_of_deadline_and_idle() {
        let now = Instant::now();
        let l = Limit {
            deadline: Some(now + Duration::from_secs(10)),
            idle: Some(Duration::from_secs(3)),
        };
        assert_eq!(l.next_timeout(now).unwrap(), Some(Duration::from_secs(3)));
        let l = Limit {
            idle: Some(Duration::from_secs(30)),
            ..l
        };
        assert_eq!(l.next_timeout(now).unwrap(), Some(Duration::from_secs(10)));
        assert_eq!(Limit::NONE.next_timeout(now).unwrap(), None);
        let idle_only = Limit {
            deadline: None,
            idle: Some(Duration::from_secs(5)),
        };
        assert_eq!(
            idle_only.next_timeout(now).unwrap(),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn a_passed_deadline_is_a_timeout_without_blocking() {
        let now = Instant::now();
        let l = Limit {
            deadline: Some(now),
            idle: None,
        };
        let e = l.next_timeout(now + Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);

        // Through a real socket whose peer never writes: the read fails at
        // once instead of waiting.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _peer = listener.accept().unwrap();
        let mut t = Timed::new(tcp);
        t.set_limit(l);
        let e = t.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let e = t.write(b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn within_caps_and_survives_huge_budgets() {
        let cap = Instant::now() + Duration::from_secs(5);
        let l = Limit::within(Duration::from_secs(100), Some(cap));
        assert_eq!(l.deadline, Some(cap));
        assert_eq!(Limit::within(Duration::ZERO, None), Limit::NONE);
        assert_eq!(Limit::within(Duration::ZERO, Some(cap)).deadline, Some(cap));
        // Instant + Duration::MAX would panic; this must not.
        assert_eq!(Limit::within(Duration::MAX, None).deadline, None);
    }
}
