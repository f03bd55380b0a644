//! mailhop: a small, secure drop-in for `/usr/sbin/sendmail` on machines
//! with no mail server. It takes what cron, PHP and friends pipe in, fixes
//! the message up, and delivers it (locally, or to a smarthost).
//!
//! Layering (dependencies point downwards only):
//! - `app`: the only layer that touches stdin, the environment, the clock,
//!   the hostname, the uid and the exit code;
//! - `config`: TOML to validated settings;
//! - `cli`, `message`, `aliases`, `local`, `log`: each one concern, none of
//!   them receives the whole configuration;
//! - `exit`: the one sysexits table.

#![forbid(unsafe_code)]

pub mod aliases;
pub mod app;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod deliver;
pub mod discover;
pub mod dkim;
pub mod dns;
pub mod exit;
pub mod import;
pub mod local;
pub mod log;
pub mod message;
pub mod monitor;
pub mod oauth;
pub mod queue;
pub mod scrub;
pub mod smtpd;
pub mod transport;
