//! `veil self …`: this client's identity (P-256 key + self-signed certificate in
//! `~/.veil/identity.pem`, or `--identity FILE` / `VEIL_IDENTITY`), created on first use.

use std::path::PathBuf;
use std::process::ExitCode;

/// Subcommands of `veil self`.
#[derive(clap::Subcommand)]
pub enum SelfCmd {
    /// Print the key hash of this client's identity (what access policies name).
    ShowKeyHash(IdArgs),
    /// Print the identity file, key hash and certificate.
    Show(IdArgs),
    /// Print this client's certificate (PEM), usable in access policies.
    ShowCertificate(IdArgs),
}

/// Which identity.
#[derive(clap::Args, Debug)]
pub struct IdArgs {
    /// Identity file (PKCS#8 key PEM followed by the certificate PEM); default
    /// `$VEIL_IDENTITY` or `~/.veil/identity.pem`.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

/// Run a `veil self` subcommand.
pub fn run(c: SelfCmd) -> anyhow::Result<ExitCode> {
    match c {
        SelfCmd::ShowKeyHash(a) => {
            let id = veil_client::load_identity(a.identity.as_deref())?;
            println!("{}", id.key_hash());
        }
        SelfCmd::Show(a) => {
            let path = veil_client::identity_path(a.identity.as_deref());
            let id = veil_client::load_identity(a.identity.as_deref())?;
            println!("identity: {}", path.display());
            println!("key hash: {}", id.key_hash());
            print!("{}", id.cert_pem());
        }
        SelfCmd::ShowCertificate(a) => {
            let id = veil_client::load_identity(a.identity.as_deref())?;
            print!("{}", id.cert_pem());
        }
    }
    Ok(ExitCode::SUCCESS)
}
