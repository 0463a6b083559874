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

use std::collections::HashSet;

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
