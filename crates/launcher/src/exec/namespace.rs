//! The private mount namespace and what the launcher places in it (decision 4).
//!
//! The launcher enters its own mount namespace (`unshare(CLONE_NEWNS)`, plus a user namespace
//! when not root) with all mounts made private, so nothing it mounts is visible on the host. A
//! tmpfs is mounted (inside that namespace only) on a fresh, empty staging directory; each
//! injection file is written there with its mode and bind-mounted at its path; then the staging
//! tmpfs is detached, so only the bind mounts keep it alive and the program sees no staging
//! directory. A missing path gets an empty placeholder file (and missing parent directories) as
//! mount point.
//!
//! Every change to the file system is recorded in an [`Undo`] guard as it is made, and undone
//! in reverse order when the guard is dropped: on an error path nothing is cleaned up by hand,
//! and nothing placed survives a failed later step.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use veil_api::workload::InjectionFile;
use veil_types::ExposeSecret;

use crate::error::{LauncherError, err};
use crate::exec::plan::check_path;

/// Enter a private mount namespace (and a user namespace mapping our own uid/gid when not
/// root). Must be called while the process is single-threaded.
pub fn enter_private_mount_namespace() -> Result<(), LauncherError> {
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
    Ok(())
}

/// One recorded change.
#[derive(Debug)]
enum Step {
    /// A mount at this path (undone with a lazy unmount).
    Mount(PathBuf),
    /// A file the launcher created.
    File(PathBuf),
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

    /// Record a created file.
    pub fn created_file(&mut self, path: &Path) {
        self.steps.push(Step::File(path.to_path_buf()));
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

    /// Create the missing directories up to and including `dir`, recording each.
    pub fn create_dirs(&mut self, dir: &Path, mode: u32) -> std::io::Result<()> {
        create_missing_dirs(dir, mode, |d| self.created_dir(&d)).map_err(|(_, e)| e)
    }
}

/// Create the missing directories up to and including `dir`, outermost first, with `mode`,
/// handing each to `created` once made. On failure: the directory that could not be created.
pub fn create_missing_dirs(
    dir: &Path,
    mode: u32,
    mut created: impl FnMut(PathBuf),
) -> Result<(), (PathBuf, std::io::Error)> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(mode).create(&d) {
            Ok(()) => created(d),
            Err(e) => return Err((d, e)),
        }
    }
    Ok(())
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
                Step::File(f) => {
                    if let Err(e) = std::fs::remove_file(&f) {
                        tracing::warn!("cannot remove {}: {e}", f.display());
                    }
                }
                Step::Dir(d) => {
                    let _ = std::fs::remove_dir(&d);
                }
            }
        }
    }
}

/// A fresh, empty staging directory (mode 0700) under `$TMPDIR` named `veil-<what>-…`, recorded
/// in `undo`, with a tmpfs mounted on it (also recorded). The error names the failed step; the
/// caller adds its outer message.
pub fn staging_tmpfs(what: &str, undo: &mut Undo) -> Result<PathBuf, LauncherError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let staging =
        std::env::temp_dir().join(format!("veil-{what}-{}-{nanos:08x}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
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
    nix::mount::umount2(&staging, MntFlags::MNT_DETACH)
        .map_err(|e| err("Cannot detach the injection tmpfs", e))?;
    placed.undo.unmounted(&staging);
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
    // Mount point: create missing directories and an empty placeholder file.
    if let Some(parent) = target.parent() {
        undo.create_dirs(parent, 0o777)
            .map_err(|e| err(format!("creating directory {}", parent.display()), e))?;
    }
    match std::fs::symlink_metadata(&target) {
        Ok(md) if md.is_dir() => {
            return Err(LauncherError::new(format!("{} is a directory", f.path)));
        }
        Ok(_) => {}
        Err(_) => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)
                .map_err(|e| err(format!("creating mount point {}", f.path), e))?;
            undo.created_file(&target);
        }
    }
    nix::mount::mount(
        Some(staged),
        &target,
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
    fn undo_removes_what_was_created_last_first_and_keeps_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        std::fs::write(t.join("host"), b"host").unwrap();
        {
            let mut undo = Undo::default();
            undo.create_dirs(&t.join("a/b/c"), 0o755).unwrap();
            std::fs::write(t.join("a/b/c/f"), b"x").unwrap();
            undo.created_file(&t.join("a/b/c/f"));
            assert!(t.join("a/b/c/f").exists());
            assert_eq!(undo.mounts().count(), 0);
        }
        assert!(!t.join("a").exists());
        assert_eq!(std::fs::read(t.join("host")).unwrap(), b"host");

        // A directory that gained foreign content meanwhile is left alone.
        {
            let mut undo = Undo::default();
            undo.create_dirs(&t.join("k"), 0o755).unwrap();
            std::fs::write(t.join("k/foreign"), b"y").unwrap();
        }
        assert!(t.join("k/foreign").exists());
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
