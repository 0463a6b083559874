//! The CLI's side of the client: the pinned CAS keys in `~/.veil/config.json`
//! (`-c/--config`, `VEIL_CLI_CONFIG` or SCONE's `SCONE_CLI_CONFIG`) and the client identity
//! (`~/.veil/identity.pem`, `VEIL_IDENTITY`, created on first use).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use veil_identity::Identity;

use crate::{ClientError, DEFAULT_PORT};

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The identity file: `explicit`, else `VEIL_IDENTITY`, else `~/.veil/identity.pem`.
pub fn identity_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os("VEIL_IDENTITY") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => home().join(".veil/identity.pem"),
    }
}

/// Load the client identity, creating it on first use.
pub fn load_identity(explicit: Option<&Path>) -> Result<Identity, ClientError> {
    Ok(Identity::load_or_create(
        &identity_path(explicit),
        "veil cli",
    )?)
}

static CONFIG_OVERRIDE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Use `path` as the client config for the rest of this process (the CLI's global
/// `-c/--config FILE`); it wins over the environment. Only the first call counts.
pub fn set_config_path(path: PathBuf) {
    let _ = CONFIG_OVERRIDE.set(path);
}

/// The client config file: the `-c/--config` path ([`set_config_path`]), else
/// `VEIL_CLI_CONFIG` or `SCONE_CLI_CONFIG` (both set to different values is an error, decision
/// 18), else `~/.veil/config.json`.
pub fn config_path() -> Result<PathBuf, ClientError> {
    if let Some(p) = CONFIG_OVERRIDE.get() {
        return Ok(p.clone());
    }
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    match (var("VEIL_CLI_CONFIG"), var("SCONE_CLI_CONFIG")) {
        (Some(v), Some(s)) if v != s => Err(ClientError::Config {
            path: PathBuf::from(&v).display().to_string(),
            msg: format!(
                "VEIL_CLI_CONFIG and SCONE_CLI_CONFIG are both set, to different values ({} and {})",
                PathBuf::from(&v).display(),
                PathBuf::from(&s).display()
            ),
        }),
        (Some(p), _) | (None, Some(p)) => Ok(PathBuf::from(p)),
        (None, None) => Ok(home().join(".veil/config.json")),
    }
}

/// One pinned CAS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PinnedCas {
    /// `host:port` of the client API.
    pub address: String,
    /// The pinned key hash.
    pub key_hash: String,
}

/// The client config: pinned CAS keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// The default CAS name.
    #[serde(default)]
    pub default: Option<String>,
    /// Pinned CASes by name.
    #[serde(default)]
    pub cas: BTreeMap<String, PinnedCas>,
}

/// `host:port` for a CAS address given as `host` or `host:port`.
pub fn with_default_port(addr: &str) -> String {
    let addr = addr.trim_start_matches("https://").trim_end_matches('/');
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return addr.to_string();
    }
    if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{addr}]:{DEFAULT_PORT}");
    }
    match addr.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => addr.to_string(),
        _ => format!("{addr}:{DEFAULT_PORT}"),
    }
}

impl CliConfig {
    /// Load `path` (missing file = empty config).
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(ClientError::Config {
                    path: path.display().to_string(),
                    msg: e.to_string(),
                });
            }
        };
        serde_json::from_str(&text).map_err(|e| ClientError::Config {
            path: path.display().to_string(),
            msg: format!("invalid client config: {e}"),
        })
    }

    /// Save to `path` (mode 0600, atomic).
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ClientError::Config {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        veil_identity::write_private_file(path, text.as_bytes())?;
        Ok(())
    }

    /// Pin `name` at `address` with `key_hash`; the first pinned CAS becomes the default.
    pub fn pin(&mut self, name: &str, address: &str, key_hash: &str) {
        self.cas.insert(
            name.to_string(),
            PinnedCas {
                address: address.to_string(),
                key_hash: key_hash.to_string(),
            },
        );
        if self.default.is_none() {
            self.default = Some(name.to_string());
        }
    }

    /// The pinned CAS `name` (or the default when `None`).
    pub fn get(&self, name: Option<&str>) -> Result<(String, PinnedCas), ClientError> {
        let name = match name {
            Some(n) => n.to_string(),
            None => self.default.clone().ok_or(ClientError::NoDefault)?,
        };
        if let Some(p) = self.cas.get(&name) {
            return Ok((name, p.clone()));
        }
        // Also accept the address (with or without the default port) of a pinned CAS.
        let full = with_default_port(&name);
        self.cas
            .iter()
            .find(|(_, p)| p.address == full)
            .map(|(n, p)| (n.clone(), p.clone()))
            .ok_or(ClientError::Unpinned(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_pins_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c/config.json");
        let mut c = CliConfig::load(&p).unwrap();
        assert!(matches!(c.get(None), Err(ClientError::NoDefault)));
        c.pin("a", "127.0.0.1:8081", &"a".repeat(64));
        c.pin("b", "10.0.0.1:8081", &"b".repeat(64));
        c.save(&p).unwrap();
        let c = CliConfig::load(&p).unwrap();
        assert_eq!(c.default.as_deref(), Some("a"));
        assert_eq!(c.get(Some("10.0.0.1")).unwrap().0, "b");
        assert!(matches!(c.get(Some("x")), Err(ClientError::Unpinned(_))));
    }

    #[test]
    fn ports() {
        assert_eq!(with_default_port("cas"), "cas:8081");
        assert_eq!(with_default_port("cas:9"), "cas:9");
        assert_eq!(with_default_port("127.0.0.1:5"), "127.0.0.1:5");
        assert_eq!(with_default_port("::1"), "[::1]:8081");
    }
}
