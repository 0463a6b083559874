//! A session's secrets: materialising them on create/update (migration, generation, explicit
//! values, imports), certificate renewal, placeholder expansion, sharing and public values.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use veil_policy::{Endpoint, ImportSource, KeyType, San, Secret, SecretKind, SecretValue, Session};

use crate::SecretsError;
use crate::format::{format_secret, pem_certs, pem_public_key};
use crate::generate::{self, CertSpec, IssuerRef};
use crate::model::{Context, KeyAlg, Kind, SecretMaterial, SecretValues, StoredSecret};

/// Look-ups the CAS answers for imports.
pub trait ImportResolver {
    /// The exported secret `source.secret` of session `source.session` for the importer
    /// `importer_session`. `source.session` is already absolute (relative references are
    /// resolved with [`resolve_session_reference`] before the call). The CAS checks the
    /// exporter's `export` list ([`check_export`]) and the importer's `session_hash` pin.
    fn resolve(
        &self,
        importer_session: &str,
        source: &ImportSource,
    ) -> Result<StoredSecret, SecretsError>;
}

/// An [`ImportResolver`] that knows no sessions (every import fails).
pub struct NoImports;

impl ImportResolver for NoImports {
    fn resolve(&self, _: &str, source: &ImportSource) -> Result<StoredSecret, SecretsError> {
        Err(SecretsError::Import {
            secret: source.secret.clone(),
            source_session: source.session.clone(),
            source_secret: source.secret.clone(),
            reason: "imports are not available here".into(),
        })
    }
}

/// The stored kind of a policy kind.
pub fn kind_of(k: SecretKind) -> Kind {
    match k {
        SecretKind::Ascii => Kind::Ascii,
        SecretKind::Binary => Kind::Binary,
        SecretKind::PrivateKey => Kind::PrivateKey,
        SecretKind::PublicKey => Kind::PublicKey,
        SecretKind::X509 => Kind::X509,
        SecretKind::X509Ca => Kind::X509Ca,
        SecretKind::ConfigFragment => Kind::ConfigFragment,
    }
}

/// The key algorithm of a policy `key_type` (`None`: P-256).
pub fn key_alg_of(k: Option<KeyType>) -> KeyAlg {
    match k {
        None | Some(KeyType::P256) => KeyAlg::P256,
        Some(KeyType::P384) => KeyAlg::P384,
        Some(KeyType::Ed25519) => KeyAlg::Ed25519,
        Some(KeyType::Rsa2048) => KeyAlg::Rsa2048,
        Some(KeyType::Rsa3072) => KeyAlg::Rsa3072,
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Resolve a session reference as written in `import`/`export` against the referencing
/// session's name (SCONE's §1.10): `./x` is the child `x` of the referencing session, `../x`
/// its sibling, `../../x` a sibling of its namespace; anything else is absolute.
pub fn resolve_session_reference(from: &str, reference: &str) -> Result<String, SecretsError> {
    if !(reference.starts_with("./") || reference.starts_with("../")) {
        return Ok(reference.to_string());
    }
    let bad = || SecretsError::BadReference {
        reference: reference.to_string(),
        from: from.to_string(),
    };
    let mut parts: Vec<&str> = from.split('/').filter(|p| !p.is_empty()).collect();
    let mut rest = reference;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            parts.pop().ok_or_else(bad)?;
            rest = r;
        } else {
            break;
        }
    }
    if rest.is_empty()
        || rest
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(bad());
    }
    if parts.is_empty() {
        return Err(bad());
    }
    parts.extend(rest.split('/'));
    Ok(parts.join("/"))
}

/// Whether `secret` of `exporter` (at `exporter_hash`) may be imported by
/// `importer_session`. Targets pinned to an importer `session_hash` do not match here; use
/// [`check_export`] with the importer's hash for those.
pub fn export_allows(
    exporter: &Session,
    exporter_hash: &str,
    secret: &str,
    importer_session: &str,
) -> bool {
    check_export(
        exporter,
        exporter_hash,
        secret,
        importer_session,
        None,
        None,
    )
    .is_ok()
}

