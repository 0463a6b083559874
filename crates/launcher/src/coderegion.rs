//! The code region (SCONE's FSPF): a read-only, encrypted file tree the launcher verifies and
//! exposes before the program starts (decision 4).
//!
//! * **Backing store**: the directory at the service's `fspf_path`, as a converted image ships it
//!   (built with [`veil_shield::build_deterministic`] or `veil volume create --from DIR`). The path
//!   must be absolute.
//! * **Volume id**: [`region_id`], the empty [`VolumeId`] (no CAS, no session, no volume name):
//!   the image converter builds the region before any CAS or session exists, so the id cannot name
//!   them. The region is bound to its session by its key (`fspf_key`) and its tag (`fspf_tag`),
//!   both of which come only from the attested CAS.
//! * **Opening**: read-only with `Expect::Tag(fspf_tag)` and the CAS's key. Without a tag the
//!   region is refused, except under `fspf_update_policy: no_rollback_protection`, where the newest
//!   state that authenticates under the key is opened. The launcher never records a tag for the
//!   code region (it is never written).
//! * **Exposure**: inside the program's private mount namespace, a launcher-owned tmpfs is mounted
//!   on a fresh staging directory and the region is unpacked into it (every chunk verified; a
//!   failure is fatal with the shield's message naming the chunk and file, and the program does
//!   not start). Each region directory is then bind-mounted read-only at its path: at the first
//!   level where the host path is missing or an empty directory (so region files `/code/app.py`
//!   give a read-only `/code`, while a region under an existing, non-empty `/srv` only covers the
//!   paths it defines below it); region files whose parent exists on the host with content are
//!   bind-mounted one by one. Finally the staging tmpfs is detached and its directory removed, so
//!   only the bind mounts keep it alive. Missing mount points are made on launcher tmpfs, never on
//!   the host, and never through a symbolic link ([`crate::exec::namespace::mount_point`]); the
//!   mounts are undone when the program has exited or as soon as a later step fails
//!   ([`ExposedRegion`] is a drop guard).

use std::path::Path;

use nix::mount::MsFlags;
use veil_api::workload::{CodeRegion, UpdatePolicy};
use veil_shield::{Access, Expect, Options, Volume, VolumeId, VolumeKey};

use crate::error::{LauncherError, err};
use crate::exec::namespace::{MountPoint, Undo, mount_point, staging_tmpfs};

/// The name the code region carries in messages.
pub const CODE_REGION_NAME: &str = "code-region";

/// The shield volume id of every code region (see the module documentation).
pub fn region_id() -> VolumeId {
    VolumeId::default()
}

/// A code region whose metadata has been verified at the CAS's tag; not yet exposed.
pub struct OpenRegion {
    path: String,
    volume: Volume,
}

impl std::fmt::Debug for OpenRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenRegion")
            .field("fspf_path", &self.path)
            .finish_non_exhaustive()
    }
}

fn store_is_empty(dir: &Path) -> Result<bool, LauncherError> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(err(
            format!("Cannot read the code region {}", dir.display()),
            e,
        )),
    }
}

/// Open the code region read-only at the tag the CAS holds. Does not mount anything.
pub fn open_region(region: &CodeRegion) -> Result<OpenRegion, LauncherError> {
    let outer = format!("Cannot verify the code region {}", region.fspf_path);
    let fail = |why: String| LauncherError::chain(vec![outer.clone(), why]);
    let backing = Path::new(&region.fspf_path);
    if !backing.is_absolute() {
        return Err(fail("fspf_path is not an absolute path".into()));
    }
    let key = VolumeKey::from_bytes(*region.fspf_key.expose());
    let expect = match (&region.fspf_tag, region.update_policy) {
        (Some(t), _) => Expect::Tag(*t),
        (None, UpdatePolicy::NoRollbackProtection) => Expect::Newest,
        (None, _) => {
            return Err(fail(
                "CAS holds no tag (fspf_tag) for the code region and its update policy requires one: refused".into(),
            ));
        }
    };
    if store_is_empty(backing)? {
        return Err(fail(
            "the backing store is empty or missing: refused (the code region was deleted or never shipped)".into(),
        ));
    }
    let mut opts = Options::named(CODE_REGION_NAME);
    opts.display_root = String::new();
    let volume = veil_shield::open(backing, &key, &region_id(), expect, Access::ReadOnly, opts)
        .map_err(|e| fail(e.to_string()))?;
    Ok(OpenRegion {
        path: region.fspf_path.clone(),
        volume,
    })
}

