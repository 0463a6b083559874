//! `images`: what a service's file system is given.
//!
//! * `name` is required.
//! * `injection_files`: each is an absolute path alone, or `{path, content, permission}`; the
//!   content may contain placeholders (syntax checked here), a null content is the empty file;
//!   `permission` is a file mode (`0o644`, `0644` or decimal), at most `0o7777`.
//! * `volumes`: `{name, path, update_policy}` with an absolute path; the update policy defaults
//!   to `rollback_protected` (see [`super::volumes`]).
//! * `provide_secrets`: secret names (whether they exist is checked by `validate`).

use super::reader::{Cx, clip, join};
use super::volumes::update_policy;
use crate::model::*;
use crate::yaml::{Kind, Node};

pub(super) fn image(cx: &mut Cx, n: &Node, path: &str) -> Option<Image> {
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
