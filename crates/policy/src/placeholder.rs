//! Secret placeholders `$$SCONE::name[:format][|escape(json)]$$`: finding them in text, the
//! formats each secret kind allows, and expansion with caller-supplied secret values.

use std::fmt;
use std::ops::Range;

use crate::model::SecretKind;

/// Opening of a placeholder.
pub const OPEN: &str = "$$SCONE::";
/// Closing of a placeholder.
pub const CLOSE: &str = "$$";
const ESCAPE_JSON: &str = "|escape(json)";

/// One parsed placeholder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Placeholder {
    /// Secret name.
    pub secret: String,
    /// Format suffix after the first `:` (e.g. `hex`, `crt:der`), as written.
    pub format: Option<String>,
    /// `|escape(json)` was given: the expansion is escaped for inclusion in a JSON string.
    pub escape_json: bool,
}

impl fmt::Display for Placeholder {
    /// The placeholder as written in a document (`$$SCONE::name:format|escape(json)$$`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{OPEN}{}", self.secret)?;
        if let Some(fm) = &self.format {
            write!(f, ":{fm}")?;
        }
        if self.escape_json {
            f.write_str(ESCAPE_JSON)?;
        }
        f.write_str(CLOSE)
    }
}

/// A malformed placeholder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    /// `$$SCONE::` without a closing `$$`.
    #[error("placeholder at byte {at} is not closed with `$$`")]
    Unterminated {
        /// Byte offset of the opening `$$`.
        at: usize,
    },
    /// The text between the markers is not `name[:format][|escape(json)]`.
    #[error("malformed placeholder `{text}`: {why}")]
    Malformed {
        /// The placeholder text.
        text: String,
        /// What is wrong.
        why: String,
    },
}

/// Failure of [`expand`].
#[derive(Debug, thiserror::Error)]
pub enum ExpandError<E> {
    /// A placeholder in the text is malformed.
    #[error(transparent)]
    Placeholder(PlaceholderError),
    /// The resolver failed for a placeholder.
    #[error("cannot expand `{placeholder}`")]
    Resolve {
        /// The placeholder that failed.
        placeholder: Placeholder,
        /// The resolver's error.
        #[source]
        source: E,
    },
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '~')
}

fn parse_inner(inner: &str) -> Result<Placeholder, PlaceholderError> {
    let malformed = |why: &str| PlaceholderError::Malformed {
        text: format!("{OPEN}{inner}{CLOSE}"),
        why: why.to_string(),
    };
    let (body, escape_json) = match inner.find('|') {
        Some(i) => {
            if &inner[i..] != ESCAPE_JSON {
                return Err(malformed("the only encoding suffix is `|escape(json)`"));
            }
            (&inner[..i], true)
        }
        None => (inner, false),
    };
    let (name, format) = match body.find(':') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    if name.is_empty() {
        return Err(malformed("the secret name is empty"));
    }
    if !name.chars().all(is_name_char) {
        return Err(malformed(
            "the secret name may contain only A-Z a-z 0-9 _ - . ~",
        ));
    }
    if let Some(f) = format
        && (f.is_empty()
            || !f
                .split(':')
                .all(|p| !p.is_empty() && p.chars().all(is_name_char)))
    {
        return Err(malformed("the format must be words separated by `:`"));
    }
    Ok(Placeholder {
        secret: name.to_string(),
        format: format.map(str::to_string),
        escape_json,
    })
}

/// All placeholders in `s`, with their byte ranges (including the `$$` markers), in order.
pub fn find_placeholders(s: &str) -> Result<Vec<(Range<usize>, Placeholder)>, PlaceholderError> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(rel) = s[from..].find(OPEN) {
        let start = from + rel;
        let inner_start = start + OPEN.len();
        let Some(end_rel) = s[inner_start..].find(CLOSE) else {
            return Err(PlaceholderError::Unterminated { at: start });
        };
        let inner_end = inner_start + end_rel;
        let ph = parse_inner(&s[inner_start..inner_end])?;
        let end = inner_end + CLOSE.len();
        out.push((start..end, ph));
        from = end;
    }
    Ok(out)
}

/// If the whole of `s` is exactly one placeholder, that placeholder.
pub fn whole_placeholder(s: &str) -> Option<Placeholder> {
    let t = s.trim();
    match find_placeholders(t) {
        Ok(v) if v.len() == 1 && v[0].0 == (0..t.len()) => v.into_iter().next().map(|(_, p)| p),
        _ => None,
    }
}

