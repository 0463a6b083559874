//! The image's file tree: layers applied in order into a directory (whiteouts, opaque directories,
//! hard links, symlinks; device files and FIFOs are recorded, not created), and paths resolved
//! inside that tree the way a process in the container would see them (symlinks followed, an
//! absolute target or `..` never leaves the root).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Prefix of a whiteout entry's file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// File name of an opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Most symlinks followed while resolving one path (as Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// An entry path of a layer as an image path (`/a/b`), or why it is refused (`..`, empty).
pub fn normalize(p: &Path) -> Result<String, String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => parts.push(
                n.to_str()
                    .ok_or_else(|| format!("{} is not UTF-8", p.display()))?
                    .to_string(),
            ),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("{} leaves the image root", p.display()));
            }
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// True when image path `p` is `dir` or below it.
pub fn is_at_or_under(p: &str, dir: &str) -> bool {
    p == dir || is_under(p, dir)
}

/// True when image path `p` is strictly below `dir`.
pub fn is_under(p: &str, dir: &str) -> bool {
    if dir == "/" {
        return p != "/";
    }
    p.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Where `image_path` leads inside `root`: symlinks followed (the last one only when
/// `follow_last`), clamped at the root. Returns the image path it resolves to.
pub fn resolve(root: &Path, image_path: &str, follow_last: bool) -> Result<String, String> {
    let mut todo: Vec<OsString> = Path::new(image_path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .rev()
        .collect();
    let mut cur: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            cur.pop();
            continue;
        }
        let mut host = root.to_path_buf();
        host.extend(&cur);
        host.push(&name);
        let is_last = todo.is_empty();
        match fs::symlink_metadata(&host) {
            Ok(md) if md.file_type().is_symlink() && (!is_last || follow_last) => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(format!("{image_path}: too many levels of symbolic links"));
                }
                let target = fs::read_link(&host).map_err(|e| format!("{image_path}: {e}"))?;
                if target.is_absolute() {
                    cur.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push(OsString::from("..")),
                        _ => {}
                    }
                }
            }
            _ => cur.push(name),
        }
    }
    let parts: Vec<String> = cur
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    Ok(format!("/{}", parts.join("/")))
}

/// The host path of an image path inside `root` (no resolution).
pub fn host(root: &Path, image_path: &str) -> PathBuf {
    root.join(image_path.trim_start_matches('/'))
}