/// The code region's mounts in the private namespace: a drop guard (an [`Undo`]) that unmounts
/// them and removes the mount points that were created.
#[derive(Debug, Default)]
pub struct ExposedRegion {
    undo: Undo,
}

impl ExposedRegion {
    /// The paths bind-mounted read-only, in mount order.
    pub fn mounts(&self) -> Vec<&Path> {
        self.undo.mounts().collect()
    }

    /// Unmount everything now (the same as dropping it).
    pub fn cleanup(self) {}
}

impl OpenRegion {
    /// Unpack (verifying every chunk) onto a launcher-owned tmpfs and bind-mount the region's
    /// directories read-only at their paths. Call inside the private mount namespace. On an
    /// error everything placed so far is undone.
    pub fn expose(self) -> Result<ExposedRegion, LauncherError> {
        let outer = format!("Cannot verify the code region {}", self.path);
        let mut ex = ExposedRegion::default();
        let staging = staging_tmpfs("code", &mut ex.undo).map_err(|e| e.context(outer.clone()))?;
        let tree = staging.join("region");
        self.volume
            .unpack(&tree)
            .map_err(|e| err(&outer, e.to_string()))?;
        let expose_outer = format!("Cannot expose the code region {}", self.path);
        place_dir(&tree, Path::new("/"), &mut ex.undo)
            .map_err(|e| e.context(expose_outer.clone()))?;
        // Detach the staging tmpfs: the bind mounts keep the region alive.
        ex.undo
            .release(&staging)
            .map_err(|e| e.context(expose_outer))?;
        Ok(ex)
    }
}

fn is_empty_dir(p: &Path) -> Result<bool, LauncherError> {
    let mut rd = std::fs::read_dir(p).map_err(|e| err(format!("reading {}", p.display()), e))?;
    Ok(rd.next().is_none())
}

fn sorted_entries(dir: &Path) -> Result<Vec<std::ffi::OsString>, LauncherError> {
    let mut names = std::fs::read_dir(dir)
        .map_err(|e| err(format!("reading {}", dir.display()), e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("reading {}", dir.display()), e))?;
    names.sort();
    Ok(names)
}

/// Expose the entries of the unpacked region directory `src` below the host directory `dst`.
fn place_dir(src: &Path, dst: &Path, ex: &mut Undo) -> Result<(), LauncherError> {
    for name in sorted_entries(src)? {
        let s = src.join(&name);
        let d = dst.join(&name);
        let smd = std::fs::symlink_metadata(&s)
            .map_err(|e| err(format!("reading {}", s.display()), e))?;
        let host = match std::fs::symlink_metadata(&d) {
            Ok(md) => Some(md),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(err(format!("inspecting {}", d.display()), e)),
        };
        if host.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
            return Err(LauncherError::new(format!(
                "{} is a symbolic link on the host; the code region does not follow it",
                d.display()
            )));
        }
        if smd.is_dir() {
            match host {
                None => {
                    mount_point(&d, MountPoint::Dir)?;
                    bind_read_only(&s, &d, ex)?;
                }
                Some(m) if m.is_dir() => {
                    if is_empty_dir(&d)? {
                        bind_read_only(&s, &d, ex)?;
                    } else {
                        place_dir(&s, &d, ex)?;
                    }
                }
                Some(_) => {
                    return Err(LauncherError::new(format!(
                        "{} is a directory in the code region but not on the host",
                        d.display()
                    )));
                }
            }
        } else if smd.is_file() {
            match host {
                None => {
                    mount_point(&d, MountPoint::File)?;
                }
                Some(m) if m.is_file() => {}
                Some(_) => {
                    return Err(LauncherError::new(format!(
                        "{} is a file in the code region but not on the host",
                        d.display()
                    )));
                }
            }
            bind_read_only(&s, &d, ex)?;
        } else {
            return Err(LauncherError::new(format!(
                "{} in the code region is neither a file nor a directory and cannot be exposed",
                d.display()
            )));
        }
    }
    Ok(())
}

