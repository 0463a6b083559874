//! `veil cas …`: run a CAS (`serve`, `show-identification --data-dir`) and pin CAS keys on the
//! client side (`attest`, `list`, `set-default`, `show-identification --cas`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use veil_client::{CliConfig, Connection, config_path, with_default_port};

/// Subcommands of `veil cas`.
#[derive(clap::Subcommand)]
pub enum CasCmd {
    /// Run a CAS: client API (mutual TLS) and enclave API.
    Serve(ServeArgs),
    /// Print the CAS key hash (of a local data dir, or of a pinned CAS).
    ShowIdentification(ShowIdArgs),
    /// Pin the key of the CAS at ADDR in the client config (the first pinned CAS is the default).
    Attest(AttestArgs),
    /// List the pinned CASes (`*` marks the default).
    List,
    /// Make a pinned CAS the default.
    SetDefault {
        /// Name (as given to `veil cas attest`).
        name: String,
    },
    /// Print the certificate (PEM) a pinned CAS presents, after checking it against the pin.
    ShowCertificate {
        /// The pinned CAS (name or address; default: the default CAS).
        cas: Option<String>,
    },
    /// Register a LAS node key for the `node` tier (CAS owner only).
    RegisterNode(super::cas_node::RegisterNodeArgs),
    /// Revoke a registered LAS node key (CAS owner only).
    RevokeNode(super::cas_node::RevokeNodeArgs),
    /// Force-release the lease of a volume whose holder is gone (CAS owner only).
    ReleaseLease(super::cas_node::ReleaseLeaseArgs),
}

/// Arguments of `veil cas serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (TOML; flags override it).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory: database, DB key (when generated), CAS identity, ports.json.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Client API address (port 0 = any free port).
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
    /// Enclave (workload) API address.
    #[arg(long, value_name = "ADDR")]
    pub enclave_listen: Option<SocketAddr>,
    /// File with the DB key (64 hex). Without it a key is generated next to the DB (not for production).
    #[arg(long, value_name = "FILE")]
    pub db_key_file: Option<PathBuf>,
    /// Key hash of a CAS owner (repeatable).
    #[arg(long = "owner", value_name = "KEYHASH")]
    pub owners: Vec<String>,
    /// Accept `sim` evidence (self-reported; only for policies tolerating `debug-mode`).
    #[arg(long)]
    pub allow_sim_tier: bool,
}

/// Arguments of `veil cas show-identification`.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ShowIdArgs {
    /// A local CAS data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A pinned CAS (name or address); its current key is fetched and checked against the pin.
    #[arg(long, value_name = "NAME")]
    pub cas: Option<String>,
}

/// Arguments of `veil cas attest`.
#[derive(clap::Args, Debug)]
pub struct AttestArgs {
    /// CAS address: host or host:port (default port 8081).
    pub addr: String,
    /// The CAS key hash (printed by the CAS at start and by `veil cas show-identification`).
    #[arg(
        short = 'c',
        long,
        value_name = "HASH",
        conflicts_with = "only_for_testing_trust_any"
    )]
    pub key_hash: Option<String>,
    /// Pin whatever key the server presents (tests only: trust on first use).
    #[arg(
        long = "only-for-testing-trust-any",
        alias = "only_for_testing-trust-any"
    )]
    pub only_for_testing_trust_any: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Run a `veil cas` subcommand.
pub fn run(c: CasCmd) -> anyhow::Result<ExitCode> {
    match c {
        CasCmd::Serve(a) => serve(a),
        CasCmd::ShowIdentification(a) => show_identification(a),
        CasCmd::Attest(a) => attest(a),
        CasCmd::List => list(),
        CasCmd::SetDefault { name } => set_default(&name),
        CasCmd::ShowCertificate { cas } => show_certificate(cas),
        CasCmd::RegisterNode(a) => super::cas_node::register(a),
        CasCmd::RevokeNode(a) => super::cas_node::revoke(a),
        CasCmd::ReleaseLease(a) => super::cas_node::release_lease(a),
    }
}

