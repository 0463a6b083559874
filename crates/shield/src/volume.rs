//! The opened volume: an in-memory tree of the committed metadata plus dirty files, the chunk
//! read/write paths and the commit/ack protocol.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::LessSafeKey;

use crate::crypto::{self, CHUNK, Keys, NONCE_LEN, RECORD};
use crate::meta::{self, Doc, Entry};
use crate::store::{FaultInjector, LockError, Store, is_object_name};
use crate::{Access, Error, Expect, Options, Protection, Tag, TagSink, VolumeId, VolumeKey};

/// An inode number (FUSE numbering: the root is 1).
pub type Ino = u64;
/// The root directory's inode.
pub const ROOT_INO: Ino = 1;

/// Kind of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
}

/// Attributes of one entry.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// Kind.
    pub kind: Kind,
    /// Size in bytes (files: content; symlinks: target length; directories: 0).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time (ns since the epoch).
    pub mtime: i64,
    /// Change time (ns since the epoch).
    pub ctime: i64,
    /// Link count.
    pub nlink: u32,
}

/// One entry of [`Volume::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// Path inside the volume (`/a/b`).
    pub path: String,
    /// Kind.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
}

/// What [`Volume::verify`] checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyReport {
    /// Files checked.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Chunks authenticated.
    pub chunks: u64,
    /// Plaintext bytes covered.
    pub bytes: u64,
}

struct Dirty {
    generation: u64,
    object: String,
    /// Open handle on the new object (dropped on release so thousands of dirty files need no fds).
    file: Option<File>,
    /// Leaf hashes of chunks already sealed into the new object.
    hashes: Vec<Option<[u8; 32]>>,
    /// Chunks below this index may still be read from the committed object.
    old_valid: u64,
    /// One plaintext chunk being filled by partial writes.
    tail: Option<(u64, Box<[u8; CHUNK]>)>,
}

struct FileNode {
    id: [u8; 16],
    prot: Protection,
    size: u64,
    /// Committed generation and size (generation 0 or size 0: no object).
    generation: u64,
    csize: u64,
    root: [u8; 32],
    key: Arc<LessSafeKey>,
    dirty: Option<Box<Dirty>>,
}

enum NodeKind {
    Dir(BTreeMap<String, Ino>),
    File(Box<FileNode>),
    Link(String),
}

struct Node {
    parent: Ino,
    name: String,
    mode: u32,
    mtime: i64,
    ctime: i64,
    kind: NodeKind,
}

#[derive(Clone, Copy)]
struct SlotState {
    tag: Tag,
    seq: u64,
    slot: usize,
}

