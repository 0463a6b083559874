//! The workload API on the enclave port (18765) and the volume-tag state (issue 7).
//!
//! Flow, all on one TLS connection whose client certificate is the launcher's ephemeral key:
//! 1. `POST /v1/workload/nonce` → a nonce (32 random bytes, single use, TTL ≤ 60 s, at most
//!    [`NONCES_PER_PEER`] outstanding per remote address).
//! 2. `POST /v1/workload/attest` with `session/service[@otp]`, the tier and the evidence. The
//!    CAS consumes the nonce, loads the session's *current* version and its secret values,
//!    decides the tier ([`veil_attest::tier_accepted`], decision 1), appraises the evidence
//!    against the service's attestation factors with the expected binding
//!    `ReportData::bind(nonce, SPKI of this connection's client certificate)` (decision 10),
//!    then — only after evidence and measurement passed — checks the OTP (decision 13) and the
//!    service access token, and answers with argv, environment, pwd, injection files, code
//!    region and volumes (keys, recorded tags, update policies) plus an instance token.
//! 3. `POST /v1/workload/tags`: compare-and-swap of a volume's (or the code region's) tag with
//!    the instance token; `POST /v1/workload/heartbeat` renews the instance's leases;
//!    `POST /v1/workload/exit` releases them.
//!
//! Owner-only routes on the client API (decision 12): `POST /v1/nodes` registers a LAS node
//! key, `GET /v1/nodes` lists them, `DELETE /v1/nodes/{key_hash}` revokes one.
//!
//! Every error answer is `{"code", "msg": ["Attestation failed", "cause", …]}` with a 4xx
//! status (5xx only for internal failures); messages never contain secrets.

pub mod build;
pub mod nodes;
pub mod tags;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use serde::{Deserialize, Serialize};
use veil_api::workload::{
    ATTEST_PATH, AttestRequest, CodeRegion, ConfigResponse, EXIT_PATH, ExitRequest, ExitResponse,
    HEARTBEAT_PATH, HeartbeatRequest, HeartbeatResponse, NONCE_PATH, NonceRequest, NonceResponse,
    TAGS_PATH, TagUpdateRequest, TagUpdateResponse, UpdatePolicy, VolumeGrant,
};
use veil_attest::{
    AppraisalError, Collateral, Expected, NonceError, NonceLimits, NonceStore, ReportData,
    TrustAnchors, UnixTime,
};
use veil_secrets::{OtpError, OtpState, SecretValues};
use veil_types::{ExposeSecret, Key32, SecretString, Tag};

use crate::error::ApiError;
use crate::server::{Caller, ConnInfo};
use crate::sessions::{Loaded, Peer, Sessions};
use crate::store::{Store, StoreError};
use nodes::{NODES_TABLE, NodeRecord, REGISTRY_KEY};
use tags::{InUse, Leases, TAGS_TABLE, TagRecord, TagRefusal};
use veil_api::nodes::{NodeInfo, NodeList, RegisterNode, Registered, Revoked};

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

/// An error answer of the workload and node routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Message chain, outermost first.
    pub msg: Vec<String>,
}

const ATTESTATION_FAILED: &str = "Attestation failed";

impl WorkloadError {
    fn new(status: StatusCode, code: &'static str, msg: Vec<String>) -> Self {
        Self { status, code, msg }
    }

    /// `Attestation failed` / `cause`.
    fn attest(status: StatusCode, code: &'static str, cause: impl Into<String>) -> Self {
        Self::new(status, code, vec![ATTESTATION_FAILED.into(), cause.into()])
    }