/// Check an import against the exporter: the secret exists and is exported to the importer
/// (by session name, relative names resolved against the exporter, or by a namespace the
/// importer is in; a target's `session_hash` must equal `importer_hash`), and the importer's
/// pin `import_pin` (its `import.session_hash`) equals `exporter_hash`.
pub fn check_export(
    exporter: &Session,
    exporter_hash: &str,
    secret: &str,
    importer_session: &str,
    importer_hash: Option<&str>,
    import_pin: Option<&str>,
) -> Result<(), SecretsError> {
    let err = |reason: &str| SecretsError::Import {
        secret: secret.to_string(),
        source_session: exporter.name.clone(),
        source_secret: secret.to_string(),
        reason: reason.to_string(),
    };
    if let Some(pin) = import_pin
        && !pin.eq_ignore_ascii_case(exporter_hash)
    {
        return Err(err(
            "the pinned session_hash no longer matches the exporting session's current version",
        ));
    }
    let s = exporter
        .secret(secret)
        .ok_or_else(|| err("no such secret, or it is not exported to this session"))?;
    let allowed = s.export.iter().any(|t| {
        let name_ok = match (&t.session, &t.namespace) {
            (Some(sess), _) => {
                resolve_session_reference(&exporter.name, sess).is_ok_and(|n| n == importer_session)
            }
            (None, Some(ns)) => {
                let ns =
                    resolve_session_reference(&exporter.name, ns).unwrap_or_else(|_| ns.clone());
                let ns = ns.trim_end_matches('/');
                importer_session
                    .strip_prefix(ns)
                    .is_some_and(|r| r.starts_with('/'))
            }
            (None, None) => false,
        };
        let hash_ok = match &t.session_hash {
            None => true,
            Some(h) => importer_hash.is_some_and(|ih| ih.eq_ignore_ascii_case(h)),
        };
        name_ok && hash_ok
    });
    if allowed {
        Ok(())
    } else {
        Err(err("no such secret, or it is not exported to this session"))
    }
}

fn yaml_to_json(y: &veil_policy::YamlValue) -> serde_json::Value {
    use serde_json::Value as J;
    use veil_policy::YamlValue as Y;
    match y {
        Y::Null => J::Null,
        Y::Bool(b) => J::Bool(*b),
        Y::Int(i) => J::from(*i),
        Y::Float(f) => f
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(J::Number)
            .unwrap_or_else(|| J::String(f.clone())),
        Y::Str(s) => J::String(s.clone()),
        Y::Seq(v) => J::Array(v.iter().map(yaml_to_json).collect()),
        Y::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), yaml_to_json(v)))
                .collect(),
        ),
    }
}

/// How the builder treats a secret that already has a value.
enum Mode<'a> {
    /// Create/update: migrate from the previous version per §1.5.
    Update(Option<(&'a Session, &'a SecretValues)>),
    /// Renewal: keep every value except the named certificates.
    Renew(&'a SecretValues, BTreeSet<String>),
}

struct Builder<'a> {
    session: &'a Session,
    mode: Mode<'a>,
    imports: &'a dyn ImportResolver,
    now: SystemTime,
    out: BTreeMap<String, StoredSecret>,
    visiting: BTreeSet<String>,
}

