//! The axum handlers of the workload API (enclave port 18765) and of the owner-only node
//! registry (client port 8081), and their route tables ([`enclave_routes`],
//! [`owner_routes`]) from which `crate::server` builds the routers.
//!
//! Handlers only read the body (at most [`MAX_WORKLOAD_BODY`] bytes of JSON; an empty body
//! reads as `{}`), call the [`Workload`] and write the answer; refusals are [`ApiError`]s.
//! Workload routes need a client certificate ([`Caller`]); node routes need the owner's
//! ([`Owner`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use veil_api::nodes::{NODES_PATH, NodeInfo, NodeList, RegisterNode, Registered, Revoked};
use veil_api::workload::{
    ATTEST_PATH, AttestRequest, EXIT_PATH, ExitRequest, ExitResponse, HEARTBEAT_PATH,
    HeartbeatRequest, NONCE_PATH, NonceRequest, NonceResponse, TAGS_PATH, TagUpdateRequest,
};
use veil_attest::UnixTime;
use veil_types::ExposeSecret;

use super::nodes::{self, NodeRecord};
use super::{MAX_WORKLOAD_BODY, Workload, now_ms, parse_config_id};
use crate::error::{ATTESTATION_FAILED, ApiError};
use crate::routing::{RouteDef, Verb};
use crate::server::{Caller, ConnInfo, Owner};

/// Path of one registered node key (`DELETE`).
pub const NODE_PATH: &str = "/v1/nodes/{key_hash}";

/// Path of one volume lease (`DELETE`: the owner's force-release, decision 9).
pub const LEASE_PATH: &str = "/v1/leases/{session}/{volume}";

const NONCE_REFUSED: &str = "Failed to issue an attestation nonce";
const TAGS_REFUSED: &str = "Cannot update a volume tag";
const HEARTBEAT_REFUSED: &str = "Cannot renew the instance's leases";
const EXIT_REFUSED: &str = "Cannot report the exit";
const REGISTER_REFUSED: &str = "Cannot register the node key";
const LIST_REFUSED: &str = "Cannot list the node keys";
const REVOKE_REFUSED: &str = "Cannot revoke the node key";
const RELEASE_REFUSED: &str = "Cannot release the volume lease";

/// The workload routes (enclave port 18765).
pub fn enclave_routes() -> Vec<RouteDef> {
    vec![
        RouteDef::new(Verb::Post, NONCE_PATH, nonce_route),
        RouteDef::new(Verb::Post, ATTEST_PATH, attest_route),
        RouteDef::new(Verb::Post, TAGS_PATH, tags_route),
        RouteDef::new(Verb::Post, HEARTBEAT_PATH, heartbeat_route),
        RouteDef::new(Verb::Post, EXIT_PATH, exit_route),
    ]
}

/// The owner-only node registry routes (client port 8081); [`Owner`] refusals start with
/// the route's outer message.
pub fn owner_routes() -> Vec<RouteDef> {
    vec![
        RouteDef::new(Verb::Post, NODES_PATH, register_node_route).outer(REGISTER_REFUSED),
        RouteDef::new(Verb::Get, NODES_PATH, list_nodes_route).outer(LIST_REFUSED),
        RouteDef::new(Verb::Delete, NODE_PATH, revoke_node_route).outer(REVOKE_REFUSED),
        RouteDef::new(Verb::Delete, LEASE_PATH, release_lease_route).outer(RELEASE_REFUSED),
    ]
}

/// Read a JSON body of at most [`MAX_WORKLOAD_BODY`] bytes (whitespace only reads as `{}`).
pub(super) async fn read_json<T: DeserializeOwned>(
    body: Body,
    outer: &'static str,
) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_WORKLOAD_BODY)
        .await
        .map_err(|_| ApiError::BodyTooLarge {
            outer,
            limit: MAX_WORKLOAD_BODY,
        })?;
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        &bytes[..]
    };
    serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidRequest {
        outer,
        cause: format!("invalid request body: {e}"),
    })
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    (status, axum::Json(v)).into_response()
}