    fn bad_request(outer: &str, cause: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            vec![outer.to_string(), cause.into()],
        )
    }

    fn appraisal(e: &AppraisalError) -> Self {
        let status = match e {
            AppraisalError::UnsupportedTier(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        };
        Self::new(status, e.code(), e.chain())
    }

    fn nonce(e: &NonceError) -> Self {
        let (status, code) = match e {
            NonceError::Unknown => (StatusCode::FORBIDDEN, "attestation_nonce_unknown"),
            NonceError::Expired => (StatusCode::FORBIDDEN, "attestation_nonce_expired"),
            NonceError::PeerLimit { .. } | NonceError::Full { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "attestation_nonce_limit")
            }
            NonceError::Random(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        Self::attest(status, code, e.to_string())
    }

    fn otp(e: &OtpError) -> Self {
        let (status, code) = match e {
            OtpError::Invalid => (StatusCode::FORBIDDEN, "otp_invalid"),
            OtpError::AlreadyUsed => (StatusCode::FORBIDDEN, "otp_already_used"),
            OtpError::LockedOut { .. } => (StatusCode::TOO_MANY_REQUESTS, "otp_locked_out"),
            OtpError::BadSecret(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_configuration"),
        };
        Self::attest(status, code, e.to_string())
    }

    fn config(e: &build::BuildError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_configuration",
            vec![
                ATTESTATION_FAILED.into(),
                "The session cannot be turned into a configuration".into(),
                e.to_string(),
            ],
        )
    }

    fn in_use(volume: &str, e: &InUse) -> Self {
        Self::attest(
            StatusCode::CONFLICT,
            "volume_in_use",
            format!(
                "volume {volume} is in use by instance {} (its lease lapses in {} s unless renewed)",
                e.holder_short,
                e.expires_in_ms.div_ceil(1000)
            ),
        )
    }

    fn unknown_instance(outer: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "instance_unknown",
            vec![
                outer.to_string(),
                "The instance token is unknown: the instance exited, was idle too long, or the CAS restarted".into(),
            ],
        )
    }
}

impl From<ApiError> for WorkloadError {
    fn from(e: ApiError) -> Self {
        let (status, code) = e.status_and_code();
        Self::new(status, code, e.messages())
    }
}

impl From<StoreError> for WorkloadError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for WorkloadError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "msg": self.msg });
        (self.status, axum::Json(body)).into_response()
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> WorkloadError {
    tracing::error!(error = %e, "{what}");
    ApiError::Internal.into()
}

/// A volume (or the code region) of a running instance.
#[derive(Debug, Clone)]
struct VolState {
    policy: UpdatePolicy,
    key_fp: String,
    initial_tag: Option<String>,
    table_key: Vec<u8>,
}

#[derive(Debug)]
struct Instance {
    session: String,
    volumes: BTreeMap<String, VolState>,
    code: Option<VolState>,
    last_seen: u64,
}

#[derive(Debug, Default)]
struct Running {
    leases: Leases,
    instances: HashMap<String, Instance>,
}

/// The workload API's state: nonces, leases, instances, the node registry.
pub struct Workload {
    sessions: Sessions,
    store: Store,
    nonces: NonceStore,
    allow_sim: bool,
    owners: Arc<Vec<String>>,
    nodes: RwLock<Vec<NodeRecord>>,
    nodes_write: tokio::sync::Mutex<()>,
    running: tokio::sync::Mutex<Running>,
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

fn random_hex32() -> Result<String, WorkloadError> {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| internal("random generator", "failed"))?;
    Ok(hex::encode(b))
}

/// A tag as stored (validated hex) as a wire [`Tag`].
fn wire_tag(tag: Option<String>) -> Result<Option<Tag>, WorkloadError> {
    tag.map(|t| t.parse::<Tag>().map_err(|e| internal("recorded tag", e)))
        .transpose()
}

fn instance_id(token: &str) -> String {
    veil_attest::Digest32::of(token.as_bytes()).to_hex()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WorkloadError> + Send + 'static,
) -> Result<T, WorkloadError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal("blocking task", e))?
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    body: Body,
    outer: &str,
) -> Result<T, WorkloadError> {
    let bytes = axum::body::to_bytes(body, MAX_WORKLOAD_BODY)
        .await
        .map_err(|_| {
            WorkloadError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                vec![
                    outer.to_string(),
                    format!("the limit is {MAX_WORKLOAD_BODY} bytes"),
                ],
            )
        })?;
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        &bytes[..]
    };
    serde_json::from_slice(bytes)
        .map_err(|e| WorkloadError::bad_request(outer, format!("invalid request body: {e}")))
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    (status, axum::Json(v)).into_response()
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

fn tier_of(e: &veil_attest::Evidence) -> veil_attest::Tier {
    e.tier()
}

