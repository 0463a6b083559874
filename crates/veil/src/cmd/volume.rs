//! `veil volume`: create, verify, unpack, pack, mount and list encrypted volumes (the file shield).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use veil_shield::fuse::{MountOptions, TagFile};
use veil_shield::{Access, Expect, Kind, Options, Protection, Tag, VolumeId, VolumeKey};

/// Volume subcommands (boxed, so the top-level command enum stays small).
#[derive(Subcommand)]
pub enum VolumeCmd {
    /// Create a new volume in BACKING (empty or missing); prints `key:` and `tag:`.
    Create(Box<CreateArgs>),
    /// Check every file of the volume; exit 0, or non-zero with the first problem found.
    Verify(Box<VerifyArgs>),
    /// Decrypt the volume into PLAINDIR (created; must be empty).
    Unpack(Box<UnpackArgs>),
    /// Encrypt PLAINDIR into BACKING (replacing its content) and commit; prints `tag:`.
    Pack(Box<PackArgs>),
    /// Mount the volume with FUSE (foreground) until SIGINT/SIGTERM or `fusermount3 -u`.
    Mount(Box<MountArgs>),
    /// List paths and sizes.
    Ls(Box<LsArgs>),
}

/// Arguments of `veil volume create`.
#[derive(Args)]
pub struct CreateArgs {
    /// Backing directory.
    backing: PathBuf,
    /// Encrypt this plain directory into the new volume.
    #[arg(long, value_name = "PLAINDIR")]
    from: Option<PathBuf>,
    /// Use this key (64 hex) instead of generating one.
    #[arg(long, value_name = "HEX")]
    key: Option<String>,
    /// Read the key from this file instead of generating one.
    #[arg(long, value_name = "FILE", conflicts_with = "key")]
    key_file: Option<PathBuf>,
    /// Store files authenticated but not encrypted (`files: authenticated-only`).
    #[arg(long)]
    authenticated_only: bool,
    #[command(flatten)]
    name: NameArgs,
}

/// Arguments of `veil volume verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// Backing directory.
    backing: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    tag: TagArgs,
    #[command(flatten)]
    name: NameArgs,
}

/// Arguments of `veil volume unpack`.
#[derive(Args)]
pub struct UnpackArgs {
    /// Backing directory.
    backing: PathBuf,
    /// Where the plaintext goes.
    plaindir: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    tag: TagArgs,
    #[command(flatten)]
    name: NameArgs,
}

/// Arguments of `veil volume pack`.
#[derive(Args)]
pub struct PackArgs {
    /// The plain directory.
    plaindir: PathBuf,
    /// Backing directory (created when missing; an existing volume needs --tag).
    backing: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
    /// The existing volume's recorded tag.
    #[arg(long, value_name = "OLD")]
    tag: Option<String>,
    /// Read the existing volume's tag from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "tag")]
    tag_file: Option<PathBuf>,
    /// Also write the new tag here (write, fsync, rename).
    #[arg(long, value_name = "FILE")]
    tag_out: Option<PathBuf>,
    #[command(flatten)]
    name: NameArgs,
}

/// Arguments of `veil volume mount`.
#[derive(Args)]
pub struct MountArgs {
    /// Backing directory.
    backing: PathBuf,
    /// Mount point.
    mountpoint: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
    /// The recorded tag (without it, the newest state is opened with a warning: no rollback protection).
    #[arg(long, value_name = "HEX")]
    tag: Option<String>,
    /// Read the recorded tag from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "tag")]
    tag_file: Option<PathBuf>,
    /// Write every committed tag here (32 hex + newline; write, fsync, rename).
    #[arg(long, value_name = "FILE")]
    tag_out: Option<PathBuf>,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Allow other users to access the mount.
    #[arg(long)]
    allow_other: bool,
    #[command(flatten)]
    name: NameArgs,
}

/// Arguments of `veil volume ls`.
#[derive(Args)]
pub struct LsArgs {
    /// Backing directory.
    backing: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    tag: TagArgs,
    #[command(flatten)]
    name: NameArgs,
}

/// The volume key, given inline or in a file.
#[derive(Args)]
pub struct KeyArgs {
    /// Volume key (64 hex).
    #[arg(long, value_name = "HEX", required_unless_present = "key_file")]
    key: Option<String>,
    /// Read the volume key from this file (keeps it out of `ps`).
    #[arg(long, value_name = "FILE", conflicts_with = "key")]
    key_file: Option<PathBuf>,
}

