//! The typed session model. Every field of SCONE's session language 0.3.x (reference §1.2–§1.9)
//! has a place here; source positions live in [`Session::positions`] (by field path) and in the
//! diagnostics, so equality of two sessions ignores where things were written.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::diag::Diagnostic;
use crate::placeholder::Placeholder;

/// The marker `session read` writes in place of every piece of secret material (design-notes
/// decision 22): explicit secret `value`s of every kind, literal `fspf_key`s of services and
/// volumes, literal OTP shared secrets (per service and session-wide), the literal
/// `service_access_token`, and the Azure Key Vault `token`/`decryption_key` of `import_akv` and
/// `secret_config`. It cannot be mistaken for a value (it is neither hex, base32, PEM nor a
/// `$$SCONE::…$$` placeholder, and template substitution leaves `$$…$$` alone), and [`crate::parse`]
/// refuses it in every field, naming the field, so an update started from `session read` output
/// can never store it as a secret.
pub const REDACTED: &str = "$$VEIL::REDACTED$$";

/// A 1-based source position (line, column in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// A whole session (policy) document.
#[derive(Clone, Default)]
pub struct Session {
    /// Session name, possibly with a namespace path (`ns/app`).
    pub name: String,
    /// Language version as written (`"0.3"`, `"0.3.10"`, ...).
    pub version: Option<String>,
    /// Hash of the version this one replaces (64 lowercase hex).
    pub predecessor: Option<String>,
    /// Hash of the parent namespace at creation (64 lowercase hex).
    pub namespace_hash: Option<String>,
    /// Salt that randomises the session hash (32 lowercase hex).
    pub salt: Option<String>,
    /// The creator, as set by the CAS.
    pub creator: Option<Creator>,
    /// The services (programs) of this session.
    pub services: Vec<Service>,
    /// The secrets of this session.
    pub secrets: Vec<Secret>,
    /// The images (file-system views) of this session.
    pub images: Vec<Image>,
    /// The volumes of this session.
    pub volumes: Vec<Volume>,
    /// Who may read, update, create child sessions, list.
    pub access_policy: AccessPolicy,
    /// Attestation and access-token settings.
    pub security: Security,
    /// Where secrets are stored.
    pub secret_config: Option<SecretConfig>,
    /// Warnings found while loading (e.g. "`services[0].platforms` is not supported yet").
    pub warnings: Vec<Diagnostic>,
    /// Source position of every field, by field path (`services[0].name`). Not part of equality.
    pub positions: BTreeMap<String, Pos>,
}

impl PartialEq for Session {
    /// Semantic equality: positions and warnings are ignored.
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name
            && self.version == o.version
            && self.predecessor == o.predecessor
            && self.namespace_hash == o.namespace_hash
            && self.salt == o.salt
            && self.creator == o.creator
            && self.services == o.services
            && self.secrets == o.secrets
            && self.images == o.images
            && self.volumes == o.volumes
            && self.access_policy == o.access_policy
            && self.security == o.security
            && self.secret_config == o.secret_config
    }
}
impl Eq for Session {}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("predecessor", &self.predecessor)
            .field("namespace_hash", &self.namespace_hash)
            .field("salt", &self.salt)
            .field("creator", &self.creator)
            .field("services", &self.services)
            .field("secrets", &self.secrets)
            .field("images", &self.images)
            .field("volumes", &self.volumes)
            .field("access_policy", &self.access_policy)
            .field("security", &self.security)
            .field("secret_config", &self.secret_config)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The source position of a field path, when the field was written in the document.
    pub fn pos(&self, path: &str) -> Option<Pos> {
        self.positions.get(path).copied()
    }
    /// The secret with this name.
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.iter().find(|s| s.name == name)
    }
    /// The service with this name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
    /// The image with this name.
    pub fn image(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|s| s.name == name)
    }
    /// The volume with this name.
    pub fn volume(&self, name: &str) -> Option<&Volume> {
        self.volumes.iter().find(|s| s.name == name)
    }
}

