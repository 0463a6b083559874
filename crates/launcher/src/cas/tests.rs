//! The launcher's workload-API calls against a real CAS: `veil_cas::start` in this process on
//! 127.0.0.1 port 0 with a temporary data directory (its own tokio runtime), the session
//! uploaded and node keys registered by its owner through `veil-client`; for the `node` tier
//! an in-process LAS on a temporary socket measures this test binary.

use veil_api::nodes::{NODES_PATH, RegisterNode, Registered};
use veil_attest::{Digest32, SimEvidence, Target};
use veil_client::Connection;
use veil_identity::Identity;
use veil_las::server::{Las, LasConfig};
use veil_types::ExposeSecret;

use super::*;

/// A CAS running in this process; stopped when dropped.
struct TestCas {
    target: CasTarget,
    running: Option<veil_cas::Running>,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Drop for TestCas {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = self.rt.block_on(r.stop());
        }
    }
}

/// Start a CAS (`sim` tier allowed), upload `sessions` and register the node keys
/// `(node id, SPKI DER)` as its owner.
fn start_cas(sessions: &[String], nodes: &[(&str, &[u8])]) -> TestCas {
    let dir = tempfile::tempdir().unwrap();
    let owner = Identity::generate("owner", &[]).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let running = rt
        .block_on(veil_cas::start(veil_cas::ServeOptions {
            data_dir: dir.path().join("cas"),
            api_listen: ([127, 0, 0, 1], 0).into(),
            enclave_listen: ([127, 0, 0, 1], 0).into(),
            db_key_file: None,
            owners: vec![owner.key_hash()],
            alt_names: vec!["localhost".into(), "127.0.0.1".into()],
            allow_sim: true,
        }))
        .unwrap();
    rt.block_on(async {
        let api = running.api_addr.to_string();
        let mut c = Connection::connect("cas", &api, Some(&running.key_hash), Some(&owner))
            .await
            .unwrap();
        for s in sessions {
            c.upload_session(s).await.unwrap();
        }
        for (node_id, spki) in nodes {
            let r: Registered = c
                .post_json(
                    NODES_PATH,
                    &RegisterNode {
                        node_id: node_id.to_string(),
                        spki_hex: spki.iter().map(|b| format!("{b:02x}")).collect(),
                        key_hash: None,
                    },
                )
                .await
                .unwrap();
            assert_eq!(r.node_id, *node_id);
        }
    });
    TestCas {
        target: CasTarget {
            addr: running.enclave_addr.to_string(),
            key_hash: running.key_hash.clone(),
        },
        running: Some(running),
        rt,
        _dir: dir,
    }
}

const DEBUG: &str = "security:\n  attestation:\n    tolerate: [debug-mode]\n";

/// Session `s` with service `svc` expecting `mrenclave`; `security` as given.
fn session(mrenclave: &impl std::fmt::Display, security: &str) -> String {
    format!(
        "name: s\nversion: \"0.3\"\nservices:\n  - name: svc\n    image_name: img\n    mrenclaves: [{mrenclave}]\n    command: prog @@1\n    environment:\n      K: V\n    pwd: /\nimages:\n  - name: img\n    injection_files:\n      - path: /x\n        content: c\n{security}"
    )
}

fn target() -> Target {
    Target::Program {
        hash: Digest32::of(b"prog"),
    }
}

fn sim(rd: ReportData) -> Result<Evidence, LauncherError> {
    Ok(Evidence::Sim(SimEvidence::new(
        crate::program::launcher_hash()?,
        target(),
        rd,
    )))
}

#[test]
fn attests_and_receives_the_configuration() {
    let want = crate::program::own_measurement(&target()).unwrap();
    let cas = start_cas(&[session(&want, DEBUG)], &[]);
    let cfg = attest(&cas.target, "s/svc", Tier::Sim, None, sim).unwrap();
    let argv: Vec<&str> = cfg.argv.iter().map(|a| a.expose_secret()).collect();
    assert_eq!(argv, ["prog", "@@1"]);
    assert_eq!(cfg.env["K"].expose_secret(), "V");
    assert_eq!(cfg.injection_files[0].path, "/x");
    assert_eq!(cfg.injection_files[0].content.expose_secret(), b"c");

    // The instance token authorises the later calls, each on a fresh channel.
    heartbeat(&cas.target, &cfg.instance_token).unwrap();
    report_exit(&cas.target, &cfg.instance_token, 0);
    // An unknown token is the CAS refusing (the leases are gone); no CAS is "unreachable".
    let HeartbeatError::Refused(e) =
        heartbeat(&cas.target, &SecretString::from("bogus".to_string())).unwrap_err()
    else {
        panic!("an unknown instance token is a refusal");
    };
    assert_eq!(e.chain[0], HEARTBEAT, "{e:?}");
    assert!(e.to_string().contains("instance token is unknown"), "{e:?}");
    let nowhere = CasTarget {
        addr: "127.0.0.1:1".into(),
        key_hash: cas.target.key_hash.clone(),
    };
    let r = heartbeat(&nowhere, &cfg.instance_token);
    assert!(matches!(r, Err(HeartbeatError::Unreachable(_))), "{r:?}");

    // Evidence bound to another nonce (a replay) is refused; the workload learns no more than
    // that (the reason is in the CAS's audit log).
    let stale = ReportData::bind(&veil_attest::Nonce([1; 32]), b"x");
    let e = attest(&cas.target, "s/svc", Tier::Sim, None, |_| sim(stale)).unwrap_err();
    assert_eq!(e.chain, [ATTESTATION_FAILED, REFUSED], "{e:?}");
}

