//! Conversion of the positioned YAML tree into the typed model. Checks shapes and types of every
//! field (unknown keys get a "did you mean" suggestion) and records the position of every field.
//! Cross-references and placeholders are checked afterwards by `validate`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::diag::{Diagnostic, NOT_SUPPORTED_YET, Severity};
use crate::model::*;
use crate::placeholder::{Placeholder, find_placeholders, whole_placeholder};
use crate::yaml::{Kind, Node};

/// Collects diagnostics and positions while converting.
pub(crate) struct Cx<'a> {
    pub file: &'a str,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    pub positions: BTreeMap<String, Pos>,
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

impl<'a> Cx<'a> {
    pub fn new(file: &'a str) -> Self {
        Cx {
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
            positions: BTreeMap::new(),
        }
    }

    fn diag(&self, pos: Pos, path: &str, message: String, severity: Severity) -> Diagnostic {
        Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            col: pos.col,
            path: path.to_string(),
            message,
            severity,
        }
    }

    pub fn err(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        let d = self.diag(pos, path, message.into(), Severity::Error);
        self.errors.push(d);
    }

    pub fn warn(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        let d = self.diag(pos, path, message.into(), Severity::Warning);
        self.warnings.push(d);
    }

    /// Warning "`path` is not supported yet" (design-notes decision 14).
    pub fn unsupported(&mut self, pos: Pos, path: &str) {
        self.warn(pos, path, format!("`{path}` {NOT_SUPPORTED_YET}"));
    }

    fn expect(&mut self, node: &Node, path: &str, what: &str) {
        self.err(
            node.pos,
            path,
            format!("expected {what}, found {}", node.describe()),
        );
    }

    fn reject_tag(&mut self, node: &Node, path: &str) -> bool {
        match &node.tag {
            Some(t) if !t.starts_with("!!") => {
                self.err(node.pos, path, format!("unexpected YAML tag `{t}`"));
                false
            }
            _ => true,
        }
    }

    /// Check `node` is a map with string keys from `allowed`; unknown and duplicate keys are
    /// errors. Records the position of every field.
    fn map<'n>(&mut self, node: &'n Node, path: &str, allowed: &[&str]) -> Option<Fields<'n>> {
        self.positions.entry(path.to_string()).or_insert(node.pos);
        if !self.reject_tag(node, path) {
            return None;
        }
        let Kind::Map(entries) = &node.kind else {
            self.expect(node, path, "a map");
            return None;
        };
        let mut fields: Vec<(&'n str, &'n Node)> = Vec::new();
        for (k, v) in entries {
            let Some(key) = k.scalar() else {
                self.err(k.pos, path, "map keys must be strings");
                continue;
            };
            let fpath = join(path, key);
            if !allowed.contains(&key) {
                let msg = match suggest(key, allowed) {
                    Some(s) => format!("unknown key `{key}`; did you mean `{s}`?"),
                    None => format!(
                        "unknown key `{key}`; expected one of: {}",
                        allowed.join(", ")
                    ),
                };
                self.err(k.pos, &fpath, msg);
                continue;
            }
            if fields.iter().any(|(f, _)| *f == key) {
                self.err(k.pos, &fpath, format!("duplicate key `{key}`"));
                continue;
            }
            self.positions.insert(fpath, v.pos);
            fields.push((key, v));
        }
        Some(Fields {
            pos: node.pos,
            fields,
        })
    }

    /// A string scalar (numbers and booleans are taken as written).
    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        if !self.reject_tag(node, path) {
            return None;
        }
        match &node.kind {
            Kind::Scalar { value, .. } if !node.is_null() => {
                if value.contains('\0') {
                    self.err(node.pos, path, "NUL bytes are not allowed");
                    return None;
                }
                Some(value.clone())
            }
            _ => {
                self.expect(node, path, "a string");
                None
            }
        }
    }

    /// An optional string: absent or null = `None`.
    fn opt_string(&mut self, f: &Fields, key: &str, path: &str) -> Option<String> {
        let n = f.get(key)?;
        if n.is_null() {
            return None;
        }
        self.string(n, &join(path, key))
    }

    fn required_string(&mut self, f: &Fields, key: &str, path: &str) -> Option<String> {
        match f.get(key) {
            Some(n) => self.string(n, &join(path, key)),
            None => {
                self.err(f.pos, path, format!("missing required key `{key}`"));
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.scalar() {
            Some("true" | "True" | "TRUE") => Some(true),
            Some("false" | "False" | "FALSE") => Some(false),
            _ => {
                self.expect(node, path, "`true` or `false`");
                None
            }
        }
    }

    fn opt_bool(&mut self, f: &Fields, key: &str, path: &str) -> Option<bool> {
        let n = f.get(key)?;
        if n.is_null() {
            return None;
        }
        self.boolean(n, &join(path, key))
    }

    fn uint(&mut self, node: &Node, path: &str) -> Option<u64> {
        match node.scalar().map(|s| s.parse::<u64>()) {
            Some(Ok(v)) => Some(v),
            _ => {
                self.expect(node, path, "a non-negative integer");
                None
            }
        }
    }

    fn opt_uint(&mut self, f: &Fields, key: &str, path: &str) -> Option<u64> {
        let n = f.get(key)?;
        if n.is_null() {
            return None;
        }
        self.uint(n, &join(path, key))
    }

    /// A list of items (null = empty list).
    fn list<'n>(&mut self, node: &'n Node, path: &str) -> Vec<(String, &'n Node)> {
        self.positions.entry(path.to_string()).or_insert(node.pos);
        if node.is_null() {
            return Vec::new();
        }
        if !self.reject_tag(node, path) {
            return Vec::new();
        }
        match &node.kind {
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let p = idx(path, i);
                    self.positions.insert(p.clone(), n.pos);
                    (p, n)
                })
                .collect(),
            _ => {
                self.expect(node, path, "a list");
                Vec::new()
            }
        }
    }

    /// A list of strings, or a single string standing for a one-element list.
    fn strings_or_one(&mut self, node: &Node, path: &str) -> Vec<String> {
        if let Kind::Scalar { .. } = node.kind
            && !node.is_null()
        {
            self.positions.insert(path.to_string(), node.pos);
            return self.string(node, path).into_iter().collect();
        }
        self.strings(node, path)
    }

    fn strings(&mut self, node: &Node, path: &str) -> Vec<String> {
        let items = self.list(node, path);
        items
            .into_iter()
            .filter_map(|(p, n)| self.string(n, &p))
            .collect()
    }

    fn one_of<T: Copy>(&mut self, node: &Node, path: &str, choices: &[(&str, T)]) -> Option<T> {
        let s = self.string(node, path)?;
        if let Some((_, v)) = choices.iter().find(|(n, _)| *n == s) {
            return Some(*v);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let msg = match suggest(&s, &names) {
            Some(x) => format!("invalid value `{s}`; did you mean `{x}`?"),
            None => format!("invalid value `{s}`; expected one of: {}", names.join(", ")),
        };
        self.err(node.pos, path, msg);
        None
    }

    /// Hex of an exact length (normalised to lowercase).
    fn hex(&mut self, node: &Node, path: &str, len: usize) -> Option<String> {
        let s = self.string(node, path)?;
        if s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(s.to_ascii_lowercase())
        } else {
            self.err(
                node.pos,
                path,
                if path.ends_with("fspf_key") {
                    // A key: never echo it.
                    format!("expected {len} hex characters or a `$$SCONE::name$$` placeholder (value not shown: it is a key)")
                } else {
                    format!("expected {len} hex characters, found `{}`", clip(&s))
                },
            );
            None
        }
    }

    fn opt_hex(&mut self, f: &Fields, key: &str, path: &str, len: usize) -> Option<String> {
        let n = f.get(key)?;
        if n.is_null() {
            return None;
        }
        self.hex(n, &join(path, key), len)
    }

    /// Hex of an exact length or a whole `$$SCONE::x$$` placeholder.
    fn hex_or_placeholder(&mut self, node: &Node, path: &str, len: usize) -> Option<String> {
        if let Some(s) = node.scalar()
            && s.starts_with("$$")
        {
            return self.placeholder_string(node, path);
        }
        self.hex(node, path, len)
    }

    /// A string that must be exactly one placeholder.
    fn placeholder_string(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path)?;
        match whole_placeholder(&s) {
            Some(p) => Some(p.to_string()),
            None => {
                match find_placeholders(&s) {
                    Err(e) => self.err(node.pos, path, e.to_string()),
                    Ok(_) => self.err(
                        node.pos,
                        path,
                        format!(
                            "expected one `$$SCONE::name$$` placeholder, found `{}`",
                            clip(&s)
                        ),
                    ),
                }
                None
            }
        }
    }

    /// A string that may contain placeholders (checked for syntax here).
    fn text(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path)?;
        if let Err(e) = find_placeholders(&s) {
            self.err(node.pos, path, e.to_string());
            return None;
        }
        Some(s)
    }

    /// A whole-section placeholder (`access_policy: $$SCONE::frag$$`): not supported yet.
    fn section_placeholder(&mut self, node: &Node, path: &str) -> bool {
        if node
            .scalar()
            .is_some_and(|s| s.trim_start().starts_with("$$SCONE::"))
        {
            self.err(
                node.pos,
                path,
                format!(
                    "a config-fragment placeholder for the whole of `{path}` {NOT_SUPPORTED_YET}"
                ),
            );
            return true;
        }
        false
    }
}

