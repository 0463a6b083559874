//! `volumes`: the session's encrypted volumes.
//!
//! * `name` is required. `fspf_key` (64 hex or one placeholder) and `fspf_tag` (32 hex) describe
//!   a pre-built volume and come together. `files` is `encrypted` (the default) or
//!   `authenticated-only`.
//! * `export` is one target or a list: the `session` (and optional `session_hash`) given directly
//!   or in `to: {session, session_hash}`, not both; optional `update_policy` and `volume_alias`.
//! * `import: {session, volume}`; an imported volume has no `fspf_key`, `fspf_tag` or `export`.
//! * Update policies (here and in `images`): `rollback_protected`, `ephemeral`,
//!   `no_rollback_protection`.

use super::reader::{Cx, join};
use crate::model::*;
use crate::yaml::{Kind, Node};

pub(super) fn volume(cx: &mut Cx, n: &Node, path: &str) -> Option<Volume> {
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
        v.fspf_key = cx
            .kept_redacted(k)
            .or_else(|| cx.hex_or_placeholder(k, &join(path, "fspf_key"), 64));
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

pub(super) fn update_policy(cx: &mut Cx, n: &Node, path: &str) -> Option<UpdatePolicy> {
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
