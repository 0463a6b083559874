//! Metadata slots: header, sealing and the serialized tree.

use serde::{Deserialize, Serialize};

use crate::crypto::{self, GCM_TAG_LEN, Keys, NONCE_LEN};
use crate::{Error, Protection, Tag};

/// Magic at the start of every metadata slot (format version 1).
pub const MAGIC: &[u8; 8] = b"VEILVOL1";
/// Header bytes: magic ‖ seq (u64 LE) ‖ volume id digest ‖ nonce.
pub const HEADER: usize = 8 + 8 + 16 + NONCE_LEN;
/// Plaintext metadata is padded with spaces to a multiple of this.
pub const PAD: usize = 4096;

/// The decrypted metadata document.
#[derive(Serialize, Deserialize)]
pub struct Doc {
    /// Document version: 1, or 2 when the tree uses hard links, extended attributes or explicit
    /// access times (`h` entries, `xa`, `a`).
    pub v: u32,
    /// Commit sequence number (also in the header).
    pub seq: u64,
    /// Every entry, parents before children; the first is the root `/`.
    pub entries: Vec<Entry>,
}

/// One file, directory or symlink (or, `k` = `h`, a further hard link to an earlier entry).
#[derive(Serialize, Deserialize, Default)]
pub struct Entry {
    /// Absolute path inside the volume (`/`, `/a`, `/a/b`).
    pub p: String,
    /// Kind: `d` directory, `f` file, `l` symlink, `h` hard link (version 2) to the earlier
    /// file or symlink entry at path `to`.
    pub k: String,
    /// Permission bits.
    pub m: u32,
    /// Modification time, ns since the epoch.
    pub t: i64,
    /// Change time, ns since the epoch.
    pub c: i64,
    /// File id (32 hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// File generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub g: Option<u64>,
    /// File size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s: Option<u64>,
    /// Merkle root over the file's chunk records (64 hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<String>,
    /// File protection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<Protection>,
    /// Symlink target; for `h`, the path of the earlier entry this is a link to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Access time, ns since the epoch, when it differs from `t` (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<i64>,
    /// Owner uid set with `chown` (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group gid set with `chown` (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Extended attributes: name → value in hex (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xa: Option<std::collections::BTreeMap<String, String>>,
}

/// A metadata slot as read from disk (header parsed, not yet opened).
pub struct Slot {
    /// Commit sequence number.
    pub seq: u64,
    /// Volume id digest from the header.
    pub idd: [u8; 16],
    /// The tag: SHA-256 over the whole slot, first 16 bytes.
    pub tag: Tag,
    /// The raw bytes.
    pub bytes: Vec<u8>,
}

/// The tag of sealed slot bytes.
pub fn tag_of(bytes: &[u8]) -> Tag {
    let h = crypto::sha256(bytes);
    let mut t = [0u8; 16];
    t.copy_from_slice(&h[..16]);
    Tag(t)
}

/// Parse a slot's header; `None` when it is too short or has the wrong magic.
pub fn parse(bytes: Vec<u8>) -> Option<Slot> {
    if bytes.len() < HEADER + GCM_TAG_LEN || &bytes[..8] != MAGIC {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[8..16]);
    let mut idd = [0u8; 16];
    idd.copy_from_slice(&bytes[16..32]);
    Some(Slot {
        seq: u64::from_le_bytes(seq),
        idd,
        tag: tag_of(&bytes),
        bytes,
    })
}

/// Seal a serialized document into slot bytes; returns the bytes and their tag.
pub fn seal(
    keys: &Keys,
    seq: u64,
    mut plain: Vec<u8>,
    nonce: [u8; NONCE_LEN],
) -> Result<(Vec<u8>, Tag), Error> {
    let padded = plain.len().div_ceil(PAD).max(1) * PAD;
    plain.resize(padded, b' ');
    let mut out = Vec::with_capacity(HEADER + plain.len() + GCM_TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&keys.id_digest());
    out.extend_from_slice(&nonce);
    let aad = out[..HEADER - NONCE_LEN].to_vec();
    let gcm = keys.seal_meta(nonce, &aad, &mut plain)?;
    out.extend_from_slice(&plain);
    out.extend_from_slice(&gcm);
    let tag = tag_of(&out);
    Ok((out, tag))
}

/// Open a slot; `None` when authentication fails.
pub fn open(keys: &Keys, slot: &Slot) -> Option<Vec<u8>> {
    let b = &slot.bytes;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&b[HEADER - NONCE_LEN..HEADER]);
    let aad = &b[..HEADER - NONCE_LEN];
    let mut body = b[HEADER..b.len() - GCM_TAG_LEN].to_vec();
    let tag = &b[b.len() - GCM_TAG_LEN..];
    if keys.open_meta(nonce, aad, tag, &mut body) {
        Some(body)
    } else {
        None
    }
}
