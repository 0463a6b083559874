//! Shared helpers for the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `veil` binary built for this test run.
pub fn veil_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_veil"))
}

/// The static `veil-launcher` that `crates/veil/build.rs` built for this `veil` (what `veil run`
/// and `veil envcas` exec).
pub fn launcher_bin() -> PathBuf {
    PathBuf::from(env!("VEIL_LAUNCHER_BUILT"))
}

/// A `veil` command with a clean, test-local environment: its own HOME, so no identity or
/// pinned CAS of the developer leaks in.
pub fn veil(home: &std::path::Path) -> Command {
    let mut c = Command::new(veil_bin());
    c.env("HOME", home)
        .env_remove("VEIL_IDENTITY")
        .env_remove("VEIL_CLI_CONFIG")
        .env("VEIL_LOG", "warn");
    c
}

/// A file under `tests/data/`.
pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name)
}

/// How to start a [`CasProcess`]: extra `veil cas serve` flags, log level and where its output
/// goes.
pub struct CasSpawn<'a> {
    /// Flags after `--data-dir DIR --api-listen 127.0.0.1:0 --enclave-listen 127.0.0.1:0`.
    pub extra: &'a [&'a str],
    /// `VEIL_LOG` of the process (`None`: the [`veil`] default).
    pub log_level: Option<&'a str>,
    /// File for stdout (`None`: discarded).
    pub stdout: Option<&'a Path>,
    /// File for stderr (the log).
    pub stderr: &'a Path,
    /// How long to wait for `ports.json`.
    pub timeout: Duration,
}

/// Why a [`CasProcess`] did not come up; each carries the process's stderr.
#[derive(Debug)]
pub enum CasStartError {
    /// The process exited before writing `ports.json`.
    Exited(String),
    /// No `ports.json` within the timeout (the process was killed).
    TimedOut(String),
}

impl CasStartError {
    /// The process's stderr.
    pub fn log(&self) -> &str {
        match self {
            Self::Exited(log) | Self::TimedOut(log) => log,
        }
    }
}

impl std::fmt::Display for CasStartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(log) => f.write_str(log),
            Self::TimedOut(log) => write!(f, "CAS did not start: {log}"),
        }
    }
}

/// A `veil cas serve` process listening on 127.0.0.1 port 0; killed on drop.
pub struct CasProcess {
    child: Option<Child>,
    /// Client API `host:port`.
    pub api: String,
    /// Enclave (workload) API `host:port`.
    pub enclave: String,
    /// CAS key hash.
    pub key_hash: String,
    /// The file its stderr goes to.
    pub stderr: PathBuf,
}

