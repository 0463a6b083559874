//! The stored form of secret values: what the CAS seals into its database.
//!
//! Every type here that holds secret material implements `Debug` by hand and prints only
//! names, kinds and lengths, never a value.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The kind of a stored secret. A mirror of the policy's secret kinds, kept here so that the
/// sealed storage format does not change when the policy model does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Printable ASCII text.
    Ascii,
    /// Raw bytes.
    Binary,
    /// A private key (PKCS#8).
    PrivateKey,
    /// A public key (SubjectPublicKeyInfo).
    PublicKey,
    /// An X.509 certificate with its private key.
    X509,
    /// An X.509 CA certificate with its private key.
    X509Ca,
    /// A YAML configuration fragment.
    ConfigFragment,
}

impl Kind {
    /// The policy spelling of this kind (`private-key`, `x509-ca`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ascii => "ascii",
            Kind::Binary => "binary",
            Kind::PrivateKey => "private-key",
            Kind::PublicKey => "public-key",
            Kind::X509 => "x509",
            Kind::X509Ca => "x509-ca",
            Kind::ConfigFragment => "config-fragment",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The algorithm of a private key. A mirror of the policy's `key_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum KeyAlg {
    /// ECDSA on NIST P-256 (the default).
    #[default]
    #[serde(rename = "P-256")]
    P256,
    /// ECDSA on NIST P-384.
    #[serde(rename = "P-384")]
    P384,
    /// Ed25519.
    Ed25519,
    /// RSA with a 2048-bit modulus.
    #[serde(rename = "RSA-2048")]
    Rsa2048,
    /// RSA with a 3072-bit modulus.
    #[serde(rename = "RSA-3072")]
    Rsa3072,
}

impl KeyAlg {
    /// The policy spelling (`P-256`, `Ed25519`, `RSA-3072`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::P256 => "P-256",
            KeyAlg::P384 => "P-384",
            KeyAlg::Ed25519 => "Ed25519",
            KeyAlg::Rsa2048 => "RSA-2048",
            KeyAlg::Rsa3072 => "RSA-3072",
        }
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The material of one secret.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum SecretMaterial {
    /// `ascii`: the text.
    Text(String),
    /// `binary`: the bytes.
    Bytes(Vec<u8>),
    /// `private-key`: PKCS#8 DER and its algorithm.
    PrivateKey {
        /// PKCS#8 DER.
        pkcs8_der: Vec<u8>,
        /// The algorithm.
        key_type: KeyAlg,
    },
    /// `public-key`: DER SubjectPublicKeyInfo.
    PublicKey {
        /// DER SubjectPublicKeyInfo.
        spki_der: Vec<u8>,
    },
    /// `x509` / `x509-ca`: the certificate, its issuers and its private key.
    Certificate {
        /// The certificate (DER).
        der: Vec<u8>,
        /// The issuing certificates (DER), from the direct issuer to the root; empty when
        /// self-signed.
        chain: Vec<Vec<u8>>,
        /// The certificate's private key (PKCS#8 DER); empty when only the certificate is
        /// known (an explicit PEM certificate without a key).
        private_key_pkcs8_der: Vec<u8>,
    },
    /// `config-fragment`: YAML text.
    Fragment(String),
}

impl fmt::Debug for SecretMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretMaterial::Text(t) => write!(f, "Text(<{} chars>)", t.chars().count()),
            SecretMaterial::Bytes(b) => write!(f, "Bytes(<{} bytes>)", b.len()),
            SecretMaterial::PrivateKey { key_type, .. } => {
                write!(f, "PrivateKey({key_type}, <redacted>)")
            }
            SecretMaterial::PublicKey { spki_der } => {
                write!(f, "PublicKey(<{} bytes>)", spki_der.len())
            }
            SecretMaterial::Certificate { chain, .. } => {
                write!(f, "Certificate(<redacted>, chain of {})", chain.len())
            }
            SecretMaterial::Fragment(t) => write!(f, "Fragment(<{} chars>)", t.len()),
        }
    }
}

/// One secret's value as the CAS stores it (sealed).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredSecret {
    /// The kind.
    pub kind: Kind,
    /// The value.
    pub value: SecretMaterial,
    /// Whether the CAS generated it (false: explicit `value` or imported).
    pub generated: bool,
    /// When the value was made (unix seconds).
    pub created_at: u64,
    /// For certificates: the end of validity (unix seconds).
    pub not_after: Option<u64>,
}

impl fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSecret")
            .field("kind", &self.kind)
            .field("value", &self.value)
            .field("generated", &self.generated)
            .field("created_at", &self.created_at)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// All secret values of one session version, by secret name.
#[derive(Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct SecretValues(pub BTreeMap<String, StoredSecret>);

impl SecretValues {
    /// The value of secret `name`, if any.
    pub fn get(&self, name: &str) -> Option<&StoredSecret> {
        self.0.get(name)
    }
}

impl fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, (v.kind, v.generated))))
            .finish()
    }
}

/// Where an expanded value goes; decides whether raw binary is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// A program argument (no raw binary).
    Argument,
    /// An environment variable value (no raw binary).
    Environment,
    /// The contents of an injected file (raw binary allowed).
    File,
    /// A dynamic configuration section of the policy (attestation, security, access policy,
    /// `fspf_key`, OTP secret): text only.
    Config,
}

impl Context {
    /// Whether raw bytes (`:bin`, `:der`, ...) may be placed here.
    pub fn allows_binary(self) -> bool {
        matches!(self, Context::File)
    }

    /// A phrase naming the context for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Context::Argument => "a program argument",
            Context::Environment => "an environment variable",
            Context::File => "a file",
            Context::Config => "a configuration section",
        }
    }
}
