//! From a stored session and its secret values to what the workload API checks and returns:
//! the tier policy, the reference values, the OTP secret, the service access token and the
//! configuration plan (argv, environment, pwd, injection files, code region, volumes). Pure:
//! no store, no clock.

use std::collections::BTreeMap;

use veil_api::workload::{InjectionFile, UpdatePolicy};
use veil_attest::{
    AttestationMode, Digest32, FactorSet, ReferenceValues, SignerFactor, TierPolicy,
};
use veil_policy::{Service, Session};
use veil_secrets::{Context, SecretValues};

/// Default mode of an injection file without `permission` (the policy's documented default).
pub const DEFAULT_INJECTION_MODE: u32 = 0o700;

/// Why a session cannot be turned into a configuration. Messages name fields and secrets,
/// never values.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Placeholder expansion failed in a field.
    #[error("{field}: {source}")]
    Expand {
        /// Field path, e.g. `services[web].command[1]`.
        field: String,
        /// The cause (names the secret, not its value).
        source: veil_secrets::SecretsError,
    },
    /// A field's (expanded) value is not valid.
    #[error("{field}: {msg}")]
    Invalid {
        /// Field path.
        field: String,
        /// What is wrong.
        msg: String,
    },
    /// Something the workload API does not support yet.
    #[error("{0} is not supported yet")]
    NotSupported(String),
}

fn expand(
    field: impl Fn() -> String,
    text: &str,
    values: &SecretValues,
    ctx: Context,
) -> Result<String, BuildError> {
    veil_secrets::expand_to_string(text, values, ctx).map_err(|source| BuildError::Expand {
        field: field(),
        source,
    })
}

/// The service named `name`.
pub fn find_service<'a>(session: &'a Session, name: &str) -> Option<&'a Service> {
    session.services.iter().find(|s| s.name == name)
}

/// The tier-relevant part of `security.attestation` (default: `mode: hardware`, nothing
/// tolerated).
pub fn tier_policy(session: &Session) -> TierPolicy {
    let a = session.security.attestation.as_ref();
    TierPolicy {
        mode: match a.map(|a| a.mode) {
            Some(veil_policy::AttestationMode::None_) => AttestationMode::None,
            _ => AttestationMode::Hardware,
        },
        tolerates_debug_mode: a.is_some_and(|a| a.tolerate.iter().any(|t| t == "debug-mode")),
    }
}

/// The service's attestation factors (`mode: none` skips them).
pub fn reference_values(
    session: &Session,
    service: &Service,
    values: &SecretValues,
) -> Result<ReferenceValues, BuildError> {
    if tier_policy(session).mode == AttestationMode::None {
        return Ok(ReferenceValues::skip());
    }
    let mut variants = Vec::with_capacity(service.attestation.len());
    for (i, v) in service.attestation.iter().enumerate() {
        let base = format!("services[{}].attestation[{i}]", service.name);
        let mut set = FactorSet::default();
        for (j, m) in v.mrenclave.iter().enumerate() {
            let field = || format!("{base}.mrenclave[{j}]");
            let text = expand(field, m, values, Context::Config)?;
            let d: Digest32 =
                text.parse()
                    .map_err(|e: veil_types::HexError| BuildError::Invalid {
                        field: field(),
                        msg: e.to_string(),
                    })?;
            set.mrenclave.push(d.into());
        }
        if let Some(s) = &v.signer {
            let field = format!("{base}.signer");
            let bad = |msg: String| BuildError::Invalid {
                field: field.clone(),
                msg,
            };
            let mrsigner: Digest32 = s
                .mrsigner
                .parse()
                .map_err(|e: veil_types::HexError| bad(e.to_string()))?;
            let u16of = |what: &str, x: u64| {
                u16::try_from(x).map_err(|_| bad(format!("{what} {x} is larger than 65535")))
            };
            let isvprodid = u16of("isvprodid", s.isvprodid)?;
            let (min, max) = match s.isvsvn {
                Some(exact) => {
                    let e = u16of("isvsvn", exact)?;
                    (Some(e), Some(e))
                }
                None => (
                    s.isvsvn_min.map(|m| u16of("isvsvn_min", m)).transpose()?,
                    s.isvsvn_max.map(|m| u16of("isvsvn_max", m)).transpose()?,
                ),
            };
            set.signer = Some(SignerFactor {
                mrsigner,
                isvprodid,
                isvsvn_min: min,
                isvsvn_max: max,
            });
        }
        variants.push(set);
    }
    Ok(ReferenceValues::from_policy(variants, Vec::new()))
}

