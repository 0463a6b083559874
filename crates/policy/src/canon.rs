//! Normalised output (YAML and JSON), the canonical form and the session hash.
//!
//! # Canonical form (`veil-session-v1`)
//!
//! `canonical_bytes` = the ASCII line `veil-session-v1` and `\n`, followed by one JSON value
//! describing the session semantically, written without whitespace, object keys sorted
//! bytewise, strings escaped as by `serde_json`, integers in decimal:
//!
//! * every field of the model appears; absent optional values are `null`, empty lists `[]`,
//!   defaults are written out (`update_policy: "rollback_protected"`, `files: "encrypted"`,
//!   `mode: "hardware"`); enumerations use their document spelling;
//! * equivalent spellings are normalised before: a `command` string becomes its argument list,
//!   legacy `mrenclaves` becomes an `attestation` variant, hex is lowercase, durations are
//!   seconds, permissions are integers, `environment` is a map (sorted);
//! * list order is kept everywhere (it is semantic for `command` and `attestation`);
//! * `creator` is the creator's **key hash** (design-notes 15), never its PEM: the caller's key
//!   hash when given, else the hash computed from the document's `creator`, else `null`;
//! * access-policy certificates are represented by the key hash of their public key (they are
//!   compared by public key); `signer` entries likewise;
//! * config-fragment values are tagged (`["str","x"]`, `["int",1]`, ...), so `1` and `"1"` differ;
//! * positions, comments, formatting, key order and warnings are not part of it.
//!
//! The session hash is the lowercase hex SHA-256 of the canonical bytes.

use crate::model::*;
use crate::placeholder::whole_placeholder;

/// A literal secret string redacted; a whole `$$SCONE::…$$` placeholder is kept (it names a
/// secret, it does not carry one).
fn redact(v: &mut Option<String>) {
    if let Some(x) = v
        && whole_placeholder(x).is_none()
    {
        *x = REDACTED.to_string();
    }
}

/// Domain line of the canonical form.
pub const CANONICAL_DOMAIN: &str = "veil-session-v1";

/// An intermediate value tree for both the normalised YAML and the canonical JSON.
#[derive(Debug, Clone)]
pub(crate) enum V {
    Null,
    Bool(bool),
    Int(i64),
    /// A plain scalar written as is (floats in config fragments).
    Raw(String),
    Str(String),
    Seq(Vec<V>),
    Map(Vec<(String, V)>),
    /// A tagged node (`!akv {...}`, `!cas`).
    Tagged(String, Box<V>),
}

fn s(x: &str) -> V {
    V::Str(x.to_string())
}
fn int(x: u64) -> V {
    V::Int(i64::try_from(x).unwrap_or(i64::MAX))
}

/// A map under construction: in canonical mode everything is written, in display mode absent
/// and empty values are left out.
struct M {
    canon: bool,
    e: Vec<(String, V)>,
}

impl M {
    fn new(canon: bool) -> M {
        M {
            canon,
            e: Vec::new(),
        }
    }
    fn put(&mut self, k: &str, v: V) -> &mut Self {
        self.e.push((k.to_string(), v));
        self
    }
    fn opt(&mut self, k: &str, v: Option<V>) -> &mut Self {
        match v {
            Some(v) => self.put(k, v),
            None if self.canon => self.put(k, V::Null),
            None => self,
        }
    }
    fn list(&mut self, k: &str, v: Vec<V>) -> &mut Self {
        if v.is_empty() && !self.canon {
            return self;
        }
        self.put(k, V::Seq(v))
    }
    fn flag(&mut self, k: &str, b: bool) -> &mut Self {
        if !b && !self.canon {
            return self;
        }
        self.put(k, V::Bool(b))
    }
    /// A value that has a default: always in canonical mode, only when not default otherwise.
    fn dflt(&mut self, k: &str, v: &str, default: &str) -> &mut Self {
        if v == default && !self.canon {
            return self;
        }
        self.put(k, s(v))
    }
    fn done(&mut self) -> V {
        V::Map(std::mem::take(&mut self.e))
    }
}

fn strs(v: &[String]) -> Vec<V> {
    v.iter().map(|x| s(x)).collect()
}

fn key_hash_of_spki(der: &[u8]) -> String {
    veil_types::key_hash(der)
}

