//! `:pkcs12-with-private-key`: a PKCS#12 archive of a certificate, its chain and its key.

use crate::SecretsError;

/// A PKCS#12 archive (DER, empty password) of `cert`, `chain` and the PKCS#8 key.
pub fn pkcs12(
    name: &str,
    _cert: &[u8],
    _chain: &[Vec<u8>],
    _key_pkcs8: &[u8],
) -> Result<Vec<u8>, SecretsError> {
    Err(SecretsError::NotSupported {
        secret: name.to_string(),
        what: "the format `:pkcs12-with-private-key`".to_string(),
    })
}