/// Clip long values in messages.
pub(crate) fn clip(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(77).collect::<String>())
    } else {
        s.to_string()
    }
}

/// The closest allowed word, if close enough.
pub(crate) fn suggest<'s>(word: &str, allowed: &[&'s str]) -> Option<&'s str> {
    allowed
        .iter()
        .map(|a| (strsim::jaro_winkler(word, a), *a))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, a)| a)
}

/// The fields of one map.
pub(crate) struct Fields<'n> {
    pos: Pos,
    fields: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, n)| *n)
    }
    fn present(&self, key: &str) -> Option<&'n Node> {
        self.get(key).filter(|n| !n.is_null())
    }
}

const TOP_KEYS: &[&str] = &[
    "name",
    "version",
    "predecessor",
    "namespace_hash",
    "salt",
    "creator",
    "services",
    "secrets",
    "images",
    "volumes",
    "access_policy",
    "security",
    "secret_config",
];

/// Convert a whole document.
pub(crate) fn session(cx: &mut Cx, root: &Node) -> Session {
    let mut s = Session::default();
    let Some(f) = cx.map(root, "", TOP_KEYS) else {
        return s;
    };
    s.name = cx.required_string(&f, "name", "").unwrap_or_default();
    s.version = cx.opt_string(&f, "version", "");
    match &s.version {
        None => cx.warn(
            f.pos,
            "version",
            "`version` is missing; veil applies the 0.3 language (write `version: \"0.3\"`)",
        ),
        Some(v) => {
            let ok = v == "0.3"
                || v.strip_prefix("0.3.")
                    .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()));
            if !ok {
                let pos = f.get("version").map(|n| n.pos).unwrap_or(f.pos);
                cx.err(
                    pos,
                    "version",
                    format!(
                        "language version `{v}` {NOT_SUPPORTED_YET} (veil accepts 0.3 and 0.3.x)"
                    ),
                );
            }
        }
    }
    s.predecessor = cx.opt_hex(&f, "predecessor", "", 64);
    s.namespace_hash = cx.opt_hex(&f, "namespace_hash", "", 64);
    s.salt = cx.opt_hex(&f, "salt", "", 32);
    if let Some(n) = f.present("creator") {
        s.creator = creator(cx, n, "creator");
    }
    if let Some(n) = f.get("services") {
        for (p, n) in cx.list(n, "services") {
            if let Some(v) = service(cx, n, &p) {
                s.services.push(v);
            }
        }
    }
    if let Some(n) = f.get("secrets") {
        for (p, n) in cx.list(n, "secrets") {
            if let Some(v) = secret(cx, n, &p) {
                s.secrets.push(v);
            }
        }
    }
    if let Some(n) = f.get("images") {
        for (p, n) in cx.list(n, "images") {
            if let Some(v) = image(cx, n, &p) {
                s.images.push(v);
            }
        }
    }
    if let Some(n) = f.get("volumes") {
        for (p, n) in cx.list(n, "volumes") {
            if let Some(v) = volume(cx, n, &p) {
                s.volumes.push(v);
            }
        }
    }
    if let Some(n) = f.present("access_policy") {
        s.access_policy = access_policy(cx, n, "access_policy");
    }
    if let Some(n) = f.present("security") {
        s.security = security(cx, n, "security");
    }
    if let Some(n) = f.present("secret_config") {
        s.secret_config = secret_config(cx, n, "secret_config");
    }
    s
}

