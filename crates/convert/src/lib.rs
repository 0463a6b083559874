//! # veil-convert: `veil sconify-image`
//!
//! Turns an unmodified container image into a confidential one (issue 17, design decisions 19,
//! 20, 23, 24):
//!
//! ```text
//! source (oci:DIR[:TAG] | docker-archive:FILE)
//!   ── read, every blob's digest verified ──▶ layers applied into a scratch root (whiteouts,
//!      opaque directories, hard links, symlinks; device files recorded)
//!   ── --dir trees moved out of the root ──▶ code region (shield `build_deterministic`, /fspf/fs.fspf)
//!   ── program + ELF interpreter + DT_NEEDED closure ──▶ /etc/veil/program, measurement v2
//!   ── layers touching a --dir rewritten without it; others passed through by digest ──▶
//!      + veil's layer (launcher, /etc/veil/{program,cas-key-hash}, code region)
//!   ── config (entrypoint = launcher, Env + SCONE_*), manifest (annotations) ──▶ destination
//! ```
//!
//! and generates the session (seed 000's shape, [`session`]). With the same input and the same
//! [`Keys`], a conversion gives the same digests.

mod elf;
mod error;
mod hashio;
pub mod helm;
mod image;
mod keys;
mod layers;
mod reference;
mod registry;
mod rootfs;
pub mod session;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, HistoryBuilder, ImageManifestBuilder, MediaType};
use veil_attest::hash::Digest32;
use veil_types::Measurement;

pub use elf::{Loaded, loaded, parse_ld_so_cache};
pub use error::ConvertError;
pub use image::{REF_NAME, canonical_json};
pub use keys::Keys;
pub use reference::ImageRef;
pub use registry::Tls;

use crate::error::io;
use crate::rootfs::{RootFs, host, is_at_or_under, is_under, resolve};

/// Where the launcher is in a converted image (decision 19).
pub const LAUNCHER_PATH: &str = "/usr/lib/veil/veil-launcher";
/// The measured program and what it loads (decisions 19, 23).
pub const PROGRAM_FILE: &str = "/etc/veil/program";
/// The CAS key hash (decision 7).
pub const CAS_KEY_HASH_FILE: &str = "/etc/veil/cas-key-hash";
/// The code region's backing store (decision 19).
pub const FSPF_PATH: &str = "/fspf/fs.fspf";
/// Manifest annotation: the measurement the session expects (v2, decision 23).
pub const ANNOTATION_MEASUREMENT: &str = "dev.veil.measurement";
/// Manifest annotation: the session (`<namespace>/<session>`).
pub const ANNOTATION_SESSION: &str = "dev.veil.session";
/// `PATH` when the image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Told what the conversion is doing (the CLI draws progress bars from it).
pub trait Progress {
    /// A step of `total` units starts (`total` 0: one unit of unknown length).
    fn start(&self, what: &str, total: u64);
    /// One unit of the current step is done.
    fn advance(&self);
    /// The current step is done.
    fn finish(&self);
}

/// No progress reports.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self) {}
    fn finish(&self) {}
}

/// What to convert and how.
pub struct Options {
    /// `--from`.
    pub from: ImageRef,
    /// `--to`.
    pub to: ImageRef,
    /// `--platform` (`os/arch`).
    pub platform: String,
    /// `--src-tls-verify`.
    pub src_tls: Tls,
    /// `--dest-tls-verify`.
    pub dest_tls: Tls,
    /// The static launcher to put into the image.
    pub launcher: PathBuf,
    /// `--binary`.
    pub binary: Option<String>,
    /// `--command`.
    pub command: Option<String>,
    /// `--dir` (repeatable).
    pub dirs: Vec<String>,
    /// `--volume NAME:PATH`.
    pub volumes: Vec<(String, String)>,
    /// `--env K=V`.
    pub env: Vec<(String, String)>,
    /// `SCONE_CAS_ADDR`.
    pub cas_addr: String,
    /// `SCONE_LAS_ADDR`.
    pub las_addr: String,
    /// The CAS key hash baked into the image.
    pub cas_key_hash: String,
    /// `--namespace`.
    pub namespace: String,
    /// `--name`.
    pub session: String,
    /// `--service-name`.
    pub service: String,
    /// `--template FILE`: (file name, text).
    pub template: Option<(String, String)>,
    /// `--secrets FILE` content.
    pub secrets: Option<String>,
    /// `--injectedfiles FILE` content.
    pub injected_files: Option<String>,
    /// `--allow-debug-mode`.
    pub allow_debug_mode: bool,
    /// `--allow-tcb-vulnerabilities`.
    pub allow_tcb_vulnerabilities: bool,
    /// The code-region key.
    pub keys: Keys,
    /// `--dry-run`: everything but writing the destination.
    pub dry_run: bool,
    /// `--k8s-helm-output-dir`: the chart.
    pub helm: Option<HelmOptions>,
}