/// The key hash of the document's creator, if it can be computed.
pub(crate) fn creator_key_hash(c: &Creator) -> Option<String> {
    let spki = match c {
        Creator::Certificate { pem } => crate::pem::spki_from_certificate_pem(pem).ok()?,
        Creator::Signer { pem } => crate::pem::spki_from_public_key_pem(pem).ok()?,
    };
    Some(key_hash_of_spki(&spki))
}

pub(crate) fn session_value(ss: &Session, canon: bool, creator_hash: Option<&str>) -> V {
    let mut m = M::new(canon);
    m.put("name", s(&ss.name));
    m.opt("version", ss.version.as_deref().map(s));
    // predecessor is written even when null (as SCONE's read-back does) only in canonical mode.
    m.opt("predecessor", ss.predecessor.as_deref().map(s));
    m.opt("namespace_hash", ss.namespace_hash.as_deref().map(s));
    m.opt("salt", ss.salt.as_deref().map(s));
    if canon {
        let h = creator_hash
            .map(str::to_string)
            .or_else(|| ss.creator.as_ref().and_then(creator_key_hash));
        m.opt("creator", h.map(V::Str));
    } else {
        m.opt(
            "creator",
            ss.creator.as_ref().map(|c| match c {
                Creator::Certificate { pem } => s(pem),
                Creator::Signer { pem } => V::Map(vec![("signer".into(), s(pem))]),
            }),
        );
    }
    m.opt("access_policy", access_policy(&ss.access_policy, canon));
    m.list(
        "services",
        ss.services.iter().map(|x| service(x, canon)).collect(),
    );
    m.list(
        "secrets",
        ss.secrets.iter().map(|x| secret(x, canon)).collect(),
    );
    m.list(
        "images",
        ss.images.iter().map(|x| image(x, canon)).collect(),
    );
    m.list(
        "volumes",
        ss.volumes.iter().map(|x| volume(x, canon)).collect(),
    );
    m.opt("security", security(&ss.security, canon));
    m.opt(
        "secret_config",
        ss.secret_config.as_ref().map(|c| secret_config(c, canon)),
    );
    m.done()
}

fn access_policy(a: &AccessPolicy, canon: bool) -> Option<V> {
    if *a == AccessPolicy::default() && !canon {
        return None;
    }
    let mut m = M::new(canon);
    let r = |r: &Option<Rule>| {
        r.as_ref()
            .map(|r| V::Seq(r.0.iter().map(|e| entry(e, canon)).collect()))
    };
    m.opt("read", r(&a.read))
        .opt("update", r(&a.update))
        .opt("create_sessions", r(&a.create_sessions))
        .opt("list_sessions", r(&a.list_sessions));
    Some(m.done())
}

fn entry(e: &AccessEntry, canon: bool) -> V {
    let one = |k: &str, v: V| V::Map(vec![(k.to_string(), v)]);
    let list = |v: &[AccessEntry]| V::Seq(v.iter().map(|e| entry(e, canon)).collect());
    match e {
        AccessEntry::Creator => s("CREATOR"),
        AccessEntry::Any => s("ANY"),
        AccessEntry::None => s("NONE"),
        AccessEntry::KeyHash(h) if canon => one("key_hash", s(h)),
        AccessEntry::KeyHash(h) => s(h),
        AccessEntry::Certificate { spki_der, .. } if canon => {
            one("certificate_key_hash", V::Str(key_hash_of_spki(spki_der)))
        }
        AccessEntry::Certificate { pem, .. } => s(pem),
        AccessEntry::Signer { pem } if canon => one(
            "signer_key_hash",
            match crate::pem::spki_from_public_key_pem(pem) {
                Ok(d) => V::Str(key_hash_of_spki(&d)),
                Err(_) => s(pem),
            },
        ),
        AccessEntry::Signer { pem } => one("signer", s(pem)),
        AccessEntry::RequireAll(v) => one("require-all", list(v)),
        AccessEntry::RequireAtLeast(n, v) => one(&format!("require-at-least-{n}"), list(v)),
        AccessEntry::Placeholder(p) if canon => one("placeholder", V::Str(p.to_string())),
        AccessEntry::Placeholder(p) => V::Str(p.to_string()),
    }
}