/// Who created the session (set by the CAS on upload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creator {
    /// The uploader's TLS client certificate (PEM).
    Certificate {
        /// PEM text of the certificate.
        pem: String,
    },
    /// A signer key (`creator: {signer: <SPKI PEM>}`).
    Signer {
        /// PEM text of the SubjectPublicKeyInfo.
        pem: String,
    },
}

/// One service (program) of a session.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Service {
    /// Service name (unique in the session).
    pub name: String,
    /// argv; a string `command` is split with shell-like quoting.
    pub command: Vec<String>,
    /// The program's environment. A key `\@\@NAME` takes `NAME` from the host.
    pub environment: BTreeMap<String, String>,
    /// Working directory.
    pub pwd: Option<String>,
    /// Name of an `images[]` entry.
    pub image_name: Option<String>,
    /// Location of the file-system protection file.
    pub fspf_path: Option<String>,
    /// Its key: 64 lowercase hex or a `$$SCONE::binary$$` placeholder.
    pub fspf_key: Option<String>,
    /// Its initial tag (32 lowercase hex).
    pub fspf_tag: Option<String>,
    /// Rollback protection of the FSPF.
    pub fspf_update_policy: Option<FspfUpdatePolicy>,
    /// Attestation variants, OR-combined; legacy `mrenclaves` is normalised into one variant.
    pub attestation: Vec<AttestationVariant>,
    /// Platform restrictions (not enforced by veil yet).
    pub platforms: Vec<String>,
    /// Per-service OTP secret (base32 or placeholder).
    pub one_time_password_shared_secret: Option<String>,
    /// veil extension `veil: {node: …}`: the service attests only in the `node` tier, and only
    /// with evidence the LAS signed for these uids / cgroups.
    pub node_restriction: Option<NodeRestriction>,
}

/// `services[].veil.node` (a veil extension, not SCONE's): who the LAS may have signed `node`
/// evidence for. A service with it attests in the `node` tier only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRestriction {
    /// Accepted requester uids (empty: any uid).
    pub uids: Vec<u32>,
    /// Accepted cgroup v2 path prefixes, matched by whole path components (empty: any cgroup).
    pub cgroups: Vec<String>,
}

impl NodeRestriction {
    /// Does evidence signed for `uid` in `cgroup` pass? `Err` names the reason.
    pub fn check(&self, uid: u32, cgroup: &str) -> Result<(), String> {
        if !self.uids.is_empty() && !self.uids.contains(&uid) {
            return Err(format!(
                "the LAS signed for uid {uid}, which the service's `veil.node.uids` does not list"
            ));
        }
        if !self.cgroups.is_empty() && !self.cgroups.iter().any(|p| cgroup_under(cgroup, p)) {
            return Err(format!(
                "the LAS signed for cgroup `{cgroup}`, which is under none of the service's `veil.node.cgroups`"
            ));
        }
        Ok(())
    }
}

/// Is the cgroup path `cg` the prefix `p` or below it (whole components: `/a/b` is under `/a`
/// and `/a/`, `/ab` is not under `/a`)?
pub fn cgroup_under(cg: &str, p: &str) -> bool {
    if p == "/" {
        return cg.starts_with('/');
    }
    let p = p.strip_suffix('/').unwrap_or(p);
    cg == p || cg.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'))
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("environment", &self.environment)
            .field("pwd", &self.pwd)
            .field("image_name", &self.image_name)
            .field("fspf_path", &self.fspf_path)
            .field("fspf_key", &self.fspf_key.as_ref().map(|_| "<redacted>"))
            .field("fspf_tag", &self.fspf_tag)
            .field("fspf_update_policy", &self.fspf_update_policy)
            .field("attestation", &self.attestation)
            .field("platforms", &self.platforms)
            .field(
                "one_time_password_shared_secret",
                &self
                    .one_time_password_shared_secret
                    .as_ref()
                    .map(|_| "<redacted>"),
            )
            .field("node_restriction", &self.node_restriction)
            .finish()
    }
}

