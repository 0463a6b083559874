//! `veil sconify-image`: convert a container image into a confidential one and generate its
//! session (issue 17; the work is done by the `veil-convert` crate). SCONE's flag names;
//! `--flag=value` and `--flag value` both work.
//!
//! * With `--cas CAS` (a pinned CAS, `veil cas attest`), the session is uploaded as the
//!   identity (`--identity` or the default one): created, or updated with the active version as
//!   its predecessor when it exists; `--create-namespace` first creates the namespace session
//!   (CREATOR may read, update and create sessions in it). The image trusts the pinned key hash
//!   and `SCONE_CAS_ADDR` is the CAS's host (the launcher adds the workload port).
//! * Offline (`--disable-session-upload`, or no `--cas`): `--cas-key-hash H` names the CAS the
//!   image trusts and `--session FILE` receives the session (upload it later with
//!   `veil session create`).
//!
//! Images: `oci:DIR[:TAG]`, `docker-archive:FILE`, `docker://HOST[:PORT]/REPO:TAG`
//! (`--src-tls-verify=false` / `--dest-tls-verify=false` for a plain-HTTP registry).
//! `--k8s-helm-output-dir DIR` writes a Helm chart to `DIR/<service>`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use veil_convert::{ImageRef, Keys, Options};

use crate::cmd::remote::{RemoteArgs, connect};
use crate::cmd::run::LauncherArg;

/// Arguments of `veil sconify-image`.
#[derive(clap::Args)]
pub struct SconifyArgs {
    /// The native image: oci:DIR[:TAG], docker-archive:FILE or docker://HOST[:PORT]/REPO:TAG.
    #[arg(long, value_name = "IMAGE")]
    from: String,
    /// The confidential image to write: oci:DIR[:TAG], docker-archive:FILE[:REF] or
    /// docker://HOST[:PORT]/REPO:TAG.
    #[arg(long, value_name = "IMAGE")]
    to: String,
    /// The platform to pick from an image index.
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// Verify the source registry's TLS certificate (false: plain HTTP, e.g. a local registry).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    src_tls_verify: bool,
    /// Verify the destination registry's TLS certificate (false: plain HTTP).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    dest_tls_verify: bool,
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
    #[command(flatten)]
    remote: RemoteArgs,
    /// The LAS address baked into the image (SCONE_LAS_ADDR; health only, decision 11).
    #[arg(long, default_value = "localhost:18766")]
    las: String,
    /// The key hash of the CAS the image trusts (baked into /etc/veil/cas-key-hash) [default:
    /// the pinned key of --cas].
    #[arg(long, value_name = "H")]
    cas_key_hash: Option<String>,
    /// Do not upload the session to --cas.
    #[arg(long)]
    disable_session_upload: bool,
    /// Create the namespace session before uploading (an existing one is kept).
    #[arg(long)]
    create_namespace: bool,
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
    /// Write a Helm chart into DIR/<service>.
    #[arg(long, value_name = "DIR", alias = "k8s-helm-output")]
    k8s_helm_output_dir: Option<PathBuf>,
    /// The chart's default workload type.
    #[arg(
        long,
        default_value = "deployment",
        value_name = "deployment|statefulset|daemonset|job"
    )]
    k8s_helm_workload_type: String,
    /// The port the chart's Service exposes.
    #[arg(long, value_name = "PORT")]
    k8s_helm_expose: Option<u16>,
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
    let upload = a.remote.cas.is_some() && !a.disable_session_upload;
    if a.create_namespace && !upload {
        bail!(
            "--create-namespace needs a session upload (--cas CAS, without --disable-session-upload)"
        );
    }
    let (cas_key_hash, cas_host) = cas_identity(&a, upload)?;
    if !veil_types::is_key_hash(&cas_key_hash) {
        bail!("--cas-key-hash {cas_key_hash}: not a key hash (64 lowercase hex)");
    }
    if a.session.is_none() && !upload {
        bail!(
            "--session FILE is required when the session is not uploaded (--disable-session-upload or no --cas)"
        );
    }
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
    let pending = match &a.session {
        Some(f) => {
            let dir = match f.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let t = tempfile::Builder::new()
                .prefix(".veil-session-")
                .tempfile_in(&dir)
                .with_context(|| format!("--session {}", f.display()))?;
            Some((t, f.clone()))
        }
        None => None,
    };
    let opts = Options {
        session: a.name.clone().unwrap_or_else(|| to.default_session_name()),
        namespace: a
            .namespace
            .clone()
            .unwrap_or_else(|| keys.namespace.clone()),
        from,
        to,
        platform: a.platform.clone(),
        src_tls: veil_convert::Tls {
            verify: a.src_tls_verify,
        },
        dest_tls: veil_convert::Tls {
            verify: a.dest_tls_verify,
        },
        launcher: a.launcher.path()?,
        binary: a.binary.clone(),
        command: a.command.clone(),
        dirs: a.dirs.clone(),
        volumes,
        env,
        cas_addr: cas_host,
        las_addr: a.las.clone(),
        cas_key_hash,
        service: a.service_name.clone(),
        template,
        secrets: read("--secrets", &a.secrets)?,
        injected_files: read("--injectedfiles", &a.injected_files)?,
        allow_debug_mode: a.allow_debug_mode,
        allow_tcb_vulnerabilities: a.allow_tcb_vulnerabilities,
        keys,
        dry_run: a.dry_run,
        helm: a
            .k8s_helm_output_dir
            .clone()
            .map(|out_dir| veil_convert::HelmOptions {
                out_dir,
                workload_type: a.k8s_helm_workload_type.clone(),
                expose: a.k8s_helm_expose,
            }),
    };
    let started = std::time::Instant::now();
    let bars = Bars::default();
    let mut out = veil_convert::convert_with(&opts, &bars)?;
    if let Some((mut t, f)) = pending {
        t.write_all(out.session_text.as_bytes())
            .with_context(|| format!("--session {}", f.display()))?;
        t.persist(&f)
            .with_context(|| format!("--session {}", f.display()))?;
        eprintln!("session {} written to {}", out.session, f.display());
    }
    if upload && !a.dry_run {
        out.session_hash =
            upload_session(&a, &opts.namespace, &out.session_text).with_context(|| {
                format!(
                    "the image is written, but session {} was not uploaded",
                    out.session
                )
            })?;
        eprintln!(
            "session {} uploaded (hash {})",
            out.session, out.session_hash
        );
    }
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
        println!("{}", out.session);
    }
    Ok(ExitCode::SUCCESS)
}

