//! Fuzz the TDX DCAP quote parser: arbitrary bytes behind a TDX quote header (version 4 or 5,
//! TEE type 0x81; v5 bodies of type 2, 3 or 4) must never panic in `hw::inspect` or
//! `hw::verify`; whatever parses is a TDX quote, and nothing verifies without collateral.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_attest::UnixTime;
use veil_attest::hw::{self, HwCollateral, HwTier, Measurements};

fuzz_target!(|data: &[u8]| {
    let mut q = data.to_vec();
    if q.len() >= 8 {
        q[0] = 4 + (q[0] & 1);
        q[1] = 0;
        q[2] = 2;
        q[3] = 0;
        q[4..8].copy_from_slice(&0x81u32.to_le_bytes());
    }
    if let Ok(c) = hw::inspect(&q) {
        let c = c.unverified_claims();
        assert_eq!(c.tier, HwTier::Tdx);
        assert!(matches!(c.measurements, Measurements::Tdx(_)));
        assert!(c.trailing_bytes <= q.len());
    }
    assert!(hw::verify(&q, &HwCollateral::default(), UnixTime(1_750_000_000_000)).is_err());
});
