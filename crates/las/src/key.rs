//! The node key: ECDSA P-256, PKCS#8 in `<data dir>/node-key.pk8` (mode 0600), created on first
//! start. Its key hash (decision 7) is what the CAS owner registers.

use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

use crate::LasError;

/// File name of the node key inside the data dir.
pub const KEY_FILE: &str = "node-key.pk8";

/// The node's signing key. `Debug` shows only the key hash.
pub struct NodeKey {
    pair: EcdsaKeyPair,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("key_hash", &self.key_hash())
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// Load the key from `data_dir`, creating it (and the dir) if absent.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, LasError> {
        let path: PathBuf = data_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Self::from_pkcs8(&bytes).map_err(|_| LasError::BadKey {
                path: path.display().to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = EcdsaKeyPair::generate_pkcs8(
                    &ECDSA_P256_SHA256_ASN1_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| LasError::Crypto("node key generation"))?;
                veil_identity::write_private_file(&path, doc.as_ref()).map_err(|e| {
                    LasError::io(
                        format!("writing {}", path.display()),
                        std::io::Error::other(e.to_string()),
                    )
                })?;
                Self::from_pkcs8(doc.as_ref()).map_err(|_| LasError::Crypto("node key load"))
            }
            Err(e) => Err(LasError::io(format!("reading {}", path.display()), e)),
        }
    }

    fn from_pkcs8(bytes: &[u8]) -> Result<Self, ()> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, bytes).map_err(|_| ())?;
        let spki_der = pair
            .public_key()
            .as_der()
            .map_err(|_| ())?
            .as_ref()
            .to_vec();
        Ok(Self { pair, spki_der })
    }

    /// DER SubjectPublicKeyInfo of the public key.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The key hash (lowercase hex SHA-256 of the SPKI).
    pub fn key_hash(&self) -> String {
        veil_identity::key_hash(&self.spki_der)
    }

    /// ECDSA P-256 / SHA-256 signature (ASN.1 DER) over `msg`.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, LasError> {
        self.pair
            .sign(&SystemRandom::new(), msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| LasError::Crypto("signing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() -> Result<(), LasError> {
        let dir = tempfile::tempdir().map_err(|e| LasError::io("tempdir", e))?;
        let a = NodeKey::load_or_create(dir.path())?;
        let b = NodeKey::load_or_create(dir.path())?;
        assert_eq!(a.key_hash(), b.key_hash());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(KEY_FILE))
                .map_err(|e| LasError::io("stat", e))?
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(KEY_FILE), b"junk").map_err(|e| LasError::io("w", e))?;
        assert!(matches!(
            NodeKey::load_or_create(dir.path()),
            Err(LasError::BadKey { .. })
        ));
        Ok(())
    }
}