impl Builder<'_> {
    fn invalid(&self, secret: &str, reason: impl Into<String>) -> SecretsError {
        SecretsError::InvalidValue {
            secret: secret.to_string(),
            reason: reason.into(),
        }
    }

    fn get(&mut self, name: &str) -> Result<StoredSecret, SecretsError> {
        if let Some(v) = self.out.get(name) {
            return Ok(v.clone());
        }
        let s = self
            .session
            .secret(name)
            .ok_or_else(|| SecretsError::UnknownSecret(name.to_string()))?;
        if !self.visiting.insert(name.to_string()) {
            return Err(self.invalid(name, "its references form a cycle"));
        }
        let v = self.build(s)?;
        self.visiting.remove(name);
        self.out.insert(name.to_string(), v.clone());
        Ok(v)
    }

    fn stored(&self, kind: Kind, value: SecretMaterial, generated: bool) -> StoredSecret {
        StoredSecret {
            kind,
            value,
            generated,
            created_at: unix(self.now),
            not_after: None,
        }
    }

    fn build(&mut self, s: &Secret) -> Result<StoredSecret, SecretsError> {
        let kind = kind_of(s.kind);
        if s.import_akv.is_some() {
            return Err(SecretsError::NotSupported {
                secret: s.name.clone(),
                what: "`import_akv`".into(),
            });
        }
        if let Mode::Renew(current, regen) = &self.mode
            && !regen.contains(&s.name)
            && let Some(v) = current.get(&s.name)
        {
            return Ok(v.clone());
        }
        if let Some(src) = &s.import {
            return self.import(s, kind, src);
        }
        if let Some(v) = &s.value {
            return self.explicit(s, kind, v);
        }
        if let Some(v) = self.migrated(s, kind) {
            return Ok(v);
        }
        self.generate(s, kind)
    }

    fn import(
        &mut self,
        s: &Secret,
        kind: Kind,
        src: &ImportSource,
    ) -> Result<StoredSecret, SecretsError> {
        let session = resolve_session_reference(&self.session.name, &src.session)?;
        let abs = ImportSource {
            session: session.clone(),
            secret: src.secret.clone(),
            session_hash: src.session_hash.clone(),
        };
        let v = self.imports.resolve(&self.session.name, &abs)?;
        if v.kind != kind {
            return Err(SecretsError::Import {
                secret: s.name.clone(),
                source_session: session,
                source_secret: src.secret.clone(),
                reason: format!("it is of kind {}, not {}", v.kind, kind),
            });
        }
        Ok(v)
    }

    fn private_key_ref(&mut self, s: &Secret) -> Result<(Vec<u8>, KeyAlg), SecretsError> {
        let Some(pk) = &s.private_key else {
            return Err(self.invalid(
                &s.name,
                "`private_key` is required (the name of a private-key secret)",
            ));
        };
        match self.get(pk)?.value {
            SecretMaterial::PrivateKey {
                pkcs8_der,
                key_type,
            } => Ok((pkcs8_der, key_type)),
            _ => Err(self.invalid(
                &s.name,
                format!("`private_key: {pk}` does not name a private-key secret"),
            )),
        }
    }

    fn explicit(
        &mut self,
        s: &Secret,
        kind: Kind,
        v: &SecretValue,
    ) -> Result<StoredSecret, SecretsError> {
        let name = &s.name;
        let mat = match (kind, v) {
            (Kind::Ascii, SecretValue::Text(t)) => {
                if t.contains('\0') {
                    return Err(self.invalid(name, "an ascii value must not contain NUL"));
                }
                SecretMaterial::Text(t.clone())
            }
            (Kind::Binary, SecretValue::Bytes(b)) => SecretMaterial::Bytes(b.clone()),
            (Kind::Binary, SecretValue::Text(t)) => SecretMaterial::Bytes(
                hex::decode(t.trim())
                    .map_err(|_| self.invalid(name, "a binary value must be hex"))?,
            ),
            (Kind::ConfigFragment, SecretValue::Yaml(y)) => {
                SecretMaterial::Fragment(yaml_to_json(y).to_string())
            }
            (Kind::ConfigFragment, SecretValue::Text(t)) => SecretMaterial::Fragment(t.clone()),
            (Kind::PrivateKey, SecretValue::Text(t)) => {
                let der = pem_block(name, t, &["PRIVATE KEY"])?;
                let alg = generate::detect_key_alg(name, &der)?;
                if let Some(want) = s.key_type
                    && key_alg_of(Some(want)) != alg
                {
                    return Err(self.invalid(
                        name,
                        format!("the key is {alg}, but `key_type` is {}", want.as_str()),
                    ));
                }
                SecretMaterial::PrivateKey {
                    pkcs8_der: der,
                    key_type: alg,
                }
            }
            (Kind::PublicKey, SecretValue::Text(t)) => {
                let der = pem_block(name, t, &["PUBLIC KEY"])?;
                use x509_parser::prelude::FromDer;
                x509_parser::x509::SubjectPublicKeyInfo::from_der(&der)
                    .map_err(|_| self.invalid(name, "not a DER SubjectPublicKeyInfo"))?;
                SecretMaterial::PublicKey { spki_der: der }
            }
            (Kind::X509 | Kind::X509Ca, SecretValue::Text(t)) => {
                let blocks = pem::parse_many(t.as_bytes())
                    .map_err(|_| self.invalid(name, "the value is not PEM"))?;
                let mut ders = blocks
                    .into_iter()
                    .filter(|b| b.tag() == "CERTIFICATE")
                    .map(|b| b.into_contents());
                let der = ders
                    .next()
                    .ok_or_else(|| self.invalid(name, "the value holds no PEM CERTIFICATE"))?;
                let chain: Vec<Vec<u8>> = ders.collect();
                let (_, cert) = x509_parser::parse_x509_certificate(&der)
                    .map_err(|_| self.invalid(name, "the certificate does not parse"))?;
                let not_after = u64::try_from(cert.validity().not_after.timestamp()).ok();
                let spki = cert.public_key().raw.to_vec();
                let key = if s.private_key.is_some() {
                    let (k, alg) = self.private_key_ref(s)?;
                    if generate::public_key_of(name, &k, alg)? != spki {
                        return Err(self.invalid(
                            name,
                            "the certificate's public key is not the one of `private_key`",
                        ));
                    }
                    k
                } else {
                    Vec::new()
                };
                let mut st = self.stored(
                    kind,
                    SecretMaterial::Certificate {
                        der,
                        chain,
                        private_key_pkcs8_der: key,
                    },
                    false,
                );
                st.not_after = not_after;
                return Ok(st);
            }
            _ => {
                return Err(self.invalid(
                    name,
                    format!("this kind of explicit value does not fit kind {kind}"),
                ));
            }
        };
        Ok(self.stored(kind, mat, false))
    }

    /// The previous version's value when §1.5 says it is kept.
    fn migrated(&self, s: &Secret, kind: Kind) -> Option<StoredSecret> {
        let Mode::Update(Some((prev_session, prev_values))) = &self.mode else {
            return None;
        };
        let ps = prev_session.secret(&s.name)?;
        let pv = prev_values.get(&s.name)?;
        if ps.kind != s.kind || pv.kind != kind || !pv.generated || ps.import.is_some() {
            return None;
        }
        let keep = match kind {
            Kind::Ascii | Kind::Binary => {
                ps.size.unwrap_or(generate::DEFAULT_SIZE)
                    == s.size.unwrap_or(generate::DEFAULT_SIZE)
            }
            Kind::PrivateKey => {
                ps.migrate && s.migrate && key_alg_of(ps.key_type) == key_alg_of(s.key_type)
            }
            // Public keys are derived again from the (possibly kept) private key;
            // certificates are always regenerated on update.
            Kind::PublicKey | Kind::X509 | Kind::X509Ca | Kind::ConfigFragment => false,
        };
        keep.then(|| pv.clone())
    }

    fn generate(&mut self, s: &Secret, kind: Kind) -> Result<StoredSecret, SecretsError> {
        let name = &s.name;
        let size = s.size.unwrap_or(generate::DEFAULT_SIZE);
        let mat = match kind {
            Kind::Ascii => SecretMaterial::Text(generate::random_ascii(name, size)?),
            Kind::Binary => SecretMaterial::Bytes(generate::random_bytes(name, size)?),
            Kind::PrivateKey => {
                let alg = key_alg_of(s.key_type);
                SecretMaterial::PrivateKey {
                    pkcs8_der: generate::private_key(name, alg)?,
                    key_type: alg,
                }
            }
            Kind::PublicKey => {
                let (k, alg) = self.private_key_ref(s)?;
                SecretMaterial::PublicKey {
                    spki_der: generate::public_key_of(name, &k, alg)?,
                }
            }
            Kind::X509 | Kind::X509Ca => return self.certificate(s, kind),
            Kind::ConfigFragment => {
                return Err(self.invalid(name, "a config-fragment needs a `value` or an `import`"));
            }
        };
        Ok(self.stored(kind, mat, true))
    }

    fn certificate(&mut self, s: &Secret, kind: Kind) -> Result<StoredSecret, SecretsError> {
        let name = &s.name;
        let (key, alg) = self.private_key_ref(s)?;
        let mut dns: Vec<String> = s.dns.clone();
        let mut ips = Vec::new();
        for san in &s.san {
            match san {
                San::Dns(d) => dns.push(d.clone()),
                San::Ip(ip) => ips.push(*ip),
            }
        }
        let common_name = s
            .common_name
            .clone()
            .or_else(|| dns.first().cloned())
            .unwrap_or_else(|| name.clone());
        let spec = CertSpec {
            common_name,
            dns,
            ips,
            ca: kind == Kind::X509Ca,
            server_endpoint: s.endpoint.map(|e| e == Endpoint::Server),
            valid_for: s.valid_for,
        };
        let issuer = match &s.issuer {
            None => None,
            Some(iss) => {
                let v = self.get(iss)?;
                match (v.kind, v.value) {
                    (
                        Kind::X509Ca,
                        SecretMaterial::Certificate {
                            der,
                            chain,
                            private_key_pkcs8_der,
                        },
                    ) if !private_key_pkcs8_der.is_empty() => {
                        let alg = generate::detect_key_alg(iss, &private_key_pkcs8_der)?;
                        Some((der, chain, private_key_pkcs8_der, alg))
                    }
                    _ => {
                        return Err(self.invalid(
                            name,
                            format!(
                                "`issuer: {iss}` is not an x509-ca secret with its private key"
                            ),
                        ));
                    }
                }
            }
        };
        let made = generate::certificate(
            name,
            &spec,
            &key,
            alg,
            issuer.as_ref().map(|(der, _, k, a)| IssuerRef {
                cert_der: der,
                key_pkcs8: k,
                key_alg: *a,
            }),
            self.now,
        )?;
        let chain = match issuer {
            None => Vec::new(),
            Some((der, mut chain, _, _)) => {
                chain.insert(0, der);
                chain
            }
        };
        let mut st = self.stored(
            kind,
            SecretMaterial::Certificate {
                der: made.der,
                chain,
                private_key_pkcs8_der: key,
            },
            true,
        );
        st.not_after = Some(made.not_after);
        Ok(st)
    }
}