fn creator(cx: &mut Cx, n: &Node, path: &str) -> Option<Creator> {
    if let Kind::Map(_) = n.kind {
        let f = cx.map(n, path, &["signer"])?;
        let p = join(path, "signer");
        let pem = cx.required_string(&f, "signer", path)?;
        let pos = f.get("signer").map(|n| n.pos).unwrap_or(f.pos);
        if let Err(e) = crate::pem::spki_from_public_key_pem(&pem) {
            cx.err(pos, &p, e);
            return None;
        }
        return Some(Creator::Signer { pem });
    }
    let pem = cx.string(n, path)?;
    if let Err(e) = crate::pem::spki_from_certificate_pem(&pem) {
        cx.err(n.pos, path, e);
        return None;
    }
    Some(Creator::Certificate { pem })
}

const SERVICE_KEYS: &[&str] = &[
    "name",
    "command",
    "environment",
    "pwd",
    "image_name",
    "fspf_path",
    "fspf_key",
    "fspf_tag",
    "fspf_update_policy",
    "attestation",
    "mrenclaves",
    "platforms",
    "one_time_password_shared_secret",
];

fn service(cx: &mut Cx, n: &Node, path: &str) -> Option<Service> {
    let f = cx.map(n, path, SERVICE_KEYS)?;
    let mut s = Service {
        name: cx.required_string(&f, "name", path).unwrap_or_default(),
        ..Service::default()
    };
    if let Some(c) = f.present("command") {
        let p = join(path, "command");
        match &c.kind {
            Kind::Scalar { .. } => {
                if let Some(text) = cx.text(c, &p) {
                    match shlex::split(&text) {
                        Some(v) => s.command = v,
                        None => cx.err(
                            c.pos,
                            &p,
                            "unbalanced quotes or trailing backslash in command",
                        ),
                    }
                }
            }
            _ => {
                for (ip, item) in cx.list(c, &p) {
                    if let Some(a) = cx.text(item, &ip) {
                        s.command.push(a);
                    }
                }
            }
        }
    }
    if let Some(e) = f.present("environment") {
        let p = join(path, "environment");
        if let Some(ef) = cx.map_any(e, &p) {
            for (k, v) in ef {
                let vp = join(&p, &k);
                let val = if v.is_null() {
                    Some(String::new())
                } else {
                    cx.text(v, &vp)
                };
                if let Some(val) = val {
                    s.environment.insert(k, val);
                }
            }
        }
    }
    s.pwd = cx.opt_string(&f, "pwd", path);
    s.image_name = cx.opt_string(&f, "image_name", path);
    s.fspf_path = cx.opt_string(&f, "fspf_path", path);
    if let Some(k) = f.present("fspf_key") {
        s.fspf_key = cx.hex_or_placeholder(k, &join(path, "fspf_key"), 64);
    }
    s.fspf_tag = cx.opt_hex(&f, "fspf_tag", path, 32);
    if let Some(u) = f.present("fspf_update_policy") {
        s.fspf_update_policy = cx.one_of(
            u,
            &join(path, "fspf_update_policy"),
            &[
                (
                    "rollback_protected_reinitializable",
                    FspfUpdatePolicy::RollbackProtectedReinitializable,
                ),
                (
                    "no_rollback_protection",
                    FspfUpdatePolicy::NoRollbackProtection,
                ),
            ],
        );
    }
    let att = f.present("attestation");
    let legacy = f.present("mrenclaves");
    if let (Some(_), Some(l)) = (att, legacy) {
        cx.err(
            l.pos,
            &join(path, "mrenclaves"),
            "use either `attestation` or the legacy `mrenclaves`, not both",
        );
    }
    if let Some(a) = att {
        let p = join(path, "attestation");
        if !cx.section_placeholder(a, &p) {
            match &a.kind {
                Kind::Seq(_) => {
                    for (ip, item) in cx.list(a, &p) {
                        if !cx.section_placeholder(item, &ip)
                            && let Some(v) = variant(cx, item, &ip)
                        {
                            s.attestation.push(v);
                        }
                    }
                }
                _ => {
                    if let Some(v) = variant(cx, a, &p) {
                        s.attestation.push(v);
                    }
                }
            }
        }
    } else if let Some(l) = legacy {
        let p = join(path, "mrenclaves");
        let mut v = AttestationVariant::default();
        for (ip, item) in cx.list(l, &p) {
            if let Some(m) = cx.hex_or_placeholder(item, &ip, 64) {
                v.mrenclave.push(m);
            }
        }
        if v.mrenclave.is_empty() {
            cx.err(l.pos, &p, "`mrenclaves` is empty");
        } else {
            s.attestation.push(v);
        }
    }
    if let Some(pl) = f.present("platforms") {
        let p = join(path, "platforms");
        for (ip, item) in cx.list(pl, &p) {
            let Some(v) = cx.string(item, &ip) else {
                continue;
            };
            let ok = whole_placeholder(&v).is_some()
                || is_hex(&v, 64)
                || v.strip_prefix("INTEL_QE_ID:")
                    .is_some_and(|h| is_hex(h, 32));
            if ok {
                s.platforms.push(v);
            } else {
                cx.err(
                    item.pos,
                    &ip,
                    format!("expected 64 hex characters, `INTEL_QE_ID:<32 hex>` or a placeholder, found `{}`", clip(&v)),
                );
            }
        }
        if !s.platforms.is_empty() {
            cx.unsupported(pl.pos, &p);
        }
    }
    if let Some(o) = f.present("one_time_password_shared_secret") {
        s.one_time_password_shared_secret =
            otp_secret(cx, o, &join(path, "one_time_password_shared_secret"));
    }
    Some(s)
}

