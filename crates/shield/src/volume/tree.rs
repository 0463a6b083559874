//! The in-memory namespace of an opened volume: inodes, names, parents, modes and times, and the
//! operations that change them (create, mkdir, symlink, unlink, rmdir, rename with POSIX
//! replacement rules). Path lookups never follow symlinks; names are checked by [`check_name`].
//! Files' content lives in [`super::data`]; here a file is only a node with a size.

use std::collections::BTreeMap;

use super::{Attr, EntryInfo, FileNode, Ino, Kind, Node, NodeKind, ROOT_INO, RenameMode, Volume};
use crate::crypto;
use crate::{Error, Protection};

/// Check a single path component (in its stored form, see [`crate::name_from_bytes`]).
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || !crate::names::is_valid_name(name)
    {
        return Err(Error::InvalidName {
            name: name.to_string(),
        });
    }
    // NAME_MAX counts the bytes the program sees.
    let len = crate::name_to_bytes(name).map_or(name.len(), |b| b.len());
    if len > 255 {
        return Err(Error::NameTooLong {
            name: name.chars().take(64).collect(),
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
        let p = self.display(&self.path_of(ino));
        if self.orphans.contains(&ino) {
            format!("{p} (deleted)")
        } else {
            p
        }
    }

    pub(super) fn display(&self, p: &str) -> String {
        // Bytes of names that are not UTF-8 show as `\xNN` (never a raw NUL in a message).
        let escaped;
        let p = if p.contains('\0') {
            escaped = p.replace('\0', "\\x");
            escaped.as_str()
        } else {
            p
        };
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
        let links = if self.orphans.contains(&ino) {
            0
        } else {
            1 + n.links.len() as u32
        };
        let (kind, size, nlink) = match &n.kind {
            NodeKind::Dir(ch) => {
                let subdirs = ch
                    .values()
                    .filter(|i| {
                        matches!(self.nodes.get(i).map(|c| &c.kind), Some(NodeKind::Dir(_)))
                    })
                    .count();
                (Kind::Dir, 0, 2 + subdirs as u32)
            }
            NodeKind::File(f) => (Kind::File, f.size, links),
            NodeKind::Link(t) => (Kind::Symlink, t.len() as u64, links),
        };
        Ok(Attr {
            ino,
            kind,
            size,
            mode: n.mode,
            mtime: n.mtime,
            ctime: n.ctime,
            nlink,
            atime: n.atime.unwrap_or(n.mtime),
            uid: n.uid,
            gid: n.gid,
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

    /// Clear the set-user-ID bit, the set-group-ID bit of a group-executable file and the
    /// `security.capability` attribute of a regular file, as Linux does when a file is written or
    /// truncated by someone without `CAP_FSETID`, or changes owner. Returns whether anything changed.
    pub fn kill_suid(&mut self, ino: Ino) -> Result<bool, Error> {
        self.writable()?;
        let now = self.now();
        let n = self.node_mut(ino)?;
        if !matches!(n.kind, NodeKind::File(_)) {
            return Ok(false);
        }
        let mut kill = libc::S_ISUID;
        if n.mode & libc::S_IXGRP != 0 {
            kill |= libc::S_ISGID;
        }
        let had_cap = n.xattrs.remove("security.capability").is_some();
        if n.mode & kill == 0 && !had_cap {
            return Ok(false);
        }
        n.mode &= !kill;
        n.ctime = now;
        self.meta_dirty = true;
        Ok(true)
    }

    /// Change owner and/or group (`chown`; the caller checks who may).
    pub fn set_owner(&mut self, ino: Ino, uid: Option<u32>, gid: Option<u32>) -> Result<(), Error> {
        self.writable()?;
        let now = self.now();
        let n = self.node_mut(ino)?;
        if uid.is_some() {
            n.uid = uid;
        }
        if gid.is_some() {
            n.gid = gid;
        }
        n.ctime = now;
        self.meta_dirty = true;
        Ok(())
    }

    /// Set the modification time (ns since the epoch).
    pub fn set_mtime(&mut self, ino: Ino, mtime: i64) -> Result<(), Error> {
        self.set_times(ino, None, Some(mtime))
    }

    /// Set the access and/or modification time (ns since the epoch), as `utimensat` does; the
    /// change time becomes now.
    pub fn set_times(
        &mut self,
        ino: Ino,
        atime: Option<i64>,
        mtime: Option<i64>,
    ) -> Result<(), Error> {
        self.writable()?;
        let now = self.now();
        let n = self.node_mut(ino)?;
        if let Some(m) = mtime {
            // An access time that only followed the old modification time keeps its value.
            if n.atime.is_none() && atime.is_none() {
                n.atime = Some(n.mtime);
            }
            n.mtime = m;
        }
        if let Some(a) = atime {
            n.atime = Some(a);
        }
        if n.atime == Some(n.mtime) {
            n.atime = None;
        }
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
        let mut stack = vec![(ROOT_INO, "/".to_string())];
        while let Some((ino, path)) = stack.pop() {
            let Some(n) = self.nodes.get(&ino) else {
                continue;
            };
            let (kind, size) = match &n.kind {
                NodeKind::Dir(ch) => {
                    let base = path.trim_end_matches('/');
                    stack.extend(ch.iter().rev().map(|(c, i)| (*i, format!("{base}/{c}"))));
                    (Kind::Dir, 0)
                }
                NodeKind::File(f) => (Kind::File, f.size),
                NodeKind::Link(t) => (Kind::Symlink, t.len() as u64),
            };
            out.push(EntryInfo {
                path,
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
            Node::new(parent, name, mode, now, NodeKind::File(Box::new(f))),
        )
    }

    /// Create a directory in `parent`.
    pub fn mkdir(&mut self, parent: Ino, name: &str, mode: u32) -> Result<Ino, Error> {
        let now = self.now();
        self.insert_child(
            parent,
            name,
            Node::new(parent, name, mode, now, NodeKind::Dir(BTreeMap::new())),
        )
    }

    /// Create a symlink `name` → `target` in `parent`.
    pub fn symlink(&mut self, parent: Ino, name: &str, target: &str) -> Result<Ino, Error> {
        let now = self.now();
        self.insert_child(
            parent,
            name,
            Node::new(parent, name, 0o777, now, NodeKind::Link(target.to_string())),
        )
    }

    /// Remove the directory entry `name` of `parent` (the node itself is not touched).
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

    /// Add the directory entry `name` → `ino` to `parent` (which must not have it).
    fn attach(&mut self, parent: Ino, name: &str, ino: Ino) -> Result<(), Error> {
        let now = self.now();
        let p = self.node_mut(parent)?;
        if let NodeKind::Dir(ch) = &mut p.kind {
            ch.insert(name.to_string(), ino);
        }
        p.mtime = now;
        p.ctime = now;
        self.meta_dirty = true;
        Ok(())
    }

    /// The link (`from_parent`, `from_name`) of `ino` is now called (`to_parent`, `to_name`).
    fn relink(&mut self, ino: Ino, from: (Ino, &str), to: (Ino, &str)) -> Result<(), Error> {
        let now = self.now();
        let n = self.node_mut(ino)?;
        if n.parent == from.0 && n.name == from.1 {
            n.parent = to.0;
            n.name = to.1.to_string();
        } else if let Some(l) = n
            .links
            .iter_mut()
            .find(|(p, name)| *p == from.0 && name == from.1)
        {
            *l = (to.0, to.1.to_string());
        }
        n.ctime = now;
        Ok(())
    }

    /// `ino` lost its link (`parent`, `name`) (the directory entry is already gone). Its last link
    /// gone, a node still open becomes an orphan (kept until its last close), any other is dropped.
    fn unlink_name(&mut self, ino: Ino, parent: Ino, name: &str) -> Result<(), Error> {
        let now = self.now();
        let n = self.node_mut(ino)?;
        n.ctime = now;
        let is_dir = matches!(n.kind, NodeKind::Dir(_));
        let last = if n.parent == parent && n.name == name {
            if n.links.is_empty() {
                true
            } else {
                let (p, nm) = n.links.remove(0);
                n.parent = p;
                n.name = nm;
                false
            }
        } else {
            n.links.retain(|(p, nm)| !(*p == parent && nm == name));
            false
        };
        if !last {
            return Ok(());
        }
        if !is_dir && self.opens.get(&ino).is_some_and(|c| *c > 0) {
            self.orphans.insert(ino);
            Ok(())
        } else {
            self.drop_node(ino)
        }
    }

    pub(super) fn drop_node(&mut self, ino: Ino) -> Result<(), Error> {
        self.orphans.remove(&ino);
        self.opens.remove(&ino);
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
                // The next commit makes the object garbage (the committed state may still use it).
                self.meta_dirty = true;
            }
        }
        Ok(())
    }

    /// A handle on file `ino` was opened (FUSE `open`/`create`): the file is kept while any
    /// handle is open, even when its last name is removed.
    pub fn open_handle(&mut self, ino: Ino) -> Result<(), Error> {
        self.node(ino)?;
        *self.opens.entry(ino).or_insert(0) += 1;
        Ok(())
    }

    /// A handle on `ino` was closed (FUSE `release`). At the last close a partial chunk is sealed
    /// and the object closed ([`Volume::release`]); a file without a name is dropped then.
    pub fn close_handle(&mut self, ino: Ino) -> Result<(), Error> {
        let left = match self.opens.get_mut(&ino) {
            Some(c) => {
                *c = c.saturating_sub(1);
                *c
            }
            None => 0,
        };
        if left > 0 {
            return Ok(());
        }
        self.opens.remove(&ino);
        if self.orphans.contains(&ino) {
            return self.drop_node(ino);
        }
        if self.nodes.contains_key(&ino) && self.access == crate::Access::ReadWrite {
            self.release(ino)?;
        }
        Ok(())
    }

    /// Number of files unlinked while open and not yet closed.
    pub fn open_unlinked(&self) -> usize {
        self.orphans.len()
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
        self.unlink_name(ino, parent, name)
    }

    /// Add the hard link `newname` in `newparent` to the file or symlink `ino`.
    pub fn link(&mut self, ino: Ino, newparent: Ino, newname: &str) -> Result<Ino, Error> {
        self.writable()?;
        check_name(newname)?;
        match self.node(ino)?.kind {
            NodeKind::Dir(_) => {
                return Err(Error::Unsupported {
                    what: format!("a hard link to the directory {}", self.display_path(ino)),
                    volume: self.opts.name.clone(),
                });
            }
            _ if self.orphans.contains(&ino) => {
                return Err(self.not_found(&self.path_of(ino)));
            }
            _ => {}
        }
        let exists = match &self.node(newparent)?.kind {
            NodeKind::Dir(ch) => ch.contains_key(newname),
            _ => {
                return Err(Error::NotDir {
                    path: self.display_path(newparent),
                });
            }
        };
        if exists {
            let p = self.path_of(newparent);
            return Err(Error::Exists {
                path: self.display(&format!("{}/{newname}", p.trim_end_matches('/'))),
            });
        }
        self.attach(newparent, newname, ino)?;
        let now = self.now();
        let n = self.node_mut(ino)?;
        n.links.push((newparent, newname.to_string()));
        n.ctime = now;
        Ok(ino)
    }

    /// Add a hard link at `to` to the file or symlink at `from` (paths inside the volume).
    pub fn link_path(&mut self, from: &str, to: &str) -> Result<Ino, Error> {
        let ino = self.resolve(from)?;
        let (parent, name) = self.split_parent(to)?;
        self.link(ino, parent, &name)
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

    /// Whether directory `dir` is `ancestor` or lies below it.
    fn is_within(&self, dir: Ino, ancestor: Ino) -> Result<bool, Error> {
        let mut cur = dir;
        let mut guard = 0usize;
        loop {
            if cur == ancestor {
                return Ok(true);
            }
            if cur == ROOT_INO || guard > self.nodes.len() {
                return Ok(false);
            }
            cur = self.node(cur)?.parent;
            guard += 1;
        }
    }

    /// Rename (replacing a file, symlink or empty directory at the destination, as POSIX does).
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
    ) -> Result<(), Error> {
        self.rename_with(parent, name, newparent, newname, RenameMode::Replace)
    }

    /// Rename as `renameat2` does: replacing the destination ([`RenameMode::Replace`]), refusing
    /// an existing one ([`RenameMode::NoReplace`], `EEXIST`), or swapping both names atomically
    /// ([`RenameMode::Exchange`]; both must exist).
    pub fn rename_with(
        &mut self,
        parent: Ino,
        name: &str,
        newparent: Ino,
        newname: &str,
        mode: RenameMode,
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
        if src_is_dir && self.is_within(newparent, ino)? {
            return Err(Error::Loop {
                path: self.display_path(ino),
            });
        }
        let existing = match self.lookup(newparent, newname) {
            Ok(e) => Some(e),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        if mode == RenameMode::Exchange {
            let Some(other) = existing else {
                let p = self.path_of(newparent);
                return Err(self.not_found(&format!("{}/{newname}", p.trim_end_matches('/'))));
            };
            if other == ino {
                return Ok(());
            }
            if matches!(self.node(other)?.kind, NodeKind::Dir(_))
                && self.is_within(parent, other)?
            {
                return Err(Error::Loop {
                    path: self.display_path(other),
                });
            }
            self.detach(parent, name)?;
            self.detach(newparent, newname)?;
            self.attach(parent, name, other)?;
            self.attach(newparent, newname, ino)?;
            self.relink(ino, (parent, name), (newparent, newname))?;
            self.relink(other, (newparent, newname), (parent, name))?;
            return Ok(());
        }
        if let Some(existing) = existing {
            if existing == ino {
                return Ok(());
            }
            if mode == RenameMode::NoReplace {
                return Err(Error::Exists {
                    path: self.display_path(existing),
                });
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
            self.unlink_name(existing, newparent, newname)?;
        }
        self.detach(parent, name)?;
        self.attach(newparent, newname, ino)?;
        self.relink(ino, (parent, name), (newparent, newname))
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
    use crate::RenameMode;
    use crate::volume::testutil::{commit_ack, new_volume, objects, reopen};

    #[test]
    fn names_are_single_storable_components() {
        for bad in ["", ".", "..", "a/b", "/", "a\0b", "\x0041", "a\0f"] {
            assert!(
                matches!(check_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        let long = check_name(&"x".repeat(256)).unwrap_err();
        assert_eq!(long.errno(), libc::ENAMETOOLONG, "{long}");
        let escaped = crate::name_from_bytes(&[0xff; 255]);
        for good in [
            "a",
            "...",
            ".hidden",
            "ü n i",
            &"x".repeat(255),
            "\0ff",
            &escaped,
        ] {
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
        assert_eq!(v.getattr(a).unwrap().nlink, 3, "2 + one subdirectory");
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

    #[test]
    fn files_unlinked_while_open_live_until_the_last_close() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        let f = v.write_file("/f", b"committed", 0o644).unwrap();
        commit_ack(&mut v);
        let committed = objects(d.path());
        assert_eq!(committed.len(), 1);
        v.open_handle(f).unwrap();
        v.open_handle(f).unwrap();
        v.unlink(ROOT_INO, "f").unwrap();
        assert!(v.resolve("/f").is_err(), "no longer reachable by name");
        assert_eq!(v.getattr(f).unwrap().nlink, 0);
        assert_eq!(v.open_unlinked(), 1);
        assert_eq!(v.read(f, 0, 100).unwrap(), b"committed");
        v.write(f, 9, b" and more").unwrap();
        v.truncate(f, 13).unwrap();
        assert_eq!(v.read_all(f).unwrap(), b"committed and");
        assert!(v.display_path(f).ends_with("(deleted)"));
        // A name cannot be given back to it (ENOENT, as Linux answers for nlink 0).
        assert_eq!(
            v.link(f, ROOT_INO, "again").map_err(|e| e.errno()).err(),
            Some(libc::ENOENT)
        );
        // A commit does not contain it, and never writes its data.
        let t = commit_ack(&mut v);
        assert_eq!(v.read_all(f).unwrap(), b"committed and");
        assert!(objects(d.path()).contains(&committed[0]), "still read from");
        v.close_handle(f).unwrap();
        assert_eq!(v.read(f, 0, 4).unwrap(), b"comm", "one handle left");
        v.close_handle(f).unwrap();
        assert!(v.getattr(f).is_err());
        assert_eq!(v.open_unlinked(), 0);
        assert!(
            v.has_changes(),
            "its old object becomes garbage at the next commit"
        );
        let t2 = commit_ack(&mut v);
        assert_ne!(t, t2);
        assert!(objects(d.path()).is_empty(), "space reclaimed");
        drop(v);
        let v = reopen(d.path(), t2, Access::ReadOnly).unwrap();
        assert_eq!(v.list().len(), 1);
    }

    #[test]
    fn an_open_unlinked_file_left_by_a_crash_is_reclaimed_at_open() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        let f = v.write_file("/tmp", b"old", 0o644).unwrap();
        v.write_file("/keep", b"keep", 0o644).unwrap();
        commit_ack(&mut v);
        v.open_handle(f).unwrap();
        v.unlink(ROOT_INO, "tmp").unwrap();
        v.write(f, 0, &[7u8; 50_000]).unwrap();
        let t = commit_ack(&mut v);
        assert_eq!(
            objects(d.path()).len(),
            3,
            "keep, the old and the new object of /tmp"
        );
        // Crash: the handle is never closed.
        drop(v);
        let v = reopen(d.path(), t, Access::ReadWrite).unwrap();
        assert_eq!(objects(d.path()).len(), 1, "only /keep's object is left");
        assert_eq!(v.read_file("/keep").unwrap(), b"keep");
        assert!(v.resolve("/tmp").is_err());
        assert_eq!(v.tag(), Some(t));
    }

    #[test]
    fn rename_over_an_open_file_keeps_it_readable() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        let old = v.write_file("/db", b"old", 0o644).unwrap();
        let new = v.write_file("/db.new", b"new", 0o644).unwrap();
        commit_ack(&mut v);
        v.open_handle(old).unwrap();
        v.rename_path("/db.new", "/db").unwrap();
        assert_eq!(v.resolve("/db").unwrap(), new);
        assert_eq!(v.read_all(old).unwrap(), b"old");
        assert_eq!(v.getattr(old).unwrap().nlink, 0);
        v.close_handle(old).unwrap();
        assert!(v.getattr(old).is_err());
        let t = commit_ack(&mut v);
        assert_eq!(objects(d.path()).len(), 1);
        drop(v);
        let v = reopen(d.path(), t, Access::ReadOnly).unwrap();
        assert_eq!(v.read_file("/db").unwrap(), b"new");
    }

    #[test]
    fn hard_links_share_one_inode_and_count_their_names() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        v.mkdir_all("/a/b").unwrap();
        let f = v.write_file("/a/f", b"shared", 0o640).unwrap();
        let l = v.symlink_path("/a/s", "f").unwrap();
        assert_eq!(v.link_path("/a/f", "/a/b/g").unwrap(), f);
        v.link_path("/a/f", "/h").unwrap();
        v.link_path("/a/s", "/s2").unwrap();
        assert_eq!(v.getattr(f).unwrap().nlink, 3);
        assert_eq!(v.getattr(l).unwrap().nlink, 2);
        let errno = |r: Result<Ino, Error>| r.map_err(|e| e.errno()).err();
        assert_eq!(errno(v.link_path("/a", "/a2")), Some(libc::EPERM));
        assert_eq!(errno(v.link_path("/a/f", "/h")), Some(libc::EEXIST));
        assert_eq!(errno(v.link_path("/nope", "/x")), Some(libc::ENOENT));
        v.write(v.resolve("/h").unwrap(), 0, b"SH").unwrap();
        assert_eq!(v.read_file("/a/b/g").unwrap(), b"SHared");
        // Removing the first name moves the node's path to another one.
        v.remove("/a/f").unwrap();
        assert_eq!(v.getattr(f).unwrap().nlink, 2);
        assert_eq!(v.path_of(f), "/a/b/g");
        // Renaming one link onto another of the same file does nothing (POSIX).
        v.rename_path("/h", "/a/b/g").unwrap();
        assert_eq!(v.getattr(f).unwrap().nlink, 2);
        v.rename_path("/h", "/h2").unwrap();
        let t = commit_ack(&mut v);
        drop(v);
        let mut v = reopen(d.path(), t, Access::ReadWrite).unwrap();
        let f = v.resolve("/a/b/g").unwrap();
        assert_eq!(v.resolve("/h2").unwrap(), f);
        assert_eq!(v.getattr(f).unwrap().nlink, 2);
        assert_eq!(v.getattr(v.resolve("/s2").unwrap()).unwrap().nlink, 2);
        assert_eq!(v.read_file("/h2").unwrap(), b"SHared");
        assert_eq!(v.getattr(f).unwrap().mode, 0o640);
        let listed: Vec<String> = v.list().into_iter().map(|e| e.path).collect();
        assert_eq!(
            listed,
            ["/", "/a", "/a/b", "/a/b/g", "/a/s", "/h2", "/s2"],
            "every name is listed at its own path"
        );
        assert_eq!(v.verify().unwrap().files, 1, "one file, checked once");
        v.remove("/h2").unwrap();
        v.remove("/a/b/g").unwrap();
        commit_ack(&mut v);
        assert!(objects(d.path()).is_empty(), "the last name took the data");
    }

    #[test]
    fn renameat2_noreplace_and_exchange() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        v.mkdir_all("/d/sub").unwrap();
        let a = v.write_file("/a", b"A", 0o644).unwrap();
        let b = v.write_file("/d/b", b"B", 0o644).unwrap();
        let errno = |r: Result<(), Error>| r.map_err(|e| e.errno()).err();
        assert_eq!(
            errno(v.rename_with(
                ROOT_INO,
                "a",
                v.resolve("/d").unwrap(),
                "b",
                RenameMode::NoReplace
            )),
            Some(libc::EEXIST)
        );
        let dd = v.resolve("/d").unwrap();
        v.rename_with(ROOT_INO, "a", dd, "b", RenameMode::Exchange)
            .unwrap();
        assert_eq!(
            (v.resolve("/d/b").unwrap(), v.resolve("/a").unwrap()),
            (a, b)
        );
        assert_eq!(v.path_of(a), "/d/b");
        assert_eq!(v.read_file("/a").unwrap(), b"B");
        assert_eq!(
            errno(v.rename_with(ROOT_INO, "a", dd, "none", RenameMode::Exchange)),
            Some(libc::ENOENT)
        );
        // A directory cannot be exchanged with something inside it.
        let sub = v.resolve("/d/sub").unwrap();
        assert_eq!(
            errno(v.rename_with(ROOT_INO, "d", sub, "x", RenameMode::NoReplace)),
            Some(libc::EINVAL)
        );
        assert_eq!(
            errno(v.rename_with(dd, "sub", ROOT_INO, "d", RenameMode::Exchange)),
            Some(libc::EINVAL)
        );
        v.rename_with(ROOT_INO, "a", dd, "c", RenameMode::NoReplace)
            .unwrap();
        let t = commit_ack(&mut v);
        drop(v);
        let v = reopen(d.path(), t, Access::ReadOnly).unwrap();
        assert_eq!(v.read_file("/d/c").unwrap(), b"B");
        assert_eq!(v.read_file("/d/b").unwrap(), b"A");
    }

    #[test]
    fn kill_suid_clears_what_linux_clears() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        let f = v.write_file("/f", b"x", 0o6755).unwrap();
        let g = v.write_file("/g", b"x", 0o2644).unwrap();
        let dir = v.mkdir(ROOT_INO, "d", 0o6755).unwrap();
        v.set_xattr(g, "security.capability", b"c", crate::XattrFlags::Any)
            .unwrap();
        v.set_xattr(g, "user.keep", b"k", crate::XattrFlags::Any)
            .unwrap();
        assert!(v.kill_suid(f).unwrap());
        assert_eq!(v.getattr(f).unwrap().mode, 0o755);
        assert!(!v.kill_suid(f).unwrap(), "nothing left to clear");
        // Set-group-ID without group execute is mandatory locking, not privilege: kept.
        assert!(v.kill_suid(g).unwrap(), "the capability goes");
        assert_eq!(v.getattr(g).unwrap().mode, 0o2644);
        assert_eq!(v.list_xattr(g).unwrap(), ["user.keep"]);
        assert!(!v.kill_suid(dir).unwrap(), "directories keep their bits");
        assert_eq!(v.getattr(dir).unwrap().mode, 0o6755);
    }

    #[test]
    fn times_keep_nanoseconds_and_an_explicit_access_time() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        let f = v.write_file("/f", b"x", 0o644).unwrap();
        v.set_times(f, Some(1_000_000_001), Some(2_000_000_002))
            .unwrap();
        let a = v.getattr(f).unwrap();
        assert_eq!((a.atime, a.mtime), (1_000_000_001, 2_000_000_002));
        v.set_times(f, None, Some(3)).unwrap();
        assert_eq!(v.getattr(f).unwrap().atime, 1_000_000_001);
        let g = v.write_file("/g", b"y", 0o644).unwrap();
        v.set_times(g, None, Some(5)).unwrap();
        let ga = v.getattr(g).unwrap();
        assert!(ga.atime > 5, "the access time stays where it was");
        assert_eq!((ga.uid, ga.gid), (None, None));
        v.set_owner(g, Some(1234), None).unwrap();
        v.set_owner(g, None, Some(99)).unwrap();
        let t = commit_ack(&mut v);
        drop(v);
        let v = reopen(d.path(), t, Access::ReadOnly).unwrap();
        let a = v.getattr(v.resolve("/f").unwrap()).unwrap();
        assert_eq!((a.atime, a.mtime), (1_000_000_001, 3));
        let g = v.getattr(v.resolve("/g").unwrap()).unwrap();
        assert_eq!((g.atime, g.uid, g.gid), (ga.atime, Some(1234), Some(99)));
    }
}
