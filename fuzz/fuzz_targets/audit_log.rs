//! Fuzz the audit-log reader and verifier: arbitrary bytes must never panic, and a log that
//! verifies must also read back entry by entry with the same count.
#![no_main]

use libfuzzer_sys::fuzz_target;

const KEY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fuzz_target!(|data: &[u8]| {
    let read = veil_audit::read_entries(data);
    if let Ok(report) = veil_audit::verify(data, KEY_HASH, None) {
        let entries = read.unwrap_or_else(|e| panic!("verified log does not read back: {e}"));
        assert_eq!(entries.len(), report.entries);
    }
    let _ = veil_audit::verify(data, KEY_HASH, Some((1, KEY_HASH)));
});
