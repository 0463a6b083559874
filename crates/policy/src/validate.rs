//! Semantic checks on a converted session: names (`.` and `..` are refused as item names,
//! references to items, parts of the session's name and path components; relative session
//! names such as `../frontend` in imports and exports stay allowed), uniqueness, references,
//! attestation factors, exclusive keys and placeholders (secret exists, format valid for its
//! kind, no raw binary in arguments or environment).

use std::collections::HashMap;

use crate::convert::{Cx, clip, join, placeholders_in, suggest};
use crate::model::*;
use crate::placeholder::{Placeholder, formats_for_kind, is_raw_binary};

/// Longest session name (the whole path).
pub const MAX_NAME_LEN: usize = 512;
/// Longest name segment.
pub const MAX_SEGMENT_LEN: usize = 128;

/// `.` and `..` are never names: as a path part they mean "here" and "the parent", so a volume,
/// service, secret or image named so (or a session name part) could address something else.
fn is_dot(s: &str) -> bool {
    s == "." || s == ".."
}

const DOT_NAME: &str = "`.` and `..` are not names (they mean this and the parent directory)";

fn segment_ok(s: &str) -> bool {
    !is_dot(s)
        && (1..=MAX_SEGMENT_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~'))
}

/// Why a session name is invalid, if it is.
pub fn check_session_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "session name is longer than {MAX_NAME_LEN} characters"
        ));
    }
    for seg in name.split('/') {
        if is_dot(seg) {
            return Err(format!(
                "invalid session name `{}`: {DOT_NAME}; no `/`-separated part may be `.` or `..`",
                clip(name)
            ));
        }
        if !segment_ok(seg) {
            return Err(format!(
                "invalid session name `{}`: each `/`-separated part must be 1 to {MAX_SEGMENT_LEN} characters of A-Z a-z 0-9 _ - . ~",
                clip(name)
            ));
        }
    }
    Ok(())
}

/// Why an item name (service, secret, image, volume) is invalid, if it is.
pub fn check_item_name(name: &str) -> Result<(), String> {
    if is_dot(name) {
        return Err(format!("invalid name `{name}`: {DOT_NAME}"));
    }
    if segment_ok(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid name `{}`: 1 to {MAX_SEGMENT_LEN} characters of A-Z a-z 0-9 _ - . ~",
            clip(name)
        ))
    }
}

impl Cx<'_> {
    fn at(&self, path: &str) -> Pos {
        // The field itself, else the closest enclosing field that has a position.
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => {
                    return self
                        .positions
                        .get("")
                        .copied()
                        .unwrap_or(Pos { line: 1, col: 1 });
                }
            }
        }
    }
    fn err_at(&mut self, path: &str, msg: impl Into<String>) {
        let pos = self.at(path);
        self.err(pos, path, msg);
    }
}

/// Where a placeholder appears; decides which formats are acceptable.
#[derive(Clone, Copy, PartialEq)]
enum Use {
    /// Command argument or environment value: no raw binary.
    Text,
    /// Injection-file content: anything.
    File,
    /// A binary key (fspf_key): binary secrets only.
    Key,
    /// Dynamic configuration (attestation, platforms, access policy): config fragments or text.
    Config,
    /// OTP secret.
    Otp,
}

