//! Key hashes (decision 7): lowercase hex of SHA-256 over a DER SubjectPublicKeyInfo.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::HexError;

/// A certificate could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a well-formed X.509 certificate: {0}")]
pub struct CertError(pub String);

/// The name of a public key: SHA-256 over its DER SubjectPublicKeyInfo, shown as 64 lowercase
/// hex characters. Parsing accepts only that form (SCONE-style key hashes in policies stay
/// strings: they match no veil key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// The key hash of a DER SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, spki_der).as_ref());
        Self(out)
    }

    /// The key hash of a DER certificate's public key.
    pub fn of_cert_der(der: &[u8]) -> Result<Self, CertError> {
        Ok(Self::of_spki(&spki_from_cert_der(der)?))
    }

    /// Lowercase hex (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", self.to_hex())
    }
}

impl FromStr for KeyHash {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !is_key_hash(s) {
            return Err(HexError {
                value: s.chars().take(80).collect(),
                what: "key hash (lowercase)",
                len: 64,
            });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| HexError {
            value: s.chars().take(80).collect(),
            what: "key hash (lowercase)",
            len: 64,
        })?;
        Ok(Self(out))
    }
}

impl Serialize for KeyHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The key hash of a DER-encoded SubjectPublicKeyInfo: lowercase hex of its SHA-256 (64 chars).
pub fn key_hash(spki_der: &[u8]) -> String {
    KeyHash::of_spki(spki_der).to_hex()
}

/// Whether `s` has the form of a veil key hash (64 lowercase hex characters).
pub fn is_key_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The DER SubjectPublicKeyInfo of a DER X.509 certificate.
pub fn spki_from_cert_der(der: &[u8]) -> Result<Vec<u8>, CertError> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| CertError(e.to_string()))?;
    Ok(cert.public_key().raw.to_vec())
}

/// The DER SubjectPublicKeyInfo of the first certificate in a PEM text.
pub fn spki_from_cert_pem(pem: &str) -> Result<Vec<u8>, CertError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CertError(format!("no PEM certificate found: {e}")))?;
    if p.label != "CERTIFICATE" {
        return Err(CertError(format!(
            "no PEM certificate found: the first PEM block is a {}",
            p.label
        )));
    }
    spki_from_cert_der(&p.contents)
}

/// The key hash of a DER certificate's public key.
pub fn key_hash_of_cert_der(der: &[u8]) -> Result<String, CertError> {
    Ok(key_hash(&spki_from_cert_der(der)?))
}

/// PEM text of a DER certificate.
pub fn cert_der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_known_answer_and_parse() {
        // SHA-256 of the empty string: the function is plain SHA-256 over the SPKI bytes.
        let h = key_hash(b"");
        assert_eq!(
            h,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_key_hash(&h));
        assert_eq!(h.parse::<KeyHash>().ok(), Some(KeyHash::of_spki(b"")));
        assert!(h.to_uppercase().parse::<KeyHash>().is_err());
        assert!("abc".parse::<KeyHash>().is_err());
    }

    #[test]
    fn bad_certificates_are_errors() {
        assert!(spki_from_cert_der(b"not der").is_err());
        assert!(spki_from_cert_pem("no pem here").is_err());
        let pem = cert_der_to_pem(b"\x30\x00");
        assert!(spki_from_cert_pem(&pem).is_err());
    }
}
