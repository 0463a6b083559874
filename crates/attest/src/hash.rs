//! SHA-256 digests as a value type: [`Digest32`] lives in `veil-types` (shared by every crate);
//! this module re-exports it for the attestation code.

pub use veil_types::Digest32;
