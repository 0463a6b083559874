//! Owner routes of the CAS client API for LAS node keys (decision 12): `POST /v1/nodes`
//! ([`RegisterNode`] → [`Registered`]), `GET /v1/nodes` → [`NodeList`],
//! `DELETE /v1/nodes/{key_hash|node_id}` → [`Revoked`].

use serde::{Deserialize, Serialize};

/// The node-key collection.
pub const NODES_PATH: &str = "/v1/nodes";

/// Body of `POST /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    /// The node id the LAS signs its evidence with.
    pub node_id: String,
    /// The node key: DER SubjectPublicKeyInfo in hex.
    pub spki_hex: String,
    /// Optional expected key hash: refused if the key's hash differs.
    #[serde(default)]
    pub key_hash: Option<String>,
}

/// Answer of a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The node id.
    pub node_id: String,
    /// The registered key's hash.
    pub key_hash: String,
}

/// One registered key, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub node_id: String,
    /// Key hash.
    pub key_hash: String,
    /// Registration time (ms since the epoch).
    pub registered_at: u64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<u64>,
}

/// Answer of `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeList {
    /// Every registration, revoked ones included.
    pub nodes: Vec<NodeInfo>,
}

/// Answer of a revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The node id whose key (by key hash) or active keys (by node id) were revoked.
    pub node_id: String,
    /// Always true.
    pub revoked: bool,
}