impl Workload {
    /// The workload state over `store`. `allow_sim` is the CAS owner's `sim` switch
    /// (decision 1); `owners` the owner key hashes (decision 12).
    pub fn new(
        store: Store,
        allow_sim: bool,
        owners: Arc<Vec<String>>,
    ) -> Result<Arc<Self>, StoreError> {
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
        Ok(Arc::new(Self {
            sessions: Sessions::new(store.clone()),
            store,
            nonces: NonceStore::new(NonceLimits {
                ttl_ms: 30_000,
                max_total: 100_000,
                max_per_peer: NONCES_PER_PEER,
            }),
            allow_sim,
            owners,
            nodes: RwLock::new(nodes),
            nodes_write: tokio::sync::Mutex::new(()),
            running: tokio::sync::Mutex::new(Running::default()),
        }))
    }

    fn anchors(&self) -> TrustAnchors {
        let nodes = self.nodes.read().map(|n| n.clone()).unwrap_or_default();
        TrustAnchors {
            node_keys: nodes.iter().filter_map(NodeRecord::anchor).collect(),
            ..TrustAnchors::default()
        }
    }

    fn secret_values(&self, l: &Loaded) -> Result<SecretValues, WorkloadError> {
        match self.store.secrets(&l.hash)? {
            None => Ok(SecretValues::default()),
            Some(raw) => serde_json::from_slice(&raw)
                .map_err(|e| internal("stored secret values do not deserialize", e)),
        }
    }

    /// Check the OTP and persist the replay/lockout state (whatever the outcome).
    async fn check_otp(
        &self,
        session: &str,
        service: &str,
        secret: String,
        code: String,
    ) -> Result<(), WorkloadError> {
        let mut key = session.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(b"otp:");
        key.extend_from_slice(&veil_attest::Digest32::of(secret.as_bytes()).0);
        let store = self.store.clone();
        let result = blocking(move || {
            for _ in 0..8 {
                let raw = store.kv_get(OTP_TABLE, &key)?;
                let mut state: OtpState = match &raw {
                    Some(r) => serde_json::from_slice(r)
                        .map_err(|e| internal("stored OTP state does not deserialize", e))?,
                    None => OtpState::default(),
                };
                let result = veil_secrets::check_otp(&secret, &code, now_ms() / 1000, &mut state);
                let new = serde_json::to_vec(&state).map_err(|e| internal("OTP state", e))?;
                match store.kv_compare_and_swap(OTP_TABLE, &key, raw.as_deref(), &new)? {
                    Ok(()) => {
                        if let Err(OtpError::LockedOut { started: true, .. }) = &result {
                            tracing::warn!("OTP lockout started after repeated wrong codes");
                        }
                        return Ok(result);
                    }
                    Err(_) => continue,
                }
            }
            Err(internal("OTP state", "too much contention"))
        })
        .await?;
        let failure = || veil_audit::Event::OtpFailure {
            session: session.to_string(),
            service: service.to_string(),
        };
        let events = match &result {
            Err(OtpError::Invalid) => vec![failure()],
            Err(OtpError::LockedOut {
                started: true,
                until,
            }) => vec![
                failure(),
                veil_audit::Event::OtpLockout {
                    session: session.to_string(),
                    service: service.to_string(),
                    until: *until,
                },
            ],
            _ => Vec::new(),
        };
        if !events.is_empty() {
            self.store.audit(events).await?;
        }
        result.map_err(|e| WorkloadError::otp(&e))
    }

    async fn volume_key(
        &self,
        session: &str,
        v: &build::VolumePlan,
    ) -> Result<String, WorkloadError> {
        if let Some(k) = &v.explicit_key {
            return Ok(k.clone());
        }
        let key = tags::volume_key(session, &v.name);
        if let Some(raw) = self.store.kv_get(VOLKEYS_TABLE, &key)? {
            return Ok(hex::encode(raw));
        }
        let mut fresh = [0u8; 32];
        aws_lc_rs::rand::fill(&mut fresh).map_err(|_| internal("random generator", "failed"))?;
        let store = self.store.clone();
        blocking(move || {
            match store.kv_compare_and_swap(VOLKEYS_TABLE, &key, None, &fresh)? {
                Ok(()) => Ok(hex::encode(fresh)),
                // Another attestation generated it first: use that one.
                Err(Some(existing)) => Ok(hex::encode(existing)),
                Err(None) => Err(internal(
                    "volume key",
                    "compare-and-swap failed on absent key",
                )),
            }
        })
        .await
    }

