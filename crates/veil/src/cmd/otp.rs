//! PLACEHOLDER until its owner fills it in; must not land as is.
use std::process::ExitCode;
#[derive(clap::Args)]
pub struct OtpArgs {}
pub fn run(_c: OtpArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