/// An opened volume. Not thread-safe by itself; FUSE wraps it in a mutex.
pub struct Volume {
    store: Store,
    keys: Keys,
    opts: Options,
    access: Access,
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    seq: u64,
    acked: Option<SlotState>,
    pending: Option<SlotState>,
    /// Objects no longer referenced since commit `seq`: deletable once a state ≥ seq is acked.
    garbage: Vec<(u64, String)>,
    /// Committed objects dropped by changes not yet committed.
    dropped: Vec<String>,
    dirty_files: BTreeSet<Ino>,
    meta_dirty: bool,
    /// Deterministic build: ids, nonces derived from key and content; times are 0.
    det: bool,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("name", &self.opts.name)
            .field("backing", &self.store.dir())
            .field("access", &self.access)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn nchunks(size: u64) -> u64 {
    size.div_ceil(CHUNK as u64)
}

fn lock_store(dir: &Path, access: Access, opts: &Options) -> Result<Store, Error> {
    Store::open(dir, access == Access::ReadWrite).map_err(|e| match e {
        LockError::Busy => Error::Locked {
            volume: opts.name.clone(),
            path: dir.display().to_string(),
        },
        LockError::Io(e) => Error::io(format!("locking backing store {}", dir.display()), e),
    })
}

/// Create a new, empty volume in `backing` (created if missing; must be empty) and commit its first
/// state. The returned tag is *pending*: record it, then call [`Volume::ack`].
pub fn create(
    backing: &Path,
    key: &VolumeKey,
    id: &VolumeId,
    opts: Options,
) -> Result<(Volume, Tag), Error> {
    let mut v = new_empty(backing, key, id, opts, false)?;
    let tag = v.commit()?;
    Ok((v, tag))
}

/// An empty, uncommitted volume in an empty backing directory.
pub(crate) fn new_empty(
    backing: &Path,
    key: &VolumeKey,
    id: &VolumeId,
    opts: Options,
    det: bool,
) -> Result<Volume, Error> {
    fs::create_dir_all(backing)
        .map_err(|e| Error::io(format!("creating backing store {}", backing.display()), e))?;
    let listing = fs::read_dir(backing)
        .map_err(|e| Error::io(format!("reading backing store {}", backing.display()), e))?;
    for e in listing {
        let e =
            e.map_err(|e| Error::io(format!("reading backing store {}", backing.display()), e))?;
        if e.file_name() != crate::store::LOCK {
            return Err(Error::NotEmpty {
                volume: opts.name.clone(),
                path: backing.display().to_string(),
            });
        }
    }
    let store = lock_store(backing, Access::ReadWrite, &opts)?;
    let keys = Keys::derive(key, id)?;
    let now = if det { 0 } else { now_ns() };
    let mut nodes = HashMap::new();
    nodes.insert(
        ROOT_INO,
        Node {
            parent: ROOT_INO,
            name: String::new(),
            mode: 0o755,
            mtime: now,
            ctime: now,
            kind: NodeKind::Dir(BTreeMap::new()),
        },
    );
    Ok(Volume {
        store,
        keys,
        opts,
        access: Access::ReadWrite,
        nodes,
        next_ino: ROOT_INO + 1,
        seq: 0,
        acked: None,
        pending: None,
        garbage: Vec::new(),
        dropped: Vec::new(),
        dirty_files: BTreeSet::new(),
        meta_dirty: true,
        det,
    })
}

/// Open the volume in `backing` at the expected state.
///
/// Fails with [`Error::TagMismatch`] when no metadata slot carries the expected tag (modified,
/// deleted or rolled back), [`Error::ForeignVolume`] when the store belongs to another volume id,
/// [`Error::WrongKey`] when the key does not open it, [`Error::Locked`] when another process holds it.
pub fn open(
    backing: &Path,
    key: &VolumeKey,
    id: &VolumeId,
    expect: Expect,
    access: Access,
    opts: Options,
) -> Result<Volume, Error> {
    if !backing.is_dir() {
        return Err(Error::NoVolume {
            volume: opts.name.clone(),
            path: backing.display().to_string(),
        });
    }
    let store = lock_store(backing, access, &opts)?;
    let keys = Keys::derive(key, id)?;
    let mut slots = Vec::new();
    for i in 0..2 {
        let b = store.read_slot(i).map_err(|e| {
            Error::io(
                format!(
                    "reading metadata of volume {} in {}",
                    opts.name,
                    backing.display()
                ),
                e,
            )
        })?;
        if let Some(s) = b.and_then(meta::parse) {
            slots.push((i, s));
        }
    }
    let foreign = || Error::ForeignVolume {
        volume: opts.name.clone(),
        path: backing.display().to_string(),
    };
    let (slot_idx, slot, plain) = match expect {
        Expect::Tag(t) => {
            let Some((i, s)) = slots.into_iter().find(|(_, s)| s.tag == t) else {
                return Err(Error::TagMismatch {
                    volume: opts.name.clone(),
                    tag: t,
                });
            };
            if s.idd != keys.id_digest() {
                return Err(foreign());
            }
            let Some(p) = meta::open(&keys, &s) else {
                return Err(Error::WrongKey {
                    volume: opts.name.clone(),
                });
            };
            (i, s, p)
        }
        Expect::Newest => {
            if slots.is_empty() {
                return Err(Error::NoVolume {
                    volume: opts.name.clone(),
                    path: backing.display().to_string(),
                });
            }
            let any_ours = slots.iter().any(|(_, s)| s.idd == keys.id_digest());
            let mut best: Option<(usize, meta::Slot, Vec<u8>)> = None;
            for (i, s) in slots {
                if s.idd != keys.id_digest() {
                    continue;
                }
                if let Some(p) = meta::open(&keys, &s)
                    && best.as_ref().is_none_or(|b| b.1.seq < s.seq)
                {
                    best = Some((i, s, p));
                }
            }
            match best {
                Some(b) => b,
                None if any_ours => {
                    return Err(Error::WrongKey {
                        volume: opts.name.clone(),
                    });
                }
                None => return Err(foreign()),
            }
        }
    };
    let doc: Doc = serde_json::from_slice(&plain).map_err(|e| Error::BadMetadata {
        volume: opts.name.clone(),
        reason: e.to_string(),
    })?;
    if doc.seq != slot.seq || doc.v != 1 {
        return Err(Error::BadMetadata {
            volume: opts.name.clone(),
            reason: format!(
                "version {} / sequence {} does not match the header ({})",
                doc.v, doc.seq, slot.seq
            ),
        });
    }
    let st = SlotState {
        tag: slot.tag,
        seq: slot.seq,
        slot: slot_idx,
    };
    let mut v = Volume {
        store,
        keys,
        opts,
        access,
        nodes: HashMap::new(),
        next_ino: ROOT_INO + 1,
        seq: slot.seq,
        acked: Some(st),
        pending: None,
        garbage: Vec::new(),
        dropped: Vec::new(),
        dirty_files: BTreeSet::new(),
        meta_dirty: false,
        det: false,
    };
    v.load(doc)?;
    if access == Access::ReadWrite {
        v.collect_unreferenced()?;
    }
    Ok(v)
}

fn bad(v: &str, reason: String) -> Error {
    Error::BadMetadata {
        volume: v.to_string(),
        reason,
    }
}

fn parse_hex<const N: usize>(
    s: Option<&String>,
    what: &str,
    p: &str,
    vol: &str,
) -> Result<[u8; N], Error> {
    let mut b = [0u8; N];
    let s = s.ok_or_else(|| bad(vol, format!("{p}: missing {what}")))?;
    hex::decode_to_slice(s, &mut b).map_err(|_| bad(vol, format!("{p}: bad {what}")))?;
    Ok(b)
}

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
    fn load(&mut self, doc: Doc) -> Result<(), Error> {
        let vol = self.opts.name.clone();
        let mut by_path: HashMap<String, Ino> = HashMap::new();
        for (i, e) in doc.entries.into_iter().enumerate() {
            let (parent, name) = if i == 0 {
                if e.p != "/" || e.k != "d" {
                    return Err(bad(
                        &vol,
                        "the first entry is not the root directory".into(),
                    ));
                }
                (ROOT_INO, String::new())
            } else {
                let (dir, name) =
                    e.p.rsplit_once('/')
                        .ok_or_else(|| bad(&vol, format!("{}: not absolute", e.p)))?;
                check_name(name).map_err(|_| bad(&vol, format!("{}: invalid name", e.p)))?;
                let dir = if dir.is_empty() { "/" } else { dir };
                let parent = *by_path
                    .get(dir)
                    .ok_or_else(|| bad(&vol, format!("{}: parent missing", e.p)))?;
                (parent, name.to_string())
            };
            let kind = match e.k.as_str() {
                "d" => NodeKind::Dir(BTreeMap::new()),
                "l" => NodeKind::Link(
                    e.to.clone()
                        .ok_or_else(|| bad(&vol, format!("{}: symlink without target", e.p)))?,
                ),
                "f" => {
                    let id: [u8; 16] = parse_hex(e.id.as_ref(), "file id", &e.p, &vol)?;
                    let root: [u8; 32] = parse_hex(e.r.as_ref(), "integrity root", &e.p, &vol)?;
                    let size =
                        e.s.ok_or_else(|| bad(&vol, format!("{}: missing size", e.p)))?;
                    let generation =
                        e.g.ok_or_else(|| bad(&vol, format!("{}: missing generation", e.p)))?;
                    NodeKind::File(Box::new(FileNode {
                        id,
                        prot: e.x.unwrap_or(Protection::Encrypted),
                        size,
                        generation,
                        csize: size,
                        root,
                        key: self.keys.file_key(&id)?,
                        dirty: None,
                    }))
                }
                k => return Err(bad(&vol, format!("{}: unknown kind {k:?}", e.p))),
            };
            let ino = if i == 0 { ROOT_INO } else { self.alloc_ino() };
            if i != 0 {
                match self.nodes.get_mut(&parent).map(|n| &mut n.kind) {
                    Some(NodeKind::Dir(ch)) => {
                        if ch.insert(name.clone(), ino).is_some() {
                            return Err(bad(&vol, format!("{}: duplicate entry", e.p)));
                        }
                    }
                    _ => return Err(bad(&vol, format!("{}: parent is not a directory", e.p))),
                }
            }
            self.nodes.insert(
                ino,
                Node {
                    parent,
                    name,
                    mode: e.m & 0o7777,
                    mtime: e.t,
                    ctime: e.c,
                    kind,
                },
            );
            by_path.insert(e.p, ino);
        }
        if !self.nodes.contains_key(&ROOT_INO) {
            return Err(bad(&vol, "no root directory".into()));
        }
        Ok(())
    }

