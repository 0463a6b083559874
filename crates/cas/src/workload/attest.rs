//! The attest flow, `POST /v1/workload/attest`: one function per step, in the order of
//! docs/workload-api.md ("Flow", item 2):
//!
//! 1. [`config_id`] — `session/service[@otp]` parses;
//! 2. [`Workload::consume_nonce`] — the nonce is consumed (single use, whatever happens next);
//! 3. [`declared_tier`] — the declared tier equals the evidence's;
//! 4. [`Workload::load`] — the session's current version, the service, the secret values;
//! 5. [`Workload::decide_tier`] — `sim`/`node`/hardware tier decision (decision 1);
//! 6. [`reference_values`] — the service's attestation factors;
//! 7. [`Workload::appraise`] — the pure appraisal with the expected binding (decision 10),
//!    then [`node_restriction`], the service's `veil.node` restriction (uids and cgroups the
//!    LAS signed for; `node` evidence only);
//! 8. [`Workload::second_factor`] — the OTP, only now (decision 13);
//! 9. [`access_token`] — `security.service_access_token`;
//! 10. [`Workload::configure`] — volume keys, leases, recorded tags, the instance and the
//!     answer; a [`LeaseGuard`] releases the leases if anything after taking them fails.
//!
//! Every refusal is an [`ApiError`] whose message chain starts with `Attestation failed`;
//! the route writes its detail ([`ApiError::detail_messages`]) to the audit log as
//! `attestation_refused` and to the CAS log. An unknown session or service, an evidence,
//! tier or measurement refusal and a node-restriction refusal all answer the workload the
//! same `attestation_refused` (no existence or expected-measurement oracle); OTP and access
//! token refusals stay specific (they come only after the measurement passed).

use std::collections::BTreeMap;
use std::sync::Arc;

use veil_api::workload::{AttestRequest, CodeRegion, ConfigId, ConfigResponse, VolumeGrant};
use veil_attest::{
    AppraisalError, Collateral, Evidence, Expected, Nonce, ReferenceValues, ReportData, Tier,
    UnixTime,
};
use veil_policy::{Service, Session};
use veil_secrets::{OtpError, OtpState, SecretValues};
use veil_types::{ExposeSecret, Key32, SecretString};

use super::state::{Instance, LeaseGuard, VolState, take_leases};
use super::{
    INSTANCE_IDLE_MS, MAX_INSTANCES, OTP_TABLE, Workload, blocking, build, instance_id, now_ms,
    parse_config_id, random_hex32, tags, wire_tag,
};
use crate::error::{ATTESTATION_FAILED, ApiError};
use crate::sessions::{Loaded, Peer};

/// Step 1's result: the names (and OTP) of `session/service[@otp]`.
#[derive(Clone, Copy)]
pub(super) struct Target<'r> {
    session: &'r str,
    service: &'r str,
    otp: Option<&'r str>,
}

/// What the appraisal established, for the log and the audit entry.
struct Appraised {
    tier: Tier,
    measurement: String,
    node: Option<String>,
    /// `node` tier: who the LAS signed for (audited).
    requester: Option<veil_audit::NodeRequester>,
}

/// Step 7 (end): the service's `veil.node` restriction, if it has one. Only `node` evidence
/// can pass it (the uid and cgroup mean something only there), and only for the listed uids
/// and cgroup prefixes. Runs after the appraisal verified the LAS's signature.
fn node_restriction(service: &Service, evidence: &Evidence) -> Result<(), ApiError> {
    let Some(r) = &service.node_restriction else {
        return Ok(());
    };
    match evidence {
        Evidence::Node(ev) => r
            .check(ev.claims.uid, &ev.claims.cgroup)
            .map_err(ApiError::NodeRestricted),
        other => Err(ApiError::NodeRestricted(format!(
            "the service has a `veil.node` restriction: only `node` evidence is accepted, not `{}`",
            other.tier().as_str()
        ))),
    }
}

/// Step 1: the config id parses.
pub(super) fn config_id(id: &ConfigId) -> Result<Target<'_>, ApiError> {
    let (session, service, otp) = parse_config_id(&id.0).map_err(ApiError::InvalidConfigId)?;
    Ok(Target {
        session,
        service,
        otp,
    })
}

/// Step 3: the declared tier is the evidence's.
fn declared_tier(req: &AttestRequest) -> Result<Tier, ApiError> {
    let evidence = req.evidence.tier();
    if req.tier != evidence {
        return Err(ApiError::Appraisal(AppraisalError::TierMismatch {
            declared: req.tier,
            evidence,
        }));
    }
    Ok(evidence)
}

/// Step 4 (part): the service of the loaded session.
fn service<'s>(session: &'s Session, t: Target<'_>) -> Result<&'s Service, ApiError> {
    build::find_service(session, t.service).ok_or_else(|| not_found(t))
}

fn not_found(t: Target<'_>) -> ApiError {
    ApiError::ConfigNotFound {
        session: t.session.to_string(),
        service: t.service.to_string(),
    }
}