fn conn_remote(req: &Request) -> String {
    req.extensions()
        .get::<ConnInfo>()
        .map(|c| c.remote.ip().to_string())
        .unwrap_or_default()
}

async fn nonce_route(
    State(w): State<Arc<Workload>>,
    Caller(_peer): Caller,
    req: Request,
) -> Result<Response, ApiError> {
    let remote = conn_remote(&req);
    let _: NonceRequest = read_json(req.into_body(), NONCE_REFUSED).await?;
    let (nonce, expires_at) = w
        .nonces
        .issue(&remote, UnixTime::now())
        .map_err(ApiError::nonce)?;
    Ok(json(StatusCode::OK, &NonceResponse { nonce, expires_at }))
}

async fn attest_route(
    State(w): State<Arc<Workload>>,
    Caller(peer): Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let req: AttestRequest = read_json(body, ATTESTATION_FAILED).await?;
    // Names only: the config id's `@<otp>` suffix is not recorded.
    let (session, service) = match parse_config_id(&req.config_id.0) {
        Ok((session, service, _)) => (session.to_string(), service.to_string()),
        Err(_) => (String::new(), String::new()),
    };
    match w.attest(&peer, req).await {
        Ok(cfg) => Ok(json(StatusCode::OK, &cfg)),
        Err(e) => {
            // The detail (also behind a generic `attestation_refused` answer) is audited and
            // logged; the workload gets only the answer.
            let reason = format!("{}: {}", e.detail_code(), e.detail_messages().join(": "));
            tracing::info!(%session, %service, %reason, "attestation refused");
            w.store
                .audit(vec![veil_audit::Event::AttestationRefused {
                    session,
                    service,
                    reason,
                }])
                .await?;
            Err(e)
        }
    }
}

async fn tags_route(
    State(w): State<Arc<Workload>>,
    Caller(_peer): Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let req: TagUpdateRequest = read_json(body, TAGS_REFUSED).await?;
    let r = w.update_tag(req).await?;
    Ok(json(StatusCode::OK, &r))
}

async fn heartbeat_route(
    State(w): State<Arc<Workload>>,
    Caller(_peer): Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let req: HeartbeatRequest = read_json(body, HEARTBEAT_REFUSED).await?;
    let r = w.heartbeat(req.instance_token.expose_secret()).await?;
    Ok(json(StatusCode::OK, &r))
}

async fn exit_route(
    State(w): State<Arc<Workload>>,
    Caller(_peer): Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let req: ExitRequest = read_json(body, EXIT_REFUSED).await?;
    w.exit(&req).await?;
    Ok(json(StatusCode::OK, &ExitResponse::default()))
}

async fn register_node_route(
    State(w): State<Arc<Workload>>,
    Owner(peer): Owner,
    body: Body,
) -> Result<Response, ApiError> {
    let outer = REGISTER_REFUSED;
    let req: RegisterNode = read_json(body, outer).await?;
    let der = nodes::validate(&req).map_err(|e| ApiError::InvalidRequest {
        outer,
        cause: e.to_string(),
    })?;
    let key_hash = veil_identity::key_hash(&der);
    let now = now_ms();
    let kh = key_hash.clone();
    let node_id = req.node_id.clone();
    w.change_nodes(move |list| {
        if let Some(other) = list
            .iter()
            .find(|r| r.node_id == node_id && r.key_hash() != kh && r.revoked_at.is_none())
        {
            return Err(ApiError::NodeIdTaken {
                outer,
                node_id: other.node_id.clone(),
                key_hash: other.key_hash(),
            });
        }
        list.retain(|r| r.key_hash() != kh);
        list.push(NodeRecord {
            node_id,
            spki_hex: hex::encode(&der),
            registered_at: now,
            revoked_at: None,
        });
        Ok(())
    })
    .await?;
    tracing::info!(node_id = %req.node_id, key_hash = %key_hash, owner = %peer.key_hash, "node key registered");
    w.store
        .audit(vec![veil_audit::Event::OwnerAction {
            action: format!("node registered: {} ({key_hash})", req.node_id),
            by: peer.key_hash.clone(),
        }])
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &Registered {
            node_id: req.node_id,
            key_hash,
        },
    ))
}

