//! The workload API of a real `veil cas serve` process (issue 7, CAS side), spoken by a Rust
//! client over TLS with an ephemeral client certificate, the way the launcher speaks it.

use std::path::Path;
use std::process::{Child, Stdio};

use veil_api::workload::{
    ATTEST_PATH, AttestRequest, ConfigId, ConfigResponse, EXIT_PATH, ExitRequest, NONCE_PATH,
    NonceResponse, TAGS_PATH, TagUpdateRequest,
};
use veil_attest::{Digest32, Evidence, ReportData, SimEvidence, Target, Tier};
use veil_client::{Connection, Method};
use veil_identity::Identity;
use veil_types::{ExposeSecret, SecretString, Tag};

use crate::support::{
    CasProcess, assert_success, create_session, launcher_command, pin_cas_as, veil,
};

/// JSON bytes of a request body.
macro_rules! j {
    ($e:expr) => {
        serde_json::to_vec(&$e).unwrap()
    };
}

/// A launcher-like connection: its own ephemeral identity, one TLS connection.
struct Conn {
    id: Identity,
    conn: Connection,
}

impl Conn {
    async fn open(cas: &CasProcess) -> Self {
        let id = Identity::generate("veil-launcher", &[]).unwrap();
        let conn = Connection::connect("cas", &cas.enclave, Some(&cas.key_hash), Some(&id))
            .await
            .unwrap();
        Self { id, conn }
    }

    async fn post(&mut self, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
        let a = self
            .conn
            .request(Method::POST, path, Some(body))
            .await
            .unwrap();
        let v = serde_json::from_slice(&a.body).unwrap_or(serde_json::Value::Null);
        (a.status.as_u16(), v)
    }

    async fn nonce(&mut self) -> NonceResponse {
        let (s, v) = self.post(NONCE_PATH, j!(serde_json::json!({}))).await;
        assert_eq!(s, 200, "{v}");
        serde_json::from_value(v).unwrap()
    }

    /// Sim evidence for `program`, bound to a fresh nonce and to `bind_to`'s key.
    async fn sim_request(
        &mut self,
        config_id: &str,
        program: &[u8],
        bind_to: Option<&Identity>,
    ) -> AttestRequest {
        let n = self.nonce().await;
        let spki = bind_to.unwrap_or(&self.id).spki_der().to_vec();
        let rd = ReportData::bind(&n.nonce, &spki);
        AttestRequest {
            config_id: ConfigId(config_id.to_string()),
            tier: Tier::Sim,
            nonce: n.nonce,
            evidence: Evidence::Sim(SimEvidence::new(launcher(), target(program), rd)),
            service_access_token: None,
        }
    }

    /// Reports the program's exit (status 0) for `instance_token`; the HTTP status.
    async fn exit(&mut self, instance_token: SecretString) -> u16 {
        let req = ExitRequest {
            instance_token,
            status: 0,
        };
        self.post(EXIT_PATH, j!(req)).await.0
    }

    async fn attest(
        &mut self,
        req: &AttestRequest,
    ) -> Result<ConfigResponse, (u16, serde_json::Value)> {
        let (s, v) = self.post(ATTEST_PATH, j!(req)).await;
        if s == 200 {
            Ok(serde_json::from_value(v).unwrap())
        } else {
            Err((s, v))
        }
    }
}

fn launcher() -> Digest32 {
    Digest32::of(b"test launcher")
}
fn target(program: &[u8]) -> Target {
    Target::Program {
        hash: Digest32::of(program),
    }
}
fn mrenclave(program: &[u8]) -> String {
    veil_attest::measurement(&launcher(), &target(program)).to_hex()
}

fn session(name: &str, security: &str) -> String {
    format!(
        "name: {name}\nversion: \"0.3\"\nservices:\n  - name: app\n    image_name: img\n    mrenclaves: [{}]\n    command: prog --secret $$SCONE::pw$$\n    environment:\n      SECRET_ENV: \"$$SCONE::pw$$\"\n    pwd: /\nimages:\n  - name: img\n    injection_files:\n      - path: /etc/app.conf\n        content: \"pw=$$SCONE::pw$$\"\n    volumes:\n      - name: V1\n        path: /V1\nvolumes:\n  - name: V1\nsecrets:\n  - name: pw\n    kind: ascii\n    size: 32\n{security}",
        mrenclave(b"program")
    )
}