fn bind_read_only(src: &Path, dst: &Path, ex: &mut Undo) -> Result<(), LauncherError> {
    nix::mount::mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| err(format!("bind-mounting over {}", dst.display()), e))?;
    ex.mounted(dst);
    nix::mount::mount(
        None::<&str>,
        dst,
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| err(format!("making {} read-only", dst.display()), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(path: &str, tag: Option<&str>, policy: UpdatePolicy) -> CodeRegion {
        CodeRegion {
            fspf_path: path.into(),
            fspf_key: veil_types::Key32::from_bytes([0x11; 32]),
            fspf_tag: tag.map(|t| t.parse().expect("tag")),
            update_policy: policy,
        }
    }

    #[test]
    fn refuses_before_touching_anything() {
        let rp = UpdatePolicy::RollbackProtected;
        let tag = "0123456789abcdef0123456789abcdef";
        let e = open_region(&region("rel/fspf", Some(tag), rp)).expect_err("relative");
        assert!(e.to_string().contains("not an absolute path"), "{e}");
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("fspf");
        let ps = p.display().to_string();
        let e = open_region(&region(&ps, None, rp)).expect_err("no tag");
        assert!(e.to_string().contains("no tag (fspf_tag)"), "{e}");
        let e = open_region(&region(&ps, Some(tag), rp)).expect_err("missing");
        assert!(e.to_string().contains("empty or missing"), "{e}");
        // A key that is not 64 hex never reaches the launcher: the region does not parse, and
        // the error does not echo it.
        let bad = serde_json::json!({"fspf_path": ps, "fspf_key": "secret-key-material",
            "fspf_tag": tag, "update_policy": "rollback_protected"});
        let e = serde_json::from_value::<CodeRegion>(bad).expect_err("key");
        assert!(!e.to_string().contains("secret-key-material"), "{e}");
    }

    #[test]
    fn opens_a_deterministic_build_at_its_tag_only() {
        let d = tempfile::tempdir().expect("tmp");
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("code")).expect("mkdir");
        std::fs::write(src.join("code/app.sh"), b"echo hi\n").expect("w");
        let backing = d.path().join("fspf");
        let key = VolumeKey::from_hex(&"11".repeat(32)).expect("key");
        let tag = veil_shield::build_deterministic(
            &src,
            &backing,
            &key,
            &region_id(),
            veil_shield::Protection::Encrypted,
        )
        .expect("build");
        let ps = backing.display().to_string();
        let t = tag.to_string();
        let r = open_region(&region(&ps, Some(&t), UpdatePolicy::RollbackProtected));
        assert!(r.is_ok(), "{r:?}");
        // Without a tag only when the policy waives rollback protection.
        let r = open_region(&region(&ps, None, UpdatePolicy::NoRollbackProtection));
        assert!(r.is_ok(), "{r:?}");
        let other = "0123456789abcdef0123456789abcdef";
        let e = open_region(&region(&ps, Some(other), UpdatePolicy::RollbackProtected))
            .expect_err("wrong tag");
        assert!(e.chain[0].contains("Cannot verify the code region"), "{e}");
    }
}