/// The CAS key hash to bake and the CAS host for `SCONE_CAS_ADDR`.
fn cas_identity(a: &SconifyArgs, upload: bool) -> anyhow::Result<(String, String)> {
    let host = |addr: &str| -> String {
        match addr.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h.to_string(),
            _ => addr.to_string(),
        }
    };
    let Some(cas) = &a.remote.cas else {
        let Some(h) = &a.cas_key_hash else {
            bail!(
                "--cas-key-hash H is required without --cas (the image must name the CAS it trusts)"
            );
        };
        return Ok((h.clone(), "cas".into()));
    };
    if !upload || a.remote.only_for_testing_disable_attestation_verification {
        let Some(h) = &a.cas_key_hash else {
            bail!(
                "--cas {cas}: give --cas-key-hash H (the key is only taken from the pin when the session is uploaded)"
            );
        };
        return Ok((h.clone(), host(cas)));
    }
    let cfg = veil_client::CliConfig::load(&veil_client::config_path()?)?;
    let (_, pinned) = cfg.get(Some(cas)).with_context(|| {
        format!("--cas {cas}: not a pinned CAS (pin it with `veil cas attest`)")
    })?;
    if let Some(h) = &a.cas_key_hash
        && *h != pinned.key_hash
    {
        bail!("--cas-key-hash {h} differs from the key hash pinned for --cas {cas}");
    }
    Ok((pinned.key_hash, host(&pinned.address)))
}

/// Upload the session (creating the namespace first with `--create-namespace`); returns the
/// hash the CAS gives it.
fn upload_session(a: &SconifyArgs, namespace: &str, text: &str) -> anyhow::Result<String> {
    let mut session = veil_policy::parse("generated session", text)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let mut c = connect(&a.remote).await?;
        if a.create_namespace {
            let ns = format!(
                "name: {namespace}\nversion: \"0.3\"\naccess_policy:\n  read: [CREATOR]\n  update: [CREATOR]\n  create_sessions: [CREATOR]\n"
            );
            match c.upload_session(&ns).await {
                Ok(_) => eprintln!("namespace session {namespace} created"),
                Err(veil_client::ClientError::Api { status: 409, .. }) => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("--create-namespace: cannot create {namespace}")));
                }
            }
        }
        match c.upload_session(&session.to_yaml()).await {
            Ok(h) => Ok(h),
            Err(veil_client::ClientError::Api { status: 409, code, .. }) if code == "session_exists" => {
                let (_, current) = c.read_session(&session.name, None).await?;
                session.predecessor = Some(current);
                Ok(c.upload_session(&session.to_yaml()).await?)
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// indicatif bars on stderr (drawn only when stderr is a terminal; `--json` keeps stdout clean).
#[derive(Default)]
struct Bars(std::cell::RefCell<Option<indicatif::ProgressBar>>);

impl veil_convert::Progress for Bars {
    fn start(&self, what: &str, total: u64) {
        let bar = if total == 0 {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        } else {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{msg:28} [{bar:30}] {pos}/{len} {elapsed}")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b
        };
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_message(what.to_string());
        if let Some(old) = self.0.replace(Some(bar)) {
            old.finish_and_clear();
        }
    }

    fn advance(&self) {
        if let Some(b) = self.0.borrow().as_ref() {
            b.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(b) = self.0.borrow_mut().take() {
            b.finish_and_clear();
        }
    }
}
