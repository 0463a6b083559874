//! # veil-policy: SCONE's session (policy) language 0.3.x
//!
//! veil accepts SCONE's policy documents ("sessions") unchanged. This crate turns policy text
//! into a typed, validated [`Session`]:
//!
//! ```text
//! text ──substitute($VAR, ${VAR})──▶ text ──saphyr events──▶ positioned YAML tree
//!      ──convert (shapes, types, unknown keys)──▶ Session ──validate (references, placeholders)──▶ Session
//!      ──canonical_bytes──▶ bytes ──SHA-256──▶ session hash
//! ```
//!
//! * [`substitute`]: template variables from `-e VAR=value` and (optionally) the environment;
//!   `$$…$$` is left alone, so `$$SCONE::name$$` placeholders survive for the CAS.
//! * [`parse`] / [`load`]: parse and validate; every problem is a [`Diagnostic`] with file,
//!   line:column and field path (`services[1].attestation[0].mrenclave[0]`). Keys veil parses
//!   but does not enforce give "`<path>` is not supported yet" warnings in
//!   [`Session::warnings`] (the CAS refuses them); unsupported secret kinds are errors.
//! * [`Session::to_yaml`], [`Session::canonical_bytes`], [`Session::hash`]: normalised output,
//!   canonical form (documented in [`canon`]) and the SHA-256 session hash.
//! * [`find_placeholders`], [`expand`], [`formats_for_kind`]: secret placeholders.
//! * [`Session::redacted`], [`Session::to_yaml_redacted`]: what `session read` shows (design-notes
//!   decision 22): every secret value, key, token and OTP secret replaced by the one marker
//!   [`REDACTED`] (`$$VEIL::REDACTED$$`), for every caller, the creator included. [`parse`]
//!   refuses the marker in every field ("`secrets[0].value` holds the redaction marker of
//!   `session read` …: start updates from your own file"); [`parse_read_back`] reads such output
//!   back for inspection. The session hash is always that of the unredacted canonical form.
//!
//! Limits: documents over [`MAX_DOCUMENT_BYTES`] (1 MiB) are refused; alias expansion is capped
//! at [`yaml::MAX_NODES`] nodes and at [`yaml::MAX_EXPANDED_BYTES`] (4 MiB) of expanded scalar
//! and tag bytes, checked at each alias before its subtree is copied
//! (`FILE:LINE:COL: the document expands to more than 4 MiB through aliases …`, at the alias);
//! nesting is capped at [`yaml::MAX_DEPTH`] levels.

pub mod canon;
mod convert;
mod diag;
mod model;
mod pem;
mod placeholder;
mod template;
mod validate;
pub mod yaml;

pub use diag::{Diagnostic, Diagnostics, NOT_SUPPORTED_YET, PolicyError, Severity};
pub use model::*;
pub use placeholder::{
    ExpandError, Placeholder, PlaceholderError, escape_json, expand, find_placeholders,
    formats_for_kind, is_raw_binary, whole_placeholder,
};
pub use template::{Vars, substitute};
pub use validate::{MAX_NAME_LEN, MAX_SEGMENT_LEN, check_item_name, check_session_name};

/// Largest accepted policy document (before and after template substitution): 1 MiB.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Parse and validate a policy document (no template substitution).
pub fn parse(file: &str, text: &str) -> Result<Session, PolicyError> {
    check_size(file, text)?;
    let map = template::SourceMap::identity(text);
    build(file, text, &map, None, false)
}

/// Parse the output of `session read` (a [`Session::to_yaml_redacted`] document): like
/// [`parse`], except that the redaction marker [`REDACTED`] is accepted in the fields
/// [`Session::redacted`] writes it to (and still refused everywhere else). The result equals
/// the reader's [`Session::redacted`]; it is for looking at a read-back version (its
/// `creator`, `predecessor`, services, …), never for uploading: [`parse`] refuses it.
pub fn parse_read_back(file: &str, text: &str) -> Result<Session, PolicyError> {
    check_size(file, text)?;
    let map = template::SourceMap::identity(text);
    build(file, text, &map, None, true)
}

/// Substitute template variables, parse, apply the `--name` override, validate.
pub fn load(
    file: &str,
    text: &str,
    vars: &Vars,
    name_override: Option<&str>,
) -> Result<Session, PolicyError> {
    check_size(file, text)?;
    let (subst, map) = template::substitute_mapped(file, text, vars)?;
    check_size(file, &subst)?;
    build(file, &subst, &map, name_override, false)
}

fn check_size(file: &str, text: &str) -> Result<(), PolicyError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(PolicyError::TooLarge {
            file: file.to_string(),
            size: text.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    Ok(())
}

fn build(
    file: &str,
    text: &str,
    map: &template::SourceMap,
    name_override: Option<&str>,
    read_back: bool,
) -> Result<Session, PolicyError> {
    let mut cx = convert::Cx::new(file);
    cx.read_back = read_back;
    let root = match yaml::parse(text, map) {
        Ok(Some(root)) => root,
        Ok(None) => {
            cx.err(
                Pos { line: 1, col: 1 },
                "",
                "empty document; `name` is required",
            );
            return Err(PolicyError::Invalid(Diagnostics(cx.errors)));
        }
        Err(e) => {
            cx.err(e.pos, "", e.message);
            return Err(PolicyError::Invalid(Diagnostics(cx.errors)));
        }
    };
    let mut session = convert::session(&mut cx, &root);
    if let Some(n) = name_override {
        session.name = n.to_string();
    }
    validate::validate(&mut cx, &session);
    if !cx.errors.is_empty() {
        let mut errors = cx.errors;
        errors.sort_by_key(|d| (d.line, d.col));
        errors.dedup();
        return Err(PolicyError::Invalid(Diagnostics(errors)));
    }
    let mut warnings = cx.warnings;
    warnings.sort_by_key(|d| (d.line, d.col));
    session.warnings = warnings;
    session.positions = cx.positions;
    Ok(session)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
