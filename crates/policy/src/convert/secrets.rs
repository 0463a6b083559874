//! `secrets` and `secret_config`: the secrets the CAS generates, holds, exports or imports, and
//! where it stores them.
//!
//! * `name` and `kind` are required. A kind veil does not support is an error (its own keys are
//!   accepted so that the kind error is the one shown); the kind is looked at first because it
//!   decides which keys apply.
//! * Keys for other kinds are errors: `size` (ascii, binary; 1 to 1048576), `key_type`
//!   (private-key), `private_key` (public-key, x509, x509-ca), `issuer`, `common_name`,
//!   `valid_for` (x509, x509-ca), `endpoint`, `san`, `dns` (x509).
//! * `value` by kind: config-fragment takes any YAML value, kept typed (`1` and `"1"` differ);
//!   ascii a string; binary non-empty hex; private-key, public-key, x509 and x509-ca one
//!   well-formed PEM block of the right label.
//! * `valid_for` is one number and one unit (`90 days`, `59d`, `24h`, `2w`, ...), more than zero;
//!   `san` entries are `dns:NAME` or `ip:ADDRESS`.
//! * `export` is one target or a list, each with exactly one of `session` and `namespace` and an
//!   optional `session_hash`. `import` (`session`, `secret`, optional `session_hash`) excludes
//!   `value`; `import_akv` (not supported yet: a warning) excludes `import`. A config fragment
//!   needs `value` or `import`. `migrate` and `export_public` default to `false`.
//! * `secret_config.store_in` is `!cas` (no value) or `!akv {token, vault}` (not supported yet).

use std::collections::BTreeMap;
use std::time::Duration;

use super::reader::{Cx, clip, idx, join};
use crate::diag::NOT_SUPPORTED_YET;
use crate::model::*;
use crate::yaml::{Kind, Node};

const SECRET_KEYS: &[&str] = &[
    "name",
    "kind",
    "value",
    "size",
    "migrate",
    "key_type",
    "private_key",
    "issuer",
    "common_name",
    "endpoint",
    "san",
    "dns",
    "valid_for",
    "export",
    "export_public",
    "import",
    "import_akv",
];

/// Keys of secret kinds veil does not support; accepted only so the kind error is the one shown.
const UNSUPPORTED_KIND_KEYS: &[&str] = &[
    "tenant_id",
    "client_id",
    "application_secret",
    "certificate_thumbprint",
    "signer",
    "alg",
    "validity",
    "payload",
];

