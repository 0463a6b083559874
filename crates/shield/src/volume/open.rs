//! Creating and opening volumes: the checks that decide whether a backing store is opened, and
//! at which state.
//!
//! [`create`] takes only an empty backing directory (never wipes one). [`open`] takes the lock
//! (shared for readers, exclusive for writers), reads both metadata slots, and accepts exactly the
//! slot [`select_slot`] chooses for the caller's [`Expect`]; the decoded document becomes the
//! in-memory tree in [`build_tree`]. A writer then deletes objects the opened state does not
//! reference (left by a crash, or by a newer state the caller never recorded).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use super::tree::check_name;
use super::{FileNode, Ino, Node, NodeKind, ROOT_INO, SlotState, Volume, now_ns};
use crate::crypto::Keys;
use crate::meta::{self, Doc};
use crate::store::{LockError, Store};
use crate::{Access, Error, Expect, Options, Protection, Tag, VolumeId, VolumeKey};

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
    let (slot_idx, slot, doc) = select_slot(slots, &keys, expect, &opts.name, backing)?;
    let st = SlotState {
        tag: slot.tag,
        seq: slot.seq,
        slot: slot_idx,
    };
    let (nodes, next_ino) = build_tree(doc, &keys, &opts.name)?;
    let mut v = Volume {
        store,
        keys,
        opts,
        access,
        nodes,
        next_ino,
        seq: slot.seq,
        acked: Some(st),
        pending: None,
        garbage: Vec::new(),
        dropped: Vec::new(),
        dirty_files: BTreeSet::new(),
        meta_dirty: false,
        det: false,
    };
    if access == Access::ReadWrite {
        v.collect_unreferenced()?;
    }
    Ok(v)
}

