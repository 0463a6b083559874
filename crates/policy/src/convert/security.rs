//! `security`: the session-wide attestation policy and the service access token.
//!
//! * `service_access_token` is a string or one whole placeholder; `singleton_enclaves: true` is
//!   not supported yet (a warning).
//! * `attestation` (a whole-section placeholder is an error, not supported yet): `mode` is
//!   `hardware` (the default), `none` or `maa` (not supported yet: a warning); `tolerate` lists
//!   known values only (an unknown one is an error with a suggestion; repeats are dropped);
//!   `ignore_advisories` is one or a list of advisory names, or `"*"`, allowed only with
//!   `tolerate: [debug-mode]`; `trusted_scone_qe_pubkeys` are 64 hex each; the keys veil parses
//!   but does not enforce (`trusted_scone_qe_pubkeys`, `must_be_sgx_local: true`, `url`) give
//!   "not supported yet" warnings.
//! * A one-time-password shared secret (here and in `services`) is base32 (A-Z, 2-7, optional
//!   `=` padding) of at least 128 bits, or one whole placeholder.

use super::reader::{Cx, clip, join, suggest};
use crate::diag::NOT_SUPPORTED_YET;
use crate::model::*;
use crate::yaml::Node;

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

pub(super) fn security(cx: &mut Cx, n: &Node, path: &str) -> Security {
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
        s.service_access_token = if let Some(r) = cx.kept_redacted(t) {
            Some(r)
        } else if t.scalar().is_some_and(|x| x.starts_with("$$")) {
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

pub(super) fn otp_secret(cx: &mut Cx, n: &Node, path: &str) -> Option<String> {
    if let Some(r) = cx.kept_redacted(n) {
        return Some(r);
    }
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
