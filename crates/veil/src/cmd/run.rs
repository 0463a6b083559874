//! PLACEHOLDER until its owner fills it in; must not land as is.
use std::process::ExitCode;
#[derive(clap::Args)]
pub struct RunArgs {}
#[derive(clap::Args)]
pub struct EnvcasArgs {}
#[derive(clap::Args)]
pub struct MeasureArgs {}
pub fn run(_a: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub fn envcas(_a: EnvcasArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
pub fn measure(_a: MeasureArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
