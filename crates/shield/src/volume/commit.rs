//! Committing an opened volume: the tree is serialized (parents before children, the root
//! first), sealed into a metadata slot and fsynced; the SHA-256 of the sealed slot, cut to 16 bytes,
//! is the new [`Tag`].
//!
//! Rules (see `FORMAT.md`, "Commit protocol"):
//! - a commit never overwrites the slot that holds the acknowledged state ([`next_slot`]), so a
//!   crash at any point leaves the caller's recorded tag openable;
//! - a new tag is *pending* until [`Volume::ack`]: only then is the previous slot retired (its tag
//!   becomes a refused rollback) and the objects that only older states referenced deleted;
//! - a commit without changes returns the latest tag unchanged; acknowledging anything but the
//!   latest commit is [`Error::UnknownAck`].

use std::collections::{HashMap, HashSet};

use super::open::bad;
use super::{Ino, NodeKind, ROOT_INO, SlotState, Volume};
use crate::crypto::{self, NONCE_LEN};
use crate::meta::{self, Doc, Entry};
use crate::store::is_object_name;
use crate::{Error, Tag, TagSink};

/// The metadata slot (0 or 1) a new commit is written to: the one that does not hold the
/// acknowledged state; before the first acknowledgement, the one the pending commit does not use.
pub(super) fn next_slot(acked: Option<SlotState>, pending: Option<SlotState>) -> usize {
    match (acked, pending) {
        (Some(a), _) => 1 - a.slot,
        (None, Some(p)) => 1 - p.slot,
        (None, None) => 0,
    }
}

