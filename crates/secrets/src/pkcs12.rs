//! `:pkcs12-with-private-key`: a PKCS#12 archive (DER, empty password) of a certificate, its
//! issuing chain and its private key, written with the `p12-keystore` crate (PBES2 with
//! AES-256-CBC and HMAC-SHA-256 key derivation, HMAC-SHA-256 MAC).

use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};

use crate::SecretsError;

/// The alias of the entry in the archive.
pub const ALIAS: &str = "veil";

/// A PKCS#12 archive (DER, empty password) of `cert`, `chain` (issuer to root) and the
/// PKCS#8 key.
pub fn pkcs12(
    name: &str,
    cert: &[u8],
    chain: &[Vec<u8>],
    key_pkcs8: &[u8],
) -> Result<Vec<u8>, SecretsError> {
    let err = |what: &str| SecretsError::Crypto {
        secret: name.to_string(),
        what: format!("cannot build the PKCS#12 archive: {what}"),
    };
    let key = PrivateKey::from_der(key_pkcs8).map_err(|_| err("the private key"))?;
    let mut certs = Vec::with_capacity(chain.len() + 1);
    certs.push(Certificate::from_der(cert).map_err(|_| err("the certificate"))?);
    for c in chain {
        certs.push(Certificate::from_der(c).map_err(|_| err("a chain certificate"))?);
    }
    // The local key id ties the key to its certificate: the certificate's SHA-256.
    let id = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert);
    let entry = PrivateKeyChain::new(id.as_ref().to_vec(), key, certs);
    let mut ks = KeyStore::new();
    ks.add_entry(ALIAS, KeyStoreEntry::PrivateKeyChain(entry));
    ks.writer("").write().map_err(|_| err("encoding failed"))
}
