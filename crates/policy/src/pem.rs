//! PEM checks for keys and certificates in policies (via `x509-parser`).

use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

fn one_pem(s: &str, label: &str) -> Result<Vec<u8>, String> {
    let (rest, pem) = x509_parser::pem::parse_x509_pem(s.trim().as_bytes())
        .map_err(|_| format!("expected a PEM `{label}` block"))?;
    if pem.label != label {
        return Err(format!(
            "expected a PEM `{label}` block, found `{}`",
            crate::convert::clip(&pem.label)
        ));
    }
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("expected exactly one PEM `{label}` block"));
    }
    Ok(pem.contents)
}

/// DER SubjectPublicKeyInfo of a PEM certificate.
pub fn spki_from_certificate_pem(s: &str) -> Result<Vec<u8>, String> {
    let der = one_pem(s, "CERTIFICATE")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("invalid X.509 certificate: {e}"))?;
    Ok(cert.public_key().raw.to_vec())
}

/// DER of a PEM SubjectPublicKeyInfo (`PUBLIC KEY`), checked.
pub fn spki_from_public_key_pem(s: &str) -> Result<Vec<u8>, String> {
    let der = one_pem(s, "PUBLIC KEY")?;
    SubjectPublicKeyInfo::from_der(&der)
        .map_err(|e| format!("invalid public key: {e}"))
        .map(|_| der.clone())
}

/// Check a PEM PKCS#8 private key (`PRIVATE KEY`) has the right envelope.
pub fn check_private_key_pem(s: &str) -> Result<(), String> {
    one_pem(s, "PRIVATE KEY").map(|_| ())
}
