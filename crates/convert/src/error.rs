//! Errors of the converter: each names the layer, path or flag it is about, in one line.

use std::path::PathBuf;

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// An image reference that none of the supported transports accepts.
    #[error("{flag} {value}: {why}")]
    Reference {
        /// `--from` or `--to`.
        flag: &'static str,
        /// The reference as given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A command-line value (or file named by one) that cannot be used.
    #[error("{flag}: {why}")]
    Flag {
        /// The flag, e.g. `--dir /code`.
        flag: String,
        /// What is wrong.
        why: String,
    },
    /// The source image is not a usable image.
    #[error("source image: {0}")]
    Image(String),
    /// A layer of the source image is corrupt or cannot be read.
    #[error("layer {index} ({digest}): {why}")]
    Layer {
        /// Index of the layer, from 0 (the base).
        index: usize,
        /// Its digest.
        digest: String,
        /// What is wrong.
        why: String,
    },
    /// The program or a file it loads at start cannot be measured.
    #[error("{path}: {why}")]
    Program {
        /// Path inside the image.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The generated session does not pass the policy checks.
    #[error("generated session: {0}")]
    Session(String),
    /// Building the code region failed.
    #[error("code region: {0}")]
    CodeRegion(#[from] veil_shield::Error),
    /// A local file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Shorthand for an I/O error on `path`.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ConvertError {
    let path = path.into();
    move |source| ConvertError::Io { path, source }
}