/// The OTP shared secret in force (service level overrides `security.attestation`), expanded.
pub fn otp_secret(
    session: &Session,
    service: &Service,
    values: &SecretValues,
) -> Result<Option<String>, BuildError> {
    let (field, raw) = match (
        &service.one_time_password_shared_secret,
        session
            .security
            .attestation
            .as_ref()
            .and_then(|a| a.one_time_password_shared_secret.as_ref()),
    ) {
        (Some(s), _) => (
            format!("services[{}].one_time_password_shared_secret", service.name),
            s,
        ),
        (None, Some(s)) => (
            "security.attestation.one_time_password_shared_secret".to_string(),
            s,
        ),
        (None, None) => return Ok(None),
    };
    expand(|| field.clone(), raw, values, Context::Config).map(Some)
}

/// `security.service_access_token`, expanded.
pub fn access_token(
    session: &Session,
    values: &SecretValues,
) -> Result<Option<String>, BuildError> {
    session
        .security
        .service_access_token
        .as_ref()
        .map(|t| {
            expand(
                || "security.service_access_token".to_string(),
                t,
                values,
                Context::Config,
            )
        })
        .transpose()
}

/// The code region of a service, before its recorded tag is looked up.
#[derive(Clone)]
pub struct CodePlan {
    /// `fspf_path`.
    pub fspf_path: String,
    /// `fspf_key` (64 hex, secret).
    pub fspf_key: String,
    /// The policy's `fspf_tag`.
    pub initial_tag: Option<String>,
    /// `fspf_update_policy`.
    pub policy: UpdatePolicy,
}

impl std::fmt::Debug for CodePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodePlan")
            .field("fspf_path", &self.fspf_path)
            .field("initial_tag", &self.initial_tag)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A volume of the service's image, before its key and recorded tag are looked up.
#[derive(Clone)]
pub struct VolumePlan {
    /// Volume name.
    pub name: String,
    /// Where the program sees it.
    pub path: String,
    /// Update policy.
    pub policy: UpdatePolicy,
    /// An explicit key from the policy (`fspf_key`, 64 hex); `None` = CAS-generated.
    pub explicit_key: Option<String>,
    /// The policy's `fspf_tag` (pre-built volume).
    pub initial_tag: Option<String>,
}

impl std::fmt::Debug for VolumePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumePlan")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("policy", &self.policy)
            .field(
                "explicit_key",
                &self.explicit_key.as_ref().map(|_| "<redacted>"),
            )
            .field("initial_tag", &self.initial_tag)
            .finish()
    }
}

/// Everything of the configuration that comes from the session and its secret values.
pub struct Plan {
    /// argv.
    pub argv: Vec<String>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub pwd: Option<String>,
    /// Injection files.
    pub injection_files: Vec<InjectionFile>,
    /// Code region.
    pub code_region: Option<CodePlan>,
    /// Volumes.
    pub volumes: Vec<VolumePlan>,
}

