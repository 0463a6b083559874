//! `veil bench attest`: full attestation flows per second, and the launcher's added start time.
//!
//! Starts a CAS in this process on 127.0.0.1 (temporary data dir, `sim` tier allowed) with a
//! session of two services, then:
//! 1. **flows**: `--clients` threads each run complete attestation flows for `--seconds`, every
//!    flow on a new TLS 1.3 connection with a new ephemeral client key, exactly as the launcher
//!    does (`veil_launcher::cas::attest`: nonce → evidence bound to the nonce and the connection's
//!    key → appraisal → configuration with expanded arguments/environment). The evidence is
//!    `sim` evidence for a fixed measurement, so the figure is the CAS's and the protocol's cost,
//!    not the cost of hashing an executable.
//! 2. **starts**: `--starts` times `/bin/true` directly, then as the static launcher runs it in a
//!    converted image (`veil-launcher --program /bin/true` with a config id: it hashes itself and
//!    the program, attests in the `sim` tier, sets up its mount namespace and runs the program),
//!    then through `veil run -- /bin/true` (which execs that launcher); the difference of the
//!    medians over a direct exec is the added start time.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use veil_attest::{Digest32, Evidence, SimEvidence, Target, Tier, measurement};
use veil_client::Connection;
use veil_launcher::cas::{CasTarget, attest};

use super::{Phase, TempDir};

/// Arguments of `veil bench attest`.
#[derive(clap::Args, Debug)]
pub struct AttestBenchArgs {
    /// Seconds of attestation flows.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent clients (threads) doing attestation flows.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Program starts measured for each of direct exec and `veil run`.
    #[arg(long, default_value_t = 30)]
    pub starts: usize,
}

const SESSION: &str = "bench-attest";