fn check_placeholder(cx: &mut Cx, s: &Session, path: &str, p: &Placeholder, used: Use) {
    let Some(sec) = s.secret(&p.secret) else {
        let legacy = [".hex", ".crt", ".key", ".chain"].iter().find(|suf| {
            p.secret.ends_with(*suf) && s.secret(&p.secret[..p.secret.len() - suf.len()]).is_some()
        });
        let msg = match legacy {
            Some(suf) => format!(
                "legacy placeholder suffix `{suf}` in `{p}` {}; write `$$SCONE::{}:{}$$`",
                "is not supported yet",
                &p.secret[..p.secret.len() - suf.len()],
                &suf[1..]
            ),
            None => {
                let names: Vec<&str> = s.secrets.iter().map(|x| x.name.as_str()).collect();
                match suggest(&p.secret, &names) {
                    Some(x) => format!(
                        "placeholder `{p}` refers to unknown secret `{}`; did you mean `{x}`?",
                        p.secret
                    ),
                    None => format!("placeholder `{p}` refers to unknown secret `{}`", p.secret),
                }
            }
        };
        cx.err_at(path, msg);
        return;
    };
    if let Some(f) = &p.format {
        let valid = formats_for_kind(sec.kind);
        if !valid.contains(&f.as_str()) {
            let msg = if valid.is_empty() {
                format!("placeholder `{p}`: a {} secret takes no format", sec.kind)
            } else {
                format!(
                    "placeholder `{p}`: format `{f}` is not valid for a {} secret (valid: {})",
                    sec.kind,
                    valid.join(", ")
                )
            };
            cx.err_at(path, msg);
            return;
        }
    }
    let fmt = p.format.as_deref();
    match used {
        Use::Text if is_raw_binary(sec.kind, fmt) => cx.err_at(
            path,
            format!(
                "placeholder `{p}` expands to raw binary, which is not allowed in arguments and environment; use a text format such as `:hex` or `:base64`"
            ),
        ),
        Use::Key if !(sec.kind == SecretKind::Binary && matches!(fmt, None | Some("hex") | Some("bin"))) => cx.err_at(
            path,
            format!("placeholder `{p}` must refer to a binary secret"),
        ),
        Use::Otp if sec.kind != SecretKind::Ascii && !(sec.kind == SecretKind::Binary && matches!(fmt, Some("base32") | Some("base32nopad"))) => cx.err_at(
            path,
            format!("placeholder `{p}` must refer to an ascii secret or a binary secret with `:base32`/`:base32nopad`"),
        ),
        Use::Config if !matches!(sec.kind, SecretKind::ConfigFragment | SecretKind::Ascii | SecretKind::X509 | SecretKind::X509Ca) => cx.err_at(
            path,
            format!("placeholder `{p}` must refer to a config-fragment, ascii or x509 secret"),
        ),
        _ => {}
    }
}

fn check_text(cx: &mut Cx, s: &Session, path: &str, text: &str, used: Use) {
    for p in placeholders_in(text) {
        check_placeholder(cx, s, path, &p, used);
    }
}

fn unique<'a>(cx: &mut Cx, what: &str, base: &str, names: impl Iterator<Item = &'a str>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, n) in names.enumerate() {
        let path = format!("{base}[{i}].name");
        if let Err(e) = check_item_name(n) {
            cx.err_at(&path, e);
        }
        if let Some(first) = seen.get(n) {
            let first_pos = cx.at(&format!("{base}[{first}].name"));
            cx.err_at(
                &path,
                format!(
                    "duplicate {what} name `{}` (first defined at line {})",
                    clip(n),
                    first_pos.line
                ),
            );
        } else {
            seen.insert(n, i);
        }
    }
}

/// A reference to a named item (an imported secret or volume, a volume alias) that is `.` or `..`.
fn dot_reference(cx: &mut Cx, path: &str, name: &str) {
    if is_dot(name) {
        cx.err_at(path, format!("invalid name `{name}`: {DOT_NAME}"));
    }
}

/// An absolute path in the program's view with a `.` or `..` component.
fn dot_path(cx: &mut Cx, path: &str, what: &str, p: &str) {
    if p.split('/').any(is_dot) {
        cx.err_at(
            path,
            format!(
                "{what} `{}` has a `.` or `..` component; write the path without them",
                clip(p)
            ),
        );
    }
}

