//! Running instances and their leases: the state an attestation creates ([`Running`]), the
//! guard that undoes it when the attestation does not complete ([`LeaseGuard`]), and the
//! operations of a running instance: tag updates, heartbeats and the exit report.
//!
//! Tag updates and lease changes are serialized by the one async mutex around [`Running`],
//! held across the durable compare-and-swap, so a lease check cannot go stale before the
//! write.
//!
//! # Persisted leases (decision 9, issue 16 §5)
//!
//! An instance that holds a lease has a sealed record in [`LEASES_TABLE`], keyed by its
//! instance id (SHA-256 of the token; the token itself is never stored): its session, its
//! volumes and code region (what a tag update needs) and the leases it holds with the time
//! each was acquired. The record is written, in the DB's group commit and before the answer,
//! whenever the set of leases the instance holds changes: acquisition (attestation, or a tag
//! update / heartbeat re-taking a lapsed lease), release (exit) and the owner's
//! force-release; a lease lapsed without heartbeats has its record removed by the periodic
//! [`Workload::sweep`]. Heartbeats (renewals) stay in memory.
//!
//! At start the records are loaded: every persisted lease is live for one full TTL from the
//! start, and the instance ids stay known, so the holder's heartbeats and tag updates
//! continue across a CAS restart (instance tokens survive restarts). An instance without a
//! lease (no `rollback_protected` volume) is not persisted: after a restart its token is
//! unknown (`instance_unknown`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use veil_api::workload::{
    ExitRequest, HeartbeatResponse, TagUpdateRequest, TagUpdateResponse, UpdatePolicy,
};
use veil_types::ExposeSecret;

use super::tags::{self, InUse, Leases, TAGS_TABLE, TagRecord, TagRefusal};
use super::{Workload, instance_id, now_ms};
use crate::error::ApiError;

/// Sealed table of the instances that hold leases (see the module doc).
pub const LEASES_TABLE: &str = "workload_leases";

/// A volume (or the code region) of a running instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct VolState {
    pub(super) policy: UpdatePolicy,
    pub(super) key_fp: String,
    pub(super) initial_tag: Option<String>,
    pub(super) table_key: Vec<u8>,
}

/// An attested, running instance.
#[derive(Debug)]
pub(super) struct Instance {
    pub(super) session: String,
    pub(super) volumes: BTreeMap<String, VolState>,
    pub(super) code: Option<VolState>,
    pub(super) last_seen: u64,
}

/// The persisted record of an instance holding leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceRecord {
    /// Instance id.
    id: String,
    session: String,
    volumes: BTreeMap<String, VolState>,
    code: Option<VolState>,
    /// The leases held: (volume, acquired at, ms since the epoch).
    leases: Vec<(String, u64)>,
}

/// Leases and instances by instance id (SHA-256 of the token).
#[derive(Debug, Default)]
pub struct Running {
    pub(super) leases: Leases,
    pub(super) instances: HashMap<String, Instance>,
    /// The stored record of every persisted instance (the compare-and-swap's expected value).
    persisted: HashMap<String, Vec<u8>>,
}

impl Running {
    /// Forget instance `id` and release all its leases (in memory; its persisted record, if
    /// any, is removed by [`Workload::persist_instance`] or the next [`Workload::sweep`]).
    pub(super) fn forget(&mut self, id: &str) {
        self.instances.remove(id);
        self.leases.release_all(id);
    }

    /// The state persisted in `store` (at start, `now`): every recorded instance, every
    /// lease live until `now` + TTL.
    pub(super) fn load(
        store: &crate::store::Store,
        now: u64,
    ) -> Result<Self, crate::store::StoreError> {
        let mut r = Self::default();
        for raw in store.kv_values(LEASES_TABLE)? {
            let rec: InstanceRecord =
                serde_json::from_slice(&raw).map_err(|_| crate::store::StoreError::Integrity {
                    table: LEASES_TABLE,
                    key: "instance record".into(),
                })?;
            for (volume, acquired_at) in &rec.leases {
                r.leases.restore(
                    &rec.session,
                    volume,
                    &rec.id,
                    *acquired_at,
                    now.saturating_add(tags::LEASE_TTL_MS),
                );
            }
            r.instances.insert(
                rec.id.clone(),
                Instance {
                    session: rec.session,
                    volumes: rec.volumes,
                    code: rec.code,
                    last_seen: now,
                },
            );
            r.persisted.insert(rec.id, raw);
        }
        if !r.persisted.is_empty() {
            tracing::info!(
                instances = r.persisted.len(),
                leases = r.leases.len(),
                "persisted volume leases restored (live for one TTL unless renewed)"
            );
        }
        Ok(r)
    }
}

/// Undoes a not-yet-answered attestation: when dropped without [`LeaseGuard::commit`] (an
/// error after the leases were taken, e.g. a failed audit write, or a dropped request), the
/// instance is forgotten and its leases are released at once instead of lapsing after
/// their TTL.
#[derive(Debug)]
pub(super) struct LeaseGuard {
    running: Arc<Mutex<Running>>,
    id: Option<String>,
}

