//! The shield's error type.

use std::io;

use crate::Tag;

/// Everything that can go wrong with a volume. Messages never contain key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A chunk failed authentication (tampered, swapped, replayed, truncated or extended).
    #[error("Verification of file chunk {chunk} (bytes {start} to {end}) of file {path} failed")]
    ChunkVerification {
        /// Chunk index.
        chunk: u64,
        /// First plaintext byte of the chunk.
        start: u64,
        /// Last plaintext byte of the chunk.
        end: u64,
        /// The file as the program sees it.
        path: String,
    },
    /// All chunks authenticated but the file's Merkle root differs from the metadata.
    #[error(
        "Verification of file {path} failed: its integrity root does not match the volume metadata"
    )]
    RootMismatch {
        /// The file as the program sees it.
        path: String,
    },
    /// The file's backing object is gone.
    #[error("file {path} is missing from volume {volume}")]
    Missing {
        /// The file as the program sees it.
        path: String,
        /// Volume name.
        volume: String,
    },
    /// No metadata slot has the expected tag.
    #[error("volume {volume} does not match its recorded tag {tag} (modified or rolled back)")]
    TagMismatch {
        /// Volume name.
        volume: String,
        /// The tag the caller expected.
        tag: Tag,
    },
    /// The metadata matched the tag but does not open with this key.
    #[error("volume {volume} cannot be opened with this key (metadata authentication failed)")]
    WrongKey {
        /// Volume name.
        volume: String,
    },
    /// The backing store was created for another volume id.
    #[error(
        "volume {volume}: backing store {path} belongs to a different volume (CAS, session or volume name differ)"
    )]
    ForeignVolume {
        /// Volume name.
        volume: String,
        /// Backing directory.
        path: String,
    },
    /// Another process holds the backing store's lock.
    #[error("volume {volume} is in use: backing store {path} is locked by another process")]
    Locked {
        /// Volume name.
        volume: String,
        /// Backing directory.
        path: String,
    },
    /// The backing store holds no volume.
    #[error("volume {volume}: backing store {path} holds no volume metadata")]
    NoVolume {
        /// Volume name.
        volume: String,
        /// Backing directory.
        path: String,
    },
    /// `create` on a directory that is not empty (never wiped).
    #[error(
        "volume {volume}: backing store {path} is not empty; refusing to create a volume there"
    )]
    NotEmpty {
        /// Volume name.
        volume: String,
        /// Backing directory.
        path: String,
    },
    /// Decrypted metadata that does not parse (format bug or incompatible version).
    #[error("volume {volume}: metadata is malformed: {reason}")]
    BadMetadata {
        /// Volume name.
        volume: String,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error on the backing store or a plaintext directory.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A key that is not 64 hex characters.
    #[error("invalid volume key: expected 64 hex characters")]
    BadKey,
    /// A tag that is not 32 hex characters.
    #[error("invalid volume tag {0:?}: expected 32 hex characters")]
    BadTag(String),
    /// aws-lc-rs refused an operation.
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
    /// No such path in the volume.
    #[error("{path}: no such file or directory in volume {volume}")]
    NotFound {
        /// The path as the program sees it.
        path: String,
        /// Volume name.
        volume: String,
    },
    /// The target exists.
    #[error("{path}: already exists")]
    Exists {
        /// The path as the program sees it.
        path: String,
    },
    /// A path component is not a directory.
    #[error("{path}: not a directory")]
    NotDir {
        /// The path as the program sees it.
        path: String,
    },
    /// A file operation on a directory.
    #[error("{path}: is a directory")]
    IsDir {
        /// The path as the program sees it.
        path: String,
    },
    /// rmdir (or rename over) a non-empty directory.
    #[error("{path}: directory not empty")]
    DirNotEmpty {
        /// The path as the program sees it.
        path: String,
    },
    /// A name that cannot be stored (empty, `.`, `..`, contains `/` or NUL, not UTF-8, too long).
    #[error("invalid file name {name:?}")]
    InvalidName {
        /// The name (lossy).
        name: String,
    },
    /// A name longer than 255 bytes.
    #[error("file name {name:?}… is longer than 255 bytes")]
    NameTooLong {
        /// The name's first 64 characters.
        name: String,
    },
    /// A write on a read-only volume.
    #[error("volume {volume} is open read-only")]
    ReadOnly {
        /// Volume name.
        volume: String,
    },
    /// `ack` of a tag that is not the latest commit.
    #[error("volume {volume}: tag {tag} is not the latest commit and cannot be acknowledged")]
    UnknownAck {
        /// Volume name.
        volume: String,
        /// The tag passed to `ack`.
        tag: Tag,
    },
    /// A moved directory would end up inside itself.
    #[error("{path}: cannot move a directory into itself")]
    Loop {
        /// The path as the program sees it.
        path: String,
    },
    /// An operation the volume does not support (hard links, device nodes, …).
    #[error("{what} is not supported on volume {volume}")]
    Unsupported {
        /// What was attempted.
        what: String,
        /// Volume name.
        volume: String,
    },
    /// No such extended attribute.
    #[error("{path}: no extended attribute {name:?}")]
    NoXattr {
        /// The path as the program sees it.
        path: String,
        /// The attribute name.
        name: String,
    },
    /// An extended attribute outside the namespaces a volume stores (`system.*` ACLs, …).
    #[error(
        "{path}: extended attribute {name:?} is not supported (only user.*, security.*, trusted.*)"
    )]
    XattrNotSupported {
        /// The path as the program sees it.
        path: String,
        /// The attribute name.
        name: String,
    },
    /// An extended attribute name over 255 bytes or value over 64 KiB.
    #[error("{path}: extended attribute {name:?}: {what} too large")]
    XattrTooLarge {
        /// The path as the program sees it.
        path: String,
        /// The attribute name (cut to 64 characters).
        name: String,
        /// `name` or `value`.
        what: &'static str,
    },
    /// The tag sink refused to record a tag.
    #[error("volume {volume}: the new tag {tag} could not be recorded: {reason}")]
    Record {
        /// Volume name.
        volume: String,
        /// The committed but unrecorded tag.
        tag: Tag,
        /// Why the sink failed.
        reason: String,
    },
}

