//! `veil otp SECRET`: print the current one-time password (RFC 6238: SHA-1, 6 digits, 30 s)
//! for a base32 shared secret, as an authenticator app would show it.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

/// Arguments of `veil otp`.
#[derive(clap::Args)]
pub struct OtpArgs {
    /// The shared secret, base32 (RFC 4648; case, spaces and padding do not matter).
    pub secret: String,
    /// Compute the code for this time (unix seconds) instead of now.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub at: Option<u64>,
}

/// Print the code for the secret.
pub fn run(a: OtpArgs) -> anyhow::Result<ExitCode> {
    let now = match a.at {
        Some(t) => t,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_secs(),
    };
    let code = veil_secrets::current_otp(&a.secret, now)?;
    println!("{code}");
    Ok(ExitCode::SUCCESS)
}
