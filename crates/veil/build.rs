//! Builds the static `veil-launcher` (decision 24) with `scripts/build-launcher.sh` into its own
//! target directory (`<target>/veil-launcher`), so that `cargo run` and `cargo test` produce and
//! use it with no extra step. `veil` finds it through `VEIL_LAUNCHER_BUILT` (set here) unless
//! `--launcher`, `VEIL_LAUNCHER` or a `veil-launcher` beside the `veil` binary says otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Workspace crates the launcher is built from: a change in any of them rebuilds it.
const LAUNCHER_SOURCES: &[&str] = &[
    "crates/launcher",
    "crates/types",
    "crates/api",
    "crates/attest",
    "crates/client",
    "crates/shield",
    "crates/identity",
    "Cargo.toml",
    "Cargo.lock",
    "scripts/build-launcher.sh",
];

/// Variables the nested cargo inherits; everything else (cargo's build-script variables,
/// `RUSTC_WORKSPACE_WRAPPER` under clippy, jobserver flags) is dropped.
const KEPT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "TMPDIR",
    "LANG",
    "CARGO_NET_OFFLINE",
    "CARGO_HTTP_PROXY",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
];

fn main() {
    if let Err(e) = build() {
        // A build script reports failure by exiting non-zero; cargo shows stderr.
        eprintln!("error: building the static veil-launcher failed: {e}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .and_then(Path::parent)
        .ok_or("crates/veil has no workspace root")?
        .to_path_buf();
    for s in LAUNCHER_SOURCES {
        println!("cargo:rerun-if-changed={}", root.join(s).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"));
    let out_dir = target.join("veil-launcher");

    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/build-launcher.sh"))
        .arg(&out_dir)
        .env_clear();
    for k in KEPT_ENV {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    // The same cargo and rustc as the outer build.
    cmd.env("CARGO", env("CARGO")?);
    cmd.env(
        "RUSTC",
        std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()),
    );
    let out = cmd
        .output()
        .map_err(|e| format!("running scripts/build-launcher.sh: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| l.starts_with("warning:")) {
        println!(
            "cargo:warning={}",
            line.trim_start_matches("warning:").trim()
        );
    }
    if !out.status.success() {
        return Err(format!("{}\n{stderr}", out.status));
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !Path::new(&path).is_file() {
        return Err(format!("the script named {path:?}, which is not a file"));
    }
    println!("cargo:rustc-env=VEIL_LAUNCHER_BUILT={path}");
    Ok(())
}

fn env(k: &str) -> Result<String, String> {
    std::env::var(k).map_err(|_| format!("{k} is not set"))
}