/// `fspf_update_policy` of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FspfUpdatePolicy {
    /// `rollback_protected_reinitializable` (SCONE's default).
    RollbackProtectedReinitializable,
    /// `no_rollback_protection`.
    NoRollbackProtection,
}

/// One attestation variant: all factors in it must hold (AND).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttestationVariant {
    /// Accepted measurements (64 lowercase hex or placeholders); the measurement must be one of them.
    pub mrenclave: Vec<String>,
    /// Signer factor (not enforced by veil yet).
    pub signer: Option<SignerFactor>,
}

/// `signer: {mrsigner, isvprodid, isvsvn | isvsvn_min/isvsvn_max}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignerFactor {
    /// 64 lowercase hex.
    pub mrsigner: String,
    /// Product id.
    pub isvprodid: u64,
    /// Exact security version.
    pub isvsvn: Option<u64>,
    /// Lowest accepted security version (inclusive).
    pub isvsvn_min: Option<u64>,
    /// Highest accepted security version (inclusive).
    pub isvsvn_max: Option<u64>,
}

/// Kinds of secrets veil supports (others are rejected with "not supported yet").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretKind {
    /// `ascii`: printable text.
    Ascii,
    /// `binary`: bytes (explicit values in hex).
    Binary,
    /// `private-key`: PKCS#8.
    PrivateKey,
    /// `public-key`: SPKI of a private-key secret.
    PublicKey,
    /// `x509`: a certificate.
    X509,
    /// `x509-ca`: a CA certificate.
    X509Ca,
    /// `config-fragment`: any YAML value.
    ConfigFragment,
}

impl SecretKind {
    /// All supported kinds.
    pub const ALL: [SecretKind; 7] = [
        SecretKind::Ascii,
        SecretKind::Binary,
        SecretKind::PrivateKey,
        SecretKind::PublicKey,
        SecretKind::X509,
        SecretKind::X509Ca,
        SecretKind::ConfigFragment,
    ];
    /// The spelling in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Ascii => "ascii",
            SecretKind::Binary => "binary",
            SecretKind::PrivateKey => "private-key",
            SecretKind::PublicKey => "public-key",
            SecretKind::X509 => "x509",
            SecretKind::X509Ca => "x509-ca",
            SecretKind::ConfigFragment => "config-fragment",
        }
    }
    /// Parse a document spelling.
    pub fn from_name(s: &str) -> Option<SecretKind> {
        SecretKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SCONE kinds that veil parses but does not support yet.
pub const UNSUPPORTED_SECRET_KINDS: [&str; 4] = ["aad-token", "pgp-key", "jwt", "session-ca"];

/// One secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// Name (unique in the session).
    pub name: String,
    /// Kind.
    pub kind: SecretKind,
    /// Explicit value; `None` = generated by the CAS (or imported).
    pub value: Option<SecretValue>,
    /// Generation size (chars for ascii, bytes for binary).
    pub size: Option<usize>,
    /// Keep a private key across updates.
    pub migrate: bool,
    /// Private-key type.
    pub key_type: Option<KeyType>,
    /// Name of the private-key secret (public-key, x509, x509-ca).
    pub private_key: Option<String>,
    /// Name of the issuing x509-ca secret.
    pub issuer: Option<String>,
    /// Certificate common name.
    pub common_name: Option<String>,
    /// Extended key usage of a certificate.
    pub endpoint: Option<Endpoint>,
    /// Subject alternative names (`san`).
    pub san: Vec<San>,
    /// Legacy DNS names (`dns`).
    pub dns: Vec<String>,
    /// Certificate validity.
    pub valid_for: Option<Duration>,
    /// Sessions/namespaces this secret is exported to.
    pub export: Vec<ExportTarget>,
    /// Readable by anyone (public part only).
    pub export_public: bool,
    /// Import from another session.
    pub import: Option<ImportSource>,
    /// Import from Azure Key Vault (not supported yet).
    pub import_akv: Option<AkvImport>,
}

