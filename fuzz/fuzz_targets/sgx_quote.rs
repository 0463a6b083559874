//! Fuzz the SGX DCAP quote parser: arbitrary bytes behind an SGX quote header (version 3 or 4,
//! TEE type 0) must never panic in `hw::inspect` or `hw::verify`; whatever parses is an SGX
//! quote whose counted trailing bytes fit in the input, and nothing verifies without collateral.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_attest::UnixTime;
use veil_attest::hw::{self, HwCollateral, HwTier};

fuzz_target!(|data: &[u8]| {
    let mut q = data.to_vec();
    if q.len() >= 8 {
        q[0] = 3 + (q[0] & 1);
        q[1] = 0;
        q[2] = 2;
        q[3] = 0;
        q[4..8].copy_from_slice(&0u32.to_le_bytes());
    }
    if let Ok(c) = hw::inspect(&q) {
        let c = c.unverified_claims();
        assert_eq!(c.tier, HwTier::Sgx);
        assert!(c.trailing_bytes <= q.len());
    }
    assert!(hw::verify(&q, &HwCollateral::default(), UnixTime(1_750_000_000_000)).is_err());
});
