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
use veil_attest::{Evidence, Nonce, Tier, UnixTime};
use veil_types::{Key32, SecretSlice, SecretString, Tag, serde_secret};

/// Default port of the workload API.
pub const WORKLOAD_PORT: u16 = 18765;
/// Issue a nonce. Body: [`NonceRequest`]. Answer: [`NonceResponse`].
pub const NONCE_PATH: &str = "/v1/workload/nonce";
/// Attest and fetch the configuration. Body: [`AttestRequest`]. Answer: [`ConfigResponse`].
pub const ATTEST_PATH: &str = "/v1/workload/attest";
/// Compare-and-swap a volume or code-region tag. Body: [`TagUpdateRequest`]. Answer: [`TagUpdateResponse`].
pub const TAGS_PATH: &str = "/v1/workload/tags";
/// Report the program's exit. Body: [`ExitRequest`]. Answer: [`ExitResponse`].
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

/// A config id `session/service[@otp]` as the launcher sends it. The OTP part is a secret:
/// `Debug` shows only the part before `@`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConfigId(pub String);

impl fmt::Debug for ConfigId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.0.split('@').next().unwrap_or_default();
        write!(f, "ConfigId({id:?}[@…])")
    }
}

/// Attest and ask for a service's configuration.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// `session/service[@otp]`.
    pub config_id: ConfigId,
    /// The tier the launcher attests in (must equal the evidence's).
    pub tier: Tier,
    /// The nonce the evidence is bound to.
    pub nonce: Nonce,
    /// The evidence.
    pub evidence: Evidence,
    /// `VEIL_SERVICE_ACCESS_TOKEN` / `SCONE_SERVICE_ACCESS_TOKEN`, if set.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_secret::opt_string"
    )]
    pub service_access_token: Option<SecretString>,
}

/// File mode bits (`0o644` …), serialized as a number.
pub type Mode = u32;

/// A file the CAS places at `path` (placeholders already expanded).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionFile {
    /// Absolute path where the program sees the file.
    pub path: String,
    /// Its content (base64 on the wire; secret).
    #[serde(with = "serde_secret::bytes_b64")]
    pub content: SecretSlice<u8>,
    /// Permission bits (default `0o600`).
    #[serde(default = "default_mode")]
    pub mode: Mode,
}

fn default_mode() -> Mode {
    0o600
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRegion {
    /// `fspf_path`.
    pub fspf_path: String,
    /// `fspf_key` (secret; 64 hex on the wire).
    #[serde(with = "serde_secret::key32_hex")]
    pub fspf_key: Key32,
    /// `fspf_tag`.
    #[serde(default)]
    pub fspf_tag: Option<Tag>,
    /// `fspf_update_policy`.
    pub update_policy: UpdatePolicy,
}

/// A volume the program may use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeGrant {
    /// The policy's volume name (backing store `$VEIL_VOLUMES_DIR/<name>`).
    pub name: String,
    /// Where the program sees the plaintext.
    pub path: String,
    /// The volume key (secret; 64 hex on the wire).
    #[serde(with = "serde_secret::key32_hex")]
    pub key: Key32,
    /// The recorded tag, `None` before first use.
    #[serde(default)]
    pub tag: Option<Tag>,
    /// The update policy.
    pub update_policy: UpdatePolicy,
}

/// What a successfully attested workload receives. argv and env values may carry expanded
/// secrets, so they are secrets; env names are not.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigResponse {
    /// The service's argv (`argv[0]` first), `@@N` not yet expanded (the launcher does it).
    #[serde(with = "serde_secret::string_vec")]
    pub argv: Vec<SecretString>,
    /// The service's environment; keys `\@\@NAME` are expanded by the launcher from the host.
    #[serde(with = "serde_secret::string_map")]
    pub env: BTreeMap<String, SecretString>,
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
    #[serde(with = "serde_secret::string")]
    pub instance_token: SecretString,
}

/// Compare-and-swap of a tag: the CAS records `new_tag` only if it currently holds `old_tag`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagUpdateRequest {
    /// The instance token from [`ConfigResponse`].
    #[serde(with = "serde_secret::string")]
    pub instance_token: SecretString,
    /// Volume name, or the empty string for the code region.
    pub volume: String,
    /// The tag the launcher believes is recorded (`None` = first use).
    pub old_tag: Option<Tag>,
    /// The new tag.
    pub new_tag: Tag,
}

/// Answer to a tag update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagUpdateResponse {
    /// The tag now recorded (equals the request's `new_tag`).
    pub tag: Tag,
}

/// The program has exited.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitRequest {
    /// The instance token.
    #[serde(with = "serde_secret::string")]
    pub instance_token: SecretString,
    /// Exit status (128 + signal number when killed by a signal).
    pub status: i32,
}

/// Answer of [`EXIT_PATH`]: an empty object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExitResponse {}

/// Body of [`HEARTBEAT_PATH`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The instance token.
    #[serde(with = "serde_secret::string")]
    pub instance_token: SecretString,
}

/// Answer of [`HEARTBEAT_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// How long the leases now live without another heartbeat.
    pub lease_ttl_ms: u64,
}