fn service(x: &Service, canon: bool) -> V {
    let mut m = M::new(canon);
    m.put("name", s(&x.name));
    m.list("command", strs(&x.command));
    let env: Vec<(String, V)> = x
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), s(v)))
        .collect();
    if canon || !env.is_empty() {
        m.put("environment", V::Map(env));
    }
    m.opt("pwd", x.pwd.as_deref().map(s))
        .opt("image_name", x.image_name.as_deref().map(s))
        .opt("fspf_path", x.fspf_path.as_deref().map(s))
        .opt("fspf_key", x.fspf_key.as_deref().map(s))
        .opt("fspf_tag", x.fspf_tag.as_deref().map(s))
        .opt(
            "fspf_update_policy",
            x.fspf_update_policy.map(|p| {
                s(match p {
                    FspfUpdatePolicy::RollbackProtectedReinitializable => {
                        "rollback_protected_reinitializable"
                    }
                    FspfUpdatePolicy::NoRollbackProtection => "no_rollback_protection",
                })
            }),
        );
    let variants: Vec<V> = x
        .attestation
        .iter()
        .map(|v| {
            let mut a = M::new(canon);
            a.list("mrenclave", strs(&v.mrenclave));
            a.opt(
                "signer",
                v.signer.as_ref().map(|g| {
                    let mut sm = M::new(canon);
                    sm.put("mrsigner", s(&g.mrsigner))
                        .put("isvprodid", int(g.isvprodid))
                        .opt("isvsvn", g.isvsvn.map(int))
                        .opt("isvsvn_min", g.isvsvn_min.map(int))
                        .opt("isvsvn_max", g.isvsvn_max.map(int));
                    sm.done()
                }),
            );
            a.done()
        })
        .collect();
    m.list("attestation", variants);
    m.list("platforms", strs(&x.platforms));
    m.opt(
        "one_time_password_shared_secret",
        x.one_time_password_shared_secret.as_deref().map(s),
    );
    // The veil extension is written only when present (in canonical mode too), so that the
    // hash of every session without it is what it was before the extension existed.
    if let Some(r) = &x.node_restriction {
        let mut n = M::new(canon);
        n.put(
            "uids",
            V::Seq(r.uids.iter().map(|u| int(u64::from(*u))).collect()),
        )
        .put("cgroups", V::Seq(strs(&r.cgroups)));
        let node = n.done();
        let mut v = M::new(canon);
        v.put("node", node);
        let veil = v.done();
        m.put("veil", veil);
    }
    m.done()
}

pub(crate) fn yaml_value(y: &YamlValue, canon: bool) -> V {
    let tag = |t: &str, v: V| V::Seq(vec![s(t), v]);
    match (y, canon) {
        (YamlValue::Null, false) => V::Null,
        (YamlValue::Null, true) => V::Seq(vec![s("null")]),
        (YamlValue::Bool(b), false) => V::Bool(*b),
        (YamlValue::Bool(b), true) => tag("bool", V::Bool(*b)),
        (YamlValue::Int(i), false) => V::Int(*i),
        (YamlValue::Int(i), true) => tag("int", V::Int(*i)),
        (YamlValue::Float(f), false) => V::Raw(f.clone()),
        (YamlValue::Float(f), true) => tag("float", s(f)),
        (YamlValue::Str(x), false) => s(x),
        (YamlValue::Str(x), true) => tag("str", s(x)),
        (YamlValue::Seq(v), c) => {
            let items = V::Seq(v.iter().map(|i| yaml_value(i, c)).collect());
            if c { tag("seq", items) } else { items }
        }
        (YamlValue::Map(m), c) => {
            let map = V::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), yaml_value(v, c)))
                    .collect(),
            );
            if c { tag("map", map) } else { map }
        }
    }
}

