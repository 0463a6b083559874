//! The node reader: [`Cx`] walks the positioned YAML tree with typed accessors, collects
//! diagnostics (errors, warnings, "not supported yet") and records the source position of every
//! field path it visits (`services[1].attestation[0].mrenclave[0]`).
//!
//! Rules every section inherits from here:
//!
//! * a map is checked against the keys its section allows: an unknown key is an error with a
//!   "did you mean" suggestion (Jaro-Winkler ≥ 0.8) or the list of allowed keys; a duplicate key
//!   is an error; map keys must be strings;
//! * YAML tags other than the core `!!` ones are errors (sections that take tags, such as
//!   `secret_config.store_in`, look at them before calling the reader);
//! * an optional field that is `null` counts as absent; a `null` list is an empty list;
//! * a string is any non-null scalar, taken as written (`8080` and `true` are strings where a
//!   string is expected); NUL bytes are refused;
//! * booleans are `true`/`True`/`TRUE` and `false`/`False`/`FALSE`; integers are non-negative
//!   decimal;
//! * hex fields have an exact length and are normalised to lowercase; a key (`fspf_key`) is
//!   never echoed in a message;
//! * placeholders are checked for syntax here (a field that must be one placeholder, a text that
//!   may contain several, a whole section given as a placeholder: not supported yet);
//! * values quoted in messages are clipped to 80 characters.

use std::collections::BTreeMap;

use crate::diag::{Diagnostic, NOT_SUPPORTED_YET, Severity};
use crate::model::{Pos, REDACTED};
use crate::placeholder::{Placeholder, find_placeholders, whole_placeholder};
use crate::yaml::{Kind, Node};

/// Collects diagnostics and positions while converting.
pub(crate) struct Cx<'a> {
    pub file: &'a str,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    pub positions: BTreeMap<String, Pos>,
    /// Reading back `session read` output: the redaction marker is kept (not refused) in the
    /// fields that `Session::redacted` writes it to.
    pub read_back: bool,
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

