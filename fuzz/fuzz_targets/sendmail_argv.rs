//! The sendmail(1) argument parser (`cli::parse` with argv[0] "sendmail"):
//! the input is the rest of argv, arguments separated by NUL bytes (which
//! a real argv cannot contain), so any byte string is a possible argv.
//!
//! Invariants: no panic; the same argv always parses the same way; an
//! error has a message.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use libfuzzer_sys::fuzz_target;

fn argv(data: &[u8]) -> Vec<OsString> {
    let mut argv = vec![OsString::from("/usr/sbin/sendmail")];
    if !data.is_empty() {
        argv.extend(
            data.split(|&b| b == 0)
                .map(|a| OsString::from_vec(a.to_vec())),
        );
    }
    argv
}

fuzz_target!(|data: &[u8]| {
    let first = mailhop::cli::parse(argv(data));
    let again = mailhop::cli::parse(argv(data));
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "not deterministic"
    );
    if let Err(e) = first {
        assert!(!e.to_string().is_empty(), "empty error message");
    }
});
