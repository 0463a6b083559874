//! Messages on the LAS unix socket (`SOCK_SEQPACKET`, one request and one answer per
//! connection, JSON). The client must enable `SO_PASSCRED` on its socket so that the kernel
//! attaches its credentials to the request; the LAS refuses requests without them.

use serde::{Deserialize, Serialize};
use veil_attest::{NodeEvidence, ReportData, Target};

/// Default unix socket path of the LAS (`VEIL_LAS_SOCKET`).
pub const DEFAULT_SOCKET: &str = "/run/veil/las.sock";
/// The LAS's public key document on its TCP port.
pub const NODE_KEY_PATH: &str = "/v1/node-key";

/// Largest message either side accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Ask for evidence about the sending process. Any other field (a claimed executable path or
/// hash, a pid) is ignored: the LAS measures what the kernel says sent the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRequest {
    /// The binding the CAS expects.
    pub report_data: ReportData,
    /// What the launcher will run (its word; it becomes part of the measurement).
    pub target: Target,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceResponse {
    /// Signed evidence.
    Evidence(Box<NodeEvidence>),
    /// Refused, with the reason.
    Error(String),
}

/// Public key document served on `GET /v1/node-key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeKeyInfo {
    /// The node id the LAS puts into its claims.
    pub node_id: String,
    /// Key hash (decision 7) to register with `veil cas register-node`.
    pub key_hash: String,
    /// DER SubjectPublicKeyInfo, base64.
    pub public_key_der: String,
}
