//! The ssmtp configuration importer (`import::from_ssmtp`). The input is
//! ssmtp.conf, then optionally a NUL byte and the revaliases file.
//!
//! Invariants: no panic; what it produces is a configuration mailhop
//! loads (the importer's promise: a file that does not load helps nobody).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (conf, revaliases) = match text.split_once('\0') {
        Some((conf, rev)) => (conf, Some((rev, "/etc/ssmtp/revaliases"))),
        None => (text, None),
    };
    match mailhop::import::from_ssmtp(conf, "/etc/ssmtp/ssmtp.conf", revaliases) {
        Ok(imported) => {
            if let Err(e) = mailhop::config::parse(Path::new("imported.toml"), &imported.toml) {
                panic!(
                    "the imported configuration does not load: {e}\n{}",
                    imported.toml
                );
            }
        }
        Err(e) => assert!(!e.message.is_empty(), "empty error message"),
    }
});
