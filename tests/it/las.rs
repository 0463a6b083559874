//! `veil las serve` end to end: evidence over its unix socket, verified by the pure appraisal,
//! and the attacks on the socket the LAS must refuse.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use veil_attest::{
    Collateral, Digest32, Evidence, Expected, FactorSet, Nonce, ReferenceValues, RegisteredNodeKey,
    ReportData, Target, TrustAnchors, UnixTime, appraise, measurement,
};

use crate::support::veil_bin;

/// A `veil` command with none of the launcher's variables inherited.
fn veil() -> Command {
    let mut c = Command::new(veil_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("VEIL_") || k.starts_with("SCONE_") {
            c.env_remove(k);
        }
    }
    c.env("VEIL_LOG", "warn");
    c
}

/// A `veil las serve` process; killed on drop.
struct LasProc {
    child: Child,
    socket: PathBuf,
    data_dir: PathBuf,
    key_hash: String,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for LasProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_las() -> LasProc {
    let dir = tempfile::tempdir().expect("tmp");
    let socket = dir.path().join("run/las.sock");
    let data_dir = dir.path().join("data");
    let mut child = veil()
        .args([
            "las",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "test-node",
            "--data-dir",
        ])
        .arg(&data_dir)
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn las");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut key_hash = String::new();
    let mut addr = String::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(h) = line.strip_prefix("LAS node key hash: ") {
            key_hash = h.to_string();
        }
        if let Some(a) = line.strip_prefix("LAS is listening on ") {
            addr = a.to_string();
            break;
        }
    }
    assert_eq!(key_hash.len(), 64, "no key hash printed");
    assert!(!addr.is_empty(), "no address printed");
    LasProc {
        child,
        socket,
        data_dir,
        key_hash,
        addr,
        _dir: dir,
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: las\r\nConnection: close\r\n\r\n"
            )
            .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read");
            return out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "LAS TCP port never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn anchors_for(las: &LasProc, node_id: &str) -> TrustAnchors {
    let key = veil_las::key::NodeKey::load_or_create(&las.data_dir).expect("key");
    assert_eq!(key.key_hash(), las.key_hash);
    TrustAnchors {
        node_keys: vec![RegisteredNodeKey {
            node_id: node_id.into(),
            spki_der: key.spki_der().to_vec(),
            registered_at: UnixTime(0),
            revoked_at: None,
        }],
        ..TrustAnchors::default()
    }
}

