//! Generation of secret values with aws-lc-rs's CSPRNG, and certificates with rcgen.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::SecretsError;
use crate::model::KeyAlg;

/// The default size of generated `ascii` (characters) and `binary` (bytes) secrets.
pub const DEFAULT_SIZE: usize = 20;

/// The largest `size` the CAS generates (a guard against absurd policies).
pub const MAX_SIZE: usize = 1 << 16;

/// The default validity of generated certificates when the policy gives no `valid_for`.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The characters of generated `ascii` secrets: printable ASCII without space (0x21..=0x7e).
const ASCII_FIRST: u8 = 0x21;
const ASCII_COUNT: u8 = 0x7e - 0x21 + 1;

fn crypto_err(secret: &str, what: &str) -> SecretsError {
    SecretsError::Crypto {
        secret: secret.to_string(),
        what: what.to_string(),
    }
}

fn check_size(secret: &str, size: usize) -> Result<(), SecretsError> {
    if size == 0 || size > MAX_SIZE {
        return Err(SecretsError::InvalidValue {
            secret: secret.to_string(),
            reason: format!("size must be between 1 and {MAX_SIZE}, got {size}"),
        });
    }
    Ok(())
}

/// `size` random bytes from the system CSPRNG.
pub fn random_bytes(secret: &str, size: usize) -> Result<Vec<u8>, SecretsError> {
    check_size(secret, size)?;
    let mut buf = vec![0u8; size];
    aws_lc_rs::rand::fill(&mut buf).map_err(|_| crypto_err(secret, "random generator failed"))?;
    Ok(buf)
}

/// `size` uniformly random printable ASCII characters (0x21..=0x7e), by rejection sampling.
pub fn random_ascii(secret: &str, size: usize) -> Result<String, SecretsError> {
    check_size(secret, size)?;
    // Largest multiple of ASCII_COUNT below 256: bytes at or above it are rejected so every
    // character is equally likely.
    let limit = 256 - (256 % u16::from(ASCII_COUNT));
    let mut out = String::with_capacity(size);
    let mut buf = [0u8; 64];
    while out.len() < size {
        aws_lc_rs::rand::fill(&mut buf)
            .map_err(|_| crypto_err(secret, "random generator failed"))?;
        for &b in &buf {
            if u16::from(b) < limit && out.len() < size {
                out.push(char::from(ASCII_FIRST + b % ASCII_COUNT));
            }
        }
    }
    Ok(out)
}

/// A new private key of algorithm `alg`, as PKCS#8 DER.
pub fn private_key(secret: &str, alg: KeyAlg) -> Result<Vec<u8>, SecretsError> {
    let rng = SystemRandom::new();
    let err = |_| crypto_err(secret, "key generation failed");
    Ok(match alg {
        KeyAlg::P256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(err)?
            .as_ref()
            .to_vec(),
        KeyAlg::P384 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng)
            .map_err(err)?
            .as_ref()
            .to_vec(),
        KeyAlg::Ed25519 => Ed25519KeyPair::generate_pkcs8v1(&rng)
            .map_err(err)?
            .as_ref()
            .to_vec(),
        KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => {
            let size = if alg == KeyAlg::Rsa2048 {
                aws_lc_rs::rsa::KeySize::Rsa2048
            } else {
                aws_lc_rs::rsa::KeySize::Rsa3072
            };
            let kp = aws_lc_rs::rsa::KeyPair::generate(size).map_err(err)?;
            let der: Pkcs8V1Der<'static> = kp.as_der().map_err(err)?;
            der.as_ref().to_vec()
        }
    })
}

fn rcgen_alg(alg: KeyAlg) -> &'static SignatureAlgorithm {
    match alg {
        KeyAlg::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlg::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlg::Ed25519 => &rcgen::PKCS_ED25519,
        KeyAlg::Rsa2048 | KeyAlg::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
    }
}

/// An rcgen key pair for PKCS#8 DER of a known algorithm.
pub(crate) fn key_pair(secret: &str, pkcs8: &[u8], alg: KeyAlg) -> Result<KeyPair, SecretsError> {
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), rcgen_alg(alg))
        .map_err(|_| crypto_err(secret, "the private key does not parse"))
}