/// The Helm chart's flags.
pub struct HelmOptions {
    /// `--k8s-helm-output-dir`.
    pub out_dir: PathBuf,
    /// `--k8s-helm-workload-type`.
    pub workload_type: String,
    /// `--k8s-helm-expose`.
    pub expose: Option<u16>,
}

/// Convert `opts.from` to `opts.to` without progress reports.
pub fn convert(opts: &Options) -> Result<Outcome, ConvertError> {
    convert_with(opts, &Quiet)
}

/// What a conversion produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// `sha256:` digest of the converted image's manifest.
    pub digest: String,
    /// The measurement (v2) of the launcher running the program with what it loads.
    pub measurement: String,
    /// Every measurement the session accepts.
    pub mrenclaves: Vec<String>,
    /// `<namespace>/<session>`.
    pub session: String,
    /// The session hash (before a creator is known).
    pub session_hash: String,
    /// The measured program (image path).
    pub program: String,
    /// What the program loads at start and the measurement covers, in order.
    pub loaded: Vec<String>,
    /// Layers passed through, rewritten, added.
    pub layers: LayerCounts,
    /// The Helm chart's directory, when one was written.
    pub chart: Option<PathBuf>,
    /// The session text.
    #[serde(skip)]
    pub session_text: String,
}

/// How the layers were handled.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LayerCounts {
    /// Passed through by digest.
    pub passed: usize,
    /// Rewritten without `--dir` content.
    pub rewritten: usize,
    /// Added by veil.
    pub added: usize,
}

fn flag(name: &str, value: &str, why: impl Into<String>) -> ConvertError {
    ConvertError::Flag {
        flag: format!("{name} {value}"),
        why: why.into(),
    }
}

fn split_env(e: &str) -> Option<(String, String)> {
    e.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
}

