//! Shared helpers for the integration tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The `veil` binary built for this test run.
pub fn veil_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_veil"))
}

/// A `veil` command with a clean, test-local environment: its own HOME, so no identity or
/// pinned CAS of the developer leaks in.
pub fn veil(home: &std::path::Path) -> Command {
    let mut c = Command::new(veil_bin());
    c.env("HOME", home)
        .env_remove("VEIL_IDENTITY")
        .env_remove("VEIL_CLI_CONFIG")
        .env("VEIL_LOG", "warn");
    c
}

/// A file under `tests/data/`.
pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name)
}
