//! The in-memory namespace of an opened volume: inodes, names, parents, modes and times, and the
//! operations that change them (create, mkdir, symlink, unlink, rmdir, rename with POSIX
//! replacement rules). Path lookups never follow symlinks; names are checked by [`check_name`].
//! Files' content lives in [`super::data`]; here a file is only a node with a size.

use std::collections::BTreeMap;

use super::{Attr, EntryInfo, FileNode, Ino, Kind, Node, NodeKind, ROOT_INO, Volume};
use crate::crypto;
use crate::{Error, Protection};

/// Check a single path component.
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.len() > 255
    {
        return Err(Error::InvalidName {
            name: name.to_string(),
        });
    }
    Ok(())
}

impl Volume {
    pub(super) fn alloc_ino(&mut self) -> Ino {
        let i = self.next_ino;
        self.next_ino += 1;
        i
    }

    /// The path of `ino` inside the volume (`/a/b`).
    pub fn path_of(&self, ino: Ino) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        let mut guard = 0;
        while cur != ROOT_INO && guard < 4096 {
            match self.nodes.get(&cur) {
                Some(n) => {
                    parts.push(n.name.as_str());
                    cur = n.parent;
                }
                None => break,
            }
            guard += 1;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// The path of `ino` as the program sees it (display root + path), for messages.
    pub fn display_path(&self, ino: Ino) -> String {
        self.display(&self.path_of(ino))
    }

    pub(super) fn display(&self, p: &str) -> String {
        let root = self.opts.display_root.trim_end_matches('/');
        if p == "/" {
            if root.is_empty() {
                "/".into()
            } else {
                root.into()
            }
        } else {
            format!("{root}{p}")
        }
    }

    pub(super) fn not_found(&self, p: &str) -> Error {
        Error::NotFound {
            path: self.display(p),
            volume: self.opts.name.clone(),
        }
    }

    pub(super) fn node(&self, ino: Ino) -> Result<&Node, Error> {
        self.nodes
            .get(&ino)
            .ok_or_else(|| self.not_found(&format!("<inode {ino}>")))
    }

    pub(super) fn node_mut(&mut self, ino: Ino) -> Result<&mut Node, Error> {
        if !self.nodes.contains_key(&ino) {
            return Err(self.not_found(&format!("<inode {ino}>")));
        }
        self.nodes.get_mut(&ino).ok_or(Error::Crypto("unreachable"))
    }

    /// Look `name` up in directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &str) -> Result<Ino, Error> {
        match &self.node(parent)?.kind {
            NodeKind::Dir(ch) => ch.get(name).copied().ok_or_else(|| {
                let pp = self.path_of(parent);
                self.not_found(&if pp == "/" {
                    format!("/{name}")
                } else {
                    format!("{pp}/{name}")
                })
            }),
            _ => Err(Error::NotDir {
                path: self.display_path(parent),
            }),
        }
    }