/// The recorded tag, given inline or in a file.
#[derive(Args)]
pub struct TagArgs {
    /// The volume's recorded tag (32 hex).
    #[arg(long, value_name = "HEX", required_unless_present = "tag_file")]
    tag: Option<String>,
    /// Read the recorded tag from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "tag")]
    tag_file: Option<PathBuf>,
}

/// How the volume is named in messages and which id it is bound to.
#[derive(Args)]
pub struct NameArgs {
    /// Volume name used in messages (default: the backing directory's name).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The volume id `CAS:SESSION:VOLUME` the volume is bound to (default: empty, standalone).
    #[arg(long, value_name = "CAS:SESSION:VOLUME")]
    id: Option<String>,
}

fn read_key(key: Option<&str>, file: Option<&Path>) -> anyhow::Result<VolumeKey> {
    let s = match (key, file) {
        (Some(k), _) => k.to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading key file {}", f.display()))?,
        (None, None) => bail!("a key is required: --key HEX or --key-file FILE"),
    };
    Ok(VolumeKey::from_hex(&s)?)
}

fn read_tag(tag: Option<&str>, file: Option<&Path>) -> anyhow::Result<Option<Tag>> {
    let s = match (tag, file) {
        (Some(t), _) => t.to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading tag file {}", f.display()))?,
        (None, None) => return Ok(None),
    };
    Ok(Some(s.trim().parse::<Tag>()?))
}

impl KeyArgs {
    fn get(&self) -> anyhow::Result<VolumeKey> {
        read_key(self.key.as_deref(), self.key_file.as_deref())
    }
}

impl TagArgs {
    fn get(&self) -> anyhow::Result<Tag> {
        read_tag(self.tag.as_deref(), self.tag_file.as_deref())?
            .ok_or_else(|| anyhow::anyhow!("a tag is required: --tag HEX or --tag-file FILE"))
    }
}

impl NameArgs {
    fn options(&self, backing: &Path) -> Options {
        let name = self.name.clone().unwrap_or_else(|| {
            std::fs::canonicalize(backing)
                .ok()
                .as_deref()
                .unwrap_or(backing)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "volume".into())
        });
        Options::named(&name)
    }

    fn id(&self) -> anyhow::Result<VolumeId> {
        match &self.id {
            None => Ok(VolumeId::default()),
            Some(s) => {
                let (cas, rest) = s
                    .split_once(':')
                    .context("--id must be CAS:SESSION:VOLUME")?;
                let (session, volume) = rest
                    .rsplit_once(':')
                    .context("--id must be CAS:SESSION:VOLUME")?;
                Ok(VolumeId::new(cas, session, volume))
            }
        }
    }
}

fn print_tag(tag: &Tag) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "tag: {tag}")?;
    out.flush()?;
    Ok(())
}