/// `.`/`..` checks of the names, references and paths that are not item names. Session names
/// in imports and exports are not checked: SCONE gives them relative to the session
/// (`../frontend` is a sibling), and the CAS resolves them.
fn dot_names(cx: &mut Cx, s: &Session) {
    for (i, sec) in s.secrets.iter().enumerate() {
        let base = format!("secrets[{i}]");
        if let Some(im) = &sec.import {
            dot_reference(cx, &format!("{base}.import.secret"), &im.secret);
        }
    }
    for (i, img) in s.images.iter().enumerate() {
        for (j, f) in img.injection_files.iter().enumerate() {
            dot_path(
                cx,
                &format!("images[{i}].injection_files[{j}].path"),
                "injection file path",
                &f.path,
            );
        }
        for (j, v) in img.volumes.iter().enumerate() {
            dot_path(
                cx,
                &format!("images[{i}].volumes[{j}].path"),
                "volume path",
                &v.path,
            );
        }
    }
    for (i, v) in s.volumes.iter().enumerate() {
        for (j, e) in v.export.iter().enumerate() {
            if let Some(a) = &e.volume_alias {
                dot_reference(cx, &format!("volumes[{i}].export[{j}].volume_alias"), a);
            }
        }
        if let Some(im) = &v.import {
            dot_reference(cx, &format!("volumes[{i}].import.volume"), &im.volume);
        }
    }
}