/// The image's file tree in a directory, built layer by layer.
pub struct RootFs {
    root: PathBuf,
    /// Device files and FIFOs in the final tree (they are not created).
    pub specials: BTreeSet<String>,
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl RootFs {
    /// An empty tree in `root` (created).
    pub fn new(root: PathBuf) -> std::io::Result<Self> {
        fs::create_dir_all(&root)?;
        Ok(Self {
            root,
            specials: BTreeSet::new(),
        })
    }

    /// The directory holding the tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The parent of `image_path` resolved inside the tree, created as directories where missing;
    /// returns the host path of the entry itself (its last component not followed).
    fn place(&self, image_path: &str) -> Result<(String, PathBuf), String> {
        let (parent, name) = image_path
            .rsplit_once('/')
            .ok_or_else(|| format!("{image_path}: not an absolute path"))?;
        let parent = resolve(
            &self.root,
            if parent.is_empty() { "/" } else { parent },
            true,
        )?;
        let hp = host(&self.root, &parent);
        match fs::symlink_metadata(&hp) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{image_path}: its parent {parent} is not a directory"
                ));
            }
            Err(_) => fs::create_dir_all(&hp).map_err(|e| format!("{parent}: {e}"))?,
        }
        let full = if parent == "/" {
            format!("/{name}")
        } else {
            format!("{parent}/{name}")
        };
        Ok((full.clone(), host(&self.root, &full)))
    }

    /// Apply one uncompressed layer tar; returns the image paths of its entries (whiteouts as
    /// they are named in the layer).
    pub fn apply<R: Read>(&mut self, layer: R) -> Result<Vec<String>, String> {
        let mut archive = tar::Archive::new(layer);
        let mut seen = Vec::new();
        let entries = archive.entries().map_err(|e| e.to_string())?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("corrupt tar: {e}"))?;
            let raw = entry.path().map_err(|e| e.to_string())?.into_owned();
            let path = normalize(&raw)?;
            if path == "/" {
                continue;
            }
            seen.push(path.clone());
            let name = path.rsplit('/').next().unwrap_or_default().to_string();
            if name == OPAQUE_MARKER {
                let dir = path.trim_end_matches(OPAQUE_MARKER).trim_end_matches('/');
                let dir = if dir.is_empty() { "/" } else { dir };
                let real = resolve(&self.root, dir, true)?;
                let hp = host(&self.root, &real);
                if let Ok(rd) = fs::read_dir(&hp) {
                    for e in rd {
                        let e = e.map_err(|e| format!("{dir}: {e}"))?;
                        remove_any(&e.path()).map_err(|e| format!("{dir}: {e}"))?;
                    }
                }
                self.specials.retain(|s| !is_under(s, &real));
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                let target = format!("{}{hidden}", path.trim_end_matches(name.as_str()));
                let (real, hp) = self.place(&target)?;
                remove_any(&hp).map_err(|e| format!("{target}: {e}"))?;
                self.specials.retain(|s| !is_at_or_under(s, &real));
                continue;
            }
            let (real, hp) = self.place(&path)?;
            let kind = entry.header().entry_type();
            let mode = entry.header().mode().map_err(|e| format!("{path}: {e}"))? & 0o7777;
            let err = |e: std::io::Error| format!("{path}: {e}");
            self.specials.remove(&real);
            match kind {
                tar::EntryType::Directory => {
                    match fs::symlink_metadata(&hp) {
                        Ok(md) if md.is_dir() => {}
                        _ => {
                            remove_any(&hp).map_err(err)?;
                            fs::create_dir(&hp).map_err(err)?;
                        }
                    }
                    fs::set_permissions(&hp, fs::Permissions::from_mode(mode | 0o700))
                        .map_err(err)?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    remove_any(&hp).map_err(err)?;
                    let mut f = fs::File::create(&hp).map_err(err)?;
                    std::io::copy(&mut entry, &mut f).map_err(err)?;
                    fs::set_permissions(&hp, fs::Permissions::from_mode(mode)).map_err(err)?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(err)?
                        .ok_or_else(|| format!("{path}: symlink without a target"))?;
                    remove_any(&hp).map_err(err)?;
                    std::os::unix::fs::symlink(&target, &hp).map_err(err)?;
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(err)?
                        .ok_or_else(|| format!("{path}: hard link without a target"))?;
                    let target = normalize(&target)?;
                    let treal = resolve(&self.root, &target, false)?;
                    let th = host(&self.root, &treal);
                    if !fs::symlink_metadata(&th).is_ok_and(|m| !m.is_dir()) {
                        return Err(format!(
                            "{path}: hard link to {target}, which is not in the image"
                        ));
                    }
                    if th != hp {
                        remove_any(&hp).map_err(err)?;
                        fs::hard_link(&th, &hp).map_err(err)?;
                    }
                    if self.specials.contains(&treal) {
                        self.specials.insert(real);
                    }
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    remove_any(&hp).map_err(err)?;
                    self.specials.insert(real);
                }
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
                other => return Err(format!("{path}: unsupported tar entry type {other:?}")),
            }
        }
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_and_prefixes() {
        assert_eq!(normalize(Path::new("./a/b")).unwrap(), "/a/b");
        assert_eq!(normalize(Path::new("a/b/")).unwrap(), "/a/b");
        assert!(normalize(Path::new("a/../../etc")).is_err());
        assert!(is_under("/code/x", "/code"));
        assert!(!is_under("/code", "/code"));
        assert!(!is_under("/codex/y", "/code"));
        assert!(is_at_or_under("/code", "/code"));
        assert!(is_under("/x", "/"));
    }

    #[test]
    fn resolve_stays_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        fs::write(r.join("usr/bin/busybox"), b"x").unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        std::os::unix::fs::symlink("busybox", r.join("usr/bin/sh")).unwrap();
        std::os::unix::fs::symlink("/../../../etc", r.join("escape")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert_eq!(resolve(r, "/bin/sh", true).unwrap(), "/usr/bin/busybox");
        assert_eq!(resolve(r, "/bin/sh", false).unwrap(), "/usr/bin/sh");
        assert_eq!(resolve(r, "/escape/passwd", true).unwrap(), "/etc/passwd");
        assert_eq!(resolve(r, "/../../x", true).unwrap(), "/x");
        assert!(resolve(r, "/loop", true).is_err());
    }
}
