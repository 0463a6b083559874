//! The launcher's error: an outer message plus a `Caused by` chain, printed as
//! `[VEIL|FATAL] Could not initialize: <outer>` / `  Caused by: …`. Never carries a secret.

/// A fatal launcher error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.chain.join(": "))]
pub struct LauncherError {
    /// Outermost message first.
    pub chain: Vec<String>,
}

impl LauncherError {
    /// An error with one message.
    pub fn new(msg: impl Into<String>) -> Self {
        Self {
            chain: vec![msg.into()],
        }
    }

    /// An error with a message chain (outermost first).
    pub fn chain(chain: Vec<String>) -> Self {
        Self { chain }
    }

    /// Wrap under a new outer message.
    pub fn context(mut self, outer: impl Into<String>) -> Self {
        self.chain.insert(0, outer.into());
        self
    }

    /// The text printed on stderr.
    pub fn fatal_text(&self) -> String {
        let mut it = self.chain.iter();
        let mut out = format!(
            "[VEIL|FATAL] Could not initialize: {}\n",
            it.next().map(String::as_str).unwrap_or("unknown error")
        );
        for c in it {
            out.push_str("  Caused by: ");
            out.push_str(c);
            out.push('\n');
        }
        out
    }
}

/// Build a [`LauncherError`] from an outer message and a displayable cause.
pub(crate) fn err(outer: impl Into<String>, cause: impl std::fmt::Display) -> LauncherError {
    LauncherError::chain(vec![outer.into(), cause.to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_format() {
        let e = LauncherError::chain(vec!["Unexpected x".into()]).context("Attestation failed");
        assert_eq!(
            e.fatal_text(),
            "[VEIL|FATAL] Could not initialize: Attestation failed\n  Caused by: Unexpected x\n"
        );
    }
}
