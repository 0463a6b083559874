//! Key derivation, chunk sealing and the Merkle root over chunk records.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{digest, hkdf, hmac, rand};
use veil_types::Key32;
use zeroize::Zeroize;

use crate::{Error, VolumeId};

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 4096;
/// Nonce bytes stored in front of every chunk.
pub const NONCE_LEN: usize = 12;
/// GCM tag bytes stored after every chunk.
pub const GCM_TAG_LEN: usize = 16;
/// Bytes of one chunk record in a backing object: nonce ‖ body ‖ GCM tag.
pub const RECORD: usize = NONCE_LEN + CHUNK + GCM_TAG_LEN;

const HKDF_SALT: &[u8] = b"veil-shield-v1";

/// A 256-bit volume key: a [`Key32`], so its bytes are wiped when it is dropped and its `Debug`
/// output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct VolumeKey(Key32);

impl VolumeKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, Error> {
        let mut k = [0u8; 32];
        let filled = rand::fill(&mut k).map_err(|_| Error::Crypto("random key generation failed"));
        let key = Self(Key32::from_bytes(k));
        k.zeroize();
        filled.map(|()| key)
    }

    /// The key from its 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self, Error> {
        Key32::from_hex(s).map(Self).map_err(|_| Error::BadKey)
    }

    /// The key as 64 lowercase hex characters (for the caller to store; never log it).
    pub fn to_hex(&self) -> String {
        self.0.to_hex()
    }

    /// The raw key bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(Key32::from_bytes(b))
    }
}

impl From<Key32> for VolumeKey {
    fn from(k: Key32) -> Self {
        Self(k)
    }
}

impl fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VolumeKey(<redacted>)")
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The 16-byte digest that stands for a [`VolumeId`] in AADs and in the slot header.
pub fn id_digest(id: &VolumeId) -> [u8; 16] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"veil-volume-id-v1\0");
    for part in [&id.cas, &id.session, &id.volume] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part.as_bytes());
    }
    let d = ctx.finish();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d.as_ref()[..16]);
    out
}

/// All keys derived from one volume key for one volume id.
pub struct Keys {
    prk: hkdf::Prk,
    id_digest: [u8; 16],
    meta: LessSafeKey,
    names: hmac::Key,
    det: hmac::Key,
}

impl Keys {
    /// Derive the metadata, naming and determinism keys.
    pub fn derive(key: &VolumeKey, id: &VolumeId) -> Result<Self, Error> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(key.0.expose());
        let idd = id_digest(id);
        let meta = expand(&prk, b"meta", &idd, &[])?;
        let names = expand(&prk, b"names", &idd, &[])?;
        let det = expand(&prk, b"deterministic", &idd, &[])?;
        let meta = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &meta).map_err(|_| Error::Crypto("metadata key"))?,
        );
        Ok(Self {
            prk,
            id_digest: idd,
            meta,
            names: hmac::Key::new(hmac::HMAC_SHA256, &names),
            det: hmac::Key::new(hmac::HMAC_SHA256, &det),
        })
    }

    /// The volume id digest these keys are bound to.
    pub fn id_digest(&self) -> [u8; 16] {
        self.id_digest
    }

    /// The AES-256-GCM key of one file.
    pub fn file_key(&self, file_id: &[u8; 16]) -> Result<Arc<LessSafeKey>, Error> {
        let k = expand(&self.prk, b"file", &self.id_digest, file_id)?;
        let k = UnboundKey::new(&AES_256_GCM, &k).map_err(|_| Error::Crypto("file key"))?;
        Ok(Arc::new(LessSafeKey::new(k)))
    }

    /// The opaque object name of generation `gen` of file `file_id` (32 hex).
    pub fn object_name(&self, file_id: &[u8; 16], generation: u64) -> String {
        let mut msg = [0u8; 24];
        msg[..16].copy_from_slice(file_id);
        msg[16..].copy_from_slice(&generation.to_le_bytes());
        let t = hmac::sign(&self.names, &msg);
        hex::encode(&t.as_ref()[..16])
    }

    /// A value derived from the key and `parts` (deterministic builds: ids and nonces).
    pub fn derive_det(&self, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.det);
        ctx.update(&(label.len() as u64).to_le_bytes());
        ctx.update(label);
        for p in parts {
            ctx.update(&(p.len() as u64).to_le_bytes());
            ctx.update(p);
        }
        let t = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(t.as_ref());
        out
    }

    /// Seal the metadata plaintext in place; returns the GCM tag.
    pub fn seal_meta(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; GCM_TAG_LEN], Error> {
        let tag = self
            .meta
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .map_err(|_| Error::Crypto("metadata sealing"))?;
        let mut out = [0u8; GCM_TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Open the metadata ciphertext in place; `false` when authentication fails.
    pub fn open_meta(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        tag: &[u8],
        buf: &mut [u8],
    ) -> bool {
        self.meta
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                tag,
                buf,
            )
            .is_ok()
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

fn expand(prk: &hkdf::Prk, label: &[u8], idd: &[u8; 16], extra: &[u8]) -> Result<[u8; 32], Error> {
    let info: [&[u8]; 3] = [label, idd, extra];
    let okm = prk
        .expand(&info, Len(32))
        .map_err(|_| Error::Crypto("key derivation"))?;
    let mut out = [0u8; 32];
    okm.fill(&mut out)
        .map_err(|_| Error::Crypto("key derivation"))?;
    Ok(out)
}

/// The AAD of one chunk: volume id digest ‖ file id ‖ chunk index ‖ file generation.
pub fn chunk_aad(idd: &[u8; 16], file_id: &[u8; 16], index: u64, generation: u64) -> [u8; 48] {
    let mut a = [0u8; 48];
    a[..16].copy_from_slice(idd);
    a[16..32].copy_from_slice(file_id);
    a[32..40].copy_from_slice(&index.to_le_bytes());
    a[40..48].copy_from_slice(&generation.to_le_bytes());
    a
}

/// Random bytes (nonces, file ids).
pub fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut b = [0u8; N];
    rand::fill(&mut b).map_err(|_| Error::Crypto("random generator"))?;
    Ok(b)
}

/// How a file's chunks are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protection {
    /// AES-256-GCM encryption and authentication (the default).
    #[serde(rename = "encrypted")]
    Encrypted,
    /// Plaintext stored, authenticated with AES-256-GCM (GMAC over the AAD and the plaintext).
    #[serde(rename = "authenticated-only")]
    AuthenticatedOnly,
}

