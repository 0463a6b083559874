//! A 32-byte secret key: zeroized on drop, redacted in `Debug`, compared in constant time.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::HexError;

/// A 32-byte secret key (volume keys, code-region keys, DB keys). `Debug` prints only that it
/// is a key; the bytes are wiped when the value is dropped. There is no `Display` and no
/// `Serialize`: a key leaves the process only through an explicit [`Key32::to_hex`].
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key32([u8; 32]);

impl Key32 {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self, HexError> {
        let err = || HexError {
            value: "<redacted>".into(),
            what: "32-byte key",
            len: 64,
        };
        let t = s.trim();
        if t.len() != 64 {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(t, &mut out).map_err(|_| err())?;
        Ok(Self(out))
    }

    /// The key bytes. Callers must not log or copy them beyond their use.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex of the key, for the few places that hand it on (the CAS to an attested
    /// workload, `veil volume create` to its operator).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl PartialEq for Key32 {
    fn eq(&self, other: &Self) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

impl Eq for Key32 {}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_errors_never_show_the_key() {
        let hex = "ab".repeat(32);
        let k = Key32::from_hex(&hex).unwrap_or_else(|_| Key32::from_bytes([0; 32]));
        assert_eq!(k.to_hex(), hex);
        assert!(!format!("{k:?}").contains("ab"));
        let bad = format!("{}zz", "cd".repeat(31));
        let e = Key32::from_hex(&bad).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| !e.contains("cdcd")));
        assert_eq!(k, Key32::from_bytes([0xab; 32]));
        assert_ne!(k, Key32::from_bytes([0; 32]));
    }
}
