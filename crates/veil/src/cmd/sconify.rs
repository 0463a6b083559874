//! `veil sconify-image`: convert a container image into a confidential one and generate its
//! session (issue 17; the work is done by the `veil-convert` crate). SCONE's flag names;
//! `--flag=value` and `--flag value` both work.
//!
//! This version converts offline: `--cas-key-hash H` names the CAS the image will trust and the
//! session is written to `--session FILE` (upload it with `veil session create`). Session
//! upload, registries (`docker://`) and the Helm chart are not available yet and are refused by
//! name.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use veil_convert::{ImageRef, Keys, Options};

use crate::cmd::run::LauncherArg;

/// Arguments of `veil sconify-image`.
#[derive(clap::Args)]
pub struct SconifyArgs {
    /// The native image: oci:DIR[:TAG] or docker-archive:FILE.
    #[arg(long, value_name = "IMAGE")]
    from: String,
    /// The confidential image to write: oci:DIR[:TAG] or docker-archive:FILE[:REF].
    #[arg(long, value_name = "IMAGE")]
    to: String,
    /// The platform to pick from an image index.
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// The measured program [default: the command's first word on the image's PATH].
    #[arg(long, value_name = "PATH")]
    binary: Option<String>,
    /// The command the service runs [default: ENTRYPOINT + CMD].
    #[arg(long, value_name = "CMD")]
    command: Option<String>,
    /// A directory moved into the encrypted code region (repeatable).
    #[arg(long = "dir", value_name = "DIR")]
    dirs: Vec<String>,
    /// A protected volume NAME:PATH (repeatable).
    #[arg(long = "volume", value_name = "NAME:PATH")]
    volumes: Vec<String>,
    /// An environment variable K=V for the service (repeatable; wins over the image's).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// The CAS address baked into the image (SCONE_CAS_ADDR).
    #[arg(long, default_value = "cas")]
    cas: String,
    /// The LAS address baked into the image (SCONE_LAS_ADDR; health only, decision 11).
    #[arg(long, default_value = "localhost:18766")]
    las: String,
    /// The key hash of the CAS the image trusts (baked into /etc/veil/cas-key-hash).
    #[arg(long, value_name = "H")]
    cas_key_hash: String,
    /// Do not upload the session (required in this version: upload is not available yet).
    #[arg(long)]
    disable_session_upload: bool,
    /// The session's namespace [default: from --keys, else random].
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// The session name [default: the destination's name and tag].
    #[arg(long, value_name = "SESSION")]
    name: Option<String>,
    /// The service name (config id SESSION/SERVICE).
    #[arg(long, default_value = "service", value_name = "NAME")]
    service_name: String,
    /// Where the generated session is written.
    #[arg(long, value_name = "FILE")]
    session: Option<PathBuf>,
    /// A session template with SCONE's variables ($NAMESPACE $SESSION $MRENCLAVE $CMD $ENVVARS
    /// $SCONE_FSPF_KEY $SCONE_FSPF_TAG $INJECTED_FILES $SECRETS).
    #[arg(long, value_name = "FILE")]
    template: Option<PathBuf>,
    /// A YAML list of secrets for the session.
    #[arg(long, value_name = "FILE")]
    secrets: Option<PathBuf>,
    /// A YAML list of injection files for the session's image.
    #[arg(long = "injectedfiles", value_name = "FILE")]
    injected_files: Option<PathBuf>,
    /// Tolerate debug mode in attestation.
    #[arg(long)]
    allow_debug_mode: bool,
    /// Tolerate TCB weaknesses (SCONE's list).
    #[arg(long)]
    allow_tcb_vulnerabilities: bool,
    /// Code-region key and default namespace (JSON; created with mode 0600 if missing): the
    /// same input and keys give the same image digest.
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,
    /// Convert and generate the session, but write no image.
    #[arg(long)]
    dry_run: bool,
    /// Print digest, measurement, session name and hash as JSON.
    #[arg(long)]
    json: bool,
    /// No colours (veil prints none; accepted for SCONE's scripts).
    #[arg(long)]
    no_color: bool,
    #[command(flatten)]
    launcher: LauncherArg,
}