fn secret(x: &Secret, canon: bool) -> V {
    let mut m = M::new(canon);
    m.put("name", s(&x.name)).put("kind", s(x.kind.as_str()));
    m.opt(
        "value",
        x.value.as_ref().map(|v| match (v, canon) {
            (SecretValue::Text(t), false) => s(t),
            (SecretValue::Text(t), true) => V::Map(vec![("text".into(), s(t))]),
            (SecretValue::Bytes(b), false) => V::Str(hex::encode(b)),
            (SecretValue::Bytes(b), true) => V::Map(vec![("hex".into(), V::Str(hex::encode(b)))]),
            (SecretValue::Yaml(y), false) => yaml_value(y, false),
            (SecretValue::Yaml(y), true) => V::Map(vec![("yaml".into(), yaml_value(y, true))]),
        }),
    );
    m.opt("size", x.size.map(|n| int(n as u64)))
        .flag("migrate", x.migrate)
        .opt("key_type", x.key_type.map(|k| s(k.as_str())))
        .opt("private_key", x.private_key.as_deref().map(s))
        .opt("issuer", x.issuer.as_deref().map(s))
        .opt("common_name", x.common_name.as_deref().map(s))
        .opt(
            "endpoint",
            x.endpoint.map(|e| {
                s(match e {
                    Endpoint::Server => "server",
                    Endpoint::Client => "client",
                })
            }),
        )
        .list(
            "san",
            x.san
                .iter()
                .map(|n| match n {
                    San::Dns(d) => V::Str(format!("dns:{d}")),
                    San::Ip(ip) => V::Str(format!("ip:{ip}")),
                })
                .collect(),
        )
        .list("dns", strs(&x.dns));
    if canon {
        m.opt("valid_for", x.valid_for.map(|d| int(d.as_secs())));
    } else {
        m.opt(
            "valid_for",
            x.valid_for.map(|d| V::Str(format!("{}s", d.as_secs()))),
        );
    }
    m.list(
        "export",
        x.export
            .iter()
            .map(|e| {
                let mut em = M::new(canon);
                em.opt("session", e.session.as_deref().map(s))
                    .opt("namespace", e.namespace.as_deref().map(s))
                    .opt("session_hash", e.session_hash.as_deref().map(s));
                em.done()
            })
            .collect(),
    )
    .flag("export_public", x.export_public)
    .opt(
        "import",
        x.import.as_ref().map(|i| {
            let mut im = M::new(canon);
            im.put("session", s(&i.session))
                .put("secret", s(&i.secret))
                .opt("session_hash", i.session_hash.as_deref().map(s));
            im.done()
        }),
    )
    .opt(
        "import_akv",
        x.import_akv.as_ref().map(|a| {
            let mut am = M::new(canon);
            am.put("vault", s(&a.vault))
                .opt("secret_name", a.secret_name.as_deref().map(s))
                .opt("token", a.token.as_deref().map(s))
                .opt("decryption_key", a.decryption_key.as_deref().map(s));
            am.done()
        }),
    );
    m.done()
}

fn image(x: &Image, canon: bool) -> V {
    let mut m = M::new(canon);
    m.put("name", s(&x.name));
    m.list(
        "injection_files",
        x.injection_files
            .iter()
            .map(|f| {
                let mut fm = M::new(canon);
                fm.put("path", s(&f.path))
                    .opt("content", f.content.as_deref().map(s));
                match (f.permission, canon) {
                    (Some(p), false) => {
                        fm.put("permission", V::Raw(format!("0o{p:o}")));
                    }
                    (p, _) => {
                        fm.opt("permission", p.map(|p| int(u64::from(p))));
                    }
                }
                fm.done()
            })
            .collect(),
    );
    m.list(
        "volumes",
        x.volumes
            .iter()
            .map(|v| {
                let mut vm = M::new(canon);
                vm.put("name", s(&v.name)).put("path", s(&v.path)).dflt(
                    "update_policy",
                    v.update_policy.as_str(),
                    "rollback_protected",
                );
                vm.done()
            })
            .collect(),
    );
    m.list("provide_secrets", strs(&x.provide_secrets));
    m.done()
}