    fn tag_record(
        &self,
        table_key: &[u8],
    ) -> Result<(Option<Vec<u8>>, Option<TagRecord>), WorkloadError> {
        let raw = self.store.kv_get(TAGS_TABLE, table_key)?;
        let rec = match &raw {
            Some(r) => Some(
                serde_json::from_slice(r)
                    .map_err(|e| internal("stored tag record does not deserialize", e))?,
            ),
            None => None,
        };
        Ok((raw, rec))
    }

    async fn attest(
        &self,
        peer: &Peer,
        req: AttestRequest,
    ) -> Result<ConfigResponse, WorkloadError> {
        let at = UnixTime::now();
        let (session_name, service_name, otp) = parse_config_id(&req.config_id.0)
            .map_err(|m| WorkloadError::attest(StatusCode::BAD_REQUEST, "invalid_config_id", m))?;
        // The nonce is single use whatever happens next.
        self.nonces
            .consume(&req.nonce, at)
            .map_err(|e| WorkloadError::nonce(&e))?;
        let evidence_tier = tier_of(&req.evidence);
        if req.tier != evidence_tier {
            return Err(WorkloadError::appraisal(&AppraisalError::TierMismatch {
                declared: req.tier,
                evidence: evidence_tier,
            }));
        }
        let not_found = || {
            WorkloadError::attest(
                StatusCode::NOT_FOUND,
                "config_not_found",
                format!(
                    "Could not find service `{service_name}` in session `{session_name}` (or the session does not exist)"
                ),
            )
        };
        let loaded = self.sessions.current(session_name)?.ok_or_else(not_found)?;
        let session = &loaded.session;
        let service = build::find_service(session, service_name).ok_or_else(not_found)?;
        let values = self.secret_values(&loaded)?;
        veil_attest::tier_accepted(evidence_tier, &build::tier_policy(session), self.allow_sim)
            .map_err(|e| WorkloadError::appraisal(&e))?;
        let reference = build::reference_values(session, service, &values)
            .map_err(|e| WorkloadError::config(&e))?;
        let spki = veil_identity::spki_from_cert_pem(&peer.pem)
            .map_err(|e| internal("client certificate of the connection", e))?;
        let expected = Expected {
            report_data: ReportData::bind(&req.nonce, &spki),
        };
        let result = veil_attest::appraise(
            &req.evidence,
            &Collateral::None,
            &reference,
            &expected,
            &self.anchors(),
            at,
        )
        .map_err(|e| {
            tracing::info!(session = %loaded.hash, tier = %evidence_tier.as_str(), code = e.code(), "attestation refused");
            WorkloadError::appraisal(&e)
        })?;
        // Second factors, only after evidence and measurement passed (decision 13).
        let otp_secret =
            build::otp_secret(session, service, &values).map_err(|e| WorkloadError::config(&e))?;
        match (otp_secret, otp) {
            (None, _) => {}
            (Some(_), None) => {
                return Err(WorkloadError::attest(
                    StatusCode::FORBIDDEN,
                    "otp_missing",
                    "The service requires a One-time Password: append `@<code>` to the config id",
                ));
            }
            (Some(secret), Some(code)) => {
                self.check_otp(session_name, service_name, secret, code.to_string())
                    .await?;
            }
        }
        let token = build::access_token(session, &values).map_err(|e| WorkloadError::config(&e))?;
        veil_secrets::check_service_access_token(
            token.as_deref(),
            req.service_access_token.as_ref().map(|t| t.expose_secret()),
        )
        .map_err(|e| {
            WorkloadError::attest(
                StatusCode::FORBIDDEN,
                "service_access_token_invalid",
                e.to_string(),
            )
        })?;
        let plan = build::plan(session, service, &values).map_err(|e| WorkloadError::config(&e))?;
        let mut keys = Vec::with_capacity(plan.volumes.len());
        for v in &plan.volumes {
            keys.push(self.volume_key(session_name, v).await?);
        }
        let instance_token = random_hex32()?;
        let id = instance_id(&instance_token);
        let now = now_ms();
        let mut running = self.running.lock().await;
        running.leases.purge(now);
        running
            .instances
            .retain(|_, i| i.last_seen.saturating_add(INSTANCE_IDLE_MS) > now);
        if running.instances.len() >= MAX_INSTANCES {
            return Err(WorkloadError::attest(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_instances",
                "Too many running instances on this CAS",
            ));
        }
        for v in &plan.volumes {
            if v.policy == UpdatePolicy::RollbackProtected
                && let Err(e) = running.leases.acquire(session_name, &v.name, &id, now)
            {
                running.leases.release_all(&id);
                return Err(WorkloadError::in_use(&v.name, &e));
            }
        }
        let mut grants = Vec::with_capacity(plan.volumes.len());
        let mut vol_states = BTreeMap::new();
        for (v, key) in plan.volumes.iter().zip(keys) {
            let table_key = tags::volume_key(session_name, &v.name);
            let key_bytes = hex::decode(&key).map_err(|e| internal("volume key", e))?;
            let key_fp = tags::key_fingerprint(&key_bytes);
            let (_, rec) = match self.tag_record(&table_key) {
                Ok(r) => r,
                Err(e) => {
                    running.leases.release_all(&id);
                    return Err(e);
                }
            };
            if let Some(r) = &rec
                && r.key_fp != key_fp
            {
                tracing::warn!(session = %loaded.hash, volume = %v.name, "the volume's key changed: its recorded tag no longer applies");
            }
            let tag = tags::effective_tag(rec.as_ref(), &key_fp, v.initial_tag.as_deref());
            grants.push(VolumeGrant {
                name: v.name.clone(),
                path: v.path.clone(),
                key: Key32::from_hex(&key).map_err(|e| internal("volume key", e))?,
                tag: wire_tag(tag)?,
                update_policy: v.policy,
            });
            vol_states.insert(
                v.name.clone(),
                VolState {
                    policy: v.policy,
                    key_fp,
                    initial_tag: v.initial_tag.clone(),
                    table_key,
                },
            );
        }
        let (code_region, code_state) = match &plan.code_region {
            None => (None, None),
            Some(c) => {
                let table_key = tags::code_key(session_name, service_name);
                let key_bytes = hex::decode(&c.fspf_key).map_err(|e| internal("fspf key", e))?;
                let key_fp = tags::key_fingerprint(&key_bytes);
                let (_, rec) = match self.tag_record(&table_key) {
                    Ok(r) => r,
                    Err(e) => {
                        running.leases.release_all(&id);
                        return Err(e);
                    }
                };
                let tag = tags::effective_tag(rec.as_ref(), &key_fp, c.initial_tag.as_deref());
                (
                    Some(CodeRegion {
                        fspf_path: c.fspf_path.clone(),
                        fspf_key: Key32::from_hex(&c.fspf_key)
                            .map_err(|e| internal("fspf key", e))?,
                        fspf_tag: wire_tag(tag)?,
                        update_policy: c.policy,
                    }),
                    Some(VolState {
                        policy: c.policy,
                        key_fp,
                        initial_tag: c.initial_tag.clone(),
                        table_key,
                    }),
                )
            }
        };
        running.instances.insert(
            id,
            Instance {
                session: session_name.to_string(),
                volumes: vol_states,
                code: code_state,
                last_seen: now,
            },
        );
        drop(running);
        tracing::info!(
            session = %loaded.hash,
            tier = %result.tier.as_str(),
            measurement = %result.claims.measurement,
            node = ?result.claims.node_id,
            "service attested"
        );
        self.store
            .audit(vec![veil_audit::Event::ServiceAttested {
                session: session_name.to_string(),
                service: service_name.to_string(),
                tier: result.tier.as_str().to_string(),
                measurement: result.claims.measurement.to_string(),
            }])
            .await?;
        Ok(ConfigResponse {
            argv: plan.argv.into_iter().map(SecretString::from).collect(),
            env: plan
                .env
                .into_iter()
                .map(|(k, v)| (k, SecretString::from(v)))
                .collect(),
            pwd: plan.pwd,
            injection_files: plan.injection_files,
            code_region,
            volumes: grants,
            instance_token: SecretString::from(instance_token),
        })
    }

