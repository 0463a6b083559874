//! `creator` and `access_policy`: who created the session, and who may read it, update it,
//! create sessions under it and list them.
//!
//! * `creator` is a PEM certificate, or `{signer: <PEM public key>}`; the PEM must be exactly one
//!   well-formed block with the right label. The canonical form uses its key hash (`canon`).
//! * `access_policy` has four optional rules, `read`, `update`, `create_sessions` and
//!   `list_sessions`, each a list of entries: `CREATOR`, `ANY`, `NONE`; a key hash (64 hex,
//!   normalised to lowercase; a SCONE-style alphanumeric key hash of 20 to 100 characters is kept
//!   with a warning that it matches no veil client); a PEM certificate (compared by public key);
//!   one whole `$$SCONE::name$$` placeholder; `{signer: <PEM public key>}` (not in `read`); or a
//!   governance rule `{require-all: [...]}` / `{require-at-least-N: [...]}` (only in `update` and
//!   `create_sessions`, at least one entry, 1 ≤ N ≤ number of entries, nested at most 8 levels).
//! * `ANY` and `NONE` must be the only entry of their list.
//! * `signer` entries and governance rules are parsed but not enforced: "not supported yet"
//!   warnings. The whole section or a whole rule given as a placeholder is an error (not
//!   supported yet).
//! * Absent rules are left `None`; their defaults are applied by `AccessPolicy::effective`.

use super::reader::{Cx, clip, is_hex, join, suggest};
use crate::model::*;
use crate::placeholder::whole_placeholder;
use crate::yaml::{Kind, Node};

pub(super) fn creator(cx: &mut Cx, n: &Node, path: &str) -> Option<Creator> {
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

pub(super) fn access_policy(cx: &mut Cx, n: &Node, path: &str) -> AccessPolicy {
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
