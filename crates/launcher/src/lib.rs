//! The launcher behind `veil run` and `envcas`: measure, attest to the CAS, receive the
//! service's configuration, and run the program with it — host arguments and environment are
//! dropped except the `@@N` / `\@\@NAME` forms.
//!
//! * [`cli`]: the command line of the static `veil-launcher` binary (`src/main.rs`).
//! * [`settings`]: `VEIL_*`/`SCONE_*` variables, the CAS key hash (decision 7, 18).
//! * [`program`]: the measured program (opened once, hashed and executed through one fd).
//! * [`subst`]: `@@N` and `\@\@NAME` substitution (pure).
//! * [`cas`]: the workload-API calls over `veil-client` (pinned CAS key, ephemeral client
//!   key), their errors as SCONE-style chains.
//! * [`exec`]: the plan, the private mount namespace with injection files (drop guards undo
//!   what was placed), the child process and signal forwarding.
//! * [`envcas`]: the envcas configuration and file copies.
//! * [`coderegion`]: the code region (`fspf_path`, a shield backing store directory): opened
//!   read-only at the CAS's `fspf_tag`, every chunk verified, and bind-mounted read-only at its
//!   directories before the program starts.
//! * [`volumes`]: volumes in staged mode (open at the CAS's tag, tmpfs at their path, commit
//!   and record the new tag in the CAS after the program exits).
//!
//! [`launch`] ties them together. Without a config id the program runs natively with the host's
//! arguments and environment, like SCONE. There is deliberately no way to hand the launcher a
//! configuration other than from an attested CAS.

#![deny(missing_docs)]

pub mod cas;
pub mod cli;
pub mod coderegion;
pub mod envcas;
pub mod error;
pub mod exec;
pub mod program;
pub mod settings;
pub mod subst;
pub mod volumes;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use veil_attest::{Evidence, SimEvidence, Target, Tier, measurement};

pub use error::LauncherError;
use error::err;
use settings::{Mode, Settings};

/// The warning printed on every start in the `sim` tier.
pub const SIM_WARNING: &str = "[VEIL|WARN] Application runs in simulation mode (sim tier): its memory and secrets are readable by the host!";

/// File naming the program in converted images (used when `veil run` gets no program).
pub const PROGRAM_FILE: &str = "/etc/veil/program";

/// What to launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `veil run -- PROG [ARGS]`: `program` is `PROG` (or `None` to read [`PROGRAM_FILE`]).
    Run {
        /// The program as given on the command line.
        program: Option<String>,
    },
    /// `envcas` / `veil envcas [ARGS]`.
    Envcas,
}

/// One launcher invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// What to launch.
    pub kind: Kind,
    /// Host arguments after the program (they become `@@1`, `@@2`, …).
    pub args: Vec<String>,
    /// The host environment.
    pub env: BTreeMap<String, String>,
}

/// The program to run and what it loads at start (decision 23: listed only in converted images).
fn program_name(kind: &Kind) -> Result<Option<program::ProgramFile>, LauncherError> {
    match kind {
        Kind::Envcas => Ok(None),
        Kind::Run { program: Some(p) } => Ok(Some(program::ProgramFile {
            program: p.clone(),
            loaded: Vec::new(),
        })),
        Kind::Run { program: None } => match std::fs::read_to_string(PROGRAM_FILE) {
            Ok(s) if !s.trim().is_empty() => {
                program::ProgramFile::parse(&s, PROGRAM_FILE).map(Some)
            }
            _ => Err(LauncherError::new(format!(
                "No program given: use `veil run -- PROGRAM [ARGS]` (or bake {PROGRAM_FILE} into the image)"
            ))),
        },
    }
}

/// The tier to attest in. `node` needs a LAS; `auto` uses one when a socket is there, and a
/// socket that exists but refuses this process is fatal, never a silent fall back to `sim`
/// (decision 20).
pub fn choose_tier(mode: Mode, las_socket: &Path) -> Result<Tier, LauncherError> {
    use veil_client::las::Probe;
    let shown = las_socket.display();
    match (mode, veil_client::las::probe(las_socket)) {
        (Mode::Sim, _) => Ok(Tier::Sim),
        (Mode::Node | Mode::Auto, Probe::Reachable) => Ok(Tier::Node),
        (Mode::Auto, Probe::Absent) => Ok(Tier::Sim),
        (Mode::Node, Probe::Absent) => Err(LauncherError::new(format!(
            "VEIL_MODE=node but no LAS answers at {shown} (set VEIL_LAS_SOCKET); node never falls back to sim"
        ))),
        (_, Probe::Refused(why)) => Err(err(
            format!(
                "The LAS socket {shown} exists but refuses this launcher (the LAS socket is root-only unless the LAS runs with --socket-gid); veil never falls back to sim for it"
            ),
            why,
        )),
    }
}