    fn now(&self) -> i64 {
        if self.det { 0 } else { now_ns() }
    }

    fn alloc_ino(&mut self) -> Ino {
        let i = self.next_ino;
        self.next_ino += 1;
        i
    }

    /// Install a fault injector on the backing store (crash-safety tests).
    pub fn set_fault_injector(&mut self, f: Option<Arc<FaultInjector>>) {
        self.store.set_faults(f);
    }

    /// The volume's options (name, display root, protection of new files).
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Set the protection of files created from now on.
    pub fn set_default_protection(&mut self, p: Protection) {
        self.opts.protection = p;
    }

    /// The backing directory.
    pub fn backing(&self) -> &Path {
        self.store.dir()
    }

    /// The tag of the latest commit (pending or acknowledged).
    pub fn tag(&self) -> Option<Tag> {
        self.pending.or(self.acked).map(|s| s.tag)
    }

    /// The last acknowledged tag.
    pub fn acked_tag(&self) -> Option<Tag> {
        self.acked.map(|s| s.tag)
    }

    /// Whether there are changes not yet committed.
    pub fn has_changes(&self) -> bool {
        self.meta_dirty || !self.dirty_files.is_empty()
    }

    fn writable(&self) -> Result<(), Error> {
        if self.access == Access::ReadOnly {
            return Err(Error::ReadOnly {
                volume: self.opts.name.clone(),
            });
        }
        Ok(())
    }

    // ----- paths -----------------------------------------------------------------------------------

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

