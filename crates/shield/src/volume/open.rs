//! Creating and opening volumes: the checks that decide whether a backing store is opened, and
//! at which state.
//!
//! [`create`] takes only an empty backing directory (never wipes one). [`open`] takes the lock
//! (shared for readers, exclusive for writers), reads both metadata slots, and accepts exactly the
//! slot [`select_slot`] chooses for the caller's [`Expect`]; the decoded document becomes the
//! in-memory tree in [`build_tree`]. A writer then deletes objects the opened state does not
//! reference (left by a crash, or by a newer state the caller never recorded).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::Path;

use super::tree::check_name;
use super::xattr::check_xattr_name;
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
        Node::new(ROOT_INO, "", 0o755, now, NodeKind::Dir(BTreeMap::new())),
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
        opens: HashMap::new(),
        orphans: BTreeSet::new(),
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
        opens: HashMap::new(),
        orphans: BTreeSet::new(),
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
/// The document must be version 1 or 2 and repeat the header's sequence number
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
    if doc.seq != slot.seq || !(1..=2).contains(&doc.v) {
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
    let mut ids: HashSet<[u8; 16]> = HashSet::new();
    let v2 = doc.v >= 2;
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
        if !v2
            && (e.k == "h"
                || e.a.is_some()
                || e.xa.is_some()
                || e.uid.is_some()
                || e.gid.is_some()
                || e.p.contains('\0')
                || e.to.as_ref().is_some_and(|t| t.contains('\0')))
        {
            return Err(bad(
                vol,
                format!(
                    "{}: hard links, access times, owners, extended attributes and names that are not UTF-8 need version 2",
                    e.p
                ),
            ));
        }
        if e.k == "h" {
            // A further name of an earlier file or symlink.
            let target =
                e.to.as_deref()
                    .and_then(|t| by_path.get(t).copied())
                    .ok_or_else(|| bad(vol, format!("{}: hard link to a missing entry", e.p)))?;
            let tnode = nodes
                .get_mut(&target)
                .ok_or_else(|| bad(vol, format!("{}: hard link to a missing entry", e.p)))?;
            if matches!(tnode.kind, NodeKind::Dir(_)) {
                return Err(bad(vol, format!("{}: hard link to a directory", e.p)));
            }
            tnode.links.push((parent, name.clone()));
            match nodes.get_mut(&parent).map(|n| &mut n.kind) {
                Some(NodeKind::Dir(ch)) => {
                    if ch.insert(name, target).is_some() {
                        return Err(bad(vol, format!("{}: duplicate entry", e.p)));
                    }
                }
                _ => return Err(bad(vol, format!("{}: parent is not a directory", e.p))),
            }
            if by_path.insert(e.p.clone(), target).is_some() {
                return Err(bad(vol, format!("{}: duplicate entry", e.p)));
            }
            continue;
        }
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
                // Two files with one id would share objects (a write to one would change both).
                if !ids.insert(id) {
                    return Err(bad(vol, format!("{}: file id used twice", e.p)));
                }
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
        let mut xattrs = BTreeMap::new();
        for (k, val) in e.xa.iter().flatten() {
            if check_xattr_name(k).is_err() {
                return Err(bad(
                    vol,
                    format!("{}: bad extended attribute name {k:?}", e.p),
                ));
            }
            let val = hex::decode(val)
                .ok()
                .filter(|v| v.len() <= super::xattr::MAX_VALUE)
                .ok_or_else(|| bad(vol, format!("{}: bad extended attribute {k:?}", e.p)))?;
            xattrs.insert(k.clone(), val);
        }
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
        let mut node = Node::new(parent, &name, e.m, e.t, kind);
        node.ctime = e.c;
        node.atime = e.a.filter(|a| *a != e.t);
        node.xattrs = xattrs;
        node.uid = e.uid;
        node.gid = e.gid;
        nodes.insert(ino, node);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Entry;
    use crate::volume::testutil::{backing, commit_ack, id, key, new_volume, reopen};

    fn entry(p: &str, k: &str) -> Entry {
        Entry {
            p: p.into(),
            k: k.into(),
            m: 0o755,
            t: 1,
            c: 2,
            id: None,
            g: None,
            s: None,
            r: None,
            x: None,
            to: None,
            a: None,
            xa: None,
            uid: None,
            gid: None,
        }
    }

    fn file(p: &str) -> Entry {
        Entry {
            id: Some("11".repeat(16)),
            g: Some(1),
            s: Some(5),
            r: Some("22".repeat(32)),
            ..entry(p, "f")
        }
    }

    fn doc_bytes(v: u32, seq: u64) -> Vec<u8> {
        serde_json::to_vec(&Doc {
            v,
            seq,
            entries: vec![entry("/", "d")],
        })
        .unwrap()
    }

    /// A sealed slot of document version `v` and sequence `doc_seq` under header sequence `seq`.
    fn slot(keys: &Keys, seq: u64, v: u32, doc_seq: u64) -> meta::Slot {
        let (bytes, _) = meta::seal(keys, seq, doc_bytes(v, doc_seq), [seq as u8; 12]).unwrap();
        meta::parse(bytes).unwrap()
    }

    fn ours() -> Keys {
        Keys::derive(&key(), &id()).unwrap()
    }

    fn select(slots: Vec<(usize, meta::Slot)>, expect: Expect) -> Result<(usize, u64), Error> {
        select_slot(slots, &ours(), expect, "V", Path::new("/b")).map(|(i, s, d)| {
            assert_eq!(s.seq, d.seq);
            (i, s.seq)
        })
    }

    #[test]
    fn expected_tag_opens_exactly_that_slot() {
        let keys = ours();
        let wrong_key = Keys::derive(&VolumeKey::from_bytes([1; 32]), &id()).unwrap();
        let other_id = Keys::derive(&key(), &VolumeId::new("cas", "session", "W")).unwrap();
        let (a, b) = (slot(&keys, 1, 1, 1), slot(&keys, 2, 1, 2));
        let (ta, tb) = (a.tag, b.tag);
        assert_eq!(
            select(vec![(0, a), (1, b)], Expect::Tag(ta)).unwrap(),
            (0, 1)
        );
        let b = slot(&keys, 2, 1, 2);
        assert_eq!(select(vec![(1, b)], Expect::Tag(tb)).unwrap(), (1, 2));
        // Rolled back or modified: no slot has the tag.
        let a = slot(&keys, 1, 1, 1);
        let e = select(vec![(0, a)], Expect::Tag(tb)).unwrap_err();
        assert!(matches!(e, Error::TagMismatch { tag, .. } if tag == tb));
        let f = slot(&other_id, 1, 1, 1);
        let tf = f.tag;
        assert!(matches!(
            select(vec![(0, f)], Expect::Tag(tf)),
            Err(Error::ForeignVolume { .. })
        ));
        let w = slot(&wrong_key, 1, 1, 1);
        let tw = w.tag;
        assert!(matches!(
            select(vec![(0, w)], Expect::Tag(tw)),
            Err(Error::WrongKey { .. })
        ));
    }

    #[test]
    fn newest_takes_the_highest_sequence_that_authenticates() {
        let keys = ours();
        let wrong_key = Keys::derive(&VolumeKey::from_bytes([1; 32]), &id()).unwrap();
        let other_id = Keys::derive(&key(), &VolumeId::new("other", "session", "V")).unwrap();
        let s = |k: &Keys, seq| slot(k, seq, 1, seq);
        assert_eq!(
            select(vec![(0, s(&keys, 4)), (1, s(&keys, 5))], Expect::Newest).unwrap(),
            (1, 5)
        );
        assert_eq!(
            select(vec![(0, s(&keys, 5)), (1, s(&keys, 4))], Expect::Newest).unwrap(),
            (0, 5)
        );
        // Newer slots of another key or volume id are not ours.
        assert_eq!(
            select(
                vec![(0, s(&keys, 4)), (1, s(&wrong_key, 9))],
                Expect::Newest
            )
            .unwrap(),
            (0, 4)
        );
        assert_eq!(
            select(vec![(0, s(&other_id, 9)), (1, s(&keys, 4))], Expect::Newest).unwrap(),
            (1, 4)
        );
        assert!(matches!(
            select(vec![], Expect::Newest),
            Err(Error::NoVolume { .. })
        ));
        assert!(matches!(
            select(vec![(0, s(&other_id, 1))], Expect::Newest),
            Err(Error::ForeignVolume { .. })
        ));
        assert!(matches!(
            select(
                vec![(0, s(&other_id, 1)), (1, s(&wrong_key, 1))],
                Expect::Newest
            ),
            Err(Error::WrongKey { .. })
        ));
    }

    #[test]
    fn document_must_match_its_header() {
        let keys = ours();
        let bad_version = slot(&keys, 1, 3, 1);
        let bad_seq = slot(&keys, 1, 1, 7);
        for s in [bad_version, bad_seq] {
            let t = s.tag;
            let e = select(vec![(0, s)], Expect::Tag(t)).unwrap_err();
            assert!(
                matches!(&e, Error::BadMetadata { reason, .. } if reason.contains("does not match the header")),
                "{e}"
            );
        }
        let (bytes, t) = meta::seal(&keys, 1, b"{not json".to_vec(), [0; 12]).unwrap();
        let s = meta::parse(bytes).unwrap();
        assert!(matches!(
            select(vec![(0, s)], Expect::Tag(t)),
            Err(Error::BadMetadata { .. })
        ));
    }

    fn tree(entries: Vec<Entry>) -> Result<(HashMap<Ino, Node>, Ino), Error> {
        build_tree(
            Doc {
                v: 1,
                seq: 1,
                entries,
            },
            &ours(),
            "V",
        )
    }

    fn tree_err(entries: Vec<Entry>) -> String {
        match tree(entries) {
            Err(Error::BadMetadata { volume, reason }) => {
                assert_eq!(volume, "V");
                reason
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn tree_is_built_parents_first() {
        let link = Entry {
            to: Some("../t".into()),
            ..entry("/d/l", "l")
        };
        let (nodes, next) =
            tree(vec![entry("/", "d"), entry("/d", "d"), file("/d/f"), link]).unwrap();
        assert_eq!((nodes.len(), next), (4, 5));
        let Some(NodeKind::Dir(root)) = nodes.get(&ROOT_INO).map(|n| &n.kind) else {
            panic!("no root");
        };
        assert_eq!(root.get("d"), Some(&2));
        let Some(NodeKind::Dir(d)) = nodes.get(&2).map(|n| &n.kind) else {
            panic!("no /d");
        };
        assert_eq!(d.keys().collect::<Vec<_>>(), ["f", "l"]);
        let Some(NodeKind::File(f)) = nodes.get(&3).map(|n| &n.kind) else {
            panic!("no /d/f");
        };
        assert_eq!((f.id, f.size, f.csize, f.generation), ([0x11; 16], 5, 5, 1));
        assert_eq!(f.prot, Protection::Encrypted);
        assert_eq!(
            nodes.get(&3).map(|n| (n.parent, n.name.as_str(), n.mode)),
            Some((2, "f", 0o755))
        );
    }

    #[test]
    fn malformed_trees_are_refused() {
        let root = || entry("/", "d");
        assert_eq!(tree_err(vec![]), "no root directory");
        assert_eq!(
            tree_err(vec![entry("/a", "d")]),
            "the first entry is not the root directory"
        );
        assert_eq!(
            tree_err(vec![entry("/", "f")]),
            "the first entry is not the root directory"
        );
        assert_eq!(tree_err(vec![root(), entry("a", "d")]), "a: not absolute");
        assert_eq!(
            tree_err(vec![root(), entry("/a/..", "d")]),
            "/a/..: invalid name"
        );
        assert_eq!(tree_err(vec![root(), entry("/", "d")]), "/: invalid name");
        assert_eq!(
            tree_err(vec![root(), entry("/a/b", "d")]),
            "/a/b: parent missing"
        );
        assert_eq!(
            tree_err(vec![root(), entry("/a", "d"), entry("/a", "d")]),
            "/a: duplicate entry"
        );
        assert_eq!(
            tree_err(vec![root(), file("/f"), entry("/f/x", "d")]),
            "/f/x: parent is not a directory"
        );
        assert_eq!(
            tree_err(vec![root(), entry("/x", "p")]),
            "/x: unknown kind \"p\""
        );
        assert_eq!(
            tree_err(vec![root(), entry("/l", "l")]),
            "/l: symlink without target"
        );
        let short_id = Entry {
            id: Some("11".repeat(15)),
            ..file("/f")
        };
        assert_eq!(tree_err(vec![root(), short_id]), "/f: bad file id");
        let no_root = Entry {
            r: None,
            ..file("/f")
        };
        assert_eq!(
            tree_err(vec![root(), no_root]),
            "/f: missing integrity root"
        );
        let no_size = Entry {
            s: None,
            ..file("/f")
        };
        assert_eq!(tree_err(vec![root(), no_size]), "/f: missing size");
        let no_gen = Entry {
            g: None,
            ..file("/f")
        };
        assert_eq!(tree_err(vec![root(), no_gen]), "/f: missing generation");
    }

    fn tree_v2(entries: Vec<Entry>) -> Result<(HashMap<Ino, Node>, Ino), Error> {
        build_tree(
            Doc {
                v: 2,
                seq: 1,
                entries,
            },
            &ours(),
            "V",
        )
    }

    #[test]
    fn version_2_hard_links_and_attributes() {
        let root = || entry("/", "d");
        let h = |p: &str, to: &str| Entry {
            to: Some(to.into()),
            ..entry(p, "h")
        };
        let with_xa = Entry {
            xa: Some([("user.k".to_string(), "00ff".to_string())].into()),
            a: Some(9),
            ..file("/f")
        };
        let (nodes, next) =
            tree_v2(vec![root(), entry("/d", "d"), with_xa, h("/d/g", "/f")]).unwrap();
        assert_eq!((nodes.len(), next), (3, 4), "one node for both names");
        let f = nodes.get(&3).unwrap();
        assert_eq!(f.links, [(2, "g".to_string())]);
        assert_eq!(
            f.xattrs.get("user.k").map(Vec::as_slice),
            Some(&[0, 0xff][..])
        );
        assert_eq!(f.atime, Some(9));
        let Some(NodeKind::Dir(d)) = nodes.get(&2).map(|n| &n.kind) else {
            panic!("no /d");
        };
        assert_eq!(d.get("g"), Some(&3));
        let err = |entries: Vec<Entry>| match tree_v2(entries) {
            Err(Error::BadMetadata { reason, .. }) => reason,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted"),
        };
        assert_eq!(
            err(vec![root(), h("/g", "/f"), file("/f")]),
            "/g: hard link to a missing entry"
        );
        assert_eq!(
            err(vec![root(), entry("/d", "d"), h("/g", "/d")]),
            "/g: hard link to a directory"
        );
        assert_eq!(
            err(vec![root(), file("/f"), h("/f", "/f")]),
            "/f: duplicate entry"
        );
        assert_eq!(
            err(vec![root(), file("/f"), file("/g")]),
            "/g: file id used twice"
        );
        let bad_xa = Entry {
            xa: Some([("system.posix_acl_access".to_string(), String::new())].into()),
            ..file("/f")
        };
        assert_eq!(
            err(vec![root(), bad_xa]),
            "/f: bad extended attribute name \"system.posix_acl_access\""
        );
        // Version 1 documents cannot use any of it.
        assert_eq!(
            tree_err(vec![root(), file("/f"), h("/g", "/f")]),
            "/g: hard links, access times, owners, extended attributes and names that are not UTF-8 need version 2"
        );
    }

    #[test]
    fn create_and_open_checks() {
        let d = tempfile::tempdir().unwrap();
        let opts = || Options::named("V");
        let missing = open(
            &d.path().join("nope"),
            &key(),
            &id(),
            Expect::Newest,
            Access::ReadOnly,
            opts(),
        );
        assert!(matches!(missing, Err(Error::NoVolume { .. })));
        // An existing but empty directory holds no volume either.
        std::fs::create_dir(backing(d.path())).unwrap();
        let empty = open(
            &backing(d.path()),
            &key(),
            &id(),
            Expect::Newest,
            Access::ReadOnly,
            opts(),
        );
        assert!(matches!(empty, Err(Error::NoVolume { .. })));
        let mut v = new_volume(d.path());
        v.write_file("/f", b"data", 0o644).unwrap();
        let t = commit_ack(&mut v);
        // A writer holds the lock exclusively.
        assert!(matches!(
            reopen(d.path(), t, Access::ReadOnly),
            Err(Error::Locked { .. })
        ));
        drop(v);
        // Readers share it.
        let r1 = reopen(d.path(), t, Access::ReadOnly).unwrap();
        let r2 = reopen(d.path(), t, Access::ReadOnly).unwrap();
        assert!(matches!(
            reopen(d.path(), t, Access::ReadWrite),
            Err(Error::Locked { .. })
        ));
        assert_eq!(r1.tag(), Some(t));
        assert_eq!(r2.read_file("/f").unwrap(), b"data");
        drop((r1, r2));
        let newest = open(
            &backing(d.path()),
            &key(),
            &id(),
            Expect::Newest,
            Access::ReadOnly,
            opts(),
        )
        .unwrap();
        assert_eq!(newest.acked_tag(), Some(t));
        drop(newest);
        let e = create(&backing(d.path()), &key(), &id(), opts()).unwrap_err();
        assert!(matches!(e, Error::NotEmpty { .. }), "{e}");
        let other = VolumeId::new("cas", "session", "W");
        let e = open(
            &backing(d.path()),
            &key(),
            &other,
            Expect::Tag(t),
            Access::ReadOnly,
            opts(),
        );
        assert!(matches!(e, Err(Error::ForeignVolume { .. })));
        let e = open(
            &backing(d.path()),
            &VolumeKey::from_bytes([3; 32]),
            &id(),
            Expect::Tag(t),
            Access::ReadOnly,
            opts(),
        );
        assert!(matches!(e, Err(Error::WrongKey { .. })));
    }

    #[test]
    fn writer_open_deletes_unreferenced_objects() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        v.write_file("/f", b"kept", 0o644).unwrap();
        let t = commit_ack(&mut v);
        drop(v);
        let stray = backing(d.path()).join("0123456789abcdef0123456789abcdef");
        std::fs::write(&stray, b"left by a crash").unwrap();
        drop(reopen(d.path(), t, Access::ReadOnly).unwrap());
        assert!(stray.exists(), "a reader changes nothing");
        let v = reopen(d.path(), t, Access::ReadWrite).unwrap();
        assert!(!stray.exists());
        assert_eq!(v.read_file("/f").unwrap(), b"kept");
    }

    #[test]
    fn fuzz_entry_reaches_the_tree_and_refuses_garbage() {
        let doc = serde_json::to_vec(&Doc {
            v: 1,
            seq: 1,
            entries: vec![entry("/", "d"), entry("/a", "d"), file("/a/f")],
        })
        .unwrap();
        let mut sealed = vec![1u8];
        sealed.extend_from_slice(&doc);
        assert_eq!(fuzz_metadata_slot(&sealed).unwrap(), 3);
        sealed[0] = 3;
        assert_eq!(fuzz_metadata_slot(&sealed).unwrap(), 3);
        assert!(matches!(
            fuzz_metadata_slot(&[]),
            Err(Error::NoVolume { .. })
        ));
        assert!(matches!(
            fuzz_metadata_slot(&[1]),
            Err(Error::BadMetadata { .. })
        ));
        // The same document as raw slot bytes has no header: nothing to open.
        sealed[0] = 0;
        assert!(matches!(
            fuzz_metadata_slot(&sealed),
            Err(Error::NoVolume { .. })
        ));
        let mut raw = vec![0u8];
        raw.extend_from_slice(meta::MAGIC);
        raw.extend_from_slice(&[0; 100]);
        assert!(matches!(
            fuzz_metadata_slot(&raw),
            Err(Error::ForeignVolume { .. })
        ));
    }
}
