//! The data path of an opened volume: file content as 4 KiB chunks sealed into records
//! (nonce ‖ body ‖ GCM tag) of one object per file generation.
//!
//! Reads authenticate every record they return and never hand out an unverified byte; a whole-file
//! read also checks the Merkle root from the metadata. The first write to a committed file starts
//! a new generation: written chunks are sealed into its new object as they fill, a partial chunk
//! is kept in memory as the *tail*, and [`Volume::finalize`] re-seals the untouched chunks from the
//! old object (or zeros) under the new generation before a commit.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::{Dirty, FileNode, Ino, NodeKind, VerifyReport, Volume};
use crate::crypto::{self, CHUNK, NONCE_LEN, RECORD};
use crate::{Error, Kind};

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Number of chunks of `size` bytes of content.
pub(super) fn nchunks(size: u64) -> u64 {
    size.div_ceil(CHUNK as u64)
}

impl Volume {
    pub(super) fn file(&self, ino: Ino) -> Result<&FileNode, Error> {
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

    pub(super) fn file_mut(&mut self, ino: Ino) -> Result<&mut FileNode, Error> {
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
    pub(super) fn open_committed(&self, ino: Ino) -> Result<File, Error> {
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
    pub(super) fn read_committed(
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

    /// Make bytes `off .. off + len` of a file read as zeros (`fallocate` punch hole and zero
    /// range); the size grows to `off + len` unless `keep_size`. Zeros are written: no space is
    /// saved, the data simply reads as zeros.
    pub fn zero_range(
        &mut self,
        ino: Ino,
        off: u64,
        len: u64,
        keep_size: bool,
    ) -> Result<(), Error> {
        let size = self.file(ino)?.size;
        let end = off.saturating_add(len);
        let stop = if keep_size { end.min(size) } else { end };
        const PIECE: u64 = 1 << 20;
        let zeros = vec![0u8; PIECE as usize];
        let mut pos = off;
        while pos < stop {
            let n = (stop - pos).min(PIECE);
            self.write(ino, pos, &zeros[..n as usize])?;
            pos += n;
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
    /// Read every file completely: authenticate each chunk, check object lengths and Merkle roots.
    /// Returns the first problem found.
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        let mut r = VerifyReport::default();
        // A file with several names (hard links) is checked and counted once.
        let mut seen = std::collections::HashSet::new();
        for e in self.list() {
            match e.kind {
                Kind::Dir => r.dirs += 1,
                Kind::Symlink => r.symlinks += 1,
                Kind::File => {
                    let ino = self.resolve(&e.path)?;
                    if !seen.insert(ino) {
                        continue;
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Access;
    use crate::volume::testutil::{backing, commit_ack, new_volume, objects, reopen};

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    #[test]
    fn chunk_counts() {
        let c = CHUNK as u64;
        assert_eq!(
            [0, 1, c - 1, c, c + 1, 3 * c].map(nchunks),
            [0, 1, 1, 1, 2, 3]
        );
    }

    #[test]
    fn writes_reads_and_truncation_across_chunks() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        let f = v.create_file(crate::ROOT_INO, "f", 0o644).unwrap();
        let mut model = pattern(3 * CHUNK + 100, 7);
        v.write(f, 0, &model).unwrap();
        // Partial writes inside one chunk and across a chunk boundary.
        v.write(f, 10, b"hello").unwrap();
        model[10..15].copy_from_slice(b"hello");
        let cross = pattern(300, 9);
        v.write(f, CHUNK as u64 - 150, &cross).unwrap();
        model[CHUNK - 150..CHUNK + 150].copy_from_slice(&cross);
        assert_eq!(v.read(f, 0, model.len() + 10).unwrap(), model);
        assert_eq!(v.read(f, 4090, 20).unwrap(), &model[4090..4110]);
        assert!(v.read(f, model.len() as u64, 10).unwrap().is_empty());
        assert!(v.read(f, 0, 0).unwrap().is_empty());
        // A write past the end leaves a hole of zeros.
        let end = 5 * CHUNK as u64 + 3;
        v.write(f, end, b"!").unwrap();
        model.resize(end as usize, 0);
        model.push(b'!');
        assert_eq!(v.getattr(f).unwrap().size, model.len() as u64);
        assert_eq!(v.read_all(f).unwrap(), model);
        let t = commit_ack(&mut v);
        assert_eq!(v.read_all(f).unwrap(), model);
        // Shrinking zeroes what lies beyond; growing again reads zeros there.
        v.truncate(f, CHUNK as u64 + 1).unwrap();
        model.truncate(CHUNK + 1);
        assert_eq!(v.read_all(f).unwrap(), model);
        v.truncate(f, 2 * CHUNK as u64).unwrap();
        model.resize(2 * CHUNK, 0);
        assert_eq!(v.read_all(f).unwrap(), model);
        let t2 = commit_ack(&mut v);
        assert_ne!(t, t2);
        drop(v);
        let v = reopen(d.path(), t2, Access::ReadOnly).unwrap();
        let f = v.resolve("/f").unwrap();
        assert_eq!(v.read_all(f).unwrap(), model);
        let o = objects(d.path());
        assert_eq!(o.len(), 1);
        let len = std::fs::metadata(backing(d.path()).join(&o[0]))
            .unwrap()
            .len();
        assert_eq!(len, 2 * RECORD as u64, "one record per chunk");
        let mut streamed = Vec::new();
        v.stream(f, &mut |p| {
            streamed.extend_from_slice(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(streamed, model);
        let r = v.verify().unwrap();
        assert_eq!(
            (r.files, r.dirs, r.chunks, r.bytes),
            (1, 1, 2, model.len() as u64)
        );
    }

    #[test]
    fn uncommitted_changes_read_back_after_release() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        v.write_file("/f", &pattern(2 * CHUNK, 1), 0o644).unwrap();
        commit_ack(&mut v);
        let f = v.resolve("/f").unwrap();
        v.write(f, 5, b"abc").unwrap();
        v.release(f).unwrap();
        let mut want = pattern(2 * CHUNK, 1);
        want[5..8].copy_from_slice(b"abc");
        assert_eq!(v.read(f, 0, 2 * CHUNK).unwrap(), want);
        assert!(v.has_changes());
        commit_ack(&mut v);
        assert_eq!(v.read_all(f).unwrap(), want);
        assert!(v.read_all(v.resolve("/").unwrap()).is_err());
    }

    #[test]
    fn tampered_records_fail_with_the_chunk_range() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        v.write_file("/f", &pattern(3 * CHUNK, 2), 0o644).unwrap();
        let t = commit_ack(&mut v);
        drop(v);
        let o = backing(d.path()).join(&objects(d.path())[0]);
        let mut bytes = std::fs::read(&o).unwrap();
        bytes[RECORD + NONCE_LEN + 7] ^= 1;
        std::fs::write(&o, &bytes).unwrap();
        let v = reopen(d.path(), t, Access::ReadOnly).unwrap();
        let f = v.resolve("/f").unwrap();
        assert_eq!(v.read(f, 0, 100).unwrap(), pattern(100, 2));
        let e = v.read(f, CHUNK as u64, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Verification of file chunk 1 (bytes 4096 to 8191) of file /V/f failed"
        );
        assert!(matches!(
            v.verify(),
            Err(Error::ChunkVerification { chunk: 1, .. })
        ));
        // A truncated object fails at the first incomplete chunk.
        drop(v);
        std::fs::write(&o, &bytes[..2 * RECORD + 10]).unwrap();
        let v = reopen(d.path(), t, Access::ReadOnly).unwrap();
        let f = v.resolve("/f").unwrap();
        assert!(matches!(
            v.read_all(f),
            Err(Error::ChunkVerification { chunk: 2, .. })
        ));
        std::fs::remove_file(&o).unwrap();
        assert!(matches!(v.read_all(f), Err(Error::Missing { .. })));
    }
}
