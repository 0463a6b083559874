//! Session routes of the CAS client API (SCONE's shapes, decision 6): `POST /session` and
//! `POST /v1/sessions` take the YAML document as the body and answer [`HashResponse`];
//! `GET /v1/sessions/{name}[?hash=]` answers [`SessionResponse`]; `GET /v1/sessions` answers
//! [`SessionList`].

use serde::{Deserialize, Serialize};

/// SCONE's create/update route.
pub const SCONE_SESSION_PATH: &str = "/session";
/// veil's session collection (same semantics for `POST`).
pub const SESSIONS_PATH: &str = "/v1/sessions";

/// Answer of a create or update: the new version's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashResponse {
    /// Session hash (64 hex).
    pub hash: String,
}

/// Answer of a session read: the normalised document (secrets redacted) and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionResponse {
    /// The normalised YAML document.
    pub session: String,
    /// Its hash (64 hex).
    pub hash: String,
}

/// Answer of `GET /v1/sessions`: the names the caller may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionList {
    /// Session names.
    pub sessions: Vec<String>,
}