impl<'a> Cx<'a> {
    pub fn new(file: &'a str) -> Self {
        Cx {
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
            positions: BTreeMap::new(),
            read_back: false,
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

    pub(crate) fn reject_tag(&mut self, node: &Node, path: &str) -> bool {
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
    pub(crate) fn map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
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

    /// A map with arbitrary string keys (environment), in document order, duplicates refused.
    pub(crate) fn map_any<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
    ) -> Option<Vec<(String, &'n Node)>> {
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

    /// Error: the redaction marker of `session read` in an uploaded document (decision 22).
    pub(crate) fn redaction_marker(&mut self, pos: Pos, path: &str) {
        self.err(
            pos,
            path,
            format!(
                "`{path}` holds the redaction marker of `session read` (`{REDACTED}`), not a value: start updates from your own file, not from `session read` output"
            ),
        );
    }

    /// In read-back mode, the redaction marker when `node` is exactly it (for the fields
    /// `Session::redacted` writes it to); `None` otherwise, and always when uploading.
    pub(crate) fn kept_redacted(&self, node: &Node) -> Option<String> {
        (self.read_back && node.tag.is_none() && node.scalar() == Some(REDACTED))
            .then(|| REDACTED.to_string())
    }

    /// An optional string that `session read` redacts (a token or key).
    pub(crate) fn opt_secret_string(
        &mut self,
        f: &Fields,
        key: &str,
        path: &str,
    ) -> Option<String> {
        if let Some(r) = f.get(key).and_then(|n| self.kept_redacted(n)) {
            return Some(r);
        }
        self.opt_string(f, key, path)
    }

    /// A string scalar (numbers and booleans are taken as written). The redaction marker of
    /// `session read` is refused here, so in every string field.
    pub(crate) fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        if !self.reject_tag(node, path) {
            return None;
        }
        match &node.kind {
            Kind::Scalar { value, .. } if !node.is_null() => {
                if value.contains(REDACTED) {
                    self.redaction_marker(node.pos, path);
                    return None;
                }
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
    pub(crate) fn opt_string(&mut self, f: &Fields, key: &str, path: &str) -> Option<String> {
        let n = f.get(key)?;
        if n.is_null() {
            return None;
        }
        self.string(n, &join(path, key))
    }

    pub(crate) fn required_string(&mut self, f: &Fields, key: &str, path: &str) -> Option<String> {
        match f.get(key) {
            Some(n) => self.string(n, &join(path, key)),
            None => {
                self.err(f.pos, path, format!("missing required key `{key}`"));
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.scalar() {
            Some("true" | "True" | "TRUE") => Some(true),
            Some("false" | "False" | "FALSE") => Some(false),
            _ => {
                self.expect(node, path, "`true` or `false`");
                None
            }
        }
    }

    pub(crate) fn opt_bool(&mut self, f: &Fields, key: &str, path: &str) -> Option<bool> {
        let n = f.get(key)?;
        if n.is_null() {
            return None;
        }
        self.boolean(n, &join(path, key))
    }

    pub(crate) fn uint(&mut self, node: &Node, path: &str) -> Option<u64> {
        match node.scalar().map(|s| s.parse::<u64>()) {
            Some(Ok(v)) => Some(v),
            _ => {
                self.expect(node, path, "a non-negative integer");
                None
            }
        }
    }

    pub(crate) fn opt_uint(&mut self, f: &Fields, key: &str, path: &str) -> Option<u64> {
        let n = f.get(key)?;
        if n.is_null() {
            return None;
        }
        self.uint(n, &join(path, key))
    }

    /// A list of items (null = empty list).
    pub(crate) fn list<'n>(&mut self, node: &'n Node, path: &str) -> Vec<(String, &'n Node)> {
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
    pub(crate) fn strings_or_one(&mut self, node: &Node, path: &str) -> Vec<String> {
        if let Kind::Scalar { .. } = node.kind
            && !node.is_null()
        {
            self.positions.insert(path.to_string(), node.pos);
            return self.string(node, path).into_iter().collect();
        }
        self.strings(node, path)
    }

    pub(crate) fn strings(&mut self, node: &Node, path: &str) -> Vec<String> {
        let items = self.list(node, path);
        items
            .into_iter()
            .filter_map(|(p, n)| self.string(n, &p))
            .collect()
    }

    pub(crate) fn one_of<T: Copy>(
        &mut self,
        node: &Node,
        path: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
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
    pub(crate) fn hex(&mut self, node: &Node, path: &str, len: usize) -> Option<String> {
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

    pub(crate) fn opt_hex(
        &mut self,
        f: &Fields,
        key: &str,
        path: &str,
        len: usize,
    ) -> Option<String> {
        let n = f.get(key)?;
        if n.is_null() {
            return None;
        }
        self.hex(n, &join(path, key), len)
    }

    /// Hex of an exact length or a whole `$$SCONE::x$$` placeholder.
    pub(crate) fn hex_or_placeholder(
        &mut self,
        node: &Node,
        path: &str,
        len: usize,
    ) -> Option<String> {
        if let Some(s) = node.scalar()
            && s.starts_with("$$")
        {
            return self.placeholder_string(node, path);
        }
        self.hex(node, path, len)
    }

    /// A string that must be exactly one placeholder.
    pub(crate) fn placeholder_string(&mut self, node: &Node, path: &str) -> Option<String> {
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
    pub(crate) fn text(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path)?;
        if let Err(e) = find_placeholders(&s) {
            self.err(node.pos, path, e.to_string());
            return None;
        }
        Some(s)
    }

    /// A whole-section placeholder (`access_policy: $$SCONE::frag$$`): not supported yet.
    pub(crate) fn section_placeholder(&mut self, node: &Node, path: &str) -> bool {
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
    pub(crate) pos: Pos,
    fields: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub(crate) fn get(&self, key: &str) -> Option<&'n Node> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, n)| *n)
    }
    pub(crate) fn present(&self, key: &str) -> Option<&'n Node> {
        self.get(key).filter(|n| !n.is_null())
    }
}

pub(crate) fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Placeholders in a string field, with their parse already checked.
pub(crate) fn placeholders_in(s: &str) -> Vec<Placeholder> {
    find_placeholders(s)
        .map(|v| v.into_iter().map(|(_, p)| p).collect())
        .unwrap_or_default()
}
