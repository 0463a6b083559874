//! Fixed-size binary identifiers that display, parse and serialize as lowercase hex.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use aws_lc_rs::digest;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Error parsing a hex identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a {what} (expected {len} hex characters)")]
pub struct HexError {
    /// The (truncated) input that was rejected.
    pub value: String,
    /// What was expected (e.g. "SHA-256 hash").
    pub what: &'static str,
    /// The expected number of hex characters.
    pub len: usize,
}

fn parse_hex<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], HexError> {
    let err = || HexError {
        value: s.chars().take(80).collect(),
        what,
        len: 2 * N,
    };
    let t = s.trim();
    if t.len() != 2 * N {
        return Err(err());
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(t.to_ascii_lowercase(), &mut out).map_err(|_| err())?;
    Ok(out)
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $n:expr, $what:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $n]);

        impl $name {
            /// Lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $n] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = HexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex::<$n>(s, $what).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// A 32-byte SHA-256 digest. Displays and serializes as 64 lowercase hex characters.
    Digest32,
    32,
    "SHA-256 hash"
);

hex_id!(
    /// A workload measurement (decision 3: SHA-256 over the launcher, program and what it
    /// loads). 64 lowercase hex characters, the form policies carry as `mrenclave`.
    Measurement,
    32,
    "measurement"
);

hex_id!(
    /// A volume's state commitment (decision 8): the first 16 bytes of SHA-256 over the sealed
    /// metadata, 32 lowercase hex characters. A volume opens only at the tag its caller holds.
    Tag,
    16,
    "volume tag"
);

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
}

impl From<Digest32> for Measurement {
    fn from(d: Digest32) -> Self {
        Self(d.0)
    }
}

impl From<Measurement> for Digest32 {
    fn from(m: Measurement) -> Self {
        Self(m.0)
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
        assert!("a".repeat(64).parse::<Tag>().is_err());
        let e = "zz".parse::<Tag>().err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("`zz` is not a volume tag (expected 32 hex characters)".into())
        );
    }

    #[test]
    fn serde_is_a_hex_string() {
        let t = Tag([0xab; 16]);
        let j = serde_json::to_string(&t).unwrap_or_default();
        assert_eq!(j, format!("\"{}\"", "ab".repeat(16)));
        assert_eq!(serde_json::from_str::<Tag>(&j).ok(), Some(t));
        assert!(serde_json::from_str::<Measurement>("\"00\"").is_err());
    }
}
