//! The workload API between the launcher and the CAS's enclave port (TCP 18765, TLS; the
//! launcher presents a certificate for its ephemeral key). JSON bodies; errors are
//! `{"code": "<stable>", "msg": ["outer", "cause", …]}` (decision 6).
//!
//! Flow: `POST` [`NONCE_PATH`] → [`NonceResponse`]; the launcher makes evidence bound to
//! `ReportData::bind(nonce, SPKI of its client certificate)`; `POST` [`ATTEST_PATH`] with an
//! [`AttestRequest`] **on the same TLS connection** → [`ConfigResponse`]; while running,
//! `POST` [`TAGS_PATH`] with [`TagUpdateRequest`]s; at the end `POST` [`EXIT_PATH`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::binding::Nonce;
use crate::evidence::{Evidence, Tier};
use crate::time::UnixTime;

/// Default port of the workload API.
pub const WORKLOAD_PORT: u16 = 18765;
/// Issue a nonce. Body: [`NonceRequest`]. Answer: [`NonceResponse`].
pub const NONCE_PATH: &str = "/v1/workload/nonce";
/// Attest and fetch the configuration. Body: [`AttestRequest`]. Answer: [`ConfigResponse`].
pub const ATTEST_PATH: &str = "/v1/workload/attest";
/// Compare-and-swap a volume or code-region tag. Body: [`TagUpdateRequest`]. Answer: [`TagUpdateResponse`].
pub const TAGS_PATH: &str = "/v1/workload/tags";
/// Report the program's exit. Body: [`ExitRequest`]. Answer: empty JSON object.
pub const EXIT_PATH: &str = "/v1/workload/exit";
/// Renew the leases of an instance. Body: [`HeartbeatRequest`]. Answer: [`HeartbeatResponse`].
pub const HEARTBEAT_PATH: &str = "/v1/workload/heartbeat";

/// Ask for a nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NonceRequest {}

/// A fresh nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceResponse {
    /// 32 random bytes, hex.
    pub nonce: Nonce,
    /// When it stops being accepted (ms since the epoch, CAS clock).
    pub expires_at: UnixTime,
}

/// Attest and ask for a service's configuration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// `session/service[@otp]`.
    pub config_id: String,
    /// The tier the launcher attests in (must equal the evidence's).
    pub tier: Tier,
    /// The nonce the evidence is bound to.
    pub nonce: Nonce,
    /// The evidence.
    pub evidence: Evidence,
    /// `VEIL_SERVICE_ACCESS_TOKEN` / `SCONE_SERVICE_ACCESS_TOKEN`, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_access_token: Option<String>,
}

impl fmt::Debug for AttestRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The OTP part of the config id and the access token are secrets.
        let id = self.config_id.split('@').next().unwrap_or_default();
        f.debug_struct("AttestRequest")
            .field("config_id", &format_args!("{id}[@…]"))
            .field("tier", &self.tier)
            .field("nonce", &self.nonce)
            .field("evidence", &self.evidence)
            .field(
                "service_access_token",
                &self.service_access_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// File mode bits (`0o644` …), serialized as a number.
pub type Mode = u32;

/// A file the CAS places at `path` (placeholders already expanded).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionFile {
    /// Absolute path where the program sees the file.
    pub path: String,
    /// Its content (base64 on the wire).
    #[serde(with = "crate::b64")]
    pub content: Vec<u8>,
    /// Permission bits (default `0o600`).
    #[serde(default = "default_mode")]
    pub mode: Mode,
}

fn default_mode() -> Mode {
    0o600
}

impl fmt::Debug for InjectionFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InjectionFile")
            .field("path", &self.path)
            .field(
                "content",
                &format_args!("<{} bytes redacted>", self.content.len()),
            )
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// How a volume's or code region's tag may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdatePolicy {
    /// Every commit is recorded by compare-and-swap; older states are refused (default).
    RollbackProtected,
    /// Code region: may also go back to its initial tag.
    RollbackProtectedReinitializable,
    /// Changes are discarded at exit.
    Ephemeral,
    /// Tags are not checked.
    NoRollbackProtection,
}

