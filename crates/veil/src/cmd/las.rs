//! `veil las …`: the local attestation service of the `node` tier.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use veil_las::server::{Las, LasConfig};

/// LAS subcommands.
#[derive(clap::Subcommand)]
pub enum LasCmd {
    /// Run the LAS: evidence over the unix socket, health and node key over TCP.
    Serve(ServeArgs),
}

/// Arguments of `veil las serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// TCP address for `/healthz` and `/v1/node-key` (never evidence).
    #[arg(long, default_value = veil_las::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// Unix socket for evidence requests.
    #[arg(long, env = "VEIL_LAS_SOCKET", default_value = veil_las::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Directory holding the node key (created on first start).
    #[arg(long, default_value = "/var/lib/veil/las")]
    data_dir: PathBuf,
    /// Node id put into evidence; must match `veil cas register-node --node-id`. Default: the
    /// host name.
    #[arg(long)]
    node_id: Option<String>,
    /// Let this numeric group use the evidence socket (`root:GID`, mode 0660). Default: the
    /// socket is root's only (`root:root`, mode 0600).
    #[arg(long, value_name = "GID")]
    socket_gid: Option<u32>,
    /// SHA-256 (64 hex) of an accepted launcher executable; repeat for several veil releases
    /// on one node. Default: the hash of the launcher this `veil` finds (`--launcher`,
    /// `VEIL_LAUNCHER`, `veil-launcher` beside `veil`, or the one built with it).
    #[arg(long = "launcher-hash", value_name = "SHA256")]
    launcher_hashes: Vec<String>,
    #[command(flatten)]
    launcher: crate::cmd::run::LauncherArg,
}

/// Run a LAS subcommand.
pub fn run(c: LasCmd) -> anyhow::Result<ExitCode> {
    match c {
        LasCmd::Serve(a) => serve(a),
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let node_id = match a.node_id {
        Some(id) => id,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name (give --node-id)")?
            .trim()
            .to_string(),
    };
    anyhow::ensure!(!node_id.is_empty(), "the node id is empty (give --node-id)");
    let launcher_hashes = if a.launcher_hashes.is_empty() {
        let path = a.launcher.path()?;
        vec![
            veil_attest::measure::hash_file(&path)
                .with_context(|| format!("hashing the launcher {}", path.display()))?,
        ]
    } else {
        a.launcher_hashes
            .iter()
            .map(|h| {
                h.parse::<veil_attest::Digest32>()
                    .map_err(|e| anyhow::anyhow!("--launcher-hash {h}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let las = Las::bind(&LasConfig {
        listen: a.listen,
        socket: a.socket.clone(),
        data_dir: a.data_dir,
        node_id: node_id.clone(),
        socket_gid: a.socket_gid,
        launcher_hashes: launcher_hashes.clone(),
    })
    .context("Could not start the LAS")?;
    let addr = las.tcp_addr()?;
    println!("LAS node key hash: {}", las.node_key_hash());
    println!("LAS node id: {node_id}");
    println!("LAS evidence socket: {}", a.socket.display());
    for h in &launcher_hashes {
        println!("LAS accepts launcher: {h}");
    }
    println!("LAS is listening on {addr}");
    use std::io::Write as _;
    std::io::stdout().flush().ok();
    las.run().context("LAS failed")?;
    Ok(ExitCode::SUCCESS)
}
