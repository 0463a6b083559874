//! `veil session …`: check policy documents and compute session hashes offline (SCONE's
//! `scone session check` / `calculate-hash`). [`TemplateArgs`] and [`load_template`] are shared
//! by every subcommand that reads a session template.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use veil_policy::{Diagnostic, MAX_DOCUMENT_BYTES, PolicyError, Session, Vars};

/// Subcommands of `veil session`.
#[derive(clap::Subcommand)]
pub enum SessionCmd {
    /// Check a session template and print it normalised (YAML, or JSON with --json).
    Check(CheckArgs),
    /// Print the session hash (64 hex) of a session template.
    CalculateHash(HashArgs),
    /// Upload a new session to the CAS; prints its hash.
    Create(super::session_remote::UploadArgs),
    /// Upload a new version (predecessor = the active version unless given); prints its hash.
    Update(super::session_remote::UploadArgs),
    /// Print a session's active version (or --hash H) as YAML.
    Read(super::session_remote::ReadArgs),
    /// Exit non-zero when the active version differs from the file; prints the hash.
    Verify(super::session_remote::UploadArgs),
    /// List the sessions this identity may list.
    List(super::session_remote::ListArgs),
}

/// How to read a session template: the file and its template variables.
#[derive(clap::Args, Debug, Clone)]
pub struct TemplateArgs {
    /// Set template variable VAR (replaces `$VAR` and `${VAR}`); repeatable; wins over --use-env.
    #[arg(short = 'e', long = "env", value_name = "VAR=VAL", value_parser = parse_var)]
    pub env: Vec<(String, String)>,
    /// Also take template variables from the process environment.
    #[arg(long)]
    pub use_env: bool,
    /// Override the session name (after substitution).
    #[arg(short = 'n', long, value_name = "NAME")]
    pub name: Option<String>,
    /// The session template (YAML); `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Arguments of `veil session check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Print the normalised session as JSON instead of YAML.
    #[arg(long)]
    pub json: bool,
    /// Exit non-zero when there are warnings (e.g. keys veil does not support yet).
    #[arg(long)]
    pub fail_on_warning: bool,
}

/// Arguments of `veil session calculate-hash`.
#[derive(clap::Args, Debug)]
pub struct HashArgs {
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Key hash (64 hex) of the creator, as printed by `veil self show-key-hash`; without it the
    /// document's own `creator` (if any) is used.
    #[arg(long, value_name = "HASH", conflicts_with = "with_self_as_creator")]
    pub creator_key_hash: Option<String>,
    /// Hash as if this client's identity (`tls`: its TLS certificate, the only kind veil has)
    /// uploaded the session, i.e. what `session create` will print.
    #[arg(long, value_name = "KIND", value_parser = ["tls", "signer"])]
    pub with_self_as_creator: Option<String>,
    /// Identity file for `--with-self-as-creator` (default `$VEIL_IDENTITY` or
    /// `~/.veil/identity.pem`).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<std::path::PathBuf>,
    /// Exit non-zero when there are warnings.
    #[arg(long)]
    pub fail_on_warning: bool,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected VAR=VALUE, found `{s}`")),
    }
}

/// Read at most `MAX_DOCUMENT_BYTES + 1` bytes, so an oversized file is refused, not loaded.
fn read_limited(path: &PathBuf) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    let limit = (MAX_DOCUMENT_BYTES + 1) as u64;
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("cannot open {}", path.display()))?
            .take(limit)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    if buf.len() > MAX_DOCUMENT_BYTES {
        return Err(PolicyError::TooLarge {
            file: path.display().to_string(),
            size: buf.len(),
            limit: MAX_DOCUMENT_BYTES,
        }
        .into());
    }
    String::from_utf8(buf).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// Read, substitute, parse and validate a session template. Returns the session (with
/// `--name` applied and warnings in `Session::warnings`) and the substituted text (the name
/// override is not applied to the text; use `Session::to_yaml` for a document with it).
/// Errors carry a [`PolicyError`] (downcast it to print its diagnostics one per line).
pub fn load_template(args: &TemplateArgs) -> anyhow::Result<(Session, String)> {
    let text = read_limited(&args.file)?;
    let file = args.file.display().to_string();
    let vars = Vars {
        explicit: args.env.iter().cloned().collect::<BTreeMap<_, _>>(),
        use_env: args.use_env,
    };
    let substituted = veil_policy::substitute(&file, &text, &vars)?;
    let session = veil_policy::load(&file, &text, &vars, args.name.as_deref())?;
    Ok((session, substituted))
}

/// Run a `veil session` subcommand.
pub fn run(c: SessionCmd) -> anyhow::Result<ExitCode> {
    match c {
        SessionCmd::Check(a) => check(a),
        SessionCmd::CalculateHash(a) => calculate_hash(a),
        SessionCmd::Create(a) => super::session_remote::create(a),
        SessionCmd::Update(a) => super::session_remote::update(a),
        SessionCmd::Read(a) => super::session_remote::read(a),
        SessionCmd::Verify(a) => super::session_remote::verify(a),
        SessionCmd::List(a) => super::session_remote::list(a),
    }
}

/// Load a template; diagnostics are printed one per line (`FILE:LINE:COL: PATH: message`).
/// `Ok(None)` = invalid document, already reported.
fn load_reporting(args: &TemplateArgs) -> anyhow::Result<Option<Session>> {
    match load_template(args) {
        Ok((s, _)) => Ok(Some(s)),
        Err(e) => match e.downcast_ref::<PolicyError>() {
            Some(pe) => {
                for d in pe.diagnostics() {
                    eprintln!("{d}");
                }
                Ok(None)
            }
            None => Err(e),
        },
    }
}

fn print_warnings(w: &[Diagnostic]) {
    for d in w {
        eprintln!("{d}");
    }
}

fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let Some(s) = load_reporting(&a.template)? else {
        return Ok(ExitCode::FAILURE);
    };
    print_warnings(&s.warnings);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s.to_json())?);
    } else {
        print!("{}", s.to_yaml());
    }
    Ok(if a.fail_on_warning && !s.warnings.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn calculate_hash(mut a: HashArgs) -> anyhow::Result<ExitCode> {
    match a.with_self_as_creator.as_deref() {
        Some("tls") => {
            let id = veil_client::load_identity(a.identity.as_deref())?;
            a.creator_key_hash = Some(id.key_hash());
        }
        Some(other) => anyhow::bail!(
            "--with-self-as-creator {other}: veil sessions are created by TLS identities only (signed sessions are not supported yet); use `tls`"
        ),
        None => {}
    }
    if let Some(h) = &a.creator_key_hash {
        anyhow::ensure!(
            veil_identity::is_key_hash(h),
            "--creator-key-hash: expected 64 lowercase hex characters, found `{h}`"
        );
    }
    let Some(s) = load_reporting(&a.template)? else {
        return Ok(ExitCode::FAILURE);
    };
    print_warnings(&s.warnings);
    println!("{}", s.hash(a.creator_key_hash.as_deref()));
    Ok(if a.fail_on_warning && !s.warnings.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