impl LeaseGuard {
    /// A guard for instance `id`. Create it before locking `running`, so that on an early
    /// return the lock is released before the guard runs.
    pub(super) fn new(running: Arc<Mutex<Running>>, id: String) -> Self {
        Self {
            running,
            id: Some(id),
        }
    }

    /// The attestation is answered: keep the instance and its leases.
    pub(super) fn commit(mut self) {
        self.id = None;
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        if let Ok(mut running) = self.running.try_lock() {
            running.forget(&id);
            return;
        }
        // Someone else holds the lock: release as soon as it is free.
        let running = self.running.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { running.lock().await.forget(&id) });
            }
            Err(_) => {
                tracing::warn!(
                    "no runtime to release an unfinished attestation's leases; they lapse after their TTL"
                );
            }
        }
    }
}

fn in_use(outer: &str, volume: &str, e: InUse) -> ApiError {
    ApiError::VolumeInUse {
        outer: outer.to_string(),
        volume: volume.to_string(),
        holder_short: e.holder_short,
        expires_in_ms: e.expires_in_ms,
    }
}

/// Take (or renew) the leases of the `rollback_protected` volumes among `volumes` for
/// instance `id`; stops at the first one held by another instance (at attestation the
/// caller's [`LeaseGuard`] then releases those taken: all or none).
pub(super) fn take_leases<'v>(
    leases: &mut Leases,
    outer: &str,
    session: &str,
    volumes: impl IntoIterator<Item = (&'v str, UpdatePolicy)>,
    id: &str,
    now: u64,
) -> Result<(), ApiError> {
    for (name, policy) in volumes {
        if policy == UpdatePolicy::RollbackProtected {
            leases
                .acquire(session, name, id, now)
                .map_err(|e| in_use(outer, name, e))?;
        }
    }
    Ok(())
}

/// The running instance `id`, marked as seen at `now`; `InstanceUnknown` (under `outer`) if
/// there is none.
fn seen<'a>(
    instances: &'a mut HashMap<String, Instance>,
    id: &str,
    now: u64,
    outer: &str,
) -> Result<&'a mut Instance, ApiError> {
    let inst = instances
        .get_mut(id)
        .ok_or_else(|| ApiError::InstanceUnknown {
            outer: outer.to_string(),
        })?;
    inst.last_seen = now;
    Ok(inst)
}