    fn display(&self, p: &str) -> String {
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

    fn not_found(&self, p: &str) -> Error {
        Error::NotFound {
            path: self.display(p),
            volume: self.opts.name.clone(),
        }
    }

    fn node(&self, ino: Ino) -> Result<&Node, Error> {
        self.nodes
            .get(&ino)
            .ok_or_else(|| self.not_found(&format!("<inode {ino}>")))
    }

    fn node_mut(&mut self, ino: Ino) -> Result<&mut Node, Error> {
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

    fn split_parent(&self, path: &str) -> Result<(Ino, String), Error> {
        let t = path.trim_end_matches('/');
        let (dir, name) = t.rsplit_once('/').unwrap_or(("", t));
        check_name(name)?;
        Ok((self.resolve(dir)?, name.to_string()))
    }

    // ----- attributes ------------------------------------------------------------------------------

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

    // ----- namespace changes -----------------------------------------------------------------------

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

    fn detach(&mut self, parent: Ino, name: &str) -> Result<Ino, Error> {
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

    fn drop_node(&mut self, ino: Ino) -> Result<(), Error> {
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

    // ----- file content ----------------------------------------------------------------------------

    fn file(&self, ino: Ino) -> Result<&FileNode, Error> {
        match &self.node(ino)?.kind {
            NodeKind::File(f) => Ok(f),
            NodeKind::Dir(_) => Err(Error::IsDir {
                path: self.display_path(ino),
            }),
            NodeKind::Link(_) => Err(Error::InvalidName {
                name: self.display_path(ino),
            }),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> Result<&mut FileNode, Error> {
        // Check with a shared borrow first so the (costly) path is only built for errors.
        self.file(ino)?;
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(NodeKind::File(f)) => Ok(f),
            _ => Err(Error::Crypto("inode vanished")),
        }
    }

    fn chunk_err(&self, ino: Ino, idx: u64) -> Error {
        let start = idx * CHUNK as u64;
        Error::ChunkVerification {
            chunk: idx,
            start,
            end: start + CHUNK as u64 - 1,
            path: self.display_path(ino),
        }
    }

    /// Open the committed object of a file and check its length (truncation/extension).
    fn open_committed(&self, ino: Ino) -> Result<File, Error> {
        let f = self.file(ino)?;
        let name = self.keys.object_name(&f.id, f.generation);
        let file = self
            .store
            .open_object(&name)
            .map_err(|e| {
                Error::io(
                    format!("opening the object of {}", self.display_path(ino)),
                    e,
                )
            })?
            .ok_or_else(|| Error::Missing {
                path: self.display_path(ino),
                volume: self.opts.name.clone(),
            })?;
        let len = file
            .metadata()
            .map_err(|e| {
                Error::io(
                    format!("reading the object of {}", self.display_path(ino)),
                    e,
                )
            })?
            .len();
        let n = nchunks(f.csize);
        let want = n * RECORD as u64;
        if len < want {
            return Err(self.chunk_err(ino, len / RECORD as u64));
        }
        if len > want {
            return Err(self.chunk_err(ino, n));
        }
        Ok(file)
    }

    /// Read and verify `count` committed chunks from `first` into `out` (count × CHUNK plaintext).
    /// Returns the leaf hashes. On any failure `out` holds no unverified byte.
    fn read_committed(
        &self,
        ino: Ino,
        obj: &File,
        first: u64,
        count: usize,
        out: &mut [u8],
        want_hashes: bool,
    ) -> Result<Vec<[u8; 32]>, Error> {
        // One reusable buffer per thread: large fresh allocations cost page faults on every call.
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            if scratch.len() < count * RECORD {
                scratch.resize(count * RECORD, 0);
            }
            self.read_committed_into(
                ino,
                obj,
                first,
                count,
                out,
                want_hashes,
                &mut scratch[..count * RECORD],
            )
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn read_committed_into(
        &self,
        ino: Ino,
        obj: &File,
        first: u64,
        count: usize,
        out: &mut [u8],
        want_hashes: bool,
        recs: &mut [u8],
    ) -> Result<Vec<[u8; 32]>, Error> {
        let f = self.file(ino)?;
        let mut got = 0usize;
        while got < recs.len() {
            match obj.read_at(&mut recs[got..], first * RECORD as u64 + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("reading the object of {}", self.display_path(ino)),
                        e,
                    ));
                }
            }
        }
        let idd = self.keys.id_digest();
        let (key, prot, id, generation) = (&f.key, f.prot, f.id, f.generation);
        // Per record: Ok(leaf hash or None) or Err(failed chunk index).
        let open = |i: usize, rec: &mut [u8]| -> Result<Option<[u8; 32]>, u64> {
            let idx = first + i as u64;
            if (i + 1) * RECORD > got {
                return Err(idx);
            }
            let h = if want_hashes {
                Some(crypto::leaf_hash(rec))
            } else {
                None
            };
            let aad = crypto::chunk_aad(&idd, &id, idx, generation);
            if crypto::open_chunk(key, prot, &aad, rec) {
                Ok(h)
            } else {
                Err(idx)
            }
        };
        let results = crypto::for_each_record(recs, &open);
        let mut hashes = Vec::with_capacity(if want_hashes { count } else { 0 });
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(h) => {
                    hashes.extend(h);
                    let rec = &recs[i * RECORD..(i + 1) * RECORD];
                    out[i * CHUNK..(i + 1) * CHUNK]
                        .copy_from_slice(&rec[NONCE_LEN..NONCE_LEN + CHUNK]);
                }
                Err(idx) => {
                    out.fill(0);
                    recs.fill(0);
                    return Err(self.chunk_err(ino, idx));
                }
            }
        }
        Ok(hashes)
    }

    /// Plaintext of chunk `idx` of a dirty or clean file (zeros beyond the data).
    fn load_chunk(&self, ino: Ino, idx: u64, out: &mut [u8; CHUNK]) -> Result<(), Error> {
        let f = self.file(ino)?;
        if let Some(d) = &f.dirty {
            if let Some((t, buf)) = &d.tail
                && *t == idx
            {
                out.copy_from_slice(&buf[..]);
                return Ok(());
            }
            if let Some(Some(_)) = d.hashes.get(idx as usize) {
                let mut rec = vec![0u8; RECORD];
                let reopened;
                let file = match &d.file {
                    Some(f) => f,
                    None => {
                        reopened = self
                            .store
                            .open_object(&d.object)
                            .ok()
                            .flatten()
                            .ok_or_else(|| self.chunk_err(ino, idx))?;
                        &reopened
                    }
                };
                file.read_exact_at(&mut rec, idx * RECORD as u64)
                    .map_err(|e| {
                        Error::io(
                            format!("reading back the new object of {}", self.display_path(ino)),
                            e,
                        )
                    })?;
                let aad = crypto::chunk_aad(&self.keys.id_digest(), &f.id, idx, d.generation);
                if !crypto::open_chunk(&f.key, f.prot, &aad, &mut rec) {
                    out.fill(0);
                    return Err(self.chunk_err(ino, idx));
                }
                out.copy_from_slice(&rec[NONCE_LEN..NONCE_LEN + CHUNK]);
                return Ok(());
            }
            if idx >= d.old_valid {
                out.fill(0);
                return Ok(());
            }
        }
        if f.generation == 0 || idx >= nchunks(f.csize) {
            out.fill(0);
            return Ok(());
        }
        let obj = self.open_committed(ino)?;
        self.read_committed(ino, &obj, idx, 1, &mut out[..], false)?;
        Ok(())
    }

    /// Read up to `size` bytes at `off`.
    pub fn read(&self, ino: Ino, off: u64, size: usize) -> Result<Vec<u8>, Error> {
        let f = self.file(ino)?;
        if off >= f.size || size == 0 {
            return Ok(Vec::new());
        }
        let end = (off + size as u64).min(f.size);
        let first = off / CHUNK as u64;
        let last = (end - 1) / CHUNK as u64;
        let count = (last - first + 1) as usize;
        let mut buf = vec![0u8; count * CHUNK];
        if f.dirty.is_none() {
            let obj = self.open_committed(ino)?;
            self.read_committed(ino, &obj, first, count, &mut buf, false)?;
        } else {
            let mut c = Box::new([0u8; CHUNK]);
            for i in 0..count {
                self.load_chunk(ino, first + i as u64, &mut c)?;
                buf[i * CHUNK..(i + 1) * CHUNK].copy_from_slice(&c[..]);
            }
        }
        let s = (off - first * CHUNK as u64) as usize;
        let e = s + (end - off) as usize;
        buf.truncate(e);
        buf.drain(..s);
        Ok(buf)
    }

    /// Read a whole file and check its Merkle root (when it has no uncommitted changes).
    pub fn read_all(&self, ino: Ino) -> Result<Vec<u8>, Error> {
        let f = self.file(ino)?;
        if f.dirty.is_some() {
            return self.read(ino, 0, usize::try_from(f.size).unwrap_or(usize::MAX));
        }
        let n = nchunks(f.csize);
        if n == 0 {
            return Ok(Vec::new());
        }
        let obj = self.open_committed(ino)?;
        let mut buf = vec![0u8; n as usize * CHUNK];
        let hashes = self.read_committed(ino, &obj, 0, n as usize, &mut buf, true)?;
        if crypto::merkle_root(&hashes) != f.root {
            return Err(Error::RootMismatch {
                path: self.display_path(ino),
            });
        }
        buf.truncate(f.size as usize);
        Ok(buf)
    }

    fn ensure_dirty(&mut self, ino: Ino) -> Result<(), Error> {
        self.writable()?;
        let f = self.file(ino)?;
        if f.dirty.is_some() {
            return Ok(());
        }
        let generation = f.generation + 1;
        let object = self.keys.object_name(&f.id, generation);
        let old_valid = if f.generation > 0 {
            nchunks(f.csize)
        } else {
            0
        };
        let file = self.store.create_object(&object).map_err(|e| {
            Error::io(
                format!("creating a new object for {}", self.display_path(ino)),
                e,
            )
        })?;
        let f = self.file_mut(ino)?;
        f.dirty = Some(Box::new(Dirty {
            generation,
            object,
            file: Some(file),
            hashes: Vec::new(),
            old_valid,
            tail: None,
        }));
        self.dirty_files.insert(ino);
        Ok(())
    }

    /// Seal `count` consecutive chunks from `plain` (count × CHUNK, the last may be shorter) at `first`.
    fn seal_run(&mut self, ino: Ino, first: u64, plain: &[u8]) -> Result<(), Error> {
        let idd = self.keys.id_digest();
        let count = plain.len().div_ceil(CHUNK);
        let mut nonces = vec![0u8; count * NONCE_LEN];
        let f = self.file(ino)?;
        let Some(d) = f.dirty.as_ref() else {
            return Err(Error::Crypto("sealing a clean file"));
        };
        if self.det {
            for i in 0..count {
                let p = &plain[i * CHUNK..((i + 1) * CHUNK).min(plain.len())];
                let idx = (first + i as u64).to_le_bytes();
                let n = self.keys.derive_det(
                    b"nonce",
                    &[&f.id, &d.generation.to_le_bytes(), &idx, &crypto::sha256(p)],
                );
                nonces[i * NONCE_LEN..(i + 1) * NONCE_LEN].copy_from_slice(&n[..NONCE_LEN]);
            }
        } else {
            aws_lc_rs::rand::fill(&mut nonces).map_err(|_| Error::Crypto("random nonce"))?;
        }
        let mut recs = vec![0u8; count * RECORD];
        let (key, prot, id, generation) = (&f.key, f.prot, f.id, d.generation);
        let seal = |i: usize, rec: &mut [u8]| -> Result<[u8; 32], Error> {
            let idx = first + i as u64;
            let p = &plain[i * CHUNK..((i + 1) * CHUNK).min(plain.len())];
            let aad = crypto::chunk_aad(&idd, &id, idx, generation);
            let mut n = [0u8; NONCE_LEN];
            n.copy_from_slice(&nonces[i * NONCE_LEN..(i + 1) * NONCE_LEN]);
            crypto::seal_chunk(key, prot, &aad, n, p, rec)?;
            Ok(crypto::leaf_hash(rec))
        };
        let hashes = crypto::for_each_record(&mut recs, &seal)
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()?;
        let file = self.dirty_handle(ino)?;
        self.store
            .write_at(&file, &recs, first * RECORD as u64)
            .map_err(|e| {
                Error::io(
                    format!("writing the new object of {}", self.display_path(ino)),
                    e,
                )
            })?;
        let f = self.file_mut(ino)?;
        if let Some(d) = f.dirty.as_mut() {
            let need = first as usize + count;
            if d.hashes.len() < need {
                d.hashes.resize(need, None);
            }
            for (i, h) in hashes.into_iter().enumerate() {
                d.hashes[first as usize + i] = Some(h);
            }
        }
        Ok(())
    }

    /// A handle on the dirty file's new object (reopened after [`Volume::release`]).
    fn dirty_handle(&mut self, ino: Ino) -> Result<File, Error> {
        let f = self.file(ino)?;
        let Some(d) = f.dirty.as_ref() else {
            return Err(Error::Crypto("no new object for a clean file"));
        };
        if let Some(h) = &d.file {
            return h.try_clone().map_err(|e| {
                Error::io(
                    format!("opening the new object of {}", self.display_path(ino)),
                    e,
                )
            });
        }
        let h = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.store.path(&d.object))
            .map_err(|e| {
                Error::io(
                    format!("opening the new object of {}", self.display_path(ino)),
                    e,
                )
            })?;
        let keep = h.try_clone().map_err(|e| {
            Error::io(
                format!("opening the new object of {}", self.display_path(ino)),
                e,
            )
        })?;
        if let Some(d) = self.file_mut(ino)?.dirty.as_mut() {
            d.file = Some(keep);
        }
        Ok(h)
    }