pub(crate) fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn otp_secret(cx: &mut Cx, n: &Node, path: &str) -> Option<String> {
    let s = cx.string(n, path)?;
    if s.starts_with("$$") {
        return cx.placeholder_string(n, path);
    }
    let body = s.trim_end_matches('=');
    let ok = body
        .bytes()
        .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
    if !ok || body.len() * 5 / 8 < 16 {
        cx.err(
            n.pos,
            path,
            "expected a base32 secret (A-Z, 2-7) of at least 128 bits (26 characters) or a placeholder",
        );
        return None;
    }
    Some(s)
}

fn variant(cx: &mut Cx, n: &Node, path: &str) -> Option<AttestationVariant> {
    let f = cx.map(n, path, &["mrenclave", "signer"])?;
    let mut v = AttestationVariant::default();
    if let Some(m) = f.present("mrenclave") {
        let p = join(path, "mrenclave");
        if let Kind::Scalar { .. } = m.kind {
            if let Some(x) = cx.hex_or_placeholder(m, &p, 64) {
                v.mrenclave.push(x);
            }
        } else {
            for (ip, item) in cx.list(m, &p) {
                if let Some(x) = cx.hex_or_placeholder(item, &ip, 64) {
                    v.mrenclave.push(x);
                }
            }
        }
    }
    if let Some(sg) = f.present("signer") {
        let p = join(path, "signer");
        v.signer = signer_factor(cx, sg, &p);
        if v.signer.is_some() {
            cx.unsupported(sg.pos, &p);
        }
    }
    if v.mrenclave.is_empty() && v.signer.is_none() {
        cx.err(
            n.pos,
            path,
            "attestation variant has no factor (`mrenclave` or `signer`)",
        );
        return None;
    }
    Some(v)
}

fn signer_factor(cx: &mut Cx, n: &Node, path: &str) -> Option<SignerFactor> {
    let f = cx.map(
        n,
        path,
        &[
            "mrsigner",
            "isvprodid",
            "isvsvn",
            "isvsvn_min",
            "isvsvn_max",
        ],
    )?;
    let mrsigner = match f.get("mrsigner") {
        Some(m) => cx.hex(m, &join(path, "mrsigner"), 64)?,
        None => {
            cx.err(f.pos, path, "missing required key `mrsigner`");
            return None;
        }
    };
    let Some(isvprodid) = cx.opt_uint(&f, "isvprodid", path) else {
        if f.get("isvprodid").is_none() {
            cx.err(f.pos, path, "missing required key `isvprodid`");
        }
        return None;
    };
    let s = SignerFactor {
        mrsigner,
        isvprodid,
        isvsvn: cx.opt_uint(&f, "isvsvn", path),
        isvsvn_min: cx.opt_uint(&f, "isvsvn_min", path),
        isvsvn_max: cx.opt_uint(&f, "isvsvn_max", path),
    };
    if s.isvsvn.is_some() && (s.isvsvn_min.is_some() || s.isvsvn_max.is_some()) {
        cx.err(
            f.pos,
            &join(path, "isvsvn"),
            "`isvsvn` and `isvsvn_min`/`isvsvn_max` are mutually exclusive",
        );
    }
    if let (Some(lo), Some(hi)) = (s.isvsvn_min, s.isvsvn_max)
        && lo > hi
    {
        cx.err(
            f.pos,
            &join(path, "isvsvn_min"),
            "`isvsvn_min` is greater than `isvsvn_max`",
        );
    }
    Some(s)
}

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

