//! Unit tests of the CAS workload API: attestation checks, OTPs, tags and leases, node keys
//! and audit events.

use super::*;
use crate::sessions::Peer;
use veil_api::workload::{
    AttestRequest, ConfigId, ConfigResponse, ExitRequest, TagUpdateRequest, UpdatePolicy,
};
use veil_attest::{Digest32, Evidence, Nonce, ReportData, SimEvidence, Target, Tier};
use veil_identity::Identity;
use veil_secrets::OtpState;
use veil_types::{ExposeSecret, SecretString};

const TAG_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TAG_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const OTP_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn launcher() -> Digest32 {
    Digest32::of(b"launcher")
}
fn target() -> Target {
    Target::Program {
        hash: Digest32::of(b"program"),
    }
}
fn mrenclave() -> String {
    veil_attest::measurement(&launcher(), &target()).to_hex()
}

struct Env {
    _dir: tempfile::TempDir,
    store: Store,
    w: Arc<Workload>,
    owner: Identity,
}

fn env(allow_sim: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("cas.redb"), &[3u8; 32]).unwrap();
    let owner = Identity::generate("owner", &[]).unwrap();
    let w = Workload::new(store.clone(), allow_sim).unwrap();
    Env {
        _dir: dir,
        store,
        w,
        owner,
    }
}

fn session_yaml(security: &str) -> String {
    format!(
        "name: s\nversion: \"0.3\"\nservices:\n  - name: app\n    image_name: img\n    mrenclaves: [{}]\n    command: prog $$SCONE::pw$$\n    pwd: /\nimages:\n  - name: img\n    volumes:\n      - name: V1\n        path: /V1\n      - name: E\n        path: /E\n        update_policy: ephemeral\nvolumes:\n  - name: V1\n  - name: E\nsecrets:\n  - name: pw\n    kind: ascii\n    value: s3cr3tpw\n{security}",
        mrenclave()
    )
}

async fn upload(e: &Env, yaml: &str) {
    let creator = Peer::from_der(e.owner.cert_der()).unwrap();
    let sessions = Sessions::new(e.store.clone());
    sessions.upload(&creator, yaml).await.unwrap();
}

struct Launcher {
    id: Identity,
    peer: Peer,
}

fn launcher_conn() -> Launcher {
    let id = Identity::generate("veil-launcher", &[]).unwrap();
    let peer = Peer::from_der(id.cert_der()).unwrap();
    Launcher { id, peer }
}

fn sim_request(e: &Env, l: &Launcher, config_id: &str) -> AttestRequest {
    let (nonce, _) = e.w.nonces.issue("127.0.0.1", UnixTime::now()).unwrap();
    let rd = ReportData::bind(&nonce, l.id.spki_der());
    AttestRequest {
        config_id: ConfigId(config_id.into()),
        tier: Tier::Sim,
        nonce,
        evidence: Evidence::Sim(SimEvidence::new(launcher(), target(), rd)),
        service_access_token: None,
    }
}

/// A `node`-tier request for `s/app`: claims of node `node_id` bound to a fresh nonce and `l`'s
/// key, signed with `key` (whose SPKI is `spki`).
fn node_request(
    e: &Env,
    l: &Launcher,
    node_id: &str,
    key: &aws_lc_rs::signature::EcdsaKeyPair,
    spki: &[u8],
) -> AttestRequest {
    let (nonce, _) = e.w.nonces.issue("p", UnixTime::now()).unwrap();
    let claims = veil_attest::NodeClaims {
        node_id: node_id.into(),
        time: UnixTime::now(),
        pid: 1,
        launcher_hash: launcher(),
        target: target(),
        measurement: veil_attest::measurement(&launcher(), &target()),
        report_data: ReportData::bind(&nonce, l.id.spki_der()),
        uid: 1000,
        gid: 1000,
        cgroup: "/user.slice".into(),
    };
    let signature = key
        .sign(
            &aws_lc_rs::rand::SystemRandom::new(),
            &claims.signed_bytes(),
        )
        .unwrap()
        .as_ref()
        .to_vec();
    AttestRequest {
        config_id: ConfigId("s/app".into()),
        tier: Tier::Node,
        nonce,
        evidence: Evidence::Node(veil_attest::NodeEvidence {
            claims,
            node_key_hash: veil_identity::key_hash(spki),
            signature,
        }),
        service_access_token: None,
    }
}