pub(super) fn secret(cx: &mut Cx, n: &Node, path: &str) -> Option<Secret> {
    // The kind decides which keys are allowed: look at it first.
    let kind_node = match &n.kind {
        Kind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.scalar() == Some("kind"))
            .map(|(_, v)| v),
        _ => None,
    };
    let kp = join(path, "kind");
    let kind_name = kind_node.and_then(|k| k.scalar()).map(str::to_string);
    if let (Some(kn), Some(k)) = (kind_node, &kind_name)
        && UNSUPPORTED_SECRET_KINDS.contains(&k.as_str())
    {
        cx.err(kn.pos, &kp, format!("kind `{k}` {NOT_SUPPORTED_YET}"));
        let mut all: Vec<&str> = SECRET_KEYS.to_vec();
        all.extend_from_slice(UNSUPPORTED_KIND_KEYS);
        cx.map(n, path, &all);
        return None;
    }
    let f = cx.map(n, path, SECRET_KEYS)?;
    let name = cx.required_string(&f, "name", path).unwrap_or_default();
    let kind = match f.get("kind") {
        None => {
            cx.err(f.pos, path, "missing required key `kind`");
            None
        }
        Some(k) => {
            let choices: Vec<(&str, SecretKind)> =
                SecretKind::ALL.iter().map(|k| (k.as_str(), *k)).collect();
            cx.one_of(k, &kp, &choices)
        }
    };
    let kind = kind?;
    let mut s = Secret {
        name,
        kind,
        value: None,
        size: None,
        migrate: cx.opt_bool(&f, "migrate", path).unwrap_or(false),
        key_type: None,
        private_key: cx.opt_string(&f, "private_key", path),
        issuer: cx.opt_string(&f, "issuer", path),
        common_name: cx.opt_string(&f, "common_name", path),
        endpoint: None,
        san: Vec::new(),
        dns: Vec::new(),
        valid_for: None,
        export: Vec::new(),
        export_public: cx.opt_bool(&f, "export_public", path).unwrap_or(false),
        import: None,
        import_akv: None,
    };
    let only = |cx: &mut Cx, key: &str, kinds: &[SecretKind]| {
        if let Some(n) = f.present(key)
            && !kinds.contains(&kind)
        {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            cx.err(
                n.pos,
                &join(path, key),
                format!(
                    "`{key}` applies only to {} secrets, not `{kind}`",
                    names.join("/")
                ),
            );
        }
    };
    use SecretKind as K;
    only(cx, "size", &[K::Ascii, K::Binary]);
    only(cx, "key_type", &[K::PrivateKey]);
    only(cx, "private_key", &[K::PublicKey, K::X509, K::X509Ca]);
    only(cx, "issuer", &[K::X509, K::X509Ca]);
    only(cx, "common_name", &[K::X509, K::X509Ca]);
    only(cx, "valid_for", &[K::X509, K::X509Ca]);
    only(cx, "endpoint", &[K::X509]);
    only(cx, "san", &[K::X509]);
    only(cx, "dns", &[K::X509]);
    if let Some(v) = cx.opt_uint(&f, "size", path) {
        let p = join(path, "size");
        let pos = f.get("size").map(|n| n.pos).unwrap_or(f.pos);
        if v == 0 || v > 1 << 20 {
            cx.err(pos, &p, "`size` must be between 1 and 1048576");
        } else {
            s.size = usize::try_from(v).ok();
        }
    }
    if let Some(k) = f.present("key_type") {
        let choices: Vec<(&str, KeyType)> = KeyType::ALL.iter().map(|k| (k.as_str(), *k)).collect();
        s.key_type = cx.one_of(k, &join(path, "key_type"), &choices);
    }
    if let Some(e) = f.present("endpoint") {
        s.endpoint = cx.one_of(
            e,
            &join(path, "endpoint"),
            &[("server", Endpoint::Server), ("client", Endpoint::Client)],
        );
    }
    if let Some(sn) = f.present("san") {
        let p = join(path, "san");
        for (ip, item) in cx.list(sn, &p) {
            let Some(v) = cx.string(item, &ip) else {
                continue;
            };
            if let Some(d) = v.strip_prefix("dns:") {
                if d.is_empty() {
                    cx.err(item.pos, &ip, "empty DNS name");
                } else {
                    s.san.push(San::Dns(d.to_string()));
                }
            } else if let Some(a) = v.strip_prefix("ip:") {
                match a.parse() {
                    Ok(ip) => s.san.push(San::Ip(ip)),
                    Err(_) => cx.err(item.pos, &ip, format!("invalid IP address `{}`", clip(a))),
                }
            } else {
                cx.err(
                    item.pos,
                    &ip,
                    format!("expected `dns:NAME` or `ip:ADDRESS`, found `{}`", clip(&v)),
                );
            }
        }
    }
    if let Some(d) = f.present("dns") {
        s.dns = cx.strings(d, &join(path, "dns"));
    }
    if let Some(v) = f.present("valid_for") {
        let p = join(path, "valid_for");
        if let Some(t) = cx.string(v, &p) {
            match parse_duration(&t) {
                Some(d) => s.valid_for = Some(d),
                None => cx.err(
                    v.pos,
                    &p,
                    format!(
                        "invalid duration `{}`; write e.g. `90 days`, `59d`, `24h`",
                        clip(&t)
                    ),
                ),
            }
        }
    }
    if let Some(v) = f.present("value") {
        s.value = secret_value(cx, v, &join(path, "value"), kind);
    }
    if let Some(e) = f.present("export") {
        let p = join(path, "export");
        let items: Vec<(String, &Node)> = match e.kind {
            Kind::Map(_) => vec![(p.clone(), e)],
            _ => cx.list(e, &p),
        };
        for (ip, item) in items {
            let Some(ef) = cx.map(item, &ip, &["session", "namespace", "session_hash"]) else {
                continue;
            };
            let t = ExportTarget {
                session: cx.opt_string(&ef, "session", &ip),
                namespace: cx.opt_string(&ef, "namespace", &ip),
                session_hash: cx.opt_hex(&ef, "session_hash", &ip, 64),
            };
            match (&t.session, &t.namespace) {
                (Some(_), Some(_)) | (None, None) => cx.err(
                    item.pos,
                    &ip,
                    "an export needs exactly one of `session` and `namespace`",
                ),
                _ => s.export.push(t),
            }
        }
    }
    if let Some(i) = f.present("import") {
        let p = join(path, "import");
        if let Some(imf) = cx.map(i, &p, &["session", "secret", "session_hash"]) {
            let session = cx.required_string(&imf, "session", &p);
            let secret = cx.required_string(&imf, "secret", &p);
            let session_hash = cx.opt_hex(&imf, "session_hash", &p, 64);
            if let (Some(session), Some(secret)) = (session, secret) {
                s.import = Some(ImportSource {
                    session,
                    secret,
                    session_hash,
                });
            }
        }
        if s.value.is_some() {
            cx.err(i.pos, &p, "`import` and `value` are mutually exclusive");
        }
    }
    if let Some(a) = f.present("import_akv") {
        let p = join(path, "import_akv");
        if let Some(af) = cx.map(a, &p, &["vault", "secret_name", "token", "decryption_key"])
            && let Some(vault) = cx.required_string(&af, "vault", &p)
        {
            s.import_akv = Some(AkvImport {
                vault,
                secret_name: cx.opt_string(&af, "secret_name", &p),
                token: cx.opt_secret_string(&af, "token", &p),
                decryption_key: cx.opt_secret_string(&af, "decryption_key", &p),
            });
            cx.unsupported(a.pos, &p);
        }
        if s.import.is_some() {
            cx.err(
                a.pos,
                &p,
                "`import` and `import_akv` are mutually exclusive",
            );
        }
    }
    if kind == K::ConfigFragment
        && s.value.is_none()
        && s.import.is_none()
        && f.get("value").is_none()
    {
        cx.err(
            f.pos,
            path,
            "a config-fragment secret needs `value` or `import`",
        );
    }
    Some(s)
}