/// The DER of the single PEM block with one of `tags` in `text`.
fn pem_block(name: &str, text: &str, tags: &[&str]) -> Result<Vec<u8>, SecretsError> {
    let p = pem::parse(text.as_bytes()).map_err(|_| SecretsError::InvalidValue {
        secret: name.to_string(),
        reason: "the value is not PEM".into(),
    })?;
    if !tags.contains(&p.tag()) {
        return Err(SecretsError::InvalidValue {
            secret: name.to_string(),
            reason: format!(
                "expected a PEM `{}` block, found `{}`",
                tags.join("` or `"),
                p.tag()
            ),
        });
    }
    Ok(p.into_contents())
}

/// Produce the values of `session`'s secrets: keep/migrate from `previous` per SCONE's §1.5
/// (ascii/binary of the same kind and size kept; private keys only with `migrate: true` in
/// both versions; public keys derived again; certificates regenerated; a kind or size change
/// regenerates), take explicit `value`s, resolve imports, generate the rest with the CSPRNG.
pub fn materialize(
    session: &Session,
    previous: Option<(&Session, &SecretValues)>,
    imports: &dyn ImportResolver,
    now: SystemTime,
) -> Result<SecretValues, SecretsError> {
    let mut b = Builder {
        session,
        mode: Mode::Update(previous),
        imports,
        now,
        out: BTreeMap::new(),
        visiting: BTreeSet::new(),
    };
    for s in &session.secrets {
        b.get(&s.name)?;
    }
    Ok(SecretValues(b.out))
}