/// Replace every placeholder in `s` by `resolve(placeholder)`. `resolve` returns the already
/// formatted text for the placeholder's format; `expand` applies `|escape(json)` itself.
pub fn expand<E>(
    s: &str,
    mut resolve: impl FnMut(&Placeholder) -> Result<String, E>,
) -> Result<String, ExpandError<E>> {
    let found = find_placeholders(s).map_err(ExpandError::Placeholder)?;
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for (range, ph) in found {
        out.push_str(&s[last..range.start]);
        let value = resolve(&ph).map_err(|source| ExpandError::Resolve {
            placeholder: ph.clone(),
            source,
        })?;
        if ph.escape_json {
            out.push_str(&escape_json(&value));
        } else {
            out.push_str(&value);
        }
        last = range.end;
    }
    out.push_str(&s[last..]);
    Ok(out)
}

/// Escape text for the inside of a JSON string literal (without the surrounding quotes).
pub fn escape_json(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// Valid `:format` suffixes of placeholders for a secret kind (no suffix is always valid and
/// means the kind's default format).
pub fn formats_for_kind(kind: SecretKind) -> &'static [&'static str] {
    match kind {
        SecretKind::Ascii | SecretKind::ConfigFragment => &[],
        SecretKind::Binary => &["bin", "hex", "base64", "base64url", "base32", "base32nopad"],
        SecretKind::PrivateKey => &["pem", "pkcs8:pem", "der", "pkcs8:der"],
        SecretKind::PublicKey => &["spki:pem", "spki:der"],
        SecretKind::X509 | SecretKind::X509Ca => &[
            "crt",
            "crt:pem",
            "crt:der",
            "privatekey",
            "privatekey:pem",
            "privatekey:pkcs8:pem",
            "privatekey:der",
            "privatekey:pkcs8:der",
            "chain",
            "pkcs12-with-private-key",
        ],
    }
}

/// Whether a placeholder with this kind and format expands to raw binary (not allowed in
/// command arguments and environment values).
pub fn is_raw_binary(kind: SecretKind, format: Option<&str>) -> bool {
    match kind {
        SecretKind::Binary => matches!(format, None | Some("bin")),
        SecretKind::PrivateKey => matches!(format, Some("der" | "pkcs8:der")),
        SecretKind::PublicKey => matches!(format, Some("spki:der")),
        SecretKind::X509 | SecretKind::X509Ca => matches!(
            format,
            Some("crt:der" | "privatekey:der" | "privatekey:pkcs8:der" | "pkcs12-with-private-key")
        ),
        SecretKind::Ascii | SecretKind::ConfigFragment => false,
    }
}

#[cfg(test)]
mod tests {
    //! Placeholder scanning and expansion: finding, expanding, malformed syntax, resolver errors.

    use super::*;

    #[test]
    fn finds_and_expands() {
        let s = "a $$SCONE::x$$ b $$SCONE::y:hex|escape(json)$$ $$notme$$";
        let f = find_placeholders(s).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(&s[f[0].0.clone()], "$$SCONE::x$$");
        assert_eq!(f[1].1.format.as_deref(), Some("hex"));
        assert!(f[1].1.escape_json);
        let out = expand(s, |p| -> Result<_, ()> {
            Ok(if p.secret == "x" {
                "X".into()
            } else {
                "q\"n\n".into()
            })
        })
        .unwrap();
        assert_eq!(out, "a X b q\\\"n\\n $$notme$$");
        assert_eq!(f[1].1.to_string(), "$$SCONE::y:hex|escape(json)$$");
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            find_placeholders("$$SCONE::x"),
            Err(PlaceholderError::Unterminated { at: 0 })
        ));
        assert!(find_placeholders("$$SCONE::$$").is_err());
        assert!(find_placeholders("$$SCONE::a|escape(xml)$$").is_err());
        assert!(find_placeholders("$$SCONE::a b$$").is_err());
        assert!(find_placeholders("$$SCONE::a:$$").is_err());
    }

    #[test]
    fn resolver_error_is_reported() {
        let e = expand("$$SCONE::x$$", |_| Err::<String, _>("nope")).unwrap_err();
        assert!(matches!(e, ExpandError::Resolve { .. }));
    }
}
