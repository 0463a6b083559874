//! `veil bench …`: benchmarks that compare veil with a baseline on this machine.
//!
//! `veil bench cas` starts a CAS in this process on 127.0.0.1 (temporary data dir, generated DB
//! key) and measures, over keep-alive TLS 1.3 connections with client certificates:
//! 1. session reads (`GET /v1/sessions/<name>`) by `--clients` concurrent connections;
//! 2. durable creates/updates (`POST /v1/sessions`; each client creates its own session, then
//!    updates it with `predecessor` in a loop) by `--clients` concurrent clients.
//!
//! The baseline for durable writes is etcd (Debian `etcd-server`), started on 127.0.0.1 with a
//! temporary data dir and driven with the same number of concurrent keep-alive connections
//! through its v3 JSON gateway (`POST /v3/kv/put`, 1 KiB values, about the size of a stored
//! session). Both fsync before answering.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use veil_client::{Connection, Method, PlainConnection};

mod attest;

/// Subcommands of `veil bench`.
#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// CAS session reads and durable creates/updates, side by side with etcd's durable puts.
    Cas(CasBenchArgs),
    /// Full attestation flows per second, and the launcher's added start time.
    Attest(attest::AttestBenchArgs),
}

/// Arguments of `veil bench cas`.
#[derive(clap::Args, Debug)]
pub struct CasBenchArgs {
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent clients (connections) per phase.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// The etcd binary for the baseline.
    #[arg(long, default_value = "etcd")]
    pub etcd: PathBuf,
    /// Skip the etcd baseline.
    #[arg(long)]
    pub no_etcd: bool,
}

/// Run a `veil bench` subcommand.
pub fn run(c: BenchCmd) -> anyhow::Result<ExitCode> {
    match c {
        BenchCmd::Cas(a) => bench_cas(a),
        BenchCmd::Attest(a) => attest::bench_attest(a),
    }
}