/// `import_akv: {vault, secret_name?, token?, decryption_key?}` (parsed, not supported yet).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AkvImport {
    /// Vault URL.
    pub vault: String,
    /// Secret name in the vault.
    pub secret_name: Option<String>,
    /// Access token.
    pub token: Option<String>,
    /// Envelope decryption key.
    pub decryption_key: Option<String>,
}

impl fmt::Debug for AkvImport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AkvImport")
            .field("vault", &self.vault)
            .field("secret_name", &self.secret_name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "decryption_key",
                &self.decryption_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// An explicit secret value. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretValue {
    /// ascii text, or PEM for keys and certificates.
    Text(String),
    /// binary: decoded from hex.
    Bytes(Vec<u8>),
    /// config-fragment: a YAML value.
    Yaml(YamlValue),
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretValue::Text(_) => f.write_str("Text(<redacted>)"),
            SecretValue::Bytes(b) => write!(f, "Bytes(<{} bytes redacted>)", b.len()),
            SecretValue::Yaml(_) => f.write_str("Yaml(<redacted>)"),
        }
    }
}

/// A plain YAML value (config fragments), with core-schema scalar types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YamlValue {
    /// `null`, `~` or empty.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float, as written.
    Float(String),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<YamlValue>),
    /// A mapping with string keys.
    Map(BTreeMap<String, YamlValue>),
}

/// Private-key types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// `P-256` (default).
    P256,
    /// `P-384`.
    P384,
    /// `Ed25519`.
    Ed25519,
    /// `RSA-2048`.
    Rsa2048,
    /// `RSA-3072`.
    Rsa3072,
}

impl KeyType {
    /// All key types.
    pub const ALL: [KeyType; 5] = [
        KeyType::P256,
        KeyType::P384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
    ];
    /// The spelling in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::P256 => "P-256",
            KeyType::P384 => "P-384",
            KeyType::Ed25519 => "Ed25519",
            KeyType::Rsa2048 => "RSA-2048",
            KeyType::Rsa3072 => "RSA-3072",
        }
    }
}

/// Certificate extended key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// TLS server.
    Server,
    /// TLS client.
    Client,
}

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// `dns:NAME`.
    Dns(String),
    /// `ip:ADDR`.
    Ip(std::net::IpAddr),
}

/// Where a secret is exported to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportTarget {
    /// A session (SCONE ID path).
    pub session: Option<String>,
    /// A namespace.
    pub namespace: Option<String>,
    /// Pin the importer's version.
    pub session_hash: Option<String>,
}

/// Where a secret is imported from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportSource {
    /// The exporting session.
    pub session: String,
    /// The secret's name there.
    pub secret: String,
    /// Pin the exporter's version.
    pub session_hash: Option<String>,
}

/// One image (file-system view).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    /// Name (unique in the session).
    pub name: String,
    /// Files injected into the program's view.
    pub injection_files: Vec<InjectionFile>,
    /// Volumes mounted in this image.
    pub volumes: Vec<ImageVolume>,
    /// Secrets allowed in file-system-loaded injection files.
    pub provide_secrets: Vec<String>,
}

/// An injected file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InjectionFile {
    /// Absolute path in the program's view.
    pub path: String,
    /// Content; `None` = read from the file system at start-up.
    pub content: Option<String>,
    /// Unix permission bits (default 0o700 when `None`).
    pub permission: Option<u32>,
}

/// A volume mounted in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageVolume {
    /// Name of a `volumes[]` entry.
    pub name: String,
    /// Mount path.
    pub path: String,
    /// Rollback protection.
    pub update_policy: UpdatePolicy,
}

/// Volume update policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpdatePolicy {
    /// `rollback_protected` (default).
    #[default]
    RollbackProtected,
    /// `ephemeral`: changes are discarded.
    Ephemeral,
    /// `no_rollback_protection`.
    NoRollbackProtection,
}