/// Seal one plaintext chunk (`plain.len() <= CHUNK`, zero-padded) into `rec` (`RECORD` bytes).
/// `nonce` must be fresh for this key (random, or derived from the key and the content).
pub fn seal_chunk(
    key: &LessSafeKey,
    prot: Protection,
    aad: &[u8; 48],
    nonce: [u8; NONCE_LEN],
    plain: &[u8],
    rec: &mut [u8],
) -> Result<(), Error> {
    if rec.len() != RECORD || plain.len() > CHUNK {
        return Err(Error::Crypto("chunk buffer size"));
    }
    rec[..NONCE_LEN].copy_from_slice(&nonce);
    let body = &mut rec[NONCE_LEN..NONCE_LEN + CHUNK];
    body[..plain.len()].copy_from_slice(plain);
    body[plain.len()..].fill(0);
    let tag = match prot {
        Protection::Encrypted => key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
            .map_err(|_| Error::Crypto("chunk sealing"))?,
        Protection::AuthenticatedOnly => {
            let mut full = Vec::with_capacity(48 + CHUNK);
            full.extend_from_slice(aad);
            full.extend_from_slice(body);
            key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&full),
                &mut [],
            )
            .map_err(|_| Error::Crypto("chunk sealing"))?
        }
    };
    rec[NONCE_LEN + CHUNK..].copy_from_slice(tag.as_ref());
    Ok(())
}

/// Verify and open one chunk record in place; on success the plaintext is `rec[NONCE_LEN..NONCE_LEN+CHUNK]`.
/// On failure the body is overwritten with zeros, so no unverified byte can leak.
pub fn open_chunk(key: &LessSafeKey, prot: Protection, aad: &[u8; 48], rec: &mut [u8]) -> bool {
    if rec.len() != RECORD {
        return false;
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&rec[..NONCE_LEN]);
    let (head, tag) = rec.split_at_mut(NONCE_LEN + CHUNK);
    let body = &mut head[NONCE_LEN..];
    let ok = match prot {
        Protection::Encrypted => key
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                tag,
                body,
            )
            .is_ok(),
        Protection::AuthenticatedOnly => {
            let mut full = Vec::with_capacity(48 + CHUNK);
            full.extend_from_slice(aad);
            full.extend_from_slice(body);
            key.open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&full),
                tag,
                &mut [],
            )
            .is_ok()
        }
    };
    if !ok {
        body.fill(0);
    }
    ok
}

/// Merkle leaf hash of one chunk record.
pub fn leaf_hash(rec: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[0]);
    ctx.update(rec);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// SHA-256 Merkle root over leaf hashes (interior node = SHA-256(1 ‖ left ‖ right); an odd last node
/// is carried up unchanged; no leaves = SHA-256(2)).
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.is_empty() {
        return sha256(&[2]);
    }
    let mut level: Vec<[u8; 32]> = leaves.to_vec();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            if let [l, r] = pair {
                let mut ctx = digest::Context::new(&digest::SHA256);
                ctx.update(&[1]);
                ctx.update(l);
                ctx.update(r);
                let mut out = [0u8; 32];
                out.copy_from_slice(ctx.finish().as_ref());
                next.push(out);
            } else {
                next.push(pair[0]);
            }
        }
        level = next;
    }
    level[0]
}

