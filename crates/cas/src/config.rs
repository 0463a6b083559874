//! `cas.toml`: the availability configuration (operator-controlled, not security-sensitive).
//!
//! ```toml
//! data_dir = "/var/lib/veil/cas"
//! [database]
//! key_file = "/run/secrets/cas-db-key"   # 64 hex characters
//! [api]
//! api_listen = "0.0.0.0:8081"
//! enclave_listen = "0.0.0.0:18765"
//! [identity]
//! alt_names = ["cas", "localhost", "127.0.0.1"]
//! [owner]
//! key_hashes = ["<64 hex>"]
//! [attestation]
//! allow_sim = false                      # accept `sim` evidence (decision 1)
//! ```
//! Unknown keys are errors. Command-line flags override the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::CasError;

/// The parsed file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// `[database]`.
    #[serde(default)]
    pub database: Database,
    /// `[api]`.
    #[serde(default)]
    pub api: Api,
    /// `[identity]`.
    #[serde(default)]
    pub identity: IdentityCfg,
    /// `[owner]`.
    #[serde(default)]
    pub owner: Owner,
    /// `[attestation]`.
    #[serde(default)]
    pub attestation: AttestationCfg,
}

/// `[attestation]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationCfg {
    /// Accept `sim` evidence from policies that tolerate `debug-mode` (default off).
    #[serde(default)]
    pub allow_sim: bool,
}

/// `[database]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// DB key file.
    pub key_file: Option<PathBuf>,
}

/// `[api]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Client API address.
    pub api_listen: Option<std::net::SocketAddr>,
    /// Enclave API address.
    pub enclave_listen: Option<std::net::SocketAddr>,
}

/// `[identity]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityCfg {
    /// SANs of the CAS certificate.
    pub alt_names: Option<Vec<String>>,
}

/// `[owner]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// Owner key hashes.
    #[serde(default)]
    pub key_hashes: Vec<String>,
}

impl CasConfig {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<Self, CasError> {
        let text = std::fs::read_to_string(path).map_err(|source| CasError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parse config text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Self, CasError> {
        let cfg: Self =
            toml::from_str(text).map_err(|e| CasError::Config(format!("{origin}: {e}")))?;
        for h in &cfg.owner.key_hashes {
            if !veil_identity::is_key_hash(h) {
                return Err(CasError::Config(format!(
                    "{origin}: owner.key_hashes: `{h}` is not a key hash (64 lowercase hex)"
                )));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_unknown_keys() {
        let c = CasConfig::parse(
            "t",
            "data_dir = \"/x\"\n[api]\napi_listen = \"127.0.0.1:0\"\n[owner]\nkey_hashes = []\n",
        )
        .unwrap();
        assert_eq!(c.data_dir.as_deref(), Some(Path::new("/x")));
        assert!(CasConfig::parse("t", "[api]\nfoo = 1\n").is_err());
        assert!(CasConfig::parse("t", "[owner]\nkey_hashes = [\"nope\"]\n").is_err());
    }
}
