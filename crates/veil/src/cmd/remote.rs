//! Options every command that talks to a pinned CAS takes (SCONE's network flags, reference
//! §2.5): `-c/--cas`, `--identity`, `--retries` (`SCONE_CLI_RETRIES`, default 3) and
//! `--only_for_testing-disable-attestation-verification`; and [`connect`], the one way the CLI
//! opens a connection to a CAS.

use std::path::PathBuf;
use std::time::Duration;

use veil_client::{CliConfig, ClientError, Connection, config_path, with_default_port};

/// Which CAS and identity to use, and how hard to try.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// The pinned CAS (name or address; default: the default CAS).
    #[arg(short = 'c', long, value_name = "CAS")]
    pub cas: Option<String>,
    /// Identity file (default `$VEIL_IDENTITY` or `~/.veil/identity.pem`, created on first use).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Connection attempts after the first one fails (network errors only; an answer of the
    /// CAS is never retried).
    #[arg(long, env = "SCONE_CLI_RETRIES", default_value_t = 3, value_name = "N")]
    pub retries: u32,
    /// Connect to `--cas ADDR` without checking its key against a pin (tests only: anyone on
    /// the network path can impersonate the CAS).
    #[arg(
        long = "only-for-testing-disable-attestation-verification",
        alias = "only_for_testing-disable-attestation-verification"
    )]
    pub only_for_testing_disable_attestation_verification: bool,
}

/// Open a connection to the CAS `r` names, with the identity `r` names, retrying network
/// failures `r.retries` times (backing off from 250 ms to 2 s).
pub async fn connect(r: &RemoteArgs) -> anyhow::Result<Connection> {
    let id = veil_client::load_identity(r.identity.as_deref())?;
    let (name, address, pin) = if r.only_for_testing_disable_attestation_verification {
        let Some(addr) = &r.cas else {
            anyhow::bail!(
                "--only_for_testing-disable-attestation-verification needs --cas ADDR (the CAS to trust without a pin)"
            );
        };
        eprintln!(
            "warning: not verifying the key of the CAS at {addr} (--only_for_testing-disable-attestation-verification)"
        );
        (addr.clone(), with_default_port(addr), None)
    } else {
        let cfg = CliConfig::load(&config_path()?)?;
        let (name, pinned) = cfg.get(r.cas.as_deref())?;
        (name, pinned.address, Some(pinned.key_hash))
    };
    let mut delay = Duration::from_millis(250);
    let mut attempt = 0;
    loop {
        match Connection::connect(&name, &address, pin.as_deref(), Some(&id)).await {
            Err(ClientError::Connect { .. }) if attempt < r.retries => {
                attempt += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return Ok(other?),
        }
    }
}