/// Below this many records, work stays on the calling thread.
const PAR_MIN: usize = 128;

/// Apply `f(index, record)` to every `RECORD`-sized record of `recs`, using a second thread for
/// the upper half when there are many (sealing/opening is CPU-bound: AES-GCM plus SHA-256).
pub fn for_each_record<T: Send>(
    recs: &mut [u8],
    f: &(dyn Fn(usize, &mut [u8]) -> T + Sync),
) -> Vec<T> {
    let n = recs.len() / RECORD;
    if n < PAR_MIN {
        return recs
            .chunks_mut(RECORD)
            .enumerate()
            .map(|(i, r)| f(i, r))
            .collect();
    }
    let half = n / 2;
    let (a, b) = recs.split_at_mut(half * RECORD);
    let upper = std::sync::Mutex::new(Some(b));
    let run_upper = || -> Vec<T> {
        let taken = upper.lock().map(|mut g| g.take()).unwrap_or(None);
        match taken {
            Some(b) => b
                .chunks_mut(RECORD)
                .enumerate()
                .map(|(i, r)| f(half + i, r))
                .collect(),
            None => Vec::new(),
        }
    };
    std::thread::scope(|s| {
        let helper = std::thread::Builder::new().spawn_scoped(s, run_upper);
        let mut out: Vec<T> = a
            .chunks_mut(RECORD)
            .enumerate()
            .map(|(i, r)| f(i, r))
            .collect();
        match helper {
            Ok(h) => match h.join() {
                Ok(v) => out.extend(v),
                Err(p) => std::panic::resume_unwind(p),
            },
            // No thread available: do the upper half here.
            Err(_) => out.extend(run_upper()),
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> VolumeId {
        VolumeId::new("cas", "s", "V1")
    }

    #[test]
    fn chunk_roundtrip_and_aad_binding() {
        let keys = Keys::derive(&VolumeKey::from_bytes([7; 32]), &id()).unwrap();
        let fk = keys.file_key(&[1; 16]).unwrap();
        for prot in [Protection::Encrypted, Protection::AuthenticatedOnly] {
            let aad = chunk_aad(&keys.id_digest(), &[1; 16], 3, 9);
            let mut rec = vec![0u8; RECORD];
            seal_chunk(&fk, prot, &aad, random().unwrap(), b"hello", &mut rec).unwrap();
            let mut r2 = rec.clone();
            assert!(open_chunk(&fk, prot, &aad, &mut r2));
            assert_eq!(&r2[NONCE_LEN..NONCE_LEN + 5], b"hello");
            let other = chunk_aad(&keys.id_digest(), &[1; 16], 4, 9);
            let mut r3 = rec.clone();
            assert!(!open_chunk(&fk, prot, &other, &mut r3));
            assert!(r3[NONCE_LEN..NONCE_LEN + CHUNK].iter().all(|&b| b == 0));
            let mut r4 = rec.clone();
            r4[NONCE_LEN + 1] ^= 1;
            assert!(!open_chunk(&fk, prot, &aad, &mut r4));
        }
    }

    #[test]
    fn key_debug_is_redacted() {
        let k = VolumeKey::from_bytes([0xab; 32]);
        assert!(!format!("{k:?}").contains("abab"));
    }

    #[test]
    fn key_hex_roundtrip_and_rejects() {
        let hex = "0123456789abcdef".repeat(4);
        let k = VolumeKey::from_hex(&format!("  {hex}\n")).unwrap();
        assert_eq!(k.to_hex(), hex);
        assert_eq!(k, VolumeKey::from(Key32::from_hex(&hex).unwrap()));
        assert_ne!(k, VolumeKey::from_bytes([0; 32]));
        for bad in ["", "abc", &hex[1..], &format!("{hex}00"), &"zz".repeat(32)] {
            assert!(
                matches!(VolumeKey::from_hex(bad), Err(Error::BadKey)),
                "{bad:?}"
            );
        }
        let a = VolumeKey::generate().unwrap();
        let b = VolumeKey::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.to_hex().len(), 64);
    }

    #[test]
    fn merkle_changes_with_order() {
        let a = [[1u8; 32], [2u8; 32], [3u8; 32]];
        let b = [[2u8; 32], [1u8; 32], [3u8; 32]];
        assert_ne!(merkle_root(&a), merkle_root(&b));
        assert_ne!(merkle_root(&a[..2]), merkle_root(&a));
    }

    #[test]
    fn for_each_record_keeps_order_serial_and_parallel() {
        for n in [3usize, 300] {
            let mut recs = vec![0u8; n * RECORD];
            let out = for_each_record(&mut recs, &|i, r: &mut [u8]| {
                r[0] = i as u8;
                i
            });
            assert_eq!(out, (0..n).collect::<Vec<_>>());
            assert!(
                recs.chunks(RECORD)
                    .enumerate()
                    .all(|(i, r)| r[0] == i as u8)
            );
        }
    }
}
