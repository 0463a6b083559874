//! The opened volume: the [`Volume`] type, its state and its public API.
//!
//! A [`Volume`] is the in-memory tree of one committed metadata state plus the files changed since
//! (their new objects are written as the program writes). The work is split by concern:
//!
//! - [`open`](mod@open): creating a volume in an empty backing store, and opening one at the
//!   state the caller expects ([`Expect`](crate::Expect)): which metadata slot is accepted and why
//!   the others are refused (tag mismatch, foreign volume id, wrong key, malformed metadata).
//! - [`tree`]: the in-memory namespace (inodes, names, parents, modes, times) and its changes.
//! - [`data`]: the file data path: reading and authenticating chunk records, sealing written
//!   chunks into a file's new object, truncation, and whole-volume verification.
//! - [`commit`]: serializing the tree, sealing it into the metadata slot that does not hold the
//!   acknowledged state, and the acknowledge protocol that reclaims older objects and slots.
//!
//! The on-disk format is specified in `FORMAT.md` beside this crate.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::LessSafeKey;

use crate::crypto::{CHUNK, Keys};
#[cfg(feature = "fault-injection")]
use crate::store::FaultInjector;
use crate::store::Store;
use crate::{Access, Error, Options, Protection, Tag};

mod commit;
mod data;
mod open;
mod tree;
mod xattr;

#[doc(hidden)]
pub use open::fuzz_metadata_slot;
pub(crate) use open::new_empty;
pub use open::{create, open};
pub use xattr::XattrFlags;

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
    /// Link count (0 for a file that was unlinked while open).
    pub nlink: u32,
    /// Access time (ns since the epoch): as set by [`Volume::set_times`], else `mtime`.
    pub atime: i64,
    /// Owner set with [`Volume::set_owner`] (`None`: whoever serves the volume).
    pub uid: Option<u32>,
    /// Group set with [`Volume::set_owner`] (`None`: whoever serves the volume).
    pub gid: Option<u32>,
}

/// How [`Volume::rename_with`] treats an existing destination (`renameat2` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameMode {
    /// Replace it (plain `rename`).
    Replace,
    /// Refuse with `EEXIST` (`RENAME_NOREPLACE`).
    NoReplace,
    /// Swap the two names atomically (`RENAME_EXCHANGE`).
    Exchange,
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
    /// The first name of the node (its parent directory and name there); for messages and paths.
    parent: Ino,
    name: String,
    /// Further hard links of a file or symlink (parent directory, name).
    links: Vec<(Ino, String)>,
    mode: u32,
    mtime: i64,
    ctime: i64,
    /// Access time when set explicitly (`utimensat`); otherwise the modification time.
    atime: Option<i64>,
    /// Extended attributes (name → value).
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Owner and group when set with `chown`; otherwise whoever serves the volume.
    uid: Option<u32>,
    gid: Option<u32>,
    kind: NodeKind,
}

impl Node {
    fn new(parent: Ino, name: &str, mode: u32, time: i64, kind: NodeKind) -> Self {
        Self {
            parent,
            name: name.to_string(),
            links: Vec::new(),
            mode: mode & 0o7777,
            mtime: time,
            ctime: time,
            atime: None,
            xattrs: BTreeMap::new(),
            uid: None,
            gid: None,
            kind,
        }
    }
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
    /// Open handles per inode ([`Volume::open_handle`], [`Volume::close_handle`]).
    opens: HashMap<Ino, u32>,
    /// Files and symlinks without a name that are still open: kept, never committed, dropped at
    /// their last close (after a crash their objects are unreferenced and reclaimed at open).
    orphans: BTreeSet<Ino>,
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

impl Volume {
    fn now(&self) -> i64 {
        if self.det { 0 } else { now_ns() }
    }

    /// Install a fault injector on the backing store (crash-safety tests; only with the
    /// `fault-injection` feature).
    #[cfg(feature = "fault-injection")]
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

    /// Whether there are changes not yet committed (data of unlinked files is never committed).
    pub fn has_changes(&self) -> bool {
        self.meta_dirty || self.dirty_files.iter().any(|i| !self.orphans.contains(i))
    }

    fn writable(&self) -> Result<(), Error> {
        if self.access == Access::ReadOnly {
            return Err(Error::ReadOnly {
                volume: self.opts.name.clone(),
            });
        }
        Ok(())
    }

    /// Whether this volume is being built deterministically.
    pub(crate) fn is_deterministic(&self) -> bool {
        self.det
    }

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
}

/// Helpers shared by the unit tests of the volume modules.
#[cfg(test)]
mod testutil {
    use std::path::{Path, PathBuf};

    use super::Volume;
    use crate::{Access, Expect, Options, Tag, VolumeId, VolumeKey};

    pub fn key() -> VolumeKey {
        VolumeKey::from_bytes([0x42; 32])
    }

    pub fn id() -> VolumeId {
        VolumeId::new("cas", "session", "V")
    }

    pub fn backing(dir: &Path) -> PathBuf {
        dir.join("backing")
    }

    /// A new volume `V` shown at `/V`, its first state committed and acknowledged.
    pub fn new_volume(dir: &Path) -> Volume {
        let (mut v, t) = super::create(&backing(dir), &key(), &id(), Options::named("V")).unwrap();
        v.ack(t).unwrap();
        v
    }

    pub fn reopen(dir: &Path, tag: Tag, access: Access) -> Result<Volume, crate::Error> {
        super::open(
            &backing(dir),
            &key(),
            &id(),
            Expect::Tag(tag),
            access,
            Options::named("V"),
        )
    }

    /// Commit and acknowledge.
    pub fn commit_ack(v: &mut Volume) -> Tag {
        let t = v.commit().unwrap();
        v.ack(t).unwrap();
        t
    }

    /// Names of the objects in the backing store, sorted.
    pub fn objects(dir: &Path) -> Vec<String> {
        let mut o: Vec<String> = std::fs::read_dir(backing(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| crate::store::is_object_name(n))
            .collect();
        o.sort();
        o
    }
}