pub fn bench_attest(a: AttestBenchArgs) -> anyhow::Result<ExitCode> {
    if a.clients == 0 || a.seconds == 0 || a.starts == 0 {
        bail!("--clients, --seconds and --starts must be at least 1");
    }
    let exe = std::env::current_exe().context("cannot find the veil executable")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let dir = TempDir::new("attest")?;
    let running = rt.block_on(veil_cas::start(veil_cas::ServeOptions {
        data_dir: dir.0.clone(),
        api_listen: ([127, 0, 0, 1], 0).into(),
        enclave_listen: ([127, 0, 0, 1], 0).into(),
        db_key_file: None,
        owners: Vec::new(),
        alt_names: vec!["localhost".into(), "127.0.0.1".into()],
        allow_sim: true,
    }))?;

    // The measurement of `veil run -- /bin/true`, as the launcher computes it.
    let out = Command::new(&exe)
        .args(["run", "--", "/bin/true"])
        .env("VEIL_HASH", "1")
        .env_remove("VEIL_CONFIG_ID")
        .env_remove("SCONE_CONFIG_ID")
        .output()
        .context("cannot run `veil run` to measure it")?;
    let start_measurement = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || start_measurement.len() != 64 {
        bail!(
            "VEIL_HASH=1 veil run -- /bin/true did not print a measurement: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let flow_launcher = Digest32::of(b"veil bench attest: launcher");
    let flow_target = Target::Program {
        hash: Digest32::of(b"veil bench attest: program"),
    };
    let flow_measurement = measurement(&flow_launcher, &flow_target).to_hex();
    let doc = format!(
        "name: {SESSION}\nversion: \"0.3.10\"\nservices:\n  - name: flow\n    command: [\"true\", \"$$SCONE::token$$\"]\n    environment: {{TOKEN: \"$$SCONE::token$$\"}}\n    attestation: {{mrenclave: [\"{flow_measurement}\"]}}\n  - name: start\n    command: [\"/bin/true\"]\n    attestation: {{mrenclave: [\"{start_measurement}\"]}}\nsecrets:\n  - name: token\n    kind: ascii\n    size: 32\nsecurity:\n  attestation:\n    tolerate: [debug-mode]\n    ignore_advisories: \"*\"\n"
    );
    let id = veil_identity::Identity::generate("veil bench", &["veil bench".into()])?;
    rt.block_on(async {
        let addr = running.api_addr.to_string();
        let mut c = Connection::connect("bench", &addr, Some(&running.key_hash), Some(&id)).await?;
        c.upload_session(&doc).await?;
        anyhow::Ok(())
    })?;
    let target = CasTarget {
        addr: running.enclave_addr.to_string(),
        key_hash: running.key_hash.clone(),
    };

    // 1. Full attestation flows, a new connection and client key each.
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..a.clients)
        .map(|_| {
            let target = target.clone();
            let flow_target = flow_target.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let config =
                        attest(&target, &format!("{SESSION}/flow"), Tier::Sim, None, |rd| {
                            Ok(Evidence::Sim(SimEvidence::new(
                                flow_launcher,
                                flow_target.clone(),
                                rd,
                            )))
                        })
                        .map_err(|e| anyhow::anyhow!("attestation flow failed: {e}"))?;
                    if config.argv.len() != 2 {
                        bail!("unexpected configuration from the CAS");
                    }
                    lat.push(t.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for w in workers {
        let part = w
            .join()
            .map_err(|_| anyhow::anyhow!("a benchmark thread panicked"))??;
        lat.extend(part);
    }
    let flows = Phase::from(
        "attestation flows (new TLS connection + client key each, sim evidence)",
        lat,
        started.elapsed().as_secs_f64(),
    );

    // 2. Start time: direct exec versus `veil run` with attestation.
    let time_runs = |cmd: &mut dyn FnMut() -> Command| -> anyhow::Result<Vec<Duration>> {
        let mut v = Vec::new();
        for _ in 0..a.starts {
            let mut c = cmd();
            let t = Instant::now();
            let out = c
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .context("cannot start the program")?;
            v.push(t.elapsed());
            if !out.status.success() {
                bail!(
                    "the program failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        v.sort();
        Ok(v)
    };
    let direct = time_runs(&mut || Command::new("/bin/true"))?;
    let with_config = |c: &mut Command| {
        c.env("VEIL_CONFIG_ID", format!("{SESSION}/start"))
            .env("VEIL_CAS_ADDR", &target.addr)
            .env("VEIL_CAS_KEY_HASH", &target.key_hash)
            .env("VEIL_MODE", "sim")
            .env("VEIL_VOLUME_MODE", "staged")
            .env("VEIL_LOG", "error")
            .env_remove("SCONE_CONFIG_ID");
    };
    let launcher = crate::cmd::run::LauncherArg::default().path()?;
    let by_launcher = time_runs(&mut || {
        let mut c = Command::new(&launcher);
        c.args(["--program", "/bin/true"]);
        with_config(&mut c);
        c
    })?;
    let launched = time_runs(&mut || {
        let mut c = Command::new(&exe);
        c.args(["run", "--", "/bin/true"]);
        with_config(&mut c);
        c
    })?;
    for t in running.tasks {
        t.abort();
    }

    let median = |v: &[Duration]| v[v.len() / 2].as_secs_f64() * 1000.0;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "veil bench attest: {} s of flows with {} clients, {} starts each, 127.0.0.1, {cores} cores",
        a.seconds, a.clients, a.starts
    );
    println!();
    println!("| workload | ops | ops/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {:.0} | {:.2} | {:.2} |",
        flows.name,
        flows.ops,
        flows.rate(),
        flows.p50_ms,
        flows.p99_ms
    );
    println!();
    println!("| start of /bin/true | median ms | min ms | max ms |");
    println!("|---|---:|---:|---:|");
    for (name, v) in [
        ("direct exec", &direct),
        ("veil-launcher (sim attestation)", &by_launcher),
        ("veil run, which execs it", &launched),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            median(v),
            v[0].as_secs_f64() * 1000.0,
            v[v.len() - 1].as_secs_f64() * 1000.0
        );
    }
    println!();
    println!(
        "added start time of the launcher (median): {:.2} ms ({:.2} ms through veil run)",
        median(&by_launcher) - median(&direct),
        median(&launched) - median(&direct)
    );
    Ok(ExitCode::SUCCESS)
}
