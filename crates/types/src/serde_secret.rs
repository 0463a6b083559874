//! serde helpers that put secrets on the wire explicitly (`#[serde(with = "...")]`): the wire
//! types of the CAS hold keys, tokens and configuration as [`Secret`](crate::Secret) values,
//! and only these functions expose them, when a body is encoded.

use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

use crate::Key32;

/// A [`SecretString`].
pub mod string {
    use super::*;

    /// Serialize the exposed string.
    pub fn serialize<S: Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.expose_secret())
    }

    /// Deserialize into a secret string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        String::deserialize(d).map(SecretString::from)
    }
}

/// An optional [`SecretString`].
pub mod opt_string {
    use super::*;

    /// Serialize the exposed string, or none.
    pub fn serialize<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(|v| v.expose_secret()).serialize(s)
    }

    /// Deserialize into an optional secret string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Option::<String>::deserialize(d).map(|o| o.map(SecretString::from))
    }
}

/// A [`Key32`] as 64 hex characters.
pub mod key32_hex {
    use super::*;

    /// Serialize as hex.
    pub fn serialize<S: Serializer>(v: &Key32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_hex())
    }

    /// Parse 64 hex characters.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Key32, D::Error> {
        let mut s = String::deserialize(d)?;
        let k = Key32::from_hex(&s).map_err(serde::de::Error::custom);
        s.zeroize();
        k
    }
}

/// A list of [`SecretString`]s (e.g. a program's argv).
pub mod string_vec {
    use super::*;

    /// Serialize as a list of strings.
    pub fn serialize<S: Serializer>(v: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.expose_secret()))
    }

    /// Deserialize a list of strings into secrets.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
        Vec::<String>::deserialize(d).map(|v| v.into_iter().map(SecretString::from).collect())
    }
}

/// A map whose values are [`SecretString`]s (e.g. an environment: names are not secret).
pub mod string_map {
    use std::collections::BTreeMap;

    use super::*;

    /// Serialize as a map of strings.
    pub fn serialize<S: Serializer>(
        v: &BTreeMap<String, SecretString>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(v.iter().map(|(k, x)| (k, x.expose_secret())))
    }

    /// Deserialize a map of strings into secret values.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, SecretString>, D::Error> {
        BTreeMap::<String, String>::deserialize(d).map(|m| {
            m.into_iter()
                .map(|(k, v)| (k, SecretString::from(v)))
                .collect()
        })
    }
}

/// Secret bytes as standard base64 (with padding).
pub mod bytes_b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    /// Serialize the exposed bytes as base64.
    pub fn serialize<S: Serializer>(v: &SecretSlice<u8>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v.expose_secret()))
    }

    /// Deserialize base64 into secret bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretSlice<u8>, D::Error> {
        let mut s = String::deserialize(d)?;
        let out = STANDARD
            .decode(s.as_bytes())
            .map(SecretSlice::from)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")));
        s.zeroize();
        out
    }
}