/// Build the serve options from the config file and flags (flags win).
pub fn serve_options(a: &ServeArgs) -> anyhow::Result<veil_cas::ServeOptions> {
    let cfg = match &a.config {
        Some(p) => veil_cas::config::CasConfig::load(p)?,
        None => veil_cas::config::CasConfig::default(),
    };
    let mut owners = cfg.owner.key_hashes.clone();
    for o in &a.owners {
        if !veil_identity::is_key_hash(o) {
            bail!("--owner {o}: not a key hash (64 lowercase hex, from `veil self show-key-hash`)");
        }
        owners.push(o.clone());
    }
    let default_api: SocketAddr = ([0, 0, 0, 0], 8081).into();
    let default_enclave: SocketAddr = ([0, 0, 0, 0], 18765).into();
    Ok(veil_cas::ServeOptions {
        data_dir: a
            .data_dir
            .clone()
            .or(cfg.data_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/veil/cas")),
        api_listen: a.api_listen.or(cfg.api.api_listen).unwrap_or(default_api),
        enclave_listen: a
            .enclave_listen
            .or(cfg.api.enclave_listen)
            .unwrap_or(default_enclave),
        db_key_file: a.db_key_file.clone().or(cfg.database.key_file),
        owners,
        alt_names: cfg
            .identity
            .alt_names
            .unwrap_or_else(|| vec!["cas".into(), "localhost".into(), "127.0.0.1".into()]),
        allow_sim: a.allow_sim_tier || cfg.attestation.allow_sim,
    })
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let opts = serve_options(&a)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let running = veil_cas::start(opts).await?;
        println!("CAS key hash: {}", running.key_hash);
        let _ = std::io::stdout().flush();
        tracing::info!(key_hash = %running.key_hash, api = %running.api_addr, enclave = %running.enclave_addr, "CAS started");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install a SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("CAS stopping");
        running.stop().await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn show_identification(a: ShowIdArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = a.data_dir {
        let h = veil_cas::show_identification(&dir).with_context(|| {
            format!(
                "no CAS identity in {} (has the CAS been started there?)",
                dir.display()
            )
        })?;
        println!("{h}");
        return Ok(ExitCode::SUCCESS);
    }
    let conn = connect_pinned(a.cas.as_deref())?;
    println!("{}", conn.server_key_hash);
    Ok(ExitCode::SUCCESS)
}

/// A connection (without client identity) to a pinned CAS, its key checked against the pin.
fn connect_pinned(cas: Option<&str>) -> anyhow::Result<Connection> {
    let cfg = CliConfig::load(&config_path()?)?;
    let (name, pinned) = cfg.get(cas)?;
    let rt = runtime()?;
    Ok(rt.block_on(Connection::connect(
        &name,
        &pinned.address,
        Some(&pinned.key_hash),
        None,
    ))?)
}

fn show_certificate(cas: Option<String>) -> anyhow::Result<ExitCode> {
    let conn = connect_pinned(cas.as_deref())?;
    print!(
        "{}",
        pem::encode(&pem::Pem::new("CERTIFICATE", conn.server_cert_der))
    );
    Ok(ExitCode::SUCCESS)
}

fn attest(a: AttestArgs) -> anyhow::Result<ExitCode> {
    let key_hash = match (&a.key_hash, a.only_for_testing_trust_any) {
        (Some(h), _) => {
            if !veil_identity::is_key_hash(h) {
                bail!("--key-hash {h}: not a key hash (64 lowercase hex)");
            }
            Some(h.clone())
        }
        (None, true) => None,
        (None, false) => bail!(
            "give the CAS key hash with --key-hash HASH (the CAS prints `CAS key hash: …` at start; `veil cas show-identification --data-dir DIR` prints it too), or --only-for-testing-trust-any"
        ),
    };
    let address = with_default_port(&a.addr);
    let rt = runtime()?;
    let seen = rt.block_on(async {
        let mut conn = Connection::connect(&a.addr, &address, key_hash.as_deref(), None).await?;
        let ans = conn
            .request(veil_client::Method::GET, "/healthz", None)
            .await?;
        if !ans.status.is_success() {
            bail!(
                "{address} answered HTTP {} to /healthz: not a veil CAS?",
                ans.status
            );
        }
        Ok::<_, anyhow::Error>(conn.server_key_hash)
    })?;
    let path = config_path()?;
    let mut cfg = CliConfig::load(&path)?;
    cfg.pin(&a.addr, &address, &seen);
    cfg.save(&path)?;
    if key_hash.is_none() {
        eprintln!(
            "warning: pinned the key {seen} without verification (--only-for-testing-trust-any)"
        );
    }
    println!("CAS {} at https://{address}/ is trustworthy", a.addr);
    Ok(ExitCode::SUCCESS)
}

fn list() -> anyhow::Result<ExitCode> {
    let cfg = CliConfig::load(&config_path()?)?;
    for (name, p) in &cfg.cas {
        let mark = if cfg.default.as_deref() == Some(name) {
            "*"
        } else {
            " "
        };
        println!("{mark} {name}: https://{}/", p.address);
    }
    Ok(ExitCode::SUCCESS)
}

fn set_default(name: &str) -> anyhow::Result<ExitCode> {
    let path = config_path()?;
    let mut cfg = CliConfig::load(&path)?;
    let (name, _) = cfg.get(Some(name))?;
    cfg.default = Some(name.clone());
    cfg.save(&path)?;
    println!("default CAS: {name}");
    Ok(ExitCode::SUCCESS)
}