    /// The program closed its last handle on `ino`: seal a partial chunk and close the object so
    /// that many written-but-uncommitted files need no open descriptors.
    pub fn release(&mut self, ino: Ino) -> Result<(), Error> {
        if self.file(ino).map(|f| f.dirty.is_some()).unwrap_or(false) {
            self.flush_tail(ino)?;
            if let Some(d) = self.file_mut(ino)?.dirty.as_mut() {
                d.file = None;
            }
        }
        Ok(())
    }

    fn flush_tail(&mut self, ino: Ino) -> Result<(), Error> {
        let tail = match self.file_mut(ino)?.dirty.as_mut() {
            Some(d) => d.tail.take(),
            None => None,
        };
        if let Some((idx, buf)) = tail {
            self.seal_run(ino, idx, &buf[..])?;
        }
        Ok(())
    }

    /// Make chunk `idx` the tail (loading its current plaintext).
    fn tail_to(&mut self, ino: Ino, idx: u64) -> Result<(), Error> {
        if let Some(d) = &self.file(ino)?.dirty
            && d.tail.as_ref().is_some_and(|(t, _)| *t == idx)
        {
            return Ok(());
        }
        self.flush_tail(ino)?;
        let mut buf = Box::new([0u8; CHUNK]);
        self.load_chunk(ino, idx, &mut buf)?;
        if let Some(d) = self.file_mut(ino)?.dirty.as_mut() {
            d.tail = Some((idx, buf));
        }
        Ok(())
    }