    async fn update_tag(&self, req: TagUpdateRequest) -> Result<TagUpdateResponse, WorkloadError> {
        let outer = if req.volume.is_empty() {
            "Cannot update the tag of the code region".to_string()
        } else {
            format!("Cannot update the tag of volume {}", req.volume)
        };
        let old_tag = req.old_tag.map(|t| t.to_hex());
        let new_tag = req.new_tag.to_hex();
        let id = instance_id(req.instance_token.expose_secret());
        let now = now_ms();
        let mut running = self.running.lock().await;
        let running = &mut *running;
        let inst = running
            .instances
            .get_mut(&id)
            .ok_or_else(|| WorkloadError::unknown_instance(&outer))?;
        inst.last_seen = now;
        let state = if req.volume.is_empty() {
            inst.code.clone()
        } else {
            inst.volumes.get(&req.volume).cloned()
        }
        .ok_or_else(|| {
            WorkloadError::new(
                StatusCode::NOT_FOUND,
                "volume_unknown",
                vec![
                    outer.clone(),
                    "This instance's service has no such volume (or no code region)".into(),
                ],
            )
        })?;
        if state.policy == UpdatePolicy::RollbackProtected {
            running
                .leases
                .acquire(&inst.session, &req.volume, &id, now)
                .map_err(|e| {
                    let mut w = WorkloadError::in_use(&req.volume, &e);
                    w.msg[0] = outer.clone();
                    w
                })?;
        }
        let (raw, rec) = self.tag_record(&state.table_key)?;
        let current =
            tags::effective_tag(rec.as_ref(), &state.key_fp, state.initial_tag.as_deref());
        let record = tags::decide(
            state.policy,
            current.as_deref(),
            state.initial_tag.as_deref(),
            old_tag.as_deref(),
            &new_tag,
        )
        .map_err(|r| match r {
            TagRefusal::Malformed => WorkloadError::new(
                StatusCode::BAD_REQUEST,
                "invalid_tag",
                vec![
                    outer.clone(),
                    "The new tag is not 32 lowercase hex characters".into(),
                ],
            ),
            TagRefusal::Mismatch { recorded, claimed } => WorkloadError::new(
                StatusCode::CONFLICT,
                "volume_tag_mismatch",
                vec![
                    outer.clone(),
                    format!(
                        "The CAS holds tag {} for it, not {} (a rollback, or another writer)",
                        recorded.as_deref().unwrap_or("<none>"),
                        claimed.as_deref().unwrap_or("<none>")
                    ),
                ],
            ),
        })?;
        if record {
            let new = serde_json::to_vec(&TagRecord {
                tag: new_tag.clone(),
                key_fp: state.key_fp.clone(),
                updated_at: now,
            })
            .map_err(|e| internal("tag record", e))?;
            let store = self.store.clone();
            let key = state.table_key.clone();
            // Still holding the instance lock: tag updates are serialized, so this
            // compare-and-swap cannot lose to another update of this CAS.
            let swapped = blocking(move || {
                Ok(store.kv_compare_and_swap(TAGS_TABLE, &key, raw.as_deref(), &new)?)
            })
            .await?;
            if swapped.is_err() {
                return Err(WorkloadError::new(
                    StatusCode::CONFLICT,
                    "volume_tag_mismatch",
                    vec![outer, "The recorded tag changed concurrently".into()],
                ));
            }
            tracing::info!(volume = %req.volume, tag = %req.new_tag, "volume tag updated");
            self.store
                .audit(vec![veil_audit::Event::VolumeTagUpdated {
                    session: inst.session.clone(),
                    volume: req.volume.clone(),
                    tag: new_tag.clone(),
                }])
                .await?;
        }
        Ok(TagUpdateResponse { tag: req.new_tag })
    }

