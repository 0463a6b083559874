//! `veil las serve` end to end: who may ask for evidence (decision 20) and the attacks on the
//! socket the LAS must refuse. The full `node` tier with the real static launcher and a CAS
//! (evidence accepted, the audit entry's uid/gid/cgroup, the `veil.node` restriction, a
//! modified or preloaded launcher refused) is in tests/it/workload.rs.
//!
//! A small static C program (`requester`, built here with `cc -static`) stands in for a
//! launcher: the LAS is started with its hash in `--launcher-hash`, so everything except the
//! check under test passes. The LD_PRELOAD attack of issue 16 §1 is a `.so` built here too.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use veil_attest::{
    Collateral, Digest32, Evidence, Expected, FactorSet, Nonce, ReferenceValues, RegisteredNodeKey,
    ReportData, Target, TrustAnchors, UnixTime, appraise, measurement,
};

use crate::support::{launcher_bin, veil_bin};

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

/// A `veil` command with none of the launcher's variables inherited.
fn veil() -> Command {
    let mut c = Command::new(veil_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("VEIL_") || k.starts_with("SCONE_") || k.starts_with("LD_") {
            c.env_remove(k);
        }
    }
    c.env("VEIL_LOG", "warn");
    c
}

/// Shared by the requester and the preloaded library: connect to `sock`, enable SO_PASSCRED,
/// send `req`, write the answer (or the failing call and errno) to `out`.
const ASK_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
static int ask(const char *sock, const char *req, const char *out) {
    FILE *f = fopen(out, "w");
    if (!f) return 2;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, sock, sizeof a.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        fprintf(f, "connect: errno %d\n", errno);
        fclose(f);
        return 1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
    if (send(fd, req, strlen(req), 0) < 0) {
        fprintf(f, "send: errno %d\n", errno);
        fclose(f);
        return 1;
    }
    static char buf[65536];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n < 0) {
        fprintf(f, "recv: errno %d\n", errno);
        fclose(f);
        return 1;
    }
    buf[n] = 0;
    fprintf(f, "%s\n", buf);
    fclose(f);
    return 0;
}
"#;

/// `requester SOCK REQ OUT [mapexec FILE | hold N]`.
const REQUESTER_C: &str = r#"
#include <fcntl.h>
#include <sys/mman.h>
int main(int argc, char **argv) {
    if (argc < 4) return 3;
    if (argc >= 6 && strcmp(argv[4], "mapexec") == 0) {
        int fd = open(argv[5], O_RDONLY);
        if (fd < 0 || mmap(0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0) == MAP_FAILED)
            return 4;
    }
    if (argc >= 6 && strcmp(argv[4], "hold") == 0) {
        int n = atoi(argv[5]);
        for (int i = 0; i < n; i++) {
            int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
            struct sockaddr_un a;
            memset(&a, 0, sizeof a);
            a.sun_family = AF_UNIX;
            strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
            connect(fd, (struct sockaddr *)&a, sizeof a);
        }
        puts("held");
        fflush(stdout);
        sleep(30);
        return 0;
    }
    return ask(argv[1], argv[2], argv[3]);
}
"#;

/// The attack of issue 16 §1: runs inside whatever program it is preloaded into.
const PRELOAD_C: &str = r#"
__attribute__((constructor)) static void attack(void) {
    const char *sock = getenv("ATTACK_SOCK"), *req = getenv("ATTACK_REQ"), *out = getenv("ATTACK_OUT");
    if (sock && req && out) ask(sock, req, out);
}
"#;

struct Built {
    dir: tempfile::TempDir,
    requester: PathBuf,
    preload: PathBuf,
}

/// The requester and the preload library, built once, in a directory anyone may read.
fn built() -> &'static Built {
    static B: OnceLock<Built> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("veil-las-it")
            .tempdir_in("/tmp")
            .expect("tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let req_c = dir.path().join("requester.c");
        std::fs::write(&req_c, format!("{ASK_C}{REQUESTER_C}")).unwrap();
        let pre_c = dir.path().join("preload.c");
        std::fs::write(&pre_c, format!("{ASK_C}{PRELOAD_C}")).unwrap();
        let requester = dir.path().join("requester");
        let preload = dir.path().join("attack.so");
        let o = Command::new("cc")
            .args(["-static", "-O1", "-o"])
            .arg(&requester)
            .arg(&req_c)
            .output()
            .expect("cc");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let o = Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&preload)
            .arg(&pre_c)
            .output()
            .expect("cc");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Built {
            dir,
            requester,
            preload,
        }
    })
}