    /// Write `data` at `off`.
    pub fn write(&mut self, ino: Ino, off: u64, data: &[u8]) -> Result<(), Error> {
        self.ensure_dirty(ino)?;
        let end = off + data.len() as u64;
        let mut pos = off;
        let mut run_start: Option<u64> = None;
        let mut run_from = 0usize;
        let mut run_len = 0usize;
        while pos < end {
            let idx = pos / CHUNK as u64;
            let within = (pos % CHUNK as u64) as usize;
            let n = (CHUNK - within).min((end - pos) as usize);
            let di = (pos - off) as usize;
            if within == 0 && n == CHUNK {
                if run_start.is_none() {
                    run_start = Some(idx);
                    run_from = di;
                    run_len = 0;
                }
                run_len += CHUNK;
                if let Some(d) = self.file_mut(ino)?.dirty.as_mut()
                    && d.tail.as_ref().is_some_and(|(t, _)| *t == idx)
                {
                    d.tail = None;
                }
            } else {
                if let Some(s) = run_start.take() {
                    self.seal_run(ino, s, &data[run_from..run_from + run_len])?;
                }
                self.tail_to(ino, idx)?;
                if let Some(d) = self.file_mut(ino)?.dirty.as_mut()
                    && let Some((_, buf)) = d.tail.as_mut()
                {
                    buf[within..within + n].copy_from_slice(&data[di..di + n]);
                }
            }
            pos += n as u64;
        }
        if let Some(s) = run_start {
            self.seal_run(ino, s, &data[run_from..run_from + run_len])?;
        }
        let now = self.now();
        let node = self.node_mut(ino)?;
        node.mtime = now;
        node.ctime = now;
        if let NodeKind::File(f) = &mut node.kind {
            f.size = f.size.max(end);
        }
        Ok(())
    }

    /// Change a file's size.
    pub fn truncate(&mut self, ino: Ino, size: u64) -> Result<(), Error> {
        let cur = self.file(ino)?.size;
        if cur == size {
            return Ok(());
        }
        self.ensure_dirty(ino)?;
        if size < cur {
            let keep = nchunks(size);
            if let Some(d) = self.file_mut(ino)?.dirty.as_mut() {
                d.hashes.truncate(keep as usize);
                d.old_valid = d.old_valid.min(keep);
                if d.tail.as_ref().is_some_and(|(t, _)| *t >= keep) {
                    d.tail = None;
                }
            }
            let within = (size % CHUNK as u64) as usize;
            if within != 0 {
                let idx = size / CHUNK as u64;
                // Load the partial chunk before the size shrinks, then zero what lies beyond.
                self.tail_to(ino, idx)?;
                if let Some(d) = self.file_mut(ino)?.dirty.as_mut()
                    && let Some((_, buf)) = d.tail.as_mut()
                {
                    buf[within..].fill(0);
                }
            }
        }
        let now = self.now();
        let node = self.node_mut(ino)?;
        node.mtime = now;
        node.ctime = now;
        if let NodeKind::File(f) = &mut node.kind {
            f.size = size;
        }
        Ok(())
    }

    /// Seal every missing chunk of a dirty file into its new object, fsync it, and make it the
    /// file's committed generation (in memory; durable once the metadata is committed).
    pub(crate) fn finalize(&mut self, ino: Ino) -> Result<(), Error> {
        self.flush_tail(ino)?;
        let f = self.file(ino)?;
        let Some(d) = f.dirty.as_ref() else {
            return Ok(());
        };
        let n = nchunks(f.size);
        let missing: Vec<u64> = (0..n)
            .filter(|&i| !matches!(d.hashes.get(i as usize), Some(Some(_))))
            .collect();
        let old_valid = d.old_valid;
        // Copy runs of chunks from the committed object (re-sealed under the new generation), or zeros.
        let mut i = 0;
        let obj = if missing.iter().any(|&m| m < old_valid) {
            Some(self.open_committed(ino)?)
        } else {
            None
        };
        while i < missing.len() {
            let start = missing[i];
            let from_old = start < old_valid;
            let mut j = i + 1;
            while j < missing.len()
                && missing[j] == missing[j - 1] + 1
                && (missing[j] < old_valid) == from_old
                && j - i < 256
            {
                j += 1;
            }
            let count = j - i;
            let mut plain = vec![0u8; count * CHUNK];
            if from_old && let Some(o) = &obj {
                self.read_committed(ino, o, start, count, &mut plain, false)?;
            }
            self.seal_run(ino, start, &plain)?;
            i = j;
        }
        let path = self.display_path(ino);
        let f = self.file(ino)?;
        let Some(d) = f.dirty.as_ref() else {
            return Ok(());
        };
        let leaves: Vec<[u8; 32]> = d
            .hashes
            .iter()
            .take(n as usize)
            .map(|h| h.unwrap_or([0; 32]))
            .collect();
        let root = crypto::merkle_root(&leaves);
        let object = d.object.clone();
        let old = if f.generation > 0 && f.csize > 0 {
            Some(self.keys.object_name(&f.id, f.generation))
        } else {
            None
        };
        if n == 0 {
            self.store
                .remove(&object)
                .map_err(|e| Error::io(format!("removing the empty object of {path}"), e))?;
        } else {
            let file = self.dirty_handle(ino)?;
            self.store
                .set_len(&file, n * RECORD as u64)
                .map_err(|e| Error::io(format!("sizing the new object of {path}"), e))?;
            self.store
                .sync(&file)
                .map_err(|e| Error::io(format!("syncing the new object of {path}"), e))?;
        }
        if let Some(o) = old {
            self.dropped.push(o);
        }
        let f = self.file_mut(ino)?;
        if let Some(d) = f.dirty.take() {
            f.generation = d.generation;
        }
        f.csize = f.size;
        f.root = root;
        self.dirty_files.remove(&ino);
        self.meta_dirty = true;
        Ok(())
    }