impl CasProcess {
    /// Start a CAS with data in `data_dir` (created if missing; a stale `ports.json` is removed)
    /// and wait until it has written its `ports.json`.
    pub fn spawn(home: &Path, data_dir: &Path, how: &CasSpawn<'_>) -> Result<Self, CasStartError> {
        std::fs::create_dir_all(data_dir).unwrap();
        let ports = data_dir.join("ports.json");
        let _ = std::fs::remove_file(&ports);
        let mut cmd = veil(home);
        cmd.args(["cas", "serve", "--data-dir"])
            .arg(data_dir)
            .args([
                "--api-listen",
                "127.0.0.1:0",
                "--enclave-listen",
                "127.0.0.1:0",
            ])
            .args(how.extra)
            .stderr(std::fs::File::create(how.stderr).unwrap());
        if let Some(level) = how.log_level {
            cmd.env("VEIL_LOG", level);
        }
        match how.stdout {
            Some(path) => cmd.stdout(std::fs::File::create(path).unwrap()),
            None => cmd.stdout(Stdio::null()),
        };
        let mut child = cmd.spawn().unwrap();
        let log = || std::fs::read_to_string(how.stderr).unwrap_or_default();
        let deadline = Instant::now() + how.timeout;
        loop {
            if let Some(v) = read_ports(&ports) {
                return Ok(Self {
                    child: Some(child),
                    api: v["api"].as_str().unwrap().to_string(),
                    enclave: v["enclave"].as_str().unwrap().to_string(),
                    key_hash: v["key_hash"].as_str().unwrap().to_string(),
                    stderr: how.stderr.to_path_buf(),
                });
            }
            if child.try_wait().unwrap().is_some() {
                return Err(CasStartError::Exited(log()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CasStartError::TimedOut(log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start a CAS in `data_dir` (`VEIL_LOG=info`, a fresh log file in `data_dir`); panics with
    /// the log if it does not come up.
    pub fn start(home: &Path, data_dir: &Path) -> Self {
        Self::try_start(home, data_dir).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`CasProcess::start`]; `Err(log)` when it exits or does not write `ports.json`
    /// within 20 s.
    pub fn try_start(home: &Path, data_dir: &Path) -> Result<Self, String> {
        let log = data_dir.join(format!(
            "cas-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        Self::spawn(
            home,
            data_dir,
            &CasSpawn {
                extra: &[],
                log_level: Some("info"),
                stdout: None,
                stderr: &log,
                timeout: Duration::from_secs(20),
            },
        )
        .map_err(|e| e.to_string())
    }

    /// Start a CAS with `extra` flags (default `VEIL_LOG`, log in `data_dir/cas.log`, 30 s to come
    /// up); panics with the log if it does not come up.
    pub fn start_with(home: &Path, data_dir: &Path, extra: &[&str]) -> Self {
        let log = data_dir.join("cas.log");
        Self::spawn(
            home,
            data_dir,
            &CasSpawn {
                extra,
                log_level: None,
                stdout: None,
                stderr: &log,
                timeout: Duration::from_secs(30),
            },
        )
        .unwrap_or_else(|e| panic!("CAS did not start: {}", e.log()))
    }

    /// A stand-in with no process behind it (to point clients at an address nothing serves).
    pub fn without_process(api: String, enclave: String, key_hash: String) -> Self {
        Self {
            child: None,
            api,
            enclave,
            key_hash,
            stderr: PathBuf::new(),
        }
    }

    /// SIGKILL the CAS and wait for it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (graceful stop); asserts exit status 0 within 20 s.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let o = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "CAS exited with {status}: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("CAS did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for CasProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The parsed `ports.json` once it holds complete JSON (the CAS writes it when it listens).
pub fn read_ports(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Asserts that a finished command succeeded, showing its stderr otherwise.
#[track_caller]
pub fn assert_success(o: &std::process::Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Makes `id` the identity of `home` (`~/.veil/identity.pem`) and pins `cas` there with
/// `veil cas attest`.
pub fn pin_cas_as(home: &Path, id: &veil_identity::Identity, cas: &CasProcess) {
    std::fs::create_dir_all(home.join(".veil")).unwrap();
    id.save(&home.join(".veil/identity.pem")).unwrap();
    let o = veil(home)
        .args(["cas", "attest", &cas.api, "--key-hash", &cas.key_hash])
        .output()
        .unwrap();
    assert_success(&o);
}

/// `veil session create -e SESSION=session -e MRENCLAVE=mrenclave file` as `home`'s identity,
/// asserting success.
pub fn create_session(home: &Path, session: &str, mrenclave: &str, file: &Path) {
    let o = veil(home)
        .args(["session", "create", "-e"])
        .arg(format!("SESSION={session}"))
        .arg("-e")
        .arg(format!("MRENCLAVE={mrenclave}"))
        .arg(file)
        .output()
        .unwrap();
    assert_success(&o);
}

/// `program` (the launcher) with none of the `VEIL_*`/`SCONE_*` variables of the test process
/// inherited.
pub fn launcher_command(program: &Path) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("VEIL_") || k.starts_with("SCONE_") {
            c.env_remove(k);
        }
    }
    c
}

/// Asserts that `veil ARGS` succeeded (showing its stdout and stderr otherwise); its stdout.
#[track_caller]
pub fn success_stdout(args: &[&str], o: std::process::Output) -> String {
    assert!(
        o.status.success(),
        "veil {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The data objects of a volume's backing store (everything but its lock and metadata slots),
/// sorted.
pub fn volume_objects(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n != "lock" && !n.starts_with("meta.") && p.is_file()
        })
        .collect();
    v.sort();
    v
}

/// Whether a test can use `what` (`"fuse"`, `"podman"`, `"etcd"`, …): `unavailable` is `None`
/// when it can, else why not. When it cannot and `VEIL_CI_REQUIRE` (comma-separated, e.g.
/// `fuse,podman`) names `what`, this panics: CI must run the test, not skip it. Otherwise it
/// prints why the test does not run and returns false (the caller returns).
#[track_caller]
pub fn require(what: &str, unavailable: Option<String>) -> bool {
    let Some(why) = unavailable else {
        return true;
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    let required = std::env::var("VEIL_CI_REQUIRE").unwrap_or_default();
    if required.split(',').any(|r| r.trim() == what) {
        panic!("VEIL_CI_REQUIRE names {what} but {why}; {test} cannot run");
    }
    eprintln!("SKIPPED {test}: {why} (set VEIL_CI_REQUIRE={what} to make this a failure instead)");
    false
}

/// Why FUSE mounts cannot work here (`None`: they can): `/dev/fuse` must open read-write and
/// `fusermount3` (Debian's `fuse3`) must run.
pub fn fuse_unusable() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Some(format!("/dev/fuse cannot be opened read-write ({e})"));
    }
    let runs = Command::new("fusermount3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runs {
        return Some("fusermount3 does not run (apt-get install fuse3)".into());
    }
    None
}

/// A certificate + key made by openssl (not by veil); `combined` (key then certificate) is a
/// veil identity file.
pub struct OpensslId {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub combined: PathBuf,
}

impl OpensslId {
    /// A self-signed P-256 certificate `CN=name` and its key, under `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let cert = dir.join(format!("{name}-cert.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        let o = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-days", "2", "-subj", &format!("/CN={name}")])
            .output()
            .expect("openssl must be installed");
        assert_success(&o);
        let combined = dir.join(format!("{name}-identity.pem"));
        let text =
            std::fs::read_to_string(&key).unwrap() + &std::fs::read_to_string(&cert).unwrap();
        std::fs::write(&combined, text).unwrap();
        Self {
            cert,
            key,
            combined,
        }
    }

    /// veil's key hash of this certificate.
    pub fn key_hash(&self) -> String {
        let pem = std::fs::read_to_string(&self.cert).unwrap();
        veil_identity::key_hash(&veil_identity::spki_from_cert_pem(&pem).unwrap())
    }
}

/// Standard base64 (for curl's `--pinnedpubkey sha256//…`).
fn b64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// curl against the CAS, pinned to its key with `--pinnedpubkey`, as `id` (if any), with the
/// extra curl `args` (options and URL); returns (status, body).
pub fn curl(cas: &CasProcess, id: Option<&OpensslId>, args: &[&str]) -> (u16, String) {
    let key: Vec<u8> = (0..cas.key_hash.len() / 2)
        .map(|i| u8::from_str_radix(&cas.key_hash[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut c = Command::new("curl");
    c.args(["-sS", "-k", "--pinnedpubkey"])
        .arg(format!("sha256//{}", b64(&key)))
        .args(["-w", "\n%{http_code}"]);
    if let Some(id) = id {
        c.arg("--cert").arg(&id.cert).arg("--key").arg(&id.key);
    }
    let o = c.args(args).output().expect("curl must be installed");
    assert!(
        o.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// A JSON body (panics with the body if it is not JSON).
pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The `msg` lines of an error body (which must have a `code`), joined with ` | `.
pub fn msgs(body: &str) -> String {
    let v = json(body);
    assert!(v["code"].is_string(), "no code: {body}");
    v["msg"]
        .as_array()
        .unwrap_or_else(|| panic!("no msg: {body}"))
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}