const DEBUG: &str = "security:\n  attestation:\n    tolerate: [debug-mode]\n";

struct Setup {
    _home: tempfile::TempDir,
    _data: tempfile::TempDir,
    owner: Identity,
    cas: CasProcess,
}

async fn setup(extra: &[&str], yaml: &[String]) -> Setup {
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let owner = Identity::generate("owner", &[]).unwrap();
    let kh = owner.key_hash();
    let mut args = vec!["--owner", kh.as_str()];
    args.extend_from_slice(extra);
    let cas = CasProcess::start_with(home.path(), data.path(), &args);
    let mut c = Connection::connect("cas", &cas.api, Some(&cas.key_hash), Some(&owner))
        .await
        .unwrap();
    for y in yaml {
        c.upload_session(y).await.unwrap();
    }
    Setup {
        _home: home,
        _data: data,
        owner,
        cas,
    }
}

fn msg(v: &serde_json::Value) -> Vec<String> {
    serde_json::from_value(v["msg"].clone()).unwrap_or_default()
}

/// `c` without the `LD_*` variables of the test process (cargo sets `LD_LIBRARY_PATH`): the
/// LAS refuses a launcher with any of them in its environment.
fn without_ld(mut c: std::process::Command) -> std::process::Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("LD_") {
            c.env_remove(k);
        }
    }
    c
}

/// The workload-visible answer of every refused attestation (issue 16 §5, "Oracles").
const REFUSED: &str =
    "The CAS refused this attestation; the reason is in the CAS's audit log (attestation_refused)";