fn is_empty_dir(p: &Path) -> anyhow::Result<bool> {
    if !p.exists() {
        return Ok(true);
    }
    for e in std::fs::read_dir(p).with_context(|| format!("reading {}", p.display()))? {
        if e?.file_name() != "lock" {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Open the volume in BACKING read-only, exactly at the recorded tag (verify, unpack, ls).
fn open_read_only(
    backing: &Path,
    key: &KeyArgs,
    tag: &TagArgs,
    name: &NameArgs,
) -> anyhow::Result<veil_shield::Volume> {
    Ok(veil_shield::open(
        backing,
        &key.get()?,
        &name.id()?,
        Expect::Tag(tag.get()?),
        Access::ReadOnly,
        name.options(backing),
    )?)
}

/// Run a `veil volume` subcommand.
pub fn run(c: VolumeCmd) -> anyhow::Result<ExitCode> {
    match c {
        VolumeCmd::Create(a) => {
            let CreateArgs {
                backing,
                from,
                key,
                key_file,
                authenticated_only,
                name,
            } = *a;
            let key = match (key.as_deref(), key_file.as_deref()) {
                (None, None) => VolumeKey::generate()?,
                (k, f) => read_key(k, f)?,
            };
            let mut opts = name.options(&backing);
            if authenticated_only {
                opts.protection = Protection::AuthenticatedOnly;
            }
            let (mut vol, mut tag) = veil_shield::create(&backing, &key, &name.id()?, opts)?;
            if let Some(src) = from {
                vol.pack_from(&src)?;
                tag = vol.commit()?;
            }
            {
                let mut out = std::io::stdout().lock();
                writeln!(out, "key: {}", key.to_hex())?;
                out.flush()?;
            }
            print_tag(&tag)?;
            vol.ack(tag)?;
            Ok(ExitCode::SUCCESS)
        }
        VolumeCmd::Verify(a) => {
            let VerifyArgs {
                backing,
                key,
                tag,
                name,
            } = *a;
            let vol = open_read_only(&backing, &key, &tag, &name)?;
            let r = vol.verify()?;
            println!(
                "volume {} verified: {} files, {} directories, {} symlinks, {} bytes in {} chunks; tag {}",
                vol.options().name,
                r.files,
                r.dirs,
                r.symlinks,
                r.bytes,
                r.chunks,
                vol.tag().map(|t| t.to_string()).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        VolumeCmd::Unpack(a) => {
            let UnpackArgs {
                backing,
                plaindir,
                key,
                tag,
                name,
            } = *a;
            let vol = open_read_only(&backing, &key, &tag, &name)?;
            vol.unpack(&plaindir)?;
            Ok(ExitCode::SUCCESS)
        }
        VolumeCmd::Pack(a) => {
            let PackArgs {
                plaindir,
                backing,
                key,
                tag,
                tag_file,
                tag_out,
                name,
            } = *a;
            let key = key.get()?;
            let old = read_tag(tag.as_deref(), tag_file.as_deref())?;
            let opts = name.options(&backing);
            let id = name.id()?;
            let mut vol = match old {
                Some(t) => {
                    veil_shield::open(&backing, &key, &id, Expect::Tag(t), Access::ReadWrite, opts)?
                }
                None if is_empty_dir(&backing)? => {
                    veil_shield::create(&backing, &key, &id, opts)?.0
                }
                None => bail!(
                    "{} already holds a volume: pass its recorded tag with --tag OLD (it is never overwritten blindly)",
                    backing.display()
                ),
            };
            vol.pack_from(&plaindir)?;
            let t = vol.commit()?;
            if let Some(p) = &tag_out {
                veil_shield::fuse::write_tag_file(p, &t)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            print_tag(&t)?;
            vol.ack(t)?;
            Ok(ExitCode::SUCCESS)
        }
        VolumeCmd::Mount(a) => {
            let MountArgs {
                backing,
                mountpoint,
                key,
                tag,
                tag_file,
                tag_out,
                threads,
                allow_other,
                name,
            } = *a;
            let key = key.get()?;
            let expect = match read_tag(tag.as_deref(), tag_file.as_deref())? {
                Some(t) => Expect::Tag(t),
                None => {
                    eprintln!(
                        "warning: no --tag given: opening the newest state of {} without rollback protection",
                        backing.display()
                    );
                    Expect::Newest
                }
            };
            veil_shield::fuse::block_termination_signals()?;
            let vol = veil_shield::open(
                &backing,
                &key,
                &name.id()?,
                expect,
                Access::ReadWrite,
                name.options(&backing),
            )?;
            let opts = MountOptions {
                threads,
                allow_other,
                ..MountOptions::default()
            };
            let mounted =
                veil_shield::fuse::mount(vol, &mountpoint, Box::new(TagFile::new(tag_out)), opts)?;
            eprintln!("mounted {} at {}", backing.display(), mountpoint.display());
            let tag = mounted.serve_until_signal()?;
            print_tag(&tag)?;
            Ok(ExitCode::SUCCESS)
        }
        VolumeCmd::Ls(a) => {
            let LsArgs {
                backing,
                key,
                tag,
                name,
            } = *a;
            let vol = open_read_only(&backing, &key, &tag, &name)?;
            let mut out = std::io::stdout().lock();
            for e in vol.list() {
                let k = match e.kind {
                    Kind::Dir => 'd',
                    Kind::File => 'f',
                    Kind::Symlink => 'l',
                };
                writeln!(out, "{k} {:04o} {:>12} {}", e.mode, e.size, e.path)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
