//! `veil session create|update|read|verify|list`: the session verbs that talk to a pinned CAS
//! (SCONE's `scone session …`, reference §2.5). They use the same routes as `curl` does
//! (`POST /v1/sessions`, `GET /v1/sessions/{name}`).

use std::process::ExitCode;

use anyhow::{Context, bail};
use veil_client::ClientError;

use super::remote::{RemoteArgs, connect};
use super::session::{TemplateArgs, load_template};

/// `create` / `update` / `verify`.
#[derive(clap::Args, Debug)]
pub struct UploadArgs {
    #[command(flatten)]
    pub template: TemplateArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `read`.
#[derive(clap::Args, Debug)]
pub struct ReadArgs {
    /// Session name.
    pub name: String,
    /// A former version's hash.
    #[arg(long, value_name = "HASH")]
    pub hash: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 404, .. })
}

/// `veil session create FILE`: upload; fails when the name exists and the file has no
/// `predecessor` (then the CAS says to use update).
pub fn create(a: UploadArgs) -> anyhow::Result<ExitCode> {
    let (session, _) = load_template(&a.template)?;
    let rt = runtime()?;
    let hash = rt.block_on(async {
        let mut c = connect(&a.remote).await?;
        c.upload_session(&session.to_yaml())
            .await
            .map_err(|e| match &e {
                ClientError::Api { status: 409, code, .. } if code == "session_exists" => {
                    anyhow::Error::new(e).context(format!(
                        "session `{}` exists: use `veil session update` (or set `predecessor` to its current hash)",
                        session.name
                    ))
                }
                _ => anyhow::Error::new(e),
            })
    })?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}

/// `veil session update FILE`: fills `predecessor` from the active version when absent.
pub fn update(a: UploadArgs) -> anyhow::Result<ExitCode> {
    let (mut session, _) = load_template(&a.template)?;
    let rt = runtime()?;
    let hash = rt.block_on(async {
        let mut c = connect(&a.remote).await?;
        if session.predecessor.is_none() {
            let (_, current) = c.read_session(&session.name, None).await.map_err(|e| {
                if is_not_found(&e) {
                    anyhow::Error::new(e).context(format!(
                        "cannot update session `{}`: it does not exist (or you may not read it); use `veil session create`",
                        session.name
                    ))
                } else {
                    e.into()
                }
            })?;
            session.predecessor = Some(current);
        }
        Ok::<_, anyhow::Error>(c.upload_session(&session.to_yaml()).await?)
    })?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}

/// `veil session read NAME [--hash H]`: print the YAML.
pub fn read(a: ReadArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let (yaml, _) = rt.block_on(async {
        let mut c = connect(&a.remote).await?;
        c.read_session(&a.name, a.hash.as_deref())
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    anyhow::Error::new(e).context(format!("unknown session `{}`", a.name))
                } else {
                    e.into()
                }
            })
    })?;
    print!("{yaml}");
    if !yaml.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// `veil session verify FILE`: hash the file with the active version's creator and
/// predecessor; exit 0 and print the hash when it equals the active version, else 1.
pub fn verify(a: UploadArgs) -> anyhow::Result<ExitCode> {
    let (mut local, _) = load_template(&a.template)?;
    let rt = runtime()?;
    let (yaml, active_hash) = rt.block_on(async {
        let mut c = connect(&a.remote).await?;
        c.read_session(&local.name, None).await.map_err(|e| {
            if is_not_found(&e) {
                anyhow::Error::new(e).context(format!("unknown session `{}`", local.name))
            } else {
                e.into()
            }
        })
    })?;
    // `session read` output is redacted (decision 22): only creator and predecessor are used.
    let active = veil_policy::parse_read_back("active session", &yaml)
        .context("the CAS returned a session that does not parse")?;
    let creator_hash = match &active.creator {
        Some(veil_policy::Creator::Certificate { pem }) => {
            veil_identity::key_hash(&veil_identity::spki_from_cert_pem(pem)?)
        }
        _ => bail!("the active session has no certificate creator"),
    };
    local.predecessor = active.predecessor.clone();
    local.creator = active.creator.clone();
    let h = local.hash(Some(&creator_hash));
    if h == active_hash {
        println!("{h}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: session `{}` differs from the active version: the file hashes to {h}, the active version is {active_hash}",
            local.name
        );
        Ok(ExitCode::FAILURE)
    }
}

/// `veil session list`: the sessions this identity may list.
pub fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let names = rt.block_on(async {
        let mut c = connect(&a.remote).await?;
        Ok::<_, anyhow::Error>(c.list_sessions().await?)
    })?;
    for n in names {
        println!("{n}");
    }
    Ok(ExitCode::SUCCESS)
}
