//! The one integration test binary (as in ripgrep): every test runs the
//! built `mailhop` executable, under the argv[0] a real caller would use.

// The whole crate is test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attacker;
mod callers;
mod certs;
mod core;
mod dkim;
mod failover;
mod hardening;
mod import;
mod intake;
#[cfg(feature = "keyring")]
mod keyring;
mod manpage;
mod monitor;
mod oauth;
mod postfix;
mod privilege;
mod queue;
mod scripted;
mod scrub;
mod serve;
mod setup;
mod smtpd;
mod submission;
mod transport_faults;
mod util;
