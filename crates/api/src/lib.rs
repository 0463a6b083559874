//! The wire: typed request and response bodies of every veil protocol, shared by the servers
//! and their clients so that neither side builds JSON by hand.
//!
//! - [`sessions`] and [`nodes`]: the CAS client API (TCP 8081, mutual TLS; SCONE's shapes,
//!   decision 6).
//! - [`workload`]: the CAS workload API (TCP 18765) between the launcher and the CAS.
//! - [`las`]: the LAS unix socket and its TCP health/key port.
//! - [`ErrorBody`]: the one error shape of both CAS ports.
//!
//! **API boundary**: serde types and route constants only; no I/O, no TLS, no server or
//! client code. Secret fields are [`veil_types::Secret`]/[`veil_types::Key32`] values whose
//! `Debug` is redacted; they are exposed only when a body is encoded.

pub mod las;
pub mod nodes;
pub mod sessions;
pub mod workload;

use serde::{Deserialize, Serialize};

/// An error answer (decision 6): a stable code and the message chain, outermost first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code (e.g. `session_not_found`, `attestation_failed`).
    pub code: String,
    /// `["Attestation failed", "Unexpected enclave measurement …", …]`.
    pub msg: Vec<String>,
}