fn secret(cx: &mut Cx, n: &Node, path: &str) -> Option<Secret> {
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
                token: cx.opt_string(&af, "token", &p),
                decryption_key: cx.opt_string(&af, "decryption_key", &p),
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
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
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

impl<'a> Cx<'a> {
    /// A map with arbitrary string keys (environment), in document order, duplicates refused.
    fn map_any<'n>(&mut self, node: &'n Node, path: &str) -> Option<Vec<(String, &'n Node)>> {
        self.positions.entry(path.to_string()).or_insert(node.pos);
        if !self.reject_tag(node, path) {
            return None;
        }
        let Kind::Map(entries) = &node.kind else {
            self.expect(node, path, "a map");
            return None;
        };
        let mut out: Vec<(String, &'n Node)> = Vec::new();
        for (k, v) in entries {
            let Some(key) = k.scalar() else {
                self.err(k.pos, path, "map keys must be strings");
                continue;
            };
            let kp = join(path, key);
            if key.is_empty() || key.contains('\0') || key.contains('=') {
                self.err(
                    k.pos,
                    &kp,
                    "environment variable names must be non-empty, without `=` or NUL",
                );
                continue;
            }
            if out.iter().any(|(o, _)| o == key) {
                self.err(k.pos, &kp, format!("duplicate key `{key}`"));
                continue;
            }
            self.positions.insert(kp, v.pos);
            out.push((key.to_string(), v));
        }
        Some(out)
    }
}

fn image(cx: &mut Cx, n: &Node, path: &str) -> Option<Image> {
    let f = cx.map(
        n,
        path,
        &["name", "injection_files", "volumes", "provide_secrets"],
    )?;
    let mut im = Image {
        name: cx.required_string(&f, "name", path).unwrap_or_default(),
        ..Image::default()
    };
    if let Some(inj) = f.present("injection_files") {
        let p = join(path, "injection_files");
        for (ip, item) in cx.list(inj, &p) {
            let file = if let Kind::Scalar { .. } = item.kind {
                cx.string(item, &ip).map(|path| InjectionFile {
                    path,
                    content: None,
                    permission: None,
                })
            } else {
                let Some(ff) = cx.map(item, &ip, &["path", "content", "permission"]) else {
                    continue;
                };
                let path_ = cx.required_string(&ff, "path", &ip);
                let content = match ff.get("content") {
                    Some(c) if c.is_null() => Some(String::new()),
                    Some(c) => cx.text(c, &join(&ip, "content")),
                    None => None,
                };
                let permission = match ff.present("permission") {
                    Some(pn) => {
                        let pp = join(&ip, "permission");
                        let m = pn.scalar().and_then(parse_mode);
                        if m.is_none() {
                            cx.err(
                                pn.pos,
                                &pp,
                                "expected a file mode such as `0o644` (at most 0o7777)",
                            );
                        }
                        m
                    }
                    None => None,
                };
                path_.map(|path| InjectionFile {
                    path,
                    content,
                    permission,
                })
            };
            if let Some(fl) = file {
                if !fl.path.starts_with('/') {
                    cx.err(
                        item.pos,
                        &ip,
                        format!("injection file path `{}` is not absolute", clip(&fl.path)),
                    );
                }
                im.injection_files.push(fl);
            }
        }
    }
    if let Some(v) = f.present("volumes") {
        let p = join(path, "volumes");
        for (ip, item) in cx.list(v, &p) {
            let Some(vf) = cx.map(item, &ip, &["name", "path", "update_policy"]) else {
                continue;
            };
            let name = cx.required_string(&vf, "name", &ip);
            let vpath = cx.required_string(&vf, "path", &ip);
            let update_policy = match vf.present("update_policy") {
                Some(u) => update_policy(cx, u, &join(&ip, "update_policy")),
                None => Some(UpdatePolicy::RollbackProtected),
            };
            if let Some(vp) = &vpath
                && !vp.starts_with('/')
            {
                let pos = vf.get("path").map(|n| n.pos).unwrap_or(item.pos);
                cx.err(
                    pos,
                    &join(&ip, "path"),
                    format!("volume path `{}` is not absolute", clip(vp)),
                );
            }
            if let (Some(name), Some(path), Some(update_policy)) = (name, vpath, update_policy) {
                im.volumes.push(ImageVolume {
                    name,
                    path,
                    update_policy,
                });
            }
        }
    }
    if let Some(ps) = f.present("provide_secrets") {
        im.provide_secrets = cx.strings(ps, &join(path, "provide_secrets"));
    }
    Some(im)
}

fn parse_mode(s: &str) -> Option<u32> {
    let v = if let Some(o) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
        u32::from_str_radix(o, 8).ok()?
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8).ok()?
    } else {
        s.parse().ok()?
    };
    (v <= 0o7777).then_some(v)
}

