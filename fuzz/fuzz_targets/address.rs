//! Address parsing and rendering (`message::address`): header values such
//! as To:, Cc: and From:, and `-f` senders.
//!
//! Invariants: no panic; whatever parses renders to text that parses to
//! the same value (lists and single mailboxes), and rendering is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailhop::message::address::{
    Address, addresses, parse_address_list, parse_mailbox, render_list,
};

fn list_round_trip(data: &[u8]) {
    let Ok(list) = parse_address_list(data) else {
        return;
    };
    let rendered = render_list(&list);
    let again = match parse_address_list(&rendered) {
        Ok(again) => again,
        Err(e) => panic!(
            "rendered list does not parse: {e}: {:?}",
            String::from_utf8_lossy(&rendered)
        ),
    };
    assert_eq!(
        again,
        list,
        "list round trip via {:?}",
        String::from_utf8_lossy(&rendered)
    );
    assert_eq!(render_list(&again), rendered, "list rendering not stable");
    for item in &list {
        if let Address::Mailbox(m) = item {
            let _ = m.display_text();
            assert_eq!(
                m.is_qualified(),
                m.addr_spec().contains('@') && m.domain.is_some()
            );
        }
    }
    // The streaming form gives the same entries.
    let streamed: Result<Vec<Address>, _> =
        addresses(data).expect("tokenised once already").collect();
    assert_eq!(streamed.ok().as_ref(), Some(&list), "streamed list differs");
}

fn mailbox_round_trip(data: &[u8]) {
    let Ok(mailbox) = parse_mailbox(data) else {
        return;
    };
    let rendered = mailbox.render();
    let again = match parse_mailbox(&rendered) {
        Ok(again) => again,
        Err(e) => panic!(
            "rendered mailbox does not parse: {e}: {:?}",
            String::from_utf8_lossy(&rendered)
        ),
    };
    assert_eq!(
        again,
        mailbox,
        "mailbox round trip via {:?}",
        String::from_utf8_lossy(&rendered)
    );
    assert_eq!(again.render(), rendered, "mailbox rendering not stable");
}

fuzz_target!(|data: &[u8]| {
    list_round_trip(data);
    mailbox_round_trip(data);
});