impl Volume {
    fn serialize(&self, seq: u64) -> Result<Vec<u8>, Error> {
        let mut entries = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<(Ino, String)> = vec![(ROOT_INO, "/".to_string())];
        // The path each multiply linked node was first written at.
        let mut first: HashMap<Ino, String> = HashMap::new();
        let mut v2 = false;
        while let Some((ino, path)) = stack.pop() {
            let n = self.node(ino)?;
            if !n.links.is_empty() {
                if let Some(to) = first.get(&ino) {
                    v2 = true;
                    entries.push(Entry {
                        p: path,
                        k: "h".into(),
                        to: Some(to.clone()),
                        ..Entry::default()
                    });
                    continue;
                }
                first.insert(ino, path.clone());
            }
            let mut e = Entry {
                p: path.clone(),
                m: n.mode,
                t: n.mtime,
                c: n.ctime,
                a: n.atime,
                uid: n.uid,
                gid: n.gid,
                ..Entry::default()
            };
            if !n.xattrs.is_empty() {
                e.xa = Some(
                    n.xattrs
                        .iter()
                        .map(|(k, v)| (k.clone(), hex::encode(v)))
                        .collect(),
                );
            }
            v2 |= e.a.is_some()
                || e.xa.is_some()
                || e.uid.is_some()
                || e.gid.is_some()
                || e.p.contains('\0');
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
                    v2 |= t.contains('\0');
                }
            }
            entries.push(e);
        }
        // Version 1 whenever the tree needs nothing newer: volumes (and deterministic code
        // regions) without version 2 features keep their exact bytes and tags.
        let v = if v2 { 2 } else { 1 };
        serde_json::to_vec(&Doc { v, seq, entries })
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
        // Files unlinked while open are never committed: their data is dropped at the last close.
        let dirty: Vec<Ino> = self
            .dirty_files
            .iter()
            .copied()
            .filter(|i| !self.orphans.contains(i))
            .collect();
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
        let slot = next_slot(self.acked, self.pending);
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
    pub(super) fn collect_unreferenced(&mut self) -> Result<(), Error> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Access;
    use crate::volume::testutil::{backing, commit_ack, id, key, new_volume, objects, reopen};

    fn st(slot: usize) -> Option<SlotState> {
        Some(SlotState {
            tag: Tag([slot as u8; 16]),
            seq: 1,
            slot,
        })
    }

    #[test]
    fn commits_never_overwrite_the_acknowledged_slot() {
        assert_eq!(next_slot(None, None), 0);
        assert_eq!(next_slot(None, st(0)), 1);
        assert_eq!(next_slot(None, st(1)), 0);
        assert_eq!(next_slot(st(0), None), 1);
        assert_eq!(next_slot(st(1), None), 0);
        // With a pending commit, the acknowledged slot still decides.
        assert_eq!(next_slot(st(0), st(1)), 1);
        assert_eq!(next_slot(st(1), st(0)), 0);
    }

    fn slot_exists(dir: &std::path::Path, i: usize) -> bool {
        backing(dir).join(crate::store::SLOTS[i]).exists()
    }

    #[test]
    fn pending_ack_and_retirement() {
        let d = tempfile::tempdir().unwrap();
        let (mut v, t0) = crate::create(
            &backing(d.path()),
            &key(),
            &id(),
            crate::Options::named("V"),
        )
        .unwrap();
        assert_eq!((v.tag(), v.acked_tag()), (Some(t0), None));
        assert!(slot_exists(d.path(), 0) && !slot_exists(d.path(), 1));
        // Nothing changed: the same tag, no new slot.
        assert_eq!(v.commit().unwrap(), t0);
        v.ack(t0).unwrap();
        v.ack(t0).unwrap();
        v.write_file("/f", b"one", 0o644).unwrap();
        assert!(v.has_changes());
        let t1 = v.commit().unwrap();
        assert_ne!(t1, t0);
        assert!(!v.has_changes());
        assert_eq!((v.tag(), v.acked_tag()), (Some(t1), Some(t0)));
        assert!(slot_exists(d.path(), 0) && slot_exists(d.path(), 1));
        // Only the latest commit can be acknowledged.
        assert!(matches!(v.ack(t0), Err(Error::UnknownAck { tag, .. }) if tag == t0));
        assert!(matches!(v.ack(Tag([0; 16])), Err(Error::UnknownAck { .. })));
        v.ack(t1).unwrap();
        assert_eq!(v.acked_tag(), Some(t1));
        assert!(!slot_exists(d.path(), 0), "the previous slot is retired");
        v.write_file("/f", b"two", 0o644).unwrap();
        let t2 = commit_ack(&mut v);
        assert!(slot_exists(d.path(), 0) && !slot_exists(d.path(), 1));
        drop(v);
        for old in [t0, t1] {
            assert!(matches!(
                reopen(d.path(), old, Access::ReadOnly),
                Err(Error::TagMismatch { .. })
            ));
        }
        let v = reopen(d.path(), t2, Access::ReadOnly).unwrap();
        assert_eq!(v.read_file("/f").unwrap(), b"two");
    }

    #[test]
    fn old_objects_live_until_the_new_state_is_acknowledged() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        v.write_file("/f", b"one", 0o644).unwrap();
        let t1 = commit_ack(&mut v);
        let before = objects(d.path());
        assert_eq!(before.len(), 1);
        v.write_file("/f", b"two", 0o644).unwrap();
        let t2 = v.commit().unwrap();
        let during = objects(d.path());
        assert_eq!(during.len(), 2, "the acknowledged state's object is kept");
        assert!(during.contains(&before[0]));
        v.ack(t2).unwrap();
        let after = objects(d.path());
        assert_eq!(after.len(), 1);
        assert!(!after.contains(&before[0]));
        assert_ne!(t1, t2);
    }

    struct Sink(Result<(), String>, Vec<Tag>);

    impl TagSink for Sink {
        fn record(&mut self, tag: &Tag) -> Result<(), String> {
            self.1.push(*tag);
            self.0.clone()
        }
    }

    #[test]
    fn commit_to_acknowledges_only_recorded_tags() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        let t0 = v.acked_tag().unwrap();
        v.write_file("/f", b"x", 0o644).unwrap();
        let mut refusing = Sink(Err("CAS unreachable".into()), Vec::new());
        let e = v.commit_to(&mut refusing).unwrap_err();
        let Error::Record { tag, reason, .. } = e else {
            panic!("{e}");
        };
        assert_eq!(reason, "CAS unreachable");
        assert_eq!(refusing.1, [tag]);
        assert_eq!((v.tag(), v.acked_tag()), (Some(tag), Some(t0)));
        let mut ok = Sink(Ok(()), Vec::new());
        assert_eq!(v.commit_to(&mut ok).unwrap(), tag);
        assert_eq!(v.acked_tag(), Some(tag));
        // Nothing new: nothing recorded.
        assert_eq!(v.commit_to(&mut ok).unwrap(), tag);
        assert_eq!(ok.1, [tag]);
    }

    #[test]
    fn read_only_volumes_do_not_commit() {
        let d = tempfile::tempdir().unwrap();
        let v = new_volume(d.path());
        let t = v.acked_tag().unwrap();
        drop(v);
        let mut r = reopen(d.path(), t, Access::ReadOnly).unwrap();
        assert!(matches!(r.commit(), Err(Error::ReadOnly { .. })));
    }

    #[test]
    fn version_2_only_when_the_tree_needs_it() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        v.write_file("/a", b"1", 0o600).unwrap();
        let doc: Doc = serde_json::from_slice(&v.serialize(1).unwrap()).unwrap();
        assert_eq!(doc.v, 1);
        v.link_path("/a", "/b").unwrap();
        let doc: Doc = serde_json::from_slice(&v.serialize(2).unwrap()).unwrap();
        assert_eq!(doc.v, 2);
        let shape: Vec<(&str, &str, Option<&str>)> = doc
            .entries
            .iter()
            .map(|e| (e.p.as_str(), e.k.as_str(), e.to.as_deref()))
            .collect();
        assert_eq!(
            shape,
            [("/", "d", None), ("/a", "f", None), ("/b", "h", Some("/a"))]
        );
        v.remove("/b").unwrap();
        let a = v.resolve("/a").unwrap();
        v.set_xattr(a, "user.x", b"\x01", crate::XattrFlags::Any)
            .unwrap();
        let doc: Doc = serde_json::from_slice(&v.serialize(3).unwrap()).unwrap();
        assert_eq!(doc.v, 2);
        assert_eq!(
            doc.entries[1]
                .xa
                .as_ref()
                .and_then(|x| x.get("user.x"))
                .map(String::as_str),
            Some("01")
        );
        v.remove_xattr(a, "user.x").unwrap();
        let doc: Doc = serde_json::from_slice(&v.serialize(4).unwrap()).unwrap();
        assert_eq!(doc.v, 1);
    }

    #[test]
    fn names_that_are_not_utf8_survive_commit_reopen_and_staged_mode() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        let bad = crate::name_from_bytes(b"caf\xe9 \xff");
        v.mkdir_all(&format!("/{bad}")).unwrap();
        v.write_file(&format!("/{bad}/{bad}"), b"latin-1", 0o644)
            .unwrap();
        v.symlink_path("/l", &format!("{bad}/{bad}")).unwrap();
        let doc: Doc = serde_json::from_slice(&v.serialize(9).unwrap()).unwrap();
        assert_eq!(doc.v, 2);
        let t = commit_ack(&mut v);
        drop(v);
        let v = reopen(d.path(), t, Access::ReadOnly).unwrap();
        assert_eq!(v.read_file(&format!("/{bad}/{bad}")).unwrap(), b"latin-1");
        let plain = d.path().join("plain");
        v.unpack(&plain).unwrap();
        use std::os::unix::ffi::OsStrExt;
        let raw = std::ffi::OsStr::from_bytes(b"caf\xe9 \xff");
        assert_eq!(
            std::fs::read(plain.join(raw).join(raw)).unwrap(),
            b"latin-1"
        );
        assert_eq!(
            std::fs::read_link(plain.join("l")).unwrap(),
            std::path::Path::new(raw).join(raw)
        );
        drop(v);
        let d2 = tempfile::tempdir().unwrap();
        let mut w = new_volume(d2.path());
        w.pack_from(&plain).unwrap();
        assert_eq!(w.read_file(&format!("/{bad}/{bad}")).unwrap(), b"latin-1");
        assert_eq!(
            w.readlink(w.resolve("/l").unwrap()).unwrap(),
            format!("{bad}/{bad}")
        );
    }

    #[test]
    fn changing_an_attribute_changes_the_tag() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        let f = v.write_file("/f", b"x", 0o644).unwrap();
        v.set_xattr(f, "user.k", b"1", crate::XattrFlags::Any)
            .unwrap();
        let t1 = commit_ack(&mut v);
        v.set_xattr(f, "user.k", b"2", crate::XattrFlags::Any)
            .unwrap();
        let t2 = commit_ack(&mut v);
        assert_ne!(t1, t2);
        drop(v);
        assert!(matches!(
            reopen(d.path(), t1, Access::ReadOnly),
            Err(Error::TagMismatch { .. })
        ));
        let v = reopen(d.path(), t2, Access::ReadOnly).unwrap();
        assert_eq!(
            v.get_xattr(v.resolve("/f").unwrap(), "user.k").unwrap(),
            b"2"
        );
    }

    #[test]
    fn serialized_tree_lists_parents_first_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        v.mkdir_all("/b/c").unwrap();
        v.write_file("/a", b"12345", 0o600).unwrap();
        v.symlink_path("/b/l", "c").unwrap();
        v.finalize(v.resolve("/a").unwrap()).unwrap();
        let doc: Doc = serde_json::from_slice(&v.serialize(7).unwrap()).unwrap();
        assert_eq!((doc.v, doc.seq), (1, 7));
        let shape: Vec<(&str, &str)> = doc
            .entries
            .iter()
            .map(|e| (e.p.as_str(), e.k.as_str()))
            .collect();
        assert_eq!(
            shape,
            [
                ("/", "d"),
                ("/a", "f"),
                ("/b", "d"),
                ("/b/c", "d"),
                ("/b/l", "l")
            ]
        );
        let f = &doc.entries[1];
        assert_eq!((f.m, f.s, f.g), (0o600, Some(5), Some(1)));
        assert_eq!(f.id.as_ref().map(String::len), Some(32));
        assert_eq!(f.r.as_ref().map(String::len), Some(64));
        assert_eq!(doc.entries[4].to.as_deref(), Some("c"));
    }
}