    async fn heartbeat(&self, token: &str) -> Result<HeartbeatResponse, WorkloadError> {
        let outer = "Cannot renew the instance's leases";
        let id = instance_id(token);
        let now = now_ms();
        let mut running = self.running.lock().await;
        let running = &mut *running;
        let inst = running
            .instances
            .get_mut(&id)
            .ok_or_else(|| WorkloadError::unknown_instance(outer))?;
        inst.last_seen = now;
        for (name, v) in &inst.volumes {
            if v.policy == UpdatePolicy::RollbackProtected {
                running
                    .leases
                    .acquire(&inst.session, name, &id, now)
                    .map_err(|e| {
                        let mut w = WorkloadError::in_use(name, &e);
                        w.msg[0] = outer.to_string();
                        w
                    })?;
            }
        }
        Ok(HeartbeatResponse {
            lease_ttl_ms: tags::LEASE_TTL_MS,
        })
    }

    async fn exit(&self, req: &ExitRequest) -> Result<(), WorkloadError> {
        let id = instance_id(req.instance_token.expose_secret());
        let mut running = self.running.lock().await;
        if running.instances.remove(&id).is_none() {
            return Err(WorkloadError::unknown_instance("Cannot report the exit"));
        }
        running.leases.release_all(&id);
        tracing::info!(status = req.status, "workload exited");
        Ok(())
    }