/// The code region (SCONE's FSPF): an encrypted file tree the launcher verifies and exposes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRegion {
    /// `fspf_path`.
    pub fspf_path: String,
    /// `fspf_key`, 64 hex (secret).
    pub fspf_key: String,
    /// `fspf_tag`, 32 hex.
    #[serde(default)]
    pub fspf_tag: Option<String>,
    /// `fspf_update_policy`.
    pub update_policy: UpdatePolicy,
}

impl fmt::Debug for CodeRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeRegion")
            .field("fspf_path", &self.fspf_path)
            .field("fspf_key", &"<redacted>")
            .field("fspf_tag", &self.fspf_tag)
            .field("update_policy", &self.update_policy)
            .finish()
    }
}

/// A volume the program may use.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeGrant {
    /// The policy's volume name (backing store `$VEIL_VOLUMES_DIR/<name>`).
    pub name: String,
    /// Where the program sees the plaintext.
    pub path: String,
    /// The volume key, 64 hex (secret).
    pub key: String,
    /// The recorded tag (32 hex), `None` before first use.
    #[serde(default)]
    pub tag: Option<String>,
    /// The update policy.
    pub update_policy: UpdatePolicy,
}

impl fmt::Debug for VolumeGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VolumeGrant")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("key", &"<redacted>")
            .field("tag", &self.tag)
            .field("update_policy", &self.update_policy)
            .finish()
    }
}

/// What a successfully attested workload receives.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigResponse {
    /// The service's argv (`argv[0]` first), `@@N` not yet expanded (the launcher does it).
    pub argv: Vec<String>,
    /// The service's environment; keys `\@\@NAME` are expanded by the launcher from the host.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub pwd: Option<String>,
    /// Files to place.
    #[serde(default)]
    pub injection_files: Vec<InjectionFile>,
    /// The code region, if any.
    #[serde(default)]
    pub code_region: Option<CodeRegion>,
    /// Volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeGrant>,
    /// Token for tag updates and the exit report (secret).
    pub instance_token: String,
}

impl fmt::Debug for ConfigResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // argv and env values may carry expanded secrets: show only their shape.
        f.debug_struct("ConfigResponse")
            .field("argv", &format_args!("<{} args redacted>", self.argv.len()))
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("pwd", &self.pwd)
            .field("injection_files", &self.injection_files)
            .field("code_region", &self.code_region)
            .field("volumes", &self.volumes)
            .field("instance_token", &"<redacted>")
            .finish()
    }
}

/// Compare-and-swap of a tag: the CAS records `new_tag` only if it currently holds `old_tag`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagUpdateRequest {
    /// The instance token from [`ConfigResponse`].
    pub instance_token: String,
    /// Volume name, or the empty string for the code region.
    pub volume: String,
    /// The tag the launcher believes is recorded (`None` = first use).
    pub old_tag: Option<String>,
    /// The new tag.
    pub new_tag: String,
}

impl fmt::Debug for TagUpdateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TagUpdateRequest")
            .field("instance_token", &"<redacted>")
            .field("volume", &self.volume)
            .field("old_tag", &self.old_tag)
            .field("new_tag", &self.new_tag)
            .finish()
    }
}

/// Answer to a tag update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagUpdateResponse {
    /// The tag now recorded (equals the request's `new_tag`).
    pub tag: String,
}

/// The program has exited.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitRequest {
    /// The instance token.
    pub instance_token: String,
    /// Exit status (128 + signal number when killed by a signal).
    pub status: i32,
}

impl fmt::Debug for ExitRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExitRequest")
            .field("instance_token", &"<redacted>")
            .field("status", &self.status)
            .finish()
    }
}

/// Body of [`HEARTBEAT_PATH`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The instance token.
    pub instance_token: String,
}

impl fmt::Debug for HeartbeatRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeartbeatRequest { instance_token: <redacted> }")
    }
}

/// Answer of [`HEARTBEAT_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// How long the leases now live without another heartbeat.
    pub lease_ttl_ms: u64,
}