/// A 256-bit key field (`fspf_key`): 64 hex characters or one placeholder of a `binary`
/// secret (`$$SCONE::k$$`, `:bin`, `:hex`), as SCONE documents; returned as 64 lowercase hex.
fn key_field(
    field: impl Fn() -> String,
    text: &str,
    values: &SecretValues,
) -> Result<String, BuildError> {
    let key =
        veil_secrets::binary_key(&field(), text, values).map_err(|source| BuildError::Expand {
            field: field(),
            source,
        })?;
    if key.len() != 32 {
        return Err(BuildError::Invalid {
            field: field(),
            msg: format!(
                "expected a 256-bit key (32 bytes, 64 hex characters), got {} bytes",
                key.len()
            ),
        });
    }
    Ok(hex::encode(key))
}

fn check_tag(field: impl Fn() -> String, t: &Option<String>) -> Result<(), BuildError> {
    match t {
        Some(t) if !super::tags::is_tag(t) => Err(BuildError::Invalid {
            field: field(),
            msg: "expected 32 lowercase hex characters".into(),
        }),
        _ => Ok(()),
    }
}

fn policy_of(p: veil_policy::UpdatePolicy) -> UpdatePolicy {
    match p {
        veil_policy::UpdatePolicy::RollbackProtected => UpdatePolicy::RollbackProtected,
        veil_policy::UpdatePolicy::Ephemeral => UpdatePolicy::Ephemeral,
        veil_policy::UpdatePolicy::NoRollbackProtection => UpdatePolicy::NoRollbackProtection,
    }
}

