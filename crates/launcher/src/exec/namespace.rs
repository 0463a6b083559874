//! The private mount namespace and what the launcher places in it (decision 4).
//!
//! The launcher enters its own mount namespace (`unshare(CLONE_NEWNS)`, plus a user namespace
//! when not root) with all mounts made private, so nothing it mounts is visible on the host, and
//! gives itself a **private root**: a tmpfs mounted over `/` that mirrors the host's top-level
//! entries (each bind-mounted recursively onto a placeholder of its type, symbolic links
//! recreated as links), entered with `chroot`. The launcher writes only into tmpfs it mounted
//! itself, so after a `kill -9` the namespace and everything in it are gone and nothing is left
//! on the host's file system.
//!
//! * **Staging**: each staging tmpfs (program copy, injection files, code region) is mounted on a
//!   fresh directory of the private root (`/.veil-<what>-…`); once its files are bind-mounted at
//!   their paths it is detached and its directory removed ([`Undo::release`]), before the program
//!   starts.
//! * **Mount points** ([`mount_point`]): the path is walked from `/` one component at a time with
//!   `O_PATH | O_NOFOLLOW`; a symbolic link anywhere on it is refused (the launcher never follows
//!   one). Where a component is missing, the deepest existing directory is **mirrored**: a tmpfs
//!   is mounted over it holding a bind mount of each of its entries, so the directory looks the
//!   same and the missing directories and the empty placeholder file are created on that tmpfs.
//!   A directory created by the program directly in a mirrored directory therefore lives in the
//!   namespace only; the entries that existed are the host's own (bind mounts).
//!
//! Every change to the file system is recorded in an [`Undo`] guard as it is made, and undone
//! in reverse order when the guard is dropped: on an error path nothing is cleaned up by hand,
//! and nothing placed survives a failed later step.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};
use veil_api::workload::InjectionFile;
use veil_types::ExposeSecret;

use crate::error::{LauncherError, err};
use crate::exec::plan::check_path;

/// Whether this process is already in its private mount namespace with its private root.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// Device numbers of the tmpfs the launcher mounted as mirrors (the private root included):
/// mount points below them are created directly.
static OWNED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn own(dev: u64) {
    if let Ok(mut o) = OWNED.lock() {
        o.push(dev);
    }
}

fn is_owned(dev: u64) -> bool {
    OWNED.lock().map(|o| o.contains(&dev)).unwrap_or(false)
}

/// Whether [`enter_private_mount_namespace`] has succeeded in this process.
pub fn in_private_namespace() -> bool {
    ENTERED.load(Ordering::SeqCst)
}

/// Enter a private mount namespace (and a user namespace mapping our own uid/gid when not
/// root) with a private root (see the module documentation). Idempotent. Must be called while
/// the process is single-threaded.
pub fn enter_private_mount_namespace() -> Result<(), LauncherError> {
    if ENTERED.load(Ordering::SeqCst) {
        return Ok(());
    }
    let outer = "Cannot create a private mount namespace";
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    if uid.is_root() {
        nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| err(outer, e))?;
    } else {
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
            .map_err(|e| err(outer, e))?;
        let w = |p: &str, s: String| {
            std::fs::write(p, s).map_err(|e| err(outer, format!("writing {p}: {e}")))
        };
        w("/proc/self/setgroups", "deny".into())?;
        w("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        w("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| err(outer, format!("making / private: {e}")))?;
    private_root().map_err(|e| e.context(outer))?;
    ENTERED.store(true, Ordering::SeqCst);
    Ok(())
}

fn open_path(dir: impl AsFd, name: impl AsRef<Path>) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name.as_ref(),
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn open_dir(path: &Path) -> Result<OwnedFd, LauncherError> {
    openat(
        nix::fcntl::AT_FDCWD,
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(format!("opening {}", path.display()), e))
}