impl UpdatePolicy {
    /// The spelling in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdatePolicy::RollbackProtected => "rollback_protected",
            UpdatePolicy::Ephemeral => "ephemeral",
            UpdatePolicy::NoRollbackProtection => "no_rollback_protection",
        }
    }
}

/// One volume.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Volume {
    /// Name (unique in the session).
    pub name: String,
    /// Key of a pre-built volume (64 lowercase hex or placeholder).
    pub fspf_key: Option<String>,
    /// Tag of a pre-built volume (32 lowercase hex).
    pub fspf_tag: Option<String>,
    /// Whether file contents are encrypted.
    pub files: FileProtection,
    /// Exports to other sessions.
    pub export: Vec<VolumeExport>,
    /// Import from another session.
    pub import: Option<VolumeImport>,
}

impl fmt::Debug for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Volume")
            .field("name", &self.name)
            .field("fspf_key", &self.fspf_key.as_ref().map(|_| "<redacted>"))
            .field("fspf_tag", &self.fspf_tag)
            .field("files", &self.files)
            .field("export", &self.export)
            .field("import", &self.import)
            .finish()
    }
}

/// `files:` of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileProtection {
    /// `encrypted` (default).
    #[default]
    Encrypted,
    /// `authenticated-only`.
    AuthenticatedOnly,
}

/// A volume export.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeExport {
    /// Importing session.
    pub session: String,
    /// Pin its version.
    pub session_hash: Option<String>,
    /// What importers may use.
    pub update_policy: Option<UpdatePolicy>,
    /// Name under which importers see the volume.
    pub volume_alias: Option<String>,
}

/// A volume import.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeImport {
    /// Exporting session.
    pub session: String,
    /// Volume name (or alias) there.
    pub volume: String,
}

/// Operations governed by the access policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read the session.
    Read,
    /// Update the session.
    Update,
    /// Create child sessions in this namespace.
    CreateSessions,
    /// List child sessions.
    ListSessions,
}

/// `access_policy`. `None` = not written; see [`AccessPolicy::effective`] for the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessPolicy {
    /// `read`.
    pub read: Option<Rule>,
    /// `update`.
    pub update: Option<Rule>,
    /// `create_sessions`.
    pub create_sessions: Option<Rule>,
    /// `list_sessions`.
    pub list_sessions: Option<Rule>,
}

impl AccessPolicy {
    /// The rule in force for `op`, with SCONE's defaults: read/update = `[CREATOR]`;
    /// create_sessions = update; list_sessions = read + create_sessions.
    pub fn effective(&self, op: Op) -> Rule {
        let creator = || Rule(vec![AccessEntry::Creator]);
        let read = || self.read.clone().unwrap_or_else(creator);
        let update = || self.update.clone().unwrap_or_else(creator);
        let create = || self.create_sessions.clone().unwrap_or_else(update);
        match op {
            Op::Read => read(),
            Op::Update => update(),
            Op::CreateSessions => create(),
            Op::ListSessions => match &self.list_sessions {
                Some(r) => r.clone(),
                None => {
                    let mut v = read().0;
                    for e in create().0 {
                        if !v.contains(&e) {
                            v.push(e);
                        }
                    }
                    // `NONE` alone means nobody; in a union it adds nobody.
                    if v.len() > 1 {
                        v.retain(|e| *e != AccessEntry::None);
                    }
                    if v.contains(&AccessEntry::Any) {
                        v = vec![AccessEntry::Any];
                    }
                    Rule(v)
                }
            },
        }
    }
}

/// A list of entries; any matching entry grants access (OR).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule(pub Vec<AccessEntry>);

