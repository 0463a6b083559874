//! PLACEHOLDER until its owner fills it in; must not land as is.
use std::process::ExitCode;
#[derive(clap::Subcommand)]
pub enum SessionCmd {
    /// not built yet
    Placeholder,
}
pub fn run(_c: SessionCmd) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