/// Build the plan of `service`: placeholders expanded per context (arguments, environment,
/// files; `fspf_key` and volume keys as binary keys, see `veil_secrets::binary_key`).
pub fn plan(
    session: &Session,
    service: &Service,
    values: &SecretValues,
) -> Result<Plan, BuildError> {
    let svc = &service.name;
    let mut argv = Vec::with_capacity(service.command.len());
    for (i, a) in service.command.iter().enumerate() {
        argv.push(expand(
            || format!("services[{svc}].command[{i}]"),
            a,
            values,
            Context::Argument,
        )?);
    }
    let mut env = BTreeMap::new();
    for (k, v) in &service.environment {
        env.insert(
            k.clone(),
            expand(
                || format!("services[{svc}].environment.{k}"),
                v,
                values,
                Context::Environment,
            )?,
        );
    }
    let image =
        match &service.image_name {
            None => None,
            Some(name) => Some(session.images.iter().find(|i| &i.name == name).ok_or_else(
                || BuildError::Invalid {
                    field: format!("services[{svc}].image_name"),
                    msg: format!("no image `{name}` in the session"),
                },
            )?),
        };
    let mut injection_files = Vec::new();
    let mut volumes = Vec::new();
    if let Some(img) = image {
        for f in &img.injection_files {
            let field = || format!("images[{}].injection_files[{}]", img.name, f.path);
            let Some(content) = &f.content else {
                return Err(BuildError::NotSupported(format!(
                    "{} without `content` (read from the file system)",
                    field()
                )));
            };
            let bytes =
                veil_secrets::expand_text(content, values, Context::File).map_err(|source| {
                    BuildError::Expand {
                        field: field(),
                        source,
                    }
                })?;
            injection_files.push(InjectionFile {
                path: f.path.clone(),
                content: veil_types::SecretSlice::from(bytes),
                mode: f.permission.unwrap_or(DEFAULT_INJECTION_MODE),
            });
        }
        for v in &img.volumes {
            let field = || format!("images[{}].volumes[{}]", img.name, v.name);
            let def = session
                .volumes
                .iter()
                .find(|d| d.name == v.name)
                .ok_or_else(|| BuildError::Invalid {
                    field: field(),
                    msg: format!("no volume `{}` in the session's `volumes`", v.name),
                })?;
            if def.import.is_some() {
                return Err(BuildError::NotSupported(format!(
                    "volumes[{}].import (an imported volume)",
                    def.name
                )));
            }
            let explicit_key = match &def.fspf_key {
                None => None,
                Some(k) => {
                    let kf = || format!("volumes[{}].fspf_key", def.name);
                    Some(key_field(kf, k, values)?)
                }
            };
            check_tag(|| format!("volumes[{}].fspf_tag", def.name), &def.fspf_tag)?;
            volumes.push(VolumePlan {
                name: v.name.clone(),
                path: v.path.clone(),
                policy: policy_of(v.update_policy),
                explicit_key,
                initial_tag: def.fspf_tag.clone(),
            });
        }
    }
    let code_region = match &service.fspf_path {
        None => None,
        Some(path) => {
            let kf = || format!("services[{svc}].fspf_key");
            let raw = service
                .fspf_key
                .as_ref()
                .ok_or_else(|| BuildError::Invalid {
                    field: kf(),
                    msg: "`fspf_path` is set but `fspf_key` is missing".into(),
                })?;
            let key = key_field(kf, raw, values)?;
            check_tag(|| format!("services[{svc}].fspf_tag"), &service.fspf_tag)?;
            Some(CodePlan {
                fspf_path: path.clone(),
                fspf_key: key,
                initial_tag: service.fspf_tag.clone(),
                policy: match service.fspf_update_policy {
                    Some(veil_policy::FspfUpdatePolicy::NoRollbackProtection) => {
                        UpdatePolicy::NoRollbackProtection
                    }
                    _ => UpdatePolicy::RollbackProtectedReinitializable,
                },
            })
        }
    };
    Ok(Plan {
        argv,
        env,
        pwd: service.pwd.clone(),
        injection_files,
        code_region,
        volumes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_secrets::{Kind, SecretMaterial, StoredSecret};
    use veil_types::ExposeSecret;

    fn values() -> SecretValues {
        let mut m = BTreeMap::new();
        m.insert(
            "pw".to_string(),
            StoredSecret {
                kind: Kind::Ascii,
                value: SecretMaterial::Text("s3cr3tpw".into()),
                generated: true,
                created_at: 0,
                not_after: None,
            },
        );
        m.insert(
            "bin".to_string(),
            StoredSecret {
                kind: Kind::Binary,
                value: SecretMaterial::Bytes(vec![0, 1, 2, 255]),
                generated: true,
                created_at: 0,
                not_after: None,
            },
        );
        SecretValues(m)
    }

    const M: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn session(extra: &str) -> Session {
        let text = format!(
            "name: s\nversion: \"0.3\"\nservices:\n  - name: app\n    image_name: img\n    mrenclaves: [{M}]\n    command: prog --pw $$SCONE::pw$$\n    environment:\n      A: \"$$SCONE::bin:hex$$\"\n    pwd: /w\nimages:\n  - name: img\n    injection_files:\n      - path: /etc/b\n        content: \"x$$SCONE::bin:bin$$\"\n      - path: /etc/c\n        content: plain\n        permission: 0o640\n    volumes:\n      - name: V1\n        path: /V1\n      - name: V2\n        path: /V2\n        update_policy: ephemeral\nvolumes:\n  - name: V1\n  - name: V2\nsecrets:\n  - name: pw\n    kind: ascii\n  - name: bin\n    kind: binary\n{extra}"
        );
        match veil_policy::parse("t.yaml", &text) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn plan_expands_per_context() {
        let s = session("");
        let svc = find_service(&s, "app").unwrap();
        let p = plan(&s, svc, &values()).unwrap();
        assert_eq!(p.argv, vec!["prog", "--pw", "s3cr3tpw"]);
        assert_eq!(p.env["A"], "000102ff");
        assert_eq!(p.pwd.as_deref(), Some("/w"));
        assert_eq!(
            p.injection_files[0].content.expose_secret(),
            b"x\x00\x01\x02\xff"
        );
        assert_eq!(p.injection_files[0].mode, 0o700);
        assert_eq!(p.injection_files[1].mode, 0o640);
        assert_eq!(p.volumes.len(), 2);
        assert_eq!(p.volumes[0].policy, UpdatePolicy::RollbackProtected);
        assert_eq!(p.volumes[1].policy, UpdatePolicy::Ephemeral);
        assert!(p.volumes[0].explicit_key.is_none());
        assert!(p.code_region.is_none());
        let r = reference_values(&s, svc, &values()).unwrap();
        assert_eq!(
            r,
            ReferenceValues::from_policy(
                vec![FactorSet::mrenclave(vec![M.parse().unwrap()])],
                vec![]
            )
        );
        assert_eq!(otp_secret(&s, svc, &values()).unwrap(), None);
        assert_eq!(access_token(&s, &values()).unwrap(), None);
        let tp = tier_policy(&s);
        assert_eq!(tp.mode, AttestationMode::Hardware);
        assert!(!tp.tolerates_debug_mode);
    }

    #[test]
    fn fspf_key_takes_a_raw_binary_secret() {
        let mut v = values();
        let key: Vec<u8> = (0u8..32).collect();
        v.0.insert(
            "k".to_string(),
            StoredSecret {
                kind: Kind::Binary,
                value: SecretMaterial::Bytes(key.clone()),
                generated: true,
                created_at: 0,
                not_after: None,
            },
        );
        for spelling in ["$$SCONE::k$$", "$$SCONE::k:bin$$", "$$SCONE::k:hex$$"] {
            let mut s = session("");
            s.services[0].fspf_path = Some("/fspf/fs.fspf".into());
            s.services[0].fspf_key = Some(spelling.into());
            let svc = find_service(&s, "app").unwrap();
            let p = plan(&s, svc, &v).unwrap();
            assert_eq!(
                p.code_region.unwrap().fspf_key,
                hex::encode(&key),
                "{spelling}"
            );
        }
        // Explicit hex still works (upper case normalised).
        let mut s = session("");
        s.services[0].fspf_path = Some("/fspf/fs.fspf".into());
        s.services[0].fspf_key = Some("AB".repeat(32));
        let svc = find_service(&s, "app").unwrap();
        assert_eq!(
            plan(&s, svc, &v).unwrap().code_region.unwrap().fspf_key,
            "ab".repeat(32)
        );
        // A 4-byte binary secret is refused, naming the field but not the value.
        s.services[0].fspf_key = Some("$$SCONE::bin$$".into());
        let svc = find_service(&s, "app").unwrap();
        let err = plan(&s, svc, &v).err().unwrap().to_string();
        assert!(err.contains("services[app].fspf_key"), "{err}");
        assert!(err.contains("4 bytes"), "{err}");
        assert!(!err.contains("000102ff"), "{err}");
        // An ascii secret is not a binary key.
        s.services[0].fspf_key = Some("$$SCONE::pw$$".into());
        let svc = find_service(&s, "app").unwrap();
        let err = plan(&s, svc, &v).err().unwrap().to_string();
        assert!(err.contains("fspf_key"), "{err}");
        assert!(!err.contains("s3cr3tpw"), "{err}");
    }

    #[test]
    fn missing_secret_values_name_the_field_not_a_value() {
        let s = session("");
        let svc = find_service(&s, "app").unwrap();
        let err = plan(&s, svc, &SecretValues::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("services[app].command[2]"), "{err}");
        assert!(err.contains("pw"), "{err}");
    }

    #[test]
    fn security_section() {
        let s = session(
            "security:\n  service_access_token: tok-$$SCONE::pw$$\n  attestation:\n    tolerate: [debug-mode]\n    one_time_password_shared_secret: GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n",
        );
        let svc = find_service(&s, "app").unwrap();
        assert!(tier_policy(&s).tolerates_debug_mode);
        assert_eq!(
            access_token(&s, &values()).unwrap().as_deref(),
            Some("tok-s3cr3tpw")
        );
        assert_eq!(
            otp_secret(&s, svc, &values()).unwrap().as_deref(),
            Some("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")
        );
    }
}
