//! Diagnostics (errors and warnings with file, position and field path) and the crate's error type.

use std::fmt;

/// How serious a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The document is rejected.
    Error,
    /// The document is accepted by `session check`, but something in it is not enforced (or
    /// otherwise deserves attention). The CAS refuses documents with "not supported yet" warnings.
    Warning,
}

/// One finding about a policy document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    /// The file name as given by the caller.
    pub file: String,
    /// 1-based line; 0 = unknown.
    pub line: usize,
    /// 1-based column (in characters); 0 = unknown.
    pub col: usize,
    /// Field path, e.g. `services[1].attestation.mrenclave`; empty = the whole document.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

/// Suffix of every "parsed but not enforced" warning (design-notes decision 14).
pub const NOT_SUPPORTED_YET: &str = "is not supported yet";

impl Diagnostic {
    /// Whether this is a "`<field>` is not supported yet" diagnostic: a key veil parses but does
    /// not enforce. The CAS refuses sessions carrying such warnings at create/update.
    pub fn is_unsupported(&self) -> bool {
        self.message.ends_with(NOT_SUPPORTED_YET)
    }
}

impl fmt::Display for Diagnostic {
    /// `FILE:LINE:COL: PATH: MESSAGE` (the `PATH: ` part is omitted when the path is empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A non-empty list of diagnostics (one per line when displayed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Why a policy document could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The document is invalid; every problem found is listed.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// The document is larger than [`crate::MAX_DOCUMENT_BYTES`].
    #[error("{file}: document is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// File name.
        file: String,
        /// Size of the document in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

impl PolicyError {
    /// The diagnostics of this error (a `TooLarge` error becomes one diagnostic at 0:0).
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        match self {
            PolicyError::Invalid(d) => d.0.clone(),
            PolicyError::TooLarge { file, .. } => vec![Diagnostic {
                file: file.clone(),
                line: 0,
                col: 0,
                path: String::new(),
                message: self.to_string(),
                severity: Severity::Error,
            }],
        }
    }
}