impl From<veil_types::HexError> for Error {
    /// A [`Tag`] that did not parse (`"…".parse::<Tag>()`) as a shield error.
    fn from(e: veil_types::HexError) -> Self {
        Error::BadTag(e.value.trim().chars().take(40).collect())
    }
}

impl Error {
    /// An I/O error with context.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The errno a FUSE reply should carry for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound { .. } => libc::ENOENT,
            Error::Exists { .. } => libc::EEXIST,
            Error::NotDir { .. } => libc::ENOTDIR,
            Error::IsDir { .. } => libc::EISDIR,
            Error::DirNotEmpty { .. } => libc::ENOTEMPTY,
            Error::InvalidName { .. } => libc::EINVAL,
            Error::NameTooLong { .. } => libc::ENAMETOOLONG,
            Error::ReadOnly { .. } => libc::EROFS,
            Error::Loop { .. } => libc::EINVAL,
            Error::Unsupported { .. } => libc::EPERM,
            Error::NoXattr { .. } => libc::ENODATA,
            Error::XattrNotSupported { .. } => libc::EOPNOTSUPP,
            Error::XattrTooLarge { what: "name", .. } => libc::ERANGE,
            Error::XattrTooLarge { .. } => libc::E2BIG,
            Error::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => libc::ENOSPC,
            _ => libc::EIO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_parse_errors_keep_the_shield_message() {
        let e = Error::from(" zz \n".parse::<Tag>().unwrap_err());
        assert_eq!(
            e.to_string(),
            "invalid volume tag \"zz\": expected 32 hex characters"
        );
        let t: Tag = "00112233445566778899AABBCCDDEEFF".parse().unwrap();
        assert_eq!(t.to_string(), "00112233445566778899aabbccddeeff");
        assert_eq!(format!("{t:?}"), "Tag(00112233445566778899aabbccddeeff)");
        assert_eq!(t.as_bytes()[15], 0xff);
        assert!("00112233445566778899aabbccddeeff00".parse::<Tag>().is_err());
    }

    #[test]
    fn fuse_errnos() {
        let nf = Error::NotFound {
            path: "/V/x".into(),
            volume: "V".into(),
        };
        assert_eq!(nf.errno(), libc::ENOENT);
        assert_eq!(Error::BadKey.errno(), libc::EIO);
        let full = Error::io("writing", io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(full.errno(), libc::ENOSPC);
    }
}