/// The events of the CAS's audit log in `data`.
fn audit_events(data: &Path) -> Vec<veil_audit::Event> {
    let bytes = std::fs::read(data.join("audit.log")).unwrap();
    veil_audit::read_entries(&bytes)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

/// The reason of the last `attestation_refused` audit entry.
fn last_refusal(data: &Path) -> String {
    audit_events(data)
        .into_iter()
        .rev()
        .find_map(|e| match e {
            veil_audit::Event::AttestationRefused { reason, .. } => Some(reason),
            _ => None,
        })
        .expect("an attestation_refused entry")
}

/// The answer is the one generic refusal; the audit log has `detail`.
#[track_caller]
fn assert_refused(s: &Setup, v: &serde_json::Value, detail: &str) {
    assert_eq!(v["code"], "attestation_refused", "{v}");
    assert_eq!(msg(v), ["Attestation failed", REFUSED], "{v}");
    let reason = last_refusal(s._data.path());
    assert!(reason.contains(detail), "{detail} not in {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_tier_needs_allow_sim_and_debug_mode() {
    // Without --allow-sim-tier: refused even though the policy tolerates debug-mode.
    let s = setup(&[], &[session("s", DEBUG)]).await;
    let mut c = Conn::open(&s.cas).await;
    let req = c.sim_request("s/app", b"program", None).await;
    let (st, v) = c.attest(&req).await.unwrap_err();
    assert_eq!(st, 403);
    assert_refused(&s, &v, "attestation_sim_disabled");
    drop(s);

    // With it, but the policy does not tolerate debug-mode: refused.
    let s = setup(
        &["--allow-sim-tier"],
        &[session("s", ""), session("d", DEBUG)],
    )
    .await;
    let mut c = Conn::open(&s.cas).await;
    let req = c.sim_request("s/app", b"program", None).await;
    let (_, v) = c.attest(&req).await.unwrap_err();
    assert_refused(&s, &v, "attestation_sim_not_tolerated");

    // Both: the configuration arrives, placeholders expanded.
    let req = c.sim_request("d/app", b"program", None).await;
    let cfg = c.attest(&req).await.unwrap();
    let argv: Vec<&str> = cfg.argv.iter().map(|a| a.expose_secret()).collect();
    assert_eq!(argv[..2], ["prog", "--secret"]);
    let secret = argv[2].to_string();
    assert_eq!(secret.len(), 32);
    assert_eq!(cfg.env["SECRET_ENV"].expose_secret(), secret);
    assert_eq!(cfg.pwd.as_deref(), Some("/"));
    assert_eq!(cfg.injection_files[0].path, "/etc/app.conf");
    assert_eq!(
        cfg.injection_files[0].content.expose_secret(),
        format!("pw={secret}").as_bytes()
    );
    assert_eq!(cfg.injection_files[0].mode, 0o700);
    assert_eq!(cfg.volumes[0].name, "V1");
    let key_hex = cfg.volumes[0].key.to_hex();
    assert_eq!(key_hex.len(), 64);
    assert_eq!(cfg.volumes[0].tag, None);
    // The generated secret is never shown to session clients.
    let mut owner = Connection::connect("cas", &s.cas.api, Some(&s.cas.key_hash), Some(&s.owner))
        .await
        .unwrap();
    let (yaml, _) = owner.read_session("d", None).await.unwrap();
    assert!(!yaml.contains(&secret));
    assert!(!yaml.contains(&key_hex));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measurement_nonce_and_binding_are_enforced() {
    let s = setup(&["--allow-sim-tier"], &[session("s", DEBUG)]).await;
    let mut c = Conn::open(&s.cas).await;
    // Wrong measurement: the workload gets the generic refusal (not the expected
    // MRENCLAVE); SCONE's chain is in the audit log.
    let req = c.sim_request("s/app", b"another program", None).await;
    let (st, v) = c.attest(&req).await.unwrap_err();
    assert_eq!(st, 403);
    assert!(!v.to_string().contains(&mrenclave(b"program")), "{v}");
    assert_refused(
        &s,
        &v,
        &format!(
            "attestation_factor_mismatch: Attestation failed: Unexpected enclave measurement (MRENCLAVE, {}) - Expected {}",
            mrenclave(b"another program"),
            mrenclave(b"program")
        ),
    );
    let wrong_measurement = v.clone();
    // An unknown session and an unknown service: the same answer, the detail audited.
    for id in ["nosuch/app", "s/nosuch"] {
        let req = c.sim_request(id, b"program", None).await;
        let (st, v) = c.attest(&req).await.unwrap_err();
        assert_eq!(st, 403, "{id}");
        assert_eq!(v, wrong_measurement, "{id}");
        assert_refused(
            &s,
            &v,
            "config_not_found: Attestation failed: Could not find service",
        );
    }
    // The nonce of that attempt is used up: replaying the request is refused.
    let (_, v) = c.attest(&req).await.unwrap_err();
    assert_eq!(v["code"], "attestation_nonce_unknown");
    // Evidence bound to another TLS key (relayed from another connection) is refused.
    let other = Identity::generate("other", &[]).unwrap();
    let req = c.sim_request("s/app", b"program", Some(&other)).await;
    let (_, v) = c.attest(&req).await.unwrap_err();
    assert_refused(&s, &v, "attestation_binding_mismatch");
    // A nonce issued on one connection, evidence bound to it, sent on another connection:
    // the binding names the first connection's key, so it fails on the second.
    let req = c.sim_request("s/app", b"program", None).await;
    let mut c2 = Conn::open(&s.cas).await;
    let (_, v) = c2.attest(&req).await.unwrap_err();
    assert_refused(&s, &v, "attestation_binding_mismatch");
    // The correct request works once; the same request again is a nonce replay.
    let req = c.sim_request("s/app", b"program", None).await;
    let cfg = c.attest(&req).await.unwrap();
    let (_, v) = c.attest(&req).await.unwrap_err();
    assert_eq!(v["code"], "attestation_nonce_unknown");
    let st = c.exit(cfg.instance_token).await;
    assert_eq!(st, 200);
    // Without a client certificate the workload routes answer 401.
    let mut anon = Connection::connect("cas", &s.cas.enclave, Some(&s.cas.key_hash), None)
        .await
        .unwrap();
    let a = anon
        .request(Method::POST, NONCE_PATH, Some(b"{}".to_vec()))
        .await
        .unwrap();
    assert_eq!(a.status.as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otp_valid_replay_wrong() {
    const OTP: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let sec = format!(
        "security:\n  attestation:\n    tolerate: [debug-mode]\n    one_time_password_shared_secret: {OTP}\n"
    );
    let s = setup(&["--allow-sim-tier"], &[session("s", &sec)]).await;
    let mut c = Conn::open(&s.cas).await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let req = c.sim_request("s/app", b"program", None).await;
    let (_, v) = c.attest(&req).await.unwrap_err();
    assert_eq!(v["code"], "otp_missing");
    let code = veil_secrets::current_otp(OTP, now()).unwrap();
    let wrong = if code == "123456" { "654321" } else { "123456" };
    let req = c
        .sim_request(&format!("s/app@{wrong}"), b"program", None)
        .await;
    let (st, v) = c.attest(&req).await.unwrap_err();
    assert_eq!(st, 403);
    assert_eq!(v["code"], "otp_invalid");
    assert_eq!(
        msg(&v)[1],
        "The given One-time Password is invalid. Please try again."
    );
    let code = veil_secrets::current_otp(OTP, now()).unwrap();
    let req = c
        .sim_request(&format!("s/app@{code}"), b"program", None)
        .await;
    let cfg = c.attest(&req).await.unwrap();
    c.exit(cfg.instance_token).await;
    let req = c
        .sim_request(&format!("s/app@{code}"), b"program", None)
        .await;
    let (_, v) = c.attest(&req).await.unwrap_err();
    assert_eq!(v["code"], "otp_already_used");
    assert_eq!(
        msg(&v)[1],
        "A One-time Password was already used within this time-step. Please try again in the next time-step"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_tags_and_leases() {
    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let owner = Identity::generate("owner", &[]).unwrap();
    let cas = CasProcess::start_with(home.path(), data.path(), &["--allow-sim-tier"]);
    let mut oc = Connection::connect("cas", &cas.api, Some(&cas.key_hash), Some(&owner))
        .await
        .unwrap();
    oc.upload_session(&session("s", DEBUG)).await.unwrap();

    let mut c = Conn::open(&cas).await;
    let req = c.sim_request("s/app", b"program", None).await;
    let cfg = c.attest(&req).await.unwrap();
    let key = cfg.volumes[0].key.clone();
    // A second start while the first holds the lease.
    let mut c2 = Conn::open(&cas).await;
    let req = c2.sim_request("s/app", b"program", None).await;
    let (st, v) = c2.attest(&req).await.unwrap_err();
    assert_eq!(st, 409);
    assert_eq!(v["code"], "volume_in_use");
    assert!(msg(&v)[1].starts_with("volume V1 is in use by "), "{v}");

    let tag = |old: Option<&str>, new: &str| TagUpdateRequest {
        instance_token: cfg.instance_token.clone(),
        volume: "V1".into(),
        old_tag: old.map(|t| t.parse::<Tag>().unwrap()),
        new_tag: new.parse().unwrap(),
    };
    // First use: no tag → A; A → B; stale old tags refused.
    let (st, v) = c.post(TAGS_PATH, j!(tag(None, A))).await;
    assert_eq!((st, v["tag"].as_str()), (200, Some(A)));
    let (st, v) = c.post(TAGS_PATH, j!(tag(None, B))).await;
    assert_eq!((st, v["code"].as_str()), (409, Some("volume_tag_mismatch")));
    let (st, _) = c.post(TAGS_PATH, j!(tag(Some(A), B))).await;
    assert_eq!(st, 200);
    let (st, v) = c.post(TAGS_PATH, j!(tag(Some(A), A))).await;
    assert_eq!((st, v["code"].as_str()), (409, Some("volume_tag_mismatch")));
    // A forged instance token is refused.
    let mut forged = tag(Some(B), A);
    forged.instance_token = SecretString::from("00".repeat(32));
    let (st, v) = c.post(TAGS_PATH, j!(forged)).await;
    assert_eq!((st, v["code"].as_str()), (403, Some("instance_unknown")));

    // Exit releases the lease; the next start gets tag B and the same key.
    let st = c.exit(cfg.instance_token.clone()).await;
    assert_eq!(st, 200);
    let req = c2.sim_request("s/app", b"program", None).await;
    let cfg2 = c2.attest(&req).await.unwrap();
    assert_eq!(cfg2.volumes[0].tag, Some(B.parse().unwrap()));
    assert_eq!(cfg2.volumes[0].key, key);

    // Recorded tags and keys survive a CAS restart; an exited instance's token stays
    // unknown (leases and the tokens of instances holding them survive: cas.rs).
    assert_eq!(c2.exit(cfg2.instance_token.clone()).await, 200);
    drop(c);
    drop(c2);
    drop(cas);
    let cas = CasProcess::start_with(home.path(), data.path(), &["--allow-sim-tier"]);
    let mut c = Conn::open(&cas).await;
    let req = c.sim_request("s/app", b"program", None).await;
    let cfg3 = c.attest(&req).await.unwrap();
    assert_eq!(cfg3.volumes[0].tag, Some(B.parse().unwrap()));
    assert_eq!(cfg3.volumes[0].key, key);
    let mut old = tag(Some(B), A);
    old.instance_token = cfg2.instance_token;
    let (st, _) = c.post(TAGS_PATH, j!(old)).await;
    assert_eq!(st, 403);
}

fn client_home(cas: &CasProcess, id: &Identity) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    pin_cas_as(home.path(), id, cas);
    home
}

fn node_request(
    key: &veil_las::key::NodeKey,
    node_id: &str,
    n: &NonceResponse,
    conn_key: &Identity,
) -> AttestRequest {
    let claims = veil_attest::NodeClaims {
        node_id: node_id.into(),
        time: veil_attest::UnixTime::now(),
        pid: 1,
        launcher_hash: launcher(),
        target: target(b"program"),
        measurement: veil_attest::measurement(&launcher(), &target(b"program")),
        report_data: ReportData::bind(&n.nonce, conn_key.spki_der()),
        uid: 1000,
        gid: 1000,
        cgroup: "/user.slice".into(),
    };
    let signature = key.sign(&claims.signed_bytes()).unwrap();
    AttestRequest {
        config_id: ConfigId("s/app".into()),
        tier: Tier::Node,
        nonce: n.nonce,
        evidence: Evidence::Node(veil_attest::NodeEvidence {
            claims,
            node_key_hash: key.key_hash(),
            signature,
        }),
        service_access_token: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_keys_are_registered_by_the_owner_only() {
    // `node` tier, policy in the default `mode: hardware` (no debug-mode, no --allow-sim-tier).
    let s = setup(&[], &[session("s", "")]).await;
    let las_dir = tempfile::tempdir().unwrap();
    let node = veil_las::key::NodeKey::load_or_create(las_dir.path()).unwrap();
    let spki_hex: String = node.spki_der().iter().map(|b| format!("{b:02x}")).collect();

    // Unregistered key: refused.
    let mut c = Conn::open(&s.cas).await;
    let n = c.nonce().await;
    let (_, v) = c
        .attest(&node_request(&node, "node-1", &n, &c.id))
        .await
        .unwrap_err();
    assert_refused(&s, &v, "attestation_node_key_untrusted");

    // A stranger cannot register it.
    let stranger = Identity::generate("stranger", &[]).unwrap();
    let sh = client_home(&s.cas, &stranger);
    let o = veil(sh.path())
        .args([
            "cas",
            "register-node",
            "--node-id",
            "node-1",
            "--spki-hex",
            &spki_hex,
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Only the CAS owner may do this"), "{err}");

    // The owner registers it (with a wrong expected hash first: refused).
    let oh = client_home(&s.cas, &s.owner);
    let o = veil(oh.path())
        .args([
            "cas",
            "register-node",
            &"0".repeat(64),
            "--node-id",
            "node-1",
            "--spki-hex",
            &spki_hex,
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let o = veil(oh.path())
        .args([
            "cas",
            "register-node",
            &node.key_hash(),
            "--node-id",
            "node-1",
            "--spki-hex",
            &spki_hex,
        ])
        .output()
        .unwrap();
    assert_success(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&node.key_hash()));

    // Now accepted; evidence naming another node id is refused.
    let n = c.nonce().await;
    let cfg = c
        .attest(&node_request(&node, "node-1", &n, &c.id))
        .await
        .unwrap();
    c.exit(cfg.instance_token).await;
    let n = c.nonce().await;
    let (_, v) = c
        .attest(&node_request(&node, "node-2", &n, &c.id))
        .await
        .unwrap_err();
    assert_refused(&s, &v, "attestation_bad_evidence");

    // Revoked: refused again.
    let o = veil(oh.path())
        .args(["cas", "revoke-node", &node.key_hash()])
        .output()
        .unwrap();
    assert_success(&o);
    let n = c.nonce().await;
    let (_, v) = c
        .attest(&node_request(&node, "node-1", &n, &c.id))
        .await
        .unwrap_err();
    assert_refused(&s, &v, "attestation_node_key_untrusted");
}

/// `veil envcas` (the real launcher) against the real CAS, in the `sim` tier.
struct Envcas {
    s: Setup,
    home: tempfile::TempDir,
    out: tempfile::TempDir,
    session: String,
}

impl Envcas {
    async fn new() -> Self {
        Self::with_cas_flags(&["--allow-sim-tier"]).await
    }

    async fn with_cas_flags(flags: &[&str]) -> Self {
        let s = setup(flags, &[]).await;
        let home = client_home(&s.cas, &s.owner);
        let out = tempfile::tempdir().unwrap();
        let mrenclave = String::from_utf8(
            veil(home.path())
                .env("SCONE_HASH", "1")
                .arg("envcas")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string();
        assert_eq!(mrenclave.len(), 64, "{mrenclave}");
        // The example with its /work paths templated into a temp dir, and the program also
        // printing SECRET_ENV.
        let o = out.path().display().to_string();
        let yaml = std::fs::read_to_string(crate::support::data("envcas-session.yaml"))
            .unwrap()
            .replace("/work/out", &format!("{o}/out"))
            .replace(
                &format!("cat {o}/out1'"),
                &format!("cat {o}/out1; echo; printenv SECRET_ENV'"),
            );
        let file = out.path().join("session.yaml");
        std::fs::write(&file, yaml).unwrap();
        let session = "envcas-example".to_string();
        create_session(home.path(), &session, &mrenclave, &file);
        Self {
            s,
            home,
            out,
            session,
        }
    }

    fn run(&self, program: &Path, service: &str, extra: &[&str]) -> std::process::Output {
        self.run_with(program, service, extra, &[("VEIL_MODE", "sim")])
    }

    fn run_with(
        &self,
        program: &Path,
        service: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> std::process::Output {
        without_ld(launcher_command(program))
            .env("HOME", self.home.path())
            .env("VEIL_LOG", "warn")
            .env("SCONE_CONFIG_ID", format!("{}/{service}", self.session))
            .env("VEIL_CAS_ADDR", &self.s.cas.enclave)
            .env("VEIL_CAS_KEY_HASH", &self.s.cas.key_hash)
            .envs(envs.iter().copied())
            .arg("envcas")
            .args(extra)
            .output()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envcas_example_end_to_end() {
    let e = Envcas::new().await;
    let veil_bin = crate::support::veil_bin();
    // Host arguments are ignored: the CAS's argv runs.
    let o = e.run(&veil_bin, "envcas", &["-v", "/tmp/num"]);
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{stdout}{stderr}");
    // out1 ends with the newline of its YAML block, then `echo` adds one: skip empty lines.
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0].len(), 32, "{stdout}");
    assert!(lines[0].chars().all(|c| c.is_ascii_graphic()), "{stdout}");
    // SECRET_ENV is the same secret.
    assert_eq!(lines[1], lines[0]);
    let out2 = std::fs::read(e.out.path().join("out2")).unwrap();
    assert!(
        out2.len() == 64 || (out2.len() == 65 && out2[64] == b'\n'),
        "{}",
        out2.len()
    );
    // No generated secret in the launcher's own output.
    assert!(!stderr.contains(lines[0]), "{stderr}");

    // A modified launcher copy: refused with the generic answer; SCONE's measurement error
    // is in the audit log.
    // Named `envcas` (the multi-call launcher is envcas by that name).
    std::fs::create_dir_all(e.out.path().join("modified")).unwrap();
    let copy = e.out.path().join("modified/envcas");
    let mut bytes = std::fs::read(crate::support::launcher_bin()).unwrap();
    bytes.extend_from_slice(b"modified");
    std::fs::write(&copy, bytes).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = e.run(&copy, "envcas", &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Attestation failed") && err.contains(REFUSED),
        "{err}"
    );
    assert!(!err.contains("Unexpected enclave measurement"), "{err}");
    assert!(
        last_refusal(e.s._data.path()).contains("Unexpected enclave measurement (MRENCLAVE, "),
        "{}",
        last_refusal(e.s._data.path())
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains(lines[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envcas_with_otp_end_to_end() {
    let e = Envcas::new().await;
    let veil_bin = crate::support::veil_bin();
    let code = String::from_utf8(
        veil(e.home.path())
            .args(["otp", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let wrong = if code == "123456" { "654321" } else { "123456" };
    let o = e.run(&veil_bin, &format!("with_otp@{wrong}"), &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("The given One-time Password is invalid"),
        "{err}"
    );
    let o = e.run(&veil_bin, &format!("with_otp@{code}"), &[]);
    assert_success(&o);
    let o = e.run(&veil_bin, &format!("with_otp@{code}"), &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("A One-time Password was already used within this time-step"),
        "{err}"
    );
}

/// A `veil las serve` process; killed on drop.
struct Las {
    child: Child,
    socket: std::path::PathBuf,
    data_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Las {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_las(home: &Path, node_id: &str) -> Las {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/las.sock");
    let data_dir = dir.path().join("data");
    let mut child = veil(home)
        .args([
            "las",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            node_id,
            "--data-dir",
        ])
        .arg(&data_dir)
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut listening = false;
    for line in std::io::BufReader::new(out).lines() {
        if line.unwrap().starts_with("LAS is listening on ") {
            listening = true;
            break;
        }
    }
    assert!(listening, "the LAS did not start");
    Las {
        child,
        socket,
        data_dir,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envcas_node_tier_end_to_end() {
    // No --allow-sim-tier: only the node tier can succeed.
    let e = Envcas::with_cas_flags(&[]).await;
    let las = start_las(e.home.path(), "node-e2e");
    let node = veil_las::key::NodeKey::load_or_create(&las.data_dir).unwrap();
    let socket = las.socket.display().to_string();
    let node_env = [("VEIL_MODE", "node"), ("VEIL_LAS_SOCKET", socket.as_str())];
    let veil_bin = crate::support::veil_bin();
    // Unregistered node key: refused.
    let o = e.run_with(&veil_bin, "envcas", &[], &node_env);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Attestation failed") && err.contains(REFUSED),
        "{err}"
    );
    assert!(
        last_refusal(e.s._data.path()).contains("is not registered with this CAS"),
        "{}",
        last_refusal(e.s._data.path())
    );
    // The sim tier is refused by this CAS.
    let o = e.run(&veil_bin, "envcas", &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(REFUSED));
    assert!(last_refusal(e.s._data.path()).contains("tier is disabled"));
    // Registered by the owner: works.
    let spki_hex: String = node.spki_der().iter().map(|b| format!("{b:02x}")).collect();
    let o = veil(e.home.path())
        .args([
            "cas",
            "register-node",
            &node.key_hash(),
            "--node-id",
            "node-e2e",
            "--spki-hex",
            &spki_hex,
        ])
        .output()
        .unwrap();
    assert_success(&o);
    // `veil envcas` drops LD_* before exec'ing the static launcher, which the LAS would refuse
    // with it: a LD_LIBRARY_PATH in the caller's environment does not fail the node tier.
    let with_ld = [node_env[0], node_env[1], ("LD_LIBRARY_PATH", "/usr/lib")];
    let o = e.run_with(&veil_bin, "envcas", &["-v", "/tmp/num"], &with_ld);
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0].len(), 32);
    // The audit entry names who the LAS signed for.
    let attested = audit_events(e.s._data.path())
        .into_iter()
        .rev()
        .find_map(|ev| match ev {
            veil_audit::Event::ServiceAttested { tier, node, .. } if tier == "node" => node,
            _ => None,
        })
        .expect("a node-tier service_attested entry with its requester");
    assert_eq!((attested.uid, attested.gid), (0, 0));
    assert_eq!(attested.node_id, "node-e2e");
    assert!(attested.cgroup.starts_with('/'), "{attested:?}");
    assert!(attested.pid > 0);
    // A modified launcher copy: the LAS hashes the copy and refuses it (not an accepted
    // launcher); nothing reaches the CAS.
    std::fs::create_dir_all(e.out.path().join("modified-node")).unwrap();
    let copy = e.out.path().join("modified-node/envcas");
    let mut bytes = std::fs::read(crate::support::launcher_bin()).unwrap();
    bytes.extend_from_slice(b"modified");
    std::fs::write(&copy, bytes).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = e.run_with(&copy, "envcas", &[], &node_env);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is not an accepted launcher"), "{err}");
}

/// The `veil.node` restriction of a service: uids and cgroup prefixes the LAS signed for, and
/// `node` evidence only (issue 16 §1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restriction_limits_uids_cgroups_and_tier() {
    let e = Envcas::with_cas_flags(&["--allow-sim-tier"]).await;
    let las = start_las(e.home.path(), "node-r");
    let node = veil_las::key::NodeKey::load_or_create(&las.data_dir).unwrap();
    let spki_hex: String = node.spki_der().iter().map(|b| format!("{b:02x}")).collect();
    let o = veil(e.home.path())
        .args([
            "cas",
            "register-node",
            &node.key_hash(),
            "--node-id",
            "node-r",
        ])
        .args(["--spki-hex", &spki_hex])
        .output()
        .unwrap();
    assert_success(&o);
    let mrenclave = String::from_utf8(
        veil(e.home.path())
            .env("SCONE_HASH", "1")
            .arg("envcas")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let service = |name: &str, node: &str| {
        format!(
            "   - name: {name}\n     image_name: envcas_image\n     mrenclaves: [$MRENCLAVE]\n     command: envcas -c 'true'\n     pwd: /\n     veil:\n       node: {node}\n"
        )
    };
    let o = e.out.path().display().to_string();
    let yaml = std::fs::read_to_string(crate::support::data("envcas-session.yaml"))
        .unwrap()
        .replace("/work/out", &format!("{o}/out"))
        .replace(
            "services:\n",
            &format!(
                "services:\n{}{}{}",
                service("root_any_cgroup", "{uids: [0], cgroups: [\"/\"]}"),
                service("uid_4242", "{uids: [4242]}"),
                service("other_cgroup", "{cgroups: [\"/no-such.slice/\"]}"),
            ),
        );
    let file = e.out.path().join("restricted.yaml");
    std::fs::write(&file, yaml).unwrap();
    create_session(e.home.path(), "restricted", &mrenclave, &file);
    let socket = las.socket.display().to_string();
    let run = |service: &str, mode: &str| {
        without_ld(launcher_command(&crate::support::veil_bin()))
            .env("HOME", e.home.path())
            .env("VEIL_LOG", "warn")
            .env("SCONE_CONFIG_ID", format!("restricted/{service}"))
            .env("VEIL_CAS_ADDR", &e.s.cas.enclave)
            .env("VEIL_CAS_KEY_HASH", &e.s.cas.key_hash)
            .env("VEIL_MODE", mode)
            .env("VEIL_LAS_SOCKET", &socket)
            .arg("envcas")
            .output()
            .unwrap()
    };
    let data = e.s._data.path();
    // Root, any cgroup: accepted in `node`.
    let o = run("root_any_cgroup", "node");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The same service with `sim` evidence (which this CAS and policy accept otherwise).
    let o = run("root_any_cgroup", "sim");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(REFUSED));
    let r = last_refusal(data);
    assert!(
        r.starts_with("attestation_node_restricted:") && r.contains("not `sim`"),
        "{r}"
    );
    // Another uid than the one the LAS signed for.
    let o = run("uid_4242", "node");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(REFUSED));
    let r = last_refusal(data);
    assert!(r.contains("uid 0") && r.contains("veil.node.uids"), "{r}");
    // A cgroup outside the prefixes.
    let o = run("other_cgroup", "node");
    assert!(!o.status.success());
    let r = last_refusal(data);
    assert!(r.contains("veil.node.cgroups"), "{r}");
}
