//! `veil run`, `veil envcas` and `veil measure`: the launcher's command line.
//!
//! The launcher's settings come from the environment (`VEIL_*` / `SCONE_*`), like SCONE's
//! runtime; fatal errors print `[VEIL|FATAL] Could not initialize: …` and `  Caused by: …`.
//! Volumes: backing stores in `VEIL_VOLUMES_DIR` (default `/var/lib/veil/volumes`), exposed per
//! `VEIL_VOLUME_MODE` (`staged`, `fuse`, or `auto`: FUSE when usable, else staged).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use veil_launcher::{Invocation, Kind, LauncherError};

/// Arguments of `veil run`.
#[derive(clap::Args)]
pub struct RunArgs {
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
    /// Host arguments (only reachable through `@@N` in the service's command).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Arguments of `veil measure`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["program", "envcas"])))]
pub struct MeasureArgs {
    /// The launcher executable (the `veil` binary as it will be in the image).
    #[arg(long)]
    launcher: PathBuf,
    /// The program executable it will run.
    #[arg(long)]
    program: Option<PathBuf>,
    /// Measure the launcher as envcas (no program).
    #[arg(long)]
    envcas: bool,
}

fn host_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn finish(r: Result<i32, LauncherError>) -> anyhow::Result<ExitCode> {
    match r {
        Ok(code) => Ok(ExitCode::from(
            u8::try_from(code.clamp(0, 255)).unwrap_or(1),
        )),
        Err(e) => {
            eprint!("{}", e.fatal_text());
            Ok(ExitCode::from(1))
        }
    }
}

/// `veil run [-- PROG [ARGS]]`.
pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let mut it = a.command.into_iter();
    let program = it.next();
    let inv = Invocation {
        kind: Kind::Run { program },
        args: it.collect(),
        env: host_env(),
    };
    finish(veil_launcher::launch(inv, &mut std::io::stdout()))
}

/// `veil envcas [ARGS]` (or a binary named `envcas`).
pub fn envcas(a: EnvcasArgs) -> anyhow::Result<ExitCode> {
    let inv = Invocation {
        kind: Kind::Envcas,
        args: a.args,
        env: host_env(),
    };
    finish(veil_launcher::launch(inv, &mut std::io::stdout()))
}

/// `veil measure --launcher PATH (--program PATH | --envcas)`.
pub fn measure(a: MeasureArgs) -> anyhow::Result<ExitCode> {
    let program = if a.envcas { None } else { a.program.as_deref() };
    let m = veil_launcher::program::offline_measurement(&a.launcher, program)
        .map_err(|e| anyhow::anyhow!(e.chain.join(": ")))?;
    println!("{m}");
    Ok(ExitCode::SUCCESS)
}
