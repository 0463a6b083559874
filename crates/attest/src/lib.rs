//! Attestation for veil: evidence per tier, measurement construction, evidence binding, the
//! CAS's nonce store and a pure appraisal. The wire types of the workload API live in
//! `veil-api`.
//!
//! * [`measure`]: `SHA-256("veil-measure-v1" ‖ SHA-256(launcher) ‖ SHA-256(program))`, or
//!   `SHA-256("veil-measure-envcas-v1" ‖ SHA-256(launcher))` for envcas (decision 3).
//! * [`binding`]: report data = `SHA-256(nonce ‖ client SPKI DER) ‖ 0^32` (decision 10).
//! * [`nonce`]: single-use nonces with a TTL ≤ 60 s and per-peer limits.
//! * [`evidence`]: [`Tier`]s `sim` (self-reported) and `node` (signed by a LAS).
//! * [`hw`]: SGX DCAP, TDX and SEV-SNP evidence verified offline against vendor collateral at
//!   a given time ([`hw::verify`]).
//! * [`appraise()`]: pure appraisal behind the [`Verifier`] trait (one per tier, hardware tiers
//!   plug in later), matching of attestation factors with SCONE-style failure chains, and the
//!   tier decision [`tier_accepted`] (decision 1).

#![deny(missing_docs)]

pub mod appraise;
mod b64;
pub mod binding;
pub mod evidence;
pub mod hash;
#[cfg(feature = "hw")]
pub mod hw;
pub mod measure;
pub mod nonce;
pub mod reference;
pub mod time;

pub use appraise::{
    AppraisalError, AttestationMode, AttestationResult, Claims, Collateral, EvidenceProblem,
    Expected, FactorMismatch, NodeVerifier, RegisteredNodeKey, SimVerifier, TierPolicy,
    TrustAnchors, Verifier, appraise, appraise_with, tier_accepted, verifier_for,
};
pub use binding::{Nonce, ReportData};
pub use evidence::{Evidence, NodeClaims, NodeEvidence, SimEvidence, Tier};
pub use hash::Digest32;
pub use measure::{Target, measurement};
pub use nonce::{NonceError, NonceLimits, NonceStore};
pub use reference::{FactorSet, Factors, ReferenceValues, SignerFactor};
pub use time::UnixTime;
pub use veil_types::Measurement;