fn pair(flag: &str, v: &str, sep: char) -> anyhow::Result<(String, String)> {
    match v.split_once(sep) {
        Some((a, b)) if !a.is_empty() => Ok((a.to_string(), b.to_string())),
        _ => bail!(
            "{flag} {v}: expected the form {}",
            if sep == '=' { "K=V" } else { "NAME:PATH" }
        ),
    }
}

/// Run `veil sconify-image`.
pub fn run(a: SconifyArgs) -> anyhow::Result<ExitCode> {
    let _ = a.no_color;
    if !a.disable_session_upload {
        bail!(
            "--cas {}: uploading the session is not available in this version; pass --disable-session-upload and --session FILE, then upload with `veil session create`",
            a.cas
        );
    }
    if !veil_types::is_key_hash(&a.cas_key_hash) {
        bail!(
            "--cas-key-hash {}: not a key hash (64 lowercase hex)",
            a.cas_key_hash
        );
    }
    let Some(session_file) = a.session.clone() else {
        bail!(
            "--session FILE is required with --disable-session-upload (the session would be lost)"
        );
    };
    let from = ImageRef::parse("--from", &a.from)?;
    let to = ImageRef::parse("--to", &a.to)?;
    let keys = match &a.keys {
        Some(p) => {
            let (k, created) = Keys::load_or_create(p)?;
            if created {
                eprintln!(
                    "wrote new keys to {} (keep it to reproduce this conversion)",
                    p.display()
                );
            }
            k
        }
        None => Keys::generate()?,
    };
    let volumes = a
        .volumes
        .iter()
        .map(|v| pair("--volume", v, ':'))
        .collect::<Result<Vec<_>, _>>()?;
    let env = a
        .env
        .iter()
        .map(|v| pair("--env", v, '='))
        .collect::<Result<Vec<_>, _>>()?;
    let read = |flag: &str, p: &Option<PathBuf>| -> anyhow::Result<Option<String>> {
        p.as_ref()
            .map(|p| veil_convert::read_flag_file(flag, p))
            .transpose()
            .map_err(Into::into)
    };
    let template = match &a.template {
        Some(p) => Some((
            p.display().to_string(),
            veil_convert::read_flag_file("--template", p)?,
        )),
        None => None,
    };
    // Claim the session file's place before converting, so a failure leaves nothing behind.
    let dir = match session_file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut pending = tempfile::Builder::new()
        .prefix(".veil-session-")
        .tempfile_in(&dir)
        .with_context(|| format!("--session {}", session_file.display()))?;
    let opts = Options {
        session: a.name.clone().unwrap_or_else(|| to.default_session_name()),
        namespace: a
            .namespace
            .clone()
            .unwrap_or_else(|| keys.namespace.clone()),
        from,
        to,
        platform: a.platform.clone(),
        launcher: a.launcher.path()?,
        binary: a.binary.clone(),
        command: a.command.clone(),
        dirs: a.dirs.clone(),
        volumes,
        env,
        cas_addr: a.cas.clone(),
        las_addr: a.las.clone(),
        cas_key_hash: a.cas_key_hash.clone(),
        service: a.service_name.clone(),
        template,
        secrets: read("--secrets", &a.secrets)?,
        injected_files: read("--injectedfiles", &a.injected_files)?,
        allow_debug_mode: a.allow_debug_mode,
        allow_tcb_vulnerabilities: a.allow_tcb_vulnerabilities,
        keys,
        dry_run: a.dry_run,
    };
    let started = std::time::Instant::now();
    let out = veil_convert::convert(&opts)?;
    pending
        .write_all(out.session_text.as_bytes())
        .with_context(|| format!("--session {}", session_file.display()))?;
    pending
        .persist(&session_file)
        .with_context(|| format!("--session {}", session_file.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        eprintln!(
            "converted in {:.1} s: {} layer(s) passed through, {} rewritten, {} added; program {} ({} file(s) it loads measured)",
            started.elapsed().as_secs_f64(),
            out.layers.passed,
            out.layers.rewritten,
            out.layers.added,
            out.program,
            out.loaded.len()
        );
        eprintln!("image digest {}", out.digest);
        eprintln!("measurement  {}", out.measurement);
        eprintln!(
            "session {} written to {}",
            out.session,
            session_file.display()
        );
        println!("{}", out.session);
    }
    Ok(ExitCode::SUCCESS)
}