    fn serialize(&self, seq: u64) -> Result<Vec<u8>, Error> {
        let mut entries = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<(Ino, String)> = vec![(ROOT_INO, "/".to_string())];
        while let Some((ino, path)) = stack.pop() {
            let n = self.node(ino)?;
            let mut e = Entry {
                p: path.clone(),
                k: String::new(),
                m: n.mode,
                t: n.mtime,
                c: n.ctime,
                id: None,
                g: None,
                s: None,
                r: None,
                x: None,
                to: None,
            };
            match &n.kind {
                NodeKind::Dir(ch) => {
                    e.k = "d".into();
                    let base = if path == "/" {
                        String::new()
                    } else {
                        path.clone()
                    };
                    for (name, i) in ch.iter().rev() {
                        stack.push((*i, format!("{base}/{name}")));
                    }
                }
                NodeKind::File(f) => {
                    e.k = "f".into();
                    e.id = Some(hex::encode(f.id));
                    e.g = Some(f.generation);
                    e.s = Some(f.csize);
                    e.r = Some(hex::encode(f.root));
                    e.x = Some(f.prot);
                }
                NodeKind::Link(t) => {
                    e.k = "l".into();
                    e.to = Some(t.clone());
                }
            }
            entries.push(e);
        }
        serde_json::to_vec(&Doc { v: 1, seq, entries })
            .map_err(|e| bad(&self.opts.name, e.to_string()))
    }

    /// Commit all changes: seal dirty files into new objects, write the metadata to the slot that
    /// does not hold the acknowledged state, fsync. Returns the new tag, which is *pending* until
    /// [`Volume::ack`]. Without changes, returns the latest tag unchanged.
    pub fn commit(&mut self) -> Result<Tag, Error> {
        self.commit_with_nonce(None)
    }

    pub(crate) fn commit_with_nonce(
        &mut self,
        nonce: Option<[u8; NONCE_LEN]>,
    ) -> Result<Tag, Error> {
        self.writable()?;
        if !self.has_changes()
            && let Some(t) = self.tag()
        {
            return Ok(t);
        }
        let dirty: Vec<Ino> = self.dirty_files.iter().copied().collect();
        for ino in dirty {
            self.finalize(ino)?;
        }
        let seq = self.seq + 1;
        let plain = self.serialize(seq)?;
        let nonce = match nonce {
            Some(n) => n,
            None if self.det => {
                let d = self.keys.derive_det(
                    b"meta-nonce",
                    &[&seq.to_le_bytes(), &crypto::sha256(&plain)],
                );
                let mut n = [0u8; NONCE_LEN];
                n.copy_from_slice(&d[..NONCE_LEN]);
                n
            }
            None => crypto::random()?,
        };
        let (bytes, tag) = meta::seal(&self.keys, seq, plain, nonce)?;
        let slot = match (self.acked, self.pending) {
            (Some(a), _) => 1 - a.slot,
            (None, Some(p)) => 1 - p.slot,
            (None, None) => 0,
        };
        self.store
            .write_slot(slot, &bytes)
            .map_err(|e| Error::io(format!("writing metadata of volume {}", self.opts.name), e))?;
        self.seq = seq;
        self.pending = Some(SlotState { tag, seq, slot });
        self.garbage
            .extend(self.dropped.drain(..).map(|o| (seq, o)));
        self.meta_dirty = false;
        Ok(tag)
    }

    /// Acknowledge that `tag` (the latest commit) is recorded durably by the caller; objects and
    /// metadata only older states needed are reclaimed.
    pub fn ack(&mut self, tag: Tag) -> Result<(), Error> {
        match (self.pending, self.acked) {
            (Some(p), prev) if p.tag == tag => {
                self.acked = Some(p);
                self.pending = None;
                // The previous state is no longer the caller's: retire its slot first, so that its
                // tag is refused as a rollback instead of opening with missing objects.
                if let Some(prev) = prev
                    && prev.slot != p.slot
                {
                    self.store
                        .remove(crate::store::SLOTS[prev.slot])
                        .map_err(|e| {
                            Error::io(
                                format!("retiring old metadata of volume {}", self.opts.name),
                                e,
                            )
                        })?;
                }
                let keep: Vec<(u64, String)> = self.garbage.drain(..).collect();
                for (s, o) in keep {
                    if s <= p.seq {
                        self.store
                            .remove(&o)
                            .map_err(|e| Error::io(format!("removing old object {o}"), e))?;
                    } else {
                        self.garbage.push((s, o));
                    }
                }
                Ok(())
            }
            (None, Some(a)) if a.tag == tag => Ok(()),
            _ => Err(Error::UnknownAck {
                volume: self.opts.name.clone(),
                tag,
            }),
        }
    }

    /// Commit, hand the tag to `sink`, and acknowledge it once recorded.
    pub fn commit_to(&mut self, sink: &mut dyn TagSink) -> Result<Tag, Error> {
        let before = self.tag();
        let tag = self.commit()?;
        if Some(tag) == before && self.pending.is_none() {
            return Ok(tag);
        }
        sink.record(&tag).map_err(|reason| Error::Record {
            volume: self.opts.name.clone(),
            tag,
            reason,
        })?;
        self.ack(tag)?;
        Ok(tag)
    }

