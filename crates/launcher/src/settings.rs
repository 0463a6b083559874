//! The launcher's environment (design notes: names table, decisions 1, 7, 18).
//!
//! Every setting has a `VEIL_` and a `SCONE_` spelling; both set to different values is fatal.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::LauncherError;

/// File baked into converted images holding the CAS key hash (authoritative when present).
pub const CAS_KEY_HASH_FILE: &str = "/etc/veil/cas-key-hash";
/// Default CAS host.
pub const DEFAULT_CAS_HOST: &str = "cas";

/// Which tier to attest in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Self-reported (`sim`).
    Sim,
    /// LAS-signed (`node`); never falls back to `sim`.
    Node,
    /// `node` when the LAS socket is reachable, else `sim`.
    Auto,
}

/// Parsed launcher settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// `session/service[@otp]`.
    pub config_id: Option<String>,
    /// `host:port` of the CAS workload API.
    pub cas_addr: String,
    /// `host:port` of the LAS (informational; evidence goes over the socket).
    pub las_addr: String,
    /// The LAS evidence socket.
    pub las_socket: PathBuf,
    /// Tier selection.
    pub mode: Mode,
    /// Print the measurement and exit.
    pub hash: bool,
    /// Service access token.
    pub service_access_token: Option<String>,
    /// `VEIL_CAS_KEY_HASH` (only used when no file is baked).
    pub cas_key_hash_env: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field(
                "config_id",
                &self
                    .config_id
                    .as_deref()
                    .map(|c| c.split('@').next().unwrap_or_default()),
            )
            .field("cas_addr", &self.cas_addr)
            .field("las_addr", &self.las_addr)
            .field("las_socket", &self.las_socket)
            .field("mode", &self.mode)
            .field("hash", &self.hash)
            .field(
                "service_access_token",
                &self.service_access_token.as_ref().map(|_| "<redacted>"),
            )
            .field("cas_key_hash_env", &self.cas_key_hash_env)
            .finish()
    }
}

/// Read `name` as `VEIL_<name>` / `SCONE_<name>` (decision 18).
pub fn pair(env: &BTreeMap<String, String>, name: &str) -> Result<Option<String>, LauncherError> {
    let v = env.get(&format!("VEIL_{name}")).filter(|s| !s.is_empty());
    let s = env.get(&format!("SCONE_{name}")).filter(|s| !s.is_empty());
    match (v, s) {
        (Some(a), Some(b)) if a != b => Err(LauncherError::new(format!(
            "VEIL_{name} and SCONE_{name} are both set, to different values"
        ))),
        (Some(a), _) => Ok(Some(a.clone())),
        (None, b) => Ok(b.cloned()),
    }
}

fn with_port(addr: &str, port: u16) -> String {
    let has_port = if let Some(rest) = addr.strip_prefix('[') {
        rest.contains("]:")
    } else {
        addr.matches(':').count() == 1
    };
    if has_port {
        addr.to_string()
    } else if addr.contains(':') && !addr.starts_with('[') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

impl Settings {
    /// Settings from an environment map.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self, LauncherError> {
        let mode = match pair(env, "MODE")?
            .map(|m| m.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("auto") => Mode::Auto,
            Some("sim") => Mode::Sim,
            Some("node") | Some("hw") => Mode::Node,
            Some(other) => {
                return Err(LauncherError::new(format!(
                    "VEIL_MODE/SCONE_MODE `{other}` is not one of sim, node, auto"
                )));
            }
        };
        let hash = match pair(env, "HASH")?.as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(LauncherError::new(format!(
                    "VEIL_HASH/SCONE_HASH `{other}` must be 1 or 0"
                )));
            }
        };
        let las_socket = env
            .get("VEIL_LAS_SOCKET")
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| veil_api::las::DEFAULT_SOCKET.to_string());
        Ok(Self {
            config_id: pair(env, "CONFIG_ID")?,
            cas_addr: with_port(
                &pair(env, "CAS_ADDR")?.unwrap_or_else(|| DEFAULT_CAS_HOST.into()),
                veil_api::workload::WORKLOAD_PORT,
            ),
            las_addr: with_port(
                &pair(env, "LAS_ADDR")?.unwrap_or_else(|| "las".into()),
                18766,
            ),
            las_socket: PathBuf::from(las_socket),
            mode,
            hash,
            service_access_token: pair(env, "SERVICE_ACCESS_TOKEN")?,
            cas_key_hash_env: env
                .get("VEIL_CAS_KEY_HASH")
                .filter(|s| !s.is_empty())
                .cloned(),
        })
    }
}

