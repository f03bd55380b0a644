//! The msmtp configuration importer (`import::from_msmtp`).
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
    match mailhop::import::from_msmtp(text, "/etc/msmtprc") {
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
