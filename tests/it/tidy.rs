//! Repository hygiene, checked by `cargo test`: module doc comments, no `should_panic`, no
//! trailing whitespace, internal dependencies through the workspace, every crate on the
//! workspace's lints and rust-version, and no copies of the shared hardware vectors or benchmark
//! files. Each test lists all offenders in one failure message.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (this test binary belongs to `crates/veil`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Directories that are build output or tool state, never sources.
fn skipped_dir(name: &str) -> bool {
    name.starts_with('.') || ["target", "corpus", "artifacts", "coverage"].contains(&name)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() && !p.is_symlink() {
            if !skipped_dir(&name) {
                walk(&p, out);
            }
        } else if p.is_file() {
            out.push(p);
        }
    }
}

/// The repository's files relative to the root: `git ls-files` (tracked files that exist), or,
/// outside a git checkout, every file but build output.
fn repo_files() -> Vec<PathBuf> {
    let root = root();
    let git = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files", "-z"])
        .output();
    if let Ok(o) = git
        && o.status.success()
    {
        return String::from_utf8(o.stdout)
            .unwrap()
            .split('\0')
            .filter(|p| !p.is_empty() && root.join(p).is_file())
            .map(PathBuf::from)
            .collect();
    }
    let mut all = Vec::new();
    walk(&root, &mut all);
    all.into_iter()
        .map(|p| p.strip_prefix(&root).unwrap().to_path_buf())
        .collect()
}

/// `crates/*/` directories.
fn crate_dirs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    v.sort();
    v
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[track_caller]
fn assert_none(what: &str, offenders: &[String]) {
    assert!(
        offenders.is_empty(),
        "{what} ({}):\n  {}",
        offenders.len(),
        offenders.join("\n  ")
    );
}

#[test]
fn every_source_file_starts_with_a_module_doc_comment() {
    let mut offenders = Vec::new();
    for dir in crate_dirs() {
        let mut files = Vec::new();
        walk(&dir.join("src"), &mut files);
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "rs"))
        {
            let text = std::fs::read_to_string(f).unwrap();
            if !text.starts_with("//!") {
                offenders.push(rel(f));
            }
        }
    }
    assert_none(
        "source files under crates/*/src that do not start with a `//!` doc comment",
        &offenders,
    );
}

#[test]
fn no_should_panic() {
    // Spelled in two parts so that this file does not match itself.
    let needle = concat!("#[should", "_panic");
    let root = root();
    let mut offenders = Vec::new();
    for f in repo_files()
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        let text = std::fs::read_to_string(root.join(f)).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            if line.contains(needle) {
                offenders.push(format!("{}:{}", f.display(), i + 1));
            }
        }
    }
    assert_none(
        "`should_panic` tests (assert on the error instead: a panic elsewhere passes them too)",
        &offenders,
    );
}

#[test]
fn no_trailing_whitespace() {
    let root = root();
    let mut offenders = Vec::new();
    for f in repo_files() {
        let Ok(bytes) = std::fs::read(root.join(&f)) else {
            continue;
        };
        // Text files only: binary test vectors may end lines in anything.
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        if text.contains('\0') {
            continue;
        }
        for (i, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.ends_with([' ', '\t']) {
                offenders.push(format!("{}:{}", f.display(), i + 1));
            }
        }
    }
    assert_none("lines with trailing whitespace", &offenders);
}

/// `(line number, line)` of the dependency tables of a Cargo.toml, with the table's header.
fn dependency_lines(manifest: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut table = String::new();
    for (i, line) in manifest.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            table = t.to_string();
            continue;
        }
        if table.contains("dependencies") && !t.is_empty() && !t.starts_with('#') {
            out.push((i + 1, table.clone(), t.to_string()));
        }
    }
    out
}

#[test]
fn internal_dependencies_go_through_the_workspace() {
    let mut offenders = Vec::new();
    for dir in crate_dirs() {
        let manifest = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        for (n, table, line) in dependency_lines(&text) {
            let compact = line.replace([' ', '\t'], "");
            // `[dependencies.NAME]` tables: one key per line.
            let in_named_table = table.contains("dependencies.");
            let key = compact.split('=').next().unwrap_or("");
            let by_path = if in_named_table {
                key == "path"
            } else {
                compact.contains("path=")
            };
            let internal_not_workspace = !in_named_table
                && key.starts_with("veil")
                && !key.ends_with(".workspace")
                && !compact.contains("workspace=true");
            if by_path || internal_not_workspace {
                offenders.push(format!("{}:{n}: {line}", rel(&manifest)));
            }
        }
    }
    assert_none(
        "dependencies on our crates that are not `name.workspace = true` (paths belong in the \
         root Cargo.toml's [workspace.dependencies])",
        &offenders,
    );
}

#[test]
fn every_crate_uses_the_workspace_lints_and_rust_version() {
    let mut offenders = Vec::new();
    for dir in crate_dirs() {
        let manifest = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let lints = lines
            .windows(2)
            .any(|w| w[0] == "[lints]" && w[1].replace(' ', "") == "workspace=true");
        if !lints {
            offenders.push(format!("{}: no `[lints] workspace = true`", rel(&manifest)));
        }
        if !lines
            .iter()
            .any(|l| l.replace(' ', "") == "rust-version.workspace=true")
        {
            offenders.push(format!(
                "{}: no `rust-version.workspace = true`",
                rel(&manifest)
            ));
        }
    }
    assert_none(
        "crates that do not follow the workspace settings",
        &offenders,
    );
}

/// SHA-256 (hex) of each file, by `sha256sum` (coreutils).
fn sha256_of(files: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for chunk in files.chunks(200) {
        let o = Command::new("sha256sum").args(chunk).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for (line, f) in String::from_utf8(o.stdout).unwrap().lines().zip(chunk) {
            let hash = line.split_whitespace().next().unwrap().to_string();
            out.push((hash, f.clone()));
        }
    }
    out
}

#[test]
fn no_copies_of_shared_vectors_or_benchmark_files() {
    let root = root();
    let shared = root.join("../shared");
    if !shared.is_dir() {
        eprintln!("no ../shared next to the repository: nothing to compare against");
        return;
    }
    let mut theirs = Vec::new();
    for d in ["hardware-vectors", "bench"] {
        if shared.join(d).is_dir() {
            walk(&shared.join(d), &mut theirs);
        }
    }
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    // Empty files are all alike; only hash our files whose size matches one of theirs.
    theirs.retain(|p| len(p) > 0);
    let sizes: BTreeSet<u64> = theirs.iter().map(|p| len(p)).collect();
    let ours: Vec<PathBuf> = repo_files()
        .into_iter()
        .map(|f| root.join(f))
        .filter(|p| sizes.contains(&len(p)))
        .collect();
    let theirs: BTreeMap<String, PathBuf> = sha256_of(&theirs).into_iter().collect();
    let mut offenders: Vec<String> = sha256_of(&ours)
        .into_iter()
        .filter_map(|(hash, ours)| {
            let original = theirs.get(&hash)?;
            Some(format!(
                "{} is a copy of {}",
                rel(&ours),
                Path::new("../shared")
                    .join(original.strip_prefix(&shared).unwrap_or(original))
                    .display()
            ))
        })
        .collect();
    offenders.sort();
    assert_none(
        "tracked files copied from ../shared/hardware-vectors or ../shared/bench",
        &offenders,
    );
}