/// An error answer (decision 6): a stable code and the message chain, outermost first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub code: String,
    /// `["Attestation failed", "Unexpected enclave measurement …", …]`.
    pub msg: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::ReportData;
    use crate::evidence::SimEvidence;
    use crate::hash::Digest32;
    use crate::measure::Target;

    fn config() -> ConfigResponse {
        let mut env = BTreeMap::new();
        env.insert("SECRET_ENV".to_string(), "s3cr3t-value".to_string());
        ConfigResponse {
            argv: vec!["envcas".into(), "-c".into(), "s3cr3t-arg".into()],
            env,
            pwd: Some("/".into()),
            injection_files: vec![InjectionFile {
                path: "/etc/x".into(),
                content: b"s3cr3t-file\x00\xff".to_vec(),
                mode: 0o640,
            }],
            code_region: Some(CodeRegion {
                fspf_path: "/fspf/fs.fspf".into(),
                fspf_key: "ab".repeat(32),
                fspf_tag: Some("cd".repeat(16)),
                update_policy: UpdatePolicy::RollbackProtectedReinitializable,
            }),
            volumes: vec![VolumeGrant {
                name: "V1".into(),
                path: "/V1".into(),
                key: "ef".repeat(32),
                tag: None,
                update_policy: UpdatePolicy::RollbackProtected,
            }],
            instance_token: "tok-s3cr3t".into(),
        }
    }

    #[test]
    fn config_roundtrip_and_wire_shape() -> Result<(), serde_json::Error> {
        let c = config();
        let j = serde_json::to_value(&c)?;
        assert_eq!(j["injection_files"][0]["content"], "czNjcjN0LWZpbGUA/w==");
        assert_eq!(j["injection_files"][0]["mode"], 0o640);
        assert_eq!(j["volumes"][0]["update_policy"], "rollback_protected");
        assert_eq!(
            j["code_region"]["update_policy"],
            "rollback_protected_reinitializable"
        );
        let back: ConfigResponse = serde_json::from_value(j)?;
        assert_eq!(back, c);
        Ok(())
    }

    #[test]
    fn debug_never_shows_secrets() {
        let dbg = format!("{:?}", config());
        for secret in ["s3cr3t", &"ab".repeat(32), &"ef".repeat(32)] {
            assert!(!dbg.contains(secret), "{dbg}");
        }
        let req = AttestRequest {
            config_id: "sess/svc@123456".into(),
            tier: Tier::Sim,
            nonce: Nonce([1; 32]),
            evidence: Evidence::Sim(SimEvidence::new(
                Digest32::of(b"l"),
                Target::Envcas,
                ReportData([0; 64]),
            )),
            service_access_token: Some("tok-s3cr3t".into()),
        };
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("s3cr3t") && !dbg.contains("123456"), "{dbg}");
        let t = TagUpdateRequest {
            instance_token: "tok-s3cr3t".into(),
            volume: "V1".into(),
            old_tag: None,
            new_tag: "00".repeat(16),
        };
        assert!(!format!("{t:?}").contains("s3cr3t"));
        let e = ExitRequest {
            instance_token: "tok-s3cr3t".into(),
            status: 0,
        };
        assert!(!format!("{e:?}").contains("s3cr3t"));
    }

    #[test]
    fn attest_request_roundtrip_and_unknown_fields_refused() -> Result<(), serde_json::Error> {
        let req = AttestRequest {
            config_id: "s/svc".into(),
            tier: Tier::Sim,
            nonce: Nonce([9; 32]),
            evidence: Evidence::Sim(SimEvidence::new(
                Digest32::of(b"l"),
                Target::Program {
                    hash: Digest32::of(b"p"),
                },
                ReportData([3; 64]),
            )),
            service_access_token: None,
        };
        let mut j = serde_json::to_value(&req)?;
        assert_eq!(j["evidence"]["tier"], "sim");
        assert_eq!(j["evidence"]["target"]["kind"], "program");
        assert_eq!(serde_json::from_value::<AttestRequest>(j.clone())?, req);
        j["surprise"] = serde_json::json!(1);
        assert!(serde_json::from_value::<AttestRequest>(j).is_err());
        Ok(())
    }
}