/// The `/proc/self/fd/N` path naming exactly the file `fd` refers to (a mount source or target
/// that no symbolic link or rename can redirect).
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Options of a tmpfs standing in for the directory `md`: its mode, and its owner when the
/// launcher is root (in a user namespace only the launcher's own ids are mapped).
fn tmpfs_options(md: &nix::sys::stat::FileStat) -> String {
    let mode = md.st_mode & 0o7777;
    if nix::unistd::geteuid().is_root() {
        format!("mode={mode:o},uid={},gid={}", md.st_uid, md.st_gid)
    } else {
        format!("mode={mode:o}")
    }
}

/// Mount a tmpfs over `/`, mirror the host's top-level entries in it and `chroot` into it; the
/// working directory is kept (by path).
fn private_root() -> Result<(), LauncherError> {
    let cwd = nix::unistd::getcwd().ok();
    let old = open_dir(Path::new("/"))?;
    let md = fstat(&old).map_err(|e| err("inspecting /", e))?;
    nix::mount::mount(
        Some("tmpfs"),
        "/",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(tmpfs_options(&md).as_str()),
    )
    .map_err(|e| err("mounting the private root tmpfs", e))?;
    // A lookup from `/` does not cross a mount stacked on the root itself; `..` at the root
    // does, and lands on the new tmpfs.
    let new = open_dir(Path::new("/.."))?;
    let nmd = fstat(&new).map_err(|e| err("inspecting the private root", e))?;
    if nmd.st_dev == md.st_dev {
        return Err(LauncherError::new(
            "the private root tmpfs is not reachable",
        ));
    }
    own(nmd.st_dev);
    mirror_entries(&old, Path::new("/"), &new)?;
    nix::unistd::fchdir(&new).map_err(|e| err("entering the private root", e))?;
    nix::unistd::chroot(".").map_err(|e| err("entering the private root (chroot)", e))?;
    let back = cwd.as_deref().unwrap_or(Path::new("/"));
    if nix::unistd::chdir(back).is_err() {
        nix::unistd::chdir("/").map_err(|e| err("changing to /", e))?;
    }
    Ok(())
}

/// Populate the tmpfs `new` with a mirror of the directory `old` (shown as `shown`): each entry
/// bind-mounted (recursively) onto a placeholder of its kind, symbolic links recreated.
fn mirror_entries(old: &OwnedFd, shown: &Path, new: &OwnedFd) -> Result<(), LauncherError> {
    let src = fd_path(old);
    let dst = fd_path(new);
    let entries =
        std::fs::read_dir(&src).map_err(|e| err(format!("reading {}", shown.display()), e))?;
    for e in entries {
        let e = e.map_err(|e| err(format!("reading {}", shown.display()), e))?;
        let name = e.file_name();
        let what = || shown.join(&name);
        let ft = e
            .file_type()
            .map_err(|e| err(format!("inspecting {}", what().display()), e))?;
        if ft.is_symlink() {
            let target = std::fs::read_link(src.join(&name))
                .map_err(|e| err(format!("reading the link {}", what().display()), e))?;
            nix::unistd::symlinkat(&target, new, name.as_os_str())
                .map_err(|e| err(format!("mirroring the link {}", what().display()), e))?;
            continue;
        }
        if ft.is_dir() {
            mkdirat(new, name.as_os_str(), Mode::from_bits_truncate(0o755))
        } else {
            openat(
                new,
                name.as_os_str(),
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map(drop)
        }
        .map_err(|e| err(format!("mirroring {}", what().display()), e))?;
        nix::mount::mount(
            Some(&src.join(&name)),
            &dst.join(&name),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| err(format!("mirroring {}", what().display()), e))?;
    }
    Ok(())
}

/// Mirror the host directory `dir` (open as `fd`) on a new tmpfs mounted over it; returns the
/// mirror's directory.
fn mirror(dir: &Path, fd: &OwnedFd) -> Result<OwnedFd, LauncherError> {
    let md = fstat(fd).map_err(|e| err(format!("inspecting {}", dir.display()), e))?;
    nix::mount::mount(
        Some("tmpfs"),
        &fd_path(fd),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(tmpfs_options(&md).as_str()),
    )
    .map_err(|e| err(format!("mounting a tmpfs over {}", dir.display()), e))?;
    let new = open_dir(dir)?;
    let nmd = fstat(&new).map_err(|e| err(format!("inspecting {}", dir.display()), e))?;
    if nmd.st_dev == md.st_dev {
        return Err(LauncherError::new(format!(
            "{} changed while the launcher mirrored it",
            dir.display()
        )));
    }
    own(nmd.st_dev);
    // Children of the covered directory are still reached through its descriptor.
    mirror_entries(fd, dir, &new)?;
    Ok(new)
}

/// What a mount point is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountPoint {
    /// A file (bind-mounted file).
    File,
    /// A directory (a tmpfs, FUSE mount or bind-mounted directory).
    Dir,
}