/// Whether a generated certificate has less than a third of its validity left at `now`.
pub fn needs_renewal(s: &StoredSecret, now: SystemTime) -> bool {
    match (s.kind, s.generated, s.not_after) {
        (Kind::X509 | Kind::X509Ca, true, Some(end)) => {
            let total = end.saturating_sub(s.created_at);
            let left = end.saturating_sub(unix(now));
            left.saturating_mul(3) < total
        }
        _ => false,
    }
}

/// Renew generated certificates with less than a third of their validity left (and every
/// certificate they issued, directly or not), keeping all other values. `None`: nothing to
/// renew. The CAS calls this when it serves a configuration and stores the result.
pub fn renew_expiring(
    session: &Session,
    values: &SecretValues,
    imports: &dyn ImportResolver,
    now: SystemTime,
) -> Result<Option<SecretValues>, SecretsError> {
    let mut regen: BTreeSet<String> = values
        .0
        .iter()
        .filter(|(_, v)| needs_renewal(v, now))
        .map(|(k, _)| k.clone())
        .collect();
    if regen.is_empty() {
        return Ok(None);
    }
    // Close over issuer edges: a renewed CA re-issues its certificates.
    loop {
        let more: Vec<String> = session
            .secrets
            .iter()
            .filter(|s| !regen.contains(&s.name) && s.import.is_none() && s.value.is_none())
            .filter(|s| s.issuer.as_ref().is_some_and(|i| regen.contains(i)))
            .map(|s| s.name.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        regen.extend(more);
    }
    let mut b = Builder {
        session,
        mode: Mode::Renew(values, regen),
        imports,
        now,
        out: BTreeMap::new(),
        visiting: BTreeSet::new(),
    };
    for s in &session.secrets {
        b.get(&s.name)?;
    }
    Ok(Some(SecretValues(b.out)))
}

/// Expand every `$$SCONE::…$$` in `text` with `values` for `context` (raw binary only in
/// files; `|escape(json)` applied to text results).
pub fn expand_text(
    text: &str,
    values: &SecretValues,
    context: Context,
) -> Result<Vec<u8>, SecretsError> {
    let found = veil_policy::find_placeholders(text)
        .map_err(|e| SecretsError::Placeholder(e.to_string()))?;
    let mut out = Vec::with_capacity(text.len());
    let mut last = 0;
    for (range, ph) in found {
        out.extend_from_slice(&text.as_bytes()[last..range.start]);
        let v = values
            .get(&ph.secret)
            .ok_or_else(|| SecretsError::UnknownSecret(ph.secret.clone()))?;
        let bytes = format_secret(&ph.secret, v, ph.format.as_deref(), context)?;
        if ph.escape_json {
            let s = String::from_utf8(bytes).map_err(|_| SecretsError::Format {
                secret: ph.secret.clone(),
                kind: v.kind,
                format: format!("{}|escape(json)", ph.format.clone().unwrap_or_default()),
                valid: "text formats only with |escape(json)".into(),
            })?;
            out.extend_from_slice(veil_policy::escape_json(&s).as_bytes());
        } else {
            out.extend_from_slice(&bytes);
        }
        last = range.end;
    }
    out.extend_from_slice(&text.as_bytes()[last..]);
    Ok(out)
}

/// Like [`expand_text`] for text-only places (arguments, environment, configuration
/// sections): the result as a `String`.
pub fn expand_to_string(
    text: &str,
    values: &SecretValues,
    context: Context,
) -> Result<String, SecretsError> {
    let bytes = expand_text(text, values, context)?;
    String::from_utf8(bytes)
        .map_err(|_| SecretsError::Placeholder("the expansion is not UTF-8 text".to_string()))
}

fn rfc3339(t: u64) -> serde_json::Value {
    i64::try_from(t)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(serde_json::Value::String)
        .unwrap_or(serde_json::Value::Null)
}

/// The public form of one value: `{"kind", "value", "expires", "renew"}`. Private keys are
/// never public (a private-key secret has no public form; certificates show only the
/// certificate).
fn public_form(v: &StoredSecret) -> Option<serde_json::Value> {
    let (kind, value) = match &v.value {
        SecretMaterial::Text(t) => ("string", t.clone()),
        SecretMaterial::Bytes(b) => ("binary", hex::encode(b)),
        SecretMaterial::PublicKey { spki_der } => (
            "public-key",
            String::from_utf8(pem_public_key(spki_der)).ok()?,
        ),
        SecretMaterial::Certificate { der, .. } => {
            (v.kind.as_str(), String::from_utf8(pem_certs([der])).ok()?)
        }
        SecretMaterial::Fragment(f) => ("config-fragment", f.clone()),
        SecretMaterial::PrivateKey { .. } => return None,
    };
    Some(serde_json::json!({
        "kind": kind,
        "value": value,
        "expires": v.not_after.map(rfc3339).unwrap_or(serde_json::Value::Null),
        "renew": serde_json::Value::Null,
    }))
}

/// SCONE's public values of a session (`GET /v1/values/session=<name>`):
/// `{"values": {"<secret>": {"kind", "value", "expires", "renew"}}}`, only `export_public`
/// secrets.
pub fn public_values_json(session: &Session, values: &SecretValues) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for s in session.secrets.iter().filter(|s| s.export_public) {
        if let Some(p) = values.get(&s.name).and_then(public_form) {
            m.insert(s.name.clone(), p);
        }
    }
    serde_json::json!({ "values": m })
}

