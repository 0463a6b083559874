//! Reference values: a service's attestation factors, compiled from its policy by the CAS.
//!
//! Semantics (SCONE's, `scone.md` §1.4): within one map every listed factor must hold (AND); a
//! list of maps is a set of variants of which any one suffices (OR); the legacy `mrenclaves`
//! list is one more variant with only an `mrenclave` factor. Skipping the check must be written
//! out ([`Factors::Skip`], for `mode: none`); an empty set of variants or an empty map fails
//! closed.

use crate::hash::Digest32;
use veil_types::Measurement;

/// The SGX signer factor (`signer: {mrsigner, isvprodid, isvsvn | isvsvn_min/isvsvn_max}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerFactor {
    /// MRSIGNER.
    pub mrsigner: Digest32,
    /// ISVPRODID.
    pub isvprodid: u16,
    /// Inclusive minimum ISVSVN (an exact `isvsvn` sets both bounds).
    pub isvsvn_min: Option<u16>,
    /// Inclusive maximum ISVSVN.
    pub isvsvn_max: Option<u16>,
}

/// One attestation-factor map: all present factors must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FactorSet {
    /// Accepted measurements (`mrenclave`, a value or a list); empty = factor absent.
    pub mrenclave: Vec<Measurement>,
    /// The signer factor, if present.
    pub signer: Option<SignerFactor>,
}

impl FactorSet {
    /// A map with only an `mrenclave` factor.
    pub fn mrenclave(values: Vec<Measurement>) -> Self {
        Self {
            mrenclave: values,
            signer: None,
        }
    }

    /// Whether the map names no factor at all.
    pub fn is_empty(&self) -> bool {
        self.mrenclave.is_empty() && self.signer.is_none()
    }
}

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Factors {
    /// No factor check (`security.attestation.mode: none`). Binding is still checked.
    Skip,
    /// Any one of these variants must hold.
    AnyOf(Vec<FactorSet>),
}

/// Reference values for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceValues {
    /// The attestation factors.
    pub factors: Factors,
}

impl ReferenceValues {
    /// From a service's `attestation` variants (a map is a one-element list) and its legacy
    /// `mrenclaves`, which become one more variant when non-empty.
    pub fn from_policy(attestation: Vec<FactorSet>, legacy_mrenclaves: Vec<Measurement>) -> Self {
        let mut variants = attestation;
        if !legacy_mrenclaves.is_empty() {
            variants.push(FactorSet::mrenclave(legacy_mrenclaves));
        }
        Self {
            factors: Factors::AnyOf(variants),
        }
    }

    /// No factor check (policy `mode: none`).
    pub fn skip() -> Self {
        Self {
            factors: Factors::Skip,
        }
    }
}