fn update_policy(cx: &mut Cx, n: &Node, path: &str) -> Option<UpdatePolicy> {
    cx.one_of(
        n,
        path,
        &[
            ("rollback_protected", UpdatePolicy::RollbackProtected),
            ("ephemeral", UpdatePolicy::Ephemeral),
            ("no_rollback_protection", UpdatePolicy::NoRollbackProtection),
        ],
    )
}

fn volume(cx: &mut Cx, n: &Node, path: &str) -> Option<Volume> {
    let f = cx.map(
        n,
        path,
        &["name", "fspf_key", "fspf_tag", "files", "export", "import"],
    )?;
    let mut v = Volume {
        name: cx.required_string(&f, "name", path).unwrap_or_default(),
        ..Volume::default()
    };
    if let Some(k) = f.present("fspf_key") {
        v.fspf_key = cx.hex_or_placeholder(k, &join(path, "fspf_key"), 64);
    }
    v.fspf_tag = cx.opt_hex(&f, "fspf_tag", path, 32);
    match (f.present("fspf_key"), f.present("fspf_tag")) {
        (Some(_), None) => cx.err(
            f.pos,
            path,
            "`fspf_key` needs `fspf_tag` (a pre-built volume needs both)",
        ),
        (None, Some(t)) => cx.err(
            t.pos,
            &join(path, "fspf_tag"),
            "`fspf_tag` needs `fspf_key` (a pre-built volume needs both)",
        ),
        _ => {}
    }
    if let Some(fl) = f.present("files") {
        v.files = cx
            .one_of(
                fl,
                &join(path, "files"),
                &[
                    ("encrypted", FileProtection::Encrypted),
                    ("authenticated-only", FileProtection::AuthenticatedOnly),
                ],
            )
            .unwrap_or_default();
    }
    if let Some(e) = f.present("export") {
        let p = join(path, "export");
        let items: Vec<(String, &Node)> = match e.kind {
            Kind::Map(_) => vec![(p.clone(), e)],
            _ => cx.list(e, &p),
        };
        for (ip, item) in items {
            if let Some(x) = volume_export(cx, item, &ip) {
                v.export.push(x);
            }
        }
    }
    if let Some(i) = f.present("import") {
        let p = join(path, "import");
        if let Some(imf) = cx.map(i, &p, &["session", "volume"]) {
            let session = cx.required_string(&imf, "session", &p);
            let volume = cx.required_string(&imf, "volume", &p);
            if let (Some(session), Some(volume)) = (session, volume) {
                v.import = Some(VolumeImport { session, volume });
            }
        }
        for k in ["fspf_key", "fspf_tag", "export"] {
            if let Some(x) = f.present(k) {
                cx.err(
                    x.pos,
                    &join(path, k),
                    format!("an imported volume cannot have `{k}`"),
                );
            }
        }
    }
    Some(v)
}

fn volume_export(cx: &mut Cx, n: &Node, path: &str) -> Option<VolumeExport> {
    let f = cx.map(
        n,
        path,
        &[
            "session",
            "session_hash",
            "to",
            "update_policy",
            "volume_alias",
        ],
    )?;
    let mut x = VolumeExport::default();
    if let Some(to) = f.present("to") {
        let p = join(path, "to");
        let tf = cx.map(to, &p, &["session", "session_hash"])?;
        x.session = cx.required_string(&tf, "session", &p)?;
        x.session_hash = cx.opt_hex(&tf, "session_hash", &p, 64);
        if let Some(s) = f.get("session") {
            cx.err(
                s.pos,
                &join(path, "session"),
                "give the session either in `to` or directly, not both",
            );
        }
    } else {
        x.session = cx.required_string(&f, "session", path)?;
        x.session_hash = cx.opt_hex(&f, "session_hash", path, 64);
    }
    if let Some(u) = f.present("update_policy") {
        x.update_policy = update_policy(cx, u, &join(path, "update_policy"));
    }
    x.volume_alias = cx.opt_string(&f, "volume_alias", path);
    Some(x)
}

fn access_policy(cx: &mut Cx, n: &Node, path: &str) -> AccessPolicy {
    let mut ap = AccessPolicy::default();
    if cx.section_placeholder(n, path) {
        return ap;
    }
    let Some(f) = cx.map(
        n,
        path,
        &["read", "update", "create_sessions", "list_sessions"],
    ) else {
        return ap;
    };
    for (key, slot, governance) in [
        ("read", &mut ap.read, false),
        ("update", &mut ap.update, true),
        ("create_sessions", &mut ap.create_sessions, true),
        ("list_sessions", &mut ap.list_sessions, false),
    ] {
        let Some(r) = f.present(key) else { continue };
        let p = join(path, key);
        if cx.section_placeholder(r, &p) {
            continue;
        }
        let entries = rule_entries(cx, r, &p, governance, key != "read", 0);
        if let Some(e) = entries {
            check_alone(cx, &e, r, &p);
            *slot = Some(Rule(e));
        }
    }
    ap
}

