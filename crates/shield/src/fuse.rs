//! A FUSE view of a volume: the program sees plain files; every fsync and unmount commits, and a
//! close after a write commits within [`MountOptions::group_delay`] (grouping many closes into one
//! commit). Every commit goes to the [`TagSink`] and is acknowledged only when it was recorded.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::volume::{Attr, Ino, Kind, Volume};
use crate::{Error, RenameMode, Tag, TagSink, XattrFlags};

/// How a volume is mounted.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// FUSE worker threads.
    pub threads: usize,
    /// How long a close after a write may wait for other closes before its commit.
    pub group_delay: Duration,
    /// Let other users (and root) access the mount (`allow_other`).
    pub allow_other: bool,
    /// How long the kernel may cache attributes and names.
    pub ttl: Duration,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            threads: 2,
            group_delay: Duration::from_millis(100),
            allow_other: false,
            ttl: Duration::from_secs(5),
        }
    }
}

struct Sched {
    due: Option<Instant>,
    stop: bool,
}

struct Shared {
    vol: Mutex<Volume>,
    sink: Mutex<Box<dyn TagSink>>,
    sched: Mutex<Sched>,
    cv: Condvar,
    last_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Commit, record, acknowledge. Holds the volume lock throughout, so commits are serialized.
    fn commit(&self) -> Result<Tag, Error> {
        let mut v = lock(&self.vol);
        let mut sink = lock(&self.sink);
        let r = v.commit_to(&mut **sink);
        if let Err(e) = &r {
            tracing::error!(volume = %v.options().name, "commit failed: {e}");
            *lock(&self.last_error) = Some(e.to_string());
        }
        r
    }

    fn schedule(&self, delay: Duration) {
        let mut s = lock(&self.sched);
        let at = Instant::now() + delay;
        if s.due.is_none_or(|d| d > at) {
            s.due = Some(at);
            self.cv.notify_all();
        }
    }
}

/// The background committer: runs grouped commits when they fall due.
fn committer(shared: Arc<Shared>) {
    let mut s = lock(&shared.sched);
    loop {
        if s.stop {
            return;
        }
        match s.due {
            None => s = shared.cv.wait(s).unwrap_or_else(|p| p.into_inner()),
            Some(d) => {
                let now = Instant::now();
                if d > now {
                    s = shared
                        .cv
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                } else {
                    s.due = None;
                    drop(s);
                    let _ = shared.commit();
                    s = lock(&shared.sched);
                }
            }
        }
    }
}

struct Fs {
    shared: Arc<Shared>,
    ttl: Duration,
    group_delay: Duration,
    uid: u32,
    gid: u32,
    next_fh: AtomicU64,
    /// Open file handles that wrote something.
    written: Mutex<HashMap<u64, Ino>>,
}

fn systime(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
    }
}

fn ns_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn errno(e: &Error) -> Errno {
    if e.errno() == libc::EIO {
        // Verification failures and I/O errors are worth a log line (never any plaintext in it).
        tracing::error!("{e}");
    }
    Errno::from_i32(e.errno())
}

/// The stored form of a name the kernel passes (any bytes but `/` and NUL; see
/// [`crate::name_from_bytes`]).
fn name_of(n: &OsStr) -> String {
    crate::name_from_bytes(n.as_bytes())
}