/// Find or make a mount point of `kind` at the absolute `path` inside the private namespace,
/// never changing the host's file system and never following a symbolic link (see the module
/// documentation). Returns it opened with `O_PATH` (mount on [`fd_path`] of it).
pub fn mount_point(path: &Path, kind: MountPoint) -> Result<OwnedFd, LauncherError> {
    if !in_private_namespace() {
        return Err(LauncherError::new(
            "mount points are made only inside the private mount namespace",
        ));
    }
    let names: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::RootDir => None,
            _ => Some(Err(())),
        })
        .collect::<Result<_, _>>()
        .map_err(|()| {
            LauncherError::new(format!("{} is not a plain absolute path", path.display()))
        })?;
    if !path.is_absolute() || names.is_empty() {
        return Err(LauncherError::new(format!(
            "{} is not a plain absolute path below /",
            path.display()
        )));
    }
    let mut cur = open_dir(Path::new("/"))?;
    let mut shown = PathBuf::from("/");
    for (i, name) in names.iter().enumerate() {
        let last = i + 1 == names.len();
        let next = shown.join(name);
        match open_path(&cur, name) {
            Ok(fd) => {
                let md =
                    fstat(&fd).map_err(|e| err(format!("inspecting {}", next.display()), e))?;
                let fmt = SFlag::from_bits_truncate(md.st_mode & SFlag::S_IFMT.bits());
                if fmt == SFlag::S_IFLNK {
                    return Err(LauncherError::new(format!(
                        "{} is a symbolic link: the launcher does not follow symbolic links when it places {}",
                        next.display(),
                        path.display()
                    )));
                }
                let is_dir = fmt == SFlag::S_IFDIR;
                if (!last || kind == MountPoint::Dir) && !is_dir {
                    return Err(LauncherError::new(format!(
                        "{} is not a directory",
                        next.display()
                    )));
                }
                if last && kind == MountPoint::File && is_dir {
                    return Err(LauncherError::new(format!(
                        "{} is a directory",
                        path.display()
                    )));
                }
                cur = fd;
            }
            Err(Errno::ENOENT) => {
                let md =
                    fstat(&cur).map_err(|e| err(format!("inspecting {}", shown.display()), e))?;
                if !is_owned(md.st_dev) {
                    cur = mirror(&shown, &cur)?;
                }
                return create_below(cur, &shown, &names[i..], kind);
            }
            Err(e) => return Err(err(format!("opening {}", next.display()), e)),
        }
        shown = next;
    }
    Ok(cur)
}