/// Convert `opts.from` to `opts.to`, reporting to `progress`.
pub fn convert_with(opts: &Options, progress: &dyn Progress) -> Result<Outcome, ConvertError> {
    let session_name = format!("{}/{}", opts.namespace, opts.session);
    veil_policy::check_session_name(&session_name)
        .map_err(|why| flag("--name", &session_name, why.to_string()))?;
    if let Some(h) = &opts.helm {
        helm::precheck(&h.out_dir, &opts.service, &h.workload_type)?;
    }
    for d in &opts.dirs {
        if !d.starts_with('/') || d == "/" {
            return Err(flag("--dir", d, "must be an absolute path other than /"));
        }
    }
    progress.start("reading the source image", 0);
    let src = image::read(&opts.from, &opts.platform, opts.src_tls)?;
    progress.finish();
    progress.start("applying layers", src.layers.len() as u64);
    let work = tempfile::tempdir().map_err(io(std::env::temp_dir()))?;
    let mut root = RootFs::new(work.path().join("rootfs")).map_err(io(work.path()))?;
    let mut seen: Vec<Vec<String>> = Vec::new();
    for (index, blob) in src.layers.iter().enumerate() {
        let layer_err = |why: String| ConvertError::Layer {
            index,
            digest: blob.digest.clone(),
            why,
        };
        let (reader, check) = image::open_layer(blob)?;
        let paths = root.apply(reader).map_err(layer_err)?;
        check.finish(blob).map_err(layer_err)?;
        seen.push(paths);
        progress.advance();
    }
    progress.finish();
    let r = root.root().to_path_buf();
    let config = src.config.config().clone().unwrap_or_default();

    // --dir: canonical, existing directories.
    let mut dirs: Vec<String> = Vec::new();
    for d in &opts.dirs {
        let real = resolve(&r, d, true).map_err(|why| flag("--dir", d, why))?;
        if !host(&r, &real).is_dir() {
            return Err(flag(
                "--dir",
                d,
                "does not exist in the image (or is not a directory)",
            ));
        }
        for reserved in ["/fspf", "/etc/veil", "/usr/lib/veil"] {
            if is_at_or_under(reserved, &real) || is_at_or_under(&real, reserved) {
                return Err(flag(
                    "--dir",
                    d,
                    format!("overlaps {reserved}, which veil writes"),
                ));
            }
        }
        if let Some(s) = root.specials.iter().find(|s| is_under(s, &real)) {
            return Err(flag(
                "--dir",
                d,
                format!("holds the device file or FIFO {s}, which a code region cannot hold"),
            ));
        }
        dirs.push(real);
    }

    // Environment: the image's, then --env.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut env_order: Vec<String> = Vec::new();
    for e in config.env().clone().unwrap_or_default() {
        if let Some((k, v)) = split_env(&e) {
            if !env.contains_key(&k) {
                env_order.push(k.clone());
            }
            env.insert(k, v);
        }
    }
    for (k, v) in &opts.env {
        env.insert(k.clone(), v.clone());
    }

    // Command and program.
    let command: Vec<String> = match &opts.command {
        Some(c) => shlex::split(c).ok_or_else(|| flag("--command", c, "unbalanced quotes"))?,
        None => {
            let mut c = config.entrypoint().clone().unwrap_or_default();
            c.extend(config.cmd().clone().unwrap_or_default());
            c
        }
    };
    let Some(first) = command.first() else {
        return Err(ConvertError::Flag {
            flag: "--command".into(),
            why: "the image has neither ENTRYPOINT nor CMD: give --command".into(),
        });
    };
    let (bflag, bvalue) = match &opts.binary {
        Some(b) => ("--binary", b.clone()),
        None => ("--command", first.clone()),
    };
    let program = if bvalue.contains('/') {
        if !bvalue.starts_with('/') {
            return Err(flag(bflag, &bvalue, "must be an absolute path"));
        }
        resolve(&r, &bvalue, true).map_err(|why| flag(bflag, &bvalue, why))?
    } else {
        let path = env
            .get("PATH")
            .cloned()
            .unwrap_or_else(|| DEFAULT_PATH.into());
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .filter_map(|d| resolve(&r, &format!("{d}/{bvalue}"), true).ok())
            .find(|p| host(&r, p).is_file())
            .ok_or_else(|| {
                flag(
                    bflag,
                    &bvalue,
                    format!("not found on the image's PATH {path}"),
                )
            })?
    };
    if !host(&r, &program).is_file() {
        return Err(flag(
            bflag,
            &bvalue,
            format!("{program} is not a regular file in the image"),
        ));
    }
    if let Some(d) = dirs.iter().find(|d| is_under(&program, d)) {
        return Err(flag(
            bflag,
            &bvalue,
            format!(
                "{program} is inside --dir {d}: the program must be measured before attestation, so it cannot be in the code region"
            ),
        ));
    }
    let closure = elf::loaded(&r, &program, env.get("LD_LIBRARY_PATH").map(String::as_str))?;
    // Files inside a --dir come from the code region, verified by its tag; the rest is measured.
    let listed: Vec<String> = closure
        .files
        .iter()
        .filter(|f| !dirs.iter().any(|d| is_under(f, d)))
        .cloned()
        .collect();
    let hash_of = |p: &str| -> Result<Digest32, ConvertError> {
        veil_attest::measure::hash_file(&host(&r, p)).map_err(|e| ConvertError::Program {
            path: p.to_string(),
            why: e.to_string(),
        })
    };
    let launcher_hash =
        veil_attest::measure::hash_file(&opts.launcher).map_err(io(&opts.launcher))?;
    let program_hash = hash_of(&program)?;
    let mut file_hashes = Vec::new();
    for f in &listed {
        file_hashes.push(hash_of(f)?);
    }
    let list = veil_attest::measure::loaded_list(&listed);
    let v2 =
        veil_attest::measure::measurement_v2(&launcher_hash, &program_hash, &list, &file_hashes);
    let mut mrenclaves = vec![v2.to_hex()];
    if listed.is_empty() {
        // A static program loads nothing else at start: v1 measures all of it.
        let v1: Measurement = veil_attest::measurement(
            &launcher_hash,
            &veil_attest::Target::Program { hash: program_hash },
        );
        mrenclaves.push(v1.to_hex());
    }
    let mut program_file = format!("{program}\n");
    program_file.push_str(&String::from_utf8_lossy(&list));

    // Code region: move the --dir trees out of the root and build the region from them.
    let region_src = work.path().join("region-src");
    let region_store = work.path().join("region-store");
    let fspf = if dirs.is_empty() {
        None
    } else {
        for d in &dirs {
            let to = host(&region_src, d);
            let parent = to.parent().unwrap_or(&region_src).to_path_buf();
            fs::create_dir_all(&parent).map_err(io(&parent))?;
            fs::rename(host(&r, d), &to).map_err(io(&to))?;
        }
        fs::create_dir_all(&region_store).map_err(io(&region_store))?;
        progress.start("building the code region", 0);
        let key = opts.keys.fspf_key()?;
        let tag = veil_shield::build_deterministic(
            &region_src,
            &region_store,
            &key,
            &veil_shield::VolumeId::default(),
            veil_shield::Protection::Encrypted,
        )?;
        progress.finish();
        Some((FSPF_PATH, key.to_hex(), tag.to_hex()))
    };

    // Layers.
    let blobs = work.path().join("blobs");
    fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    let mut out_layers = Vec::new();
    let mut diff_ids = Vec::new();
    let src_diff_ids = src.config.rootfs().diff_ids().clone();
    let mut counts = LayerCounts::default();
    progress.start("writing layers", src.layers.len() as u64 + 1);
    for (index, (blob, paths)) in src.layers.iter().zip(&seen).enumerate() {
        progress.advance();
        let touched = paths.iter().any(|p| layers::dropped(p, &dirs));
        if !touched {
            out_layers.push(blob.clone());
            diff_ids.push(src_diff_ids.get(index).cloned().ok_or_else(|| {
                ConvertError::Image(format!("the config has no diff_id for layer {index}"))
            })?);
            counts.passed += 1;
            continue;
        }
        let (reader, check) = image::open_layer(blob)?;
        let out = blobs.join(format!("layer-{index}.tar.gz"));
        let layer_err = |why: String| ConvertError::Layer {
            index,
            digest: blob.digest.clone(),
            why,
        };
        let w = layers::rewrite(reader, &dirs, &r, &out).map_err(layer_err)?;
        check.finish(blob).map_err(layer_err)?;
        out_layers.push(w.blob);
        diff_ids.push(w.diff_id);
        counts.rewritten += 1;
    }
    let existing = |p: &str| host(&r, p).is_dir() || dirs.iter().any(|d| is_at_or_under(d, p));
    let veil = layers::veil_layer(
        &layers::VeilLayer {
            launcher: &opts.launcher,
            program_file: &program_file,
            cas_key_hash_file: &format!("{}\n", opts.cas_key_hash),
            region: fspf.as_ref().map(|_| (region_store.as_path(), FSPF_PATH)),
            existing_dir: &existing,
        },
        &blobs.join("veil.tar.gz"),
    )?;
    progress.advance();
    progress.finish();
    out_layers.push(veil.blob);
    diff_ids.push(veil.diff_id);
    counts.added += 1;

    // Session.
    let pwd = config
        .working_dir()
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let input = session::SessionInput {
        name: &session_name,
        service: &opts.service,
        mrenclaves: &mrenclaves,
        command: &command,
        env: &env,
        pwd: &pwd,
        fspf: fspf.clone(),
        volumes: &opts.volumes,
        allow_debug_mode: opts.allow_debug_mode,
        allow_tcb_vulnerabilities: opts.allow_tcb_vulnerabilities,
        secrets: opts.secrets.as_deref(),
        injected_files: opts.injected_files.as_deref(),
    };
    let session_text = match &opts.template {
        Some((file, t)) => session::fill_template(file, t, &opts.namespace, &opts.session, &input)?,
        None => session::generate(&input),
    };
    let parsed = session::check(&session_text)?;
    let session_hash = parsed.hash(None);

    // Config.
    let mut cfg = src.config.clone();
    let mut c = config.clone();
    c.set_entrypoint(Some(vec![LAUNCHER_PATH.to_string(), "--".to_string()]));
    c.set_cmd(None);
    let mut new_env: Vec<String> = Vec::new();
    let baked = [
        (
            "SCONE_CONFIG_ID",
            format!("{session_name}/{}", opts.service),
        ),
        ("SCONE_CAS_ADDR", opts.cas_addr.clone()),
        ("SCONE_LAS_ADDR", opts.las_addr.clone()),
    ];
    for k in &env_order {
        if baked.iter().any(|(b, _)| b == k) {
            continue;
        }
        if let Some(v) = config
            .env()
            .clone()
            .unwrap_or_default()
            .iter()
            .rev()
            .filter_map(|e| split_env(e))
            .find(|(ek, _)| ek == k)
        {
            new_env.push(format!("{k}={}", v.1));
        }
    }
    for (k, v) in &baked {
        new_env.push(format!("{k}={v}"));
    }
    c.set_env(Some(new_env));
    cfg.set_config(Some(c));
    let mut rootfs_cfg = cfg.rootfs().clone();
    rootfs_cfg.set_diff_ids(diff_ids.clone());
    cfg.set_rootfs(rootfs_cfg);
    let mut history = cfg.history().clone().unwrap_or_default();
    history.push(
        HistoryBuilder::default()
            .created_by(format!("veil sconify-image (session {session_name})"))
            .comment("veil launcher, /etc/veil, code region")
            .build()
            .map_err(|e| ConvertError::Image(e.to_string()))?,
    );
    cfg.set_history(Some(history));
    let config_json = canonical_json(&cfg)?;
    let config_digest = hashio::digest_of(&config_json);
    let descriptor = |m: MediaType, size: u64, d: &str| -> Result<Descriptor, ConvertError> {
        let digest: oci_spec::image::Digest = d
            .parse()
            .map_err(|e| ConvertError::Image(format!("{d}: {e}")))?;
        Ok(Descriptor::new(m, size, digest))
    };
    let layer_descs = out_layers
        .iter()
        .map(|l| descriptor(l.media_type.clone(), l.size, &l.digest))
        .collect::<Result<Vec<_>, _>>()?;
    let annotations: std::collections::HashMap<String, String> = [
        (ANNOTATION_MEASUREMENT.to_string(), v2.to_hex()),
        (ANNOTATION_SESSION.to_string(), session_name.clone()),
    ]
    .into_iter()
    .collect();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            config_json.len() as u64,
            &config_digest,
        )?)
        .layers(layer_descs)
        .annotations(annotations)
        .build()
        .map_err(|e| ConvertError::Image(e.to_string()))?;
    let manifest_json = canonical_json(&manifest)?;
    let manifest_digest = hashio::digest_of(&manifest_json);
    let out = image::OutImage {
        config: config_json,
        layers: out_layers,
        manifest: manifest_json,
        manifest_digest: manifest_digest.clone(),
        diff_ids,
    };
    if !opts.dry_run {
        progress.start("writing the image", 0);
        image::write(&opts.to, &out, opts.dest_tls)?;
        progress.finish();
    }
    let chart = match &opts.helm {
        Some(h) => {
            let repository = opts.to.repository();
            Some(helm::write_chart(
                &h.out_dir,
                &helm::ChartInput {
                    service: &opts.service,
                    repository: &repository,
                    digest: &manifest_digest,
                    cas: &opts.cas_addr,
                    las: &opts.las_addr,
                    config_id: &format!("{session_name}/{}", opts.service),
                    volumes: &opts.volumes,
                    workload_type: &h.workload_type,
                    expose: h.expose,
                },
            )?)
        }
        None => None,
    };
    Ok(Outcome {
        chart,
        digest: manifest_digest,
        measurement: v2.to_hex(),
        mrenclaves,
        session: session_name,
        session_hash,
        program,
        loaded: listed,
        layers: counts,
        session_text,
    })
}

/// Read a file named by a flag.
pub fn read_flag_file(flag_name: &str, path: &Path) -> Result<String, ConvertError> {
    fs::read_to_string(path).map_err(|e| ConvertError::Flag {
        flag: format!("{flag_name} {}", path.display()),
        why: e.to_string(),
    })
}