/// One access-policy entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessEntry {
    /// `CREATOR`.
    Creator,
    /// `ANY` (must be alone).
    Any,
    /// `NONE` (must be alone).
    None,
    /// A key hash (veil's 64 hex, or a SCONE-style hash that matches no veil client).
    KeyHash(String),
    /// A PEM certificate, compared by its public key.
    Certificate {
        /// PEM text.
        pem: String,
        /// DER SubjectPublicKeyInfo of the certificate.
        spki_der: Vec<u8>,
    },
    /// `signer: <SPKI PEM>` (not enforced yet).
    Signer {
        /// PEM text.
        pem: String,
    },
    /// `require-all: [...]` (not enforced yet).
    RequireAll(Vec<AccessEntry>),
    /// `require-at-least-N: [...]` (not enforced yet).
    RequireAtLeast(usize, Vec<AccessEntry>),
    /// `$$SCONE::secret$$`.
    Placeholder(Placeholder),
}

/// `security`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Security {
    /// `security.attestation`.
    pub attestation: Option<AttestationPolicy>,
    /// Token services must present (`SCONE_SERVICE_ACCESS_TOKEN`).
    pub service_access_token: Option<String>,
    /// Singleton enclaves (not enforced yet).
    pub singleton_enclaves: bool,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("attestation", &self.attestation)
            .field(
                "service_access_token",
                &self.service_access_token.as_ref().map(|_| "<redacted>"),
            )
            .field("singleton_enclaves", &self.singleton_enclaves)
            .finish()
    }
}

/// `security.attestation`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AttestationPolicy {
    /// `mode`.
    pub mode: AttestationMode,
    /// Tolerated weaknesses (`debug-mode`, `hyperthreading`, ...), as written.
    pub tolerate: Vec<String>,
    /// Ignored advisories.
    pub ignore_advisories: Advisories,
    /// Session-wide OTP secret (base32 or placeholder).
    pub one_time_password_shared_secret: Option<String>,
    /// Extra SCONE quoting-enclave keys (not supported yet).
    pub trusted_scone_qe_pubkeys: Vec<String>,
    /// Force SGX local attestation (not supported yet).
    pub must_be_sgx_local: Option<bool>,
    /// MAA URL (not supported yet).
    pub url: Option<String>,
}

impl fmt::Debug for AttestationPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestationPolicy")
            .field("mode", &self.mode)
            .field("tolerate", &self.tolerate)
            .field("ignore_advisories", &self.ignore_advisories)
            .field(
                "one_time_password_shared_secret",
                &self
                    .one_time_password_shared_secret
                    .as_ref()
                    .map(|_| "<redacted>"),
            )
            .field("trusted_scone_qe_pubkeys", &self.trusted_scone_qe_pubkeys)
            .field("must_be_sgx_local", &self.must_be_sgx_local)
            .field("url", &self.url)
            .finish()
    }
}

/// Attestation mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttestationMode {
    /// `hardware` (default): veil's `node` and hardware tiers.
    #[default]
    Hardware,
    /// `none`: no attestation.
    None_,
    /// `maa` (not supported yet).
    Maa,
}

impl AttestationMode {
    /// The spelling in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            AttestationMode::Hardware => "hardware",
            AttestationMode::None_ => "none",
            AttestationMode::Maa => "maa",
        }
    }
}

/// `ignore_advisories`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Advisories {
    /// A list of ids (`INTEL-SA-00161`, ...); empty = none.
    #[default]
    None,
    /// Listed advisory ids.
    List(Vec<String>),
    /// `"*"`: all (only with `debug-mode` tolerated).
    All,
}

/// `secret_config`.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretConfig {
    /// `store_in: !cas`.
    Cas,
    /// `store_in: !akv {token, vault}` (not supported yet).
    Akv {
        /// Access token.
        token: Option<String>,
        /// Vault URL.
        vault: Option<String>,
    },
}

impl fmt::Debug for SecretConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretConfig::Cas => f.write_str("Cas"),
            SecretConfig::Akv { vault, .. } => f
                .debug_struct("Akv")
                .field("token", &"<redacted>")
                .field("vault", vault)
                .finish(),
        }
    }
}
