//! SHA-256 digests as a value type (lowercase hex on the wire and on screen).

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use aws_lc_rs::digest;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte SHA-256 digest. Displays and serializes as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest32(pub [u8; 32]);

/// Error parsing a [`Digest32`] from hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a SHA-256 hash (expected 64 hex characters)")]
pub struct DigestParseError {
    /// The (truncated) input that was rejected.
    pub value: String,
}

impl Digest32 {
    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self::from_digest(&digest::digest(&digest::SHA256, data))
    }

    /// SHA-256 of the concatenation of `parts`.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for p in parts {
            ctx.update(p);
        }
        Self::from_digest(&ctx.finish())
    }

    /// SHA-256 of everything `reader` yields (streamed in 64 KiB blocks).
    pub fn of_reader(mut reader: impl Read) -> std::io::Result<Self> {
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            ctx.update(buf.get(..n).unwrap_or_default());
        }
        Ok(Self::from_digest(&ctx.finish()))
    }

    fn from_digest(d: &digest::Digest) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// Lowercase hex (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest32({})", self.to_hex())
    }
}

impl FromStr for Digest32 {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DigestParseError {
            value: s.chars().take(80).collect(),
        };
        let t = s.trim();
        if t.len() != 64 {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(t.to_ascii_lowercase(), &mut out).map_err(|_| err())?;
        Ok(Self(out))
    }
}

impl Serialize for Digest32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip_and_known_value() {
        let d = Digest32::of(b"");
        assert_eq!(
            d.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_hex().parse::<Digest32>(), Ok(d));
        assert_eq!(Digest32::of_parts(&[b"a", b"bc"]), Digest32::of(b"abc"));
        assert_eq!(
            Digest32::of_reader(&b"abc"[..]).ok(),
            Some(Digest32::of(b"abc"))
        );
    }

    #[test]
    fn bad_hex_rejected() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(66)] {
            assert!(bad.parse::<Digest32>().is_err(), "{bad}");
        }
    }
}