    fn require_owner(&self, peer: &Peer, outer: &str) -> Result<(), WorkloadError> {
        if self.owners.is_empty() {
            return Err(WorkloadError::new(
                StatusCode::FORBIDDEN,
                "owner_required",
                vec![
                    outer.to_string(),
                    "Owner-only operations are disabled: this CAS has no owner (`[owner] key_hashes` in cas.toml, or `--owner`)".into(),
                ],
            ));
        }
        if !self.owners.iter().any(|o| o == &peer.key_hash) {
            return Err(WorkloadError::new(
                StatusCode::FORBIDDEN,
                "owner_required",
                vec![outer.to_string(), "Only the CAS owner may do this".into()],
            ));
        }
        Ok(())
    }

    /// Apply `change` to the node registry durably (compare-and-swap of the one record).
    async fn change_nodes(
        &self,
        change: impl FnOnce(&mut Vec<NodeRecord>) -> Result<(), WorkloadError>,
    ) -> Result<(), WorkloadError> {
        let _guard = self.nodes_write.lock().await;
        let store = self.store.clone();
        let raw = store.kv_get(NODES_TABLE, REGISTRY_KEY)?;
        let mut list: Vec<NodeRecord> = match &raw {
            Some(r) => serde_json::from_slice(r).map_err(|e| internal("node registry", e))?,
            None => Vec::new(),
        };
        change(&mut list)?;
        let new = serde_json::to_vec(&list).map_err(|e| internal("node registry", e))?;
        let swapped = blocking(move || {
            Ok(store.kv_compare_and_swap(NODES_TABLE, REGISTRY_KEY, raw.as_deref(), &new)?)
        })
        .await?;
        if swapped.is_err() {
            return Err(internal(
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
) -> Result<Response, WorkloadError> {
    let remote = conn_remote(&req);
    let _: NonceRequest =
        read_json(req.into_body(), "Failed to issue an attestation nonce").await?;
    let (nonce, expires_at) = w
        .nonces
        .issue(&remote, UnixTime::now())
        .map_err(|e| WorkloadError::nonce(&e))?;
    Ok(json(StatusCode::OK, &NonceResponse { nonce, expires_at }))
}

async fn attest_route(
    State(w): State<Arc<Workload>>,
    Caller(peer): Caller,
    body: Body,
) -> Result<Response, WorkloadError> {
    let req: AttestRequest = read_json(body, ATTESTATION_FAILED).await?;
    // Names only: the config id's `@<otp>` suffix is not recorded.
    let (session, service) = match parse_config_id(&req.config_id.0) {
        Ok((session, service, _)) => (session.to_string(), service.to_string()),
        Err(_) => (String::new(), String::new()),
    };
    match w.attest(&peer, req).await {
        Ok(cfg) => Ok(json(StatusCode::OK, &cfg)),
        Err(e) => {
            let reason = format!("{}: {}", e.code, e.msg.join(": "));
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
) -> Result<Response, WorkloadError> {
    let req: TagUpdateRequest = read_json(body, "Cannot update a volume tag").await?;
    let r = w.update_tag(req).await?;
    Ok(json(StatusCode::OK, &r))
}

async fn heartbeat_route(
    State(w): State<Arc<Workload>>,
    Caller(_peer): Caller,
    body: Body,
) -> Result<Response, WorkloadError> {
    let req: HeartbeatRequest = read_json(body, "Cannot renew the instance's leases").await?;
    let r = w.heartbeat(req.instance_token.expose_secret()).await?;
    Ok(json(StatusCode::OK, &r))
}

async fn exit_route(
    State(w): State<Arc<Workload>>,
    Caller(_peer): Caller,
    body: Body,
) -> Result<Response, WorkloadError> {
    let req: ExitRequest = read_json(body, "Cannot report the exit").await?;
    w.exit(&req).await?;
    Ok(json(StatusCode::OK, &ExitResponse::default()))
}

async fn register_node_route(
    State(w): State<Arc<Workload>>,
    Caller(peer): Caller,
    body: Body,
) -> Result<Response, WorkloadError> {
    let outer = "Cannot register the node key";
    w.require_owner(&peer, outer)?;
    let req: RegisterNode = read_json(body, outer).await?;
    let der =
        nodes::validate(&req).map_err(|e| WorkloadError::bad_request(outer, e.to_string()))?;
    let key_hash = veil_identity::key_hash(&der);
    let now = now_ms();
    let kh = key_hash.clone();
    let node_id = req.node_id.clone();
    w.change_nodes(move |list| {
        if let Some(other) = list
            .iter()
            .find(|r| r.node_id == node_id && r.key_hash() != kh && r.revoked_at.is_none())
        {
            return Err(WorkloadError::new(
                StatusCode::CONFLICT,
                "node_id_taken",
                vec![
                    outer.to_string(),
                    format!(
                        "Node `{}` is registered with another key ({}); revoke it first",
                        other.node_id,
                        other.key_hash()
                    ),
                ],
            ));
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
    Caller(peer): Caller,
) -> Result<Response, WorkloadError> {
    w.require_owner(&peer, "Cannot list the node keys")?;
    let list = w.nodes.read().map(|n| n.clone()).unwrap_or_default();
    let out: Vec<NodeInfo> = list
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

async fn revoke_node_route(
    State(w): State<Arc<Workload>>,
    Caller(peer): Caller,
    Path(key_hash): Path<String>,
) -> Result<Response, WorkloadError> {
    let outer = "Cannot revoke the node key";
    w.require_owner(&peer, outer)?;
    let kh = key_hash.to_ascii_lowercase();
    let now = now_ms();
    let mut node_id = String::new();
    let found = &mut node_id;
    w.change_nodes(|list| {
        let rec = list
            .iter_mut()
            .find(|r| r.key_hash() == kh || r.node_id == key_hash)
            .ok_or_else(|| {
                WorkloadError::new(
                    StatusCode::NOT_FOUND,
                    "node_not_found",
                    vec![
                        outer.to_string(),
                        format!("No node key {key_hash} (key hash or node id) is registered"),
                    ],
                )
            })?;
        if rec.revoked_at.is_none() {
            rec.revoked_at = Some(now);
        }
        *found = rec.node_id.clone();
        Ok(())
    })
    .await?;
    tracing::info!(node_id = %node_id, owner = %peer.key_hash, "node key revoked");
    w.store
        .audit(vec![veil_audit::Event::OwnerAction {
            action: format!("node revoked: {node_id} ({key_hash})"),
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

/// The workload routes for the enclave router (port 18765).
pub fn enclave_routes<S: Clone + Send + Sync + 'static>(w: Arc<Workload>) -> Router<S> {
    Router::new()
        .route(NONCE_PATH, post(nonce_route))
        .route(ATTEST_PATH, post(attest_route))
        .route(TAGS_PATH, post(tags_route))
        .route(HEARTBEAT_PATH, post(heartbeat_route))
        .route(EXIT_PATH, post(exit_route))
        .with_state(w)
}

/// The owner-only node registry routes for the client API router (port 8081).
pub fn owner_routes<S: Clone + Send + Sync + 'static>(w: Arc<Workload>) -> Router<S> {
    Router::new()
        .route(NODES_PATH, post(register_node_route).get(list_nodes_route))
        .route("/v1/nodes/{key_hash}", delete(revoke_node_route))
        .with_state(w)
}

#[cfg(test)]
mod tests;