fn volume(x: &Volume, canon: bool) -> V {
    let mut m = M::new(canon);
    m.put("name", s(&x.name))
        .opt("fspf_key", x.fspf_key.as_deref().map(s))
        .opt("fspf_tag", x.fspf_tag.as_deref().map(s))
        .dflt(
            "files",
            match x.files {
                FileProtection::Encrypted => "encrypted",
                FileProtection::AuthenticatedOnly => "authenticated-only",
            },
            "encrypted",
        )
        .list(
            "export",
            x.export
                .iter()
                .map(|e| {
                    let mut to = M::new(canon);
                    to.put("session", s(&e.session))
                        .opt("session_hash", e.session_hash.as_deref().map(s));
                    let mut em = M::new(canon);
                    em.put("to", to.done())
                        .opt("update_policy", e.update_policy.map(|u| s(u.as_str())))
                        .opt("volume_alias", e.volume_alias.as_deref().map(s));
                    em.done()
                })
                .collect(),
        )
        .opt(
            "import",
            x.import.as_ref().map(|i| {
                V::Map(vec![
                    ("session".into(), s(&i.session)),
                    ("volume".into(), s(&i.volume)),
                ])
            }),
        );
    m.done()
}

fn security(x: &Security, canon: bool) -> Option<V> {
    if *x == Security::default() && !canon {
        return None;
    }
    let mut m = M::new(canon);
    m.opt(
        "attestation",
        x.attestation.as_ref().map(|a| {
            let mut am = M::new(canon);
            // `mode` is always written so that an empty `attestation: {}` survives a round trip.
            am.put("mode", s(a.mode.as_str()))
                .list("tolerate", strs(&a.tolerate));
            match &a.ignore_advisories {
                Advisories::None => {
                    am.list("ignore_advisories", Vec::new());
                }
                Advisories::List(v) => {
                    am.put("ignore_advisories", V::Seq(strs(v)));
                }
                Advisories::All => {
                    am.put("ignore_advisories", s("*"));
                }
            }
            am.opt(
                "one_time_password_shared_secret",
                a.one_time_password_shared_secret.as_deref().map(s),
            )
            .list(
                "trusted_scone_qe_pubkeys",
                strs(&a.trusted_scone_qe_pubkeys),
            )
            .opt("must_be_sgx_local", a.must_be_sgx_local.map(V::Bool))
            .opt("url", a.url.as_deref().map(s));
            am.done()
        }),
    )
    .opt(
        "service_access_token",
        x.service_access_token.as_deref().map(s),
    )
    .flag("singleton_enclaves", x.singleton_enclaves);
    Some(m.done())
}

fn secret_config(c: &SecretConfig, canon: bool) -> V {
    match (c, canon) {
        (SecretConfig::Cas, false) => V::Map(vec![(
            "store_in".into(),
            V::Tagged("!cas".into(), Box::new(V::Null)),
        )]),
        (SecretConfig::Cas, true) => V::Map(vec![("store_in".into(), s("cas"))]),
        (SecretConfig::Akv { token, vault }, _) => {
            let mut am = M::new(canon);
            am.opt("token", token.as_deref().map(s))
                .opt("vault", vault.as_deref().map(s));
            let inner = am.done();
            if canon {
                V::Map(vec![("store_in".into(), s("akv")), ("akv".into(), inner)])
            } else {
                V::Map(vec![(
                    "store_in".into(),
                    V::Tagged("!akv".into(), Box::new(inner)),
                )])
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical JSON.

fn json_str(out: &mut String, x: &str) {
    out.push_str(&serde_json::Value::String(x.to_string()).to_string());
}

pub(crate) fn write_canonical(out: &mut String, v: &V) {
    match v {
        V::Null => out.push_str("null"),
        V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        V::Int(i) => out.push_str(&i.to_string()),
        V::Raw(r) | V::Str(r) => json_str(out, r),
        V::Seq(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, x);
            }
            out.push(']');
        }
        V::Map(entries) => {
            let mut sorted: Vec<&(String, V)> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, x)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(out, k);
                out.push(':');
                write_canonical(out, x);
            }
            out.push('}');
        }
        V::Tagged(t, x) => {
            out.push('{');
            json_str(out, t);
            out.push(':');
            write_canonical(out, x);
            out.push('}');
        }
    }
}