/// Removes a directory tree on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("veil-bench-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills a child process on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Result of one phase.
struct Phase {
    name: String,
    ops: usize,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Phase {
    fn from(name: &str, mut lat: Vec<Duration>, secs: f64) -> Self {
        lat.sort();
        let pct = |p: usize| {
            if lat.is_empty() {
                0.0
            } else {
                lat[(lat.len() * p / 100).min(lat.len() - 1)].as_secs_f64() * 1000.0
            }
        };
        Self {
            name: name.to_string(),
            ops: lat.len(),
            secs,
            p50_ms: pct(50),
            p99_ms: pct(99),
        }
    }

    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Run `clients` tasks for `secs`; each repeatedly calls `op` and records its latency.
async fn drive<S, F, Fut>(states: Vec<S>, secs: u64, op: F) -> anyhow::Result<(Vec<Duration>, f64)>
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<S>> + Send,
{
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for s in states {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut s = s;
            while Instant::now() < deadline {
                let t = Instant::now();
                s = op(s).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.context("benchmark task panicked")??);
    }
    Ok((all, start.elapsed().as_secs_f64()))
}

fn bench_cas(a: CasBenchArgs) -> anyhow::Result<ExitCode> {
    if a.clients == 0 || a.seconds == 0 {
        bail!("--clients and --seconds must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let dir = TempDir::new("cas")?;
    let mut phases = rt.block_on(cas_phases(&a, &dir.0))?;
    if !a.no_etcd {
        let etcd_dir = TempDir::new("etcd")?;
        phases.push(rt.block_on(etcd_phase(&a, &etcd_dir.0))?);
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "veil bench cas: {} s per phase, {} concurrent clients, 127.0.0.1, {cores} cores",
        a.seconds, a.clients
    );
    println!();
    println!("| workload | ops | ops/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    for p in &phases {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} |",
            p.name,
            p.ops,
            p.rate(),
            p.p50_ms,
            p.p99_ms
        );
    }
    if let (Some(w), Some(e)) = (phases.get(1), phases.get(2)) {
        println!();
        println!(
            "durable writes, CAS / etcd: {:.2}x ops/s",
            w.rate() / e.rate().max(f64::MIN_POSITIVE)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn cas_phases(a: &CasBenchArgs, dir: &Path) -> anyhow::Result<Vec<Phase>> {
    let running = veil_cas::start(veil_cas::ServeOptions {
        data_dir: dir.to_path_buf(),
        api_listen: ([127, 0, 0, 1], 0).into(),
        enclave_listen: ([127, 0, 0, 1], 0).into(),
        db_key_file: None,
        owners: Vec::new(),
        alt_names: vec!["localhost".into(), "127.0.0.1".into()],
        allow_sim: false,
    })
    .await?;
    let addr = running.api_addr.to_string();
    let key = running.key_hash.clone();
    let id = veil_identity::Identity::generate("veil bench", &["veil bench".into()])?;
    let connect = || Connection::connect("bench", &addr, Some(&key), Some(&id));
    let mut setup = connect().await?;
    setup
        .upload_session("name: bench-read\nversion: \"0.3.10\"\n")
        .await?;

    // 1. Reads over keep-alive connections.
    let mut conns = Vec::new();
    for _ in 0..a.clients {
        conns.push(connect().await?);
    }
    let (lat, secs) = drive(conns, a.seconds, |mut c: Connection| async move {
        c.read_session("bench-read", None).await?;
        Ok(c)
    })
    .await?;
    let reads = Phase::from(
        "CAS session reads (GET /v1/sessions/NAME, keep-alive)",
        lat,
        secs,
    );

    // 2. Durable creates, then updates with predecessor, one session per client.
    let mut states = Vec::new();
    for i in 0..a.clients {
        states.push((connect().await?, format!("bench-w{i}"), None::<String>));
    }
    let (lat, secs) = drive(
        states,
        a.seconds,
        |(mut c, name, pred): (Connection, String, Option<String>)| async move {
            let doc = match &pred {
                None => format!("name: {name}\nversion: \"0.3.10\"\n"),
                Some(h) => format!("name: {name}\nversion: \"0.3.10\"\npredecessor: {h}\n"),
            };
            let h = c.upload_session(&doc).await?;
            Ok((c, name, Some(h)))
        },
    )
    .await?;
    let writes = Phase::from("CAS durable creates/updates (POST /v1/sessions)", lat, secs);
    for t in running.tasks {
        t.abort();
    }
    Ok(vec![reads, writes])
}

async fn etcd_phase(a: &CasBenchArgs, dir: &Path) -> anyhow::Result<Phase> {
    let client_port = free_port()?;
    let peer_port = free_port()?;
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let child = Command::new(&a.etcd)
        .args(["--name", "bench", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("bench={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (install the Debian package etcd-server, or pass --no-etcd)",
                a.etcd.display()
            )
        })?;
    let _guard = Killed(child);
    let addr = format!("127.0.0.1:{client_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = PlainConnection::connect(&addr).await
            && let Ok(ans) = c.request(Method::GET, "/health", None).await
            && ans.status.is_success()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("etcd did not become healthy on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let value = b64.encode(vec![b'v'; 1024]);
    let mut states = Vec::new();
    for i in 0..a.clients {
        states.push((
            PlainConnection::connect(&addr).await?,
            i,
            0usize,
            value.clone(),
        ));
    }
    let (lat, secs) = drive(
        states,
        a.seconds,
        |(mut c, i, n, value): (PlainConnection, usize, usize, String)| async move {
            let key = base64::engine::general_purpose::STANDARD.encode(format!("bench/{i}/{n}"));
            let body = format!("{{\"key\":\"{key}\",\"value\":\"{value}\"}}");
            let ans = c
                .request(Method::POST, "/v3/kv/put", Some(body.into_bytes()))
                .await?;
            if !ans.status.is_success() {
                bail!("etcd put failed: HTTP {}", ans.status);
            }
            Ok((c, i, n + 1, value))
        },
    )
    .await?;
    Ok(Phase::from(
        "etcd 3.4 durable puts (POST /v3/kv/put, 1 KiB, keep-alive)",
        lat,
        secs,
    ))
}
