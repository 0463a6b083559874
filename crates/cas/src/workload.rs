//! The workload API on the enclave port (18765), the volume-tag state and the node registry
//! (issue 7; the specification is docs/workload-api.md).
//!
//! Flow, all on one TLS connection whose client certificate is the launcher's ephemeral key:
//! 1. `POST /v1/workload/nonce` → a nonce (32 random bytes, single use, TTL ≤ 60 s, at most
//!    [`NONCES_PER_PEER`] outstanding per remote address).
//! 2. `POST /v1/workload/attest` with `session/service[@otp]`, the tier and the evidence:
//!    the checks in `attest.rs`, in the documented order; the answer carries argv,
//!    environment, pwd, injection files, code region and volumes (keys, recorded tags, update
//!    policies) plus an instance token.
//! 3. `POST /v1/workload/tags`: compare-and-swap of a volume's (or the code region's) tag with
//!    the instance token; `POST /v1/workload/heartbeat` renews the instance's leases;
//!    `POST /v1/workload/exit` releases them (`state.rs`).
//!
//! Owner-only routes on the client API (decision 12): `POST /v1/nodes` registers a LAS node
//! key, `GET /v1/nodes` lists them, `DELETE /v1/nodes/{key_hash|node_id}` revokes that key, or every active key of
//! that node id ([`routes`],
//! [`nodes`]).
//!
//! Modules: [`routes`] (axum handlers and the route tables), `attest` (the attest flow, one
//! function per step), `state` (running instances, leases and their drop guard, tag
//! updates, heartbeat, exit), [`build`] (session → configuration; pure), [`tags`] (tag state
//! machine and leases; pure), [`nodes`] (node records). This file holds the shared state
//! ([`Workload`]) and its store helpers. Errors are [`ApiError`]s: status and code come from
//! the one table in `crate::error`.

mod attest;
pub mod build;
pub mod nodes;
pub mod routes;
mod state;
pub mod tags;

use std::sync::{Arc, RwLock};

use veil_attest::{NonceLimits, NonceStore, TrustAnchors, UnixTime};
use veil_secrets::SecretValues;
use veil_types::Tag;

use crate::error::ApiError;
use crate::sessions::{Loaded, Sessions};
use crate::store::{Store, StoreError};
use nodes::{NODES_TABLE, NodeRecord, REGISTRY_KEY};
use state::Running;
use tags::{TAGS_TABLE, TagRecord};

/// Owner-only node registry on the client API.
pub use veil_api::nodes::NODES_PATH;
/// Sealed table of CAS-generated volume keys.
pub const VOLKEYS_TABLE: &str = "workload_volume_keys";
/// Sealed table of OTP replay/lockout state.
pub const OTP_TABLE: &str = "workload_otp";
/// Outstanding nonces per remote address.
pub const NONCES_PER_PEER: usize = 64;
/// Largest workload request body.
pub const MAX_WORKLOAD_BODY: usize = 256 * 1024;
/// Instances idle (no tag update, heartbeat) this long are forgotten.
pub const INSTANCE_IDLE_MS: u64 = 24 * 3600 * 1000;
/// Most instances kept at once.
pub const MAX_INSTANCES: usize = 100_000;

/// The workload API's state: nonces, leases, instances, the node registry.
pub struct Workload {
    sessions: Sessions,
    store: Store,
    nonces: NonceStore,
    allow_sim: bool,
    nodes: RwLock<Vec<NodeRecord>>,
    nodes_write: tokio::sync::Mutex<()>,
    running: Arc<tokio::sync::Mutex<Running>>,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("allow_sim", &self.allow_sim)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    UnixTime::now().0
}

fn random_hex32() -> Result<String, ApiError> {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| ApiError::internal("random generator", "failed"))?;
    Ok(hex::encode(b))
}

/// A tag as stored (validated hex) as a wire [`Tag`].
fn wire_tag(tag: Option<String>) -> Result<Option<Tag>, ApiError> {
    tag.map(|t| {
        t.parse::<Tag>()
            .map_err(|e| ApiError::internal("recorded tag", e))
    })
    .transpose()
}

/// The public id of an instance: SHA-256 of its token, hex (the CAS keeps only this).
fn instance_id(token: &str) -> String {
    veil_attest::Digest32::of(token.as_bytes()).to_hex()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal("blocking task", e))?
}

/// Split `session/service[@otp]`.
pub fn parse_config_id(id: &str) -> Result<(&str, &str, Option<&str>), String> {
    let (rest, otp) = match id.rsplit_once('@') {
        Some((r, o)) => (r, Some(o)),
        None => (id, None),
    };
    let (session, service) = rest.rsplit_once('/').ok_or_else(|| {
        "Invalid config id: expected `<session>/<service>[@<otp>]` (SCONE_CONFIG_ID / VEIL_CONFIG_ID)"
            .to_string()
    })?;
    if session.is_empty() || service.is_empty() {
        return Err(
            "Invalid config id: the session and the service name must not be empty".to_string(),
        );
    }
    Ok((session, service, otp))
}