/// Check a converted session, adding errors to `cx`.
pub(crate) fn validate(cx: &mut Cx, s: &Session) {
    dot_names(cx, s);
    if let Err(e) = check_session_name(&s.name) {
        cx.err_at("name", e);
    }
    if s.predecessor.is_some() && s.namespace_hash.is_some() {
        cx.err_at(
            "namespace_hash",
            "`predecessor` and `namespace_hash` are mutually exclusive",
        );
    }
    unique(
        cx,
        "service",
        "services",
        s.services.iter().map(|x| x.name.as_str()),
    );
    unique(
        cx,
        "secret",
        "secrets",
        s.secrets.iter().map(|x| x.name.as_str()),
    );
    unique(
        cx,
        "image",
        "images",
        s.images.iter().map(|x| x.name.as_str()),
    );
    unique(
        cx,
        "volume",
        "volumes",
        s.volumes.iter().map(|x| x.name.as_str()),
    );

    let mode_none = s
        .security
        .attestation
        .as_ref()
        .is_some_and(|a| a.mode == AttestationMode::None_);
    for (i, svc) in s.services.iter().enumerate() {
        let base = format!("services[{i}]");
        if svc.attestation.is_empty() && !mode_none {
            cx.err_at(
                &base,
                format!(
                    "service `{}` has no attestation factor; add `attestation: {{mrenclave: ...}}` or set `security.attestation.mode: none`",
                    clip(&svc.name)
                ),
            );
        }
        if let Some(img) = &svc.image_name
            && s.image(img).is_none()
        {
            cx.err_at(
                &join(&base, "image_name"),
                format!("image `{}` is not defined in `images`", clip(img)),
            );
        }
        for (j, a) in svc.command.iter().enumerate() {
            let p = if svc.command.len() == 1
                || !cx.positions.contains_key(&format!("{base}.command[{j}]"))
            {
                join(&base, "command")
            } else {
                format!("{base}.command[{j}]")
            };
            check_text(cx, s, &p, a, Use::Text);
        }
        for (k, v) in &svc.environment {
            check_text(cx, s, &join(&join(&base, "environment"), k), v, Use::Text);
        }
        if let Some(k) = &svc.fspf_key {
            check_text(cx, s, &join(&base, "fspf_key"), k, Use::Key);
        }
        for (j, v) in svc.attestation.iter().enumerate() {
            for (m, e) in v.mrenclave.iter().enumerate() {
                let p = format!("{base}.attestation[{j}].mrenclave[{m}]");
                check_text(cx, s, &p, e, Use::Config);
            }
        }
        for (j, p) in svc.platforms.iter().enumerate() {
            check_text(cx, s, &format!("{base}.platforms[{j}]"), p, Use::Config);
        }
        if let Some(o) = &svc.one_time_password_shared_secret {
            check_text(
                cx,
                s,
                &join(&base, "one_time_password_shared_secret"),
                o,
                Use::Otp,
            );
        }
    }
    for (i, sec) in s.secrets.iter().enumerate() {
        let base = format!("secrets[{i}]");
        let needs_key = matches!(
            sec.kind,
            SecretKind::PublicKey | SecretKind::X509 | SecretKind::X509Ca
        ) && sec.value.is_none()
            && sec.import.is_none()
            && sec.import_akv.is_none();
        match &sec.private_key {
            Some(pk) => match s.secret(pk) {
                Some(t) if t.kind == SecretKind::PrivateKey => {}
                Some(t) => cx.err_at(
                    &join(&base, "private_key"),
                    format!(
                        "`{}` is a {} secret, not a private-key secret",
                        clip(pk),
                        t.kind
                    ),
                ),
                None => cx.err_at(
                    &join(&base, "private_key"),
                    format!("secret `{}` is not defined", clip(pk)),
                ),
            },
            None if needs_key => cx.err_at(
                &base,
                format!(
                    "a {} secret needs `private_key` (or `value`/`import`)",
                    sec.kind
                ),
            ),
            None => {}
        }
        if let Some(is) = &sec.issuer {
            match s.secret(is) {
                _ if *is == sec.name => cx.err_at(
                    &join(&base, "issuer"),
                    "a certificate cannot be its own issuer; omit `issuer` for self-signed",
                ),
                Some(t) if t.kind == SecretKind::X509Ca => {}
                Some(t) => cx.err_at(
                    &join(&base, "issuer"),
                    format!(
                        "`{}` is a {} secret, not an x509-ca secret",
                        clip(is),
                        t.kind
                    ),
                ),
                None => cx.err_at(
                    &join(&base, "issuer"),
                    format!("secret `{}` is not defined", clip(is)),
                ),
            }
        }
    }
    for (i, img) in s.images.iter().enumerate() {
        let base = format!("images[{i}]");
        for (j, f) in img.injection_files.iter().enumerate() {
            if let Some(c) = &f.content {
                check_text(
                    cx,
                    s,
                    &format!("{base}.injection_files[{j}].content"),
                    c,
                    Use::File,
                );
            }
        }
        for (j, v) in img.volumes.iter().enumerate() {
            if s.volume(&v.name).is_none() {
                cx.err_at(
                    &format!("{base}.volumes[{j}].name"),
                    format!("volume `{}` is not defined in `volumes`", clip(&v.name)),
                );
            }
        }
        for (j, n) in img.provide_secrets.iter().enumerate() {
            if s.secret(n).is_none() {
                cx.err_at(
                    &format!("{base}.provide_secrets[{j}]"),
                    format!("secret `{}` is not defined", clip(n)),
                );
            }
        }
    }
    for (i, v) in s.volumes.iter().enumerate() {
        if let Some(k) = &v.fspf_key {
            check_text(cx, s, &format!("volumes[{i}].fspf_key"), k, Use::Key);
        }
    }
    let ap = &s.access_policy;
    for (key, rule) in [
        ("read", &ap.read),
        ("update", &ap.update),
        ("create_sessions", &ap.create_sessions),
        ("list_sessions", &ap.list_sessions),
    ] {
        if let Some(r) = rule {
            check_entries(cx, s, &format!("access_policy.{key}"), &r.0);
        }
    }
    if let Some(a) = &s.security.attestation
        && let Some(o) = &a.one_time_password_shared_secret
    {
        check_text(
            cx,
            s,
            "security.attestation.one_time_password_shared_secret",
            o,
            Use::Otp,
        );
    }
    if let Some(t) = &s.security.service_access_token {
        check_text(cx, s, "security.service_access_token", t, Use::Text);
    }
}

fn check_entries(cx: &mut Cx, s: &Session, path: &str, entries: &[AccessEntry]) {
    for (i, e) in entries.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match e {
            AccessEntry::Placeholder(ph) => check_placeholder(cx, s, &p, ph, Use::Config),
            AccessEntry::RequireAll(v) => check_entries(cx, s, &join(&p, "require-all"), v),
            AccessEntry::RequireAtLeast(n, v) => {
                check_entries(cx, s, &join(&p, &format!("require-at-least-{n}")), v)
            }
            _ => {}
        }
    }
}
