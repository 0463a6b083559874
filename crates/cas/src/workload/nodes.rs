//! Registered LAS node keys (decision 12): the `node` tier's trust anchors. The registry is one
//! sealed record (a JSON list) updated by compare-and-swap; owner-only routes on the client
//! API register and revoke keys.

use serde::{Deserialize, Serialize};
use veil_attest::{RegisteredNodeKey, UnixTime};

/// Sealed table of the node registry.
pub const NODES_TABLE: &str = "workload_nodes";
/// The registry's record key.
pub const REGISTRY_KEY: &[u8] = b"registry";
/// Longest node id.
pub const MAX_NODE_ID: usize = 128;

/// One registration as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub node_id: String,
    /// DER SubjectPublicKeyInfo, hex.
    pub spki_hex: String,
    /// Registration time (ms since the epoch).
    pub registered_at: u64,
    /// Revocation time, if revoked.
    #[serde(default)]
    pub revoked_at: Option<u64>,
}

impl NodeRecord {
    /// As a trust anchor (`None` if the stored hex is corrupt, which sealing rules out).
    pub fn anchor(&self) -> Option<RegisteredNodeKey> {
        Some(RegisteredNodeKey {
            node_id: self.node_id.clone(),
            spki_der: hex::decode(&self.spki_hex).ok()?,
            registered_at: UnixTime(self.registered_at),
            revoked_at: self.revoked_at.map(UnixTime),
        })
    }

    /// The key hash of the registered key.
    pub fn key_hash(&self) -> String {
        hex::decode(&self.spki_hex)
            .map(|d| veil_identity::key_hash(&d))
            .unwrap_or_default()
    }
}

pub use veil_api::nodes::RegisterNode;

/// What is wrong with a registration request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeKeyError {
    /// Not a usable key.
    #[error("the node key is not an ECDSA P-256 public key (DER SubjectPublicKeyInfo): {0}")]
    BadKey(String),
    /// Empty or oversized node id, or one with control characters.
    #[error("the node id must be 1 to {MAX_NODE_ID} printable characters")]
    BadNodeId,
    /// The key does not have the given hash.
    #[error("the node key's hash is {actual}, not the given {given}")]
    HashMismatch {
        /// Hash of the key.
        actual: String,
        /// Hash given.
        given: String,
    },
}

const P256_SPKI_PREFIX: [u8; 27] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];

/// Check a registration: a P-256 SPKI (the LAS's key type), a sane node id, and the optional
/// key hash. Returns the SPKI DER.
pub fn validate(req: &RegisterNode) -> Result<Vec<u8>, NodeKeyError> {
    let id = &req.node_id;
    if id.is_empty() || id.chars().count() > MAX_NODE_ID || id.chars().any(char::is_control) {
        return Err(NodeKeyError::BadNodeId);
    }
    let der = hex::decode(req.spki_hex.trim())
        .map_err(|_| NodeKeyError::BadKey("`spki_hex` is not hex".into()))?;
    if der.len() != 91 || !der.starts_with(&P256_SPKI_PREFIX) {
        return Err(NodeKeyError::BadKey(
            "expected a 91-byte P-256 SubjectPublicKeyInfo".into(),
        ));
    }
    // The point must be on the curve: let aws-lc-rs parse the key as the verifier will.
    aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1, &der)
        .map_err(|_| NodeKeyError::BadKey("the point is not on the P-256 curve".into()))?;
    if let Some(given) = &req.key_hash {
        let actual = veil_identity::key_hash(&der);
        if !given.eq_ignore_ascii_case(&actual) {
            return Err(NodeKeyError::HashMismatch {
                actual,
                given: given.chars().take(80).collect(),
            });
        }
    }
    Ok(der)
}

/// A node public key from text: a PEM `PUBLIC KEY` (SPKI), a PEM certificate (its key), or
/// hex of the DER SPKI. For `veil cas register-node --node-key-file`.
pub fn parse_node_key(text: &str) -> Result<Vec<u8>, NodeKeyError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        return SubjectPublicKeyInfoDer::from_pem_slice(text.as_bytes())
            .map(|d| d.as_ref().to_vec())
            .map_err(|e| NodeKeyError::BadKey(format!("PEM public key: {e}")));
    }
    if text.contains("-----BEGIN CERTIFICATE-----") {
        let der = CertificateDer::from_pem_slice(text.as_bytes())
            .map_err(|e| NodeKeyError::BadKey(format!("PEM certificate: {e}")))?;
        return veil_identity::spki_from_cert_der(&der)
            .map_err(|e| NodeKeyError::BadKey(e.to_string()));
    }
    hex::decode(text.trim()).map_err(|_| {
        NodeKeyError::BadKey(
            "expected a PEM `PUBLIC KEY`, a PEM certificate or hex of the DER SPKI".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    fn spki() -> Vec<u8> {
        let k = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        k.public_key().as_der().unwrap().as_ref().to_vec()
    }

    #[test]
    fn validates_registrations() {
        let der = spki();
        let ok = RegisterNode {
            node_id: "node-1".into(),
            spki_hex: hex::encode(&der),
            key_hash: Some(veil_identity::key_hash(&der)),
        };
        assert_eq!(validate(&ok).unwrap(), der);
        let mut bad = ok.clone();
        bad.key_hash = Some("0".repeat(64));
        assert!(matches!(
            validate(&bad),
            Err(NodeKeyError::HashMismatch { .. })
        ));
        let mut bad = ok.clone();
        bad.node_id = String::new();
        assert_eq!(validate(&bad), Err(NodeKeyError::BadNodeId));
        let mut bad = ok.clone();
        bad.spki_hex = "zz".into();
        assert!(matches!(validate(&bad), Err(NodeKeyError::BadKey(_))));
        // Off-curve point.
        let mut off = der.clone();
        let last = off.len() - 1;
        off[last] ^= 1;
        bad.spki_hex = hex::encode(&off);
        assert!(matches!(validate(&bad), Err(NodeKeyError::BadKey(_))));
        let rec = NodeRecord {
            node_id: "node-1".into(),
            spki_hex: hex::encode(&der),
            registered_at: 5,
            revoked_at: None,
        };
        assert_eq!(rec.key_hash(), veil_identity::key_hash(&der));
        assert_eq!(rec.anchor().unwrap().spki_der, der);
    }

    #[test]
    fn parses_key_text() {
        let id = veil_identity::Identity::generate("n", &[]).unwrap();
        assert_eq!(parse_node_key(&id.cert_pem()).unwrap(), id.spki_der());
        assert_eq!(
            parse_node_key(&hex::encode(id.spki_der())).unwrap(),
            id.spki_der()
        );
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(id.spki_der());
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        assert_eq!(parse_node_key(&pem).unwrap(), id.spki_der());
        assert!(parse_node_key("nonsense").is_err());
    }
}
