//! The aliases(5) file parser (`aliases::Aliases::parse`) and expansion.
//!
//! Invariants: no panic; every alias defined
//! expands (or reports a loop / too deep / too large) without panicking,
//! to a list without case-insensitive duplicates; `validate` agrees with
//! `parse` on whether the file parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailhop::aliases::{Aliases, validate};

/// Names whose expansions are checked: the first word of each line.
fn candidate_names(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .take(64)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // validate() parses and expands every alias defined.
    let validated = validate("fuzz-aliases", data);
    let Ok(parsed) = Aliases::parse("fuzz-aliases", data) else {
        assert!(validated.is_err(), "validate accepted what parse refused");
        return;
    };
    for name in candidate_names(data) {
        let Ok(expansion) = parsed.aliases.expand(&name) else {
            continue;
        };
        let mut seen = std::collections::HashSet::new();
        for address in &expansion.addresses {
            assert!(
                seen.insert(address.to_ascii_lowercase()),
                "duplicate {address:?} in the expansion of {name:?}"
            );
        }
    }
});