/// One public value (`GET /v1/values/session=<name>,secret=<s>`):
/// `{"kind":"string","value":"42","expires":null,"renew":null}`; a missing or non-public
/// secret is [`SecretsError::NotPublic`] (see [`public_value_error_msg`]).
pub fn public_value_json(
    session: &Session,
    values: &SecretValues,
    secret: &str,
) -> Result<serde_json::Value, SecretsError> {
    session
        .secret(secret)
        .filter(|s| s.export_public)
        .and_then(|_| values.get(secret))
        .and_then(public_form)
        .ok_or_else(|| SecretsError::NotPublic {
            secret: secret.to_string(),
            session: session.name.clone(),
        })
}

/// SCONE's `msg` list for a refused public value read.
pub fn public_value_error_msg(session: &str, secret: &str) -> Vec<String> {
    vec![
        format!(
            "Failed to read value '{secret}' of '/session={session}' requested by a public client"
        ),
        "Secret does not exist or is not visible for a public client".to_string(),
    ]
}

/// The OTP shared secret (base32) of `service`, placeholders expanded: the service's
/// `one_time_password_shared_secret` if set, else `security.attestation`'s. `None`: the
/// service needs no OTP. Pass the result to [`crate::check_otp`].
pub fn otp_secret_for_service(
    session: &Session,
    service: &str,
    values: &SecretValues,
) -> Result<Option<String>, SecretsError> {
    let from_service = session
        .service(service)
        .and_then(|s| s.one_time_password_shared_secret.clone());
    let from_security = || {
        session
            .security
            .attestation
            .as_ref()
            .and_then(|a| a.one_time_password_shared_secret.clone())
    };
    match from_service.or_else(from_security) {
        None => Ok(None),
        Some(t) => {
            expand_to_string(&t, values, Context::Config).map(|s| Some(s.trim().to_string()))
        }
    }
}