/// Step 6: the reference values of the service.
fn reference_values(
    session: &Session,
    service: &Service,
    values: &SecretValues,
) -> Result<ReferenceValues, ApiError> {
    Ok(build::reference_values(session, service, values)?)
}

/// Step 9: `security.service_access_token` (constant-time).
fn access_token(
    session: &Session,
    values: &SecretValues,
    given: Option<&SecretString>,
) -> Result<(), ApiError> {
    let token = build::access_token(session, values)?;
    veil_secrets::check_service_access_token(token.as_deref(), given.map(|t| t.expose_secret()))
        .map_err(|e| ApiError::AccessTokenInvalid(e.to_string()))
}

impl Workload {
    /// Attest `req`, made on a TLS connection whose client certificate is `peer`'s, and
    /// answer with the service's configuration.
    pub(super) async fn attest(
        &self,
        peer: &Peer,
        req: AttestRequest,
    ) -> Result<ConfigResponse, ApiError> {
        let at = UnixTime::now();
        let target = config_id(&req.config_id)?; // 1
        self.consume_nonce(&req.nonce, at)?; // 2
        let tier = declared_tier(&req)?; // 3
        let (loaded, values) = self.load(target)?; // 4
        let session = &loaded.session;
        let service = service(session, target)?;
        self.decide_tier(tier, session)?; // 5
        let reference = reference_values(session, service, &values)?; // 6
        let appraised = self.appraise(peer, &req, &reference, &loaded, at)?; // 7
        node_restriction(service, &req.evidence)?;
        self.second_factor(target, session, service, &values)
            .await?; // 8
        access_token(session, &values, req.service_access_token.as_ref())?; // 9
        self.configure(target, &loaded, service, &values, &appraised) // 10
            .await
    }

    /// Step 2: consume the nonce (single use whatever happens next).
    fn consume_nonce(&self, nonce: &Nonce, at: UnixTime) -> Result<(), ApiError> {
        self.nonces.consume(nonce, at).map_err(ApiError::nonce)
    }

    /// Step 4: the session's **current** version and its sealed secret values; an unknown
    /// session or service is a `config_not_found` detail behind the generic refusal.
    fn load(&self, t: Target<'_>) -> Result<(Arc<Loaded>, SecretValues), ApiError> {
        let loaded = self
            .sessions
            .current(t.session)?
            .ok_or_else(|| not_found(t))?;
        service(&loaded.session, t)?;
        let values = self.secret_values(&loaded)?;
        Ok((loaded, values))
    }

    /// Step 5: the tier decision (decision 1).
    fn decide_tier(&self, tier: Tier, session: &Session) -> Result<(), ApiError> {
        Ok(veil_attest::tier_accepted(
            tier,
            &build::tier_policy(session),
            self.allow_sim,
        )?)
    }

    /// Step 7: the pure appraisal, with the binding to this connection's client key and the
    /// registered node keys as anchors.
    fn appraise(
        &self,
        peer: &Peer,
        req: &AttestRequest,
        reference: &ReferenceValues,
        loaded: &Loaded,
        at: UnixTime,
    ) -> Result<Appraised, ApiError> {
        let spki = veil_identity::spki_from_cert_pem(&peer.pem)
            .map_err(|e| ApiError::internal("client certificate of the connection", e))?;
        let expected = Expected {
            report_data: ReportData::bind(&req.nonce, &spki),
        };
        let result = veil_attest::appraise(
            &req.evidence,
            &Collateral::None,
            reference,
            &expected,
            &self.anchors(),
            at,
        )
        .map_err(|e| {
            tracing::info!(session = %loaded.hash, tier = %req.tier.as_str(), code = e.code(), "attestation refused");
            ApiError::Appraisal(e)
        })?;
        let requester = match &req.evidence {
            Evidence::Node(ev) => Some(veil_audit::NodeRequester {
                node_id: ev.claims.node_id.clone(),
                pid: ev.claims.pid,
                uid: ev.claims.uid,
                gid: ev.claims.gid,
                cgroup: ev.claims.cgroup.clone(),
            }),
            _ => None,
        };
        Ok(Appraised {
            tier: result.tier,
            measurement: result.claims.measurement.to_string(),
            node: result.claims.node_id.clone(),
            requester,
        })
    }