impl Workload {
    /// `POST /v1/workload/tags`: compare-and-swap of a volume's (or the code region's) tag.
    pub(super) async fn update_tag(
        &self,
        req: TagUpdateRequest,
    ) -> Result<TagUpdateResponse, ApiError> {
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
        let inst = seen(&mut running.instances, &id, now, &outer)?;
        let state = if req.volume.is_empty() {
            inst.code.clone()
        } else {
            inst.volumes.get(&req.volume).cloned()
        }
        .ok_or_else(|| ApiError::VolumeUnknown {
            outer: outer.clone(),
        })?;
        let session = inst.session.clone();
        if state.policy == UpdatePolicy::RollbackProtected
            && running
                .leases
                .acquire(&session, &req.volume, &id, now)
                .map_err(|e| in_use(&outer, &req.volume, e))?
        {
            self.persist_instance(running, &id, now).await?;
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
            TagRefusal::Malformed => ApiError::InvalidTag {
                outer: outer.clone(),
            },
            TagRefusal::Mismatch { recorded, claimed } => ApiError::TagMismatch {
                outer: outer.clone(),
                recorded,
                claimed,
            },
        })?;
        if record {
            let new = serde_json::to_vec(&TagRecord {
                tag: new_tag.clone(),
                key_fp: state.key_fp.clone(),
                updated_at: now,
            })
            .map_err(|e| ApiError::internal("tag record", e))?;
            // Still holding the instance lock: tag updates are serialized, so this
            // compare-and-swap cannot lose to another update of this CAS. It moves the DB
            // counter and is audited in the same group commit (decision 17).
            let event = veil_audit::Event::VolumeTagUpdated {
                session,
                volume: req.volume.clone(),
                tag: new_tag.clone(),
            };
            let swapped = self
                .store
                .kv_swap(
                    TAGS_TABLE,
                    &state.table_key,
                    raw.as_deref(),
                    Some(&new),
                    vec![event],
                )
                .await?;
            if swapped.is_err() {
                return Err(ApiError::TagChanged { outer });
            }
            tracing::info!(volume = %req.volume, tag = %req.new_tag, "volume tag updated");
        }
        Ok(TagUpdateResponse { tag: req.new_tag })
    }

    /// `POST /v1/workload/heartbeat`: renew the instance's leases.
    pub(super) async fn heartbeat(&self, token: &str) -> Result<HeartbeatResponse, ApiError> {
        let outer = "Cannot renew the instance's leases";
        let id = instance_id(token);
        let now = now_ms();
        let mut running = self.running.lock().await;
        let running = &mut *running;
        let inst = seen(&mut running.instances, &id, now, outer)?;
        let volumes = inst.volumes.iter().map(|(n, v)| (n.as_str(), v.policy));
        let before = running.leases.held_by(&id, now);
        take_leases(&mut running.leases, outer, &inst.session, volumes, &id, now)?;
        if running.leases.held_by(&id, now) != before {
            // A lapsed lease was taken again: persisted before the answer.
            self.persist_instance(running, &id, now).await?;
        }
        Ok(HeartbeatResponse {
            lease_ttl_ms: tags::LEASE_TTL_MS,
        })
    }

    /// `POST /v1/workload/exit`: forget the instance and release its leases.
    pub(super) async fn exit(&self, req: &ExitRequest) -> Result<(), ApiError> {
        let id = instance_id(req.instance_token.expose_secret());
        let mut running = self.running.lock().await;
        if !running.instances.contains_key(&id) {
            return Err(ApiError::InstanceUnknown {
                outer: "Cannot report the exit".into(),
            });
        }
        running.forget(&id);
        self.persist_instance(&mut running, &id, now_ms()).await?;
        tracing::info!(status = req.status, "workload exited");
        Ok(())
    }

    /// Make the persisted record of instance `id` match the leases it holds at `now`:
    /// written when it holds any (and the record changed), removed when it holds none.
    /// Call with `running` locked, before answering.
    pub(super) async fn persist_instance(
        &self,
        running: &mut Running,
        id: &str,
        now: u64,
    ) -> Result<(), ApiError> {
        let held = running.leases.held_by(id, now);
        let new = match running.instances.get(id) {
            Some(inst) if !held.is_empty() => {
                let rec = InstanceRecord {
                    id: id.to_string(),
                    session: inst.session.clone(),
                    volumes: inst.volumes.clone(),
                    code: inst.code.clone(),
                    leases: held.into_iter().map(|(_, v, at)| (v, at)).collect(),
                };
                Some(serde_json::to_vec(&rec).map_err(|e| ApiError::internal("lease record", e))?)
            }
            _ => None,
        };
        let old = running.persisted.get(id);
        if old == new.as_ref() {
            return Ok(());
        }
        let swapped = self
            .store
            .kv_swap(
                LEASES_TABLE,
                id.as_bytes(),
                old.map(Vec::as_slice),
                new.as_deref(),
                Vec::new(),
            )
            .await?;
        if swapped.is_err() {
            return Err(ApiError::internal(
                "lease record",
                "changed outside the instance lock",
            ));
        }
        match new {
            Some(n) => running.persisted.insert(id.to_string(), n),
            None => running.persisted.remove(id),
        };
        Ok(())
    }

    /// Remove the persisted records of instances that no longer hold a live lease (lapsed
    /// without heartbeats, taken over, or an attestation that did not complete). Run
    /// periodically by the server.
    pub async fn sweep(&self) -> Result<(), ApiError> {
        let now = now_ms();
        let mut running = self.running.lock().await;
        running.leases.purge(now);
        let stale: Vec<String> = running
            .persisted
            .keys()
            .filter(|id| {
                !running.instances.contains_key(*id) || running.leases.held_by(id, now).is_empty()
            })
            .cloned()
            .collect();
        for id in stale {
            self.persist_instance(&mut running, &id, now).await?;
        }
        Ok(())
    }

    /// `POST /v1/workload/leases/release` (owner): release the lease of (`session`,
    /// `volume`) whoever holds it, durably. `Ok(None)` when it was not held; else the
    /// holder's public short id.
    pub async fn force_release(
        &self,
        session: &str,
        volume: &str,
    ) -> Result<Option<String>, ApiError> {
        let now = now_ms();
        let mut running = self.running.lock().await;
        let Some(holder) = running.leases.release(session, volume) else {
            return Ok(None);
        };
        self.persist_instance(&mut running, &holder, now).await?;
        Ok(Some(holder.chars().take(12).collect()))
    }
}

#[cfg(test)]
mod tests {
    //! The lease guard: released on drop, kept on commit, deferred while the lock is busy.

    use super::*;

    fn lease_of(r: &Running, holder: &str) -> bool {
        r.leases
            .get("s", "V1", 1)
            .is_some_and(|l| l.holder == holder)
    }

    #[tokio::test]
    async fn lease_guard_releases_unless_committed() {
        let running = Arc::new(Mutex::new(Running::default()));
        for (id, commit) in [("a", false), ("b", true)] {
            let guard = LeaseGuard::new(running.clone(), id.to_string());
            running
                .lock()
                .await
                .leases
                .acquire("s", "V1", id, 0)
                .unwrap();
            if commit {
                guard.commit();
            } else {
                drop(guard);
            }
            assert_eq!(lease_of(&*running.lock().await, id), commit, "{id}");
        }
        // Dropped while the lock is held elsewhere: released once the lock is free.
        running.lock().await.forget("b");
        let guard = LeaseGuard::new(running.clone(), "c".to_string());
        {
            let mut r = running.lock().await;
            r.leases.acquire("s", "V1", "c", 0).unwrap();
            drop(guard);
            assert!(lease_of(&r, "c"));
        }
        for _ in 0..100 {
            if !lease_of(&*running.lock().await, "c") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the lease was not released");
    }
}
