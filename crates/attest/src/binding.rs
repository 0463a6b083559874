//! Evidence binding (design decision 10): the CAS's nonce and the launcher's TLS key.
//!
//! `report data = SHA-256(nonce ‖ DER SPKI of the client certificate) ‖ 32 zero bytes` (64 bytes,
//! compared in full). The SPKI is the one of the certificate the launcher presents on the very TLS
//! connection that carries the attest request, so evidence can be neither replayed (the nonce is
//! single use) nor relayed to another connection (another key gives other report data).

use std::fmt;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::Digest32;

/// A 32-byte CAS nonce. Serializes as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce(pub [u8; 32]);

/// The 64 bytes of report data that evidence carries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReportData(pub [u8; 64]);

/// Error from the random number generator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

impl Nonce {
    /// A fresh nonce from the system's secure RNG.
    pub fn random() -> Result<Self, RandomError> {
        let mut b = [0u8; 32];
        SystemRandom::new().fill(&mut b).map_err(|_| RandomError)?;
        Ok(Self(b))
    }
}

impl ReportData {
    /// The report data binding `nonce` to the client key `client_spki_der`.
    pub fn bind(nonce: &Nonce, client_spki_der: &[u8]) -> Self {
        let h = Digest32::of_parts(&[&nonce.0, client_spki_der]);
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&h.0);
        Self(out)
    }

    /// Lowercase hex (128 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", hex::encode(self.0))
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ReportData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportData({})", self.to_hex())
    }
}

impl fmt::Display for ReportData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

fn de_hex<'de, D: Deserializer<'de>, const N: usize>(
    d: D,
    what: &str,
) -> Result<[u8; N], D::Error> {
    let s = String::deserialize(d)?;
    let mut out = [0u8; N];
    hex::decode_to_slice(s.as_bytes(), &mut out).map_err(|_| {
        serde::de::Error::custom(format!("{what} must be {} hex characters", N * 2))
    })?;
    Ok(out)
}

impl Serialize for Nonce {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Nonce {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_hex::<D, 32>(d, "a nonce").map(Self)
    }
}

impl Serialize for ReportData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ReportData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_hex::<D, 64>(d, "report data").map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_layout() {
        let n = Nonce([7u8; 32]);
        let rd = ReportData::bind(&n, b"spki");
        let mut input = vec![7u8; 32];
        input.extend_from_slice(b"spki");
        assert_eq!(&rd.0[..32], &Digest32::of(&input).0);
        assert_eq!(&rd.0[32..], &[0u8; 32]);
        assert_ne!(rd, ReportData::bind(&n, b"spkj"));
        assert_ne!(rd, ReportData::bind(&Nonce([8u8; 32]), b"spki"));
    }

    #[test]
    fn serde_hex() -> Result<(), serde_json::Error> {
        let n = Nonce([0xab; 32]);
        let s = serde_json::to_string(&n)?;
        assert_eq!(s, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Nonce>(&s)?, n);
        assert!(serde_json::from_str::<Nonce>("\"abcd\"").is_err());
        let rd = ReportData([1; 64]);
        let s = serde_json::to_string(&rd)?;
        assert_eq!(serde_json::from_str::<ReportData>(&s)?, rd);
        Ok(())
    }

    #[test]
    fn random_nonces_differ() -> Result<(), RandomError> {
        assert_ne!(Nonce::random()?, Nonce::random()?);
        Ok(())
    }
}
