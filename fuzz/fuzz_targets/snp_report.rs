//! Fuzz the SEV-SNP report parser: arbitrary bytes, and the same bytes padded or cut to the
//! 1184 bytes of a report with a version of 2..=5, must never panic in `hw::inspect` or
//! `hw::verify`; only exactly 1184 bytes parse, and nothing verifies without collateral.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_attest::UnixTime;
use veil_attest::hw::{self, HwCollateral, HwTier};

const REPORT_LEN: usize = 1184;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = hw::inspect(data)
        && c.unverified_claims().tier == HwTier::Snp
    {
        assert_eq!(data.len(), REPORT_LEN);
    }
    let mut r = data.to_vec();
    r.resize(REPORT_LEN, 0);
    r[0] = 2 + r[0] % 4;
    r[1..4].fill(0);
    if let Ok(c) = hw::inspect(&r) {
        assert_eq!(c.unverified_claims().tier, HwTier::Snp);
    }
    assert!(hw::verify(&r, &HwCollateral::default(), UnixTime(1_750_000_000_000)).is_err());
});
