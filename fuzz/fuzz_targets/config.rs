//! The configuration parser (`config::parse`, what `config::load` runs on
//! the file's text).
//!
//! Invariants: no panic on any text; a refusal has a message; an accepted
//! configuration's account lookup does not panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // load() reads the file with read_to_string: non-UTF-8 never gets here.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match mailhop::config::parse(Path::new("/etc/mailhop.toml"), text) {
        Ok(config) => {
            let _ = config.account_for("root@example.org");
            let _ = config.account_for("");
        }
        Err(e) => assert!(!e.to_string().is_empty(), "empty error message"),
    }
});