    /// Resolve an absolute path inside the volume (no symlinks followed).
    pub fn resolve(&self, path: &str) -> Result<Ino, Error> {
        let mut cur = ROOT_INO;
        for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            cur = self.lookup(cur, c)?;
        }
        Ok(cur)
    }

    pub(super) fn split_parent(&self, path: &str) -> Result<(Ino, String), Error> {
        let t = path.trim_end_matches('/');
        let (dir, name) = t.rsplit_once('/').unwrap_or(("", t));
        check_name(name)?;
        Ok((self.resolve(dir)?, name.to_string()))
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: Ino) -> Result<Attr, Error> {
        let n = self.node(ino)?;
        let (kind, size, nlink) = match &n.kind {
            NodeKind::Dir(ch) => (Kind::Dir, 0, 2 + ch.len() as u32),
            NodeKind::File(f) => (Kind::File, f.size, 1),
            NodeKind::Link(t) => (Kind::Symlink, t.len() as u64, 1),
        };
        Ok(Attr {
            ino,
            kind,
            size,
            mode: n.mode,
            mtime: n.mtime,
            ctime: n.ctime,
            nlink,
        })
    }

    /// Change permission bits.
    pub fn set_mode(&mut self, ino: Ino, mode: u32) -> Result<(), Error> {
        self.writable()?;
        let now = self.now();
        let n = self.node_mut(ino)?;
        n.mode = mode & 0o7777;
        n.ctime = now;
        self.meta_dirty = true;
        Ok(())
    }

    /// Set the modification time (ns since the epoch).
    pub fn set_mtime(&mut self, ino: Ino, mtime: i64) -> Result<(), Error> {
        self.writable()?;
        let now = self.now();
        let n = self.node_mut(ino)?;
        n.mtime = mtime;
        n.ctime = now;
        self.meta_dirty = true;
        Ok(())
    }

    /// Entries of directory `ino` (name, inode, kind), sorted by name.
    pub fn readdir(&self, ino: Ino) -> Result<Vec<(String, Ino, Kind)>, Error> {
        match &self.node(ino)?.kind {
            NodeKind::Dir(ch) => Ok(ch
                .iter()
                .map(|(n, i)| {
                    let k = match self.nodes.get(i).map(|n| &n.kind) {
                        Some(NodeKind::Dir(_)) => Kind::Dir,
                        Some(NodeKind::Link(_)) => Kind::Symlink,
                        _ => Kind::File,
                    };
                    (n.clone(), *i, k)
                })
                .collect()),
            _ => Err(Error::NotDir {
                path: self.display_path(ino),
            }),
        }
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: Ino) -> Result<String, Error> {
        match &self.node(ino)?.kind {
            NodeKind::Link(t) => Ok(t.clone()),
            _ => Err(Error::InvalidName {
                name: self.display_path(ino),
            }),
        }
    }

    /// Every entry, depth first, parents before children.
    pub fn list(&self) -> Vec<EntryInfo> {
        let mut out = Vec::new();
        let mut stack = vec![ROOT_INO];
        while let Some(ino) = stack.pop() {
            let Some(n) = self.nodes.get(&ino) else {
                continue;
            };
            let (kind, size) = match &n.kind {
                NodeKind::Dir(ch) => {
                    stack.extend(ch.values().rev());
                    (Kind::Dir, 0)
                }
                NodeKind::File(f) => (Kind::File, f.size),
                NodeKind::Link(t) => (Kind::Symlink, t.len() as u64),
            };
            out.push(EntryInfo {
                path: self.path_of(ino),
                kind,
                size,
                mode: n.mode,
            });
        }
        out
    }

    fn insert_child(&mut self, parent: Ino, name: &str, node: Node) -> Result<Ino, Error> {
        self.writable()?;
        check_name(name)?;
        let pdisplay = self.display_path(parent);
        let exists = match &self.node(parent)?.kind {
            NodeKind::Dir(ch) => ch.contains_key(name),
            _ => return Err(Error::NotDir { path: pdisplay }),
        };
        if exists {
            let p = self.path_of(parent);
            return Err(Error::Exists {
                path: self.display(&format!("{}/{name}", p.trim_end_matches('/'))),
            });
        }
        let ino = self.alloc_ino();
        self.nodes.insert(ino, node);
        let now = self.now();
        let p = self.node_mut(parent)?;
        if let NodeKind::Dir(ch) = &mut p.kind {
            ch.insert(name.to_string(), ino);
        }
        p.mtime = now;
        p.ctime = now;
        self.meta_dirty = true;
        Ok(ino)
    }

    /// Create an empty file in `parent`.
    pub fn create_file(&mut self, parent: Ino, name: &str, mode: u32) -> Result<Ino, Error> {
        let id = if self.det {
            let p = self.path_of(parent);
            let d = self
                .keys
                .derive_det(b"file-id", &[p.as_bytes(), name.as_bytes()]);
            let mut id = [0u8; 16];
            id.copy_from_slice(&d[..16]);
            id
        } else {
            crypto::random::<16>()?
        };
        self.create_file_with_id(parent, name, mode, id, self.opts.protection)
    }

    pub(crate) fn create_file_with_id(
        &mut self,
        parent: Ino,
        name: &str,
        mode: u32,
        id: [u8; 16],
        prot: Protection,
    ) -> Result<Ino, Error> {
        let now = self.now();
        let f = FileNode {
            id,
            prot,
            size: 0,
            generation: 0,
            csize: 0,
            root: crypto::merkle_root(&[]),
            key: self.keys.file_key(&id)?,
            dirty: None,
        };
        self.insert_child(
            parent,
            name,
            Node {
                parent,
                name: name.to_string(),
                mode: mode & 0o7777,
                mtime: now,
                ctime: now,
                kind: NodeKind::File(Box::new(f)),
            },
        )
    }

    /// Create a directory in `parent`.
    pub fn mkdir(&mut self, parent: Ino, name: &str, mode: u32) -> Result<Ino, Error> {
        let now = self.now();
        self.insert_child(
            parent,
            name,
            Node {
                parent,
                name: name.to_string(),
                mode: mode & 0o7777,
                mtime: now,
                ctime: now,
                kind: NodeKind::Dir(BTreeMap::new()),
            },
        )
    }

    /// Create a symlink `name` → `target` in `parent`.
    pub fn symlink(&mut self, parent: Ino, name: &str, target: &str) -> Result<Ino, Error> {
        let now = self.now();
        self.insert_child(
            parent,
            name,
            Node {
                parent,
                name: name.to_string(),
                mode: 0o777,
                mtime: now,
                ctime: now,
                kind: NodeKind::Link(target.to_string()),
            },
        )
    }

    pub(super) fn detach(&mut self, parent: Ino, name: &str) -> Result<Ino, Error> {
        let ino = self.lookup(parent, name)?;
        let now = self.now();
        let p = self.node_mut(parent)?;
        if let NodeKind::Dir(ch) = &mut p.kind {
            ch.remove(name);
        }
        p.mtime = now;
        p.ctime = now;
        self.meta_dirty = true;
        Ok(ino)
    }

    pub(super) fn drop_node(&mut self, ino: Ino) -> Result<(), Error> {
        if let Some(n) = self.nodes.remove(&ino)
            && let NodeKind::File(f) = n.kind
        {
            self.dirty_files.remove(&ino);
            if let Some(d) = f.dirty {
                drop(d.file);
                self.store
                    .remove(&d.object)
                    .map_err(|e| Error::io(format!("removing object {}", d.object), e))?;
            }
            if f.generation > 0 && f.csize > 0 {
                self.dropped
                    .push(self.keys.object_name(&f.id, f.generation));
            }
        }
        Ok(())
    }

    /// Remove a file or symlink.
    pub fn unlink(&mut self, parent: Ino, name: &str) -> Result<(), Error> {
        self.writable()?;
        let ino = self.lookup(parent, name)?;
        if matches!(self.node(ino)?.kind, NodeKind::Dir(_)) {
            return Err(Error::IsDir {
                path: self.display_path(ino),
            });
        }
        self.detach(parent, name)?;
        self.drop_node(ino)
    }

    /// Remove an empty directory.
    pub fn rmdir(&mut self, parent: Ino, name: &str) -> Result<(), Error> {
        self.writable()?;
        let ino = self.lookup(parent, name)?;
        match &self.node(ino)?.kind {
            NodeKind::Dir(ch) if ch.is_empty() => {}
            NodeKind::Dir(_) => {
                return Err(Error::DirNotEmpty {
                    path: self.display_path(ino),
                });
            }
            _ => {
                return Err(Error::NotDir {
                    path: self.display_path(ino),
                });
            }
        }
        self.detach(parent, name)?;
        self.drop_node(ino)
    }

    /// Rename (replacing a file, symlink or empty directory at the destination, as POSIX does).
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
    ) -> Result<(), Error> {
        self.writable()?;
        check_name(newname)?;
        let ino = self.lookup(parent, name)?;
        if !matches!(self.node(newparent)?.kind, NodeKind::Dir(_)) {
            return Err(Error::NotDir {
                path: self.display_path(newparent),
            });
        }
        let src_is_dir = matches!(self.node(ino)?.kind, NodeKind::Dir(_));
        if src_is_dir {
            let mut cur = newparent;
            loop {
                if cur == ino {
                    return Err(Error::Loop {
                        path: self.display_path(ino),
                    });
                }
                if cur == ROOT_INO {
                    break;
                }
                cur = self.node(cur)?.parent;
            }
        }
        if let Ok(existing) = self.lookup(newparent, newname) {
            if existing == ino {
                return Ok(());
            }
            match (&self.node(existing)?.kind, src_is_dir) {
                (NodeKind::Dir(ch), true) if ch.is_empty() => {}
                (NodeKind::Dir(_), true) => {
                    return Err(Error::DirNotEmpty {
                        path: self.display_path(existing),
                    });
                }
                (NodeKind::Dir(_), false) => {
                    return Err(Error::IsDir {
                        path: self.display_path(existing),
                    });
                }
                (_, true) => {
                    return Err(Error::NotDir {
                        path: self.display_path(existing),
                    });
                }
                _ => {}
            }
            self.detach(newparent, newname)?;
            self.drop_node(existing)?;
        }
        self.detach(parent, name)?;
        let now = self.now();
        let np = self.node_mut(newparent)?;
        if let NodeKind::Dir(ch) = &mut np.kind {
            ch.insert(newname.to_string(), ino);
        }
        np.mtime = now;
        np.ctime = now;
        let n = self.node_mut(ino)?;
        n.parent = newparent;
        n.name = newname.to_string();
        n.ctime = now;
        self.meta_dirty = true;
        Ok(())
    }

    /// Remove everything in the volume (used by staged pack before importing a tree).
    pub fn clear(&mut self) -> Result<(), Error> {
        self.writable()?;
        let names: Vec<String> = match &self.node(ROOT_INO)?.kind {
            NodeKind::Dir(ch) => ch.keys().cloned().collect(),
            _ => Vec::new(),
        };
        for n in names {
            let ino = self.detach(ROOT_INO, &n)?;
            let mut stack = vec![ino];
            let mut all = Vec::new();
            while let Some(i) = stack.pop() {
                if let Some(NodeKind::Dir(ch)) = self.nodes.get(&i).map(|n| &n.kind) {
                    stack.extend(ch.values().copied());
                }
                all.push(i);
            }
            for i in all {
                self.drop_node(i)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Access;
    use crate::volume::testutil::{commit_ack, new_volume, objects, reopen};

    #[test]
    fn names_are_single_storable_components() {
        for bad in ["", ".", "..", "a/b", "/", "a\0b", &"x".repeat(256)] {
            assert!(
                matches!(check_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        for good in ["a", "...", ".hidden", "ü n i", &"x".repeat(255)] {
            assert!(check_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn paths_lookup_and_listing() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        let b = v.mkdir_all("/a/b").unwrap();
        let f = v.write_file("/a/b/f", b"12345", 0o100640).unwrap();
        v.symlink_path("/a/l", "b/f").unwrap();
        v.write_file("/z", b"", 0o644).unwrap();
        assert_eq!(v.path_of(f), "/a/b/f");
        assert_eq!(v.path_of(ROOT_INO), "/");
        assert_eq!(v.display_path(f), "/V/a/b/f");
        assert_eq!(v.display_path(ROOT_INO), "/V");
        assert_eq!(v.resolve("/a/./b/f").unwrap(), f);
        assert_eq!(v.resolve("a/b/").unwrap(), b);
        // Symlinks are not followed: `/a/l/x` looks `x` up in a symlink.
        assert!(matches!(v.resolve("/a/l/x"), Err(Error::NotDir { .. })));
        match v.resolve("/a/missing") {
            Err(Error::NotFound { path, volume }) => {
                assert_eq!((path.as_str(), volume.as_str()), ("/V/a/missing", "V"));
            }
            other => panic!("{other:?}"),
        }
        let a = v.resolve("/a").unwrap();
        let names: Vec<(String, Kind)> = v
            .readdir(a)
            .unwrap()
            .into_iter()
            .map(|(n, _, k)| (n, k))
            .collect();
        assert_eq!(
            names,
            [
                ("b".to_string(), Kind::Dir),
                ("l".to_string(), Kind::Symlink)
            ]
        );
        assert_eq!(v.readlink(v.resolve("/a/l").unwrap()).unwrap(), "b/f");
        assert!(v.readlink(f).is_err());
        let attr = v.getattr(f).unwrap();
        assert_eq!(
            (attr.kind, attr.size, attr.mode, attr.nlink),
            (Kind::File, 5, 0o640, 1)
        );
        assert_eq!(v.getattr(a).unwrap().nlink, 4);
        assert_eq!(v.getattr(v.resolve("/a/l").unwrap()).unwrap().size, 3);
        let listed: Vec<String> = v.list().into_iter().map(|e| e.path).collect();
        assert_eq!(listed, ["/", "/a", "/a/b", "/a/b/f", "/a/l", "/z"]);
    }

    #[test]
    fn create_refuses_existing_names_and_non_directories() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        let f = v.write_file("/f", b"x", 0o644).unwrap();
        assert!(
            matches!(v.mkdir(ROOT_INO, "f", 0o755), Err(Error::Exists { path }) if path == "/V/f")
        );
        assert!(matches!(
            v.create_file(f, "x", 0o644),
            Err(Error::NotDir { .. })
        ));
        assert!(matches!(
            v.mkdir(ROOT_INO, "a/b", 0o755),
            Err(Error::InvalidName { .. })
        ));
        assert!(matches!(
            v.mkdir(999, "a", 0o755),
            Err(Error::NotFound { .. })
        ));
        let n = v.mkdir(ROOT_INO, "m", 0o40777).unwrap();
        assert_eq!(v.getattr(n).unwrap().mode, 0o777);
    }

    #[test]
    fn remove_rules() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        v.mkdir_all("/d/e").unwrap();
        v.write_file("/f", b"x", 0o644).unwrap();
        assert!(matches!(v.unlink(ROOT_INO, "d"), Err(Error::IsDir { .. })));
        assert!(matches!(
            v.rmdir(ROOT_INO, "d"),
            Err(Error::DirNotEmpty { .. })
        ));
        assert!(matches!(v.rmdir(ROOT_INO, "f"), Err(Error::NotDir { .. })));
        v.remove("/d/e").unwrap();
        v.remove("/d").unwrap();
        v.remove("/f").unwrap();
        assert!(matches!(v.remove("/f"), Err(Error::NotFound { .. })));
        assert_eq!(v.list().len(), 1);
    }

    #[test]
    fn rename_follows_posix_replacement_rules() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        v.mkdir_all("/a/b").unwrap();
        v.mkdir_all("/full/x").unwrap();
        v.mkdir_all("/empty").unwrap();
        v.write_file("/f", b"old", 0o644).unwrap();
        let g = v.write_file("/g", b"new", 0o644).unwrap();
        assert!(matches!(
            v.rename_path("/a", "/a/b/a"),
            Err(Error::Loop { .. })
        ));
        assert!(matches!(
            v.rename_path("/a", "/a/a2"),
            Err(Error::Loop { .. })
        ));
        assert!(matches!(
            v.rename_path("/a", "/full"),
            Err(Error::DirNotEmpty { .. })
        ));
        assert!(matches!(
            v.rename_path("/f", "/empty"),
            Err(Error::IsDir { .. })
        ));
        assert!(matches!(
            v.rename_path("/a", "/f"),
            Err(Error::NotDir { .. })
        ));
        assert!(matches!(
            v.rename_path("/f", "/g/x"),
            Err(Error::NotDir { .. })
        ));
        // Onto itself: nothing happens.
        v.rename_path("/g", "/g").unwrap();
        assert_eq!(v.read_file("/g").unwrap(), b"new");
        // A file replaces a file; a directory replaces an empty directory.
        v.rename_path("/g", "/f").unwrap();
        assert_eq!(v.resolve("/f").unwrap(), g);
        assert_eq!(v.read_file("/f").unwrap(), b"new");
        assert!(v.resolve("/g").is_err());
        v.rename_path("/a", "/empty").unwrap();
        assert_eq!(v.path_of(v.resolve("/empty/b").unwrap()), "/empty/b");
        assert!(v.resolve("/a").is_err());
        let listed: Vec<String> = v.list().into_iter().map(|e| e.path).collect();
        assert_eq!(
            listed,
            ["/", "/empty", "/empty/b", "/f", "/full", "/full/x"]
        );
    }

    #[test]
    fn replaced_and_cleared_files_drop_their_objects_after_commit() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        v.write_file("/f", b"old", 0o644).unwrap();
        v.write_file("/g", b"new", 0o644).unwrap();
        v.write_file("/e", b"", 0o644).unwrap();
        commit_ack(&mut v);
        assert_eq!(objects(d.path()).len(), 2, "empty files have no object");
        v.rename_path("/g", "/f").unwrap();
        commit_ack(&mut v);
        assert_eq!(objects(d.path()).len(), 1);
        v.mkdir_all("/d").unwrap();
        v.clear().unwrap();
        assert_eq!(v.list().len(), 1);
        let t = commit_ack(&mut v);
        assert!(objects(d.path()).is_empty());
        drop(v);
        let v = reopen(d.path(), t, Access::ReadOnly).unwrap();
        assert_eq!(v.list().len(), 1);
    }

    #[test]
    fn changes_need_a_writable_volume() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        v.write_file("/f", b"x", 0o644).unwrap();
        let t = commit_ack(&mut v);
        drop(v);
        let mut v = reopen(d.path(), t, Access::ReadOnly).unwrap();
        let f = v.resolve("/f").unwrap();
        assert!(matches!(
            v.mkdir(ROOT_INO, "d", 0o755),
            Err(Error::ReadOnly { .. })
        ));
        assert!(matches!(
            v.unlink(ROOT_INO, "f"),
            Err(Error::ReadOnly { .. })
        ));
        assert!(matches!(
            v.rename_path("/f", "/g"),
            Err(Error::ReadOnly { .. })
        ));
        assert!(matches!(v.set_mode(f, 0o600), Err(Error::ReadOnly { .. })));
        assert!(matches!(v.clear(), Err(Error::ReadOnly { .. })));
        assert!(!v.has_changes());
        assert_eq!(v.read_file("/f").unwrap(), b"x");
    }
}