impl Fs {
    fn vol(&self) -> MutexGuard<'_, Volume> {
        lock(&self.shared.vol)
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        let kind = match a.kind {
            Kind::File => FileType::RegularFile,
            Kind::Dir => FileType::Directory,
            Kind::Symlink => FileType::Symlink,
        };
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: systime(a.atime),
            mtime: systime(a.mtime),
            ctime: systime(a.ctime),
            crtime: systime(a.ctime),
            kind,
            perm: (a.mode & 0o7777) as u16,
            nlink: a.nlink,
            uid: a.uid.unwrap_or(self.uid),
            gid: a.gid.unwrap_or(self.gid),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn entry(&self, r: Result<Attr, Error>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry(&self.ttl, &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }
}

impl fuser::Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        // We clear set-user-ID/set-group-ID/capabilities ourselves (write with
        // FUSE_WRITE_KILL_SUIDGID, truncate, chown), so the kernel does not ask for
        // security.capability before every write. Older kernels: the kernel keeps doing it.
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name_of(name);
        let name = name.as_str();
        let v = self.vol();
        let r = v.lookup(parent.0, name).and_then(|i| v.getattr(i));
        drop(v);
        match r {
            Ok(a) => reply.entry(&self.ttl, &self.attr(&a), Generation(0)),
            // Negative entries may be cached too: nobody else changes the volume.
            Err(Error::NotFound { .. }) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = self.vol().getattr(ino.0);
        match r {
            Ok(a) => reply.attr(&self.ttl, &self.attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut v = self.vol();
        let r = (|| {
            if uid.is_some() || gid.is_some() {
                // The kernel checked the caller (default_permissions: CAP_CHOWN or own group).
                v.set_owner(ino.0, uid, gid)?;
                // Linux clears set-ID bits and capabilities on every chown of a non-directory.
                v.kill_suid(ino.0)?;
            }
            if let Some(s) = size {
                // A truncate by someone other than root (standing in for CAP_FSETID) clears them.
                if req.uid() != 0 {
                    v.kill_suid(ino.0)?;
                }
                v.truncate(ino.0, s)?;
            }
            if let Some(m) = mode {
                v.set_mode(ino.0, m)?;
            }
            let ns = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => ns_of(t),
                TimeOrNow::Now => ns_of(SystemTime::now()),
            };
            if atime.is_some() || mtime.is_some() {
                v.set_times(ino.0, atime.map(ns), mtime.map(ns))?;
            }
            v.getattr(ino.0)
        })();
        drop(v);
        if size.is_some() {
            self.shared.schedule(self.group_delay);
        }
        match r {
            Ok(a) => reply.attr(&self.ttl, &self.attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.vol().readlink(ino.0) {
            Ok(t) => match crate::name_to_bytes(&t) {
                Some(b) => reply.data(&b),
                None => reply.error(Errno::EIO),
            },
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = name_of(name);
        let name = name.as_str();
        let mut v = self.vol();
        let r = v
            .mkdir(parent.0, name, mode & !umask)
            .and_then(|i| v.getattr(i));
        drop(v);
        self.shared.schedule(self.group_delay);
        self.entry(r, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_of(name);
        let name = name.as_str();
        let r = self.vol().unlink(parent.0, name);
        self.shared.schedule(self.group_delay);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_of(name);
        let name = name.as_str();
        let r = self.vol().rmdir(parent.0, name);
        self.shared.schedule(self.group_delay);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = name_of(link_name);
        let name = name.as_str();
        let t = crate::name_from_bytes(target.as_os_str().as_bytes());
        let t = t.as_str();
        let mut v = self.vol();
        let r = v.symlink(parent.0, name, t).and_then(|i| v.getattr(i));
        drop(v);
        self.shared.schedule(self.group_delay);
        self.entry(r, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mode = if flags == RenameFlags::RENAME_NOREPLACE {
            RenameMode::NoReplace
        } else if flags == RenameFlags::RENAME_EXCHANGE {
            RenameMode::Exchange
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            // RENAME_WHITEOUT (overlay upper layers) or a combination: not supported.
            return reply.error(Errno::EINVAL);
        };
        let a = name_of(name);
        let a = a.as_str();
        let b = name_of(newname);
        let b = b.as_str();
        let r = self.vol().rename_with(parent.0, a, newparent.0, b, mode);
        self.shared.schedule(self.group_delay);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut v = self.vol();
        let r = v.getattr(ino.0).and_then(|a| {
            if a.kind == Kind::Dir {
                return Ok(false);
            }
            if flags.0 & libc::O_TRUNC != 0 {
                if req.uid() != 0 {
                    v.kill_suid(ino.0)?;
                }
                v.truncate(ino.0, 0)?;
            }
            // Counted so that the file outlives an unlink until its last close.
            v.open_handle(ino.0)?;
            Ok(true)
        });
        drop(v);
        match r {
            Ok(false) => reply.error(Errno::EISDIR),
            Ok(true) => reply.opened(FileHandle(self.fh()), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.vol().read(ino.0, offset, size as usize);
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut v = self.vol();
        let r = if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            v.kill_suid(ino.0).map(|_| ())
        } else {
            Ok(())
        };
        let r = r.and_then(|()| v.write(ino.0, offset, data));
        drop(v);
        match r {
            Ok(()) => {
                lock(&self.written).insert(fh.0, ino.0);
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let wrote = lock(&self.written).remove(&fh.0).is_some();
        let mut v = self.vol();
        let r = if wrote { v.release(ino.0) } else { Ok(()) };
        // The last close of a file unlinked while open drops it (and its objects).
        let r = r.and(v.close_handle(ino.0));
        let changed = v.has_changes();
        drop(v);
        if wrote || changed {
            self.shared.schedule(self.group_delay);
        }
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.shared.commit() {
            Ok(_) => reply.ok(),
            // ENOSPC for a full disk, EIO for everything else (the previous state is kept).
            Err(e) => reply.error(Errno::from_i32(e.errno())),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.shared.commit() {
            Ok(_) => reply.ok(),
            // ENOSPC for a full disk, EIO for everything else (the previous state is kept).
            Err(e) => reply.error(Errno::from_i32(e.errno())),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.vol().getattr(ino.0) {
            Ok(a) if a.kind == Kind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let v = self.vol();
        let parent = v.getattr(ino.0).ok().map(|_| ino.0);
        let list = v.readdir(ino.0);
        drop(v);
        let list = match list {
            Ok(l) => l,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut all: Vec<(u64, FileType, String)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (parent.unwrap_or(ino.0), FileType::Directory, "..".into()),
        ];
        for (n, i, k) in list {
            let t = match k {
                Kind::Dir => FileType::Directory,
                Kind::Symlink => FileType::Symlink,
                Kind::File => FileType::RegularFile,
            };
            all.push((i, t, n));
        }
        for (idx, (i, t, n)) in all.into_iter().enumerate().skip(offset as usize) {
            let n = crate::name_to_bytes(&n).unwrap_or_else(|| n.into_bytes());
            if reply.add(INodeNo(i), idx as u64 + 1, t, OsStr::from_bytes(&n)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let dir = self.vol().backing().to_path_buf();
        match nix::sys::statvfs::statvfs(&dir) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                255,
                s.fragment_size() as u32,
            ),
            Err(_) => reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.vol().getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name_of(name);
        let name = name.as_str();
        let mut v = self.vol();
        let r = v.create_file(parent.0, name, mode & !umask).and_then(|i| {
            v.open_handle(i)?;
            v.getattr(i)
        });
        drop(v);
        self.shared.schedule(self.group_delay);
        match r {
            Ok(a) => {
                let fh = self.fh();
                reply.created(
                    &self.ttl,
                    &self.attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                )
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        size: u32,
        reply: fuser::ReplyXattr,
    ) {
        let name = name_of(name);
        let name = name.as_str();
        match self.vol().get_xattr(ino.0, name) {
            Ok(val) if size == 0 => reply.size(val.len() as u32),
            Ok(val) if val.len() <= size as usize => reply.data(&val),
            Ok(_) => reply.error(Errno::from_i32(libc::ERANGE)),
            // Asked on every write (security.capability): not worth a log line.
            Err(e) => reply.error(Errno::from_i32(e.errno())),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        let r = self.vol().list_xattr(ino.0);
        match r {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(n.as_bytes());
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32)
                } else if buf.len() <= size as usize {
                    reply.data(&buf)
                } else {
                    reply.error(Errno::from_i32(libc::ERANGE))
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let name = name_of(name);
        let name = name.as_str();
        let flags = match flags {
            0 => XattrFlags::Any,
            libc::XATTR_CREATE => XattrFlags::Create,
            libc::XATTR_REPLACE => XattrFlags::Replace,
            _ => return reply.error(Errno::EINVAL),
        };
        let r = self.vol().set_xattr(ino.0, name, value, flags);
        self.shared.schedule(self.group_delay);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_of(name);
        let name = name.as_str();
        let r = self.vol().remove_xattr(ino.0, name);
        self.shared.schedule(self.group_delay);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let name = name_of(newname);
        let name = name.as_str();
        let mut v = self.vol();
        let r = v.link(ino.0, newparent.0, name).and_then(|i| v.getattr(i));
        drop(v);
        self.shared.schedule(self.group_delay);
        self.entry(r, reply);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let rest = mode & !libc::FALLOC_FL_KEEP_SIZE;
        let mut v = self.vol();
        let r = match rest {
            // Reserve space: nothing is preallocated, only the size grows.
            0 => match v.getattr(ino.0) {
                Ok(a) if !keep && offset.saturating_add(length) > a.size => {
                    v.truncate(ino.0, offset.saturating_add(length))
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            },
            libc::FALLOC_FL_PUNCH_HOLE if keep => v.zero_range(ino.0, offset, length, true),
            libc::FALLOC_FL_ZERO_RANGE => v.zero_range(ino.0, offset, length, keep),
            // Collapse/insert range, unshare, punch hole without KEEP_SIZE.
            _ => {
                drop(v);
                return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
            }
        };
        drop(v);
        self.shared.schedule(self.group_delay);
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Regular files only; FIFOs, sockets and device nodes are not stored (EPERM, as a file
        // system without them answers).
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return reply.error(Errno::EPERM);
        }
        let name = name_of(name);
        let name = name.as_str();
        let mut v = self.vol();
        let r = v
            .create_file(parent.0, name, mode & !umask)
            .and_then(|i| v.getattr(i));
        drop(v);
        self.shared.schedule(self.group_delay);
        self.entry(r, reply);
    }
}

/// A mounted volume. Dropping it without [`Mounted::unmount`] or [`Mounted::wait`] unmounts
/// without the final commit (the previous commit stays the volume's state).
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    shared: Arc<Shared>,
    committer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted").finish_non_exhaustive()
    }
}

/// Mount `vol` at `mountpoint` (served by background threads). `sink` records every committed
/// tag; the state committed before mounting is recorded first when it was not yet acknowledged.
pub fn mount(
    mut vol: Volume,
    mountpoint: &Path,
    mut sink: Box<dyn TagSink>,
    opts: MountOptions,
) -> Result<Mounted, Error> {
    // Anything the caller changed but did not commit is committed and recorded now.
    vol.commit_to(&mut *sink)?;
    let name = vol.options().name.clone();
    let shared = Arc::new(Shared {
        vol: Mutex::new(vol),
        sink: Mutex::new(sink),
        sched: Mutex::new(Sched {
            due: None,
            stop: false,
        }),
        cv: Condvar::new(),
        last_error: Mutex::new(None),
    });
    let fs = Fs {
        shared: shared.clone(),
        ttl: opts.ttl,
        group_delay: opts.group_delay,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        next_fh: AtomicU64::new(1),
        written: Mutex::new(HashMap::new()),
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("veil:{name}")),
        MountOption::Subtype("veil".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if opts.allow_other {
        // fuser's ACL both adds `allow_other` to the mount and lets its session serve other
        // users' requests (a bare `allow_other` option gets them refused with EACCES by fuser).
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    let session = fuser::spawn_mount(fs, mountpoint, &config).map_err(|e| {
        Error::io(
            format!("mounting volume {name} at {}", mountpoint.display()),
            e,
        )
    })?;
    let sh = shared.clone();
    let committer = std::thread::Builder::new()
        .name("veil-commit".into())
        .spawn(move || committer(sh))
        .map_err(|e| Error::io("starting the commit thread", e))?;
    Ok(Mounted {
        session: Some(session),
        shared,
        committer: Some(committer),
    })
}

impl Mounted {
    /// Whether the file system was unmounted from outside (`fusermount3 -u`).
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmount, then commit and record the final state; returns the final tag.
    pub fn unmount(mut self) -> Result<Tag, Error> {
        if let Some(s) = self.session.take() {
            s.umount_and_join()
                .map_err(|e| Error::io("unmounting", e))?;
        }
        self.finish()
    }

    /// Wait until unmounted from outside, then commit and record the final state.
    pub fn wait(mut self) -> Result<Tag, Error> {
        if let Some(s) = self.session.take() {
            s.join().map_err(|e| Error::io("serving the mount", e))?;
        }
        self.finish()
    }

    fn finish(&mut self) -> Result<Tag, Error> {
        {
            let mut s = lock(&self.shared.sched);
            s.stop = true;
            self.shared.cv.notify_all();
        }
        if let Some(c) = self.committer.take() {
            let _ = c.join();
        }
        self.shared.commit()
    }

    /// The last commit error, if any (also logged).
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let mut s = lock(&self.shared.sched);
        s.stop = true;
        self.shared.cv.notify_all();
    }
}

/// Block SIGINT and SIGTERM in the calling thread (and the threads it starts later), so that
/// [`Mounted::serve_until_signal`] can receive them. Call it before [`mount`].
pub fn block_termination_signals() -> Result<(), Error> {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGINT);
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.thread_block()
        .map_err(|e| Error::io("blocking SIGINT/SIGTERM", std::io::Error::from(e)))
}

impl Mounted {
    /// Serve until SIGINT/SIGTERM (then unmount) or an unmount from outside; then commit and record
    /// the final state. Requires [`block_termination_signals`] before [`mount`].
    pub fn serve_until_signal(self) -> Result<Tag, Error> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("veil-signals".into())
            .spawn(move || {
                let mut set = nix::sys::signal::SigSet::empty();
                set.add(nix::sys::signal::Signal::SIGINT);
                set.add(nix::sys::signal::Signal::SIGTERM);
                if let Ok(sig) = set.wait() {
                    let _ = tx.send(sig);
                }
            })
            .map_err(|e| Error::io("starting the signal thread", e))?;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(sig) => {
                    tracing::info!("{sig}: unmounting");
                    return self.unmount();
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return self.wait(),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if self.is_finished() {
                        return self.wait();
                    }
                }
            }
        }
    }
}

/// A [`TagSink`] that writes each tag to a file (32 lowercase hex and a newline) by write, fsync,
/// rename and fsync of the directory, and optionally echoes it.
#[derive(Debug)]
pub struct TagFile {
    path: Option<std::path::PathBuf>,
}

impl TagFile {
    /// Record tags in `path` (or nowhere, when `None`: the caller reads the final tag instead).
    pub fn new(path: Option<std::path::PathBuf>) -> Self {
        Self { path }
    }
}

impl TagSink for TagFile {
    fn record(&mut self, tag: &Tag) -> Result<(), String> {
        let Some(p) = &self.path else { return Ok(()) };
        write_tag_file(p, tag).map_err(|e| format!("writing {}: {e}", p.display()))
    }
}

/// Write `tag` to `path` atomically and durably.
pub fn write_tag_file(path: &Path, tag: &Tag) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tag".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{tag}\n").as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(&dir)?.sync_all()
}