fn hash(p: &Path) -> Digest32 {
    veil_attest::measure::hash_file(p).expect("hash")
}

/// An evidence request for `rd` and a program hash of the asker's choice.
fn request_json(rd: &ReportData) -> String {
    serde_json::json!({
        "report_data": rd,
        "target": {"kind": "program", "hash": Digest32::of(b"the attacker's choice")},
    })
    .to_string()
}

/// A `veil las serve` process; killed on drop.
struct LasProc {
    child: Child,
    socket: PathBuf,
    data_dir: PathBuf,
    key_hash: String,
    addr: String,
    accepted: Vec<String>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for LasProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LasProc {
    /// The LAS's log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// A LAS accepting the requester and the real launcher, with `extra` arguments.
fn start_las(extra: &[&str]) -> LasProc {
    let dir = tempfile::Builder::new()
        .prefix("veil-las")
        .tempdir_in("/tmp")
        .expect("tmp");
    // Others may reach the socket's directory; the socket's own mode decides.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("run/las.sock");
    let data_dir = dir.path().join("data");
    let stderr = dir.path().join("las.log");
    let requester = hash(&built().requester).to_string();
    let launcher = hash(&launcher_bin()).to_string();
    let mut child = veil()
        .env("VEIL_LOG", "info")
        .args([
            "las",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "test-node",
            "--launcher-hash",
            &requester,
            "--launcher-hash",
            &launcher,
            "--data-dir",
        ])
        .arg(&data_dir)
        .arg("--socket")
        .arg(&socket)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn las");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut key_hash = String::new();
    let mut addr = String::new();
    let mut accepted = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(h) = line.strip_prefix("LAS node key hash: ") {
            key_hash = h.to_string();
        }
        if let Some(h) = line.strip_prefix("LAS accepts launcher: ") {
            accepted.push(h.to_string());
        }
        if let Some(a) = line.strip_prefix("LAS is listening on ") {
            addr = a.to_string();
            break;
        }
    }
    assert_eq!(key_hash.len(), 64, "no key hash printed");
    assert!(!addr.is_empty(), "no address printed");
    assert_eq!(accepted, [requester, launcher]);
    LasProc {
        child,
        socket,
        data_dir,
        key_hash,
        addr,
        accepted,
        stderr,
        _dir: dir,
    }
}

/// Run the requester (`args` after SOCK REQ OUT) as `uid` (root if `None`) with `envs`; its
/// answer file.
fn run_requester(
    las: &LasProc,
    rd: &ReportData,
    uid: Option<u32>,
    wrapper: &[&str],
    envs: &[(&str, &str)],
    args: &[&str],
) -> String {
    let out = built()
        .dir
        .path()
        .join(format!("answer-{}-{}", std::process::id(), rand_suffix()));
    // Pre-created so that a requester running as nobody can write it.
    std::fs::write(&out, "").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut c = if let Some((w, rest)) = wrapper.split_first() {
        let mut c = Command::new(w);
        c.args(rest).arg(&built().requester);
        c
    } else {
        Command::new(&built().requester)
    };
    c.env_clear()
        .envs(envs.iter().copied())
        .arg(&las.socket)
        .arg(request_json(rd))
        .arg(&out)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(u) = uid {
        c.uid(u).gid(NOGROUP);
    }
    let _ = c.status().expect("requester");
    let answer = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    answer
}

fn rand_suffix() -> String {
    Nonce::random().expect("nonce").0[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The evidence in an answer, or the refusal reason.
fn parse_answer(answer: &str) -> Result<veil_attest::NodeEvidence, String> {
    match serde_json::from_str::<veil_api::las::EvidenceResponse>(answer.trim()) {
        Ok(veil_api::las::EvidenceResponse::Evidence(ev)) => Ok(*ev),
        Ok(veil_api::las::EvidenceResponse::Error(m)) => Err(m),
        Err(_) => Err(format!("no answer: {answer}")),
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

fn anchors(las: &LasProc) -> TrustAnchors {
    anchors_for(las, "test-node")
}

#[test]
fn las_signs_for_an_accepted_static_requester_only() {
    let las = start_las(&[]);
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
    // Root-only socket by default.
    let md = std::fs::metadata(&las.socket).unwrap();
    assert_eq!(
        (md.mode() & 0o777, md.uid(), md.gid()),
        (0o600, 0, 0),
        "socket mode"
    );

    // The accepted (static) requester gets evidence about itself, with the kernel's uid, gid
    // and its cgroup.
    let nonce = Nonce::random().expect("nonce");
    let rd = ReportData::bind(&nonce, b"client spki");
    let ev = parse_answer(&run_requester(&las, &rd, None, &[], &[], &[])).expect("evidence");
    let me = hash(&built().requester);
    assert_eq!(ev.claims.launcher_hash, me);
    assert_eq!((ev.claims.uid, ev.claims.gid), (0, 0));
    let own_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    assert!(
        own_cgroup.contains(&format!("0::{}", ev.claims.cgroup)),
        "{} vs {own_cgroup}",
        ev.claims.cgroup
    );
    assert_eq!(ev.node_key_hash, las.key_hash);
    let target = Target::Program {
        hash: Digest32::of(b"the attacker's choice"),
    };
    let rv = ReferenceValues::from_policy(
        vec![FactorSet::mrenclave(vec![measurement(&me, &target)])],
        vec![],
    );
    appraise(
        &Evidence::Node(ev.clone()),
        &Collateral::None,
        &rv,
        &Expected { report_data: rd },
        &anchors(&las),
        UnixTime::now(),
    )
    .expect("appraisal");
    // A wrong node key or node id, and another binding, are refused by the appraisal.
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
    let appraise_with = |a: &TrustAnchors, rd: ReportData| {
        appraise(
            &Evidence::Node(ev.clone()),
            &Collateral::None,
            &rv,
            &Expected { report_data: rd },
            a,
            UnixTime::now(),
        )
        .expect_err("refused")
        .code()
    };
    assert_eq!(appraise_with(&wrong, rd), "attestation_node_key_untrusted");
    assert_eq!(
        appraise_with(&anchors_for(&las, "other-node"), rd),
        "attestation_bad_evidence"
    );
    assert_eq!(
        appraise_with(
            &anchors(&las),
            ReportData::bind(&Nonce([0; 32]), b"client spki")
        ),
        "attestation_binding_mismatch"
    );
}

#[test]
fn las_refuses_what_is_not_an_accepted_static_launcher() {
    let las = start_las(&[]);
    let rd = ReportData([7; 64]);
    // This test process: dynamically linked (and not listed). Claimed executables and pids in
    // the request change nothing.
    let sh = hash(Path::new("/bin/sh"));
    let body = serde_json::json!({
        "report_data": rd,
        "target": {"kind": "envcas"},
        "exe": "/bin/sh",
        "launcher_hash": sh,
        "pid": 1,
    });
    let raw =
        veil_client::las::raw_request(&las.socket, body.to_string().as_bytes()).expect("request");
    let resp: veil_api::las::EvidenceResponse = serde_json::from_slice(&raw).expect("answer");
    assert!(
        matches!(&resp, veil_api::las::EvidenceResponse::Error(m) if m.contains("dynamically linked")),
        "{resp:?}"
    );
    // Garbage is refused with a reason, and the LAS keeps serving.
    let raw = veil_client::las::raw_request(&las.socket, b"not json").expect("request");
    let resp: veil_api::las::EvidenceResponse = serde_json::from_slice(&raw).expect("answer");
    assert!(
        matches!(resp, veil_api::las::EvidenceResponse::Error(ref m) if m.contains("malformed")),
        "{resp:?}"
    );
    // A static executable that is not in the list: a copy of the requester, one byte more.
    let copy = built()
        .dir
        .path()
        .join(format!("requester-copy-{}", rand_suffix()));
    let mut bytes = std::fs::read(&built().requester).unwrap();
    bytes.push(0);
    std::fs::write(&copy, bytes).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = built()
        .dir
        .path()
        .join(format!("copy-answer-{}", rand_suffix()));
    let st = Command::new(&copy)
        .env_clear()
        .arg(&las.socket)
        .arg(request_json(&rd))
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let e = parse_answer(&std::fs::read_to_string(&out).unwrap()).unwrap_err();
    assert!(e.contains("is not an accepted launcher"), "{e}");
    // An LD_* variable in the (accepted, static) requester's environment.
    let e = parse_answer(&run_requester(
        &las,
        &rd,
        None,
        &[],
        &[("LD_LIBRARY_PATH", "/tmp")],
        &[],
    ))
    .unwrap_err();
    assert!(e.contains("LD_LIBRARY_PATH"), "{e}");
    // Traced (strace -f attaches to the requester).
    if Path::new("/usr/bin/strace").exists() {
        let e = parse_answer(&run_requester(
            &las,
            &rd,
            None,
            &["/usr/bin/strace", "-f", "-o", "/dev/null"],
            &[],
            &[],
        ))
        .unwrap_err();
        assert!(e.contains("traced"), "{e}");
    } else {
        eprintln!("SKIP traced requester: no /usr/bin/strace");
    }
    // An executable mapping of another file.
    let e = parse_answer(&run_requester(
        &las,
        &rd,
        None,
        &[],
        &[],
        &["mapexec", "/bin/true"],
    ))
    .unwrap_err();
    assert!(
        e.contains("maps executable code other than its executable"),
        "{e}"
    );
    // After all that the requester itself still gets evidence, and the log has the reasons.
    assert!(parse_answer(&run_requester(&las, &rd, None, &[], &[], &[])).is_ok());
    let log = las.log();
    for want in [
        "dynamically linked",
        "not an accepted launcher",
        "LD_LIBRARY_PATH",
        "maps executable code",
    ] {
        assert!(log.contains(want), "{want} not in the LAS log:\n{log}");
    }
}

/// Issue 16 §1: a `.so` preloaded into the dynamically linked `veil --version`, as `nobody`,
/// asks for evidence binding a key and a program hash of its choice.
#[test]
fn ld_preload_attack_is_refused() {
    let b = built();
    let rd = ReportData([9; 64]);
    let attack = |las: &LasProc, program: &Path| -> String {
        let out = b.dir.path().join(format!("attack-{}", rand_suffix()));
        // The output file is the attacker's: writable by nobody.
        std::fs::write(&out, "").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o666)).unwrap();
        let _ = Command::new(program)
            .arg("--version")
            .env_clear()
            .env("LD_PRELOAD", &b.preload)
            .env("ATTACK_SOCK", &las.socket)
            .env("ATTACK_REQ", request_json(&rd))
            .env("ATTACK_OUT", &out)
            .uid(NOBODY)
            .gid(NOGROUP)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run");
        let got = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        got
    };
    // The default socket is root's only: nobody cannot even connect (EACCES).
    let las = start_las(&[]);
    let got = attack(&las, &veil_bin());
    assert_eq!(got.trim(), "connect: errno 13", "{got}");
    drop(las);

    // With the group opted in, nobody connects, and the LAS refuses the dynamic `veil`.
    let las = start_las(&["--socket-gid", &NOGROUP.to_string()]);
    let md = std::fs::metadata(&las.socket).unwrap();
    assert_eq!((md.mode() & 0o777, md.uid(), md.gid()), (0o660, 0, NOGROUP));
    let got = attack(&las, &veil_bin());
    let e = parse_answer(&got).expect_err("the attack got evidence");
    assert!(e.contains("dynamically linked"), "{e}");
    // Even if its exe hash were listed: `veil` itself is not a launcher (not listed either).
    assert!(!las.accepted.contains(&hash(&veil_bin()).to_string()));
    // The static launcher never runs the constructor (it has no dynamic loader).
    let got = attack(&las, &launcher_bin());
    assert_eq!(
        got, "",
        "the preloaded code ran in the static launcher: {got}"
    );
    // The same preload into the accepted static requester: no constructor either, and the
    // LD_PRELOAD variable alone is refused.
    let e = parse_answer(&run_requester(
        &las,
        &rd,
        Some(NOBODY),
        &[],
        &[("LD_PRELOAD", b.preload.to_str().unwrap())],
        &[],
    ))
    .unwrap_err();
    assert!(e.contains("LD_PRELOAD"), "{e}");
    // Without it, nobody's requester gets evidence naming nobody.
    let ev = parse_answer(&run_requester(&las, &rd, Some(NOBODY), &[], &[], &[])).unwrap();
    assert_eq!((ev.claims.uid, ev.claims.gid), (NOBODY, NOGROUP));
}

/// 64 idle connections as nobody (the attack that made a genuine launcher fail with "Broken
/// pipe") do not starve root's request.
#[test]
fn idle_connections_of_one_uid_do_not_starve_another() {
    let las = start_las(&["--socket-gid", &NOGROUP.to_string()]);
    let mut holder = Command::new(&built().requester)
        .env_clear()
        .arg(&las.socket)
        .arg("{}")
        .arg("/dev/null")
        .args(["hold", "64"])
        .uid(NOBODY)
        .gid(NOGROUP)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    let rd = ReportData([3; 64]);
    for _ in 0..3 {
        let got = run_requester(&las, &rd, None, &[], &[], &[]);
        assert!(parse_answer(&got).is_ok(), "root starved: {got}");
    }
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        las.log()
            .contains("this uid has too many concurrent evidence requests"),
        "{}",
        las.log()
    );
}

#[test]
fn las_keeps_its_node_key_across_restarts() {
    let first = start_las(&[]);
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