#[allow(unsafe_code)] // prctl(PR_SET_DUMPABLE) through libc
fn set_not_dumpable() -> Result<(), LauncherError> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) has no memory-safety implications.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        return Err(err(
            "Cannot protect the launcher's memory (PR_SET_DUMPABLE)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Run the launcher. Writes the measurement to `out` in hash mode. Returns the exit status.
pub fn launch(inv: Invocation, out: &mut dyn Write) -> Result<i32, LauncherError> {
    let settings = Settings::from_env(&inv.env)?;
    let path_var = inv.env.get("PATH").map(String::as_str);
    let listed = program_name(&inv.kind)?;
    let name = listed.as_ref().map(|l| l.program.clone());
    let loaded: &[String] = listed.as_ref().map_or(&[], |l| &l.loaded);
    if !loaded.is_empty() {
        program::check_preload(loaded, Path::new("/etc/ld.so.preload"))?;
    }
    if settings.config_id.is_none() && !settings.hash {
        // Native run, like SCONE without a config id: nothing is measured or attested.
        return match &name {
            Some(n) => run_native(n, &program::resolve(n, path_var)?, &inv.args),
            None => Err(LauncherError::new(
                "envcas needs VEIL_CONFIG_ID or SCONE_CONFIG_ID (session/service[@otp])",
            )),
        };
    }
    let program = match &name {
        // Decision 3: a private copy (hashed while copied) when the launcher can mount.
        Some(n) if !settings.hash => Some(program::MeasuredProgram::open_private(
            &program::resolve(n, path_var)?,
            loaded,
        )?),
        Some(n) => Some(program::MeasuredProgram::open(
            &program::resolve(n, path_var)?,
            loaded,
        )?),
        None => None,
    };
    let target = match &program {
        Some(p) => p.target(),
        None => Target::Envcas,
    };
    if settings.hash {
        let m = program::own_measurement(&target)?;
        writeln!(out, "{m}").map_err(|e| err("Cannot print the measurement", e))?;
        return Ok(0);
    }
    let Some(config_id) = settings.config_id.clone() else {
        return Err(LauncherError::new(
            "VEIL_CONFIG_ID or SCONE_CONFIG_ID is not set",
        ));
    };
    set_not_dumpable()?;
    let key_file = match std::fs::read_to_string(settings::CAS_KEY_HASH_FILE) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(err(
                format!("Cannot read {}", settings::CAS_KEY_HASH_FILE),
                e,
            ));
        }
    };
    let (key_hash, warning) =
        settings::resolve_cas_key_hash(key_file.as_deref(), settings.cas_key_hash_env.as_deref())?;
    if let Some(w) = warning {
        eprintln!("[VEIL|WARN] {w}");
    }
    let tier = choose_tier(settings.mode, &settings.las_socket)?;
    if tier == Tier::Sim {
        eprintln!("{SIM_WARNING}");
    }
    let cas_target = cas::CasTarget {
        addr: settings.cas_addr.clone(),
        key_hash,
    };
    let las_socket = settings.las_socket.clone();
    let config = cas::attest(
        &cas_target,
        &config_id,
        tier,
        settings.service_access_token.clone(),
        |rd| match tier {
            Tier::Node => veil_client::las::request_evidence(&las_socket, rd, target.clone())
                .map(Evidence::Node)
                .map_err(|e| {
                    err(
                        "Attestation failed",
                        format!("the LAS refused evidence: {e}"),
                    )
                }),
            _ => {
                let lh = program::launcher_hash()?;
                let ev = SimEvidence::new(lh, target.clone(), rd);
                debug_assert_eq!(ev.measurement, measurement(&lh, &target));
                Ok(Evidence::Sim(ev))
            }
        },
    )?;
    let host_argv: Vec<String> = std::iter::once(name.clone().unwrap_or_else(|| "envcas".into()))
        .chain(inv.args.iter().cloned())
        .collect();
    let vctx = if config.volumes.is_empty() {
        None
    } else {
        Some(volumes::VolumeContext::from_env(
            &inv.env,
            cas_target.clone(),
            &config_id,
            &config.instance_token,
        )?)
    };
    let result = run_config(
        &config,
        &host_argv,
        &inv.env,
        program.as_ref(),
        Path::new(envcas::ENVCAS_CONFIG),
        vctx.as_ref(),
    );
    cas::report_exit(
        &cas_target,
        &config.instance_token,
        *result.as_ref().unwrap_or(&1),
    );
    result
}