async fn list_nodes_route(
    State(w): State<Arc<Workload>>,
    Owner(_peer): Owner,
) -> Result<Response, ApiError> {
    let out: Vec<NodeInfo> = w
        .node_records()
        .iter()
        .map(|r| NodeInfo {
            node_id: r.node_id.clone(),
            key_hash: r.key_hash(),
            registered_at: r.registered_at,
            revoked_at: r.revoked_at,
        })
        .collect();
    Ok(json(StatusCode::OK, &NodeList { nodes: out }))
}

/// `DELETE /v1/nodes/{key_hash|node_id}`: revokes the key with that hash, and every key of
/// the node with that id that is not revoked yet (a node id may have been registered again
/// with a new key after an earlier revocation: all its active keys go). Records revoked
/// before keep their time. 404 `node_not_found` only when no record matches at all.
async fn revoke_node_route(
    State(w): State<Arc<Workload>>,
    Owner(peer): Owner,
    Path(key_hash): Path<String>,
) -> Result<Response, ApiError> {
    let kh = key_hash.to_ascii_lowercase();
    let now = now_ms();
    let mut node_id = String::new();
    let mut revoked_keys: Vec<String> = Vec::new();
    let (found, keys) = (&mut node_id, &mut revoked_keys);
    w.change_nodes(|list| {
        let mut matched = false;
        for rec in list
            .iter_mut()
            .filter(|r| r.node_id == key_hash || r.key_hash() == kh)
        {
            if !matched {
                *found = rec.node_id.clone();
                matched = true;
            }
            if rec.revoked_at.is_none() {
                rec.revoked_at = Some(now);
                keys.push(rec.key_hash());
            }
        }
        if matched {
            Ok(())
        } else {
            Err(ApiError::NodeNotFound {
                outer: REVOKE_REFUSED,
                key: key_hash.clone(),
            })
        }
    })
    .await?;
    let keys = if revoked_keys.is_empty() {
        "none active".to_string()
    } else {
        revoked_keys.join(", ")
    };
    tracing::info!(node_id = %node_id, revoked = %keys, owner = %peer.key_hash, "node key revoked");
    w.store
        .audit(vec![veil_audit::Event::OwnerAction {
            action: format!(
                "node revoked: {node_id} ({key_hash}); keys revoked: {} [{keys}]",
                revoked_keys.len()
            ),
            by: peer.key_hash.clone(),
        }])
        .await?;
    Ok(json(
        StatusCode::OK,
        &Revoked {
            node_id,
            revoked: true,
        },
    ))
}

/// `DELETE /v1/leases/{session}/{volume}`: the owner force-releases the lease of a
/// `rollback_protected` volume (decision 9), durably and audited; the former holder's next
/// tag update or heartbeat re-takes it if it is still free, else gets 409 `volume_in_use`.
/// Answers `{"released": true, "holder": "<short id>"}`, or `{"released": false}` when
/// nobody held it.
async fn release_lease_route(
    State(w): State<Arc<Workload>>,
    Owner(peer): Owner,
    Path((session, volume)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let holder = w.force_release(&session, &volume).await?;
    let Some(holder) = holder else {
        return Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "released": false }),
        ));
    };
    tracing::info!(%volume, %holder, owner = %peer.key_hash, "volume lease force-released");
    w.store
        .audit(vec![veil_audit::Event::OwnerAction {
            action: format!("lease force-released: {session}/{volume} (holder {holder})"),
            by: peer.key_hash.clone(),
        }])
        .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "released": true, "holder": holder }),
    ))
}
