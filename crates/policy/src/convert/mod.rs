//! Conversion of the positioned YAML tree into the typed model ([`Session`]). Checks the shape
//! and type of every field (unknown keys get a "did you mean" suggestion) and records the
//! position of every field path. Cross-references between sections and the use of placeholders
//! are checked afterwards by `validate`; nothing here looks at another section.
//!
//! One module per section of the session document:
//!
//! * [`reader`]: the node reader [`Cx`] (typed accessors, diagnostics, positions) and the
//!   helpers shared by all sections (`join`, `clip`, `suggest`, `is_hex`, `placeholders_in`);
//! * this module: the top level (`name`, `version`, `predecessor`, `namespace_hash`, `salt`)
//!   and the dispatch to the sections;
//! * [`access`]: `creator` and `access_policy`;
//! * [`services`]: `services`, with their attestation variants (`attestation`, the legacy
//!   `mrenclaves`, `signer`);
//! * [`secrets`]: `secrets` (kinds, values, export and import) and `secret_config`;
//! * [`images`]: `images` (injection files, image volumes, provided secrets);
//! * [`volumes`]: `volumes` (pre-built, exported, imported) and volume update policies;
//! * [`security`]: `security` (the attestation policy, the service access token) and
//!   one-time-password secrets.
//!
//! Rules of the top level: `name` is required; a missing `version` is a warning (veil applies the
//! 0.3 language), and only `0.3` and `0.3.N` are accepted; `predecessor` and `namespace_hash` are
//! 64 hex characters, `salt` 32 (normalised to lowercase). An element of a section list that
//! does not convert is left out of the session; its errors are reported.

mod access;
mod images;
mod reader;
mod secrets;
mod security;
mod services;
mod volumes;

pub(crate) use reader::{Cx, clip, join, placeholders_in, suggest};

use crate::diag::NOT_SUPPORTED_YET;
use crate::model::Session;
use crate::yaml::Node;

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
        s.creator = access::creator(cx, n, "creator");
    }
    if let Some(n) = f.get("services") {
        for (p, n) in cx.list(n, "services") {
            if let Some(v) = services::service(cx, n, &p) {
                s.services.push(v);
            }
        }
    }
    if let Some(n) = f.get("secrets") {
        for (p, n) in cx.list(n, "secrets") {
            if let Some(v) = secrets::secret(cx, n, &p) {
                s.secrets.push(v);
            }
        }
    }
    if let Some(n) = f.get("images") {
        for (p, n) in cx.list(n, "images") {
            if let Some(v) = images::image(cx, n, &p) {
                s.images.push(v);
            }
        }
    }
    if let Some(n) = f.get("volumes") {
        for (p, n) in cx.list(n, "volumes") {
            if let Some(v) = volumes::volume(cx, n, &p) {
                s.volumes.push(v);
            }
        }
    }
    if let Some(n) = f.present("access_policy") {
        s.access_policy = access::access_policy(cx, n, "access_policy");
    }
    if let Some(n) = f.present("security") {
        s.security = security::security(cx, n, "security");
    }
    if let Some(n) = f.present("secret_config") {
        s.secret_config = secrets::secret_config(cx, n, "secret_config");
    }
    s
}