    /// Step 8: the OTP, if the service needs one (only after evidence and measurement
    /// passed, decision 13).
    async fn second_factor(
        &self,
        t: Target<'_>,
        session: &Session,
        service: &Service,
        values: &SecretValues,
    ) -> Result<(), ApiError> {
        match (build::otp_secret(session, service, values)?, t.otp) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(ApiError::OtpMissing),
            (Some(secret), Some(code)) => {
                self.check_otp(t.session, t.service, secret, code.to_string())
                    .await
            }
        }
    }

    /// Check the OTP and persist the replay/lockout state (whatever the outcome), by
    /// compare-and-swap per (session, SHA-256 of the secret); failures and a lockout are
    /// audited.
    async fn check_otp(
        &self,
        session: &str,
        service: &str,
        secret: String,
        code: String,
    ) -> Result<(), ApiError> {
        let mut key = session.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(b"otp:");
        key.extend_from_slice(&veil_attest::Digest32::of(secret.as_bytes()).0);
        let store = self.store.clone();
        let result = blocking(move || {
            for _ in 0..8 {
                let raw = store.kv_get(OTP_TABLE, &key)?;
                let mut state: OtpState = match &raw {
                    Some(r) => serde_json::from_slice(r).map_err(|e| {
                        ApiError::internal("stored OTP state does not deserialize", e)
                    })?,
                    None => OtpState::default(),
                };
                let result = veil_secrets::check_otp(&secret, &code, now_ms() / 1000, &mut state);
                let new =
                    serde_json::to_vec(&state).map_err(|e| ApiError::internal("OTP state", e))?;
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
            Err(ApiError::internal("OTP state", "too much contention"))
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
        Ok(result?)
    }

    /// Step 10: the configuration. Takes the leases of the `rollback_protected` volumes (all
    /// or none), records the instance, audits `service_attested` and answers. A
    /// [`LeaseGuard`] forgets the instance and releases its leases if any step after taking
    /// them fails (or the request is dropped).
    async fn configure(
        &self,
        t: Target<'_>,
        loaded: &Loaded,
        service: &Service,
        values: &SecretValues,
        appraised: &Appraised,
    ) -> Result<ConfigResponse, ApiError> {
        let plan = build::plan(&loaded.session, service, values)?;
        let mut keys = Vec::with_capacity(plan.volumes.len());
        for v in &plan.volumes {
            keys.push(self.volume_key(t.session, v).await?);
        }
        let instance_token = random_hex32()?;
        let id = instance_id(&instance_token);
        let now = now_ms();
        // Declared before the lock: on an early return the lock is released first.
        let guard = LeaseGuard::new(self.running.clone(), id.clone());
        let mut running = self.running.lock().await;
        running.leases.purge(now);
        running
            .instances
            .retain(|_, i| i.last_seen.saturating_add(INSTANCE_IDLE_MS) > now);
        if running.instances.len() >= MAX_INSTANCES {
            return Err(ApiError::TooManyInstances);
        }
        let volumes = plan.volumes.iter().map(|v| (v.name.as_str(), v.policy));
        take_leases(
            &mut running.leases,
            ATTESTATION_FAILED,
            t.session,
            volumes,
            &id,
            now,
        )?;
        let mut grants = Vec::with_capacity(plan.volumes.len());
        let mut vol_states = BTreeMap::new();
        for (v, key) in plan.volumes.iter().zip(keys) {
            let table_key = tags::volume_key(t.session, &v.name);
            let (key, key_fp) = key_and_fingerprint(&key, "volume key")?;
            let (_, rec) = self.tag_record(&table_key)?;
            if let Some(r) = &rec
                && r.key_fp != key_fp
            {
                tracing::warn!(session = %loaded.hash, volume = %v.name, "the volume's key changed: its recorded tag no longer applies");
            }
            let tag = tags::effective_tag(rec.as_ref(), &key_fp, v.initial_tag.as_deref());
            grants.push(VolumeGrant {
                name: v.name.clone(),
                path: v.path.clone(),
                key,
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
                let table_key = tags::code_key(t.session, t.service);
                let (fspf_key, key_fp) = key_and_fingerprint(&c.fspf_key, "fspf key")?;
                let (_, rec) = self.tag_record(&table_key)?;
                let tag = tags::effective_tag(rec.as_ref(), &key_fp, c.initial_tag.as_deref());
                (
                    Some(CodeRegion {
                        fspf_path: c.fspf_path.clone(),
                        fspf_key,
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
            id.clone(),
            Instance {
                session: t.session.to_string(),
                volumes: vol_states,
                code: code_state,
                last_seen: now,
            },
        );
        // The leases taken are persisted before the answer (state.rs).
        self.persist_instance(&mut running, &id, now).await?;
        drop(running);
        tracing::info!(
            session = %loaded.hash,
            tier = %appraised.tier.as_str(),
            measurement = %appraised.measurement,
            node = ?appraised.node,
            requester = ?appraised.requester,
            "service attested"
        );
        self.store
            .audit(vec![veil_audit::Event::ServiceAttested {
                session: t.session.to_string(),
                service: t.service.to_string(),
                tier: appraised.tier.as_str().to_string(),
                measurement: appraised.measurement.clone(),
                node: appraised.requester.clone(),
            }])
            .await?;
        guard.commit();
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
}

/// A 64-hex key as a [`Key32`] and its fingerprint (for the recorded tags).
fn key_and_fingerprint(hex_key: &str, what: &str) -> Result<(Key32, String), ApiError> {
    let key = Key32::from_hex(hex_key).map_err(|e| ApiError::internal(what, e))?;
    let fp = tags::key_fingerprint(key.expose());
    Ok((key, fp))
}
