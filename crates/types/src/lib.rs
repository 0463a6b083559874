//! Security identifiers shared by every veil crate, as types rather than strings.
//!
//! - [`KeyHash`]: the one name of a public key (decision 7): SHA-256 over the DER
//!   SubjectPublicKeyInfo, 64 lowercase hex characters. [`key_hash`] computes it here and
//!   nowhere else.
//! - [`Digest32`]: a SHA-256 digest (session hashes, program hashes).
//! - [`Measurement`]: what a workload's evidence claims it runs (decision 3).
//! - [`Tag`]: a volume's 16-byte state commitment, 32 hex characters (decision 8).
//! - [`Key32`]: a 32-byte secret key, zeroized on drop, never printed.
//! - [`Secret`], [`SecretString`] and [`ExposeSecret`] (from `secrecy`): every other secret value.
//!
//! This crate knows no TLS, network or file system: the policy language, the attestation
//! appraisal and the audit log depend on it without pulling in rustls.

mod hexid;
mod key;
mod keyhash;

pub use hexid::{Digest32, HexError, Measurement, Tag};
pub use key::Key32;
pub use keyhash::{
    CertError, KeyHash, cert_der_to_pem, is_key_hash, key_hash, key_hash_of_cert_der,
    spki_from_cert_der, spki_from_cert_pem,
};
pub use secrecy::{ExposeSecret, SecretBox, SecretSlice, SecretString};

/// A secret value of any type: zeroized on drop, `Debug` prints `[REDACTED]`.
pub type Secret<T> = secrecy::SecretBox<T>;

pub mod serde_secret;