impl Workload {
    /// The workload state over `store`. `allow_sim` is the CAS owner's `sim` switch
    /// (decision 1).
    pub fn new(store: Store, allow_sim: bool) -> Result<Arc<Self>, StoreError> {
        let nodes = match store.kv_get(NODES_TABLE, REGISTRY_KEY)? {
            Some(raw) => serde_json::from_slice(&raw).map_err(|_| StoreError::Integrity {
                table: NODES_TABLE,
                key: "registry".into(),
            })?,
            None => Vec::new(),
        };
        if allow_sim {
            tracing::warn!(
                "the `sim` attestation tier is enabled: workloads whose policy tolerates debug-mode are accepted on their own word"
            );
        }
        let store_for_leases = store.clone();
        Ok(Arc::new(Self {
            sessions: Sessions::new(store.clone()),
            store,
            nonces: NonceStore::new(NonceLimits {
                ttl_ms: 30_000,
                max_total: 100_000,
                max_per_peer: NONCES_PER_PEER,
            }),
            allow_sim,
            nodes: RwLock::new(nodes),
            nodes_write: tokio::sync::Mutex::new(()),
            running: Arc::new(tokio::sync::Mutex::new(state::Running::load(
                &store_for_leases,
                now_ms(),
            )?)),
        }))
    }

    /// The registered node keys (cached copy of the sealed registry).
    fn node_records(&self) -> Vec<NodeRecord> {
        self.nodes.read().map(|n| n.clone()).unwrap_or_default()
    }

    fn anchors(&self) -> TrustAnchors {
        TrustAnchors {
            node_keys: self
                .node_records()
                .iter()
                .filter_map(NodeRecord::anchor)
                .collect(),
            ..TrustAnchors::default()
        }
    }

    fn secret_values(&self, l: &Loaded) -> Result<SecretValues, ApiError> {
        match self.store.secrets(&l.hash)? {
            None => Ok(SecretValues::default()),
            Some(raw) => serde_json::from_slice(&raw)
                .map_err(|e| ApiError::internal("stored secret values do not deserialize", e)),
        }
    }

    /// The key of volume `v` of `session`: the policy's, or the one generated (and stored
    /// sealed) at the first attestation.
    async fn volume_key(&self, session: &str, v: &build::VolumePlan) -> Result<String, ApiError> {
        if let Some(k) = &v.explicit_key {
            return Ok(k.clone());
        }
        let key = tags::volume_key(session, &v.name);
        if let Some(raw) = self.store.kv_get(VOLKEYS_TABLE, &key)? {
            return Ok(hex::encode(raw));
        }
        let mut fresh = [0u8; 32];
        aws_lc_rs::rand::fill(&mut fresh)
            .map_err(|_| ApiError::internal("random generator", "failed"))?;
        match self
            .store
            .kv_swap(VOLKEYS_TABLE, &key, None, Some(&fresh), Vec::new())
            .await?
        {
            Ok(_) => Ok(hex::encode(fresh)),
            // Another attestation generated it first: use that one.
            Err(Some(existing)) => Ok(hex::encode(existing)),
            Err(None) => Err(ApiError::internal(
                "volume key",
                "compare-and-swap failed on absent key",
            )),
        }
    }

    /// The raw and decoded tag record under `table_key`.
    fn tag_record(
        &self,
        table_key: &[u8],
    ) -> Result<(Option<Vec<u8>>, Option<TagRecord>), ApiError> {
        let raw = self.store.kv_get(TAGS_TABLE, table_key)?;
        let rec = match &raw {
            Some(r) => Some(
                serde_json::from_slice(r)
                    .map_err(|e| ApiError::internal("stored tag record does not deserialize", e))?,
            ),
            None => None,
        };
        Ok((raw, rec))
    }

    /// Apply `change` to the node registry durably (compare-and-swap of the one record).
    async fn change_nodes(
        &self,
        change: impl FnOnce(&mut Vec<NodeRecord>) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let _guard = self.nodes_write.lock().await;
        let store = self.store.clone();
        let raw = store.kv_get(NODES_TABLE, REGISTRY_KEY)?;
        let mut list: Vec<NodeRecord> = match &raw {
            Some(r) => {
                serde_json::from_slice(r).map_err(|e| ApiError::internal("node registry", e))?
            }
            None => Vec::new(),
        };
        change(&mut list)?;
        let new = serde_json::to_vec(&list).map_err(|e| ApiError::internal("node registry", e))?;
        let swapped = store
            .kv_swap(
                NODES_TABLE,
                REGISTRY_KEY,
                raw.as_deref(),
                Some(&new),
                Vec::new(),
            )
            .await?;
        if swapped.is_err() {
            return Err(ApiError::internal(
                "node registry",
                "changed outside the registry lock",
            ));
        }
        if let Ok(mut n) = self.nodes.write() {
            *n = list;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