    /// Delete objects that the current state does not reference (after a crash, or the objects of
    /// a newer state the caller did not record).
    fn collect_unreferenced(&mut self) -> Result<(), Error> {
        let mut live = HashSet::new();
        for n in self.nodes.values() {
            if let NodeKind::File(f) = &n.kind
                && f.generation > 0
                && f.csize > 0
            {
                live.insert(self.keys.object_name(&f.id, f.generation));
            }
        }
        let all = self.store.list_objects().map_err(|e| {
            Error::io(
                format!("listing backing store {}", self.store.dir().display()),
                e,
            )
        })?;
        for o in all {
            if is_object_name(&o) && !live.contains(&o) {
                self.store
                    .remove(&o)
                    .map_err(|e| Error::io(format!("removing unreferenced object {o}"), e))?;
            }
        }
        Ok(())
    }

    /// Read every file completely: authenticate each chunk, check object lengths and Merkle roots.
    /// Returns the first problem found.
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        let mut r = VerifyReport::default();
        for e in self.list() {
            match e.kind {
                Kind::Dir => r.dirs += 1,
                Kind::Symlink => r.symlinks += 1,
                Kind::File => {
                    let ino = self.resolve(&e.path)?;
                    let f = self.file(ino)?;
                    r.files += 1;
                    r.chunks += nchunks(f.size);
                    r.bytes += f.size;
                    if f.size == 0 {
                        continue;
                    }
                    // Stream in pieces so large files do not need to fit in memory.
                    let obj = self.open_committed(ino)?;
                    let n = nchunks(f.csize);
                    let mut leaves = Vec::with_capacity(n as usize);
                    let mut buf = vec![0u8; 256 * CHUNK];
                    let mut i = 0;
                    while i < n {
                        let c = (n - i).min(256) as usize;
                        leaves.extend(self.read_committed(
                            ino,
                            &obj,
                            i,
                            c,
                            &mut buf[..c * CHUNK],
                            true,
                        )?);
                        i += c as u64;
                    }
                    buf.fill(0);
                    if crypto::merkle_root(&leaves) != f.root {
                        return Err(Error::RootMismatch {
                            path: self.display_path(ino),
                        });
                    }
                }
            }
        }
        Ok(r)
    }

    // ----- path helpers ----------------------------------------------------------------------------

    /// Create or replace the file at `path` with `data` (parent directories must exist).
    pub fn write_file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<Ino, Error> {
        let (parent, name) = self.split_parent(path)?;
        let ino = match self.lookup(parent, &name) {
            Ok(i) => {
                self.file(i)?;
                self.truncate(i, 0)?;
                i
            }
            Err(_) => self.create_file(parent, &name, mode)?,
        };
        self.write(ino, 0, data)?;
        Ok(ino)
    }

    /// Read the whole file at `path`.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, Error> {
        self.read_all(self.resolve(path)?)
    }

    /// Create directory `path` and missing parents.
    pub fn mkdir_all(&mut self, path: &str) -> Result<Ino, Error> {
        let mut cur = ROOT_INO;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            cur = match self.lookup(cur, c) {
                Ok(i) => i,
                Err(_) => self.mkdir(cur, c, 0o755)?,
            };
        }
        Ok(cur)
    }

    /// Remove the file, symlink or empty directory at `path`.
    pub fn remove(&mut self, path: &str) -> Result<(), Error> {
        let (parent, name) = self.split_parent(path)?;
        let ino = self.lookup(parent, &name)?;
        if matches!(self.node(ino)?.kind, NodeKind::Dir(_)) {
            self.rmdir(parent, &name)
        } else {
            self.unlink(parent, &name)
        }
    }

    /// Rename `from` to `to` (paths inside the volume).
    pub fn rename_path(&mut self, from: &str, to: &str) -> Result<(), Error> {
        let (p1, n1) = self.split_parent(from)?;
        let (p2, n2) = self.split_parent(to)?;
        self.rename(p1, &n1, p2, &n2)
    }

    /// Create a symlink at `path` pointing to `target`.
    pub fn symlink_path(&mut self, path: &str, target: &str) -> Result<Ino, Error> {
        let (parent, name) = self.split_parent(path)?;
        self.symlink(parent, &name, target)
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

    /// Whether this volume is being built deterministically.
    pub(crate) fn is_deterministic(&self) -> bool {
        self.det
    }

    /// Pass the verified plaintext of file `ino` to `sink` in pieces; the Merkle root is checked
    /// at the end (each piece is already authenticated chunk by chunk).
    pub fn stream(
        &self,
        ino: Ino,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let f = self.file(ino)?;
        if f.dirty.is_some() {
            let mut off = 0;
            while off < f.size {
                let piece = self.read(ino, off, 256 * CHUNK)?;
                sink(&piece)?;
                off += piece.len() as u64;
            }
            return Ok(());
        }
        let n = nchunks(f.csize);
        if n == 0 {
            return Ok(());
        }
        let obj = self.open_committed(ino)?;
        let mut leaves = Vec::with_capacity(n as usize);
        let mut buf = vec![0u8; n.min(256) as usize * CHUNK];
        let mut i = 0;
        while i < n {
            let c = (n - i).min(256) as usize;
            leaves.extend(self.read_committed(ino, &obj, i, c, &mut buf[..c * CHUNK], true)?);
            let start = i * CHUNK as u64;
            let len = ((c * CHUNK) as u64).min(f.size - start) as usize;
            sink(&buf[..len])?;
            i += c as u64;
        }
        if crypto::merkle_root(&leaves) != f.root {
            return Err(Error::RootMismatch {
                path: self.display_path(ino),
            });
        }
        Ok(())
    }
}