#[cfg(test)]
mod tests {
    use veil_attest::{Digest32, ReportData, SimEvidence, Target};
    use veil_types::ExposeSecret;

    use super::*;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_string())
    }

    fn config() -> ConfigResponse {
        let mut env = BTreeMap::new();
        env.insert("SECRET_ENV".to_string(), s("s3cr3t-value"));
        ConfigResponse {
            argv: vec![s("envcas"), s("-c"), s("s3cr3t-arg")],
            env,
            pwd: Some("/".into()),
            injection_files: vec![InjectionFile {
                path: "/etc/x".into(),
                content: SecretSlice::from(b"s3cr3t-file\x00\xff".to_vec()),
                mode: 0o640,
            }],
            code_region: Some(CodeRegion {
                fspf_path: "/fspf/fs.fspf".into(),
                fspf_key: Key32::from_bytes([0xab; 32]),
                fspf_tag: Some(Tag([0xcd; 16])),
                update_policy: UpdatePolicy::RollbackProtectedReinitializable,
            }),
            volumes: vec![VolumeGrant {
                name: "V1".into(),
                path: "/V1".into(),
                key: Key32::from_bytes([0xef; 32]),
                tag: None,
                update_policy: UpdatePolicy::RollbackProtected,
            }],
            instance_token: s("tok-s3cr3t"),
        }
    }

    #[test]
    fn config_roundtrip_and_wire_shape() -> Result<(), serde_json::Error> {
        let c = config();
        let j = serde_json::to_value(&c)?;
        assert_eq!(j["injection_files"][0]["content"], "czNjcjN0LWZpbGUA/w==");
        assert_eq!(j["injection_files"][0]["mode"], 0o640);
        assert_eq!(j["volumes"][0]["update_policy"], "rollback_protected");
        assert_eq!(j["volumes"][0]["key"], "ef".repeat(32));
        assert_eq!(j["code_region"]["fspf_tag"], "cd".repeat(16));
        assert_eq!(j["env"]["SECRET_ENV"], "s3cr3t-value");
        assert_eq!(j["argv"][2], "s3cr3t-arg");
        assert_eq!(j["instance_token"], "tok-s3cr3t");
        assert_eq!(
            j["code_region"]["update_policy"],
            "rollback_protected_reinitializable"
        );
        let back: ConfigResponse = serde_json::from_value(j.clone())?;
        assert_eq!(serde_json::to_value(&back)?, j);
        assert_eq!(back.instance_token.expose_secret(), "tok-s3cr3t");
        Ok(())
    }

    #[test]
    fn debug_never_shows_secrets() {
        let dbg = format!("{:?}", config());
        for secret in ["s3cr3t", &"ab".repeat(32), &"ef".repeat(32), "czNjcjN0"] {
            assert!(!dbg.contains(secret), "{dbg}");
        }
        assert!(dbg.contains("SECRET_ENV") && dbg.contains("/V1"), "{dbg}");
        let req = AttestRequest {
            config_id: ConfigId("sess/svc@123456".into()),
            tier: Tier::Sim,
            nonce: Nonce([1; 32]),
            evidence: Evidence::Sim(SimEvidence::new(
                Digest32::of(b"l"),
                Target::Envcas,
                ReportData([0; 64]),
            )),
            service_access_token: Some(s("tok-s3cr3t")),
        };
        let dbg = format!("{req:?}");
        assert!(!dbg.contains("s3cr3t") && !dbg.contains("123456"), "{dbg}");
        assert!(dbg.contains("sess/svc"), "{dbg}");
        let t = TagUpdateRequest {
            instance_token: s("tok-s3cr3t"),
            volume: "V1".into(),
            old_tag: None,
            new_tag: Tag([0; 16]),
        };
        assert!(!format!("{t:?}").contains("s3cr3t"));
        let e = ExitRequest {
            instance_token: s("tok-s3cr3t"),
            status: 0,
        };
        assert!(!format!("{e:?}").contains("s3cr3t"));
        let h = HeartbeatRequest {
            instance_token: s("tok-s3cr3t"),
        };
        assert!(!format!("{h:?}").contains("s3cr3t"));
    }

    #[test]
    fn attest_request_roundtrip_and_unknown_fields_refused() -> Result<(), serde_json::Error> {
        let req = AttestRequest {
            config_id: ConfigId("s/svc".into()),
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
        assert!(j.get("service_access_token").is_none());
        let back = serde_json::from_value::<AttestRequest>(j.clone())?;
        assert_eq!(serde_json::to_value(&back)?, j);
        j["surprise"] = serde_json::json!(1);
        assert!(serde_json::from_value::<AttestRequest>(j).is_err());
        Ok(())
    }

    #[test]
    fn malformed_tags_and_keys_are_refused_at_parse() {
        let bad_tag = serde_json::json!({"instance_token": "t", "volume": "v", "old_tag": null, "new_tag": "xyz"});
        assert!(serde_json::from_value::<TagUpdateRequest>(bad_tag).is_err());
        let bad_key = serde_json::json!({"name": "v", "path": "/v", "key": "00", "tag": null, "update_policy": "ephemeral"});
        let e = serde_json::from_value::<VolumeGrant>(bad_key)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("32-byte key")));
    }
}
