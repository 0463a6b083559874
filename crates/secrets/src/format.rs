//! Placeholder formats (`:hex`, `:base64`, `:crt`, `:privatekey:pem`, ...) of SCONE's §1.5.

use data_encoding::{BASE32, BASE32_NOPAD, BASE64, BASE64URL, HEXLOWER};

use crate::SecretsError;
use crate::model::{Context, Kind, SecretMaterial, StoredSecret};

/// The formats each kind accepts (`None`, i.e. no suffix, is always accepted and means the
/// kind's default): the policy crate's list, so validation and formatting never disagree.
pub fn formats(kind: Kind) -> &'static [&'static str] {
    veil_policy::formats_for_kind(policy_kind(kind))
}

/// The policy's kind for a stored kind (the inverse of `crate::session::kind_of`).
fn policy_kind(kind: Kind) -> veil_policy::SecretKind {
    use veil_policy::SecretKind as P;
    match kind {
        Kind::Ascii => P::Ascii,
        Kind::Binary => P::Binary,
        Kind::PrivateKey => P::PrivateKey,
        Kind::PublicKey => P::PublicKey,
        Kind::X509 => P::X509,
        Kind::X509Ca => P::X509Ca,
        Kind::ConfigFragment => P::ConfigFragment,
    }
}

fn pem(tag: &str, der: &[u8]) -> Vec<u8> {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
    .into_bytes()
}

/// PEM `CERTIFICATE` blocks for several DER certificates, concatenated.
pub fn pem_certs<'a>(ders: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for d in ders {
        out.extend(pem("CERTIFICATE", d));
    }
    out
}

/// PEM of a PKCS#8 private key.
pub fn pem_private_key(der: &[u8]) -> Vec<u8> {
    pem("PRIVATE KEY", der)
}

/// PEM of a SubjectPublicKeyInfo.
pub fn pem_public_key(der: &[u8]) -> Vec<u8> {
    pem("PUBLIC KEY", der)
}

/// Format one secret for a placeholder. `format` is the suffix without the leading colon
/// (`None`: the kind's default). Raw binary output (`:bin`, `:der`, PKCS#12) is refused in
/// arguments, environment values and configuration sections.
pub fn format_secret(
    name: &str,
    s: &StoredSecret,
    format: Option<&str>,
    context: Context,
) -> Result<Vec<u8>, SecretsError> {
    let fmt = format.map(|f| f.trim_start_matches([':', '.']));
    let bad_format = || SecretsError::Format {
        secret: name.to_string(),
        kind: s.kind,
        format: fmt.unwrap_or_default().to_string(),
        valid: formats(s.kind).join(", "),
    };
    let binary = |bytes: Vec<u8>| -> Result<Vec<u8>, SecretsError> {
        if context.allows_binary() {
            Ok(bytes)
        } else {
            Err(SecretsError::BinaryNotAllowed {
                secret: name.to_string(),
                context: context.describe(),
            })
        }
    };
    match (&s.value, fmt) {
        (SecretMaterial::Text(t), None) => Ok(t.clone().into_bytes()),
        (SecretMaterial::Fragment(t), None) => Ok(t.clone().into_bytes()),
        (SecretMaterial::Bytes(b), f) => match f {
            None | Some("bin") => binary(b.clone()),
            Some("hex") => Ok(HEXLOWER.encode(b).into_bytes()),
            Some("base64") => Ok(BASE64.encode(b).into_bytes()),
            Some("base64url") => Ok(BASE64URL.encode(b).into_bytes()),
            Some("base32") => Ok(BASE32.encode(b).into_bytes()),
            Some("base32nopad") => Ok(BASE32_NOPAD.encode(b).into_bytes()),
            Some(_) => Err(bad_format()),
        },
        (SecretMaterial::PrivateKey { pkcs8_der, .. }, f) => match f {
            None | Some("pem") | Some("pkcs8:pem") => Ok(pem_private_key(pkcs8_der)),
            Some("der") | Some("pkcs8:der") => binary(pkcs8_der.clone()),
            Some(_) => Err(bad_format()),
        },
        (SecretMaterial::PublicKey { spki_der }, f) => match f {
            None | Some("spki:pem") | Some("pem") => Ok(pem_public_key(spki_der)),
            Some("spki:der") | Some("der") => binary(spki_der.clone()),
            Some(_) => Err(bad_format()),
        },
        (
            SecretMaterial::Certificate {
                der,
                chain,
                private_key_pkcs8_der,
            },
            f,
        ) => {
            let key = || {
                if private_key_pkcs8_der.is_empty() {
                    Err(SecretsError::InvalidValue {
                        secret: name.to_string(),
                        reason: "the certificate has no private key in this session".to_string(),
                    })
                } else {
                    Ok(private_key_pkcs8_der)
                }
            };
            match f {
                None | Some("crt") | Some("crt:pem") => Ok(pem_certs([der])),
                Some("crt:der") => binary(der.clone()),
                Some("privatekey") | Some("privatekey:pem") | Some("privatekey:pkcs8:pem") => {
                    Ok(pem_private_key(key()?))
                }
                Some("privatekey:der") | Some("privatekey:pkcs8:der") => binary(key()?.clone()),
                Some("chain") => Ok(pem_certs(chain)),
                Some("pkcs12-with-private-key") => {
                    binary(crate::pkcs12::pkcs12(name, der, chain, key()?)?)
                }
                Some(_) => Err(bad_format()),
            }
        }
        (SecretMaterial::Text(_) | SecretMaterial::Fragment(_), Some(_)) => Err(bad_format()),
    }
}