const ATTESTATION_FAILED: &str = "Attestation failed";
const REFUSED: &str =
    "The CAS refused this attestation; the reason is in the CAS's audit log (attestation_refused)";

/// A wrong measurement gets SCONE's outer message and the generic refusal: the expected
/// measurement is not told to the workload (no oracle; decision 20).
#[test]
fn wrong_measurement_is_refused_without_telling_the_expected_one() {
    let want = Digest32::of(b"expected");
    let cas = start_cas(&[session(&want, DEBUG)], &[]);
    let e = attest(&cas.target, "s/svc", Tier::Sim, None, sim).unwrap_err();
    assert_eq!(e.chain, [ATTESTATION_FAILED, REFUSED], "{e:?}");
    let text = e.fatal_text();
    assert!(
        text.starts_with(&format!(
            "[VEIL|FATAL] Could not initialize: {ATTESTATION_FAILED}\n  Caused by: {REFUSED}"
        )),
        "{text}"
    );
    assert!(!text.contains(&want.to_string()), "{text}");
}

#[test]
fn refuses_a_cas_with_another_key() {
    let cas = start_cas(&[], &[]);
    let t = CasTarget {
        addr: cas.target.addr.clone(),
        key_hash: "0".repeat(64),
    };
    let e = attest(&t, "s/svc", Tier::Sim, None, sim).unwrap_err();
    assert_eq!(e.chain[0], CHANNEL);
    assert!(e.chain[1].contains("differs from the pinned one"), "{e:?}");
    // A tag update names the volume above the channel error.
    let e = update_tag(
        &t,
        &SecretString::from("t".to_string()),
        "V1",
        None,
        Tag([1; 16]),
    )
    .unwrap_err();
    assert_eq!(
        e.chain[..2],
        [
            "Failed to record the tag of volume V1 in CAS".to_string(),
            CHANNEL.to_string()
        ]
    );
}

fn start_las(dir: &std::path::Path) -> std::path::PathBuf {
    let socket = dir.join("las.sock");
    let me = std::env::current_exe().unwrap();
    let las = Las::bind(&LasConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        socket: socket.clone(),
        data_dir: dir.join("data"),
        node_id: "n1".into(),
        socket_gid: None,
        // Even with its own hash listed, the (dynamically linked) test binary is refused.
        launcher_hashes: vec![veil_attest::measure::hash_file(&me).unwrap()],
    })
    .unwrap();
    std::thread::spawn(move || las.run());
    socket
}

/// The node tier end to end (registered key accepted, unregistered refused, measurement
/// matched) needs the static launcher as the requester: tests/it/workload.rs
/// (`envcas_node_tier_end_to_end`) and tests/it/las.rs. Here: the LAS refuses a dynamically
/// linked requester, and the launcher reports the LAS's reason.
#[test]
fn node_tier_refuses_a_dynamic_requester() {
    let d = tempfile::tempdir().unwrap();
    let socket = start_las(d.path());
    let e = veil_client::las::request_evidence(&socket, veil_attest::ReportData([1; 64]), target())
        .unwrap_err()
        .to_string();
    assert!(e.contains("dynamically linked"), "{e}");
}

#[test]
fn answers_over_the_response_limit_are_refused() {
    let cas = start_cas(&[], &[]);
    let id = Identity::generate("veil-launcher", &[]).unwrap();
    cas.rt.block_on(async {
        let connect = || {
            Connection::connect(
                "cas",
                &cas.target.addr,
                Some(&cas.target.key_hash),
                Some(&id),
            )
        };
        // A nonce answer is about 120 bytes: fine under the default limit, refused under 16.
        assert!(connect().await.unwrap().nonce().await.is_ok());
        let e = connect()
            .await
            .unwrap()
            .with_response_limit(16)
            .nonce()
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::Receive { msg, .. } if msg.contains("larger than 16 bytes")),
            "{e:?}"
        );
        assert_eq!(
            call_error("outer", e).chain[1],
            "reading the CAS answer: the answer is larger than 16 bytes"
        );
    });
}