/// Plain JSON (for `--json` output), keys in document order.
pub(crate) fn to_json_value(v: &V) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        V::Null => J::Null,
        V::Bool(b) => J::Bool(*b),
        V::Int(i) => J::from(*i),
        V::Raw(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(J::Number)
            .unwrap_or_else(|| J::String(r.clone())),
        V::Str(x) => J::String(x.clone()),
        V::Seq(items) => J::Array(items.iter().map(to_json_value).collect()),
        V::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, x)| (k.clone(), to_json_value(x)))
                .collect(),
        ),
        V::Tagged(t, x) => {
            let mut o = serde_json::Map::new();
            o.insert(t.trim_start_matches('!').to_string(), to_json_value(x));
            J::Object(o)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// YAML emitter (block style).

fn needs_quotes(x: &str) -> bool {
    const RESERVED: &[&str] = &[
        "null", "~", "true", "false", "yes", "no", "on", "off", "y", "n",
    ];
    if x.is_empty() || RESERVED.contains(&x.to_ascii_lowercase().as_str()) {
        return true;
    }
    let Some(first) = x.chars().next() else {
        return true;
    };
    if !(first.is_ascii_alphabetic() || first == '/' || first == '_') {
        // Leading digits, dots, signs: could be read as numbers by other YAML tools.
        return true;
    }
    !x.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '@' | '+' | '=' | '~')
    })
}

