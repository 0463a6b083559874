//! `veil cert show-key-hash FILE`: the key hash (decision 7) of a PEM file, as access policies
//! and `--key-hash` flags name keys (SCONE's `scone cert show-key-hash`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

/// Subcommands of `veil cert`.
#[derive(clap::Subcommand)]
pub enum CertCmd {
    /// Print the key hash of a PEM certificate, public key, or identity file (key + certificate).
    ShowKeyHash {
        /// The PEM file (`-` for standard input).
        #[arg(value_name = "PEM")]
        file: PathBuf,
    },
}

/// Run a `veil cert` subcommand.
pub fn run(c: CertCmd) -> anyhow::Result<ExitCode> {
    match c {
        CertCmd::ShowKeyHash { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            println!(
                "{}",
                key_hash_of_pem(&text).with_context(|| file.display().to_string())?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The key hash of the first certificate or public key in `text`.
pub fn key_hash_of_pem(text: &str) -> anyhow::Result<String> {
    let blocks = pem::parse_many(text).context("not PEM")?;
    for b in &blocks {
        match b.tag() {
            "CERTIFICATE" => {
                let spki = veil_types::spki_from_cert_der(b.contents())
                    .context("the certificate does not parse")?;
                return Ok(veil_types::key_hash(&spki));
            }
            "PUBLIC KEY" => return Ok(veil_types::key_hash(b.contents())),
            _ => {}
        }
    }
    if blocks.is_empty() {
        bail!("no PEM block found");
    }
    bail!(
        "no CERTIFICATE or PUBLIC KEY block (found {})",
        blocks
            .iter()
            .map(|b| b.tag().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