/// Create `names` (directories, then the mount point of `kind`) below `dir`, a launcher tmpfs.
fn create_below(
    mut dir: OwnedFd,
    shown: &Path,
    names: &[&OsStr],
    kind: MountPoint,
) -> Result<OwnedFd, LauncherError> {
    // `O_PATH` descriptors cannot be written through: create relative to a real directory.
    let mut shown = shown.to_path_buf();
    for (i, name) in names.iter().enumerate() {
        shown.push(name);
        let parent = openat(
            &dir,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err(format!("opening {}", shown.display()), e))?;
        let made = if i + 1 < names.len() || kind == MountPoint::Dir {
            mkdirat(&parent, *name, Mode::from_bits_truncate(0o755))
        } else {
            openat(
                &parent,
                *name,
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map(drop)
        };
        made.map_err(|e| err(format!("creating mount point {}", shown.display()), e))?;
        dir =
            open_path(&parent, name).map_err(|e| err(format!("opening {}", shown.display()), e))?;
    }
    Ok(dir)
}

/// One recorded change.
#[derive(Debug)]
enum Step {
    /// A mount at this path (undone with a lazy unmount).
    Mount(PathBuf),
    /// A directory the launcher created (removed only if empty: something else may have been
    /// put there meanwhile).
    Dir(PathBuf),
}

/// A drop guard over changes to the file system: each is recorded right after it is made and
/// undone, last first, when the guard is dropped.
#[derive(Debug, Default)]
pub struct Undo {
    steps: Vec<Step>,
}

impl Undo {
    /// Record a mount at `path`.
    pub fn mounted(&mut self, path: &Path) {
        self.steps.push(Step::Mount(path.to_path_buf()));
    }

    /// Record a created directory.
    pub fn created_dir(&mut self, path: &Path) {
        self.steps.push(Step::Dir(path.to_path_buf()));
    }

    /// The mount at `path` was already undone (a detached staging tmpfs): forget it.
    pub fn unmounted(&mut self, path: &Path) {
        if let Some(i) = self
            .steps
            .iter()
            .rposition(|s| matches!(s, Step::Mount(p) if p == path))
        {
            self.steps.remove(i);
        }
    }

    /// The paths still mounted, in mount order.
    pub fn mounts(&self) -> impl Iterator<Item = &Path> {
        self.steps.iter().filter_map(|s| match s {
            Step::Mount(p) => Some(p.as_path()),
            _ => None,
        })
    }

    /// Detach the staging tmpfs mounted at `staging` now and remove its directory (what was
    /// bind-mounted from it stays alive through those mounts), forgetting both steps.
    pub fn release(&mut self, staging: &Path) -> Result<(), LauncherError> {
        nix::mount::umount2(staging, MntFlags::MNT_DETACH)
            .map_err(|e| err(format!("detaching {}", staging.display()), e))?;
        self.unmounted(staging);
        std::fs::remove_dir(staging)
            .map_err(|e| err(format!("removing {}", staging.display()), e))?;
        if let Some(i) = self
            .steps
            .iter()
            .rposition(|s| matches!(s, Step::Dir(p) if p == staging))
        {
            self.steps.remove(i);
        }
        Ok(())
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        while let Some(step) = self.steps.pop() {
            match step {
                Step::Mount(m) => {
                    if let Err(e) = nix::mount::umount2(&m, MntFlags::MNT_DETACH) {
                        tracing::warn!("cannot unmount {}: {e}", m.display());
                    }
                }
                Step::Dir(d) => {
                    let _ = std::fs::remove_dir(&d);
                }
            }
        }
    }
}

/// A fresh, empty staging directory (mode 0700) in the private root named `/.veil-<what>-…`,
/// recorded in `undo`, with a tmpfs mounted on it (also recorded); [`Undo::release`] detaches
/// and removes it. The error names the failed step; the caller adds its outer message.
pub fn staging_tmpfs(what: &str, undo: &mut Undo) -> Result<PathBuf, LauncherError> {
    if !in_private_namespace() {
        return Err(LauncherError::new(
            "staging tmpfs are made only inside the private mount namespace",
        ));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let staging = PathBuf::from(format!("/.veil-{what}-{}-{nanos:08x}", std::process::id()));
    mkdirat(
        nix::fcntl::AT_FDCWD,
        &staging,
        Mode::from_bits_truncate(0o700),
    )
    .map_err(|e| LauncherError::new(format!("creating {}: {e}", staging.display())))?;
    undo.created_dir(&staging);
    nix::mount::mount(
        Some("tmpfs"),
        &staging,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .map_err(|e| LauncherError::new(format!("mounting a tmpfs: {e}")))?;
    undo.mounted(&staging);
    Ok(staging)
}

/// Injection files placed in the private namespace; dropping it (or [`PlacedFiles::cleanup`])
/// unmounts them and removes the placeholders and directories that were created.
#[derive(Debug, Default)]
pub struct PlacedFiles {
    undo: Undo,
}

impl PlacedFiles {
    /// Undo the placement now (the same as dropping it).
    pub fn cleanup(self) {}
}

/// Place `files` at their paths. Call after [`enter_private_mount_namespace`]. On an error
/// everything placed so far is undone.
pub fn place_files(files: &[InjectionFile]) -> Result<PlacedFiles, LauncherError> {
    let mut placed = PlacedFiles::default();
    if files.is_empty() {
        return Ok(placed);
    }
    let staging = staging_tmpfs("injection", &mut placed.undo)
        .map_err(|e| e.context("Cannot mount the tmpfs for injection files"))?;
    for (i, f) in files.iter().enumerate() {
        place_one(f, &staging.join(i.to_string()), &mut placed.undo)
            .map_err(|e| e.context(format!("Cannot place injection file {}", f.path)))?;
    }
    // Detach the staging tmpfs: the bind mounts keep their files alive.
    placed
        .undo
        .release(&staging)
        .map_err(|e| e.context("Cannot detach the injection tmpfs"))?;
    Ok(placed)
}

fn place_one(f: &InjectionFile, staged: &Path, undo: &mut Undo) -> Result<(), LauncherError> {
    check_path(&f.path)?;
    let target = PathBuf::from(&f.path);
    let mut mem = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(staged)
        .map_err(|e| err("creating the file on the tmpfs", e))?;
    mem.write_all(f.content.expose_secret())
        .map_err(|e| err("writing the content", e))?;
    mem.set_permissions(std::fs::Permissions::from_mode(f.mode & 0o7777))
        .map_err(|e| err("setting the mode", e))?;
    drop(mem);
    // Mount point: the file, or an empty placeholder on a launcher tmpfs (never on the host).
    let point = mount_point(&target, MountPoint::File)?;
    nix::mount::mount(
        Some(staged),
        &fd_path(&point),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| err(format!("bind-mounting over {}", f.path), e))?;
    undo.mounted(&target);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_removes_created_directories_only_when_empty() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        {
            let mut undo = Undo::default();
            std::fs::create_dir(t.join("a")).unwrap();
            undo.created_dir(&t.join("a"));
            assert_eq!(undo.mounts().count(), 0);
        }
        assert!(!t.join("a").exists());
        // A directory that gained foreign content meanwhile is left alone.
        {
            let mut undo = Undo::default();
            std::fs::create_dir(t.join("k")).unwrap();
            undo.created_dir(&t.join("k"));
            std::fs::write(t.join("k/foreign"), b"y").unwrap();
        }
        assert!(t.join("k/foreign").exists());
    }

    #[test]
    fn mount_points_are_refused_outside_the_private_namespace() {
        // This test process never enters it (the executor tests do, in child processes).
        let e = mount_point(Path::new("/tmp/x"), MountPoint::File).unwrap_err();
        assert!(
            e.to_string()
                .contains("only inside the private mount namespace"),
            "{e}"
        );
    }

    #[test]
    fn undo_forgets_a_mount_already_undone() {
        let mut undo = Undo::default();
        undo.mounted(Path::new("/nonexistent/a"));
        undo.mounted(Path::new("/nonexistent/b"));
        undo.unmounted(Path::new("/nonexistent/a"));
        let left: Vec<&Path> = undo.mounts().collect();
        assert_eq!(left, [Path::new("/nonexistent/b")]);
        undo.unmounted(Path::new("/nonexistent/b"));
        assert_eq!(undo.mounts().count(), 0);
    }
}
