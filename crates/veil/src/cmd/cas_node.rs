//! The CAS owner's actions on the workload side: `veil cas register-node` and `revoke-node`
//! register (or revoke) the node key of a LAS, the `node` tier's trust anchor (decision 12);
//! `veil cas release-lease` force-releases a volume lease whose holder is gone (decision 9).
//! Owner-only on the CAS (403 for anyone else); the client identity and the pinned CAS are the
//! usual ones.

use std::path::PathBuf;
use std::process::ExitCode;
use veil_api::nodes::{NODES_PATH, RegisterNode, Registered, Revoked};

use anyhow::{Context, bail};
use veil_client::{Method, encode_path};

use super::remote::{RemoteArgs, connect};

/// Arguments of `veil cas register-node`.
#[derive(clap::Args, Debug)]
pub struct RegisterNodeArgs {
    /// Expected key hash of the node key (checked against the key; the LAS prints it as
    /// `LAS node key hash: …`).
    #[arg(value_name = "KEYHASH")]
    pub key_hash: Option<String>,
    /// The node id the LAS signs its evidence with.
    #[arg(long, value_name = "NAME")]
    pub node_id: String,
    /// The node's public key: PEM `PUBLIC KEY`, a PEM certificate, or hex of the DER SPKI.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "spki_hex",
        required_unless_present = "spki_hex"
    )]
    pub node_key_file: Option<PathBuf>,
    /// The node's public key as hex of its DER SubjectPublicKeyInfo.
    #[arg(long, value_name = "HEX")]
    pub spki_hex: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Arguments of `veil cas revoke-node`.
#[derive(clap::Args, Debug)]
pub struct RevokeNodeArgs {
    /// Key hash (or node id) of the registered node key.
    #[arg(value_name = "KEYHASH|NODE_ID")]
    pub node: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Arguments of `veil cas release-lease`.
#[derive(clap::Args, Debug)]
pub struct ReleaseLeaseArgs {
    /// The session whose service holds the volume.
    #[arg(value_name = "SESSION")]
    pub session: String,
    /// The volume's name in the session.
    #[arg(value_name = "VOLUME")]
    pub volume: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `veil cas register-node`.
pub fn register(a: RegisterNodeArgs) -> anyhow::Result<ExitCode> {
    let spki = match (&a.node_key_file, &a.spki_hex) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the node key file {}", f.display()))?;
            veil_cas::workload::nodes::parse_node_key(&text)
                .with_context(|| format!("{}", f.display()))?
        }
        (None, Some(h)) => veil_cas::workload::nodes::parse_node_key(h).context("--spki-hex")?,
        (None, None) => bail!("give the node key with --node-key-file FILE or --spki-hex HEX"),
    };
    let body = RegisterNode {
        node_id: a.node_id,
        spki_hex: hex_of(&spki),
        key_hash: a.key_hash,
    };
    let rt = runtime()?;
    let v = rt.block_on(async {
        let mut c = connect(&a.remote).await?;
        let ans = c
            .request(Method::POST, NODES_PATH, Some(serde_json::to_vec(&body)?))
            .await?;
        Ok::<_, anyhow::Error>(serde_json::from_value::<Registered>(ans.json()?)?)
    })?;
    println!("registered node {} with key hash {}", v.node_id, v.key_hash);
    Ok(ExitCode::SUCCESS)
}

/// `veil cas revoke-node`.
pub fn revoke(a: RevokeNodeArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let v = rt.block_on(async {
        let mut c = connect(&a.remote).await?;
        let path = format!("{}/{}", NODES_PATH, encode_path(&a.node));
        let ans = c.request(Method::DELETE, &path, None).await?;
        Ok::<_, anyhow::Error>(serde_json::from_value::<Revoked>(ans.json()?)?)
    })?;
    println!("revoked node {}", v.node_id);
    Ok(ExitCode::SUCCESS)
}

/// `veil cas release-lease SESSION VOLUME`: for a holder that died while it could not tell the
/// CAS (leases are persisted, so a CAS restart does not free them before their TTL). The
/// holder, if it still runs, loses the lease: its heartbeat and its next tag update are refused.
pub fn release_lease(a: ReleaseLeaseArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let v = rt.block_on(async {
        let mut c = connect(&a.remote).await?;
        let path = format!(
            "/v1/leases/{}/{}",
            encode_path(&a.session),
            encode_path(&a.volume)
        );
        let ans = c.request(Method::DELETE, &path, None).await?;
        Ok::<_, anyhow::Error>(ans.json()?)
    })?;
    let what = format!("volume {} of session {}", a.volume, a.session);
    match (v["released"].as_bool(), v["holder"].as_str()) {
        (Some(true), Some(holder)) => println!("released the lease of {what} (holder {holder})"),
        (Some(true), None) => println!("released the lease of {what}"),
        (Some(false), _) => println!("no lease of {what} was held"),
        _ => bail!("unexpected answer from the CAS"),
    }
    Ok(ExitCode::SUCCESS)
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
