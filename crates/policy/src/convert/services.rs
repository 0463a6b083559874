//! `services`: the programs of the session and what their enclaves must measure.
//!
//! * `name` is required. `command` is a string split as a shell would (quotes and backslashes;
//!   unbalanced quotes are an error) or a list of arguments; the canonical form keeps the list.
//! * `environment` maps names (non-empty, without `=` or NUL, no duplicates) to strings; a null
//!   value is the empty string. Arguments and environment values may contain placeholders:
//!   their syntax is checked here, their secrets and formats by `validate`.
//! * `pwd`, `image_name` and `fspf_path` are strings; `fspf_key` is 64 hex or one placeholder,
//!   `fspf_tag` 32 hex; `fspf_update_policy` is `rollback_protected_reinitializable` or
//!   `no_rollback_protection`.
//! * `attestation` is one variant or a list of variants. A variant has `mrenclave` (one or a list
//!   of 64 hex or placeholders) and/or `signer` (`mrsigner` 64 hex and `isvprodid` required;
//!   `isvsvn` excludes `isvsvn_min`/`isvsvn_max`; min ≤ max; not supported yet: a warning); a
//!   variant with neither is an error. The legacy `mrenclaves` list (not empty) stands for one
//!   variant; `attestation` and `mrenclaves` together are an error.
//! * `platforms` entries are 64 hex, `INTEL_QE_ID:<32 hex>` or a placeholder (not supported yet:
//!   a warning). `one_time_password_shared_secret` is checked as in [`super::security`].
//! * `veil` (a veil extension, not SCONE's language) holds `node: {uids, cgroups}`: `uids` a
//!   list of integers below 2^32, `cgroups` a list of absolute cgroup v2 path prefixes (no
//!   `.`/`..` component, no empty component except a trailing `/`). Unknown keys are errors.

use super::reader::{Cx, clip, is_hex, join};
use super::security::otp_secret;
use crate::model::*;
use crate::placeholder::whole_placeholder;
use crate::yaml::{Kind, Node};

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
    "veil",
];

pub(super) fn service(cx: &mut Cx, n: &Node, path: &str) -> Option<Service> {
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
        s.fspf_key = cx
            .kept_redacted(k)
            .or_else(|| cx.hex_or_placeholder(k, &join(path, "fspf_key"), 64));
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
    if let Some(v) = f.present("veil") {
        s.node_restriction = veil_extension(cx, v, &join(path, "veil"));
    }
    Some(s)
}

/// `services[].veil`: `{node: {uids: [...], cgroups: [...]}}`.
fn veil_extension(cx: &mut Cx, n: &Node, path: &str) -> Option<NodeRestriction> {
    let f = cx.map(n, path, &["node"])?;
    let node = f.present("node")?;
    let path = join(path, "node");
    let nf = cx.map(node, &path, &["uids", "cgroups"])?;
    let mut r = NodeRestriction::default();
    if let Some(u) = nf.present("uids") {
        let p = join(&path, "uids");
        for (ip, item) in cx.list(u, &p) {
            if let Some(v) = cx.uint(item, &ip) {
                match u32::try_from(v) {
                    Ok(v) => r.uids.push(v),
                    Err(_) => cx.err(
                        item.pos,
                        &ip,
                        format!("uid {v} is out of range (below 2^32)"),
                    ),
                }
            }
        }
    }
    if let Some(c) = nf.present("cgroups") {
        let p = join(&path, "cgroups");
        for (ip, item) in cx.list(c, &p) {
            let Some(v) = cx.string(item, &ip) else {
                continue;
            };
            let body = v.strip_suffix('/').unwrap_or(&v);
            let ok = v.starts_with('/')
                && !v.contains('\0')
                && (body.is_empty()
                    || body
                        .split('/')
                        .skip(1)
                        .all(|c| !c.is_empty() && c != "." && c != ".."));
            if ok {
                r.cgroups.push(v);
            } else {
                cx.err(
                    item.pos,
                    &ip,
                    format!(
                        "expected an absolute cgroup path prefix (e.g. `/kubepods.slice/`), found `{}`",
                        clip(&v)
                    ),
                );
            }
        }
    }
    Some(r)
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