#[test]
fn las_signs_evidence_about_the_real_executable() {
    let las = start_las();
    let health = http_get(&las.addr, "/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
        "{health}"
    );
    let key_doc = http_get(&las.addr, "/v1/node-key");
    assert!(
        key_doc.contains(&las.key_hash) && key_doc.contains("test-node"),
        "{key_doc}"
    );
    // The TCP port never gives evidence.
    assert!(http_get(&las.addr, "/v1/evidence").starts_with("HTTP/1.1 404"));

    let nonce = Nonce::random().expect("nonce");
    let rd = ReportData::bind(&nonce, b"client spki");
    let program = Digest32::of(b"the program");
    let target = Target::Program { hash: program };
    let ev = veil_client::las::request_evidence(&las.socket, rd, target).expect("evidence");
    let me = veil_attest::measure::hash_file(&std::env::current_exe().expect("exe")).expect("hash");
    assert_eq!(
        ev.claims.launcher_hash, me,
        "the LAS must hash the connecting process's exe"
    );
    assert_eq!(ev.claims.pid, std::process::id());
    assert_eq!(ev.node_key_hash, las.key_hash);
    let want = measurement(&me, &target);
    let rv = ReferenceValues::from_policy(vec![FactorSet::mrenclave(vec![want])], vec![]);
    let r = appraise(
        &Evidence::Node(ev.clone()),
        &Collateral::None,
        &rv,
        &Expected { report_data: rd },
        &anchors_for(&las, "test-node"),
        UnixTime::now(),
    )
    .expect("appraisal");
    assert_eq!(r.claims.node_id.as_deref(), Some("test-node"));

    // Wrong node key (not the registered one) and wrong node id are refused.
    let other_dir = tempfile::tempdir().expect("tmp");
    let other = veil_las::key::NodeKey::load_or_create(other_dir.path()).expect("key");
    let wrong = TrustAnchors {
        node_keys: vec![RegisteredNodeKey {
            node_id: "test-node".into(),
            spki_der: other.spki_der().to_vec(),
            registered_at: UnixTime(0),
            revoked_at: None,
        }],
        ..TrustAnchors::default()
    };
    let e = appraise(
        &Evidence::Node(ev.clone()),
        &Collateral::None,
        &rv,
        &Expected { report_data: rd },
        &wrong,
        UnixTime::now(),
    )
    .expect_err("wrong key");
    assert_eq!(e.code(), "attestation_node_key_untrusted");
    assert!(
        e.chain()
            .join("\n")
            .contains(&format!("The node key {} is not registered", las.key_hash))
    );
    let e = appraise(
        &Evidence::Node(ev.clone()),
        &Collateral::None,
        &rv,
        &Expected { report_data: rd },
        &anchors_for(&las, "other-node"),
        UnixTime::now(),
    )
    .expect_err("wrong node id");
    assert_eq!(e.code(), "attestation_bad_evidence");
    // Another nonce: binding mismatch.
    let e = appraise(
        &Evidence::Node(ev),
        &Collateral::None,
        &rv,
        &Expected {
            report_data: ReportData::bind(&Nonce([0; 32]), b"client spki"),
        },
        &anchors_for(&las, "test-node"),
        UnixTime::now(),
    )
    .expect_err("binding");
    assert_eq!(e.code(), "attestation_binding_mismatch");
}

#[test]
fn las_ignores_claimed_executables() {
    let las = start_las();
    let sh = veil_attest::measure::hash_file(Path::new("/bin/sh")).expect("hash sh");
    let rd = ReportData([7; 64]);
    let body = serde_json::json!({
        "report_data": rd,
        "target": {"kind": "envcas"},
        "exe": "/bin/sh",
        "exe_path": "/bin/sh",
        "launcher_hash": sh,
        "pid": 1,
    });
    let raw =
        veil_client::las::raw_request(&las.socket, body.to_string().as_bytes()).expect("request");
    let resp: veil_api::las::EvidenceResponse = serde_json::from_slice(&raw).expect("answer");
    let veil_api::las::EvidenceResponse::Evidence(ev) = resp else {
        panic!("refused: {resp:?}")
    };
    let me = veil_attest::measure::hash_file(&std::env::current_exe().expect("exe")).expect("hash");
    assert_eq!(ev.claims.launcher_hash, me);
    assert_ne!(ev.claims.launcher_hash, sh);
    assert_eq!(ev.claims.pid, std::process::id());
    assert_eq!(ev.claims.measurement, measurement(&me, &Target::Envcas));
    // Garbage is refused with a reason, and the LAS keeps serving.
    let raw = veil_client::las::raw_request(&las.socket, b"not json").expect("request");
    let resp: veil_api::las::EvidenceResponse = serde_json::from_slice(&raw).expect("answer");
    assert!(
        matches!(resp, veil_api::las::EvidenceResponse::Error(ref m) if m.contains("malformed")),
        "{resp:?}"
    );
    assert!(veil_client::las::request_evidence(&las.socket, rd, Target::Envcas).is_ok());
}

#[test]
fn las_keeps_its_node_key_across_restarts() {
    let first = start_las();
    let hash = first.key_hash.clone();
    let data = first.data_dir.clone();
    let key = std::fs::read(data.join("node-key.pk8")).expect("key file");
    drop(first);
    let d = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(d.path().join("data")).expect("mkdir");
    std::fs::write(d.path().join("data/node-key.pk8"), key).expect("copy key");
    let mut child = veil()
        .args([
            "las",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "n",
            "--data-dir",
        ])
        .arg(d.path().join("data"))
        .arg("--socket")
        .arg(d.path().join("las.sock"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("line");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(line.trim(), format!("LAS node key hash: {hash}"));
}
