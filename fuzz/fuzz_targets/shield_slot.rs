//! Fuzz the shield's metadata slot parser: arbitrary bytes as a raw slot (header parsing and
//! authentication) or, with an odd first byte, as the plaintext document of a slot sealed under
//! the fuzzing key (JSON decoding and building the in-memory tree, behind the authentication).
//! Nothing may panic; a tree that builds has at least its root and at most one node per entry.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(nodes) = veil_shield::fuzz_metadata_slot(data) {
        assert!(nodes >= 1, "a tree without a root was accepted");
        assert!(
            nodes <= data.len(),
            "more nodes ({nodes}) than input bytes ({})",
            data.len()
        );
    }
});
