//! The backing store: a directory of opaque objects, two metadata slots and a lock file.
//! Every write, fsync and rename goes through here, so tests can inject faults at any of them.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
#[cfg(feature = "fault-injection")]
use std::sync::Arc;
#[cfg(feature = "fault-injection")]
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

/// Name of the lock file inside the backing directory.
pub const LOCK: &str = "lock";
/// Names of the two metadata slots.
pub const SLOTS: [&str; 2] = ["meta.0", "meta.1"];

/// Fails the Nth mutating I/O operation (write, fsync, rename, remove, truncate) of a volume and
/// every one after it, as if the process had died there; the failing write is torn (only its first
/// half reaches the file). A testing aid for crash safety; inert unless installed with
/// [`crate::Volume::set_fault_injector`]. Only built with the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Default)]
pub struct FaultInjector {
    fail_at: AtomicU64,
    seen: AtomicU64,
    tripped: AtomicBool,
}

#[cfg(feature = "fault-injection")]
impl FaultInjector {
    /// An injector that fails operation number `n` (1-based); 0 never fails and only counts.
    pub fn fail_at(n: u64) -> Arc<Self> {
        Arc::new(Self {
            fail_at: AtomicU64::new(n),
            ..Default::default()
        })
    }

    /// How many mutating operations were attempted so far.
    pub fn ops_seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Whether the fault fired.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    /// Ok, or the injected error; `torn` is true for the operation that trips the fault.
    fn check(&self) -> Result<(), bool> {
        if self.tripped.load(Ordering::SeqCst) {
            return Err(false);
        }
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let at = self.fail_at.load(Ordering::SeqCst);
        if at != 0 && n >= at {
            self.tripped.store(true, Ordering::SeqCst);
            return Err(true);
        }
        Ok(())
    }
}

fn injected() -> io::Error {
    io::Error::other("injected I/O fault")
}

/// An opened backing directory, locked for the lifetime of this value.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
    #[cfg(feature = "fault-injection")]
    faults: Option<Arc<FaultInjector>>,
}

/// Why the lock could not be taken.
pub enum LockError {
    /// Another process holds it.
    Busy,
    /// Any other I/O error.
    Io(io::Error),
}

impl Store {
    /// Lock `dir` (exclusive for writers, shared for readers), creating the lock file if needed.
    pub fn open(dir: &Path, exclusive: bool) -> Result<Self, LockError> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK))
            .map_err(LockError::Io)?;
        let arg = if exclusive {
            FlockArg::LockExclusiveNonblock
        } else {
            FlockArg::LockSharedNonblock
        };
        let lock = Flock::lock(f, arg).map_err(|(_, e)| {
            if e == nix::errno::Errno::EWOULDBLOCK {
                LockError::Busy
            } else {
                LockError::Io(io::Error::from(e))
            }
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            #[cfg(feature = "fault-injection")]
            faults: None,
        })
    }

    /// The backing directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Install (or remove) a fault injector.
    #[cfg(feature = "fault-injection")]
    pub fn set_faults(&mut self, f: Option<Arc<FaultInjector>>) {
        self.faults = f;
    }

    /// `Ok(true)`: this operation trips the fault (tear it, then fail); `Err`: already tripped.
    /// Without the `fault-injection` feature every operation goes through.
    fn check(&self) -> io::Result<bool> {
        #[cfg(feature = "fault-injection")]
        if let Some(f) = &self.faults {
            return match f.check() {
                Ok(()) => Ok(false),
                Err(true) => Ok(true),
                Err(false) => Err(injected()),
            };
        }
        Ok(false)
    }

    fn gate(&self) -> io::Result<()> {
        match self.check()? {
            true => Err(injected()),
            false => Ok(()),
        }
    }

    /// Path of an object or slot.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Create (or truncate) an object for writing.
    pub fn create_object(&self, name: &str) -> io::Result<File> {
        self.gate()?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path(name))
    }

    /// Open an object for reading; `None` when it does not exist.
    pub fn open_object(&self, name: &str) -> io::Result<Option<File>> {
        match File::open(self.path(name)) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write `data` at `off`; an injected fault tears the write in half.
    pub fn write_at(&self, f: &File, data: &[u8], off: u64) -> io::Result<()> {
        if self.check()? {
            let half = data.len() / 2;
            f.write_all_at(&data[..half], off)?;
            return Err(injected());
        }
        f.write_all_at(data, off)
    }

    /// Set a file's length.
    pub fn set_len(&self, f: &File, len: u64) -> io::Result<()> {
        self.gate()?;
        f.set_len(len)
    }

    /// fdatasync a file.
    pub fn sync(&self, f: &File) -> io::Result<()> {
        self.gate()?;
        f.sync_data()
    }

    /// Remove an object (missing is fine).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        self.gate()?;
        match fs::remove_file(self.path(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Replace metadata slot `slot` atomically: temp file, fsync, rename, fsync of the directory.
    pub fn write_slot(&self, slot: usize, bytes: &[u8]) -> io::Result<()> {
        let name = SLOTS[slot % 2];
        let tmp = self.path(&format!("{name}.tmp"));
        self.gate()?;
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        self.write_at(&f, bytes, 0)?;
        self.sync(&f)?;
        drop(f);
        self.gate()?;
        fs::rename(&tmp, self.path(name))?;
        self.sync_dir()
    }

    /// fsync the backing directory (makes new names durable).
    pub fn sync_dir(&self) -> io::Result<()> {
        self.gate()?;
        File::open(&self.dir)?.sync_all()
    }

    /// Read metadata slot `slot`; `None` when it does not exist.
    pub fn read_slot(&self, slot: usize) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(SLOTS[slot % 2])) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names of all objects (32 lowercase hex characters) in the directory.
    pub fn list_objects(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            if let Some(n) = e.file_name().to_str()
                && is_object_name(n)
            {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }
}

/// Whether `n` looks like an object name.
pub fn is_object_name(n: &str) -> bool {
    n.len() == 32
        && n.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;

    #[test]
    fn injector_tears_the_nth_write_and_fails_everything_after() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(d.path(), true).unwrap_or_else(|_| panic!("lock"));
        let fault = FaultInjector::fail_at(2);
        s.set_faults(Some(fault.clone()));
        let f = s.create_object("0123456789abcdef0123456789abcdef").unwrap();
        assert!(!fault.tripped());
        assert!(s.write_at(&f, b"abcdefgh", 0).is_err());
        assert!(fault.tripped());
        assert_eq!(fault.ops_seen(), 2);
        assert_eq!(
            fs::read(s.path("0123456789abcdef0123456789abcdef")).unwrap(),
            b"abcd"
        );
        assert!(s.sync(&f).is_err());
        assert!(s.remove("0123456789abcdef0123456789abcdef").is_err());
        assert_eq!(fault.ops_seen(), 2, "nothing is attempted after the fault");
        s.set_faults(None);
        s.remove("0123456789abcdef0123456789abcdef").unwrap();
        let counter = FaultInjector::fail_at(0);
        s.set_faults(Some(counter.clone()));
        // Temp file, write, fsync, rename, directory fsync.
        s.write_slot(0, b"slot").unwrap();
        assert_eq!((counter.ops_seen(), counter.tripped()), (5, false));
    }
}