/// The CAS key hash to pin (decision 7): the baked file is authoritative; a different
/// `VEIL_CAS_KEY_HASH` is fatal; the env var alone is used with a warning; nothing is fatal.
/// Returns the hash and an optional warning.
pub fn resolve_cas_key_hash(
    file: Option<&str>,
    env: Option<&str>,
) -> Result<(String, Option<String>), LauncherError> {
    let check = |h: &str, origin: &str| {
        if veil_identity::is_key_hash(h) {
            Ok(())
        } else {
            Err(LauncherError::new(format!(
                "{origin}: `{}` is not a CAS key hash (64 lowercase hex characters)",
                h.chars().take(80).collect::<String>()
            )))
        }
    };
    match (file.map(str::trim), env.map(str::trim)) {
        (Some(f), e) => {
            check(f, CAS_KEY_HASH_FILE)?;
            if let Some(e) = e
                && e != f
            {
                return Err(LauncherError::new(format!(
                    "VEIL_CAS_KEY_HASH differs from the CAS key hash in {CAS_KEY_HASH_FILE}"
                )));
            }
            Ok((f.to_string(), None))
        }
        (None, Some(e)) => {
            check(e, "VEIL_CAS_KEY_HASH")?;
            Ok((
                e.to_string(),
                Some(format!(
                    "using the CAS key hash from VEIL_CAS_KEY_HASH ({CAS_KEY_HASH_FILE} is absent)"
                )),
            ))
        }
        (None, None) => Err(LauncherError::new(format!(
            "No CAS key hash: set VEIL_CAS_KEY_HASH or bake {CAS_KEY_HASH_FILE} into the image (the launcher never trusts a CAS on first use)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() -> Result<(), LauncherError> {
        let s = Settings::from_env(&env(&[]))?;
        assert_eq!(s.config_id, None);
        assert_eq!(s.cas_addr, "cas:18765");
        assert_eq!(s.las_addr, "las:18766");
        assert_eq!(s.las_socket, PathBuf::from("/run/veil/las.sock"));
        assert_eq!(s.mode, Mode::Auto);
        assert!(!s.hash);
        Ok(())
    }

    #[test]
    fn table() {
        type Case<'a> = (
            Vec<(&'a str, &'a str)>,
            Result<(&'a str, Mode, bool, &'a str), &'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                vec![("SCONE_CONFIG_ID", "s/a")],
                Ok(("s/a", Mode::Auto, false, "cas:18765")),
            ),
            (
                vec![("VEIL_CONFIG_ID", "s/a"), ("SCONE_CONFIG_ID", "s/a")],
                Ok(("s/a", Mode::Auto, false, "cas:18765")),
            ),
            (
                vec![("VEIL_CONFIG_ID", "s/a"), ("SCONE_CONFIG_ID", "s/b")],
                Err("VEIL_CONFIG_ID and SCONE_CONFIG_ID"),
            ),
            (
                vec![("VEIL_CONFIG_ID", "s/a"), ("SCONE_MODE", "sim")],
                Ok(("s/a", Mode::Sim, false, "cas:18765")),
            ),
            (
                vec![("VEIL_CONFIG_ID", "s/a"), ("VEIL_MODE", "NODE")],
                Ok(("s/a", Mode::Node, false, "cas:18765")),
            ),
            (
                vec![("VEIL_CONFIG_ID", "s/a"), ("VEIL_MODE", "hw")],
                Ok(("s/a", Mode::Node, false, "cas:18765")),
            ),
            (
                vec![("VEIL_MODE", "fast")],
                Err("is not one of sim, node, auto"),
            ),
            (
                vec![("VEIL_CONFIG_ID", "s/a"), ("SCONE_HASH", "1")],
                Ok(("s/a", Mode::Auto, true, "cas:18765")),
            ),
            (
                vec![("VEIL_HASH", "1"), ("SCONE_HASH", "0")],
                Err("VEIL_HASH and SCONE_HASH"),
            ),
            (
                vec![
                    ("VEIL_CONFIG_ID", "s/a"),
                    ("SCONE_CAS_ADDR", "127.0.0.1:4000"),
                ],
                Ok(("s/a", Mode::Auto, false, "127.0.0.1:4000")),
            ),
            (
                vec![("VEIL_CONFIG_ID", "s/a"), ("SCONE_CAS_ADDR", "10.0.0.1")],
                Ok(("s/a", Mode::Auto, false, "10.0.0.1:18765")),
            ),
            (
                vec![("VEIL_CONFIG_ID", "s/a"), ("VEIL_CAS_ADDR", "::1")],
                Ok(("s/a", Mode::Auto, false, "[::1]:18765")),
            ),
            (
                vec![("VEIL_CAS_ADDR", "a"), ("SCONE_CAS_ADDR", "b")],
                Err("VEIL_CAS_ADDR and SCONE_CAS_ADDR"),
            ),
            (
                vec![
                    ("VEIL_SERVICE_ACCESS_TOKEN", "x"),
                    ("SCONE_SERVICE_ACCESS_TOKEN", "y"),
                ],
                Err("VEIL_SERVICE_ACCESS_TOKEN"),
            ),
        ];
        for (e, want) in cases {
            let got = Settings::from_env(&env(&e));
            match (got, want) {
                (Ok(s), Ok((id, mode, hash, cas))) => {
                    assert_eq!(
                        s.config_id.as_deref(),
                        Some(id).filter(|_| e.iter().any(|(k, _)| k.ends_with("CONFIG_ID"))),
                        "{e:?}"
                    );
                    assert_eq!(
                        (s.mode, s.hash, s.cas_addr.as_str()),
                        (mode, hash, cas),
                        "{e:?}"
                    );
                }
                (Err(err), Err(msg)) => assert!(err.to_string().contains(msg), "{e:?}: {err}"),
                (got, _) => panic!("{e:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn cas_key_hash_rules() {
        let h = "a".repeat(64);
        let h2 = "b".repeat(64);
        assert_eq!(resolve_cas_key_hash(Some(&h), None), Ok((h.clone(), None)));
        assert_eq!(
            resolve_cas_key_hash(Some(&format!("{h}\n")), Some(&h)),
            Ok((h.clone(), None))
        );
        assert!(resolve_cas_key_hash(Some(&h), Some(&h2)).is_err());
        let (got, warn) = resolve_cas_key_hash(None, Some(&h2)).unwrap_or_default();
        assert_eq!(got, h2);
        assert!(warn.is_some());
        assert!(resolve_cas_key_hash(None, None).is_err());
        assert!(resolve_cas_key_hash(None, Some("xyz")).is_err());
        assert!(resolve_cas_key_hash(Some("XYZ"), None).is_err());
    }

    #[test]
    fn debug_hides_otp_and_token() {
        let s = Settings::from_env(&env(&[
            ("VEIL_CONFIG_ID", "s/a@123456"),
            ("VEIL_SERVICE_ACCESS_TOKEN", "tok-secret"),
        ]));
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("123456") && !dbg.contains("tok-secret"),
            "{dbg}"
        );
    }
}