/// Parse a PKCS#8 DER key of unknown algorithm: its algorithm (RSA keys are classified by
/// modulus size; only 2048 and 3072 bits are accepted).
pub fn detect_key_alg(secret: &str, pkcs8: &[u8]) -> Result<KeyAlg, SecretsError> {
    let bad = |reason: &str| SecretsError::InvalidValue {
        secret: secret.to_string(),
        reason: reason.to_string(),
    };
    if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8).is_ok() {
        return Ok(KeyAlg::P256);
    }
    if EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8).is_ok() {
        return Ok(KeyAlg::P384);
    }
    if Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).is_ok() {
        return Ok(KeyAlg::Ed25519);
    }
    if let Ok(kp) = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(pkcs8) {
        return match kp.public_modulus_len() * 8 {
            2048 => Ok(KeyAlg::Rsa2048),
            3072 => Ok(KeyAlg::Rsa3072),
            bits => Err(bad(&format!(
                "RSA keys must have 2048 or 3072 bits, this one has {bits}"
            ))),
        };
    }
    Err(bad(
        "not a PKCS#8 private key of a supported type (P-256, P-384, Ed25519, RSA-2048, RSA-3072)",
    ))
}

/// The DER SubjectPublicKeyInfo of a PKCS#8 private key.
pub fn public_key_of(secret: &str, pkcs8: &[u8], alg: KeyAlg) -> Result<Vec<u8>, SecretsError> {
    Ok(key_pair(secret, pkcs8, alg)?.subject_public_key_info())
}

/// What a certificate should contain.
#[derive(Clone, Debug, Default)]
pub struct CertSpec {
    /// Subject common name.
    pub common_name: String,
    /// DNS subject alternative names.
    pub dns: Vec<String>,
    /// IP subject alternative names.
    pub ips: Vec<IpAddr>,
    /// Whether this is a CA certificate.
    pub ca: bool,
    /// Extended key usage: `Some(true)` server, `Some(false)` client.
    pub server_endpoint: Option<bool>,
    /// Validity from `now`.
    pub valid_for: Option<Duration>,
}

/// A made certificate.
pub struct MadeCert {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// End of validity (unix seconds).
    pub not_after: u64,
}

/// The issuer of a new certificate: its certificate DER, PKCS#8 key and algorithm.
pub struct IssuerRef<'a> {
    /// The issuer certificate (DER).
    pub cert_der: &'a [u8],
    /// The issuer's private key (PKCS#8 DER).
    pub key_pkcs8: &'a [u8],
    /// The issuer key's algorithm.
    pub key_alg: KeyAlg,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Make a certificate for the key `key_pkcs8` (of `key_alg`), signed by `issuer` or
/// self-signed.
pub fn certificate(
    secret: &str,
    spec: &CertSpec,
    key_pkcs8: &[u8],
    key_alg: KeyAlg,
    issuer: Option<IssuerRef<'_>>,
    now: SystemTime,
) -> Result<MadeCert, SecretsError> {
    let cert_err = |e: rcgen::Error| SecretsError::Certificate {
        secret: secret.to_string(),
        reason: e.to_string(),
    };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, spec.common_name.as_str());
    params.distinguished_name = dn;
    for d in &spec.dns {
        params
            .subject_alt_names
            .push(SanType::DnsName(d.clone().try_into().map_err(cert_err)?));
    }
    for ip in &spec.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let validity = spec.valid_for.unwrap_or(DEFAULT_VALIDITY);
    // Back-date by a minute to tolerate small clock differences between hosts.
    let start = now.checked_sub(Duration::from_secs(60)).unwrap_or(now);
    let end = now
        .checked_add(validity)
        .ok_or_else(|| SecretsError::InvalidValue {
            secret: secret.to_string(),
            reason: "valid_for is too large".to_string(),
        })?;
    params.not_before = time::OffsetDateTime::from(start);
    params.not_after = time::OffsetDateTime::from(end);
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial)
        .map_err(|_| crypto_err(secret, "random generator failed"))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    if spec.ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    } else {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if matches!(key_alg, KeyAlg::Rsa2048 | KeyAlg::Rsa3072) {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
    }
    match spec.server_endpoint {
        Some(true) => params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth],
        Some(false) => params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth],
        None => {}
    }
    params.use_authority_key_identifier_extension = issuer.is_some();
    let subject_key = key_pair(secret, key_pkcs8, key_alg)?;
    let cert = match issuer {
        None => params.self_signed(&subject_key).map_err(cert_err)?,
        Some(iss) => {
            let issuer_key = key_pair(secret, iss.key_pkcs8, iss.key_alg)?;
            let issuer_cert = CertificateDer::from(iss.cert_der);
            let issuer = Issuer::from_ca_cert_der(&issuer_cert, issuer_key).map_err(cert_err)?;
            params.signed_by(&subject_key, &issuer).map_err(cert_err)?
        }
    };
    Ok(MadeCert {
        der: cert.der().to_vec(),
        not_after: unix(end),
    })
}