pub(super) fn bad(v: &str, reason: String) -> Error {
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

/// Choose the metadata slot that `expect` accepts among the slots whose header parsed, open it
/// and decode its document. This is where rollback, foreign stores and wrong keys are refused:
///
/// - [`Expect::Tag`]: only a slot with exactly that tag; it must carry this volume id's digest
///   ([`Error::ForeignVolume`]) and authenticate under the key ([`Error::WrongKey`]);
///   no such slot is [`Error::TagMismatch`].
/// - [`Expect::Newest`]: the authenticating slot of this volume id with the highest sequence
///   number; none at all is [`Error::NoVolume`], only other ids' slots [`Error::ForeignVolume`],
///   ours that do not open [`Error::WrongKey`].
///
/// The document must be version 1 and repeat the header's sequence number
/// ([`Error::BadMetadata`]).
pub(super) fn select_slot(
    slots: Vec<(usize, meta::Slot)>,
    keys: &Keys,
    expect: Expect,
    name: &str,
    backing: &Path,
) -> Result<(usize, meta::Slot, Doc), Error> {
    let foreign = || Error::ForeignVolume {
        volume: name.to_string(),
        path: backing.display().to_string(),
    };
    let (slot_idx, slot, plain) = match expect {
        Expect::Tag(t) => {
            let Some((i, s)) = slots.into_iter().find(|(_, s)| s.tag == t) else {
                return Err(Error::TagMismatch {
                    volume: name.to_string(),
                    tag: t,
                });
            };
            if s.idd != keys.id_digest() {
                return Err(foreign());
            }
            let Some(p) = meta::open(keys, &s) else {
                return Err(Error::WrongKey {
                    volume: name.to_string(),
                });
            };
            (i, s, p)
        }
        Expect::Newest => {
            if slots.is_empty() {
                return Err(Error::NoVolume {
                    volume: name.to_string(),
                    path: backing.display().to_string(),
                });
            }
            let any_ours = slots.iter().any(|(_, s)| s.idd == keys.id_digest());
            let mut best: Option<(usize, meta::Slot, Vec<u8>)> = None;
            for (i, s) in slots {
                if s.idd != keys.id_digest() {
                    continue;
                }
                if let Some(p) = meta::open(keys, &s)
                    && best.as_ref().is_none_or(|b| b.1.seq < s.seq)
                {
                    best = Some((i, s, p));
                }
            }
            match best {
                Some(b) => b,
                None if any_ours => {
                    return Err(Error::WrongKey {
                        volume: name.to_string(),
                    });
                }
                None => return Err(foreign()),
            }
        }
    };
    let doc: Doc = serde_json::from_slice(&plain).map_err(|e| Error::BadMetadata {
        volume: name.to_string(),
        reason: e.to_string(),
    })?;
    if doc.seq != slot.seq || doc.v != 1 {
        return Err(Error::BadMetadata {
            volume: name.to_string(),
            reason: format!(
                "version {} / sequence {} does not match the header ({})",
                doc.v, doc.seq, slot.seq
            ),
        });
    }
    Ok((slot_idx, slot, doc))
}

/// The in-memory tree of a decoded metadata document: the nodes by inode and the next free inode.
/// Entries must come parents first, the root `/` first of all, with valid names, no duplicates and
/// the fields their kind needs; anything else is [`Error::BadMetadata`].
pub(super) fn build_tree(
    doc: Doc,
    keys: &Keys,
    vol: &str,
) -> Result<(HashMap<Ino, Node>, Ino), Error> {
    let mut nodes: HashMap<Ino, Node> = HashMap::new();
    let mut next_ino = ROOT_INO + 1;
    let mut by_path: HashMap<String, Ino> = HashMap::new();
    for (i, e) in doc.entries.into_iter().enumerate() {
        let (parent, name) = if i == 0 {
            if e.p != "/" || e.k != "d" {
                return Err(bad(vol, "the first entry is not the root directory".into()));
            }
            (ROOT_INO, String::new())
        } else {
            let (dir, name) =
                e.p.rsplit_once('/')
                    .ok_or_else(|| bad(vol, format!("{}: not absolute", e.p)))?;
            check_name(name).map_err(|_| bad(vol, format!("{}: invalid name", e.p)))?;
            let dir = if dir.is_empty() { "/" } else { dir };
            let parent = *by_path
                .get(dir)
                .ok_or_else(|| bad(vol, format!("{}: parent missing", e.p)))?;
            (parent, name.to_string())
        };
        let kind = match e.k.as_str() {
            "d" => NodeKind::Dir(BTreeMap::new()),
            "l" => NodeKind::Link(
                e.to.clone()
                    .ok_or_else(|| bad(vol, format!("{}: symlink without target", e.p)))?,
            ),
            "f" => {
                let id: [u8; 16] = parse_hex(e.id.as_ref(), "file id", &e.p, vol)?;
                let root: [u8; 32] = parse_hex(e.r.as_ref(), "integrity root", &e.p, vol)?;
                let size =
                    e.s.ok_or_else(|| bad(vol, format!("{}: missing size", e.p)))?;
                let generation =
                    e.g.ok_or_else(|| bad(vol, format!("{}: missing generation", e.p)))?;
                NodeKind::File(Box::new(FileNode {
                    id,
                    prot: e.x.unwrap_or(Protection::Encrypted),
                    size,
                    generation,
                    csize: size,
                    root,
                    key: keys.file_key(&id)?,
                    dirty: None,
                }))
            }
            k => return Err(bad(vol, format!("{}: unknown kind {k:?}", e.p))),
        };
        let ino = if i == 0 {
            ROOT_INO
        } else {
            next_ino += 1;
            next_ino - 1
        };
        if i != 0 {
            match nodes.get_mut(&parent).map(|n| &mut n.kind) {
                Some(NodeKind::Dir(ch)) => {
                    if ch.insert(name.clone(), ino).is_some() {
                        return Err(bad(vol, format!("{}: duplicate entry", e.p)));
                    }
                }
                _ => return Err(bad(vol, format!("{}: parent is not a directory", e.p))),
            }
        }
        nodes.insert(
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
    if !nodes.contains_key(&ROOT_INO) {
        return Err(bad(vol, "no root directory".into()));
    }
    Ok((nodes, next_ino))
}

/// Fuzzing entry point for the metadata slot parser (`fuzz/fuzz_targets/shield_slot.rs`); not an
/// API. The first byte chooses what the rest is: even, the raw bytes of a metadata slot (header
/// parsing and authentication); odd, the plaintext of a metadata document, sealed here under a
/// fixed key as sequence 1 so that decoding and [`build_tree`] are reached behind the
/// authentication. Both go through [`select_slot`] exactly as [`open`] does with
/// [`Expect::Newest`]. Returns the number of entries of the tree built, or the error; never panics.
#[doc(hidden)]
pub fn fuzz_metadata_slot(data: &[u8]) -> Result<usize, Error> {
    let (mode, rest) = data.split_first().map_or((0, &[][..]), |(m, r)| (*m, r));
    let key = VolumeKey::from_bytes([0x5a; 32]);
    let keys = Keys::derive(&key, &VolumeId::new("fuzz-cas", "fuzz-session", "F"))?;
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        meta::seal(&keys, 1, rest.to_vec(), [7; crate::crypto::NONCE_LEN])?.0
    };
    let slots: Vec<(usize, meta::Slot)> = meta::parse(bytes).map(|s| (0, s)).into_iter().collect();
    let (_, _, doc) = select_slot(slots, &keys, Expect::Newest, "F", Path::new("fuzz"))?;
    let (nodes, _) = build_tree(doc, &keys, "F")?;
    Ok(nodes.len())
}
