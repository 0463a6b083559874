//! Known-answer vectors for deterministic builds (`build_deterministic`, the read-only code
//! regions): a fixed tree under a fixed key and volume id must always give the same tag and the
//! same backing store, byte for byte.
//!
//! **A change of any constant below is a change of the on-disk format** (key derivation, object
//! naming, chunk records, metadata document or slot layout, derived ids or nonces): update
//! `FORMAT.md` (and its version, if old volumes no longer open) in the same change, never just the
//! constants.
// Test code: a failed unwrap is a test failure with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use veil_shield::{Protection, Tag, VolumeId, VolumeKey, build_deterministic};
use veil_types::Digest32;

/// Tag and backing-store digest of the tree of [`fixed_tree`], per protection.
const VECTORS: [(Protection, &str, &str); 2] = [
    (
        Protection::Encrypted,
        "397e39782eb596c82fa53a86c9f8e883",
        "f2fc7c74ff695996a67d30c03ae424b7a8078901b6bc8aa07f7ac8e469836939",
    ),
    (
        Protection::AuthenticatedOnly,
        "3c22973d1a434fdea633b97a1d82a056",
        "c60cec0ac268a1d56732b7d3ef48f22b2150411a85dbb11e634545ebf615d827",
    ),
];

fn key() -> VolumeKey {
    VolumeKey::from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f").unwrap()
}

fn id() -> VolumeId {
    VolumeId::new("kat-cas", "kat-session", "code")
}

fn put(p: &Path, data: &[u8], mode: u32) {
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    let f = fs::File::options().write(true).open(p).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(1_600_000_000))
        .unwrap();
}

/// `/hello.txt`, an empty file, a subdirectory with a two-chunk executable and a symlink; modes
/// and modification times fixed (a deterministic build records every time as 0 anyway).
fn fixed_tree(src: &Path) {
    fs::create_dir_all(src.join("bin")).unwrap();
    put(&src.join("hello.txt"), b"hello, veil\n", 0o644);
    put(&src.join("empty"), b"", 0o600);
    let tool: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
    put(&src.join("bin/tool"), &tool, 0o755);
    std::os::unix::fs::symlink("../hello.txt", src.join("bin/hello")).unwrap();
    fs::set_permissions(src.join("bin"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(src, fs::Permissions::from_mode(0o755)).unwrap();
}

/// SHA-256 over every file of the backing store except the lock, in name order:
/// for each, `len_le64(name) ‖ name ‖ len_le64(content) ‖ content`.
fn store_digest(backing: &Path) -> (Digest32, Vec<String>) {
    let mut names: Vec<String> = fs::read_dir(backing)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "lock")
        .collect();
    names.sort();
    let mut all = Vec::new();
    for n in &names {
        let content = fs::read(backing.join(n)).unwrap();
        all.extend_from_slice(&(n.len() as u64).to_le_bytes());
        all.extend_from_slice(n.as_bytes());
        all.extend_from_slice(&(content.len() as u64).to_le_bytes());
        all.extend_from_slice(&content);
    }
    (Digest32::of(&all), names)
}

#[test]
fn deterministic_build_known_answer() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fixed_tree(&src);
    for (i, (prot, tag, digest)) in VECTORS.into_iter().enumerate() {
        let backing = d.path().join(format!("backing-{i}"));
        let got = build_deterministic(&src, &backing, &key(), &id(), prot).unwrap();
        let (got_digest, names) = store_digest(&backing);
        // The metadata slot and one object per non-empty file; the empty file has none.
        assert_eq!(names.len(), 3, "{prot:?}: {names:?}");
        assert_eq!(names[2], "meta.0");
        assert_eq!(
            (got.to_hex(), got_digest.to_hex()),
            (tag.to_string(), digest.to_string()),
            "{prot:?}: the deterministic format changed (see the module documentation)"
        );
        assert_eq!(got, tag.parse::<Tag>().unwrap());
    }
}