/// Parse `90 days`, `59d`, `24h`, `30m`, `10s`, `2w` (one number and one unit).
fn parse_duration(s: &str) -> Option<Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        "y" | "year" | "years" => 365 * 86_400,
        _ => return None,
    };
    let secs = n.checked_mul(mult)?;
    (secs > 0).then(|| Duration::from_secs(secs))
}

fn secret_value(cx: &mut Cx, n: &Node, path: &str, kind: SecretKind) -> Option<SecretValue> {
    use SecretKind as K;
    if let Some(r) = cx.kept_redacted(n) {
        return Some(SecretValue::Text(r));
    }
    match kind {
        K::ConfigFragment => yaml_value(cx, n, path).map(SecretValue::Yaml),
        K::Ascii => cx.string(n, path).map(SecretValue::Text),
        K::Binary => {
            let s = cx.string(n, path)?;
            match hex::decode(s.trim()) {
                Ok(b) if !b.is_empty() => Some(SecretValue::Bytes(b)),
                _ => {
                    cx.err(n.pos, path, "a binary secret's value must be non-empty hex");
                    None
                }
            }
        }
        K::PrivateKey | K::PublicKey | K::X509 | K::X509Ca => {
            let s = cx.string(n, path)?;
            let check = match kind {
                K::PrivateKey => crate::pem::check_private_key_pem(&s),
                K::PublicKey => crate::pem::spki_from_public_key_pem(&s).map(|_| ()),
                _ => crate::pem::spki_from_certificate_pem(&s).map(|_| ()),
            };
            match check {
                Ok(()) => Some(SecretValue::Text(s)),
                Err(e) => {
                    cx.err(n.pos, path, e);
                    None
                }
            }
        }
    }
}

fn yaml_value(cx: &mut Cx, n: &Node, path: &str) -> Option<YamlValue> {
    if !cx.reject_tag(n, path) {
        return None;
    }
    Some(match &n.kind {
        Kind::Scalar { value, .. } if value.contains(REDACTED) => {
            cx.redaction_marker(n.pos, path);
            return None;
        }
        Kind::Scalar { value, plain } => {
            if !plain {
                YamlValue::Str(value.clone())
            } else if n.is_null() {
                YamlValue::Null
            } else if matches!(value.as_str(), "true" | "True" | "TRUE") {
                YamlValue::Bool(true)
            } else if matches!(value.as_str(), "false" | "False" | "FALSE") {
                YamlValue::Bool(false)
            } else if let Ok(i) = value.parse::<i64>() {
                YamlValue::Int(i)
            } else if value.parse::<f64>().is_ok() && value.bytes().any(|b| b.is_ascii_digit()) {
                YamlValue::Float(value.clone())
            } else {
                YamlValue::Str(value.clone())
            }
        }
        Kind::Seq(items) => {
            let mut v = Vec::new();
            for (i, item) in items.iter().enumerate() {
                v.push(yaml_value(cx, item, &idx(path, i))?);
            }
            YamlValue::Seq(v)
        }
        Kind::Map(entries) => {
            let mut m = BTreeMap::new();
            for (k, v) in entries {
                let Some(key) = k.scalar() else {
                    cx.err(k.pos, path, "map keys must be strings");
                    return None;
                };
                let val = yaml_value(cx, v, &join(path, key))?;
                if m.insert(key.to_string(), val).is_some() {
                    cx.err(k.pos, &join(path, key), format!("duplicate key `{key}`"));
                }
            }
            YamlValue::Map(m)
        }
    })
}

pub(super) fn secret_config(cx: &mut Cx, n: &Node, path: &str) -> Option<SecretConfig> {
    let f = cx.map(n, path, &["store_in"])?;
    let p = join(path, "store_in");
    let Some(st) = f.get("store_in") else {
        cx.err(f.pos, path, "missing required key `store_in`");
        return None;
    };
    match st.tag.as_deref() {
        Some("!cas") => {
            if !st.is_null() && st.scalar() != Some("") {
                cx.err(st.pos, &p, "`!cas` takes no value");
                return None;
            }
            Some(SecretConfig::Cas)
        }
        Some("!akv") => {
            let untagged = Node {
                tag: None,
                ..st.clone()
            };
            let af = cx.map(&untagged, &p, &["token", "vault"])?;
            let cfg = SecretConfig::Akv {
                token: cx.opt_secret_string(&af, "token", &p),
                vault: cx.opt_string(&af, "vault", &p),
            };
            cx.warn(st.pos, &p, format!("`{p}: !akv` {NOT_SUPPORTED_YET}"));
            Some(cfg)
        }
        _ => {
            cx.err(st.pos, &p, "expected `!cas` or `!akv {token, vault}`");
            None
        }
    }
}