fn check_alone(cx: &mut Cx, entries: &[AccessEntry], n: &Node, path: &str) {
    if entries.len() > 1 {
        for (word, e) in [("ANY", AccessEntry::Any), ("NONE", AccessEntry::None)] {
            if entries.contains(&e) {
                cx.err(
                    n.pos,
                    path,
                    format!("`{word}` must be the only entry of its list"),
                );
            }
        }
    }
}

fn rule_entries(
    cx: &mut Cx,
    n: &Node,
    path: &str,
    governance: bool,
    signer_ok: bool,
    depth: usize,
) -> Option<Vec<AccessEntry>> {
    let items = cx.list(n, path);
    if items.is_empty() && !matches!(n.kind, Kind::Seq(_)) {
        return None;
    }
    let mut out = Vec::new();
    for (ip, item) in items {
        if let Some(e) = access_entry(cx, item, &ip, governance, signer_ok, depth) {
            out.push(e);
        }
    }
    Some(out)
}

fn access_entry(
    cx: &mut Cx,
    n: &Node,
    path: &str,
    governance: bool,
    signer_ok: bool,
    depth: usize,
) -> Option<AccessEntry> {
    if let Kind::Map(entries) = &n.kind {
        let [(k, v)] = entries.as_slice() else {
            cx.err(n.pos, path, "expected a map with exactly one key (`signer`, `require-all` or `require-at-least-N`)");
            return None;
        };
        let key = k.scalar().unwrap_or("");
        let kp = join(path, key);
        cx.positions.insert(kp.clone(), k.pos);
        if key == "signer" {
            if !signer_ok {
                cx.err(k.pos, &kp, "`signer` is not allowed in `read`");
                return None;
            }
            let pem = cx.string(v, &kp)?;
            if let Err(e) = crate::pem::spki_from_public_key_pem(&pem) {
                cx.err(v.pos, &kp, e);
                return None;
            }
            cx.unsupported(k.pos, &kp);
            return Some(AccessEntry::Signer { pem });
        }
        let at_least = key
            .strip_prefix("require-at-least-")
            .map(|n| n.parse::<usize>().ok().filter(|&n| n > 0));
        if key == "require-all" || at_least.is_some() {
            if !governance {
                cx.err(
                    k.pos,
                    &kp,
                    format!("`{key}` is allowed only in `update` and `create_sessions`"),
                );
                return None;
            }
            if depth >= 8 {
                cx.err(k.pos, &kp, "governance rules nested more than 8 levels");
                return None;
            }
            let inner = rule_entries(cx, v, &kp, governance, signer_ok, depth + 1)?;
            if inner.is_empty() {
                cx.err(v.pos, &kp, format!("`{key}` needs at least one entry"));
                return None;
            }
            check_alone(cx, &inner, v, &kp);
            cx.unsupported(k.pos, &kp);
            return match at_least {
                None => Some(AccessEntry::RequireAll(inner)),
                Some(Some(m)) if m <= inner.len() => Some(AccessEntry::RequireAtLeast(m, inner)),
                Some(Some(m)) => {
                    cx.err(
                        k.pos,
                        &kp,
                        format!("`{key}` requires {m} of only {} entries", inner.len()),
                    );
                    None
                }
                Some(None) => {
                    cx.err(k.pos, &kp, "expected `require-at-least-N` with N ≥ 1");
                    None
                }
            };
        }
        let msg = match suggest(key, &["signer", "require-all", "require-at-least-N"]) {
            Some(s) => format!("unknown key `{key}`; did you mean `{s}`?"),
            None => format!(
                "unknown key `{key}`; expected `signer`, `require-all` or `require-at-least-N`"
            ),
        };
        cx.err(k.pos, &kp, msg);
        return None;
    }
    let s = cx.string(n, path)?;
    match s.as_str() {
        "CREATOR" => return Some(AccessEntry::Creator),
        "ANY" => return Some(AccessEntry::Any),
        "NONE" => return Some(AccessEntry::None),
        _ => {}
    }
    if s.starts_with("$$") {
        let p = cx.placeholder_string(n, path)?;
        return whole_placeholder(&p).map(AccessEntry::Placeholder);
    }
    if s.trim_start().starts_with("-----BEGIN") {
        return match crate::pem::spki_from_certificate_pem(&s) {
            Ok(spki_der) => Some(AccessEntry::Certificate { pem: s, spki_der }),
            Err(e) => {
                cx.err(n.pos, path, e);
                None
            }
        };
    }
    if is_hex(&s, 64) {
        return Some(AccessEntry::KeyHash(s.to_ascii_lowercase()));
    }
    if (20..=100).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        cx.warn(
            n.pos,
            path,
            format!(
                "`{}` is not a veil key hash (64 hex characters); it matches no veil client",
                clip(&s)
            ),
        );
        return Some(AccessEntry::KeyHash(s));
    }
    let msg = match suggest(&s, &["CREATOR", "ANY", "NONE"]) {
        Some(x) => format!("invalid entry `{}`; did you mean `{x}`?", clip(&s)),
        None => format!(
            "invalid entry `{}`; expected CREATOR, ANY, NONE, a key hash, a PEM certificate, `signer`, a governance rule or a placeholder",
            clip(&s)
        ),
    };
    cx.err(n.pos, path, msg);
    None
}

