//! Identities of veil's parties (clients, the CAS, LAS nodes): key pairs with self-signed
//! certificates, and the one **key hash** function every component uses to name a public key.
//!
//! A key hash is the lowercase hex of SHA-256 over the DER-encoded SubjectPublicKeyInfo
//! (design-notes decision 7). It is computed here and nowhere else.

use aws_lc_rs::digest;

/// The key hash of a DER-encoded SubjectPublicKeyInfo: lowercase hex of its SHA-256 (64 chars).
pub fn key_hash(spki_der: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, spki_der))
}

/// Whether `s` has the form of a veil key hash (64 lowercase hex characters).
pub fn is_key_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_sha256_hex() {
        // SHA-256 of the empty string.
        assert_eq!(
            key_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_key_hash(&key_hash(b"x")));
        assert!(!is_key_hash("E3B0"));
    }
}
