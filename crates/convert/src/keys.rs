//! `--keys FILE`: the code-region key and the default namespace, so that a conversion can be
//! repeated with the same digests. The file is JSON (`{"fspf_key": "<64 hex>", "namespace":
//! "…"}`), written with mode 0600 when it does not exist yet; the key is never printed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use veil_shield::VolumeKey;

use crate::error::ConvertError;

/// Keys and ids of a conversion.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Keys {
    fspf_key: String,
    /// The namespace used when `--namespace` is not given.
    pub namespace: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn bad(path: &Path, why: impl std::fmt::Display) -> ConvertError {
    ConvertError::Flag {
        flag: format!("--keys {}", path.display()),
        why: why.to_string(),
    }
}

impl Keys {
    /// Fresh random keys and a random namespace (`veil-<16 hex>`).
    pub fn generate() -> Result<Self, ConvertError> {
        let key = VolumeKey::generate()?;
        let ns = VolumeKey::generate()?;
        Ok(Self {
            fspf_key: key.to_hex(),
            namespace: format!("veil-{}", ns.to_hex().get(..16).unwrap_or_default()),
        })
    }

    /// The code-region key.
    pub fn fspf_key(&self) -> Result<VolumeKey, ConvertError> {
        Ok(VolumeKey::from_hex(&self.fspf_key)?)
    }

    /// Read `path`, or create it with fresh keys when it does not exist. Returns the keys and
    /// whether the file was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), ConvertError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let k: Keys = serde_json::from_str(&text).map_err(|e| bad(path, e))?;
                VolumeKey::from_hex(&k.fspf_key)
                    .map_err(|_| bad(path, "fspf_key is not 64 hex digits"))?;
                veil_policy::check_item_name(&k.namespace)
                    .map_err(|e| bad(path, format!("namespace: {e}")))?;
                Ok((k, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = Self::generate()?;
                let text = serde_json::to_string_pretty(&k).map_err(|e| bad(path, e))?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| bad(path, e))?;
                f.write_all(text.as_bytes()).map_err(|e| bad(path, e))?;
                Ok((k, true))
            }
            Err(e) => Err(bad(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_then_read_back_and_never_debug_printed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keys.json");
        let (a, created) = Keys::load_or_create(&p).unwrap();
        assert!(created);
        let (b, created) = Keys::load_or_create(&p).unwrap();
        assert!(!created);
        assert_eq!(
            a.fspf_key().unwrap().to_hex(),
            b.fspf_key().unwrap().to_hex()
        );
        assert_eq!(a.namespace, b.namespace);
        assert!(!format!("{a:?}").contains(&a.fspf_key().unwrap().to_hex()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&p, r#"{"fspf_key":"zz","namespace":"n"}"#).unwrap();
        let e = Keys::load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("fspf_key is not 64 hex digits"), "{e}");
    }
}
