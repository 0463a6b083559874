//! `veil run`, `veil envcas` and `veil measure`: the launcher's command line.
//!
//! `veil run` and `veil envcas` exec the static `veil-launcher` (decision 24): `veil` itself is
//! dynamically linked and is never what the LAS measures. The launcher is, in this order,
//! `--launcher PATH`, `VEIL_LAUNCHER`, a `veil-launcher` beside the `veil` binary, or the one
//! built with this `veil` (`crates/veil/build.rs`). Its settings come from the environment
//! (`VEIL_*` / `SCONE_*`), like SCONE's runtime; fatal errors print
//! `[VEIL|FATAL] Could not initialize: …` and `  Caused by: …`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Where to find the launcher (shared by `run`, `envcas`, `measure` and `las serve`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LauncherArg {
    /// The static launcher to exec [default: `veil-launcher` beside `veil`, else the one built
    /// with it].
    #[arg(long, env = "VEIL_LAUNCHER", value_name = "PATH")]
    launcher: Option<PathBuf>,
}

/// The launcher built together with this `veil`.
const BUILT_LAUNCHER: &str = env!("VEIL_LAUNCHER_BUILT");

impl LauncherArg {
    /// The launcher's path (see the module documentation for the order).
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.launcher {
            anyhow::ensure!(p.is_file(), "the launcher {} is not a file", p.display());
            return Ok(p.clone());
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("veil-launcher")))
            .filter(|p| p.is_file());
        if let Some(p) = beside {
            return Ok(p);
        }
        let built = PathBuf::from(BUILT_LAUNCHER);
        anyhow::ensure!(
            built.is_file(),
            "no veil-launcher found: none beside veil and {} is gone (use --launcher or VEIL_LAUNCHER)",
            built.display()
        );
        Ok(built)
    }
}

/// Arguments of `veil run`.
#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    launcher: LauncherArg,
    /// The program and its host arguments (`veil run -- PROG [ARGS]`); the program's hash is
    /// part of the measurement. Without it, `/etc/veil/program` is used.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROG [ARGS]"
    )]
    command: Vec<String>,
}

/// Arguments of `veil envcas`.
#[derive(clap::Args)]
pub struct EnvcasArgs {
    #[command(flatten)]
    launcher: LauncherArg,
    /// Host arguments (only reachable through `@@N` in the service's command).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Arguments of `veil measure`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["program", "envcas"])))]
pub struct MeasureArgs {
    #[command(flatten)]
    launcher: LauncherArg,
    /// The program executable it will run.
    #[arg(long)]
    program: Option<PathBuf>,
    /// Measure the launcher as envcas (no program).
    #[arg(long)]
    envcas: bool,
}

/// Replace this process by the launcher with `args`; returns only on failure.
///
/// `LD_*` variables are not passed on: the launcher is static, so they do nothing in it, and
/// the LAS refuses a requester that has any (decision 20), so a `LD_LIBRARY_PATH` set for
/// `veil` by a shell or a build tool would otherwise fail the node tier.
fn exec_launcher(launcher: &LauncherArg, args: Vec<String>) -> anyhow::Result<ExitCode> {
    let path = launcher.path()?;
    let mut cmd = std::process::Command::new(&path);
    for (k, _) in std::env::vars_os() {
        if k.as_encoded_bytes().starts_with(b"LD_") {
            cmd.env_remove(&k);
        }
    }
    let e = cmd.args(args).exec();
    Err(e).with_context(|| format!("cannot execute the launcher {}", path.display()))
}

/// `veil run [-- PROG [ARGS]]`: `veil-launcher [--program PROG] -- ARGS`.
pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let mut it = a.command.into_iter();
    let mut args = Vec::new();
    if let Some(p) = it.next() {
        args.extend(["--program".to_string(), p]);
    }
    args.push("--".into());
    args.extend(it);
    exec_launcher(&a.launcher, args)
}

/// `veil envcas [ARGS]`: `veil-launcher --envcas -- ARGS`.
pub fn envcas(a: EnvcasArgs) -> anyhow::Result<ExitCode> {
    let args = ["--envcas".to_string(), "--".into()]
        .into_iter()
        .chain(a.args)
        .collect();
    exec_launcher(&a.launcher, args)
}

/// `veil measure [--launcher PATH] (--program PATH | --envcas)`.
pub fn measure(a: MeasureArgs) -> anyhow::Result<ExitCode> {
    let program = if a.envcas { None } else { a.program.as_deref() };
    let launcher = a.launcher.path()?;
    let m = veil_launcher::program::offline_measurement(&launcher, program)
        .map_err(|e| anyhow::anyhow!(e.chain.join(": ")))?;
    println!("{m}");
    Ok(ExitCode::SUCCESS)
}