fn quote(x: &str) -> String {
    let mut out = String::with_capacity(x.len() + 2);
    out.push('"');
    for c in x.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20
                || (0x7f..=0x9f).contains(&(c as u32))
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn scalar_text(x: &str) -> String {
    if needs_quotes(x) {
        quote(x)
    } else {
        x.to_string()
    }
}

/// Whether a string can be written as a literal block scalar (`|`) and read back unchanged.
fn literal_ok(x: &str) -> bool {
    x.len() > 1
        && x.ends_with('\n')
        && !x.ends_with("\n\n")
        && !x.starts_with([' ', '\n', '\t'])
        && x.contains('\n')
        && x.chars().all(|c| {
            c == '\n'
                || (!c.is_control()
                    && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{85}'))
        })
        && x.lines().all(|l| !l.ends_with([' ', '\t']))
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn inline(v: &V) -> Option<String> {
    match v {
        V::Null => Some("null".into()),
        V::Bool(b) => Some(b.to_string()),
        V::Int(i) => Some(i.to_string()),
        V::Raw(r) => Some(r.clone()),
        V::Str(x) if !literal_ok(x) => Some(scalar_text(x)),
        V::Seq(v) if v.is_empty() => Some("[]".into()),
        V::Map(m) if m.is_empty() => Some("{}".into()),
        V::Tagged(t, x) if matches!(**x, V::Null) => Some(t.clone()),
        _ => None,
    }
}

/// Write a value that follows `key:` or `-` (the caller wrote those, without the space).
/// `step` is the indentation width (2 in normalised output).
fn emit_after(out: &mut String, v: &V, indent: usize, in_seq: bool, step: usize) {
    if let Some(t) = inline(v) {
        out.push(' ');
        out.push_str(&t);
        out.push('\n');
        return;
    }
    match v {
        V::Str(x) => {
            out.push_str(" |\n");
            for line in x.lines() {
                if !line.is_empty() {
                    pad(out, indent + step);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        V::Map(entries) if in_seq => {
            let mut tmp = String::new();
            emit_map(&mut tmp, entries, indent + step, step);
            pad(out, step - 1);
            out.push_str(&tmp[indent + step..]);
        }
        V::Seq(items) if in_seq => {
            let mut tmp = String::new();
            emit_seq(&mut tmp, items, indent + step, step);
            pad(out, step - 1);
            out.push_str(&tmp[indent + step..]);
        }
        V::Map(entries) => {
            out.push('\n');
            emit_map(out, entries, indent + step, step);
        }
        V::Seq(items) => {
            out.push('\n');
            emit_seq(out, items, indent + step, step);
        }
        V::Tagged(t, x) => {
            out.push(' ');
            out.push_str(t);
            emit_after(out, x, indent, false, step);
        }
        _ => {}
    }
}

fn emit_map(out: &mut String, entries: &[(String, V)], indent: usize, step: usize) {
    for (k, v) in entries {
        pad(out, indent);
        out.push_str(&scalar_text(k));
        out.push(':');
        emit_after(out, v, indent, false, step);
    }
}

fn emit_seq(out: &mut String, items: &[V], indent: usize, step: usize) {
    for v in items {
        pad(out, indent);
        out.push('-');
        emit_after(out, v, indent, true, step);
    }
}

/// Block-style YAML with `step` spaces of indentation (at least 2).
pub(crate) fn to_yaml(v: &V, step: usize) -> String {
    let step = step.max(2);
    let mut out = String::new();
    match v {
        V::Map(entries) => emit_map(&mut out, entries, 0, step),
        other => emit_after(&mut out, other, 0, false, step),
    }
    out
}

impl Session {
    /// This session as `session read` shows it (design-notes decision 22), for every caller:
    /// every piece of secret material replaced by [`REDACTED`]:
    ///
    /// * `secrets[].value`, whatever the kind (ascii, binary, keys, certificates, config
    ///   fragments): the whole value;
    /// * `services[].fspf_key`, `volumes[].fspf_key`, `services[].one_time_password_shared_secret`,
    ///   `security.attestation.one_time_password_shared_secret`,
    ///   `security.service_access_token`, `secrets[].import_akv.token` and `.decryption_key`,
    ///   `secret_config.store_in: !akv {token}`: when literal; a field that is exactly one
    ///   `$$SCONE::name$$` placeholder is kept (it names a secret; the value stays in the CAS).
    ///
    /// Not redacted: arguments, environment, injection-file content (configuration shown to
    /// readers; secrets belong in `secrets` and are referenced by placeholders), tags,
    /// measurements, names, and certificates of the creator and access policy (public).
    ///
    /// For display only: the result does not pass [`crate::parse`] when anything was redacted
    /// (the marker is refused), and [`crate::parse_read_back`] reads its YAML back. Hash the
    /// unredacted session ([`Session::hash`]), never this one.
    pub fn redacted(&self) -> Session {
        let mut s = self.clone();
        for x in &mut s.services {
            redact(&mut x.fspf_key);
            redact(&mut x.one_time_password_shared_secret);
        }
        for x in &mut s.secrets {
            if x.value.is_some() {
                x.value = Some(SecretValue::Text(REDACTED.to_string()));
            }
            if let Some(a) = &mut x.import_akv {
                redact(&mut a.token);
                redact(&mut a.decryption_key);
            }
        }
        for v in &mut s.volumes {
            redact(&mut v.fspf_key);
        }
        redact(&mut s.security.service_access_token);
        if let Some(a) = &mut s.security.attestation {
            redact(&mut a.one_time_password_shared_secret);
        }
        if let Some(SecretConfig::Akv { token, .. }) = &mut s.secret_config {
            redact(token);
        }
        s
    }

    /// Normalised YAML of [`Session::redacted`]: what `session read` returns.
    pub fn to_yaml_redacted(&self) -> String {
        self.redacted().to_yaml()
    }

    /// Normalised JSON of [`Session::redacted`].
    pub fn to_json_redacted(&self) -> serde_json::Value {
        self.redacted().to_json()
    }

    /// Normalised YAML: parses back to an equal `Session` (comments and formatting are not kept;
    /// defaults are left out; a `command` string is written as a list).
    pub fn to_yaml(&self) -> String {
        to_yaml(&session_value(self, false, None), 2)
    }

    /// Like [`Session::to_yaml`] with `step` spaces of indentation (tests use it to check that
    /// the hash does not depend on formatting).
    pub fn to_yaml_indented(&self, step: usize) -> String {
        to_yaml(&session_value(self, false, None), step)
    }

    /// Normalised JSON, same content as [`Session::to_yaml`].
    pub fn to_json(&self) -> serde_json::Value {
        to_json_value(&session_value(self, false, None))
    }

    /// The canonical form (see the module documentation of `canon`). `creator_key_hash` is the
    /// creator's key hash (`veil_types::key_hash` of its SPKI); `None` uses the document's
    /// `creator` if it has one.
    pub fn canonical_bytes(&self, creator_key_hash: Option<&str>) -> Vec<u8> {
        let mut out = String::from(CANONICAL_DOMAIN);
        out.push('\n');
        write_canonical(&mut out, &session_value(self, true, creator_key_hash));
        out.into_bytes()
    }

    /// The session hash: lowercase hex SHA-256 of [`Session::canonical_bytes`] (64 characters).
    pub fn hash(&self, creator_key_hash: Option<&str>) -> String {
        let d = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &self.canonical_bytes(creator_key_hash),
        );
        hex::encode(d.as_ref())
    }
}
