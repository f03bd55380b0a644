//! The queue record (`queue::Meta`): what a crash or a damaged disk may
//! leave in the spool.
//!
//! Invariants: no panic; whatever parses is written back by `to_bytes` in
//! a form that parses to the identical record, and writing is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailhop::queue::Meta;

fuzz_target!(|data: &[u8]| {
    let Ok(meta) = Meta::parse(data) else {
        return;
    };
    let bytes = meta.to_bytes();
    let again = match Meta::parse(&bytes) {
        Ok(m) => m,
        Err(e) => panic!("to_bytes wrote what parse refuses: {e}"),
    };
    assert_eq!(again, meta, "queue record round trip");
    assert_eq!(again.to_bytes(), bytes, "to_bytes is not stable");
});