/// A copy of `r` (request bodies are not `Clone`: they carry secrets).
fn dup(r: &AttestRequest) -> AttestRequest {
    serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap()
}

fn tag(t: &str) -> Tag {
    t.parse().unwrap()
}

fn token(cfg: &ConfigResponse) -> SecretString {
    SecretString::from(cfg.instance_token.expose_secret().to_string())
}

fn argv(cfg: &ConfigResponse) -> Vec<&str> {
    cfg.argv.iter().map(|a| a.expose_secret()).collect()
}

const DEBUG: &str = "security:\n  attestation:\n    tolerate: [debug-mode]\n";

#[tokio::test]
async fn kv_compare_and_swap_is_durable_and_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cas.redb");
    let store = Store::open(&path, &[5u8; 32]).unwrap();
    assert_eq!(store.kv_get("t1", b"k").unwrap(), None);
    assert_eq!(
        store.kv_compare_and_swap("t1", b"k", None, b"v1").unwrap(),
        Ok(())
    );
    assert_eq!(
        store.kv_compare_and_swap("t1", b"k", None, b"v2").unwrap(),
        Err(Some(b"v1".to_vec()))
    );
    assert_eq!(
        store
            .kv_compare_and_swap("t1", b"k", Some(b"v0"), b"v2")
            .unwrap(),
        Err(Some(b"v1".to_vec()))
    );
    assert_eq!(
        store
            .kv_compare_and_swap("t1", b"k", Some(b"v1"), b"v2")
            .unwrap(),
        Ok(())
    );
    assert_eq!(
        store.kv_get("t1", b"k").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    assert_eq!(store.kv_get("t2", b"k").unwrap(), None);
    assert!(store.kv_get("versions", b"k").is_err());
    store
        .kv_compare_and_swap("t1", b"marker-key-77", None, b"marker-value-9f3c")
        .unwrap()
        .unwrap();
    drop(store);
    std::thread::sleep(std::time::Duration::from_millis(100));
    // Neither the plaintext value nor the plaintext key is in the file.
    let bytes = std::fs::read(&path).unwrap();
    for needle in [&b"marker-value-9f3c"[..], b"marker-key-77"] {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    }
    let store = Store::open(&path, &[5u8; 32]).unwrap();
    assert_eq!(
        store.kv_get("t1", b"k").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    drop(store);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let store = Store::open(&path, &[6u8; 32]);
    // Session tables are empty, so a wrong key is caught when the record is read.
    if let Ok(s) = store {
        assert!(s.kv_get("t1", b"k").is_err());
    }
}

#[tokio::test]
async fn sim_needs_the_cas_switch_and_debug_mode() {
    let e = env(false);
    upload(&e, &session_yaml(DEBUG)).await;
    let l = launcher_conn();
    let err =
        e.w.attest(&l.peer, sim_request(&e, &l, "s/app"))
            .await
            .unwrap_err();
    assert_eq!(err.detail_code(), "attestation_sim_disabled");
    assert_eq!(err.code(), "attestation_refused");
    assert_eq!(err.messages()[0], "Attestation failed");

    let e = env(true);
    upload(&e, &session_yaml("")).await;
    let err =
        e.w.attest(&l.peer, sim_request(&e, &l, "s/app"))
            .await
            .unwrap_err();
    assert_eq!(err.detail_code(), "attestation_sim_not_tolerated");
    assert_eq!(err.code(), "attestation_refused");

    let e = env(true);
    upload(&e, &session_yaml(DEBUG)).await;
    let cfg =
        e.w.attest(&l.peer, sim_request(&e, &l, "s/app"))
            .await
            .unwrap();
    assert_eq!(argv(&cfg), vec!["prog", "s3cr3tpw"]);
    assert_eq!(cfg.volumes.len(), 2);
    assert_eq!(cfg.volumes[0].name, "V1");
    assert_eq!(cfg.volumes[0].tag, None);
    assert_ne!(cfg.volumes[0].key.expose(), &[0u8; 32]);
    assert_eq!(cfg.volumes[1].update_policy, UpdatePolicy::Ephemeral);
    assert_eq!(cfg.instance_token.expose_secret().len(), 64);
}

#[tokio::test]
async fn binding_nonce_and_measurement_are_checked() {
    let e = env(true);
    upload(&e, &session_yaml(DEBUG)).await;
    let l = launcher_conn();
    // Replayed nonce.
    let req = sim_request(&e, &l, "s/app");
    let again = dup(&req);
    let cfg = e.w.attest(&l.peer, req).await.unwrap();
    e.w.exit(&ExitRequest {
        instance_token: cfg.instance_token,
        status: 0,
    })
    .await
    .unwrap();
    let err = e.w.attest(&l.peer, again).await.unwrap_err();
    assert_eq!(err.code(), "attestation_nonce_unknown");
    // A nonce never issued.
    let mut req = sim_request(&e, &l, "s/app");
    req.nonce = Nonce([9; 32]);
    assert_eq!(
        e.w.attest(&l.peer, req).await.unwrap_err().code(),
        "attestation_nonce_unknown"
    );
    // Evidence bound to another TLS key.
    let other = launcher_conn();
    let req = sim_request(&e, &other, "s/app");
    let err = e.w.attest(&l.peer, req).await.unwrap_err();
    assert_eq!(err.detail_code(), "attestation_binding_mismatch");
    assert_eq!(err.code(), "attestation_refused");
    // Another program.
    let mut req = sim_request(&e, &l, "s/app");
    let Evidence::Sim(s) = &req.evidence else {
        unreachable!()
    };
    let rd = s.report_data;
    let bad = Target::Program {
        hash: Digest32::of(b"other program"),
    };
    req.evidence = Evidence::Sim(SimEvidence::new(launcher(), bad.clone(), rd));
    let err = e.w.attest(&l.peer, req).await.unwrap_err();
    assert_eq!(err.detail_code(), "attestation_factor_mismatch");
    assert_eq!(err.code(), "attestation_refused");
    assert_eq!(err.messages()[0], "Attestation failed");
    let want = format!(
        "Unexpected enclave measurement (MRENCLAVE, {}) - Expected {}",
        veil_attest::measurement(&launcher(), &bad),
        mrenclave()
    );
    assert_eq!(err.detail_messages()[1], want);
    // The workload sees none of it (no expected-measurement oracle).
    let shown = err.messages().join("\n");
    assert!(!shown.contains(&mrenclave()), "{shown}");
    let refused = err.body();
    // Unknown service / session.
    for id in ["s/nope", "nope/app"] {
        let err =
            e.w.attest(&l.peer, sim_request(&e, &l, id))
                .await
                .unwrap_err();
        assert_eq!(err.detail_code(), "config_not_found", "{id}");
        assert_eq!(err.code(), "attestation_refused", "{id}");
        assert_eq!(
            err.body(),
            refused,
            "one answer for {id} and a wrong measurement"
        );
    }
    let err =
        e.w.attest(&l.peer, sim_request(&e, &l, "noslash"))
            .await
            .unwrap_err();
    assert_eq!(err.code(), "invalid_config_id");
}

#[tokio::test]
async fn otp_valid_replay_wrong_missing() {
    let e = env(true);
    upload(
        &e,
        &session_yaml(&format!(
            "security:\n  attestation:\n    tolerate: [debug-mode]\n    one_time_password_shared_secret: {OTP_SECRET}\n"
        )),
    )
    .await;
    let l = launcher_conn();
    let err =
        e.w.attest(&l.peer, sim_request(&e, &l, "s/app"))
            .await
            .unwrap_err();
    assert_eq!(err.code(), "otp_missing");
    // Wrong code first (it counts as a failure but does not lock).
    let code = veil_secrets::current_otp(OTP_SECRET, now_ms() / 1000).unwrap();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let err =
        e.w.attest(&l.peer, sim_request(&e, &l, &format!("s/app@{wrong}")))
            .await
            .unwrap_err();
    assert_eq!(err.code(), "otp_invalid");
    assert_eq!(
        err.messages()[1],
        "The given One-time Password is invalid. Please try again."
    );
    // The step may roll over between computing and checking: accept either outcome of a
    // fresh code, but the replay must always be refused.
    let code = veil_secrets::current_otp(OTP_SECRET, now_ms() / 1000).unwrap();
    let cfg =
        e.w.attest(&l.peer, sim_request(&e, &l, &format!("s/app@{code}")))
            .await
            .unwrap();
    e.w.exit(&ExitRequest {
        instance_token: cfg.instance_token,
        status: 0,
    })
    .await
    .unwrap();
    let err =
        e.w.attest(&l.peer, sim_request(&e, &l, &format!("s/app@{code}")))
            .await
            .unwrap_err();
    assert_eq!(err.code(), "otp_already_used");
    // The replay state survives a restart (a new workload state over the same store).
    let w2 = Workload::new(e.store.clone(), true).unwrap();
    let (nonce, _) = w2.nonces.issue("p", UnixTime::now()).unwrap();
    let mut req = sim_request(&e, &l, &format!("s/app@{code}"));
    req.nonce = nonce;
    if let Evidence::Sim(sim) = &mut req.evidence {
        *sim = SimEvidence::new(
            launcher(),
            target(),
            ReportData::bind(&nonce, l.id.spki_der()),
        );
    }
    assert_eq!(
        w2.attest(&l.peer, req).await.unwrap_err().code(),
        "otp_already_used"
    );
    // The OTP is checked only after the measurement: a wrong program with a wrong code gets
    // the measurement error and does not count as an OTP failure.
    let mut req = sim_request(&e, &l, &format!("s/app@{wrong}"));
    let Evidence::Sim(sim) = &req.evidence else {
        unreachable!()
    };
    let rd = sim.report_data;
    let other = Target::Program {
        hash: Digest32::of(b"other"),
    };
    req.evidence = Evidence::Sim(SimEvidence::new(launcher(), other, rd));
    assert_eq!(
        e.w.attest(&l.peer, req).await.unwrap_err().detail_code(),
        "attestation_factor_mismatch"
    );
    let st: OtpState = {
        let mut key = b"s".to_vec();
        key.push(0);
        key.extend_from_slice(b"otp:");
        key.extend_from_slice(&Digest32::of(OTP_SECRET.as_bytes()).0);
        serde_json::from_slice(&e.store.kv_get(OTP_TABLE, &key).unwrap().unwrap()).unwrap()
    };
    assert_eq!(st.failures.len(), 1);
    assert!(st.last_step.is_some());
}

#[tokio::test]
async fn access_token() {
    let e = env(true);
    upload(
        &e,
        &session_yaml(
            "security:\n  service_access_token: tok-$$SCONE::pw$$\n  attestation:\n    tolerate: [debug-mode]\n",
        ),
    )
    .await;
    let l = launcher_conn();
    let err =
        e.w.attest(&l.peer, sim_request(&e, &l, "s/app"))
            .await
            .unwrap_err();
    assert_eq!(err.code(), "service_access_token_invalid");
    let mut req = sim_request(&e, &l, "s/app");
    req.service_access_token = Some("tok-wrong".into());
    let err = e.w.attest(&l.peer, req).await.unwrap_err();
    assert!(!err.messages().join(" ").contains("s3cr3tpw"));
    let mut req = sim_request(&e, &l, "s/app");
    req.service_access_token = Some("tok-s3cr3tpw".into());
    e.w.attest(&l.peer, req).await.unwrap();
}

#[tokio::test]
async fn tags_leases_and_exit() {
    let e = env(true);
    upload(&e, &session_yaml(DEBUG)).await;
    let l = launcher_conn();
    let cfg =
        e.w.attest(&l.peer, sim_request(&e, &l, "s/app"))
            .await
            .unwrap();
    let key = cfg.volumes[0].key.clone();
    // A second start is refused while the lease is held.
    let err =
        e.w.attest(&l.peer, sim_request(&e, &l, "s/app"))
            .await
            .unwrap_err();
    assert_eq!(err.code(), "volume_in_use");
    assert!(
        err.messages()[1].starts_with("volume V1 is in use by instance "),
        "{:?}",
        err.messages()
    );
    let upd = |old: Option<&str>, new: &str, vol: &str| TagUpdateRequest {
        instance_token: token(&cfg),
        volume: vol.into(),
        old_tag: old.map(tag),
        new_tag: tag(new),
    };
    // First use: no tag → A; then A → B; a stale old tag is refused.
    e.w.update_tag(upd(None, TAG_A, "V1")).await.unwrap();
    assert_eq!(
        e.w.update_tag(upd(None, TAG_B, "V1"))
            .await
            .unwrap_err()
            .code(),
        "volume_tag_mismatch"
    );
    e.w.update_tag(upd(Some(TAG_A), TAG_B, "V1")).await.unwrap();
    assert_eq!(
        e.w.update_tag(upd(Some(TAG_A), TAG_A, "V1"))
            .await
            .unwrap_err()
            .code(),
        "volume_tag_mismatch"
    );
    assert_eq!(
        e.w.update_tag(upd(None, TAG_A, "V9"))
            .await
            .unwrap_err()
            .code(),
        "volume_unknown"
    );
    // Ephemeral: accepted and ignored.
    e.w.update_tag(upd(None, TAG_A, "E")).await.unwrap();
    e.w.heartbeat(cfg.instance_token.expose_secret())
        .await
        .unwrap();
    e.w.exit(&ExitRequest {
        instance_token: token(&cfg),
        status: 0,
    })
    .await
    .unwrap();
    // After exit the token is dead and the lease free; the next start sees tag B and the
    // same generated key, and the ephemeral volume still has no tag.
    assert_eq!(
        e.w.update_tag(upd(Some(TAG_B), TAG_A, "V1"))
            .await
            .unwrap_err()
            .code(),
        "instance_unknown"
    );
    let cfg2 =
        e.w.attest(&l.peer, sim_request(&e, &l, "s/app"))
            .await
            .unwrap();
    assert_eq!(cfg2.volumes[0].tag, Some(tag(TAG_B)));
    assert_eq!(cfg2.volumes[0].key, key);
    assert_eq!(cfg2.volumes[1].tag, None);
    // Recorded tags survive a session update.
    let creator = Peer::from_der(e.owner.cert_der()).unwrap();
    let sessions = Sessions::new(e.store.clone());
    let cur = sessions.current("s").unwrap().unwrap();
    let updated = format!(
        "{}predecessor: {}\n",
        session_yaml(DEBUG).replace("command: prog", "command: prog2"),
        cur.hash
    );
    sessions.upload(&creator, &updated).await.unwrap();
    e.w.exit(&ExitRequest {
        instance_token: cfg2.instance_token,
        status: 0,
    })
    .await
    .unwrap();
    let cfg3 =
        e.w.attest(&l.peer, sim_request(&e, &l, "s/app"))
            .await
            .unwrap();
    assert_eq!(argv(&cfg3)[0], "prog2");
    assert_eq!(cfg3.volumes[0].tag, Some(tag(TAG_B)));
    assert_eq!(cfg3.volumes[0].key, key);
}

#[tokio::test]
async fn node_tier_uses_registered_keys() {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    let e = env(false);
    upload(&e, &session_yaml("")).await;
    let l = launcher_conn();
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
    let spki = key.public_key().as_der().unwrap().as_ref().to_vec();
    let node_req = |e: &Env| node_request(e, &l, "node-1", &key, &spki);
    let err = e.w.attest(&l.peer, node_req(&e)).await.unwrap_err();
    assert_eq!(err.detail_code(), "attestation_node_key_untrusted");
    assert_eq!(err.code(), "attestation_refused");
    let rec = spki.clone();
    e.w.change_nodes(move |list| {
        list.push(NodeRecord {
            node_id: "node-1".into(),
            spki_hex: hex::encode(&rec),
            registered_at: 0,
            revoked_at: None,
        });
        Ok(())
    })
    .await
    .unwrap();
    let cfg = e.w.attest(&l.peer, node_req(&e)).await.unwrap();
    e.w.exit(&ExitRequest {
        instance_token: cfg.instance_token,
        status: 0,
    })
    .await
    .unwrap();
    // The registry survives a restart of the workload state.
    let w2 = Workload::new(e.store.clone(), false).unwrap();
    assert_eq!(w2.anchors().node_keys.len(), 1);
}

/// Decision 9 and the lease guard: an attestation that fails after taking its leases (here
/// at the audit write of `service_attested`) leaves no lease and no instance behind, so the
/// next start takes the volume at once instead of waiting for the lease's TTL.
#[tokio::test]
async fn a_failed_attestation_leaves_no_lease() {
    let e = env(true);
    let cas = Identity::generate("veil CAS", &[]).unwrap();
    let audit =
        Arc::new(crate::audit::Audit::open(e._dir.path(), &cas, e.store.counter()).unwrap());
    e.store.set_audit(audit.clone());
    upload(&e, &session_yaml(DEBUG)).await;
    // From now on every audit write fails.
    audit.close(e.store.counter()).unwrap();
    let l = launcher_conn();
    for _ in 0..2 {
        // Fails at the audit write, after the lease step (not `volume_in_use`).
        let err =
            e.w.attest(&l.peer, sim_request(&e, &l, "s/app"))
                .await
                .unwrap_err();
        assert_eq!(err.code(), "internal_error");
        let running = e.w.running.lock().await;
        assert!(running.leases.get("s", "V1", now_ms()).is_none());
        assert!(running.instances.is_empty());
    }
}

#[tokio::test]
async fn code_region_tags() {
    let e = env(true);
    let fspf_key = "ab".repeat(32);
    let yaml = session_yaml(DEBUG).replace(
        "    pwd: /\n",
        &format!(
            "    pwd: /\n    fspf_path: /fspf/fs.fspf\n    fspf_key: {fspf_key}\n    fspf_tag: {TAG_A}\n"
        ),
    );
    upload(&e, &yaml).await;
    let l = launcher_conn();
    let cfg =
        e.w.attest(&l.peer, sim_request(&e, &l, "s/app"))
            .await
            .unwrap();
    let code = cfg.code_region.clone().unwrap();
    assert_eq!(code.fspf_path, "/fspf/fs.fspf");
    assert_eq!(code.fspf_key.to_hex(), fspf_key);
    assert_eq!(code.fspf_tag, Some(tag(TAG_A)));
    assert_eq!(
        code.update_policy,
        UpdatePolicy::RollbackProtectedReinitializable
    );
    let upd = |old: Option<&str>, new: &str| TagUpdateRequest {
        instance_token: token(&cfg),
        volume: String::new(),
        old_tag: old.map(tag),
        new_tag: tag(new),
    };
    // The initial tag is in force until something is recorded.
    assert_eq!(
        e.w.update_tag(upd(None, TAG_B)).await.unwrap_err().code(),
        "volume_tag_mismatch"
    );
    e.w.update_tag(upd(Some(TAG_A), TAG_B)).await.unwrap();
    // Reinitializable: back to the initial tag is allowed whatever the old tag.
    e.w.update_tag(upd(Some(TAG_B), TAG_A)).await.unwrap();
    let c = "cccccccccccccccccccccccccccccccc";
    e.w.update_tag(upd(Some(TAG_A), c)).await.unwrap();
    e.w.exit(&ExitRequest {
        instance_token: token(&cfg),
        status: 0,
    })
    .await
    .unwrap();
    let cfg2 =
        e.w.attest(&l.peer, sim_request(&e, &l, "s/app"))
            .await
            .unwrap();
    assert_eq!(cfg2.code_region.unwrap().fspf_tag, Some(tag(c)));
}

#[tokio::test]
async fn audit_events_of_attestation_tags_and_otp_lockout() {
    let e = env(true);
    let cas = Identity::generate("veil CAS", &[]).unwrap();
    let audit = crate::audit::Audit::open(e._dir.path(), &cas, e.store.counter()).unwrap();
    e.store.set_audit(Arc::new(audit));
    upload(&e, &session_yaml(DEBUG)).await;
    upload(
        &e,
        &session_yaml(&format!(
            "security:\n  attestation:\n    tolerate: [debug-mode]\n    one_time_password_shared_secret: {OTP_SECRET}\n"
        ))
        .replace("name: s\n", "name: o\n"),
    )
    .await;
    let l = launcher_conn();
    let cfg =
        e.w.attest(&l.peer, sim_request(&e, &l, "s/app"))
            .await
            .unwrap();
    e.w.update_tag(TagUpdateRequest {
        instance_token: token(&cfg),
        volume: "V1".into(),
        old_tag: None,
        new_tag: tag(TAG_A),
    })
    .await
    .unwrap();
    // Five wrong codes: four failures, then the failure that starts the lockout.
    let code = veil_secrets::current_otp(OTP_SECRET, now_ms() / 1000).unwrap();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for _ in 0..5 {
        e.w.attest(&l.peer, sim_request(&e, &l, &format!("o/app@{wrong}")))
            .await
            .unwrap_err();
    }
    let data = std::fs::read(e._dir.path().join(crate::audit::AUDIT_FILE)).unwrap();
    veil_audit::verify(&data, &cas.key_hash(), None).unwrap();
    // The descriptive events, without the counter entries of key-value writes.
    let ev: Vec<veil_audit::Event> = veil_audit::read_entries(&data)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .filter(|e| !matches!(e, veil_audit::Event::StateCommitted { .. }))
        .collect();
    use veil_audit::Event as E;
    assert!(matches!(&ev[0], E::CasStarted { counter: 0, .. }));
    assert!(matches!(&ev[1], E::SessionCreated { session, .. } if session == "s"));
    assert!(matches!(&ev[2], E::SessionCreated { session, .. } if session == "o"));
    assert_eq!(
        ev[3],
        E::ServiceAttested {
            session: "s".into(),
            service: "app".into(),
            tier: "sim".into(),
            measurement: mrenclave(),
            node: None,
        }
    );
    assert_eq!(
        ev[4],
        E::VolumeTagUpdated {
            session: "s".into(),
            volume: "V1".into(),
            tag: TAG_A.into(),
        }
    );
    let failures = ev
        .iter()
        .filter(|x| matches!(x, E::OtpFailure { session, service } if session == "o" && service == "app"))
        .count();
    assert_eq!(failures, 5, "{ev:?}");
    let lockouts: Vec<_> = ev
        .iter()
        .filter(|x| matches!(x, E::OtpLockout { .. }))
        .collect();
    assert_eq!(lockouts.len(), 1, "{ev:?}");
    assert!(matches!(lockouts[0], E::OtpLockout { until, .. } if *until > now_ms() / 1000));
    // No secret value and no OTP code in the log.
    let text = String::from_utf8(data).unwrap();
    assert!(!text.contains("s3cr3tpw"));
    assert!(!text.contains(OTP_SECRET));
    assert!(!text.contains(&format!("@{wrong}")));
}

/// Issue 16, item 5: revoking by node id revokes every active key of that node, not the
/// first record (already revoked) while a key registered again stays trusted.
#[tokio::test]
async fn revoking_a_node_id_revokes_every_active_key() {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    use tower::ServiceExt as _;
    let e = env(false);
    upload(&e, &session_yaml("")).await;
    let router = crate::server::api_router(crate::server::AppState {
        sessions: Sessions::new(e.store.clone()),
        metrics: Arc::default(),
        key_hash: String::new(),
        owners: Arc::new(vec![e.owner.key_hash()]),
        workload: e.w.clone(),
    });
    let owner = Arc::new(Peer::from_der(e.owner.cert_der()).unwrap());
    let call = |method: &str, path: &str, body: String| {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::from(body))
            .unwrap();
        req.extensions_mut().insert(crate::server::ConnInfo {
            peer: Some(owner.clone()),
            remote: "127.0.0.1:1".parse().unwrap(),
        });
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            )
        }
    };
    let new_key = || {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let spki = key.public_key().as_der().unwrap().as_ref().to_vec();
        (key, spki)
    };
    let register = |spki: &[u8]| {
        call(
            "POST",
            "/v1/nodes",
            serde_json::json!({"node_id": "n1", "spki_hex": hex::encode(spki)}).to_string(),
        )
    };
    let l = launcher_conn();
    let node_req = |key: &EcdsaKeyPair, spki: &[u8]| node_request(&e, &l, "n1", key, spki);
    let revoked = serde_json::json!({"node_id": "n1", "revoked": true});

    // Key A for n1, revoked by node id.
    let (_key_a, spki_a) = new_key();
    assert_eq!(register(&spki_a).await.0, 201);
    assert_eq!(
        call("DELETE", "/v1/nodes/n1", String::new()).await,
        (200, revoked.clone())
    );
    // Key B registered again for n1; it is trusted.
    let (key_b, spki_b) = new_key();
    assert_eq!(register(&spki_b).await.0, 201);
    let cfg =
        e.w.attest(&l.peer, node_req(&key_b, &spki_b))
            .await
            .unwrap();
    e.w.exit(&ExitRequest {
        instance_token: cfg.instance_token,
        status: 0,
    })
    .await
    .unwrap();
    let (st, v) = call("GET", "/v1/nodes", String::new()).await;
    assert_eq!(st, 200);
    let first_revocation = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["key_hash"] == veil_identity::key_hash(&spki_a))
        .unwrap()["revoked_at"]
        .as_u64()
        .unwrap();

    // The attack: revoking n1 again must revoke B (the old code revoked the first record, A,
    // already revoked, answered "revoked" and left B active).
    assert_eq!(
        call("DELETE", "/v1/nodes/n1", String::new()).await,
        (200, revoked)
    );
    let (st, v) = call("GET", "/v1/nodes", String::new()).await;
    assert_eq!(st, 200);
    let list = v["nodes"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{v}");
    for spki in [&spki_a, &spki_b] {
        let kh = veil_identity::key_hash(spki);
        let n = list.iter().find(|n| n["key_hash"] == kh).unwrap();
        assert_eq!(n["node_id"], "n1");
        assert!(n["revoked_at"].is_u64(), "{kh} is not revoked: {v}");
    }
    // A keeps its first revocation time.
    let a = list
        .iter()
        .find(|n| n["key_hash"] == veil_identity::key_hash(&spki_a))
        .unwrap();
    assert_eq!(a["revoked_at"].as_u64(), Some(first_revocation));
    // Evidence signed with B is refused.
    let err =
        e.w.attest(&l.peer, node_req(&key_b, &spki_b))
            .await
            .unwrap_err();
    assert_eq!(err.detail_code(), "attestation_node_key_untrusted");
    assert_eq!(err.code(), "attestation_refused");
    assert!(
        matches!(
            &err,
            ApiError::Appraisal(veil_attest::AppraisalError::BadEvidence(
                veil_attest::EvidenceProblem::RevokedNodeKey { .. }
            ))
        ),
        "{err:?}"
    );

    // Revoking by key hash still works (already revoked: still answered), and a name that
    // matches nothing is 404 `node_not_found`.
    let (st, v) = call(
        "DELETE",
        &format!("/v1/nodes/{}", veil_identity::key_hash(&spki_b)),
        String::new(),
    )
    .await;
    assert_eq!((st, v["revoked"].clone()), (200, serde_json::json!(true)));
    let (st, v) = call("DELETE", "/v1/nodes/n2", String::new()).await;
    assert_eq!(
        (st, v["code"].clone()),
        (404, serde_json::json!("node_not_found")),
        "{v}"
    );
}
