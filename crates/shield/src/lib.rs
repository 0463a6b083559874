//! veil-shield: encrypted, rollback-protected volumes (the file shield).
//!
//! A volume is a directory of opaque objects (the *backing store*) that holds the ciphertext of a
//! file tree. File content is cut into 4 KiB chunks, each sealed with AES-256-GCM under a per-file
//! key derived (HKDF-SHA256) from the volume key; the AAD binds the volume id, file id, chunk index
//! and file generation. Paths, sizes, modes, times, directories, symlinks and per-file Merkle roots
//! live in encrypted metadata whose SHA-256 commitment, cut to 16 bytes, is the **volume tag**.
//! [`open`] needs the tag the caller recorded (or [`Expect::Newest`]) and opens exactly that state.
//!
//! Access: a path/inode API on [`Volume`], staged mode ([`Volume::unpack`], [`Volume::pack_from`]),
//! FUSE ([`fuse::mount`]) and reproducible read-only code regions ([`build_deterministic`]).
//! The on-disk format and the threat model are in `FORMAT.md` beside this crate.
//!
//! Cargo feature `fault-injection` (off by default, for tests only): `FaultInjector` and
//! `Volume::set_fault_injector`, which fail the Nth mutating I/O operation of a volume.

mod crypto;
mod error;
pub mod fuse;
mod meta;
mod names;
mod staged;
mod store;
mod volume;

pub use crypto::{CHUNK, Protection, RECORD, VolumeKey};
pub use error::Error;
pub use names::{name_from_bytes, name_to_bytes};
pub use staged::build_deterministic;
/// Test-only fault injection for crash-safety tests (feature `fault-injection`, off by default).
#[cfg(feature = "fault-injection")]
pub use store::FaultInjector;
/// A volume's 16-byte state commitment: the first 16 bytes of SHA-256 over the sealed metadata
/// slot, shown, parsed and serialized as 32 lowercase hex characters. The shared
/// [`veil_types::Tag`]; parsing errors convert into [`Error::BadTag`].
pub use veil_types::Tag;
#[doc(hidden)]
pub use volume::fuzz_metadata_slot;
pub use volume::{
    Attr, EntryInfo, Ino, Kind, ROOT_INO, RenameMode, VerifyReport, Volume, XattrFlags, create,
    open,
};

/// Who a volume belongs to: its CAS, session and volume name. Bound into every AAD, so a backing
/// store can only be opened under the id it was created with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeId {
    /// The CAS instance (e.g. its key hash); empty for standalone volumes.
    pub cas: String,
    /// The session name; empty for standalone volumes.
    pub session: String,
    /// The volume name in the session.
    pub volume: String,
}

impl VolumeId {
    /// A volume id from its three parts.
    pub fn new(cas: &str, session: &str, volume: &str) -> Self {
        Self {
            cas: cas.into(),
            session: session.into(),
            volume: volume.into(),
        }
    }
}

/// Which state [`open`] must open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Exactly the state with this tag, or fail with [`Error::TagMismatch`].
    Tag(Tag),
    /// The newest state that authenticates (no rollback protection: the caller holds no tag).
    Newest,
}

/// How a volume is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Shared lock; no commits.
    ReadOnly,
    /// Exclusive lock; commits allowed.
    ReadWrite,
}

/// Naming and defaults of an opened volume (not part of the format except `protection`).
#[derive(Debug, Clone)]
pub struct Options {
    /// Volume name used in messages (`file /V1/num is missing from volume V1`).
    pub name: String,
    /// Prefix of file paths in messages: where the program sees the volume (e.g. `/V1`).
    pub display_root: String,
    /// Protection of files created from now on.
    pub protection: Protection,
}

impl Options {
    /// Options for a volume called `name`, shown at `/<name>`, with encrypted files.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            display_root: format!("/{}", name.trim_matches('/')),
            protection: Protection::Encrypted,
        }
    }
}

/// Receives every committed tag and records it durably (CAS compare-and-swap, `--tag-out` file).
/// Only after `record` returns `Ok` is the tag acknowledged and older state reclaimed.
pub trait TagSink: Send {
    /// Record `tag` durably; an error keeps the previous acknowledged state alive.
    fn record(&mut self, tag: &Tag) -> Result<(), String>;
}