const TOLERATE: &[&str] = &[
    "debug-mode",
    "hyperthreading",
    "insecure-igpu",
    "software-hardening-needed",
    "aepic-leak",
    "insecure-configuration",
    "outdated-tcb",
    "maa-managed-tcb",
    "local-attestation-trust-cas-tcb",
];

fn security(cx: &mut Cx, n: &Node, path: &str) -> Security {
    let mut s = Security::default();
    let Some(f) = cx.map(
        n,
        path,
        &["attestation", "service_access_token", "singleton_enclaves"],
    ) else {
        return s;
    };
    if let Some(t) = f.present("service_access_token") {
        let p = join(path, "service_access_token");
        s.service_access_token = if t.scalar().is_some_and(|x| x.starts_with("$$")) {
            cx.placeholder_string(t, &p)
        } else {
            cx.string(t, &p)
        };
    }
    if let Some(b) = cx.opt_bool(&f, "singleton_enclaves", path) {
        s.singleton_enclaves = b;
        if b {
            let pos = f.get("singleton_enclaves").map(|n| n.pos).unwrap_or(f.pos);
            cx.unsupported(pos, &join(path, "singleton_enclaves"));
        }
    }
    if let Some(a) = f.present("attestation") {
        let p = join(path, "attestation");
        if !cx.section_placeholder(a, &p) {
            s.attestation = attestation_policy(cx, a, &p);
        }
    }
    s
}

fn attestation_policy(cx: &mut Cx, n: &Node, path: &str) -> Option<AttestationPolicy> {
    let f = cx.map(
        n,
        path,
        &[
            "mode",
            "tolerate",
            "ignore_advisories",
            "one_time_password_shared_secret",
            "trusted_scone_qe_pubkeys",
            "must_be_sgx_local",
            "url",
        ],
    )?;
    let mut a = AttestationPolicy::default();
    if let Some(m) = f.present("mode") {
        let p = join(path, "mode");
        a.mode = cx
            .one_of(
                m,
                &p,
                &[
                    ("hardware", AttestationMode::Hardware),
                    ("none", AttestationMode::None_),
                    ("maa", AttestationMode::Maa),
                ],
            )
            .unwrap_or_default();
        if a.mode == AttestationMode::Maa {
            cx.warn(m.pos, &p, format!("`{p}: maa` {NOT_SUPPORTED_YET}"));
        }
    }
    if let Some(t) = f.present("tolerate") {
        let p = join(path, "tolerate");
        for (ip, item) in cx.list(t, &p) {
            let Some(v) = cx.string(item, &ip) else {
                continue;
            };
            if TOLERATE.contains(&v.as_str()) {
                if !a.tolerate.contains(&v) {
                    a.tolerate.push(v);
                }
            } else {
                let msg = match suggest(&v, TOLERATE) {
                    Some(x) => format!("unknown value `{}`; did you mean `{x}`?", clip(&v)),
                    None => format!(
                        "unknown value `{}`; expected one of: {}",
                        clip(&v),
                        TOLERATE.join(", ")
                    ),
                };
                cx.err(item.pos, &ip, msg);
            }
        }
    }
    if let Some(ia) = f.present("ignore_advisories") {
        let p = join(path, "ignore_advisories");
        if ia.scalar() == Some("*") {
            a.ignore_advisories = Advisories::All;
            if !a.tolerate.iter().any(|t| t == "debug-mode") {
                cx.err(ia.pos, &p, "`ignore_advisories: \"*\"` is allowed only together with `tolerate: [debug-mode]`");
            }
        } else {
            let v = cx.strings_or_one(ia, &p);
            if !v.is_empty() {
                a.ignore_advisories = Advisories::List(v);
            }
        }
    }
    if let Some(o) = f.present("one_time_password_shared_secret") {
        a.one_time_password_shared_secret =
            otp_secret(cx, o, &join(path, "one_time_password_shared_secret"));
    }
    if let Some(q) = f.present("trusted_scone_qe_pubkeys") {
        let p = join(path, "trusted_scone_qe_pubkeys");
        for (ip, item) in cx.list(q, &p) {
            if let Some(h) = cx.hex(item, &ip, 64) {
                a.trusted_scone_qe_pubkeys.push(h);
            }
        }
        if !a.trusted_scone_qe_pubkeys.is_empty() {
            cx.unsupported(q.pos, &p);
        }
    }
    if let Some(b) = cx.opt_bool(&f, "must_be_sgx_local", path) {
        a.must_be_sgx_local = Some(b);
        if b {
            let pos = f.get("must_be_sgx_local").map(|n| n.pos).unwrap_or(f.pos);
            cx.unsupported(pos, &join(path, "must_be_sgx_local"));
        }
    }
    if let Some(u) = cx.opt_string(&f, "url", path) {
        let pos = f.get("url").map(|n| n.pos).unwrap_or(f.pos);
        cx.unsupported(pos, &join(path, "url"));
        a.url = Some(u);
    }
    Some(a)
}

fn secret_config(cx: &mut Cx, n: &Node, path: &str) -> Option<SecretConfig> {
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
                token: cx.opt_string(&af, "token", &p),
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

/// Placeholders in a string field, with their parse already checked.
pub(crate) fn placeholders_in(s: &str) -> Vec<Placeholder> {
    find_placeholders(s)
        .map(|v| v.into_iter().map(|(_, p)| p).collect())
        .unwrap_or_default()
}