/// Apply a configuration that came from the attested CAS: plan, code region, volumes, private
/// namespace, files, then run `program` (or, for envcas, the program named in `envcas_config`); after it
/// exits, write the volumes back and record their tags (a failure there is fatal).
pub fn run_config(
    config: &veil_api::workload::ConfigResponse,
    host_argv: &[String],
    host_env: &BTreeMap<String, String>,
    program: Option<&program::MeasuredProgram>,
    envcas_config: &Path,
    volumes: Option<&volumes::VolumeContext>,
) -> Result<i32, LauncherError> {
    const START: &str = "Could not start the service with its configuration";
    let plan = exec::plan(config, host_argv, host_env).map_err(|e| e.context(START))?;
    let region = match &config.code_region {
        Some(r) => Some(coderegion::open_region(r).map_err(|e| e.context(START))?),
        None => None,
    };
    // Each of these is a drop guard: whatever was placed is undone if a later step fails, in
    // reverse order of declaration (files, then volumes, which may lie below the code region's
    // directories, then the code region).
    let mut exposed = coderegion::ExposedRegion::default();
    let mut opened = volumes::OpenVolumes::default();
    if !config.volumes.is_empty() {
        let Some(ctx) = volumes else {
            return Err(LauncherError::new(
                "The service has volumes but no volume settings were given",
            )
            .context(START));
        };
        for g in &config.volumes {
            opened
                .0
                .push(volumes::open_volume(ctx, g).map_err(|e| e.context(START))?);
        }
    }
    exec::enter_private_mount_namespace().map_err(|e| e.context(START))?;
    // The code region first: volumes and injection files may be placed below its directories.
    if let Some(r) = region {
        exposed = r.expose().map_err(|e| e.context(START))?;
    }
    if let Some(ctx) = volumes {
        for v in &mut opened.0 {
            v.mount(ctx).map_err(|e| e.context(START))?;
        }
    }
    let placed = exec::place_files(&plan.files).map_err(|e| e.context(START))?;
    let heartbeat = match volumes {
        Some(ctx) if !opened.0.is_empty() => {
            Some(volumes::Heartbeat::start(ctx, &opened).map_err(|e| e.context(START))?)
        }
        _ => None,
    };
    let result = run_program(&plan, program, envcas_config).map_err(|e| e.context(START));
    // A lost lease stopped the program: that is the outcome, and nothing is written back.
    let result = match heartbeat.map(volumes::Heartbeat::finish) {
        Some(Err(lost)) => Err(lost),
        _ => result,
    };
    drop(placed);
    let mut saved = Ok(());
    // Write back only what a program that ran may have changed.
    if let (Some(ctx), Ok(_)) = (volumes, &result) {
        for v in &mut opened.0 {
            if let Err(e) = v.write_back(ctx) {
                saved = Err(e);
                break;
            }
        }
    }
    drop(opened);
    drop(exposed);
    let status = result?;
    saved?;
    Ok(status)
}

fn run_program(
    plan: &exec::Plan,
    program: Option<&program::MeasuredProgram>,
    envcas_config: &Path,
) -> Result<i32, LauncherError> {
    match program {
        Some(p) => {
            let _exposed = p.expose()?;
            exec::spawn_and_wait(p.exec_target(), &plan.argv, &plan.env, plan.pwd.as_deref())
        }
        None => {
            let cfg = envcas::read_config(envcas_config)?;
            envcas::copy_files(&cfg)?;
            let argv = envcas::program_argv(&cfg, &plan.argv);
            let path = PathBuf::from(&cfg.program);
            exec::spawn_and_wait(
                exec::ExecTarget::Path(&path),
                &argv,
                &plan.env,
                plan.pwd.as_deref(),
            )
        }
    }
}

fn run_native(name: &str, path: &Path, args: &[String]) -> Result<i32, LauncherError> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let status = std::process::Command::new(path)
        .arg0(name)
        .args(args)
        .status()
        .map_err(|e| err(format!("Cannot run {name}"), e))?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}