/// The session's `security.service_access_token`, placeholders expanded (`None`: not
/// required). Pass it to [`crate::check_service_access_token`].
pub fn service_access_token(
    session: &Session,
    values: &SecretValues,
) -> Result<Option<String>, SecretsError> {
    match &session.security.service_access_token {
        None => Ok(None),
        Some(t) => expand_to_string(t, values, Context::Config).map(Some),
    }
}

/// The bytes of a binary key field such as `fspf_key`: either 64 hex characters, or exactly
/// one placeholder of a `binary` secret (`$$SCONE::k$$`, `:bin` or `:hex`). Such keys are
/// bytes, so they do not go through [`expand_text`]'s text-only configuration context.
pub fn binary_key(field: &str, text: &str, values: &SecretValues) -> Result<Vec<u8>, SecretsError> {
    let bad = |reason: String| SecretsError::InvalidValue {
        secret: field.to_string(),
        reason,
    };
    match veil_policy::whole_placeholder(text) {
        Some(ph) => {
            let v = values
                .get(&ph.secret)
                .ok_or_else(|| SecretsError::UnknownSecret(ph.secret.clone()))?;
            match (&v.value, ph.format.as_deref()) {
                (SecretMaterial::Bytes(b), None | Some("bin")) => Ok(b.clone()),
                (SecretMaterial::Bytes(b), Some("hex")) => Ok(b.clone()),
                _ => Err(bad(format!(
                    "`{ph}` must name a binary secret (optionally `:bin` or `:hex`)"
                ))),
            }
        }
        None => hex::decode(text.trim())
            .map_err(|_| bad("expected hex or a single `$$SCONE::<binary secret>$$`".into())),
    }
}
